"""What the `python -m llm_jepa.<tool>` entry points share: progress lines on stderr."""
from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to sys.stderr as it is when a record is logged, not as it was
    when the handler was made: a caller that swaps sys.stderr (pytest's capture, a
    notebook) would otherwise leave the handler writing to a closed stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def progress_logging() -> None:
    """Our progress lines on stderr (stdout stays for results that scripts read); third-party
    loggers keep their own settings (a root handler would print the hub's retry warnings twice)."""
    log = logging.getLogger("llm_jepa")
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
