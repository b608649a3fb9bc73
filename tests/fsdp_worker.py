"""Run by tests/test_fsdp.py under torchrun (2 CPU processes, gloo).

Accelerate shards with FSDP only on GPUs, so this applies torch's FSDP2 `fully_shard` the
way finetune8bh200.py's configuration does (one unit per decoder layer, then the root) and
checks that JepaTrainer.compute_loss gives the same losses and trains under it.
"""
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_jepa import train as T  # noqa: E402
from llm_jepa.config import parse_args  # noqa: E402

out_dir = Path(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
results = {}
for layout, extra in (("packed", []), ("3pass", ["--no-packing"]), ("additive", ["--additive_mask"])):
    cfg = parse_args(sys.argv[2:] + extra + ["--output_dir", str(out_dir / f"{layout}-{rank}")])
    family = T.detect_family(cfg.model_name)
    setup = T.setup_tokenizer(cfg.model_name, family)
    splits = T.load_splits(cfg, family, setup, None)
    args = T.training_arguments(cfg, cfg.output_dir, "fp32", 10, 1, False)
    trainer = T.build_trainer(cfg, family, setup, splits, args, "fp32", None)
    trainer.current_gradient_accumulation_steps = 1
    batch = T.make_collator(cfg, setup.tokenizer.pad_token_id, "right")(splits.train[2 * rank: 2 * rank + 2])
    model = trainer.model.train()
    plain = float(trainer.compute_loss(model, batch).detach())
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:
            fully_shard(module)
    fully_shard(model)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = sum(p.grad is not None for p in model.parameters())
    results[layout] = {"plain": plain, "sharded": float(loss.detach()), "grads": grads,
                       "params": len(list(model.parameters())), "type": type(model).__name__}
(out_dir / f"rank{rank}.json").write_text(json.dumps(results))
dist.barrier()
dist.destroy_process_group()
# The results are written: leave without the interpreter's teardown. With torch 2.13 on
# CPU, a thread a gloo process group leaves behind is sometimes destroyed while still
# joinable at exit ("terminate called without an active exception", SIGABRT), about one
# run in three, after the work is done and whatever the worker computed.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
