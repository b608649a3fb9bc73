"""NQ-Open: SQuAD-normalised containment of any gold answer in the generation."""
from __future__ import annotations

import re
import string

from .base import Metric, RowScore, ScoreContext, gold_answer

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def gold_answers(gold: str) -> list[str]:
    """The normalised gold answers (stored joined by '; '); empty ones are dropped."""
    return [a for a in (normalize_answer(p) for p in gold.split("; ")) if a]


class NqOpenMetric(Metric):
    name = "nq_open"
    primary = "contains"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        answers = gold_answers(gold_answer(row))
        pred = normalize_answer(generation)
        metrics = {"contains": any(a in pred for a in answers), "exact": pred in answers}
        return self._row_score(metrics, "" if answers else "empty gold answer")
