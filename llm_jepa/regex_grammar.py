"""A small synchronous grammar for natural language -> regex, in the style of NL-RX-Synth.

The offline demo trains a tiny model from scratch, so it needs NL-RX-like data that a
few CPU minutes can learn: a fixed vocabulary and short derivations. Every rule builds
the English description and the dk.brics regex of a subtree together, so the two
always agree. The regex conventions mirror NL-RX-Synth ("lines with X" means the
whole line is X; "X before Y" is `(X).*(Y).*`; `\\b` is decoration that the NL-RX
evaluator deletes, see `regex_dfa.strip_word_boundaries`).

Grammar (a description is `lines <frame> <E>`; `~` = complement, `&` = intersection):

    atoms     a vowel [AEIOUaeiou] | a letter [A-Za-z] | a capital letter [A-Z]
              | a lower-case letter [a-z] | a number [0-9] | a character .
              | the string 'dog' dog | ... 'truck' | ... 'ring'
    quantify  X, zero or more times (X)* | X at least once / X, one or more times (X)+
              | X, N or more times (X){N,}   (N = 2..7; X an atom, follow, and, or or)
    follow    A followed by B           A.*B.*          (atoms only, as in NL-RX)
    and       A and B / A, B, and C     (A)&(B)(&(C))   (character classes that overlap)
    or        X or Y                    (X)|(Y)         (X, Y an atom, follow or and;
              either X, Y, or Z         (X)|(Y)|(Z)      Y may be a prefix; X, Y, Z atom/follow)
    before    X before Y                (X).*(Y).*      (X anything tighter; Y anything)
    prefix    not X ~(X) | containing X .*(X).* | starting with X (X)(.*)
              | ending with X (.*)(X)
    frames    lines with / having X: X | containing: .*(X).* | starting with: (X)(.*)
              | ending with: (.*)(X) | not having: ~(X) | not containing: ~(.*(X).*)
              | with words with / words that contain only: \\bX\\b
              | with words that contain: \\b.*(X).*\\b | with words that don't have: \\b~(X)\\b

Unlike NL-RX, each description has exactly one derivation, so a model is never shown
two regexes for one sentence. Flat English has no brackets, so this comes from where
each rule may appear (tightest to loosest: atom, follow/and, or/either, quantify,
before), plus one rule for the prefixes: a prefix takes everything to its right, so a
subtree that ends in a prefix ("open") may only stand at the right edge of its parent.
The sampler drops derivations whose regex accepts nothing or everything (see
`is_trivial`): DFA-equality would credit any other such regex for them.
"""
from __future__ import annotations

import argparse
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from .corpora import DATASETS
from .jsonl import write_jsonl
from .regex_dfa import regex_equivalent

SYSTEM_PROMPT = DATASETS["synth"].system_prompt

ATOMS: dict[str, str] = {
    "a vowel": "[AEIOUaeiou]",
    "a letter": "[A-Za-z]",
    "a capital letter": "[A-Z]",
    "a lower-case letter": "[a-z]",
    "a number": "[0-9]",
    "a character": ".",
    "the string 'dog'": "dog",
    "the string 'truck'": "truck",
    "the string 'ring'": "ring",
}
# NL-RX uses 'dog' far more than the other strings; a mild skew keeps that flavour.
ATOM_WEIGHTS = (2, 2, 2, 2, 2, 2, 2, 1, 1)
REPEATS = range(2, 8)
MAX_WORDS, MIN_WORDS, MAX_REGEX_CHARS = 25, 5, 80


@dataclass(frozen=True)
class Node:
    """One derivation subtree: its description, its regex, and how it was built."""

    op: str                          # rule name, e.g. "atom", "before", "frame"
    text: str                        # the English description of this subtree
    regex: str                       # the dk.brics regex of this subtree
    kids: tuple[Node, ...] = ()
    arg: str | int | None = None     # the atom or frame phrase, or the repeat count
    depth: int = 0                   # rule applications above the atoms (frames excluded)
    closed: bool = True              # False when a prefix sits on the right edge


def _make(op: str, text: str, regex: str, kids: tuple[Node, ...], arg=None,
          closed: bool = True) -> Node:
    return Node(op, text, regex, kids, arg, 1 + max(k.depth for k in kids), closed)


def _group(x: Node) -> str:
    """A regex operand in parentheses, as NL-RX writes them."""
    return f"({x.regex})"


def _bare(x: Node) -> str:
    """An operand of concatenation: atoms stay bare (`.*dog.*`), as in NL-RX."""
    return x.regex if x.op == "atom" else _group(x)


def _right_closed(*kids: Node) -> bool:
    return kids[-1].closed


# ----------------------------------------------------------------------------
# Rules: each returns the subtree of one rule application


def atom(text: str) -> Node:
    return Node("atom", text, ATOMS[text], arg=text)


def star(x: Node) -> Node:
    return _make("star", f"{x.text}, zero or more times", f"{_group(x)}*", (x,))


def plus(x: Node, phrase: str = "at least once") -> Node:
    # Two surface forms, one meaning; NL-RX writes "at least once" without a comma.
    text = f"{x.text} at least once" if phrase == "at least once" else f"{x.text}, one or more times"
    return _make("plus", text, f"{_group(x)}+", (x,), arg=phrase)


def at_least(x: Node, n: int) -> Node:
    return _make("at_least", f"{x.text}, {n} or more times", f"{_group(x)}{{{n},}}", (x,), arg=n)


def followed_by(a: Node, b: Node) -> Node:
    return _make("followed_by", f"{a.text} followed by {b.text}", f"{_bare(a)}.*{_bare(b)}.*", (a, b))


def before(x: Node, y: Node) -> Node:
    return _make("before", f"{x.text} before {y.text}", f"{_group(x)}.*{_group(y)}.*", (x, y),
                 closed=_right_closed(x, y))


def any_of(*xs: Node) -> Node:
    """X or Y; three operands read "either X, Y, or Z"."""
    if len(xs) == 2:
        text = f"{xs[0].text} or {xs[1].text}"
    else:
        text = "either " + ", ".join(x.text for x in xs[:-1]) + f", or {xs[-1].text}"
    return _make("or", text, "|".join(_group(x) for x in xs), xs, closed=_right_closed(*xs))


def all_of(*xs: Node) -> Node:
    """X and Y; three operands read "X, Y, and Z"."""
    if len(xs) == 2:
        text = f"{xs[0].text} and {xs[1].text}"
    else:
        text = ", ".join(x.text for x in xs[:-1]) + f", and {xs[-1].text}"
    return _make("and", text, "&".join(_group(x) for x in xs), xs)


def _not_re(x: Node) -> str:
    return f"~{_group(x)}"


def _containing_re(x: Node) -> str:
    return f".*{_bare(x)}.*"


def _starting_re(x: Node) -> str:
    return f"{_group(x)}(.*)"


def _ending_re(x: Node) -> str:
    return f"(.*){_group(x)}"


# Prefix rules: phrase -> regex builder. A prefix takes everything to its right.
PREFIXES = {
    "not": _not_re,
    "containing": _containing_re,
    "starting with": _starting_re,
    "ending with": _ending_re,
}


def prefix(phrase: str, x: Node) -> Node:
    return _make("prefix", f"{phrase} {x.text}", PREFIXES[phrase](x), (x,), arg=phrase, closed=False)


def _words_re(x: Node) -> str:
    # `\b` binds like concatenation; wrap a top-level | or & so the regex reads right
    # even to a tool that honours `\b` (the NL-RX evaluator drops it).
    return f"\\b{_group(x) if x.op in ('or', 'and') else x.regex}\\b"


# Top-level frames: "lines <phrase> X" -> regex of the whole line.
FRAMES = {
    "with": lambda x: x.regex,
    "having": lambda x: x.regex,
    "containing": _containing_re,
    "starting with": _starting_re,
    "ending with": _ending_re,
    "not having": _not_re,
    "not containing": lambda x: f"~({_containing_re(x)})",
    "with words with": _words_re,
    "with words that contain only": _words_re,
    "with words that contain": lambda x: f"\\b{_containing_re(x)}\\b",
    "with words that don't have": lambda x: f"\\b{_not_re(x)}\\b",
}
FRAME_WEIGHTS = (6, 2, 3, 2, 2, 1, 1, 1, 1, 1, 1)


def line(frame: str, x: Node) -> Node:
    return Node("frame", f"lines {frame} {x.text}", FRAMES[frame](x), (x,), frame, x.depth)


# ----------------------------------------------------------------------------
# Sampling. Each category lists where its operands may come from; these limits are
# what makes every description parse one way only (see the module docstring).

SIMPLE = ("atom", "followed_by", "and")               # operands of or
QUANTIFIABLE = SIMPLE + ("or",)                       # operands of star/plus/at_least
BEFORE_LEFT = QUANTIFIABLE + ("quantify",)            # left operand of before
ANY = BEFORE_LEFT + ("before", "prefix")
ROOT = ("followed_by", "and", "or", "quantify", "before")  # prefixes would echo the frame
WEIGHTS = {"atom": 3, "followed_by": 2, "and": 1, "or": 3, "quantify": 3, "before": 3, "prefix": 2}


def _char_set(regex: str) -> frozenset[str]:
    return frozenset(c for c in string.printable if re.fullmatch(regex, c))


CHAR_ATOMS = tuple(t for t, r in ATOMS.items() if r == "." or r.startswith("["))
CHAR_SETS = {t: _char_set(ATOMS[t]) for t in CHAR_ATOMS}


def _atom(rng: random.Random) -> Node:
    return atom(rng.choices(list(ATOMS), ATOM_WEIGHTS)[0])


def _and(rng: random.Random) -> Node:
    # Distinct character classes with a common character, so the language is never empty.
    while True:
        names = rng.sample(CHAR_ATOMS, rng.choice((2, 2, 3)))
        if frozenset.intersection(*(CHAR_SETS[n] for n in names)):
            return all_of(*(atom(n) for n in names))


def _or(rng: random.Random, budget: int, open_ok: bool) -> Node:
    if rng.random() < 0.3:  # "either X, Y, or Z"; operands stay comma-free
        kids = [_sample(rng, budget - 1, ("atom", "followed_by"), False) for _ in range(3)]
    else:
        kids = [_sample(rng, budget - 1, SIMPLE, False),
                _sample(rng, budget - 1, SIMPLE + (("prefix",) if open_ok else ()), open_ok)]
    if len({k.text for k in kids}) < len(kids):  # "a vowel or a vowel" says nothing
        return _or(rng, budget, open_ok)
    return any_of(*kids)


def _quantify(rng: random.Random, budget: int) -> Node:
    x = _sample(rng, budget - 1, QUANTIFIABLE, False)
    kind = rng.random()
    if kind < 0.3:
        return star(x)
    if kind < 0.55:
        return plus(x, rng.choice(("at least once", "one or more times")))
    return at_least(x, rng.choice(REPEATS))


def _sample(rng: random.Random, budget: int, allowed: tuple[str, ...], open_ok: bool) -> Node:
    """A subtree of at most `budget` rule applications, from the `allowed` categories;
    `open_ok`: this position is a right edge, where a prefix may stand."""
    cats = [c for c in allowed if budget > 0 or c == "atom"]
    if not open_ok:
        cats = [c for c in cats if c != "prefix"]
    cat = rng.choices(cats, [WEIGHTS[c] for c in cats])[0]
    if cat == "atom":
        return _atom(rng)
    if cat == "followed_by":
        return followed_by(_atom(rng), _atom(rng))
    if cat == "and":
        return _and(rng)
    if cat == "or":
        return _or(rng, budget, open_ok)
    if cat == "quantify":
        return _quantify(rng, budget)
    if cat == "before":
        return before(_sample(rng, budget - 1, BEFORE_LEFT, False),
                      _sample(rng, budget - 1, ANY, open_ok))
    phrase = rng.choice(list(PREFIXES))
    return prefix(phrase, _sample(rng, budget - 1, ANY, True))


def sample_line(rng: random.Random, max_depth: int = 2) -> Node:
    """One whole derivation: a frame over an expression of depth 1..max_depth."""
    frame = rng.choices(list(FRAMES), FRAME_WEIGHTS)[0]
    return line(frame, _sample(rng, max_depth, ROOT, True))


def _fits(x: Node) -> bool:
    """NL-RX-like lengths: 5-25 words, regexes under 80 characters."""
    return MIN_WORDS <= len(x.text.split()) <= MAX_WORDS and len(x.regex) < MAX_REGEX_CHARS


NEGATING = ("not", "not having", "not containing", "with words that don't have")


def nullable(x: Node) -> bool:
    """Whether the regex of x accepts the empty string (exact, from the derivation)."""
    kids = [nullable(k) for k in x.kids]
    if x.op in ("atom", "star"):
        return x.op == "star"
    if x.op in ("plus", "at_least", "followed_by", "before", "and"):
        return all(kids)
    if x.op == "or":
        return any(kids)
    return kids[0] != (x.arg in NEGATING)  # prefixes and frames keep or flip it


def is_trivial(x: Node) -> bool:
    """The regex denotes no string or every string ("lines not containing a vowel, zero
    or more times"). Such a gold regex is DFA-equal to every other trivial one, so a
    model would score for free; the sampler drops them. The exact check runs only when
    cheap necessary conditions hold: here only `~` can empty a language (`and` meets
    overlapping classes only), and the universal language contains ""."""
    if "~" in x.regex and regex_equivalent(x.regex, "#") is not False:
        return True
    return nullable(x) and regex_equivalent(x.regex, ".*") is not False


def generate_lines(n: int, seed: int, max_depth: int = 2) -> list[Node]:
    """n derivations with distinct descriptions, deterministic in `seed`."""
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Node] = []
    for _ in range(100 * n + 1000):  # the depth-1 language is finite; don't spin forever
        if len(out) == n:
            return out
        x = sample_line(rng, max_depth)
        if x.text not in seen and _fits(x) and not is_trivial(x):
            seen.add(x.text)
            out.append(x)
    if len(out) == n:
        return out
    raise ValueError(f"found only {len(out)} distinct descriptions of depth <= {max_depth}, "
                     f"asked for {n}")


def generate(n: int, seed: int, max_depth: int = 2) -> list[tuple[str, str]]:
    """n (description, regex) pairs with distinct descriptions, deterministic in `seed`."""
    return [(x.text, x.regex) for x in generate_lines(n, seed, max_depth)]


# ----------------------------------------------------------------------------
# Files in the published NL-RX format


def to_rows(pairs: list[tuple[str, str]], system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    return [{"messages": [{"role": "system", "content": system_prompt},
                          {"role": "user", "content": text},
                          {"role": "assistant", "content": regex}]}
            for text, regex in pairs]


def write_dataset(out_dir: str | Path, n_train: int, n_test: int, seed: int = 0,
                  max_depth: int = 2) -> tuple[Path, Path]:
    """demo_train.jsonl / demo_test.jsonl under out_dir; no test description is in train."""
    pairs = generate(n_train + n_test, seed, max_depth)  # descriptions are distinct,
    out = Path(out_dir)                                    # so any split is disjoint
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out / "demo_train.jsonl", out / "demo_test.jsonl"
    write_jsonl(train_path, to_rows(pairs[:n_train]))
    write_jsonl(test_path, to_rows(pairs[n_train:]))
    return train_path, test_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a synthetic NL-RX-style dataset.")
    p.add_argument("out_dir")
    p.add_argument("--n_train", type=int, default=4000)
    p.add_argument("--n_test", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_depth", type=int, default=2)
    args = p.parse_args(argv)
    for path in write_dataset(args.out_dir, args.n_train, args.n_test, args.seed, args.max_depth):
        print(path)


if __name__ == "__main__":
    main()
