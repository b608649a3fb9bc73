"""The rest of dk.brics RegExp syntax in llm_jepa.regex_dfa: a `-` at either end of a
character class, inverted ranges, numeric intervals `<n-m>`, named automata `<name>`
(an error), and `\\b` marks stripped only where they are tokens.

Each construct is checked against a regex written out by hand in the syntax the module
already supported, and against explicit accepted / rejected strings (`matches`)."""
from __future__ import annotations

import itertools

import pytest

from llm_jepa.regex_dfa import (
    Chars,
    DEFAULT_MAX_STATES,
    DEFAULT_TIMEOUT_S,
    RegexSyntaxError,
    counterexample,
    decide,
    matches,
    parse,
    regex_equivalent,
    strip_word_boundaries,
)


def same_language(a: str, b: str) -> None:
    """a and b accept the same strings (checked both ways, with the witness if not)."""
    assert counterexample(a, b) is None, (a, b, counterexample(a, b))
    assert regex_equivalent(b, a) is True


# --------------------------------------------------------------------------------------
# Character classes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("regex, by_hand", [
    ("[a-]", "(a|\\-)"),            # a `-` before `]` is a literal, not a range to `]`
    ("[-a]", "(a|\\-)"),            # so is a `-` that starts the class
    ("[-]", "\\-"),
    ("[--]", "\\-"),                # `-` then a literal `-`
    ("[a-c-]", "a|b|c|\\-"),
    ("[^a-]", ".&~(a|\\-)"),
    ("[a\\-z]", "a|\\-|z"),         # an escaped `-` is never a range
    ("[!--]", "[!-\\-]"),           # `-` as the end of a range ('!'..'-')
    ("[z-a]", "#"),                 # an inverted range holds no character (not an error)
    ("[z-ab]", "b"),
    ("[^z-a]", "."),
])
def test_class_edges_are_the_hand_written_language(regex, by_hand):
    same_language(regex, by_hand)


def test_trailing_dash_class_accepts_exactly_its_characters():
    assert parse("[a-]") == Chars(((ord("-"), ord("-")), (ord("a"), ord("a"))))
    assert matches("[a-]", "a") and matches("[a-]", "-")
    assert not any(matches("[a-]", s) for s in ["b", "]", "", "a-", "`"])
    assert matches("[a-]+", "a--a") and not matches("[a-]+", "a-b")


# --------------------------------------------------------------------------------------
# Numeric intervals <n-m>
# --------------------------------------------------------------------------------------
# dk.brics: ends written with the same number of digits fix the width (zero-padded);
# otherwise any number of leading zeros is accepted; reversed ends are swapped.
INTERVALS = [
    ("<1-12>", "0*([1-9]|1[0-2])"),
    ("<12-1>", "0*([1-9]|1[0-2])"),
    ("<01-12>", "0[1-9]|1[0-2]"),
    ("<12-01>", "0[1-9]|1[0-2]"),
    ("<0-12>", "0*([0-9]|1[0-2])"),
    ("<5-5>", "5"),
    ("<00-00>", "00"),
    ("<0-00>", "0+"),                # widths differ: "0", "00", "000", ...
    ("<007-7>", "0*7"),
    ("<95-105>", "0*(9[5-9]|10[0-5])"),
    ("<095-105>", "09[5-9]|10[0-5]"),
    ("<10-99>", "[1-9][0-9]"),
    ("<100-999>", "[1-9][0-9][0-9]"),
    ("<0-999>", "0*[0-9]{1,3}"),
    ("<000-999>", "[0-9]{3}"),
    ("<38-1234>", "0*(3[89]|[4-9][0-9]|[1-9][0-9][0-9]|1[01][0-9][0-9]|12[0-2][0-9]|123[0-4])"),
    ("<1234-1290>", "123[4-9]|12[4-8][0-9]|1290"),
    ("<0-99999999>", "0*[0-9]{1,8}"),
    ("<00000000-99999999>", "[0-9]{8}"),
    ("<0-2147483647>", "0*([0-9]{1,9}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
                       "|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]"
                       "|214748364[0-7])"),
    # inside larger regexes: an interval is one operand
    ("a<1-3>b", "a[1-3]b"),          # one digit each end: width 1
    ("a<1-03>b", "a0*[1-3]b"),
    ("<1-03>*", "()|[0-3]*[1-3]"),
    ("~<0-9>&[0-9]+", "[0-9][0-9]+"),
]


@pytest.mark.parametrize("regex, by_hand", INTERVALS)
def test_interval_is_the_hand_written_language(regex, by_hand):
    same_language(regex, by_hand)


def in_interval(s: str, lo: int, hi: int, width: int | None) -> bool:
    """The definition: decimal digits whose value is in [lo, hi], exactly `width` of them
    if the interval fixes one."""
    return (s.isascii() and s.isdigit() and lo <= int(s) <= hi
            and (width is None or len(s) == width))


@pytest.mark.parametrize("regex, lo, hi, width", [
    ("<1-12>", 1, 12, None), ("<01-12>", 1, 12, 2), ("<0-7>", 0, 7, 1), ("<0-07>", 0, 7, None),
    ("<9-100>", 9, 100, None), ("<099-100>", 99, 100, 3), ("<205-1999>", 205, 1999, None),
    ("<0305-0410>", 305, 410, 4), ("<5-0>", 0, 5, 1), ("<89-981>", 89, 981, None),
    ("<0089-0908>", 89, 908, 4), ("<1999-999>", 999, 1999, None),
])
def test_interval_accepts_exactly_its_numbers(regex, lo, hi, width):
    # Up to length 4 over the digits and one other character, the interval is the set of
    # strings that the definition accepts, written out as one alternative each.
    words = ["".join(w) for n in range(5) for w in itertools.product("0123456789x", repeat=n)]
    accepted = "|".join(f'"{w}"' for w in words if in_interval(w, lo, hi, width))
    assert counterexample(f"({regex})&[0-9x]{{0,4}}", accepted) is None


@pytest.mark.parametrize("regex, accepted, rejected", [
    ("<1-12>", ["1", "01", "0012", "12", "000000009"], ["", "0", "13", "012a", "1 ", "+1"]),
    ("<01-12>", ["01", "09", "10", "12"], ["1", "001", "00", "13", "012"]),
    ("<0-12>", ["0", "00", "000", "12", "012"], ["", "13"]),
])
def test_interval_examples(regex, accepted, rejected):
    assert all(matches(regex, s) for s in accepted)
    assert not any(matches(regex, s) for s in rejected)


@pytest.mark.parametrize("regex", ["<0-99999999>", "<00000000-99999999>", "<0-2147483647>",
                                   "<1000000-2147483647>", "<" + "0" * 5000 + "1-" + "0" * 5000 + "2>"])
def test_large_intervals_stay_within_the_default_bounds(regex):
    # The same language spelled so that the normaliser cannot collapse it: the search runs.
    verdict = decide(regex, f"({regex})|(({regex})&(zq))",
                     timeout_s=DEFAULT_TIMEOUT_S, max_states=DEFAULT_MAX_STATES)
    assert verdict.equivalent is True, verdict


def test_wide_zero_padded_interval():
    # A width of thousands of digits is a flat run of zeros, not thousands of nested alternatives.
    regex = "<" + "0" * 5000 + "1-" + "0" * 5000 + "2>"
    assert matches(regex, "0" * 5000 + "2") and not matches(regex, "2")
    assert not matches(regex, "0" * 5001 + "1")


@pytest.mark.parametrize("bad, why", [
    ("<dog>", "named automaton"),     # defined by the caller of dk.brics; NL-RX defines none
    ("<>", "named automaton"),
    ("<1-2-3>", "numeric interval"),
    ("<-5>", "numeric interval"),
    ("<5->", "numeric interval"),
    ("<a-b>", "numeric interval"),
    ("<+1-5>", "numeric interval"),
    ("<2147483648-1>", "numeric interval"),  # beyond a Java int, as dk.brics refuses it
    ("<1-5", "expected '>'"),
])
def test_bad_angle_brackets_are_syntax_errors(bad, why):
    with pytest.raises(RegexSyntaxError, match=why):
        parse(bad)
    verdict = decide(bad, "<1-5>", labels=("the prediction", "the gold regex"))
    assert verdict.equivalent is None and verdict.kind == "syntax error"
    assert verdict.reason.startswith("syntax error in the prediction")


def test_interval_end_with_leading_zeros_is_still_an_int():
    same_language("<0000000000002147483647-0>", "<0-2147483647>")  # widths differ: not fixed


# --------------------------------------------------------------------------------------
# \b word-boundary marks
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("regex, stripped", [
    ("\\b(dog)\\b", "(dog)"),
    ("\\b\\b.*\\b", ".*"),
    ("a\\b*", "a*"),                 # a mark is removed as text, as the published evaluator did
    ("[\\b]", "[\\b]"),              # inside a class: the escape for the letter b
    ("[a-c\\b]\\b", "[a-c\\b]"),
    ("[]\\b]\\b", "[]\\b]"),         # `]` first in a class is a member, not its end
    ("[^]\\b]x\\b", "[^]\\b]x"),
    ("\\\\b", "\\\\b"),              # an escaped backslash, then the letter b
    ("\\\\\\b", "\\\\"),             # an escaped backslash, then a mark
    ('"\\b"\\b', '"\\b"'),           # a quoted string is verbatim
    ("<\\b>", "<\\b>"),
    ("\\[\\b", "\\["),
    ("a\\", "a\\"),
])
def test_strip_word_boundaries_only_drops_tokens(regex, stripped):
    assert strip_word_boundaries(regex) == stripped


def test_backslash_b_outside_marks_means_what_dk_brics_says():
    same_language("[\\b]", "b")
    same_language("[a\\b]", "[ab]")
    same_language("\\b([\\b])+\\b", "b+")
    assert matches("\\\\b", "\\b") and not matches("\\\\b", "b")
    assert matches('"\\b"', "\\b")
    assert regex_equivalent("\\\\b", "b") is False


# --------------------------------------------------------------------------------------
# matches
# --------------------------------------------------------------------------------------
def test_matches_is_whole_string_membership():
    assert matches("a*", "") and matches("a*", "aaa") and not matches("a*", "aab")
    assert matches("~(a)", "") and matches("~(a)", "é") and not matches("~(a)", "a")
    assert matches(".*(dog).*", "hotdogs") and not matches("dog", "hotdog")
    assert matches("[a-z]&[^aeiou]", "x") and not matches("[a-z]&[^aeiou]", "e")
    assert matches("\\b(dog)\\b", "dog")


def test_matches_reports_errors_and_bounds():
    with pytest.raises(RegexSyntaxError):
        matches("(a", "a")
    with pytest.raises(RuntimeError, match="state limit"):
        matches("a{100000}", "a", timeout_states=100)
    with pytest.raises(ValueError):
        matches("a", "a", timeout_s=0)
