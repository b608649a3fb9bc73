"""The JEPA term's objectives: a registry.

An objective is a name, a loss computed from what the layout's forward pass produced (the
last hidden states and the layout's positions), the views it needs the layout to contain,
and, optionally, a module with trainable parameters of its own (a learned predictor, say).
The trainer knows nothing else about it: `--jepa_loss NAME` picks one, and adding an
objective is one `register(...)` call here (or in a researcher's own module, imported
before training), its tests and a line in the README.

A module returned by `make_module(hidden_size, options)` is attached to the model as
`model.jepa_objective` before the optimizer is built, so it is trained with the model, is
part of every checkpoint (and so resumes with it), and is saved with the final model.
`options(cfg)`, when given, reads the objective's own flags from the training
configuration once; the result reaches `make_module`.

The published flags --jepa_l2, --jepa_mse and --infonce remain as aliases, as does
`--linear MODE` for the Semantic Tube Prediction objectives (semantic_tube.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import losses, layouts, semantic_tube

# The attribute a module-carrying objective is attached under.
MODULE_ATTR = "jepa_objective"


@dataclass(frozen=True)
class Embeddings:
    """What an objective may read: the last hidden states of the layout's rows and the
    layout itself (labels, the positions of each view's embedding token)."""
    hidden: torch.Tensor          # [rows, width, d]
    layout: layouts.Layout
    draw_seed: int = 0            # seeds this micro-batch's random draws (same on every rank)
    pooling: str = "last"         # "mean" (--avg_encoding): the view's states up to its embedding token

    def text(self) -> torch.Tensor:
        """Enc(Text): [B, d], the hidden state at the Text view's embedding token."""
        return self._pool(self.layout.text_at)

    def code(self) -> torch.Tensor:
        """Enc(Code): [B, d], the hidden state at the Code view's embedding token."""
        return self._pool(self.layout.code_at)

    def _pool(self, at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.pooling == "mean":
            return layouts.mean_embeddings(self.hidden, at, self.layout.kwargs.get("position_ids"))
        return layouts.gather_embeddings(self.hidden, at)


@dataclass(frozen=True)
class Objective:
    name: str
    help: str
    # loss(embeddings, module) -> scalar; module is None unless make_module is given
    loss: Callable[[Embeddings, torch.nn.Module | None], torch.Tensor]
    # The views besides Full that the layout must compute; () for an objective of the
    # Full view alone (the layout then runs the Full rows only, with hidden states).
    views: tuple[str, ...] = ("text", "code")
    # make_module(hidden_size, options) -> the objective's own module (trained and saved)
    make_module: Callable[[int, object], torch.nn.Module] | None = None
    # options(cfg) -> the objective's settings, read from the training configuration
    options: Callable[[object], object] | None = None
    # Whether the Full view's features carry the content spans (data.ViewTokenizer.content_spans)
    spans: bool = False


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    if objective.name in OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} is registered already")
    unknown = set(objective.views) - {"text", "code"}
    if unknown:
        raise ValueError(f"objective {objective.name!r}: unknown views {sorted(unknown)}")
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown JEPA objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


# The published boolean flags, each an alias of one objective.
ALIASES = {"jepa_l2": "l2", "jepa_mse": "mse", "infonce": "infonce"}
DEFAULT = "cosine"


def objective_name(jepa_loss: str, aliases: dict[str, bool], linear: str | None = None) -> str:
    """The objective a configuration selects: --linear (STP; --jepa_mse then switches its
    distance), else the alias flag that is set, else --jepa_loss (the configuration refuses
    two different choices)."""
    if linear:
        return linear
    chosen = [ALIASES[flag] for flag, on in aliases.items() if on]
    return chosen[0] if chosen else jepa_loss


def attach_module(model: torch.nn.Module, objective: Objective, hidden_size: int,
                  options: object = None) -> torch.nn.Module | None:
    """The objective's own module on the model (trained, checkpointed and saved with it).
    It moves to the model's device but keeps its own dtype: fp32 parameters, as the
    published predictor, even inside a model held in bf16."""
    module = objective.make_module(hidden_size, options) if objective.make_module else None
    if module is None:
        return None
    module = module.to(device=next(model.parameters()).device)
    model.add_module(MODULE_ATTR, module)
    return module


def _pair(name: str, help: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Objective:
    """An objective on Enc(Text) and Enc(Code); with --linear_predictor, a learned linear map
    of Enc(Text) is compared instead."""
    def loss(e: Embeddings, module: torch.nn.Module | None) -> torch.Tensor:
        text = e.text()
        return fn(module(text) if module is not None else text, e.code())

    def make(d: int, options) -> torch.nn.Module | None:
        predictor, seed = options
        return semantic_tube.LinearPredictor(d, seed) if predictor else None

    return Objective(name, help, loss, make_module=make, options=lambda cfg: (cfg.linear_predictor, cfg.finetune_seed))


register(_pair("cosine", "1 - mean cos(Enc(Text), Enc(Code)) (the default)", losses.cosine_loss))
register(_pair("l2", "mean Euclidean distance between Enc(Text) and Enc(Code) (alias --jepa_l2)", losses.l2_loss))
register(_pair("mse", "mean squared error between Enc(Text) and Enc(Code) (alias --jepa_mse)", losses.mse_loss))
register(_pair("infonce", "InfoNCE over the batch, temperature 0.07 (alias --infonce)", losses.infonce_loss))


# Semantic Tube Prediction: the Full view alone, its content spans, and a module that holds
# the options, the draws and the optional linear predictor.
def _tube(mode: str, help: str) -> Objective:
    def loss(e: Embeddings, module: torch.nn.Module) -> torch.Tensor:
        rows, regions, starts = e.layout.spans
        if rows.numel() == 0:   # no example of this micro-batch has spans (truncation): no term
            return e.hidden.sum() * 0.0
        return module.loss(e.hidden, rows, regions, starts, e.draw_seed)

    return Objective(mode, help, loss, views=(), spans=True,
                     make_module=lambda d, options: semantic_tube.TubeObjective(d, options),
                     options=lambda cfg: semantic_tube.TubeOptions.from_config(cfg, mode))


register(_tube("random_span", "STP: a random patch's chord against the chord of the rest (alias --linear "
                              "random_span)"))
register(_tube("e2e", "STP ablation: the user's chord against the answer's (alias --linear e2e)"))
register(_tube("mean", "STP ablation: the user's mean state against the answer's (alias --linear mean)"))
register(_tube("curvature", "STP ablation: the trajectory's mean turning angle (alias --linear curvature)"))
