"""The published training forward, bit for bit (`--published forward`).

The published trainer padded every view to --max_length, ran [Full; Text; Code] as 3B rows
(or the additive mask's 2B rows) with every layer's hidden states, took the model's own
mean LM loss per micro-batch and left the gradient-accumulation scaling to the Trainer,
and drew its JEPA dropout from the global RNG. The default forward (trainer.py) pads
dynamically or packs, keeps one hidden state, and averages the LM loss over the whole
accumulated batch.
"""
from __future__ import annotations

import torch
from transformers import Trainer

from .. import layouts, losses
from ..flops import batch_segments


def compute_loss(trainer, model, inputs, return_outputs, num_items_in_batch):
    """JepaTrainer.compute_loss as published."""
    jepa_cfg = trainer.jepa
    if jepa_cfg.layout == "regular":
        loss = Trainer.compute_loss(trainer, model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            # The Trainer's loss is already normalised over the accumulated batch.
            value = (loss[0] if return_outputs else loss).detach()
            record(trainer._window, value, None, inputs, weight=1 / trainer.current_gradient_accumulation_steps)
        return loss
    layout, skip = _layout(jepa_cfg, inputs, full_only=not trainer.objective.views)
    out = model(**layout.kwargs, output_hidden_states=True)
    lm = out.loss
    jepa = None if skip else trainer._jepa_loss(out.hidden_states[jepa_cfg.hidden_layer], layout)
    total = losses.combine(lm, 0.0 if jepa is None else jepa, jepa_cfg.gamma, trainer.lbd_now())
    if model.training:
        trainer._check_finite(total, lm, jepa)
        record(trainer._window, lm.detach(), None if jepa is None else jepa.detach(), inputs)
    return (total, out) if return_outputs else total


def _layout(jepa_cfg, inputs: dict, full_only: bool) -> tuple[layouts.Layout, bool]:
    """The published layout of a batch, and whether its JEPA term was dropped."""
    if full_only:   # STP: the B Full rows as they are, the term read from their hidden states
        kwargs = {k: inputs[k] for k in ("input_ids", "labels", "attention_mask")}
        return layouts.Layout(kwargs, inputs["labels"], spans=layouts.content_spans(inputs, 0)), False
    if jepa_cfg.layout == "additive":
        # The published dropout draw: global RNG, additive mask only.
        if jepa_cfg.jepa_ratio > 0.0 and torch.rand(1).item() > jepa_cfg.jepa_ratio:
            kwargs = {k: inputs[k] for k in ("input_ids", "labels", "attention_mask")}
            return layouts.Layout(kwargs, inputs["labels"]), True
        return additive_layout(inputs, jepa_cfg.full_offset), False
    layout = layouts.three_pass(inputs, with_positions=False)
    empty = torch.full_like(inputs["labels"], -100)
    layout.kwargs["labels"] = torch.cat([inputs["labels"], empty, empty])
    return layout, False


def record(window: dict, lm, jepa, inputs, weight: float = 1.0) -> None:
    """Logging as published: lm_loss is the model's mean over each micro-batch."""
    window["lm_sum"] = window["lm_sum"] + lm
    window["lm_count"] += weight
    if jepa is not None:
        window["jepa_sum"] = window["jepa_sum"] + jepa
        window["jepa_n"] += 1
    window["micro"] += 1
    with_views = jepa is not None and "text_attention_mask" in inputs
    window["tokens"] = window["tokens"] + batch_segments(inputs, with_views).sum()


def additive_layout(batch: dict, full_offset: int | None) -> layouts.Layout:
    """The published additive layout, bit for bit.

    Views are right-padded to --max_length. Row B+i is the Text row with the Code view's
    first `la` tokens written at [lu, lu+la); the mask is float32 with -inf; the Full row
    is cut to n + last_token + 1; position ids are not passed (so they do not restart).
    """
    text_ids = batch["text_input_ids"].clone()
    b, L = text_ids.shape
    device = text_ids.device
    lu = batch["text_at"] + 1
    la = batch["code_at"] + 1
    over = (lu + la) > L
    la = torch.minimum(la, L - lu)  # the published code raises a shape error here instead
    lf = batch["attention_mask"].sum(1) + (full_offset + 1 if full_offset is not None else 0)
    cols = torch.arange(L, device=device).expand(b, L)
    in_code = (cols >= lu[:, None]) & (cols < (lu + la)[:, None])
    src = (cols - lu[:, None]).clamp(min=0, max=L - 1)
    text_ids = torch.where(in_code, batch["code_input_ids"].gather(1, src), text_ids)
    seg = torch.cat([torch.where(cols < lf[:, None], 1, 0),
                     torch.where(cols < lu[:, None], 1, torch.where(in_code, 2, 0))])
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0) & causal
    mask = torch.full(allowed.shape, -torch.inf, device=device).masked_fill(allowed, 0.0)[:, None]
    labels = torch.cat([batch["labels"], torch.full_like(batch["labels"], -100)])
    kwargs = {"input_ids": torch.cat([batch["input_ids"], text_ids]), "attention_mask": mask,
              "labels": labels}
    rows = torch.arange(b, device=device) + b
    return layouts.Layout(kwargs, labels, (rows, lu - 1), (rows, lu + la - 1), truncated=int(over.sum()),
                  segments=torch.cat([lf, lu, la]))
