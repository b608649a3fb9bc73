"""LLM-JEPA evaluation: `python evaluate.py --model_name DIR --input_file FILE ...` scores a
model; `python evaluate.py report RUN_DIRS...` prints paper-style accuracy tables.
See README.md, or `python evaluate.py --help`."""
import sys

from llm_jepa.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
