"""Spider execution accuracy as test-suite-sql-eval defines it (llm_jepa.sql_exec).

`execution`: the results are equal after some permutation of the prediction's columns; rows
as multisets, in order only when the gold query has a top-level ORDER BY; DISTINCT kept.
`execution_strict`: the same in the gold's column order. Expected values are worked out by
hand from the tables built below.
"""
from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path

import pytest

from conftest import example
from llm_jepa.metrics import ScoreContext, get_metric
from llm_jepa.sql_exec import (
    PERMUTATION_BUDGET, ColumnMatch, SqlResult, db_path, execute, execution_results, match_columns, repair_sql,
    results_match,
)

SPIDER_DB = Path(__file__).resolve().parents[1].parent / "shared" / "spider_data" / "database"
DB_ID = "toy_1"
CORRECT = SqlResult("correct", "")
MISMATCH = SqlResult("wrong", "result mismatch")
REORDERED = SqlResult("wrong", "columns in another order")
PARITY_WIDTH = 10   # 2**9 = 512 rows per table


def _parity_rows(parity: int) -> list[tuple[int, ...]]:
    """Every 0/1 row of PARITY_WIDTH columns whose sum has this parity.

    Even and odd agree on every proper subset of columns (each pattern once) and never on
    all of them, whatever the column order: the pruning cannot cut the search short.
    """
    return [bits for bits in itertools.product((0, 1), repeat=PARITY_WIDTH) if sum(bits) % 2 == parity]


@pytest.fixture
def spider(tmp_path: Path) -> Path:
    db = db_path(tmp_path, DB_ID)
    db.parent.mkdir()
    columns = ", ".join(f"c{i}" for i in range(PARITY_WIDTH))
    marks = ", ".join("?" * PARITY_WIDTH)
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE student (id INTEGER PRIMARY KEY, fname TEXT, major TEXT, age INTEGER);
            INSERT INTO student VALUES (1, 'Ann', 'Math', 19), (2, 'Bob', 'Art', 22),
                                       (3, 'Cid', 'Math', 20), (4, 'Dee', 'Law', 25);
            CREATE TABLE note (body TEXT);
            INSERT INTO note VALUES ('a > = b'), ('order by');
        """)
        for name, parity in (("even", 0), ("odd", 1)):
            conn.execute(f"CREATE TABLE {name} ({columns})")
            conn.executemany(f"INSERT INTO {name} VALUES ({marks})", _parity_rows(parity))
    conn.close()
    return tmp_path


def both(spider: Path, gold: str, pred: str) -> tuple[SqlResult, SqlResult]:
    """(execution, execution_strict) of `pred` against `gold` on the toy database."""
    results = execution_results(spider, DB_ID, gold, pred)
    return results.execution, results.strict


# --------------------------------------------------------------------------------------
# The definition, on a database
# --------------------------------------------------------------------------------------

def test_permuted_columns_are_correct_but_not_strict(spider):
    assert both(spider, "SELECT fname, major FROM student", "SELECT major, fname FROM student") == \
        (CORRECT, REORDERED)
    assert both(spider, "SELECT fname, major FROM student", "SELECT fname, major FROM student") == \
        (CORRECT, CORRECT)


def test_rows_are_multisets_not_sets(spider):
    gold = "SELECT * FROM (VALUES (1, 2), (1, 2), (3, 4))"
    # The same rows as sets after swapping the columns, {(1,2),(3,4)}, but (1,2) twice vs once.
    assert both(spider, gold, "SELECT * FROM (VALUES (2, 1), (3, 4), (4, 3))") == (MISMATCH, MISMATCH)
    assert both(spider, gold, "SELECT * FROM (VALUES (4, 3), (2, 1), (2, 1))") == (CORRECT, REORDERED)
    # Same row set {(0,1),(1,0),(0,0),(1,1)} and same column multisets in any column order,
    # but (0,1) and (1,0) twice in the gold against (0,0) and (1,1) twice in the prediction.
    gold = [(0, 1), (1, 0), (1, 0), (0, 1), (0, 0), (1, 1)]
    pred = [(1, 1), (0, 0), (1, 0), (0, 1), (1, 1), (0, 0)]
    assert match_columns(gold, pred, ordered=False).permutation is None


def test_ordered_gold_needs_the_order_in_any_column_order(spider):
    gold = "SELECT fname, age FROM student ORDER BY age"          # Ann 19, Cid 20, Bob 22, Dee 25
    assert both(spider, gold, "SELECT age, fname FROM student ORDER BY age") == (CORRECT, REORDERED)
    assert both(spider, gold, "SELECT age, fname FROM student ORDER BY fname") == (MISMATCH, MISMATCH)
    assert both(spider, gold, "SELECT fname, age FROM student ORDER BY fname") == (MISMATCH, MISMATCH)


def test_order_by_only_in_a_subquery_or_a_literal_leaves_rows_unordered(spider):
    gold = "SELECT fname, age FROM student WHERE age > (SELECT age FROM student ORDER BY age LIMIT 1)"
    pred = "SELECT age, fname FROM student WHERE age > 19 ORDER BY fname DESC"
    db = db_path(spider, DB_ID)
    # The substring rule ('order by' in the gold text) would demand this order, which differs.
    assert [row[::-1] for row in execute(db, pred)] != execute(db, gold)
    assert both(spider, gold, pred) == (CORRECT, REORDERED)
    gold = "SELECT fname, age FROM student WHERE major != 'order by'"
    assert both(spider, gold, "SELECT age, fname FROM student ORDER BY age DESC") == (CORRECT, REORDERED)


def test_distinct_is_significant(spider):
    # Math appears twice: DISTINCT gives 3 rows, the plain query 4.
    assert both(spider, "SELECT DISTINCT major FROM student", "SELECT major FROM student") == \
        (MISMATCH, MISMATCH)
    assert both(spider, "SELECT major FROM student", "SELECT DISTINCT major FROM student") == \
        (MISMATCH, MISMATCH)
    assert both(spider, "SELECT DISTINCT major, 1 FROM student", "SELECT DISTINCT 1, major FROM student") == \
        (CORRECT, REORDERED)


def test_different_column_counts_are_wrong(spider):
    assert both(spider, "SELECT fname FROM student", "SELECT fname, fname FROM student") == (MISMATCH, MISMATCH)
    assert both(spider, "SELECT fname, age FROM student", "SELECT age FROM student") == (MISMATCH, MISMATCH)


def test_two_empty_results_are_equal(spider):
    gold = "SELECT fname FROM student WHERE age > 100"
    assert both(spider, gold, "SELECT major, age FROM student WHERE age < 0") == (CORRECT, CORRECT)
    assert both(spider, gold, "SELECT fname FROM student WHERE age > 20") == (MISMATCH, MISMATCH)


def test_columns_that_tie_one_by_one_but_not_jointly(spider):
    gold = "SELECT * FROM (VALUES (1, 2), (2, 1))"
    # Each column holds {1, 2} on both sides, but no column order gives the gold rows.
    assert both(spider, gold, "SELECT * FROM (VALUES (1, 1), (2, 2))") == (MISMATCH, MISMATCH)
    gold = "SELECT * FROM (VALUES (1, 2), (2, 3), (3, 1))"
    assert both(spider, gold, "SELECT * FROM (VALUES (3, 2), (1, 3), (2, 1))") == (CORRECT, REORDERED)
    assert both(spider, gold, "SELECT * FROM (VALUES (1, 2), (3, 2), (2, 3))") == (MISMATCH, MISMATCH)


def test_permutation_keeps_value_normalisation(spider):
    gold = "SELECT * FROM (VALUES (1, 0.1 + 0.2, NULL))"
    assert both(spider, gold, "SELECT NULL, 0.3, 1.0") == (CORRECT, REORDERED)
    assert both(spider, gold, "SELECT NULL, 0.3, '1'") == (MISMATCH, MISMATCH)


def test_hostile_columns_hit_the_budget_not_a_hang(spider):
    # 10 columns with equal multisets that agree on every 9 of them: the search would need
    # up to 10! orderings; it stops at the budget and says so.
    execution, strict = both(spider, "SELECT * FROM even", "SELECT * FROM odd")
    assert execution.status == "wrong" and execution.reason.startswith("column permutation search over budget")
    assert strict == MISMATCH


# --------------------------------------------------------------------------------------
# Repairs before execution
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "repaired"), [
    ("SELECT a FROM t WHERE x > = 1", "SELECT a FROM t WHERE x >= 1"),
    ("SELECT a FROM t WHERE x < = 1 AND y ! = 2", "SELECT a FROM t WHERE x <= 1 AND y != 2"),
    ("SELECT a FROM t WHERE x >\n\t= 1", "SELECT a FROM t WHERE x >= 1"),
    ("SELECT year ( CurDate ( ) ) - age FROM t", "SELECT 2020 - age FROM t"),
    ("SELECT a FROM t WHERE b = 'a > = b'", "SELECT a FROM t WHERE b = 'a > = b'"),
    ("SELECT a FROM t WHERE b = 'it''s ! = x' AND c > = 1", "SELECT a FROM t WHERE b = 'it''s ! = x' AND c >= 1"),
    ('SELECT "x < = y", [p > = q], `r ! = s` FROM t', 'SELECT "x < = y", [p > = q], `r ! = s` FROM t'),
    ("SELECT a FROM t -- x > = 1", "SELECT a FROM t -- x > = 1"),
    ("SELECT 'YEAR(CURDATE())', myyear(curdate()) FROM t", "SELECT 'YEAR(CURDATE())', myyear(curdate()) FROM t"),
    ("SELECT a FROM t WHERE x <> 1 AND y >= 2", "SELECT a FROM t WHERE x <> 1 AND y >= 2"),
])
def test_repair_sql(sql, repaired):
    assert repair_sql(sql) == repaired


def test_spaced_operators_are_repaired_in_prediction_and_gold(spider):
    assert both(spider, "SELECT fname FROM student WHERE age >= 22",
                "SELECT fname FROM student WHERE age > = 22") == (CORRECT, CORRECT)
    # A gold query with the spacing runs instead of being skipped as broken.
    assert both(spider, "SELECT fname FROM student WHERE age < = 20 AND major ! = 'Art'",
                "SELECT fname FROM student WHERE age <= 20") == (CORRECT, CORRECT)


def test_repairs_leave_string_literals_alone(spider):
    gold = "SELECT count(*) FROM note WHERE body = 'a > = b'"   # 1 row matches as written, 0 if repaired
    assert execute(db_path(spider, DB_ID), gold) == [(1,)]
    assert both(spider, gold, gold) == (CORRECT, CORRECT)
    assert both(spider, gold, "SELECT count(*) FROM note WHERE body = 'a >= b'") == (MISMATCH, MISMATCH)


def test_current_year_is_fixed_at_2020(spider):
    assert both(spider, "SELECT fname, 2020 - age FROM student",
                "SELECT YEAR(CURDATE()) - age, fname FROM student") == (CORRECT, REORDERED)


# --------------------------------------------------------------------------------------
# match_columns: the permutation search
# --------------------------------------------------------------------------------------

def _permute(rows, permutation):
    return [tuple(row[i] for i in permutation) for row in rows]


def test_match_columns_returns_the_permutation():
    gold = [(1, "a", 2.5), (2, "b", 3.5)]
    pred = [("b", 3.5, 2), ("a", 2.5, 1)]
    match = match_columns(gold, pred, ordered=False)
    assert match.permutation == (2, 0, 1)
    assert results_match(gold, _permute(pred, match.permutation), ordered=False)
    assert match_columns(gold, pred, ordered=True).permutation is None     # rows in another order
    assert match_columns(gold, pred[::-1], ordered=True).permutation == (2, 0, 1)
    assert match_columns(gold, gold, ordered=True) == match_columns(gold, gold, ordered=False)


def test_identical_columns_are_one_class():
    # Columns 0 and 2 of the prediction are the same vector: either serves gold column 0 or 1.
    gold = [(1, 1, "x"), (2, 2, "y")]
    pred = [("y", 2, 2), ("x", 1, 1)]
    match = match_columns(gold, pred, ordered=False)
    assert sorted(match.permutation[:2]) == [1, 2] and match.permutation[2] == 0
    assert match_columns(gold, [("y", 2, 1), ("x", 1, 2)], ordered=False).permutation is None
    # Gold columns 1 and 2 are twins holding (0, 2); the prediction holds (0, 2) only once
    # (column 0), its twins (columns 2, 3) hold (2, 0): no column order fits.
    gold = [(1, 0, 0, 2, 0), (2, 2, 2, 0, 0)]
    pred = [(0, 0, 2, 2, 1), (2, 0, 0, 0, 2)]
    assert match_columns(gold, pred, ordered=False).permutation is None


def test_column_multisets_reject_before_any_search():
    # Column 0 holds {1, 1, 2}, the prediction's {1, 2, 2}: the same set, another multiset.
    match = match_columns([(1, 5), (1, 6), (2, 7)], [(6, 1), (5, 2), (7, 2)], ordered=False)
    assert match == ColumnMatch(None, checks=0)


def _brute_force(gold, pred, ordered):
    """Every column permutation tried: the definition itself, for small results."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    return any(results_match(gold, _permute(pred, perm), ordered=ordered)
               for perm in itertools.permutations(range(len(pred[0]))))


def test_match_columns_agrees_with_every_permutation_tried():
    rng = random.Random(0)
    agreed = {True: 0, False: 0}
    for _ in range(3000):
        width, height = rng.randint(1, 4), rng.randint(0, 4)
        gold = [tuple(rng.choice((0, 1, 2)) for _ in range(width)) for _ in range(height)]
        if rng.random() < 0.5:   # a shuffled, column-permuted copy, sometimes with one value changed
            perm = rng.sample(range(width), width)
            pred = rng.sample(_permute(gold, perm), height)
            if pred and rng.random() < 0.5:
                row = rng.randrange(height)
                pred[row] = (rng.choice((0, 1, 2)), *pred[row][1:])
        else:
            pred_width = rng.choice((width, width + 1))
            pred = [tuple(rng.choice((0, 1, 2)) for _ in range(pred_width))
                    for _ in range(rng.choice((height, height + 1)))]
        ordered = rng.random() < 0.3
        expected = _brute_force(gold, pred, ordered)
        match = match_columns(gold, pred, ordered=ordered)
        assert (match.permutation is not None) is expected, (gold, pred, ordered)
        if match.permutation:
            assert results_match(gold, _permute(pred, match.permutation), ordered=ordered)
        # strict-correct is always execution-correct
        if results_match(gold, pred, ordered=ordered):
            assert match.permutation in ((), tuple(range(width)))
        agreed[expected] += 1
    assert min(agreed.values()) > 300   # both answers well represented


def test_strict_correct_is_execution_correct_even_without_budget():
    rows = _parity_rows(0)
    assert match_columns(rows, rows[::-1], ordered=False, budget=0).permutation == tuple(range(PARITY_WIDTH))


def _wide(seed, tied):
    """1000 rows x 50 columns, and a copy with rows shuffled and columns permuted.

    tied: every column is a permutation of range(1000), so all 50 hold the same multiset
    and only their joint values tell them apart."""
    rng = random.Random(seed)
    if tied:
        columns = [rng.sample(range(1000), 1000) for _ in range(50)]
    else:
        columns = [[rng.randrange(10**6) for _ in range(1000)] for _ in range(50)]
    gold = list(zip(*columns))
    perm = rng.sample(range(50), 50)
    pred = rng.sample(_permute(gold, perm), 1000)
    return gold, pred, perm


@pytest.mark.parametrize("tied", [False, True])
def test_wide_permuted_result_needs_few_checks(tied):
    gold, pred, perm = _wide(1, tied)
    match = match_columns(gold, pred, ordered=False)
    assert [perm[p] for p in match.permutation] == list(range(50))   # the inverse of the shuffle
    # Distinct multisets: one check per column. All tied: the first gold column may try each
    # of the 50 prediction columns (one check, plus one lookup to refute a wrong one), then
    # its values pin every row and the other 49 columns are lookups. A search over orderings
    # would need up to 50! checks; the budget allows PERMUTATION_BUDGET // 2000 = 500.
    if tied:
        assert match.checks <= 2 * 50 + 49
    else:
        assert match.checks == 50
    assert not match.over_budget


def test_wide_results_that_differ_are_refuted_within_budget():
    gold, pred, _ = _wide(2, tied=True)
    # Two rows exchange their value in one column: every column keeps its multiset, the rows differ.
    (a, *rest_a), (b, *rest_b) = pred[0], pred[1]
    pred[0], pred[1] = (b, *rest_a), (a, *rest_b)
    match = match_columns(gold, pred, ordered=False)
    assert match.permutation is None and not match.over_budget


def test_hostile_search_stops_at_the_budget():
    even, odd = _parity_rows(0), _parity_rows(1)
    match = match_columns(even, odd, ordered=False)
    assert match.permutation is None and match.over_budget
    assert match.checks == PERMUTATION_BUDGET // (2 * len(even))   # each check reads both sides' rows
    small = match_columns(even, odd, ordered=False, budget=10_000)
    assert small.over_budget and small.checks == 10_000 // (2 * len(even))


# --------------------------------------------------------------------------------------
# SpiderMetric: both metrics in every row
# --------------------------------------------------------------------------------------

def _metric_row(spider, gold, generation, db_id=DB_ID):
    row = example(system="", user=f"For db_id:[{db_id}]\n\nq", answer=gold)
    return get_metric("spider").score(generation, row, ScoreContext(spider_path=str(spider)))


def test_spider_metric_reports_execution_and_execution_strict(spider):
    s = _metric_row(spider, "SELECT fname, major FROM student", "SELECT major, fname FROM student")
    assert s.correct is True and s.note == ""
    assert s.metrics == {"execution": True, "execution_strict": False, "exact_match": False}
    s = _metric_row(spider, "SELECT fname FROM student", "SELECT DISTINCT fname FROM student")
    assert s.metrics == {"execution": True, "execution_strict": True, "exact_match": False}
    s = _metric_row(spider, "SELECT fname FROM student", "SELEC fname")
    assert s.correct is False and s.note.startswith("prediction error")
    assert s.metrics["execution"] is False and s.metrics["execution_strict"] is False
    s = _metric_row(spider, "SELECT 1", "SELECT 1", db_id="absent_1")
    assert s.correct is None and s.metrics["execution"] is None and s.metrics["execution_strict"] is None


def test_spider_metric_summary_averages_both(spider):
    metric = get_metric("spider")
    pairs = [("SELECT fname, age FROM student", "SELECT age, fname FROM student"),
             ("SELECT fname FROM student", "SELECT fname FROM student"),
             ("SELECT fname FROM student", "SELECT major FROM student"),
             ("SELECT 1", "SELECT 1")]
    rows = [example(system="", user=f"For db_id:[{'absent_1' if i == 3 else DB_ID}]\n\nq", answer=gold)
            for i, (gold, _) in enumerate(pairs)]
    scores = [metric.score(pred, row, ScoreContext(spider_path=str(spider))) for row, (_, pred) in zip(rows, pairs)]
    summary = metric.summarize(rows, scores)
    assert summary["metrics"]["execution"] == pytest.approx(2 / 3)
    assert summary["metrics"]["execution_strict"] == pytest.approx(1 / 3)
    assert summary["metric_n"]["execution_strict"] == 3


# --------------------------------------------------------------------------------------
# Real Spider databases
# --------------------------------------------------------------------------------------

def _real(db_id, gold, pred):
    if not db_path(SPIDER_DB, db_id).is_file():
        pytest.skip(f"Spider database {db_id} not found under {SPIDER_DB}")
    results = execution_results(SPIDER_DB, db_id, gold, pred)
    return results.execution, results.strict


def test_real_spider_permuted_columns():
    assert _real("concert_singer", "SELECT name, country, age FROM singer ORDER BY age DESC",
                 "SELECT age, name, country FROM singer ORDER BY age DESC") == (CORRECT, REORDERED)
    assert _real("concert_singer", "SELECT name, country, age FROM singer ORDER BY age DESC",
                 "SELECT age, name, country FROM singer ORDER BY age") == (MISMATCH, MISMATCH)
    assert _real("student_1", "SELECT firstname, lastname FROM list WHERE classroom = 111",
                 "SELECT lastname, firstname FROM list WHERE classroom = 111") == (CORRECT, REORDERED)


def test_real_spider_distinct_and_spacing():
    # Four singers come from France: DISTINCT matters.
    assert _real("concert_singer", "SELECT DISTINCT country FROM singer",
                 "SELECT country FROM singer") == (MISMATCH, MISMATCH)
    assert _real("concert_singer", "SELECT count(*) FROM singer WHERE age >= 40",
                 "SELECT count(*) FROM singer WHERE age > = 40") == (CORRECT, CORRECT)
