"""The published evaluation's generation, bit for bit (`--published one_at_a_time`,
`hellaswag_letter`).

The published script generated one prompt at a time with `generate`, right-truncating the
prompt and stopping at eos only; for HellaSwag it cut the prompt to --max_new_tokens
tokens. The default (generation.py) batches left-padded prompts, keeps each prompt's end
and stops at the end-of-turn token as well.
"""
from __future__ import annotations

import time

import torch

from ..generation import Generated


@torch.no_grad()
def generate_one(model, tok, prompt: str, max_length: int, max_new_tokens: int | None) -> Generated:
    """One prompt at a time, as published: right-truncated prompt, stop at eos only, and
    max_new_tokens=None (the published -1) leaves the model's generation config in charge."""
    inputs = tok(prompt, return_tensors="pt", truncation=True, max_length=max_length)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    start = time.perf_counter()
    out = model.generate(**inputs, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         do_sample=False, max_new_tokens=max_new_tokens)
    text = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return Generated(text, time.perf_counter() - start)


def letter_prompts(tok, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """The HellaSwag prompts as published: truncated to max_new_tokens tokens (the end, with
    the question, is cut off); -1 means no limit."""
    limit = None if max_new_tokens == -1 else max_new_tokens
    return [tok(p, truncation=True, max_length=limit)["input_ids"] for p in prompts]
