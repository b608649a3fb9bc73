"""Evaluation throughput: batched greedy generation against one prompt at a time.

    python bench/eval.py                       # 200 synth_test prompts, batch 32, CPU

Both run the same random-init Llama-shaped model, with a tokenizer trained on synth's
training text, on the same prompts, and generate the same number of tokens (random
weights never end their turn early): one at a time is the published evaluate.py's loop
(`published.generation.generate_one`), batched is `generation.GreedyGenerator` (prompts sorted
by length and left-padded). The two are interleaved batch by batch (a batch generated
batched, then the same prompts one at a time), so that a change in machine load hits
both. Prints examples per second of each, their ratio, and whether the batched outputs
equal the one-at-a-time outputs token for token.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_jepa.data import read_examples  # noqa: E402
from llm_jepa.families import family_by_name  # noqa: E402
from llm_jepa.behaviour import Published  # noqa: E402
from llm_jepa.generation import GreedyGenerator, encode_prompts, prompt_text  # noqa: E402
from llm_jepa.published.generation import generate_one  # noqa: E402
from llm_jepa.tiny import conversation_texts, tiny_config, train_tokenizer  # noqa: E402

MODELS = {"tiny": dict(hidden=64, layers=2, heads=4), "small": dict(hidden=256, layers=4, heads=4)}


def setup(args):
    from transformers import AutoModelForCausalLM

    data = Path(args.data)
    train = read_examples(data / "synth_train.jsonl")[:4000]
    tok = train_tokenizer(conversation_texts(train), vocab_size=4096)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", tok, **MODELS[args.model])).eval()
    rows = read_examples(data / "synth_test.jsonl")[: args.examples]
    family = family_by_name("llama")
    prompts = [prompt_text(tok, r, family, plain=False, template_kwargs={}) for r in rows]
    return model, tok, prompts


def interleaved(model, tok, prompts, new_tokens, batch_size):
    """(one-at-a-time outputs, seconds, batched outputs, seconds), batch by batch."""
    ids = encode_prompts(tok, prompts, 512, False, Published.everything())  # what generate_one sees
    gen = GreedyGenerator(model, tok, [tok.eos_token_id], batch_size=batch_size, max_new_tokens=new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    single, batched = [None] * len(prompts), [None] * len(prompts)
    single_s = batch_s = 0.0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        t0 = time.perf_counter()
        for i, out in zip(chunk, gen([ids[i] for i in chunk], progress=False)):
            batched[i] = out
        t1 = time.perf_counter()
        for i in chunk:
            single[i] = generate_one(model, tok, prompts[i], 512, new_tokens)
        single_s, batch_s = single_s + time.perf_counter() - t1, batch_s + t1 - t0
    return single, single_s, batched, batch_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--model", default="tiny", choices=sorted(MODELS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    args = p.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.set_flush_denormal(True)  # as the training entry points do on CPU
    model, tok, prompts = setup(args)
    interleaved(model, tok, prompts[:4], 2, 4)  # warm-up
    single_out, single_s, batch_out, batch_s = interleaved(model, tok, prompts, args.new_tokens, args.batch_size)
    same = sum(a.text == b.text for a, b in zip(single_out, batch_out))
    n = len(prompts)
    print(f"# CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; model {args.model} ({MODELS[args.model]}); {n} synth_test prompts; "
          f"{args.new_tokens} new tokens each\n")
    print("| mode | seconds | examples/s |")
    print("|---|---|---|")
    print(f"| one at a time (published) | {single_s:.1f} | {n / single_s:.1f} |")
    print(f"| batched, batch {args.batch_size} | {batch_s:.1f} | {n / batch_s:.1f} |")
    print(f"\nspeed-up: {single_s / batch_s:.1f}x (target >= 20x); identical outputs: {same}/{n}")


if __name__ == "__main__":
    main()
