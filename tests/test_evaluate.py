"""evaluate.py end to end on a tiny fine-tuned model, and --predictions re-scoring."""
from __future__ import annotations

import json
import pickle

import pytest

from conftest import example, needs_shared, synthetic_rows, write_jsonl
from llm_jepa.behaviour import Published
from llm_jepa.config import parse_args, parse_eval_args
from llm_jepa.evaluation import main, run


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_llama, train_file):
    """A finetune.py output directory (1 step), with its run_config.json."""
    from llm_jepa.train import run as train_run

    out = tmp_path_factory.mktemp("tuned") / "synth_jepa"
    train_run(parse_args(["--train_file", str(train_file), "--model_name", str(tiny_llama), "--output_dir",
                          str(out), "--max_steps", "1", "--dtype", "fp32", "--predictors", "1",
                          "--finetune_seed", "82", "--lbd", "1"]))
    return out


def evaluate(*args):
    return run(parse_eval_args([str(a) for a in args]))


def test_evaluate_writes_rows_summary_and_success_line(tmp_path, tuned, capsys):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(10, seed=2))
    out = tmp_path / "eval" / "synth.jsonl"
    summary = evaluate("--model_name", tuned, "--input_file", data, "--output_file", out, "--nosplit_data",
                       "--max_new_tokens", "8", "--eval_batch_size", "4")
    assert f"Success Rate: {tuned}, " in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10))
    for key in ("prompt", "generation", "gold", "exact", "dfa", "latency", "messages", "correct"):
        assert key in rows[0]
    saved = json.loads((tmp_path / "eval" / "synth.summary.json").read_text())
    assert saved == summary
    # finished: no partial rows or temporary files are left beside the outputs
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["synth.jsonl", "synth.summary.json"]
    assert summary["dataset"] == "synth" and summary["primary"] == "dfa"
    assert summary["counts"]["examples"] == 10 and summary["seed"] == 82
    assert summary["training"]["predictors"] == 1 and summary["training"]["lbd"] == 1.0
    # the accuracy is the rows' own verdicts, averaged (0 must not crash)
    assert summary["metrics"]["accuracy"] == sum(r["correct"] for r in rows) / 10
    assert summary["counts"]["correct"] == sum(r["correct"] for r in rows)


def test_published_split_evaluates_the_test_part(tmp_path, tuned):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(20, seed=2))
    summary = evaluate("--model_name", tuned, "--input_file", data, "--output_file", tmp_path / "o.jsonl",
                       "--max_new_tokens", "2", "--test_file", tmp_path / "test_split.jsonl")
    assert summary["counts"]["examples"] == 4
    assert len((tmp_path / "test_split.jsonl").read_text().splitlines()) == 4


def test_paper_compat_generation_and_scoring(tmp_path, tuned, capsys):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(3, seed=2))
    summary = evaluate("--model_name", tuned, "--input_file", data, "--output_file", tmp_path / "c.jsonl",
                       "--nosplit_data", "--max_new_tokens", "4", "--paper_compat")
    assert summary["primary"] == "published" and summary["flags"]["eval_batch_size"] == 1
    assert "Success Rate:" in capsys.readouterr().out


def test_published_evaluation_switches_one_at_a_time(tmp_path):
    """--published picks evaluation behaviours one by one: the published scorer alone
    re-scores with the string comparison (an equivalent regex is then wrong), keeps the
    batched generation, and the summary records the switch."""
    rows = [dict(example(answer="(dog).*"), generation="(dog).*"),
            dict(example(answer="(dog).*"), generation="((dog)).*")]
    preds = write_jsonl(tmp_path / "synth_preds.jsonl", rows)
    ours = evaluate("--predictions", preds, "--output_file", tmp_path / "a.jsonl")
    published = evaluate("--predictions", preds, "--output_file", tmp_path / "b.jsonl", "--published", "scorers")
    assert ours["primary"] == "dfa" and ours["metrics"]["accuracy"] == 1.0
    assert published["primary"] == "published" and published["metrics"]["accuracy"] == 0.5
    assert published["flags"]["published"] == "scorers" and published["flags"]["eval_batch_size"] == 32
    assert parse_eval_args(["--predictions", "p", "--published", "one_at_a_time"]).eval_batch_size == 1
    assert parse_eval_args(["--predictions", "p", "--published", "one_at_a_time", "--eval_batch_size",
                            "8"]).eval_batch_size == 8
    assert parse_eval_args(["--predictions", "p", "--paper_compat"]).behaviour == Published.everything()


def test_unknown_published_evaluation_switch_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_eval_args(["--predictions", "p", "--published", "scorers,scorer"])
    assert "unknown behaviour scorer; known:" in capsys.readouterr().err


def test_predictions_rescoring_and_unknown_dataset(tmp_path):
    rows = [dict(example(answer="(dog).*"), generation="(dog).*"),
            dict(example(answer="(dog).*"), generation="((dog)).*"),   # equivalent, not exact
            dict(example(answer="(dog).*"), generation="(cat).*")]
    preds = write_jsonl(tmp_path / "synth_preds.jsonl", rows)
    summary = evaluate("--predictions", preds, "--output_file", tmp_path / "r.jsonl")
    assert summary["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["versions"]["peft"] and "pinned_stack" in summary["versions"]["lock"]
    assert summary["metrics"]["metrics"]["exact"] == pytest.approx(1 / 3)
    # the output rescored again gives the same result
    again = evaluate("--predictions", tmp_path / "r.jsonl", "--dataset", "synth",
                     "--output_file", tmp_path / "r2.jsonl")
    assert again["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    with pytest.raises(SystemExit):
        parse_eval_args(["--predictions", str(preds), "--similarity"])
    bad = write_jsonl(tmp_path / "mystery.jsonl", rows)
    with pytest.raises(ValueError, match="gsm8k"):
        evaluate("--predictions", bad)


def test_hellaswag_letter_and_loglikelihood(tmp_path, tuned):
    ctx = "A man is standing in a kitchen."
    user = ctx + "\nA) He cooks.\nB) He swims.\nC) He flies.\nD) He sleeps."
    rows = [example(system="Which ending? Answer A, B, C, or D.", user=user, answer="A",
                    text=[{"role": "user", "content": ctx}], code=[{"role": "assistant", "content": "He cooks."}])
            for _ in range(3)]
    data = write_jsonl(tmp_path / "hellaswag_test.jsonl", rows)
    summary = evaluate("--model_name", tuned, "--input_file", data, "--output_file", tmp_path / "h.jsonl",
                       "--nosplit_data")
    out = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert all(r["generation"] in {"A", "B", "C", "D"} and len(r["aux"]["ending_logprobs"]) == 4 for r in out)
    assert {"letter", "acc", "acc_norm"} <= set(summary["metrics"]["metrics"])


def test_similarity_and_tsne(tmp_path, tuned):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(12, seed=2))
    summary = evaluate("--model_name", tuned, "--input_file", data, "--output_file", tmp_path / "s.jsonl",
                       "--nosplit_data", "--max_new_tokens", "2", "--similarity", "--t_sne",
                       "--t_sne_type", "in_n_out")
    sim = summary["similarity"]
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    cos = [r["cosine"] for r in rows]
    # each row's cosine is a real cosine, and the report's means are the rows' means
    assert all(-1.0 <= c <= 1.0 for c in cos) and len(set(cos)) > 1
    assert sim["all"]["n"] == 12 and sim["all"]["mean"] == pytest.approx(sum(cos) / 12, abs=1e-6)
    right = [r["cosine"] for r in rows if r["correct"]]
    assert (sim["correct"]["n"], sim["wrong"]["n"]) == (len(right), 12 - len(right))
    with open(sim["t_sne"]["pickle"], "rb") as fh:
        dumped = pickle.load(fh)
    assert len(dumped["embedding_list"]) == 24 and dumped["label_list"][:2] == [0, 1]
    with open(sim["t_sne"]["png"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_subcommand(tmp_path, tuned, capsys):
    data = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(4, seed=2))
    evaluate("--model_name", tuned, "--input_file", data, "--output_file", tmp_path / "runs" / "a.jsonl",
             "--nosplit_data", "--max_new_tokens", "2")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "| synth |" in table and "JEPA (lr=2e-05, lbd=1.0, k=1)" in table


# --------------------------------------------------------------------------------------
# gold against gold on the real test sets
# --------------------------------------------------------------------------------------
def gold_predictions(tmp_path, name, n=None):
    rows = [json.loads(line) for line in open(needs_shared("datasets", f"{name}_test.jsonl"))][:n]
    for r in rows:
        r["generation"] = r["messages"][2]["content"]
    return write_jsonl(tmp_path / f"{name}_test.jsonl", rows)


@pytest.mark.parametrize("name", ["synth", "turk", "gsm8k", "rotten_tomatoes", "yelp"])
def test_gold_scores_perfectly(tmp_path, name):
    summary = evaluate("--predictions", gold_predictions(tmp_path, name), "--output_file", tmp_path / "g.jsonl")
    assert summary["metrics"]["accuracy"] == 1.0 and summary["counts"]["skipped"] == 0


def test_spider_gold_scores_perfectly_where_the_database_exists(tmp_path):
    spider = needs_shared("spider_data", "database")
    summary = evaluate("--predictions", gold_predictions(tmp_path, "spider"), "--spider_path", spider,
                       "--output_file", tmp_path / "sp.jsonl")
    assert summary["metrics"]["accuracy"] == 1.0
    reasons = {s["reason"] for s in summary["skipped"]}
    assert reasons <= {"missing database"} | {r for r in reasons if r.startswith("gold error")}
    assert summary["counts"]["skipped"] == 30  # 29 rows of missing databases + 1 broken gold query
