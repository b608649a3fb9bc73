"""An independent, literal re-statement of the published STP loss (`stp.py`), written from a
description of its behaviour and not from `llm_jepa.tube`, used to check the package bit for bit.

It follows the published code's shape on purpose: one example per batch row, the located pairs
(u0, u1) and (a0, a1) (the token before the content and the last content token), per-row Python
loops that fill zero buffers, scalar randint draws in the published order with the published
retry loops, and angle sums that start from a Python 0.0. The only deliberate change is a guard
that turns the published infinite retry loops into an error, so that a test cannot hang.
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

MAX_TRIES = 10_000


# --------------------------------------------------------------------------------------
# Samplers: one attempt at a time, so exact distributions can enumerate the same steps
# --------------------------------------------------------------------------------------

def draw_both_attempt(n, p1, p2, zero, max_len):
    s = min(p1, p2)
    e = max(p1, p2)
    if zero:
        s = 0
    if max_len >= 0 and e - s > max_len:
        e = s + max_len
    return s, e, (s < e and e - s < n)


def uniform_attempt(n, r):
    """r is a (1,)-shaped int64 tensor; s is found with float32 arithmetic."""
    s = torch.floor(((2 * n + 1) - torch.sqrt((2 * n + 1) ** 2 - 8 * r.float())) / 2).long().item()
    prev = s * (2 * n - s + 1) // 2
    e = s + 1 + (r.item() - prev)
    return s, e, e - s < n


def default_upper(n, s, max_len):
    hi = n + 1
    if max_len >= 0:
        hi = min(n + 1, s + 1 + max_len)
    return hi


def sample(n, g, zero=False, max_len=-1, draw_both=False, uniform=False):
    """One published sample(n): offsets (s, e)."""
    if draw_both:
        for _ in range(MAX_TRIES):
            p1 = torch.randint(0, n, (1,), generator=g).item()
            p2 = torch.randint(1, n + 1, (1,), generator=g).item()
            s, e, ok = draw_both_attempt(n, p1, p2, zero, max_len)
            if ok:
                return s, e
    elif uniform:
        for _ in range(MAX_TRIES):
            r = torch.randint(0, n * (n + 1) // 2, (1,), generator=g)
            s, e, ok = uniform_attempt(n, r)
            if ok:
                return s, e
    else:
        s = 0 if zero else torch.randint(0, n, (), generator=g).item()
        hi = default_upper(n, s, max_len)
        for _ in range(MAX_TRIES):
            e = torch.randint(s + 1, hi, (), generator=g).item()
            if e - s < n:
                return s, e
    raise RuntimeError("the published sampler would loop forever here")


def draw_spans(ns, T, g, **opts):
    """The random_span draw order: j = 0 .. B*T-1, row i = j // T."""
    return [sample(ns[j // T], g, **opts) for j in range(len(ns) * T)]


def exact_distribution(n, zero=False, max_len=-1, draw_both=False, uniform=False):
    """{(s, e): probability} of one sample(n), by enumerating every value of every draw.

    Each attempt is independent, so a retry loop yields the attempt distribution conditioned on
    acceptance; the default sampler retries only e, so it conditions per s.
    """
    out = {}
    if draw_both:
        tries = [draw_both_attempt(n, p1, p2, zero, max_len) for p1 in range(n) for p2 in range(1, n + 1)]
        accepted = [(s, e) for s, e, ok in tries if ok]
        for pair in accepted:
            out[pair] = out.get(pair, 0) + Fraction(1, len(accepted))
    elif uniform:
        tries = [uniform_attempt(n, torch.tensor([r])) for r in range(n * (n + 1) // 2)]
        accepted = [(s, e) for s, e, ok in tries if ok]
        for pair in accepted:
            out[pair] = out.get(pair, 0) + Fraction(1, len(accepted))
    else:
        starts = [0] if zero else list(range(n))
        for s in starts:
            ends = [e for e in range(s + 1, default_upper(n, s, max_len)) if e - s < n]
            for e in ends:
                out[(s, e)] = out.get((s, e), 0) + Fraction(1, len(starts)) * Fraction(1, len(ends))
    return out


# --------------------------------------------------------------------------------------
# The --linear modes
# --------------------------------------------------------------------------------------

def weight(n, p, length_adjustment):
    if length_adjustment is None:
        return 1.0
    r = torch.tensor(n - p)
    p = torch.tensor(p)
    if length_adjustment == "cosine_like":
        return 2.0 * r * p / (r * r + p * p)
    if length_adjustment == "jaccard_like":
        return 1 - torch.abs(r - p) / (r + p)
    raise ValueError(length_adjustment)


def jepa_cosine(U, P, w):
    return 1 - (F.cosine_similarity(U, P, dim=-1, eps=1e-8) * w).sum() / w.sum()


def random_span(H, user_se, asst_se, g=None, T=1, e2e=False, all_=False, length_adjustment=None,
                spans=None, **opts):
    """--linear random_span. Draws from g unless `spans` (one (s, e) per j) is given."""
    user_se, asst_se = user_se.clone(), asst_se.clone()
    B, D = H.shape[0], H.shape[-1]
    U = torch.zeros(B * T, D, dtype=torch.float32)
    P = torch.zeros(B * T, D, dtype=torch.float32)
    w = torch.ones(B * T, dtype=torch.float32)
    cases, drawn = [], []
    for j in range(B * T):
        i = j // T
        if e2e:
            asst_se[i, 0] = user_se[i, 1]
        if all_:
            user_se[i, 0] = 0
        h = H[i]
        us, ue = user_se[i, 0].item() + 1, user_se[i, 1].item() + 1
        as_, ae = asst_se[i, 0].item() + 1, asst_se[i, 1].item() + 1
        nu, na = ue - us, ae - as_
        n = nu + na
        s, e = spans[j] if spans is not None else sample(n, g, **opts)
        drawn.append((s, e))
        ps = us + s if s < nu else as_ + (s - nu)
        pe = us + e if e < nu else as_ + (e - nu)

        def E(b):
            return h[b - 1]
        if ps >= as_:
            cases.append("A")
            before = E(ue) - E(us) + E(ps) - E(as_)
            patch = E(pe) - E(ps)
            after = E(ae) - E(pe)
        elif pe <= ue:
            cases.append("B")
            before = E(ps) - E(us)
            patch = E(pe) - E(ps)
            after = E(ue) - E(pe) + E(ae) - E(as_)
        else:
            cases.append("C")
            before = E(ps) - E(us)
            patch = E(ue) - E(ps) + E(pe) - E(as_)
            after = E(ae) - E(pe)
        U[j] = before + after
        P[j] = patch
        w[j] = weight(n, e - s, length_adjustment)
    return {"loss": jepa_cosine(U, P, w), "U": U, "P": P, "w": w, "spans": drawn, "cases": cases}


def e2e(H, user_se, asst_se):
    B, D = H.shape[0], H.shape[-1]
    U = torch.zeros(B, D, dtype=torch.float32)
    P = torch.zeros(B, D, dtype=torch.float32)
    for i in range(B):
        u0, u1 = user_se[i].tolist()
        a0, a1 = asst_se[i].tolist()
        U[i] = H[i, u1] - H[i, u0]
        P[i] = H[i, a1] - H[i, a0]
    return {"loss": jepa_cosine(U, P, torch.ones(B, dtype=torch.float32)), "U": U, "P": P}


def mean(H, user_se, asst_se):
    B, D = H.shape[0], H.shape[-1]
    U = torch.zeros(B, D, dtype=torch.float32)
    P = torch.zeros(B, D, dtype=torch.float32)
    for i in range(B):
        u0, u1 = user_se[i].tolist()
        a0, a1 = asst_se[i].tolist()
        U[i] = H[i, u0 + 1:u1 + 1].mean(0)
        P[i] = H[i, a0 + 1:a1 + 1].mean(0)
    return {"loss": jepa_cosine(U, P, torch.ones(B, dtype=torch.float32)), "U": U, "P": P}


def _curve(h, st, en):
    if en - st <= 1:
        return 0.0, 0
    total = 0.0
    for t in range(st + 1, en):
        a = h[t - 1] - h[t - 2]
        b = h[t] - h[t - 1]
        total = total + torch.acos(torch.clamp(torch.dot(a, b) / (torch.norm(a) * torch.norm(b)), -1, 1))
    return total, en - st - 1


def curvature(H, user_se, asst_se):
    cs = []
    for i in range(H.shape[0]):
        u0, u1 = user_se[i].tolist()
        a0, a1 = asst_se[i].tolist()
        su, cu = _curve(H[i], u0 + 1, u1 + 1)
        sa, ca = _curve(H[i], a0 + 1, a1 + 1)
        if cu + ca > 0:
            cs.append((su + sa) / (cu + ca))
        else:
            cs.append(torch.tensor(0.0, dtype=H.dtype))
    cs = [torch.as_tensor(c, dtype=H.dtype) for c in cs]
    return {"loss": torch.stack(cs).mean(), "per_example": torch.stack(cs)}
