"""The accuracy studies' driver: search on a validation split, seeds on the test set,
resumable, and a report with costs, the one-sided test and the collapse check."""
from __future__ import annotations

import json

import pytest
import torch

from llm_jepa import report
from llm_jepa.collapse import effective_rank, pair_statistics
from llm_jepa.study import STUDIES, Setting, main, method_flags


def test_quick_study_runs_end_to_end_and_resumes(tmp_path, capsys):
    args = ["scratch", "--quick", "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")]
    assert main(args) == 0
    out = tmp_path / "results" / "scratch_quick"
    search = json.loads((out / "search.json").read_text())
    assert set(search) == {"regular", "jepa", "stp"} and all(len(v["validation_accuracy"]) == 2
                                                             for v in search.values())
    runs = sorted(p.name for p in (out / "runs").glob("*.summary.json"))
    assert len(runs) == 6 and all(any(r.startswith(m) for r in runs) for m in ("regular", "jepa", "stp"))
    summary = json.loads((out / "runs" / runs[0]).read_text())
    assert summary["training_cost"]["train_flops"] > 0 and summary["training_cost"]["train_seconds"] > 0
    assert {"views", "chords"} <= set(summary["collapse"]) and summary["study"]["threads"] == 1
    table = (out / "table.md").read_text()
    assert "STP random_span" in table and "p (one-sided, >)" in table and "train TFLOP / run" in table
    assert (out / "table.png").stat().st_size > 0 and (out / "table.csv").exists()
    collapse = (out / "collapse.md").read_text()
    assert collapse.count("\n| stp_") == 2 and "views: matched cos" in collapse
    assert "jepa_loss" in summary["final_losses"] or summary["study"]["method"] == "regular"
    # no model weights are kept
    assert not list((tmp_path / "work" / "scratch_quick" / "runs").rglob("model.safetensors"))
    # resumable: a second call finds every run done and trains nothing
    before = {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")} == before
    assert "study scratch_quick: results in" in capsys.readouterr().out
    # one run trained again from scratch gives the same metrics
    name = runs[0].replace(".summary.json", "")
    assert main(args + ["--rerun", name]) == 0
    assert "reproduced exactly" in capsys.readouterr().out


def test_method_flags_and_studies():
    assert method_flags("stp", Setting(1e-3, 0.02)) == ["--linear", "random_span", "--lbd", "0.02"]
    assert method_flags("jepa", Setting(1e-3, 2.0, 3)) == ["--lbd", "2.0", "--predictors", "3"]
    assert STUDIES["scratch"].seeds == (82, 23, 37, 84, 4) and STUDIES["smollm2"].n_test >= 500
    assert all(s.search_seed == 82 for s in STUDIES.values())
    with pytest.raises(ValueError):
        method_flags("nope", Setting(1e-3))


def test_collapse_statistics_by_hand():
    """Collapsed embeddings (one direction) have rank 1 and no gap between matching and
    non-matching pairs; informative ones have the gap and full rank."""
    same = torch.ones(4, 3) + 1e-9 * torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    collapsed = pair_statistics(same, same)
    assert collapsed["matched_cos"] == pytest.approx(1.0) and collapsed["unmatched_cos"] == pytest.approx(1.0)
    eye = torch.eye(4)
    informative = pair_statistics(eye, eye)
    assert informative["matched_cos"] == pytest.approx(1.0) and informative["unmatched_cos"] == pytest.approx(0.0)
    # centred, the 4 one-hot rows span 3 directions with equal singular values: exp(ln 3) = 3
    assert effective_rank(eye) == pytest.approx(3.0)


def test_one_sided_p_by_hand():
    """Differences 1, 2, 3 points: t = 2 / (1 / sqrt 3) = 2 sqrt 3 with 2 degrees of freedom,
    whose survival function is 1/2 - t / (2 sqrt(2 + t^2)) = 1/2 - sqrt(3/14) = 0.0370901."""
    def group(kind, values):
        return report.Group(dataset="d", model="m", method=kind, kind=kind, seeds=[1, 2, 3], values=values)

    reg, stp = group("regular", [0.10, 0.20, 0.30]), group("stp", [0.11, 0.22, 0.33])
    p, diff, n = report.paired_test(stp, reg, alternative="greater")
    assert p == pytest.approx(0.5 - (3 / 14) ** 0.5, rel=1e-6) and n == 3
    assert report.paired_test(stp, reg)[0] == pytest.approx(2 * (0.5 - (3 / 14) ** 0.5), rel=1e-6)


def test_model_label_pools_runs_of_one_base_model_built_in_two_folders():
    def summary(folder, seed, acc):
        return {"dataset": "synth", "metrics": {"accuracy": acc}, "path": f"{folder}/{seed}",
                "training": {"model_name": f"{folder}/base", "regular": True, "learning_rate": 2e-3,
                             "finetune_seed": seed}}

    runs = [summary("/a", 1, 0.5), summary("/b", 2, 0.7)]
    assert len(report.group(runs)) == 2
    (pooled,) = report.group(runs, model_label="Llama 128x4 (random init)")
    assert pooled.seeds == [1, 2] and pooled.model == "Llama 128x4 (random init)"
