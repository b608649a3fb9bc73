"""The fine-tuning configuration: one dataclass that is the single source of truth for
every command-line flag, its default, its help text and its allowed values.

The published flags keep their published names and meanings.
`--paper_compat` switches every fix back to the published behaviour.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .behaviour import Published, unknown_names
from .errors import ConfigError
from .modeling import model_path_problem
from . import semantic_tube
from .objectives import ALIASES, DEFAULT, OBJECTIVES, get_objective, objective_name

DTYPES = ("auto", "bf16", "fp16", "fp32")


def _flag(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A dataclass field that also carries its argparse help text and choices."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


class Validated:
    """A config that lists its problems (`problems()`) and reports them all at once, and
    resolves its --paper_compat / --published flags into one set of switches."""
    paper_compat: bool
    published: str

    def problems(self) -> list[str]:
        raise NotImplementedError

    @property
    def behaviour(self) -> Published:
        """The published behaviours this run reproduces (all of them with --paper_compat)."""
        return Published.resolve(self.paper_compat, self.published)

    def _published_problems(self) -> list[str]:
        unknown = unknown_names(self.published)
        if not unknown:
            return []
        return [f"--published: unknown behaviour {', '.join(unknown)}; known: {', '.join(Published.names())}"]

    def validate(self):
        problems = self.problems()
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self


@dataclass
class TrainConfig(Validated):
    # --- data ---------------------------------------------------------------------
    train_file: str | None = _flag(None, "Training JSONL file.")
    eval_file: str | None = _flag(None, "Evaluation JSONL file (loss only, once per epoch).")
    data_file: str | None = _flag(None, "One JSONL file, split into train/eval by --eval_split.")
    eval_split: float = _flag(0.2, "Eval fraction when --data_file is split.")
    split_seed: int = _flag(42, "Seed of the --data_file split.")
    max_length: int = _flag(512, "Maximum tokens per view; longer views are truncated and counted.")
    plain: bool = _flag(False, "No chat template: Full = user + '<|perception|>' + assistant + '<|eot_id|>'.")
    train_all: bool = _flag(False, "Train on every token of the Full view (pretraining).")
    # --- model --------------------------------------------------------------------
    model_name: str = _flag("meta-llama/Llama-3.2-1B-Instruct", "Model name or local directory.")
    tokenizer_name: str | None = _flag(
        None, "Load the tokenizer from here instead (default: the family's source, else --model_name).")
    output_dir: str = _flag("./llama3-1b-fted", "Where checkpoints, logs and the final model go.")
    overwrite_output_dir: bool = _flag(
        False, "Replace an existing --output_dir, but only one made by this trainer.")
    pretrain: bool = _flag(False, "Start from random weights (the model's config, seeded).")
    lora: bool = _flag(False, "Train LoRA adapters instead of all weights; merged when saved.")
    lora_rank: int = _flag(16, "LoRA rank r (alpha = 2r, dropout 0.1).")
    dtype: str = _flag("auto", "Compute dtype. auto: bf16 on a CUDA GPU that supports it and on a CPU with "
                               "native bf16 matmuls (AVX512-BF16, AMX), else fp32.", DTYPES)
    attn_implementation: str | None = _flag(
        None, "Attention kernel passed to the model (sdpa, eager, flash_attention_2, flex_attention); "
              "'family': the family table's choice for large models (eager for Gemma), else the default.")
    gradient_checkpointing: bool | None = _flag(
        None, "Recompute activations in backward to save memory, at a third more compute. Default (auto): "
              "on with --paper_compat (published default) and on a CUDA GPU; on a CPU only when the "
              "estimated training memory would not fit. --gradient_checkpointing / --no-gradient_checkpointing "
              "force it on / off.")
    fsdp: str = _flag(
        "", "FSDP sharding for the Trainer, e.g. 'full_shard auto_wrap' (finetune8bh200.py): FSDP2, one "
            "unit per decoder layer, activation checkpointing by FSDP when --gradient_checkpointing.")
    date_string: str | None = _flag(
        None, "Date the chat template stamps (Llama-3). Default: pinned to '26 Jul 2024'; "
              "--paper_compat: today's date, as published.")
    # --- optimisation ---------------------------------------------------------------
    batch_size: int = _flag(4, "Examples per device per micro-batch.")
    grad_accum: int = _flag(4, "Micro-batches per optimizer step.")
    learning_rate: float = _flag(2e-5, "Peak learning rate (linear decay to 0, no warmup).")
    num_epochs: int = _flag(3, "Training epochs.")
    max_steps: int = _flag(-1, "Stop after this many optimizer steps (-1: run --num_epochs).")
    finetune_seed: int = _flag(42, "Seed of the Trainer, its data order and the JEPA-loss dropout.")
    eval_steps: int = _flag(10, "Logging interval in optimizer steps (published name).")
    save_checkpoints: bool = _flag(
        True, "Save a checkpoint every epoch (published save_steps); --no-save_checkpoints keeps only the "
              "final model (finetune8bh200.py).")
    resume_from_checkpoint: str | None = _flag(
        None, "Resume from this checkpoint directory, or 'last' for the newest in --output_dir.")
    # --- JEPA -------------------------------------------------------------------------
    regular: bool = _flag(False, "Plain fine-tuning: Full view only, no JEPA term.")
    additive_mask: bool = _flag(False, "Encode Text and Code in one row with a block-causal mask.")
    packing: bool = _flag(
        True, "Pack the Full, Text and Code views of a batch padding-free into a few rows (default JEPA "
              "layout). --no-packing: the 3-pass layout, [Full; Text; Code] as 3B padded rows.")
    pack_full: bool = _flag(
        False, "Regular fine-tuning and objectives of the Full view alone (STP): pack several examples per row, "
               "padding-free, instead of one padded row each.")
    packing_budget: int = _flag(
        0, "Tokens per packed row. 0: automatic, per batch: the width from 1x to 3x the longest view "
           "that computes the fewest padded tokens (one row with flash attention).")
    predictors: int = _flag(0, "Number k of <|predictor_i|> tokens appended to Text (0-10).")
    lbd: float = _flag(0.1, "Weight of the JEPA loss.")
    gamma: float = _flag(1.0, "Weight of the LM loss.")
    last_token: str = _flag(
        "auto", "Where the view embedding is read: 'auto' (the last content or predictor token, found "
                "from the tokenizer), 'family' (the published per-family offset), or an integer offset "
                "from the end of the view (published; default -1 under --paper_compat).")
    jepa_loss: str = _flag(
        DEFAULT, "The JEPA objective, by name in the objectives registry (llm_jepa/objectives.py): "
                 + "; ".join(f"{o.name}: {o.help}" for o in OBJECTIVES.values())
                 + "; or one your own code registers before training.")
    jepa_l2: bool = _flag(False, "Published alias of --jepa_loss l2 (mean L2 distance).")
    jepa_mse: bool = _flag(False, "Published alias of --jepa_loss mse (mean squared error).")
    infonce: bool = _flag(False, "Published alias of --jepa_loss infonce (temperature 0.07).")
    front_pred: bool = _flag(False, "Put the predictor tokens in front of the Text content.")
    reverse_pred: bool = _flag(False, "Swap Text and Code: Code predicts Text.")
    jepa_ratio: float = _flag(-1.0, "Random JEPA-loss dropout: compute JEPA on this fraction r of steps, "
                                    "0 < r <= 1 (LD = 1 - r); -1: on every step.")
    lbd_warmup: bool = _flag(False, "Ramp the JEPA weight linearly from --min_lbd at the first optimizer step "
                                    "to --lbd at the last.")
    min_lbd: float = _flag(0.0, "The JEPA weight at the first step with --lbd_warmup.")
    constant_lr: bool = _flag(False, "Constant learning rate instead of the linear decay to 0.")
    same_predictor: bool = _flag(False, "Append <|predictor_1|> k times instead of <|predictor_k|>...<|predictor_1|>.")
    plain_jepa: bool = _flag(False, "Render the Text and Code views as raw content, without the chat template "
                                    "(the Full view keeps it).")
    # --- Semantic Tube Prediction (semantic_tube.py) ----------------------------------
    linear: str | None = _flag(
        None, "STP objective (alias of --jepa_loss MODE): random_span (the method), or the ablations e2e, "
              "mean, curvature. The term is read from the Full view's hidden states: no extra rows.",
        semantic_tube.MODES)
    linear_predictor: bool = _flag(False, "A learned D x D linear map (no bias), trained and saved with the model: "
                                          "STP maps the context chord to the patch chord with it, LLM-JEPA "
                                          "Enc(Text) before comparing it with Enc(Code).")
    load_lp: bool = _flag(False, "Load the linear predictor saved in --model_name (it must be there).")
    length_adjustment: str | None = _flag(
        None, "STP random_span: weigh each patch by how balanced patch and rest are (r = rest, p = patch "
              "length): cosine_like 2rp/(r^2+p^2), jaccard_like 1-|r-p|/(r+p).", semantic_tube.LENGTH_ADJUSTMENTS)
    random_span_zero: bool = _flag(False, "STP: every patch starts at the first user token.")
    random_span_e2e: bool = _flag(False, "STP: the answer region starts right after the user's content (the "
                                         "template tokens between them join it).")
    random_span_all: bool = _flag(False, "STP: the user region takes in the whole prompt: it starts after the "
                                         "sequence's first token, whose state begins its chord.")
    random_span_max_length: int = _flag(-1, "STP: longest patch, in tokens (-1: no bound; ignored by "
                                            "--random_span_uniform).")
    random_span_times: int = _flag(1, "STP random_span: patches drawn per example.")
    random_span_draw_both: bool = _flag(False, "STP: draw both ends at once and order them (rejecting empty and "
                                               "whole spans).")
    random_span_uniform: bool = _flag(False, "STP: every (start, end) pair equally likely.")
    random_span_mask: bool = _flag(
        False, "STP mask ablation: the Text view becomes the user's content through the answer with a random "
               "patch replaced by <|mask|>, the Code view the patch; the pair objective (--jepa_loss) joins them.")
    random_span_mask_recover: bool = _flag(False, "With --random_span_mask: the target is the unmasked sequence, "
                                                  "not the patch.")
    random_span_layer: int = _flag(-1, "STP: the hidden state the term reads: 0 the embeddings, k the output "
                                       "of layer k, -1 the final (normed) state.")
    script: str = _flag("finetune.py", "The published script whose behaviour --paper_compat reproduces (set by "
                                       "the entry point: stp.py sets stp.py).", ("finetune.py", "stp.py"))
    avg_encoding: bool = _flag(False, "Enc(Text) and Enc(Code) are the mean of the view's hidden states up to its "
                                      "embedding token, not the state at that token.")
    curvature_sign: bool = _flag(False, "Published STP flag: meant a signed angle, which does not exist in "
                                        "more than 2 dimensions; it changes nothing (a warning says so).")
    same_flop: bool = _flag(False, "Shrink epochs and checkpoint interval to match regular fine-tuning FLOPs.")
    # --- diagnostics ------------------------------------------------------------------
    track_flop: bool = _flag(False, "Profile the first 10 steps and print 'Step N: FLOPs: X'.")
    debug: int = _flag(0, "Any value > 0 logs at DEBUG level and dumps the first batch (views, labels, "
                          "embedding positions). Never exits early.")
    paper_compat: bool = _flag(False, "Reproduce the published code's numerics, defects included: every "
                                      "switch of --published at once.")
    published: str = _flag(
        "", "Comma-separated published behaviours to reproduce, one at a time (llm_jepa/behaviour.py): "
            + ", ".join(Published.names()) + ".")

    # ------------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """How the views of a batch are laid out for the forward pass."""
        if self.regular:
            return "regular"
        if self.additive_mask:
            return "additive"
        # the published forward runs the 3-pass layout; masked views are built in the forward,
        # after the collator, so they cannot be packed
        packed = self.packing and not self.behaviour.forward and not self.random_span_mask
        return "packed" if packed else "3pass"

    @property
    def data_views(self) -> bool:
        """Whether the batches carry the Text and Code views tokenized from the data."""
        return not self.regular and not self.random_span_mask and bool(get_objective(self.objective).views)

    @property
    def content_spans(self) -> bool:
        """Whether the Full view's features carry its content spans (STP, the mask ablation)."""
        return not self.regular and (self.random_span_mask or get_objective(self.objective).spans)

    @property
    def last_token_offset(self) -> int | None:
        """The integer offset, or None for 'auto'/'family' (resolved with the tokenizer)."""
        if self.last_token in ("auto", "family"):
            return None
        return int(self.last_token)

    def problems(self) -> list[str]:
        """Every problem with this configuration (empty when it is valid)."""
        out = []
        if not self.train_file and not self.data_file:
            out.append("give --train_file or --data_file")
        if self.train_file and self.data_file:
            out.append("give --train_file or --data_file, not both")
        if self.data_file and self.eval_file:
            out.append("--eval_file cannot be used with --data_file (it is split by --eval_split)")
        out.extend(self._float_problems())
        out.extend(self._objective_problems())
        if not unknown_names(self.published):
            out.extend(self._mask_problems())
        out.extend(self._predictor_problems())
        if self.pack_full and not unknown_names(self.published):
            if self.data_views or self.random_span_mask:
                out.append("--pack_full packs Full views alone (regular, STP); the JEPA views are packed by --packing")
            if self.behaviour.forward:
                out.append("--pack_full does not apply to the published forward (--published forward)")
        out.extend(self._published_problems())
        if not 0 <= self.predictors <= 10:
            out.append(f"--predictors must be between 0 and 10, got {self.predictors}")
        if self.last_token not in ("auto", "family"):
            try:
                int(self.last_token)
            except ValueError:
                out.append(f"--last_token must be 'auto', 'family' or an integer, got {self.last_token!r}")
        for name in ("max_length", "batch_size", "grad_accum", "num_epochs", "eval_steps", "lora_rank"):
            if getattr(self, name) < 1:
                out.append(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            out.append(f"--max_steps must be positive or -1, got {self.max_steps}")
        for name in ("split_seed", "finetune_seed"):  # numpy's seeding refuses the others, but only late
            if not 0 <= getattr(self, name) < 2 ** 32:
                out.append(f"--{name} must be between 0 and 2**32 - 1, got {getattr(self, name)}")
        if self.gamma == 0 and (self.regular or self.lbd == 0):
            out.append("--gamma 0 with " + ("--regular" if self.regular else "--lbd 0") + " leaves no loss to train")
        if self.packing_budget < 0:
            out.append(f"--packing_budget must be 0 (automatic) or positive, got {self.packing_budget}")
        if self.lora and self.fsdp:
            out.append("--lora with --fsdp is not supported (the merged save needs the whole model on one rank)")
        if self.regular and self.additive_mask:
            out.append("--regular and --additive_mask exclude each other")
        return out

    @property
    def objective(self) -> str:
        """The JEPA objective's name, with the published alias flags resolved."""
        aliases = {flag: getattr(self, flag) for flag in ALIASES}
        return objective_name(self.jepa_loss, aliases, self.linear)

    def _objective_problems(self) -> list[str]:
        if self.linear:
            return self._tube_problems()
        aliases = [flag for flag in ALIASES if getattr(self, flag)]
        if self.jepa_loss != DEFAULT:
            aliases = ["jepa_loss " + self.jepa_loss] + [a for a in aliases if ALIASES[a] != self.jepa_loss]
        if len(aliases) > 1:
            return ["choose at most one of --jepa_loss, --jepa_l2, --jepa_mse, --infonce (got "
                    + ", ".join("--" + a for a in aliases) + ")"]
        if self.objective not in OBJECTIVES:
            return [f"--jepa_loss {self.jepa_loss}: unknown objective; known: {', '.join(OBJECTIVES)}"]
        return []

    def _mask_problems(self) -> list[str]:
        if not self.random_span_mask:
            return ["--random_span_mask_recover needs --random_span_mask"] if self.random_span_mask_recover else []
        out = []
        if self.linear:
            out.append("--random_span_mask builds views that --linear would not read: choose one")
        if self.regular:
            out.append("--random_span_mask needs a JEPA run, not --regular")
        if self.random_span_times != 1:
            out.append("--random_span_mask draws one patch per example (--random_span_times 1)")
        if self.behaviour.forward:
            out.append("--random_span_mask is not reproduced with the published forward (--published forward, "
                       "set by --paper_compat)")
        spans = semantic_tube.TubeOptions.from_config(self, "random_span").spans
        return out + [f"--{p}" for p in semantic_tube.tube.span_problems(spans)]

    def _tube_problems(self) -> list[str]:
        """STP: --jepa_mse switches its distance; the other objectives do not combine with it."""
        out = [f"--linear {self.linear} cannot be combined with --{flag}" for flag in ("jepa_l2", "infonce")
               if getattr(self, flag)]
        if self.jepa_loss not in (DEFAULT, self.linear):
            out.append(f"--linear {self.linear} and --jepa_loss {self.jepa_loss} choose two objectives")
        spans = semantic_tube.TubeOptions.from_config(self, self.linear).spans
        out += [f"--{p}" for p in semantic_tube.tube.span_problems(spans)]
        if self.linear != "random_span" and self.random_span_times != 1:
            out.append(f"--random_span_times applies to --linear random_span only (got --linear {self.linear})")
        if self.linear == "curvature" and (self.linear_predictor or self.jepa_mse):
            out.append("--linear curvature has no context chord: drop --linear_predictor and --jepa_mse")
        if self.avg_encoding:
            out.append("--avg_encoding pools the Text and Code views, which --linear does not read")
        return out

    def _predictor_problems(self) -> list[str]:
        out = []
        if self.linear_predictor and self.fsdp:
            out.append("--linear_predictor with --fsdp is not supported (the predictor is applied outside the "
                       "sharded forward)")
        if self.load_lp and not self.linear_predictor:
            out.append("--load_lp loads the linear predictor: give --linear_predictor too")
        return out

    def _float_problems(self) -> list[str]:
        return _float_problems(self, _FLOAT_RANGES)

    def input_problems(self) -> list[str]:
        """Problems that need the file system: the input files and the model and tokenizer paths."""
        out = [_input_file_problem(f"--{name}", getattr(self, name))
               for name in ("train_file", "eval_file", "data_file")]
        out.append(model_path_problem(self.model_name, "--model_name"))
        if self.tokenizer_name:
            out.append(model_path_problem(self.tokenizer_name, "--tokenizer_name", "tokenizer_config.json"))
        return [p for p in out if p]

    def validate(self, check_inputs: bool = False) -> TrainConfig:
        """Raise ConfigError with every problem at once. check_inputs: also look at the file
        system (input files, model path), as the command line and `train.run` do, so that a
        missing file is reported with the flags' problems, before anything loads."""
        problems = self.problems() + (self.input_problems() if check_inputs else [])
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self


# Every float flag of TrainConfig: the test a finite value must pass, and what it says.
def _float_problems(cfg, ranges: dict) -> list[str]:
    """Float flags that are not finite (argparse accepts 'nan' and 'inf') or out of range.
    Every float field of `cfg` must be finite; `ranges` adds a range check for some."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.type not in (float, "float") or not isinstance(value, (int, float)):
            continue
        ok, allowed = ranges.get(f.name, (lambda v: True, ""))
        if not math.isfinite(value):
            out.append(f"--{f.name} must be a finite number, got {value}")
        elif not ok(value):
            out.append(f"--{f.name} must be {allowed}, got {value}")
    return out


_FLOAT_RANGES = {
    "eval_split": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "learning_rate": (lambda v: v > 0.0, "positive"),
    "lbd": (lambda v: v >= 0.0, "0 or positive (a negative weight maximises the JEPA loss)"),
    "gamma": (lambda v: v >= 0.0, "0 or positive (a negative weight maximises the LM loss)"),
    "min_lbd": (lambda v: v >= 0.0, "0 or positive"),
    # published: any r <= 0 meant 'off'; 0 would read as 'never', so only -1 says 'off'
    "jepa_ratio": (lambda v: v == -1.0 or 0.0 < v <= 1.0,
                   "in (0, 1] (the fraction of steps that compute JEPA), or -1 for every step"),
}


# Evaluation flags kept so that published command lines run, and what happens instead.
IGNORED_EVAL_FLAGS = {
    "temperature": "decoding is greedy",
    "top_p": "decoding is greedy",
    "top_k": "decoding is greedy",
    "num_beams": "decoding is greedy, one beam",
    "do_sample": "decoding is greedy",
    "repetition_penalty": "no penalty is applied (the published evaluation did not apply it either)",
    "split_tune_untune": "scoring and the correct/wrong split of the similarity report are always on",
    "fsdp": "evaluation runs in one process (--device_map spreads a large model over GPUs)",
}


_EVAL_FLOAT_RANGES = {
    "test_size": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "sql_timeout": (lambda v: v > 0.0, "a positive number of seconds"),
    "regex_timeout": (lambda v: v > 0.0, "a positive number of seconds"),
}


def _input_file_problem(flag: str, path: str | None) -> str | None:
    """Why an input JSONL file cannot be read, or None."""
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return f"{flag} {path}: no such file"
    if p.is_dir():
        return f"{flag} {path} is a directory, not a JSONL file"
    try:
        with open(p, "rb"):
            pass
    except OSError as err:
        return f"{flag} {path}: cannot be read ({err.strerror})"
    return None



def build_parser(defaults: dict[str, Any] | None = None, description: str = "LLM-JEPA fine-tuning",
                 config_class: type = None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser generated from a config dataclass's fields (TrainConfig by default).

    `defaults` overrides field defaults (finetune8bh200.py is such a set of defaults).
    """
    defaults = defaults or {}
    parser = argparse.ArgumentParser(description=description, prog=prog)
    for f in dataclasses.fields(config_class or TrainConfig):
        default = defaults.get(f.name, f.default)
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool, "bool | None"):  # None: decided at run time (auto)
            # Published store_true flags keep their meaning; the negative form lets a set of
            # defaults (finetune8bh200.py) be switched back off.
            parser.add_argument(f"--{f.name}", default=default, action=argparse.BooleanOptionalAction,
                                help=help_text)
            continue
        parser.add_argument(f"--{f.name}", default=default, type=_arg_type(f.type),
                            choices=f.metadata.get("choices"), help=f"{help_text} (default: {default})")
    return parser


def _arg_type(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str}[base]


def parse_args(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None,
               check_inputs: bool = False) -> TrainConfig:
    """Parse the command line into a validated TrainConfig (all problems reported at once).

    check_inputs: also check the input files and the model path (finetune.py does)."""
    parser = build_parser(defaults)
    ns = parser.parse_args(argv)
    cfg = TrainConfig(**vars(ns))
    if not unknown_names(cfg.published) and cfg.behaviour.last_token and "last_token" not in _given_flags(argv) \
            and "last_token" not in (defaults or {}):
        cfg.last_token = "-1"  # the published command-line default
    try:
        return cfg.validate(check_inputs=check_inputs)
    except ConfigError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error raises SystemExit


def _given_flags(argv: Sequence[str] | None) -> set[str]:
    import sys
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


# ======================================================================================
# evaluate.py
# ======================================================================================
POOLINGS = ("last", "mean", "cls")
TSNE_TYPES = ("in_n_out", "paraphrase", "rotten_tomatoes")


@dataclass
class EvalConfig(Validated):
    # --- model ----------------------------------------------------------------------
    model_name: str | None = _flag(None, "Fine-tuned model directory (or hub name) to evaluate.")
    original_model_name: str | None = _flag(
        None, "The base model's name, for its family's quirks (default: detected from --model_name).")
    load_in_8bit: bool = _flag(False, "Load the model in 8-bit (bitsandbytes).")
    load_in_4bit: bool = _flag(False, "Load the model in 4-bit NF4 (bitsandbytes).")
    device_map: str = _flag("auto", "Device map for loading (published default: cuda:0).")
    dtype: str = _flag("auto", "Model dtype. auto: bf16 on a CUDA GPU that supports it, else fp32.", DTYPES)
    # --- data -----------------------------------------------------------------------
    input_file: str | None = _flag(None, "JSONL file of examples to evaluate.")
    dataset: str | None = _flag(None, "Dataset name (chooses the metric); default: from the input file's name.")
    output_file: str | None = _flag(
        None, "JSONL of per-example results; a .summary.json goes next to it. Default: "
              "<input stem>_responses.jsonl.")
    predictions: str | None = _flag(
        None, "Re-score saved generations (an earlier --output_file, or any JSONL with 'messages' and "
              "'generation') without loading a model.")
    max_examples: int | None = _flag(None, "Evaluate only the first N examples.")
    nosplit_data: bool = _flag(False, "Evaluate the input file as a whole. Without it, as published, the "
                                      "file is split (--test_size, --split_seed) and --process_split is used.")
    test_size: float = _flag(0.2, "Test fraction when splitting.")
    split_seed: int = _flag(42, "Seed of the split.")
    train_file: str | None = _flag(None, "Also write the train split here.")
    test_file: str | None = _flag(None, "Also write the test split here.")
    process_split: str = _flag("test", "Which split to evaluate when splitting.", ("train", "test", "both"))
    no_skip_existing: bool = _flag(
        False, "Start over: discard the rows an interrupted run of this evaluation saved in "
               "<output_file>.partial. By default (skip existing) the same command continues from them.")
    # --- generation -----------------------------------------------------------------
    max_new_tokens: int = _flag(128, "Tokens to generate; -1: until the end of turn, bounded by --max_length.")
    max_length: int = _flag(512, "Maximum prompt length in tokens.")
    eval_batch_size: int = _flag(32, "Prompts per generation batch (left-padded).")
    temperature: float = _flag(0.0, "Published flag; decoding is always greedy.")
    top_p: float = _flag(1.0, "Published flag; decoding is always greedy.")
    top_k: int = _flag(1, "Published flag; decoding is always greedy.")
    repetition_penalty: float = _flag(1.1, "Published flag; not applied (as published).")
    num_beams: int = _flag(1, "Published flag; decoding is always greedy.")
    do_sample: bool = _flag(False, "Published flag; decoding is always greedy.")
    plain: bool = _flag(False, "No chat template: the prompt is user + '<|perception|>'.")
    fsdp: str = _flag(
        "", "FSDP sharding for the Trainer, e.g. 'full_shard auto_wrap' (finetune8bh200.py): FSDP2, one "
            "unit per decoder layer, activation checkpointing by FSDP when --gradient_checkpointing.")
    date_string: str | None = _flag(None, "Date for the Llama-3 template; default pinned to '26 Jul 2024'.")
    # --- scoring --------------------------------------------------------------------
    startswith: bool = _flag(False, "Also report the rate of generations that start with the gold answer.")
    spider_path: str = _flag("", "Directory of the Spider databases: <spider_path>/<db_id>/<db_id>.sqlite.")
    sql_timeout: float = _flag(10.0, "Seconds a Spider query may run before it counts as wrong.")
    regex_timeout: float = _flag(5.0, "Seconds the regex equivalence check may spend on one pair; an "
                                      "undecided pair counts as wrong and is counted in the summary.")
    regex_max_states: int = _flag(20000, "State pairs the regex equivalence check may explore for one "
                                         "pair before it gives up (undecided, counted as wrong).")
    split_tune_untune: bool = _flag(False, "Published flag: scoring and the correct/wrong split of the "
                                           "similarity report are always on here.")
    paper_compat: bool = _flag(False, "Reproduce the published evaluation, defects included: every switch "
                                      "of --published at once.")
    published: str = _flag(
        "", "Comma-separated published behaviours to reproduce, one at a time (llm_jepa/behaviour.py); "
            "those of evaluation: " + ", ".join(Published.evaluation_names()) + ".")
    seed: int = _flag(42, "Seed recorded in the summary (generation is greedy).")
    # --- representations --------------------------------------------------------------
    similarity: bool = _flag(False, "Report cos(Enc(Text), Enc(Code)) for correct and wrong examples.")
    embedding_layer: int = _flag(-1, "Hidden-state layer of the embeddings.")
    embedding_pooling: str = _flag("last", "Pooling of a view's hidden states.", POOLINGS)
    start_index: int = _flag(1, "Published flag (must be 1); an interrupted evaluation continues by itself "
                                "(see --no_skip_existing).")
    t_sne: bool = _flag(False, "Write the embeddings (pickle) and a t-SNE scatter plot (PNG).")
    t_sne_type: str | None = _flag(None, "What the t-SNE plot shows.", TSNE_TYPES)
    debug: int = _flag(0, "Any value > 0 logs at DEBUG level.")

    def ignored_flags(self) -> list[str]:
        """One line per flag set away from its default that evaluation accepts (the published
        command lines pass them) but does not act on."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [f"--{name} {getattr(self, name)} is ignored: {why}" for name, why in IGNORED_EVAL_FLAGS.items()
                if getattr(self, name) != defaults[name]]

    def problems(self) -> list[str]:
        out = []
        if not self.input_file and not self.predictions:
            out.append("give --input_file, or --predictions to re-score saved generations")
        if not self.model_name and not self.predictions:
            out.append("give --model_name (or --predictions)")
        if self.predictions and (self.similarity or self.t_sne):
            out.append("--similarity and --t_sne need a model, not --predictions")
        if self.t_sne and not self.t_sne_type:
            out.append("--t_sne needs --t_sne_type")
        if self.t_sne and not self.similarity:
            out.append("--t_sne needs --similarity (it plots the view embeddings)")
        if self.eval_batch_size < 1:
            out.append(f"--eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.max_new_tokens == 0 or self.max_new_tokens < -1:
            out.append(f"--max_new_tokens must be positive or -1, got {self.max_new_tokens}")
        if self.start_index != 1:
            out.append("--start_index must be 1 (as published); to continue an interrupted evaluation, "
                       "rerun the same command")
        if self.regex_max_states < 1:
            out.append(f"--regex_max_states must be at least 1, got {self.regex_max_states}")
        return out + self._published_problems() + _float_problems(self, _EVAL_FLOAT_RANGES)



def parse_eval_args(argv: Sequence[str] | None = None) -> EvalConfig:
    parser = build_parser(description="Evaluate a fine-tuned model (python evaluate.py report DIRS... makes "
                                      "accuracy tables)", config_class=EvalConfig, prog="evaluate.py")
    cfg = EvalConfig(**vars(parser.parse_args(argv)))
    if not unknown_names(cfg.published) and cfg.behaviour.one_at_a_time \
            and "eval_batch_size" not in _given_flags(argv):
        cfg.eval_batch_size = 1  # published: one prompt at a time
    try:
        return cfg.validate()
    except ConfigError as err:
        parser.error(str(err))
        raise
