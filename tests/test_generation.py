"""Prompts, stop tokens and batched greedy generation."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_same_up_to_rounding as same, example, real_tokenizer, synthetic_rows
from llm_jepa import generation as G
from llm_jepa.behaviour import Published
from llm_jepa.families import family_by_name
from llm_jepa.tiny import tiny_config

LLAMA = family_by_name("llama")


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    return AutoModelForCausalLM.from_config(tiny_config("llama", tiny_tokenizer, hidden=64)).eval()


def prompts(tok, rows, max_length=512):
    texts = [G.prompt_text(tok, r, LLAMA, plain=False, template_kwargs={}) for r in rows]
    return G.encode_prompts(tok, texts, max_length, plain=False)


def test_prompt_is_system_and_user_with_generation_prompt(tiny_tokenizer):
    text = G.prompt_text(tiny_tokenizer, example(user="lines with a dog"), LLAMA, plain=False, template_kwargs={})
    assert text.endswith("user<|end_header_id|>\n\nlines with a dog<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "([AEIOU" not in text  # the answer is not in the prompt
    plain = G.prompt_text(tiny_tokenizer, example(user="q"), LLAMA, plain=True, template_kwargs={})
    assert plain == "q<|perception|>"


def test_gemma_prompt_merges_system():
    setup, family = real_tokenizer("gemma-2-2b-it")
    text = G.prompt_text(setup.tokenizer, example(system="S", user="U"), family, plain=False, template_kwargs={})
    assert text == "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("folder,stops", [
    ("llama-3.2-1b-instruct", ["<|eot_id|>"]), ("gemma-2-2b-it", ["<eos>", "<end_of_turn>"]),
    ("qwen2.5-instruct", ["<|im_end|>"]), ("olmo-2-instruct", ["<|endoftext|>"]),
    ("llama-2-openelm", ["</s>"]), ("phi-1_5", ["<|endoftext|>"]),
])
def test_end_of_turn_tokens(folder, stops):
    setup, family = real_tokenizer(folder)
    ids = G.end_of_turn_ids(setup.tokenizer, family, setup.template_kwargs, plain=False)
    assert setup.tokenizer.convert_ids_to_tokens(ids) == stops


def test_long_prompts_keep_their_end(tiny_tokenizer):
    row = example(user="dog " * 400)
    (ids,) = prompts(tiny_tokenizer, [row], max_length=64)
    assert len(ids) == 64
    assert tiny_tokenizer.decode(ids).endswith("assistant<|end_header_id|>\n\n")


def test_published_prompt_truncation_cuts_the_end(tiny_tokenizer):
    """`--published prompt_truncation` alone: the prompt keeps its start (and so loses the
    generation prompt)."""
    row = example(user="dog " * 400)
    text = G.prompt_text(tiny_tokenizer, row, LLAMA, plain=False, template_kwargs={})
    (cut,) = G.encode_prompts(tiny_tokenizer, [text], 64, False, Published(prompt_truncation=True))
    (ours,) = G.encode_prompts(tiny_tokenizer, [text], 64, False)
    assert len(cut) == 64 and cut != ours
    assert not tiny_tokenizer.decode(cut).endswith("assistant<|end_header_id|>\n\n")


def test_batched_generation_equals_one_at_a_time(tiny_tokenizer, tiny_model):
    rows = synthetic_rows(9, seed=4)
    rows[3] = example(user="a much longer request about lines and words " * 4)
    ids = prompts(tiny_tokenizer, rows)
    stops = G.end_of_turn_ids(tiny_tokenizer, LLAMA, {}, plain=False)
    batched = G.GreedyGenerator(tiny_model, tiny_tokenizer, stops, batch_size=4, max_new_tokens=24)(ids, False)
    single = G.GreedyGenerator(tiny_model, tiny_tokenizer, stops, batch_size=1, max_new_tokens=24)(ids, False)
    assert [b.ids for b in batched] == [s.ids for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(len(b.ids) == 24 for b in batched)  # this random model never ends its turn


def test_generation_stops_at_end_of_turn(tiny_tokenizer, tiny_model):
    ids = prompts(tiny_tokenizer, synthetic_rows(3))
    eot = tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    with torch.no_grad():  # make <|eot_id|> the certain next token
        tiny_model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tiny_tokenizer)))
        tiny_model.lm_head.bias[eot] = 1e4
    try:
        out = G.GreedyGenerator(tiny_model, tiny_tokenizer, [eot], batch_size=3, max_new_tokens=50)(ids, False)
    finally:
        tiny_model.lm_head.bias = None
    assert [o.text for o in out] == ["", "", ""]


def test_unbounded_generation_respects_max_length(tiny_tokenizer, tiny_model):
    ids = prompts(tiny_tokenizer, synthetic_rows(2))
    gen = G.GreedyGenerator(tiny_model, tiny_tokenizer, [], batch_size=2, max_new_tokens=-1,
                            max_length=max(map(len, ids)) + 5)
    out = gen(ids, False)
    assert all(len(tiny_tokenizer(o.text, add_special_tokens=False)["input_ids"]) <= 7 for o in out)
    assert gen._new_tokens(max(map(len, ids))) == 5


def test_next_letter_and_continuation_logprobs(tiny_tokenizer, tiny_model):
    ids = prompts(tiny_tokenizer, synthetic_rows(3))
    letters = G.next_letter(tiny_model, tiny_tokenizer, ids, batch_size=2)
    # each prompt alone, unpadded: the letter whose token the model rates highest next
    letter_ids = [tiny_tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    with torch.no_grad():
        alone = ["ABCD"[int(tiny_model(input_ids=torch.tensor([p])).logits[0, -1, letter_ids].argmax())] for p in ids]
    assert letters == alone
    pairs = [("the context", " an ending"), ("the context", " another, longer ending")]
    batched = G.continuation_logprobs(tiny_model, tiny_tokenizer, pairs, batch_size=2)
    single = [G.continuation_logprobs(tiny_model, tiny_tokenizer, [p], batch_size=1)[0] for p in pairs]
    same(batched, single, what="batched log-probabilities")
    # by hand: log p of the continuation tokens given the context
    ctx = tiny_tokenizer("the context")["input_ids"]
    whole = tiny_tokenizer("the context an ending")["input_ids"]
    with torch.no_grad():
        logp = tiny_model(torch.tensor([whole])).logits[0].log_softmax(-1)
    expected = sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole)))
    same(batched[0], expected, what="log-probability")
