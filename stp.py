"""Semantic Tube Prediction (arXiv 2602.22617): finetune.py with STP's flags and defaults.

    python stp.py --train_file datasets/synth_train.jsonl --model_name ... --linear random_span --lbd 0.02

Every flag of finetune.py works here, plus STP's (`--linear`, `--linear_predictor`,
`--random_span_*`, `--length_adjustment`, `--lbd_warmup` ...; see `--help` and the README
section "Semantic Tube Prediction"). What differs from finetune.py, as in the published
script: checkpoints are saved only with --enable_save (the final model always is).
"""
import sys

from llm_jepa.train import main

STP_DEFAULTS = {"save_checkpoints": False, "script": "stp.py"}


def translate(argv: list[str]) -> list[str]:
    """The published --enable_save is this project's --save_checkpoints."""
    return ["--save_checkpoints" if a == "--enable_save" else a for a in argv]


if __name__ == "__main__":
    sys.exit(main(translate(sys.argv[1:]), defaults=STP_DEFAULTS))
