"""Two-process DDP on CPU (gloo) through torchrun."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import ROOT, assert_same_up_to_rounding


@pytest.mark.parametrize("layout", [[], ["--additive_mask"], ["--linear", "e2e", "--linear_predictor"]])
def test_two_process_gloo_run(tmp_path, train_file, tiny_llama, layout):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"),
           "--train_file", str(train_file), "--model_name", str(tiny_llama), "--output_dir", str(out),
           "--dtype", "fp32", "--batch_size", "2", "--grad_accum", "2", "--max_steps", "3", "--eval_steps", "1",
           "--max_length", "128", "--predictors", "1", *layout]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["digest"] == ranks[1]["digest"]  # identical weights on both ranks
    assert len(ranks[0]["losses"]) == 3 and all(math.isfinite(x) for x in ranks[0]["losses"])
    # rank 0 alone logs and saves
    assert proc.stdout.count("Training completed") == 1
    assert (out / "model.safetensors").exists() and (out / "trainer_state.json").exists()
    # The same global batch (2 ranks x 2 rows x 2 accumulation steps = 8 rows a step) in one
    # process (2 rows x 4 accumulation steps) trains the same model: the same rows in the
    # same order, and losses normalised over the whole global batch in both.
    single = tmp_path / "single"
    cmd = [sys.executable, "finetune.py", *cmd[cmd.index("--train_file"):]]
    cmd[cmd.index("--output_dir") + 1], cmd[cmd.index("--grad_accum") + 1] = str(single), "4"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp_weights, one_weights = load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors"))
    assert ddp_weights.keys() == one_weights.keys()
    for name, weight in one_weights.items():
        assert_same_up_to_rounding(ddp_weights[name], weight, what=name)
    ddp_state = json.loads((out / "trainer_state.json").read_text())["log_history"]
    one_state = json.loads((single / "trainer_state.json").read_text())["log_history"]
    ddp_lm = [h["lm_loss"] for h in ddp_state if "lm_loss" in h]
    assert ddp_lm == pytest.approx([h["lm_loss"] for h in one_state if "lm_loss" in h], rel=1e-5)
