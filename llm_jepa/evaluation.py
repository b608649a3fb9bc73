"""The evaluation pipeline behind evaluate.py, top to bottom:

config -> examples (split as published unless --nosplit_data) -> generations (batched
greedy decoding, or HellaSwag's letter and ending log-likelihoods, or --predictions) ->
scores (the dataset's metric from the registry; the published scoring under
--paper_compat) -> per-example JSONL + summary JSON -> `Success Rate: <model>, <accuracy>`.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data as D
from .config import EvalConfig, parse_eval_args
from .datasets import DatasetInfo, resolve_dataset
from .families import Family, family_for

logger = logging.getLogger("llm_jepa")


@dataclass
class Example:
    index: int                      # position in the input file
    row: dict
    generation: str = ""
    seconds: float = 0.0
    aux: dict = field(default_factory=dict)   # e.g. HellaSwag ending log-likelihoods


# --------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------
def load_examples(cfg: EvalConfig, info: DatasetInfo) -> list[Example]:
    if cfg.predictions:
        return _saved_predictions(cfg.predictions, cfg.max_examples)
    rows = D.read_examples(cfg.input_file, needs_view_fields=False)
    indices = list(range(len(rows)))
    if not cfg.nosplit_data:
        indices = _published_split(cfg, rows)
    if cfg.max_examples:
        indices = indices[: cfg.max_examples]
    return [Example(i, rows[i]) for i in indices]


def _published_split(cfg: EvalConfig, rows: list[dict]) -> list[int]:
    """Without --nosplit_data the published script splits the file and evaluates a split."""
    from .train import split_indices

    train, test = split_indices(len(rows), cfg.test_size, cfg.split_seed)
    for path, idx in ((cfg.train_file, train), (cfg.test_file, test)):
        if path:
            Path(path).write_text("".join(json.dumps(rows[i]) + "\n" for i in idx))
    logger.info("split %d examples: %d train, %d test (seed %d); evaluating %s", len(rows), len(train),
                len(test), cfg.split_seed, cfg.process_split)
    return {"train": train, "test": test, "both": train + test}[cfg.process_split]


def _saved_predictions(path: str, limit: int | None) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if "messages" not in rec or "generation" not in rec:
                raise D.DataError(f"{path}:{lineno}: a prediction row needs 'messages' and 'generation'")
            row = {k: rec[k] for k in ("messages", "text", "code") if k in rec}
            out.append(Example(rec.get("index", len(out)), row, rec["generation"], rec.get("latency", 0.0),
                               rec.get("aux", {})))
    return out[:limit] if limit else out


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
@dataclass
class Loaded:
    model: object
    tokenizer: object
    family: Family
    template_kwargs: dict
    training: dict | None          # the fine-tuning run's config, when the model dir has one


def load_model(cfg: EvalConfig) -> Loaded:
    from transformers import AutoModelForCausalLM

    from .modeling import TORCH_DTYPES, resolve_dtype
    from .tokenization import setup_tokenizer
    from .train import detect_family

    family = detect_family(cfg.original_model_name or cfg.model_name)
    tsetup = setup_tokenizer(cfg.model_name, family, paper_compat=cfg.paper_compat, date_string=cfg.date_string)
    kwargs = {"dtype": TORCH_DTYPES[resolve_dtype(cfg.dtype)], "device_map": _device_map(cfg.device_map)}
    if family.large_model_attn:
        kwargs["attn_implementation"] = family.large_model_attn
    if cfg.load_in_8bit or cfg.load_in_4bit:
        kwargs["quantization_config"] = _quantization(cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name, **kwargs).eval()
    if len(tsetup.tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"{cfg.model_name}: the tokenizer has {len(tsetup.tokenizer)} tokens but the model only "
                         f"{model.get_input_embeddings().weight.shape[0]} embeddings; evaluate the directory "
                         "finetune.py saved (it holds the grown tokenizer and model)")
    return Loaded(model, tsetup.tokenizer, family, tsetup.template_kwargs, training_config(cfg.model_name))


def _device_map(value: str):
    if value == "auto" and not torch.cuda.is_available():
        return None
    return value


def _quantization(cfg: EvalConfig):
    from transformers import BitsAndBytesConfig

    if cfg.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16,
                                  bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


def training_config(model_name: str | None) -> dict | None:
    """The `config` of the run_config.json finetune.py wrote into the model directory."""
    from .outputs import RUN_CONFIG

    path = Path(model_name or "") / RUN_CONFIG
    if path.is_file():
        return json.loads(path.read_text()).get("config")
    return None


# --------------------------------------------------------------------------------------
# generating
# --------------------------------------------------------------------------------------
def generate(cfg: EvalConfig, info: DatasetInfo, loaded: Loaded, examples: list[Example]) -> None:
    """Fill in every example's generation (and HellaSwag's ending log-likelihoods)."""
    from . import generation as G

    tok, family = loaded.tokenizer, loaded.family
    prompts = [G.prompt_text(tok, ex.row, family, plain=cfg.plain, template_kwargs=loaded.template_kwargs)
               for ex in examples]
    if info.name == "hellaswag":
        _hellaswag(cfg, loaded, examples, prompts)
        return
    if cfg.paper_compat and cfg.eval_batch_size == 1:
        max_new = None if cfg.max_new_tokens == -1 else cfg.max_new_tokens
        from tqdm import tqdm

        for ex, prompt in zip(examples, tqdm(prompts, desc="Generating")):
            out = G.published_generate(loaded.model, tok, prompt, cfg.max_length, max_new)
            ex.generation, ex.seconds = out.text, out.seconds
        return
    ids = G.encode_prompts(tok, prompts, cfg.max_length, cfg.paper_compat, cfg.plain)
    stops = [tok.eos_token_id] if cfg.paper_compat else G.end_of_turn_ids(
        tok, family, loaded.template_kwargs, cfg.plain)
    generator = G.GreedyGenerator(loaded.model, tok, stops, cfg.eval_batch_size, cfg.max_new_tokens,
                                  cfg.max_length)
    for ex, out in zip(examples, generator(ids)):
        ex.generation, ex.seconds = out.text, out.seconds


def _hellaswag(cfg: EvalConfig, loaded: Loaded, examples: list[Example], prompts: list[str]) -> None:
    from . import generation as G
    from .metrics import hellaswag_choices

    tok = loaded.tokenizer
    if cfg.paper_compat:
        # Published: the prompt is truncated to max_new_tokens tokens (the end is cut off).
        limit = None if cfg.max_new_tokens == -1 else cfg.max_new_tokens
        ids = [tok(p, truncation=True, max_length=limit)["input_ids"] for p in prompts]
    else:
        ids = G.encode_prompts(tok, prompts, cfg.max_length, False, cfg.plain)
    for ex, letter in zip(examples, G.next_letter(loaded.model, tok, ids, cfg.eval_batch_size)):
        ex.generation = letter
    if cfg.paper_compat:
        return
    pairs, chars = [], []
    for ex in examples:
        context, endings, _ = hellaswag_choices(ex.row)
        pairs += [(context, " " + e) for e in endings]
        chars.append([len(e) for e in endings])
    logps = G.continuation_logprobs(loaded.model, tok, pairs, cfg.eval_batch_size)
    for i, ex in enumerate(examples):
        ex.aux = {"ending_logprobs": logps[4 * i: 4 * i + 4], "ending_chars": chars[i]}


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
def score(cfg: EvalConfig, info: DatasetInfo, examples: list[Example]) -> tuple[list, dict]:
    """Per-example scores and the summary metrics."""
    from .metrics import RowScore, ScoreContext, get_metric, published_correct, startswith_match

    metric = get_metric(info.metric)
    rows = [ex.row for ex in examples]
    if cfg.paper_compat:
        path = cfg.input_file or cfg.predictions or ""
        scores = []
        for ex in examples:
            if info.name == "hellaswag":
                ok = ex.generation == ex.row["messages"][2]["content"]
            else:
                ok = published_correct(ex.generation, ex.row, path, cfg.spider_path or None)
            scores.append(RowScore(ok, {"published": ok}))
        summary = {"accuracy": _mean([s.correct for s in scores])}
    else:
        ctx = ScoreContext(spider_path=cfg.spider_path or None, sql_timeout=cfg.sql_timeout)
        scores = [metric.score(ex.generation, ex.row, ctx, ex.aux or None) for ex in examples]
        summary = metric.summarize(rows, scores)
    if cfg.startswith:
        hits = [startswith_match(ex.generation, ex.row) for ex in examples]
        for s, hit in zip(scores, hits):
            s.metrics["startswith"] = hit
        summary["startswith"] = _mean(hits)
    summary["primary"] = "published" if cfg.paper_compat else metric.primary
    return scores, summary


def _mean(values) -> float:
    values = [bool(v) for v in values if v is not None]
    return sum(values) / len(values) if values else 0.0


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------
def output_paths(cfg: EvalConfig) -> tuple[Path, Path]:
    src = Path(cfg.input_file or cfg.predictions)
    out = Path(cfg.output_file) if cfg.output_file else Path(f"{src.stem}_responses.jsonl")
    if cfg.predictions and not cfg.output_file and out.resolve() == src.resolve():
        out = out.with_name(f"{src.stem}_rescored.jsonl")
    return out, out.with_name(out.stem + ".summary.json")


def write_outputs(cfg: EvalConfig, info: DatasetInfo, examples, scores, metrics: dict,
                  training: dict | None, extra: dict) -> Path:
    out, summary_path = output_paths(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for ex, sc in zip(examples, scores):
            fh.write(json.dumps(_row_record(ex, sc), ensure_ascii=False) + "\n")
    summary = _summary(cfg, info, scores, metrics, training, extra)
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary_path


def _row_record(ex: Example, sc) -> dict:
    msgs = ex.row["messages"]
    rec = {"index": ex.index, "prompt": msgs[1]["content"], "generation": ex.generation,
           "gold": msgs[2]["content"], "correct": sc.correct, **sc.metrics, "latency": ex.seconds,
           "messages": msgs}
    for key in ("text", "code"):
        if key in ex.row:
            rec[key] = ex.row[key]
    if sc.note:
        rec["note"] = sc.note
    if ex.aux:
        rec["aux"] = ex.aux
    return rec


def _summary(cfg, info, scores, metrics, training, extra) -> dict:
    import dataclasses

    from .environment import stack_record

    skipped = [{"index": i, "reason": s.note} for i, s in enumerate(scores) if s.correct is None]
    scored = [s for s in scores if s.correct is not None]
    return {"dataset": info.name, "input_file": cfg.input_file or cfg.predictions, "model_name": cfg.model_name,
            "original_model_name": cfg.original_model_name, "primary": metrics.get("primary"),
            "metrics": metrics,
            "counts": {"examples": len(scores), "scored": len(scored), "skipped": len(skipped),
                       "correct": sum(bool(s.correct) for s in scored)},
            "skipped": skipped, "training": training, "flags": dataclasses.asdict(cfg),
            "seed": (training or {}).get("finetune_seed", cfg.seed),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": stack_record(), **extra}


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def run(cfg: EvalConfig) -> dict:
    info = resolve_dataset(cfg.dataset, cfg.input_file or cfg.predictions)
    examples = load_examples(cfg, info)
    loaded, training, extra = None, training_config(cfg.model_name), {}
    if not cfg.predictions:
        loaded = load_model(cfg)
        generate(cfg, info, loaded, examples)
    scores, metrics = score(cfg, info, examples)
    if cfg.similarity:
        from .representations import similarity_report

        extra["similarity"] = similarity_report(cfg, loaded, examples, scores, info.view_fields, training)
    summary_path = write_outputs(cfg, info, examples, scores, metrics, training, extra)
    accuracy = metrics.get("accuracy", 0.0)
    line = f"Success Rate: {cfg.model_name or cfg.predictions}, {accuracy}"
    if cfg.startswith:
        line += f", {metrics['startswith']}"
    print(line, flush=True)
    logger.info("%s: %s = %.4f over %d scored examples; summary in %s", info.name, metrics.get("primary"),
                accuracy, sum(s.correct is not None for s in scores), summary_path)
    return json.loads(summary_path.read_text())


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        from .report import main as report_main

        return report_main(argv[1:])
    cfg = parse_eval_args(argv)
    from .train import setup_cpu_numerics, setup_logging

    setup_logging(cfg.debug > 0)
    setup_cpu_numerics()
    run(cfg)
    return 0
