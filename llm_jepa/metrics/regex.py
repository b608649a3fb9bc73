"""NL-RX (synth, turk): a regex is right when it accepts the gold language (DFA equivalence)."""
from __future__ import annotations

from ..regex_dfa import regex_equivalent
from .base import Metric, RowScore, ScoreContext, gold_answer


class RegexMetric(Metric):
    name = "regex"
    primary = "dfa"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        pred, gold = generation.strip(), gold_answer(row).strip()
        exact = pred == gold
        # None means unparsable or too large to decide: not proven equal, so wrong,
        # unless the strings are identical (then equal whatever the automaton says).
        equivalent = regex_equivalent(pred, gold) if not exact else True
        note = "dfa undecided (syntax error or state limit)" if equivalent is None else ""
        return self._row_score({"exact": exact, "dfa": exact or equivalent is True}, note)
