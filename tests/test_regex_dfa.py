"""Tests for llm_jepa.regex_dfa: dk.brics regex equivalence for NL-RX eval."""

import itertools
import json
import random
from pathlib import Path

import pytest

from llm_jepa.regex_dfa import (
    Chars,
    Complement,
    Concat,
    Epsilon,
    Inter,
    Repeat,
    RegexSyntaxError,
    Union,
    counterexample,
    parse,
    regex_equivalent,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATASETS = SHARED / "datasets"

# ----------------------------------------------------------------------------
# Hand-made pairs

EQUIVALENT = [
    # complement
    ("~(~(a))", "a"),
    ("~~a", "a"),
    ("~(.*)", "#"),
    ("~#", ".*"),
    ("~a*", "(~a)*"),  # `~` binds tighter than `*`
    ("~a*", "~a"),  # (~a)* adds nothing: ~a already has "" and all longer strings
    ("~(a)&~(b)", "~(a|b)"),  # De Morgan
    ("~(a&b)", ".*"),  # a&b is empty
    ("~([a-z])", "()|[^a-z]|..+"),
    # intersection
    ("a&b", "~(.*)"),
    (".*&(x)", "x"),
    ("[a-z]&[A-Z]", "#"),
    ("[a-z]&[AEIOUaeiou]", "[aeiou]"),
    ("(a|b)&(b|c)", "b"),
    ("(a*)&(aa)*", "(aa)*"),
    ("(.*a.*)&(.*b.*)", ".*a.*b.*|.*b.*a.*"),
    ("a|b&c", "a"),  # & binds tighter than |: a|(b&c) = a|#
    # union / concatenation / star
    ("(a|b)*", "(a*b*)*"),
    ("a|b", "b|a"),
    ("[ab]", "a|b"),
    ("(ab)*a", "a(ba)*"),
    (".*.*", ".*"),
    (".*(.*)(([AEIOUaeiou])*).*", ".*"),
    ("(a*)*", "a*"),
    ("()a", "a"),
    ('"dog"', "dog"),
    ("@", ".*"),
    # postfix operators and bounds
    ("a+", "aa*"),
    ("a?", "()|a"),
    ("a{3}", "aaa"),
    ("a{2,}", "aaa*"),
    ("a{1,3}", "a|aa|aaa"),
    ("a{0,}", "a*"),
    ("a{0,1}", "a?"),
    ("(dog){2}", "dogdog"),
    ("a{3,1}", "#"),
    # character classes, escapes, `.`
    ("[A-Za-z]", "[a-z]|[A-Z]"),
    ("[0-9]", "0|1|2|3|4|5|6|7|8|9"),
    ("[^a]", ".&~a"),
    ("\\.", "[.]"),
    ("\\*", '"*"'),
    # \b is stripped
    ("\\b(dog)\\b", "dog"),
    ("\\b([AEIOUaeiou])&([a-z])\\b", "[aeiou]"),
    ("\\b(([0-9])&(.))|(dog)\\b", "[0-9]|dog"),
    # dk.brics reads an operator where an operand is expected as a literal
    ("*a", '"*a"'),
    ("", "()"),
]

NOT_EQUIVALENT = [
    # complement
    ("~((a)*)", ".+"),
    ("~(a)", "#"),
    ("~a*", "~(a*)"),
    ("~(dog)", ".*"),
    ("~([a-z])", "[^a-z]"),  # complement is w.r.t. all strings, not single chars
    ("~(.)", "#"),
    # intersection
    ("a|b&c", "(a|b)&c"),
    ("(a|b)&c", "a"),
    ("[a-z]&[AEIOUaeiou]", "[AEIOUaeiou]"),
    ("(.*a.*)&(.*b.*)", ".*a.*b.*"),
    ("a*&(aa)*", "a*"),
    # union / concatenation / star
    ("(a|b)*", "a*b*"),
    ("a|b", "ab"),
    ("(ab)*", "a*b*"),
    ("a*", "a+"),
    (".*", ".+"),
    ("dog", "god"),
    (".", "()"),
    # postfix operators and bounds
    ("a{2,}", "a*"),
    ("a{1,3}", "a{1,4}"),
    ("a{3}", "a{2}"),
    ("(dog){2,}", "(dog)+"),
    ("a?", "a"),
    # character classes and `.`
    ("[A-Za-z]", "[a-z]"),
    ("[0-9]", "[0-8]"),
    ("[^a]", "."),
    (".", "[a-z]"),
    ("\\.", "."),
    ("[AEIOUaeiou]", "[aeiou]"),
    # \b stripping does not erase the word
    ("\\b(dog)\\b", "(dog)*"),
]


@pytest.mark.parametrize("a,b", EQUIVALENT)
def test_equivalent_pairs(a, b):
    assert regex_equivalent(a, b) is True
    assert regex_equivalent(b, a) is True


@pytest.mark.parametrize("a,b", NOT_EQUIVALENT)
def test_not_equivalent_pairs(a, b):
    assert regex_equivalent(a, b) is False
    assert regex_equivalent(b, a) is False


def test_pair_counts():
    assert len(EQUIVALENT) >= 25 and len(NOT_EQUIVALENT) >= 25


def test_counterexample_is_shortest_witness():
    assert counterexample("~((a)*)", ".+") == "a"
    assert counterexample("a{1,3}", "a{1,4}") == "aaaa"
    assert counterexample("~a*", "~(a*)") == ""
    assert counterexample("(a|b)*", "(a*b*)*") is None


# ----------------------------------------------------------------------------
# Parser


def test_parse_precedence():
    a, b, c = (Chars(((ord(x), ord(x)),)) for x in "abc")
    assert parse("a|b&c") == Union((a, Inter((b, c))))
    assert parse("ab|c") == Union((Concat((a, b)), c))
    assert parse("a&bc") == Inter((a, Concat((b, c))))
    assert parse("ab*") == Concat((a, Repeat(b, 0, None)))
    assert parse("~ab") == Concat((Complement(a), b))
    assert parse("~a*") == Repeat(Complement(a), 0, None)
    assert parse("a{2,5}") == Repeat(a, 2, 5)
    assert parse("a{2,}") == Repeat(a, 2, None)
    assert parse("()") == Epsilon()


def test_parse_character_classes():
    assert parse("[a-z]") == Chars(((ord("a"), ord("z")),))
    assert parse("[A-Za-z]") == Chars(((ord("A"), ord("Z")), (ord("a"), ord("z"))))
    assert parse("[ba]") == Chars(((ord("a"), ord("b")),))
    assert parse("[^a]") == Chars(((0, ord("a") - 1), (ord("a") + 1, 0x10FFFF)))
    assert parse("\\[") == Chars(((ord("["), ord("[")),))
    assert parse("[a-]") == parse("[-a]") == Chars(((ord("-"), ord("-")), (ord("a"), ord("a"))))
    assert parse("[z-a]") == Chars(())  # dk.brics: an inverted range holds no character
    assert parse("[\\b]") == Chars(((ord("b"), ord("b")),))  # not a word-boundary mark


@pytest.mark.parametrize(
    "bad",
    ["(a", "a)", "(a|b", "[a-z", "[a-", "a{2", "a{,3}", "a{x}", "a|", '"abc', "<dog>", "<1-5", "((((", "\\"],
)
def test_bad_input_raises_and_returns_none(bad):
    with pytest.raises(RegexSyntaxError):
        parse(bad)
    assert regex_equivalent(bad, "a") is None
    assert regex_equivalent("a", bad) is None


def test_syntax_error_is_value_error():
    assert issubclass(RegexSyntaxError, ValueError)


def test_model_garbage_never_raises():
    rng = random.Random(0)
    alphabet = "ab.()[]{}|&~*+?-^\\,0123 \"#@<>"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert regex_equivalent(text, "a*") in (True, False, None)


def test_deep_nesting_returns_none_or_answer():
    deep = "(" * 5000 + "a" + ")" * 5000
    assert regex_equivalent(deep, "a") in (True, None)


def test_state_limit_returns_none():
    # Needs far more than 5 state pairs; a huge repeat bound is refused early.
    assert regex_equivalent("(a|b)*a(a|b){8}", "(a|b)*b(a|b){8}", timeout_states=5) is None
    assert regex_equivalent("a{100000}", "a{100000}", timeout_states=100) is None


# ----------------------------------------------------------------------------
# Randomised cross-check against a brute-force oracle
#
# The oracle computes each language restricted to strings of length <= N over
# {a, b, z}; z stands for every character the regexes don't mention. It shares
# only the parser with the module, so it checks the alphabet partition, the
# smart constructors, derivatives and the equivalence search.

N = 4
LETTERS = "abz"
UNIVERSE = frozenset("".join(w) for n in range(N + 1) for w in itertools.product(LETTERS, repeat=n))


def _concat(xs, ys):
    return frozenset(x + y for x in xs for y in ys if len(x) + len(y) <= N)


def _power(x, n):
    # Restricted to length <= N, x^n stops changing once n > N: either "" is
    # not in x (nothing short enough is left) or it is (x^n only grows, and any
    # word of length <= N needs at most N non-empty factors).
    out = frozenset({""})
    for _ in range(min(n, N + 1)):
        out = _concat(out, x)
    return out


def _star(x):
    out = frozenset({""})
    while True:
        grown = out | _concat(out, x)
        if grown == out:
            return out
        out = grown


def _bounded_language(node):
    if isinstance(node, Chars):
        return frozenset(c for c in LETTERS if any(lo <= ord(c) <= hi for lo, hi in node.ranges))
    if isinstance(node, Epsilon):
        return frozenset({""})
    if isinstance(node, Concat):
        out = frozenset({""})
        for part in node.parts:
            out = _concat(out, _bounded_language(part))
        return out
    if isinstance(node, Union):
        return frozenset().union(*map(_bounded_language, node.parts))
    if isinstance(node, Inter):
        return frozenset.intersection(*map(_bounded_language, node.parts))
    if isinstance(node, Complement):
        return UNIVERSE - _bounded_language(node.child)
    if isinstance(node, Repeat):
        x = _bounded_language(node.child)
        if node.hi is None:
            return _concat(_power(x, node.lo), _star(x))
        return frozenset().union(*(_power(x, i) for i in range(node.lo, node.hi + 1)))
    return frozenset()  # Empty


def _random_regex(rng, depth):
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["a", "b", ".", "[ab]", "[^a]", "()", "#"])
    op = rng.choice(["cat", "or", "and", "not", "star", "plus", "opt", "rep"])
    sub = _random_regex(rng, depth - 1)
    if op == "cat":
        return f"({sub})({_random_regex(rng, depth - 1)})"
    if op in ("or", "and"):
        sign = "|" if op == "or" else "&"
        return f"({sub}){sign}({_random_regex(rng, depth - 1)})"
    if op == "not":
        return f"~({sub})"
    if op == "rep":
        lo = rng.randint(0, 2)
        return f"({sub}){{{lo},{rng.choice(['', str(lo + rng.randint(0, 2))])}}}"
    return f"({sub})" + {"star": "*", "plus": "+", "opt": "?"}[op]


def test_random_pairs_match_bruteforce_oracle():
    rng = random.Random(1234)
    seen_equal = seen_different = 0
    for _ in range(400):
        a, b = _random_regex(rng, 3), _random_regex(rng, 3)
        if rng.random() < 0.3:
            b = f"({a})|(({a})&({b}))"  # equivalent by absorption, not by syntax
        lang_a, lang_b = _bounded_language(parse(a)), _bounded_language(parse(b))
        witness = counterexample(a, b)
        if witness is None:
            seen_equal += 1
            assert lang_a == lang_b, (a, b)
        else:
            seen_different += 1
            word = "".join(c if c in "ab" else "z" for c in witness)
            if len(word) <= N:
                assert (word in lang_a) != (word in lang_b), (a, b, witness)
            assert lang_a != lang_b or len(word) > N, (a, b, witness)
    assert seen_equal > 50 and seen_different > 50


def test_oracle_sanity():
    assert _bounded_language(parse("(ab)*")) == frozenset({"", "ab", "abab"})
    assert _bounded_language(parse("a{2,}")) == frozenset({"aa", "aaa", "aaaa"})
    assert _bounded_language(parse("~(.*)")) == frozenset()


# ----------------------------------------------------------------------------
# Gold regexes from the NL-RX test sets (skipped when ../shared is absent)


def _gold(name):
    path = DATASETS / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with path.open() as f:
        return [json.loads(line)["messages"][2]["content"] for line in f]


@pytest.mark.parametrize("name", ["synth_test", "turk_test"])
def test_gold_parses_and_equals_itself(name):
    golds = _gold(name)
    assert golds
    for regex in golds:
        parse(regex)
        assert regex_equivalent(regex, regex) is True, regex
        # Same language through a term the normaliser cannot collapse, so the
        # automaton search really runs.
        assert regex_equivalent(regex, f"({regex})&(({regex})|(zq))") is True, regex


@pytest.mark.parametrize("name", ["synth_test", "turk_test"])
def test_gold_neighbours_decided(name):
    # Each target vs the next one: must be decided (no parse failure, no state
    # limit hit); timing is measured outside the test suite.
    golds = _gold(name)
    for a, b in zip(golds, golds[1:] + golds[:1]):
        assert regex_equivalent(a, b) in (True, False), (a, b)
