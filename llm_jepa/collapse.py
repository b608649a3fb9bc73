"""Is a JEPA term learning anything, or did its embeddings collapse?

A JEPA loss near its minimum means either that the two embeddings of an example became
informative and aligned, or that every example maps to nearly the same direction, which
makes the term trivially small. The two are told apart by comparing examples with each
other: for matching pairs (Text and Code of the same example) against non-matching pairs
(Text of one example, Code of another) the cosine should be clearly higher, and the
embeddings should spread over many directions (effective rank well above 1).

Two pairs are checked on the same examples, whatever the method that trained the model
(regular fine-tuning gives the baseline):
* views:  Enc(Text) and Enc(Code), the states LLM-JEPA aligns (its last-token embeddings);
* chords: the user's chord and the answer's chord in the Full pass, E(end) - E(start) of
  each content span, the trajectory STP straightens.
"""
from __future__ import annotations

import torch

from .collate import pad_batch
from .data import TokenizeOptions, ViewOptions, ViewRenderer, ViewTokenizer, tokenize_examples


def pair_statistics(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean cosine of matching rows (a_i, b_i) and of non-matching ones (a_i, b_j, i != j),
    and the effective rank of each side."""
    a, b = a.double(), b.double()
    sim = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    n = sim.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return {"matched_cos": float(sim.diagonal().mean()), "unmatched_cos": float(sim[off].mean()) if n > 1 else None,
            "effective_rank_a": effective_rank(a), "effective_rank_b": effective_rank(b), "dim": a.shape[1],
            "n": n}


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of the centred rows (Roy & Vetterli):
    1 when every row is the same direction, the dimension when they fill it evenly."""
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp(min=1e-30)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def states_at(model, pad_id: int, seqs: list[list[int]], positions: list[list[int]], batch_size: int = 32):
    """The final hidden state of each sequence at each of its positions: [N, k, d]."""
    out = []
    for i in range(0, len(seqs), batch_size):
        ids, mask = pad_batch(seqs[i:i + batch_size], pad_id, "right")
        hidden = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       output_hidden_states=True).hidden_states[-1].float().cpu()
        pos = torch.tensor(positions[i:i + batch_size])
        out.append(hidden[torch.arange(len(pos))[:, None], pos])
    return torch.cat(out)


def collapse_check(model, tokenizer, family, template_kwargs: dict, rows: list[dict], predictors: int,
                   max_length: int) -> dict:
    """pair_statistics of the views and of the chords, on `rows`."""
    renderer = ViewRenderer(tokenizer, family, ViewOptions(predictors=predictors), template_kwargs)
    vtok = ViewTokenizer(tokenizer, TokenizeOptions(max_length))
    feats, _ = tokenize_examples(rows, renderer, vtok, with_views=True, name="collapse check", with_spans=True)
    feats = [f for f in feats if f["spans"][1] > 0]
    pad = tokenizer.pad_token_id
    text = states_at(model, pad, [f["text_input_ids"] for f in feats], [[f["text_at"]] for f in feats])[:, 0]
    code = states_at(model, pad, [f["code_input_ids"] for f in feats], [[f["code_at"]] for f in feats])[:, 0]
    # E(b) is the state before position b: the chords of [us, ue) and [as, ae)
    bounds = [[us - 1, ue - 1, as_ - 1, ae - 1] for us, ue, as_, ae in (f["spans"] for f in feats)]
    full = states_at(model, pad, [f["input_ids"] for f in feats], bounds)
    user, answer = full[:, 1] - full[:, 0], full[:, 3] - full[:, 2]
    return {"views": pair_statistics(text, code), "chords": pair_statistics(user, answer)}
