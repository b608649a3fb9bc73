"""The fine-tuning pipeline behind finetune.py, top to bottom:

config -> family -> tokenizer -> examples and views -> Trainer arguments -> output dir
-> model (+ LoRA) -> JepaTrainer -> train -> save (LoRA merged) -> run_config.json
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .collate import FullPackCollator, PackCollator, PadCollator
from .config import ConfigError, TrainConfig, parse_args
from .data import DataError, TokenizeOptions, ViewOptions, ViewRenderer, ViewTokenizer, read_examples, tokenize_examples
from .corpora import dataset_for_path
from .families import Family, detect_family
from .flops import ProfilerFLOPCallback
from .modeling import (
    TORCH_DTYPES,
    add_lora,
    causal_lm,
    load_model,
    load_saved_weights,
    merged_for_saving,
    parameter_dtype,
    resolve_dtype,
)
from .models import resolve_model_name
from . import semantic_tube
from .objectives import MODULE_ATTR, get_objective
from .outputs import (
    OutputDirError,
    finished_steps,
    output_dir_action,
    prepare_output_dir,
    resume_checkpoint,
    write_checkpoint_marker,
    write_run_config,
)
from .runtime import is_rank0, setup_cpu_numerics, setup_logging, world_size
from .splits import split_indices
from .tokenization import PERCEPTION, TokenizerSetup, setup_tokenizer
from .trainer import JepaSettings, JepaTrainer

logger = logging.getLogger("llm_jepa")


# --------------------------------------------------------------------------------------
# model family and data
# --------------------------------------------------------------------------------------
def resolve_last_token(cfg: TrainConfig, family: Family) -> int | None:
    """The integer offset, or None for 'auto'."""
    if cfg.last_token == "family":
        return family.last_token
    return cfg.last_token_offset


def published_stp(cfg: TrainConfig) -> bool:
    """Whether the run reproduces the published STP script's own differences."""
    return cfg.behaviour.stp_script and cfg.script == "stp.py"


def view_options(cfg: TrainConfig, path: str, predictors: int) -> ViewOptions:
    info = dataset_for_path(path)
    if cfg.behaviour.view_fields:
        # Published: `data_file.startswith("hellaswag")`, which misses paths such as
        # datasets/hellaswag_train.jsonl.
        fields = str(path).startswith("hellaswag")
    else:
        fields = bool(info and info.view_fields)
    return ViewOptions(predictors=predictors, front_pred=cfg.front_pred, reverse_pred=cfg.reverse_pred,
                         plain=cfg.plain, train_all=cfg.train_all, use_view_fields=fields,
                         same_predictor=cfg.same_predictor, plain_views=cfg.plain_jepa,
                         plain_separator="\n" + PERCEPTION if published_stp(cfg) else PERCEPTION)


@dataclass
class Splits:
    train: list[dict]
    eval: list[dict] | None
    stats: dict


def featurize(cfg: TrainConfig, family: Family, tsetup: TokenizerSetup, offset: int | None, path: str,
              rows: list[dict], predictors: int, name: str):
    """(features, tokenization stats) of the rows of `path`, as training sees them."""
    vtok = ViewTokenizer(tsetup.tokenizer, TokenizeOptions(cfg.max_length, cfg.behaviour.labels, offset,
                                                                 cfg.behaviour.double_bos))
    renderer = ViewRenderer(tsetup.tokenizer, family, view_options(cfg, path, predictors), tsetup.template_kwargs)
    return tokenize_examples(rows, renderer, vtok, cfg.data_views, name=name, with_spans=cfg.content_spans)


def load_splits(cfg: TrainConfig, family: Family, tsetup: TokenizerSetup, offset: int | None) -> Splits:
    """Tokenized train (and eval) features."""
    def featurize_file(path: str, rows: list[dict], predictors: int, name: str):
        return featurize(cfg, family, tsetup, offset, path, rows, predictors, name)

    if cfg.data_file:
        rows = read_examples(cfg.data_file, view_options(cfg, cfg.data_file, 0).use_view_fields,
                               require_answer=True)
        train_idx, eval_idx = split_indices(len(rows), cfg.eval_split, cfg.split_seed)
        feats, stats = featurize_file(cfg.data_file, rows, cfg.predictors, "data")
        train = [feats[i] for i in train_idx]
        evals = [feats[i] for i in eval_idx] if eval_idx else None
        return Splits(train, evals, {"data": stats.__dict__})
    rows = read_examples(cfg.train_file, view_options(cfg, cfg.train_file, 0).use_view_fields,
                           require_answer=True)
    train, stats = featurize_file(cfg.train_file, rows, cfg.predictors, "train")
    out = {"train": stats.__dict__}
    evals = None
    if cfg.eval_file:
        erows = read_examples(cfg.eval_file, view_options(cfg, cfg.eval_file, 0).use_view_fields,
                                require_answer=True)
        # The published eval set was built without predictor tokens.
        evals, estats = featurize_file(cfg.eval_file, erows, 0 if cfg.behaviour.eval_predictors else cfg.predictors,
                                        "eval")
        out["eval"] = estats.__dict__
    return Splits(train, evals, out)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


# --------------------------------------------------------------------------------------
# schedule and Trainer arguments
# --------------------------------------------------------------------------------------
def view_token_ratio(feats: list[dict], additive: bool = False) -> float:
    """Tokens of the Text and Code views per token of the Full view, over a dataset.

    The additive mask cuts each view after its embedding position."""
    full = sum(len(f["input_ids"]) for f in feats)
    if feats and "text_input_ids" not in feats[0]:
        return 0.0   # an objective of the Full view alone (STP): no extra rows
    if additive:
        side = sum(f["text_at"] + f["code_at"] + 2 for f in feats)
    else:
        side = sum(len(f["text_input_ids"]) + len(f["code_input_ids"]) for f in feats)
    return side / max(full, 1)


def same_flop_factor(cfg: TrainConfig, token_ratio: float = 2.0) -> float:
    """How much one JEPA step costs relative to a regular step (--same_flop).

    Published: (1 + r) with --jepa_ratio r, else 2 for the additive mask, else 3: every view
    was padded to --max_length, so each cost as much as the Full view. Default: views are
    not padded, so a step costs 1 + p * token_ratio, with p the fraction of steps that
    compute JEPA and token_ratio the Text+Code tokens per Full token of the training data.
    """
    if cfg.behaviour.same_flop:
        if cfg.jepa_ratio > 0.0:
            return 1 + cfg.jepa_ratio
        return 2 if cfg.additive_mask else 1 if cfg.regular else 3
    if cfg.regular:
        return 1
    p = cfg.jepa_ratio if cfg.jepa_ratio > 0.0 else 1.0
    return 1 + p * token_ratio


def schedule(cfg: TrainConfig, train: list[dict], world: int) -> tuple[int, int]:
    """(save_steps, num_epochs): a checkpoint every epoch, shrunk by --same_flop."""
    save_steps = len(train) // (world * cfg.batch_size * cfg.grad_accum)
    epochs = cfg.num_epochs
    if cfg.same_flop:
        ratio = 0.0 if cfg.regular else view_token_ratio(train, cfg.additive_mask)
        factor = same_flop_factor(cfg, ratio)
        save_steps = int(save_steps / factor)
        epochs = int(math.ceil(epochs / factor))
    return max(1, save_steps), epochs


def planned_steps(cfg: TrainConfig, n_train: int, world: int, epochs: int) -> int:
    """The optimizer step this command trains to, counted as the Trainer counts it:
    --max_steps, else epochs x ceil(batches per rank / grad_accum) (incomplete batches dropped)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = (n_train // cfg.batch_size) // world
    return math.ceil(epochs * max(math.ceil(batches / cfg.grad_accum), 1))


# The share of the available memory a run may plan to fill: the estimate below leaves out the
# Python process, the data and the allocator's slack.
MEMORY_HEADROOM = 0.75


def use_gradient_checkpointing(cfg: TrainConfig, model_dir: str | None = None, feats: list[dict] | None = None) -> bool:
    """--gradient_checkpointing resolved. Given on the command line: as given. auto: on with
    the published behaviour (`--published checkpointing`) and on a CUDA GPU,
    where memory, not compute, is what runs out; on a CPU only when the estimated training
    memory of this model and data would not fit. Recomputing the forward costs about a third more compute, which a model
    that fits never needs: SmolLM2-135M on a 2-core CPU, batch 8 of synth, trained a regular
    step in 0.79x and a packed JEPA step in 0.78x the time with it off (bench/real_model.py)."""
    if cfg.gradient_checkpointing is not None:
        return cfg.gradient_checkpointing
    if cfg.behaviour.checkpointing or torch.cuda.is_available() or model_dir is None or not feats:
        return True
    shape = model_shape(model_dir)
    if shape is None:  # an architecture we cannot size: the published default
        return True
    keys = ["input_ids"] + (["text_input_ids", "code_input_ids"] if cfg.data_views else [])
    views, longest = len(keys), max(len(f[k]) for f in feats for k in keys)
    need = training_memory_bytes(shape, tokens=cfg.batch_size * views * longest,
                                 logits=cfg.batch_size * max(len(f["input_ids"]) for f in feats), lora=cfg.lora)
    have = available_memory_bytes() / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    on = need > MEMORY_HEADROOM * have
    logger.info("activation checkpointing %s (auto: training needs about %.1f GB of the %.1f GB available)",
                "on" if on else "off", need / 1e9, have / 1e9)
    return on


def model_shape(model_dir: str) -> dict | None:
    """Parameter count and the sizes the activation estimate needs, from the model's config
    (the model is built on the meta device: no memory, no weights read); None if unknown."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        return {"params": params, "hidden": config.hidden_size, "intermediate": config.intermediate_size,
                "layers": config.num_hidden_layers, "vocab": config.vocab_size}
    except Exception:  # remote code (OpenELM), other config names
        return None


def training_memory_bytes(shape: dict, tokens: int, logits: int, lora: bool = False) -> int:
    """Bytes one fp32 training process holds at its peak, without activation checkpointing:

    weights 4 B per parameter, plus gradient and AdamW's two moments (12 B) per trained one
    (LoRA: adapters only, counted as none); per token and layer 4 B x (20 hidden + 6
    intermediate) saved for backward (what autograd saved for SmolLM2-135M with sdpa:
    2.4 MB per token over 30 layers, bench/real_model.py); per logit 8 B x vocabulary (the
    logits and their log-softmax)."""
    state = shape["params"] * (4 if lora else 16)
    per_token = 4 * (20 * shape["hidden"] + 6 * shape["intermediate"]) * shape["layers"]
    return state + tokens * per_token + logits * 8 * shape["vocab"]


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fsdp_config(cfg: TrainConfig, checkpointing: bool) -> dict | None:
    """The Trainer's FSDP2 settings from --fsdp ('full_shard auto_wrap', 'shard_grad_op', 'offload').

    Decoder layers are the wrapped units (transformers takes their class from the model's
    `_no_split_modules`); FSDP checkpoints activations itself, which avoids the redundant
    all-gather of the Trainer's own checkpointing; the final save gathers a full state dict.
    """
    if not cfg.fsdp:
        return None
    words = cfg.fsdp.split()
    return {"version": 2, "reshard_after_forward": "shard_grad_op" not in words,
            "cpu_offload": "offload" in words, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "activation_checkpointing": checkpointing, "state_dict_type": "FULL_STATE_DICT"}


def training_arguments(cfg: TrainConfig, out: str, compute: str, save_steps: int, epochs: int, has_eval: bool,
                       checkpointing: bool | None = None):
    """checkpointing: activation checkpointing as resolved by `use_gradient_checkpointing`
    (None: resolved here, without the model and data, so auto means on)."""
    from transformers import TrainingArguments

    if checkpointing is None:
        checkpointing = use_gradient_checkpointing(cfg)

    on_gpu = torch.cuda.is_available()
    ckpt_kwargs = None if cfg.behaviour.checkpointing else {"use_reentrant": False}
    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=epochs,
        max_steps=cfg.max_steps,
        eval_strategy="epoch" if has_eval else "no",
        prediction_loss_only=True,
        save_strategy="steps" if cfg.save_checkpoints else "no",
        lr_scheduler_type="constant" if cfg.constant_lr else "linear",
        save_steps=save_steps,
        logging_steps=cfg.eval_steps,
        bf16=compute == "bf16",
        fp16=compute == "fp16",
        activation_checkpointing=checkpointing and not cfg.fsdp,
        activation_checkpointing_kwargs=ckpt_kwargs,
        fsdp=bool(cfg.fsdp),
        fsdp_config=fsdp_config(cfg, checkpointing),
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        ddp_backend=("nccl" if on_gpu else "gloo") if world_size() > 1 else None,
        use_cpu=not on_gpu,
        report_to="none",
        remove_unused_columns=False,
        tf32=False if on_gpu else None,
        seed=cfg.finetune_seed,
        data_seed=cfg.finetune_seed,
    )


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def main(argv=None, defaults: dict | None = None) -> int:
    cfg = parse_args(argv, defaults, check_inputs=True)
    setup_logging(cfg.debug > 0)
    setup_cpu_numerics()
    try:
        run(cfg)
    except (ConfigError, DataError, OutputDirError) as err:  # bad input: one message, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        return 2
    return 0


def run(cfg: TrainConfig) -> JepaTrainer | None:
    """Train and save; returns the trainer (its model is the trained one), or None when
    --resume_from_checkpoint finds the run already finished (nothing is loaded or written)."""
    cfg.validate(check_inputs=True)  # input files and model path, before anything loads
    # A short name (smollm2-135m-instruct) loads from its converted folder, fetched on first
    # use; cfg keeps the name as given, for run_config.json and the report's labels.
    model_dir = resolve_model_name(cfg.model_name)
    family = detect_family(model_dir)
    compute = resolve_dtype(cfg.dtype, training=not cfg.behaviour.cpu_dtype)
    if cfg.fsdp and not torch.cuda.is_available():
        logger.warning("--fsdp needs GPUs: accelerate does not shard on CPU, so this run is plain DDP")
    if cfg.curvature_sign:
        logger.warning("--curvature_sign changes nothing: a turning angle in more than 2 dimensions has no "
                       "sign (the published flag had no effect either)")
    tsetup = setup_tokenizer(model_dir, family, override=cfg.tokenizer_name and resolve_model_name(cfg.tokenizer_name),
                             date_string=cfg.date_string, published=cfg.behaviour,
                             mask_token=cfg.random_span_mask or published_stp(cfg))
    offset = resolve_last_token(cfg, family)
    logger.info("family %s, compute dtype %s, last_token %s, template date %s", family.name, compute,
                "auto" if offset is None else offset, tsetup.date_string or "today (published)")
    splits = load_splits(cfg, family, tsetup, offset)
    save_steps, epochs = schedule(cfg, splits.train, world_size())
    if cfg.same_flop:
        logger.info("--same_flop: a checkpoint every %d steps, %d epochs", save_steps, epochs)
    checkpointing = use_gradient_checkpointing(cfg, model_dir, splits.train)
    args = training_arguments(cfg, os.path.abspath(cfg.output_dir), compute, save_steps, epochs,
                              splits.eval is not None, checkpointing)
    out = Path(cfg.output_dir).resolve()
    # Every rank checks (a refusal stops them all), nobody acts before all have checked,
    # then rank 0 prepares the directory while the others wait.
    output_dir_action(out, overwrite=cfg.overwrite_output_dir, resume=bool(cfg.resume_from_checkpoint))
    if _already_finished(cfg, out, planned_steps(cfg, len(splits.train), args.world_size, epochs)):
        return None
    resume = resume_checkpoint(cfg.resume_from_checkpoint, out)
    if args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    with args.main_process_first(desc="output directory"):
        if args.process_index == 0:  # the others wait here until it is ready
            prepare_output_dir(out, overwrite=cfg.overwrite_output_dir, resume=bool(resume))
    trainer = build_trainer(cfg, family, tsetup, splits, args, compute, offset)
    if cfg.load_lp:
        load_predictor(trainer, model_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    save_final(trainer, cfg, out, tsetup)
    flops = run_flops(trainer)   # a collective: every rank takes part
    if trainer.is_world_process_zero():
        write_run_config(out, cfg, {
            "family": family.name, "compute_dtype": compute, "last_token": "auto" if offset is None else offset,
            "date_string": tsetup.date_string, "fallback_chat_template": tsetup.fallback_template,
            "layout": cfg.layout, "jepa_loss": cfg.objective,
            "new_tokens": tsetup.new_tokens, "tokenize_stats": splits.stats, "save_steps": save_steps,
            "num_epochs": epochs, "global_steps": trainer.state.global_step, "world_size": args.world_size,
            "gradient_checkpointing": checkpointing, "published": cfg.behaviour.on(),
            # this process's training (a resumed run counts the resumed part only)
            "train_seconds": round(train_seconds, 2), "train_flops": flops})
        logger.info("Training completed; model saved to %s", out)
    return trainer


def run_flops(trainer: JepaTrainer) -> float:
    """The analytic training FLOPs of the run, summed over ranks."""
    flops = torch.as_tensor(trainer.total_flops, dtype=torch.float64, device=trainer.args.device)
    if trainer.accelerator.num_processes > 1:
        flops = trainer.accelerator.reduce(flops, reduction="sum")
    return float(flops)


def load_predictor(trainer: JepaTrainer, model_dir: str) -> None:
    """--load_lp: the linear predictor a previous run saved with its model (under this
    project's name, or the published `linear_predictor.M.` one)."""
    module = getattr(causal_lm(trainer.model), MODULE_ATTR)
    inner = hasattr(module, "predictor")   # STP's module holds it; LLM-JEPA's module is it
    ours = f"{MODULE_ATTR}.predictor." if inner else f"{MODULE_ATTR}."
    prefix = load_saved_weights(module.predictor if inner else module, model_dir, (ours, "linear_predictor.M."))
    logger.info("--load_lp: linear predictor loaded from %s (%s*)", model_dir, prefix)


def _already_finished(cfg: TrainConfig, out: Path, target: int) -> bool:
    """Resuming a run that already reached the step this command trains to does nothing:
    resuming its last checkpoint would retrain steps and overwrite the final model."""
    done = finished_steps(out) if cfg.resume_from_checkpoint else None
    if done is None or done < target:
        return False
    if is_rank0():
        logger.info("--resume_from_checkpoint: %s holds a finished run (%d optimizer steps; this command "
                    "trains to step %d): nothing to do. Raise --max_steps or --num_epochs to train further.",
                    out, done, target)
    return True


class CheckpointCompleteCallback(TrainerCallback):
    """Marks each checkpoint complete once every rank has written its part, so that
    --resume_from_checkpoint last can tell it from one cut short by a kill (outputs.py)."""

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # other ranks write their RNG state (and FSDP shards)
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            write_checkpoint_marker(ckpt, state.global_step)


def make_collator(cfg: TrainConfig, pad_id: int, tokenizer_padding_side: str):
    """Dynamic padding, or packing; the published runs pad every view to --max_length.

    Default batches pad on the left: every answer then ends in the last column, and the
    model computes logits for the few final columns that hold labels (`logits_to_keep`
    selects columns shared by all rows)."""
    views = cfg.data_views
    if cfg.pack_full and not views and not cfg.behaviour.forward and not cfg.random_span_mask:
        return FullPackCollator(pad_id)
    if cfg.layout == "packed" and views:
        one_row = (cfg.attn_implementation or "").startswith("flash")  # varlen: no attention waste
        budget = cfg.packing_budget or (10 ** 9 if one_row else None)
        return PackCollator(pad_id, budget=budget)
    return PadCollator(
        pad_id=pad_id, with_views=views,  # an objective of the Full view alone needs no Text, Code
        pad_to=cfg.max_length if cfg.behaviour.forward else None,
        same_length=cfg.layout == "3pass" and views, with_positions=not cfg.behaviour.forward,
        padding_side=tokenizer_padding_side if cfg.behaviour.forward else "left")


def build_trainer(cfg, family, tsetup, splits, args, compute, offset) -> JepaTrainer:
    tok = tsetup.tokenizer
    attn = family.large_model_attn if cfg.attn_implementation == "family" else cfg.attn_implementation
    model = load_model(resolve_model_name(cfg.model_name), family, dtype=parameter_dtype(compute, cfg.behaviour.weights_dtype),
                       attn_implementation=attn, pretrain=cfg.pretrain,
                       seed=cfg.finetune_seed, vocab_size=len(tok) if tsetup.new_tokens else None,
                       exact_resize=cfg.behaviour.vocab_shrink)
    if cfg.lora:
        model = add_lora(model, family, cfg.lora_rank, cfg.behaviour.lora_targets)
    collator = make_collator(cfg, tok.pad_token_id, tok.padding_side)
    if cfg.behaviour.forward and cfg.additive_mask and tok.padding_side == "left":
        raise ValueError("the published additive mask assumes right padding, but this tokenizer pads "
                         "left; the default forward (without the published one) handles both sides")
    settings = jepa_settings(cfg, tok.pad_token_id, TORCH_DTYPES[compute], offset, tok.mask_token_id)
    callbacks = [CheckpointCompleteCallback()] + ([ProfilerFLOPCallback()] if cfg.track_flop else [])
    return JepaTrainer(model=model, args=args, train_dataset=ListDataset(splits.train),
                       eval_dataset=ListDataset(splits.eval) if splits.eval else None,
                       processing_class=tok, data_collator=collator, callbacks=callbacks, jepa=settings)


def jepa_settings(cfg: TrainConfig, pad_id: int, compute_dtype: torch.dtype, full_offset: int | None,
                  mask_id: int | None = None) -> JepaSettings:
    """The trainer's settings: the configuration's choices plus what was resolved at run time."""
    objective = get_objective(cfg.objective)
    options = objective.options(cfg) if objective.options and not cfg.regular else None
    mask = None
    if cfg.random_span_mask:
        mask = semantic_tube.MaskOptions(
            spans=semantic_tube.TubeOptions.from_config(cfg, "random_span").spans, mask_id=mask_id, pad_id=pad_id,
            recover=cfg.random_span_mask_recover, span_e2e=cfg.random_span_e2e, span_all=cfg.random_span_all,
            seed=cfg.finetune_seed)
    return JepaSettings(
        layout=cfg.layout, loss=cfg.objective, lbd=cfg.lbd, gamma=cfg.gamma, jepa_ratio=cfg.jepa_ratio,
        published_forward=cfg.behaviour.forward, max_length=cfg.max_length, pad_id=pad_id, compute_dtype=compute_dtype,
        full_offset=full_offset, seed=cfg.finetune_seed, debug_dump=cfg.debug > 0,
        objective_options=options, hidden_layer=getattr(options, "layer", -1),
        lbd_warmup=cfg.lbd_warmup, min_lbd=cfg.min_lbd, mask_views=mask,
        pooling="mean" if cfg.avg_encoding else "last")


def save_final(trainer: JepaTrainer, cfg: TrainConfig, out: Path, tsetup: TokenizerSetup) -> None:
    """The final model (LoRA merged) and tokenizer, written by rank 0, plus trainer_state.json."""
    trainer.save_state()
    if cfg.lora:
        if trainer.is_world_process_zero():
            model = merged_for_saving(trainer.accelerator.unwrap_model(trainer.model))
            model.save_pretrained(out)
    else:
        trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tsetup.tokenizer.save_pretrained(out)
    trainer.accelerator.wait_for_everyone()
