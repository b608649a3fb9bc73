"""evaluate.py under bad input, hostile predictions and interruptions (issue 9, items 2-4):
missing Spider databases stop the run before the model loads; a prediction that cannot be
scored is wrong with its reason; rows are saved as they are produced, the outputs appear by
atomic rename, an output that is the input is refused, and the same command continues an
interrupted run without redoing or double-counting a row."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, example, needs_shared, synthetic_rows, write_jsonl
from llm_jepa import evaluation as E
from llm_jepa.config import ConfigError, parse_eval_args
from llm_jepa.data import DataError
from llm_jepa.generation import GreedyGenerator


def evaluate(*args):
    return E.run(parse_eval_args([str(a) for a in args]))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def prediction(answer="(dog).*", generation="(dog).*", **extra) -> dict:
    return dict(example(answer=answer), generation=generation, **extra)


# --------------------------------------------------------------------------------------
# item 3: a bad prediction is scored wrong with its reason; the run goes on
# --------------------------------------------------------------------------------------
BAD = [
    (prediction(generation="x\ud800"), None),                       # a lone surrogate: wrong, not unscorable
    (prediction(generation=None), "the generation is null, not text"),
    (prediction(generation=7), "the generation is int, not text"),
    (prediction(generation=["(dog).*"]), "the generation is list, not text"),
    ({"messages": example()["messages"][:2], "generation": "(dog).*"}, "expected 3 messages"),
    ({"messages": "hello", "generation": "(dog).*"}, "expected 3 messages"),
]


def test_bad_predictions_are_scored_wrong_and_the_outputs_written(tmp_path):
    rows = [prediction()] + [r for r, _ in BAD] + [prediction(generation="((dog)).*")]
    preds = write_jsonl(tmp_path / "synth_preds.jsonl", rows)
    out = tmp_path / "out" / "r.jsonl"
    summary = evaluate("--predictions", preds, "--output_file", out)
    assert summary["counts"] == {"examples": 8, "scored": 8, "skipped": 0, "correct": 2, "unscorable": 5}
    assert summary["metrics"]["accuracy"] == pytest.approx(2 / 8)
    saved = read_rows(out)   # strict UTF-8: the surrogate is written as an escape
    assert [r["index"] for r in saved] == list(range(8))
    assert saved[1]["generation"] == "x\ud800" and saved[1]["correct"] is False
    for rec, (_, reason) in zip(saved[1:7], BAD):
        if reason:
            assert rec["correct"] is False and rec["note"].startswith("unscorable: ") and reason in rec["note"]
    assert [u["index"] for u in summary["unscorable"]] == [2, 3, 4, 5, 6]
    # the written rows are themselves valid predictions, and re-score to the same numbers
    again = evaluate("--predictions", out, "--dataset", "synth", "--output_file", tmp_path / "again.jsonl")
    assert again["counts"] == summary["counts"]


def test_surrogate_output_is_escaped_only_where_needed():
    line = E.to_json_line({"a": "x\ud800y", "b": "日本", "c": "\\ud800"})
    line.encode("utf-8")   # would raise with a raw surrogate
    assert "日本" in line and json.loads(line) == {"a": "x\ud800y", "b": "日本", "c": "\\ud800"}


def test_paper_compat_scoring_survives_a_null_generation(tmp_path, monkeypatch):
    # the published nq_open scoring splits the generation: a null one used to crash the run
    monkeypatch.chdir(tmp_path)
    rows = [dict(example(system="Answer the question", user="who?", answer="Ada"), generation=g)
            for g in ("Ada", None, "Bob")]
    write_jsonl(tmp_path / "nq_open_test.jsonl", rows)
    summary = evaluate("--predictions", "nq_open_test.jsonl", "--paper_compat", "--output_file", "o.jsonl",
                       "--startswith")
    assert summary["counts"]["unscorable"] == 1 and summary["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert [r["startswith"] for r in read_rows(tmp_path / "o.jsonl")] == [True, False, False]


@pytest.mark.parametrize("content,message", [
    (b'{"messages": [], "generation": "a"}\n\n{"messages": [}\n', r"p\.jsonl:3: bad JSON"),
    (b'{"messages": [], "generation": "a"}\n"\xff\xfe"\n', r"p\.jsonl:2: not UTF-8 text: byte 0xff"),
    (b'[1, 2]\n', r"p\.jsonl:1: a prediction row needs 'messages' and 'generation'"),
    (b'{"messages": []}\n', r"p\.jsonl:1: a prediction row needs"),
    (b'{"messages": [], "generation": ' + b"1" * 5000 + b"}\n", r"p\.jsonl:1: bad JSON"),
    (b"\n\n", r"p\.jsonl: no predictions"),
])
def test_malformed_prediction_line_names_file_and_line(tmp_path, content, message):
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(content)
    with pytest.raises(DataError, match=message):
        evaluate("--predictions", preds, "--dataset", "synth", "--output_file", tmp_path / "o.jsonl")


def test_main_reports_bad_input_in_one_line(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"messages": [], "generation": "a"}\n{"messages": \n')
    assert E.main(["--predictions", str(preds), "--dataset", "synth", "--output_file", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evaluate.py: error: ") and "p.jsonl:2: bad JSON" in err[-1]
    assert not (tmp_path / "o.jsonl").exists()


# --------------------------------------------------------------------------------------
# item 2: Spider databases
# --------------------------------------------------------------------------------------
def spider_row(db_id: str, gold: str, generation: str | None = None) -> dict:
    row = example(system="Convert natural language to SQL.", user=f"For db_id:[{db_id}]\n\nList the names.",
                  answer=gold)
    if generation is not None:
        row["generation"] = generation
    return row


def make_database(root: Path, db_id: str = "toy") -> Path:
    path = root / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (name TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("a",), ("b",)])
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the model is loaded (the checks must come first)."""
    def refuse(cfg):
        raise AssertionError("the model was loaded before the inputs were checked")
    monkeypatch.setattr(E, "load_model", refuse)


@pytest.mark.parametrize("flags,message", [
    ([], "no --spider_path was given.*prepare spider_data"),
    (["--spider_path", "{tmp}/nowhere"], r"--spider_path .*nowhere: no such folder \(looked in .*nowhere\).*"
                                         "prepare spider_data"),
    (["--spider_path", "{tmp}/empty"], r"--spider_path .*empty holds none of the 1 databases .* e\.g\. toy"),
    (["--spider_path", "{tmp}/spider_data"], r"did you mean --spider_path .*spider_data/database\?"),
])
@pytest.mark.parametrize("mode", ["input", "predictions"])
def test_spider_without_databases_stops_before_the_model_loads(tmp_path, no_model, flags, message, mode):
    (tmp_path / "empty").mkdir()
    make_database(tmp_path / "spider_data" / "database")
    rows = [spider_row("toy", "SELECT name FROM t", "SELECT name FROM t")] * 2
    data = write_jsonl(tmp_path / "spider_test.jsonl", rows)
    source = ["--predictions", data] if mode == "predictions" else ["--input_file", data, "--model_name",
                                                                    tmp_path / "model", "--nosplit_data"]
    flags = [f.format(tmp=tmp_path) for f in flags]
    with pytest.raises(ConfigError, match=message):
        evaluate(*source, "--output_file", tmp_path / "o.jsonl", *flags)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.partial").exists()


def test_spider_flag_missing_points_at_the_usual_place(tmp_path, no_model):
    make_database(tmp_path / "spider_data" / "database")   # beside datasets/, as on the development machines
    (tmp_path / "datasets").mkdir()
    data = write_jsonl(tmp_path / "datasets" / "spider_test.jsonl", [spider_row("toy", "SELECT name FROM t", "x")])
    with pytest.raises(ConfigError, match=r"there is one at .*spider_data/database: pass --spider_path"):
        evaluate("--predictions", data, "--output_file", tmp_path / "o.jsonl")


def test_spider_rows_with_missing_databases_are_skipped_and_counted(tmp_path):
    spider = make_database(tmp_path / "db")
    rows = [spider_row("toy", "SELECT name FROM t", "SELECT name FROM t ORDER BY name DESC"),
            spider_row("toy", "SELECT name FROM t", "SELECT nme FROM t"),
            spider_row("gone", "SELECT name FROM t", "SELECT name FROM t")]
    data = write_jsonl(tmp_path / "spider_test.jsonl", rows)
    summary = evaluate("--predictions", data, "--spider_path", spider, "--output_file", tmp_path / "o.jsonl")
    assert summary["counts"]["skipped"] == 1 and summary["skipped"] == [{"index": 2, "reason": "missing database"}]
    assert summary["metrics"]["accuracy"] == 0.5


def test_no_scorable_row_is_an_error(tmp_path, capsys):
    spider = make_database(tmp_path / "db")
    rows = [spider_row("toy", "SELEC broken gold", "SELECT name FROM t")] * 3
    data = write_jsonl(tmp_path / "spider_test.jsonl", rows)
    with pytest.raises(DataError, match=r"none of the 3 rows could be scored \(3: gold error"):
        evaluate("--predictions", data, "--spider_path", spider, "--output_file", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.summary.json").exists()
    capsys.readouterr()
    assert E.main(["--predictions", str(data), "--spider_path", str(spider), "--output_file",
                   str(tmp_path / "o.jsonl")]) == 2
    out = capsys.readouterr()
    assert "Success Rate" not in out.out and "could be scored" in out.err


def test_paper_compat_spider_also_needs_the_databases(tmp_path, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)   # published: spider scoring is chosen by the relative path's prefix
    write_jsonl(tmp_path / "spider_test.jsonl", [spider_row("toy", "SELECT name FROM t", "SELECT 1")])
    with pytest.raises(ConfigError, match="no --spider_path"):
        evaluate("--predictions", "spider_test.jsonl", "--paper_compat", "--output_file", "o.jsonl")


def test_spider_on_the_shared_databases_with_a_hostile_row(tmp_path):
    spider = needs_shared("spider_data", "database")
    rows = [json.loads(line) for line in open(needs_shared("datasets", "spider_test.jsonl"))][:6]
    for i, r in enumerate(rows):
        r["generation"] = ["SELECT 'x\ud800'", None][i] if i < 2 else r["messages"][2]["content"]
    data = write_jsonl(tmp_path / "spider_test.jsonl", rows)
    summary = evaluate("--predictions", data, "--spider_path", spider, "--output_file", tmp_path / "o.jsonl")
    saved = read_rows(tmp_path / "o.jsonl")
    assert saved[0]["generation"] == "SELECT 'x\ud800'" and saved[0]["correct"] is False
    assert saved[1]["note"].startswith("unscorable: ") and summary["counts"]["examples"] == 6


# --------------------------------------------------------------------------------------
# item 4: output safety, atomic outputs, continuing an interrupted run
# --------------------------------------------------------------------------------------
def test_an_output_that_is_the_input_is_refused(tmp_path):
    preds = write_jsonl(tmp_path / "synth_p.jsonl", [prediction()] * 50)
    before = preds.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(preds)
    os.link(preds, tmp_path / "hard.jsonl")
    for out in (preds, tmp_path / "link.jsonl", tmp_path / "hard.jsonl", tmp_path / "sub" / ".." / "synth_p.jsonl"):
        with pytest.raises(ConfigError, match="is --predictions .*: writing it would destroy the input"):
            evaluate("--predictions", preds, "--output_file", out)
    named_like_a_summary = write_jsonl(tmp_path / "q.summary.json", [prediction()])
    with pytest.raises(ConfigError, match="the summary .* is --predictions"):   # q.jsonl -> q.summary.json
        evaluate("--predictions", named_like_a_summary, "--dataset", "synth", "--output_file", tmp_path / "q.jsonl")
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(5))
    with pytest.raises(ConfigError, match="--test_file .* is --input_file"):
        evaluate("--input_file", data, "--model_name", tmp_path / "m", "--test_file", data,
                 "--output_file", tmp_path / "o.jsonl")
    assert preds.read_bytes() == before and len(data.read_text().splitlines()) == 5


def test_a_failure_while_finishing_keeps_the_previous_outputs(tmp_path, monkeypatch):
    preds = write_jsonl(tmp_path / "synth_p.jsonl", [prediction()] * 3 + [prediction(generation="(cat).*")])
    out = tmp_path / "o.jsonl"
    evaluate("--predictions", preds, "--output_file", out)
    before = out.read_bytes(), (tmp_path / "o.summary.json").read_bytes()
    preds.write_text(preds.read_text() + json.dumps(prediction(generation="(cat).*")) + "\n")
    calls = []

    def disk_full(fd):   # the first fsync writes the partial header; the second, the final rows
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        evaluate("--predictions", preds, "--output_file", out)
    assert (out.read_bytes(), (tmp_path / "o.summary.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "o.jsonl.partial", "o.summary.json",
                                                          "synth_p.jsonl"]   # no temporary file left
    monkeypatch.undo()
    summary = evaluate("--predictions", preds, "--output_file", out)
    assert summary["counts"]["examples"] == 5 and not (tmp_path / "o.jsonl.partial").exists()


def test_a_foreign_partial_file_is_left_alone(tmp_path):
    preds = write_jsonl(tmp_path / "synth_p.jsonl", [prediction()])
    (tmp_path / "o.jsonl.partial").write_text("my notes\n")
    with pytest.raises(ConfigError, match="is not the partial rows of an evaluation"):
        evaluate("--predictions", preds, "--output_file", tmp_path / "o.jsonl")
    assert (tmp_path / "o.jsonl.partial").read_text() == "my notes\n"


def comparable(summary: dict) -> dict:
    """A summary without what differs between two runs of one evaluation (date, output name)."""
    flags = {k: v for k, v in summary["flags"].items() if k != "output_file"}
    return {**{k: v for k, v in summary.items() if k != "date"}, "flags": flags}


def without_latency(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "latency"} for r in rows]


def test_interrupted_rescoring_continues_where_it_stopped(tmp_path, monkeypatch):
    from llm_jepa.metrics.regex import RegexMetric

    rows = [prediction(generation=g) for g in ("(dog).*", "(cat).*", "((dog)).*", "x", "(dog).*", "y")]
    preds = write_jsonl(tmp_path / "synth_p.jsonl", rows)
    whole = evaluate("--predictions", preds, "--output_file", tmp_path / "whole.jsonl")
    args = ("--predictions", preds, "--output_file", tmp_path / "cut.jsonl")
    real, seen = RegexMetric.score, []

    def crash_at_row_4(self, generation, *rest):
        seen.append(generation)
        if len(seen) == 4:
            raise RuntimeError("power cut")
        return real(self, generation, *rest)
    monkeypatch.setattr(RegexMetric, "score", crash_at_row_4)
    with pytest.raises(RuntimeError, match="power cut"):
        evaluate(*args)
    partial = tmp_path / "cut.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 1 + 3 and not (tmp_path / "cut.jsonl").exists()
    seen.clear()
    monkeypatch.setattr(RegexMetric, "score", lambda self, g, *rest: seen.append(g) or real(self, g, *rest))
    cut = evaluate(*args)
    assert seen == ["x", "(dog).*", "y"]   # rows 4-6 only, once each
    assert comparable(cut) == comparable(whole) and not partial.exists()
    assert read_rows(tmp_path / "cut.jsonl") == read_rows(tmp_path / "whole.jsonl")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_llama, train_file):
    """A model as finetune.py saves it (1 step): its tokenizer holds the special tokens."""
    from llm_jepa.config import parse_args
    from llm_jepa.train import run as train_run

    out = tmp_path_factory.mktemp("tuned") / "synth_jepa"
    train_run(parse_args(["--train_file", str(train_file), "--model_name", str(tiny_llama), "--output_dir",
                          str(out), "--max_steps", "1", "--dtype", "fp32", "--predictors", "1"]))
    return out


def generation_args(data: Path, model: Path, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("--model_name", model, "--input_file", data, "--nosplit_data", "--output_file", out,
                             "--eval_batch_size", "3", "--max_new_tokens", "6", "--dtype", "fp32", *extra)]


class CountingGenerator:
    """Counts GreedyGenerator batches; raises `error` at batch `stop_at` (1-based)."""

    def __init__(self, monkeypatch, stop_at: int | None = None, error: BaseException | None = None):
        self.calls, real = [], GreedyGenerator._generate

        def counted(gen, prompts):
            self.calls.append(len(prompts))
            if stop_at is not None and len(self.calls) == stop_at:
                raise error
            return real(gen, prompts)
        monkeypatch.setattr(GreedyGenerator, "_generate", counted)


def test_interrupted_generation_continues_with_identical_rows(tmp_path, tuned, monkeypatch):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(10, seed=5))
    whole = E.run(parse_eval_args(generation_args(data, tuned, tmp_path / "whole.jsonl")))
    args = generation_args(data, tuned, tmp_path / "cut.jsonl")
    CountingGenerator(monkeypatch, stop_at=3, error=RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        E.run(parse_eval_args(args))
    partial = tmp_path / "cut.jsonl.partial"
    saved = partial.read_text().splitlines()
    assert len(saved) == 1 + 6 and not (tmp_path / "cut.jsonl").exists()   # header + 2 batches of 3 rows
    # a kill in the middle of a write leaves a cut line: it is dropped, not read
    with open(partial, "ab") as fh:
        fh.write(saved[-1].encode()[:40])
    counter = CountingGenerator(monkeypatch)
    cut = E.run(parse_eval_args(args))
    assert counter.calls == [3, 1]   # the two batches left (10 rows: 3 + 3 + 3 + 1)
    assert comparable(cut) == comparable(whole) and not partial.exists()
    rows = read_rows(tmp_path / "cut.jsonl")
    assert [r["index"] for r in rows] == list(range(10))
    assert without_latency(rows) == without_latency(read_rows(tmp_path / "whole.jsonl"))


def test_other_flags_or_no_skip_existing_start_over(tmp_path, tuned, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(logging.getLogger("llm_jepa"), "propagate", True)   # main() turns it off
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(7, seed=5))
    out = tmp_path / "o.jsonl"
    CountingGenerator(monkeypatch, stop_at=2, error=RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        E.run(parse_eval_args(generation_args(data, tuned, out)))
    counter = CountingGenerator(monkeypatch)
    E.run(parse_eval_args(generation_args(data, tuned, out, "--max_new_tokens", "4")))
    assert counter.calls == [3, 3, 1] and "--max_new_tokens differ" in caplog.text
    CountingGenerator(monkeypatch, stop_at=2, error=RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        E.run(parse_eval_args(generation_args(data, tuned, out)))
    counter = CountingGenerator(monkeypatch)
    summary = E.run(parse_eval_args(generation_args(data, tuned, out, "--no_skip_existing")))
    assert counter.calls == [3, 3, 1] and summary["counts"]["examples"] == 7


def test_ctrl_c_says_how_to_continue(tmp_path, tuned, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(4, seed=5))
    args = generation_args(data, tuned, tmp_path / "o.jsonl")
    CountingGenerator(monkeypatch, stop_at=2, error=KeyboardInterrupt())
    assert E.main(args) == 130
    assert "the same command continues" in capsys.readouterr().err
    counter = CountingGenerator(monkeypatch)
    assert E.main(args) == 0 and counter.calls == [1]
    assert [r["index"] for r in read_rows(tmp_path / "o.jsonl")] == [0, 1, 2, 3]


KILLER = """
import os, signal, sys
from llm_jepa.generation import GreedyGenerator
from llm_jepa.evaluation import main
real, calls = GreedyGenerator._generate, []
def generate(gen, prompts):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush of anything unflushed
    return real(gen, prompts)
GreedyGenerator._generate = generate
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_midway_then_the_same_command_finishes(tmp_path, tuned):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(8, seed=7))
    whole = E.run(parse_eval_args(generation_args(data, tuned, tmp_path / "whole.jsonl")))
    args = generation_args(data, tuned, tmp_path / "cut.jsonl")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len((tmp_path / "cut.jsonl.partial").read_text().splitlines()) == 1 + 6
    proc = subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "6 of 8 rows already done" in proc.stdout + proc.stderr
    cut = json.loads((tmp_path / "cut.summary.json").read_text())
    assert comparable(cut) == comparable(whole)
    rows = read_rows(tmp_path / "cut.jsonl")
    assert sorted(r["index"] for r in rows) == list(range(8))
    assert without_latency(rows) == without_latency(read_rows(tmp_path / "whole.jsonl"))


def test_two_runs_cannot_write_the_same_partial_file(tmp_path):
    path, fp = tmp_path / "o.jsonl.partial", {"flags": {}}
    first = E.PartialRows(path, fp, restart=False)
    try:
        with pytest.raises(ConfigError, match="is being written by another evaluation"):
            E.PartialRows(path, fp, restart=False)
    finally:
        first.close(finished=False)
    E.PartialRows(path, fp, restart=False).close(finished=True)   # free again once the first is closed
    assert not path.exists()
