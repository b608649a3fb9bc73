"""NL-RX (synth, turk): a regex is right when it accepts the gold language (DFA equivalence).

Each pair is decided within bounds (`regex_dfa.decide`: wall time, merged state pairs, and
the memory of the derivative tables), so a hostile prediction costs at most a few seconds
and a bounded amount of memory. A pair that is not decided, because a regex does not parse
or a bound was hit, is scored wrong; its row's note says why ("undecided: time limit (5 s)")
and the summary counts such rows (`undecided`, by reason in `undecided_reasons`).
"""
from __future__ import annotations

import logging
import math
from collections import Counter

from ..errors import ConfigError
from ..regex_dfa import DEFAULT_MAX_STATES, DEFAULT_TIMEOUT_S, Verdict, decide
from .base import Metric, RowScore, ScoreContext, gold_answer

logger = logging.getLogger(__name__)

UNDECIDED = "undecided: "  # the note of a row whose pair was not decided


class RegexMetric(Metric):
    name = "regex"
    primary = "dfa"

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_states: int = DEFAULT_MAX_STATES):
        self.timeout_s, self.max_states = timeout_s, max_states

    def bounds(self, ctx: ScoreContext) -> tuple[float, int]:
        """Seconds and state pairs per pair: the evaluation's `regex_timeout` and
        `regex_max_states` (--regex_timeout, --regex_max_states) when its context has
        them, else this metric's."""
        timeout = getattr(ctx, "regex_timeout", None)
        states = getattr(ctx, "regex_max_states", None)
        timeout = self.timeout_s if timeout is None else timeout
        states = self.max_states if states is None else states
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
                math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"--regex_timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(states, bool) or not isinstance(states, int) or states < 1:
            raise ConfigError(f"--regex_max_states must be a positive integer, got {states!r}")
        return float(timeout), states

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        timeout_s, max_states = self.bounds(ctx)
        pred, gold = generation.strip(), gold_answer(row).strip()
        if pred == gold:  # identical strings are equal whatever the automaton would say
            return self._row_score({"exact": True, "dfa": True})
        verdict = decide(pred, gold, timeout_s=timeout_s, max_states=max_states,
                         labels=("the prediction", "the gold regex"))
        # Not proven equal (unparsable, or a bound hit): wrong, and the note says why.
        note = "" if verdict.equivalent is not None else UNDECIDED + verdict.reason
        return self._row_score({"exact": False, "dfa": verdict.equivalent is True}, note)

    def summarize(self, rows: list[dict], scores: list[RowScore]) -> dict:
        """The shared summary, plus `undecided` (rows whose pair was not decided, all
        scored wrong) and `undecided_reasons` (their count per reason: "syntax error",
        "time limit", "state limit", "term limit", ...)."""
        summary = super().summarize(rows, scores)
        reasons = Counter(Verdict(None, s.note[len(UNDECIDED):]).kind
                          for s in scores if s.note.startswith(UNDECIDED))
        summary["undecided"] = sum(reasons.values())
        summary["undecided_reasons"] = dict(reasons.most_common())
        bounds = {k: n for k, n in reasons.items() if k != "syntax error"}
        if bounds:  # worth a warning: unlike a syntax error, a bigger bound may decide them
            logger.warning("regex: %d of %d pairs hit a bound of the equivalence check and count as "
                           "wrong (%s); raise --regex_timeout / --regex_max_states to decide them",
                           sum(bounds.values()), len(scores), ", ".join(f"{k}: {n}" for k, n in bounds.items()))
        return summary
