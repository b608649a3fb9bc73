"""The output directory: made safely, marked as ours, and described by run_config.json.

The published code deleted --output_dir unconditionally. Here an existing directory is
only replaced when it is empty, or when this trainer made it (MARKER) and
--overwrite_output_dir is given; resuming keeps it. A directory holding nothing but the
marker (a run that failed before saving anything) is reused as if it were empty.

Checkpoints: the Trainer writes a checkpoint file by file, so a kill during the save
(preemption, the out-of-memory killer) leaves a half-written one. Each checkpoint saved by
this trainer gets CHECKPOINT_DONE, written last, listing every file and its size; resuming
takes the newest checkpoint that is complete (see `checkpoint_problem`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

from .environment import stack_record
from .runtime import is_rank0

MARKER = ".llm_jepa_run"
RUN_CONFIG = "run_config.json"
CHECKPOINT_DONE = ".llm_jepa_checkpoint_complete"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# What the Trainer reads back when it resumes: each part needs one of these names (globs).
CHECKPOINT_PARTS = {
    "trainer_state.json": ("trainer_state.json",),
    "model weights": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin",
                      "pytorch_model_fsdp*"),
    "optimizer state": ("optimizer.pt", "optimizer.bin", "optimizer_*"),
    "scheduler state": ("scheduler.pt",),
    "rng state": ("rng_state*.pth",),
}

logger = logging.getLogger(__name__)


class OutputDirError(RuntimeError):
    pass


class CheckpointError(OutputDirError):
    """No checkpoint can be resumed from (named in the message, with the reason)."""


def output_dir_action(path: str | Path, *, overwrite: bool, resume: bool) -> str:
    """What to do with the output directory: 'create', 'keep' (resume) or 'replace'.

    Only reads the file system, so every rank can check before any of them waits on
    another: a refusal then stops all ranks at once instead of leaving some at a barrier.
    """
    out = Path(path).resolve()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output_dir {out} exists and is not a directory")
    if not (out.is_dir() and any(out.iterdir())):
        return "create"
    ours = (out / MARKER).exists()
    if resume and ours:
        return "keep"
    if not ours:
        raise OutputDirError(
            f"--output_dir {out} is not empty and was not made by this trainer; "
            "refusing to delete it. Choose another directory or empty it yourself.")
    if holds_only_marker(out):
        return "create"  # a run of ours that failed before saving anything: nothing to lose
    if not overwrite:
        raise OutputDirError(
            f"--output_dir {out} holds an earlier run; pass --overwrite_output_dir to replace it, "
            "or --resume_from_checkpoint to continue it.")
    return "replace"


def prepare_output_dir(path: str | Path, *, overwrite: bool, resume: bool) -> Path:
    """Create (or safely reuse) the output directory and mark it as ours."""
    out = Path(path).resolve()
    action = output_dir_action(out, overwrite=overwrite, resume=resume)
    if action == "keep":
        return out
    if action == "replace":
        shutil.rmtree(out)
    elif holds_only_marker(out):
        logger.info("reusing --output_dir %s: it holds only the marker of an earlier run that saved nothing", out)
    out.mkdir(parents=True, exist_ok=True)
    # checkpoint_markers: every checkpoint of this directory gets CHECKPOINT_DONE, so one
    # without it was cut short (directories made before that are checked file by file).
    (out / MARKER).write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "argv": sys.argv, "checkpoint_markers": True}) + "\n")
    return out


def holds_only_marker(out: Path) -> bool:
    """True for a directory of ours that holds nothing else (a run that failed before saving)."""
    return out.is_dir() and [p.name for p in out.iterdir()] == [MARKER] and (out / MARKER).is_file()


def write_run_config(out: Path, cfg, extra: dict) -> None:
    """Everything needed to know how the run was made: flags, resolved choices, versions.

    Written last and atomically: its presence means the run finished (`finished_steps`)."""
    record = {"config": dataclasses.asdict(cfg), **extra, "versions": stack_record(),
              "argv": sys.argv, "cwd": os.getcwd()}
    _write_atomic(out / RUN_CONFIG, json.dumps(record, indent=2, default=str) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, flush to disk, then rename: a reader sees all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# checkpoints: marking a finished save, telling complete ones from half-written ones
# --------------------------------------------------------------------------------------
def write_checkpoint_marker(ckpt: Path, step: int) -> None:
    """Record that the save of `ckpt` finished: every file it holds, with its size."""
    files = {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*"))
             if p.is_file() and not p.name.startswith(CHECKPOINT_DONE)}
    _write_atomic(ckpt / CHECKPOINT_DONE, json.dumps({"step": step, "files": files}, indent=1) + "\n")


def checkpoint_problem(ckpt: Path, markers_expected: bool) -> str | None:
    """Why `ckpt` cannot be resumed from, or None when it is complete.

    Complete: every part the Trainer reads back is there (CHECKPOINT_PARTS), no file is
    truncated (JSON parses, safetensors and torch zip files end where their headers say),
    trainer_state.json has the step, and CHECKPOINT_DONE lists exactly these files and sizes.
    Without CHECKPOINT_DONE a checkpoint passes only in a directory made before the
    markers existed (`markers_expected` False); the file checks then decide alone.
    """
    if not ckpt.is_dir():
        return "not a directory"
    return (_missing_part(ckpt) or _damaged_file(ckpt) or _state_problem(ckpt)
            or _marker_problem(ckpt, markers_expected))


def _missing_part(ckpt: Path) -> str | None:
    for part, names in CHECKPOINT_PARTS.items():
        if not any(any(ckpt.glob(name)) for name in names):
            return f"missing {part}" if part.endswith(".json") else f"missing {part} ({' or '.join(names)})"
    return None


def _damaged_file(ckpt: Path) -> str | None:
    for path in sorted(ckpt.rglob("*")):
        if not path.is_file() or path.name.startswith(CHECKPOINT_DONE):
            continue
        rel = path.relative_to(ckpt)
        size = path.stat().st_size
        if size == 0:
            return f"{rel} is empty"
        why = _file_problem(path, size)
        if why:
            return f"{rel} {why}"
    return None


def _file_problem(path: Path, size: int) -> str | None:
    """A truncated or unreadable file, judged from its own structure (cheap: headers only)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            return _safetensors_problem(path, size)
        elif path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as archive:  # torch.save writes a zip; its directory is at the end
                archive.infolist()
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return "is truncated or unreadable"
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else size
        if n > size - 8:
            return f"is truncated ({size} bytes, less than its header)"
        header = json.loads(f.read(n))
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError):
        return "has an unreadable header"
    if 8 + n + end != size:
        return f"is truncated ({size} bytes, its header says {8 + n + end})"
    return None


def _state_problem(ckpt: Path) -> str | None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    return None


def _marker_problem(ckpt: Path, markers_expected: bool) -> str | None:
    path = ckpt / CHECKPOINT_DONE
    if not path.is_file():
        return "no completion marker: the save did not finish" if markers_expected else None
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CHECKPOINT_DONE} is unreadable"
    for rel, size in files.items():
        target = ckpt / rel
        if not target.is_file():
            return f"missing {rel}"
        if target.stat().st_size != size:
            return f"{rel} has {target.stat().st_size} bytes, {size} when saved"
    return None


def markers_expected(out: Path) -> bool:
    """Whether `out` was made by a trainer that marks every checkpoint it completes."""
    try:
        return bool(json.loads((out / MARKER).read_text()).get("checkpoint_markers"))
    except (OSError, ValueError, AttributeError):
        return False


def checkpoints(out: Path) -> list[Path]:
    """The Trainer's checkpoint-N directories of `out`, newest (highest N) first."""
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def newest_complete_checkpoint(out: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint of `out` (or None), and the newer ones skipped, with why."""
    expected = markers_expected(out)
    skipped = []
    for ckpt in checkpoints(out):
        problem = checkpoint_problem(ckpt, expected)
        if problem is None:
            return ckpt, skipped
        skipped.append((ckpt, problem))
    return None, skipped


def finished_steps(out: Path) -> int | None:
    """The optimizer steps of the finished run in `out` (run_config.json is written last), else None."""
    try:
        steps = json.loads((out / RUN_CONFIG).read_text()).get("global_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def resume_checkpoint(spec: str | None, out: Path) -> str | None:
    """The checkpoint --resume_from_checkpoint names (a directory, or 'last'), checked complete.

    'last' takes the newest complete checkpoint of `out`, logging each newer one it skips
    and why. With no checkpoint in a directory that holds nothing else, training starts
    from step 0; otherwise a missing or incomplete checkpoint is a CheckpointError.
    """
    if not spec:
        return None
    if spec != "last":
        path = Path(spec)
        problem = checkpoint_problem(path, markers_expected(path.resolve().parent))
        if problem:
            raise CheckpointError(f"--resume_from_checkpoint {path}: {problem}")
        return str(path)
    found, skipped = newest_complete_checkpoint(out)
    for ckpt, why in skipped:
        if is_rank0():
            logger.warning("--resume_from_checkpoint last: skipping %s: %s", ckpt, why)
    if found is not None:
        if is_rank0():
            logger.info("--resume_from_checkpoint last: resuming from %s", found)
        return str(found)
    if not out.exists() or holds_only_marker(out) or not any(out.iterdir()):
        if is_rank0():
            logger.info("--resume_from_checkpoint last: no checkpoint in %s yet; training from step 0", out)
        return None
    reasons = "; ".join(f"{c.name}: {why}" for c, why in skipped) or "it holds none"
    raise CheckpointError(
        f"--resume_from_checkpoint last: no complete checkpoint in {out} ({reasons}). To start over, "
        "rerun without --resume_from_checkpoint and with --overwrite_output_dir.")
