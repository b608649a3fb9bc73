"""Run by tests/test_ddp.py under torchrun: train, then record a digest of this rank's weights."""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_jepa.config import parse_args  # noqa: E402
from llm_jepa.train import run, setup_logging  # noqa: E402

cfg = parse_args(sys.argv[1:])
setup_logging(False)
trainer = run(cfg)
digest = hashlib.sha256()
for _, p in sorted(trainer.accelerator.unwrap_model(trainer.model).named_parameters()):
    digest.update(p.detach().cpu().contiguous().numpy().tobytes())
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
rank = int(os.environ["RANK"])
out = Path(cfg.output_dir).parent / f"rank{rank}.json"
out.write_text(json.dumps({"digest": digest.hexdigest(), "losses": losses,
                           "world": torch.distributed.get_world_size()}))
