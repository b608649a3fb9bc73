"""Semantic Tube Prediction (STP): JEPA-style objectives read from the Full view alone.

STP needs no Text or Code view. The user's content followed by the answer is a trajectory
of hidden states of the one Full forward pass; a random contiguous patch of it is cut out,
and the patch's chord (the difference of the states at its two ends) should point the
same way as the chord of the rest (before + after the patch). So the term costs no extra
rows: an STP step costs what a regular step costs.

The objectives (registered in objectives.py, chosen with `--linear` or `--jepa_loss`):
* random_span: the method.
* e2e:         the user's chord against the answer's chord.
* mean:        the user's mean state against the answer's mean state.
* curvature:   the mean turning angle of the trajectory (a straight tube has none).

Spans come from the Full view's features (`spans`: [us, ue, as, ae], see
data.ViewTokenizer.content_spans), shifted by the collator and the layout. The pure tensor
work is in tube.py; this module holds the options, the draws and the optional learned
linear predictor, in one module that rides on the model (`model.jepa_objective`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import layouts, runtime, tube
from .published import tube as published_tube

MODES = ("random_span", "e2e", "mean", "curvature")
LENGTH_ADJUSTMENTS = ("cosine_like", "jaccard_like")


@dataclass(frozen=True)
class TubeOptions:
    """STP's options, read from the training configuration by `from_config`."""
    mode: str = "random_span"
    spans: tube.SpanOptions = field(default_factory=tube.SpanOptions)
    length_adjustment: str | None = None
    span_e2e: bool = False         # the answer region starts right after the user's content
    span_all: bool = False         # the user region starts after the sequence's first token
    linear_predictor: bool = False
    mse: bool = False              # mean squared error instead of the weighted cosine
    layer: int = -1                # which hidden state (0: embeddings, k: after layer k, -1: final)
    seed: int = 42
    published: bool = False        # the published draws and loops (behaviour.Published.forward)
    rank: int = 0                  # process index, for the published generator's seed

    @classmethod
    def from_config(cls, cfg, mode: str) -> TubeOptions:
        spans = tube.SpanOptions(zero=cfg.random_span_zero, max_length=cfg.random_span_max_length,
                                 draw_both=cfg.random_span_draw_both, uniform=cfg.random_span_uniform,
                                 times=cfg.random_span_times)
        return cls(mode=mode, spans=spans, length_adjustment=cfg.length_adjustment,
                   span_e2e=cfg.random_span_e2e, span_all=cfg.random_span_all,
                   linear_predictor=cfg.linear_predictor, mse=cfg.jepa_mse, layer=cfg.random_span_layer,
                   seed=cfg.finetune_seed, published=cfg.behaviour.forward, rank=runtime.rank())


class LinearPredictor(torch.nn.Module):
    """A D x D map without bias from the context chord to the patch chord, initialised
    Xavier-uniform from a generator seeded by --finetune_seed (the published draws: the
    default init first, then the Xavier overwrite, on the global generator after a
    reseed; a private generator here, so that the global stream is left alone)."""

    def __init__(self, hidden_size: int, seed: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, hidden_size))
        gen = torch.Generator().manual_seed(seed)
        bound = (1.0 / hidden_size) ** 0.5          # nn.Linear's default init, drawn first as published
        self.weight.data.uniform_(-bound, bound, generator=gen)
        torch.nn.init.xavier_uniform_(self.weight, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.to(x.dtype).t()


class TubeObjective(torch.nn.Module):
    """The module an STP objective attaches to the model: its options, its predictor (when
    --linear_predictor) and, for the published draws, its persistent span generator."""

    def __init__(self, hidden_size: int, options: TubeOptions):
        super().__init__()
        self.options = options
        self.predictor = LinearPredictor(hidden_size, options.seed) if options.linear_predictor else None
        # Published: one generator for the whole run, seeded seed + 3 x rank. Default: a
        # fresh generator per micro-batch, seeded from (seed, step), so a resumed run draws
        # the same spans as an uninterrupted one.
        self._published_gen = torch.Generator().manual_seed(options.seed + 3 * options.rank)

    def loss(self, hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor, starts: torch.Tensor,
             draw_seed: int) -> torch.Tensor:
        """The STP term for the examples at `rows` with content `regions` [N, 4]; `starts`:
        each example's first token (for --random_span_all)."""
        opts = self.options
        if not opts.published:
            hidden = hidden.float()   # chords of bf16 states lose the small differences they measure
        if opts.mode == "curvature":
            return self._curvature(hidden, rows, regions)
        if opts.mode == "random_span":
            context, patch, weights = self._random_span(hidden, rows, regions, starts, draw_seed)
        else:
            vectors = self._e2e_vectors if opts.mode == "e2e" else self._mean_vectors
            context, patch = (v.float() for v in vectors(hidden, rows, regions))
            weights = torch.ones(len(rows), device=hidden.device)
        if self.predictor is not None:
            context = self.predictor(context)
        if opts.mse:
            return ((context - patch) ** 2).mean()
        return tube.weighted_cosine_loss(context, patch, weights)

    def _e2e_vectors(self, hidden, rows, regions):
        if self.options.published:
            return published_tube.e2e_vectors_published(hidden, rows, regions)
        return tube.e2e_vectors(hidden, rows, regions)

    def _mean_vectors(self, hidden, rows, regions):
        if self.options.published:
            return published_tube.mean_vectors_published(hidden, rows, regions)
        return tube.mean_vectors(hidden, rows, regions)

    def _curvature(self, hidden, rows, regions) -> torch.Tensor:
        if self.options.published:
            return published_tube.curvature_published(hidden, rows, regions)
        return tube.curvature_per_example(hidden, rows, regions).mean()

    def _random_span(self, hidden, rows, regions, starts, draw_seed):
        opts = self.options
        regions = regions.clone()
        if opts.span_e2e:        # the answer region begins where the user's content ends
            regions[:, 2] = regions[:, 1]
        if opts.span_all:        # the user region begins after the sequence's first token
            regions[:, 0] = starts + 1
        n = layouts.trajectory_lengths(regions)
        s, e = self._draw(n, draw_seed)            # each example's `times` patches in a row
        times = opts.spans.times
        rows, regions, n = (x.repeat_interleave(times, dim=0) for x in (rows, regions, n))
        s, e = s.to(hidden.device), e.to(hidden.device)
        vectors = published_tube.tube_vectors_published if opts.published else tube.tube_vectors
        context, patch = vectors(hidden, rows, regions, s, e)
        weights = tube.length_weights(n, e - s, opts.length_adjustment)
        return context.float(), patch.float(), weights

    def _draw(self, n: torch.Tensor, draw_seed: int):
        if self.options.published:
            return tube.published_sample_spans(n.tolist(), self.options.spans, self._published_gen)
        gen = torch.Generator().manual_seed(draw_seed)
        return tube.sample_spans(n.cpu(), self.options.spans, gen)



# --------------------------------------------------------------------------------------
# The mask ablation (--random_span_mask): views built from the Full rows in the forward
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskOptions:
    """--random_span_mask: the context view is the user's content through the answer with a
    random patch replaced by <|mask|>; the target view is the patch itself, or with
    --random_span_mask_recover the unmasked context. The pair objective (cosine, ...) then
    pulls the two views' last-token states together, as for LLM-JEPA's Text and Code."""
    spans: tube.SpanOptions
    mask_id: int
    pad_id: int
    recover: bool = False
    span_e2e: bool = False
    span_all: bool = False
    seed: int = 42
    published: bool = False
    rank: int = 0


class MaskViews:
    """Builds the masked views of a batch (as Text and Code views) from its Full rows."""

    def __init__(self, options: MaskOptions):
        self.options = options
        self._published_gen = torch.Generator().manual_seed(options.seed + 3 * options.rank)

    def __call__(self, batch: dict, draw_seed: int) -> tuple[dict, torch.Tensor]:
        """The Text/Code keys to add to the batch, and which rows carry the term."""
        opts = self.options
        regions = batch["spans"].clone()
        if opts.span_e2e:
            regions[:, 2] = regions[:, 1]
        if opts.span_all:
            regions[:, 0] = layouts.content_start(batch["attention_mask"]) + 1
        usable = layouts.usable_spans(batch["spans"])   # the flags above only lengthen a region
        # rows without spans get a harmless stand-in patch; the layout leaves them out
        regions = torch.where(usable[:, None], regions, torch.tensor([1, 2, 2, 3], device=regions.device))
        n = layouts.trajectory_lengths(regions)
        s, e = self._draw(n, draw_seed)
        out = masked_views(batch["input_ids"], regions, s.to(n.device), e.to(n.device), opts.mask_id,
                           opts.pad_id, opts.recover)
        return out, usable

    def _draw(self, n: torch.Tensor, draw_seed: int):
        if self.options.published:
            return tube.published_sample_spans(n.tolist(), self.options.spans, self._published_gen)
        return tube.sample_spans(n.cpu(), self.options.spans, torch.Generator().manual_seed(draw_seed))


def masked_views(ids: torch.Tensor, regions: torch.Tensor, s: torch.Tensor, e: torch.Tensor, mask_id: int,
                 pad_id: int, recover: bool) -> dict:
    """The Text (context) and Code (target) views of every row, left-padded to the Full
    rows' width: the context is the tokens us..ae-1 with the patch's tokens replaced by the
    mask token (the template tokens between the user's content and the answer stay
    visible); the target is the patch's tokens, skipping those template tokens (or with
    `recover` the unmasked context)."""
    us, ue, as_, ae = regions.unbind(1)
    col = torch.arange(ids.shape[1], device=ids.device)[None]
    src, ok = _right_aligned(us[:, None] + col, ae - us, ids.shape[1])
    tokens = ids.gather(1, src.clamp(0, ids.shape[1] - 1))
    offset, header = _offsets(src, regions)
    in_patch = ok & ~header & (offset >= s[:, None]) & (offset < e[:, None])
    context = torch.where(in_patch, mask_id, tokens)
    out = _view("text", context, ok, pad_id)
    if recover:
        return out | _view("code", tokens, ok, pad_id)
    t_off, t_ok = _right_aligned(s[:, None] + col, e - s, ids.shape[1])
    nu = (ue - us)[:, None]
    t_src = torch.where(t_off < nu, us[:, None] + t_off, as_[:, None] + t_off - nu)
    return out | _view("code", ids.gather(1, t_src.clamp(0, ids.shape[1] - 1)), t_ok, pad_id)


def _right_aligned(first: torch.Tensor, length: torch.Tensor, width: int):
    """Indices first .. first+length-1 placed in the last `length` of `width` columns, and
    which columns hold one."""
    shift = (width - length)[:, None]
    col = torch.arange(width, device=first.device)[None]
    return first - shift, col >= shift


def _offsets(pos: torch.Tensor, regions: torch.Tensor):
    """Offsets along the user-then-answer trajectory of sequence positions, and which
    positions are the template tokens between the two (no offset)."""
    us, ue, as_, _ = (x[:, None] for x in regions.unbind(1))
    offset = torch.where(pos < ue, pos - us, (ue - us) + pos - as_)
    return offset, (pos >= ue) & (pos < as_)


def _view(view: str, tokens: torch.Tensor, ok: torch.Tensor, pad_id: int) -> dict:
    """A left-padded view: ids, mask, position ids, and the last column as its embedding."""
    mask = ok.long()
    return {f"{view}_input_ids": torch.where(ok, tokens, pad_id), f"{view}_attention_mask": mask,
            f"{view}_position_ids": (mask.cumsum(1) - 1).clamp(min=0),
            f"{view}_at": torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)}
