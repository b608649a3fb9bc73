"""Exact string match, and the label variant with per-class accuracy (sentiment)."""
from __future__ import annotations

from collections import defaultdict

from .base import Metric, RowScore, ScoreContext, gold_answer


class ExactMetric(Metric):
    name = "exact"
    primary = "exact"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        return self._row_score({"exact": generation.strip() == gold_answer(row).strip()})


class LabelMetric(ExactMetric):
    """Exact match over class labels; the summary also breaks accuracy down per gold class,
    which shows a model that answers one label for everything."""
    name = "label"

    def summarize(self, rows: list[dict], scores: list[RowScore]) -> dict:
        summary = super().summarize(rows, scores)
        by_class: dict[str, list[bool]] = defaultdict(list)
        for row, s in zip(rows, scores):
            if s.correct is not None:
                by_class[gold_answer(row).strip()].append(s.correct)
        labels = sorted(by_class)
        summary["per_class"] = {c: sum(by_class[c]) / len(by_class[c]) for c in labels}
        summary["class_counts"] = {c: len(by_class[c]) for c in labels}
        return summary
