"""Training input validation (issue 9, items 7-12): numeric flags, input files and model
paths checked before anything loads; answers that truncation cuts off; empty answers;
non-UTF-8 files; message text that contains the renderer's private-use marker."""
from __future__ import annotations

import json
import logging

import pytest

from conftest import example, real_tokenizer, synthetic_rows, write_jsonl
from llm_jepa import data as D
from llm_jepa import train as T
from llm_jepa.config import ConfigError, TrainConfig, parse_args
from llm_jepa.families import family_by_name
from llm_jepa.modeling import model_path_problem

LLAMA = family_by_name("llama")


def flag_error(capsys, *argv) -> str:
    """The one-line problems parse_args reports (it exits with status 2)."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--train_file", "x", *argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err


def features(tok, rows, max_length=512, paper_compat=False, opts=None, name="train"):
    renderer = D.ViewRenderer(tok, LLAMA, opts or D.ViewOptions(), {})
    vtok = D.ViewTokenizer(tok, D.TokenizeOptions(max_length, paper_compat, -1 if paper_compat else None, paper_compat))
    return D.tokenize_examples(rows, renderer, vtok, with_views=True, name=name)


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if the pipeline gets as far as the model family, tokenizer or model."""
    def loaded(*args, **kwargs):
        raise AssertionError("something was loaded before the input was checked")

    for name in ("detect_family", "setup_tokenizer", "load_model"):
        monkeypatch.setattr(T, name, loaded)


# --------------------------------------------------------------------------------------
# item 7: numeric flags
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--lbd", "--gamma", "--learning_rate", "--jepa_ratio", "--eval_split"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_flags_are_refused(capsys, flag, value):
    err = flag_error(capsys, f"{flag}={value}")  # '=': argparse takes a bare -inf for an option
    assert f"{flag} must be a finite number, got {float(value)}" in err


@pytest.mark.parametrize("argv,message", [
    (["--lbd", "-1"], "--lbd must be 0 or positive (a negative weight maximises the JEPA loss), got -1.0"),
    (["--gamma", "-0.5"], "--gamma must be 0 or positive"),
    (["--learning_rate=-2e-5"], "--learning_rate must be positive, got -2e-05"),
    (["--learning_rate", "0"], "--learning_rate must be positive, got 0.0"),
    (["--jepa_ratio", "0"], "--jepa_ratio must be in (0, 1]"),
    (["--jepa_ratio", "-0.5"], "--jepa_ratio must be in (0, 1]"),
    (["--jepa_ratio", "1.5"], "--jepa_ratio must be in (0, 1]"),
    (["--eval_split", "1"], "--eval_split must be in [0, 1), got 1.0"),
    (["--finetune_seed", "-1"], "--finetune_seed must be between 0 and 2**32 - 1, got -1"),
    (["--split_seed", str(2 ** 32)], "--split_seed must be between 0 and 2**32 - 1"),
    (["--gamma", "0", "--regular"], "--gamma 0 with --regular leaves no loss to train"),
    (["--gamma", "0", "--lbd", "0"], "--gamma 0 with --lbd 0 leaves no loss to train"),
])
def test_out_of_range_values_are_refused(capsys, argv, message):
    assert message in flag_error(capsys, *argv)


@pytest.mark.parametrize("argv", [["--jepa_ratio", "1"], ["--jepa_ratio", "0.25"], ["--jepa_ratio", "-1"],
                                  ["--lbd", "0"], ["--gamma", "0", "--lbd", "1"], ["--eval_split", "0"],
                                  ["--finetune_seed", "0"], ["--learning_rate", "1e-3"]])
def test_values_in_range_are_accepted(argv):
    parse_args(["--train_file", "x", *argv])


def test_every_problem_at_once_before_anything_loads(tmp_path, capsys, nothing_loads):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        T.main(["--train_file", str(tmp_path / "missing.jsonl"), "--eval_file", str(tmp_path),
                "--model_name", str(tmp_path / "no-model"), "--output_dir", str(out),
                "--lbd", "nan", "--gamma", "-1", "--jepa_ratio", "nan"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for problem in ("--lbd must be a finite number, got nan", "--gamma must be 0 or positive",
                    "--jepa_ratio must be a finite number, got nan",
                    f"--train_file {tmp_path / 'missing.jsonl'}: no such file",
                    f"--eval_file {tmp_path} is a directory, not a JSONL file",
                    f"--model_name {tmp_path / 'no-model'}: no such directory"):
        assert problem in err, err
    assert not out.exists()


def test_run_checks_the_files_of_a_config_made_in_code(tmp_path, tiny_llama, nothing_loads):
    cfg = TrainConfig(train_file=str(tmp_path / "gone.jsonl"), model_name=str(tiny_llama),
                      output_dir=str(tmp_path / "out")).validate()  # flags alone are fine
    with pytest.raises(ConfigError, match=r"--train_file .*gone\.jsonl: no such file"):
        T.run(cfg)


# --------------------------------------------------------------------------------------
# item 8: answers cut off by --max_length
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("paper_compat", [False, True])
def test_no_trained_token_left_is_an_error(tiny_tokenizer, paper_compat):
    rows = [example(), example(user="lines with a dog")]
    with pytest.raises(D.DataError, match=r"train: none of the 2 examples keeps a token to train after "
                                          r"truncation to --max_length 1 .*raise --max_length"):
        features(tiny_tokenizer, rows, max_length=1, paper_compat=paper_compat)


def test_the_suggested_max_length_is_the_smallest_that_trains(tiny_tokenizer):
    rows = [example(user="dog " * 30), example(user="lines with a dog")]
    with pytest.raises(D.DataError) as err:
        features(tiny_tokenizer, rows, max_length=8)
    need = int(str(err.value).split("at least ")[1].split(",")[0])
    feats, stats = features(tiny_tokenizer, rows, max_length=need)
    assert stats.no_trained_tokens == 1 and D.ViewTokenizer.trains_something(feats[1]["labels"])
    with pytest.raises(D.DataError):
        features(tiny_tokenizer, rows, max_length=need - 1)


def test_examples_that_lose_their_answer_are_counted(tiny_tokenizer, caplog):
    rows = [example(user="dog " * 100), example(), example()]
    caplog.set_level(logging.WARNING, logger="llm_jepa")
    feats, stats = features(tiny_tokenizer, rows, max_length=64)
    assert stats.no_trained_tokens == 1
    assert all(t == -100 for t in feats[0]["labels"])
    assert "train: 1 of 3 examples keep no token to train after truncation to --max_length 64" in caplog.text
    _, untouched = features(tiny_tokenizer, rows, max_length=512)
    assert untouched.no_trained_tokens == 0


def test_training_with_max_length_1_stops_before_the_model(tmp_path, train_file, tiny_llama, monkeypatch):
    monkeypatch.setattr(T, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    cfg = parse_args(["--train_file", str(train_file), "--model_name", str(tiny_llama), "--output_dir", str(out),
                      "--max_length", "1"])
    with pytest.raises(D.DataError, match="--max_length 1"):
        T.run(cfg)
    assert not out.exists()


# --------------------------------------------------------------------------------------
# item 9: empty answers
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["", "  \n\t"])
def test_empty_or_blank_answer_is_a_file_line_error(tmp_path, answer):
    path = write_jsonl(tmp_path / "synth_train.jsonl", [example(), example(answer=answer)])
    with pytest.raises(D.DataError, match=r"synth_train\.jsonl:2: message 2 \(assistant\) has empty or "
                                          r"whitespace-only content"):
        D.read_examples(path, require_answer=True)
    assert len(D.read_examples(path)) == 2  # evaluation files may hold empty golds (the metrics count them)


def test_empty_hellaswag_code_view_is_an_error(tmp_path):
    row = example(text=[{"role": "user", "content": "ctx"}], code=[{"role": "assistant", "content": " "}])
    path = write_jsonl(tmp_path / "hellaswag_train.jsonl", [row])
    with pytest.raises(D.DataError, match=r"hellaswag_train\.jsonl:1: 'code' message has empty"):
        D.read_examples(path, needs_view_fields=True, require_answer=True)


def test_training_refuses_an_empty_answer(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setattr(T, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(4) + [example(answer="")])
    cfg = parse_args(["--train_file", str(data), "--model_name", str(tiny_llama), "--output_dir",
                      str(tmp_path / "out")])
    with pytest.raises(D.DataError, match=r"synth_train\.jsonl:5: message 2 \(assistant\) has empty"):
        T.run(cfg)


# --------------------------------------------------------------------------------------
# item 10: encodings
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_non_utf8_input_names_file_line_and_byte(tmp_path, encoding):
    path = tmp_path / "synth_train.jsonl"
    bad = json.dumps(example(user="\u00fcber caf\u00e9"), ensure_ascii=False).encode(encoding)
    path.write_bytes(json.dumps(example()).encode() + b"\n" + bad + b"\n")
    column = bad.index(b"\xfc") + 1  # every byte before it is ASCII: one character each
    with pytest.raises(D.DataError, match=rf"synth_train\.jsonl:2: not UTF-8 text: byte 0xfc at column {column}; "
                                          r"convert the file to UTF-8"):
        D.read_examples(path)


def test_undecodable_byte_after_multibyte_text_is_counted_in_characters(tmp_path):
    path = tmp_path / "synth_train.jsonl"
    path.write_bytes(b'{"messages": "\xc3\xa9\xe2\x82\xac \xff"}\n')
    with pytest.raises(D.DataError, match=r"synth_train\.jsonl:1: not UTF-8 text: byte 0xff at column 18;"):
        D.read_examples(path)


def test_bom_crlf_and_multibyte_text_are_read(tmp_path):
    rows = [example(user="caf\u00e9 \u2028 \U0001f600"), example()]
    path = tmp_path / "synth_train.jsonl"
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert D.read_examples(path) == rows


def test_lone_surrogate_is_a_file_line_error(tmp_path):
    path = tmp_path / "synth_train.jsonl"
    path.write_text(json.dumps(example()) + "\n" + json.dumps(example(user="x\ud800")) + "\n")
    with pytest.raises(D.DataError, match=r"synth_train\.jsonl:2: message 1 content is not valid Unicode: "
                                          r"'\\ud800' at character 2"):
        D.read_examples(path)


# --------------------------------------------------------------------------------------
# item 11: missing files and model paths
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--train_file", "--eval_file", "--data_file"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_or_directory_input_files(tmp_path, capsys, flag, kind):
    value = tmp_path / "nope.jsonl" if kind == "missing" else tmp_path
    ok = write_jsonl(tmp_path / "ok.jsonl", [example()])
    files = {"--train_file": ["--train_file", value], "--eval_file": ["--train_file", ok, "--eval_file", value],
             "--data_file": ["--data_file", value]}[flag]
    with pytest.raises(SystemExit):
        parse_args([*map(str, files), "--model_name", str(tmp_path)], check_inputs=True)
    problem = ": no such file" if kind == "missing" else " is a directory, not a JSONL file"
    assert f"{flag} {value}{problem}" in capsys.readouterr().err


def test_paths_are_only_checked_on_request():
    cfg = TrainConfig(train_file="not-there.jsonl", model_name="./not-there")
    assert cfg.validate() is cfg
    assert len(cfg.input_problems()) == 2


@pytest.mark.parametrize("name", ["./models/nope", "../nope", "/nonexistent/model", "runs/a/b", "nope/"])
def test_missing_local_model_path_says_so(name, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    problem = model_path_problem(name)
    assert problem.startswith(f"--model_name {name}: no such directory") and "hub id 'owner/name'" in problem
    assert "HF_HUB_OFFLINE" not in problem
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "the model hub is not reachable either (HF_HUB_OFFLINE is set)" in model_path_problem(name)


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.2-1B-Instruct", "gpt2"])
def test_hub_ids_are_not_local_paths(name, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert model_path_problem(name) is None  # online: the hub decides
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("llm_jepa.modeling._cached", lambda repo, filename: False)
    assert model_path_problem(name) == (f"--model_name {name}: no such local directory, no cached copy of it, "
                                        "and the model hub is not reachable (HF_HUB_OFFLINE is set)")
    monkeypatch.setattr("llm_jepa.modeling._cached", lambda repo, filename: True)
    assert model_path_problem(name) is None  # offline, from the cache


def test_a_hub_like_name_under_an_existing_folder_gets_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "weights.bin").write_text("")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = model_path_problem("runs/synth-jepa")
    assert "no such local directory (the folder runs exists: is the rest misspelled?)" in problem
    assert model_path_problem("runs") is None
    assert model_path_problem("runs/weights.bin") == "--model_name runs/weights.bin is a file, not a directory"


def test_loading_a_missing_model_path_names_the_path(tmp_path):
    from llm_jepa.modeling import load_model
    from llm_jepa.tokenization import setup_tokenizer

    missing = str(tmp_path / "models" / "tiny")
    with pytest.raises(ConfigError, match=rf"--model_name {missing}: no such directory") as err:
        load_model(missing, LLAMA, dtype=None, attn_implementation=None, pretrain=False, seed=0, vocab_size=None)
    assert "Repo id" not in str(err.value)
    with pytest.raises(ConfigError, match=r"--tokenizer_name \./tok: no such directory"):
        setup_tokenizer(missing, LLAMA, override="./tok")
    with pytest.raises(ConfigError, match=rf"--model_name {missing}: no such directory"):
        setup_tokenizer(missing, LLAMA)


def test_finetune_cli_reports_a_missing_model_in_one_line(tmp_path, train_file):
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "finetune.py", "--train_file", str(train_file), "--model_name",
                           "./no/such/model", "--output_dir", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--model_name ./no/such/model: no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr and "Repo id" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# item 12: text that contains the renderer's marker
# --------------------------------------------------------------------------------------
def other_chars(text: str) -> str:
    """`text` with the marker's private-use characters swapped for other ones (same length)."""
    return text.translate({0xE000: 0xE002, 0xE001: 0xE003})


def hostile(row: dict, marker: str) -> dict:
    """`row` with `marker` inside every message's text."""
    out = json.loads(json.dumps(row))
    for msg in out["messages"]:
        msg["content"] = f"{msg['content']} {marker} {msg['content']}"
    return out


def test_marker_is_chosen_absent_from_the_text():
    assert D.marker_absent_from(["lines with a vowel"]) == D.SENTINEL  # ordinary text: unchanged
    assert D.marker_absent_from([D.SENTINEL]) == "\ue000LLMJEPA1\ue001"
    assert D.marker_absent_from(["a", D.SENTINEL + "\ue000LLMJEPA1\ue001"]) == "\ue000LLMJEPA2\ue001"


@pytest.mark.parametrize("marker", [D.SENTINEL, "\ue000", "\ue001", "\ue000LLMJEPA1\ue001"])
def test_marker_in_user_text_renders_like_any_other_text(tiny_tokenizer, marker):
    row = example(user="lines with a dog", answer="(dog).*")
    mine, other = hostile(row, marker), hostile(row, other_chars(marker))
    renderer = D.ViewRenderer(tiny_tokenizer, LLAMA, D.ViewOptions(), {})
    for render in (renderer.full, lambda r: renderer.side(r, "text"), lambda r: renderer.side(r, "code")):
        a, b = render(mine), render(other)
        assert other_chars(a.text) == b.text and (a.start, a.end) == (b.start, b.end)
    (feat,), _ = features(tiny_tokenizer, [mine])
    answer = mine["messages"][2]["content"]
    assert tiny_tokenizer.decode([t for t in feat["labels"] if t != -100]) == answer + "<|eot_id|>"
    (ref,), _ = features(tiny_tokenizer, [other])
    for view in ("text", "code"):  # embedded at the same place: the last content token
        ids, at = feat[f"{view}_input_ids"], feat[f"{view}_at"]
        assert tiny_tokenizer.decode(ids[at + 1:]) == "<|eot_id|>"
        assert len(ids) - at == len(ref[f"{view}_input_ids"]) - ref[f"{view}_at"]


def test_marker_in_text_with_a_real_template():
    setup, family = real_tokenizer("llama-3.2-1b-instruct")
    tok = setup.tokenizer
    row = hostile(example(answer=" SELECT 1 "), D.SENTINEL)
    renderer = D.ViewRenderer(tok, family, D.ViewOptions(), setup.template_kwargs)
    vtok = D.ViewTokenizer(tok, D.TokenizeOptions())
    (feat,), stats = D.tokenize_examples([row], renderer, vtok, with_views=True)
    trained = tok.decode([t for t in feat["labels"] if t != -100])
    assert trained == row["messages"][2]["content"].strip() + "<|eot_id|>"
    assert stats.no_end_of_turn == 0


# --------------------------------------------------------------------------------------
# the command line: every input problem found while running is one line, exit status 2
# --------------------------------------------------------------------------------------
def test_finetune_main_reports_a_data_error_in_one_line(tmp_path, tiny_llama, monkeypatch, capsys):
    monkeypatch.setattr(T, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    path = tmp_path / "synth_train.jsonl"
    path.write_bytes(json.dumps(example()).encode() + b"\n" + b'{"messages": "caf\xe9"}\n')
    code = T.main(["--train_file", str(path), "--model_name", str(tiny_llama), "--output_dir",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: " in err and "synth_train.jsonl:2: not UTF-8 text" in err
    assert "Traceback" not in err


def test_finetune_main_reports_an_output_dir_error_in_one_line(tmp_path, train_file, tiny_llama, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = T.main(["--train_file", str(train_file), "--model_name", str(tiny_llama), "--output_dir", str(out)])
    assert code == 2
    assert "was not made by this trainer" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------
# evaluation flags: floats must be finite, timeouts positive, the regex bounds reach the metric
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--sql_timeout", "nan"], "--sql_timeout must be a finite number"),
    (["--sql_timeout", "0"], "--sql_timeout must be a positive number of seconds"),
    (["--regex_timeout", "inf"], "--regex_timeout must be a finite number"),
    (["--regex_timeout", "-1"], "--regex_timeout must be a positive number of seconds"),
    (["--regex_max_states", "0"], "--regex_max_states must be at least 1"),
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--test_size", "nan"], "--test_size must be a finite number"),
])
def test_bad_evaluation_numbers_are_refused(capsys, argv, message):
    from llm_jepa.config import parse_eval_args

    with pytest.raises(SystemExit) as exit_:
        parse_eval_args(["--predictions", "p.jsonl", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_regex_bounds_reach_the_metric():
    from llm_jepa.config import parse_eval_args
    from llm_jepa.corpora import dataset_for_path
    from llm_jepa.evaluation import Scorer

    cfg = parse_eval_args(["--predictions", "synth_test.jsonl", "--regex_timeout", "0.5",
                           "--regex_max_states", "7"])
    scorer = Scorer(cfg, dataset_for_path("synth_test.jsonl"))
    assert (scorer.ctx.regex_timeout, scorer.ctx.regex_max_states) == (0.5, 7)
    assert scorer.metric.bounds(scorer.ctx) == (0.5, 7)


def test_ignored_evaluation_flags_are_named_when_set():
    from llm_jepa.config import IGNORED_EVAL_FLAGS, parse_eval_args

    base = ["--input_file", "x.jsonl", "--model_name", "m"]
    assert parse_eval_args(base).ignored_flags() == []
    # the published defaults, given explicitly, say nothing
    assert parse_eval_args(base + ["--temperature", "0", "--top_k", "1", "--repetition_penalty", "1.1"]
                           ).ignored_flags() == []
    lines = parse_eval_args(base + ["--temperature", "0.7", "--do_sample", "--num_beams", "4", "--fsdp",
                                    "full_shard"]).ignored_flags()
    assert lines == ["--temperature 0.7 is ignored: decoding is greedy", "--num_beams 4 is ignored: decoding is "
                     "greedy, one beam", "--do_sample True is ignored: decoding is greedy",
                     "--fsdp full_shard is ignored: evaluation runs in one process (--device_map spreads a large "
                     "model over GPUs)"]
    assert len(IGNORED_EVAL_FLAGS) == 8


def test_evaluation_warns_about_ignored_flags_before_anything_else(monkeypatch, caplog):
    from llm_jepa import evaluation
    from llm_jepa.config import parse_eval_args

    class Stop(Exception):
        pass

    def stop(_cfg):
        raise Stop

    monkeypatch.setattr(evaluation, "_dataset", stop)
    monkeypatch.setattr(logging.getLogger("llm_jepa"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="llm_jepa"), pytest.raises(Stop):
        evaluation.run(parse_eval_args(["--input_file", "x.jsonl", "--model_name", "m", "--top_p", "0.9"]))
    assert "--top_p 0.9 is ignored: decoding is greedy" in caplog.text
