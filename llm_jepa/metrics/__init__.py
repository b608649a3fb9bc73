"""The metric registry: DatasetInfo.metric -> Metric.

Each metric scores one generation against a row's gold answer (`Metric.score` -> RowScore)
and aggregates a run (`Metric.summarize`). The published, defective scoring lives apart
in `llm_jepa/published/scoring.py` (`--published scorers`).
"""
from __future__ import annotations

from .base import Metric, RowScore, ScoreContext, gold_answer, startswith_match
from .classification import ExactMetric, LabelMetric
from .gsm8k import Gsm8kMetric
from .hellaswag import HellaswagMetric, hellaswag_choices
from .qa import NqOpenMetric, normalize_answer
from .regex import RegexMetric
from .spider import SpiderMetric

METRICS: dict[str, Metric] = {m.name: m for m in (
    RegexMetric(), Gsm8kMetric(), SpiderMetric(), NqOpenMetric(), HellaswagMetric(),
    LabelMetric(), ExactMetric(),
)}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None


__all__ = [
    "METRICS", "Metric", "RowScore", "ScoreContext", "get_metric", "gold_answer",
    "hellaswag_choices", "normalize_answer", "startswith_match",
]
