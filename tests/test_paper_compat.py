"""--paper_compat against an independent re-statement of the published code
(tests/published_reference.py): identical batches and bit-identical training."""
from __future__ import annotations

import pytest
import torch

from conftest import synthetic_rows, write_jsonl
from llm_jepa import data as D
from llm_jepa.behaviour import Published
from llm_jepa import train as T
from llm_jepa.collate import PadCollator
from llm_jepa.config import TrainConfig
from llm_jepa.families import family_by_name
from llm_jepa.tokenization import setup_tokenizer
from published_reference import PublishedTrainer, last_token_index, published_collator, published_features

L = 128


def compat_batch(setup, family, rows, predictors, last_token=-1):
    tok = setup.tokenizer
    renderer = D.ViewRenderer(tok, family, D.ViewOptions(predictors=predictors), setup.template_kwargs)
    vtok = D.ViewTokenizer(tok, D.TokenizeOptions(L, published_labels=True, last_token=last_token, double_bos=True))
    feats, _ = D.tokenize_examples(rows, renderer, vtok, with_views=True)
    return PadCollator(tok.pad_token_id, pad_to=L, same_length=True, with_positions=False,
                       padding_side=tok.padding_side)(feats)


def assert_same_batch(ours, ref, last_token=-1):
    for mine, theirs in (("", ""), ("text_", "_user"), ("code_", "_assistant")):
        assert torch.equal(ours[f"{mine}input_ids"], ref[f"input_ids{theirs}"])
        assert torch.equal(ours[f"{mine}attention_mask"], ref[f"attention_mask{theirs}"])
    assert torch.equal(ours["labels"], ref["labels"])
    assert torch.equal(ours["text_at"], last_token_index(ref["attention_mask_user"], last_token))
    assert torch.equal(ours["code_at"], last_token_index(ref["attention_mask_assistant"], last_token))


@pytest.mark.parametrize("folder", ["llama-3.2-1b-instruct", "gemma-2-2b-it", "qwen2.5-instruct", "olmo-2-instruct"])
def test_compat_batches_equal_published(folder):
    rows = synthetic_rows(4)
    from llm_jepa.families import family_for
    from conftest import needs_shared

    family = family_for(folder)
    setup = setup_tokenizer(str(needs_shared("tokenizers", folder)), family, published=Published.everything())
    ours = compat_batch(setup, family, rows, predictors=2, last_token=family.last_token)
    ref = published_collator(setup.tokenizer)(
        published_features(setup.tokenizer, rows, L, predictors=2, gemma=family.name == "gemma"))
    assert_same_batch(ours, ref, family.last_token)


def test_compat_batches_equal_published_tiny(tiny_tokenizer):
    from test_data import setup_tokenizer_for

    tok = setup_tokenizer_for(tiny_tokenizer)
    tok.pad_token = tok.eos_token
    from llm_jepa.tokenization import TokenizerSetup

    setup = TokenizerSetup(tok, [], {}, False, None)
    rows = synthetic_rows(4)
    ours = compat_batch(setup, family_by_name("llama"), rows, predictors=1)
    ref = published_collator(tok)(published_features(tok, rows, L, predictors=1))
    assert_same_batch(ours, ref)


# --------------------------------------------------------------------------------------
# training, step by step
# --------------------------------------------------------------------------------------
def record_losses(trainer):
    seen = []
    original = trainer.compute_loss

    def wrapped(*args, **kwargs):
        loss = original(*args, **kwargs)
        seen.append((loss[0] if isinstance(loss, tuple) else loss).detach().clone())
        return loss

    trainer.compute_loss = wrapped
    return seen


def assert_trains_identically(ours, theirs, steps: int) -> None:
    """Train both; every micro-batch's loss and every final weight must be bit-identical."""
    from transformers import set_seed

    ours_losses, ref_losses = record_losses(ours), record_losses(theirs)
    # Both trainers share this process's RNG: start each from the state its __init__ left.
    for trainer in (ours, theirs):
        set_seed(trainer.args.seed)
        trainer.train()
    assert len(ours_losses) == len(ref_losses) == steps
    assert all(torch.equal(a, b) for a, b in zip(ours_losses, ref_losses)), (ours_losses, ref_losses)
    for (name, p), q in zip(ours.model.named_parameters(), theirs.model.parameters()):
        assert torch.equal(p, q), name


def our_trainer(tmp_path, model_dir, data, **flags):
    flags.setdefault("dtype", "fp32")
    cfg = TrainConfig(train_file=str(data), model_name=str(model_dir), output_dir=str(tmp_path / "ours"),
                      paper_compat=True, batch_size=2, grad_accum=2, max_steps=3,
                      max_length=L, last_token="-1", **flags).validate()
    family = T.detect_family(cfg.model_name)
    setup = setup_tokenizer(cfg.model_name, family, published=Published.everything())
    splits = T.load_splits(cfg, family, setup, -1)
    save_steps, epochs = T.schedule(cfg, splits.train, 1)
    args = T.training_arguments(cfg, cfg.output_dir, cfg.dtype, save_steps, epochs, False)
    torch.manual_seed(1234)  # the same RNG state for both embedding resizes
    return T.build_trainer(cfg, family, setup, splits, args, cfg.dtype, -1), setup


def reference_trainer(tmp_path, model_dir, data, ours_args, *, regular=False, additive=False, predictors=0,
                      lbd=0.1, loss="cosine", jepa_ratio=-1.0, lora_rank=None, dtype=torch.float32):
    import dataclasses
    import json

    from transformers import AutoModelForCausalLM, Trainer

    setup = setup_tokenizer(str(model_dir), family_by_name("llama"), published=Published.everything())
    tok = setup.tokenizer
    rows = [json.loads(line) for line in open(data)]
    feats = published_features(tok, rows, L, predictors=predictors)
    if regular:
        feats = [{k: f[k] for k in ("input_ids", "attention_mask", "labels")} for f in feats]
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.resize_token_embeddings(len(tok))
    if lora_rank:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, inference_mode=False, r=lora_rank, lora_alpha=2 * lora_rank,
            lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]))
        model.enable_input_require_grads()
    args = dataclasses.replace(ours_args, output_dir=str(tmp_path / "ref"))
    kwargs = dict(model=model, args=args, train_dataset=T.ListDataset(feats), processing_class=tok,
                  data_collator=published_collator(tok))
    if regular:
        return Trainer(**kwargs)
    return PublishedTrainer(**kwargs, lbd=lbd, last_token=-1, additive_mask=additive, loss=loss,
                            jepa_ratio=jepa_ratio)


@pytest.mark.parametrize("flags,ref", [
    ({"predictors": 1, "lbd": 0.5}, {"predictors": 1, "lbd": 0.5}),
    ({"additive_mask": True, "lbd": 1.0}, {"additive": True, "lbd": 1.0}),
    ({"additive_mask": True, "jepa_ratio": 0.5}, {"additive": True, "jepa_ratio": 0.5}),
    ({"infonce": True}, {"loss": "infonce"}),
    ({"regular": True}, {"regular": True}),
    ({"lora": True, "lora_rank": 4, "learning_rate": 1e-3}, {"lora_rank": 4}),
    ({"dtype": "bf16", "additive_mask": True}, {"dtype": torch.bfloat16, "additive": True}),
])
def test_compat_training_is_bit_identical(tmp_path, tiny_llama, flags, ref):
    # pad = eos, as for Llama-3 (the published collator then never trains the end of turn)
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(24, seed=5))
    ours, _ = our_trainer(tmp_path, tiny_llama, data, **flags)
    theirs = reference_trainer(tmp_path, tiny_llama, data, ours.args, **ref)
    assert_trains_identically(ours, theirs, steps=6)
    assert [h.get("loss") for h in ours.state.log_history] == [h.get("loss") for h in theirs.state.log_history]


def test_published_jepa_loss_is_not_divided_by_grad_accum(tmp_path, tiny_llama):
    """The defect the README reports: under transformers 5 the published JEPA trainer's loss
    (and gradient) is grad_accum times the mean; the default is the mean."""
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(24, seed=5))
    compat, _ = our_trainer(tmp_path, tiny_llama, data, lbd=0.5, eval_steps=1)
    compat.train()
    for h in (h for h in compat.state.log_history if "loss" in h):
        assert h["loss"] == pytest.approx(2 * (h["lm_loss"] + 0.5 * h["jepa_loss"]), rel=1e-3)
    cfg = TrainConfig(train_file=str(data), model_name=str(tiny_llama), output_dir=str(tmp_path / "default"),
                      dtype="fp32", batch_size=2, grad_accum=2, max_steps=3, max_length=L, lbd=0.5,
                      eval_steps=1).validate()
    default = T.run(cfg)
    for h in (h for h in default.state.log_history if "loss" in h):
        assert h["loss"] == pytest.approx(h["lm_loss"] + 0.5 * h["jepa_loss"], rel=1e-3)
