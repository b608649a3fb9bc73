"""Semantic Tube Prediction: chords, samplers, weights and losses (llm_jepa.tube).

Hand-computed values pin the geometry; tests/published_stp_reference.py (a literal re-statement of
the published per-row loops) pins the package bit for bit; exact enumerations of the published
retry loops pin the vectorised samplers' distributions.
"""
from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

import published_stp_reference as ref
from conftest import assert_same_up_to_rounding as same
from llm_jepa import tube
from llm_jepa.published.tube import curvature_published, mean_vectors_published
from llm_jepa.tube import SpanOptions


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------
# Hand-made trajectory
# --------------------------------------------------------------------------------------
# Row 0, positions 0..9. Pairs u = (0, 3), a = (5, 8), so regions (us, ue, as, ae) = (1, 4, 6, 9):
# user content 1..3, header 4..5, assistant content 6..8; nu = na = 3, n = 6. E(b) = h[b - 1].
H0 = [(0, 0), (1, 0), (1, 2), (4, 2), (100, 100), (10, -1), (10, 3), (7, 3), (7, 8), (50, 50)]
REGION = (1, 4, 6, 9)

# (s, e) -> (case, U = before + after, P = patch), worked out by hand from H0:
HAND = {
    # B, inside the user: before h1-h0 = (1,0); patch h2-h1; after (h3-h2) + (h8-h5) = (0,9)
    (1, 2): ("B", (1, 9), (0, 2)),
    (0, 2): ("B", (0, 9), (1, 2)),
    # A, inside the assistant (ps = 7, pe = 8): before (h3-h0) + h6 - h5 = (4,6); after h8-h7
    (4, 5): ("A", (4, 11), (-3, 0)),
    # A with s == nu (ps = as): before (h3-h0) + (h5-h5)
    (3, 5): ("A", (4, 7), (-3, 4)),
    # C, straddling (ps = 3, pe = 7): before h2-h0; patch (h3-h2) + h6 - h5 = (3,4); after h8-h6
    (2, 4): ("C", (-2, 7), (3, 4)),
    # C with e == nu: pe = as (not ue), so the assistant part of the patch is h5-h5 = 0
    (1, 3): ("C", (-2, 9), (3, 2)),
    (0, 3): ("C", (-3, 9), (4, 2)),
}


def hand_hidden(dtype=torch.float32):
    row0 = torch.tensor(H0, dtype=dtype)
    return torch.stack([row0, 2 * row0])  # row 1 doubles every chord


def test_hand_computed_chords_in_all_three_cases():
    spans = list(HAND)
    for row, scale in ((0, 1), (1, 2)):
        rows = torch.full((len(spans),), row)
        regions = torch.tensor([REGION] * len(spans))
        s, e = (torch.tensor(x) for x in zip(*spans))
        U, P = tube.tube_vectors(hand_hidden(), rows, regions, s, e)
        assert U.dtype == P.dtype == torch.float32
        assert U.tolist() == [[scale * v for v in HAND[k][1]] for k in spans]
        assert P.tolist() == [[scale * v for v in HAND[k][2]] for k in spans]


def test_hand_spans_agree_with_reference_case_labels():
    spans = list(HAND)
    out = ref.random_span(hand_hidden()[:1].expand(len(spans), -1, -1), torch.tensor([[0, 3]] * len(spans)),
                          torch.tensor([[5, 8]] * len(spans)), spans=spans)
    assert out["cases"] == [HAND[k][0] for k in spans]
    assert out["U"].tolist() == [list(HAND[k][1]) for k in spans]


def test_positions_skip_the_header():
    regions = torch.tensor([REGION] * 4)
    ps, pe = tube.region_positions(regions, torch.tensor([0, 2, 3, 4]), torch.tensor([1, 3, 5, 6]))
    assert ps.tolist() == [1, 3, 6, 7]
    assert pe.tolist() == [2, 6, 8, 9]   # e == nu = 3 maps to as = 6, not ue = 4


def test_header_and_trailing_states_do_not_matter_except_the_last_header_token():
    spans = list(HAND)
    rows, regions = torch.zeros(len(spans), dtype=torch.long), torch.tensor([REGION] * len(spans))
    s, e = (torch.tensor(x) for x in zip(*spans))
    base = tube.tube_vectors(hand_hidden(), rows, regions, s, e)
    moved = hand_hidden()
    moved[0, 4] = torch.tensor([-7.0, 3.0])    # first header token, and the token after the answer
    moved[0, 9] = torch.tensor([2.0, 2.0])
    assert all(torch.equal(a, b) for a, b in zip(base, tube.tube_vectors(moved, rows, regions, s, e)))
    moved[0, 5] = torch.tensor([0.0, 0.0])     # E(as) = h[a0] is a boundary state: it must matter
    assert not torch.equal(base[0], tube.tube_vectors(moved, rows, regions, s, e)[0])


def test_e2e_and_mean_by_hand():
    hidden, rows, regions = hand_hidden(), torch.tensor([0, 1]), torch.tensor([REGION, REGION])
    U, P = tube.e2e_vectors(hidden, rows, regions)
    assert U.tolist() == [[4, 2], [8, 4]] and P.tolist() == [[-3, 9], [-6, 18]]   # h3-h0, h8-h5
    U, P = tube.mean_vectors(hidden, rows, regions)
    assert torch.allclose(U, torch.tensor([[2, 4 / 3], [4, 8 / 3]]))              # mean of h1..h3
    assert torch.allclose(P, torch.tensor([[8, 14 / 3], [16, 28 / 3]]))           # mean of h6..h8


# --------------------------------------------------------------------------------------
# Straight lines and polylines
# --------------------------------------------------------------------------------------

def straight_batch(seed):
    """Packed rows whose states lie on one line and advance along it (steps k * (2, 3, 6), |.| = 7k).

    The header tokens other than the last one (h[a0], a boundary state) are thrown off the line:
    no STP term may look at them.
    """
    rng = random.Random(seed)
    rows, regions = [], []
    hidden = torch.zeros(3, 40, 3)
    for r in range(3):
        steps = torch.tensor([rng.randint(1, 3) for _ in range(40)], dtype=torch.float32)
        hidden[r] = steps.cumsum(0)[:, None] * torch.tensor([2.0, 3.0, 6.0])
        pos = 0
        while True:
            us = pos + rng.randint(1, 2)
            ue = us + rng.randint(1, 5)
            as_ = ue + rng.randint(0, 3)
            ae = as_ + rng.randint(1, 5)
            if ae > 40:
                break
            hidden[r, ue:as_ - 1] = torch.randn(max(as_ - 1 - ue, 0), 3, generator=gen(seed + pos))
            rows.append(r)
            regions.append((us, ue, as_, ae))
            pos = ae
    return hidden, torch.tensor(rows), torch.tensor(regions)


def n_of(regions):
    return (regions[:, 1] - regions[:, 0]) + (regions[:, 3] - regions[:, 2])


@pytest.mark.parametrize("opts", [SpanOptions(), SpanOptions(uniform=True), SpanOptions(draw_both=True, zero=True)])
def test_straight_line_has_zero_loss(opts):
    hidden, rows, regions = straight_batch(1)
    s, e = tube.sample_spans(n_of(regions), opts, gen(0))
    U, P = tube.tube_vectors(hidden, rows, regions, s, e)
    for mode in (None, "cosine_like"):
        w = tube.length_weights(n_of(regions), e - s, mode)
        assert abs(float(tube.weighted_cosine_loss(U, P, w))) < 1e-6
    assert abs(float(tube.weighted_cosine_loss(*tube.e2e_vectors(hidden, rows, regions), torch.ones(len(rows))))) < 1e-6
    assert torch.equal(tube.curvature_per_example(hidden, rows, regions), torch.zeros(len(rows)))
    assert float(curvature_published(hidden, rows, regions)) == 0.0
    # the assistant running backwards is not a tube: the loss must see it
    bent = hidden.clone()
    for r, (us, ue, as_, ae) in zip(rows.tolist(), regions.tolist()):
        bent[r, as_ - 1:ae] = bent[r, as_ - 1:ae].flip(0)
    U, P = tube.tube_vectors(bent, rows, regions, s, e)
    assert float(tube.weighted_cosine_loss(U, P, torch.ones(len(rows)))) > 0.05
    # nor is a zigzag across the line (curvature sees turns, not direction)
    zigzag = hidden + (torch.arange(40) % 2)[None, :, None] * torch.tensor([3.0, -2.0, 0.0])
    assert float(tube.curvature_per_example(zigzag, rows, regions).mean()) > 0.05


def test_polyline_curvature_by_hand():
    h = torch.tensor([(0, 0), (1, 0), (1, 1), (0, 1), (9, 9), (5, 0), (6, 0), (7, 0), (6, 0), (0, 0)],
                     dtype=torch.float32)[None]
    regions = torch.tensor([
        (1, 4, 6, 8),   # user angles at t = 2, 3 (both pi/2, the first reaching back to h0); assistant: 0
        (1, 2, 6, 7),   # one token per region: no angle at all
        (2, 4, 7, 9),   # user angle at t = 3 (pi/2); assistant at t = 8 (h6 -> h7 -> h8 turns back: pi)
    ])
    expected = torch.tensor([math.pi / 3, 0.0, 3 * math.pi / 4])
    rows = torch.zeros(3, dtype=torch.long)
    got = tube.curvature_per_example(h, rows, regions)
    assert torch.allclose(got, expected, atol=1e-6), got
    assert abs(float(curvature_published(h, rows, regions)) - float(expected.mean())) < 1e-6


def test_turning_by_45_degrees():
    h = torch.tensor([(0, 0), (1, 0), (2, 1), (2, 2), (0, 0)], dtype=torch.float32)[None]
    got = tube.curvature_per_example(h, torch.tensor([0]), torch.tensor([(1, 4, 4, 4)]))
    assert abs(float(got[0]) - math.pi / 4) < 1e-6


# --------------------------------------------------------------------------------------
# Weights and the weighted cosine
# --------------------------------------------------------------------------------------

def test_length_weights_by_hand():
    n, p = torch.tensor([6, 5, 4, 10, 10]), torch.tensor([2, 1, 2, 1, 9])
    assert torch.equal(tube.length_weights(n, p, None), torch.ones(5))
    cos = tube.length_weights(n, p, "cosine_like")          # 2rp / (r^2 + p^2)
    assert cos.dtype == torch.float32
    assert torch.allclose(cos, torch.tensor([16 / 20, 8 / 17, 1.0, 18 / 82, 18 / 82]), rtol=1e-7, atol=0)
    jac = tube.length_weights(n, p, "jaccard_like")         # 1 - |r - p| / (r + p)
    assert torch.allclose(jac, torch.tensor([2 / 3, 0.4, 1.0, 0.2, 0.2]), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="consine_like"):
        tube.length_weights(n, p, "consine_like")


def test_weighted_cosine_loss_by_hand():
    U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    P = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    loss = tube.weighted_cosine_loss(U, P, torch.tensor([1.0, 3.0, 0.0]))   # cos = 1, 0, -1
    assert loss.dtype == torch.float32 and abs(float(loss) - 0.75) < 1e-7
    loss = tube.weighted_cosine_loss(U, P, torch.ones(3))
    assert abs(float(loss) - 1.0) < 1e-7


# --------------------------------------------------------------------------------------
# Bit for bit against the literal reference
# --------------------------------------------------------------------------------------

def packed_batch(seed, R=3, S=32, D=8, dtype=torch.float32):
    """Random states and 1-4 examples per row, as located pairs and as regions."""
    rng = random.Random(seed)
    rows, regions = [], []
    for r in range(R):
        pos = 0
        for _ in range(rng.randint(1, 4)):
            us = pos + rng.randint(1, 3)
            ue = us + rng.randint(1, 6)
            as_ = ue + rng.randint(0, 3)
            ae = as_ + rng.randint(1, 6)
            if ae > S:
                break
            rows.append(r)
            regions.append((us, ue, as_, ae))
            pos = ae
    hidden = torch.randn(R, S, D, generator=gen(seed)).to(dtype)
    return hidden, torch.tensor(rows), torch.tensor(regions)


def as_pairs(regions):
    """Regions back to the located pairs the published code stores."""
    return regions[:, :2] - 1, regions[:, 2:] - 1


def adjusted(regions, e2e=False, all_=False):
    """--random_span_e2e starts the assistant region at ue; --random_span_all starts the user at 1."""
    regions = regions.clone()
    if e2e:
        regions[:, 2] = regions[:, 1]
    if all_:
        regions[:, 0] = 1
    return regions


def package_random_span(hidden, rows, regions, s, e, times, mode):
    rows, regions = rows.repeat_interleave(times), regions.repeat_interleave(times, 0)
    U, P = tube.tube_vectors(hidden, rows, regions, s, e)
    w = tube.length_weights(n_of(regions), e - s, mode)
    return {"loss": tube.weighted_cosine_loss(U, P, w), "U": U, "P": P, "w": w}


def ref_opts(opts):
    return dict(zero=opts.zero, max_len=opts.max_length, draw_both=opts.draw_both, uniform=opts.uniform)


CASES = [
    (SpanOptions(), None, False, False, torch.float32),
    (SpanOptions(times=3), "cosine_like", False, False, torch.float32),
    (SpanOptions(zero=True, max_length=3), "jaccard_like", True, False, torch.float32),
    (SpanOptions(draw_both=True, times=2), "cosine_like", False, True, torch.float32),
    (SpanOptions(draw_both=True, zero=True, max_length=2), None, True, True, torch.float32),
    (SpanOptions(uniform=True, times=2), "jaccard_like", False, False, torch.float32),
    (SpanOptions(uniform=True, zero=True, max_length=1), None, False, False, torch.float32),  # ignored, as published
    (SpanOptions(times=2), "cosine_like", False, False, torch.bfloat16),
]


@pytest.mark.parametrize("opts,mode,e2e,all_,dtype", CASES)
def test_random_span_is_bit_identical_to_reference(opts, mode, e2e, all_, dtype):
    hidden, rows, regions = packed_batch(7, dtype=dtype)
    user_se, asst_se = as_pairs(regions)
    want = ref.random_span(hidden[rows], user_se, asst_se, gen(11), T=opts.times, e2e=e2e, all_=all_,
                           length_adjustment=mode, **ref_opts(opts))
    regions = adjusted(regions, e2e, all_)
    s, e = tube.published_sample_spans(n_of(regions).tolist(), opts, gen(11))
    assert list(zip(s.tolist(), e.tolist())) == want["spans"]
    got = package_random_span(hidden, rows, regions, s, e, opts.times, mode)
    for key in ("U", "P", "w", "loss"):
        assert torch.equal(got[key], want[key]), key


def test_vectorised_spans_cover_every_case_bit_for_bit():
    hidden, rows, regions = packed_batch(3, R=4, S=48)
    opts = SpanOptions(times=25)
    s, e = tube.sample_spans(n_of(regions), opts, gen(5))
    user_se, asst_se = as_pairs(regions)
    want = ref.random_span(hidden[rows], user_se, asst_se, T=opts.times, spans=list(zip(s.tolist(), e.tolist())))
    got = package_random_span(hidden, rows, regions, s, e, opts.times, None)
    assert set(want["cases"]) == {"A", "B", "C"}
    nu = (regions[:, 1] - regions[:, 0]).repeat_interleave(opts.times)
    assert bool((e == nu).any())
    assert torch.equal(got["U"], want["U"]) and torch.equal(got["P"], want["P"])
    assert torch.equal(got["loss"], want["loss"])


def test_summation_order_is_visible_to_the_bit_checks():
    """The published left-to-right order is not a formality: regrouping changes the last bits."""
    h = torch.randn(256, 4, 8, generator=gen(0))
    published = ((h[:, 0] - h[:, 1]) + h[:, 2]) - h[:, 3]
    regrouped = (h[:, 0] - h[:, 1]) + (h[:, 2] - h[:, 3])
    assert not torch.equal(published, regrouped)


def test_gradients_match_reference():
    hidden, rows, regions = packed_batch(5)
    s, e = tube.sample_spans(n_of(regions), SpanOptions(times=2), gen(1))
    a = hidden.clone().requires_grad_()
    package_random_span(a, rows, regions, s, e, 2, "cosine_like")["loss"].backward()
    b = hidden.clone().requires_grad_()
    user_se, asst_se = as_pairs(regions)
    ref.random_span(b[rows], user_se, asst_se, T=2, length_adjustment="cosine_like",
                    spans=list(zip(s.tolist(), e.tolist())))["loss"].backward()
    same(a.grad, b.grad, what="grad")
    assert float(a.grad.abs().max()) > 0


def test_e2e_is_bit_identical_to_reference():
    hidden, rows, regions = packed_batch(9)
    want = ref.e2e(hidden[rows], *as_pairs(regions))
    U, P = tube.e2e_vectors(hidden, rows, regions)
    assert torch.equal(U, want["U"]) and torch.equal(P, want["P"])
    assert torch.equal(tube.weighted_cosine_loss(U, P, torch.ones(len(rows))), want["loss"])


def test_mean_matches_reference():
    hidden, rows, regions = packed_batch(13)
    want = ref.mean(hidden[rows], *as_pairs(regions))
    U, P = mean_vectors_published(hidden, rows, regions)
    assert torch.equal(U, want["U"]) and torch.equal(P, want["P"])
    assert torch.equal(tube.weighted_cosine_loss(U, P, torch.ones(len(rows))), want["loss"])
    U, P = tube.mean_vectors(hidden, rows, regions)
    same(U, want["U"], what="U")
    same(P, want["P"], what="P")
    same(tube.weighted_cosine_loss(U, P, torch.ones(len(rows))), want["loss"], what="loss")


def test_curvature_matches_reference():
    hidden, rows, regions = packed_batch(17)
    regions[0, 1] = regions[0, 0] + 1                 # a one-token user region contributes nothing
    want = ref.curvature(hidden[rows], *as_pairs(regions))
    assert torch.equal(curvature_published(hidden, rows, regions), want["loss"])
    got = tube.curvature_per_example(hidden, rows, regions)
    same(got, want["per_example"], what="per example")
    same(got.mean(), want["loss"], what="loss")


# --------------------------------------------------------------------------------------
# The published draw sequence
# --------------------------------------------------------------------------------------

SAMPLERS = [SpanOptions(zero=z, max_length=m, draw_both=d)
            for d in (False, True) for z in (False, True) for m in (-1, 1, 2, 5)]
SAMPLERS += [SpanOptions(uniform=True), SpanOptions(uniform=True, max_length=0, zero=True),
             SpanOptions(uniform=True, draw_both=True, max_length=2)]   # draw-both wins


@pytest.mark.parametrize("opts", SAMPLERS)
def test_published_draws_reproduce_reference(opts):
    ns = [2, 3, 4, 7, 2, 12, 30, 5, 2, 6] * 5
    for seed in (0, 1, 2024):
        s, e = tube.published_sample_spans(ns, opts, gen(seed))
        want = ref.draw_spans(ns, opts.times, gen(seed), **ref_opts(opts))
        assert list(zip(s.tolist(), e.tolist())) == want
    g1, g2 = gen(4), gen(4)                           # times > 1: each example's patches in a row
    s, e = tube.published_sample_spans(ns, dataclasses.replace(opts, times=3), g1)
    assert list(zip(s.tolist(), e.tolist())) == ref.draw_spans(ns, 3, g2, **ref_opts(opts))
    assert torch.equal(g1.get_state(), g2.get_state())   # and the same number of words consumed


def test_published_draws_fail_instead_of_hanging():
    with pytest.raises(ValueError, match="loop forever"):
        tube.published_sample_spans([4, 1, 5], SpanOptions(), gen(0))
    with pytest.raises(ValueError, match="loop forever"):
        tube.published_sample_spans([4, 1], SpanOptions(uniform=True), gen(0))
    with pytest.raises(ValueError):
        tube.published_sample_spans([0], SpanOptions(), gen(0))
    for opts in (SpanOptions(max_length=0), SpanOptions(draw_both=True, max_length=0)):
        with pytest.raises(ValueError, match="max_length 0"):
            tube.published_sample_spans([4, 5], opts, gen(0))
    g = gen(0)
    before = g.get_state()
    with pytest.raises(ValueError):
        tube.published_sample_spans([4, 1], SpanOptions(), g)
    assert torch.equal(g.get_state(), before)         # nothing drawn


# --------------------------------------------------------------------------------------
# The vectorised samplers' distributions
# --------------------------------------------------------------------------------------

def assert_matches(s, e, exact, sigmas=5.0):
    """Empirical (s, e) frequencies match the exact distribution within `sigmas` standard errors."""
    count, width = len(s), int(e.max()) + 1
    counts = torch.bincount(s * width + e).tolist()
    observed = {(k // width, k % width): c for k, c in enumerate(counts) if c}
    assert set(observed) <= set(exact), f"impossible pairs drawn: {set(observed) - set(exact)}"
    for pair, p in exact.items():
        p = float(p)
        f = observed.get(pair, 0) / count
        assert abs(f - p) <= sigmas * math.sqrt(p * (1 - p) / count) + 1e-12, (pair, f, p)


DIST_OPTIONS = [SpanOptions(zero=z, max_length=m, draw_both=d)
                for d in (False, True) for z in (False, True) for m in (-1, 1, 2, 3, 5)]
DIST_OPTIONS += [SpanOptions(uniform=True)]


@pytest.mark.parametrize("opts", DIST_OPTIONS)
def test_sampler_distribution_is_the_published_one(opts):
    ns = torch.arange(2, 7)
    draws = 200_000
    s, e = tube.sample_spans(ns.repeat_interleave(draws), opts, gen(42))
    n = ns.repeat_interleave(draws)
    assert bool(((0 <= s) & (s < e) & (e <= n) & (e - s < n)).all())
    if opts.max_length > 0:
        assert bool((e - s <= opts.max_length).all())
    if opts.zero:
        assert bool((s == 0).all())
    for k, nk in enumerate(ns.tolist()):
        part = slice(k * draws, (k + 1) * draws)
        assert_matches(s[part], e[part], ref.exact_distribution(nk, **ref_opts(opts)))


def test_distribution_check_has_power():
    """The check above rejects a sampler that is plausible but not the published one."""
    s, e = tube.sample_spans(torch.full((200_000,), 5), SpanOptions(draw_both=True), gen(0))
    with pytest.raises(AssertionError):
        assert_matches(s, e, ref.exact_distribution(5, uniform=True))
    with pytest.raises(AssertionError):
        assert_matches(s, e, ref.exact_distribution(5))
    s, e = tube.sample_spans(torch.full((200_000,), 5), SpanOptions(draw_both=True, max_length=2), gen(0))
    with pytest.raises(AssertionError):   # clipping instead of rejecting long spans moves mass to length 2
        cond = {k: v for k, v in ref.exact_distribution(5, draw_both=True).items() if k[1] - k[0] <= 2}
        total = sum(cond.values())
        assert_matches(s, e, {k: v / total for k, v in cond.items()})


def exact_grid(total):
    """Float64 uniforms that hit every integer in [0, total) exactly once."""
    return (torch.arange(total, dtype=torch.float64) + 0.5) / total


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16, 4097])
def test_uniform_sampler_enumerates_every_pair_but_the_whole_span(n):
    total = n * (n + 1) // 2 - 1
    u = exact_grid(total)[:, None].expand(-1, 2)
    s, e = tube._uniform_spans(torch.full((total,), n), u)
    a = torch.arange(n + 1)
    want = (a[:, None] * (n + 1) + a[None, :])[a[:, None] < a[None, :]]     # every s < e, row-major
    want = want[want != n]                                                  # but (0, n)
    assert torch.equal(s * (n + 1) + e, want)                               # in enumeration order


@pytest.mark.parametrize("n,max_length", [(2, -1), (3, -1), (5, -1), (5, 2), (6, 5), (6, 9)])
def test_draw_both_sampler_is_exactly_the_conditioned_published_one(n, max_length):
    opts = SpanOptions(draw_both=True, max_length=max_length)
    total = n * (n - 1) + int(0 <= max_length < n)
    u = exact_grid(total)[:, None].expand(-1, 2)
    s, e = tube._draw_both_spans(torch.full((total,), n), opts, u)
    got = {}
    for pair in zip(s.tolist(), e.tolist()):
        got[pair] = got.get(pair, 0) + 1
    exact = ref.exact_distribution(n, draw_both=True, max_len=max_length)
    assert {k: v / total for k, v in got.items()} == {k: float(v) for k, v in exact.items()}


def test_times_order_and_short_rows():
    opts = SpanOptions(times=3)
    s, e = tube.sample_spans(torch.tensor([2, 1, 0, 50]), opts, gen(3))
    assert len(s) == 12
    assert all((a, b) in ((0, 1), (1, 2)) for a, b in zip(s[:3].tolist(), e[:3].tolist()))
    assert s[3:9].tolist() == [0] * 6 and e[3:9].tolist() == [0] * 6   # no patch: s = e = 0
    assert bool((e[9:] - s[9:] >= 1).all()) and int(e[9:].max()) > 2


def test_span_problems():
    assert tube.span_problems(SpanOptions()) == []
    assert tube.span_problems(SpanOptions(draw_both=True, zero=True, max_length=4, times=2)) == []
    for bad in (SpanOptions(max_length=0), SpanOptions(max_length=-3), SpanOptions(times=0),
                SpanOptions(uniform=True, zero=True), SpanOptions(uniform=True, max_length=3),
                SpanOptions(uniform=True, draw_both=True)):
        assert tube.span_problems(bad), bad
        with pytest.raises(ValueError):
            tube.sample_spans(torch.tensor([5]), bad, gen(0))


def test_curvature_gradients_stay_finite_on_straight_lines_and_padding():
    """The default curvature's gradient is finite where acos has none: a straight stretch
    (the minimum it trains towards) and repeated states (padding columns)."""
    line = torch.arange(8, dtype=torch.float32)[:, None] * torch.tensor([1.0, 2.0, 0.5])
    padded = torch.cat([line[:1].repeat(3, 1), line])[None].requires_grad_(True)   # 3 equal pad states
    regions = torch.tensor([[5, 7, 8, 11]])
    per_example = tube.curvature_per_example(padded, torch.tensor([0]), regions)
    assert per_example.abs().max() < 1e-3
    per_example.sum().backward()
    assert torch.isfinite(padded.grad).all()
