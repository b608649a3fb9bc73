"""The objectives registry: names and published aliases, the built-in losses, and an
objective added from outside (its own parameters, the Full view alone) trained end to end
without any change to the trainer."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import synthetic_rows, write_jsonl
from llm_jepa import losses, layouts
from llm_jepa.collate import PadCollator
from llm_jepa import objectives as O
from llm_jepa import train as T
from llm_jepa.config import TrainConfig, parse_args


def cfg(*flags):
    return parse_args(["--train_file", "x.jsonl", *flags])


@pytest.mark.parametrize("flags,name", [
    ([], "cosine"), (["--jepa_loss", "l2"], "l2"), (["--jepa_l2"], "l2"), (["--jepa_mse"], "mse"),
    (["--infonce"], "infonce"), (["--jepa_loss", "infonce", "--infonce"], "infonce"),
])
def test_names_and_published_aliases(flags, name):
    assert cfg(*flags).objective == name


@pytest.mark.parametrize("config,message", [
    (dict(jepa_l2=True, infonce=True), "(got --jepa_l2, --infonce)"),
    (dict(jepa_loss="mse", jepa_l2=True), "(got --jepa_loss mse, --jepa_l2)"),
    (dict(jepa_loss="cosin"), "--jepa_loss cosin: unknown objective; known: cosine, l2, mse, infonce"),
])
def test_conflicting_or_unknown_choices_are_refused(config, message):
    problems = TrainConfig(train_file="x", **config).problems()
    assert any(message in p for p in problems), problems


def test_builtin_objectives_are_the_pure_losses_on_the_layouts_positions():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    text_at, code_at = (torch.tensor([0, 1]), torch.tensor([2, 4])), (torch.tensor([2, 2]), torch.tensor([0, 3]))
    layout = layouts.Layout(kwargs={}, labels=torch.zeros(3, 5, dtype=torch.long), text_at=text_at, code_at=code_at)
    e = O.Embeddings(hidden, layout)
    t, c = hidden[[0, 1], [2, 4]], hidden[[2, 2], [0, 3]]
    for name, fn in (("cosine", losses.cosine_loss), ("l2", losses.l2_loss), ("mse", losses.mse_loss),
                     ("infonce", losses.infonce_loss)):
        assert torch.equal(O.get_objective(name).loss(e, None), fn(t, c)), name


def test_register_refuses_a_duplicate_or_an_unknown_view():
    with pytest.raises(ValueError, match="registered already"):
        O.register(O.Objective("cosine", "again", lambda e, m: e.hidden.sum()))
    with pytest.raises(ValueError, match="unknown views"):
        O.register(O.Objective("x-views", "bad", lambda e, m: e.hidden.sum(), views=("image",)))
    with pytest.raises(ValueError, match="unknown JEPA objective 'nope'"):
        O.get_objective("nope")


@pytest.fixture
def full_view_predictor():
    """An objective of the kind the next methods need: the Full view only, and a learned
    linear predictor (its own parameters). Registered for this test only."""
    def loss(e: O.Embeddings, module: torch.nn.Module) -> torch.Tensor:
        h = e.hidden[:, :-1]                     # predict each position's state from the previous one
        return (module(h) - e.hidden[:, 1:].detach()).pow(2).mean()

    made = []

    def make(d: int, _options) -> torch.nn.Module:
        made.append(torch.nn.Linear(d, d, bias=False))
        made.append(made[-1].weight.detach().clone())   # its initial weight
        return made[0]

    O.register(O.Objective("test-full-predictor", "test only", loss, views=(), make_module=make))
    yield made
    del O.OBJECTIVES["test-full-predictor"]


def test_an_objective_with_parameters_trains_and_saves_without_trainer_changes(tmp_path, tiny_llama,
                                                                               full_view_predictor):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(8))
    out = tmp_path / "out"
    trainer = T.run(parse_args(["--train_file", str(data), "--model_name", str(tiny_llama), "--output_dir",
                                str(out), "--dtype", "fp32", "--batch_size", "2", "--grad_accum", "1",
                                "--max_steps", "3", "--eval_steps", "1", "--max_length", "128", "--no-save_checkpoints",
                                "--jepa_loss", "test-full-predictor", "--lbd", "1.0", "--learning_rate", "1e-2"]))
    module, initial = full_view_predictor
    assert getattr(trainer.model, O.MODULE_ATTR) is module
    # the Full view alone: the batches carry no Text and Code views
    assert isinstance(trainer.data_collator, PadCollator) and not trainer.data_collator.with_views
    # trained: the optimizer holds its weight, and it moved
    assert any(module.weight is p for group in trainer.optimizer.param_groups for p in group["params"])
    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(saved[f"{O.MODULE_ATTR}.weight"], module.weight.detach().cpu())
    assert (module.weight.detach() - initial).abs().max() > 1e-4   # it learned
    record = json.loads((out / "run_config.json").read_text())
    assert record["jepa_loss"] == "test-full-predictor"
    jepa_logged = [h["jepa_loss"] for h in trainer.state.log_history if "jepa_loss" in h]
    assert jepa_logged and all(v > 0 for v in jepa_logged)
