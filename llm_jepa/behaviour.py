"""The published training code's behaviours, one named switch per difference.

By default every switch is off: the project's corrected behaviour. `--paper_compat` turns
them all on (the published numerics, bit for bit); `--published a,b` turns on only the
named ones, so that one published choice can be studied alone (the published labels with
our padding, say). The resolved set is recorded in run_config.json.

Training and evaluation ask these switches, never `--paper_compat` itself. The published
algorithms that the default path does not share live in `llm_jepa/published/`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Published:
    """True: as the published code did. Each field's comment says what it did and why the
    default differs."""
    # LM labels on every token that is not the pad token (the prompt included; with pad =
    # eos, never the end of turn). Default: the answer and its end-of-turn token only.
    labels: bool = False
    # The tokenizer adds BOS to texts whose template already starts with one: two BOS.
    # Default: no second BOS.
    double_bos: bool = False
    # The chat template stamps today's date and uses no family template variables, so
    # a rerun on another day tokenizes differently. Default: a pinned date.
    template_date: bool = False
    # A tokenizer without a chat template stops the run. Default: a documented fallback.
    no_fallback_template: bool = False
    # Adding the JEPA tokens replaces the tokenizer's own extra special tokens (Qwen's
    # <|im_start|> ...). Default: they are kept.
    special_tokens: bool = False
    # Weights and the AdamW update held in the compute dtype (bf16). Default: fp32
    # weights under bf16 autocast (mixed precision).
    weights_dtype: bool = False
    # `--dtype auto` is fp32 on every CPU. Default: bf16 autocast on CPUs with native bf16.
    cpu_dtype: bool = False
    # The published batch and forward: every view padded to --max_length on the
    # tokenizer's side, no position ids, the 3-pass layout, every layer's hidden states,
    # the Trainer's own loss scaling over accumulation steps and its JEPA-dropout draw.
    # Default: dynamic padding or packing, one hook for the last hidden state, the LM
    # loss averaged over the accumulated batch.
    forward: bool = False
    # The --eval_file set is built without predictor tokens. Default: as the train set.
    eval_predictors: bool = False
    # The embeddings are resized to exactly the tokenizer's size, shrinking a padded
    # vocabulary (Qwen's). Default: they only grow.
    vocab_shrink: bool = False
    # One LoRA projection list for every family. Default: the family table's list.
    lora_targets: bool = False
    # HellaSwag's view fields are used when the path starts with "hellaswag" (so never
    # for datasets/hellaswag_train.jsonl). Default: the dataset registry decides.
    view_fields: bool = False
    # --same_flop counts a JEPA step as (1 + r), 2 or 3 regular steps, as if every view
    # were padded to --max_length. Default: the measured token ratio.
    same_flop: bool = False
    # Activation checkpointing on unless disabled, with reentrant recomputation.
    # Default: on only where memory requires it, non-reentrant.
    checkpointing: bool = False
    # --last_token defaults to -1 (the view's last token, whatever it is). Default: auto.
    last_token: bool = False
    # stp.py only (--script stp.py): <|mask|> is added to every tokenizer (one more embedding
    # row, so even its regular runs differ from finetune.py's), and --plain joins user and
    # answer with "\n<|perception|>". Default: no mask token unless a mode uses it; no newline.
    stp_script: bool = False

    # --- evaluation (the tokenizer switches above apply to it too) ------------------------
    # A prompt longer than --max_length loses its end, the generation prompt included.
    # Default: it loses its start, so the model is still asked to answer.
    prompt_truncation: bool = False
    # One prompt at a time through `generate` (--eval_batch_size defaults to 1). Default:
    # batches of --eval_batch_size prompts, left-padded, longest first.
    one_at_a_time: bool = False
    # Generation stops at eos only: templates that end a turn with another token (Llama's
    # <|eot_id|>) run on to --max_new_tokens. Default: eos or the end-of-turn token.
    eos_stop: bool = False
    # Accuracy is one string comparison per dataset chosen by the input file's name (SQL
    # run only for names starting with "spider"). Default: the dataset's community metric.
    scorers: bool = False
    # HellaSwag prompts are cut to --max_new_tokens tokens and only the letter is scored.
    # Default: the whole prompt, and lm-eval's acc / acc_norm beside the letter.
    hellaswag_letter: bool = False
    # --similarity renders each message alone with a generation prompt and reads its final
    # token. Default: the views exactly as training built them.
    similarity_views: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def resolve(cls, paper_compat: bool, published: str) -> Published:
        """All switches with --paper_compat, else the comma-separated names in `published`."""
        if paper_compat:
            return cls(**{name: True for name in cls.names()})
        return cls(**{name: True for name in split_names(published)})

    @classmethod
    def evaluation_names(cls) -> tuple[str, ...]:
        """The switches evaluation asks (training ignores the evaluation-only ones)."""
        return TOKENIZER + cls.names()[cls.names().index("prompt_truncation"):]

    @classmethod
    def everything(cls) -> Published:
        """Every switch on: the published code as it was (--paper_compat)."""
        return cls.resolve(True, "")

    def on(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]


# The switches of the tokenizer set-up, shared by training and evaluation.
TOKENIZER = ("double_bos", "template_date", "no_fallback_template", "special_tokens")


def split_names(published: str) -> list[str]:
    return [name.strip() for name in published.split(",") if name.strip()]


def unknown_names(published: str) -> list[str]:
    return [name for name in split_names(published) if name not in Published.names()]
