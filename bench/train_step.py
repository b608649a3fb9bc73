"""Training-step cost of every JEPA layout, against regular fine-tuning with dynamic padding.

    python bench/train_step.py                                   # CPU: synth and gsm8k
    python bench/train_step.py --tokenizer ../shared/tokenizers/llama-3.2-1b-instruct --datasets synth
    python bench/train_step.py --device cuda --dtype bf16 --model 1b   # a Llama-3.2-1B-shaped model

Each step is the project's own `JepaTrainer.compute_loss` + backward + AdamW step on a
pre-collated batch (collation is timed separately). The published layouts run with
every published behaviour on (views padded to --max_length, its tokenization and forward); the others
are the defaults. Layouts are interleaved round by round on the same batches, so that the
ratios compare configurations measured under the same machine load.

Columns: median ms per step; ratio to the reference (regular, dynamic padding); real
tokens (all views) per second; activation memory (bytes autograd saves for backward);
peak memory (RSS on CPU, reset before each step; max_memory_allocated on CUDA); the
token floor, (Full + Text + Code tokens) / Full tokens of the same batches; and on CUDA
the model FLOPs utilisation (analytic FLOPs, llm_jepa.flops, over the peak bf16 rate).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_jepa.behaviour import Published  # noqa: E402
from llm_jepa.config import TrainConfig  # noqa: E402
from llm_jepa.data import read_examples  # noqa: E402
from llm_jepa.families import family_for  # noqa: E402
from llm_jepa.flops import batch_flops, batch_segments  # noqa: E402
from llm_jepa.layouts import Layout  # noqa: E402
from llm_jepa.modeling import parameter_counts  # noqa: E402
from llm_jepa.tiny import conversation_texts, train_tokenizer  # noqa: E402
from llm_jepa.tokenization import TokenizerSetup, add_jepa_tokens  # noqa: E402
from llm_jepa.train import featurize, jepa_settings, make_collator  # noqa: E402
from llm_jepa.trainer import JepaTrainer  # noqa: E402

EVERYTHING = ",".join(Published.names())
# name -> TrainConfig flags; the first is the reference
LAYOUTS = {
    "regular, dynamic padding": dict(regular=True),
    "regular, padded to 512": dict(regular=True, published=EVERYTHING),
    "3-pass, padded to 512 (published)": dict(published=EVERYTHING),
    "additive mask, padded to 512": dict(additive_mask=True, published=EVERYTHING),
    "3-pass, dynamic padding": dict(packing=False),
    "packed": dict(),
    "STP random_span": dict(linear="random_span"),
    "STP random_span, linear predictor": dict(linear="random_span", linear_predictor=True),
    "regular, packed rows": dict(regular=True, pack_full=True),
    "STP random_span, packed rows": dict(linear="random_span", pack_full=True),
}
MODELS = {
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4),
    # Llama-3.2-1B's shape, random weights
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, rope_theta=500000.0),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


@dataclass
class Case:
    name: str
    cfg: TrainConfig
    trainer: JepaTrainer
    batches: list


def load_rows(path: Path, n: int, seed: int) -> list[dict]:
    rows = read_examples(path)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def build_tokenizer(spec: str, train_rows: list[dict]):
    from transformers import AutoTokenizer

    if spec == "trained":
        tok = train_tokenizer(conversation_texts(train_rows), vocab_size=4096)
    else:
        tok = AutoTokenizer.from_pretrained(spec)
    add_jepa_tokens(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(args, tok):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", vocab_size=len(tok), max_position_embeddings=4096,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **MODELS[args.model])
    model = AutoModelForCausalLM.from_config(config, attn_implementation=args.attn, dtype=torch.float32)
    return model.to(args.device)


def features(cfg: TrainConfig, tok, rows: list[dict], kwargs: dict) -> list[dict]:
    """The rows tokenized as finetune.py tokenizes them (Llama-family views)."""
    setup = TokenizerSetup(tok, [], kwargs, False, kwargs.get("date_string"))
    offset = -1 if cfg.behaviour.last_token else None
    feats, _ = featurize(cfg, family_for("llama", "llama"), setup, offset, "bench", rows, cfg.predictors, "bench")
    return feats


def make_case(name, flags, args, model, tok, rows, out_dir) -> Case:
    from transformers import TrainingArguments

    cfg = TrainConfig(train_file="-", max_length=args.max_length, batch_size=args.batch_size, predictors=1,
                      lbd=1.0, attn_implementation=args.attn, packing_budget=args.packing_budget,
                      **flags).validate()
    targs = TrainingArguments(output_dir=out_dir, report_to="none", use_cpu=args.device == "cpu",
                              per_device_train_batch_size=args.batch_size, remove_unused_columns=False)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    settings = jepa_settings(cfg, tok.pad_token_id, dtype, -1 if cfg.behaviour.last_token else None)
    trainer = JepaTrainer(model=model, args=targs, processing_class=tok, jepa=settings)
    trainer.current_gradient_accumulation_steps = 1
    feats = features(cfg, tok, rows, {"date_string": "26 Jul 2024"})
    collate = make_collator(cfg, tok.pad_token_id, "right")
    batches = []
    for i in range(0, len(feats) - args.batch_size + 1, args.batch_size):
        t0 = time.perf_counter()
        batch = collate(feats[i:i + args.batch_size])
        batch["_collate_ms"] = (time.perf_counter() - t0) * 1e3
        batches.append(batch)
    return Case(name, cfg, trainer, batches)


def real_tokens(case: Case, batch: dict) -> int:
    return int(batch_segments(batch, with_views=not case.cfg.regular).sum())


def floor_ratio(case: Case) -> float:
    full = sum(int(b["attention_mask"].sum()) for b in case.batches)
    return sum(real_tokens(case, b) for b in case.batches) / full


class SavedBytes:
    """Bytes of the tensors autograd keeps for backward (activation memory)."""

    def __init__(self):
        self.seen, self.total = set(), 0

    def pack(self, t):
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in self.seen:
            self.seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS


def peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def step(case: Case, batch: dict, optimizer, device: str, measure: bool = False) -> dict:
    inputs = {k: v.to(device) for k, v in batch.items() if not k.startswith("_")}
    model = case.trainer.model
    model.train()
    reset_peak(device) if measure else None
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with SavedBytes() as saved, _autocast(case, device):
        loss = case.trainer.compute_loss(model, inputs)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    return {"ms": ms, "saved": saved.total, "peak": peak_bytes(device) if measure else 0}


def _autocast(case: Case, device: str):
    dtype = case.trainer.jepa.compute_dtype
    if dtype == torch.float32:
        return torch.autocast(device_type=device, enabled=False)
    return torch.autocast(device_type=device, dtype=dtype)


def analytic_flops(case: Case, batch: dict, counts: dict) -> float:
    """FLOPs of the useful work in a batch: real tokens, every logit of the Full labels."""
    seg = batch_segments(batch, with_views=not case.cfg.regular)
    layout = Layout(kwargs={}, labels=batch["labels"], segments=seg)
    logits = int((batch["labels"][:, 1:] != -100).sum())
    return float(batch_flops(layout, counts, n_logits=logits)[1])


def run_dataset(args, path: Path, tok_spec: str) -> list[dict]:
    rows = load_rows(path, args.batch_size * args.batches, seed=0)
    train_rows = load_rows(path, 4000, seed=1)
    tok = build_tokenizer(tok_spec, train_rows)
    model = build_model(args, tok)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)  # as the Trainer (adamw_torch_fused)
    counts = parameter_counts(model)
    with tempfile.TemporaryDirectory() as tmp:
        chosen = [n for i, n in enumerate(LAYOUTS) if i == 0 or not args.layouts or n in args.layouts]
        cases = [make_case(n, LAYOUTS[n], args, model, tok, rows, tmp) for n in chosen]
        results = {c.name: [] for c in cases}
        for case in cases:  # warm-up, and memory one layout at a time
            for b in case.batches[: args.warmup]:
                step(case, b, optimizer, args.device)
            results[case.name + "/mem"] = step(case, case.batches[0], optimizer, args.device, measure=True)
        for r in range(args.rounds):  # interleaved: every layout once per round, same batch
            for case in cases:
                b = case.batches[r % len(case.batches)]
                out = step(case, b, optimizer, args.device)
                out["tokens"] = real_tokens(case, b)
                out["flops"] = analytic_flops(case, b, counts)
                out["collate_ms"] = b["_collate_ms"]
                results[case.name].append(out)
    return summarize(args, cases, results, path.stem, tok_spec, len(tok))


def summarize(args, cases, results, dataset, tok_spec, vocab) -> list[dict]:
    ref = statistics.median(r["ms"] for r in results[cases[0].name])
    table = []
    for case in cases:
        runs = results[case.name]
        ms = statistics.median(r["ms"] for r in runs)
        secs = sum(r["ms"] for r in runs) / 1e3
        row = {"dataset": dataset, "tokenizer": Path(tok_spec).name, "vocab": vocab, "layout": case.name,
               "ms": ms, "ratio": ms / ref, "tokens_per_s": sum(r["tokens"] for r in runs) / secs,
               "activation_MB": results[case.name + "/mem"]["saved"] / 2**20,
               "peak_MB": results[case.name + "/mem"]["peak"] / 2**20, "floor": floor_ratio(case),
               "collate_ms": statistics.median(r["collate_ms"] for r in runs)}
        if args.device == "cuda":
            row["mfu"] = sum(r["flops"] for r in runs) / secs / (args.peak_tflops * 1e12)
        table.append(row)
    return table


def markdown(rows: list[dict], cuda: bool) -> str:
    head = ["layout", "ms/step", "ratio", "tokens/s", "activation MB", "peak MB", "token floor", "collate ms"]
    if cuda:
        head.append("MFU")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["layout"], f"{r['ms']:.1f}", f"{r['ratio']:.2f}", f"{r['tokens_per_s']:.0f}",
                 f"{r['activation_MB']:.1f}", f"{r['peak_MB']:.0f}", f"{r['floor']:.2f}", f"{r['collate_ms']:.1f}"]
        if cuda:
            cells.append(f"{100 * r['mfu']:.1f}%")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def targets(rows: list[dict]) -> list[str]:
    by = {r["layout"]: r for r in rows}
    ref = by["regular, dynamic padding"]
    out = []
    if {"packed", "3-pass, padded to 512 (published)"} <= set(by):
        packed, published = by["packed"], by["3-pass, padded to 512 (published)"]
        floor = packed["floor"]
        out += [f"packed / regular = {packed['ratio']:.2f} against a token floor of {floor:.2f}: "
                f"{packed['ratio'] / floor:.2f}x the floor (target <= 1.05)",
                f"packed vs the published layout: {published['ms'] / packed['ms']:.1f}x faster",
                f"activation memory: packed {packed['activation_MB']:.1f} MB = "
                f"{packed['activation_MB'] / published['activation_MB']:.2f} of the published layout's "
                f"(target <= 0.33)"]
    for name in ("STP random_span", "STP random_span, linear predictor", "STP random_span, packed rows"):
        if name in by:
            out.append(f"{name} / regular = {by[name]['ratio']:.3f} (target <= 1.05)")
    return out + [f"(reference: {ref['ms']:.1f} ms/step)"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--datasets", nargs="+", default=["synth", "gsm8k"])
    p.add_argument("--tokenizer", default="trained", help="'trained' (a 4096-token BPE trained on the data) or a dir")
    p.add_argument("--model", default="small", choices=sorted(MODELS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--batches", type=int, default=8, help="distinct batches per dataset")
    p.add_argument("--rounds", type=int, default=8, help="timed steps per layout")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--packing_budget", type=int, default=0, help="tokens per packed row (0: automatic)")
    p.add_argument("--layouts", nargs="+", default=None, help="only these layouts (the reference is always run)")
    p.add_argument("--peak_tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU (CUDA)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if args.device == "cuda" and args.peak_tflops is None:
        name = torch.cuda.get_device_name()
        args.peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 989.0)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_flush_denormal(True)  # as the training entry points do on CPU
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"# {device_name}; model {args.model}; {args.dtype}; attention {args.attn}; batch {args.batch_size}; "
          f"max_length {args.max_length}; {args.rounds} interleaved rounds\n")
    all_rows = []
    for name in args.datasets:
        rows = run_dataset(args, Path(args.data) / f"{name}_train.jsonl", args.tokenizer)
        all_rows += rows
        print(f"## {name} (tokenizer: {rows[0]['tokenizer']}, {rows[0]['vocab']} tokens)\n")
        print(markdown(rows, args.device == "cuda"))
        print()
        for line in targets(rows):
            print(f"- {line}")
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=1))


if __name__ == "__main__":
    main()
