"""Tokenizer setup: the special tokens LLM-JEPA adds, the pad token, the chat template
(family template, or a documented fallback for base models) and the pinned date."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .behaviour import Published
from .errors import ConfigError
from .families import SIMPLE_CHAT_TEMPLATE, Family
from .modeling import model_path_problem

logger = logging.getLogger(__name__)

PREDICTOR_TOKENS = tuple(f"<|predictor_{i}|>" for i in range(1, 11))
# Added when missing, in this order (the order fixes their ids, hence embedding rows).
JEPA_SPECIAL_TOKENS = PREDICTOR_TOKENS + (
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|perception|>")
PERCEPTION = "<|perception|>"
PLAIN_EOT = "<|eot_id|>"
# The mask token of the published STP script, added to every tokenizer that lacks one.
MASK_TOKEN = "<|mask|>"

# The date the Llama-3 template falls back to when it has no clock; pinning it keeps
# prompts (and so results) independent of the day a run happens.
PINNED_DATE = "26 Jul 2024"


@dataclass
class TokenizerSetup:
    tokenizer: object
    new_tokens: list[str]          # tokens added here (the embeddings must grow)
    template_kwargs: dict          # extra variables for apply_chat_template
    fallback_template: bool        # True when the tokenizer had no chat template
    date_string: str | None        # the date the template stamps, or None = today (compat)


def tokenizer_source(model_name: str, family: Family, override: str | None) -> str:
    if override:
        return override
    if family.tokenizer_source and not os.path.isdir(model_name):
        return family.tokenizer_source
    return model_name


def setup_tokenizer(model_name: str, family: Family, *, override: str | None = None,
                    date_string: str | None = None, published: Published = Published(),
                    mask_token: bool = False) -> TokenizerSetup:
    """Load the tokenizer and make it ready for the three JEPA views. `published`: the
    published behaviours to reproduce (none by default). `mask_token`: also add <|mask|>
    as the mask token when the tokenizer has none (the published STP script did, for every
    run; its embedding row is added with the others)."""
    from transformers import AutoTokenizer

    source = tokenizer_source(model_name, family, override)
    flag = "--tokenizer_name" if override else "--model_name" if source == model_name else \
        f"the {family.name} family's tokenizer"
    problem = model_path_problem(source, flag, "tokenizer_config.json")
    if problem:  # before transformers, which calls a missing path a malformed repo id
        raise ConfigError(problem)
    tok = AutoTokenizer.from_pretrained(source)
    fallback = _ensure_template(tok, family, published.no_fallback_template)
    if family.bos_token:
        tok.add_special_tokens({"bos_token": family.bos_token})
    new_tokens = add_jepa_tokens(tok, published.special_tokens)
    if mask_token and tok.mask_token is None:
        tok.add_special_tokens({"mask_token": MASK_TOKEN})
        # as published, the embeddings grow only when a JEPA token was new as well
        new_tokens = new_tokens + [MASK_TOKEN] if new_tokens else new_tokens
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not published.template_date and date_string is None:
        date_string = PINNED_DATE
    kwargs = dict(family.template_kwargs) if not published.template_date else {}
    if date_string is not None:
        kwargs["date_string"] = date_string
    return TokenizerSetup(tok, new_tokens, kwargs, fallback, date_string)


def _ensure_template(tok, family: Family, stop_without_template: bool) -> bool:
    """Give the tokenizer its family template, or the fallback when it has none."""
    if family.chat_template:
        tok.chat_template = family.chat_template
        return False
    if tok.chat_template:
        return False
    if stop_without_template:
        raise ValueError(
            "the tokenizer has no chat template; the published code stops here. Use --plain, "
            "or leave out the published behaviour no_fallback_template to get the documented "
            "fallback template.")
    logger.warning("tokenizer has no chat template: using the fallback '<|role|>\\n...<eos>' template")
    tok.chat_template = SIMPLE_CHAT_TEMPLATE
    return True


def add_jepa_tokens(tok, replace_extra_special: bool = False) -> list[str]:
    """Add the predictor and header tokens that the tokenizer lacks; return them."""
    vocab = tok.get_vocab()
    new = [t for t in JEPA_SPECIAL_TOKENS if t not in vocab]
    if new:
        if replace_extra_special:   # published
            tok.add_special_tokens({"additional_special_tokens": new})
        else:
            # Keep the tokenizer's own extra special tokens (Qwen's <|im_start|> ...).
            tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return new


def special_ids(tok) -> set[int]:
    """Ids of every special token, including added ones such as <end_of_turn>."""
    ids = set(tok.all_special_ids)
    for idx, added in tok.added_tokens_decoder.items():
        if getattr(added, "special", False):
            ids.add(idx)
    return ids


def adds_special_tokens(tok, text: str, always: bool) -> bool:
    """Whether to let the tokenizer add its special tokens (BOS) to `text`.

    The published code always did, so templates that write their own BOS (Llama-3, Gemma)
    started with two; by default not when the rendered text already starts with the BOS."""
    if always:
        return True
    bos = tok.bos_token
    return not (bos and text.startswith(bos))


def encode_texts(tok, texts: list[str], always_special: bool, **kwargs) -> list[dict]:
    """Tokenize each text (batched), with `adds_special_tokens` deciding per text."""
    flags = [adds_special_tokens(tok, t, always_special) for t in texts]
    out: list[dict | None] = [None] * len(texts)
    for flag in (True, False):
        idx = [i for i, f in enumerate(flags) if f == flag]
        if not idx:
            continue
        enc = tok([texts[i] for i in idx], add_special_tokens=flag, **kwargs)
        for j, i in enumerate(idx):
            out[i] = {k: v[j] for k, v in enc.items()}
    return out
