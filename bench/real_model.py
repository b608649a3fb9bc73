"""A real pretrained model's training and generation speed against the machine's matmul throughput.

    python bench/real_model.py                                  # smollm2-135m-instruct, batch 8 of synth
    python bench/real_model.py --checkpointing                  # also the runs with activation checkpointing
    python bench/real_model.py --model DIR --attn eager

Training: per configuration (regular; JEPA packed; JEPA 3-pass; STP) the project's own
`JepaTrainer.compute_loss` + backward + fused AdamW on batches of synth_train (the
functions of bench/train_step.py), interleaved round by round on the same batches, the
first round a warm-up. Reported: real tokens (all views) per second and the achieved
FLOP/s, both over the forward + backward time (the AdamW update is timed apart: it is
memory-bound and runs once per --grad_accum micro-batches); the FLOPs are the analytic
count of llm_jepa.flops (real tokens, labelled logits, no recomputation).

The ceiling: in every round, right after the steps, the machine's matmul throughput on the
model's own weights, i.e. for each Linear of a few decoder layers (scaled to all of them)
the three products of training (x W^T, and the backward g W and g^T x) at the batch's
real token count, plus the lm_head at the batch's labelled-logit count. "of matmul" is the
achieved FLOP/s over that throughput: 100% would be a step that does nothing but its
matmuls, at the speed they reach alone.

Generation: greedy, the project's generator (prompts sorted by length, left-padded, KV
cache, stop at end of turn) on synth_test prompts. The matmul-bound time is what the same
products take alone: the prefill at the prompts' token count, then one decoding step per
generated token with only the rows still generating (every Linear of every layer, so that
the weights stream from memory as they do in decoding, and the lm_head).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_step import analytic_flops, floor_ratio, load_rows, make_case, real_tokens, step  # noqa: E402

from llm_jepa.data import read_examples  # noqa: E402
from llm_jepa.generation import GreedyGenerator, encode_prompts, end_of_turn_ids, prompt_text  # noqa: E402
from llm_jepa.modeling import find_decoder, load_model, parameter_counts, resolve_dtype  # noqa: E402
from llm_jepa.models import resolve_model_name  # noqa: E402
from llm_jepa.tokenization import setup_tokenizer  # noqa: E402
from llm_jepa.families import detect_family  # noqa: E402

logger = logging.getLogger("bench.real_model")

# name -> (TrainConfig flags, activation checkpointing); the first is the reference
CONFIGS = {
    "regular": (dict(regular=True), False),
    "JEPA packed": (dict(), False),
    "JEPA 3-pass": (dict(packing=False), False),
    "STP random_span": (dict(linear="random_span"), False),
}
CHECKPOINTED = {
    "regular, checkpointing": (dict(regular=True), True),
    "JEPA packed, checkpointing": (dict(), True),
}
TARGET_MATMUL = 0.70      # training at >= 70% of the matmul throughput
TARGET_FLOOR = 1.05       # JEPA packed / regular within 1.05x of the token floor; STP / regular within 1.05x
TARGET_GENERATION = 2.0   # generation within 2x of the matmul-bound time


# --------------------------------------------------------------------------------------
# the matmul ceiling
# --------------------------------------------------------------------------------------
def decoder_layers(model) -> list[torch.nn.Module]:
    """The decoder's layers, in order (the largest ModuleList of the decoder)."""
    lists = [m for m in find_decoder(model).modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len))


def linear_weights(layer: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in layer.modules() if isinstance(m, torch.nn.Linear)]


# The dtype the matmuls of a step run in (autocast casts the Linear inputs and weights).
MATMUL_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


@torch.no_grad()
def matmul_time(weights: list[torch.Tensor], m: int, backward: bool, dtype=torch.float32) -> tuple[float, float]:
    """(seconds, FLOPs) of the products a Linear does for m tokens, for each weight in turn:
    x W^T, and with `backward` also g W (input gradient) and g^T x (weight gradient), in `dtype`."""
    seconds = flops = 0.0
    for w in weights:
        out_f, in_f = w.shape
        w = w.to(dtype)
        x, g = torch.randn(m, in_f, dtype=dtype), torch.randn(m, out_f, dtype=dtype)
        products = [(x, w.t())] + ([(g, w), (g.t(), x)] if backward else [])
        for a, b in products:
            t0 = time.perf_counter()
            torch.mm(a, b)
            seconds += time.perf_counter() - t0
            flops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    return seconds, flops


def training_matmul(model, tokens: int, logits: int, sample: int = 3, dtype=torch.float32) -> tuple[float, float]:
    """(seconds, FLOPs) of a training step's matmuls: `sample` decoder layers spread over the
    stack, scaled to all layers (at hundreds of tokens the products are compute-bound, so
    which layer's weights they use does not matter), plus the lm_head at `logits` rows."""
    layers = decoder_layers(model)
    picked = [layers[i * (len(layers) - 1) // max(sample - 1, 1)] for i in range(min(sample, len(layers)))]
    seconds = flops = 0.0
    for layer in picked:
        s, f = matmul_time(linear_weights(layer), tokens, backward=True, dtype=dtype)
        seconds, flops = seconds + s, flops + f
    scale = len(layers) / len(picked)
    head_s, head_f = matmul_time([model.get_output_embeddings().weight], max(logits, 1), backward=True,
                                 dtype=dtype)
    return seconds * scale + head_s, flops * scale + head_f


def forward_matmul_seconds(model, rows: int, head_rows: int) -> float:
    """Seconds of one forward's matmuls over every layer's weights (streamed from memory, as
    in decoding) at `rows` tokens, plus the lm_head at `head_rows`."""
    weights = [w for layer in decoder_layers(model) for w in linear_weights(layer)]
    body, _ = matmul_time(weights, rows, backward=False)
    head, _ = matmul_time([model.get_output_embeddings().weight], head_rows, backward=False)
    return body + head


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
class TimedAdamW:
    """The Trainer's optimizer (fused AdamW) timing its own updates, so that a step's time
    splits into forward + backward and the update. lr 0: the full cost, weights unchanged
    (the generation benchmark runs on the pretrained weights)."""

    def __init__(self, params):
        self.opt = torch.optim.AdamW(params, lr=0.0, fused=True)
        self.seconds: list[float] = []

    def step(self) -> None:
        t0 = time.perf_counter()
        self.opt.step()
        self.seconds.append(time.perf_counter() - t0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)


def set_checkpointing(model, on: bool) -> None:
    if on and not model.is_activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif not on and model.is_activation_checkpointing:
        model.activation_checkpointing_disable()


def train_rounds(args, model, tok, configs: dict) -> list[dict]:
    """Every configuration once per round on the same batch, then the matmul ceiling at each
    configuration's token counts; the first `args.warmup` rounds are not recorded."""
    n_rounds = args.warmup + args.rounds
    rows = load_rows(Path(args.data) / "synth_train.jsonl", args.batch_size * n_rounds, seed=0)
    opts = SimpleNamespace(max_length=args.max_length, batch_size=args.batch_size, attn=args.attn,
                           packing_budget=0, device="cpu", dtype=args.dtype)
    counts = parameter_counts(model)
    optimizer = TimedAdamW(model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: (make_case(name, flags, opts, model, tok, rows, tmp), ckpt)
                 for name, (flags, ckpt) in configs.items()}
        runs = {name: [] for name in cases}
        for r in range(n_rounds):
            for name, (case, ckpt) in cases.items():
                set_checkpointing(model, ckpt)
                batch = case.batches[r]
                out = step(case, batch, optimizer, "cpu")
                opt_s = optimizer.seconds[-1]
                labelled = int((batch["labels"][:, 1:] != -100).sum())
                out.update(seconds=out["ms"] / 1e3 - opt_s, optimizer_s=opt_s, tokens=real_tokens(case, batch),
                           flops=analytic_flops(case, batch, counts), logits=labelled)
                if r >= args.warmup:
                    runs[name].append(out)
            set_checkpointing(model, False)
            for name, (case, _) in cases.items():  # the ceiling, under this round's machine load
                if r >= args.warmup:
                    last = runs[name][-1]
                    last["mm_seconds"], last["mm_flops"] = training_matmul(model, last["tokens"], last["logits"],
                                                                           dtype=MATMUL_DTYPE[args.dtype])
            logger.info("round %d/%d done", r + 1, n_rounds)
        return [summarize(name, case, runs[name]) for name, (case, _) in cases.items()]


def summarize(name: str, case, runs: list[dict]) -> dict:
    secs = sum(r["seconds"] for r in runs)
    flops_s = sum(r["flops"] for r in runs) / secs
    mm = sum(r["mm_flops"] for r in runs) / sum(r["mm_seconds"] for r in runs)
    return {"config": name, "seconds": secs / len(runs), "tokens_per_s": sum(r["tokens"] for r in runs) / secs,
            "gflops": flops_s / 1e9, "matmul_gflops": mm / 1e9, "of_matmul": flops_s / mm,
            "floor": floor_ratio(case), "optimizer_s": statistics.median(r["optimizer_s"] for r in runs),
            "activation_MB": max(r["saved"] for r in runs) / 2**20,
            "tokens": sum(r["tokens"] for r in runs) / len(runs)}


# --------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------
def decode_rows(made: list[int]) -> list[int]:
    """Rows still generating at each decoding step of a batch whose rows produce `made`
    tokens each: the prefill gives every row its first token, step j its j-th."""
    return [sum(g >= j for g in made) for j in range(2, max(made) + 1)]


def generation_run(args, model, tok, family, template_kwargs) -> dict:
    """Greedy generation of synth_test prompts in batches, and the matmul-bound time of the
    same prefills and decoding steps."""
    rows = read_examples(Path(args.data) / "synth_test.jsonl")[: args.gen_examples]
    prompts = [prompt_text(tok, r, family, plain=False, template_kwargs=template_kwargs) for r in rows]
    ids = encode_prompts(tok, prompts, args.max_length, plain=False)
    stops = end_of_turn_ids(tok, family, template_kwargs, plain=False)
    gen = GreedyGenerator(model, tok, stops, batch_size=args.gen_batch, max_new_tokens=args.new_tokens)
    model.eval()
    GreedyGenerator(model, tok, stops, batch_size=2, max_new_tokens=4)(ids[:2], progress=False)  # warm-up
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # the generator's own batches
    chunks = [[ids[i] for i in order[s:s + args.gen_batch]] for s in range(0, len(order), args.gen_batch)]
    seconds = bound = 0.0
    new_tokens = computed = needed = 0
    cache: dict[int, float] = {}
    for chunk in chunks:
        t0 = time.perf_counter()
        outs = gen(chunk, progress=False)
        seconds += time.perf_counter() - t0
        # tokens each row produced, its stop token included: one model call per token
        made = [min(len(o.ids) + 1, args.new_tokens) for o in outs]
        new_tokens += sum(len(o.ids) for o in outs)
        computed += len(chunk) * max(made)   # generate runs every row until the last stops
        needed += sum(made)
        bound += forward_matmul_seconds(model, sum(len(p) for p in chunk), len(chunk))  # prefill
        for active in decode_rows(made):
            if active not in cache:
                cache[active] = forward_matmul_seconds(model, active, active)
            bound += cache[active]
    n = len(ids)
    return {"examples": n, "seconds": seconds, "examples_per_s": n / seconds, "tokens_per_s": new_tokens / seconds,
            "new_tokens": new_tokens, "matmul_bound_s": bound, "ratio": seconds / bound,
            "row_steps_computed_over_needed": computed / needed}


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
def training_table(rows: list[dict]) -> str:
    head = ["configuration", "s/step (fwd+bwd)", "AdamW s", "tokens/step", "tokens/s", "GFLOP/s",
            "matmul GFLOP/s", "of matmul", "time / regular", "token floor", "activation MB"]
    ref = rows[0]["seconds"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["config"], f"{r['seconds']:.2f}", f"{r['optimizer_s']:.2f}", f"{r['tokens']:.0f}",
                 f"{r['tokens_per_s']:.0f}", f"{r['gflops']:.1f}", f"{r['matmul_gflops']:.1f}",
                 f"{100 * r['of_matmul']:.0f}%", f"{r['seconds'] / ref:.2f}", f"{r['floor']:.2f}",
                 f"{r['activation_MB']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def generation_table(g: dict, batch: int) -> str:
    return "\n".join([
        "| generation | seconds | examples/s | new tokens/s | matmul-bound s | time / bound | row-steps computed / needed |",
        "|---|---|---|---|---|---|---|",
        f"| greedy, batch {batch}, {g['examples']} prompts | {g['seconds']:.2f} | {g['examples_per_s']:.2f} | "
        f"{g['tokens_per_s']:.1f} | {g['matmul_bound_s']:.2f} | {g['ratio']:.2f} | "
        f"{g['row_steps_computed_over_needed']:.2f} |"])


def targets(rows: list[dict], gen: dict | None) -> list[str]:
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    by = {r["config"]: r for r in rows}
    out = [f"training at >= {TARGET_MATMUL:.0%} of the matmul throughput, {name}: {100 * by[name]['of_matmul']:.0f}% "
           f"({met(by[name]['of_matmul'] >= TARGET_MATMUL)})" for name in CONFIGS if name in by]
    if "JEPA packed" in by:
        ratio = by["JEPA packed"]["seconds"] / by["regular"]["seconds"]
        floor = by["JEPA packed"]["floor"]
        out.append(f"JEPA packed / regular = {ratio:.2f} against a token floor of {floor:.2f}: {ratio / floor:.2f}x "
                   f"the floor, target <= {TARGET_FLOOR} ({met(ratio / floor <= TARGET_FLOOR)})")
    if "STP random_span" in by:
        ratio = by["STP random_span"]["seconds"] / by["regular"]["seconds"]
        out.append(f"STP random_span / regular = {ratio:.3f}, target <= {TARGET_FLOOR} ({met(ratio <= TARGET_FLOOR)})")
    if gen:
        out.append(f"generation {gen['seconds']:.2f} s against a matmul-bound {gen['matmul_bound_s']:.2f} s: "
                   f"{gen['ratio']:.2f}x, target <= {TARGET_GENERATION} ({met(gen['ratio'] <= TARGET_GENERATION)})")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="a short name or a model directory")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="training compute dtype (auto: as finetune.py resolves it on this machine); "
                        "generation runs in fp32, as evaluate.py does on a CPU")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3, help="measured rounds (every configuration once each)")
    p.add_argument("--warmup", type=int, default=1, help="rounds run first and not recorded")
    p.add_argument("--checkpointing", action="store_true", help="also regular and JEPA packed with activation "
                                                                "checkpointing")
    p.add_argument("--configs", nargs="+", default=None, help="only these configurations (regular always runs): "
                                                               + ", ".join(CONFIGS))
    p.add_argument("--gen_examples", type=int, default=64, help="synth_test prompts to generate for (0: none)")
    p.add_argument("--gen_batch", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=128, help="at most this many new tokens (evaluate.py's default)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.dtype = resolve_dtype(args.dtype, training=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the training entry points do on CPU
    model_dir = resolve_model_name(args.model)
    family = detect_family(model_dir)
    if family.name != "llama":  # train_step's features() renders Llama-family views
        logger.warning("family %s: the training batches are rendered as the llama family's", family.name)
    setup = setup_tokenizer(model_dir, family)
    model = load_model(model_dir, family, dtype=torch.float32, attn_implementation=args.attn, pretrain=False,
                       seed=0, vocab_size=len(setup.tokenizer) if setup.new_tokens else None)
    forward_matmul_seconds(model, 64, 8)  # the first products of a process pay its thread pool's start
    gen = generation_run(args, model, setup.tokenizer, family, setup.template_kwargs) if args.gen_examples else None
    configs = {**CONFIGS, **(CHECKPOINTED if args.checkpointing else {})}
    if args.configs:
        configs = {n: c for i, (n, c) in enumerate(configs.items()) if i == 0 or n in args.configs}
    rows = train_rounds(args, model, setup.tokenizer, configs)
    n_params = sum(t.numel() for t in model.parameters())
    print(f"# {Path(model_dir).name} ({n_params / 1e6:.1f}M parameters, fp32 weights; training compute "
          f"{args.dtype}, generation fp32; attention {args.attn}); CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; batch {args.batch_size} of synth; "
          f"{args.rounds} measured rounds after {args.warmup} warm-up\n")
    print(training_table(rows))
    print()
    if gen:
        print(generation_table(gen, args.gen_batch))
        print()
    for line in targets(rows, gen):
        print(f"- {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"training": rows, "generation": gen}, indent=1))


if __name__ == "__main__":
    main()
