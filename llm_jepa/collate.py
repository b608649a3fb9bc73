"""Collators: they only pad or pack. Features come from `data.tokenize_examples`.

The batch holds each view as its own padded block:

    input_ids, attention_mask, position_ids, labels      the Full view
    text_input_ids, text_attention_mask, ..., text_at   the Text view (+ embedding position)
    code_input_ids, code_attention_mask, ..., code_at   the Code view

By default each batch is padded to its longest sequence (dynamic padding); `pad_to`
pads to a fixed length instead (the published code pads every view to --max_length).
`same_length` pads all views to one common length so that they can be stacked into one
3B-row batch (the 3-pass layout).

`PackCollator` adds the packed layout: the Full, Text and Code views of every example,
padding-free, first-fit into as few rows as a token budget allows (see `pack_segments`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

VIEWS = ("text", "code")


def pad_block(seqs: list[list[int]], length: int, value: int, side: str) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        else:
            out[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
    return out


def pad_batch(seqs: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest sequence on `side`, and the 0/1 attention mask."""
    width = max(len(s) for s in seqs)
    return pad_block(seqs, width, pad_id, side), pad_block([[1] * len(s) for s in seqs], width, 0, side)


def attention_and_positions(lengths: list[int], length: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0/1 padding mask and position ids that count from 0 at each sequence's first token."""
    mask = pad_block([[1] * n for n in lengths], length, 0, side)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return mask, positions


@dataclass
class PadCollator:
    pad_id: int
    with_views: bool = True           # False: Full view only (regular fine-tuning)
    pad_to: int | None = None         # None: longest in the batch
    same_length: bool = False         # pad every view to one common length
    with_positions: bool = True       # False: no position_ids (the published batches have none)
    padding_side: str = "right"

    def _length(self, feats: list[dict]) -> int:
        if self.pad_to is not None:
            return self.pad_to
        keys = ["input_ids"] + ([f"{v}_input_ids" for v in VIEWS] if self.same_length else [])
        return max(len(f[k]) for f in feats for k in keys)

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        common = self._length(feats)
        batch = self._block(feats, "input_ids", common, prefix="")
        batch["labels"] = pad_block([f["labels"] for f in feats], batch["input_ids"].shape[1],
                                    -100, self.padding_side)
        if "spans" in feats[0]:
            batch["spans"] = self._shifted_spans(feats, batch["input_ids"].shape[1])
        if self.with_views and "text_input_ids" in feats[0]:
            for view in VIEWS:
                length = common if (self.same_length or self.pad_to) else None
                block = self._block(feats, f"{view}_input_ids", length, prefix=f"{view}_")
                batch.update(block)
                batch[f"{view}_at"] = self._shifted_at(feats, view, block[f"{view}_input_ids"].shape[1])
        return batch

    def _block(self, feats: list[dict], key: str, length: int | None, prefix: str) -> dict:
        seqs = [f[key] for f in feats]
        length = length or max(len(s) for s in seqs)
        mask, positions = attention_and_positions([len(s) for s in seqs], length, self.padding_side)
        block = {f"{prefix}input_ids": pad_block(seqs, length, self.pad_id, self.padding_side),
                 f"{prefix}attention_mask": mask}
        if self.with_positions:
            block[f"{prefix}position_ids"] = positions
        return block

    def _shifted_spans(self, feats: list[dict], length: int) -> torch.Tensor:
        """The Full view's content spans [B, 4] in the padded rows ([0, 0, 0, 0] stays: no spans)."""
        spans = torch.tensor([f["spans"] for f in feats], dtype=torch.long)
        if self.padding_side == "left":
            shift = torch.tensor([length - len(f["input_ids"]) for f in feats])[:, None]
            spans = torch.where(spans[:, 1:2] > 0, spans + shift, spans)
        return spans

    def _shifted_at(self, feats: list[dict], view: str, length: int) -> torch.Tensor:
        """Embedding positions in the padded row (left padding shifts them right)."""
        emb = torch.tensor([f[f"{view}_at"] for f in feats], dtype=torch.long)
        if self.padding_side == "left":
            emb += torch.tensor([length - len(f[f"{view}_input_ids"]) for f in feats])
        return emb


def pack_segments(lengths: list[int], budget: int, anchors: frozenset[int] = frozenset()) -> list[list[int]]:
    """First-fit decreasing: segment indices per row, each row holding at most `budget`
    tokens (a segment longer than the budget gets a row of its own) and at most one of the
    `anchors` segments."""
    rows: list[list[int]] = []
    room: list[int] = []
    anchored: list[bool] = []
    for seg in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        anchor = seg in anchors
        for r, free in enumerate(room):
            if lengths[seg] <= free and not (anchor and anchored[r]):
                rows[r].append(seg)
                room[r] -= lengths[seg]
                anchored[r] |= anchor
                break
        else:
            rows.append([seg])
            room.append(budget - lengths[seg])
            anchored.append(anchor)
    return rows


@dataclass
class PackCollator:
    """Padded Full views (for steps that drop the JEPA term) plus the packed layout:

        packed_input_ids, packed_position_ids, packed_labels   [rows, width]
        packed_text_at, packed_code_at                         [2, B]: (row, position)
        packed_lengths                                         [3B]: every segment's length

    Position ids restart at 0 in every segment, which is how transformers recognises
    packed sequences (block-diagonal causal attention) when no attention mask is given.

    A row holds at most one Full view, placed last and ending at the row's last column, so
    that the answers of all rows sit in the same final columns: the model then computes
    logits for those few columns only (`logits_to_keep` selects columns, not tokens). The
    padding before it continues the previous segment's positions, so it forms no segment of
    its own; it carries no labels and nothing real attends to it.

    budget: tokens per row. None: chosen per batch by `cheapest_packing` (a few segments per row,
    little padding, short attention); a large value packs everything into one row
    (flash-attention varlen).
    """
    pad_id: int
    budget: int | None = None

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        batch = PadCollator(self.pad_id, with_views=False, padding_side="left")(feats)
        segs = []  # (ids, labels, which, example)
        for i, f in enumerate(feats):
            segs.append((f["input_ids"], f["labels"], "full", i))
            for view in VIEWS:
                segs.append((f[f"{view}_input_ids"], None, view, i))
        lengths = [len(s[0]) for s in segs]
        fulls = frozenset(i for i, s in enumerate(segs) if s[2] == "full")
        if self.budget:
            rows = pack_segments(lengths, max(self.budget, max(lengths)), fulls)
        else:
            _, rows = cheapest_packing(lengths, fulls)
        width = max(sum(lengths[s] for s in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        at = {view: torch.zeros((2, len(feats)), dtype=torch.long) for view in VIEWS}
        for r, row in enumerate(rows):
            for s, start in _placements(row, lengths, fulls, width):
                seq, lab, which, ex = segs[s]
                n = len(seq)
                ids[r, start:start + n] = torch.tensor(seq)
                pos[r, start:start + n] = torch.arange(n)
                if lab is not None:
                    labels[r, start:start + n] = torch.tensor(lab)
                else:
                    at[which][:, ex] = torch.tensor([r, start + feats[ex][f"{which}_at"]])
            _continue_positions(pos[r], row, lengths, fulls, width)
        batch.update(packed_input_ids=ids, packed_position_ids=pos, packed_labels=labels,
                     packed_text_at=at["text"], packed_code_at=at["code"],
                     packed_lengths=torch.tensor(lengths, dtype=torch.long))
        return batch


@dataclass
class FullPackCollator:
    """Full views only (regular fine-tuning, STP), several per row, padding-free:

        packed_input_ids, packed_position_ids, packed_labels   [rows, width]
        packed_lengths                                         [B]: each example's length
        packed_rows, packed_starts                             [B]: its row and first column
        packed_spans                                           [B, 4]: its content spans in the row

    plus the left-padded batch (input_ids, attention_mask, labels, spans), which the steps
    that drop the JEPA term use. Position ids restart at 0 in every example (the model then
    attends block-diagonally); a row's trailing padding continues its last example's
    positions. The first token of each example carries no label, so that no example is
    trained to predict the next one's start.
    """
    pad_id: int

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        batch = PadCollator(self.pad_id, with_views=False, padding_side="left")(feats)
        lengths = [len(f["input_ids"]) for f in feats]
        width, rows = cheapest_packing(lengths, frozenset())
        width = max(sum(lengths[s] for s in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        where = torch.zeros((2, len(feats)), dtype=torch.long)     # row, first column
        for r, row in enumerate(rows):
            start = 0
            for ex in row:
                n = lengths[ex]
                ids[r, start:start + n] = torch.tensor(feats[ex]["input_ids"])
                labels[r, start + 1:start + n] = torch.tensor(feats[ex]["labels"][1:])
                pos[r, start:start + n] = torch.arange(n)
                where[:, ex] = torch.tensor([r, start])
                start += n
            pos[r, start:] = torch.arange(width - start) + (pos[r, start - 1] + 1)
        batch.update(packed_input_ids=ids, packed_position_ids=pos, packed_labels=labels,
                     packed_lengths=torch.tensor(lengths), packed_rows=where[0], packed_starts=where[1])
        if "spans" in feats[0]:
            spans = torch.tensor([f["spans"] for f in feats], dtype=torch.long)
            batch["packed_spans"] = torch.where(spans[:, 1:2] > 0, spans + where[1][:, None], spans)
        return batch


# Row widths tried by `cheapest_packing`, in multiples of the batch's longest segment.
BUDGET_FACTORS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
# The row width at which a token's attention (over the whole row: the block-diagonal mask
# is applied to a full width x width score matrix) costs as much as its linear layers:
# about 4 x hidden x layers against 2 x parameters FLOPs per token, i.e. ~3000 columns for
# a 135M model and more for larger ones.
ATTENTION_WIDTH = 3072


def cheapest_packing(lengths: list[int], anchors: frozenset[int]) -> tuple[int, list[list[int]]]:
    """(tokens per row, `pack_segments` rows) of the packing that makes a batch cheapest: the batch is packed
    at every candidate width and each packing costed as rows x width (the linear layers run
    on padding too) x (1 + width / ATTENTION_WIDTH); ties go to the narrower rows. Rows as
    long as the longest segment waste the most when no two segments fit together:
    SmolLM2's Text and Code views (its chat template repeats a system prompt in each) are
    each over half its Full view, so such rows held one view each and a quarter of the
    computed tokens were padding."""
    def cost(rows: list[list[int]]) -> float:
        width = max(sum(lengths[s] for s in row) for row in rows)
        return len(rows) * width * (1 + width / ATTENTION_WIDTH)

    budgets = [int(max(lengths) * f) for f in BUDGET_FACTORS]
    packings = [(b, pack_segments(lengths, b, anchors)) for b in budgets]
    return min(packings, key=lambda p: cost(p[1]))   # min keeps the first (narrowest) of equal costs


def _placements(row: list[int], lengths: list[int], fulls: frozenset, width: int):
    """(segment, start column): the others from column 0, the Full view flush right."""
    start, out = 0, []
    for s in row:
        if s not in fulls:
            out.append((s, start))
            start += lengths[s]
    out += [(s, width - lengths[s]) for s in row if s in fulls]
    return out


def _continue_positions(pos: torch.Tensor, row: list[int], lengths: list[int], fulls: frozenset,
                        width: int) -> None:
    """Give the padding of a row the positions that keep it inside the preceding segment."""
    used = sum(lengths[s] for s in row if s not in fulls)
    gap_end = width - sum(lengths[s] for s in row if s in fulls)
    if gap_end > used:
        first = pos[used - 1] + 1 if used else 0
        pos[used:gap_end] = torch.arange(gap_end - used) + first


def describe_batch(batch: dict, tokenizer, row: int = 0) -> str:
    """One example of a batch as the model sees it: each view, its trained tokens and the
    token its embedding is read at (for --debug)."""
    ids, mask = batch["input_ids"][row], batch["attention_mask"][row].bool()
    labels = batch["labels"][row]
    lines = [f"Full ({int(mask.sum())} tokens): {tokenizer.decode(ids[mask])!r}",
             f"  trained tokens: {tokenizer.decode(labels[labels != -100])!r}"]
    for view in VIEWS:
        found = _view_tokens(batch, view, row)
        if found is None:
            continue
        tokens, at = found
        lines.append(f"{view.title()} ({len(tokens)} tokens): {tokenizer.decode(tokens)!r}")
        lines.append(f"  embedding at position {at}: {tokenizer.decode(tokens[at: at + 1])!r}")
    return "\n".join(lines)


def _view_tokens(batch: dict, view: str, row: int):
    """(token ids, embedding position) of one example's view, from a padded or packed batch."""
    if f"{view}_input_ids" in batch:
        ids, mask = batch[f"{view}_input_ids"][row], batch[f"{view}_attention_mask"][row].bool()
        at = int(batch[f"{view}_at"][row]) - int((~mask[: int(batch[f"{view}_at"][row])]).sum())
        return ids[mask], at
    if f"packed_{view}_at" in batch:
        r, p = batch[f"packed_{view}_at"][:, row].tolist()
        pos = batch["packed_position_ids"][r]
        start = p - int(pos[p])
        later = (pos[start + 1:] == 0).nonzero()
        end = start + 1 + int(later[0]) if len(later) else pos.shape[0]
        return batch["packed_input_ids"][r, start:end], p - start
    return None
