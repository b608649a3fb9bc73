"""The model-family table: the one place that knows how each family differs.

Everything family-specific lives in a `Family` row: template quirks, the published
`last_token` offsets from run.sh, the LoRA target modules, and the attention kernel the
large-model script needs. Code elsewhere asks `family_for(...)` instead of testing
model names with `in`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The published projection list, used for every family with `--published lora_targets`.
PUBLISHED_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# A minimal role-tagged template: "<|role|>\n" + content + eos + "\n" per message and
# "<|assistant|>\n" as the generation prompt. It is the template the published code sets
# for OpenELM (rendered output is byte-identical), and our documented fallback for
# tokenizers that have no chat template (base models such as phi-1_5).
SIMPLE_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]          # config.model_type values of this family
    name_hints: tuple[str, ...]           # lower-case substrings of a model name
    last_token: int                       # the published run.sh offset
    lora_targets: tuple[str, ...] | str = PUBLISHED_LORA_TARGETS
    system_role: bool = True              # False: system text is merged into the user turn
    code_view_role: str = "assistant"     # role the Code view is rendered with
    tokenizer_source: str | None = None   # load the tokenizer from here (OpenELM)
    chat_template: str | None = None      # template the family always uses
    bos_token: str | None = None          # bos the family adds to its tokenizer (phi)
    template_kwargs: dict = field(default_factory=dict)
    large_model_attn: str | None = None   # attention kernel for finetune8bh200.py

    def __hash__(self) -> int:
        return hash(self.name)


FAMILIES: tuple[Family, ...] = (
    # DeepSeek-R1-Distill-Qwen shares Qwen2's model_type; only its name tells it apart,
    # so it comes first. Name hints are tried in this order, most specific first
    # ("llama-2-openelm" is OpenELM, not Llama).
    Family("r1-distill", model_types=(), name_hints=("r1-distill",), last_token=-1),
    Family("openelm", ("openelm",), ("openelm",), last_token=-4,
           lora_targets=("qkv_proj", "out_proj", "proj_1", "proj_2"),
           tokenizer_source="meta-llama/Llama-2-7b-chat-hf", chat_template=SIMPLE_CHAT_TEMPLATE),
    Family("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text"), ("gemma",), last_token=-2,
           system_role=False, code_view_role="user", large_model_attn="eager"),
    Family("olmo2", ("olmo2", "olmo"), ("olmo",), last_token=-1),
    Family("qwen", ("qwen2", "qwen3"), ("qwen",), last_token=-3,
           template_kwargs={"enable_thinking": False}),
    Family("phi", ("phi",), ("phi-1", "phi-2", "phi_1", "phi_2"), last_token=-1,
           lora_targets=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
           bos_token="<|startoftext|>"),
    Family("llama", ("llama",), ("llama",), last_token=-2),
)

# Anything else: LoRA on every linear layer, offset -1, no quirks.
GENERIC = Family("generic", (), (), last_token=-1, lora_targets="all-linear")


def family_for(model_name: str, model_type: str | None = None) -> Family:
    """The family of a model, from its name and (when known) its config.model_type."""
    name = model_name.lower()
    for fam in FAMILIES:
        if not fam.model_types and any(h in name for h in fam.name_hints):
            return fam
    if model_type:
        for fam in FAMILIES:
            if model_type in fam.model_types:
                return fam
    for fam in FAMILIES:
        if any(h in name for h in fam.name_hints):
            return fam
    return GENERIC


def family_by_name(name: str) -> Family:
    for fam in FAMILIES + (GENERIC,):
        if fam.name == name:
            return fam
    raise KeyError(f"unknown family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def detect_family(model_name: str) -> Family:
    """The family of a model folder or hub id: its config's model_type where it can be read,
    else the name alone (remote-code configs such as OpenELM's, or no network)."""
    model_type = None
    try:
        from transformers import AutoConfig
        model_type = AutoConfig.from_pretrained(model_name).model_type
    except Exception:
        pass
    return family_for(model_name, model_type)
