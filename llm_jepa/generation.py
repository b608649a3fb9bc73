"""Prompts and batched greedy generation for evaluation.

Prompts are the chat template over system + user with the generation prompt, with the
same family quirks, special tokens and pinned date as training (one source of truth:
families.py, tokenization.py, data.py). Generation is greedy and batched: prompts are
sorted by length, left-padded, and every row stops at the model's end-of-turn or eos
token.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .behaviour import Published
from .collate import pad_batch
from .data import TokenizeOptions, ViewOptions, ViewRenderer, ViewTokenizer, full_messages
from .families import Family
from .metrics.hellaswag import LETTERS
from .tokenization import PERCEPTION, PLAIN_EOT, encode_texts


def prompt_text(tok, row: dict, family: Family, *, plain: bool, template_kwargs: dict) -> str:
    """The text a model continues to answer `row`."""
    msgs = row["messages"]
    if plain:
        return msgs[1]["content"] + PERCEPTION
    convo = [m for m in full_messages(msgs[:3], family) if m["role"] != "assistant"]
    return tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True, **template_kwargs)


def encode_prompts(tok, prompts: list[str], max_length: int, plain: bool,
                   published: Published = Published()) -> list[list[int]]:
    """Token ids of each prompt, at most max_length of them.

    A long prompt keeps its end (the generation prompt); `published.prompt_truncation` cuts
    the end off instead, and `published.double_bos` lets the tokenizer add a second BOS."""
    ids = [e["input_ids"] for e in encode_texts(tok, prompts, published.double_bos or plain)]
    if published.prompt_truncation:
        return [x[:max_length] for x in ids]
    return [x[-max_length:] for x in ids]


def end_of_turn_ids(tok, family: Family, template_kwargs: dict, plain: bool) -> list[int]:
    """eos, plus the token that closes an assistant turn in this template (found the way
    training labels find it)."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    probe = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "answer"}]}
    renderer = ViewRenderer(tok, family, ViewOptions(plain=plain), template_kwargs)
    vtok = ViewTokenizer(tok, TokenizeOptions(max_length=10 ** 6))
    view = renderer.full(probe)
    (enc,) = vtok.encode([view], plain)
    labels, found = vtok.labels(enc, view, train_all=False)
    if found:
        eot = [t for t in labels if t != -100][-1]
        if eot not in ids:
            ids.append(eot)
    if plain:
        ids.append(tok.convert_tokens_to_ids(PLAIN_EOT))
    return ids


@dataclass
class Generated:
    text: str
    seconds: float        # the batch's wall time divided among its rows
    ids: list[int] = None  # the generated tokens, up to (not including) the stop token


@dataclass
class GreedyGenerator:
    model: object
    tokenizer: object
    stop_ids: list[int]
    batch_size: int = 32
    max_new_tokens: int | None = 128   # -1: until end of turn, bounded by max_length
    max_length: int = 512

    def __call__(self, prompts: list[list[int]], progress: bool = True) -> list[Generated]:
        from tqdm import tqdm

        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Generated | None] = [None] * len(prompts)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="Generating", disable=not progress, unit="batch"):
            for i, gen in zip(batch, self._generate([prompts[i] for i in batch])):
                out[i] = gen
        return out

    def _new_tokens(self, longest_prompt: int) -> int:
        if self.max_new_tokens is None or self.max_new_tokens < 0:
            return max(1, self.max_length - longest_prompt)
        return self.max_new_tokens

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]]) -> list[Generated]:
        from transformers import GenerationConfig

        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id, self.model.device)
        config = GenerationConfig(do_sample=False, max_new_tokens=self._new_tokens(ids.shape[1]),
                                  eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        start = time.perf_counter()
        seqs = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        seconds = (time.perf_counter() - start) / len(prompts)
        return [self._decoded(row[ids.shape[1]:], seconds) for row in seqs]

    def _decoded(self, new: torch.Tensor, seconds: float) -> Generated:
        stops = torch.isin(new, torch.tensor(self.stop_ids, device=new.device)).nonzero()
        if len(stops):
            new = new[: int(stops[0])]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Generated(text, seconds, new.tolist())


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = pad_batch(seqs, pad_id, "left")
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------------------
# scoring with the model's probabilities (HellaSwag)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def next_letter(model, tok, prompts: list[list[int]], batch_size: int) -> list[str]:
    """The published letter mode: argmax over A-D of the next-token probability."""
    letter_ids = torch.tensor([tok.convert_tokens_to_ids(x) for x in LETTERS], device=model.device)
    out = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[i:i + batch_size], tok.pad_token_id, model.device)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
        out += [LETTERS[j] for j in logits[:, letter_ids].argmax(-1).tolist()]
    return out


@torch.no_grad()
def continuation_logprobs(model, tok, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
    """Sum of log p(continuation | context) per (context, continuation), lm-eval style:
    the continuation's tokens are those of context+continuation beyond the context's."""
    seqs, spans = [], []
    for context, cont in pairs:
        ctx = tok(context)["input_ids"]
        whole = tok(context + cont)["input_ids"]
        seqs.append(whole)
        spans.append((min(len(ctx), len(whole) - 1), len(whole)))
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk, chunk_spans = seqs[i:i + batch_size], spans[i:i + batch_size]
        ids, mask = pad_batch(chunk, tok.pad_token_id, "right")
        logp = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = logp.log_softmax(-1)
        for j, (start, end) in enumerate(chunk_spans):
            targets = ids[j, start:end].to(logp.device)
            out.append(float(logp[j, start - 1:end - 1].gather(1, targets[:, None]).sum()))
    return out
