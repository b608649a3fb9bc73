"""Semantic Tube Prediction (STP): the JEPA-style term computed from one forward pass.

STP reuses the hidden states of the ordinary language-modelling pass. The user content followed by
the assistant content is a trajectory of hidden states; a random contiguous patch is cut out of it
and the loss asks the patch's displacement to point the same way as the displacement of the rest
(before + after). The ablations compare user against assistant (`e2e_vectors`, `mean_vectors`) or
penalise the turning angle along the trajectory (`curvature_per_example`).

Conventions used by every function here:

* `hidden` is [R, S, D]: R sequence rows of S positions. Several examples may be packed into one
  row, so each example carries `rows[i]`, the row its tokens live in.
* `regions` is [N, 4] int64 = (us, ue, as, ae) per example, half-open content intervals: the user
  content is positions [us, ue) and the assistant content is [as, ae). Located content pairs
  (start = token before the content, end = last content token) convert as us = u0 + 1,
  ue = u1 + 1, as = a0 + 1, ae = a1 + 1. The header tokens [ue, as) between the two messages are
  not part of the trajectory.
* The trajectory has n = nu + na offsets (nu = ue - us, na = ae - as). Offset o < nu is position
  us + o, otherwise as + (o - nu); a patch is a pair of offsets 0 <= s < e <= n with e - s < n
  (never the whole trajectory).
* The boundary state of position b is E(b) = hidden[row, b - 1]: the state after reading
  everything before b. So a chord from b0 to b1 is E(b1) - E(b0).

The vectorised chords are bit-identical to a per-example loop because every output element is
computed by the same float operations in the same left-to-right order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------
# Patch sampling
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpanOptions:
    """The --random_span_* sampler flags."""
    zero: bool = False        # the patch starts at offset 0 (default and draw-both samplers)
    max_length: int = -1      # longest patch in offsets; -1 means no bound (not used by uniform)
    draw_both: bool = False   # draw two points and take them as start/end
    uniform: bool = False     # uniform over every allowed (start, end) pair
    times: int = 1            # patches per example


def span_problems(opts: SpanOptions) -> list[str]:
    """Why these options cannot be sampled as asked (empty when they are fine)."""
    problems = []
    if opts.times < 1:
        problems.append(f"random_span_times must be >= 1, got {opts.times}")
    if opts.max_length == 0 or opts.max_length < -1:
        problems.append(f"random_span_max_length must be -1 (no bound) or >= 1, got {opts.max_length}")
    if opts.draw_both and opts.uniform:
        problems.append("random_span_draw_both and random_span_uniform are two different samplers; pick one")
    if opts.uniform and not opts.draw_both and (opts.zero or opts.max_length != -1):
        problems.append("random_span_uniform samples every pair; it cannot honour random_span_zero "
                        "or random_span_max_length")
    return problems


def _randbelow(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Map float64 uniforms in [0, 1) to integers uniform in [0, k) (k >= 1).

    A float64 uniform has 53 random bits, so each integer's probability is 1/k to within 2**-53.
    """
    return torch.minimum((u * k).floor().long(), k - 1)


def _default_spans(n, opts, u):
    # s uniform (or 0); e uniform over [s+1, hi) restricted to e - s < n. The published code
    # redraws e until it is allowed, which conditions on the allowed set: uniform over it.
    s = torch.zeros_like(n) if opts.zero else _randbelow(u[:, 0], n)
    hi = torch.minimum(n + 1, s + n)               # e < s + n: only bites for s = 0 (drops e = n)
    if opts.max_length >= 0:
        hi = torch.minimum(hi, s + 1 + opts.max_length)
    e = s + 1 + _randbelow(u[:, 1], hi - s - 1)
    return s, e


def _draw_both_spans(n, opts, u):
    # The published sampler draws p1 in [0, n) and p2 in [1, n], maps them to (s, e) and retries
    # until the result is allowed. Retrying is conditioning, so we draw (p1, p2) uniformly from
    # the accepted pairs directly and apply the same map. Which pairs are rejected:
    #   L = the effective length bound; when L < n the whole span (0, n) is clipped, not rejected.
    L = n if opts.max_length < 0 else torch.clamp(n, max=opts.max_length)
    clipped = (L < n).long()
    if opts.zero:
        # s = 0 and e = max(p1, p2): rejected exactly when p2 = n and nothing clips it
        p1 = _randbelow(u[:, 0], n)
        p2 = 1 + _randbelow(u[:, 1], n - 1 + clipped)
        s, e = torch.zeros_like(n), torch.maximum(p1, p2)
    else:
        # rejected: p1 = p2 (empty span), and (p1, p2) = (0, n) unless clipped. Every p1 keeps
        # n - 1 partners; the extra pair (0, n) is index n(n-1) when it is kept.
        k = _randbelow(u[:, 0], n * (n - 1) + clipped)
        p1, j = k // (n - 1), k % (n - 1)
        p2 = torch.where((p1 == 0) | (1 + j < p1), 1 + j, 2 + j)  # skip p2 = p1
        extra = k == n * (n - 1)
        p1, p2 = torch.where(extra, 0, p1), torch.where(extra, n, p2)
        s, e = torch.minimum(p1, p2), torch.maximum(p1, p2)
    return s, torch.minimum(e, s + L)


def _pairs_before(s, n):
    """How many (s', e) pairs with s' < s there are in the s-ascending enumeration."""
    return s * (2 * n - s + 1) // 2


def _uniform_spans(n, u):
    # Uniform over the n(n+1)/2 pairs except (0, n), which is index n - 1 of the enumeration with
    # s ascending then e ascending. The published code computes s from the index with float32
    # arithmetic; that is exact for the trajectory lengths seen in practice but not for long ones
    # (n = 4097 maps an index to the wrong start), so here we invert the enumeration exactly.
    r = _randbelow(u[:, 0], n * (n + 1) // 2 - 1)
    r = r + (r >= n - 1).long()
    a = (2 * n + 1).double()
    s = ((a - torch.sqrt(a * a - 8 * r.double())) / 2).floor().long()
    s = s + (_pairs_before(s + 1, n) <= r).long() - (_pairs_before(s, n) > r).long()  # fix float error
    return s, s + 1 + (r - _pairs_before(s, n))


def sample_spans(n: torch.Tensor, opts: SpanOptions, generator: torch.Generator):
    """Draw opts.times patches for each example, with the published samplers' distributions.

    n [N] are the trajectory lengths. Returns (s, e), int64 [N * times], ordered as the published
    draws: example i's patches are entries i*times .. i*times + times - 1.

    The draws are vectorised (no retry loop), so they follow the published distribution but not
    its sequence of random numbers; `published_sample_spans` gives the latter. Examples with
    n < 2 have no allowed patch: they get s = e = 0 and the caller must leave them out.
    """
    problems = span_problems(opts)
    if problems:
        raise ValueError("; ".join(problems))
    device = n.device
    n = n.long().repeat_interleave(opts.times)
    ok = n >= 2
    m = torch.clamp(n, min=2)                       # keep the arithmetic defined for rows we drop
    u = torch.rand((len(n), 2), generator=generator, dtype=torch.float64,
                   device=generator.device).to(device)
    if opts.draw_both:
        s, e = _draw_both_spans(m, opts, u)
    elif opts.uniform:
        s, e = _uniform_spans(m, u)
    else:
        s, e = _default_spans(m, opts, u)
    return torch.where(ok, s, 0), torch.where(ok, e, 0)


# The published draw sequence, kept so that a seeded generator reproduces its spans exactly.

def _published_default(n, opts, g):
    s = 0 if opts.zero else int(torch.randint(0, n, (), generator=g))
    hi = n + 1 if opts.max_length < 0 else min(n + 1, s + 1 + opts.max_length)
    while True:                                     # only e is redrawn
        e = int(torch.randint(s + 1, hi, (), generator=g))
        if e - s < n:
            return s, e


def _published_draw_both(n, opts, g):
    while True:
        p1 = int(torch.randint(0, n, (1,), generator=g))
        p2 = int(torch.randint(1, n + 1, (1,), generator=g))
        s, e = min(p1, p2), max(p1, p2)
        if opts.zero:
            s = 0
        if opts.max_length >= 0 and e - s > opts.max_length:
            e = s + opts.max_length
        if s < e and e - s < n:
            return s, e


def _published_uniform(n, g):
    a = 2 * n + 1
    while True:
        r = torch.randint(0, n * (n + 1) // 2, (1,), generator=g)
        # float32 throughout, as published: r becomes float32 and a*a is promoted to float32
        s = int(torch.floor((a - torch.sqrt(a * a - 8 * r.float())) / 2))
        e = s + 1 + (int(r) - s * (2 * n - s + 1) // 2)
        if e - s < n:
            return s, e


def published_sample_spans(n: list[int], opts: SpanOptions, generator: torch.Generator):
    """The published samplers, draw for draw: same generator state, same spans.

    Draws one scalar randint per value in the published order (example by example, each
    example's `times` patches in a row), with the published retry loops. Where the published code
    would loop forever (n = 1, or max_length 0 with draw-both) or crash (n = 0, max_length 0 with
    the default sampler) this raises ValueError before drawing anything. As published, draw-both
    wins over uniform, and uniform ignores zero and max_length.
    Returns (s, e) as int64 tensors [len(n) * times].
    """
    uses_max_length = opts.draw_both or not opts.uniform
    if opts.times < 1:
        raise ValueError(f"random_span_times must be >= 1, got {opts.times}")
    if uses_max_length and opts.max_length == 0:
        raise ValueError("random_span_max_length 0 allows no patch (the published sampler hangs or crashes)")
    if any(k < 2 for k in n):
        raise ValueError(f"a trajectory of length {min(n)} has no patch shorter than itself "
                         "(the published sampler would loop forever)")
    spans = []
    for k in n:
        for _ in range(opts.times):
            if opts.draw_both:
                spans.append(_published_draw_both(k, opts, generator))
            elif opts.uniform:
                spans.append(_published_uniform(k, generator))
            else:
                spans.append(_published_default(k, opts, generator))
    s, e = zip(*spans) if spans else ((), ())
    return torch.tensor(s, dtype=torch.long), torch.tensor(e, dtype=torch.long)


# --------------------------------------------------------------------------------------
# Chords along the trajectory
# --------------------------------------------------------------------------------------

def region_positions(regions: torch.Tensor, s: torch.Tensor, e: torch.Tensor):
    """Map patch offsets (s, e) to sequence positions (ps, pe).

    Offsets past the user content jump over the header tokens, so e == nu maps to as, not ue.
    """
    us, ue, as_ = regions[:, 0], regions[:, 1], regions[:, 2]
    nu = ue - us
    ps = torch.where(s < nu, us + s, as_ + (s - nu))
    pe = torch.where(e < nu, us + e, as_ + (e - nu))
    return ps, pe


def _boundary(hidden, rows):
    """E(b) = hidden[row, b - 1] for a batch of positions b, one per example."""
    return lambda b: hidden[rows, b - 1]


def tube_vectors(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor,
                 s: torch.Tensor, e: torch.Tensor):
    """Context U = before + after and patch P chords for patches (s, e), as float32 [N, D].

    Three cases, checked in this order:
      A, patch in the assistant (ps >= as): before spans the user plus the assistant up to ps;
      B, patch in the user (pe <= ue): after spans the rest of the user plus the assistant;
      C, otherwise the patch straddles the header, and the header chord E(as) - E(ue) is left out
         of every piece (e == nu lands here with an empty assistant part).
    Each sum is written in the same left-to-right order as the published loop so results match it
    bit for bit; chords are taken in hidden's dtype and then widened to float32 as published.
    """
    us, ue, as_, ae = regions.unbind(1)
    ps, pe = region_positions(regions, s, e)
    E = _boundary(hidden, rows)
    Eus, Eue, Eas, Eae, Eps, Epe = E(us), E(ue), E(as_), E(ae), E(ps), E(pe)

    in_assistant = (ps >= as_)[:, None]
    in_user = (pe <= ue)[:, None]

    def pick(a, b, c):                                           # case A, else B, else C
        return torch.where(in_assistant, a, torch.where(in_user, b, c))

    before = pick(((Eue - Eus) + Eps) - Eas, Eps - Eus, Eps - Eus)
    patch = pick(Epe - Eps, Epe - Eps, ((Eue - Eps) + Epe) - Eas)
    after = pick(Eae - Epe, ((Eue - Epe) + Eae) - Eas, Eae - Epe)
    return (before + after).float(), patch.float()


def e2e_vectors(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor):
    """User chord E(ue) - E(us) against assistant chord E(ae) - E(as), float32 [N, D]."""
    us, ue, as_, ae = regions.unbind(1)
    E = _boundary(hidden, rows)
    return (E(ue) - E(us)).float(), (E(ae) - E(as_)).float()


def _region_mask(S, start, end):
    """[N, S] float mask of positions in [start, end) per example."""
    pos = torch.arange(S, device=start.device)
    return ((pos >= start[:, None]) & (pos < end[:, None])).float()


def mean_vectors(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor):
    """Mean hidden state of the user content and of the assistant content, float32 [N, D].

    Summed in float32 with a masked matmul, so the last bits differ from a per-example
    `.mean(0)`. An empty region gives a zero vector (its cosine is then 0) instead of NaN.
    """
    us, ue, as_, ae = regions.unbind(1)
    h = hidden[rows].float()                                     # [N, S, D]

    def mean(start, end):
        mask = _region_mask(h.shape[1], start, end)
        total = torch.bmm(mask[:, None, :], h)[:, 0]
        return total / mask.sum(1, keepdim=True).clamp(min=1)
    return mean(us, ue), mean(as_, ae)


def _turning_angles(hidden):
    """[R, S] angle at each position t >= 2 between steps h[t-1] - h[t-2] and h[t] - h[t-1].

    Computed as 2 atan2(|a/|a| - b/|b||, |a/|a| + b/|b||), which equals acos(cos) but keeps
    finite gradients where the published acos has none: on a straight stretch (cos = 1, the
    very minimum the loss pulls towards) and between equal states (padding)."""
    step = hidden.float().diff(dim=1)                            # step[k] = h[k+1] - h[k]
    unit = step / step.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    a, b = unit[:, :-1], unit[:, 1:]
    angle = 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))
    return F.pad(angle, (2, 0))                                  # no angle at t = 0, 1


def curvature_per_example(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor):
    """Mean turning angle over both content regions, float32 [N] (the loss is its mean).

    For a region [st, en) the angles are those at t = st+1 .. en-1, so the first one uses the
    step from the token before the content, h[st-1] -> h[st]. Examples with no angle give 0,
    and so do two equal consecutive states (the published acos gives NaN there).
    """
    us, ue, as_, ae = regions.unbind(1)
    angle = _turning_angles(hidden)[rows]                        # [N, S]
    S = angle.shape[1]
    mask = _region_mask(S, us + 1, ue) + _region_mask(S, as_ + 1, ae)
    total = torch.where(mask > 0, angle, 0.0).sum(1)
    count = mask.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


# --------------------------------------------------------------------------------------
# Weights and loss
# --------------------------------------------------------------------------------------

def length_weights(n: torch.Tensor, p: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Per-patch weight from the trajectory length n and patch length p, float32 [N].

    With r = n - p (the context length): "cosine_like" is 2rp / (r^2 + p^2) and "jaccard_like"
    is 1 - |r - p| / (r + p); both are 1 when patch and context are equally long. The float32
    rounding follows the published code: numerator (2.0 * r) * p in float32 over an exact integer
    denominator. Only meaningful for real patches (p >= 1).
    """
    n, p = n.long(), p.long()
    if mode is None:
        return torch.ones(len(n), dtype=torch.float32, device=n.device)
    r = n - p
    if mode == "cosine_like":
        return ((2.0 * r).float() * p) / (r * r + p * p)
    if mode == "jaccard_like":
        return 1 - (r - p).abs().float() / (r + p)
    raise ValueError(f"unknown length adjustment {mode!r}: use cosine_like or jaccard_like")


def weighted_cosine_loss(U: torch.Tensor, P: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """1 - sum(cos(U, P) * w) / sum(w), in float32."""
    cos = F.cosine_similarity(U.float(), P.float(), dim=-1, eps=1e-8)
    return 1 - (cos * w).sum() / w.sum()

