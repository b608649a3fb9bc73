"""Activation checkpointing: auto by default (on only where it is needed), forced by the flags,
on under --paper_compat as published, and the resolved value recorded."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import synthetic_rows, write_jsonl
from llm_jepa import train as T
from llm_jepa.config import parse_args

SHAPE = {"params": 10, "hidden": 2, "intermediate": 3, "layers": 2, "vocab": 5}
FEATS = [{"input_ids": [1] * 6, "text_input_ids": [1] * 4, "code_input_ids": [1] * 9}]


def cfg(*extra):
    return parse_args(["--train_file", "x.jsonl", *extra])


@pytest.fixture
def cpu_with(monkeypatch):
    """A CPU machine with the given bytes available, and a model of SHAPE."""
    def machine(available: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(T, "available_memory_bytes", lambda: available)
        monkeypatch.setattr(T, "model_shape", lambda _dir: dict(SHAPE))
    return machine


def test_flag_is_auto_by_default_and_both_forms_still_work():
    assert cfg().gradient_checkpointing is None
    assert cfg("--gradient_checkpointing").gradient_checkpointing is True
    assert cfg("--no-gradient_checkpointing").gradient_checkpointing is False


def test_training_memory_estimate():
    # state 10 x 16 = 160; activations 7 tokens x 4 B x (20*2 + 6*3) x 2 layers = 3248; logits 4 x 8 B x 5 = 160
    assert T.training_memory_bytes(SHAPE, tokens=7, logits=4) == 160 + 3248 + 160
    assert T.training_memory_bytes(SHAPE, tokens=7, logits=4, lora=True) == 40 + 3248 + 160


def test_auto_is_off_on_a_cpu_where_training_fits(cpu_with):
    # JEPA: 3 views x batch 4 x longest view 9 = 108 tokens -> 160 + 108*464 + 4*6 logits*40 = 51232 bytes
    cpu_with(available=10 ** 6)
    assert T.use_gradient_checkpointing(cfg("--batch_size", "4"), "model", FEATS) is False


def test_auto_is_on_on_a_cpu_where_training_would_not_fit(cpu_with):
    need = 160 + 3 * 4 * 9 * 464 + 4 * 6 * 40
    cpu_with(available=int(need / T.MEMORY_HEADROOM) - 1)
    assert T.use_gradient_checkpointing(cfg("--batch_size", "4"), "model", FEATS) is True
    cpu_with(available=int(need / T.MEMORY_HEADROOM) + 1)
    assert T.use_gradient_checkpointing(cfg("--batch_size", "4"), "model", FEATS) is False


def test_auto_counts_one_view_for_regular(cpu_with):
    need = 160 + 4 * 6 * 464 + 4 * 6 * 40   # 1 view, the Full one (6 tokens)
    cpu_with(available=int(need / T.MEMORY_HEADROOM) + 1)
    assert T.use_gradient_checkpointing(cfg("--batch_size", "4", "--regular"), "model", FEATS) is False
    assert T.use_gradient_checkpointing(cfg("--batch_size", "4"), "model", FEATS) is True


def test_auto_is_on_on_cuda_and_under_paper_compat(cpu_with, monkeypatch):
    cpu_with(available=10 ** 12)
    assert T.use_gradient_checkpointing(cfg("--paper_compat"), "model", FEATS) is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert T.use_gradient_checkpointing(cfg(), "model", FEATS) is True


def test_flags_override_auto(cpu_with, monkeypatch):
    cpu_with(available=1)   # would not fit: auto says on
    assert T.use_gradient_checkpointing(cfg("--no-gradient_checkpointing"), "model", FEATS) is False
    cpu_with(available=10 ** 12)
    assert T.use_gradient_checkpointing(cfg("--gradient_checkpointing"), "model", FEATS) is True
    assert T.use_gradient_checkpointing(cfg("--paper_compat", "--no-gradient_checkpointing"), "model", FEATS) is False


def test_unknown_architecture_keeps_the_published_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(T, "model_shape", lambda _dir: None)
    assert T.use_gradient_checkpointing(cfg(), "model", FEATS) is True


def test_model_shape_of_a_real_config(tiny_llama):
    shape = T.model_shape(str(tiny_llama))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert shape["params"] == sum(p.numel() for p in model.parameters())
    assert (shape["hidden"], shape["layers"]) == (model.config.hidden_size, model.config.num_hidden_layers)


def test_training_arguments_follow_the_resolved_value():
    c = cfg()
    assert T.training_arguments(c, "out", "fp32", 10, 1, False, checkpointing=False).activation_checkpointing is False
    assert T.training_arguments(c, "out", "fp32", 10, 1, False, checkpointing=True).activation_checkpointing is True
    f = cfg("--fsdp", "full_shard auto_wrap")
    assert T.fsdp_config(f, False)["activation_checkpointing"] is False


def test_a_cpu_run_trains_without_checkpointing_and_records_it(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(8))
    out = tmp_path / "out"
    trainer = T.run(parse_args(["--train_file", str(data), "--model_name", str(tiny_llama), "--output_dir",
                                str(out), "--dtype", "fp32", "--batch_size", "2", "--grad_accum", "1",
                                "--max_steps", "1", "--max_length", "128", "--no-save_checkpoints"]))
    assert not trainer.args.activation_checkpointing and not trainer.model.is_activation_checkpointing
    record = json.loads((out / "run_config.json").read_text())
    assert record["config"]["gradient_checkpointing"] is None and record["gradient_checkpointing"] is False
