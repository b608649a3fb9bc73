"""Where the view embedding is read: `--last_token auto` against the published offsets.

auto = the last predictor token when k > 0, else the last content token. For every
tokenizer in ../shared/tokenizers the published run.sh offset is checked against it:
they agree for Llama-3, Qwen2.5 and OpenELM; for Gemma-2 and OLMo-2 the published offset
lands one token late (on <end_of_turn> / the newline after the turn), which the README
documents. phi-1_5 (a base model) was used with --plain, where -1 is the last content token.
"""
from __future__ import annotations

import pytest
import torch

from conftest import example, real_tokenizer
from llm_jepa import data as D
from llm_jepa.collate import PadCollator

ROWS = [example(user="lines with a dog", answer="(dog).*"),
        example(user="How many cities are in Australia?", answer="SELECT count(*) FROM city"),
        example(user="a b c", answer="A")]

# folder -> (agrees with the published offset?, token the published offset reads instead)
EXPECTED = {
    "llama-3.2-1b-instruct": (True, None),
    "qwen2.5-instruct": (True, None),
    "llama-2-openelm": (True, None),
    "gemma-2-2b-it": (False, "<end_of_turn>"),
    "olmo-2-instruct": (False, None),   # reads the '\n' (Text) or <|endoftext|> (Code) after the turn
}


def positions(setup, family, k: int, offset, plain=False):
    opts = D.ViewOptions(predictors=k, plain=plain)
    renderer = D.ViewRenderer(setup.tokenizer, family, opts, setup.template_kwargs)
    vtok = D.ViewTokenizer(setup.tokenizer, D.TokenizeOptions(512, False, offset))
    feats, _ = D.tokenize_examples(ROWS, renderer, vtok, with_views=True)
    return feats


@pytest.mark.parametrize("folder", sorted(EXPECTED))
@pytest.mark.parametrize("k", [0, 1, 3])
def test_auto_against_published_offset(folder, k):
    setup, family = real_tokenizer(folder)
    tok = setup.tokenizer
    auto = positions(setup, family, k, None)
    published = positions(setup, family, k, family.last_token)
    agrees, wrong_token = EXPECTED[folder]
    for a, p in zip(auto, published):
        for view in ("text", "code"):
            ids = a[f"{view}_input_ids"]
            read = tok.convert_ids_to_tokens(ids[a[f"{view}_at"]])
            if view == "text" and k:
                assert read == "<|predictor_1|>"
            else:
                assert not read.startswith("<") or read == "<|predictor_1|>", read
            if agrees:
                assert a[f"{view}_at"] == p[f"{view}_at"], (view, read)
            else:
                assert p[f"{view}_at"] == a[f"{view}_at"] + 1
                if wrong_token:
                    assert tok.convert_ids_to_tokens(ids[p[f"{view}_at"]]) == wrong_token


def test_phi_plain_mode_matches_published_offset():
    setup, family = real_tokenizer("phi-1_5")
    for k in (0, 2):
        auto = positions(setup, family, k, None, plain=True)
        published = positions(setup, family, k, family.last_token, plain=True)
        assert [f["text_at"] for f in auto] == [f["text_at"] for f in published]
        assert [f["code_at"] for f in auto] == [f["code_at"] for f in published]


@pytest.mark.parametrize("side", ["left", "right"])
def test_positions_survive_padding(tiny_tokenizer, side):
    from llm_jepa.families import family_by_name

    renderer = D.ViewRenderer(tiny_tokenizer, family_by_name("llama"), D.ViewOptions(), {})
    vtok = D.ViewTokenizer(tiny_tokenizer, D.TokenizeOptions())
    feats, _ = D.tokenize_examples(ROWS, renderer, vtok, with_views=True)
    batch = PadCollator(tiny_tokenizer.pad_token_id, padding_side=side, pad_to=160)(feats)
    for i, f in enumerate(feats):
        for view in ("text", "code"):
            row = batch[f"{view}_input_ids"][i]
            assert int(row[batch[f"{view}_at"][i]]) == f[f"{view}_input_ids"][f[f"{view}_at"]]
            # position ids count from the first real token on either side
            mask = batch[f"{view}_attention_mask"][i].bool()
            assert torch.equal(batch[f"{view}_position_ids"][i][mask], torch.arange(int(mask.sum())))
