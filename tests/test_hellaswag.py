"""HellaSwag acc / acc_norm on lm-eval-harness's query and endings (expected values by hand)."""
from __future__ import annotations

import json
import logging

import pytest

from conftest import example, write_jsonl
from llm_jepa import data as D
from llm_jepa.config import parse_eval_args
from llm_jepa.corpora import prepare as P
from llm_jepa.evaluation import run
from llm_jepa.families import family_by_name
from llm_jepa.metrics import RowScore, ScoreContext, get_metric
from llm_jepa.metrics.hellaswag import PARTIAL_MISSING, lm_eval_query, lm_eval_request, preprocess

ACTIVITYNET = {"ind": 5, "activity_label": "Making a sandwich", "ctx_a": "A woman stands at a kitchen counter.",
               "ctx_b": "she", "ctx": "A woman stands at a kitchen counter. she",
               "endings": ["spreads butter on two slices of bread.", "jumps into the pool.",
                           "drives the car away.", "paints the fence blue."], "label": "0"}
WIKIHOW = {"ind": 9, "activity_label": "Home and Garden",
           "ctx_a": "[header] How to water a plant [title] Check the soil. [step] Push a finger into it.",
           "ctx_b": "", "ctx": "[header] How to water a plant [title] Check the soil. [step] Push a finger into it.",
           "endings": ["[substeps] Sing to it.", "[substeps] Paint it.",
                       "If it is dry, water it. [title] Water slowly.", "[substeps] Sell it."], "label": "2"}
ACTIVITYNET_QUERY = "Making a sandwich: A woman stands at a kitchen counter. She"
WIKIHOW_QUERY = "Home and Garden: How to water a plant. Check the soil. Push a finger into it."
# lm-eval's choices: the tag goes, the space after it stays (strip comes first), and
# " [title]" after a full stop leaves two.
WIKIHOW_CHOICES = [" Sing to it.", " Paint it.", "If it is dry, water it.. Water slowly.", " Sell it."]


def without_upstream(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "hellaswag"}


# --------------------------------------------------------------------------------------
# preprocess and the query
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("[header] How to water a plant [title] Check the soil. [step] Push a finger into it.",
     " How to water a plant. Check the soil. Push a finger into it."),   # the leading space stays
    ("If it is dry, water it. [title] Water slowly.", "If it is dry, water it.. Water slowly."),
    ("  Push it. [step]", "Push it. "),                 # stripped before the tag goes
    ("a [b] c [d] e", "a c e"),                         # non-greedy: the text between tags stays
    ("one  two", "one two"),
    ("one   two", "one  two"),                          # one pass: three spaces become two
    ("one    two", "one  two"),                         # and four become two
    ("plain text.", "plain text."),
])
def test_preprocess(text, expected):
    assert preprocess(text) == expected


@pytest.mark.parametrize("ctx_b, expected", [
    ("a Black male", "A black male"),                   # the rest is lower-cased, as lm-eval does
    ("A black male", "A black male"),
    ("the man in the NBA jersey", "The man in the nba jersey"),
    ("she", "She"),
])
def test_query_capitalizes_ctx_b_and_lowers_the_rest(ctx_b, expected):
    assert lm_eval_query("Act", "Ctx A.", ctx_b) == f"Act: Ctx A. {expected}"


def test_query_of_an_empty_ctx_b_has_no_trailing_space():
    assert lm_eval_query(WIKIHOW["activity_label"], WIKIHOW["ctx_a"], "") == WIKIHOW_QUERY


def test_request_with_the_upstream_fields_is_lm_evals():
    query, choices, kind = lm_eval_request(P.hellaswag_example(ACTIVITYNET))
    assert (query, choices, kind) == (ACTIVITYNET_QUERY, ACTIVITYNET["endings"], "full")
    assert lm_eval_request(P.hellaswag_example(WIKIHOW)) == (WIKIHOW_QUERY, WIKIHOW_CHOICES, "full")


def test_request_without_them_applies_only_the_tag_cleanup():
    # No activity label, and "she" stays lower case: the context cannot tell where ctx_b starts.
    query, choices, kind = lm_eval_request(without_upstream(P.hellaswag_example(ACTIVITYNET)))
    assert (query, choices, kind) == ("A woman stands at a kitchen counter. she", ACTIVITYNET["endings"], "partial")
    query, choices, kind = lm_eval_request(without_upstream(P.hellaswag_example(WIKIHOW)))
    assert (query, choices, kind) == (" How to water a plant. Check the soil. Push a finger into it.",
                                      WIKIHOW_CHOICES, "partial")


@pytest.mark.parametrize("field", [
    "not an object", {"activity_label": "a", "ctx_a": "b", "ctx_b": "c"},
    {"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["only", "three", "endings"]},
    {"activity_label": None, "ctx_a": "b", "ctx_b": "c", "endings": ["1", "2", "3", "4"]},
])
def test_a_malformed_upstream_field_is_an_error(field):
    with pytest.raises(ValueError, match="'hellaswag' field"):
        lm_eval_request({**P.hellaswag_example(ACTIVITYNET), "hellaswag": field})


# --------------------------------------------------------------------------------------
# the converter keeps the fields; training ignores them
# --------------------------------------------------------------------------------------
def test_converter_keeps_the_upstream_fields_and_training_ignores_them(tmp_path, tiny_tokenizer):
    row = P.hellaswag_example(ACTIVITYNET)
    assert row["hellaswag"] == {"activity_label": "Making a sandwich", "ctx_a": "A woman stands at a kitchen counter.",
                                "ctx_b": "she", "endings": ACTIVITYNET["endings"]}
    path = tmp_path / "hellaswag_train.jsonl"
    P.write_jsonl(path, [row])
    (read,) = D.read_examples(path, needs_view_fields=True, require_answer=True)
    assert read == row

    def features(r):
        renderer = D.ViewRenderer(tiny_tokenizer, family_by_name("llama"), D.ViewOptions(use_view_fields=True), {})
        return D.tokenize_examples([r], renderer, D.ViewTokenizer(tiny_tokenizer, D.TokenizeOptions(512)),
                                   with_views=True)[0]

    assert features(read) == features(without_upstream(read))


# --------------------------------------------------------------------------------------
# scoring and the summary
# --------------------------------------------------------------------------------------
def scored(kind: str | None, gold: str = "A") -> RowScore:
    aux = {"ending_logprobs": [-1.0, -2.0, -3.0, -4.0], "ending_chars": [10, 10, 10, 10]}
    if kind is not None:
        aux["lm_eval_query"] = kind
    row = without_upstream(P.hellaswag_example({**ACTIVITYNET, "label": "ABCD".index(gold)}))
    return get_metric("hellaswag").score(gold, row, ScoreContext(), aux)


def test_row_metrics_record_the_query_kind():
    assert scored("full").metrics == {"letter": True, "acc": True, "acc_norm": True, "lm_eval_query": "full"}


def test_summary_reports_partial_rows_and_warns_once(caplog):
    metric, scores = get_metric("hellaswag"), [scored("full"), scored("partial", "B"), scored("partial")]
    with caplog.at_level(logging.WARNING):
        summary = metric.summarize([{}] * 3, scores)
    assert summary["lm_eval_query"] == {"full": 1, "partial": 2, "missing": list(PARTIAL_MISSING)}
    assert summary["metrics"] == {"letter": 1.0, "acc": pytest.approx(2 / 3), "acc_norm": pytest.approx(2 / 3)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 rows" in warnings[0] and "activity_label prefix" in warnings[0]


def test_summary_of_full_unrecorded_and_letter_only_rows(caplog):
    metric = get_metric("hellaswag")
    with caplog.at_level(logging.WARNING):
        summary = metric.summarize([{}] * 2, [scored("full"), scored("full")])
    assert summary["lm_eval_query"] == {"full": 2, "partial": 0, "missing": []} and not caplog.records
    # rows scored before the kind was recorded (an older --predictions file)
    summary = metric.summarize([{}] * 2, [scored("full"), scored(None)])
    assert summary["lm_eval_query"] == {"full": 1, "partial": 0, "missing": [], "unrecorded": 1}
    letter_only = metric.score("A", P.hellaswag_example(ACTIVITYNET), ScoreContext())
    assert "lm_eval_query" not in metric.summarize([{}], [letter_only])


# --------------------------------------------------------------------------------------
# end to end: what evaluate.py hands to continuation_logprobs
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama):
    """A tiny model whose vocabulary holds the tokens the tokenizer set-up adds, as in a
    finetune.py output directory (no training needed: the log-probs are replaced)."""
    from llm_jepa.tiny import save_tiny_model
    from llm_jepa.tokenization import setup_tokenizer
    from llm_jepa.train import detect_family

    grown = setup_tokenizer(str(tiny_llama), detect_family(str(tiny_llama))).tokenizer
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama", grown)


@pytest.fixture
def captured(monkeypatch):
    """continuation_logprobs replaced: records its pairs and gives the four endings of each
    row the log-probs -12, -10, -14, -15."""
    pairs = []

    def fake(model, tok, batch, batch_size):
        pairs.extend(batch)
        return [[-12.0, -10.0, -14.0, -15.0][i % 4] for i in range(len(batch))]

    monkeypatch.setattr("llm_jepa.evaluation.continuation_logprobs", fake)
    return pairs


def test_evaluation_scores_lm_evals_requests(tmp_path, model_dir, captured, caplog):
    rows = [P.hellaswag_example(ACTIVITYNET), without_upstream(P.hellaswag_example(WIKIHOW)),
            example(system="Which ending?", user="no endings here", answer="A")]
    data = write_jsonl(tmp_path / "hellaswag_test.jsonl", rows)
    out = tmp_path / "hellaswag_responses.jsonl"
    with caplog.at_level(logging.WARNING):
        summary = run(parse_eval_args(["--model_name", str(model_dir), "--input_file", str(data), "--output_file",
                                       str(out), "--nosplit_data", "--eval_batch_size", "8"]))
    assert captured == ([(ACTIVITYNET_QUERY, " " + e) for e in ACTIVITYNET["endings"]]
                        + [(" How to water a plant. Check the soil. Push a finger into it.", " " + c)
                           for c in WIKIHOW_CHOICES])
    assert summary["metrics"]["lm_eval_query"] == {"full": 1, "partial": 1, "missing": list(PARTIAL_MISSING)}
    # acc: ending B (-10) on both rows, wrong (gold A, then C). acc_norm, per character:
    # ActivityNet A -12/38 beats B -10/20, C -14/20, D -15/22; WikiHow C -14/38 beats
    # A -12/12, B -10/10, D -15/9. Both right.
    assert summary["metrics"]["metrics"]["acc"] == 0.0 and summary["metrics"]["metrics"]["acc_norm"] == 1.0
    assert summary["metrics"]["metric_n"]["acc"] == 2     # the row without endings has its letter only
    assert any("example 2: no acc / acc_norm" in m for m in caplog.messages)
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("lm_eval_query") for r in saved] == ["full", "partial", None]
    assert saved[0]["aux"]["ending_chars"] == [len(e) for e in ACTIVITYNET["endings"]]
    # re-scoring the saved rows keeps the report: the kind travels in each row's aux
    again = run(parse_eval_args(["--predictions", str(out), "--output_file", str(tmp_path / "again.jsonl")]))
    assert again["metrics"]["lm_eval_query"] == summary["metrics"]["lm_eval_query"]


def test_paper_compat_scores_no_endings(tmp_path, model_dir, captured):
    data = write_jsonl(tmp_path / "hellaswag_test.jsonl", [P.hellaswag_example(ACTIVITYNET)])
    summary = run(parse_eval_args(["--model_name", str(model_dir), "--input_file", str(data), "--output_file",
                                   str(tmp_path / "p.jsonl"), "--nosplit_data", "--paper_compat"]))
    assert captured == [] and "lm_eval_query" not in summary["metrics"]
