"""LLM-JEPA fine-tuning (arXiv 2509.14252). See README.md, or `python finetune.py --help`."""
import sys

from llm_jepa.train import main

if __name__ == "__main__":
    sys.exit(main())
