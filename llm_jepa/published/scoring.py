"""The published evaluation's scoring, defects included (`--published scorers`).

Nothing here is a correct metric: it exists so the paper's numbers can be reproduced.
The defects kept on purpose:
* the dataset is chosen by `input_file.startswith(name)` on the path as given, so
  "datasets/gsm8k_test.jsonl" silently falls back to exact match;
* exact match compares the strings as they are (no strip);
* gsm8k compares the raw text captured after a final "\\n#### ", and two missing answers are equal;
* spider compares the sqlite3 CLI's stdout: order-sensitive, and a failing query prints
  nothing, which "matches" a gold query with an empty result (the CLI's output is reproduced
  on sql_exec's hardened connection, see `_sqlite3_stdout`);
* nq_open tests containment the wrong way round (a generated piece inside the gold string),
  and an empty piece is contained in everything.
"""
from __future__ import annotations

import functools
import logging
import re
import sqlite3

from .. import sql_exec
from ..metrics.base import gold_answer, user_content
from ..sql_exec import SqlError, SqlTimeout, SqlTooLarge, db_path, parse_db_id

logger = logging.getLogger(__name__)

_GSM8K_ANSWER = re.compile(r"\n#### (.+)$")


def published_correct(generation: str, row: dict, input_file: str, spider_path: str | None,
                      *, sql_timeout: float = 60.0) -> bool:
    """Whether the published evaluate.py counts `generation` as correct.

    HellaSwag is scored by the caller (next-token letter); its letter then falls through to
    the exact match here, as published.
    """
    return published_score(generation, row, input_file, spider_path, sql_timeout=sql_timeout)[0]


def published_score(generation: str, row: dict, input_file: str, spider_path: str | None,
                    *, sql_timeout: float = 60.0) -> tuple[bool, str]:
    """`published_correct`, with the reason of a row scored wrong without a comparison
    ("" otherwise): a Spider query over sql_exec's memory bounds ("too large: ...")."""
    gold = gold_answer(row)
    if input_file.startswith("gsm8k"):
        return _gsm8k_answer(generation) == _gsm8k_answer(gold), ""
    if input_file.startswith("spider"):
        return _spider_match(generation, row, spider_path, sql_timeout)
    if input_file.startswith("nq_open"):
        return any(piece in gold for piece in generation.split("; ")), ""
    return generation == gold, ""


def _gsm8k_answer(text: str) -> str | None:
    match = _GSM8K_ANSWER.search(text)
    return match.group(1) if match else None


def _spider_match(generation: str, row: dict, spider_path: str | None, timeout: float) -> tuple[bool, str]:
    if spider_path is None:
        raise ValueError("published spider scoring needs --spider_path")
    db_id = parse_db_id(user_content(row))
    if db_id is None:
        raise ValueError(f"no 'For db_id:[...]' in the user message: {user_content(row)[:80]!r}")
    dbfile = str(db_path(spider_path, db_id))
    try:
        predicted = _sqlite3_stdout(dbfile, generation, timeout)
        same = predicted == _sqlite3_stdout(dbfile, gold_answer(row), timeout)
    except SqlTooLarge as exc:
        # The CLI would have printed it all, and it could not have equalled a gold output
        # of normal size: wrong, not the "" of a failing query (which may "match").
        logger.debug("published spider scoring on %s: too large: %s", db_id, exc)
        return False, f"too large: {exc}"
    return same, ""


def _sqlite3_stdout(dbfile: str, sql: str, timeout: float) -> str:
    """What the published `sqlite3 DBFILE SQL` prints, read back by `subprocess.run(...,
    text=True)`; "" when the first statement fails, as published.

    The CLI itself is not run: with `-readonly` it still offers writefile(), readfile(),
    fsdir(), load_extension() and dot-commands, and `-safe` still lets fsdir() read any
    file. Its list mode is reproduced instead on sql_exec's connection (read-only, reads
    only, memory bounds): each statement in turn, a row as its values joined by "|" plus a
    newline, NULL as "", text and blobs as their bytes up to a NUL byte (printf "%s"), reals
    as SQLite's own text (CAST AS TEXT, the conversion the CLI prints), then decoded as
    UTF-8 with replacement and universal newlines as subprocess.run(text=True) does.
    tests/test_sql_safety.py checks it against the CLI on real Spider gold queries.

    Deviations (none touches a read query that runs without error on SQLite's core): a
    statement other than a read (write, ATTACH, PRAGMA, transaction) and the CLI's own
    functions (readfile, fsdir, generate_series, regexp...) fail, as any failing statement
    does in the CLI; a query over sql_exec's memory bounds scores wrong; a runaway query prints
    nothing (published had no timeout and hung); an argument starting with '.' (a
    dot-command: '.shell' runs anything) prints nothing; EXPLAIN prints plain rows; a
    statement failing after some rows loses the row before the failure (see
    sql_exec.iter_statement_rows). Raises SqlTooLarge over the memory bounds.
    """
    if sql.startswith("."):
        return ""
    out = bytearray()
    try:
        for row in sql_exec.iter_statement_rows(dbfile, sql, timeout_s=timeout):
            out += b"|".join(_cli_value(value) for value in row) + b"\n"
            if len(out) > sql_exec.MAX_RESULT_BYTES:
                raise SqlTooLarge(f"output over {sql_exec.MAX_RESULT_BYTES} bytes")
    except SqlTimeout:
        return ""
    except SqlTooLarge:
        raise
    except SqlError:
        pass  # the CLI stops at the failing statement, keeping what it printed before
    return out.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def _cli_value(value: object) -> bytes:
    """A value as the CLI's list mode prints it: printf("%s") of sqlite3_column_text()."""
    if value is None:
        return b""
    if isinstance(value, bytes):  # text and blobs alike
        return value.split(b"\0", 1)[0]
    if isinstance(value, float):
        return _real_text(value)
    return str(value).encode()


@functools.lru_cache(maxsize=1)
def _text_converter() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False)


def _real_text(value: float) -> bytes:
    # SQLite's REAL-to-text ("%!.15g" in 3.40), not Python's repr: 0.1 prints as 0.1,
    # 1/3.0 as 0.333333333333333, 1.0 as 1.0, 1e300 as 1.0e+300.
    return _text_converter().execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0].encode()
