"""Forward layouts: how the padded views of a batch become one model call.

* regular:  the Full rows only.
* 3pass:    [Full; Text; Code] stacked into 3B rows (one call, as published).
* additive: B Full rows, then B rows holding Text followed by Code, with a 4D block-causal
            additive mask so that Code cannot see Text.
* packed:   every view of the batch, padding-free, in a few rows (collate.PackCollator);
            no attention mask: position ids that restart per segment make transformers
            attend block-diagonally (or feed flash-attention's varlen kernel).

Each builder returns a `Layout`: the model's keyword arguments, how many leading rows are
Full views (the rows that carry LM labels) and where the Text and Code embeddings are read.
Everything is built with tensor operations on the batch's device.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass
class Layout:
    kwargs: dict                                   # model(**kwargs)
    labels: torch.Tensor                           # labels of the first `labels.shape[0]` rows
    text_at: tuple[torch.Tensor, torch.Tensor] | None = None   # (rows, positions)
    code_at: tuple[torch.Tensor, torch.Tensor] | None = None
    # The Full view's content spans, for the examples that have them: (rows [N], regions
    # [N, 4] = us, ue, as, ae, first token of each example's sequence [N])
    spans: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    truncated: int = 0                             # additive rows whose Code block was cut
    segments: torch.Tensor | None = None           # attention segment lengths, when known


def content_start(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first real token (0 with right padding)."""
    return mask.shape[1] - mask.sum(1) - _right_pad(mask)


def _right_pad(mask: torch.Tensor) -> torch.Tensor:
    """Number of padding positions after the content of each row."""
    flipped = mask.flip(1)
    return torch.where(flipped.any(1), flipped.float().argmax(1), torch.zeros_like(mask[:, 0])).long()


# --------------------------------------------------------------------------------------
# regular and 3-pass
# --------------------------------------------------------------------------------------
def full_only(batch: dict, with_positions: bool = True) -> Layout:
    """The Full rows alone, trimmed to their longest sequence."""
    mask = batch["attention_mask"]
    keep = _used_columns(mask)
    kwargs = {"input_ids": batch["input_ids"][:, keep], "attention_mask": mask[:, keep]}
    if with_positions:
        kwargs["position_ids"] = batch["position_ids"][:, keep]
    spans = content_spans(batch, keep.start) if "spans" in batch else None
    return Layout(kwargs, batch["labels"][:, keep], spans=spans)


def trajectory_lengths(regions: torch.Tensor) -> torch.Tensor:
    """Tokens of the user's content plus the answer's, per example ([N, 4] spans)."""
    return (regions[:, 1] - regions[:, 0]) + (regions[:, 3] - regions[:, 2])


def usable_spans(regions: torch.Tensor) -> torch.Tensor:
    """The examples whose spans can carry STP's term: found (not cut by truncation), and two
    or more content tokens in all (a patch must leave something around it)."""
    return (regions[:, 1] > 0) & (trajectory_lengths(regions) >= 2)


def packed_full(batch: dict) -> Layout:
    """The packed Full rows of a FullPackCollator batch (several examples per row)."""
    kwargs = {"input_ids": batch["packed_input_ids"], "position_ids": batch["packed_position_ids"]}
    spans = None
    if "packed_spans" in batch:
        regions = batch["packed_spans"]
        usable = usable_spans(regions)
        spans = (batch["packed_rows"][usable], regions[usable], batch["packed_starts"][usable])
    return Layout(kwargs, batch["packed_labels"], spans=spans, segments=batch["packed_lengths"])


def content_spans(batch: dict, first_column: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The spans of the examples that have usable ones (usable_spans), in a row that starts
    at `first_column` of the batch."""
    regions = batch["spans"]
    usable = usable_spans(regions)
    rows = torch.arange(regions.shape[0], device=regions.device)[usable]
    starts = content_start(batch["attention_mask"])[usable] - first_column
    return rows, regions[usable] - first_column, starts


def _used_columns(mask: torch.Tensor) -> slice:
    """Columns that hold a real token in some row (all views may be padded to one length)."""
    used = mask.any(0).nonzero()
    if used.numel() == 0:
        return slice(0, mask.shape[1])
    return slice(int(used[0]), int(used[-1]) + 1)


def three_pass(batch: dict, with_positions: bool = True) -> Layout:
    """[Full; Text; Code] as 3B rows of one length (the collator pads them alike)."""
    b = batch["input_ids"].shape[0]
    cat = lambda key: torch.cat([batch[key], batch[f"text_{key}"], batch[f"code_{key}"]])  # noqa: E731
    kwargs = {"input_ids": cat("input_ids"), "attention_mask": cat("attention_mask")}
    if with_positions:
        kwargs["position_ids"] = cat("position_ids")
    rows = torch.arange(b, device=batch["input_ids"].device)
    return Layout(kwargs, batch["labels"], (rows + b, batch["text_at"]), (rows + 2 * b, batch["code_at"]))


# --------------------------------------------------------------------------------------
# additive mask
# --------------------------------------------------------------------------------------
def gather_segments(segments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], width: int,
                    pad_value: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate per-row token segments into right-padded rows of `width`.

    segments: (values [B, L], start [B], length [B]) each; row i gets values[i, start:start+length]
    of every segment in turn. Returns values [B, width], segment ids [B, width] (1, 2, ...;
    0 = padding) and position ids that restart at 0 in every segment.
    """
    b, device = segments[0][0].shape[0], segments[0][0].device
    cols = torch.arange(width, device=device).expand(b, width)
    out = torch.full((b, width), pad_value, dtype=segments[0][0].dtype, device=device)
    seg = torch.zeros((b, width), dtype=torch.long, device=device)
    pos = torch.zeros((b, width), dtype=torch.long, device=device)
    offset = torch.zeros(b, dtype=torch.long, device=device)
    for n, (values, start, length) in enumerate(segments, start=1):
        inside = (cols >= offset[:, None]) & (cols < (offset + length)[:, None])
        local = (cols - offset[:, None]).clamp(min=0)
        src = (start[:, None] + local).clamp(max=values.shape[1] - 1)
        out = torch.where(inside, values.gather(1, src), out)
        seg = torch.where(inside, n, seg)
        pos = torch.where(inside, local, pos)
        offset = offset + length
    return out, seg, pos


def block_causal_mask(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] additive mask: causal inside each segment, the dtype's minimum elsewhere.

    The minimum (not -inf) keeps padding rows, which see nothing, finite under eager attention.
    """
    L = seg.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0) & causal
    zero = torch.zeros((), dtype=dtype, device=seg.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def additive(batch: dict, dtype: torch.dtype, pad_id: int, max_length: int) -> Layout:
    """Full rows plus Text||Code rows, each view cut after its embedding position.

    Works with left or right padded views; position ids restart for the Code block, so the
    losses equal the 3-pass layout's. A Text||Code row longer than max(--max_length, the Full
    rows) loses the end of its Code block, and the Code embedding moves to the last kept token.
    """
    b = batch["input_ids"].shape[0]
    f_start = content_start(batch["attention_mask"])
    f_len = batch["attention_mask"].sum(1)
    t_start = content_start(batch["text_attention_mask"])
    c_start = content_start(batch["code_attention_mask"])
    t_len = batch["text_at"] - t_start + 1
    c_len = batch["code_at"] - c_start + 1
    cap = max(max_length, int(f_len.max()), int(t_len.max()) + 1)  # room for one Code token
    over = (t_len + c_len) > cap
    c_len = torch.minimum(c_len, cap - t_len)
    width = max(int(f_len.max()), int((t_len + c_len).max()))

    full_ids, full_seg, full_pos = gather_segments([(batch["input_ids"], f_start, f_len)], width, pad_id)
    labels, _, _ = gather_segments([(batch["labels"], f_start, f_len)], width, -100)
    tc_ids, tc_seg, tc_pos = gather_segments(
        [(batch["text_input_ids"], t_start, t_len), (batch["code_input_ids"], c_start, c_len)], width, pad_id)
    seg = torch.cat([full_seg, tc_seg])
    kwargs = {"input_ids": torch.cat([full_ids, tc_ids]),
              "attention_mask": block_causal_mask(seg, dtype),
              "position_ids": torch.cat([full_pos, tc_pos])}
    rows = torch.arange(b, device=seg.device) + b
    return Layout(kwargs, labels, (rows, t_len - 1), (rows, t_len + c_len - 1), truncated=int(over.sum()),
                  segments=torch.cat([f_len, t_len, c_len]))


def packed(batch: dict) -> Layout:
    """The packed rows of a PackCollator batch."""
    kwargs = {"input_ids": batch["packed_input_ids"], "position_ids": batch["packed_position_ids"]}
    text, code = batch["packed_text_at"], batch["packed_code_at"]
    return Layout(kwargs, batch["packed_labels"], (text[0], text[1]), (code[0], code[1]),
                  segments=batch["packed_lengths"])


def gather_embeddings(hidden: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    rows, pos = at
    return hidden[rows, pos]


def mean_embeddings(hidden: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor],
                    position_ids: torch.Tensor | None) -> torch.Tensor:
    """The mean of each view's states from its first token through its embedding token.
    A view's first token is found from the position ids, which restart at 0 in every view
    (packed, additive and padded rows alike); without them (the published batches) views
    start at column 0."""
    rows, pos = at
    first = pos - position_ids[rows, pos] if position_ids is not None else torch.zeros_like(pos)
    sums = hidden.float().cumsum(1)
    total = sums[rows, pos] - torch.where((first > 0)[:, None], sums[rows, (first - 1).clamp(min=0)], 0.0)
    return (total / (pos - first + 1)[:, None]).to(hidden.dtype)
