"""NQ-Open: DPR's answer matching (`has_answer`) and SQuAD exact match.

`has_answer` is the rule open-domain QA papers report for NQ-Open (Karpukhin et al., 2020):
a gold answer counts when its tokens occur as a contiguous run of the generation's tokens,
so "184" is not found in "1848" nor "Liam" in "William". Tokens are DPR's: after Unicode
NFD normalisation and lower-casing, a maximal run of letters, digits and combining marks
is one token, and every other character that is neither a separator nor a control
character is a token of its own ("a-laying" is "a", "-", "laying"). Articles and
punctuation are kept, as DPR keeps them: "the apple" is not found in "an apple".
"""
from __future__ import annotations

import re
import string
import unicodedata

from .base import Metric, RowScore, ScoreContext, gold_answer

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"   # letter, number, combining mark


def _skipped(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "ZC"    # separators (spaces) and control characters


def answer_tokens(text: str) -> list[str]:
    """DPR's tokens of `text`: NFD, lower case, word runs and single other characters."""
    tokens, word = [], []
    for ch in unicodedata.normalize("NFD", text):
        if _word_char(ch):
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if not _skipped(ch):
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return [t.lower() for t in tokens]


def contains_run(tokens: list[str], run: list[str]) -> bool:
    """`run` occurs as contiguous tokens of `tokens` (an empty run never does)."""
    n = len(run)
    return n > 0 and any(tokens[i:i + n] == run for i in range(len(tokens) - n + 1))


def split_answers(gold: str) -> list[str]:
    """The gold answers, stored joined by '; '."""
    return gold.split("; ")


class NqOpenMetric(Metric):
    name = "nq_open"
    primary = "has_answer"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        answers = split_answers(gold_answer(row))
        runs = [t for t in map(answer_tokens, answers) if t]
        squad = [a for a in map(normalize_answer, answers) if a]
        tokens = answer_tokens(generation)
        metrics = {"has_answer": any(contains_run(tokens, run) for run in runs),
                   "exact": normalize_answer(generation) in squad}
        return self._row_score(metrics, "" if runs else "empty gold answer")
