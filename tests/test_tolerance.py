"""The equivalence tolerance (conftest.assert_same_up_to_rounding) separates rounding from bugs.

Both directions are checked on the tiny models the equivalence tests use: a reordered
float32 computation passes, and a wrong mask, position or embedding index fails by a wide
margin. If a change to the tolerance made it blind to such bugs, these tests say so.
"""
from __future__ import annotations

import pytest
import torch

from conftest import FP32_EPS, ULPS, assert_same_up_to_rounding as same, fp32_tolerance
from llm_jepa import layouts
from llm_jepa.collate import PackCollator, PadCollator
from test_packing import features, losses_and_grads, model_for

# A real bug must exceed the tolerance by at least this factor, so that the tolerance
# could grow a lot before it hid one.
MARGIN = 100


def test_reordered_sums_pass():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4096, generator=g)
    w = torch.randn(4096, 32, generator=g)
    blocked = sum(x[:, i:i + 512] @ w[i:i + 512] for i in range(0, 4096, 512))  # another summation order
    same(blocked, x @ w)
    perm = torch.randperm(4096, generator=g)
    same(x[:, perm].sum(1), x.sum(1))


def test_tolerance_is_relative_to_the_tensor_scale():
    t = torch.tensor([1000.0, 1e-6])
    assert fp32_tolerance(t) == pytest.approx(ULPS * FP32_EPS * 1000.0)
    same(t + torch.tensor([0.0, 1e-3]), t)  # the small element carries the large one's rounding
    with pytest.raises(AssertionError, match="not a rounding difference"):
        same(t * (1 + 1e-3), t)


def _excess(actual, expected) -> float:
    """How many tolerances apart two results are."""
    return float((actual - expected).abs().max()) / fp32_tolerance(expected)


@pytest.fixture(scope="module")
def reference(tiny_tokenizer):
    feats = features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    model = model_for("llama", tiny_tokenizer, lora=False)
    packed = layouts.packed(PackCollator(pad)(feats))
    three = losses_and_grads(model, layouts.three_pass(PadCollator(pad, same_length=True)(feats)))
    return model, feats, pad, packed, three


def test_correct_layout_is_within_tolerance(reference):
    model, _, _, packed, three = reference
    for got, want in zip(losses_and_grads(model, packed), three):
        assert _excess(got, want) <= 1


def test_embedding_read_one_token_early_fails(reference):
    model, _, _, packed, (_, j3, g3) = reference
    rows, pos = packed.text_at
    _, jp, gp = losses_and_grads(model, layouts.Layout(packed.kwargs, packed.labels, (rows, pos - 1), packed.code_at))
    assert _excess(jp, j3) > MARGIN and _excess(gp, g3) > MARGIN


def test_segments_that_do_not_restart_positions_fail(reference):
    """Positions counting on across a packed row make the views attend to each other.

    A random-init model attends almost uniformly, so the LM loss alone moves by only a few
    tolerances (most Full views sit alone in their row); the JEPA loss and the gradients
    move by thousands. This is why the equivalence tests compare gradients too."""
    model, _, _, packed, (_, j3, g3) = reference
    ids = packed.kwargs["input_ids"]
    kwargs = dict(packed.kwargs, position_ids=torch.arange(ids.shape[1]).expand_as(ids).contiguous())
    _, jp, gp = losses_and_grads(model, layouts.Layout(kwargs, packed.labels, packed.text_at, packed.code_at))
    assert _excess(jp, j3) > MARGIN and _excess(gp, g3) > MARGIN


def test_additive_mask_letting_code_see_text_fails(reference):
    model, feats, pad, _, (_, j3, _) = reference
    lay = layouts.additive(PadCollator(pad)(feats), torch.float32, pad, 512)
    mask = lay.kwargs["attention_mask"]
    causal = torch.ones(mask.shape[-2:], dtype=torch.bool).tril()
    leaky = torch.where(causal, torch.zeros_like(mask), mask)  # plain causal: Code attends to Text
    _, ja, _ = losses_and_grads(model, layouts.Layout(dict(lay.kwargs, attention_mask=leaky), lay.labels,
                                                    lay.text_at, lay.code_at))
    assert _excess(ja, j3) > MARGIN
