"""Resuming after a kill and reusing output directories left by failed runs (issue 9, items 13-14).

A kill during a checkpoint save (preemption, the out-of-memory killer) leaves a half-written
checkpoint-N: `--resume_from_checkpoint last` must take the newest complete one and say which
it skipped. Resuming a finished run does nothing. A run that failed before saving anything
leaves only the trainer's marker, and the same command must then work again.
"""
from __future__ import annotations

import json
import logging
import shutil

import pytest

from conftest import synthetic_rows, write_jsonl
from llm_jepa import outputs as O
from llm_jepa import train as T
from llm_jepa.config import parse_args
from llm_jepa.outputs import MARKER, CheckpointError, OutputDirError


def argv(data, model, out, *extra):
    return ["--train_file", str(data), "--model_name", str(model), "--output_dir", str(out), "--dtype", "fp32",
            "--batch_size", "2", "--grad_accum", "2", "--max_steps", "8", "--eval_steps", "1",
            "--max_length", "128", *map(str, extra)]


def train(*args):
    return T.run(parse_args(list(args)))


@pytest.fixture
def logs(caplog):
    """The llm_jepa log records (its logger may not propagate once setup_logging ran)."""
    logger = logging.getLogger("llm_jepa")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="llm_jepa")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama):
    """A finished 8-step run, 16 rows: checkpoints at steps 4 and 8, then the final model."""
    root = tmp_path_factory.mktemp("resume")
    data = write_jsonl(root / "synth_train.jsonl", synthetic_rows(16))
    out = root / "run"
    trainer = train(*argv(data, tiny_llama, out))
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    return data, out, losses


def copy_run(finished_run, dest):
    shutil.copytree(finished_run[1], dest)
    return dest


def snapshot(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def killed_during_final_save(out):
    """What a kill while saving leaves: no run_config.json, no final model at the top."""
    for p in out.iterdir():
        if p.is_file() and p.name != MARKER:
            p.unlink()


# --------------------------------------------------------------------------------------
# what "complete" means
# --------------------------------------------------------------------------------------
def test_every_checkpoint_is_marked_complete(finished_run):
    _, out, _ = finished_run
    assert [c.name for c in O.checkpoints(out)] == ["checkpoint-8", "checkpoint-4"]
    assert json.loads((out / MARKER).read_text())["checkpoint_markers"] is True
    for ckpt in O.checkpoints(out):
        done = json.loads((ckpt / O.CHECKPOINT_DONE).read_text())
        assert done["step"] == int(ckpt.name.split("-")[1])
        assert {"trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt",
                "rng_state.pth"} <= set(done["files"])
        assert O.checkpoint_problem(ckpt, markers_expected=True) is None


def _drop(name):
    return lambda ckpt: (ckpt / name).unlink()


def _cut(name, keep=0.5):
    return lambda ckpt: truncate(ckpt / name, keep)


def _grow(name):
    return lambda ckpt: (ckpt / name).write_text((ckpt / name).read_text() + "\n")


def _unmark(damage=None):
    def apply(ckpt):
        (ckpt / O.CHECKPOINT_DONE).unlink()
        if damage:
            damage(ckpt)
    return apply


@pytest.mark.parametrize("damage,legacy,reason", [
    (_unmark(_drop("trainer_state.json")), False, "missing trainer_state.json"),  # killed before the state
    (_drop("trainer_state.json"), False, "missing trainer_state.json"),
    (_cut("model.safetensors"), False, "model.safetensors is truncated"),
    (_cut("model.safetensors", keep=0.001), False, "model.safetensors is truncated"),
    (_cut("trainer_state.json"), False, "trainer_state.json is truncated"),
    (_cut("rng_state.pth", keep=0), False, "rng_state.pth is empty"),
    (_drop("scheduler.pt"), False, "missing scheduler state"),
    (_drop("optimizer.pt"), False, "missing optimizer state"),
    (_unmark(), False, "no completion marker"),  # every file written, the marker not yet
    (_grow("config.json"), False, "config.json has"),  # a file changed after the save
    (_unmark(_cut("optimizer.pt", keep=0.99)), True, "optimizer.pt is truncated"),  # made before markers
    (_unmark(_drop("rng_state.pth")), True, "missing rng state"),
])
def test_newest_complete_checkpoint_skips_a_damaged_one(finished_run, tmp_path, damage, legacy, reason):
    out = copy_run(finished_run, tmp_path / "run")
    if legacy:  # a directory made before checkpoints were marked
        (out / MARKER).write_text(json.dumps({"created": "earlier", "argv": []}) + "\n")
    damage(out / "checkpoint-8")
    found, skipped = O.newest_complete_checkpoint(out)
    assert found == out / "checkpoint-4"
    assert [c for c, _ in skipped] == [out / "checkpoint-8"] and reason in skipped[0][1]


def test_checkpoints_made_before_markers_pass_the_file_checks(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    (out / MARKER).write_text(json.dumps({"created": "earlier", "argv": []}) + "\n")
    for ckpt in O.checkpoints(out):
        (ckpt / O.CHECKPOINT_DONE).unlink()
    assert O.newest_complete_checkpoint(out) == (out / "checkpoint-8", [])


def test_finished_steps_needs_a_whole_run_config(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    assert O.finished_steps(out) == 8
    truncate(out / O.RUN_CONFIG)  # cut short by a kill (written atomically now)
    assert O.finished_steps(out) is None
    assert not list(out.glob("*.tmp"))


def test_planned_steps_counts_as_the_trainer(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(18))  # 9 batches: 5 steps an epoch
    cfg = parse_args(argv(data, tiny_llama, tmp_path / "ep", "--max_steps", "-1", "--num_epochs", "2",
                          "--no-save_checkpoints"))
    assert T.planned_steps(cfg, 18, 1, 2) == 10
    assert T.planned_steps(cfg, 18, 2, 2) == 4  # 9 batches over 2 ranks: 4 each, 2 steps an epoch
    cfg.max_steps = 3
    assert T.planned_steps(cfg, 18, 1, 2) == 3
    cfg.max_steps = -1
    trainer = T.run(cfg)
    assert trainer.state.max_steps == trainer.state.global_step == 10


# --------------------------------------------------------------------------------------
# item 13: resuming after a kill, and resuming a finished run
# --------------------------------------------------------------------------------------
def test_resume_last_skips_a_half_written_checkpoint(finished_run, tmp_path, tiny_llama, logs):
    """Killed while saving checkpoint-8: the resumed run starts from checkpoint-4, says so,
    and trains steps 5-8 with the losses of the uninterrupted run."""
    data, _, losses = finished_run
    out = copy_run(finished_run, tmp_path / "run")
    killed_during_final_save(out)
    (out / "checkpoint-8" / "trainer_state.json").unlink()
    (out / "checkpoint-8" / O.CHECKPOINT_DONE).unlink()
    trainer = train(*argv(data, tiny_llama, out, "--resume_from_checkpoint", "last"))
    assert trainer.state.global_step == 8
    text = "\n".join(logs.messages)
    assert f"skipping {out / 'checkpoint-8'}: missing trainer_state.json" in text
    assert f"resuming from {out / 'checkpoint-4'}" in text
    resumed = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert sorted(resumed) == list(range(1, 9))
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(losses[step], rel=1e-5), step
    assert O.checkpoint_problem(out / "checkpoint-8", markers_expected=True) is None  # saved again
    assert O.finished_steps(out) == 8


@pytest.mark.parametrize("extra", [[], ["--max_steps", "6"], ["--max_steps", "-1", "--num_epochs", "2"]])
def test_resuming_a_finished_run_does_nothing(finished_run, tmp_path, tiny_llama, logs, extra):
    data, _, _ = finished_run
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot(out)
    assert train(*argv(data, tiny_llama, out, "--resume_from_checkpoint", "last", *extra)) is None
    assert snapshot(out) == before  # no new step, checkpoint, model or run_config.json
    assert any("holds a finished run (8 optimizer steps" in m and "nothing to do" in m for m in logs.messages)


def test_resuming_a_finished_run_from_an_explicit_checkpoint_does_nothing(finished_run, tmp_path, tiny_llama):
    data, _, _ = finished_run
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot(out)
    assert train(*argv(data, tiny_llama, out, "--resume_from_checkpoint", out / "checkpoint-4")) is None
    assert snapshot(out) == before


def test_cli_says_a_finished_run_has_nothing_to_do(finished_run, tmp_path, tiny_llama):
    import subprocess
    import sys

    from conftest import ROOT

    data, _, _ = finished_run
    out = copy_run(finished_run, tmp_path / "run")
    proc = subprocess.run([sys.executable, "finetune.py", *argv(data, tiny_llama, out, "--resume_from_checkpoint",
                                                                "last")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing to do" in proc.stdout and "Training completed" not in proc.stdout


def test_an_incomplete_explicit_checkpoint_is_refused(finished_run, tmp_path, tiny_llama):
    data, _, _ = finished_run
    src = copy_run(finished_run, tmp_path / "run")
    truncate(src / "checkpoint-8" / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint-8: optimizer\.pt is truncated"):
        train(*argv(data, tiny_llama, tmp_path / "new", "--resume_from_checkpoint", src / "checkpoint-8"))
    with pytest.raises(CheckpointError, match="checkpoint-99: not a directory"):
        train(*argv(data, tiny_llama, tmp_path / "new", "--resume_from_checkpoint", src / "checkpoint-99"))
    assert not (tmp_path / "new").exists()


def test_resume_last_with_no_complete_checkpoint_is_an_error(finished_run, tmp_path, tiny_llama):
    data, _, _ = finished_run
    out = copy_run(finished_run, tmp_path / "run")
    killed_during_final_save(out)
    shutil.rmtree(out / "checkpoint-8")
    (out / "checkpoint-4" / "scheduler.pt").unlink()
    before = snapshot(out)
    with pytest.raises(CheckpointError, match=r"no complete checkpoint in .*checkpoint-4: missing scheduler state.*"
                                              r"--overwrite_output_dir"):
        train(*argv(data, tiny_llama, out, "--resume_from_checkpoint", "last"))
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------
# item 14: a directory left by a run that saved nothing
# --------------------------------------------------------------------------------------
def test_a_run_that_failed_before_saving_can_be_rerun(tmp_path, tiny_tokenizer, finished_run, logs):
    """The same command works again once the cause is fixed, without --overwrite_output_dir."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm_jepa.tiny import save_tiny_model
    from llm_jepa.trainer import NonFiniteLossError

    data, _, _ = finished_run
    model = save_tiny_model(tmp_path / "model", "llama", tiny_tokenizer)
    broken = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))
    broken.save_pretrained(model)
    out = tmp_path / "out"
    command = argv(data, model, out, "--max_steps", "1")
    with pytest.raises(NonFiniteLossError):
        train(*command)
    assert [p.name for p in out.iterdir()] == [MARKER]
    save_tiny_model(model, "llama", tiny_tokenizer)  # the cause fixed
    trainer = train(*command)
    assert trainer.state.global_step == 1 and O.finished_steps(out) == 1
    assert any("holds only the marker" in m for m in logs.messages)


def test_only_a_marker_alone_is_reused(tmp_path):
    marked = tmp_path / "marked"
    O.prepare_output_dir(marked, overwrite=False, resume=False)
    assert O.output_dir_action(marked, overwrite=False, resume=False) == "create"
    O.prepare_output_dir(marked, overwrite=False, resume=False)
    assert [p.name for p in marked.iterdir()] == [MARKER]
    (marked / "notes.txt").write_text("a result")
    with pytest.raises(OutputDirError, match="--overwrite_output_dir"):
        O.output_dir_action(marked, overwrite=False, resume=False)
    (marked / "notes.txt").unlink()
    (marked / "checkpoint-2").mkdir()  # even an empty checkpoint directory is not "nothing"
    with pytest.raises(OutputDirError, match="--overwrite_output_dir"):
        O.output_dir_action(marked, overwrite=False, resume=False)
    odd = tmp_path / "odd"
    (odd / MARKER / "data").mkdir(parents=True)  # a directory by that name is not the marker file
    with pytest.raises(OutputDirError):
        O.output_dir_action(odd, overwrite=False, resume=False)
    assert (odd / MARKER / "data").is_dir()


def test_resume_last_on_a_marker_only_directory_trains_from_the_start(tmp_path, tiny_llama, finished_run, logs):
    data, _, _ = finished_run
    out = tmp_path / "out"
    O.prepare_output_dir(out, overwrite=False, resume=False)
    trainer = train(*argv(data, tiny_llama, out, "--max_steps", "1", "--resume_from_checkpoint", "last"))
    assert trainer.state.global_step == 1
    assert any("no checkpoint in" in m and "training from step 0" in m for m in logs.messages)


def test_two_process_checkpoints_are_marked_after_every_rank_saved(tmp_path, tiny_llama):
    """Under DDP each rank writes its own RNG state: the marker comes after all of them."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(16))  # 2 ranks: a checkpoint every 2 steps
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"),
           *argv(data, tiny_llama, out, "--max_steps", "2")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = json.loads((out / "checkpoint-2" / O.CHECKPOINT_DONE).read_text())
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= set(done["files"])
    assert O.newest_complete_checkpoint(out) == (out / "checkpoint-2", [])
