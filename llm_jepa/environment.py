"""The software and machine a result was produced with, and whether it is the tested stack.

`constraints.txt` at the repository root pins every package of the tested stack; `setup.sh`
installs exactly it. Every result this project writes (run_config.json, evaluation
summaries, the demo's table) records `stack_record()`, so that a number can be traced to
the versions, thread count and CPU kernels that produced it: any of these can change the
last digits of a float32 computation, and through training, an accuracy.
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LOCK_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"

# The packages whose versions a result depends on, shown first and in this order.
KEY_PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "safetensors", "numpy")


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def public_version(version: str) -> str:
    """Without the local label: torch's "2.13.0+cpu" is the lock's "2.13.0"."""
    return version.split("+", 1)[0]


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[normalize(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def lock_differences(pins: dict[str, str]) -> dict[str, list]:
    """{name: [installed, pinned]} for every pinned package installed at another version."""
    diffs = {}
    for name, pinned in sorted(pins.items()):
        have = installed_version(name)
        if have is None or public_version(have) != pinned:
            diffs[name] = [have, pinned]
    return diffs


def machine_record() -> dict:
    """What besides versions changes float results: threads, CPU kernels, the GPU."""
    import torch

    record = {"torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cuda": torch.version.cuda, "gpu": None}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


def stack_record(lock: Path = LOCK_FILE) -> dict:
    """Versions of the key packages, the machine, and how the install compares with the lock."""
    record = {"python": sys.version.split()[0],
              **{name: installed_version(name) for name in KEY_PACKAGES},
              **machine_record()}
    if lock.exists():
        diffs = lock_differences(read_lock(lock))
        record["lock"] = {"file": lock.name, "pinned_stack": not diffs, "differences": diffs}
    else:
        record["lock"] = None
    return record


def stack_line(record: dict) -> str:
    """One line for a human: the key versions, the threads and whether the stack is the pinned one."""
    versions = ", ".join(f"{n} {record[n]}" for n in KEY_PACKAGES if record.get(n))
    where = f"{record['torch_threads']} threads, CPU kernels {record['cpu_capability']}"
    if record.get("gpu"):
        where += f", {record['gpu']} (CUDA {record['cuda']})"
    lock = record.get("lock")
    if lock is None:
        status = "no lock file to compare with"
    elif lock["pinned_stack"]:
        status = f"the pinned stack of {lock['file']}"
    else:
        shown = [f"{n} {have} (pinned {pinned})" for n, (have, pinned) in list(lock["differences"].items())[:4]]
        more = len(lock["differences"]) - len(shown)
        status = "NOT the pinned stack: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return f"Python {record['python']}, {versions}; {where}; {status}"
