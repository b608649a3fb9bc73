"""finetune8bh200.py: its FSDP configuration, and JEPA losses under FSDP2 (CPU, gloo)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, assert_same_up_to_rounding as same
from llm_jepa import train as T
from llm_jepa.config import parse_args


def large_defaults() -> dict:
    spec = importlib.util.spec_from_file_location("finetune8bh200", ROOT / "finetune8bh200.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LARGE_MODEL_DEFAULTS


def test_large_model_defaults_build_fsdp2(tmp_path, tiny_llama):
    from accelerate import FullyShardedDataParallelPlugin
    from transformers import AutoModelForCausalLM

    cfg = parse_args(["--train_file", "x", "--model_name", str(tiny_llama), "--output_dir", str(tmp_path)],
                     defaults=large_defaults())
    assert cfg.fsdp == "full_shard auto_wrap" and not cfg.save_checkpoints and cfg.gradient_checkpointing
    args = T.training_arguments(cfg, str(tmp_path), "bf16", 10, 1, has_eval=True)
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert args.fsdp_plugin_args["reshard_after_forward"] is True  # full shard
    assert not args.activation_checkpointing  # FSDP's own checkpointing instead
    assert args.save_strategy == "no" and args.eval_strategy == "epoch"
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    plugin.set_auto_wrap_policy(AutoModelForCausalLM.from_pretrained(tiny_llama))
    assert {c.__name__ for c in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]} == {"LlamaDecoderLayer"}
    # every default can be switched back off
    off = parse_args(["--train_file", "x", "--fsdp", "", "--save_checkpoints"], defaults=large_defaults())
    assert off.fsdp == "" and off.save_checkpoints


def test_large_models_use_the_family_attention(tmp_path, tiny_tokenizer):
    from llm_jepa.tiny import save_tiny_model

    gemma = save_tiny_model(tmp_path / "tiny-gemma2", "gemma2", tiny_tokenizer, hidden=16)
    data = tmp_path / "synth_train.jsonl"
    from conftest import synthetic_rows, write_jsonl

    write_jsonl(data, synthetic_rows(8))
    cfg = parse_args(["--train_file", str(data), "--model_name", str(gemma), "--output_dir", str(tmp_path / "o"),
                      "--fsdp", "", "--dtype", "fp32", "--max_steps", "1", "--batch_size", "2", "--grad_accum", "1"],
                     defaults=large_defaults())
    trainer = T.run(cfg)
    assert trainer.model.config._attn_implementation == "eager"
    assert not list((tmp_path / "o").glob("checkpoint-*"))  # no intermediate checkpoints


def test_lora_and_fsdp_are_refused():
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "x", "--lora", "--fsdp", "full_shard auto_wrap"])


def test_jepa_losses_under_fsdp2_on_cpu(tmp_path, train_file, tiny_llama):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path),
           "--train_file", str(train_file), "--model_name", str(tiny_llama), "--dtype", "fp32",
           "--max_length", "128", "--predictors", "1", "--batch_size", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for layout, r in results.items():
            assert r["type"].startswith("FSDP"), layout
            same(r["sharded"], r["plain"], what=f"{layout} loss under FSDP2")
            assert r["grads"] == r["params"], layout  # every parameter got a gradient
    assert torch.distributed.is_available()
