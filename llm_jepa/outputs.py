"""The output directory: made safely, marked as ours, and described by run_config.json.

The published code deleted --output_dir unconditionally. Here an existing directory is
only replaced when it is empty, or when this trainer made it (MARKER) and
--overwrite_output_dir is given; resuming keeps it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

MARKER = ".llm_jepa_run"
RUN_CONFIG = "run_config.json"


class OutputDirError(RuntimeError):
    pass


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
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "argv": sys.argv}) + "\n")
    return out


def write_run_config(out: Path, cfg, extra: dict) -> None:
    """Everything needed to know how the run was made: flags, resolved choices, versions."""
    from .environment import stack_record

    record = {"config": dataclasses.asdict(cfg), **extra, "versions": stack_record(),
              "argv": sys.argv, "cwd": os.getcwd()}
    (out / RUN_CONFIG).write_text(json.dumps(record, indent=2, default=str) + "\n")
