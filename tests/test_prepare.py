"""Rebuilding the published datasets from upstream rows (no network: the upstream rows
are written here in their upstream schema, or rebuilt from ../shared when present)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llm_jepa import data as D
from llm_jepa.corpora import DATASETS, dataset_for_path
from llm_jepa.corpora import __main__ as cli
from llm_jepa.corpora import prepare as P

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_lines(filename: str) -> list[str]:
    """The published file's lines (with their newline), or skip without ../shared."""
    path = SHARED / "datasets" / filename
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def chat(system: str, user: str, assistant: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user},
            {"role": "assistant", "content": assistant}]


def written(tmp_path: Path, rows: list[dict]) -> bytes:
    path = tmp_path / "out.jsonl"
    P.write_jsonl(path, rows)
    return path.read_bytes()


# --------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------
def test_line_format_is_json_dumps_defaults(tmp_path):
    row = P.example("gsm8k", "Janet\u2019s ducks?", "2 + 2 = <<2+2=4>>4\n#### 4")
    line = P.to_line(row)
    assert line == ('{"messages": [{"role": "system", "content": "Answer the math question, show steps."}, '
                    '{"role": "user", "content": "Janet\\u2019s ducks?"}, '
                    '{"role": "assistant", "content": "2 + 2 = <<2+2=4>>4\\n#### 4"}]}\n')
    assert written(tmp_path, [row, row]) == (line * 2).encode("ascii")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_every_registered_dataset_has_a_recipe():
    assert set(P.RECIPES) == set(DATASETS)
    for name, recipe in P.RECIPES.items():
        assert recipe.source and callable(recipe.fetch) and callable(recipe.build), name


# --------------------------------------------------------------------------------------
# gsm8k
# --------------------------------------------------------------------------------------
def test_gsm8k_converter():
    rows = [{"question": "Tom has 3 apples and eats one. How many are left?",
             "answer": "He has 3 - 1 = <<3-1=2>>2 left.\n#### 2"},
            {"question": "What is 6 x 7?", "answer": "6 x 7 = <<6*7=42>>42\n#### 42"}]
    out = P.build_gsm8k({"train": rows, "test": rows[1:]})
    assert [len(out["train"]), len(out["test"])] == [2, 1]
    assert out["train"][0] == {"messages": chat("Answer the math question, show steps.",
                                                rows[0]["question"], rows[0]["answer"])}
    assert out["test"][0]["messages"][2]["content"].endswith("#### 42")


@pytest.mark.parametrize("split", ["train", "test"])
def test_gsm8k_reproduces_the_published_file_byte_for_byte(split, tmp_path):
    lines = shared_lines(f"gsm8k_{split}.jsonl")
    upstream = [{"question": m[1]["content"], "answer": m[2]["content"]}
                for m in (json.loads(line)["messages"] for line in lines)]
    out = P.build_gsm8k({"train": upstream, "test": upstream})[split]
    assert written(tmp_path, out) == "".join(lines).encode("utf-8")


# --------------------------------------------------------------------------------------
# hellaswag
# --------------------------------------------------------------------------------------
ACTIVITYNET = {"ind": 5, "activity_label": "Making a sandwich", "ctx_a": "A woman stands at a kitchen counter.",
               "ctx_b": "she", "ctx": "A woman stands at a kitchen counter. she",
               "endings": ["spreads butter on two slices of bread.", "jumps into the pool.",
                           "drives the car away.", "paints the fence blue."],
               "source_id": "activitynet~v_x", "split": "val", "split_type": "indomain", "label": "0"}
WIKIHOW = {"ind": 9, "activity_label": "Home and Garden",
           "ctx_a": "[header] How to water a plant [title] Check the soil. [step] Push a finger into it.",
           "ctx_b": "", "ctx": "[header] How to water a plant [title] Check the soil. [step] Push a finger into it.",
           "endings": ["[substeps] Sing to it.", "[substeps] Paint it.",
                       "If it is dry, water it. [title] Water slowly.", "[substeps] Sell it."],
           "source_id": "wikihow~1", "split": "val", "split_type": "zeroshot", "label": "2"}


def test_hellaswag_converter():
    row = P.hellaswag_example(ACTIVITYNET)
    assert list(row) == ["messages", "text", "code", "hellaswag"]  # the published order, then ours
    system = DATASETS["hellaswag"].system_prompt
    assert row["messages"] == chat(system, "A woman stands at a kitchen counter. she\n"
                                           "A) spreads butter on two slices of bread.\n"
                                           "B) jumps into the pool.\nC) drives the car away.\n"
                                           "D) paints the fence blue.", "A")
    assert row["text"] == [{"role": "user", "content": "A woman stands at a kitchen counter. she"}]
    assert row["code"] == [{"role": "assistant", "content": "spreads butter on two slices of bread."}]
    # lm-eval's inputs, verbatim: ctx_b is not capitalised here (evaluation does that)
    assert row["hellaswag"] == {"activity_label": "Making a sandwich", "ctx_a": "A woman stands at a kitchen counter.",
                                "ctx_b": "she", "endings": ACTIVITYNET["endings"]}

    wiki = P.hellaswag_example(WIKIHOW)  # markers kept, no trailing space from the empty ctx_b
    assert wiki["messages"][1]["content"].startswith("[header] How to water a plant [title] Check the soil. "
                                                     "[step] Push a finger into it.\nA) [substeps] Sing to it.\n")
    assert wiki["messages"][2]["content"] == "C"
    assert wiki["code"][0]["content"] == "If it is dry, water it. [title] Water slowly."
    assert wiki["hellaswag"] == {k: WIKIHOW[k] for k in ("activity_label", "ctx_a", "ctx_b", "endings")}
    no_ctx = {k: v for k, v in WIKIHOW.items() if k != "ctx"}
    assert P.hellaswag_example(no_ctx) == wiki  # ctx_a + " " + ctx_b when ctx is absent
    with pytest.raises(ValueError, match="no label"):
        P.hellaswag_example({**ACTIVITYNET, "label": ""})  # the upstream test split


def test_hellaswag_test_is_a_seeded_subset_of_validation():
    rows = [{**ACTIVITYNET, "ind": i, "label": str(i % 4)} for i in range(2500)]
    out = P.build_hellaswag({"train": rows[:3], "validation": rows})
    assert len(out["train"]) == 3 and len(out["test"]) == P.HELLASWAG_TEST_SIZE
    picked = P.seeded_subset(list(range(2500)), P.HELLASWAG_TEST_SIZE)
    assert [r["messages"][2]["content"] for r in out["test"][:20]] == ["ABCD"[i % 4] for i in picked[:20]]


def hellaswag_upstream(row: dict, split_ctx: bool) -> dict:
    """Upstream fields rebuilt from a published row: the context, the endings from the
    option lines, the label from the letter; ActivityNet contexts are split back into
    ctx_a and the lower-case ctx_b after the last ". ". The published rows do not keep
    the activity label: a stand-in."""
    context = row["text"][0]["content"]
    endings = [line[3:] for line in row["messages"][1]["content"].split("\n")[1:]]
    label = str("ABCD".index(row["messages"][2]["content"]))
    cut = context.rfind(". ")
    common = {"activity_label": "Some activity", "endings": endings, "label": label}
    if not split_ctx or context.startswith("[header]") or cut < 0:
        return {"ctx": context, "ctx_a": context, "ctx_b": "", **common}
    return {"ctx_a": context[:cut + 1], "ctx_b": context[cut + 2:], **common}


@pytest.mark.parametrize("split_ctx", [False, True])
def test_hellaswag_rebuilds_published_rows(split_ctx):
    lines = shared_lines("hellaswag_test.jsonl")[:300]
    for line in lines:
        upstream = hellaswag_upstream(json.loads(line), split_ctx)
        rebuilt = P.hellaswag_example(upstream)
        # our extra field holds the upstream fields; without it the line is the published one
        assert rebuilt.pop("hellaswag") == {k: upstream[k] for k in ("activity_label", "ctx_a", "ctx_b", "endings")}
        assert P.to_line(rebuilt) == line


# --------------------------------------------------------------------------------------
# nq_open
# --------------------------------------------------------------------------------------
# The first rows of NQ-open.efficientqa.test.1.1.jsonl, in their upstream schema.
EFFICIENTQA = [
    {"question": "on the 6th day of christmas my true love sent to me",
     "def_correct_predictions": ["six geese a-laying"], "poss_correct_predictions": ["five gold rings"],
     "answer": ["6 geese a-laying", "maids a-milking"],
     "answer_and_def_correct_predictions": ["6 geese a-laying", "maids a-milking", "six geese a-laying"]},
    {"question": "how many 5 star generals are there in the us", "def_correct_predictions": [],
     "poss_correct_predictions": [], "answer": ["Nine"], "answer_and_def_correct_predictions": ["Nine"]},
    {"question": "who killed natalie and ann in sharp objects", "def_correct_predictions": [],
     "poss_correct_predictions": [], "answer": ["Amma"], "answer_and_def_correct_predictions": ["Amma"]},
    {"question": "how many costco locations are there in the us", "def_correct_predictions": [],
     "poss_correct_predictions": [], "answer": ["759", "527"],
     "answer_and_def_correct_predictions": ["759", "527"]},
]


def test_nq_open_converter():
    row = P.nq_open_example({"question": "who wrote hamlet", "answer": ["Shakespeare", "William Shakespeare"]})
    assert row == {"messages": chat("Answer the question below.", "who wrote hamlet",
                                    "Shakespeare; William Shakespeare")}
    train = [{"question": f"q{i}", "answer": [f"a{i}"]} for i in range(10)]
    out = P.build_nq_open({"train": train, "efficientqa_test": EFFICIENTQA})
    assert len(out["train"]) == 10  # fewer upstream rows than the subset size: all of them
    assert [r["messages"][2]["content"] for r in out["test"]] == [
        "6 geese a-laying; maids a-milking", "Nine", "Amma", "759; 527"]  # `answer` only, in order


def test_nq_open_test_is_efficientqa_test_in_order():
    lines = shared_lines("nq_open_test.jsonl")
    assert len(lines) == 1769
    out = P.build_nq_open({"train": [], "efficientqa_test": EFFICIENTQA})
    assert [P.to_line(r) for r in out["test"]] == lines[:len(EFFICIENTQA)]


# --------------------------------------------------------------------------------------
# rotten_tomatoes, yelp
# --------------------------------------------------------------------------------------
def test_label_converters():
    system = "Determine whether the comment is positive or negative"
    rows = [{"text": "a gorgeous , witty film .", "label": 1}, {"text": "a dull mess .", "label": 0}]
    out = P.build_rotten_tomatoes({"train": rows, "test": rows})
    assert [r["messages"] for r in out["test"]] == [chat(system, rows[0]["text"], "Good"),
                                                    chat(system, rows[1]["text"], "Bad")]
    yelp = [{"label": k, "text": f"review {k}\\nsecond line"} for k in range(5)]
    assert [P.yelp_example(r)["messages"][2]["content"] for r in yelp] == [
        "Very Bad", "Bad", "Mediocre", "Good", "Very Good"]
    assert P.yelp_example(yelp[0])["messages"][1]["content"] == "review 0\\nsecond line"  # kept verbatim
    out = P.build_yelp({"train": yelp * 3, "test": yelp})
    assert len(out["train"]) == 15 and len(out["test"]) == 5


@pytest.mark.parametrize("name,labels", [("rotten_tomatoes", P.ROTTEN_TOMATOES_LABELS), ("yelp", P.YELP_LABELS)])
def test_label_datasets_rebuild_published_rows(name, labels):
    lines = shared_lines(f"{name}_test.jsonl")
    convert = P.rotten_tomatoes_example if name == "rotten_tomatoes" else P.yelp_example
    seen = set()
    for line in lines:
        messages = json.loads(line)["messages"]
        label = labels.index(messages[2]["content"])
        seen.add(label)
        assert P.to_line(convert({"text": messages[1]["content"], "label": label})) == line
    assert seen == set(range(len(labels)))


def test_rotten_tomatoes_keeps_upstream_order():
    lines = shared_lines("rotten_tomatoes_train.jsonl")
    answers = [json.loads(line)["messages"][2]["content"] for line in lines]
    assert answers == ["Good"] * 4265 + ["Bad"] * 4265  # upstream train: all pos, then all neg


# --------------------------------------------------------------------------------------
# spider
# --------------------------------------------------------------------------------------
def spider_row(db_id: str, question: str, query: str) -> dict:
    return {"db_id": db_id, "query": query, "question": question, "query_toks": query.split(),
            "query_toks_no_value": query.split(), "question_toks": question.split()}


def test_spider_converter():
    row = P.spider_example(spider_row("concert_singer", "How many singers do we have?",
                                      "SELECT count(*) FROM singer"))
    assert row == {"messages": chat("Convert natural language to SQL.",
                                    "For db_id:[concert_singer]\n\nHow many singers do we have?",
                                    "SELECT count(*) FROM singer")}


def test_spider_split_is_train_plus_dev_split_82_18_with_seed_42():
    # upstream train row 0 (train_spider) and validation row 0 (dev), padded to the real sizes
    train = [spider_row("department_management", "How many heads of the departments are older than 56 ?",
                        "SELECT count(*) FROM head WHERE age  >  56")]
    train += [spider_row("filler", f"q{i}", f"SELECT {i}") for i in range(1, 7000)]
    dev = [spider_row("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer")]
    dev += [spider_row("filler", f"d{i}", f"SELECT {i}") for i in range(1, 1034)]
    out = P.build_spider({"train": train, "validation": dev})
    assert [len(out["train"]), len(out["test"])] == [6587, 1447]
    first, dev_first = P.to_line(out["train"][4553]), P.to_line(out["train"][1674])
    assert "older than 56" in first and "How many singers" in dev_first
    lines = shared_lines("spider_train.jsonl")
    assert [lines[4553], lines[1674]] == [first, dev_first]  # where the published file has them


def test_spider_rebuilds_published_rows():
    for line in shared_lines("spider_test.jsonl")[:300]:
        messages = json.loads(line)["messages"]
        head, question = messages[1]["content"].split("\n\n", 1)
        db_id = head[len("For db_id:["):-1]
        assert P.to_line(P.spider_example(spider_row(db_id, question, messages[2]["content"]))) == line


# --------------------------------------------------------------------------------------
# NL-RX (synth, turk)
# --------------------------------------------------------------------------------------
def test_nlrx_pairs_lines_verbatim():
    src = "Lines that have words containing a capital letter\r\nlines with  string 'dog' before a number\n"
    targ = "\\b([A-Z])\\b\r\n((dog)&(truck)).*([0-9]).*\n"
    rows = P.nlrx_examples("turk", src, targ)
    system = "Convert natural language to regular expression."
    assert [r["messages"] for r in rows] == [
        chat(system, "Lines that have words containing a capital letter", "\\b([A-Z])\\b"),
        chat(system, "lines with  string 'dog' before a number", "((dog)&(truck)).*([0-9]).*")]
    with pytest.raises(ValueError, match="2 descriptions but 1 regexes"):
        P.nlrx_examples("turk", src, "[0-9]\n")


# Upstream NL-RX-Turk lines 0 and 6 (src.txt, targ.txt) and NL-RX-Synth line 0.
TURK = {0: ("Lines that have words containing a capital letter as well as a vowel",
            "\\b([A-Z])&([AEIOUaeiou])\\b"),
        6: ("lines which are ending with a letter followed by a number", "(.*)([A-Za-z].*[0-9].*)")}
SYNTH_0 = "lines with words with a capital letter and a vowel"


def nlrx_upstream(known: dict[int, tuple[str, str]]) -> dict:
    pairs = [known.get(i, (f"description {i}", f"regex{i}")) for i in range(10000)]
    return {"all": [{"src": "\n".join(p[0] for p in pairs) + "\n", "targ": "\n".join(p[1] for p in pairs) + "\n"}]}


def test_nlrx_split_is_80_20_with_seed_42():
    out = P.build_nlrx("turk", nlrx_upstream(TURK))
    assert [len(out["train"]), len(out["test"])] == [8000, 2000]
    train_0, test_6 = P.to_line(out["train"][2482]), P.to_line(out["test"][989])
    assert TURK[0][0] in train_0 and TURK[6][0] in test_6
    assert [shared_lines("turk_train.jsonl")[2482], shared_lines("turk_test.jsonl")[989]] == [train_0, test_6]
    synth = P.build_nlrx("synth", nlrx_upstream({0: (SYNTH_0, TURK[0][1])}))
    assert shared_lines("synth_train.jsonl")[2482] == P.to_line(synth["train"][2482])


def test_synth_and_turk_rows_are_aligned():
    synth = [json.loads(line)["messages"][2]["content"] for line in shared_lines("synth_test.jsonl")]
    turk = [json.loads(line)["messages"][2]["content"] for line in shared_lines("turk_test.jsonl")]
    assert synth == turk  # one permutation for both: the same regex on every line


# --------------------------------------------------------------------------------------
# paraphrase
# --------------------------------------------------------------------------------------
PARAPHRASE = [{"paraphrase_set_id": 70, "text": "A cat sleeps on a mat. ", "id": 0},
              {"paraphrase_set_id": 70, "text": "A cat is asleep on a rug.", "id": 1},
              {"paraphrase_set_id": 12, "text": "A lonely caption.", "id": 2},
              {"paraphrase_set_id": 33, "text": "Two dogs run.", "id": 3},
              {"paraphrase_set_id": 70, "text": "A sleeping cat on a mat.", "id": 4},
              {"paraphrase_set_id": 33, "text": "A pair of dogs running.", "id": 5}]


def test_paraphrase_groups_and_views():
    groups = P.paraphrase_groups(PARAPHRASE)
    assert groups == [["A cat sleeps on a mat.", "A cat is asleep on a rug.", "A sleeping cat on a mat."],
                      ["Two dogs run.", "A pair of dogs running."]]  # singletons dropped, text stripped
    rows = P.paraphrase_examples(groups)
    assert [r["messages"][2]["content"] for r in rows] == ["0", "0", "0", "1", "1"]
    assert [int(r["messages"][2]["content"]) for r in rows]  # what --t_sne_type paraphrase needs
    assert [r["text"][0]["content"] for r in rows] == [r["messages"][1]["content"] for r in rows]
    assert [r["code"][0]["content"] for r in rows] == [
        "A cat is asleep on a rug.", "A sleeping cat on a mat.", "A cat sleeps on a mat.",
        "A pair of dogs running.", "Two dogs run."]  # member i -> member i+1, cyclically
    assert rows[0]["messages"][0] == {"role": "system", "content": DATASETS["paraphrase"].system_prompt}


def test_paraphrase_build_is_seeded_and_train_only():
    rows = [{"paraphrase_set_id": g, "text": f"caption {g}.{k}", "id": 5 * g + k} for g in range(50) for k in range(5)]
    out = P.build_paraphrase({"coco": rows})
    assert list(out) == ["train"] and len(out["train"]) == 250
    assert out == P.build_paraphrase({"coco": rows})
    first_group = out["train"][0]["messages"][1]["content"].split(" ")[1].split(".")[0]
    assert int(first_group) == P.seeded_subset(list(range(50)), 50)[0]


# --------------------------------------------------------------------------------------
# seeded selections match the Hugging Face library's
# --------------------------------------------------------------------------------------
def test_selections_match_hf_datasets():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"i": list(range(1000))})
    split = ds.train_test_split(test_size=0.18, seed=42)
    train, test = P.split_like_hf(list(range(1000)), 0.18)
    assert (split["train"]["i"], split["test"]["i"]) == (train, test)
    assert ds.shuffle(seed=42).select(range(100))["i"] == P.seeded_subset(list(range(1000)), 100)


# --------------------------------------------------------------------------------------
# outputs validate
# --------------------------------------------------------------------------------------
def sample_outputs() -> dict[str, list[dict]]:
    return {
        "gsm8k": [P.gsm8k_example({"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"})],
        "hellaswag": [P.hellaswag_example(ACTIVITYNET), P.hellaswag_example(WIKIHOW)],
        "nq_open": [P.nq_open_example(r) for r in EFFICIENTQA],
        "rotten_tomatoes": [P.rotten_tomatoes_example({"text": "fine .", "label": 1})],
        "yelp": [P.yelp_example({"text": "ok", "label": 2})],
        "spider": [P.spider_example(spider_row("pets_1", "How many pets?", "SELECT count(*) FROM pets"))],
        "synth": P.nlrx_examples("synth", "lines with a vowel\n", "([AEIOUaeiou]).*\n"),
        "turk": P.nlrx_examples("turk", "Lines having a vowel\n", "([AEIOUaeiou]).*\n"),
        "paraphrase": P.paraphrase_examples(P.paraphrase_groups(PARAPHRASE)),
    }


def test_outputs_validate_with_read_examples(tmp_path):
    outputs = sample_outputs()
    assert set(outputs) == set(DATASETS)
    for name, rows in outputs.items():
        paths = P.write_output(name, {"train": rows, "test": rows} if DATASETS[name].has_test else {"train": rows},
                               tmp_path)
        for path in paths.values():
            assert dataset_for_path(path).name == name
            assert D.read_examples(path, needs_view_fields=DATASETS[name].view_fields) == rows
    assert not (tmp_path / "paraphrase_test.jsonl").exists()
    with pytest.raises(P.PrepareError, match="expected"):
        P.write_output("gsm8k", {"train": outputs["gsm8k"]}, tmp_path)


# --------------------------------------------------------------------------------------
# download step: errors are one line
# --------------------------------------------------------------------------------------
def test_load_hf_wraps_errors(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\n(a second line)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(P.PrepareError) as err:
        P.load_hf("openai/gsm8k", "train", "main")
    assert str(err.value) == ("could not load openai/gsm8k (main) split 'train': "
                              "ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub")


def test_load_hf_without_the_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(P.PrepareError, match="pip install datasets"):
        P.load_hf("openai/gsm8k", "train")


def test_fetch_url_error_is_one_line():
    with pytest.raises(P.PrepareError, match=r"^could not download http://127\.0\.0\.1:9/x: ") as err:
        P.fetch_url("http://127.0.0.1:9/x", timeout=5)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------
def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, info in DATASETS.items():
        assert name in out and info.system_prompt in out
    assert "spider_data" in out and "openai/gsm8k" in out


def test_cli_unknown_name_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm_jepa.corpora", "prepare", "gsm8k", "nope",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: unknown dataset 'nope'; known: synth, turk,")
    assert not list(tmp_path.iterdir())  # nothing is fetched before the names are checked


def test_resolve_names():
    assert P.resolve_names(["all"]) == list(P.RECIPES)
    assert P.resolve_names(["spider", "spider_data", "spider"]) == ["spider", "spider_data"]


def offline_recipe(monkeypatch, name: str, upstream=None, error: str | None = None) -> None:
    def fetch():
        if error:
            raise P.PrepareError(error)
        return upstream

    monkeypatch.setitem(P.RECIPES, name, dataclasses.replace(P.RECIPES[name], fetch=fetch))


def test_cli_prepare_writes_files(monkeypatch, tmp_path):
    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    offline_recipe(monkeypatch, "gsm8k", {"train": rows, "test": rows[:1]})
    assert cli.main(["prepare", "gsm8k", "--out", str(tmp_path / "datasets")]) == 0
    train = D.read_examples(tmp_path / "datasets" / "gsm8k_train.jsonl")
    assert [r["messages"][1]["content"] for r in train] == ["1+1?", "2+2?"]
    assert len(D.read_examples(tmp_path / "datasets" / "gsm8k_test.jsonl")) == 1


def test_cli_download_failure_is_one_line(monkeypatch, tmp_path, capsys):
    offline_recipe(monkeypatch, "gsm8k", error="could not load openai/gsm8k (main) split 'train': ConnectionError")
    assert cli.main(["prepare", "gsm8k", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "error: could not load openai/gsm8k (main) split 'train': ConnectionError\n"


def test_cli_unexpected_upstream_schema_is_one_line(monkeypatch, tmp_path, capsys):
    offline_recipe(monkeypatch, "gsm8k", {"train": [{"problem": "renamed column"}], "test": []})
    assert cli.main(["prepare", "gsm8k", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: gsm8k: unexpected upstream rows") and err.count("\n") == 1


# --------------------------------------------------------------------------------------
# the Spider databases
# --------------------------------------------------------------------------------------
def spider_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    members = {"spider_data/tables.json": b"[]", "spider_data/database/pets_1/pets_1.sqlite": b"SQLite format 3\0",
               "spider_data/database/pets_1/schema.sql": b"CREATE TABLE pets(x);",
               "spider_data/train_spider.json": b"[]", "spider_data/test_data/tables.json": b"[]",
               "__MACOSX/spider_data/tables.json": b"junk", **(extra or {})}
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def test_cli_prepare_spider_data_from_a_local_zip(tmp_path):
    out = tmp_path / "spider_data"
    assert cli.main(["prepare", "spider_data", "--out", str(out),
                     "--spider_url", str(spider_zip(tmp_path / "spider.zip"))]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["database/pets_1/pets_1.sqlite", "database/pets_1/schema.sql", "tables.json"]
    assert (out / "tables.json").read_bytes() == b"[]"


def test_spider_with_spider_out(monkeypatch, tmp_path):
    row = spider_row("pets_1", "How many pets?", "SELECT count(*) FROM pets")
    offline_recipe(monkeypatch, "spider", {"train": [row] * 8, "validation": [row] * 2})
    assert cli.main(["prepare", "spider", "--out", str(tmp_path / "d"), "--spider_out", str(tmp_path / "s"),
                     "--spider_url", str(spider_zip(tmp_path / "spider.zip"))]) == 0
    assert len(D.read_examples(tmp_path / "d" / "spider_train.jsonl")) == 8  # 10 rows, 18% test: 2
    assert (tmp_path / "s" / "database" / "pets_1" / "pets_1.sqlite").exists()


def test_unpack_spider_refuses_bad_archives(tmp_path):
    evil = spider_zip(tmp_path / "evil.zip", {"spider_data/database/../../evil.txt": b"x"})
    with pytest.raises(P.PrepareError, match="refusing"):
        P.unpack_spider(evil, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "not spider")
    with pytest.raises(P.PrepareError, match="tables.json"):
        P.unpack_spider(other, tmp_path / "out2")
