"""The published evaluate.py scoring, defects included (`--paper_compat`; SPEC.md section 8).

Nothing here is a correct metric: it exists so the paper's numbers can be reproduced.
The defects kept on purpose:
* the dataset is chosen by `input_file.startswith(name)` on the path as given, so
  "datasets/gsm8k_test.jsonl" silently falls back to exact match;
* exact match compares the strings as they are (no strip);
* gsm8k compares the raw text captured after a final "\\n#### ", and two missing answers are equal;
* spider compares the sqlite3 CLI's stdout: order-sensitive, and a failing query prints
  nothing, which "matches" a gold query with an empty result;
* nq_open tests containment the wrong way round (a generated piece inside the gold string),
  and an empty piece is contained in everything.
"""
from __future__ import annotations

import re
import shutil
import subprocess

from ..sql_exec import db_path, parse_db_id
from .base import gold_answer, user_content

_GSM8K_ANSWER = re.compile(r"\n#### (.+)$")


def startswith_match(generation: str, row: dict) -> bool:
    """Published --startswith (for --plain base models): the generation begins with the gold."""
    return generation.startswith(gold_answer(row))


def published_correct(generation: str, row: dict, input_file: str, spider_path: str | None,
                      *, sql_timeout: float = 60.0) -> bool:
    """Whether the published evaluate.py counts `generation` as correct.

    HellaSwag is scored by the caller (next-token letter); its letter then falls through to
    the exact match here, as published.
    """
    gold = gold_answer(row)
    if input_file.startswith("gsm8k"):
        return _gsm8k_answer(generation) == _gsm8k_answer(gold)
    if input_file.startswith("spider"):
        return _spider_match(generation, row, spider_path, sql_timeout)
    if input_file.startswith("nq_open"):
        return any(piece in gold for piece in generation.split("; "))
    return generation == gold


def _gsm8k_answer(text: str) -> str | None:
    match = _GSM8K_ANSWER.search(text)
    return match.group(1) if match else None


def _spider_match(generation: str, row: dict, spider_path: str | None, timeout: float) -> bool:
    if spider_path is None:
        raise ValueError("published spider scoring needs --spider_path")
    db_id = parse_db_id(user_content(row))
    if db_id is None:
        raise ValueError(f"no 'For db_id:[...]' in the user message: {user_content(row)[:80]!r}")
    dbfile = str(db_path(spider_path, db_id))
    return _sqlite3_stdout(dbfile, generation, timeout) == _sqlite3_stdout(dbfile, gold_answer(row), timeout)


def _sqlite3_stdout(dbfile: str, sql: str, timeout: float) -> str:
    """stdout of the sqlite3 CLI running `sql`; "" when the query fails, as published.

    Deviations that change no read query's output: -readonly (a generated write cannot damage
    the database), a timeout (published had none, so a runaway query hung the run; here it
    prints nothing, like any failing query), undecodable bytes replaced instead of crashing,
    and an argument starting with '.' is not run: the CLI would take it as a dot-command,
    and '.shell' / '.system' run arbitrary commands.
    """
    if shutil.which("sqlite3") is None:
        raise RuntimeError("the published spider scoring needs the sqlite3 command-line tool "
                           "(e.g. apt-get install sqlite3)")
    if sql.startswith("."):
        return ""
    try:
        result = subprocess.run(["sqlite3", "-readonly", dbfile, sql], capture_output=True,
                                text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout
