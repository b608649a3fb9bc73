"""Seeded permutations and splits, drawn exactly as the Hugging Face `datasets` library draws
them, so that a split made here equals `Dataset.shuffle(seed)` / `train_test_split(seed)`.

Shared by training (--data_file, --eval_split), evaluation (its published split) and the
dataset preparation; it needs nothing but numpy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

SEED = 42   # the published splits that could be checked use 42


def permutation(n: int, seed: int = SEED) -> list[int]:
    """The permutation behind `Dataset.shuffle(seed)` and `Dataset.train_test_split(seed)`."""
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist()


def seeded_subset(rows: Sequence, n: int, seed: int = SEED) -> list:
    """`Dataset.shuffle(seed=seed).select(range(n))`: n rows in shuffled order."""
    return [rows[i] for i in permutation(len(rows), seed)[:n]]


def split_like_hf(rows: Sequence, test_fraction: float, seed: int = SEED) -> tuple[list, list]:
    """`Dataset.train_test_split(test_size=test_fraction, seed=seed)`: the test rows are
    the first ceil(fraction * n) of the permutation, the train rows the rest, both in
    permutation order. The published NL-RX and Spider files are exactly this split."""
    order = permutation(len(rows), seed)
    n_test = math.ceil(test_fraction * len(rows))
    return [rows[i] for i in order[n_test:]], [rows[i] for i in order[:n_test]]


def split_indices(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """The published split of n rows into (train, test) indices; test_size 0: no test rows."""
    if test_size <= 0:
        return list(range(n)), []
    return split_like_hf(list(range(n)), test_size, seed)
