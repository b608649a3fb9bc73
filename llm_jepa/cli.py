"""Logging for the entry points: progress lines on the process's current stdout or stderr."""
from __future__ import annotations

import logging
import sys


class CurrentStreamHandler(logging.StreamHandler):
    """A handler that writes to sys.stdout or sys.stderr as it is when a record is logged,
    not as it was when the handler was made: a caller that swaps the stream (pytest's
    capture, a notebook) would otherwise leave the handler writing to a closed file."""

    def __init__(self, name: str = "stderr"):
        self._stream_name = name
        super().__init__(getattr(sys, name))

    @property
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, _value):
        pass


def package_logging(stream: str = "stderr", level: int = logging.INFO) -> None:
    """The package's log lines, "%(message)s", on the current `stream` at `level`, printed
    once: this replaces the package logger's handlers and does not propagate to the root
    (third-party loggers keep their own settings; a root handler would print lines twice)."""
    handler = CurrentStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("llm_jepa")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def progress_logging() -> None:
    """Progress lines on stderr: stdout stays for the results that scripts read."""
    package_logging("stderr")
