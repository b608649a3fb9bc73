"""Tests for llm_jepa.regex_grammar: the synthetic NL-RX-style grammar of the offline demo."""
from __future__ import annotations

import collections
import functools
import itertools
import random

import pytest

from llm_jepa.data import read_examples
from llm_jepa.corpora import DATASETS
from llm_jepa.regex_dfa import counterexample, parse, regex_equivalent
from llm_jepa.regex_grammar import (
    ATOMS,
    BEFORE_LEFT,
    FRAMES,
    PREFIXES,
    QUANTIFIABLE,
    ROOT,
    SIMPLE,
    ANY,
    Node,
    all_of,
    any_of,
    at_least,
    atom,
    before,
    followed_by,
    generate,
    generate_lines,
    is_trivial,
    line,
    nullable,
    plus,
    prefix,
    star,
    to_rows,
    write_dataset,
)

V, N, L = atom("a vowel"), atom("a number"), atom("a letter")
CAP, LOW, CH = atom("a capital letter"), atom("a lower-case letter"), atom("a character")
DOG, TRUCK = atom("the string 'dog'"), atom("the string 'truck'")


@pytest.fixture(scope="module")
def sample() -> list[Node]:
    return generate_lines(300, seed=7)


# ----------------------------------------------------------------------------
# Rule by rule: hand-written expected descriptions and regexes

RULES = [
    (V, "a vowel", "[AEIOUaeiou]"),
    (CH, "a character", "."),
    (DOG, "the string 'dog'", "dog"),
    (star(V), "a vowel, zero or more times", "([AEIOUaeiou])*"),
    (plus(DOG), "the string 'dog' at least once", "(dog)+"),
    (plus(DOG, "one or more times"), "the string 'dog', one or more times", "(dog)+"),
    (at_least(N, 3), "a number, 3 or more times", "([0-9]){3,}"),
    (followed_by(CH, LOW), "a character followed by a lower-case letter", "..*[a-z].*"),
    (followed_by(DOG, N), "the string 'dog' followed by a number", "dog.*[0-9].*"),
    (before(V, DOG), "a vowel before the string 'dog'", "([AEIOUaeiou]).*(dog).*"),
    (any_of(L, DOG), "a letter or the string 'dog'", "([A-Za-z])|(dog)"),
    (any_of(CAP, DOG, N), "either a capital letter, the string 'dog', or a number",
     "([A-Z])|(dog)|([0-9])"),
    (all_of(V, LOW), "a vowel and a lower-case letter", "([AEIOUaeiou])&([a-z])"),
    (all_of(L, CAP, CH), "a letter, a capital letter, and a character", "([A-Za-z])&([A-Z])&(.)"),
    (prefix("not", DOG), "not the string 'dog'", "~(dog)"),
    (prefix("containing", CAP), "containing a capital letter", ".*[A-Z].*"),
    (prefix("starting with", N), "starting with a number", "([0-9])(.*)"),
    (prefix("ending with", DOG), "ending with the string 'dog'", "(.*)(dog)"),
    # nesting: operands are parenthesised, atoms stay bare inside concatenation
    (star(any_of(DOG, LOW)), "the string 'dog' or a lower-case letter, zero or more times",
     "((dog)|([a-z]))*"),
    (at_least(followed_by(V, L), 2), "a vowel followed by a letter, 2 or more times",
     "([AEIOUaeiou].*[A-Za-z].*){2,}"),
    (before(followed_by(LOW, V), DOG), "a lower-case letter followed by a vowel before the string 'dog'",
     "([a-z].*[AEIOUaeiou].*).*(dog).*"),
    (prefix("containing", followed_by(DOG, TRUCK)),
     "containing the string 'dog' followed by the string 'truck'", ".*(dog.*truck.*).*"),
    (any_of(DOG, prefix("containing", CAP)), "the string 'dog' or containing a capital letter",
     "(dog)|(.*[A-Z].*)"),
]


@pytest.mark.parametrize("node,text,regex", RULES, ids=[r[1] for r in RULES])
def test_rule(node, text, regex):
    assert (node.text, node.regex) == (text, regex)


FRAME_CASES = [
    ("with", "([AEIOUaeiou])*"),
    ("having", "([AEIOUaeiou])*"),
    ("containing", ".*(([AEIOUaeiou])*).*"),
    ("starting with", "(([AEIOUaeiou])*)(.*)"),
    ("ending with", "(.*)(([AEIOUaeiou])*)"),
    ("not having", "~(([AEIOUaeiou])*)"),
    ("not containing", "~(.*(([AEIOUaeiou])*).*)"),
    ("with words with", "\\b([AEIOUaeiou])*\\b"),
    ("with words that contain only", "\\b([AEIOUaeiou])*\\b"),
    ("with words that contain", "\\b.*(([AEIOUaeiou])*).*\\b"),
    ("with words that don't have", "\\b~(([AEIOUaeiou])*)\\b"),
]


@pytest.mark.parametrize("frame,regex", FRAME_CASES)
def test_frame(frame, regex):
    x = line(frame, star(V))
    assert (x.text, x.regex) == (f"lines {frame} a vowel, zero or more times", regex)


def test_frames_cover_the_grammar():
    assert sorted(FRAMES) == sorted(f for f, _ in FRAME_CASES)


def test_words_frame_brackets_union_and_intersection():
    assert line("with words with", any_of(V, DOG)).regex == "\\b(([AEIOUaeiou])|(dog))\\b"
    assert line("with words with", all_of(V, LOW)).regex == "\\b(([AEIOUaeiou])&([a-z]))\\b"


# ----------------------------------------------------------------------------
# Generated regexes are valid, non-empty, and mean what the description says


def test_generated_regexes_parse_and_are_nonempty(sample):
    for x in sample:
        parse(x.regex)
        assert regex_equivalent(x.regex, x.regex) is True, x.regex
        # no empty or universal language: either is DFA-equal to any wrong but
        # equally trivial prediction
        assert regex_equivalent(x.regex, "#") is False, x.text
        assert regex_equivalent(x.regex, ".*") is False, x.text
        assert nullable(x) == _accepts(x.regex, ""), x.text


def test_trivial_languages_are_recognised():
    assert is_trivial(line("not containing", star(V)))      # ~(.*(v*).*) is empty
    assert is_trivial(line("containing", star(V)))          # .*(v*).* is everything
    assert is_trivial(line("with", star(CH)))
    assert is_trivial(line("not having", star(CH)))
    assert not is_trivial(line("not having", star(V)))
    assert not is_trivial(line("containing", V))


CLASS_MEANING = {
    "a vowel": lambda c: c in "AEIOUaeiou",
    "a letter": lambda c: c.isascii() and c.isalpha(),
    "a capital letter": lambda c: c.isascii() and c.isupper(),
    "a lower-case letter": lambda c: c.isascii() and c.islower(),
    "a number": lambda c: c.isascii() and c.isdigit(),
    "a character": lambda c: True,
}


def _splits(s: str):
    return ((s[:k], s[k:]) for k in range(len(s) + 1))


def _substrings(s: str):
    return (s[i:j] for i in range(len(s) + 1) for j in range(i, len(s) + 1))


@functools.lru_cache(maxsize=None)
def _repeats(x: Node, s: str, n: int) -> bool:
    """s is at least n pieces each meaning x (pieces of length >= 1 past the n-th)."""
    if n == 0 and s == "":
        return True
    if n == 0:
        return any(means(x, u) and _repeats(x, v, 0) for u, v in _splits(s) if u)
    return any(means(x, u) and _repeats(x, v, n - 1) for u, v in _splits(s))


@functools.lru_cache(maxsize=None)
def means(x: Node, s: str) -> bool:
    """Whether line s fits the description of x, decided from the derivation alone
    (brute force over splits), never from the regex string."""
    kids = x.kids
    if x.op == "atom":
        if x.arg in CLASS_MEANING:
            return len(s) == 1 and CLASS_MEANING[x.arg](s)
        return s == x.arg.split("'")[1]
    if x.op == "star":
        return _repeats(kids[0], s, 0)
    if x.op == "plus":
        return _repeats(kids[0], s, 1)
    if x.op == "at_least":
        return _repeats(kids[0], s, x.arg)
    if x.op in ("followed_by", "before"):  # x, then anything, then y, then anything
        return any(means(kids[0], u) and any(means(kids[1], w) for w, _ in _splits(v2))
                   for u, v in _splits(s) for _, v2 in _splits(v))
    if x.op == "or":
        return any(means(k, s) for k in kids)
    if x.op == "and":
        return all(means(k, s) for k in kids)
    inner = kids[0]
    phrase = x.arg
    if phrase in ("not", "not having", "with words that don't have"):
        return not means(inner, s)
    if phrase in ("containing", "with words that contain"):
        return any(means(inner, u) for u in _substrings(s))
    if phrase == "not containing":
        return not any(means(inner, u) for u in _substrings(s))
    if phrase == "starting with":
        return any(means(inner, u) for u, _ in _splits(s))
    if phrase == "ending with":
        return any(means(inner, v) for _, v in _splits(s))
    assert phrase in ("with", "having", "with words with", "with words that contain only"), phrase
    return means(inner, s)


# All short strings over one character of each kind (lower/upper vowel and consonant,
# digit, other), some longer random ones, and strings with the literals and the
# repetitions the rules talk about.
_ALPHABET = "aEzK7-"
_RNG = random.Random(0)
PROBES = sorted(
    {"".join(p) for n in range(3) for p in itertools.product(_ALPHABET, repeat=n)}
    | {"".join(_RNG.choices(_ALPHABET, k=_RNG.randint(3, 6))) for _ in range(60)}
    | {"dog", "truck", "ring", "dogdog", "adog", "dog7", "Kring", "truckdog", "dogtruck", "ringE",
       "zdogz", "dogs", "Edog", "7truck", "truck-", "aaaaaaa", "KKKKKKK", "7777777", "a7a7a7a7a7a7a7",
       "Ea7Ea7", "dog" * 7, "ringringring", "-------", "dogdogdogdogdogdogtruck"})


def _language_on_probes_agrees(x: Node) -> str | None:
    """None if the regex of x accepts exactly the probes that `means` accepts, else a
    probe where they differ. One DFA check: (regex & probes) == accepted probes."""
    accepted = [s for s in PROBES if means(x, s)]
    probes = "|".join(f'"{s}"' for s in PROBES)
    want = "|".join(f'"{s}"' for s in accepted) or "#"
    return counterexample(f"({x.regex})&({probes})", want)


def test_regexes_mean_what_descriptions_say(sample):
    for x in sample[:100]:
        diff = _language_on_probes_agrees(x)
        assert diff is None, f"{x.text!r} -> {x.regex!r} disagrees on {diff!r}"


def test_meaning_check_catches_a_wrong_regex():
    good = before(V, N)
    wrong = Node(good.op, good.text, before(N, V).regex, good.kids)
    assert _language_on_probes_agrees(good) is None
    assert _language_on_probes_agrees(wrong) is not None


def _accepts(regex: str, s: str) -> bool:
    return regex_equivalent(f'({regex})&"{s}"', f'"{s}"') is True


@pytest.mark.parametrize("x,yes,no", [
    (line("starting with", V), ["apple", "E", "a7"], ["dog", "", "7a"]),
    (line("ending with", DOG), ["hotdog", "dog"], ["dogs", "do"]),
    (line("containing", followed_by(N, CAP)), ["x1yZz", "1Z"], ["Z1", "11"]),
    (line("not containing", N), ["abc", ""], ["a1c"]),
    (line("with", at_least(V, 3)), ["aEi", "aaaa"], ["ae", "aeb"]),
    (line("with", any_of(DOG, star(N))), ["dog", "", "123"], ["dog1"]),
    (line("with", all_of(L, LOW)), ["q"], ["Q", "qq"]),
    (line("with words that contain", prefix("starting with", DOG)), ["a dogs", "dog"], ["do g"]),
])
def test_hand_picked_strings(x, yes, no):
    assert all(_accepts(x.regex, s) for s in yes), x.regex
    assert not any(_accepts(x.regex, s) for s in no), x.regex


# ----------------------------------------------------------------------------
# Synonyms give equivalent regexes; different meanings do not


@pytest.mark.parametrize("a,b", list(itertools.product([V, CH, DOG], [N, TRUCK])))
def test_followed_by_and_before_are_synonyms(a, b):
    fb, bf = followed_by(a, b), before(a, b)
    assert fb.text != bf.text and fb.regex != bf.regex
    assert regex_equivalent(fb.regex, bf.regex) is True
    assert regex_equivalent(bf.regex, before(b, a).regex) is False


@pytest.mark.parametrize("x", [V, DOG, followed_by(V, N), any_of(DOG, CAP)])
def test_surface_synonyms(x):
    groups = [
        [plus(x).regex, plus(x, "one or more times").regex, f"({x.regex})({x.regex})*"],
        [line(f, x).regex for f in ("with", "having", "with words with", "with words that contain only")],
        [line("containing", x).regex, line("with words that contain", x).regex],
        [line("not containing", x).regex, line("not having", prefix("containing", x)).regex],
        [line("not having", x).regex, line("with words that don't have", x).regex],
    ]
    for regexes in groups:
        for r in regexes[1:]:
            assert regex_equivalent(regexes[0], r) is True, (regexes[0], r)
    assert regex_equivalent(line("starting with", x).regex, line("ending with", x).regex) is False


# ----------------------------------------------------------------------------
# Every description has exactly one derivation


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(text.replace(",", " ,").split())


ATOM_TOKENS = {_tokens(t): t for t in ATOMS}
QUANTIFIERS = {_tokens(", zero or more times"): star, _tokens("at least once"): plus,
               _tokens(", one or more times"): lambda x: plus(x, "one or more times"),
               **{_tokens(f", {n} or more times"): functools.partial(
                   lambda x, n: at_least(x, n), n=n) for n in range(2, 8)}}


def parse_description(text: str) -> set[Node]:
    """All derivations of a description, by exhaustive search over word spans
    following the grammar's placement rules (ignoring the depth budget)."""
    toks = _tokens(text)

    def find(word: str, i: int, j: int):
        return (k for k in range(i + 1, j - 1) if toks[k] == word)

    @functools.lru_cache(maxsize=None)
    def cat(c: str, i: int, j: int, open_ok: bool) -> frozenset[Node]:
        out: set[Node] = set()
        if c == "atom" and toks[i:j] in ATOM_TOKENS:
            out.add(atom(ATOM_TOKENS[toks[i:j]]))
        if c == "followed_by":
            for k in find("followed", i, j):
                if toks[k + 1] == "by":
                    out |= {followed_by(a, b) for a in cat("atom", i, k, False)
                            for b in cat("atom", k + 2, j, False)}
        if c == "and":
            for k in find("and", i, j):
                for b in cat("atom", k + 1, j, False):
                    if toks[k - 1] != ",":  # X and Y
                        out |= {all_of(a, b) for a in cat("atom", i, k, False)}
                    for m in find(",", i, k - 1):  # X, Y, and Z
                        out |= {all_of(a, a2, b) for a in cat("atom", i, m, False)
                                for a2 in cat("atom", m + 1, k - 1, False)}
        if c == "or":
            for k in find("or", i, j):
                right = SIMPLE + (("prefix",) if open_ok else ())
                out |= {any_of(a, b) for a in exprs(SIMPLE, i, k, False)
                        for b in exprs(right, k + 1, j, open_ok)}
                if toks[i] == "either" and toks[k - 1] == ",":
                    for m in find(",", i + 1, k - 1):
                        out |= {any_of(a, b, z) for a in exprs(("atom", "followed_by"), i + 1, m, False)
                                for b in exprs(("atom", "followed_by"), m + 1, k - 1, False)
                                for z in exprs(("atom", "followed_by"), k + 1, j, False)}
        if c == "quantify":
            for suffix, rule in QUANTIFIERS.items():
                if toks[j - len(suffix):j] == suffix:
                    out |= {rule(x) for x in exprs(QUANTIFIABLE, i, j - len(suffix), False)}
        if c == "before":
            for k in find("before", i, j):
                out |= {before(a, b) for a in exprs(BEFORE_LEFT, i, k, False)
                        for b in exprs(ANY, k + 1, j, open_ok)}
        if c == "prefix" and open_ok:
            for phrase in PREFIXES:
                n = len(_tokens(phrase))
                if toks[i:i + n] == _tokens(phrase):
                    out |= {prefix(phrase, x) for x in exprs(ANY, i + n, j, True)}
        return frozenset(out)

    def exprs(cats, i: int, j: int, open_ok: bool) -> set[Node]:
        if j <= i:
            return set()
        return set().union(*(cat(c, i, j, open_ok) for c in cats))

    out: set[Node] = set()
    for frame in FRAMES:
        head = ("lines",) + _tokens(frame)
        if toks[:len(head)] == head:
            out |= {line(frame, x) for x in exprs(ROOT, len(head), len(toks), True)}
    return out


def test_parser_finds_derivations():
    x = line("with", before(any_of(V, N), prefix("not", DOG)))
    assert parse_description(x.text) == {x}
    # A looser grammar (prefixes anywhere) would read this one two ways.
    assert parse_description("lines with a vowel or a number") == {line("with", any_of(V, N))}
    assert parse_description("lines with a vowel or") == set()


def test_descriptions_have_one_derivation(sample):
    for x in sample[:150]:
        assert parse_description(x.text) == {x}, x.text


# ----------------------------------------------------------------------------
# Determinism, files, distribution


def test_deterministic_in_seed():
    assert generate(200, seed=3) == generate(200, seed=3)
    assert generate(200, seed=3) != generate(200, seed=4)


def test_descriptions_are_distinct():
    pairs = generate(3000, seed=0)
    assert len({d for d, _ in pairs}) == 3000


def test_rows_and_files(tmp_path):
    prompt = DATASETS["synth"].system_prompt
    rows = to_rows([("lines with a vowel", "[AEIOUaeiou]")], prompt)
    assert rows == [{"messages": [{"role": "system", "content": prompt},
                                  {"role": "user", "content": "lines with a vowel"},
                                  {"role": "assistant", "content": "[AEIOUaeiou]"}]}]
    train_path, test_path = write_dataset(tmp_path / "demo", n_train=300, n_test=50, seed=1)
    assert (train_path.name, test_path.name) == ("demo_train.jsonl", "demo_test.jsonl")
    train, test = read_examples(train_path), read_examples(test_path)
    assert (len(train), len(test)) == (300, 50)
    assert {r["messages"][0]["content"] for r in train + test} == {prompt}
    train_texts = {r["messages"][1]["content"] for r in train}
    assert not train_texts & {r["messages"][1]["content"] for r in test}
    assert [(r["messages"][1]["content"], r["messages"][2]["content"]) for r in train + test] \
        == generate(350, seed=1)


def test_distribution_is_nlrx_like():
    xs = generate_lines(2000, seed=0)
    assert len({x.regex for x in xs}) >= 1000
    depths = collections.Counter(x.depth for x in xs)
    assert set(depths) == {1, 2} and min(depths.values()) > 300
    words = [len(x.text.split()) for x in xs]
    assert min(words) >= 5 and max(words) <= 25 and 9 <= sum(words) / len(words) <= 16
    assert max(len(x.regex) for x in xs) < 80
    assert len({t for x in xs for t in _tokens(x.text)}) <= 50  # a fixed, small vocabulary
    rules = collections.Counter(k.op for x in xs for k in _walk(x))
    assert all(rules[op] > 50 for op in ("star", "plus", "at_least", "followed_by", "before",
                                         "or", "and", "prefix"))
    assert len({k.arg for x in xs for k in _walk(x) if k.op == "frame"}) == len(FRAMES)


def _walk(x: Node):
    yield x
    for k in x.kids:
        yield from _walk(k)


def test_max_depth():
    assert {x.depth for x in generate_lines(300, seed=0, max_depth=1)} == {1}
    assert 3 in {x.depth for x in generate_lines(300, seed=0, max_depth=3)}
    with pytest.raises(ValueError):
        generate(5, seed=0, max_depth=0)
