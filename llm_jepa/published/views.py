"""The published --similarity views (`--published similarity_views`).

The published script rendered the user message and the assistant message each alone,
with a generation prompt appended, and read the final token; the default reads the views
exactly as training built them (representations.py).
"""
from __future__ import annotations


def view_sequences(cfg, tok, rows):
    """(text ids, text positions, code ids, code positions) for every row, as published."""
    def render(msgs):
        if cfg.plain:
            return msgs[0]["content"]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    texts = [render(r["messages"][1:2]) for r in rows]
    codes = [render([dict(r["messages"][2])]) for r in rows]
    enc = lambda xs: [tok(x, truncation=True, max_length=cfg.max_length)["input_ids"] for x in xs]  # noqa: E731
    t, c = enc(texts), enc(codes)
    return t, [len(x) - 1 for x in t], c, [len(x) - 1 for x in c]
