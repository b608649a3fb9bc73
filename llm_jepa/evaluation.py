"""The evaluation pipeline behind evaluate.py, top to bottom:

config -> examples (split as published unless --nosplit_data) -> generations (batched
greedy decoding, or HellaSwag's letter and ending log-likelihoods, or --predictions) ->
scores (the dataset's metric from the registry; the published scoring with
`--published scorers`) -> per-example JSONL + summary JSON -> `Success Rate: <model>, <accuracy>`.

Robustness: inputs are checked before the model loads (the files, the Spider databases);
each row is scored and appended to `<output>.partial` as soon as it is generated, so an
interrupted run loses nothing and the same command continues it; a row that cannot be
scored counts as wrong with its reason; the final rows and summary appear by atomic rename.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import ConfigError, EvalConfig, parse_eval_args
from .data import DataError, example_problem, read_examples
from .corpora import DatasetInfo, resolve_dataset
from .environment import stack_record
from .families import Family, detect_family
from .generation import (
    GreedyGenerator,
    continuation_logprobs,
    encode_prompts,
    end_of_turn_ids,
    next_letter,
    prompt_text,
)
from .metrics import RowScore, ScoreContext, get_metric, startswith_match
from .metrics.base import mean_or_zero
from .metrics.hellaswag import QUERY_KEY, lm_eval_request
from .modeling import TORCH_DTYPES, resolve_dtype
from .models import resolve_model_name, sha256_of
from .outputs import RUN_CONFIG
from .published import generation as published_generation
from .published import scoring as published_scoring
from .report import main as report_main
from .representations import similarity_report
from .runtime import setup_cpu_numerics, setup_logging
from .splits import split_indices
from .sql_exec import db_path, parse_db_id
from .tokenization import setup_tokenizer

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
    rows = read_examples(cfg.input_file, needs_view_fields=False)
    indices = list(range(len(rows)))
    if not cfg.nosplit_data:
        indices = _published_split(cfg, rows)
    if cfg.max_examples:
        indices = indices[: cfg.max_examples]
    return [Example(i, rows[i]) for i in indices]


def _published_split(cfg: EvalConfig, rows: list[dict]) -> list[int]:
    """Without --nosplit_data the published script splits the file and evaluates a split."""
    train, test = split_indices(len(rows), cfg.test_size, cfg.split_seed)
    for path, idx in ((cfg.train_file, train), (cfg.test_file, test)):
        if path:
            Path(path).write_text("".join(json.dumps(rows[i]) + "\n" for i in idx))
    logger.info("split %d examples: %d train, %d test (seed %d); evaluating %s", len(rows), len(train),
                len(test), cfg.split_seed, cfg.process_split)
    return {"train": train, "test": test, "both": train + test}[cfg.process_split]


def _saved_predictions(path: str, limit: int | None) -> list[Example]:
    """The rows of a --predictions file. A line that is not a prediction row is an error naming
    file:line; what a row holds is not checked here: a row that cannot be scored is scored
    wrong with its reason (see Scorer)."""
    out = []
    with open(path, "rb") as fh:   # bytes, decoded line by line, so a bad byte names its line
        for lineno, raw in enumerate(fh, start=1):
            rec = _prediction_line(path, lineno, raw)
            if rec is None:
                continue
            row = {k: rec[k] for k in ("messages", "text", "code") if k in rec}
            out.append(Example(rec.get("index", len(out)), row, rec["generation"], rec.get("latency", 0.0),
                               rec.get("aux", {})))
            if limit and len(out) >= limit:
                break
    if not out:
        raise DataError(f"{path}: no predictions")
    return out


def _prediction_line(path: str, lineno: int, raw: bytes) -> dict | None:
    """One line of a --predictions file as an object with 'messages' and 'generation' (None: blank)."""
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as err:
        column = len(raw[:err.start].decode("utf-8", errors="replace")) + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text: byte 0x{raw[err.start]:02x} at column {column} "
                          f"({err.reason}); convert the file to UTF-8") from None
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: bad JSON: {err.msg} (column {err.colno})") from None
    except (ValueError, RecursionError) as err:   # a 5000-digit number, nesting past the stack
        raise DataError(f"{path}:{lineno}: bad JSON: {type(err).__name__}: {err}") from None
    if not isinstance(rec, dict) or "messages" not in rec or "generation" not in rec:
        raise DataError(f"{path}:{lineno}: a prediction row needs 'messages' and 'generation'")
    return rec


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

    # A short name (smollm2-135m-instruct) loads from its converted folder, fetched on first use.
    model_dir = resolve_model_name(cfg.model_name)
    family = detect_family(resolve_model_name(cfg.original_model_name) if cfg.original_model_name else model_dir)
    tsetup = setup_tokenizer(model_dir, family, published=cfg.behaviour, date_string=cfg.date_string)
    kwargs = {"dtype": TORCH_DTYPES[resolve_dtype(cfg.dtype)], "device_map": _device_map(cfg.device_map)}
    if family.large_model_attn:
        kwargs["attn_implementation"] = family.large_model_attn
    if cfg.load_in_8bit or cfg.load_in_4bit:
        kwargs["quantization_config"] = _quantization(cfg)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval()
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
    record = _run_record(model_name)
    return record.get("config") if record else None


def training_cost(model_name: str | None) -> dict | None:
    """What the training run cost, from its run_config.json: optimizer steps, seconds, FLOPs."""
    record = _run_record(model_name)
    if not record:
        return None
    return {k: record.get(k) for k in ("global_steps", "train_seconds", "train_flops")}


def _run_record(model_name: str | None) -> dict | None:
    path = Path(model_name or "") / RUN_CONFIG
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------------------
# generating
# --------------------------------------------------------------------------------------
class BatchRunner:
    """Generates batch by batch, so that each batch's rows can be scored and saved at once.

    The batches depend only on the examples and the flags, never on how many rows an
    interrupted run already saved: a continued run generates exactly what an uninterrupted
    one would (same batch composition, same padding)."""
    def __init__(self, cfg: EvalConfig, info: DatasetInfo, loaded: Loaded, examples: list[Example]):
        self.cfg, self.loaded, self.examples = cfg, loaded, examples
        tok, family = loaded.tokenizer, loaded.family
        self.prompts = [prompt_text(tok, ex.row, family, plain=cfg.plain, template_kwargs=loaded.template_kwargs)
                        for ex in examples]
        published = cfg.behaviour
        self.mode = ("hellaswag" if info.name == "hellaswag"
                     else "published" if published.one_at_a_time and cfg.eval_batch_size == 1 else "greedy")
        if self.mode == "greedy":
            self.ids = encode_prompts(tok, self.prompts, cfg.max_length, cfg.plain, published)
            stops = [tok.eos_token_id] if published.eos_stop else end_of_turn_ids(
                tok, family, loaded.template_kwargs, cfg.plain)
            self.generator = GreedyGenerator(loaded.model, tok, stops, cfg.eval_batch_size, cfg.max_new_tokens,
                                               cfg.max_length)

    def batches(self) -> list[list[int]]:
        """Positions in self.examples, one list per batch."""
        n, size = len(self.examples), self.cfg.eval_batch_size
        if self.mode == "published":
            return [[i] for i in range(n)]
        if self.mode == "hellaswag":   # consecutive: letter and ending batches as in one pass
            order = list(range(n))
        else:   # GreedyGenerator's own order (longest prompt first, stable), cut into its batches
            order = sorted(range(n), key=lambda i: -len(self.ids[i]))
        return [order[i:i + size] for i in range(0, n, size)]

    def run(self, batch: list[int]) -> list[Example]:
        """Fresh Examples of one batch, with their generations."""
        exs = [Example(self.examples[i].index, self.examples[i].row) for i in batch]
        prompts = [self.prompts[i] for i in batch]
        if self.mode == "hellaswag":
            _hellaswag(self.cfg, self.loaded, exs, prompts)
        elif self.mode == "published":
            max_new = None if self.cfg.max_new_tokens == -1 else self.cfg.max_new_tokens
            for ex, prompt in zip(exs, prompts):
                out = published_generation.generate_one(self.loaded.model, self.loaded.tokenizer, prompt, self.cfg.max_length,
                                           max_new)
                ex.generation, ex.seconds = out.text, out.seconds
        else:   # one batch of GreedyGenerator: already in its order, so it keeps the composition
            for ex, out in zip(exs, self.generator([self.ids[i] for i in batch], progress=False)):
                ex.generation, ex.seconds = out.text, out.seconds
        return exs


def _hellaswag(cfg: EvalConfig, loaded: Loaded, examples: list[Example], prompts: list[str]) -> None:
    """The letter (next-token argmax over A-D on the prompt), then, except with
    `--published hellaswag_letter`, the log-likelihood of each ending on lm-eval's query
    (acc, acc_norm).
    A row whose endings cannot be read keeps its letter and has no acc (a warning says why)."""
    tok = loaded.tokenizer
    letter_only = cfg.behaviour.hellaswag_letter
    if letter_only:
        ids = published_generation.letter_prompts(tok, prompts, cfg.max_new_tokens)
    else:
        ids = encode_prompts(tok, prompts, cfg.max_length, cfg.plain)
    for ex, letter in zip(examples, next_letter(loaded.model, tok, ids, cfg.eval_batch_size)):
        ex.generation = letter
    if letter_only:
        return
    requests = []   # (example, query, 4 choices, kind)
    for ex in examples:
        try:
            requests.append((ex, *lm_eval_request(ex.row)))
        except (ValueError, LookupError, TypeError) as err:
            logger.warning("example %s: no acc / acc_norm: %s", ex.index, err)
    # lm-eval's requests: the query, then " " + choice; acc_norm divides by len(choice)
    pairs = [(query, " " + c) for _, query, choices, _ in requests for c in choices]
    logps = continuation_logprobs(loaded.model, tok, pairs, cfg.eval_batch_size) if pairs else []
    for n, (ex, _, choices, kind) in enumerate(requests):
        ex.aux = {"ending_logprobs": logps[4 * n: 4 * n + 4], "ending_chars": [len(c) for c in choices],
                  QUERY_KEY: kind}


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
# A row that cannot be scored counts as wrong; its note starts with this.
UNSCORABLE = "unscorable: "
# What a hostile or broken generation can raise inside a scorer (e.g. a lone surrogate that
# SQLite cannot encode). RuntimeError and OSError are left to stop the run: they come from
# the environment (a missing tool, a full disk), and would otherwise make every row wrong.
SCORING_ERRORS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, RecursionError,
                  MemoryError)


def prediction_problem(ex: Example) -> str | None:
    """Why a row cannot be scored at all (its generation or its messages), or None."""
    if not isinstance(ex.generation, str):
        kind = "null" if ex.generation is None else type(ex.generation).__name__
        return f"the generation is {kind}, not text"
    return example_problem(ex.row)


class Scorer:
    """Scores one example at a time: the dataset's metric, or the published scoring with
    `--published scorers`. A row that cannot be scored is wrong, with its reason, and the run goes on."""
    def __init__(self, cfg: EvalConfig, info: DatasetInfo):
        self.cfg, self.info, self.metric = cfg, info, get_metric(info.metric)
        self.published = cfg.behaviour.scorers
        self.primary = "published" if self.published else self.metric.primary
        # Every flag named like a ScoreContext field (spider_path, sql_timeout, ...) reaches the metrics.
        shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ScoreContext) if hasattr(cfg, f.name)}
        self.ctx = ScoreContext(**{**shared, "spider_path": cfg.spider_path or None})
        self.unscorable = 0

    def __call__(self, ex: Example):
        problem = prediction_problem(ex)
        if problem is None:
            try:
                sc = self._score(ex)
            except ConfigError:   # a bad flag, found by the metric: every row would fail alike
                raise
            except SCORING_ERRORS as err:
                problem = f"{type(err).__name__}: {err}"
        if problem is not None:
            self.unscorable += 1
            log = logger.warning if self.unscorable <= 5 else logger.debug
            log("example %s cannot be scored and counts as wrong: %s", ex.index, problem)
            sc = RowScore(False, {self.primary: False}, UNSCORABLE + problem)
        if self.cfg.startswith:
            sc.metrics["startswith"] = problem is None and startswith_match(ex.generation, ex.row)
        return sc

    def _score(self, ex: Example):
        if not self.published:
            return self.metric.score(ex.generation, ex.row, self.ctx, ex.aux or None)
        ok, note = ex.generation == ex.row["messages"][2]["content"], ""
        if self.info.name != "hellaswag":
            path = self.cfg.input_file or self.cfg.predictions or ""
            ok, note = published_scoring.published_score(ex.generation, ex.row, path, self.cfg.spider_path or None)
        return RowScore(ok, {"published": ok}, note)

    def summarize(self, examples: list[Example], scores: list) -> dict:
        """The summary metrics of a run (--startswith apart, as its own rate)."""
        if self.published:
            summary = {"accuracy": _rate([s.correct for s in scores])}
        else:
            plain = [RowScore(s.correct, {k: v for k, v in s.metrics.items() if k != "startswith"}, s.note)
                     for s in scores]
            summary = self.metric.summarize([ex.row for ex in examples], plain)
        if self.cfg.startswith:
            summary["startswith"] = _rate([s.metrics.get("startswith") for s in scores])
        summary["primary"] = self.primary
        return summary


def _rate(values) -> float:
    """The share of true values among those recorded (None: not recorded)."""
    return mean_or_zero([bool(v) for v in values if v is not None])


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------
def output_paths(cfg: EvalConfig) -> tuple[Path, Path]:
    src = Path(cfg.input_file or cfg.predictions)
    out = Path(cfg.output_file) if cfg.output_file else Path(f"{src.stem}_responses.jsonl")
    if cfg.predictions and not cfg.output_file and out.resolve() == src.resolve():
        out = out.with_name(f"{src.stem}_rescored.jsonl")
    return out, out.with_name(out.stem + ".summary.json")


def partial_path(out: Path) -> Path:
    """Where the rows of a run in progress go: `<output>.partial`."""
    return out.with_name(out.name + ".partial")


def check_paths(cfg: EvalConfig, out: Path, summary: Path) -> None:
    """The inputs exist, and no output is an input (writing it would destroy the input)."""
    inputs = [(f"--{name}", getattr(cfg, name)) for name in ("input_file", "predictions") if getattr(cfg, name)]
    for flag, path in inputs:
        if not Path(path).exists():
            raise ConfigError(f"{flag} {path}: no such file")
        if not Path(path).is_file():
            raise ConfigError(f"{flag} {path} is not a file")
    if out.is_dir():
        raise ConfigError(f"--output_file {out} is a directory")
    outputs = [("--output_file", out), ("the summary", summary), ("the partial rows", partial_path(out)),
               ("--train_file", cfg.train_file), ("--test_file", cfg.test_file)]
    for what, path in outputs:
        for flag, source in inputs:
            if path and _same_file(path, source):
                raise ConfigError(f"{what} {path} is {flag} {source}: writing it would destroy the input; "
                                  "choose another --output_file")


def _same_file(a, b) -> bool:
    """Whether two paths name one file (through symbolic or hard links)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json_line(record: dict) -> str:
    """One JSONL line, UTF-8 encodable whatever the record holds: a lone surrogate (which
    JSON can spell and a model can emit) is written as its \\uXXXX escape, which reads back
    as the same string; every other character is written as itself."""
    text = json.dumps(record, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: readers,
    and a run killed meanwhile, see the old file or the new one, never a part of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes it private; keep the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_outputs(cfg: EvalConfig, info: DatasetInfo, examples, scores, metrics: dict,
                  training: dict | None, extra: dict) -> Path:
    """The rows, then the summary, each by atomic rename."""
    out, summary_path = output_paths(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "".join(to_json_line(_row_record(ex, sc)) + "\n" for ex, sc in zip(examples, scores)))
    summary = _summary(cfg, info, examples, scores, metrics, training, extra)
    write_atomic(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
    return summary_path


def _content(row: dict, i: int):
    """messages[i]["content"], or None for a malformed row (scored as unscorable)."""
    try:
        return row["messages"][i]["content"]
    except (LookupError, TypeError):
        return None


# The keys of a row record that are not metrics (see _row_record and _from_record).
RECORD_KEYS = frozenset({"index", "prompt", "generation", "gold", "correct", "latency", "messages", "text", "code",
                         "note", "aux", "_position"})


def _row_record(ex: Example, sc) -> dict:
    rec = {"index": ex.index, "prompt": _content(ex.row, 1), "generation": ex.generation,
           "gold": _content(ex.row, 2), "correct": sc.correct, **sc.metrics, "latency": ex.seconds,
           "messages": ex.row.get("messages")}
    for key in ("text", "code"):
        if key in ex.row:
            rec[key] = ex.row[key]
    if sc.note:
        rec["note"] = sc.note
    if ex.aux:
        rec["aux"] = ex.aux
    return rec


def _from_record(rec: dict):
    """The Example and RowScore a row record was made from (a continued run's saved rows)."""
    row = {k: rec[k] for k in ("messages", "text", "code") if k in rec}
    ex = Example(rec["index"], row, rec["generation"], rec["latency"], rec.get("aux", {}))
    metrics = {k: v for k, v in rec.items() if k not in RECORD_KEYS}
    return ex, RowScore(rec["correct"], metrics, rec.get("note", ""))


def _summary(cfg, info, examples, scores, metrics, training, extra) -> dict:
    skipped = [{"index": ex.index, "reason": s.note} for ex, s in zip(examples, scores) if s.correct is None]
    unscorable = [{"index": ex.index, "reason": s.note[len(UNSCORABLE):]} for ex, s in zip(examples, scores)
                  if s.note.startswith(UNSCORABLE)]
    scored = [s for s in scores if s.correct is not None]
    return {"dataset": info.name, "input_file": cfg.input_file or cfg.predictions, "model_name": cfg.model_name,
            "original_model_name": cfg.original_model_name, "primary": metrics.get("primary"),
            "metrics": metrics,
            "counts": {"examples": len(scores), "scored": len(scored), "skipped": len(skipped),
                       "correct": sum(bool(s.correct) for s in scored), "unscorable": len(unscorable)},
            "skipped": skipped, "unscorable": unscorable, "training": training,
            "training_cost": training_cost(cfg.model_name), "flags": dataclasses.asdict(cfg),
            "seed": (training or {}).get("finetune_seed", cfg.seed),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": stack_record(), **extra}


# --------------------------------------------------------------------------------------
# rows in progress: saved as they are produced, continued after an interruption
# --------------------------------------------------------------------------------------
PARTIAL_FORMAT = "llm_jepa evaluation rows in progress"


class PartialRows:
    """`<output>.partial`: a header line (what evaluation this is), then one row record per
    line, appended and flushed as each row is scored. A run killed at any point leaves
    whole rows, at most followed by one cut line, which the next run drops.

    The same command (same flags, input file, model files) continues from the saved rows;
    anything else, or --no_skip_existing, starts over. An exclusive lock keeps two runs from
    writing the same file."""
    def __init__(self, path: Path, fingerprint: dict, restart: bool):
        self.path, self.fingerprint = path, fingerprint
        self.fh = None
        self.saved: dict[int, dict] = {}   # position in the example list -> row record
        if path.exists():
            self._open()   # locked before reading: another run may be appending
            saved = self._load(restart)
            if saved is not None:
                self.saved = saved
                return
            self.fh.close()
        self._start()

    def _open(self) -> None:
        self.fh = open(self.path, "a+b")   # appends go to the end whatever was read before
        try:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:   # no fcntl (Windows): no lock
            pass
        except OSError:
            self.fh.close()
            raise ConfigError(f"{self.path} is being written by another evaluation; wait for it to end "
                              "or choose another --output_file") from None

    def _start(self) -> None:
        """A new file holding only the header (written whole, by rename)."""
        header = {"format": PARTIAL_FORMAT, "fingerprint": self.fingerprint}
        write_atomic(self.path, json.dumps(header) + "\n")
        self._open()

    def _load(self, restart: bool) -> dict[int, dict] | None:
        """The saved rows by position, or None to start over."""
        self.fh.seek(0)
        lines = self.fh.read().split(b"\n")
        header = _json_or_none(lines[0])
        if not (isinstance(header, dict) and header.get("format") == PARTIAL_FORMAT):
            self.fh.close()
            raise ConfigError(f"{self.path} exists and is not the partial rows of an evaluation; "
                              "move it away or choose another --output_file")
        if restart:
            logger.info("--no_skip_existing: discarding the saved rows in %s", self.path)
            return None
        differ = _differences(header.get("fingerprint") or {}, self.fingerprint)
        if differ:
            logger.warning("%s holds the rows of another evaluation (%s differ): starting over", self.path,
                           ", ".join(differ))
            return None
        saved, keep = {}, len(lines[0]) + 1
        for raw in lines[1:-1]:   # the last piece is empty, or a line cut short by a kill
            rec = _json_or_none(raw)
            if not (isinstance(rec, dict) and isinstance(rec.get("_position"), int)):
                break
            saved[rec["_position"]] = rec
            keep += len(raw) + 1
        self.fh.truncate(keep)   # drop a cut line, so that appends start on a line of their own
        return saved

    def append(self, position: int, ex: Example, sc) -> None:
        line = to_json_line({**_row_record(ex, sc), "_position": position}) + "\n"
        self.fh.write(line.encode("utf-8"))
        self.fh.flush()

    def close(self, finished: bool) -> None:
        """Close; once the outputs are written, remove the file."""
        if finished:
            self.path.unlink(missing_ok=True)
        if self.fh is not None:
            self.fh.close()


def _json_or_none(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, for the message ('--max_new_tokens', 'the input file')."""
    names = {"input": "the input file", "model": "the model files"}
    out = [names[k] for k in names if old.get(k) != new.get(k)]
    old_flags, new_flags = old.get("flags") or {}, new.get("flags") or {}
    out += [f"--{k}" for k in sorted(set(old_flags) | set(new_flags)) if old_flags.get(k) != new_flags.get(k)]
    return out


def fingerprint(cfg: EvalConfig) -> dict:
    """What makes two runs the same evaluation: the flags, the input file's bytes, the model's files."""
    flags = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("debug", "no_skip_existing")}
    record = {"flags": flags, "input": sha256_of(cfg.predictions or cfg.input_file),
              "model": _model_files(cfg.model_name)}
    return json.loads(json.dumps(record, default=str))   # as it reads back from the file


def _model_files(model_name: str | None) -> dict:
    """Name, size and modification time of the files of a model directory (a retrained model
    differs); a hub name stands for itself."""
    path = Path(model_name or "")
    if not model_name or not path.is_dir():
        return {"name": model_name}
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
SPIDER_HINT = ("get them with `python -m llm_jepa.corpora prepare spider_data --out spider_data/` and pass "
               "--spider_path spider_data/database")


def scores_sql(cfg: EvalConfig, info: DatasetInfo) -> bool:
    """Whether scoring runs SQL on the Spider databases."""
    if cfg.behaviour.scorers:   # published: by the input path's prefix (a path with a folder falls back)
        return (cfg.input_file or cfg.predictions or "").startswith("spider")
    return info.metric == "spider"


def check_spider_databases(cfg: EvalConfig, info: DatasetInfo, examples: list[Example]) -> None:
    """Stop before the model loads when no row could be scored for want of databases: no
    --spider_path, a folder that does not exist, or one holding none of the databases the
    rows name. Rows whose database alone is missing are skipped and counted, as before."""
    if not scores_sql(cfg, info):
        return

    src = cfg.input_file or cfg.predictions
    needed = sorted({db for ex in examples if (db := parse_db_id(_content(ex.row, 1) or "")) is not None})
    if not cfg.spider_path:
        raise ConfigError(f"scoring {src} needs the Spider databases, and no --spider_path was given"
                          f"{_spider_candidates(src)}; {SPIDER_HINT}")
    folder = Path(cfg.spider_path)
    if not folder.is_dir():
        raise ConfigError(f"--spider_path {folder}: no such folder (looked in {folder.resolve()})"
                          f"{_spider_candidates(src)}; {SPIDER_HINT}")
    if not needed:
        raise DataError(f"{src}: no row names its database (a user message starting 'For db_id:[...]')")
    present = [db for db in needed if db_path(folder, db).is_file()]
    if not present:
        nested = " (it has a database/ folder: did you mean --spider_path " + str(folder / "database") + "?)" \
            if (folder / "database").is_dir() else ""
        raise ConfigError(f"--spider_path {folder} holds none of the {len(needed)} databases {src} needs (looked "
                          f"for {folder.resolve()}/<db_id>/<db_id>.sqlite, e.g. {needed[0]}){nested}; {SPIDER_HINT}")
    missing = [db for db in needed if db not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning("--spider_path %s lacks %d of the %d databases %s needs (%s); their rows are skipped",
                       folder, len(missing), len(needed), src, shown)


def _spider_candidates(src: str) -> str:
    """' (there is one at X)' when a usual place holds the databases: beside the dataset
    folder, as prepared on the development machines, or under the working directory."""
    for folder in (Path(src).resolve().parent.parent / "spider_data" / "database", Path("spider_data/database")):
        if folder.is_dir() and any(folder.glob("*/*.sqlite")):
            return f" (there is one at {folder}: pass --spider_path {folder})"
    return ""


def _dataset(cfg: EvalConfig) -> DatasetInfo:
    try:
        return resolve_dataset(cfg.dataset, cfg.input_file or cfg.predictions)
    except ValueError as err:   # an unknown --dataset, or a file name that names none
        raise ConfigError(str(err)) from None


def run(cfg: EvalConfig) -> dict:
    for line in cfg.ignored_flags():
        logger.warning(line)
    info = _dataset(cfg)
    out, summary_path = output_paths(cfg)
    check_paths(cfg, out, summary_path)
    examples = load_examples(cfg, info)
    check_spider_databases(cfg, info, examples)   # before a model loads or a row is generated
    training, extra = training_config(cfg.model_name), {}
    out.parent.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(cfg, info)
    partial = PartialRows(partial_path(out), fingerprint(cfg), restart=cfg.no_skip_existing)
    finished = False
    try:
        examples, scores, loaded = produce_rows(cfg, info, examples, scorer, partial)
        check_scored(cfg, examples, scores, partial.path)
        metrics = scorer.summarize(examples, scores)
        if cfg.similarity:

            loaded = loaded or load_model(cfg)
            extra["similarity"] = similarity_report(cfg, loaded, examples, scores, info.view_fields, training,
                                                     out)
        summary_path = write_outputs(cfg, info, examples, scores, metrics, training, extra)
        finished = True
    finally:
        partial.close(finished)
    accuracy = metrics.get("accuracy", 0.0)
    line = f"Success Rate: {cfg.model_name or cfg.predictions}, {accuracy}"
    if cfg.startswith:
        line += f", {metrics['startswith']}"
    print(line, flush=True)
    if scorer.unscorable:
        logger.warning("%d of %d rows could not be scored and count as wrong (see 'unscorable' in %s)",
                       scorer.unscorable, len(scores), summary_path)
    logger.info("%s: %s = %.4f over %d scored examples; summary in %s", info.name, metrics.get("primary"),
                accuracy, sum(s.correct is not None for s in scores), summary_path)
    return json.loads(summary_path.read_text())


def produce_rows(cfg: EvalConfig, info: DatasetInfo, examples: list[Example], scorer: Scorer,
                 partial: PartialRows) -> tuple[list[Example], list, Loaded | None]:
    """Every example generated (or read from --predictions) and scored, each row appended to
    the partial file as soon as it is scored; rows an interrupted run saved are reused."""
    from tqdm import tqdm

    done = _saved_rows(examples, partial)
    loaded = None
    if cfg.predictions:
        batches = [[i] for i in range(len(examples))]
    elif len(done) < len(examples):
        loaded = load_model(cfg)
        runner = BatchRunner(cfg, info, loaded, examples)
        batches = runner.batches()
    else:
        batches = []
    if done:
        logger.info("continuing from %s: %d of %d rows already done", partial.path, len(done), len(examples))
    for batch in tqdm(batches, desc="Scoring" if cfg.predictions else "Generating",
                      unit="row" if cfg.predictions else "batch",
                      disable=not batches):
        todo = [i for i in batch if i not in done]
        if not todo:
            continue
        # A batch cut by the interruption is generated whole again, so that its rows come out
        # as in one pass; only its unsaved rows are kept.
        fresh = [examples[i] for i in batch] if cfg.predictions else runner.run(batch)
        for i, ex in zip(batch, fresh):
            if i in todo:
                sc = scorer(ex)
                partial.append(i, ex, sc)
                done[i] = (ex, sc)
    return [done[i][0] for i in range(len(examples))], [done[i][1] for i in range(len(examples))], loaded


def _saved_rows(examples: list[Example], partial: PartialRows) -> dict[int, tuple]:
    """The (Example, RowScore) of each saved row, checked against the example it belongs to."""
    done = {}
    for i, rec in partial.saved.items():
        if i >= len(examples) or rec.get("index") != examples[i].index \
                or rec.get("messages") != examples[i].row.get("messages"):
            raise DataError(f"{partial.path}: its row {i} does not belong to this evaluation; "
                              "rerun with --no_skip_existing to start over")
        done[i] = _from_record(rec)
    return done


def check_scored(cfg: EvalConfig, examples: list[Example], scores: list, partial: Path) -> None:
    """A run where no row could be scored has no accuracy (it would print 0.0): an error."""
    if any(s.correct is not None for s in scores):
        return
    reasons = Counter(s.note for s in scores).most_common(3)
    raise DataError(f"{cfg.input_file or cfg.predictions}: none of the {len(examples)} rows could be scored ("
                      + "; ".join(f"{n}: {reason}" for reason, n in reasons)
                      + f"); the rows and their reasons are in {partial}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:

        return report_main(argv[1:])
    cfg = parse_eval_args(argv)

    setup_logging(cfg.debug > 0)
    setup_cpu_numerics()
    try:
        run(cfg)
    except (ConfigError, DataError) as err:   # bad input: one line, no traceback
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        partial = partial_path(output_paths(cfg)[0])
        saved = (f"; the rows done so far are in {partial}, and the same command continues from them"
                 if partial.exists() else "")
        print(f"evaluate.py: interrupted{saved}", file=sys.stderr)
        return 130
    return 0
