"""--dtype auto: bf16 autocast for training on a CPU with native bf16 matmuls, fp32 otherwise
and for generation; explicit choices and --paper_compat unchanged."""
from __future__ import annotations

import builtins
import io

import pytest
import torch

from llm_jepa import modeling as M


def fake_cpuinfo(monkeypatch, flags: str | None):
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            if flags is None:
                raise OSError("no /proc here")
            return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("flags,bf16", [
    ("fpu sse2 avx2 avx512f avx512_bf16", True),
    ("fpu sse2 avx2 amx_tile amx_bf16", True),
    ("fpu sse2 avx2 avx512f", False),        # AVX512 without BF16: bf16 would be emulated, slower
    (None, False),                           # not Linux: no guess
])
def test_cpu_bf16_detection(monkeypatch, flags, bf16):
    fake_cpuinfo(monkeypatch, flags)
    assert M.cpu_has_bf16_matmul() is bf16
    assert M.resolve_dtype("auto", training=True) == ("bf16" if bf16 else "fp32")
    assert M.resolve_dtype("auto") == "fp32"   # generation: greedy choices would change with precision


def test_explicit_dtypes_are_kept(monkeypatch):
    fake_cpuinfo(monkeypatch, "avx512_bf16")
    for name in ("fp32", "bf16", "fp16"):
        assert M.resolve_dtype(name, training=True) == name


def test_cuda_auto_is_unchanged(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert M.resolve_dtype("auto", training=True) == "fp16"
