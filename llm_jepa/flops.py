"""FLOPs: an analytic count per step, and the published profiler callback (--track_flop).

Analytic training FLOPs (forward + backward) follow the PaLM appendix-B convention:

    6 * N_body * tokens  +  6 * V * d * logits  +  12 * L * d * sum(s_i^2)

N_body: parameters of the decoder stack (the input embedding lookup is not a matmul);
V * d: the lm_head, counted only at positions whose logits are computed; s_i: the length
of each attention segment (a padded row, or a block of a block-diagonal row). The
attention term counts the full s x s score matrix, as PaLM does for MFU; real tokens
only, so padding shows up as lost utilisation, not as work.
"""
from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def training_flops(counts: dict[str, int], tokens, logits, sum_sq_lengths):
    """Forward+backward FLOPs for the given token, logit and attention-segment totals."""
    return (6 * counts["body"] * tokens + 6 * counts["head"] * logits
            + 12 * counts["layers"] * counts["hidden"] * sum_sq_lengths)


def segment_lengths(layout) -> torch.Tensor:
    """Lengths of the attention segments a layout computes: its own segment list (packed
    and additive rows hold several), else the real length of each padded row."""
    if layout.segments is not None:
        return layout.segments
    return layout.kwargs["attention_mask"].sum(1)


def batch_segments(batch: dict, with_views: bool) -> torch.Tensor:
    """Real lengths of the sequences of a collated batch: the Full rows, with the views'
    (the packed segments of a packed batch) when `with_views` and the batch has views (an
    objective of the Full view alone, STP, reads none)."""
    if with_views and "packed_lengths" in batch:
        return batch["packed_lengths"]
    keys = ("", "text_", "code_") if with_views and "text_attention_mask" in batch else ("",)
    return torch.cat([batch[f"{k}attention_mask"].sum(1) for k in keys])


def batch_flops(layout, counts: dict[str, int], n_logits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(real tokens, analytic FLOPs) of one micro-batch, as tensors (no device sync)."""
    lengths = segment_lengths(layout).to(torch.float64)
    tokens = lengths.sum()
    return tokens, training_flops(counts, tokens, float(n_logits), (lengths ** 2).sum())


class ProfilerFLOPCallback(TrainerCallback):
    """--track_flop: torch-profiler FLOPs of the first `steps` optimizer steps."""

    def __init__(self, steps: int = 10):
        self.steps = steps
        self.profiler = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step < self.steps:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self.profiler = profile(activities=activities, record_shapes=True, with_flops=True)
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None:
            return
        self.profiler.__exit__(None, None, None)
        flops = sum(e.flops for e in self.profiler.key_averages() if e.flops > 0)
        self.profiler = None
        if state.is_world_process_zero:
            logger.info("Step %d: FLOPs: %s", state.global_step, f"{flops:,.0f}")
