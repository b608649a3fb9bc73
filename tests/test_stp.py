"""Semantic Tube Prediction in the training pipeline: the content spans of the Full view,
their way through the collator and the layout, the objectives trained end to end (with the
linear predictor saved and reloaded), the lbd warm-up, the hidden-state layer, the
configuration checks and the report's labels. The tube's arithmetic is tested against
hand-computed values and the published restatement in test_tube.py."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import example, real_tokenizer, synthetic_rows, write_jsonl
from llm_jepa import layouts
from llm_jepa import objectives as O
from llm_jepa import train as T
from llm_jepa.collate import PadCollator
from llm_jepa.config import TrainConfig, parse_args
from llm_jepa.data import TokenizeOptions, ViewOptions, ViewRenderer, ViewTokenizer, tokenize_examples
from llm_jepa.families import family_by_name
from llm_jepa.report import method_of
from llm_jepa.trainer import forward_layout, hidden_state_module

LLAMA = family_by_name("llama")


def spans_of(tok, family, rows, template_kwargs=None, plain=False):
    renderer = ViewRenderer(tok, family, ViewOptions(plain=plain), template_kwargs or {})
    feats, _ = tokenize_examples(rows, renderer, ViewTokenizer(tok, TokenizeOptions(512)), with_views=False,
                                 with_spans=True)
    return feats


def decoded(tok, ids, start, end):
    return tok.decode(ids[start:end])


# --------------------------------------------------------------------------------------
# content spans
# --------------------------------------------------------------------------------------
def test_spans_cover_exactly_the_user_content_and_the_answer(tiny_tokenizer):
    rows = [example(user="lines with the word dog", answer="(dog).*"), example(user="x", answer="y z")]
    for row, f in zip(rows, spans_of(tiny_tokenizer, LLAMA, rows)):
        us, ue, as_, ae = f["spans"]
        assert 0 < us < ue <= as_ < ae <= len(f["input_ids"])
        assert decoded(tiny_tokenizer, f["input_ids"], us, ue).strip() == row["messages"][1]["content"]
        assert decoded(tiny_tokenizer, f["input_ids"], as_, ae).strip() == row["messages"][2]["content"]
    # --plain with a tokenizer that adds no BOS: the user's content is the first token, with
    # no state before it to start its chord from, so the example has no spans (it is skipped)
    assert [f["spans"] for f in spans_of(tiny_tokenizer, LLAMA, rows, plain=True)] == [[0, 0, 0, 0]] * 2


@pytest.mark.parametrize("folder", ["llama-3.2-1b-instruct", "gemma-2-2b-it", "qwen2.5-instruct",
                                    "olmo-2-instruct"])
def test_spans_on_real_templates(folder):
    """Gemma merges the system prompt into the user turn: the span still holds only the
    user's content. Decoding the span gives back the content on every template."""
    setup, family = real_tokenizer(folder)
    tok = setup.tokenizer
    row = example(user="Find lines that contain the word 'dog' twice.", answer="(.*dog.*){2}")
    (f,) = spans_of(tok, family, [row], setup.template_kwargs)
    us, ue, as_, ae = f["spans"]
    assert decoded(tok, f["input_ids"], us, ue).strip() == row["messages"][1]["content"]
    assert decoded(tok, f["input_ids"], as_, ae).strip() == row["messages"][2]["content"]


def test_truncated_spans_are_marked_and_skipped(tiny_tokenizer):
    row = example(user="dog " * 200, answer="(dog).*")
    renderer = ViewRenderer(tiny_tokenizer, LLAMA, ViewOptions(), {})
    feats, stats = tokenize_examples([row, example()], renderer, ViewTokenizer(tiny_tokenizer, TokenizeOptions(64)),
                                     with_views=False, with_spans=True)
    assert feats[0]["spans"] == [0, 0, 0, 0] and feats[1]["spans"][1] > 0 and stats.no_spans == 1


def test_left_padding_and_trimming_shift_the_spans(tiny_tokenizer):
    rows = [example(user="a much longer request about lines and words", answer="(dog).*"), example()]
    feats = spans_of(tiny_tokenizer, LLAMA, rows)
    batch = PadCollator(tiny_tokenizer.pad_token_id, with_views=False, padding_side="left")(feats)
    lay = layouts.full_only(batch)
    rows_, regions, starts = lay.spans
    ids = lay.kwargs["input_ids"]
    for i, f in zip(rows_.tolist(), feats):
        us, ue, as_, ae = regions[i].tolist()
        assert ids[i, us:ue].tolist() == f["input_ids"][f["spans"][0]:f["spans"][1]]
        assert ids[i, as_:ae].tolist() == f["input_ids"][f["spans"][2]:f["spans"][3]]
        assert ids[i, starts[i]:].tolist() == f["input_ids"]


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def test_linear_selects_the_objective_and_its_options():
    c = parse_args(["--train_file", "x", "--linear", "random_span", "--jepa_mse", "--random_span_times", "2",
                    "--length_adjustment", "cosine_like", "--linear_predictor"])
    assert c.objective == "random_span" and not O.get_objective(c.objective).views
    opts = O.get_objective(c.objective).options(c)
    assert opts.mse and opts.spans.times == 2 and opts.length_adjustment == "cosine_like" and opts.linear_predictor
    assert parse_args(["--train_file", "x", "--jepa_loss", "e2e"]).objective == "e2e"


@pytest.mark.parametrize("flags,message", [
    (dict(linear="random_span", infonce=True), "--linear random_span cannot be combined with --infonce"),
    (dict(linear="e2e", random_span_times=2), "--random_span_times applies to --linear random_span only"),
    (dict(linear="curvature", linear_predictor=True), "--linear curvature has no context chord"),
    (dict(linear="random_span", random_span_max_length=0), "random_span_max_length"),
    (dict(linear="random_span", load_lp=True), "--load_lp loads the linear predictor"),
    (dict(linear="random_span", jepa_loss="l2"), "choose two objectives"),
])
def test_stp_configuration_problems(flags, message):
    problems = TrainConfig(train_file="x", **flags).problems()
    assert any(message in p for p in problems), problems


# --------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------
def stp_run(tmp_path, tiny_llama, name, *flags, steps=3):
    data = write_jsonl(tmp_path / "synth_train.jsonl", synthetic_rows(16))
    out = tmp_path / name
    trainer = T.run(parse_args(["--train_file", str(data), "--model_name", str(tiny_llama), "--output_dir", str(out),
                                "--dtype", "fp32", "--batch_size", "4", "--grad_accum", "1", "--max_steps", str(steps),
                                "--eval_steps", "1", "--max_length", "128", "--no-save_checkpoints",
                                "--learning_rate", "1e-3", *flags]))
    return trainer, out


@pytest.mark.parametrize("mode", ["random_span", "e2e", "mean", "curvature"])
def test_each_stp_objective_trains_on_the_full_rows_alone(tmp_path, tiny_llama, mode):
    trainer, out = stp_run(tmp_path, tiny_llama, mode, "--linear", mode, "--lbd", "1.0")
    assert isinstance(trainer.data_collator, PadCollator) and not trainer.data_collator.with_views
    jepa = [h["jepa_loss"] for h in trainer.state.log_history if "jepa_loss" in h]
    assert len(jepa) == 3 and all(torch.isfinite(torch.tensor(v)) and v > 0 for v in jepa)
    record = json.loads((out / "run_config.json").read_text())
    assert record["jepa_loss"] == mode and record["layout"] == "packed"


def test_linear_predictor_trains_saves_and_reloads(tmp_path, tiny_llama):
    trainer, out = stp_run(tmp_path, tiny_llama, "lp", "--linear", "random_span", "--linear_predictor",
                           "--length_adjustment", "jaccard_like", "--random_span_times", "2", "--lbd", "1.0")
    module = getattr(trainer.model, O.MODULE_ATTR)
    first = module.predictor.weight.detach().clone()
    saved = load_file(str(out / "model.safetensors"))
    key = f"{O.MODULE_ATTR}.predictor.weight"
    assert torch.equal(saved[key], first.cpu())
    # trained: it moved away from its seeded initialisation
    from llm_jepa.semantic_tube import LinearPredictor
    assert (first - LinearPredictor(first.shape[0], 42).weight).abs().max() > 1e-5
    # --load_lp continues from the saved predictor (one step at lr 0 leaves it unchanged)
    again, _ = stp_run(tmp_path, out, "lp2", "--linear", "random_span", "--linear_predictor", "--load_lp",
                       "--learning_rate", "1e-12", steps=1)
    assert torch.allclose(getattr(again.model, O.MODULE_ATTR).predictor.weight, first, atol=1e-6)


def test_lora_run_saves_the_predictor_too(tmp_path, tiny_llama):
    _, out = stp_run(tmp_path, tiny_llama, "lora", "--linear", "random_span", "--linear_predictor", "--lora",
                     "--lora_rank", "4", steps=1)
    assert f"{O.MODULE_ATTR}.predictor.weight" in load_file(str(out / "model.safetensors"))


def test_lbd_warmup_ramps_from_min_to_lbd(tmp_path, tiny_llama):
    trainer, _ = stp_run(tmp_path, tiny_llama, "warm", "--linear", "e2e", "--lbd_warmup", "--min_lbd", "0.5",
                         "--lbd", "2.5", steps=5)
    seen = []
    for step in range(5):
        trainer.state.global_step = step
        seen.append(trainer.lbd_now())
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.5]
    trainer.state.max_steps = 1
    trainer.state.global_step = 0
    assert trainer.lbd_now() == 0.5   # a one-step run does not divide by zero


@pytest.mark.parametrize("layer", [0, 1, -1, -2])
def test_hidden_state_layer_matches_the_models_hidden_states(tiny_llama, layer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    lay = layouts.Layout({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids)
    with torch.no_grad():
        hidden, _, _ = forward_layout(model, lay, True, layer=layer)
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states[layer]
    assert torch.equal(hidden, ref)
    with pytest.raises(ValueError, match="does not exist"):
        hidden_state_module(model.model, 99)


def test_report_keeps_stp_and_its_options_apart():
    def summary(**t):
        return {"training": {"learning_rate": 2e-5, "lbd": 0.02, **t}}

    stp = method_of(summary(linear="random_span"))
    lp = method_of(summary(linear="random_span", linear_predictor=True))
    e2e = method_of(summary(linear="e2e"))
    jepa = method_of(summary(jepa_loss="cosine"))
    assert stp[1] == "stp" and stp[0].startswith("STP random_span (lr=2e-05, lbd=0.02")
    assert len({stp[0], lp[0], e2e[0], jepa[0]}) == 4 and "linear_predictor" in lp[0]


# --------------------------------------------------------------------------------------
# the mask ablation
# --------------------------------------------------------------------------------------
def test_masked_views_by_hand():
    """One row: user content at 2..4, template tokens at 5..6, answer at 7..9 (ids = their
    positions). A patch straddling both (offsets 2..4 = positions 4, 7, 8) is masked in the
    context, the template tokens stay; the target is the patch without the template tokens."""
    from llm_jepa.semantic_tube import masked_views

    ids = torch.arange(12)[None]
    regions = torch.tensor([[2, 5, 7, 10]])
    M, P = 99, -1
    v = masked_views(ids, regions, torch.tensor([2]), torch.tensor([5]), M, P, recover=False)
    assert v["text_input_ids"][0].tolist() == [P] * 4 + [2, 3, M, 5, 6, M, M, 9]
    assert v["code_input_ids"][0].tolist() == [P] * 9 + [4, 7, 8]
    assert v["text_position_ids"][0, 4:].tolist() == list(range(8)) and v["text_at"].tolist() == [11]
    assert v["code_attention_mask"][0].tolist() == [0] * 9 + [1] * 3
    recover = masked_views(ids, regions, torch.tensor([0]), torch.tensor([1]), M, P, recover=True)
    assert recover["text_input_ids"][0, 4:].tolist() == [M, 3, 4, 5, 6, 7, 8, 9]
    assert recover["code_input_ids"][0, 4:].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("extra", [[], ["--random_span_mask_recover", "--additive_mask"]])
def test_mask_ablation_trains(tmp_path, tiny_llama, extra):
    trainer, out = stp_run(tmp_path, tiny_llama, "mask", "--random_span_mask", "--lbd", "1.0", *extra)
    assert trainer.processing_class.mask_token == "<|mask|>"
    jepa = [h["jepa_loss"] for h in trainer.state.log_history if "jepa_loss" in h]
    assert len(jepa) == 3 and all(v > 0 for v in jepa)
    assert json.loads((out / "run_config.json").read_text())["layout"] == ("additive" if extra else "3pass")


# --------------------------------------------------------------------------------------
# LLM-JEPA options from the STP script: the linear predictor and mean pooling
# --------------------------------------------------------------------------------------
def test_mean_embeddings_by_hand():
    """Two packed views in one row (positions restart at 0): each mean covers its own
    tokens up to its embedding token."""
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)   # state t = (2t, 2t+1)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2]])
    at = (torch.tensor([0, 0]), torch.tensor([1, 5]))
    got = layouts.mean_embeddings(hidden, at, positions)
    assert got.tolist() == [[1.0, 2.0], [8.0, 9.0]]              # mean of t=0,1 and of t=3,4,5
    assert layouts.mean_embeddings(hidden, at, None)[1].tolist() == [5.0, 6.0]   # from column 0


def test_jepa_with_linear_predictor_and_avg_encoding(tmp_path, tiny_llama):
    trainer, out = stp_run(tmp_path, tiny_llama, "jepa_lp", "--linear_predictor", "--avg_encoding", "--predictors",
                           "1", "--lbd", "1.0")
    module = getattr(trainer.model, O.MODULE_ATTR)
    assert isinstance(module, torch.nn.Module) and module.weight.shape[0] == trainer.model.config.hidden_size
    assert f"{O.MODULE_ATTR}.weight" in load_file(str(out / "model.safetensors"))
    again, _ = stp_run(tmp_path, out, "jepa_lp2", "--linear_predictor", "--load_lp", "--learning_rate", "1e-12",
                       steps=1)
    assert torch.allclose(getattr(again.model, O.MODULE_ATTR).weight, module.weight, atol=1e-6)


def test_stp_script_differences_only_with_script_stp():
    """--paper_compat reproduces the script it is run from: stp.py's '\\n<|perception|>' for
    --plain (and its <|mask|> token), never finetune.py's."""
    from llm_jepa.tokenization import PERCEPTION

    stp = parse_args(["--train_file", "x", "--paper_compat", "--script", "stp.py", "--plain"])
    finetune = parse_args(["--train_file", "x", "--paper_compat", "--plain"])
    assert T.published_stp(stp) and not T.published_stp(finetune)
    assert T.view_options(stp, "x", 0).plain_separator == "\n" + PERCEPTION
    assert T.view_options(finetune, "x", 0).plain_separator == PERCEPTION
    assert not T.published_stp(parse_args(["--train_file", "x", "--script", "stp.py"]))


# --------------------------------------------------------------------------------------
# --pack_full: several examples per row
# --------------------------------------------------------------------------------------
def test_full_packing_places_examples_and_spans(tiny_tokenizer):
    from llm_jepa.collate import FullPackCollator

    rows = [example(user="a much longer request about lines and words", answer="(dog).*"), example(), example()]
    feats = spans_of(tiny_tokenizer, LLAMA, rows)
    batch = FullPackCollator(tiny_tokenizer.pad_token_id)(feats)
    lay = layouts.packed_full(batch)
    ids, pos = lay.kwargs["input_ids"], lay.kwargs["position_ids"]
    assert ids.shape[0] < len(rows)                       # several examples share a row
    r, regions, starts = lay.spans
    for i, f in enumerate(feats):
        row, start, n = int(r[i]), int(starts[i]), len(f["input_ids"])
        assert ids[row, start:start + n].tolist() == f["input_ids"] and pos[row, start:start + n].tolist() == list(range(n))
        us, ue, as_, ae = regions[i].tolist()
        assert ids[row, us:ue].tolist() == f["input_ids"][f["spans"][0]:f["spans"][1]]
        assert ids[row, as_:ae].tolist() == f["input_ids"][f["spans"][2]:f["spans"][3]]
        assert lay.labels[row, start] == -100             # nobody predicts the next example's start


@pytest.mark.parametrize("flags", [["--regular"], ["--linear", "random_span", "--lbd", "1.0"]])
def test_packed_full_rows_train_as_the_padded_ones(tmp_path, tiny_llama, flags):
    """The same run with --pack_full: the same losses (same examples, same spans) up to
    float rounding of the different attention layout."""
    padded, _ = stp_run(tmp_path, tiny_llama, "padded", *flags, "--eval_steps", "1")
    packed, _ = stp_run(tmp_path, tiny_llama, "packed", *flags, "--pack_full", "--eval_steps", "1")
    from llm_jepa.collate import FullPackCollator
    assert isinstance(packed.data_collator, FullPackCollator)
    for key in ("lm_loss", "jepa_loss") if "--linear" in flags else ("lm_loss",):
        a = [h[key] for h in padded.state.log_history if key in h]
        b = [h[key] for h in packed.state.log_history if key in h]
        assert len(a) == 3 and a == pytest.approx(b, rel=1e-4, abs=1e-6), key


def test_pack_full_problems():
    problems = TrainConfig(train_file="x", pack_full=True).problems()
    assert any("--pack_full packs Full views alone" in p for p in problems)
    assert not TrainConfig(train_file="x", pack_full=True, linear="random_span").problems()


def test_draw_seeds_follow_training_micro_batches_only(tmp_path, tiny_llama):
    """Seeds depend on (seed, step, training micro-batch): an evaluation batch in between
    neither consumes one nor shifts the next; a new step starts the count again."""
    trainer, _ = stp_run(tmp_path, tiny_llama, "seeds", "--linear", "random_span", steps=1)
    trainer.state.global_step = 7
    first = trainer._draw_seed(True)
    evaluation = trainer._draw_seed(False)
    assert trainer._draw_seed(True) != first and evaluation not in (first,)
    trainer.state.global_step = 8
    trainer._draw_seed(False)
    again = trainer._draw_seed(True)
    trainer.state.global_step = 7
    assert trainer._draw_seed(True) == first and again != first


def test_stp_with_activation_checkpointing_trains_the_same(tmp_path, tiny_llama):
    """The hidden-state hook fires again when checkpointing recomputes a layer in backward;
    the term was already computed, so the losses are those of the run without it."""
    flags = ["--linear", "random_span", "--lbd", "1.0", "--random_span_layer", "1"]
    plain, _ = stp_run(tmp_path, tiny_llama, "plain", *flags, "--no-gradient_checkpointing")
    ckpt, _ = stp_run(tmp_path, tiny_llama, "ckpt", *flags, "--gradient_checkpointing")
    for key in ("lm_loss", "jepa_loss"):
        a = [h[key] for h in plain.state.log_history if key in h]
        assert len(a) == 3 and a == pytest.approx([h[key] for h in ckpt.state.log_history if key in h], rel=1e-5)
