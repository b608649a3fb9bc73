"""Rebuild the published `<name>_train.jsonl` / `<name>_test.jsonl` files from their upstream sources.

Two layers, kept apart so that the first can be tested without a network:

* converters and builders: pure functions from upstream rows (a list of dicts, or a
  Hugging Face `Dataset`, which indexes and iterates the same way) to examples in the
  published format `{"messages": [system, user, assistant]}`;
* fetchers: thin download steps (`datasets.load_dataset`, or a raw file over HTTPS).

Where the published selection could be recovered from the published files it is
reproduced exactly (see datasets/README.md); elsewhere a seeded subset is drawn the way
the Hugging Face `datasets` library draws one, with seed 42.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..metrics.hellaswag import LETTERS, UPSTREAM_FIELD, UPSTREAM_KEYS
from ..jsonl import to_line, write_jsonl  # noqa: F401 (to_line: the tests compare lines through this module)
from ..splits import seeded_subset, split_like_hf
from . import get_dataset

logger = logging.getLogger(__name__)

Rows = Sequence[Mapping[str, Any]]      # upstream rows: a list of dicts or a datasets.Dataset
Upstream = dict[str, Rows]              # upstream rows by upstream split name
Output = dict[str, list[dict]]          # "train" / "test" -> examples

NLRX_TEST_FRACTION = 0.2                # 10000 pairs -> 8000 / 2000
SPIDER_TEST_FRACTION = 0.18             # 7000 + 1034 rows -> 6587 / 1447
NQ_OPEN_TRAIN_SIZE = 8000
YELP_TRAIN_SIZE = 8000                  # our choice: the published yelp_train is not available
YELP_TEST_SIZE = 2000
HELLASWAG_TEST_SIZE = 2000
PARAPHRASE_GROUPS = 2000                # our choice: ~10k rows, the scale of the other files

ROTTEN_TOMATOES_LABELS = ("Bad", "Good")                                  # neg=0, pos=1
YELP_LABELS = ("Very Bad", "Bad", "Mediocre", "Good", "Very Good")        # 1..5 stars

NLRX_URL = "https://raw.githubusercontent.com/nicholaslocascio/deep-regex/master/datasets/NL-RX-{}/{}.txt"
EFFICIENTQA_TEST_URL = ("https://raw.githubusercontent.com/google-research-datasets/natural-questions/"
                        "master/nq_open/NQ-open.efficientqa.test.1.1.jsonl")
# The official Spider 1.0 release (spider_data.zip, linked from yale-lily.github.io/spider).
SPIDER_ZIP_URL = ("https://drive.usercontent.google.com/download?"
                  "id=1403EGqzIDoHMdQF4c9Bkyl7dZLZ5Wt6J&export=download&confirm=t")


class PrepareError(RuntimeError):
    """A dataset could not be prepared; the message is one line for the command line."""


# --------------------------------------------------------------------------------------
# The published format
# --------------------------------------------------------------------------------------
def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def example(name: str, user: str, assistant: str, **views: list[dict]) -> dict:
    """One published example. The system prompt comes from the registry, the single
    source of truth; `views` are extra fields written after `messages` (HellaSwag)."""
    system = get_dataset(name).system_prompt
    return {"messages": [message("system", system), message("user", user),
                         message("assistant", assistant)], **views}


# --------------------------------------------------------------------------------------
# Converters: one upstream row -> one example
# --------------------------------------------------------------------------------------
def gsm8k_example(row: Mapping) -> dict:
    """openai/gsm8k: the question, and the worked answer ending in `#### <number>`, verbatim."""
    return example("gsm8k", row["question"], row["answer"])


def spider_example(row: Mapping) -> dict:
    """Spider: the database is named in the prompt; the gold `query` is kept verbatim
    (its double spaces and trailing semicolons included)."""
    return example("spider", f"For db_id:[{row['db_id']}]\n\n{row['question']}", row["query"])


def nq_open_example(row: Mapping) -> dict:
    """NQ-Open: every gold answer, joined by "; " (the metric splits them again)."""
    return example("nq_open", row["question"], "; ".join(row["answer"]))


def rotten_tomatoes_example(row: Mapping) -> dict:
    return example("rotten_tomatoes", row["text"], ROTTEN_TOMATOES_LABELS[int(row["label"])])


def yelp_example(row: Mapping) -> dict:
    """Yelp review text verbatim: upstream keeps line breaks as the two characters `\\n`."""
    return example("yelp", row["text"], YELP_LABELS[int(row["label"])])


def nlrx_example(name: str, description: str, regex: str) -> dict:
    return example(name, description, regex)


def hellaswag_context(row: Mapping) -> str:
    """The context as upstream's `ctx`: ctx_a + " " + ctx_b, with ctx_b's case kept
    ("... a black male" ends an ActivityNet context). WikiHow markers such as
    "[header]" and "[step]" are kept. The published contexts never start or end with
    whitespace, hence the strip."""
    ctx = row.get("ctx") or f"{row['ctx_a']} {row['ctx_b']}"
    return ctx.strip()


def hellaswag_example(row: Mapping) -> dict:
    """HellaSwag: the context, then one "A) ending" line per option; the answer is the
    letter. The JEPA views are the context (Text) and the correct ending (Code).

    A last field, "hellaswag", keeps the upstream activity_label, ctx_a, ctx_b and endings
    verbatim: lm-eval's acc / acc_norm query is built from them (metrics/hellaswag.py),
    and the messages cannot give them back (ctx_b is not marked off in the context). The
    gold stays the assistant letter alone. Training and the letter metric ignore the field."""
    label = row["label"]
    if label in (None, ""):  # the upstream test split is unlabelled
        raise ValueError(f"HellaSwag row {row.get('ind')!r} has no label")
    endings, gold = list(row["endings"]), int(label)
    context = hellaswag_context(row)
    options = "\n".join(f"{letter}) {ending}" for letter, ending in zip(LETTERS, endings))
    out = example("hellaswag", f"{context}\n{options}", LETTERS[gold],
                  text=[message("user", context)], code=[message("assistant", endings[gold])])
    out[UPSTREAM_FIELD] = {key: row[key] for key in UPSTREAM_KEYS} | {"endings": endings}
    return out


# --------------------------------------------------------------------------------------
# Builders: upstream splits -> published splits
# --------------------------------------------------------------------------------------
def build_gsm8k(up: Upstream) -> Output:
    """Upstream train / test in upstream order (7473 / 1319)."""
    return {"train": [gsm8k_example(r) for r in up["train"]],
            "test": [gsm8k_example(r) for r in up["test"]]}


def build_spider(up: Upstream) -> Output:
    """Upstream train (train_spider, 7000) + validation (dev, 1034), concatenated and
    split 82/18 with seed 42 -> 6587 / 1447 (train_others is not used)."""
    rows = [spider_example(r) for r in up["train"]] + [spider_example(r) for r in up["validation"]]
    train, test = split_like_hf(rows, SPIDER_TEST_FRACTION)
    return {"train": train, "test": test}


def build_nq_open(up: Upstream) -> Output:
    """Train: a seeded 8000-row subset of NQ-Open train (the published subset is unknown).
    Test: the EfficientQA test set (1769 rows, upstream order), its `answer` lists."""
    return {"train": [nq_open_example(r) for r in seeded_subset(up["train"], NQ_OPEN_TRAIN_SIZE)],
            "test": [nq_open_example(r) for r in up["efficientqa_test"]]}


def build_rotten_tomatoes(up: Upstream) -> Output:
    """Upstream train / test in upstream order (8530 / 1066)."""
    return {"train": [rotten_tomatoes_example(r) for r in up["train"]],
            "test": [rotten_tomatoes_example(r) for r in up["test"]]}


def build_yelp(up: Upstream) -> Output:
    """Seeded subsets of upstream train (8000) and test (2000)."""
    return {"train": [yelp_example(r) for r in seeded_subset(up["train"], YELP_TRAIN_SIZE)],
            "test": [yelp_example(r) for r in seeded_subset(up["test"], YELP_TEST_SIZE)]}


def build_hellaswag(up: Upstream) -> Output:
    """Train: all of upstream train. Test: a seeded 2000-row subset of upstream
    validation (upstream test has no labels)."""
    return {"train": [hellaswag_example(r) for r in up["train"]],
            "test": [hellaswag_example(r) for r in seeded_subset(up["validation"], HELLASWAG_TEST_SIZE)]}


def nlrx_examples(name: str, src: str, targ: str) -> list[dict]:
    """NL-RX is a parallel corpus: line i of src.txt describes line i of targ.txt.
    Both are kept verbatim (case, inner double spaces, dk.brics `&` and `~`)."""
    descriptions, regexes = text_lines(src), text_lines(targ)
    if len(descriptions) != len(regexes):
        raise ValueError(f"NL-RX-{name}: {len(descriptions)} descriptions but {len(regexes)} regexes")
    return [nlrx_example(name, d, r) for d, r in zip(descriptions, regexes)]


def text_lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:  # the newline that ends the file
        lines.pop()
    return lines


def build_nlrx(name: str, up: Upstream) -> Output:
    """The 10000 pairs split 80/20 with seed 42 -> 8000 / 2000: exactly the published
    files (Synth and Turk share the permutation, so their rows stay aligned)."""
    (files,) = up["all"]
    train, test = split_like_hf(nlrx_examples(name, files["src"], files["targ"]), NLRX_TEST_FRACTION)
    return {"train": train, "test": test}


def paraphrase_groups(rows: Iterable[Mapping]) -> list[list[str]]:
    """Texts grouped by `paraphrase_set_id`, groups and members in upstream order; a
    group needs two members to give a pair."""
    groups: dict[Any, list[str]] = {}
    for row in rows:
        groups.setdefault(row["paraphrase_set_id"], []).append(row["text"].strip())
    return [g for g in groups.values() if len(g) >= 2]


def paraphrase_examples(groups: Sequence[list[str]]) -> list[dict]:
    """One example per member. The assistant content is the group's index in the file
    ("0", "1", ...): the t-SNE of `evaluate.py --t_sne_type paraphrase` colours by
    int(answer). The `text`/`code` views pair member i with member i+1 of its group
    (cyclically), the paper's "i-th version predicts the (i+1)-th" (they are used as
    the JEPA views only where the registry sets view_fields for paraphrase)."""
    out = []
    for label, group in enumerate(groups):
        for i, text in enumerate(group):
            following = group[(i + 1) % len(group)]
            out.append(example("paraphrase", text, str(label),
                               text=[message("user", text)], code=[message("assistant", following)]))
    return out


def build_paraphrase(up: Upstream) -> Output:
    """A seeded sample of 2000 paraphrase groups of the `coco` split (five captions of
    one image per group), every member of each: train only."""
    return {"train": paraphrase_examples(seeded_subset(paraphrase_groups(up["coco"]), PARAPHRASE_GROUPS))}


# --------------------------------------------------------------------------------------
# Fetchers: the only code that needs a network
# --------------------------------------------------------------------------------------
def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_hf(path: str, split: str, config: str | None = None) -> Rows:
    """One split of a Hugging Face dataset, as a `datasets.Dataset`."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise PrepareError("the Hugging Face `datasets` library is needed: pip install datasets") from err
    where = f"{path}" + (f" ({config})" if config else "") + f" split {split!r}"
    logger.info("loading %s", where)
    try:
        return load_dataset(path, config, split=split)
    except Exception as err:  # network, hub and library errors all end the same way
        raise PrepareError(f"could not load {where}: {one_line(err)}") from err


def fetch_url(url: str, timeout: float = 120.0) -> bytes:
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except Exception as err:
        raise PrepareError(f"could not download {url}: {one_line(err)}") from err


def fetch_jsonl(url: str) -> list[dict]:
    return [json.loads(line) for line in fetch_url(url).decode("utf-8").splitlines() if line.strip()]


def fetch_nlrx(name: str) -> Upstream:
    folder = name.capitalize()  # NL-RX-Synth, NL-RX-Turk
    files = {part: fetch_url(NLRX_URL.format(folder, part)).decode("utf-8") for part in ("src", "targ")}
    return {"all": [files]}


def fetch_splits(path: str, splits: Iterable[str], config: str | None = None) -> Upstream:
    return {split: load_hf(path, split, config) for split in splits}


# --------------------------------------------------------------------------------------
# The recipes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    name: str
    source: str                              # where the rows come from (for `list`)
    fetch: Callable[[], Upstream]
    build: Callable[[Upstream], Output]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("synth", "github nicholaslocascio/deep-regex datasets/NL-RX-Synth/{src,targ}.txt",
           lambda: fetch_nlrx("synth"), lambda up: build_nlrx("synth", up)),
    Recipe("turk", "github nicholaslocascio/deep-regex datasets/NL-RX-Turk/{src,targ}.txt",
           lambda: fetch_nlrx("turk"), lambda up: build_nlrx("turk", up)),
    Recipe("gsm8k", "hf openai/gsm8k (main): train, test",
           lambda: fetch_splits("openai/gsm8k", ("train", "test"), "main"), build_gsm8k),
    Recipe("spider", "hf xlangai/spider: train + validation",
           lambda: fetch_splits("xlangai/spider", ("train", "validation")), build_spider),
    Recipe("nq_open", "hf google-research-datasets/nq_open: train; github natural-questions "
                      "nq_open/NQ-open.efficientqa.test.1.1.jsonl",
           lambda: {"train": load_hf("google-research-datasets/nq_open", "train"),
                    "efficientqa_test": fetch_jsonl(EFFICIENTQA_TEST_URL)}, build_nq_open),
    Recipe("hellaswag", "hf Rowan/hellaswag: train, validation",
           lambda: fetch_splits("Rowan/hellaswag", ("train", "validation")), build_hellaswag),
    Recipe("rotten_tomatoes", "hf cornell-movie-review-data/rotten_tomatoes: train, test",
           lambda: fetch_splits("cornell-movie-review-data/rotten_tomatoes", ("train", "test")),
           build_rotten_tomatoes),
    Recipe("yelp", "hf Yelp/yelp_review_full: train, test",
           lambda: fetch_splits("Yelp/yelp_review_full", ("train", "test")), build_yelp),
    Recipe("paraphrase", "hf cestwc/paraphrase: coco",
           lambda: fetch_splits("cestwc/paraphrase", ("coco",)), build_paraphrase),
)}

SPIDER_DATA = "spider_data"  # the pseudo-dataset: the Spider SQLite databases


def resolve_names(names: Iterable[str]) -> list[str]:
    """`all` expands to every registered dataset; unknown names are an error."""
    out: list[str] = []
    for name in names:
        expanded = list(RECIPES) if name == "all" else [name]
        for n in expanded:
            if n not in RECIPES and n != SPIDER_DATA:
                known = ", ".join([*RECIPES, SPIDER_DATA, "all"])
                raise PrepareError(f"unknown dataset {n!r}; known: {known}")
            if n not in out:
                out.append(n)
    return out


def write_output(name: str, output: Output, out_dir: Path) -> dict[str, Path]:
    """Write the splits a dataset has (paraphrase has no test file)."""
    splits = ("train", "test") if get_dataset(name).has_test else ("train",)
    if set(output) != set(splits):
        raise PrepareError(f"{name}: the builder gave splits {sorted(output)}, expected {list(splits)}")
    paths = {}
    for split in splits:
        path = Path(out_dir) / f"{name}_{split}.jsonl"
        n = write_jsonl(path, output[split])
        logger.info("%s: wrote %d rows to %s", name, n, path)
        paths[split] = path
    return paths


def prepare_dataset(name: str, out_dir: Path) -> dict[str, Path]:
    """Download one dataset's upstream rows, convert them and write its files."""
    recipe = RECIPES[name]
    upstream = recipe.fetch()
    try:
        output = recipe.build(upstream)
    except (KeyError, ValueError, TypeError, IndexError) as err:  # upstream schema changed
        raise PrepareError(f"{name}: unexpected upstream rows ({recipe.source}): {one_line(err)}") from err
    return write_output(name, output, out_dir)


# --------------------------------------------------------------------------------------
# The Spider databases
# --------------------------------------------------------------------------------------
def spider_root(names: Iterable[str]) -> str:
    """The folder inside the archive that holds tables.json and database/."""
    names = [n for n in names if not n.startswith("__MACOSX/")]
    tables = sorted((n for n in names if PurePosixPath(n).name == "tables.json"), key=len)
    for t in tables:
        root = t[: -len("tables.json")]
        if any(n.startswith(root + "database/") for n in names):
            return root
    raise PrepareError("the archive has no tables.json beside a database/ folder; is it the Spider release?")


def unpack_spider(zip_path: Path, out_dir: Path) -> Path:
    """Extract `database/<db_id>/<db_id>.sqlite` (with schema.sql) and `tables.json`
    from a Spider release zip into out_dir, dropping the archive's top folder."""
    out_dir = Path(out_dir)
    with zipfile.ZipFile(zip_path) as zf:
        root = spider_root(zf.namelist())
        wanted = [n for n in zf.namelist()
                  if n == root + "tables.json" or (n.startswith(root + "database/") and not n.endswith("/"))]
        for member in wanted:
            rel = PurePosixPath(member[len(root):])
            if rel.is_absolute() or ".." in rel.parts:  # never write outside out_dir
                raise PrepareError(f"refusing the archive member {member!r}")
            target = out_dir.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    n_db = sum(1 for p in (out_dir / "database").glob("*/*.sqlite"))
    logger.info("spider_data: %d databases and tables.json in %s", n_db, out_dir)
    return out_dir


def prepare_spider_data(out_dir: Path, url: str = SPIDER_ZIP_URL) -> Path:
    """Download (or, given a local path, read) the Spider release zip and unpack it."""
    if Path(url).is_file():
        return unpack_spider(Path(url), out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "spider_data.zip"
        logger.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=300) as resp, open(zip_path, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except Exception as err:
            raise PrepareError(f"could not download the Spider databases from {url}: {one_line(err)}") from err
        if not zipfile.is_zipfile(zip_path):
            raise PrepareError(f"{url} did not return a zip archive (a download page?); "
                               "download spider_data.zip by hand and pass its path as --spider_url")
        return unpack_spider(zip_path, out_dir)
