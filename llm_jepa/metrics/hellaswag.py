"""HellaSwag: the predicted letter, and lm-eval-harness acc / acc_norm from ending log-probs.

acc and acc_norm score the query and endings of lm-eval-harness's `hellaswag` task. When a
row carries HellaSwag's upstream fields (`UPSTREAM_FIELD`, written by the dataset
converter) they are built exactly; otherwise from the context and endings of the user
message, where only the bracket-tag clean-up can be applied (`PARTIAL_MISSING`).
"""
from __future__ import annotations

import logging
import re
from collections import Counter

from .base import Metric, RowScore, ScoreContext, gold_answer, user_content

logger = logging.getLogger(__name__)

LETTERS = "ABCD"   # the answer letters of a four-way choice: the one definition
# The row field holding HellaSwag's upstream activity_label, ctx_a, ctx_b and endings.
UPSTREAM_FIELD = "hellaswag"
UPSTREAM_KEYS = ("activity_label", "ctx_a", "ctx_b", "endings")
# What lm-eval's query has that a row without UPSTREAM_FIELD cannot give.
PARTIAL_MISSING = ("activity_label prefix", "ctx_b capitalisation")
QUERY_KEY = "lm_eval_query"   # aux / row metric / summary key: how the acc inputs were built

_BRACKET_TAG = re.compile(r"\[.*?\]")   # non-greedy: "[header] a [step]" loses both tags, keeps " a "


def hellaswag_choices(row: dict) -> tuple[str, list[str], int]:
    """(context, [4 endings], gold index 0-3) of a HellaSwag row.

    The user message is the context followed by one "\\nA) ", "\\nB) ", "\\nC) ", "\\nD) "
    block per ending. The markers are searched from the end, D first, so a context that
    itself contains "\\nA) " still parses, and an ending may run over several lines.
    """
    content = user_content(row)
    starts, end = [], len(content)
    for letter in reversed(LETTERS):
        start = content.rfind(f"\n{letter}) ", 0, end)
        if start < 0:
            raise ValueError(f"HellaSwag row without a '{letter}) ' ending: {content[:80]!r}")
        starts.insert(0, start)
        end = start
    bounds = starts + [len(content)]
    endings = [content[bounds[i] + 4:bounds[i + 1]] for i in range(4)]  # 4 = len("\nA) ")
    context = content[:starts[0]]
    if row.get("text"):   # the Text view, when the row has one, is the context as prepared
        context = row["text"][0]["content"]
    return context, endings, gold_index(row)


def gold_index(row: dict) -> int:
    gold = gold_answer(row).strip()
    if len(gold) != 1 or gold not in LETTERS:
        raise ValueError(f"HellaSwag gold answer is not one of A-D: {gold!r}")
    return LETTERS.index(gold)


# --------------------------------------------------------------------------------------
# lm-eval-harness's query and endings
# --------------------------------------------------------------------------------------
def preprocess(text: str) -> str:
    """lm-eval's clean-up of WikiHow's bracket tags, step by step as it does it: strip the
    ends, turn " [title]" into ". ", drop every "[...]" tag, then ONE pass replacing "  "
    by " " (so three spaces become two, four become two). The strip comes first, so a
    space left at an end by a removed tag stays."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = _BRACKET_TAG.sub("", text)
    return text.replace("  ", " ")


def lm_eval_query(activity_label: str, ctx_a: str, ctx_b: str) -> str:
    """lm-eval's query. str.capitalize upper-cases ctx_b's first character and LOWER-CASES
    the rest ("the NBA" -> "The nba"); lm-eval does exactly this, so we do too."""
    return preprocess(f"{activity_label}: {ctx_a} {ctx_b.capitalize()}")


def upstream_fields(row: dict) -> dict | None:
    """The row's UPSTREAM_FIELD object, checked, or None when the row has none."""
    fields = row.get(UPSTREAM_FIELD)
    if fields is None:
        return None
    if not isinstance(fields, dict) or any(k not in fields for k in UPSTREAM_KEYS):
        raise ValueError(f"HellaSwag '{UPSTREAM_FIELD}' field needs {', '.join(UPSTREAM_KEYS)}")
    endings = fields["endings"]
    if not isinstance(endings, list) or len(endings) != 4:
        raise ValueError(f"HellaSwag '{UPSTREAM_FIELD}' field: expected a list of 4 endings")
    if not all(isinstance(t, str) for t in [*(fields[k] for k in UPSTREAM_KEYS[:3]), *endings]):
        raise ValueError(f"HellaSwag '{UPSTREAM_FIELD}' field: every value must be text")
    return fields


def lm_eval_request(row: dict) -> tuple[str, list[str], str]:
    """(query, [4 choices], kind): what acc / acc_norm score, the continuation of choice i
    being " " + choices[i]. kind is "full" when the row carries the upstream fields (the
    exact lm-eval inputs) and "partial" otherwise (preprocess applied to the message's
    context and endings; PARTIAL_MISSING cannot be applied)."""
    fields = upstream_fields(row)
    if fields is not None:
        query = lm_eval_query(fields["activity_label"], fields["ctx_a"], fields["ctx_b"])
        return query, [preprocess(e) for e in fields["endings"]], "full"
    context, endings, _ = hellaswag_choices(row)
    return preprocess(context), [preprocess(e) for e in endings], "partial"


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))   # ties: the first, like numpy


def ending_scores(aux: dict, gold: int) -> dict:
    """acc: the ending with the highest summed log-prob; acc_norm: per character (lm-eval)."""
    logprobs = [float(x) for x in aux["ending_logprobs"]]
    chars = [int(x) for x in aux["ending_chars"]]
    if len(logprobs) != 4 or len(chars) != 4:
        raise ValueError(f"expected 4 ending log-probs and lengths, got {len(logprobs)} and {len(chars)}")
    per_char = [lp / max(n, 1) for lp, n in zip(logprobs, chars)]   # an empty ending must not divide by 0
    return {"acc": _argmax(logprobs) == gold, "acc_norm": _argmax(per_char) == gold}


def query_report(scores: list[RowScore]) -> dict | None:
    """How the acc inputs of a run were built: rows with lm-eval's exact query ("full"),
    rows with what the messages allow ("partial", lacking "missing"), and rows scored
    before this was recorded ("unrecorded", only when there are some). None: no acc."""
    kinds = Counter(s.metrics.get(QUERY_KEY) for s in scores if "acc" in s.metrics)
    if not kinds:
        return None
    report = {"full": kinds["full"], "partial": kinds["partial"],
              "missing": list(PARTIAL_MISSING) if kinds["partial"] else []}
    unrecorded = sum(n for kind, n in kinds.items() if kind not in ("full", "partial"))
    if unrecorded:
        report["unrecorded"] = unrecorded
    return report


class HellaswagMetric(Metric):
    name = "hellaswag"
    primary = "letter"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        gold = gold_index(row)
        metrics = {"letter": generation.strip() == LETTERS[gold]}
        if aux and "ending_logprobs" in aux:
            metrics.update(ending_scores(aux, gold))
            if QUERY_KEY in aux:
                metrics[QUERY_KEY] = aux[QUERY_KEY]
        return self._row_score(metrics)

    def summarize(self, rows: list[dict], scores: list[RowScore]) -> dict:
        """The shared summary, plus `lm_eval_query` (see query_report) when acc was measured."""
        summary = super().summarize(rows, scores)
        report = query_report(scores)
        if report is None:
            return summary
        summary[QUERY_KEY] = report
        if report["partial"]:   # once per run: the acc / acc_norm numbers are not lm-eval's
            logger.warning("hellaswag: %d of %d rows lack the upstream '%s' fields, so their acc / acc_norm "
                           "query has no %s: not lm-eval's numbers; rebuild the file with "
                           "`python -m llm_jepa.corpora prepare hellaswag --out DIR`", report["partial"],
                           report["full"] + report["partial"], UPSTREAM_FIELD, " and no ".join(PARTIAL_MISSING))
        return summary
