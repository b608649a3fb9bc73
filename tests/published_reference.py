"""An independent re-statement of the published numerics, written from a description of the
published code's behaviour (not from the project's code), used to check `--paper_compat` bit for bit.

It deliberately follows the published algorithms literally: every view is tokenized with
`tokenizer(text, truncation=True, max_length=L, padding="max_length")`, labels come from
transformers' own DataCollatorForLanguageModeling(mlm=False), the embedding index is found
by walking the attention mask, and the additive mask is built with a per-sample loop.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, Trainer


def published_features(tokenizer, rows, max_length, predictors=0, gemma=False, plain=False):
    feats = []
    for row in rows:
        msgs = row["messages"]
        full = copy.deepcopy(msgs)
        if gemma:
            full = copy.deepcopy(msgs)[1:3]
            full[0]["content"] = msgs[0]["content"] + "\n\n" + full[0]["content"]
        user = copy.deepcopy(msgs)[1:2]
        assistant = copy.deepcopy(msgs)[2:3]
        if gemma:
            assistant[0]["role"] = "user"
        for i in range(predictors, 0, -1):
            user[0]["content"] += f"<|predictor_{i}|>"
        if plain:
            texts = [msgs[1]["content"] + "<|perception|>" + msgs[2]["content"] + "<|eot_id|>",
                     user[0]["content"], assistant[0]["content"]]
        else:
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=False)
                     for m in (full, user, assistant)]
        enc = [tokenizer(t, truncation=True, max_length=max_length, padding="max_length") for t in texts]
        feats.append({"input_ids": enc[0]["input_ids"], "attention_mask": enc[0]["attention_mask"],
                      "labels": [-100] * max_length,
                      "input_ids_user": enc[1]["input_ids"], "attention_mask_user": enc[1]["attention_mask"],
                      "labels_user": [-100] * max_length,
                      "input_ids_assistant": enc[2]["input_ids"],
                      "attention_mask_assistant": enc[2]["attention_mask"],
                      "labels_assistant": [-100] * max_length})
    return feats


def published_collator(tokenizer):
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def last_token_index(attention_mask, last_token):
    """n + last_token, n = tokens up to the first padding after the content."""
    out = []
    for row in attention_mask.tolist():
        n, started = 0, False
        for m in row:
            if m != 0:
                started = True
            if m == 0 and started:
                break
            n += 1
        out.append(n + last_token)
    return torch.tensor(out)


def causal_block(k):
    mask = torch.zeros((k, k), dtype=torch.float32)
    mask[torch.triu(torch.ones(k, k), diagonal=1) == 1] = -torch.inf
    return mask


class PublishedTrainer(Trainer):
    def __init__(self, *args, lbd=0.1, gamma=1.0, last_token=-1, additive_mask=False, loss="cosine",
                 jepa_ratio=-1.0, **kwargs):
        self.lbd, self.gamma, self.last_token = lbd, gamma, last_token
        self.additive_mask, self.loss_kind, self.jepa_ratio = additive_mask, loss, jepa_ratio
        super().__init__(*args, **kwargs)

    def _additive(self, inputs):
        b, L = inputs["input_ids"].shape
        mask = torch.full((2 * b, 1, L, L), -torch.inf)
        lt = last_token_index(inputs["attention_mask"], self.last_token)
        lu = last_token_index(inputs["attention_mask_user"], self.last_token)
        la = last_token_index(inputs["attention_mask_assistant"], self.last_token)
        for i in range(b):
            n, nu, na = int(lt[i]) + 1, int(lu[i]) + 1, int(la[i]) + 1
            inputs["input_ids_user"][i, nu:nu + na] = inputs["input_ids_assistant"][i, :na]
            inputs["labels_user"][i, nu:nu + na] = inputs["labels_assistant"][i, :na]
            mask[i, :, :n, :n] = causal_block(n)
            mask[i + b, :, :nu, :nu] = causal_block(nu)
            mask[i + b, :, nu:nu + na, nu:nu + na] = causal_block(na)
        llm = {"input_ids": torch.cat([inputs["input_ids"], inputs["input_ids_user"]]),
               "labels": torch.cat([inputs["labels"], inputs["labels_user"]]),
               "attention_mask": mask}
        return llm, lu, la + lu + 1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        b = inputs["input_ids_user"].shape[0]
        skip = False
        if self.additive_mask:
            if self.jepa_ratio > 0.0 and torch.rand(1).item() > self.jepa_ratio:
                skip = True
                llm = {k: inputs[k] for k in ("input_ids", "labels", "attention_mask")}
            else:
                llm, iu, ia = self._additive(inputs)
        else:
            iu = last_token_index(inputs["attention_mask_user"], self.last_token)
            ia = last_token_index(inputs["attention_mask_assistant"], self.last_token)
            llm = {k: torch.cat([inputs[k], inputs[k + "_user"], inputs[k + "_assistant"]])
                   for k in ("input_ids", "labels", "attention_mask")}
        out = model(**llm, output_hidden_states=True)
        if skip:
            return self.gamma * out.loss
        hs = out.hidden_states[-1]
        user_h = hs[b:2 * b]
        asst_h = user_h if self.additive_mask else hs[2 * b:]
        u, a = user_h[range(b), iu.to(hs.device)], asst_h[range(b), ia.to(hs.device)]
        if self.loss_kind == "l2":
            jepa = torch.linalg.norm(u - a, ord=2, dim=-1).mean()
        elif self.loss_kind == "mse":
            jepa = torch.mean((u - a) ** 2)
        elif self.loss_kind == "infonce":
            sim = torch.mm(F.normalize(u, p=2, dim=1), F.normalize(a, p=2, dim=1).T)
            jepa = F.cross_entropy(sim / 0.07, torch.arange(b, device=sim.device))
        else:
            jepa = 1.0 - torch.mean(F.cosine_similarity(u, a, dim=-1))
        return self.gamma * out.loss + self.lbd * jepa
