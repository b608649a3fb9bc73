"""Shared test fixtures: tiny models, a tokenizer trained here, and ../shared when present."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZERS = SHARED / "tokenizers"
DATASETS = SHARED / "datasets"


# --------------------------------------------------------------------------------------
# Equivalence of two float32 computations of the same function
# --------------------------------------------------------------------------------------
# The layouts (3-pass, additive, packed) compute the same losses and gradients, but they sum
# in a different order: other row lengths, other matmul blockings, another attention kernel.
# Float32 rounds each operation to a relative 2**-24 (eps = 1.19e-7), so the results differ
# by a few eps times the magnitude of the numbers being summed, not of each element: a small
# gradient element next to large ones inherits their absolute error. Comparing element by
# element with a relative tolerance therefore fails on noise (one element of 1,664 at 3e-5
# relative was enough when a library release changed a kernel). We compare instead against
# the scale of the whole tensor: |a - b| <= ULPS * eps * max|b|. Measured on these tiny models
# the noise is at most about 4 eps * scale; a wrong mask, position or embedding index moves
# results by 5% to 100% of the scale (tests/test_tolerance.py checks both), so ULPS = 128
# (1.5e-5 of the scale) sits 30x above the noise and 3,000x below the smallest real error.
FP32_EPS = 2.0 ** -23
ULPS = 128


def fp32_tolerance(expected, ulps: int = ULPS) -> float:
    """The absolute tolerance for comparing a float32 result with `expected`."""
    import torch

    return ulps * FP32_EPS * float(torch.as_tensor(expected).detach().abs().max())


def assert_same_up_to_rounding(actual, expected, ulps: int = ULPS, what: str = ""):
    """`actual` equals `expected` up to float32 summation-order noise (see above)."""
    import torch

    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    worst, tol = float((actual - expected).abs().max()), fp32_tolerance(expected, ulps)
    assert worst <= tol, (f"{what or 'result'} differs by {worst:.3g}, more than {ulps} eps of its scale "
                          f"({tol:.3g}): not a rounding difference")


def needs_shared(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def example(system="Convert natural language to regular expression.", user="lines with a vowel",
            answer="([AEIOUaeiou]).*", **extra) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}], **extra}


# Hand-written rows in the published format: enough text to train a small BPE tokenizer
# and a tiny model without ../shared.
WORDS = ["vowel", "letter", "number", "dog", "truck", "ring", "lines", "words", "character", "string",
         "capital", "lower-case", "starting", "ending", "containing", "before", "after", "zero", "more"]
CLASSES = ["[AEIOUaeiou]", "[a-z]", "[A-Z]", "[0-9]", "dog", "truck", "ring", "."]


def synthetic_rows(n: int = 64, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(range(len(CLASSES)), 2)
        desc = f"lines {rng.choice(WORDS)} {rng.choice(WORDS)} then {rng.choice(WORDS)}"
        rows.append(example(user=desc, answer=f"({CLASSES[a]}).*({CLASSES[b]}).*"))
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from llm_jepa.tiny import conversation_texts, train_tokenizer

    return train_tokenizer(conversation_texts(synthetic_rows(200)), vocab_size=400)


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "synth_train.jsonl", synthetic_rows(64))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer) -> Path:
    from llm_jepa.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama", tiny_tokenizer)


def real_tokenizer(folder: str):
    """A tokenizer from ../shared/tokenizers, prepared as the trainer prepares it."""
    from llm_jepa.families import family_for
    from llm_jepa.tokenization import setup_tokenizer

    path = needs_shared("tokenizers", folder)
    family = family_for(folder)
    return setup_tokenizer(str(path), family), family


@pytest.fixture(autouse=True)
def _restore_package_logger():
    """The entry points set the package logger's handlers, level and propagation (for the
    process they run in); put them back after each test, so that no test depends on which
    entry point an earlier test happened to call."""
    log = logging.getLogger("llm_jepa")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved
