"""The dataset registry: one row per dataset the paper uses.

A dataset is recognised by `--dataset` or by the basename of its file
(`datasets/gsm8k_test.jsonl` -> gsm8k); code asks the registry instead of testing names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    system_prompt: str
    metric: str                  # key of the metric registry (evaluation)
    view_fields: bool = False    # Text/Code views come from the row's 'text'/'code' fields
    has_test: bool = True


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("synth", "Convert natural language to regular expression.", "regex"),
    DatasetInfo("turk", "Convert natural language to regular expression.", "regex"),
    DatasetInfo("gsm8k", "Answer the math question, show steps.", "gsm8k"),
    DatasetInfo("spider", "Convert natural language to SQL.", "spider"),
    DatasetInfo("nq_open", "Answer the question below.", "nq_open"),
    DatasetInfo("hellaswag", "Which one of A), B), C), or D) is the best ending for the context? "
                             "Answer A, B, C, or D.", "hellaswag", view_fields=True),
    DatasetInfo("rotten_tomatoes", "Determine whether the comment is positive or negative", "label"),
    DatasetInfo("yelp", "Determine whether the comment is positive or negative", "label"),
    DatasetInfo("paraphrase", "Paraphrase the text.", "exact", has_test=False),
)}


def dataset_for_path(path: str | Path) -> DatasetInfo | None:
    """The registered dataset a file belongs to, by the longest matching basename prefix."""
    base = Path(path).name
    for name in sorted(DATASETS, key=len, reverse=True):
        if base == name or base.startswith(name + "_") or base.startswith(name + "."):
            return DATASETS[name]
    return None


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def resolve_dataset(dataset: str | None, input_file: str | None) -> DatasetInfo:
    """`--dataset` when given, else the dataset named by the input file's basename."""
    known = ", ".join(sorted(DATASETS))
    if dataset:
        if dataset not in DATASETS:
            raise ValueError(f"unknown --dataset {dataset!r}; known: {known}")
        return DATASETS[dataset]
    info = dataset_for_path(input_file) if input_file else None
    if info is None:
        raise ValueError(f"cannot tell the dataset of {input_file!r} from its name; "
                         f"pass --dataset, one of: {known}")
    return info
