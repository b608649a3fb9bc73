"""The paper-style report: grouping, dedup, paired t-test, and the three outputs."""
from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from llm_jepa import report

pytest.importorskip("scipy")
from scipy.stats import ttest_rel  # noqa: E402

SEEDS = [82, 23, 37, 84, 4]
MODEL = "meta-llama/Llama-3.2-1B-Instruct"
# Known accuracies per (dataset, method), in the order of SEEDS.
ACC = {
    ("synth", "regular"): [0.6810, 0.6955, 0.6720, 0.7010, 0.6890],
    ("synth", "jepa"): [0.7146, 0.7030, 0.6985, 0.7290, 0.7105],
    ("gsm8k", "regular"): [0.3120, 0.3245, 0.3010, 0.3300, 0.3180],
    ("gsm8k", "jepa"): [0.3275, 0.3330, 0.3105, 0.3290, 0.3350],
}
REG = "regular (lr=2e-05)"
JEPA = "JEPA (lr=2e-05, lbd=1.0, k=1)"


def training(regular: bool, seed: int, **over) -> dict:
    cfg = {"model_name": MODEL, "regular": regular, "learning_rate": 2e-05, "lbd": 1.0, "predictors": 1,
           "finetune_seed": seed, "num_epochs": 4, "lora": False, "additive_mask": False, "jepa_ratio": -1.0}
    return {**cfg, **over}


def write_summary(root: Path, name: str, dataset: str, acc: float, *, train: dict | None,
                  seed: int | None = None, date: str = "2026-11-27T12:00:00", exact: float | None = None,
                  model_name: str | None = None) -> Path:
    s = {"dataset": dataset, "input_file": f"datasets/{dataset}_test.jsonl",
         "model_name": model_name or f"runs/{name}", "original_model_name": MODEL, "primary": "dfa",
         "metrics": {"accuracy": acc, "exact": acc - 0.01 if exact is None else exact, "dfa": acc},
         "counts": {"examples": 2000, "scored": 2000, "skipped": 0, "correct": 0 if acc != acc else round(2000 * acc)},
         "flags": {}, "seed": seed if train is None else train["finetune_seed"], "date": date, "versions": {}}
    if train is not None:
        s["training"] = train
    path = root / name / f"{dataset}_test.summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Two datasets x {regular, JEPA} x 5 seeds."""
    root = tmp_path / "runs"
    for (dataset, kind), accs in ACC.items():
        for seed, acc in zip(SEEDS, accs):
            write_summary(root, f"{dataset}_{kind}_s{seed}", dataset, acc, train=training(kind == "regular", seed))
    return root


def by_method(groups: list[report.Group], dataset: str) -> dict[str, report.Group]:
    return {g.method: g for g in groups if g.dataset == dataset}


def test_means_stds_and_n_match_numpy(runs):
    groups = report.group(report.collect([runs]))
    assert len(groups) == 4
    for (dataset, kind), accs in ACC.items():
        g = by_method(groups, dataset)[REG if kind == "regular" else JEPA]
        assert g.n == 5 and sorted(g.seeds) == sorted(SEEDS)
        assert g.mean == pytest.approx(np.mean(accs), abs=1e-12)
        assert g.std == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
        assert g.model == MODEL and g.model_short == "Llama-3.2-1B-Instruct"
    # Sorted by dataset, then regular before JEPA.
    assert [(g.dataset, g.kind) for g in groups] == [
        ("gsm8k", "regular"), ("gsm8k", "jepa"), ("synth", "regular"), ("synth", "jepa")]


def test_collect_attaches_paths_and_skips_other_files(runs):
    (runs / "notes.json").write_text("{}")                     # not *.summary.json: ignored
    (runs / "broken.summary.json").write_text("{not json")     # half written: skipped
    one = next(runs.rglob("*.summary.json"))
    summaries = report.collect([runs, one])                      # a file reachable twice counts once
    assert len(summaries) == 20
    assert all(Path(s["path"]).name.endswith(".summary.json") for s in summaries)


def test_variants_are_kept_apart(runs):
    for seed in SEEDS[:3]:
        write_summary(runs, f"synth_lora_s{seed}", "synth", 0.6, train=training(False, seed, lora=True))
        write_summary(runs, f"synth_ld_s{seed}", "synth", 0.65, train=training(False, seed, jepa_ratio=0.25))
        write_summary(runs, f"synth_reglora_s{seed}", "synth", 0.55, train=training(True, seed, lora=True))
    write_summary(runs, "synth_add_s82", "synth", 0.7, train=training(False, 82, additive_mask=True))
    write_summary(runs, "synth_k4_s82", "synth", 0.7, train=training(False, 82, predictors=4))
    # objectives: the published alias and the registry name are the same objective
    write_summary(runs, "synth_infonce_s82", "synth", 0.5, train=training(False, 82, infonce=True))
    write_summary(runs, "synth_infonce_s23", "synth", 0.5, train=training(False, 23, jepa_loss="infonce"))
    write_summary(runs, "synth_l2_s82", "synth", 0.5, train=training(False, 82, jepa_loss="l2"))
    write_summary(runs, "synth_lora8_s82", "synth", 0.6, train=training(False, 82, lora=True, lora_rank=8))
    groups = by_method(report.group(report.collect([runs])), "synth")
    assert groups[JEPA].n == 5 and groups[REG].n == 5
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, LoRA r=16)"].n == 3
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, LoRA r=8)"].n == 1
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, LD=0.75)"].n == 3
    assert groups["regular (lr=2e-05, LoRA r=16)"].n == 3
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, additive)"].n == 1
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=4)"].n == 1
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, loss=infonce)"].n == 2
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, loss=l2)"].n == 1
    # The LoRA JEPA row is compared with the LoRA regular row (same lr, same LoRA setting).
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, LoRA r=16)"].baseline == "regular (lr=2e-05, LoRA r=16)"
    assert groups["JEPA (lr=2e-05, lbd=1.0, k=1, loss=infonce)"].baseline == REG
    assert groups[JEPA].baseline == REG


def test_duplicate_seed_keeps_newest(runs, caplog):
    # The newer evaluation sorts first by path, so only its date can make it win.
    write_summary(runs, "aaa_synth_jepa_s82_rerun", "synth", 0.9, train=training(False, 82),
                  date="2026-12-01T09:00:00")
    with caplog.at_level(logging.WARNING, logger="llm_jepa.report"):
        g = by_method(report.group(report.collect([runs])), "synth")[JEPA]
    assert g.n == 5 and sorted(g.seeds) == sorted(SEEDS)
    assert g.values[g.seeds.index(82)] == 0.9
    assert any("seed 82" in r.getMessage() for r in caplog.records)


def test_paired_t_test_matches_scipy(runs):
    groups = report.group(report.collect([runs]))
    for dataset in ("synth", "gsm8k"):
        jepa, reg = ACC[(dataset, "jepa")], ACC[(dataset, "regular")]
        g = by_method(groups, dataset)[JEPA]
        assert g.n_pairs == 5 and g.baseline == REG
        assert g.p_value == pytest.approx(ttest_rel(jepa, reg).pvalue, rel=1e-9)
        assert g.diff == pytest.approx(np.mean(np.subtract(jepa, reg)), abs=1e-12)
        assert by_method(groups, dataset)[REG].p_value is None   # regular rows are not tested


def test_paired_t_test_by_hand(runs):
    """The p-value from the t statistic and the closed-form t distribution with 4 degrees of
    freedom, F(t) = 1/2 + 3/4 x (1 - x^2 / 3) with x = t / sqrt(t^2 + 4) (no scipy)."""
    g = by_method(report.group(report.collect([runs])), "synth")[JEPA]
    d = [j - r for j, r in zip(ACC[("synth", "jepa")], ACC[("synth", "regular")])]
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    x = t / math.sqrt(t * t + 4)
    p = 2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3)))
    assert 0.001 < p < 0.05 and g.p_value == pytest.approx(p, rel=1e-9)


def test_mismatched_seeds_pair_by_seed(tmp_path):
    jepa = {82: 0.71, 23: 0.69, 37: 0.74}
    reg = {37: 0.70, 5: 0.50, 82: 0.66, 99: 0.90}           # only 82 and 37 in common
    for seed, acc in jepa.items():
        write_summary(tmp_path, f"j{seed}", "synth", acc, train=training(False, seed))
    for seed, acc in reg.items():
        write_summary(tmp_path, f"r{seed}", "synth", acc, train=training(True, seed))
    groups = by_method(report.group(report.collect([tmp_path])), "synth")
    p, diff, n = report.paired_test(groups[JEPA], groups[REG])
    assert n == 2
    assert p == pytest.approx(ttest_rel([0.71, 0.74], [0.66, 0.70]).pvalue, rel=1e-9)
    # by hand: differences 0.05, 0.04 -> t = 0.045 / (0.00707 / sqrt 2) = 9 with 1 degree of
    # freedom, whose t distribution is Cauchy: p = 1 - (2 / pi) atan(9)
    assert p == pytest.approx(1 - 2 / math.pi * math.atan(9.0), rel=1e-6)
    assert diff == pytest.approx(((0.71 - 0.66) + (0.74 - 0.70)) / 2)
    # A single common seed is too few for a test.
    one = report.Group("synth", MODEL, REG, "regular", seeds=[82, 5], values=[0.66, 0.5])
    assert report.paired_test(groups[JEPA], one) == (None, None, 1)
    # An unknown seed (None) is not a seed: two unseeded runs are not a pair.
    unseeded = report.Group("synth", MODEL, REG, "regular", seeds=[None, 82], values=[0.5, 0.66])
    jepa_unseeded = report.Group("synth", MODEL, JEPA, "jepa", seeds=[None, 82], values=[0.6, 0.71])
    assert report.paired_test(jepa_unseeded, unseeded) == (None, None, 1)


def test_constant_difference_has_no_p_value():
    j = report.Group("d", MODEL, JEPA, "jepa", seeds=[1, 2, 3], values=[0.5, 0.6, 0.7])
    r = report.Group("d", MODEL, REG, "regular", seeds=[1, 2, 3], values=[0.4, 0.5, 0.6])
    p, diff, n = report.paired_test(j, r)
    assert p is None and diff == pytest.approx(0.1) and n == 3


def test_baseline_prefers_same_learning_rate(tmp_path):
    for seed in SEEDS:
        write_summary(tmp_path, f"j{seed}", "synth", 0.7, train=training(False, seed, learning_rate=1e-05))
        write_summary(tmp_path, f"r{seed}", "synth", 0.6, train=training(True, seed))
    for seed in SEEDS[:2]:
        write_summary(tmp_path, f"r1_{seed}", "synth", 0.6 + seed / 1000,
                      train=training(True, seed, learning_rate=1e-05))
    g = by_method(report.group(report.collect([tmp_path])), "synth")["JEPA (lr=1e-05, lbd=1.0, k=1)"]
    assert g.baseline == "regular (lr=1e-05)" and g.n_pairs == 2


def test_base_model_without_training(runs):
    write_summary(runs, "base", "synth", 0.42, train=None, seed=None, model_name=MODEL)
    groups = report.group(report.collect([runs]))
    base = by_method(groups, "synth")["base"]
    assert base.n == 1 and base.seeds == [None] and base.std is None and base.model == MODEL
    assert [g.method for g in groups if g.dataset == "synth"] == ["base", REG, JEPA]
    assert "| synth | Llama-3.2-1B-Instruct | base | 42.00 ± - | 1 | - | - | - |" in report.markdown(groups)


def test_markdown_cells(runs):
    groups = report.group(report.collect([runs]))
    md = report.markdown(groups)
    assert md.splitlines()[0] == ("| dataset | model | method | accuracy (mean ± std, %) | n | seeds "
                                  "| Δ vs regular | p |")
    j, r = np.array(ACC[("synth", "jepa")]), np.array(ACC[("synth", "regular")])
    acc = f"{100 * j.mean():.2f} ± {100 * j.std(ddof=1):.2f}"
    delta = f"{100 * (j - r).mean():+.2f}"
    p = f"{ttest_rel(j, r).pvalue:.3g}"
    row = f"| synth | Llama-3.2-1B-Instruct | {JEPA} | {acc} | 5 | 4, 23, 37, 82, 84 | {delta} [2] | {p} |"
    assert row in md
    assert acc == "71.11 ± 1.18" and delta == "+2.34"
    reg_acc = f"{100 * r.mean():.2f} ± {100 * r.std(ddof=1):.2f}"
    assert f"| synth | Llama-3.2-1B-Instruct | {REG} | {reg_acc} | 5 | 4, 23, 37, 82, 84 | - | - |" in md
    assert f"[2] synth / Llama-3.2-1B-Instruct: compared with {REG}" in md
    assert md.index("| gsm8k |") < md.index("| synth |")


def test_csv_round_trips(runs, tmp_path):
    groups = report.group(report.collect([runs]))
    out = tmp_path / "table.csv"
    report.write_csv(groups, out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(groups)
    for row, g in zip(rows, groups):
        assert (row["dataset"], row["model"], row["method"], int(row["n"])) == (g.dataset, g.model, g.method, g.n)
        assert float(row["mean"]) == g.mean and float(row["std"]) == g.std        # unrounded
        assert [int(s) for s in row["seeds"].split()] == g.seeds
        assert [float(v) for v in row["values"].split()] == g.values
        if g.kind == "jepa":
            assert float(row["p_value"]) == g.p_value and float(row["diff"]) == g.diff
            assert row["baseline"] == REG and int(row["n_pairs"]) == 5
        else:
            assert row["p_value"] == row["diff"] == row["baseline"] == ""


def test_main_prints_table_and_writes_png_and_csv(runs, tmp_path, capsys):
    png, csv_path = tmp_path / "bars.png", tmp_path / "t.csv"
    assert report.main([str(runs), "--png", str(png), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("| synth |") == 2 and out.count("| gsm8k |") == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert csv_path.exists()


def test_metric_exact(runs, capsys):
    write_summary(runs, "exact_only", "synth", 0.5, train=training(True, 82), exact=0.5,
                  date="2026-12-02T00:00:00")    # a re-evaluation: replaces regular seed 82
    assert report.main([str(runs), "--metric", "exact"]) == 0
    out = capsys.readouterr().out
    assert "| exact (mean ± std, %) |" in out
    g = by_method(report.group(report.collect([runs]), metric="exact"), "synth")[REG]
    expected = [0.5 if s == 82 else a - 0.01 for s, a in zip(SEEDS, ACC[("synth", "regular")])]
    assert g.mean == pytest.approx(np.mean(expected)) and g.std == pytest.approx(np.std(expected, ddof=1))
    assert f"{100 * np.mean(expected):.2f} ± {100 * np.std(expected, ddof=1):.2f}" in out


def test_unknown_metric_is_an_error(runs, capsys):
    assert report.main([str(runs), "--metric", "bleu"]) != 0
    assert "bleu" in capsys.readouterr().err


def test_no_summary_files_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) != 0
    captured = capsys.readouterr()
    assert "no evaluation summary files" in captured.err and captured.out == ""
    assert report.main([str(tmp_path / "missing")]) != 0
    assert "no such file" in capsys.readouterr().err


def test_runs_without_a_finite_metric_are_left_out(runs):
    write_summary(runs, "nothing_scored", "synth", float("nan"), train=training(True, 99))
    write_summary(runs, "tz_rerun", "synth", 0.5, train=training(True, 4), date="2026-12-01T09:00:00+02:00")
    g = by_method(report.group(report.collect([runs])), "synth")[REG]
    assert g.n == 5 and 99 not in g.seeds
    assert g.values[g.seeds.index(4)] == 0.5      # an aware date compares with naive ones


def test_report_names_the_software_and_warns_when_a_group_mixes_stacks(runs, capsys, caplog):
    stack = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.25.0", "torch_threads": 2,
             "lock": {"file": "constraints.txt", "pinned_stack": True, "differences": {}}}
    for path in runs.rglob("*.summary.json"):
        s = json.loads(path.read_text())
        newer = "gsm8k_jepa_s4" in str(path)
        s["versions"] = dict(stack, transformers="5.26.0") if newer else stack
        path.write_text(json.dumps(s))
    with caplog.at_level(logging.WARNING):
        assert report.main([str(runs)]) == 0
    out = capsys.readouterr().out
    assert "software (19 of 20 runs): python 3.11.7, torch 2.13.0+cpu, transformers 5.25.0, 2 threads, pinned stack" in out
    assert "software (1 of 20 runs): python 3.11.7, torch 2.13.0+cpu, transformers 5.26.0" in out
    mixed = [r.message for r in caplog.records if "different software" in r.message]
    assert len(mixed) == 1 and mixed[0].startswith("gsm8k / ")
