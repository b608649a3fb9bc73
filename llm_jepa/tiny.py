"""Tiny models and a self-trained tokenizer, for tests, the offline demo and benchmarks.

Nothing here downloads anything: models are built from configs with random weights and
the tokenizer is trained on the text it will see.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

# A Llama-3-style template without the date line, so renders never depend on the day.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TINY_SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|pad|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts`, with a chat template.

    bos <|begin_of_text|>, eos <|eot_id|>, pad <|pad|>; byte-level, so any text encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|pad|>")
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def conversation_texts(rows: Iterable[dict]) -> Iterable[str]:
    for row in rows:
        for msg in row["messages"]:
            yield msg["content"]


TINY_SHAPES = {
    "llama": dict(model_type="llama", num_key_value_heads=2),
    # a window longer than any test sequence: the block masks then mean the same in every layer
    "gemma2": dict(model_type="gemma2", num_key_value_heads=2, head_dim=8, sliding_window=4096),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2),
    "olmo2": dict(model_type="olmo2", num_key_value_heads=2),
    "phi": dict(model_type="phi"),
}


def tiny_config(kind: str, tokenizer, hidden: int = 32, layers: int = 2, heads: int = 4, **overrides):
    """A few-thousand-parameter config of a family, sized to `tokenizer`."""
    from transformers import AutoConfig

    shape = dict(TINY_SHAPES[kind])
    model_type = shape.pop("model_type")
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=4096,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    kwargs.update(shape)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def save_tiny_model(path: str | Path, kind: str, tokenizer, seed: int = 0, **config_kwargs) -> Path:
    """Write a random-init tiny model and its tokenizer to `path` (a --model_name dir)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, tokenizer, **config_kwargs))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv=None) -> None:
    """python -m llm_jepa.tiny OUT_DIR [--kind llama] (--tokenizer DIR | --train_text FILE.jsonl)"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Write a tiny random-init model (a --model_name directory).")
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--kind", default="llama", choices=sorted(TINY_SHAPES))
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", help="an existing tokenizer directory (e.g. ../shared/tokenizers/...)")
    src.add_argument("--train_text", help="train a small BPE tokenizer on this JSONL dataset instead")
    parser.add_argument("--vocab_size", type=int, default=1000, help="vocabulary of a trained tokenizer")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        with open(args.train_text, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        tok = train_tokenizer(conversation_texts(rows), args.vocab_size)
    path = save_tiny_model(args.out, args.kind, tok, seed=args.seed, hidden=args.hidden, layers=args.layers)
    print(f"wrote a tiny {args.kind} model ({len(tok)} tokens) to {path}")


if __name__ == "__main__":
    main()
