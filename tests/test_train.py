"""The trainer end to end on tiny models (CPU): every layout, LoRA, pretraining, resume,
output-directory safety, bad input, non-finite losses and the FLOPs bookkeeping."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import assert_same_up_to_rounding as same, example, synthetic_rows, write_jsonl
from llm_jepa import train as T
from llm_jepa.config import ConfigError, TrainConfig, build_parser, parse_args
from llm_jepa.outputs import MARKER, OutputDirError

PUBLISHED_FLAGS = """--train_file --eval_file --data_file --model_name --output_dir --max_length --batch_size
--grad_accum --learning_rate --num_epochs --eval_steps --lora --lora_rank --eval_split --split_seed
--finetune_seed --predictors --lbd --gamma --last_token --debug --regular --track_flop --pretrain --train_all
--plain --additive_mask --jepa_l2 --jepa_mse --front_pred --reverse_pred --infonce --same_flop
--jepa_ratio --paper_compat --dtype --attn_implementation --max_steps --resume_from_checkpoint
--overwrite_output_dir""".split()


def argv(data, model, out, *extra):
    return ["--train_file", str(data), "--model_name", str(model), "--output_dir", str(out), "--dtype", "fp32",
            "--batch_size", "2", "--grad_accum", "2", "--max_steps", "3", "--eval_steps", "1",
            "--max_length", "128", *map(str, extra)]


def train(*args):
    return T.run(parse_args(list(args)))


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def test_every_published_flag_exists():
    known = {a for action in build_parser()._actions for a in action.option_strings}
    assert [f for f in PUBLISHED_FLAGS if f not in known] == []


def test_all_problems_reported_at_once():
    cfg = TrainConfig(jepa_l2=True, infonce=True, predictors=11, batch_size=0)
    problems = cfg.problems()
    assert len(problems) == 4
    assert any("(got --jepa_l2, --infonce)" in p for p in problems)
    with pytest.raises(ConfigError, match="--train_file or --data_file"):
        cfg.validate()


def test_loss_variants_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "x", "--jepa_mse", "--infonce"])
    assert "(got --jepa_mse, --infonce)" in capsys.readouterr().err


def test_last_token_defaults():
    assert parse_args(["--train_file", "x"]).last_token == "auto"
    assert parse_args(["--train_file", "x", "--paper_compat"]).last_token == "-1"
    assert parse_args(["--train_file", "x", "--paper_compat", "--last_token", "-2"]).last_token == "-2"


@pytest.mark.parametrize("flags,factor", [
    ({}, 1 + 1.5), ({"additive_mask": True}, 1 + 1.5), ({"regular": True}, 1),
    ({"jepa_ratio": 0.25}, 1 + 0.25 * 1.5), ({"packing": False, "jepa_ratio": 0.5}, 1 + 0.5 * 1.5),
])
def test_same_flop_factor(flags, factor):
    """Default: a JEPA step costs 1 + p * (Text+Code tokens per Full token)."""
    assert T.same_flop_factor(TrainConfig(**flags), token_ratio=1.5) == pytest.approx(factor)


def test_view_token_ratio():
    feats = [{"input_ids": [0] * 10, "text_input_ids": [0] * 6, "code_input_ids": [0] * 4, "text_at": 4,
              "code_at": 2}]
    assert T.view_token_ratio(feats) == 1.0
    assert T.view_token_ratio(feats, additive=True) == pytest.approx(0.8)


@pytest.mark.parametrize("flags,factor", [
    ({}, 3), ({"additive_mask": True}, 2), ({"regular": True}, 1), ({"jepa_ratio": 0.25}, 1.25),
    ({"regular": True, "jepa_ratio": 0.5}, 1.5),
])
def test_same_flop_factor_published(flags, factor):
    assert T.same_flop_factor(TrainConfig(paper_compat=True, **flags)) == pytest.approx(factor)


def test_schedule_arithmetic():
    feat = {"input_ids": [0] * 10, "text_input_ids": [0] * 6, "code_input_ids": [0] * 4,
            "text_at": 5, "code_at": 3}
    cfg = TrainConfig(num_epochs=4, batch_size=4, grad_accum=4, same_flop=True, paper_compat=True)
    # 8000 examples, 8 GPUs: 8000 // 128 = 62 steps per epoch; published 3-pass JEPA costs 3x
    assert T.schedule(cfg, [feat] * 8000, 8) == (int(62 / 3), math.ceil(4 / 3))
    cfg.paper_compat = False  # here Text+Code = Full tokens: a step costs 2x
    assert T.schedule(cfg, [feat] * 8000, 8) == (31, 2)
    cfg.same_flop = False
    assert T.schedule(cfg, [feat] * 8000, 8) == (62, 4)
    assert T.schedule(cfg, [feat] * 3, 1) == (1, 4)  # never a zero checkpoint interval


def test_published_data_split_is_reproduced():
    from datasets import Dataset

    ref = Dataset.from_dict({"x": list(range(50))}).train_test_split(test_size=0.2, seed=42, shuffle=True)
    train, test = T.split_indices(50, 0.2, 42)
    assert train == list(ref["train"]["x"]) and test == list(ref["test"]["x"])


# --------------------------------------------------------------------------------------
# training runs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [[], ["--no-packing"], ["--additive_mask"], ["--regular"],
                                  ["--jepa_l2", "--predictors", "2"],
                                  ["--infonce", "--front_pred"], ["--jepa_mse", "--reverse_pred"]])
def test_training_modes_log_and_save(tmp_path, train_file, tiny_llama, mode):
    out = tmp_path / "out"
    trainer = train(*argv(train_file, tiny_llama, out, "--lbd", "0.5", *mode))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    for h in steps:
        assert math.isfinite(h["loss"]) and math.isfinite(h["lm_loss"]) and h["tokens_per_second"] > 0
        if "--regular" in mode:
            assert "jepa_loss" not in h
            assert h["loss"] == pytest.approx(h["lm_loss"], rel=1e-4)
        else:
            assert math.isfinite(h["jepa_loss"])
            assert h["loss"] == pytest.approx(h["lm_loss"] + 0.5 * h["jepa_loss"], rel=1e-3)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    record = json.loads((out / "run_config.json").read_text())
    assert record["date_string"] == "26 Jul 2024" and record["global_steps"] == 3
    assert record["versions"]["transformers"] and record["versions"]["lock"]["file"] == "constraints.txt"
    assert trainer.state.global_step == 3


def test_layouts_train_identically(tmp_path, train_file, tiny_llama):
    """Same batches, same weights: the packed and additive layouts follow the 3-pass losses."""
    runs = {}
    for name, extra in (("3pass", ["--no-packing"]), ("additive", ["--additive_mask"]), ("packed", [])):
        out = tmp_path / name
        train(*argv(train_file, tiny_llama, out, "--lbd", "1", "--predictors", "1", *extra))
        runs[name] = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    for other in ("additive", "packed"):
        for a, b in zip(runs["3pass"], runs[other]):
            same(b["lm_loss"], a["lm_loss"], what=f"{other} lm_loss at step {a['step']}")
            same(b["jepa_loss"], a["jepa_loss"], what=f"{other} jepa_loss at step {a['step']}")


def test_lora_trains_only_adapters_and_merged_save_reloads(tmp_path, train_file, tiny_llama):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    before = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    trainer = train(*argv(train_file, tiny_llama, out, "--lora", "--lora_rank", "4", "--learning_rate", "1e-2"))
    model = trainer.model  # merged in place by the save
    assert not any("lora" in n for n, _ in model.named_parameters())
    saved = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    model.eval()
    with torch.no_grad():
        same(saved(ids).logits, model(ids).logits, what="logits of the merged model")
    after = saved.state_dict()
    changed = [k for k in before if k in after and before[k].shape == after[k].shape
               and not torch.equal(before[k], after[k])]
    # only the adapted projections changed (embeddings grew for the predictor tokens)
    assert changed and all(any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                 "up_proj", "down_proj")) for k in changed)


def test_lora_marks_only_adapters_trainable(tiny_llama):
    from llm_jepa.families import family_by_name
    from llm_jepa.modeling import add_lora, load_model

    model = load_model(str(tiny_llama), family_by_name("llama"), dtype=torch.float32, attn_implementation=None,
                       pretrain=False, seed=0, vocab_size=None)
    model = add_lora(model, family_by_name("llama"), 4, published_targets=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_pretrain_single_process_is_seeded(tmp_path, train_file, tiny_llama):
    from llm_jepa.families import family_by_name
    from llm_jepa.modeling import load_model

    kw = dict(dtype=torch.float32, attn_implementation=None, pretrain=True, vocab_size=None)
    a = load_model(str(tiny_llama), family_by_name("llama"), seed=3, **kw)
    b = load_model(str(tiny_llama), family_by_name("llama"), seed=3, **kw)
    c = load_model(str(tiny_llama), family_by_name("llama"), seed=4, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    train(*argv(train_file, tiny_llama, tmp_path / "pre", "--pretrain", "--plain", "--train_all"))
    assert (tmp_path / "pre" / "model.safetensors").exists()


def test_jepa_ratio_skips_the_text_and_code_views(tmp_path, train_file, tiny_llama):
    rows_seen = []
    trainer = T.run(parse_args(argv(train_file, tiny_llama, tmp_path / "none", "--jepa_ratio", "1e-9")))
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert all(h["jepa_fraction"] == 0.0 and "jepa_loss" not in h for h in history)
    # The forward sees only the Full rows: B rows, never 3B.
    hook = trainer.model.register_forward_pre_hook(lambda m, a, kw: rows_seen.append(kw["input_ids"].shape[0]),
                                                   with_kwargs=True)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch)
    hook.remove()
    assert rows_seen == [2]


def test_jepa_ratio_half_mixes_steps(tmp_path, train_file, tiny_llama):
    trainer = train(*argv(train_file, tiny_llama, tmp_path / "half", "--jepa_ratio", "0.5", "--max_steps", "6",
                          "--eval_steps", "6"))
    (h,) = [h for h in trainer.state.log_history if "loss" in h]
    assert 0.0 < h["jepa_fraction"] < 1.0


def test_lm_loss_is_token_mean_over_accumulated_batch(tmp_path, train_file, tiny_llama):
    trainer = train(*argv(train_file, tiny_llama, tmp_path / "ga", "--regular", "--max_steps", "1"))
    model = trainer.model.eval()
    batches = [b for _, b in zip(range(2), trainer.get_train_dataloader())]
    n_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    trainer.current_gradient_accumulation_steps = 2
    model.train()  # the GA-normalised path
    with torch.no_grad():
        parts = [trainer.compute_loss(model, b, num_items_in_batch=torch.tensor(n_items)) for b in batches]
        sums = []
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            sums.append(torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), reduction="sum"))
    same(sum(parts), sum(sums) / n_items, what="accumulated loss")


def test_flop_tracking_prints_ten_steps(tmp_path, train_file, tiny_llama, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="llm_jepa")
    train(*argv(train_file, tiny_llama, tmp_path / "flops", "--track_flop", "--max_steps", "11", "--regular"))
    lines = [ln for ln in caplog.messages if ln.startswith("Step ")]
    assert [ln.split(":")[0] for ln in lines] == [f"Step {i}" for i in range(1, 11)]
    assert all(int(ln.split("FLOPs: ")[1].replace(",", "")) > 0 for ln in lines)


def test_resume_from_checkpoint(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(16))  # a checkpoint every 4 steps
    out = tmp_path / "resume"
    train(*argv(data, tiny_llama, out, "--max_steps", "4"))
    assert (out / "checkpoint-4").is_dir()
    trainer = train(*argv(data, tiny_llama, out, "--max_steps", "6", "--resume_from_checkpoint", "last"))
    assert trainer.state.global_step == 6
    steps = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------------------
def test_output_dir_safety(tmp_path, train_file, tiny_llama):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="not made by this trainer"):
        train(*argv(train_file, tiny_llama, foreign, "--overwrite_output_dir"))
    assert (foreign / "precious.txt").read_text() == "keep me"

    ours = tmp_path / "ours"
    train(*argv(train_file, tiny_llama, ours, "--max_steps", "1"))
    assert (ours / MARKER).exists()
    with pytest.raises(OutputDirError, match="--overwrite_output_dir"):
        train(*argv(train_file, tiny_llama, ours, "--max_steps", "1"))
    (ours / "stale.txt").write_text("old")
    train(*argv(train_file, tiny_llama, ours, "--max_steps", "1", "--overwrite_output_dir"))
    assert not (ours / "stale.txt").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    train(*argv(train_file, tiny_llama, empty, "--max_steps", "1"))


def test_bad_input_stops_with_file_and_line(tmp_path, tiny_llama):
    from llm_jepa.data import DataError

    bad = tmp_path / "synth_train.jsonl"
    bad.write_text(json.dumps(example()) + "\n" + json.dumps({"messages": []}) + "\n")
    with pytest.raises(DataError, match=r"synth_train\.jsonl:2: expected 3 messages"):
        train(*argv(bad, tiny_llama, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_non_finite_loss_stops_training(tmp_path, train_file, tiny_tokenizer):
    from llm_jepa.tiny import save_tiny_model
    from llm_jepa.trainer import NonFiniteLossError
    from transformers import AutoModelForCausalLM

    path = save_tiny_model(tmp_path / "nan-model", "llama", tiny_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(path)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 1"):
        train(*argv(train_file, path, tmp_path / "out"))


def test_cli_entry_point(tmp_path, train_file, tiny_llama):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "finetune.py", *argv(train_file, tiny_llama, out, "--max_steps", "2")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Training completed" in proc.stdout and (out / "model.safetensors").exists()


def test_eval_file_and_data_file(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(16))
    evals = write_jsonl(tmp_path / "synth_test.jsonl", synthetic_rows(6, seed=9))
    args = argv(data, tiny_llama, tmp_path / "ev", "--eval_file", evals, "--max_steps", "-1", "--num_epochs", "1")
    trainer = train(*args)
    (ev,) = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert math.isfinite(ev["eval_loss"]) and ev["epoch"] == 1.0
    split = train("--data_file", str(data), *argv(data, tiny_llama, tmp_path / "split")[2:],
                  "--eval_split", "0.25")
    assert len(split.train_dataset) == 12 and len(split.eval_dataset) == 4


def test_hellaswag_training_uses_the_view_fields(tmp_path, tiny_llama, caplog):
    import logging

    rows = [example(system="Which ending?", user=f"context {i}\nA) x\nB) y", answer="A",
                    text=[{"role": "user", "content": f"context {i}"}],
                    code=[{"role": "assistant", "content": "the right ending"}]) for i in range(8)]
    data = write_jsonl(tmp_path / "hellaswag_train.jsonl", rows)
    caplog.set_level(logging.DEBUG, logger="llm_jepa")
    train(*argv(data, tiny_llama, tmp_path / "hs", "--max_steps", "1", "--debug", "1"))
    dump = "\n".join(m for m in caplog.messages if m.startswith("first batch"))
    assert "the right ending" in dump and "Code (" in dump and "embedding at position" in dump
    bad = write_jsonl(tmp_path / "hellaswag_bad.jsonl", [example()])
    from llm_jepa.data import DataError

    with pytest.raises(DataError, match="missing 'text' field"):
        train(*argv(bad, tiny_llama, tmp_path / "hs2", "--max_steps", "1"))


def test_attention_implementation_is_passed_through(tmp_path, train_file, tiny_llama):
    trainer = train(*argv(train_file, tiny_llama, tmp_path / "eager", "--attn_implementation", "eager",
                          "--additive_mask", "--max_steps", "1"))
    assert trainer.model.config._attn_implementation == "eager"
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize("mode", [["--regular"], ["--no-packing"], ["--additive_mask"], ["--lora", "--lora_rank", "4"],
                                  []])
def test_done_when_synth_train_twenty_steps(tmp_path, tiny_llama, mode):
    """The issue's acceptance run: the real synth_train file, 20 steps, fp32, every mode."""
    from conftest import needs_shared

    data = needs_shared("datasets", "synth_train.jsonl")
    out = tmp_path / "out"
    trainer = train("--train_file", str(data), "--model_name", str(tiny_llama), "--output_dir", str(out),
                    "--max_steps", "20", "--dtype", "fp32", "--predictors", "1", *mode)
    assert trainer.state.global_step == 20
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_new_token_embeddings_are_reproducible_in_one_process(tiny_llama):
    """Growing the vocabulary draws the new rows from a generator seeded by --finetune_seed:
    a second run in the same process gets the same predictor embeddings, and the global RNG
    (dropout, data order) is left as it was."""
    from llm_jepa.families import family_for
    from llm_jepa.modeling import load_model

    family = family_for(str(tiny_llama), "llama")
    load = lambda: load_model(str(tiny_llama), family, dtype=torch.float32, attn_implementation="sdpa",  # noqa: E731
                              pretrain=False, seed=82, vocab_size=450)
    first = load().get_input_embeddings().weight
    torch.rand(3)  # move the global RNG on
    state = torch.get_rng_state()
    second = load().get_input_embeddings().weight
    assert torch.equal(torch.get_rng_state(), state)
    assert first.shape[0] == 450 and torch.equal(first, second)
