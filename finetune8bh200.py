"""LLM-JEPA fine-tuning of models up to 8B parameters on 8 x H200: finetune.py with
large-model defaults, not a copy of it.

    torchrun --nproc_per_node=8 finetune8bh200.py --train_file ... --model_name meta-llama/Llama-3.1-8B-Instruct ...

Every flag of finetune.py works here; these defaults differ (each can be switched back,
e.g. --fsdp "" or --save_checkpoints):
  - FSDP2 full sharding with one unit per decoder layer, and FSDP's activation checkpointing;
  - no intermediate checkpoints, only the final model;
  - the family's attention kernel for large models (eager for Gemma);
  - --eval_file is used for an evaluation loss per epoch, as in finetune.py.
"""
import sys

from llm_jepa.train import main

LARGE_MODEL_DEFAULTS = {
    "fsdp": "full_shard auto_wrap",
    "gradient_checkpointing": True,
    "save_checkpoints": False,
    "attn_implementation": "family",
}

if __name__ == "__main__":
    sys.exit(main(defaults=LARGE_MODEL_DEFAULTS))
