"""The packed layout against the 3-pass padded layout: same losses and gradients (fp32, CPU),
for Llama and Qwen2, with and without LoRA; and the packing itself."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_same_up_to_rounding as same, example, synthetic_rows
from llm_jepa import data as D
from llm_jepa import losses, layouts
from llm_jepa.collate import PackCollator, PadCollator, cheapest_packing, pack_segments
from llm_jepa.families import family_for
from llm_jepa.tiny import tiny_config
from llm_jepa.trainer import forward_layout, shifted_targets


def test_first_fit_decreasing():
    rows = pack_segments([5, 3, 8, 2, 4], budget=8)
    assert sorted(sorted(r) for r in rows) == [[0, 1], [2], [3, 4]]
    assert pack_segments([9, 2], budget=4) == [[0], [1]]  # an over-long segment gets its own row
    # at most one anchor (Full view) per row
    rows = pack_segments([4, 4, 2], budget=10, anchors=frozenset({0, 1}))
    assert sorted(sorted(r) for r in rows) == [[0, 2], [1]]


def features(tokenizer, kind="llama", n=5, predictors=1):
    rows = synthetic_rows(n, seed=11)
    rows[2] = example(user="a much longer description of lines " * 5, answer="(dog).*(truck)")
    renderer = D.ViewRenderer(tokenizer, family_for("", kind), D.ViewOptions(predictors=predictors), {})
    feats, _ = D.tokenize_examples(rows, renderer, D.ViewTokenizer(tokenizer, D.TokenizeOptions()), True)
    return feats


def test_pack_collator_is_padding_free(tiny_tokenizer):
    feats = features(tiny_tokenizer, predictors=0)
    longest = max(len(f[k]) for f in feats for k in ("input_ids", "text_input_ids", "code_input_ids"))
    batch = PackCollator(tiny_tokenizer.pad_token_id, budget=longest)(feats)
    ids, pos, labels = batch["packed_input_ids"], batch["packed_position_ids"], batch["packed_labels"]
    total = sum(len(f["input_ids"]) + len(f["text_input_ids"]) + len(f["code_input_ids"]) for f in feats)
    assert ids.shape[1] == longest
    # first-fit decreasing uses at most 11/9 of the optimal number of rows, plus one (and a
    # row per Full view at least)
    assert ids.shape[0] <= max(len(feats), math.ceil(11 / 9 * math.ceil(total / longest)) + 1)
    assert int((labels != -100).sum()) == sum(sum(t != -100 for t in f["labels"]) for f in feats)
    for i, f in enumerate(feats):
        for view in ("text", "code"):
            r, p = batch[f"packed_{view}_at"][:, i].tolist()
            assert int(ids[r, p]) == f[f"{view}_input_ids"][f[f"{view}_at"]]
            assert int(pos[r, p]) == f[f"{view}_at"]
    starts = ((pos == 0) & (ids != tiny_tokenizer.pad_token_id)).sum()
    assert starts == 3 * len(feats)  # one segment start per view
    # every Full view ends in the last column: the answers share the final columns
    for r in range(ids.shape[0]):
        if (labels[r] != -100).any():
            assert labels[r, -1] != -100


def test_automatic_budget_packs_views_that_rows_of_the_longest_would_leave_alone():
    # Text and Code each over half the Full view (a chat template that repeats a system
    # prompt in every view): rows of the longest segment hold one view each.
    lengths = [62, 40, 35] * 7 + [58, 38, 33]   # 1088 real tokens, as in a batch of 8 of synth
    fulls = frozenset(range(0, len(lengths), 3))
    assert len(pack_segments(lengths, 62, fulls)) == 24   # 24 x 62 = 1488 computed tokens
    budget, rows = cheapest_packing(lengths, fulls)
    assert rows == pack_segments(lengths, budget, fulls)
    width = max(sum(lengths[s] for s in row) for row in rows)
    assert (budget, len(rows), width) == (155, 8, 142)     # 8 x 142 = 1136: 4% padding, not 27%
    # every segment placed once, at most one Full view per row
    assert sorted(s for row in rows for s in row) == list(range(len(lengths)))
    assert all(sum(s in fulls for s in row) <= 1 for row in rows)


def test_automatic_budget_keeps_rows_short_when_nothing_packs_better():
    lengths = [100, 100, 100, 100]   # one Full, three others: no width packs without padding
    assert cheapest_packing(lengths, frozenset({0}))[0] == 100
    # attention grows with the width: an equal padded area prefers the narrower rows
    assert cheapest_packing([50, 50, 50, 50], frozenset())[0] == 50


def model_for(kind, tokenizer, lora: bool):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, tokenizer, attn_implementation="sdpa"))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    return model


def losses_and_grads(model, layout):
    model.zero_grad()
    hidden, logits, keep = forward_layout(model, layout, need_hidden=True)
    lm_sum, count = losses.lm_loss_sum(logits, shifted_targets(layout.labels, keep))
    t = layouts.gather_embeddings(hidden, layout.text_at)
    c = layouts.gather_embeddings(hidden, layout.code_at)
    lm, jepa = lm_sum / count, losses.cosine_loss(t, c)
    (lm + jepa).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lm.detach(), jepa.detach(), grads


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("lora", [False, True])
def test_packed_equals_three_pass(tiny_tokenizer, kind, lora):
    feats = features(tiny_tokenizer, kind)
    pad = tiny_tokenizer.pad_token_id
    model = model_for(kind, tiny_tokenizer, lora)
    lm3, j3, g3 = losses_and_grads(model, layouts.three_pass(PadCollator(pad, same_length=True)(feats)))
    for budget in (None, 10 ** 6):  # rows as long as the longest view; one single row
        lmp, jp, gp = losses_and_grads(model, layouts.packed(PackCollator(pad, budget=budget)(feats)))
        same(lmp, lm3, what="lm loss")
        same(jp, j3, what="jepa loss")
        same(gp, g3, what="gradients")


def test_packed_eager_matches_too(tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    feats = features(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", tiny_tokenizer, attn_implementation="eager"))
    lm3, j3, _ = losses_and_grads(model, layouts.three_pass(PadCollator(pad, same_length=True)(feats)))
    lmp, jp, _ = losses_and_grads(model, layouts.packed(PackCollator(pad)(feats)))
    same(lmp, lm3, what="lm loss")
    same(jp, j3, what="jepa loss")
