"""The benchmark scripts run (tiny settings): they must not rot between measurements."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, needs_shared


def test_train_step_benchmark_runs(tmp_path):
    data = needs_shared("datasets")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "bench/train_step.py", "--data", str(data), "--datasets", "synth",
                           "--rounds", "1", "--batches", "1", "--warmup", "0", "--max_length", "128",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["layout"] for r in rows][0] == "regular, dynamic padding" and len(rows) == 6
    assert rows[0]["ratio"] == 1.0 and all(r["ms"] > 0 and r["floor"] >= 1.0 for r in rows)
    assert "packed / regular" in proc.stdout
