"""Tests for llm_jepa.metrics: the default metrics, the published scoring, resolve_dataset."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from llm_jepa.corpora import DATASETS, resolve_dataset
from llm_jepa.metrics import (
    METRICS, Metric, RowScore, ScoreContext, get_metric, hellaswag_choices, startswith_match,
)
from llm_jepa.published.scoring import published_correct
from llm_jepa.metrics.gsm8k import flexible_answer, strict_answer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CTX = ScoreContext()


def row(gold: str, user: str = "question", system: str = "system", **extra) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": gold}], **extra}


def score(metric: str, generation: str, gold: str, ctx: ScoreContext = CTX, aux=None, **kw) -> RowScore:
    return get_metric(metric).score(generation, row(gold, **kw), ctx, aux)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

def test_every_dataset_metric_is_registered():
    for info in DATASETS.values():
        assert isinstance(get_metric(info.metric), Metric)
    assert set(METRICS) == {"regex", "gsm8k", "spider", "nq_open", "hellaswag", "label", "exact"}


def test_unknown_metric_lists_known_names():
    with pytest.raises(KeyError, match="gsm8k.*hellaswag"):
        get_metric("bleu")


def test_correct_mirrors_primary():
    for name, metric in METRICS.items():
        if name in ("spider", "hellaswag"):
            continue   # need a database / an A-D gold; covered below
        s = metric.score("x", row("x"), CTX)
        assert s.correct is s.metrics[metric.primary]
        json.dumps(s.metrics)


# --------------------------------------------------------------------------
# regex
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gen, gold, exact, dfa", [
    ("([0-9])+", "([0-9])+", True, True),
    ("  ([0-9])+\n", "([0-9])+", True, True),             # whitespace around is not the regex
    ("(dog)|(truck)", "(truck)|(dog)", False, True),     # equivalent, not the same text
    ("([a-z])*([a-z])*", "([a-z])*", False, True),
    ("(dog)+", "(dog)*", False, False),                 # '' tells them apart
    ("([0-9])+", "([a-z])+", False, False),
    ("((((", "([0-9])+", False, False),                 # garbage: undecided counts as wrong
    ("", "([0-9])+", False, False),
])
def test_regex(gen, gold, exact, dfa):
    s = score("regex", gen, gold)
    assert s.metrics == {"exact": exact, "dfa": dfa}
    assert s.correct is dfa


def test_regex_undecided_is_noted():
    assert "undecided" in score("regex", "((((", "dog").note


# --------------------------------------------------------------------------
# gsm8k
# --------------------------------------------------------------------------

GSM_GOLD = "She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"


@pytest.mark.parametrize("gen, gold, strict, flexible", [
    ("9 * 2 = 18\n#### 18", GSM_GOLD, True, True),
    ("#### $18", GSM_GOLD, True, True),
    ("#### 18.", GSM_GOLD, True, True),
    ("#### 18 dollars", GSM_GOLD, True, True),           # words after the number
    ("#### 1,000", "#### 1000", True, True),             # commas
    ("#### $1,000.50", "#### 1000.5", True, True),
    ("#### 3.50", "#### 3.5", True, True),               # compared as numbers
    ("#### -5", "#### -5", True, True),                  # negative
    ("#### -5", "#### 5", False, False),
    ("#### 17\nbut really 18", GSM_GOLD, False, True),   # flexible reads the last number
    # a run-on generation that invents a follow-up question: the first '####' counts
    ("so 18\n#### 18\nQuestion: and twice that?\n#### 36", GSM_GOLD, True, False),
    ("so 36\n#### 36\nQuestion: and half?\n#### 18", GSM_GOLD, False, True),
    ("#### none\n#### 18", GSM_GOLD, True, True),              # the first '####' with a number
    ("#### $18.00", GSM_GOLD, True, True),                      # numbers, not strings
    ("the answer is 18", GSM_GOLD, False, True),          # no ####
    ("#### 18\n#### 19", GSM_GOLD, True, False),         # the first marker counts (lm-eval)
    ("#### eighteen", GSM_GOLD, False, False),           # not a number
    ("", GSM_GOLD, False, False),
    ("3-5 = -2, so #### -2", "#### -2", True, True),
])
def test_gsm8k(gen, gold, strict, flexible):
    s = score("gsm8k", gen, gold)
    assert (s.metrics["strict"], s.metrics["flexible"]) == (strict, flexible)
    assert s.correct is strict


def test_gsm8k_extractors():
    assert strict_answer("a\n#### 1,234\n") == "1234"
    assert strict_answer("no marker 5") is None
    assert flexible_answer("We have 1,2,3 and 4,500.25 apples") == "4,500.25"
    assert flexible_answer("3-5") == "5"             # a '-' after a digit is subtraction, not a sign
    assert flexible_answer("it is -7.") == "-7"
    assert flexible_answer("none") is None


def test_gsm8k_tolerance():
    assert score("gsm8k", "#### 0.1000000001", "#### 0.1").correct
    assert not score("gsm8k", "#### 0.101", "#### 0.1").correct


# --------------------------------------------------------------------------
# nq_open
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gen, gold, found", [
    ("The Eiffel Tower!", "eiffel tower", True),                  # case and punctuation
    ("It is in Paris, France.", "London; paris", True),           # any gold answer
    ("6 geese a-laying", "6 geese a-laying; maids a-milking", True),
    ("London", "paris; ", False),                                # empty gold piece never counts
    ("", "paris", False),                                        # empty generation
    ("paris", "Paris, Texas", False),                             # gold must be inside the generation
    ("an apple", "the apple", False),                             # DPR keeps articles
    # whole tokens, not characters: each of these was "contained" before
    ("It was founded in 1848.", "184", False),
    ("Tammany Hall", "Amma", False),
    ("William Jennings Bryan", "Liam", False),
    ("October 20, 2018", "8", False),
    ("October 20, 2018", "2018", True),
    ("Liam Neeson", "Liam", True),
    ("He scored 8 goals", "8", True),
    ("the U.S. Army", "U.S.", True),                              # "u", ".", "s", "." in both
    ("the US Army", "U.S.", False),
    ("Beyonc\u00e9 sang", "Beyonce\u0301", True),                 # NFD: composed == decomposed
    ("Beyonce sang", "Beyonc\u00e9", False),                      # the accent is a token of its own
    ("rock\nand\troll", "rock and roll", True),                   # any whitespace separates
])
def test_nq_open_has_answer(gen, gold, found):
    s = score("nq_open", gen, gold)
    assert s.correct is found and s.metrics["has_answer"] is found


def test_dpr_tokens():
    from llm_jepa.metrics.qa import answer_tokens

    assert answer_tokens("A-laying, 6 geese!") == ["a", "-", "laying", ",", "6", "geese", "!"]
    assert answer_tokens("caf\u00e9\u00a0bar") == ["cafe\u0301", "bar"]   # NBSP separates; NFD splits the accent
    assert answer_tokens(" \t\n") == []


def test_nq_open_empty_gold_is_skipped_in_neither_metric():
    s = score("nq_open", "the", "the")
    assert s.metrics == {"has_answer": True, "exact": False}   # SQuAD normalises "the" away
    s = score("nq_open", "anything", " ; ")
    assert s.metrics == {"has_answer": False, "exact": False} and s.note == "empty gold answer"


def test_nq_open_exact_is_secondary():
    s = score("nq_open", "The Paris.", "paris; london")
    assert s.metrics == {"has_answer": True, "exact": True}
    assert score("nq_open", "in paris", "paris").metrics == {"has_answer": True, "exact": False}


# --------------------------------------------------------------------------
# label / exact
# --------------------------------------------------------------------------

def test_label_per_class():
    metric = get_metric("label")
    golds = ["Good", "Good", "Good", "Bad", "Bad"]
    gens = ["Good", " Good\n", "Bad", "Bad", "good"]           # strip yes, case-fold no
    rows = [row(g) for g in golds]
    scores = [metric.score(gen, r, CTX) for gen, r in zip(gens, rows)]
    assert [s.correct for s in scores] == [True, True, False, True, False]
    summary = metric.summarize(rows, scores)
    assert summary["accuracy"] == pytest.approx(3 / 5)
    assert summary["per_class"] == {"Bad": pytest.approx(0.5), "Good": pytest.approx(2 / 3)}
    assert summary["class_counts"] == {"Bad": 2, "Good": 3}
    assert summary["n"] == 5
    json.dumps(summary)


def test_exact():
    assert score("exact", "  hello world \n", "hello world").correct
    assert not score("exact", "hello  world", "hello world").correct


# --------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METRICS))
def test_summarize_empty_never_divides_by_zero(name):
    summary = get_metric(name).summarize([], [])
    assert summary["accuracy"] == 0.0 and summary["n"] == 0 and summary["n_total"] == 0
    json.dumps(summary)


def test_summarize_skipped_and_means():
    metric = get_metric("spider")
    scores = [RowScore(None, {"execution": None, "exact_match": True}, "missing database"),
              RowScore(True, {"execution": True, "exact_match": False}),
              RowScore(False, {"execution": False, "exact_match": False})]
    summary = metric.summarize([row("x")] * 3, scores)
    assert summary["accuracy"] == 0.5 and summary["n"] == 2 and summary["n_skipped"] == 1
    assert summary["metrics"] == {"execution": 0.5, "exact_match": pytest.approx(1 / 3)}
    assert summary["metric_n"] == {"execution": 2, "exact_match": 3}
    assert summary["skipped"] == {"missing database": 1}
    all_skipped = metric.summarize([row("x")], scores[:1])
    assert all_skipped["accuracy"] == 0.0 and all_skipped["n"] == 0


def test_summarize_length_mismatch():
    with pytest.raises(ValueError):
        get_metric("exact").summarize([row("x")], [])


def test_summarize_skips_strings():
    metric = get_metric("gsm8k")
    rows = [row("#### 1"), row("#### 2")]
    scores = [metric.score("#### 1", rows[0], CTX), metric.score("2", rows[1], CTX)]
    summary = metric.summarize(rows, scores)
    assert summary["metrics"] == {"strict": 0.5, "flexible": 1.0}


# --------------------------------------------------------------------------
# hellaswag
# --------------------------------------------------------------------------

HS_USER = "A man walks a dog.\nA) He runs.\nB) He sits.\nC) He flies away.\nD) He sings."


def hs_row(gold="B", user=HS_USER, **extra):
    return row(gold, user=user, **extra)


def test_hellaswag_choices():
    context, endings, gold = hellaswag_choices(hs_row())
    assert context == "A man walks a dog."
    assert endings == ["He runs.", "He sits.", "He flies away.", "He sings."]
    assert gold == 1


def test_hellaswag_choices_text_field_and_odd_contexts():
    r = hs_row("D", user="Intro\nA) quoted in context.\nA) one\nB) two\nC) three\nD) four\nmore",
               text=[{"role": "user", "content": "the prepared context"}])
    context, endings, gold = hellaswag_choices(r)
    assert context == "the prepared context"
    assert endings == ["one", "two", "three", "four\nmore"]
    assert gold == 3
    with pytest.raises(ValueError):
        hellaswag_choices(hs_row(user="no endings here"))
    with pytest.raises(ValueError):
        hellaswag_choices(hs_row(gold="E"))


def test_hellaswag_letter_and_aux():
    metric = get_metric("hellaswag")
    r = hs_row("B")
    assert metric.score(" B\n", r, CTX).metrics == {"letter": True}
    assert metric.score("A", r, CTX).correct is False
    # B has the highest total log-prob; per character, A (short) wins.
    aux = {"ending_logprobs": [-5.0, -4.0, -20.0, -30.0], "ending_chars": [8, 2, 10, 10]}
    s = metric.score("B", r, CTX, aux)
    assert s.metrics == {"letter": True, "acc": True, "acc_norm": False}
    aux = {"ending_logprobs": [-5.0, -4.0, -20.0, -30.0], "ending_chars": [100, 100, 10, 10]}
    s = metric.score("C", r, CTX, aux)
    assert s.metrics == {"letter": False, "acc": True, "acc_norm": True}
    assert s.correct is False                               # the primary is the letter
    with pytest.raises(ValueError):
        metric.score("B", r, CTX, {"ending_logprobs": [0.0] * 3, "ending_chars": [1] * 3})


def test_hellaswag_ties_pick_first():
    aux = {"ending_logprobs": [-1.0, -1.0, -1.0, -1.0], "ending_chars": [1, 1, 1, 1]}
    assert get_metric("hellaswag").score("A", hs_row("A"), CTX, aux).metrics["acc"] is True
    assert get_metric("hellaswag").score("A", hs_row("B"), CTX, aux).metrics["acc"] is False


def test_hellaswag_choices_every_shared_row():
    path = SHARED / "datasets" / "hellaswag_test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert rows
    for r in rows:
        context, endings, gold = hellaswag_choices(r)
        assert len(endings) == 4 and all(e.strip() for e in endings) and context.strip()
        assert "\n" not in "".join(endings)
        assert r["messages"][1]["content"] == context + "".join(f"\n{L}) {e}" for L, e in zip("ABCD", endings))
        assert endings[gold] == r["code"][0]["content"]   # the Code view is the gold ending


# --------------------------------------------------------------------------
# spider
# --------------------------------------------------------------------------

DB_ID = "toy_1"
SPIDER_USER = f"For db_id:[{DB_ID}]\n\nHow many singers?"


@pytest.fixture()
def spider_dir(tmp_path) -> Path:
    db = tmp_path / DB_ID / f"{DB_ID}.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE singer (id INTEGER, name TEXT, age INTEGER)")
        conn.executemany("INSERT INTO singer VALUES (?, ?, ?)", [(1, "Ann", 30), (2, "Bob", 40)])
    conn.close()
    return tmp_path


def spider(gen, gold, spider_path, user=SPIDER_USER):
    return score("spider", gen, gold, ScoreContext(spider_path=str(spider_path) if spider_path else None),
                 user=user)


def test_spider_correct_wrong_skipped(spider_dir):
    s = spider("select count(*) from singer", "SELECT count(*) FROM singer", spider_dir)
    assert s.correct is True and s.metrics == {"execution": True, "execution_strict": True, "exact_match": True}
    s = spider("SELECT count(name) FROM singer", "SELECT count(*) FROM singer", spider_dir)
    assert s.correct is True and s.metrics["exact_match"] is False   # same result, other text
    s = spider("SELECT name FROM singer WHERE age > 35", "SELECT name FROM singer", spider_dir)
    assert s.correct is False and s.note == "result mismatch"
    s = spider("SELEC nonsense", "SELECT name FROM singer", spider_dir)
    assert s.correct is False and s.note.startswith("prediction error")
    s = spider("SELECT 1", "SELECT 1", spider_dir, user="For db_id:[missing_1]\n\nq")
    assert s.correct is None and s.note == "missing database" and s.metrics["execution"] is None
    s = spider("SELECT 1", "SELECT nope FROM nowhere", spider_dir)
    assert s.correct is None and s.note.startswith("gold error")


def test_spider_without_path_or_db_id(spider_dir):
    s = spider("SELECT count(*) FROM singer", "SELECT count(*) FROM singer", None)
    assert s.correct is None and s.note == "no --spider_path" and s.metrics["exact_match"] is True
    s = spider("SELECT 1", "SELECT 1", spider_dir, user="no db id here")
    assert s.correct is None and "db_id" in s.note


# --------------------------------------------------------------------------
# published scoring (--paper_compat), defects included
# --------------------------------------------------------------------------

def test_published_path_prefix_fallback():
    r = row("Janet...\n#### 18")
    gen = "Other steps.\n#### 18"
    assert published_correct(gen, r, "gsm8k_test.jsonl", None)
    # the defect: a directory in front of the name falls back to exact string match
    assert not published_correct(gen, r, "datasets/gsm8k_test.jsonl", None)
    assert published_correct("Janet...\n#### 18", r, "datasets/gsm8k_test.jsonl", None)


def test_published_gsm8k():
    r = row("steps\n#### 18")
    assert not published_correct("steps\n#### 18.0", r, "gsm8k_test.jsonl", None)  # strings, not numbers
    assert not published_correct("#### 18", r, "gsm8k_test.jsonl", None)           # needs the '\n'
    assert not published_correct("steps\n#### 18\nmore", r, "gsm8k_test.jsonl", None)
    # both without an answer: None == None counts as correct
    assert published_correct("no answer", row("no marker either"), "gsm8k_test.jsonl", None)


def test_published_nq_open_reversed_containment():
    r = row("6 geese a-laying; maids a-milking")
    assert published_correct("geese", r, "nq_open_test.jsonl", None)            # piece inside gold
    assert not published_correct("6 geese a-laying, of course", r, "nq_open_test.jsonl", None)
    assert published_correct("", r, "nq_open_test.jsonl", None)                 # empty piece counts
    assert published_correct("wrong; ", r, "nq_open_test.jsonl", None)
    assert not published_correct("Geese", r, "nq_open_test.jsonl", None)        # case-sensitive


def test_published_exact_without_strip():
    assert published_correct("Good", row("Good"), "rotten_tomatoes_test.jsonl", None)
    assert not published_correct("Good ", row("Good"), "rotten_tomatoes_test.jsonl", None)
    assert published_correct("B", row("B", user=HS_USER), "hellaswag_test.jsonl", None)


def test_startswith_match():
    assert startswith_match("([0-9])+ and more", row("([0-9])+"))
    assert not startswith_match(" ([0-9])+", row("([0-9])+"))


needs_sqlite3 = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 CLI")


@needs_sqlite3
def test_published_spider(spider_dir):
    r = row("SELECT name FROM singer ORDER BY id", user=SPIDER_USER)
    path = str(spider_dir)
    assert published_correct("SELECT name FROM singer ORDER BY id", r, "spider_test.jsonl", path)
    # order-sensitive: the same rows in another order do not match
    assert not published_correct("SELECT name FROM singer ORDER BY id DESC", r, "spider_test.jsonl", path)
    # a failing prediction prints nothing and "matches" a gold query with an empty result
    empty = row("SELECT name FROM singer WHERE age > 100", user=SPIDER_USER)
    assert published_correct("SELEC garbage", empty, "spider_test.jsonl", path)
    assert not published_correct("SELEC garbage", r, "spider_test.jsonl", path)
    # -readonly: a generated write fails (prints nothing) and the table is unchanged
    assert published_correct("DELETE FROM singer", empty, "spider_test.jsonl", path)
    assert published_correct("SELECT name FROM singer ORDER BY id", r, "spider_test.jsonl", path)
    # a dot-command is never run ('.shell' would run anything)
    marker = spider_dir / "pwned"
    assert published_correct(f".shell touch {marker}", empty, "spider_test.jsonl", path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="spider_path"):
        published_correct("SELECT 1", r, "spider_test.jsonl", None)


# --------------------------------------------------------------------------
# resolve_dataset
# --------------------------------------------------------------------------

def test_resolve_dataset():
    assert resolve_dataset("gsm8k", None).name == "gsm8k"
    assert resolve_dataset("spider", "datasets/gsm8k_test.jsonl").name == "spider"   # --dataset wins
    assert resolve_dataset(None, "datasets/gsm8k_test.jsonl").name == "gsm8k"
    assert resolve_dataset(None, "/a/b/nq_open_test.jsonl").metric == "nq_open"
    assert resolve_dataset(None, "rotten_tomatoes_test.jsonl").metric == "label"


@pytest.mark.parametrize("dataset, input_file", [("squad", None), (None, "data/mystery.jsonl"), (None, None)])
def test_resolve_dataset_unknown_lists_names(dataset, input_file):
    with pytest.raises(ValueError, match="gsm8k.*hellaswag.*synth"):
        resolve_dataset(dataset, input_file)
