"""HellaSwag: the predicted letter, and lm-eval-harness acc / acc_norm from ending log-probs."""
from __future__ import annotations

from .base import Metric, RowScore, ScoreContext, gold_answer, user_content

LETTERS = "ABCD"


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


class HellaswagMetric(Metric):
    name = "hellaswag"
    primary = "letter"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        gold = gold_index(row)
        metrics = {"letter": generation.strip() == LETTERS[gold]}
        if aux and "ending_logprobs" in aux:
            metrics.update(ending_scores(aux, gold))
        return self._row_score(metrics)
