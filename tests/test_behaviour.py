"""The published behaviours as named switches: --paper_compat turns on all of them,
--published a,b only those, and the run records which."""
from __future__ import annotations

import json

import pytest

from conftest import synthetic_rows, write_jsonl
from llm_jepa import train as T
from llm_jepa.behaviour import Published
from llm_jepa.config import TrainConfig, parse_args


def cfg(*flags):
    return parse_args(["--train_file", "x.jsonl", *flags])


def test_default_is_none_and_paper_compat_is_all():
    assert cfg().behaviour.on() == []
    assert cfg("--paper_compat").behaviour.on() == list(Published.names())
    assert len(Published.names()) == 22


def test_one_switch_alone():
    c = cfg("--published", "labels, double_bos")
    assert c.behaviour.on() == ["labels", "double_bos"]
    assert c.layout == "packed" and c.last_token == "auto"      # the rest stays as corrected
    assert cfg("--published", "forward").layout == "3pass"
    assert cfg("--published", "last_token").last_token == "-1"
    assert cfg("--published", "last_token", "--last_token", "auto").last_token == "auto"


def test_unknown_switches_are_named():
    problems = TrainConfig(train_file="x", published="labels,lables,bos").problems()
    assert any("--published: unknown behaviour lables, bos; known: labels, double_bos" in p for p in problems)


def test_published_labels_alone_train_the_prompt_too(tmp_path, tiny_llama):
    """--published labels changes the labels (every non-pad token) and nothing else of the
    features; the run records the switch."""
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(8))
    base = ["--train_file", str(data), "--model_name", str(tiny_llama), "--dtype", "fp32", "--batch_size", "2",
            "--grad_accum", "1", "--max_steps", "1", "--max_length", "128", "--no-save_checkpoints"]

    def features(*extra):
        c = parse_args(base + ["--output_dir", str(tmp_path / "o"), *extra])
        family = T.detect_family(c.model_name)
        setup = T.setup_tokenizer(c.model_name, family, published=c.behaviour)
        return T.load_splits(c, family, setup, None).train

    ours, published = features(), features("--published", "labels")
    assert [f["input_ids"] for f in ours] == [f["input_ids"] for f in published]
    assert [f["text_at"] for f in ours] == [f["text_at"] for f in published]
    for o, p in zip(ours, published):
        trained_o = sum(t != -100 for t in o["labels"])
        assert sum(t != -100 for t in p["labels"]) > trained_o > 0
    T.run(parse_args(base + ["--output_dir", str(tmp_path / "run"), "--published", "labels"]))
    record = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert record["published"] == ["labels"] and record["config"]["published"] == "labels"


@pytest.mark.parametrize("switch,check", [
    ("cpu_dtype", lambda c: not c.behaviour.weights_dtype),
    ("eval_predictors", lambda c: c.layout == "packed"),
])
def test_switches_are_independent(switch, check):
    c = cfg("--published", switch)
    assert c.behaviour.on() == [switch] and check(c)
