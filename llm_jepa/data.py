"""Data: reading JSONL examples, rendering the three views and tokenizing them.

An example is `{"messages": [system, user, assistant]}`. Each example
yields up to three token sequences:

* Full: the whole conversation, with LM labels;
* Text: the user turn (plus k predictor tokens), embedded at one position;
* Code: the assistant turn, embedded at one position.

Nothing is padded here: the collator pads or packs. Labels and embedding positions are
found from character offsets into the rendered string, never by decoding tokens.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .families import Family
from .tokenization import PERCEPTION, PLAIN_EOT, encode_texts, special_ids

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
# Marks the body of a view while rendering, to find where the template put it. User text
# may contain it: `marker_absent_from` then numbers it until it occurs in no message.
SENTINEL = "\ue000LLMJEPA\ue001"


def marker_absent_from(texts: list[str]) -> str:
    """SENTINEL, or the first of \\ue000LLMJEPA1\\ue001, ...2... that none of `texts` contains."""
    marker, n = SENTINEL, 0
    while any(marker in t for t in texts):  # ends: each text holds finitely many
        n += 1
        marker = f"\ue000LLMJEPA{n}\ue001"
    return marker


class DataError(ValueError):
    """A malformed input file; the message names the file and line."""


# --------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------
def read_examples(path: str | Path, needs_view_fields: bool = False, require_answer: bool = False) -> list[dict]:
    """Read a JSONL file, failing on the first malformed line with `file:line: problem`.

    require_answer (training): the assistant message must hold text, since an empty answer
    trains nothing and leaves the Code view without content to embed. Evaluation files may
    hold empty golds (the metrics count them).
    """
    rows = []
    # Undecodable bytes come through as U+DC80..U+DCFF (surrogateescape), so that each is
    # reported with its line; utf-8-sig drops a byte-order mark opening the file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, start=1):
            _check_utf8(line, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: bad JSON: {err.msg} (column {err.colno})") from None
            problem = example_problem(row, needs_view_fields, require_answer)
            if problem:
                raise DataError(f"{path}:{lineno}: {problem}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _check_utf8(line: str, path, lineno: int) -> None:
    """Name the first byte of a line that is not UTF-8 (escaped by surrogateescape)."""
    bad = _UNDECODABLE.search(line)
    if bad:
        raise DataError(f"{path}:{lineno}: not UTF-8 text: byte 0x{ord(bad.group()) - 0xDC00:02x} at column "
                        f"{bad.start() + 1}; convert the file to UTF-8")


def example_problem(row, needs_view_fields: bool = False, require_answer: bool = False) -> str | None:
    """What is wrong with one example, or None."""
    if not isinstance(row, dict) or "messages" not in row:
        return "expected an object with a 'messages' list"
    msgs = row["messages"]
    if not isinstance(msgs, list) or len(msgs) != 3:
        n = len(msgs) if isinstance(msgs, list) else "no"
        return f"expected 3 messages [system, user, assistant], got {n}"
    for i, (msg, role) in enumerate(zip(msgs, ROLES)):
        problem = _message_problem(msg, f"message {i}", role)
        if problem:
            return problem
    if require_answer and not msgs[2]["content"].strip():
        return "message 2 (assistant) has empty or whitespace-only content: there is no answer to train"
    if needs_view_fields:
        for key, role in (("text", "user"), ("code", "assistant")):
            if not isinstance(row.get(key), list) or not row[key]:
                return f"missing '{key}' field (a list with the {role} message used as a JEPA view)"
            problem = _message_problem(row[key][0], f"'{key}' message", None)
            if problem:
                return problem
        if require_answer and not row["code"][0]["content"].strip():
            return "'code' message has empty or whitespace-only content: the Code view has nothing to embed"
    return None


def _message_problem(msg, where: str, role: str | None) -> str | None:
    if not isinstance(msg, dict):
        return f"{where} is not an object"
    if not msg.get("role"):
        return f"{where} has a missing or empty role"
    if role is not None and msg["role"] != role:
        return f"{where} has role {msg['role']!r}, expected {role!r}"
    if not isinstance(msg.get("content"), str):
        return f"{where} has no string 'content'"
    try:
        msg["content"].encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate such as "\ud800", which JSON can spell
        return f"{where} content is not valid Unicode: {err.object[err.start]!r} at character {err.start + 1}"
    return None


# --------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewOptions:
    predictors: int = 0
    front_pred: bool = False
    reverse_pred: bool = False
    plain: bool = False
    train_all: bool = False
    use_view_fields: bool = False     # HellaSwag: Text/Code from the 'text'/'code' fields
    same_predictor: bool = False      # k copies of <|predictor_1|> instead of <|predictor_k|>...<|predictor_1|>
    plain_views: bool = False         # Text and Code as raw content, without the template (--plain_jepa)
    plain_separator: str = PERCEPTION  # --plain: between the user's text and the answer


@dataclass(frozen=True)
class RenderedView:
    """A view as a string, with the character span [start, end) of its body: the
    assistant answer for Full, the content (plus predictors) for Text and Code. A Full
    view also knows the span of the user's content (`user`), which STP's objectives read."""
    text: str
    start: int
    end: int
    user: tuple[int, int] | None = None


def full_messages(messages: list[dict], family: Family) -> list[dict]:
    """The conversation as the template sees it (Gemma: system merged into the user turn)."""
    if family.system_role:
        return messages
    merged = copy.deepcopy(messages[1:3])
    merged[0]["content"] = messages[0]["content"] + "\n\n" + merged[0]["content"]
    return merged


def with_predictors(content: str, k: int, front: bool, same: bool = False) -> str:
    """Content with <|predictor_k|>...<|predictor_1|> (or k x <|predictor_1|>) appended
    (or prepended)."""
    preds = "".join(f"<|predictor_{1 if same else i}|>" for i in range(k, 0, -1))
    return preds + content if front else content + preds


def view_messages(row: dict, which: str, family: Family, opts: ViewOptions) -> dict:
    """The one message a Text or Code view renders (before predictors)."""
    swap = opts.reverse_pred
    take_user = (which == "text") != swap
    if opts.use_view_fields:
        msg = dict(row["text" if take_user else "code"][0])
    else:
        msg = dict(row["messages"][1 if take_user else 2])
    if msg["role"] == "assistant":
        msg["role"] = family.code_view_role
    return msg


class ViewRenderer:
    """Renders the Full, Text and Code views of an example to strings."""

    def __init__(self, tokenizer, family: Family, opts: ViewOptions, template_kwargs: dict):
        self.tok = tokenizer
        self.family = family
        self.opts = opts
        self.kwargs = template_kwargs

    def _render(self, messages: list[dict]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                            **self.kwargs)

    def _render_locating(self, messages: list[dict], body: str) -> RenderedView:
        """Render `messages`, whose last message has content `body`, and locate the body."""
        real = self._render(messages)
        start, end = self._locate(messages, len(messages) - 1, body, real)
        return RenderedView(real, start, end)

    def _locate(self, messages: list[dict], index: int, body: str, real: str) -> tuple[int, int]:
        """Character span of `body`, the content of messages[index], in the rendered `real`."""
        # A marker that neither the messages nor the template's own text contain, so that
        # it is found exactly where the template put the body.
        marker = marker_absent_from([real] + [m["content"] for m in messages])
        probe = copy.deepcopy(messages)
        probe[index]["content"] = marker
        probe_text = self._render(probe)
        at = probe_text.find(marker)
        if at >= 0 and probe_text.count(marker) == 1:
            prefix, suffix = probe_text[:at], probe_text[at + len(marker):]
            for candidate in (body, body.strip()):  # templates may trim the content
                if real == prefix + candidate + suffix:
                    return at, at + len(candidate)
        raise DataError(f"cannot locate the message content in the {self.family.name} chat "
                        f"template's output: {real[:200]!r}")

    def full(self, row: dict) -> RenderedView:
        msgs = row["messages"]
        user, answer = msgs[1]["content"], msgs[2]["content"]
        if self.opts.plain:
            if self.opts.train_all:
                text = user + PLAIN_EOT
                return RenderedView(text, 0, len(user), (0, len(user)))
            sep = self.opts.plain_separator
            start = len(user) + len(sep)
            return RenderedView(user + sep + answer + PLAIN_EOT, start, start + len(answer), (0, len(user)))
        messages = full_messages(msgs, self.family)
        view = self._render_locating(messages, answer)
        turn = len(messages) - 2   # the user's turn, just before the answer
        u0, u1 = self._locate(messages, turn, messages[turn]["content"], view.text)
        if messages[turn]["content"] != user:   # Gemma: the system prompt merged in front of it
            u0 = max(u0, u1 - len(user.strip()))
        return RenderedView(view.text, view.start, view.end, (u0, u1))

    def side(self, row: dict, which: str) -> RenderedView:
        """The Text (which='text') or Code (which='code') view."""
        msg = view_messages(row, which, self.family, self.opts)
        if which == "text" and self.opts.predictors:
            msg["content"] = with_predictors(msg["content"], self.opts.predictors, self.opts.front_pred,
                                             self.opts.same_predictor)
        if self.opts.plain or self.opts.plain_views:
            return RenderedView(msg["content"], 0, len(msg["content"]))
        return self._render_locating([msg], msg["content"])


# --------------------------------------------------------------------------------------
# Tokenizing
# --------------------------------------------------------------------------------------
@dataclass
class TokenizeStats:
    examples: int = 0
    truncated: dict = field(default_factory=lambda: {"full": 0, "text": 0, "code": 0})
    no_end_of_turn: int = 0
    no_trained_tokens: int = 0   # examples whose answer truncation cut off entirely
    no_spans: int = 0            # examples without both content spans (STP skips them)

    def report(self, name: str, max_length: int) -> None:
        for view, n in self.truncated.items():
            if n:
                logger.warning("%s: %d of %d %s views exceed --max_length %d and were truncated",
                               name, n, self.examples, view, max_length)
        if self.no_spans:
            logger.warning("%s: %d of %d examples lack a user or answer span after truncation to --max_length "
                           "%d; STP's term skips them", name, self.no_spans, self.examples, max_length)
        if self.no_trained_tokens:
            logger.warning("%s: %d of %d examples keep no token to train after truncation to --max_length %d "
                           "(their answers are cut off); they add nothing to the LM loss",
                           name, self.no_trained_tokens, self.examples, max_length)
        if self.no_end_of_turn:
            logger.warning("%s: %d answers have no end-of-turn token after them to train",
                           name, self.no_end_of_turn)


@dataclass(frozen=True)
class TokenizeOptions:
    max_length: int = 512
    published_labels: bool = False   # labels on every non-pad token (behaviour.Published.labels)
    last_token: int | None = None     # integer offset from the end, or None = auto
    double_bos: bool = False          # always let the tokenizer add BOS (behaviour.Published.double_bos)


class ViewTokenizer:
    """Turns rendered views into token ids, labels and embedding positions."""

    def __init__(self, tokenizer, opts: TokenizeOptions):
        self.tok = tokenizer
        self.opts = opts
        self.special = special_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id

    def encode(self, views: list[RenderedView], plain: bool) -> list[dict]:
        """Token ids and offsets of each view (not yet truncated)."""
        enc = encode_texts(self.tok, [v.text for v in views], self.opts.double_bos or plain,
                           return_offsets_mapping=True)
        return [{"ids": e["input_ids"], "offsets": e["offset_mapping"]} for e in enc]

    def truncate(self, enc: dict) -> bool:
        cut = len(enc["ids"]) > self.opts.max_length
        if cut:
            enc["ids"] = enc["ids"][: self.opts.max_length]
            enc["offsets"] = enc["offsets"][: self.opts.max_length]
        return cut

    def labels(self, enc: dict, view: RenderedView, train_all: bool) -> tuple[list[int], bool]:
        """LM labels of a Full view, and whether an end-of-turn token was found."""
        ids = enc["ids"]
        if self.opts.published_labels:
            # DataCollatorForLanguageModeling: every token, except those equal to pad.
            return [t if t != self.pad_id else -100 for t in ids], True
        if train_all:
            return list(ids), True
        labels = [-100] * len(ids)
        for i, (s, e) in enumerate(enc["offsets"]):
            if e > view.start and s < view.end and e > s:
                labels[i] = ids[i]
        for i, (s, _) in enumerate(enc["offsets"]):
            if s >= view.end and ids[i] in self.special:
                labels[i] = ids[i]  # the end-of-turn token that closes the answer
                return labels, True
        return labels, False

    @staticmethod
    def trains_something(labels: list[int]) -> bool:
        """Whether a Full view has a token for the LM loss, which predicts token i from the
        tokens before it: a label on the first token never counts."""
        return any(t != -100 for t in labels[1:])

    def needed_length(self, views: list[RenderedView], plain: bool, train_all: bool) -> int:
        """The smallest --max_length that keeps one trained token of at least one view."""
        need = []
        for view, enc in zip(views, self.encode(views, plain)):  # not truncated
            labels, _ = self.labels(enc, view, train_all)
            first = next((i for i, t in enumerate(labels) if i and t != -100), None)
            if first is not None:
                need.append(first + 1)
        return min(need, default=2)

    def content_spans(self, enc: dict, view: RenderedView) -> list[int]:
        """[us, ue, as, ae]: the token spans [us, ue) of the user's content and [as, ae) of the
        answer in a Full view (the tokens that overlap their characters); [0, 0, 0, 0] when
        truncation cut one of them away entirely, or when a span starts at the first token
        (nothing precedes it to read its start state from)."""
        out = []
        for start, end in (view.user, (view.start, view.end)):
            inside = [i for i, (s, e) in enumerate(enc["offsets"]) if e > start and s < end and e > s]
            if not inside or inside[0] == 0:
                return [0, 0, 0, 0]
            out += [inside[0], inside[-1] + 1]
        return out

    def embed_index(self, enc: dict, view: RenderedView) -> int:
        """Position whose final hidden state embeds the view."""
        n = len(enc["ids"])
        if self.opts.last_token is not None:
            idx = n + self.opts.last_token
        else:
            inside = [i for i, (s, e) in enumerate(enc["offsets"]) if e > view.start and s < view.end and e > s]
            idx = inside[-1] if inside else n - 1
        if not 0 <= idx < n:
            raise DataError(f"--last_token {self.opts.last_token} points outside a view of {n} tokens")
        return idx


def tokenize_examples(rows: list[dict], renderer: ViewRenderer, vtok: ViewTokenizer,
                      with_views: bool, name: str = "data", with_spans: bool = False) -> tuple[list[dict], TokenizeStats]:
    """Features for every example: Full ids and labels, plus Text/Code ids and positions,
    plus (with_spans) the content spans of the Full view (`spans`, ViewTokenizer.content_spans)."""
    stats = TokenizeStats(examples=len(rows))
    plain = renderer.opts.plain
    full_views = _render_all(rows, renderer.full, name)
    full_enc = vtok.encode(full_views, plain)
    feats = []
    for view, enc in zip(full_views, full_enc):
        stats.truncated["full"] += vtok.truncate(enc)
        labels, found = vtok.labels(enc, view, renderer.opts.train_all)
        stats.no_end_of_turn += not found
        stats.no_trained_tokens += not vtok.trains_something(labels)
        feats.append({"input_ids": enc["ids"], "labels": labels})
        if with_spans:
            feats[-1]["spans"] = vtok.content_spans(enc, view)
            stats.no_spans += feats[-1]["spans"][1] == 0
    if rows and stats.no_trained_tokens == len(rows):
        raise _nothing_to_train(name, full_views, vtok, renderer.opts)
    if with_views:
        for which in ("text", "code"):
            views = _render_all(rows, lambda r: renderer.side(r, which), name)  # noqa: B023 (used at once)
            for feat, view, enc in zip(feats, views, vtok.encode(views, plain)):
                stats.truncated[which] += vtok.truncate(enc)
                feat[f"{which}_input_ids"] = enc["ids"]
                feat[f"{which}_at"] = vtok.embed_index(enc, view)
    stats.report(name, vtok.opts.max_length)
    return feats, stats


def _nothing_to_train(name: str, views: list[RenderedView], vtok: ViewTokenizer, opts: ViewOptions) -> DataError:
    """The error for a data set that truncation leaves nothing to train (the LM loss would be
    a mean over zero tokens), with the smallest --max_length that keeps something."""
    need = vtok.needed_length(views, opts.plain, opts.train_all)
    return DataError(f"{name}: none of the {len(views)} examples keeps a token to train after truncation to "
                     f"--max_length {vtok.opts.max_length} (every trained token lies beyond it); raise "
                     f"--max_length to at least {need}, which keeps one token of one example")


def _render_all(rows: list[dict], render, name: str) -> list[RenderedView]:
    """render(row) for every row; a failure names the example (1-based, blank lines not counted)."""
    out = []
    for i, row in enumerate(rows, start=1):
        try:
            out.append(render(row))
        except DataError as err:
            raise DataError(f"{name}: example {i}: {err}") from None
    return out
