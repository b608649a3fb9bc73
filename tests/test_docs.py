"""The README documents every flag (the flag lists themselves live in llm_jepa/config.py)."""
import dataclasses

from conftest import ROOT
from llm_jepa.config import EvalConfig, TrainConfig


def test_readme_mentions_every_training_flag():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f"--{f.name}" not in readme]
    assert missing == []


def test_readme_mentions_the_evaluation_flags():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in dataclasses.fields(EvalConfig) if f"--{f.name}" not in readme]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash run.sh test"
    assert command in readme and command in ci
