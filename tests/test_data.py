"""Views, labels, formatting and input validation."""
from __future__ import annotations

import json

import pytest

from conftest import example, real_tokenizer, write_jsonl
from llm_jepa import data as D
from llm_jepa.behaviour import Published
from llm_jepa.families import family_by_name
from llm_jepa.tokenization import setup_tokenizer

LLAMA = family_by_name("llama")
GEMMA = family_by_name("gemma")


def features(tok, family, rows, opts=None, paper_compat=False, last_token=None, kwargs=None, max_length=512):
    opts = opts or D.ViewOptions()
    renderer = D.ViewRenderer(tok, family, opts, kwargs or {})
    vtok = D.ViewTokenizer(tok, D.TokenizeOptions(max_length, paper_compat, last_token, double_bos=paper_compat))
    return D.tokenize_examples(rows, renderer, vtok, with_views=True)


def trained_text(tok, feat) -> str:
    return tok.decode([t for t in feat["labels"] if t != -100])


# --------------------------------------------------------------------------------------
# views (tiny self-trained tokenizer: no ../shared needed)
# --------------------------------------------------------------------------------------
def test_chat_views_and_labels(tiny_tokenizer):
    row = example(user="lines with a dog", answer="(dog).*")
    (feat,), stats = features(tiny_tokenizer, LLAMA, [row])
    full = tiny_tokenizer.decode(feat["input_ids"])
    assert full.startswith("<|begin_of_text|><|start_header_id|>system")
    assert full.count("<|begin_of_text|>") == 1  # the template's BOS is not doubled
    assert trained_text(tiny_tokenizer, feat) == "(dog).*<|eot_id|>"
    text = tiny_tokenizer.decode(feat["text_input_ids"])
    assert text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nlines with a dog<|eot_id|>"
    code = tiny_tokenizer.decode(feat["code_input_ids"])
    assert code.endswith("assistant<|end_header_id|>\n\n(dog).*<|eot_id|>")
    assert stats.no_end_of_turn == 0


def test_embedding_index_is_last_content_or_predictor(tiny_tokenizer):
    row = example(user="lines with a dog", answer="(dog).*")
    (f0,), _ = features(tiny_tokenizer, LLAMA, [row])
    assert tiny_tokenizer.decode(f0["text_input_ids"][f0["text_at"]]).strip() == "dog"
    assert tiny_tokenizer.decode(f0["code_input_ids"][f0["code_at"]]).endswith("*")
    setup = setup_tokenizer_for(tiny_tokenizer)
    (f2,), _ = features(setup, LLAMA, [row], D.ViewOptions(predictors=2))
    ids = f2["text_input_ids"]
    assert setup.decode(ids[f2["text_at"]]) == "<|predictor_1|>"
    assert setup.decode(ids[f2["text_at"] - 1]) == "<|predictor_2|>"


def setup_tokenizer_for(tok):
    """The tiny tokenizer with the JEPA special tokens added (as the trainer does)."""
    from llm_jepa.tokenization import add_jepa_tokens

    tok = tok.__class__.from_pretrained(_save(tok))
    add_jepa_tokens(tok)
    return tok


def _save(tok):
    import tempfile

    path = tempfile.mkdtemp()
    tok.save_pretrained(path)
    return path


def test_front_pred_and_reverse_pred(tiny_tokenizer):
    tok = setup_tokenizer_for(tiny_tokenizer)
    row = example(user="lines with a dog", answer="(dog).*")
    (front,), _ = features(tok, LLAMA, [row], D.ViewOptions(predictors=2, front_pred=True))
    text = tok.decode(front["text_input_ids"])
    assert "<|predictor_2|><|predictor_1|>lines with a dog<|eot_id|>" in text
    assert tok.decode(front["text_input_ids"][front["text_at"]]).strip() == "dog"
    (rev,), _ = features(tok, LLAMA, [row], D.ViewOptions(predictors=1, reverse_pred=True))
    assert "(dog).*<|predictor_1|>" in tok.decode(rev["text_input_ids"])
    assert "assistant" in tok.decode(rev["text_input_ids"])
    assert tok.decode(rev["code_input_ids"]).endswith("user<|end_header_id|>\n\nlines with a dog<|eot_id|>")


def test_plain_and_train_all(tiny_tokenizer):
    tok = setup_tokenizer_for(tiny_tokenizer)
    row = example(user="lines with a dog", answer="(dog).*")
    (plain,), _ = features(tok, LLAMA, [row], D.ViewOptions(plain=True, predictors=1))
    assert tok.decode(plain["input_ids"]) == "lines with a dog<|perception|>(dog).*<|eot_id|>"
    assert trained_text(tok, plain) == "(dog).*<|eot_id|>"
    assert tok.decode(plain["text_input_ids"]) == "lines with a dog<|predictor_1|>"
    assert tok.decode(plain["code_input_ids"]) == "(dog).*"
    (every,), _ = features(tok, LLAMA, [row], D.ViewOptions(plain=True, train_all=True))
    assert tok.decode(every["input_ids"]) == "lines with a dog<|eot_id|>"
    assert every["labels"] == every["input_ids"]


def test_hellaswag_views_come_from_fields(tiny_tokenizer):
    row = example(system="Which ending?", user="ctx\nA) one\nB) two", answer="B",
                  text=[{"role": "user", "content": "the context"}],
                  code=[{"role": "assistant", "content": "the ending"}])
    (feat,), _ = features(tiny_tokenizer, LLAMA, [row], D.ViewOptions(use_view_fields=True))
    assert tiny_tokenizer.decode(feat["text_input_ids"]).endswith("the context<|eot_id|>")
    assert tiny_tokenizer.decode(feat["code_input_ids"]).endswith("the ending<|eot_id|>")
    assert trained_text(tiny_tokenizer, feat) == "B<|eot_id|>"


def test_answer_text_that_also_occurs_earlier_is_labelled_once(tiny_tokenizer):
    # The published decode-and-search labelled the first occurrence (in the user turn).
    row = example(user="dog", answer="dog")
    (feat,), _ = features(tiny_tokenizer, LLAMA, [row])
    labelled = [i for i, t in enumerate(feat["labels"]) if t != -100]
    assert trained_text(tiny_tokenizer, feat) == "dog<|eot_id|>"
    assert labelled[-1] == len(feat["input_ids"]) - 1


def test_compat_labels_are_every_non_pad_token(tiny_tokenizer):
    tok = setup_tokenizer_for(tiny_tokenizer)
    tok.pad_token = tok.eos_token  # as for Llama-3: pad = eos = <|eot_id|>
    row = example(user="lines with a dog", answer="(dog).*")
    (feat,), _ = features(tok, LLAMA, [row], paper_compat=True, last_token=-1)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    ids = feat["input_ids"]
    assert feat["labels"] == [t if t != eot else -100 for t in ids]
    assert eot in ids and all(lab != eot for lab in feat["labels"])  # EOS never trained


def test_truncation_is_counted(tiny_tokenizer):
    rows = [example(user="dog " * 200, answer="(dog).*"), example()]
    feats, stats = features(tiny_tokenizer, LLAMA, rows, max_length=64)
    assert len(feats[0]["input_ids"]) == 64 and len(feats[0]["text_input_ids"]) == 64
    assert stats.truncated == {"full": 1, "text": 1, "code": 0}


# --------------------------------------------------------------------------------------
# real tokenizers (../shared/tokenizers)
# --------------------------------------------------------------------------------------
def test_gemma_merges_system_and_renames_code_role():
    setup, family = real_tokenizer("gemma-2-2b-it")
    tok = setup.tokenizer
    row = example(system="SYS", user="hello", answer="world")
    (feat,), _ = features(tok, family, [row], kwargs=setup.template_kwargs)
    full = tok.decode(feat["input_ids"])
    assert full.startswith("<bos><start_of_turn>user\nSYS\n\nhello<end_of_turn>")
    assert full.count("<bos>") == 1
    assert trained_text(tok, feat) == "world<end_of_turn>"
    assert tok.decode(feat["code_input_ids"]) == "<bos><start_of_turn>user\nworld<end_of_turn>\n"


@pytest.mark.parametrize("folder,eot", [("llama-3.2-1b-instruct", "<|eot_id|>"), ("qwen2.5-instruct", "<|im_end|>"),
                                        ("olmo-2-instruct", "<|endoftext|>"), ("llama-2-openelm", "</s>"),
                                        ("phi-1_5", "<|endoftext|>"), ("gemma-2-2b-it", "<end_of_turn>")])
def test_labels_are_answer_plus_end_of_turn(folder, eot):
    setup, family = real_tokenizer(folder)
    tok = setup.tokenizer
    answers = ["SELECT count(*) FROM t", "A", " 42 \n"]
    feats, stats = features(tok, family, [example(answer=a) for a in answers], kwargs=setup.template_kwargs)
    for feat, answer in zip(feats, answers):
        got = trained_text(tok, feat)
        assert got.endswith(eot), got
        assert got[: -len(eot)].strip() == answer.strip()
    assert stats.no_end_of_turn == 0


def test_llama3_bos_doubled_only_under_compat():
    setup, family = real_tokenizer("llama-3.2-1b-instruct")
    tok = setup.tokenizer
    (default,), _ = features(tok, family, [example()], kwargs=setup.template_kwargs)
    (compat,), _ = features(tok, family, [example()], paper_compat=True, last_token=-1,
                            kwargs=setup.template_kwargs)
    assert default["input_ids"][:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<|start_header_id|>")]
    assert compat["input_ids"][:2] == [tok.bos_token_id, tok.bos_token_id]
    assert compat["input_ids"][1:] == default["input_ids"]


def test_llama3_date_is_pinned():
    setup, family = real_tokenizer("llama-3.2-1b-instruct")
    (feat,), _ = features(setup.tokenizer, family, [example()], kwargs=setup.template_kwargs)
    assert "Today Date: 26 Jul 2024" in setup.tokenizer.decode(feat["input_ids"])
    assert setup.date_string == "26 Jul 2024"


def test_phi_gets_fallback_template():
    setup, _ = real_tokenizer("phi-1_5")
    assert setup.fallback_template
    from llm_jepa.families import family_by_name as fam

    with pytest.raises(ValueError, match="no chat template"):
        setup_tokenizer(str(setup.tokenizer.name_or_path), fam("phi"), published=Published.everything())


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,problem", [
    ("{not json", "bad JSON"),
    (json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}),
     "expected 3 messages"),
    (json.dumps(example() | {"messages": [{"role": "", "content": "s"}] + example()["messages"][1:]}),
     "missing or empty role"),
    (json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"},
                              {"role": "user", "content": "u"}]}), "expected 'user'"),
    (json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user"},
                              {"role": "assistant", "content": "a"}]}), "no string 'content'"),
])
def test_bad_input_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(example()) + "\n" + line + "\n")
    with pytest.raises(D.DataError, match=rf"bad\.jsonl:2: .*{problem}"):
        D.read_examples(path)


def test_hellaswag_needs_text_and_code(tmp_path):
    path = write_jsonl(tmp_path / "hellaswag_train.jsonl", [example(text=[{"role": "user", "content": "c"}])])
    with pytest.raises(D.DataError, match=r"hellaswag_train\.jsonl:1: missing 'code' field"):
        D.read_examples(path, needs_view_fields=True)
