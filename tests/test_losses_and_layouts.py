"""Loss functions against hand-computed values; layouts against each other."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_same_up_to_rounding as same, example, synthetic_rows
from llm_jepa import data as D
from llm_jepa import losses, layouts
from llm_jepa.collate import PadCollator
from llm_jepa.families import family_by_name
from llm_jepa.flops import segment_lengths
from llm_jepa.published import forward as published_forward
from llm_jepa.trainer import forward_layout, shifted_targets

T = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
C = torch.tensor([[1.0, 1.0], [0.0, -1.0]])


def test_cosine_loss():
    # cos = [1/sqrt(2), -1]
    assert losses.cosine_loss(T, C).item() == pytest.approx(1 - (1 / math.sqrt(2) - 1) / 2)


def test_l2_loss():
    # distances: |(0,-1)| = 1, |(0,3)| = 3
    assert losses.l2_loss(T, C).item() == pytest.approx(2.0)


def test_mse_loss():
    # squared errors 0, 1, 0, 9 over four elements
    assert losses.mse_loss(T, C).item() == pytest.approx(2.5)


def test_infonce_loss():
    s = 1 / math.sqrt(2)
    cos = [[s, 0.0], [s, -1.0]]  # cos(t_i, c_j)
    expected = 0.0
    for i in range(2):
        logits = [x / 0.07 for x in cos[i]]
        expected += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    assert losses.infonce_loss(T, C).item() == pytest.approx(expected / 2, rel=1e-6)


def test_combine():
    assert losses.combine(torch.tensor(2.0), torch.tensor(0.5), gamma=1.0, lbd=0.1).item() == pytest.approx(2.05)


def test_lm_loss_sum_ignores_minus_100():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    targets = torch.tensor([[0, -100]])
    total, count = losses.lm_loss_sum(logits, targets)
    assert count.item() == 1 and total.item() == pytest.approx(math.log(2))


# --------------------------------------------------------------------------------------
# layouts: the additive mask equals the 3-pass path
# --------------------------------------------------------------------------------------
def tiny_model(tokenizer, attn: str):
    from transformers import AutoModelForCausalLM

    from llm_jepa.tiny import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config("llama", tokenizer, attn_implementation=attn)
    return AutoModelForCausalLM.from_config(cfg).eval()


def batch_features(tokenizer, n=4, predictors=0):
    rows = synthetic_rows(n, seed=3)
    rows[1] = example(user="a much longer description " * 6, answer="(dog).*")  # uneven lengths
    renderer = D.ViewRenderer(tokenizer, family_by_name("llama"), D.ViewOptions(predictors=predictors), {})
    feats, _ = D.tokenize_examples(rows, renderer, D.ViewTokenizer(tokenizer, D.TokenizeOptions()), True)
    return feats


def run(model, layout):
    hidden, logits, keep = forward_layout(model, layout, need_hidden=True)
    lm, count = losses.lm_loss_sum(logits, shifted_targets(layout.labels, keep))
    t = layouts.gather_embeddings(hidden, layout.text_at)
    c = layouts.gather_embeddings(hidden, layout.code_at)
    return lm, count, t, c


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_additive_equals_three_pass(tiny_tokenizer, attn, side):
    model = tiny_model(tiny_tokenizer, attn)
    feats = batch_features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    three = layouts.three_pass(PadCollator(pad, same_length=True, padding_side=side)(feats))
    add = layouts.additive(PadCollator(pad, padding_side=side)(feats), torch.float32, pad, 512)
    with torch.no_grad():
        lm3, n3, t3, c3 = run(model, three)
        lma, na, ta, ca = run(model, add)
    assert n3 == na
    same(lma, lm3, what="lm loss sum")
    same(ta, t3, what="Text embeddings")
    same(ca, c3, what="Code embeddings")
    assert torch.isfinite(lma)


def test_additive_gradients_equal_three_pass(tiny_tokenizer):
    feats = batch_features(tiny_tokenizer, predictors=0)
    pad = tiny_tokenizer.pad_token_id
    grads = []
    for layout in (layouts.three_pass(PadCollator(pad, same_length=True)(feats)),
                   layouts.additive(PadCollator(pad)(feats), torch.float32, pad, 512)):
        model = tiny_model(tiny_tokenizer, "sdpa")
        lm, count, t, c = run(model, layout)
        (lm / count + losses.cosine_loss(t, c)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    same(grads[1], grads[0], what="gradients")


def test_additive_mask_has_no_nan_under_eager_but_published_mask_does(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, "eager")
    feats = batch_features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    add = layouts.additive(PadCollator(pad)(feats), torch.float32, pad, 512)
    published = published_forward.additive_layout(PadCollator(pad, pad_to=512, with_positions=False)(feats), -1)
    with torch.no_grad():
        assert torch.isfinite(model(**add.kwargs).logits).all()
        assert torch.isnan(model(**{k: v for k, v in published.kwargs.items() if k != "labels"}).logits).any()


def test_additive_truncates_when_text_and_code_exceed_max_length(tiny_tokenizer):
    feats = batch_features(tiny_tokenizer)
    for f in feats:  # short Full views: the Text||Code rows set the width
        f["input_ids"], f["labels"] = f["input_ids"][:8], f["labels"][:8]
    pad = tiny_tokenizer.pad_token_id
    batch = PadCollator(pad)(feats)
    t_len = batch["text_at"] + 1
    add = layouts.additive(batch, torch.float32, pad, max_length=int(t_len.max()) + 2)
    cap = int(t_len.max()) + 2
    assert add.kwargs["input_ids"].shape[1] <= cap
    rows, code_pos = add.code_at
    kept = code_pos - t_len + 1  # Code tokens kept in each row
    assert (code_pos < cap).all() and (kept >= 1).all()
    assert add.truncated == int(((t_len + batch["code_at"] + 1) > cap).sum()) > 0
    # the Code embedding is the last kept Code token
    for i, f in enumerate(feats):
        assert int(add.kwargs["input_ids"][len(feats) + i, code_pos[i]]) == f["code_input_ids"][int(kept[i]) - 1]


def test_published_additive_layout_structure(tiny_tokenizer):
    """Row B+i is Text cut after its embedding, then Code; the Full row is cut at n + offset + 1."""
    feats = batch_features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    batch = PadCollator(pad, pad_to=256, with_positions=False)(feats)
    lay = published_forward.additive_layout(batch, full_offset=-2)
    b = len(feats)
    ids, mask = lay.kwargs["input_ids"], lay.kwargs["attention_mask"]
    assert mask.dtype == torch.float32 and mask.shape == (2 * b, 1, 256, 256)
    for i, f in enumerate(feats):
        lu, la = f["text_at"] + 1, f["code_at"] + 1
        assert ids[b + i, :lu].tolist() == f["text_input_ids"][:lu]
        assert ids[b + i, lu:lu + la].tolist() == f["code_input_ids"][:la]
        blk = mask[b + i, 0]
        assert blk[lu, lu] == 0 and torch.isinf(blk[lu, lu - 1])  # Code cannot see Text
        n = len(f["input_ids"])
        assert torch.isinf(mask[i, 0, n - 1]).all() and mask[i, 0, n - 2, 0] == 0
    assert lay.text_at[1].tolist() == [f["text_at"] for f in feats]
    assert lay.code_at[1].tolist() == [f["text_at"] + f["code_at"] + 1 for f in feats]


def test_segment_lengths_of_block_mask(tiny_tokenizer):
    feats = batch_features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    batch = PadCollator(pad)(feats)
    add = layouts.additive(batch, torch.float32, pad, 512)
    expected = [len(f["input_ids"]) for f in feats] + [
        x for f in feats for x in (f["text_at"] + 1, f["code_at"] + 1)]
    assert sorted(segment_lengths(add).tolist()) == sorted(expected)
