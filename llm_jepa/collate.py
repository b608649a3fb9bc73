"""Collators: they only pad. Features come from `data.tokenize_examples`.

The batch holds each view as its own padded block:

    input_ids, attention_mask, position_ids, labels      the Full view
    text_input_ids, text_attention_mask, ..., text_emb   the Text view (+ embedding position)
    code_input_ids, code_attention_mask, ..., code_emb   the Code view

By default each batch is padded to its longest sequence (dynamic padding); `pad_to`
pads to a fixed length instead (the published code pads every view to --max_length).
`same_length` pads all views to one common length so that they can be stacked into one
3B-row batch (the 3-pass layout).
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
        if self.with_views and "text_input_ids" in feats[0]:
            for view in VIEWS:
                length = common if (self.same_length or self.pad_to) else None
                block = self._block(feats, f"{view}_input_ids", length, prefix=f"{view}_")
                batch.update(block)
                batch[f"{view}_emb"] = self._shifted_emb(feats, view, block[f"{view}_input_ids"].shape[1])
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

    def _shifted_emb(self, feats: list[dict], view: str, length: int) -> torch.Tensor:
        """Embedding positions in the padded row (left padding shifts them right)."""
        emb = torch.tensor([f[f"{view}_emb"] for f in feats], dtype=torch.long)
        if self.padding_side == "left":
            emb += torch.tensor([length - len(f[f"{view}_input_ids"]) for f in feats])
        return emb


def describe_batch(batch: dict, tokenizer, row: int = 0) -> str:
    """One example of a batch as the model sees it: each view, its trained tokens and the
    token its embedding is read at (for --debug)."""
    lines = []
    ids, mask = batch["input_ids"][row], batch["attention_mask"][row].bool()
    lines.append(f"Full ({int(mask.sum())} tokens): {tokenizer.decode(ids[mask])!r}")
    labels = batch["labels"][row]
    lines.append(f"  trained tokens: {tokenizer.decode(labels[labels != -100])!r}")
    for view in VIEWS:
        if f"{view}_input_ids" not in batch:
            continue
        vids, vmask = batch[f"{view}_input_ids"][row], batch[f"{view}_attention_mask"][row].bool()
        at = int(batch[f"{view}_emb"][row])
        lines.append(f"{view.title()} ({int(vmask.sum())} tokens): {tokenizer.decode(vids[vmask])!r}")
        lines.append(f"  embedding at position {at}: {tokenizer.decode(vids[at: at + 1])!r}")
    return "\n".join(lines)
