"""Spider SQL safety (issue 9, items 1 and 5).

Item 1: the --paper_compat scorer (llm_jepa/published/scoring.py) no longer runs the sqlite3 CLI,
which even with -readonly (and -safe: fsdir()) let a prediction write, read or load any
file; it reproduces the CLI's output on sql_exec's hardened connection. These tests
show that hostile predictions change and create nothing and leak nothing, in both
modes, and that the published strings are those of the CLI on every Spider gold query.

Item 5: every SQL execution has bounded memory (sql_exec.MAX_*): over a bound a query
scores wrong with a "too large: ..." reason; the peak memory of hostile queries is
measured in a fresh subprocess.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, example, needs_shared
from llm_jepa import sql_exec
from llm_jepa.published import scoring as published
from llm_jepa.published.scoring import published_correct, published_score
from llm_jepa.sql_exec import (
    SqlError, SqlTooLarge, db_path, execute, execution_match, parse_db_id, split_statements,
)

DB_ID = "toy_1"
USER = f"For db_id:[{DB_ID}]\n\nHow many singers?"
SECRET = "s3cret-value"
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
needs_cli = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 CLI to compare with")


def spider_row(gold: str) -> dict:
    return example(system="", user=USER, answer=gold)


@pytest.fixture
def spider(tmp_path: Path) -> Path:
    """<tmp>/spider/toy_1/toy_1.sqlite, and <tmp>/other.sqlite holding a secret."""
    root = tmp_path / "spider"
    db = db_path(root, DB_ID)
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);
            INSERT INTO singer VALUES (1, 'Ann', 30), (2, 'Bob', 40);
        """)
    conn.close()
    with sqlite3.connect(tmp_path / "other.sqlite") as conn:
        conn.execute("CREATE TABLE secret (x TEXT)")
        conn.execute("INSERT INTO secret VALUES (?)", (SECRET,))
    conn.close()
    (tmp_path / "plain.txt").write_text(SECRET + "\n")
    return root


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _hostile(tmp: Path) -> list[str]:
    """Predictions that try to write, read outside the database, load code or run commands."""
    db = db_path(tmp / "spider", DB_ID)
    return [
        f"SELECT writefile('{db}', 'x')",                       # truncated a Spider database before
        f"SELECT writefile('{tmp / 'new.txt'}', 'x')",
        f"SELECT writefile('{tmp / 'new.txt'}', '')",
        "SELECT readfile('/etc/passwd')",
        f"SELECT readfile('{tmp / 'plain.txt'}')",
        "SELECT name, data FROM fsdir('/etc/passwd')",           # -safe leaves fsdir() working
        f"SELECT name, data FROM fsdir('{tmp}')",
        f"SELECT * FROM zipfile('{tmp / 'plain.txt'}')",
        f"SELECT load_extension('{tmp / 'evil.so'}')",
        "SELECT fts3_tokenizer('simple')",
        f"SELECT edit('x', 'touch {tmp / 'edited'}')",
        f"ATTACH DATABASE '{tmp / 'other.sqlite'}' AS o",
        f"ATTACH DATABASE '{tmp / 'other.sqlite'}' AS o; SELECT x FROM o.secret",
        f"ATTACH DATABASE '{tmp / 'created.sqlite'}' AS o; CREATE TABLE o.t (x)",
        f"VACUUM INTO '{tmp / 'copy.sqlite'}'",
        "attached.sqlite",                                       # a bare relative file name
        f"SELECT 1;\n.shell touch {tmp / 'pwned'}",
        f"SELECT 1;\n.system touch {tmp / 'pwned'}",
        f"SELECT 1;\n.output {tmp / 'out.txt'}\nSELECT 2;",
        f"SELECT 1;\n.once {tmp / 'once.txt'}\nSELECT 2;",
        f".shell touch {tmp / 'pwned'}",
        f".output {tmp / 'out.txt'}",
        f".open {tmp / 'opened.sqlite'}",
        "SELECT 1; DELETE FROM singer",
        "SELECT 1; DROP TABLE singer; SELECT 2",
        "SELECT 1; CREATE TABLE t (x); INSERT INTO t VALUES (1)",
        "UPDATE singer SET age = 0",
        "PRAGMA journal_mode = WAL",
        "PRAGMA writable_schema = 1",
        f"PRAGMA temp_store_directory = '{tmp}'",
        "BEGIN IMMEDIATE; DELETE FROM singer; COMMIT",
    ]


def test_hostile_predictions_under_paper_compat_change_create_and_leak_nothing(spider, monkeypatch):
    tmp = spider.parent
    monkeypatch.chdir(tmp)   # relative paths land where the snapshot sees them
    before = _tree(tmp)
    empty_gold = spider_row("SELECT name FROM singer WHERE age > 100")
    for sql in _hostile(tmp):
        output = published._sqlite3_stdout(str(db_path(spider, DB_ID)), sql, 5.0)
        assert SECRET not in output and "root:" not in output, sql
        assert output in ("", "1\n"), (sql, output)   # a statement before the hostile one may print
        ok, note = published_score(sql, empty_gold, "spider_test.jsonl", str(spider))
        assert note == "" and isinstance(ok, bool)
        assert _tree(tmp) == before, sql               # every file byte-identical, none new
    # the table is intact
    assert published._sqlite3_stdout(str(db_path(spider, DB_ID)), "SELECT name FROM singer", 5.0) == "Ann\nBob\n"


def test_hostile_predictions_in_the_default_scorer(spider, monkeypatch):
    tmp = spider.parent
    monkeypatch.chdir(tmp)
    before = _tree(tmp)
    for sql in _hostile(tmp):
        result = execution_match(spider, DB_ID, "SELECT count(*) FROM singer", sql)
        assert result.status == "wrong", sql
        assert SECRET not in result.reason and "root:" not in result.reason
        assert _tree(tmp) == before, sql


@needs_cli
def test_the_cli_would_have_written_the_file(spider, tmp_path):
    """What the tests above guard against: the published command really writes."""
    victim = tmp_path / "victim.sqlite"
    shutil.copy(db_path(spider, DB_ID), victim)
    subprocess.run(["sqlite3", "-readonly", str(victim), f"SELECT writefile('{victim}', 'x')"],
                   capture_output=True, stdin=subprocess.DEVNULL, check=False)
    assert victim.read_bytes() == b"x"


def test_published_spider_needs_no_sqlite3_cli(spider, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    gold = spider_row("SELECT name FROM singer ORDER BY id")
    assert published_correct("SELECT name FROM singer ORDER BY id", gold, "spider_test.jsonl", str(spider))
    assert not published_correct("SELECT name FROM singer ORDER BY id DESC", gold, "spider_test.jsonl", str(spider))


def test_published_output_format(spider):
    out = lambda sql: published._sqlite3_stdout(str(db_path(spider, DB_ID)), sql, 5.0)  # noqa: E731
    assert out("SELECT id, name FROM singer ORDER BY id") == "1|Ann\n2|Bob\n"
    assert out("SELECT NULL, 'a' || char(0) || 'b', x'41004200', 7") == "|a|A|7\n"   # printf %s stops at NUL
    assert out("SELECT 'x' || char(13) || 'y' || char(13, 10) || 'z'") == "x\ny\nz\n"  # universal newlines
    assert out("SELECT CAST(x'41ff42' AS TEXT)") == "A\ufffdB\n"
    assert out("SELECT 1; SELECT 2;") == "1\n2\n"
    assert out("SELECT 'a;b'; -- c; SELECT 3") == "a;b\n"
    assert out("SELECT 1; SELEC 2; SELECT 3") == "1\n"      # the CLI stops at a failing statement
    assert out("SELEC garbage") == out("") == out("-- only a comment") == ""
    assert out(RUNAWAY.replace("count(*)", "x") + " LIMIT 3") == "1\n2\n3\n"


def test_published_timeout_still_prints_nothing(spider):
    empty_gold = spider_row("SELECT name FROM singer WHERE age > 100")
    assert published._sqlite3_stdout(str(db_path(spider, DB_ID)), RUNAWAY, 0.2) == ""
    # as before: a failing (or timed-out) prediction "matches" an empty gold result
    assert published_score(RUNAWAY, empty_gold, "spider_test.jsonl", str(spider), sql_timeout=0.2) == (True, "")


@pytest.mark.parametrize("sql", ["SELECT 'x\ud800'", "SELECT '\x00'", "SELECT 1 \x00; DELETE FROM singer"])
def test_unencodable_predictions_are_wrong_not_fatal(spider, sql):
    result = execution_match(spider, DB_ID, "SELECT 1", sql)
    assert result.status == "wrong" and result.reason.startswith("prediction error: ")
    assert published_score(sql, spider_row("SELECT 1"), "spider_test.jsonl", str(spider)) == (False, "")


# --------------------------------------------------------------------------
# The published strings are the CLI's
# --------------------------------------------------------------------------

def _cli_stdout(db: Path, sql: str, home: Path) -> str:
    """The command the published scorer ran, read back as it read it."""
    return subprocess.run(["sqlite3", "-readonly", str(db), sql], capture_output=True, text=True,
                          errors="replace", stdin=subprocess.DEVNULL, env={"HOME": str(home)},
                          timeout=60).stdout


def _spider_gold(split: str) -> list[tuple[str, str]]:
    path = needs_shared("datasets", f"spider_{split}.jsonl")
    rows = []
    for line in path.read_text().splitlines():
        messages = json.loads(line)["messages"]
        rows.append((parse_db_id(messages[1]["content"]), messages[2]["content"]))
    return rows


@needs_cli
@pytest.mark.parametrize("split,step", [("test", 1), ("train", 10)])
def test_published_strings_equal_the_cli_on_spider_gold(split, step, tmp_path):
    """Every gold query of spider_test, and every 10th of spider_train, prints the same."""
    database = needs_shared("spider_data", "database")
    compared = 0
    for db_id, gold in _spider_gold(split)[::step]:
        db = db_path(database, db_id)
        if not db.is_file():
            continue
        ours = published._sqlite3_stdout(str(db), gold, 60.0)
        assert ours == _cli_stdout(db, gold, tmp_path), (db_id, gold)
        compared += 1
    assert compared > 500


EDGE_CASES = [
    "SELECT avg(age), 1.0, 0.1, 1e300, -0.0, 1/3.0, 2e15, 123456789012345678.0, 1e-5, 1.5e-7, 4.0/3 FROM singer",
    "SELECT 9223372036854775807, -9223372036854775808, 0.30000000000000004, 1e15, 1e16, -1.0e-300",
    "SELECT NULL, x'00ff41', x'41ff', 'a' || char(0) || 'b', CAST(x'ff41' AS TEXT), 'é' || char(8364)",
    "SELECT 'x' || char(13) || 'y' || char(13, 10) || 'z', char(10), ''",
    "SELECT 1; SELECT 2;", "SELECT 1;;", "SELECT 1; -- c", "SELECT 1 /* ; */ ; SELECT 2",
    "SELECT 'a;b'; SELECT \"x;\" FROM singer LIMIT 1", "SELECT 1; SELEC 2; SELECT 3",
    "SELEC", "", " ", "-- c", "SELECT * FROM singer WHERE 0", "SELECT * FROM singer; SELECT count(*) FROM singer",
    "select T1.name, count(*) from singer as T1 join singer_in_concert as T2"
    " on T1.singer_id = T2.singer_id group by T1.name",
]


@needs_cli
@pytest.mark.parametrize("sql", EDGE_CASES)
def test_published_strings_equal_the_cli_on_edge_cases(sql, tmp_path):
    db = needs_shared("spider_data", "database", "concert_singer", "concert_singer.sqlite")
    assert published._sqlite3_stdout(str(db), sql, 10.0) == _cli_stdout(db, sql, tmp_path)


@needs_cli
def test_known_deviation_a_failure_mid_rows_loses_one_row(tmp_path):
    """Python's sqlite3 reads one row ahead: the CLI prints '1\\n2\\n', we print '1\\n'."""
    db = needs_shared("spider_data", "database", "concert_singer", "concert_singer.sqlite")
    sql = "SELECT json_extract(column1, '$') FROM (VALUES ('1'), ('2'), ('bad'), ('3'))"
    cli, ours = _cli_stdout(db, sql, tmp_path), published._sqlite3_stdout(str(db), sql, 10.0)
    assert cli == "1\n2\n" and ours == "1\n"


# --------------------------------------------------------------------------
# Memory bounds (item 5)
# --------------------------------------------------------------------------

def test_statement_splitting_follows_sqlite():
    assert split_statements("SELECT 1; SELECT 2") == ["SELECT 1;", " SELECT 2"]
    assert split_statements("SELECT ';'; SELECT \"a;b\" -- x;y\n;") == ["SELECT ';';", ' SELECT "a;b" -- x;y\n;']
    assert split_statements("SELECT 1 /* ; */ ;  \n") == ["SELECT 1 /* ; */ ;"]
    assert split_statements("SELECT [a;b] FROM t; SELECT `c;d`") == ["SELECT [a;b] FROM t;", " SELECT `c;d`"]
    assert split_statements("") == [] and split_statements("  ") == []


def test_value_length_limit(spider):
    db = db_path(spider, DB_ID)
    with pytest.raises(SqlTooLarge, match="string or blob too big"):
        execute(db, "SELECT hex(zeroblob(400000000)), hex(zeroblob(400000000))")
    limit = sql_exec.MAX_VALUE_BYTES
    assert execute(db, f"SELECT length(zeroblob({limit}))") == [(limit,)]
    result = execution_match(spider, DB_ID, "SELECT 1", f"SELECT zeroblob({limit + 1})")
    assert result.status == "wrong" and result.reason.startswith("too large: string or blob too big")


def test_column_limit_spares_wide_tables(tmp_path):
    """SQLite applies the column limit to tables too: it is set after the schema loads."""
    db = tmp_path / "wide.sqlite"
    width = sql_exec.MAX_COLUMNS + 50
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE w ({', '.join(f'c{i}' for i in range(width))})")
        conn.execute(f"INSERT INTO w VALUES ({', '.join('?' * width)})", list(range(width)))
    conn.close()
    assert execute(db, "SELECT c0, c149 FROM w") == [(0, 149)]
    with pytest.raises(SqlTooLarge, match="too many columns"):
        execute(db, "SELECT * FROM w")
    with pytest.raises(SqlTooLarge, match="too many columns"):
        execute(db, "SELECT " + ", ".join(["1"] * (sql_exec.MAX_COLUMNS + 1)))


def test_query_text_limit(spider):
    long_sql = "SELECT " + "1+" * sql_exec.MAX_SQL_BYTES + "1"
    assert execution_match(spider, DB_ID, "SELECT 1", long_sql).reason.startswith("too large: query text")
    ok, note = published_score(long_sql, spider_row("SELECT 1 WHERE 0"), "spider_test.jsonl", str(spider))
    assert not ok and note.startswith("too large: query text")


def test_result_size_cap(spider, monkeypatch):
    monkeypatch.setattr(sql_exec, "MAX_RESULT_BYTES", 50_000)
    rows = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 1000) "
            "SELECT hex(zeroblob(100)) FROM c")
    with pytest.raises(SqlTooLarge, match="result over 50000 bytes"):
        execute(db_path(spider, DB_ID), rows)
    assert execution_match(spider, DB_ID, "SELECT 1", rows).reason == "too large: result over 50000 bytes"
    # published: over the cap is wrong, not the "" of a failing query that would match an empty gold
    ok, note = published_score(rows, spider_row("SELECT 1 WHERE 0"), "spider_test.jsonl", str(spider))
    assert (ok, note) == (False, "too large: output over 50000 bytes")
    # a gold result over the cap cannot be scored: skipped, as any failing gold query
    assert execution_match(spider, DB_ID, rows, "SELECT 1").status == "skipped"


def test_denied_functions(spider):
    for sql in ("SELECT fts3_tokenizer('simple')", "SELECT load_extension('x')"):
        with pytest.raises(SqlError, match="not authorized"):
            execute(db_path(spider, DB_ID), sql)


def _run_script(script: str, *args: str) -> dict:
    """Run `script` in a fresh interpreter (its own peak RSS) and return the JSON it prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


PEAK_SCRIPT = """
    import json, re, sys
    from llm_jepa.sql_exec import execution_match
    from llm_jepa.published.scoring import published_score

    spider, db_id = sys.argv[1], sys.argv[2]
    row = {"messages": [{"role": "system", "content": ""},
                        {"role": "user", "content": f"For db_id:[{db_id}]\\n\\nq"},
                        {"role": "assistant", "content": "SELECT 1"}]}
    big = "hex(zeroblob(400000000))"
    wide = "hex(zeroblob(49999))"        # 100 KB, just under the value limit
    rows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) "
    queries = [
        f"SELECT {big}, {big}",                                          # the issue: 6.7 GB before
        "SELECT " + ", ".join([big] * 10),
        "SELECT " + ", ".join([wide] * 101),                              # more columns
        rows + "SELECT " + ", ".join([wide] * 100) + " FROM c",           # wide and many rows
        rows + "SELECT x, " + wide + " FROM c",
        # within every bound, and bounded by them:
        "SELECT " + ", ".join([wide] * 100),                              # the widest row, 10 MB
        "SELECT count(*) FROM (VALUES " + ", ".join(["(" + wide + ")"] * 790) + ")",  # many alive
        "SELECT " + " + ".join(["length(" + wide + ")"] * 600),
    ]
    reasons = []
    for sql in queries:
        reasons.append([execution_match(spider, db_id, "SELECT 1", sql, timeout_s=60).reason,
                        published_score(sql, row, "spider_test.jsonl", spider, sql_timeout=60)[1]])
    # VmHWM, this process's own peak: ru_maxrss would start from the parent's RSS at fork
    # (it is kept across execve), which in a long pytest run is over 1 GB by itself.
    status = open("/proc/self/status").read()
    peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
    print(json.dumps({"reasons": reasons, "peak_mib": peak_kib / 1024}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status")
def test_hostile_queries_stay_far_below_1gb(spider):
    out = _run_script(PEAK_SCRIPT, str(spider), DB_ID)
    reasons = out["reasons"]
    assert all(r.startswith("too large: ") for pair in reasons[:5] for r in pair), reasons
    assert reasons[5:] == [["result mismatch", ""]] * 3, reasons   # allowed, and bounded
    assert out["peak_mib"] < 400, out                              # measured: about 140 MiB


GUARD_SCRIPT = """
    import json, sys
    from llm_jepa import sql_exec

    sql_exec.MAX_QUERY_MEMORY = 24 * 2**20
    cte = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 5000) "
    # each DISTINCT fills a temporary table's page cache (2 MB), all alive until the end:
    # within every length and column limit, the memory grows with the number of subqueries
    sql = cte + "SELECT " + " + ".join(
        f"(SELECT count(DISTINCT hex(zeroblob(400)) || x || {i}) FROM c)" for i in range(40))
    result = sql_exec.execution_match(sys.argv[1], sys.argv[2], "SELECT 1", sql, timeout_s=120)
    print(json.dumps({"reason": result.reason}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="resident memory read from /proc")
def test_memory_guard_stops_growth_no_limit_catches(spider):
    out = _run_script(GUARD_SCRIPT, str(spider), DB_ID)
    assert out["reason"] == "too large: used more than 24 MiB of memory"
