"""Accuracy studies: regular fine-tuning against LLM-JEPA and STP, with seeds and paired tests.

    bash run.sh study scratch            # NL-RX-SYNTH from random weights (the paper's Table 2 setting)
    bash run.sh study smollm2            # fine-tuning SmolLM2-135M-Instruct on a few hundred pairs
    bash run.sh study scratch --quick    # a tiny version of the same pipeline, in a couple of minutes

A study is a list of methods and, per method, a small grid of settings. Each setting is
trained once on a part of the training set and evaluated on the rest (the validation
split; the test set is never used for choosing). The best setting of each method is then
trained on the whole training set with every seed and evaluated on the test set.

Everything is resumable: each run writes its summary when it finishes and the driver skips
runs whose summary exists, so an interrupted study continues where it stopped. Results go
to results/<study>/: the search (search.json), one summary JSON per final run (config, seed,
metrics, training FLOPs and time, the collapse check), and the table made by
`evaluate.py report` (table.md, table.csv, table.png). Models are written to a work folder
and their weights deleted once evaluated.

Runs use one CPU thread each (so two studies can share a 2-core machine) and fixed seeds;
a rerun of one configuration on the same machine type reproduces its accuracy exactly.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .collapse import collapse_check
from .config import parse_args, parse_eval_args
from .data import read_examples
from .environment import stack_record
from .evaluation import load_model, run as evaluate_run
from .jsonl import write_jsonl
from .models import resolve_model_name
from .regex_grammar import write_dataset
from .report import main as report_main
from .runtime import setup_cpu_numerics, setup_logging
from .splits import permutation
from .tiny import conversation_texts, save_tiny_model, train_tokenizer
from .train import run as train_run

logger = logging.getLogger("llm_jepa")
PAPER_SEEDS = (82, 23, 37, 84, 4)


@dataclass(frozen=True)
class Setting:
    """One point of a method's grid."""
    lr: float
    lbd: float = 0.0
    k: int = 0

    def label(self) -> str:
        return f"lr{self.lr:g}_lbd{self.lbd:g}_k{self.k}"


@dataclass(frozen=True)
class Study:
    name: str
    model: str | None                     # None: a tiny Llama from random weights
    grid: dict[str, tuple[Setting, ...]]  # method -> settings (one setting: no search)
    seeds: tuple[int, ...]
    n_train: int | None = None            # None: the whole training file
    n_val: int = 1000                     # carved from the training file for the search
    n_val_eval: int = 500                 # of which the search evaluates this many
    n_test: int | None = None             # None: the whole test file
    epochs: int = 4
    batch_size: int = 16
    max_length: int = 128
    max_new_tokens: int = 64
    hidden: int = 128                     # from scratch: width, layers, tokenizer size
    layers: int = 4
    vocab_size: int = 600
    dtype: str = "fp32"
    log_every: int = 25                   # optimizer steps between logged losses
    generated_data: bool = False          # pairs from the project's grammar instead of DATA_DIR (--quick)
    search_seed: int = 82                 # the seed of every search run


# The methods' training flags for a setting.
def method_flags(method: str, s: Setting) -> list[str]:
    if method == "regular":
        return ["--regular"]
    if method == "jepa":
        return ["--lbd", str(s.lbd), "--predictors", str(s.k)]
    if method == "stp":
        return ["--linear", "random_span", "--lbd", str(s.lbd)]
    raise ValueError(f"unknown method {method!r}")


STUDIES = {
    # The paper trains Llama-3.2-1B from random weights on NL-RX-SYNTH (lr 8e-5, lambda 2, k 3).
    # At CPU scale: a 128-wide, 4-layer Llama; the grid brackets the demo's tuned lr.
    "scratch": Study(
        name="scratch", model=None, seeds=PAPER_SEEDS,
        grid={"regular": (Setting(1e-3), Setting(2e-3), Setting(4e-3)),
              "jepa": (Setting(2e-3, 1.0, 1), Setting(4e-3, 1.0, 1), Setting(2e-3, 2.0, 3), Setting(4e-3, 2.0, 3)),
              "stp": (Setting(2e-3, 0.02), Setting(4e-3, 0.02), Setting(2e-3, 0.1), Setting(4e-3, 0.1))}),
    # A real pretrained model on a small-data regime: the demo's preset (lr 1e-4, one epoch),
    # lambda 1 and k 1 for JEPA, the STP paper's lambda 0.02; no search (each run ~10 minutes).
    "smollm2": Study(
        name="smollm2", model="smollm2-135m-instruct", seeds=PAPER_SEEDS[:3], n_train=400, n_test=500,
        epochs=1, batch_size=8, max_length=256, dtype="auto",
        grid={"regular": (Setting(1e-4),), "jepa": (Setting(1e-4, 1.0, 1),), "stp": (Setting(1e-4, 0.02),)}),
}


def quick(study: Study) -> Study:
    """The same pipeline at toy size (generated data, two settings, two seeds)."""
    grid = {m: settings[:2] for m, settings in study.grid.items()}
    return Study(name=study.name + "_quick", model=None, grid=grid, seeds=study.seeds[:2], n_train=None, n_val=40,
                 n_val_eval=20, n_test=None, epochs=1, batch_size=8, max_length=192, max_new_tokens=24, hidden=32,
                 layers=2, vocab_size=300, log_every=2, generated_data=True)


# --------------------------------------------------------------------------------------
# data and the base model
# --------------------------------------------------------------------------------------
def data_files(study: Study, work: Path) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows): NL-RX-SYNTH from DATA_DIR, or generated pairs for --quick."""
    if study.generated_data:
        train, test = write_dataset(work / "data", 160, 40, seed=1)
        return read_examples(train), read_examples(test)
    folder = Path(os.environ.get("DATA_DIR", "datasets"))
    if not (folder / "synth_train.jsonl").exists():
        raise SystemExit(f"no {folder}/synth_train.jsonl: make it with `python -m llm_jepa.corpora prepare synth "
                         f"--out {folder}`, or set DATA_DIR to the folder that holds it")
    train, test = read_examples(folder / "synth_train.jsonl"), read_examples(folder / "synth_test.jsonl")
    if study.n_train:
        train = [train[i] for i in permutation(len(train), 42)[:study.n_train]]
    return train, test[:study.n_test] if study.n_test else test


def write_splits(study: Study, train: list[dict], test: list[dict], work: Path) -> dict[str, Path]:
    """The files every run reads: the search's train and validation parts, the full train, the test."""
    order = permutation(len(train), 42)
    val = [train[i] for i in order[:study.n_val]]
    rest = [train[i] for i in order[study.n_val:]]
    files = {"search_train": rest, "val": val[:study.n_val_eval], "train": train, "test": test}
    paths = {}
    for name, rows in files.items():
        paths[name] = work / "data" / f"synth_{name}.jsonl"
        write_jsonl(paths[name], rows)
    return paths


def base_model(study: Study, train_rows: list[dict], work: Path) -> str:
    """The pretrained model's folder, or a tiny Llama config with a tokenizer trained on the
    training text (never the test text)."""
    if study.model:
        return resolve_model_name(study.model)
    folder = work / "base"
    if not (folder / "config.json").exists():
        tok = train_tokenizer(conversation_texts(train_rows), study.vocab_size)
        save_tiny_model(folder, "llama", tok, seed=0, hidden=study.hidden, layers=study.layers, heads=4)
    return str(folder)


# --------------------------------------------------------------------------------------
# one run: train, evaluate, check collapse, keep the summary, drop the weights
# --------------------------------------------------------------------------------------
def run_one(study: Study, base: str, method: str, setting: Setting, seed: int, train_file: Path, eval_file: Path,
            work: Path, summary_path: Path) -> dict:
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    run_dir = work / summary_path.parent.name / summary_path.stem.replace(".summary", "")
    flags = ["--train_file", str(train_file), "--model_name", base, "--output_dir", str(run_dir),
             "--overwrite_output_dir", "--learning_rate", str(setting.lr), "--num_epochs", str(study.epochs),
             "--batch_size", str(study.batch_size), "--grad_accum", "1", "--max_length", str(study.max_length),
             "--finetune_seed", str(seed), "--no-save_checkpoints", "--no-gradient_checkpointing",
             "--dtype", study.dtype, "--eval_steps", str(study.log_every), *method_flags(method, setting)]
    if study.model is None:
        flags.append("--pretrain")
    train_run(parse_args(flags))
    started = time.perf_counter()
    summary = evaluate_run(parse_eval_args([
        "--model_name", str(run_dir), "--input_file", str(eval_file), "--dataset", "synth", "--nosplit_data",
        "--output_file", str(run_dir / "eval" / f"{eval_file.stem}.jsonl"), "--max_new_tokens",
        str(study.max_new_tokens), "--eval_batch_size", "64", "--dtype", "fp32"]))
    summary["collapse"] = run_collapse_check(run_dir, eval_file, setting, study)
    summary["final_losses"] = final_losses(run_dir)
    summary["study"] = {"name": study.name, "method": method, "setting": asdict(setting), "seed": seed,
                        "threads": torch.get_num_threads(),
                        "eval_seconds": round(time.perf_counter() - started, 1)}   # with the collapse check
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    drop_weights(run_dir)
    return summary


def run_collapse_check(run_dir: Path, eval_file: Path, setting: Setting, study: Study) -> dict:
    loaded = load_model(parse_eval_args(["--model_name", str(run_dir), "--input_file", str(eval_file),
                                         "--dtype", "fp32"]))
    rows = read_examples(eval_file)[:256]
    return collapse_check(loaded.model, loaded.tokenizer, loaded.family, loaded.template_kwargs, rows,
                          max(setting.k, 0), study.max_length)


def drop_weights(run_dir: Path) -> None:
    """The weights of an evaluated run are not needed again (its summary says what it scored)."""
    for f in run_dir.glob("*.safetensors"):
        f.unlink()


# --------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------
def search(study: Study, base: str, paths: dict, work: Path, results: Path) -> dict[str, Setting]:
    """The best setting of each method by validation accuracy (DFA); grid order breaks ties."""
    chosen, record = {}, {}
    for method, settings in study.grid.items():
        scores = []
        for s in settings if len(settings) > 1 else ():
            out = results / "search" / f"{method}_{s.label()}.summary.json"
            summary = run_one(study, base, method, s, study.search_seed, paths["search_train"], paths["val"], work,
                              out)
            scores.append((summary["metrics"]["accuracy"], s))
        best = max(scores, key=lambda x: x[0])[1] if scores else settings[0]
        chosen[method] = best
        record[method] = {"chosen": asdict(best), "validation_accuracy": {s.label(): a for a, s in scores}}
    (results / "search.json").write_text(json.dumps(record, indent=2) + "\n")
    return chosen


def final_runs(study: Study, base: str, chosen: dict[str, Setting], paths: dict, work: Path, results: Path):
    for seed in study.seeds:                # seed-major: each completed seed gives a full paired set
        for method, setting in chosen.items():
            out = results / "runs" / f"{method}_{setting.label()}_s{seed}.summary.json"
            run_one(study, base, method, setting, seed, paths["train"], paths["test"], work, out)


def report(study: Study, results: Path, work: Path) -> None:
    report_main([str(results / "runs"), "--costs", "--md", str(results / "table.md"), "--model_label", model_label(study),
                 "--csv", str(results / "table.csv"), "--png", str(results / "table.png")])
    (results / "collapse.md").write_text(collapse_table(results, work))


def model_label(study: Study) -> str:
    """The model the table names: the pretrained one, or the tiny Llama's shape."""
    if study.model:
        return study.model
    return f"Llama {study.hidden}x{study.layers} (random init)"


def final_losses(run_dir: Path) -> dict:
    """The last logged lm_loss and jepa_loss of a run (its trainer_state.json)."""
    state = run_dir / "trainer_state.json"
    if not state.exists():
        return {}
    logged = [h for h in json.loads(state.read_text())["log_history"] if "lm_loss" in h]
    last = logged[-1] if logged else {}
    return {k: last[k] for k in ("lm_loss", "jepa_loss") if k in last}


def collapse_table(results: Path, work: Path) -> str:
    """Per final run: its last JEPA loss next to the collapse check (views and chords)."""
    head = ("| run | accuracy | last lm_loss | last jepa_loss | views: matched cos | views: non-matching cos | "
            "views: eff. rank (Text, Code) | chords: matched cos | chords: non-matching cos | "
            "chords: eff. rank (user, answer) |")
    lines = [head, "|" + "---|" * 10]
    for path in sorted((results / "runs").glob("*.summary.json")):
        s = json.loads(path.read_text())
        name = path.name.replace(".summary.json", "")
        losses = s.get("final_losses") or final_losses(work / "runs" / name)
        v, c = s["collapse"]["views"], s["collapse"]["chords"]
        cells = [name, f"{100 * s['metrics']['accuracy']:.2f}", _fmt(losses.get("lm_loss")),
                 _fmt(losses.get("jepa_loss")), _fmt(v["matched_cos"]), _fmt(v["unmatched_cos"]),
                 f"{v['effective_rank_a']:.1f}, {v['effective_rank_b']:.1f}", _fmt(c["matched_cos"]),
                 _fmt(c["unmatched_cos"]), f"{c['effective_rank_a']:.1f}, {c['effective_rank_b']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def run_study(study: Study, quick_run: bool, results_root: Path, work_root: Path) -> Path:
    results, work = results_root / study.name, work_root / study.name
    results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, test = data_files(study, work)
    paths = write_splits(study, train, test, work)
    base = base_model(study, train, work)
    chosen = search(study, base, paths, work, results)
    final_runs(study, base, chosen, paths, work, results)
    report(study, results, work)
    (results / "study.json").write_text(json.dumps({
        "study": asdict(study), "quick": quick_run, "chosen": {m: asdict(s) for m, s in chosen.items()},
        "data": {k: len(read_examples(p)) for k, p in paths.items()}, "versions": stack_record(),
        "last_session_minutes": round((time.perf_counter() - start) / 60, 1)}, indent=2, default=str) + "\n")
    return results


def rerun(study: Study, name: str, results: Path, work: Path) -> bool:
    """Train and evaluate one finished run again, from scratch, and compare its metrics."""
    found = [p for p in (results / "runs" / f"{name}.summary.json", results / "search" / f"{name}.summary.json")
             if p.exists()]
    if not found:
        raise SystemExit(f"no finished run {name!r} in {results}/runs or {results}/search")
    original = json.loads(found[0].read_text())
    run = original["study"]
    train, test = data_files(study, work)
    paths = write_splits(study, train, test, work)
    final = found[0].parent.name == "runs"
    out = work / "rerun" / f"{name}.summary.json"
    out.unlink(missing_ok=True)
    again = run_one(study, base_model(study, train, work), run["method"], Setting(**run["setting"]), run["seed"],
                    paths["train" if final else "search_train"], paths["test" if final else "val"], work, out)
    same = again["metrics"] == original["metrics"]
    print(f"{name}: accuracy {again['metrics']['accuracy']} now, {original['metrics']['accuracy']} recorded: "
          f"{'reproduced exactly' if same else 'DIFFERENT'}")
    return same


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bash run.sh study", description=__doc__.split("\n")[0])
    p.add_argument("--report_only", action="store_true", help="only remake the tables from the finished runs")
    p.add_argument("--rerun", metavar="RUN", help="train and evaluate this finished run again (its summary's name "
                                                  "without .summary.json) and say whether it reproduces")
    p.add_argument("name", choices=sorted(STUDIES))
    p.add_argument("--quick", action="store_true", help="a toy version on generated data (a couple of minutes)")
    p.add_argument("--results", default="results", help="where tables and summaries go")
    p.add_argument("--work", default="study_work", help="where models and generations go (large; not committed)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (the numbers depend on it)")
    p.add_argument("--seeds", type=int, nargs="+", help="only these of the study's seeds (to share the final "
                                                        "runs between processes: give each its own seeds)")
    args = p.parse_args(argv)
    setup_logging(False)
    setup_cpu_numerics()
    torch.set_num_threads(args.threads)
    study = quick(STUDIES[args.name]) if args.quick else STUDIES[args.name]
    if args.seeds:
        unknown = sorted(set(args.seeds) - set(study.seeds))
        if unknown:
            p.error(f"--seeds {unknown} are not seeds of the study {study.name} ({list(study.seeds)})")
        study = dataclasses.replace(study, seeds=tuple(sd for sd in study.seeds if sd in args.seeds))
    if args.report_only:
        report(study, Path(args.results) / study.name, Path(args.work) / study.name)
        return 0
    if args.rerun:
        return 0 if rerun(study, args.rerun, Path(args.results) / study.name, Path(args.work) / study.name) else 1
    results = run_study(study, args.quick, Path(args.results), Path(args.work))
    print(f"study {study.name}: results in {results}")
    shutil.rmtree(Path(args.work) / study.name / "runs", ignore_errors=True) if args.quick else None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
