"""The published STP ablations' per-example loops, where vectorising changes float rounding.

The published code averages the content states with one `.mean(0)` per example and sums the
curvature angles one at a time from a Python 0.0. `llm_jepa.tube` does both with masked
reductions, which agree to float32 rounding but not bit for bit; these loops reproduce the
published numbers exactly. The random-span and e2e chords of `llm_jepa.tube` have the
published values bit for bit, but their gradients reach the hidden states summed in another
order; the loops here build the published autograd graph, row by row into zero buffers, so
that a compat run's weights match the published run's too.
"""
from __future__ import annotations

import torch


def mean_vectors_published(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor):
    """Per example, the mean of the user and of the assistant content states, float32 [N, D]."""
    U = torch.zeros(len(rows), hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    P = torch.zeros_like(U)
    for j, (row, (us, ue, as_, ae)) in enumerate(zip(rows.tolist(), regions.tolist())):
        U[j] = hidden[row, us:ue].mean(0)
        P[j] = hidden[row, as_:ae].mean(0)
    return U, P


def _region_angles(h: torch.Tensor, st: int, en: int):
    """Sum of turning angles at t = st+1 .. en-1 (reaching back to h[st-1]) and their count."""
    if en - st <= 1:
        return 0.0, 0
    total = 0.0                                   # a Python number, as published
    for t in range(st + 1, en):
        a, b = h[t - 1] - h[t - 2], h[t] - h[t - 1]
        cos = torch.dot(a, b) / (torch.norm(a) * torch.norm(b))
        total = total + torch.acos(torch.clamp(cos, -1, 1))
    return total, en - st - 1


def curvature_published(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The curvature loss: per example (angle sum) / (angle count) over both regions, then the mean."""
    per_example = []
    for row, (us, ue, as_, ae) in zip(rows.tolist(), regions.tolist()):
        su, cu = _region_angles(hidden[row], us, ue)
        sa, ca = _region_angles(hidden[row], as_, ae)
        c = (su + sa) / (cu + ca) if cu + ca > 0 else 0.0
        per_example.append(torch.as_tensor(c, dtype=hidden.dtype, device=hidden.device))
    return torch.stack(per_example).mean()


def tube_vectors_published(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor,
                           s: torch.Tensor, e: torch.Tensor):
    """The context and patch chords (float32 [N, D]) as the published loop builds them."""
    U = torch.zeros(len(rows), hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    P = torch.zeros_like(U)
    for j, (row, (us, ue, as_, ae), a, b) in enumerate(zip(rows.tolist(), regions.tolist(), s.tolist(), e.tolist())):
        h, nu = hidden[row], ue - us
        ps = us + a if a < nu else as_ + (a - nu)
        pe = us + b if b < nu else as_ + (b - nu)

        def E(at):
            return h[at - 1]
        if ps >= as_:        # the patch lies in the answer
            before, patch, after = E(ue) - E(us) + E(ps) - E(as_), E(pe) - E(ps), E(ae) - E(pe)
        elif pe <= ue:       # the patch lies in the user's content
            before, patch, after = E(ps) - E(us), E(pe) - E(ps), E(ue) - E(pe) + E(ae) - E(as_)
        else:                # the patch straddles the two
            before, patch, after = E(ps) - E(us), E(ue) - E(ps) + E(pe) - E(as_), E(ae) - E(pe)
        U[j] = before + after
        P[j] = patch
    return U, P


def e2e_vectors_published(hidden: torch.Tensor, rows: torch.Tensor, regions: torch.Tensor):
    """The user's and the answer's chords (float32 [N, D]) as the published loop builds them."""
    U = torch.zeros(len(rows), hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    P = torch.zeros_like(U)
    for j, (row, (us, ue, as_, ae)) in enumerate(zip(rows.tolist(), regions.tolist())):
        U[j] = hidden[row, ue - 1] - hidden[row, us - 1]
        P[j] = hidden[row, ae - 1] - hidden[row, as_ - 1]
    return U, P
