"""Execution accuracy for text-to-SQL (Spider).

The published LLM-JEPA evaluator ran both queries through the ``sqlite3`` CLI
and compared stdout strings.  That was order-sensitive, let a failing
prediction (empty stdout) "match" an empty gold result, had no timeout and
opened the database writable.  This module fixes all four:

* the database is opened read-only (``mode=ro``) and an authorizer only lets
  reading statements through, so a prediction can neither change the file nor
  create new ones (``ATTACH``, ``VACUUM INTO``);
* every query runs under a deadline enforced by a progress handler, so a
  runaway query becomes a wrong answer instead of a hang;
* a prediction that fails is always wrong; a gold query that fails is
  reported as ``skipped`` ("gold error: ...") because such a row cannot be
  scored at all -- counting it as wrong or right would both be a lie;
* results are compared as multisets of rows, and in order only when the gold
  query has a top-level ``ORDER BY`` (the test-suite-sql-eval convention).
  Unlike test-suite-sql-eval, columns are not permuted: the prediction must
  return the columns in the gold order.

Exact match (:func:`exact_match`) is a secondary, purely textual metric over
:func:`normalize_sql`.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlparse import lexer
from sqlparse import tokens as T

logger = logging.getLogger(__name__)

__all__ = [
    "SqlError",
    "SqlTimeout",
    "SqlResult",
    "db_path",
    "execute",
    "results_match",
    "gold_is_ordered",
    "execution_match",
    "normalize_sql",
    "exact_match",
    "parse_db_id",
]

# The progress handler runs every this many SQLite VM instructions; small
# enough to stop within milliseconds of the deadline, large enough to cost
# nothing measurable.
_PROGRESS_STEPS = 1_000

# Authorizer actions a pure query needs.  Everything else (writes, ATTACH,
# PRAGMA, VACUUM INTO, transactions) is denied at prepare time, before any
# byte is touched.  ``mode=ro`` alone is not enough: it protects the main
# file, but ATTACH and VACUUM INTO would still create new files.
_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)

# Floats are rounded to this many significant digits before comparison so
# that the same aggregate computed in a different order (last-bit noise)
# still matches.
_FLOAT_DIGITS = 12


class SqlError(Exception):
    """A query could not be run to completion (syntax, runtime, policy...)."""


class SqlTimeout(SqlError):
    """A query ran past its deadline."""


@dataclass(frozen=True)
class SqlResult:
    """Outcome of scoring one prediction.

    ``status`` is ``"correct"``, ``"wrong"`` or ``"skipped"`` (not scorable:
    missing database or failing gold query); ``reason`` is empty when correct.
    """

    status: str
    reason: str = ""


# --------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------


def db_path(spider_path: str | Path, db_id: str) -> Path:
    """Spider layout: ``<spider_path>/<db_id>/<db_id>.sqlite``."""
    return Path(spider_path) / db_id / f"{db_id}.sqlite"


def _connect_read_only(db: Path) -> sqlite3.Connection:
    # mode=ro never creates the file; quote() escapes '?', '#', '%', spaces.
    uri = "file:" + urllib.parse.quote(str(Path(db).resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    # Old Spider databases contain invalid UTF-8 in some text columns.
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.set_authorizer(_authorize)
    return conn


def _authorize(action: int, *_args: object) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def execute(db: Path, sql: str, *, timeout_s: float = 10.0, max_rows: int = 100_000) -> list[tuple]:
    """Run one read-only query on ``db`` and return all its rows.

    Raises :class:`SqlError` when the database cannot be opened, the text is
    not exactly one row-returning statement, the query fails, returns more
    than ``max_rows`` rows (truncating could fake a match), or exceeds
    ``timeout_s`` (:class:`SqlTimeout`).
    """
    if not sql.strip():
        raise SqlError("empty query")
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return int(timed_out)  # non-zero aborts the running statement

    try:
        with closing(_connect_read_only(db)) as conn:
            conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
            # sqlite3 itself refuses a second statement before running the
            # first ("You can only execute one statement at a time").
            cursor = conn.execute(sql)
            if cursor.description is None:
                raise SqlError("not a query (returns no result set)")
            return _fetch_at_most(cursor, max_rows)
    except (sqlite3.Error, sqlite3.Warning) as exc:
        if timed_out:
            raise SqlTimeout(f"timed out after {timeout_s:g} s") from exc
        raise SqlError(f"{type(exc).__name__}: {exc}") from exc


def _fetch_at_most(cursor: sqlite3.Cursor, max_rows: int) -> list[tuple]:
    rows = cursor.fetchmany(max_rows + 1)
    if len(rows) > max_rows:
        raise SqlError(f"more than {max_rows} rows")
    return rows


# --------------------------------------------------------------------------
# Result comparison
# --------------------------------------------------------------------------


class _NaN:
    """Stand-in for float NaN, which is not equal to itself."""

    def __repr__(self) -> str:
        return "NaN"


_NAN = _NaN()


def _normalize_value(value: object) -> object:
    if isinstance(value, float):
        if math.isnan(value):
            return _NAN
        if math.isinf(value):
            return value
        # 1.0 becomes 1 (equal and hash-equal to the int anyway; this keeps
        # reprs readable) and last-bit float noise is rounded away.
        value = float(f"{value:.{_FLOAT_DIGITS}g}")
        return int(value) if value.is_integer() else value
    return value  # None, int, str, bytes compare fine as they are


def _normalize_rows(rows: Iterable[Sequence[object]]) -> list[tuple]:
    return [tuple(_normalize_value(v) for v in row) for row in rows]


def results_match(
    gold_rows: Iterable[Sequence[object]],
    pred_rows: Iterable[Sequence[object]],
    *,
    ordered: bool,
) -> bool:
    """Compare two result sets: as lists when ``ordered``, else as multisets.

    Duplicates always matter; values are normalised so 1 == 1.0 and
    NaN == NaN.  Rows must have the same columns in the same order.
    """
    gold = _normalize_rows(gold_rows)
    pred = _normalize_rows(pred_rows)
    if ordered:
        return gold == pred
    return Counter(gold) == Counter(pred)


def gold_is_ordered(gold_sql: str) -> bool:
    """True when the outermost query has an ``ORDER BY``.

    Uses the sqlparse lexer, so ``'order by'`` inside a string literal or a
    comment is not a keyword, and tracks parentheses so an ``ORDER BY`` in a
    subquery, CTE body or window (``OVER (ORDER BY ...)``) does not count:
    those do not fix the order of the rows the query returns.
    """
    depth = 0
    for ttype, value in lexer.tokenize(gold_sql):
        if ttype is T.Punctuation and value == "(":
            depth += 1
        elif ttype is T.Punctuation and value == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and ttype in T.Keyword and _keyword(value) == "ORDER BY":
            return True
    return False


def _keyword(value: str) -> str:
    return " ".join(value.upper().split())  # 'order \n by' -> 'ORDER BY'


def execution_match(
    spider_path: str | Path,
    db_id: str,
    gold_sql: str,
    pred_sql: str,
    *,
    timeout_s: float = 10.0,
) -> SqlResult:
    """Score ``pred_sql`` against ``gold_sql`` on Spider database ``db_id``."""
    db = db_path(spider_path, db_id)
    if not db.is_file():
        return SqlResult("skipped", "missing database")
    try:
        gold_rows = execute(db, gold_sql, timeout_s=timeout_s)
    except SqlError as exc:
        # Known broken Spider gold: unscorable, reported apart from wrong.
        logger.warning("gold query failed on %s: %s", db_id, exc)
        return SqlResult("skipped", f"gold error: {exc}")
    try:
        pred_rows = execute(db, pred_sql, timeout_s=timeout_s)
    except SqlTimeout:
        return SqlResult("wrong", "timeout")
    except SqlError as exc:
        return SqlResult("wrong", f"prediction error: {exc}")
    if results_match(gold_rows, pred_rows, ordered=gold_is_ordered(gold_sql)):
        return SqlResult("correct", "")
    return SqlResult("wrong", "result mismatch")


# --------------------------------------------------------------------------
# Exact match and dataset helpers
# --------------------------------------------------------------------------

# Tokens are joined by exactly one space, except: none after '(' or '.',
# none before ')' ',' '.', and none between a word and '(' (a call).
_NO_SPACE_AFTER = {"(", "."}
_NO_SPACE_BEFORE = {")", ",", "."}


def normalize_sql(sql: str) -> str:
    """Canonical text of a query for exact match.

    Token-based (sqlparse lexer), so string literals are never altered.
    Keywords are upper case and names lower case (SQLite keywords and
    identifiers are case insensitive).  A word directly before '(' is also
    upper case: sqlparse lexes ``avg(x)`` as a name but ``AVG (x)`` as a
    keyword, so such words (function names, ``IN``, ``EXISTS``...) get one
    case whatever the spacing.  Double-quoted tokens are kept as written
    (SQLite may read them as string literals), numbers verbatim ('1' and
    '1.0' differ), comments dropped, trailing ';' removed, and whitespace
    canonical (see ``_NO_SPACE_AFTER``).
    """
    tokens = [
        (ttype, value)
        for ttype, value in lexer.tokenize(sql)
        if ttype not in T.Whitespace and ttype not in T.Comment
    ]
    while tokens and tokens[-1][1] == ";":
        tokens.pop()
    words = [_case_word(tokens, i) for i in range(len(tokens))]
    out: list[str] = []
    for i, word in enumerate(words):
        if i and not _glued(tokens[i - 1][0], words[i - 1], word):
            out.append(" ")
        out.append(word)
    return "".join(out)


def _is_word(ttype: object) -> bool:
    return ttype in T.Keyword or ttype in T.Name


def _case_word(tokens: list[tuple[object, str]], i: int) -> str:
    ttype, value = tokens[i]
    before_paren = i + 1 < len(tokens) and tokens[i + 1][1] == "("
    if ttype in T.Keyword or (before_paren and _is_word(ttype)):
        return _keyword(value)
    if ttype in T.Name:
        return value.lower()
    return value


def _glued(prev_type: object, previous: str, word: str) -> bool:
    if previous in _NO_SPACE_AFTER or word in _NO_SPACE_BEFORE:
        return True
    return word == "(" and _is_word(prev_type)  # a call: 'COUNT(*)'


def exact_match(gold_sql: str, pred_sql: str) -> bool:
    """Textual match after :func:`normalize_sql`."""
    return normalize_sql(gold_sql) == normalize_sql(pred_sql)


_DB_ID = re.compile(r"For db_id:\[([^\]\n]+)\]")


def parse_db_id(user_content: str) -> str | None:
    """The db_id from Spider user content ``'For db_id:[NAME]\\n\\n...'``."""
    match = _DB_ID.match(user_content)
    return match.group(1) if match else None
