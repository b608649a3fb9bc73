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
* memory is bounded: SQLite's own limits (value length, result columns,
  query length), a cap on the fetched result, and a guard on the growth of
  the process's resident memory while a query runs (see ``MAX_*`` below), so
  an over-limit query is a wrong answer ("too large: ...") instead of an
  out-of-memory kill;
* a prediction that fails is always wrong; a gold query that fails is
  reported as ``skipped`` ("gold error: ...") because such a row cannot be
  scored at all -- counting it as wrong or right would both be a lie;
* results are compared as test-suite-sql-eval compares them: equal up to a
  permutation of the prediction's columns (:func:`match_columns`), rows as
  multisets, and in order only when the gold query has a top-level
  ``ORDER BY``.  Two differences, both deliberate: ``ORDER BY`` counts only at
  the top level (test-suite-sql-eval looks for the substring ``order by``
  anywhere, subqueries and string literals included), and ``DISTINCT`` is kept
  (test-suite-sql-eval strips it from both queries unless ``--keep_distinct``):
  a query returning duplicates is not the query that removes them.  The
  column permutation search is bounded (``PERMUTATION_BUDGET``): past it the
  prediction is wrong, with a reason that says so.  The comparison in the
  gold's column order is reported beside it (:class:`ExecutionResults`);
* before running, both queries get test-suite-sql-eval's repairs
  (:func:`repair_sql`): spaced comparison operators (``> =``) are joined and
  MySQL's ``YEAR(CURDATE())`` becomes 2020 -- outside string literals and
  quoted names only.

Exact match (:func:`exact_match`) is a secondary, purely textual metric over
:func:`normalize_sql`.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import re
import sqlite3
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sqlparse import lexer
from sqlparse import tokens as T

logger = logging.getLogger(__name__)

__all__ = [
    "SqlError",
    "SqlTimeout",
    "SqlTooLarge",
    "SqlResult",
    "db_path",
    "execute",
    "iter_statement_rows",
    "split_statements",
    "results_match",
    "ColumnMatch",
    "PERMUTATION_BUDGET",
    "match_columns",
    "gold_is_ordered",
    "repair_sql",
    "ExecutionResults",
    "execution_results",
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

# Functions a query may not call although SQLite has them: load_extension()
# loads code (off unless enabled; denied in case a build turns it on) and
# fts3_tokenizer() reads and writes raw C pointers in builds with
# SQLITE_ENABLE_FTS3_TOKENIZER (Debian's among them).
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})

# Floats are rounded to this many significant digits before comparison so
# that the same aggregate computed in a different order (last-bit noise)
# still matches.
_FLOAT_DIGITS = 12

# --------------------------------------------------------------------------
# Memory bounds.  Measured on Spider (both splits, 163 databases): the largest
# stored value is 213 bytes, the widest table 26 columns (42 in soccer_1), the
# widest gold result 19 columns, the largest gold result 169 KB (10,507 rows)
# and the longest gold query 577 bytes.  Each bound leaves real queries 5x to
# 500x headroom; together they keep one hostile query (a 400 MB zeroblob, a
# hundred wide columns, millions of rows) far below 1 GB of peak memory
# (tests/test_sql_safety.py measures it in a subprocess).
# --------------------------------------------------------------------------

# SQLITE_LIMIT_LENGTH: the largest string, blob or row record SQLite builds;
# hex(zeroblob(400000000)) fails at once instead of allocating 800 MB.
MAX_VALUE_BYTES = 100_000
# SQLITE_LIMIT_COLUMN: columns of a result, so one row stays under
# MAX_COLUMNS * MAX_VALUE_BYTES = 10 MB.  Set after the schema is loaded:
# SQLite applies it to tables as well, and wider tables must stay readable.
MAX_COLUMNS = 100
# Query text (and SQLITE_LIMIT_SQL_LENGTH): each term of a query can hold a
# value of MAX_VALUE_BYTES, so the text length also bounds how many.
MAX_SQL_BYTES = 20_000
# A fetched result, counted row by row as the bytes of its text and blobs
# plus _VALUE_OVERHEAD per value (its Python object and tuple slot), so a
# large result stops before it is held.
MAX_RESULT_BYTES = 16_000_000
_VALUE_OVERHEAD = 24
# Growth of the process's resident memory while one query runs: what the
# limits above do not bound one by one (page caches of temporary tables and
# sorters, many large values alive at once).  Read at most every
# _MEMORY_CHECK_S by the progress handler: reading costs microseconds.
MAX_QUERY_MEMORY = 256 * 2**20
_MEMORY_CHECK_S = 0.002


class SqlError(Exception):
    """A query could not be run to completion (syntax, runtime, policy...)."""


class SqlTimeout(SqlError):
    """A query ran past its deadline."""


class SqlTooLarge(SqlError):
    """A query, its result or its memory use went over one of the MAX_* bounds."""


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


def _decode_text(raw: bytes) -> str:
    # Old Spider databases contain invalid UTF-8 in some text columns.
    return raw.decode("utf-8", errors="replace")


def _connect_read_only(db: Path, text_factory: object = _decode_text) -> sqlite3.Connection:
    # mode=ro never creates the file; quote() escapes '?', '#', '%', spaces.
    uri = "file:" + urllib.parse.quote(str(Path(db).resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.text_factory = text_factory
        # Load the schema before the limits: SQLITE_LIMIT_COLUMN applies to
        # the tables it declares too.
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        _set_limits(conn)
        conn.set_authorizer(_authorize)
    except BaseException:
        conn.close()
        raise
    return conn


def _set_limits(conn: sqlite3.Connection) -> None:
    if not hasattr(conn, "setlimit"):  # Python < 3.11: the other bounds still hold
        return
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)


def _authorize(action: int, _arg1: object, arg2: object, *_rest: object) -> int:
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _resident_bytes() -> int | None:
    """The process's resident memory now (Linux), else its peak so far, else None."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return _peak_bytes()
    try:
        return int(os.read(fd, 128).split()[1]) * mmap.PAGESIZE
    finally:
        os.close(fd)


def _peak_bytes() -> int | None:
    # Growth of the peak can miss memory reused below an earlier peak, never
    # report growth that did not happen.
    try:
        import resource
    except ImportError:  # Windows: SQLite's limits and the result cap remain
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, others KiB


class _Guard:
    """The progress handler: stops a statement past its deadline or memory bound."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.baseline = _resident_bytes()
        self.next_memory_check = 0.0
        self.stopped = ""  # "timeout" or "memory" once a statement was stopped

    def __call__(self) -> int:
        now = time.monotonic()
        if now > self.deadline:
            self.stopped = "timeout"
        elif self.baseline is not None and now >= self.next_memory_check:
            self.next_memory_check = now + _MEMORY_CHECK_S
            if _resident_bytes() - self.baseline > MAX_QUERY_MEMORY:
                self.stopped = "memory"
        return int(bool(self.stopped))  # non-zero aborts the running statement


@contextmanager
def _guarded(db: Path, timeout_s: float, text_factory: object = _decode_text) -> Iterator[sqlite3.Connection]:
    """The hardened read-only connection; what goes wrong in it comes out as SqlError."""
    guard = _Guard(timeout_s)
    try:
        with closing(_connect_read_only(db, text_factory)) as conn:
            conn.set_progress_handler(guard, _PROGRESS_STEPS)
            yield conn
    except (sqlite3.Error, sqlite3.Warning, MemoryError) as exc:
        raise _sql_error(exc, guard.stopped, timeout_s) from exc


def _sql_error(exc: BaseException, stopped: str, timeout_s: float) -> SqlError:
    if stopped == "timeout":
        return SqlTimeout(f"timed out after {timeout_s:g} s")
    if stopped == "memory":
        return SqlTooLarge(f"used more than {MAX_QUERY_MEMORY >> 20} MiB of memory")
    if isinstance(exc, MemoryError):  # SQLITE_NOMEM
        return SqlTooLarge("out of memory")
    if isinstance(exc, sqlite3.DataError):  # SQLITE_TOOBIG: over SQLITE_LIMIT_LENGTH
        return SqlTooLarge(f"{exc} (at most {MAX_VALUE_BYTES} bytes per value)")
    if "too many columns" in str(exc):
        return SqlTooLarge(f"{exc} (at most {MAX_COLUMNS})")
    return SqlError(f"{type(exc).__name__}: {exc}")


def _check_text(sql: str) -> None:
    """Refuse, before SQLite sees it, a text it cannot take (nor could the CLI's argv)."""
    if "\0" in sql:
        raise SqlError("the query contains a NUL character")
    try:
        size = len(sql.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SqlError(f"the query is not valid Unicode: {exc}") from None
    if size > MAX_SQL_BYTES:
        raise SqlTooLarge(f"query text of {size} bytes (at most {MAX_SQL_BYTES})")


def execute(db: Path, sql: str, *, timeout_s: float = 10.0, max_rows: int = 100_000) -> list[tuple]:
    """Run one read-only query on ``db`` and return all its rows.

    Raises :class:`SqlError` when the database cannot be opened, the text is
    not exactly one row-returning statement, the query fails, returns more
    than ``max_rows`` rows (truncating could fake a match), or exceeds
    ``timeout_s`` (:class:`SqlTimeout`); :class:`SqlTooLarge` when the query
    or its result goes over a memory bound (``MAX_*``).
    """
    if not sql.strip():
        raise SqlError("empty query")
    _check_text(sql)
    with _guarded(db, timeout_s) as conn:
        # sqlite3 itself refuses a second statement before running the
        # first ("You can only execute one statement at a time").
        cursor = conn.execute(sql)
        if cursor.description is None:
            raise SqlError("not a query (returns no result set)")
        return _fetch_bounded(cursor, max_rows)


def _fetch_bounded(cursor: sqlite3.Cursor, max_rows: int) -> list[tuple]:
    # Row by row: a batch of rows could already be far over MAX_RESULT_BYTES.
    rows: list[tuple] = []
    size = 0
    for row in cursor:
        if len(rows) == max_rows:
            raise SqlError(f"more than {max_rows} rows")
        size += _VALUE_OVERHEAD * len(row)
        for value in row:  # a plain loop: this runs for every value of every result
            if isinstance(value, (str, bytes)):
                size += len(value)
        if size > MAX_RESULT_BYTES:
            raise SqlTooLarge(f"result over {MAX_RESULT_BYTES} bytes")
        rows.append(row)
    return rows


def split_statements(sql: str) -> list[str]:
    """``sql`` cut after every ';' that ends a statement, as SQLite's own
    sqlite3_complete() sees it (quotes, comments and trigger bodies respected),
    as the sqlite3 CLI runs a script; non-blank text after the last one is a
    statement too.  Quadratic in the worst case, hence MAX_SQL_BYTES first.
    """
    statements, start = [], 0
    end = sql.find(";")
    while end != -1:
        if sqlite3.complete_statement(sql[start:end + 1]):
            statements.append(sql[start:end + 1])
            start = end + 1
        end = sql.find(";", end + 1)
    if sql[start:].strip():
        statements.append(sql[start:])
    return statements


def iter_statement_rows(db: str | Path, sql: str, *, timeout_s: float = 10.0) -> Iterator[tuple]:
    """The rows of each statement of ``sql`` in turn, as the sqlite3 CLI runs
    a script, on the connection :func:`execute` uses (read-only, authorizer,
    limits; one deadline and memory guard for the whole script).  Text and
    blobs come back as raw bytes.  The first failing statement raises
    :class:`SqlError` after the rows before it were yielded (the CLI stops
    there too, keeping what it printed); Python's sqlite3 reads one row ahead,
    so a statement failing in the middle of its rows loses the row before the
    failure.  The caller bounds what it keeps (MAX_RESULT_BYTES).
    """
    _check_text(sql)
    with _guarded(db, timeout_s, text_factory=bytes) as conn:
        for statement in split_statements(sql):
            yield from conn.execute(statement)


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


def _rows_equal(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    return gold == pred if ordered else Counter(gold) == Counter(pred)


def results_match(
    gold_rows: Iterable[Sequence[object]],
    pred_rows: Iterable[Sequence[object]],
    *,
    ordered: bool,
) -> bool:
    """Compare two result sets: as lists when ``ordered``, else as multisets.

    Duplicates always matter; values are normalised so 1 == 1.0 and
    NaN == NaN.  Rows must have the same columns in the same order: this is
    the ``execution_strict`` comparison (:func:`match_columns` permutes).
    """
    return _rows_equal(_normalize_rows(gold_rows), _normalize_rows(pred_rows), ordered)


# --------------------------------------------------------------------------
# Column permutation (test-suite-sql-eval's execution match)
#
# The prediction may return the gold's columns in any order.  Trying every
# permutation is factorial, so the search works on what a permutation must
# preserve.  Columns that are equal top to bottom form one class (SELECT a, a):
# a row permutation moves them together, so a gold class can only pair with a
# prediction class of the same size, and one try stands for all its members.
# A pair must also hold the same multiset of values.  Classes that tie on both
# are searched depth first, and each partial pairing is checked at once: the
# rows projected on the columns paired so far must be equal as multisets.
# Once those columns tell every row apart, the rows themselves are paired, and
# each remaining gold column has one possible partner, found by lookup.
# --------------------------------------------------------------------------

# Bound on the search, in rows read: each candidate check reads every row of
# both results once, and all checks together read at most this many (well
# under a second).  Real ties need a handful of checks; only results built to
# defeat the pruning (every proper subset of columns agreeing) come near it.
PERMUTATION_BUDGET = 1_000_000


@dataclass(frozen=True)
class ColumnMatch:
    """Outcome of :func:`match_columns`.

    ``permutation[g]`` is the prediction column that matches gold column
    ``g`` (``()`` when both results are empty); ``None`` when there is no
    such permutation or the search ran out of budget (``over_budget``).
    ``checks`` counts the candidate pairings the search checked (0 when the
    gold column order matched, or rows in order left nothing to search).
    """

    permutation: tuple[int, ...] | None
    checks: int = 0
    over_budget: bool = False


def match_columns(
    gold_rows: Iterable[Sequence[object]],
    pred_rows: Iterable[Sequence[object]],
    *,
    ordered: bool,
    budget: int = PERMUTATION_BUDGET,
) -> ColumnMatch:
    """A permutation of the prediction's columns that makes the results equal.

    Equal as in :func:`results_match` after the permutation: in order when
    ``ordered``, else as multisets of rows.  Two empty results are equal
    whatever their columns (nothing tells them apart); results with different
    numbers of rows or of columns never are.  ``budget`` bounds the rows the
    search reads (see ``PERMUTATION_BUDGET``).
    """
    return _match_columns(_normalize_rows(gold_rows), _normalize_rows(pred_rows), ordered, budget)


def _match_columns(gold: list[tuple], pred: list[tuple], ordered: bool, budget: int) -> ColumnMatch:
    if not gold and not pred:
        return ColumnMatch(())
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return ColumnMatch(None)
    if _rows_equal(gold, pred, ordered):  # the gold order itself: nothing to search
        return ColumnMatch(tuple(range(len(gold[0]))))
    gold_classes, pred_classes = _column_classes(gold), _column_classes(pred)
    if ordered:
        # Rows in the same order: each gold column is a prediction column as it stands.
        pairs = _pair_identical(gold_classes, pred_classes)
        return ColumnMatch(None if pairs is None else _permutation(gold_classes, pred_classes, pairs))
    search = _ColumnSearch(gold_classes, pred_classes, max_checks=max(1, budget // (2 * len(gold))))
    try:
        pairs = search.run()
    except _OverBudget:
        return ColumnMatch(None, search.checks, over_budget=True)
    permutation = None if pairs is None else _permutation(gold_classes, pred_classes, pairs)
    return ColumnMatch(permutation, search.checks)


# A class of identical columns: their common values top to bottom, and their indices.
_Class = tuple[tuple, list[int]]
# The search's steps: each gold class (an index) with its candidate prediction classes.
_Steps = list[tuple[int, list[int]]]


def _column_classes(rows: list[tuple]) -> list[_Class]:
    classes: dict[tuple, list[int]] = {}
    for index, values in enumerate(zip(*rows)):
        classes.setdefault(values, []).append(index)
    return list(classes.items())


def _pair_identical(gold: list[_Class], pred: list[_Class]) -> list[tuple[int, int]] | None:
    """Each gold class with the prediction class holding the same values, or None."""
    pred_index = {values: p for p, (values, _) in enumerate(pred)}
    pairs = []
    for g, (values, indices) in enumerate(gold):
        p = pred_index.get(values)
        if p is None or len(pred[p][1]) != len(indices):
            return None
        pairs.append((g, p))
    return pairs


def _permutation(gold: list[_Class], pred: list[_Class], pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    permutation = [0] * sum(len(indices) for _, indices in gold)
    for g, p in pairs:
        for gold_index, pred_index in zip(gold[g][1], pred[p][1]):
            permutation[gold_index] = pred_index
    return tuple(permutation)


class _OverBudget(Exception):
    pass


class _ColumnSearch:
    """Depth-first pairing of gold with prediction column classes (see above).

    Rows are tracked by ids shared by both results: two rows have the same id
    exactly when they agree on every column paired so far, so a partial
    pairing is consistent when both results hold each id equally often.
    """

    def __init__(self, gold: list[_Class], pred: list[_Class], max_checks: int) -> None:
        self.gold, self.pred = gold, pred
        self.pred_index = {values: p for p, (values, _) in enumerate(pred)}
        self.max_checks, self.checks = max_checks, 0

    def run(self) -> list[tuple[int, int]] | None:
        """Pairs (gold class, prediction class) that make the results equal, or None."""
        steps = self._steps()
        if steps is None:
            return None
        rows = len(self.gold[0][0])
        return self._extend(steps, [0] * rows, [0] * rows, frozenset(), pinned=False)

    def _steps(self) -> _Steps | None:
        """Each gold class with its candidates: the prediction classes of the
        same size and multiset of values.  None when the two sides do not have
        as many classes of each kind (no pairing can exist)."""
        groups: dict[tuple, tuple[list[int], list[int]]] = {}
        for side, classes in enumerate((self.gold, self.pred)):
            for i, (values, indices) in enumerate(classes):
                key = (len(indices), frozenset(Counter(values).items()))
                groups.setdefault(key, ([], []))[side].append(i)
        if any(len(gold) != len(pred) for gold, pred in groups.values()):
            return None
        # Fewest candidates first: forced pairs cost one check each and pin
        # down rows before any branching.
        by_size = sorted(groups.values(), key=lambda group: len(group[0]))
        return [(g, pred) for gold, pred in by_size for g in gold]

    def _spend(self) -> None:
        if self.checks == self.max_checks:
            raise _OverBudget
        self.checks += 1

    def _extend(self, steps: _Steps, gold_ids: list[int], pred_ids: list[int], used: frozenset[int],
                pinned: bool) -> list[tuple[int, int]] | None:
        """Pairs for ``steps`` consistent with the row ids so far, or None."""
        if not steps:
            return []
        if pinned:
            return self._lookup(steps, gold_ids, pred_ids)
        (g, candidates), rest = steps[0], steps[1:]
        for p in candidates:
            if p in used:
                continue
            self._spend()
            gold_next, pred_next, distinct = _refine(gold_ids, self.gold[g][0], pred_ids, self.pred[p][0])
            if Counter(gold_next) != Counter(pred_next):
                continue
            found = self._extend(rest, gold_next, pred_next, used | {p}, pinned=distinct == len(gold_ids))
            if found is not None:
                return [(g, p), *found]
        return None

    def _lookup(self, steps: _Steps, gold_ids: list[int], pred_ids: list[int]) -> list[tuple[int, int]] | None:
        """The rest of the pairing once every gold row has its own id: the
        prediction's row i is then gold row ``at[i]``, so a gold column's
        partner must hold its values in that order."""
        row_of = {row_id: r for r, row_id in enumerate(gold_ids)}
        at = [row_of[row_id] for row_id in pred_ids]  # same ids: the last check saw equal multisets
        pairs = []
        for g, candidates in steps:
            self._spend()
            values = self.gold[g][0]
            p = self.pred_index.get(tuple(values[r] for r in at))
            # The same values in a class of another size (SELECT a, a vs SELECT a) do not pair.
            if p not in candidates:
                return None
            pairs.append((g, p))
        return pairs


def _refine(gold_ids: list[int], gold_values: tuple, pred_ids: list[int],
            pred_values: tuple) -> tuple[list[int], list[int], int]:
    """Row ids after one more column pair, and how many distinct gold ids there are."""
    ids: dict[tuple, int] = {}
    gold = [ids.setdefault(key, len(ids)) for key in zip(gold_ids, gold_values)]
    distinct = len(ids)
    pred = [ids.setdefault(key, len(ids)) for key in zip(pred_ids, pred_values)]
    return gold, pred, distinct


# --------------------------------------------------------------------------
# Query repairs and scoring
# --------------------------------------------------------------------------

# Spaced comparison operators: SQLite reads '> =' as '>' and a stray '=', a
# syntax error.  Models write them; gold queries get the same repair (no
# query of our Spider files needs it, but other copies of the data may).
_JOINED_OPERATORS = {">": ">=", "<": "<=", "!": "!="}
# MySQL's current year, which SQLite lacks; test-suite-sql-eval fixes it at
# 2020, so a score does not depend on the day the evaluation runs.
_CURRENT_YEAR = ("YEAR", "(", "CURDATE", "(", ")", ")")
_FIXED_YEAR = "2020"
_MAY_NEED_REPAIR = re.compile(r"[<>!]\s|curdate", re.IGNORECASE)


def repair_sql(sql: str) -> str:
    """``sql`` with test-suite-sql-eval's repairs: ``> =``, ``< =`` and ``! =``
    (any whitespace between) become ``>=``, ``<=`` and ``!=``, and
    ``YEAR(CURDATE())`` becomes ``2020``.

    Both only turn a query SQLite cannot run into one it can.  Unlike the
    plain text replacement of test-suite-sql-eval, they apply to tokens (the
    sqlparse lexer), so string literals, quoted names and comments are never
    changed: ``WHERE x = 'a > = b'`` stays as it is.
    """
    if len(sql) > MAX_SQL_BYTES or not _MAY_NEED_REPAIR.search(sql):
        return sql  # nothing to repair (a text that long is refused by execute() anyway)
    tokens = [value for _, value in lexer.tokenize(sql)]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        after = _skip_space(tokens, i + 1)
        year_end = _match_words(tokens, i, _CURRENT_YEAR)
        if tokens[i] in _JOINED_OPERATORS and after < len(tokens) and tokens[after] == "=":
            out.append(_JOINED_OPERATORS[tokens[i]])
            i = after + 1
        elif year_end:
            out.append(_FIXED_YEAR)
            i = year_end
        else:
            out.append(tokens[i])
            i += 1
    return "".join(out)


def _skip_space(tokens: list[str], i: int) -> int:
    # Whitespace tokens are all whitespace; any other token (a literal is quoted) is not.
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    return i


def _match_words(tokens: list[str], start: int, words: tuple[str, ...]) -> int:
    """The index after ``words`` when the tokens from ``start`` spell them,
    in any case and with whitespace between, else 0."""
    i = start
    for n, word in enumerate(words):
        if n:
            i = _skip_space(tokens, i)
        if i == len(tokens) or tokens[i].upper() != word:
            return 0
        i += 1
    return i


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


class ExecutionResults(NamedTuple):
    """One prediction scored both ways: ``execution`` lets the prediction's
    columns come in any order (test-suite-sql-eval), ``strict`` wants the
    gold's order.  Whatever does not depend on the comparison (a skipped row,
    a failing prediction) is the same in both."""

    execution: SqlResult
    strict: SqlResult


def _both(result: SqlResult) -> ExecutionResults:
    return ExecutionResults(result, result)


def execution_results(
    spider_path: str | Path,
    db_id: str,
    gold_sql: str,
    pred_sql: str,
    *,
    timeout_s: float = 10.0,
) -> ExecutionResults:
    """Score ``pred_sql`` against ``gold_sql`` on Spider database ``db_id``.

    Both queries get :func:`repair_sql` and otherwise run as written
    (``DISTINCT`` included).
    """
    db = db_path(spider_path, db_id)
    if not db.is_file():
        return _both(SqlResult("skipped", "missing database"))
    gold_sql, pred_sql = repair_sql(gold_sql), repair_sql(pred_sql)
    try:
        gold_rows = execute(db, gold_sql, timeout_s=timeout_s)
    except SqlError as exc:
        # Known broken Spider gold: unscorable, reported apart from wrong.
        logger.warning("gold query failed on %s: %s", db_id, exc)
        return _both(SqlResult("skipped", f"gold error: {exc}"))
    try:
        pred_rows = execute(db, pred_sql, timeout_s=timeout_s)
    except SqlTimeout:
        return _both(SqlResult("wrong", "timeout"))
    except SqlTooLarge as exc:
        return _both(SqlResult("wrong", f"too large: {exc}"))
    except SqlError as exc:
        return _both(SqlResult("wrong", f"prediction error: {exc}"))
    return _compare(_normalize_rows(gold_rows), _normalize_rows(pred_rows), gold_is_ordered(gold_sql))


def _compare(gold: list[tuple], pred: list[tuple], ordered: bool) -> ExecutionResults:
    if _rows_equal(gold, pred, ordered):
        return _both(SqlResult("correct", ""))
    mismatch = SqlResult("wrong", "result mismatch")
    match = _match_columns(gold, pred, ordered, PERMUTATION_BUDGET)
    if match.permutation is not None:
        return ExecutionResults(SqlResult("correct", ""), SqlResult("wrong", "columns in another order"))
    if match.over_budget:
        reason = f"column permutation search over budget ({match.checks} checks)"
        return ExecutionResults(SqlResult("wrong", reason), mismatch)
    return _both(mismatch)


def execution_match(
    spider_path: str | Path,
    db_id: str,
    gold_sql: str,
    pred_sql: str,
    *,
    timeout_s: float = 10.0,
) -> SqlResult:
    """The primary score of :func:`execution_results` (columns in any order)."""
    return execution_results(spider_path, db_id, gold_sql, pred_sql, timeout_s=timeout_s).execution


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
