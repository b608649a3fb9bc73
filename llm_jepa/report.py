"""Paper-style accuracy tables from many evaluation runs.

    python evaluate.py report runs/ [--metric exact] [--csv out.csv] [--png out.png]

collect() loads every *.summary.json under the given paths, group() pools the runs into one
row per dataset x model x method (mean and sample std over seeds, like the paper's tables)
and pairs each JEPA row with a regular fine-tuning row of the same dataset and model for a
paired t-test over seeds. markdown(), write_csv() and bar_chart() render the rows.

scipy and matplotlib (the `eval` extra) are imported only by the functions that need them.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .config import TrainConfig
from .environment import KEY_PACKAGES
from .objectives import ALIASES, DEFAULT, OBJECTIVES, objective_name

logger = logging.getLogger(__name__)
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

SUFFIX = ".summary.json"
# Keys of the training config that differ between seeds of one method without making it a
# different method (seeds, paths, logging); any other difference inside a group is warned about.
IGNORED_CONFIG_KEYS = {
    "finetune_seed", "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "train_file",
    "eval_file", "data_file", "tokenizer_name", "eval_steps", "track_flop", "debug",
    "attn_implementation", "gradient_checkpointing",
    # shown in the label, as the resolved objective: the published alias flags and
    # --jepa_loss name the same objectives
    "jepa_loss", "jepa_l2", "jepa_mse", "infonce", "linear",
}
# Training settings that change the method and are shown in its label when they differ from
# their defaults (the objective's own options, the JEPA weight's schedule, the views).
LABELLED_SETTINGS = (
    "lbd_warmup", "min_lbd", "constant_lr", "same_predictor", "plain_jepa", "front_pred", "reverse_pred",
    "linear_predictor", "length_adjustment", "random_span_zero", "random_span_e2e", "random_span_all",
    "random_span_max_length", "random_span_times", "random_span_draw_both", "random_span_uniform",
    "random_span_layer", "gamma", "published",
)


@dataclass
class Group:
    """One table row: the runs of one method on one dataset and model, one run per seed."""
    dataset: str
    model: str                      # full name or path; model_short is what is shown
    method: str                     # e.g. "JEPA (lr=2e-05, lbd=1.0, k=1, LoRA)"
    kind: str                       # "base", "regular", "jepa" or "stp"
    lr: float | None = None
    lora: bool = False
    sort_key: tuple = ()            # orders methods inside a dataset x model block
    seeds: list[int | None] = field(default_factory=list)
    values: list[float] = field(default_factory=list)   # the metric, same order as seeds
    paths: list[str] = field(default_factory=list)
    # Filled by group() for JEPA rows that have a regular row to compare against.
    baseline: str | None = None     # method label of the regular group compared with
    p_value: float | None = None
    p_greater: float | None = None  # one-sided: the method's mean is above regular's
    diff: float | None = None       # mean of (JEPA - regular) over paired seeds, metric units
    n_pairs: int = 0
    costs: list[dict] = field(default_factory=list)   # per run: train_seconds, train_flops

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        # Sample std (ddof=1) as in the paper; undefined for a single run.
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def model_short(self) -> str:
        return Path(self.model.rstrip("/")).name or self.model


# ----------------------------------------------------------------------------- loading

def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """Summary files named on the command line, or found recursively under directories."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob(f"*{SUFFIX}") if q.is_file())
        elif p.is_file():
            found.append(p)   # a file named explicitly is read whatever its name
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    # A file reachable twice (its directory and itself) must count once.
    unique = {q.resolve(): q for q in found}
    return list(unique.values())


def collect(paths: Sequence[str | Path]) -> list[dict]:
    """Load every summary JSON under `paths`; each dict gets its file as "path".

    Unreadable files and files without "dataset"/"metrics" are skipped with a warning: a run
    directory may hold a half-written summary of an evaluation still running.
    """
    summaries = []
    for path in find_files(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            logger.warning("skipping %s: %s", path, e)
            continue
        if not isinstance(data, dict) or "dataset" not in data or not isinstance(data.get("metrics"), dict):
            logger.warning("skipping %s: not an evaluation summary (no dataset/metrics)", path)
            continue
        data["path"] = str(path)
        summaries.append(data)
    logger.info("loaded %d summaries", len(summaries))
    return summaries


# ----------------------------------------------------------------------------- grouping

def _training(s: dict) -> dict | None:
    t = s.get("training")
    return t if isinstance(t, dict) and t else None


def model_of(s: dict) -> str:
    """The base model the run started from, so fine-tuned and base rows line up."""
    t = _training(s) or {}
    return str(t.get("model_name") or s.get("original_model_name") or s.get("model_name") or "?")


def seed_of(s: dict) -> int | None:
    t = _training(s) or {}
    seed = t.get("finetune_seed", s.get("seed"))
    return None if seed is None else int(seed)


def _num(x: Any) -> str:
    return str(float(x))      # 2e-05 -> "2e-05", 1 -> "1.0": the paper's spelling


def method_of(s: dict) -> tuple[str, str, tuple, float | None, bool]:
    """(label, kind, sort key, lr, lora) of a run's training config.

    Every setting that changes the method goes into the label, so that variants never pool.
    """
    t = _training(s)
    if t is None:
        return "base", "base", (0,), None, False
    lr = float(t.get("learning_rate", float("nan")))
    lora, additive = bool(t.get("lora")), bool(t.get("additive_mask"))
    ratio = float(t.get("jepa_ratio", -1.0))
    objective = objective_name(str(t.get("jepa_loss", DEFAULT)), {flag: bool(t.get(flag)) for flag in ALIASES},
                               t.get("linear"))
    extras = []
    if lora:
        extras.append(f"LoRA r={int(t.get('lora_rank', 16))}")
    if additive:
        extras.append("additive")
    if ratio > 0:
        extras.append(f"LD={1 - ratio:g}")   # the paper reports loss dropout LD = 1 - ratio
    if t.get("regular"):
        label = "regular (" + ", ".join([f"lr={_num(lr)}"] + extras) + ")"
        return label, "regular", (1, lr, lora), lr, lora
    lbd, k = float(t.get("lbd", float("nan"))), int(t.get("predictors", 0))
    extras += _changed_settings(t)
    if objective in OBJECTIVES and OBJECTIVES[objective].spans:
        # STP: no views, so no predictors; --jepa_mse is an option of the objective here
        extras = (["mse"] if t.get("jepa_mse") else []) + extras
        label = f"STP {objective} (" + ", ".join([f"lr={_num(lr)}", f"lbd={_num(lbd)}"] + extras) + ")"
        return label, "stp", (3, objective, lr, lbd, tuple(extras)), lr, lora
    if objective != DEFAULT:
        extras.insert(0, f"loss={objective}")
    label = "JEPA (" + ", ".join([f"lr={_num(lr)}", f"lbd={_num(lbd)}", f"k={k}"] + extras) + ")"
    return label, "jepa", (2, lr, lbd, k, objective, lora, additive, ratio, tuple(extras)), lr, lora


def _changed_settings(t: dict) -> list[str]:
    """`name=value` for every labelled setting the run changed from its default."""
    out = []
    for name in LABELLED_SETTINGS:
        default = CONFIG_DEFAULTS.get(name)
        value = t.get(name, default)
        if value != default and value not in (None, ""):
            out.append(name if value is True else f"{name}={value}")
    return out



def _date(s: dict) -> datetime:
    try:
        d = datetime.fromisoformat(str(s.get("date")))
    except ValueError:
        return datetime.min   # undated runs lose against dated ones
    # Naive and zone-aware dates cannot be compared: read aware ones as naive UTC.
    return d if d.tzinfo is None else d.astimezone(timezone.utc).replace(tzinfo=None)


def _dedupe(runs: list[dict], label: str) -> list[dict]:
    """One run per seed, the newest by date: a re-evaluation must not inflate n."""
    by_seed: dict[int | None, dict] = {}
    for s in sorted(runs, key=lambda s: (_date(s), s["path"])):
        seed = seed_of(s)
        if seed in by_seed:
            logger.warning("%s: seed %s evaluated twice; keeping %s, dropping %s",
                           label, seed, s["path"], by_seed[seed]["path"])
        by_seed[seed] = s
    return list(by_seed.values())


def _warn_mixed_configs(runs: list[dict], label: str) -> None:
    """Settings the label does not show (epochs, loss type, ...) should agree inside a group."""
    configs = [_training(s) or {} for s in runs]
    keys = set().union(*configs) - IGNORED_CONFIG_KEYS
    mixed = sorted(k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1)
    if mixed:
        logger.warning("%s pools runs whose training configs differ in: %s", label, ", ".join(mixed))
    if len({software_of(s) for s in runs}) > 1:
        logger.warning("%s pools runs made with different software (see the software lines below the table)", label)


def software_of(s: dict) -> str:
    """The key package versions and thread count a summary records ("unknown" when it has none)."""
    v = s.get("versions") or {}
    parts = [f"{n} {v[n]}" for n in ("python", *KEY_PACKAGES) if v.get(n)]
    if v.get("torch_threads"):
        parts.append(f"{v['torch_threads']} threads")
    lock = v.get("lock")
    if isinstance(lock, dict):
        parts.append("pinned stack" if lock.get("pinned_stack") else "not the pinned stack")
    return ", ".join(parts) or "unknown"


def software_note(summaries: list[dict]) -> str:
    """Which software the tabled runs were made with: one line per distinct stack."""
    counts: dict[str, int] = {}
    for s in summaries:
        counts[software_of(s)] = counts.get(software_of(s), 0) + 1
    return "".join(f"\nsoftware ({n} of {len(summaries)} runs): {line}\n" for line, n in counts.items())


def group(summaries: list[dict], metric: str = "accuracy", model_label: str | None = None) -> list[Group]:
    """Rows of the table, sorted by dataset, model, then base < regular < JEPA.
    `model_label`: the model every run is shown under (a study whose runs share one base
    model by construction, whatever folder each process built it in).

    Runs without `metric` are skipped with a warning. JEPA rows get their paired t-test
    against the matching regular row (see pick_baseline).
    """
    buckets: dict[tuple, list[dict]] = {}
    meta: dict[tuple, tuple] = {}
    for s in summaries:
        value = s["metrics"].get(metric)
        # nan (nothing scored) or a non-number would poison the mean: leave the run out.
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            logger.warning("skipping %s: no finite numeric metric %r", s.get("path"), metric)
            continue
        label, kind, key, lr, lora = method_of(s)
        gkey = (str(s["dataset"]), model_label or model_of(s), label)
        buckets.setdefault(gkey, []).append(s)
        meta[gkey] = (kind, key, lr, lora)

    groups = []
    for (dataset, model, label), runs in buckets.items():
        name = f"{dataset} / {model} / {label}"
        runs = sorted(_dedupe(runs, name), key=lambda s: (seed_of(s) is not None, seed_of(s) or 0))
        _warn_mixed_configs(runs, name)
        kind, key, lr, lora = meta[(dataset, model, label)]
        groups.append(Group(dataset=dataset, model=model, method=label, kind=kind, lr=lr, lora=lora,
                            sort_key=key, seeds=[seed_of(s) for s in runs],
                            values=[float(s["metrics"][metric]) for s in runs],
                            paths=[s["path"] for s in runs], costs=[s.get("training_cost") or {} for s in runs]))
    groups.sort(key=lambda g: (g.dataset, g.model, g.sort_key, g.method))
    _compare_all(groups)
    return groups


# ----------------------------------------------------------------------------- statistics

def _matched(a: Group, b: Group) -> list[int | None]:
    common = set(a.seeds) & set(b.seeds)
    common.discard(None)   # an unknown seed pairs with nothing
    return sorted(common)


def paired_test(jepa: Group, regular: Group, alternative: str = "two-sided") -> tuple[float | None, float | None, int]:
    """Paired t-test of JEPA against regular over the seeds both have (`alternative`
    "greater": one-sided, JEPA above regular).

    Returns (p-value, mean of JEPA - regular in metric units, number of pairs); p and the
    difference are None with fewer than 2 pairs, p is None when the differences have no
    variance (the t statistic is undefined).
    """
    seeds = _matched(jepa, regular)
    if len(seeds) < 2:
        return None, None, len(seeds)
    from scipy.stats import ttest_rel

    x = [jepa.values[jepa.seeds.index(s)] for s in seeds]
    y = [regular.values[regular.seeds.index(s)] for s in seeds]
    d = [a - b for a, b in zip(x, y)]
    # A constant difference (to rounding) has no variance: t is undefined, and scipy would
    # warn about catastrophic cancellation and return nan or a meaningless p.
    if max(d) - min(d) <= 1e-12:
        return None, statistics.fmean(d), len(seeds)
    p = float(ttest_rel(x, y, alternative=alternative).pvalue)
    return (None if math.isnan(p) else p), statistics.fmean(d), len(seeds)


def pick_baseline(jepa: Group, regulars: list[Group]) -> Group | None:
    """The regular row to compare a JEPA row with: same lr first, then same LoRA setting,
    then the most seeds in common (the brief's rule, with LoRA as a tie-break)."""
    if not regulars:
        return None
    return max(regulars, key=lambda r: (r.lr == jepa.lr, r.lora == jepa.lora, len(_matched(jepa, r))))


def _compare_all(groups: list[Group]) -> None:
    for g in groups:
        if g.kind not in ("jepa", "stp"):
            continue
        regulars = [r for r in groups if r.kind == "regular" and (r.dataset, r.model) == (g.dataset, g.model)]
        base = pick_baseline(g, regulars)
        if base is not None:
            g.baseline = base.method
            g.p_value, g.diff, g.n_pairs = paired_test(g, base)
            g.p_greater = paired_test(g, base, alternative="greater")[0]


# ----------------------------------------------------------------------------- rendering

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _seeds(g: Group) -> str:
    return ", ".join("-" if s is None else str(s) for s in g.seeds)


def markdown(groups: list[Group], metric: str = "accuracy", costs: bool = False) -> str:
    """The table, then one footnote per regular row that JEPA rows were compared with.
    costs: also the one-sided p and each method's training cost per run (mean)."""
    head = ["dataset", "model", "method", f"{metric} (mean ± std, %)", "n", "seeds", "Δ vs regular", "p"]
    extra = ["p (one-sided, >)", "train TFLOP / run", "train min / run"] if costs else []
    align = ["---"] * 3 + ["---:"] * 2 + ["---"] + ["---:"] * (2 + len(extra))
    lines = ["| " + " | ".join(head + extra) + " |", "|" + "|".join(align) + "|"]
    notes: dict[tuple, int] = {}   # (dataset, model, baseline) -> footnote number
    for g in groups:
        delta, p = "-", "-"
        if g.baseline is not None:
            mark = notes.setdefault((g.dataset, g.model_short, g.baseline), len(notes) + 1)
            delta = ("-" if g.diff is None else f"{100 * g.diff:+.2f}") + f" [{mark}]"
            p = "-" if g.p_value is None else f"{g.p_value:.3g}"
        acc = _pct(g.mean) + " ± " + _pct(g.std)
        row = [g.dataset, g.model_short, g.method, acc, str(g.n), _seeds(g), delta, p]
        if costs:
            row += ["-" if g.p_greater is None else f"{g.p_greater:.3g}",
                    _mean_cost(g, "train_flops", 1e12, "{:.2f}"), _mean_cost(g, "train_seconds", 60, "{:.1f}")]
        lines.append("| " + " | ".join(row) + " |")
    for (dataset, model, baseline), mark in notes.items():
        # A blank line before each note keeps them separate paragraphs when rendered.
        lines += ["", f"[{mark}] {dataset} / {model}: compared with {baseline}, paired by seed "
                      "(paired t-test, needs >= 2 common seeds; Δ in points)."]
    return "\n".join(lines) + "\n"


def _mean_cost(g: Group, key: str, unit: float, fmt: str) -> str:
    values = [c[key] for c in g.costs if isinstance(c.get(key), (int, float))]
    return fmt.format(statistics.fmean(values) / unit) if values else "-"


CSV_FIELDS = ["dataset", "model", "method", "kind", "n", "mean", "std", "seeds", "values",
              "baseline", "n_pairs", "diff", "p_value", "p_greater", "train_flops", "train_seconds"]


def write_csv(groups: list[Group], path: str | Path) -> None:
    """One row per group, unrounded, in metric units (fractions, not percent).

    seeds and values are space-separated lists in the same order; empty cells mean "none".
    """
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for g in groups:
            w.writerow({
                "dataset": g.dataset, "model": g.model, "method": g.method, "kind": g.kind,
                "n": g.n, "mean": repr(g.mean), "std": "" if g.std is None else repr(g.std),
                "seeds": " ".join("-" if s is None else str(s) for s in g.seeds),
                "values": " ".join(repr(v) for v in g.values),
                "baseline": g.baseline or "", "n_pairs": g.n_pairs if g.baseline else "",
                "diff": "" if g.diff is None else repr(g.diff),
                "p_value": "" if g.p_value is None else repr(g.p_value),
                "p_greater": "" if g.p_greater is None else repr(g.p_greater),
                "train_flops": " ".join(repr(c.get("train_flops")) for c in g.costs if c.get("train_flops")),
                "train_seconds": " ".join(repr(c.get("train_seconds")) for c in g.costs if c.get("train_seconds")),
            })
    logger.info("wrote %s", path)


def bar_chart(groups: list[Group], path: str | Path, metric: str = "accuracy") -> None:
    """Grouped bars: one cluster per dataset x model, one bar per method, std error bars.

    Uses a bare Figure (Agg canvas) rather than pyplot: no display, no global backend state.
    """
    from matplotlib.figure import Figure

    clusters: dict[tuple, list[Group]] = {}
    for g in groups:
        clusters.setdefault((g.dataset, g.model), []).append(g)
    # Colours follow the table's method order, so a method has one colour in every cluster.
    methods = sorted({g.method: g.sort_key for g in groups}.items(), key=lambda m: (m[1], m[0]))
    colors = {m: f"C{i % 10}" for i, (m, _) in enumerate(methods)}
    width = 0.8 / max(len(c) for c in clusters.values())

    fig = Figure(figsize=(max(7.0, 1.6 * len(clusters) + 4), 4.5), layout="constrained")
    ax = fig.add_subplot()
    labelled: set[str] = set()
    for x, bars in enumerate(clusters.values()):
        start = x - width * (len(bars) - 1) / 2    # centre each cluster on its tick
        for i, g in enumerate(bars):
            ax.bar(start + i * width, 100 * g.mean, width, yerr=100 * (g.std or 0.0), capsize=3,
                   color=colors[g.method], alpha=0.6, label=None if g.method in labelled else g.method)
            # every seed as a point on its bar
            ax.plot([start + i * width] * len(g.values), [100 * v for v in g.values], "o", color="black",
                    markersize=3)
            labelled.add(g.method)
    ax.set_xticks(range(len(clusters)), [f"{d}\n{Path(m).name}" for d, m in clusters])
    ax.set_ylabel(f"{metric} (%)")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))   # label -> bar handle
    order = [m for m, _ in methods]
    ax.legend([handles[m] for m in order], order, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=120)
    logger.info("wrote %s", path)


# ----------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evaluate.py report",
        description="Paper-style table (mean ± std over seeds, paired t-test vs regular) "
                    "from evaluation summary files.")
    parser.add_argument("paths", nargs="+", help=f"Summary JSON files, or directories searched for *{SUFFIX}.")
    parser.add_argument("--metric", default="accuracy", help="Key of `metrics` to report (default: accuracy).")
    parser.add_argument("--csv", help="Also write one CSV row per group here.")
    parser.add_argument("--png", help="Also write a grouped bar chart here (every seed a point on its bar).")
    parser.add_argument("--md", help="Also write the table (markdown) here.")
    parser.add_argument("--model_label", help="Show every run under this model name (runs that share one base "
                                              "model built in different folders).")
    parser.add_argument("--costs", action="store_true",
                        help="Also the one-sided paired p (method above regular) and the training FLOPs and "
                             "minutes per run.")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def fail(msg: str) -> int:
        print(f"{parser.prog}: error: {msg}", file=sys.stderr)
        return 1

    try:
        summaries = collect(args.paths)
    except FileNotFoundError as e:
        return fail(str(e))
    if not summaries:
        return fail(f"no evaluation summary files (*{SUFFIX}) found in: {' '.join(args.paths)}")
    groups = group(summaries, args.metric, args.model_label)
    if not groups:
        return fail(f"none of the {len(summaries)} summaries has the metric {args.metric!r}")

    table = markdown(groups, args.metric, costs=args.costs)
    print(table, end="")
    if args.md:
        Path(args.md).write_text(table)
    print(software_note([s for s in summaries if any(s["path"] in g.paths for g in groups)]), end="")
    if args.csv:
        write_csv(groups, args.csv)
    if args.png:
        bar_chart(groups, args.png, args.metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
