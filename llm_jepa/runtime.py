"""Process set-up shared by the entry points: the distributed rank, logging on rank 0 only,
and CPU numerics."""
from __future__ import annotations

import logging
import os

import torch

from .cli import package_logging


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_rank0() -> bool:
    return rank() == 0


def setup_cpu_numerics() -> None:
    """Flush denormal floats to zero on CPU. Tiny values (e.g. a JEPA loss near 0 and its
    gradients) otherwise take the CPU's slow path: a demo run slowed down 30x midway."""
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)


def setup_logging(debug: bool) -> None:
    """INFO (DEBUG with --debug) on rank 0, warnings only elsewhere; messages on stdout."""
    level = (logging.DEBUG if debug else logging.INFO) if is_rank0() else logging.WARNING
    package_logging("stdout", level)
    import transformers
    transformers.logging.set_verbosity_warning() if is_rank0() else transformers.logging.set_verbosity_error()
