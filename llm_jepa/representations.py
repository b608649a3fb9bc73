"""--similarity and --t_sne: how close Enc(Text) and Enc(Code) are after fine-tuning.

By default the views are built exactly as in training (data.py: same template, predictor
tokens from the run's config, the embedding read at the last content/predictor token for
`last` pooling). With `--published similarity_views`, as published, each message is rendered with the
generation prompt appended and `last` pools the final token of that.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from .collate import pad_batch
from .data import TokenizeOptions, ViewOptions, ViewRenderer, ViewTokenizer, tokenize_examples
from .published import views as published_views

logger = logging.getLogger("llm_jepa")
QUANTILES = (0.1, 0.2, 0.5, 0.8, 0.9)


@torch.no_grad()
def embed(model, pad_id: int, seqs: list[list[int]], at: list[int], pooling: str, layer: int,
          batch_size: int) -> torch.Tensor:
    """One vector per sequence: the hidden state at `at` (last), the mean, or the first token."""
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        ids, mask = pad_batch(chunk, pad_id, "right")
        ids, mask = ids.to(model.device), mask.to(model.device)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer].float()
        if pooling == "mean":
            vec = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        elif pooling == "cls":
            vec = hidden[:, 0]
        else:
            vec = hidden[torch.arange(len(chunk), device=hidden.device), torch.tensor(at[i:i + batch_size])]
        out.append(vec.cpu())
    return torch.cat(out)


def view_sequences(cfg, loaded, rows: list[dict], predictors: int, use_view_fields: bool):
    """(text ids, text positions, code ids, code positions) for every row."""
    tok = loaded.tokenizer
    if cfg.behaviour.similarity_views:
        return published_views.view_sequences(cfg, tok, rows)
    opts = ViewOptions(predictors=predictors, plain=cfg.plain, use_view_fields=use_view_fields)
    renderer = ViewRenderer(tok, loaded.family, opts, loaded.template_kwargs)
    vtok = ViewTokenizer(tok, TokenizeOptions(max_length=cfg.max_length))
    feats, _ = tokenize_examples(rows, renderer, vtok, with_views=True, name="similarity")
    return ([f["text_input_ids"] for f in feats], [f["text_at"] for f in feats],
            [f["code_input_ids"] for f in feats], [f["code_at"] for f in feats])


def describe(values: list[float]) -> dict:
    """n, mean, std and quantiles; None where there is nothing to describe."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "quantiles": None}
    v = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {"n": len(values), "mean": float(v.mean()), "std": float(v.std(unbiased=False)),
            "quantiles": dict(zip(map(str, QUANTILES), q))}


def similarity_report(cfg, loaded, examples, scores, use_view_fields: bool, training: dict | None,
                      out: Path) -> dict:
    """cos(Enc(Text), Enc(Code)) per example (stored in its scores) and its statistics
    for correct and wrong examples."""
    predictors = int((training or {}).get("predictors", 0))
    rows = [ex.row for ex in examples]
    t_ids, t_at, c_ids, c_at = view_sequences(cfg, loaded, rows, predictors, use_view_fields)
    pad = loaded.tokenizer.pad_token_id
    args = (cfg.embedding_pooling, cfg.embedding_layer, cfg.eval_batch_size)
    t = embed(loaded.model, pad, t_ids, t_at, *args)
    c = embed(loaded.model, pad, c_ids, c_at, *args)
    cos = torch.nn.functional.cosine_similarity(t, c, dim=-1).tolist()
    for s, value in zip(scores, cos):
        s.metrics["cosine"] = value
    report = {"pooling": cfg.embedding_pooling, "layer": cfg.embedding_layer, "all": describe(cos),
              "correct": describe([v for v, s in zip(cos, scores) if s.correct]),
              "wrong": describe([v for v, s in zip(cos, scores) if s.correct is False])}
    if cfg.t_sne:
        report["t_sne"] = write_tsne(cfg, rows, t, c, out)
    return report


def tsne_points(kind: str, rows: list[dict], t: torch.Tensor, c: torch.Tensor):
    """(embeddings, labels, samples) of a --t_sne_type."""
    if kind == "in_n_out":
        emb = torch.stack([x for pair in zip(t, c) for x in pair])
        return emb, [i % 2 for i in range(len(emb))], []
    samples = [r["messages"][1]["content"] for r in rows]
    gold = [r["messages"][2]["content"] for r in rows]
    if kind == "paraphrase":
        return t, [int(g) for g in gold], samples
    return t, [0 if "Good" in g else 1 for g in gold], samples


def write_tsne(cfg, rows: list[dict], t: torch.Tensor, c: torch.Tensor, out: Path) -> dict:
    """The embeddings as a pickle (published format) and a 2-D t-SNE scatter plot, beside
    the evaluation rows `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    emb, labels, samples = tsne_points(cfg.t_sne_type, rows, t, c)
    pkl, png = out.with_name(out.stem + ".tsne.pkl"), out.with_name(out.stem + ".tsne.png")
    with open(pkl, "wb") as fh:
        pickle.dump({"embedding_list": emb.numpy(), "label_list": labels, "sample_list": samples}, fh)
    xy = TSNE(n_components=2, perplexity=max(1.0, min(30.0, len(emb) - 1.0)), init="pca",
              random_state=cfg.seed).fit_transform(emb.numpy())
    fig, ax = plt.subplots(figsize=(6, 6))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=8, cmap="coolwarm" if cfg.t_sne_type != "paraphrase"
                        else "tab20")
    ax.set_title(f"t-SNE of view embeddings ({cfg.t_sne_type})")
    if cfg.t_sne_type == "in_n_out":
        handles, _ = points.legend_elements()
        ax.legend(handles, ["Text", "Code"], title="view")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    logger.info("t-SNE: %s, %s", pkl, png)
    return {"pickle": str(pkl), "png": str(Path(png))}
