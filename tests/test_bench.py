"""The benchmark scripts run (tiny settings): they must not rot between measurements."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import ROOT, needs_shared


def test_train_step_benchmark_runs(tmp_path):
    data = needs_shared("datasets")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "bench/train_step.py", "--data", str(data), "--datasets", "synth",
                           "--rounds", "1", "--batches", "1", "--warmup", "0", "--max_length", "128",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["layout"] for r in rows][0] == "regular, dynamic padding" and len(rows) == 10
    assert rows[0]["ratio"] == 1.0 and all(r["ms"] > 0 and r["floor"] >= 1.0 for r in rows)
    assert "packed / regular" in proc.stdout and "STP random_span / regular" in proc.stdout
    stp = next(r for r in rows if r["layout"] == "STP random_span")
    assert stp["floor"] == 1.0    # STP reads no view: the tokens of regular fine-tuning


def _real_model_module():
    sys.path.insert(0, str(ROOT / "bench"))
    import real_model

    return real_model


def test_real_model_benchmark_runs(tmp_path, tiny_llama):
    from conftest import synthetic_rows, write_jsonl

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "synth_train.jsonl", synthetic_rows(8))
    write_jsonl(data / "synth_test.jsonl", synthetic_rows(4, seed=1))
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "bench/real_model.py", "--model", str(tiny_llama), "--data", str(data),
                           "--rounds", "1", "--warmup", "0", "--batch_size", "2", "--max_length", "128",
                           "--gen_examples", "4", "--gen_batch", "2", "--new_tokens", "4", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = {r["config"]: r for r in results["training"]}
    assert list(rows) == ["regular", "JEPA packed", "JEPA 3-pass", "STP random_span"]
    assert rows["STP random_span"]["floor"] == 1.0
    assert rows["regular"]["floor"] == 1.0 and rows["JEPA packed"]["floor"] > 1.0
    assert all(r["seconds"] > 0 and r["gflops"] > 0 and r["matmul_gflops"] > 0 for r in rows.values())
    gen = results["generation"]
    assert gen["examples"] == 4 and gen["matmul_bound_s"] > 0 and gen["row_steps_computed_over_needed"] >= 1.0
    assert "JEPA packed / regular" in proc.stdout and "matmul-bound" in proc.stdout


def test_matmul_time_counts_the_three_products_of_training():
    real_model = _real_model_module()
    w = torch.zeros(3, 4)  # a Linear from 4 features to 3
    # forward x W^T: 2*5*4*3 = 120; backward g W: 2*5*3*4 = 120 and g^T x: 2*3*5*4 = 120
    assert real_model.matmul_time([w], 5, backward=False)[1] == 120
    assert real_model.matmul_time([w, w], 5, backward=True)[1] == 720


def test_decode_rows_counts_the_rows_still_generating():
    real_model = _real_model_module()
    # rows making 3, 1 and 2 tokens: the prefill gives each its first; step 2 runs rows 0 and 2, step 3 row 0
    assert real_model.decode_rows([3, 1, 2]) == [2, 1]
    assert real_model.decode_rows([1, 1]) == []
