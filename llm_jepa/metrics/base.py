"""What every metric shares: the per-row score, the scoring context and the summary."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ScoreContext:
    """What scoring needs beyond the row itself."""
    spider_path: str | None = None   # Spider's database folder: <spider_path>/<db_id>/<db_id>.sqlite
    sql_timeout: float = 10.0        # seconds per SQL query
    regex_timeout: float | None = None   # seconds per regex pair (None: the metric's default)
    regex_max_states: int | None = None  # state pairs per regex pair (None: the metric's default)


@dataclass
class RowScore:
    correct: bool | None             # the primary metric; None = skipped (not counted in accuracy)
    metrics: dict = field(default_factory=dict)  # every metric value of this row (JSON-serialisable)
    note: str = ""                   # why a row was skipped, or what went wrong


def gold_answer(row: dict) -> str:
    """The gold answer: the assistant turn of {"messages": [system, user, assistant]}."""
    return row["messages"][2]["content"]


def startswith_match(generation: str, row: dict) -> bool:
    """--startswith (for --plain base models): the generation begins with the gold answer."""
    return generation.startswith(gold_answer(row))


def user_content(row: dict) -> str:
    return row["messages"][1]["content"]


def mean_or_zero(values: list) -> float:
    return sum(values) / len(values) if values else 0.0   # empty -> 0.0, never a ZeroDivisionError


def _averageable(value: object) -> bool:
    # bools and floats are rates and scores; ints (counts, indices) and strings are not averaged
    return isinstance(value, (bool, float))


class Metric:
    """One way of scoring a generation against a row's gold answer.

    Subclasses set `name` and `primary` and implement `score`; `summarize` is shared.
    """
    name: str = ""
    primary: str = ""

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        raise NotImplementedError

    def _row_score(self, metrics: dict, note: str = "") -> RowScore:
        """A RowScore whose `correct` mirrors metrics[primary] (None when skipped)."""
        return RowScore(correct=metrics[self.primary], metrics=metrics, note=note)

    def summarize(self, rows: list[dict], scores: list[RowScore]) -> dict:
        """Accuracy over the scored rows, and the mean of every bool/float metric.

        Each metric is averaged over the rows where it has a value (None = not measured),
        so a textual metric such as Spider's exact match still counts the rows whose
        execution was skipped; `metric_n` gives each denominator.
        """
        if len(rows) != len(scores):
            raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
        scored = [s.correct for s in scores if s.correct is not None]
        keys = list(dict.fromkeys(k for s in scores for k in s.metrics))  # first-seen order
        values = {k: [s.metrics[k] for s in scores if _averageable(s.metrics.get(k))] for k in keys}
        values = {k: v for k, v in values.items() if v}
        summary = {
            "metric": self.name,
            "primary": self.primary,
            "accuracy": mean_or_zero(scored),
            "n": len(scored),
            "n_total": len(scores),
            "n_skipped": len(scores) - len(scored),
            "metrics": {k: mean_or_zero(v) for k, v in values.items()},
            "metric_n": {k: len(v) for k, v in values.items()},
        }
        skipped = Counter(s.note for s in scores if s.correct is None)
        if skipped:
            summary["skipped"] = dict(skipped.most_common())
        return summary
