"""Writing JSONL files: the one writer for prepared datasets and generated data."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def to_line(obj: dict) -> str:
    """One line as the published files have them: json.dumps defaults (ASCII escapes, ", "
    and ": ")."""
    return json.dumps(obj) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically, so that a failed run never leaves half a file behind; returns
    the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(to_line(row))
            n += 1
    os.replace(tmp, path)
    return n
