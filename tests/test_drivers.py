"""run.sh, run8bh200.sh and the offline demo, run as a user runs them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, needs_shared

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def bash(*args, env=None, timeout=900):
    return subprocess.run(["bash", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)


def test_run_jepa_trains_evaluates_and_appends(tmp_path, tiny_llama):
    data = needs_shared("datasets")
    env = dict(ENV, DATA_DIR=str(data), RUNS_DIR=str(tmp_path / "runs"), OUTPUT=str(tmp_path / "output.txt"),
               TRAIN_ARGS="--dtype fp32 --max_steps 3 --batch_size 2 --grad_accum 1",
               EVAL_ARGS="--max_examples 8 --max_new_tokens 8")
    proc = bash("run.sh", "run_jepa", tiny_llama, "1e-3", "1", "-2", "1", "82", "1.0", "synth", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "output.txt").read_text().splitlines()
    run_dir = tmp_path / "runs" / "synth_jepa_tiny-llama_lr1e-3_lbd1.0_k1_s82"
    assert lines == [line for line in lines if line.startswith("Success Rate: ")] and len(lines) == 1
    assert lines[0].startswith(f"Success Rate: {run_dir}, ")
    summary = json.loads((run_dir / "eval" / "synth_test.summary.json").read_text())
    assert summary["training"]["predictors"] == 1 and summary["training"]["last_token"] == "-2"
    assert summary["counts"]["examples"] == 8
    # a second run appends, as published
    proc = bash("run.sh", "run_regular", tiny_llama, "1e-3", "1", "-2", "0", "82", "1.0", "synth", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "output.txt").read_text().splitlines()) == 2


def test_run_stp_trains_with_stp_py_and_reports_apart(tmp_path, tiny_llama):
    data = needs_shared("datasets")
    env = dict(ENV, DATA_DIR=str(data), RUNS_DIR=str(tmp_path / "runs"), OUTPUT=str(tmp_path / "output.txt"),
               TRAIN_ARGS="--dtype fp32 --max_steps 2 --batch_size 2 --grad_accum 1",
               EVAL_ARGS="--max_examples 4 --max_new_tokens 4")
    proc = bash("run.sh", "run_stp", "run_stp_jepa", tiny_llama, "1e-3", "1", "auto", "0", "82", "0.02", "synth",
                env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "synth_stp_tiny-llama_lr1e-3_lbd0.02_k0_s82"
    record = json.loads((run_dir / "run_config.json").read_text())
    assert record["jepa_loss"] == "random_span" and record["config"]["script"] == "stp.py"
    assert not record["config"]["save_checkpoints"]          # stp.py: only with --enable_save
    proc = bash("run_stp.sh", "run_regular", tiny_llama, "1e-3", "1", "auto", "0", "82", "0.02", "synth", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run([sys.executable, "evaluate.py", "report", str(tmp_path / "runs")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert "STP random_span (lr=0.001, lbd=0.02" in report.stdout and "regular (lr=0.001" in report.stdout
    assert "usage: bash run_stp.sh run_stp_jepa" in bash("run_stp.sh", "run_stp_jepa", "x").stderr


@pytest.mark.parametrize("args,message", [
    ([], "run.sh demo"), (["paper", "nq_open"], "no published configuration"),
    (["run_jepa", "x"], "usage: bash run.sh run_jepa"), (["bogus"], "unknown command"),
])
def test_run_sh_usage_errors(args, message):
    proc = bash("run.sh", *args)
    assert proc.returncode == 2 and message in proc.stdout + proc.stderr


def test_run8bh200_uses_the_large_model_script():
    proc = bash("run8bh200.sh")
    assert proc.returncode == 2 and "llama31" in proc.stdout
    proc = bash("run8bh200.sh", "olmo3", "synth", "82")
    assert proc.returncode == 2
    # sourcing run.sh defines its functions without running anything (run8bh200.sh relies on it)
    proc = bash("-c", "source ./run.sh; paper_config gsm8k; paper_config spider")
    assert proc.returncode == 0 and proc.stdout.split("\n")[:2] == ["2e-5 0.5 4", "4e-5 1.0 3"]
    script = (ROOT / "run8bh200.sh").read_text()
    assert "FINETUNE=finetune8bh200.py" in script and "Llama-3.1-8B-Instruct" in script and "OLMo-2" in script


def test_demo_runs_end_to_end_small(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm_jepa.demo", "--out", str(tmp_path / "demo"), "--n_train", "120",
                           "--n_test", "16", "--epochs", "1", "--hidden", "32", "--layers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| regular |" in proc.stdout and "| jepa |" in proc.stdout
    assert re.search(r"^software: Python .*transformers \d.*threads", proc.stdout, re.M), proc.stdout[-2000:]
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["versions"]["torch_threads"] == 2 and results["versions"]["transformers"]
    assert set(results["results"]) == {"regular", "jepa"}
    png = tmp_path / "demo" / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in ("regular", "jepa"):
        summary = json.loads((tmp_path / "demo" / method / "eval" / "demo_test.summary.json").read_text())
        assert summary["counts"]["examples"] == 16 and {"exact", "dfa"} <= set(summary["metrics"]["metrics"])
        assert summary["training"]["pretrain"] is True


def spider_env(tmp_path, **extra):
    env = {k: v for k, v in ENV.items() if k != "SPIDER_PATH"}
    return dict(env, DATA_DIR=str(tmp_path / "datasets"), RUNS_DIR=str(tmp_path / "runs"),
                OUTPUT=str(tmp_path / "output.txt"), **extra)


@pytest.mark.parametrize("spider_path", [None, "nowhere"])
def test_spider_run_without_databases_stops_before_training(tmp_path, spider_path):
    extra = {"SPIDER_PATH": str(tmp_path / spider_path)} if spider_path else {}
    proc = bash("run.sh", "run_jepa", "some-model", "1e-3", "1", "-2", "1", "82", "1.0", "spider",
                env=spider_env(tmp_path, **extra))
    looked = tmp_path / (spider_path or "spider_data/database")   # unset: beside DATA_DIR
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"no Spider databases (<db_id>/<db_id>.sqlite) in {looked}" in proc.stderr
    assert "python -m llm_jepa.corpora prepare spider_data" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "output.txt").exists()


def test_spider_path_defaults_to_the_databases_beside_data_dir(tmp_path):
    db = tmp_path / "spider_data" / "database" / "toy" / "toy.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    proc = bash("-c", "source ./run.sh; spider_path", env=spider_env(tmp_path))
    assert proc.returncode == 0 and proc.stdout.strip() == f"{tmp_path}/spider_data/database"
    proc = bash("-c", "source ./run.sh; spider_path", env=spider_env(tmp_path, SPIDER_PATH=str(tmp_path / "x")))
    assert proc.returncode == 2 and f"in {tmp_path}/x;" in proc.stderr


def test_demo_with_a_pretrained_model_fine_tunes_it(tmp_path, tiny_llama):
    from llm_jepa.modeling import cpu_has_bf16_matmul

    """`--model`: the given model is fine-tuned (no --pretrain, the compute dtype left to
    auto) instead of a tiny one trained from scratch; the pretrained preset applies."""
    proc = subprocess.run([sys.executable, "-m", "llm_jepa.demo", "--out", str(tmp_path / "demo"), "--model",
                           str(tiny_llama), "--n_train", "24", "--n_test", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"expected duration: about \d+ minutes", proc.stdout + proc.stderr)
    assert f"{tiny_llama} fine-tuned on 24 generated NL-to-regex pairs, 1 epoch," in proc.stdout
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["args"]["learning_rate"] == 1e-4 and results["args"]["batch_size"] == 8
    for method in ("regular", "jepa"):
        record = json.loads((tmp_path / "demo" / method / "run_config.json").read_text())
        assert record["config"]["pretrain"] is False and record["config"]["model_name"] == str(tiny_llama)
        assert record["config"]["dtype"] == "auto"
        assert record["compute_dtype"] == ("bf16" if cpu_has_bf16_matmul() else "fp32")
    assert not (tmp_path / "demo" / "base").exists()


def test_demo_presets():
    from llm_jepa.demo import PRESETS, parse

    assert {k: getattr(parse([]), k) for k in PRESETS["scratch"]} == PRESETS["scratch"]
    pretrained = parse(["--model", "smollm2-135m-instruct", "--epochs", "2"])
    assert pretrained.epochs == 2 and pretrained.n_train == PRESETS["pretrained"]["n_train"]
