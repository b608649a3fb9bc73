"""The JEPA trainer: a transformers Trainer extended only through `compute_loss` and `log`.

Per micro-batch it builds the layout (layouts.py), runs the model once, and combines

    total = gamma * lm_loss + lbd * jepa_loss

By default the LM loss is the token-level mean over the whole accumulated batch (the
Trainer's `num_items_in_batch`), logits are computed only where a label is, and the last
hidden state is taken from the decoder's output with a forward hook instead of keeping
every layer's states. `--published forward` runs the published forward instead
(llm_jepa/published/forward.py).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import time
from dataclasses import dataclass

import torch
from transformers import Trainer

from . import layouts, losses
from .collate import describe_batch
from .flops import batch_flops
from .modeling import causal_lm, find_decoder, parameter_counts
from .objectives import Embeddings, attach_module, get_objective
from .semantic_tube import MaskViews
from .published import forward as published_forward

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JepaSettings:
    """What compute_loss needs, resolved from a TrainConfig by `train.jepa_settings` (which
    holds the defaults: none are repeated here)."""
    layout: str                        # regular | packed | 3pass | additive
    loss: str                          # the objective's name in objectives.OBJECTIVES
    lbd: float
    gamma: float
    jepa_ratio: float                  # > 0: compute JEPA on this fraction of micro-batches
    published_forward: bool           # behaviour.Published.forward
    max_length: int
    pad_id: int
    compute_dtype: torch.dtype
    full_offset: int | None            # published additive mask: Full rows cut at n + offset + 1
    seed: int
    debug_dump: bool                   # --debug: log the first batch as the model sees it
    objective_options: object = None   # the objective's own settings (Objective.options)
    hidden_layer: int = -1             # the hidden state the objective reads (-1: the final one)
    lbd_warmup: bool = False           # ramp lbd from min_lbd at the first step to lbd at the last
    min_lbd: float = 0.0
    mask_views: object = None          # semantic_tube.MaskOptions: views built from the Full rows
    pooling: str = "last"              # "mean": --avg_encoding


class NonFiniteLossError(FloatingPointError):
    pass


class JepaTrainer(Trainer):
    def __init__(self, *args, jepa: JepaSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.jepa = jepa
        self.objective = get_objective(jepa.loss)
        # The objective's own parameters, if any: attached to the model before the
        # optimizer is built, so they train, checkpoint and save with it.
        base = causal_lm(self.model)
        self._objective_module = (attach_module(base, self.objective, base.config.hidden_size,
                                                jepa.objective_options) if jepa.layout != "regular" else None)
        # Default: the returned loss is already normalised over the accumulated batch.
        # Compat: leave the decision to the Trainer, as the published trainer did.
        self.loss_is_scaled_for_ga = None if jepa.published_forward else True
        # JEPA-loss dropout draws from its own generator: same decisions on every rank,
        # and no effect on the global RNG (dropout, sampling).
        self._dropout_rng = torch.Generator().manual_seed(jepa.seed)
        self._counts = parameter_counts(self.model)
        self._logits_to_keep_ok = "logits_to_keep" in inspect.signature(
            causal_lm(self.model).forward).parameters
        self._mask_views = MaskViews(jepa.mask_views) if jepa.mask_views is not None else None
        self.total_flops = 0.0
        self._reset_window()
        self._dumped = False

    # ------------------------------------------------------------------------------
    # loss
    # ------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._micro_seed = self._draw_seed(model.training)
        if self.jepa.published_forward:
            return published_forward.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        use_jepa = self.jepa.layout != "regular" and self._draw_jepa(model.training)
        layout = self._layout(inputs, use_jepa)
        hidden, logits = self._forward(model, layout, need_hidden=use_jepa)
        lm_sum, lm_count = losses.lm_loss_sum(logits, shifted_targets(layout.labels, self._keep))
        lm = lm_sum / self._lm_denominator(lm_count, num_items_in_batch)
        jepa = self._jepa_loss(hidden, layout) if use_jepa else None
        ga = self.current_gradient_accumulation_steps if model.training else 1
        total = losses.combine(lm, 0.0 if jepa is None else jepa / ga, self.jepa.gamma, self.lbd_now())
        if model.training:
            self._check_finite(total, lm, jepa)
            self._record(layout, lm_sum.detach(), lm_count, jepa)
        if self.jepa.debug_dump and not self._dumped:
            self._dump(inputs, layout)
        return (total, {"loss": total}) if return_outputs else total

    def lbd_now(self) -> float:
        """The JEPA term's weight at this optimizer step: --lbd, or with --lbd_warmup the
        linear ramp from --min_lbd (first step) to --lbd (last step)."""
        if not self.jepa.lbd_warmup:
            return self.jepa.lbd
        last = max(self.state.max_steps - 1, 1)   # a one-step run: the ramp's start, not 0/0
        return self.jepa.min_lbd + (self.jepa.lbd - self.jepa.min_lbd) * self.state.global_step / last

    def _draw_jepa(self, training: bool) -> bool:
        if not training or self.jepa.jepa_ratio <= 0:
            return True
        return torch.rand(1, generator=self._dropout_rng).item() <= self.jepa.jepa_ratio

    def _layout(self, inputs: dict, use_jepa: bool) -> layouts.Layout:
        if use_jepa and self._mask_views is not None:   # STP's mask ablation
            views, usable = self._mask_views(inputs, self._micro_seed)
            layout = self._view_layout({**inputs, **views})
            layout.text_at, layout.code_at = (tuple(x[usable] for x in at) for at in (layout.text_at, layout.code_at))
            return layout
        if "packed_rows" in inputs:   # --pack_full: several Full views per row
            return layouts.packed_full(inputs)
        if not use_jepa or not self.objective.views:  # an objective of the Full view alone
            return layouts.full_only(inputs)
        return self._view_layout(inputs)

    def _view_layout(self, inputs: dict) -> layouts.Layout:
        if self.jepa.layout == "packed":
            return layouts.packed(inputs)
        if self.jepa.layout == "additive":
            lay = layouts.additive(inputs, self.jepa.compute_dtype, self.jepa.pad_id, self.jepa.max_length)
            if lay.truncated and not self._window["additive_truncated"]:
                logger.warning("additive mask: %d Text+Code rows exceed --max_length %d; their Code block "
                               "is truncated (counted as additive_truncated in the logs)",
                               lay.truncated, self.jepa.max_length)
            self._window["additive_truncated"] += lay.truncated
            return lay
        return layouts.three_pass(inputs)

    def _forward(self, model, layout: layouts.Layout, need_hidden: bool):
        hidden, logits, self._keep = forward_layout(model, layout, need_hidden, self._logits_to_keep_ok,
                                                    self.jepa.hidden_layer)
        return hidden, logits

    def _lm_denominator(self, count: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Tokens the LM loss is averaged over: the whole accumulated batch when training."""
        if num_items_in_batch is None:
            return count.clamp(min=1)
        denom = torch.as_tensor(num_items_in_batch, device=count.device).clamp(min=1)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # num_items_in_batch counts every rank's tokens and DDP averages gradients.
            denom = denom / self.accelerator.num_processes
        return denom

    def _jepa_loss(self, hidden: torch.Tensor, layout: layouts.Layout) -> torch.Tensor:
        embeddings = Embeddings(hidden, layout, self._micro_seed, self.jepa.pooling)
        return self.objective.loss(embeddings, self._objective_module)

    def _draw_seed(self, training: bool) -> int:
        """A seed for this micro-batch's draws, from (seed, optimizer step, training
        micro-batch): the same on every rank and after a resume. Evaluation batches draw
        with the step's own seed (index 0) and advance no count, so an --eval_file changes
        no training draw."""
        step = self.state.global_step
        if step != getattr(self, "_seed_step", None):
            self._seed_step, self._micro_index = step, 0
        index = 0
        if training:
            self._micro_index += 1
            index = self._micro_index
        return (self.jepa.seed * 1_000_003 + step * 1009 + index) % (2 ** 63)

    def _check_finite(self, total, lm, jepa) -> None:
        if not torch.isfinite(total.detach()):
            step = self.state.global_step + 1
            raise NonFiniteLossError(
                f"non-finite loss at step {step}: lm_loss={float(lm.detach()):.6g}, "
                f"jepa_loss={'-' if jepa is None else f'{float(jepa.detach()):.6g}'}; stopping")

    # ------------------------------------------------------------------------------
    # logging: lm_loss, jepa_loss, tokens/s and analytic FLOPs per logging window
    # ------------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self._window = {"lm_sum": 0.0, "lm_count": 0.0, "jepa_sum": 0.0, "jepa_n": 0.0, "micro": 0.0,
                        "tokens": 0.0, "flops": 0.0, "additive_truncated": 0}
        self._window_start = time.perf_counter()
        self._window_step = self.state.global_step

    def _record(self, layout: layouts.Layout, lm_sum, lm_count, jepa) -> None:
        w = self._window
        w["lm_sum"] = w["lm_sum"] + lm_sum
        w["lm_count"] = w["lm_count"] + lm_count
        if jepa is not None:
            w["jepa_sum"] = w["jepa_sum"] + jepa.detach()
            w["jepa_n"] += 1
        w["micro"] += 1
        rows = layout.kwargs["input_ids"].shape[0]
        tokens, flops = batch_flops(layout, self._counts, n_logits=self._keep.numel() * rows)
        w["tokens"] = w["tokens"] + tokens
        w["flops"] = w["flops"] + flops
        self.total_flops = self.total_flops + flops   # the whole run's analytic training FLOPs (this rank)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._window["micro"]:
            logs.update(self._window_metrics())
            self._reset_window()
        super().log(logs, start_time)

    def _window_metrics(self) -> dict[str, float]:
        w = self._window
        keys = ("lm_sum", "lm_count", "jepa_sum", "jepa_n", "tokens", "flops", "micro")
        vals = torch.tensor([float(w[k]) for k in keys], dtype=torch.float64, device=self.args.device)
        if self.accelerator.num_processes > 1:
            vals = self.accelerator.reduce(vals, reduction="sum")
        s = dict(zip(keys, vals.tolist()))
        steps = max(1, self.state.global_step - self._window_step)
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        out = {"lm_loss": s["lm_sum"] / max(s["lm_count"], 1.0),
               "tokens_per_second": s["tokens"] / elapsed,
               "jepa_fraction": s["jepa_n"] / max(s["micro"], 1.0)}
        if s["jepa_n"]:
            out["jepa_loss"] = s["jepa_sum"] / s["jepa_n"]
        if s["flops"]:
            out["flops_per_step"] = s["flops"] / steps
        if w["additive_truncated"]:
            out["additive_truncated"] = w["additive_truncated"]
        return out

    # ------------------------------------------------------------------------------
    def _dump(self, inputs: dict, layout: layouts.Layout) -> None:
        """--debug: show the first batch as the model sees it (rank 0)."""
        self._dumped = True
        if not self.is_world_process_zero():
            return
        logger.debug("first batch:\n%s", describe_batch(inputs, self.processing_class))


def forward_layout(model, layout: layouts.Layout, need_hidden: bool, logits_to_keep: bool = True,
                   layer: int = -1):
    """One model call on a layout.

    Returns the hidden state of `layer` (the last by default; None unless `need_hidden`),
    the logits of the labelled rows at the kept positions, and those positions: the columns
    p where some row has a target at p + 1. Only those logits are computed when the model
    takes `logits_to_keep`.
    """
    labels = layout.labels
    keep = (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)
    kwargs = dict(layout.kwargs, use_cache=False)
    if logits_to_keep:
        kwargs["logits_to_keep"] = keep
    with _capture_hidden(model, need_hidden, layer) as captured:
        out = model(**kwargs)
    logits = out.logits[: labels.shape[0]]
    if not logits_to_keep:
        logits = logits[:, keep]
    return captured.get("hidden"), logits, keep


def shifted_targets(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The next-token targets of the kept positions."""
    return labels[:, 1:][:, keep]


@contextlib.contextmanager
def _capture_hidden(model, enabled: bool, layer: int = -1):
    """Keep one hidden state during one forward: the decoder's output (the final, normed
    state) for layer -1, the embeddings' output for 0, decoder layer k's output for k (the
    numbering of the model's `hidden_states`)."""
    captured: dict = {}
    decoder = find_decoder(model) if enabled else None
    if not enabled:
        yield captured
        return
    if decoder is None:
        raise RuntimeError("cannot find the model's decoder to read hidden states from")
    module = hidden_state_module(decoder, layer)

    def hook(_module, _args, output):
        if isinstance(output, tuple):
            output = output[0]
        captured["hidden"] = getattr(output, "last_hidden_state", output)

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def hidden_state_module(decoder, layer: int):
    """The module whose output is entry `layer` of the model's hidden_states tuple."""
    n = len(decoder.layers)
    index = layer + n + 1 if layer < 0 else layer
    if not 0 <= index <= n:
        raise ValueError(f"hidden-state layer {layer} does not exist: the model has {n} layers (0..{n}, -1..-{n + 1})")
    if index == n:
        return decoder                     # the final, normed state
    if index == 0:
        return decoder.embed_tokens
    return decoder.layers[index - 1]
