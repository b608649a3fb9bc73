"""The fine-tuning pipeline behind finetune.py, top to bottom:

config -> family -> tokenizer -> examples and views -> Trainer arguments -> output dir
-> model (+ LoRA) -> JepaTrainer -> train -> save (LoRA merged) -> run_config.json
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as D
from .collate import PackCollator, PadCollator
from .config import TrainConfig, parse_args
from .datasets import dataset_for_path
from .families import Family, family_for
from .flops import ProfilerFLOPCallback
from .losses import jepa_loss_name
from .modeling import TORCH_DTYPES, add_lora, load_model, merged_for_saving, parameter_dtype, resolve_dtype
from .outputs import output_dir_action, prepare_output_dir, write_run_config
from .tokenization import TokenizerSetup, setup_tokenizer
from .trainer import JepaSettings, JepaTrainer

logger = logging.getLogger("llm_jepa")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup_cpu_numerics() -> None:
    """Flush denormal floats to zero on CPU. Tiny values (e.g. a JEPA loss near 0 and its
    gradients) otherwise take the CPU's slow path: a demo run slowed down 30x midway."""
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)


def setup_logging(debug: bool) -> None:
    """INFO (DEBUG with --debug) on rank 0, warnings only elsewhere; messages on stdout."""
    level = (logging.DEBUG if debug else logging.INFO) if is_rank0() else logging.WARNING
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("llm_jepa")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    import transformers
    transformers.logging.set_verbosity_warning() if is_rank0() else transformers.logging.set_verbosity_error()


# --------------------------------------------------------------------------------------
# model family and data
# --------------------------------------------------------------------------------------
def detect_family(model_name: str) -> Family:
    model_type = None
    try:
        from transformers import AutoConfig
        model_type = AutoConfig.from_pretrained(model_name).model_type
    except Exception:  # remote-code configs (OpenELM) or no network: the name decides
        pass
    return family_for(model_name, model_type)


def resolve_last_token(cfg: TrainConfig, family: Family) -> int | None:
    """The integer offset, or None for 'auto'."""
    if cfg.last_token == "family":
        return family.last_token
    return cfg.last_token_offset


def view_options(cfg: TrainConfig, path: str, predictors: int) -> D.ViewOptions:
    info = dataset_for_path(path)
    if cfg.paper_compat:
        # Published: `data_file.startswith("hellaswag")`, which misses paths such as
        # datasets/hellaswag_train.jsonl.
        fields = str(path).startswith("hellaswag")
    else:
        fields = bool(info and info.view_fields)
    return D.ViewOptions(predictors=predictors, front_pred=cfg.front_pred, reverse_pred=cfg.reverse_pred,
                         plain=cfg.plain, train_all=cfg.train_all, use_view_fields=fields)


@dataclass
class Splits:
    train: list[dict]
    eval: list[dict] | None
    stats: dict


def load_splits(cfg: TrainConfig, family: Family, tsetup: TokenizerSetup, offset: int | None) -> Splits:
    """Tokenized train (and eval) features."""
    vtok = D.ViewTokenizer(tsetup.tokenizer, D.TokenizeOptions(cfg.max_length, cfg.paper_compat, offset))
    with_views = not cfg.regular

    def featurize(path: str, rows: list[dict], predictors: int, name: str):
        opts = view_options(cfg, path, predictors)
        renderer = D.ViewRenderer(tsetup.tokenizer, family, opts, tsetup.template_kwargs)
        return D.tokenize_examples(rows, renderer, vtok, with_views, name=name)

    if cfg.data_file:
        rows = D.read_examples(cfg.data_file, view_options(cfg, cfg.data_file, 0).use_view_fields)
        train_idx, eval_idx = split_indices(len(rows), cfg.eval_split, cfg.split_seed)
        feats, stats = featurize(cfg.data_file, rows, cfg.predictors, "data")
        train = [feats[i] for i in train_idx]
        evals = [feats[i] for i in eval_idx] if eval_idx else None
        return Splits(train, evals, {"data": stats.__dict__})
    rows = D.read_examples(cfg.train_file, view_options(cfg, cfg.train_file, 0).use_view_fields)
    train, stats = featurize(cfg.train_file, rows, cfg.predictors, "train")
    out = {"train": stats.__dict__}
    evals = None
    if cfg.eval_file:
        erows = D.read_examples(cfg.eval_file, view_options(cfg, cfg.eval_file, 0).use_view_fields)
        # The published eval set was built without predictor tokens.
        evals, estats = featurize(cfg.eval_file, erows, 0 if cfg.paper_compat else cfg.predictors, "eval")
        out["eval"] = estats.__dict__
    return Splits(train, evals, out)


def split_indices(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """The published split: datasets' train_test_split(test_size, seed, shuffle=True)."""
    if test_size <= 0:
        return list(range(n)), []
    from .datasets.prepare import split_like_hf

    return split_like_hf(list(range(n)), test_size, seed)


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
    if additive:
        side = sum(f["text_emb"] + f["code_emb"] + 2 for f in feats)
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
    if cfg.paper_compat:
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


def fsdp_config(cfg: TrainConfig) -> dict | None:
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
            "activation_checkpointing": cfg.gradient_checkpointing, "state_dict_type": "FULL_STATE_DICT"}


def training_arguments(cfg: TrainConfig, out: str, compute: str, save_steps: int, epochs: int, has_eval: bool):
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    ckpt_kwargs = None if cfg.paper_compat else {"use_reentrant": False}
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
        save_steps=save_steps,
        logging_steps=cfg.eval_steps,
        bf16=compute == "bf16",
        fp16=compute == "fp16",
        activation_checkpointing=cfg.gradient_checkpointing and not cfg.fsdp,
        activation_checkpointing_kwargs=ckpt_kwargs,
        fsdp=bool(cfg.fsdp),
        fsdp_config=fsdp_config(cfg),
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
    cfg = parse_args(argv, defaults)
    setup_logging(cfg.debug > 0)
    setup_cpu_numerics()
    run(cfg)
    return 0


def run(cfg: TrainConfig) -> JepaTrainer:
    """Train and save; returns the trainer (its model is the trained one)."""
    family = detect_family(cfg.model_name)
    compute = resolve_dtype(cfg.dtype)
    if cfg.fsdp and not torch.cuda.is_available():
        logger.warning("--fsdp needs GPUs: accelerate does not shard on CPU, so this run is plain DDP")
    tsetup = setup_tokenizer(cfg.model_name, family, override=cfg.tokenizer_name,
                             paper_compat=cfg.paper_compat, date_string=cfg.date_string)
    offset = resolve_last_token(cfg, family)
    logger.info("family %s, compute dtype %s, last_token %s, template date %s", family.name, compute,
                "auto" if offset is None else offset, tsetup.date_string or "today (published)")
    splits = load_splits(cfg, family, tsetup, offset)
    save_steps, epochs = schedule(cfg, splits.train, world_size())
    if cfg.same_flop:
        logger.info("--same_flop: a checkpoint every %d steps, %d epochs", save_steps, epochs)
    args = training_arguments(cfg, os.path.abspath(cfg.output_dir), compute, save_steps, epochs,
                              splits.eval is not None)
    resume = _resume_path(cfg)
    out = Path(cfg.output_dir).resolve()
    # Every rank checks (a refusal stops them all), nobody acts before all have checked,
    # then rank 0 prepares the directory while the others wait.
    output_dir_action(out, overwrite=cfg.overwrite_output_dir, resume=bool(resume))
    if args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    with args.main_process_first(desc="output directory"):
        if args.process_index == 0:  # the others wait here until it is ready
            prepare_output_dir(out, overwrite=cfg.overwrite_output_dir, resume=bool(resume))
    trainer = build_trainer(cfg, family, tsetup, splits, args, compute, offset)
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, out, tsetup)
    if trainer.is_world_process_zero():
        write_run_config(out, cfg, {
            "family": family.name, "compute_dtype": compute, "last_token": "auto" if offset is None else offset,
            "date_string": tsetup.date_string, "fallback_chat_template": tsetup.fallback_template,
            "layout": cfg.layout, "jepa_loss": jepa_loss_name(cfg.jepa_l2, cfg.jepa_mse, cfg.infonce),
            "new_tokens": tsetup.new_tokens, "tokenize_stats": splits.stats, "save_steps": save_steps,
            "num_epochs": epochs, "global_steps": trainer.state.global_step, "world_size": args.world_size})
        logger.info("Training completed; model saved to %s", out)
    return trainer


def _resume_path(cfg: TrainConfig) -> str | bool | None:
    if not cfg.resume_from_checkpoint:
        return None
    return True if cfg.resume_from_checkpoint == "last" else cfg.resume_from_checkpoint


def make_collator(cfg: TrainConfig, pad_id: int, tokenizer_padding_side: str):
    """Dynamic padding, or packing; the published runs pad every view to --max_length.

    Default batches pad on the left: every answer then ends in the last column, and the
    model computes logits for the few final columns that hold labels (`logits_to_keep`
    selects columns shared by all rows)."""
    if cfg.layout == "packed":
        one_row = (cfg.attn_implementation or "").startswith("flash")  # varlen: no attention waste
        budget = cfg.packing_budget or (10 ** 9 if one_row else None)
        return PackCollator(pad_id, budget=budget)
    return PadCollator(
        pad_id=pad_id, with_views=not cfg.regular,
        pad_to=cfg.max_length if cfg.paper_compat else None,
        same_length=cfg.layout == "3pass", with_positions=not cfg.paper_compat,
        padding_side=tokenizer_padding_side if cfg.paper_compat else "left")


def build_trainer(cfg, family, tsetup, splits, args, compute, offset) -> JepaTrainer:
    tok = tsetup.tokenizer
    attn = family.large_model_attn if cfg.attn_implementation == "family" else cfg.attn_implementation
    model = load_model(cfg.model_name, family, dtype=parameter_dtype(compute, cfg.paper_compat),
                       attn_implementation=attn, pretrain=cfg.pretrain,
                       seed=cfg.finetune_seed, vocab_size=len(tok) if tsetup.new_tokens else None,
                       exact_resize=cfg.paper_compat)
    if cfg.lora:
        model = add_lora(model, family, cfg.lora_rank, cfg.paper_compat)
    collator = make_collator(cfg, tok.pad_token_id, tok.padding_side)
    if cfg.paper_compat and cfg.additive_mask and tok.padding_side == "left":
        raise ValueError("the published additive mask assumes right padding, but this tokenizer pads "
                         "left; drop --paper_compat (the default additive mask handles both)")
    settings = JepaSettings(
        layout=cfg.layout, loss=jepa_loss_name(cfg.jepa_l2, cfg.jepa_mse, cfg.infonce), lbd=cfg.lbd,
        gamma=cfg.gamma, jepa_ratio=cfg.jepa_ratio, paper_compat=cfg.paper_compat, max_length=cfg.max_length,
        pad_id=tok.pad_token_id, compute_dtype=TORCH_DTYPES[compute], full_offset=offset,
        seed=cfg.finetune_seed, debug_dump=cfg.debug > 0)
    callbacks = [ProfilerFLOPCallback()] if cfg.track_flop else []
    return JepaTrainer(model=model, args=args, train_dataset=ListDataset(splits.train),
                       eval_dataset=ListDataset(splits.eval) if splits.eval else None,
                       processing_class=tok, data_collator=collator, callbacks=callbacks, jepa=settings)


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
