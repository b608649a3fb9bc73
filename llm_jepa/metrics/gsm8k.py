"""GSM8K: the final number, read strictly (after the first '#### ') and flexibly (the last number)."""
from __future__ import annotations

import math
import re

from .base import Metric, RowScore, ScoreContext, gold_answer

TOLERANCE = 1e-6
# After the '#### ' marker: one number, once commas and '$' are removed ("$1,000.50" -> 1000.50).
_MARKER = re.compile(r"####[ \t]*([^\n]*)")
_LEADING_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
# Anywhere: a signed int or decimal, commas only as thousands separators (so "1,2,3" is three
# numbers), and a '-' counts as a sign only when it does not follow a word ("3-5" is 3 and 5).
_ANY_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _to_float(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def strict_answer(text: str) -> str | None:
    """The number right after the first '####' that is followed by one, or None.

    The first, as lm-eval's strict match: a run-on generation that invents a follow-up
    question and answers it after a second '####' is judged on its own answer. Unlike
    lm-eval, '$' and thousands commas are dropped and the number is compared as a number
    ("#### $1,000.00" is 1000), because GSM8K's gold answers are numbers, not strings.
    """
    for marker in _MARKER.findall(text):
        match = _LEADING_NUMBER.match(marker.replace(",", "").replace("$", "").strip())
        if match:
            return match.group(0)
    return None


def flexible_answer(text: str) -> str | None:
    """The last number anywhere in the text, or None."""
    numbers = _ANY_NUMBER.findall(text.replace("$", ""))
    return numbers[-1] if numbers else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    x, y = (_to_float(v) if v is not None else None for v in (a, b))
    return x is not None and y is not None and abs(x - y) <= TOLERANCE


class Gsm8kMetric(Metric):
    name = "gsm8k"
    primary = "strict"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        gold_text = gold_answer(row)
        gold = strict_answer(gold_text) or flexible_answer(gold_text)  # gold always has '####'
        strict, flexible = strict_answer(generation), flexible_answer(generation)
        metrics = {
            "strict": numbers_equal(strict, gold),
            "flexible": numbers_equal(flexible, gold),
            "answer_strict": strict or "",
            "answer_flexible": flexible or "",
        }
        return self._row_score(metrics, "" if gold is not None else "no number in the gold answer")
