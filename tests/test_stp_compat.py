"""`stp.py --paper_compat`: the published STP training, step by step and bit for bit.

The reference is written from a description of the published script, not from the
project's code: its features come from published_reference.published_features (padding to
--max_length, transformers' collator), the spans are located the published way (the last
place where the content's tokens, decoded one by one, appear in the sequence), the loss is
published_stp_reference's per-row loop with scalar draws from a generator of the trainer's
own, seeded finetune_seed + 3 x rank, and the total is gamma x lm + lbd_t x jepa."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer

import published_stp_reference as R
from conftest import synthetic_rows, write_jsonl
from llm_jepa import train as T
from llm_jepa.behaviour import Published
from llm_jepa.config import TrainConfig
from llm_jepa.families import family_by_name
from llm_jepa.tokenization import setup_tokenizer
from published_reference import published_collator, published_features
from test_paper_compat import assert_trains_identically

L = 128


# --------------------------------------------------------------------------------------
# the reference
# --------------------------------------------------------------------------------------
def published_find(tok, content: str, ids: list[int], mask: list[int]) -> tuple[int, int]:
    """(token before the content, last content token): the last place the content's own
    tokens, decoded one at a time, appear among the sequence's real tokens."""
    want = [tok.decode([t]) for t in tok(content, add_special_tokens=False)["input_ids"]]
    have = [tok.decode([t]) for t in ids]
    n = len(want)
    for i in range(len(ids) - n, -1, -1):
        if mask[i] == 1 and have[i:i + n] == want:
            assert i > 0
            return i - 1, i + n - 1
    raise AssertionError(f"content not found: {content!r}")


def reference_features(tok, rows):
    feats = []
    for row, f in zip(rows, published_features(tok, rows, L)):
        user = published_find(tok, row["messages"][1]["content"], f["input_ids"], f["attention_mask"])
        asst = published_find(tok, row["messages"][2]["content"], f["input_ids"], f["attention_mask"])
        feats.append({"input_ids": f["input_ids"], "attention_mask": f["attention_mask"], "labels": f["labels"],
                      "user_start_end": list(user), "assistant_start_end": list(asst)})
    return feats


class PublishedStpTrainer(Trainer):
    def __init__(self, *args, mode, lbd, gamma=1.0, times=1, length_adjustment=None, layer=-1, mse=False,
                 lbd_warmup=False, min_lbd=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode, self.lbd, self.gamma, self.times = mode, lbd, gamma, times
        self.length_adjustment, self.layer, self.mse = length_adjustment, layer, mse
        self.lbd_warmup, self.min_lbd = lbd_warmup, min_lbd
        self.span_generator = torch.Generator(device=self.args.device)
        self.span_generator.manual_seed(self.args.seed + 3 * self.args.process_index)

    def get_lbd(self):
        if not self.lbd_warmup:
            return self.lbd
        return self.min_lbd + (self.lbd - self.min_lbd) * self.state.global_step / (self.state.max_steps - 1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    labels=inputs["labels"], output_hidden_states=True)
        H = out.hidden_states[self.layer]
        user, asst = inputs["user_start_end"], inputs["assistant_start_end"]
        if self.mode == "curvature":
            jepa = R.curvature(H, user, asst)
            jepa = jepa["loss"] if isinstance(jepa, dict) else jepa
        else:
            if self.mode == "random_span":
                res = R.random_span(H, user, asst, g=self.span_generator, T=self.times,
                                    length_adjustment=self.length_adjustment)
            else:
                res = (R.e2e if self.mode == "e2e" else R.mean)(H, user, asst)
            U, P = res["U"], res["P"]
            w = res.get("w", torch.ones(U.shape[0]))
            if hasattr(model, "linear_predictor"):
                U = model.linear_predictor(U)
            jepa = torch.mean((U - P) ** 2) if self.mse else R.jepa_cosine(U, P, w)
        total = self.gamma * out.loss + self.get_lbd() * jepa
        return (total, out) if return_outputs else total


def reference_trainer(tmp_path, model_dir, data, ours_args, *, linear_predictor=False, **kwargs):
    setup = setup_tokenizer(str(model_dir), family_by_name("llama"), published=Published.everything())
    tok = setup.tokenizer
    tok.add_special_tokens({"mask_token": "<|mask|>"})     # stp.py: after the JEPA tokens
    rows = [json.loads(line) for line in open(data)]
    feats = reference_features(tok, rows)
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    if linear_predictor:
        torch.manual_seed(ours_args.seed)
        lp = torch.nn.Linear(model.config.hidden_size, model.config.hidden_size, bias=False)
        torch.nn.init.xavier_uniform_(lp.weight)
        model.linear_predictor = lp
    import dataclasses

    args = dataclasses.replace(ours_args, output_dir=str(tmp_path / "ref"))
    return PublishedStpTrainer(model=model, args=args, train_dataset=T.ListDataset(feats), processing_class=tok,
                               data_collator=published_collator(tok), **kwargs)


# --------------------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------------------
def our_trainer(tmp_path, model_dir, data, **flags):
    cfg = TrainConfig(train_file=str(data), model_name=str(model_dir), output_dir=str(tmp_path / "ours"),
                      paper_compat=True, script="stp.py", batch_size=2, grad_accum=2, max_steps=3,
                      max_length=L, last_token="-1", dtype="fp32", **flags).validate()
    family = T.detect_family(cfg.model_name)
    setup = setup_tokenizer(cfg.model_name, family, published=Published.everything(), mask_token=True)
    splits = T.load_splits(cfg, family, setup, -1)
    save_steps, epochs = T.schedule(cfg, splits.train, 1)
    args = T.training_arguments(cfg, cfg.output_dir, cfg.dtype, save_steps, epochs, False)
    torch.manual_seed(1234)  # the same RNG state for both embedding resizes
    return T.build_trainer(cfg, family, setup, splits, args, cfg.dtype, -1)


@pytest.mark.parametrize("flags,ref", [
    ({"linear": "random_span", "lbd": 0.5}, {"mode": "random_span", "lbd": 0.5}),
    ({"linear": "random_span", "random_span_times": 3, "length_adjustment": "cosine_like", "lbd": 1.0},
     {"mode": "random_span", "times": 3, "length_adjustment": "cosine_like", "lbd": 1.0}),
    ({"linear": "random_span", "linear_predictor": True, "lbd_warmup": True, "min_lbd": 0.1, "lbd": 1.0},
     {"mode": "random_span", "lbd_warmup": True, "min_lbd": 0.1, "lbd": 1.0, "linear_predictor": True}),
    ({"linear": "random_span", "jepa_mse": True, "random_span_layer": 1, "lbd": 0.2},
     {"mode": "random_span", "mse": True, "layer": 1, "lbd": 0.2}),
    ({"linear": "e2e", "lbd": 1.0}, {"mode": "e2e", "lbd": 1.0}),
    ({"linear": "mean", "lbd": 1.0}, {"mode": "mean", "lbd": 1.0}),
    ({"linear": "curvature", "lbd": 0.3}, {"mode": "curvature", "lbd": 0.3}),
])
def test_stp_compat_training_is_bit_identical(tmp_path, tiny_llama, flags, ref):
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(24, seed=5))
    ours = our_trainer(tmp_path, tiny_llama, data, **flags)
    theirs = reference_trainer(tmp_path, tiny_llama, data, ours.args, **ref)
    # both locate the same spans: ours [us, ue, as, ae], the published (u0, u1), (a0, a1) = one before
    ref = [(f["user_start_end"], f["assistant_start_end"]) for f in theirs.train_dataset]
    assert [f["spans"] for f in ours.train_dataset] == [[u0 + 1, u1 + 1, a0 + 1, a1 + 1] for (u0, u1), (a0, a1) in ref]
    assert_trains_identically(ours, theirs, steps=6)
