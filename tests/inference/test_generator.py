"""The generation engine and the generate stage.

* KV-cached decoding gives the logits of one full training-style forward pass (rows by modality, positions
  per document, the objective's mask, code output space) to 1e-5 in fp32, for every separation, the
  text-code and prefix-code objectives, both formats, learned and rotary positions -- with left padding;
* a prompt generates the same alone and beside longer/shorter prompts; the prefix-code mask is the
  training mask placed after the padding;
* sampling: counter-based draws are reproducible and independent of the batch, follow the distribution;
* stopping at ``[eoc]`` (per sequence, the others continue undisturbed) and at the length limits;
* de-normalisation: completions rebuild the reference program exactly as ``megatron_t2c/evaluation/execute.py`` builds it;
* TP=2 under torchrun generates what TP=1 generates; the ``megatron_t2c/evaluation/generate.py`` stage end to end, resume
  included.
"""

from __future__ import annotations

import ast
import json
import os

import pytest
import torch
from helpers.torchrun import run_with_torchrun

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.evaluation.completions import completion_of, function_source, prompt_code_source
from megatron_t2c.inference.generator import (SUPPRESSED_IDS, Generator, SamplingConfig, full_forward_logits,
                                              sample_tokens, sequence_key, uniforms)
from megatron_t2c.mrpt.normalise import denormalise, normalise
from megatron_t2c.mrpt.objectives import attention_mask
from helpers.t2c_model_data import model_config, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:torch.distributed.checkpoint",
                                        "ignore::FutureWarning:megatron.core.dist_checkpointing")

TOL = dict(atol=1e-5, rtol=1e-5)


def _perturb(model, seed: int = 0, scale: float = 0.3) -> None:
    """Make every weight matter: code rows differ from their base rows, logits are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)


def _prompts(fmt: str) -> list[list[int]]:
    """Three prompts of different lengths (incremental-style body prefixes included)."""
    if fmt == "pangu":
        return [[st.DESCR_ID, 200, 201, 202, st.PYTHON_ID, 20, 21],
                [st.DESCR_ID, 210, st.PYTHON_ID, 22],
                [st.DESCR_ID, 211, 212, 213, 214, 215, 216, 217, st.PYTHON_ID, 23, 24, st.NEW_LINE_ID,
                 st.INDENT_ID, 40]]
    return [[st.SOS_ID, 20, 21, st.DESCR_ID, 200, 201, st.PYTHON_ID],
            [st.SOS_ID, 22, st.DESCR_ID, 210, 211, 212, 213, 214, st.PYTHON_ID, st.NEW_LINE_ID, st.INDENT_ID],
            [st.SOS_ID, 23, st.DESCR_ID, 215, st.PYTHON_ID]]


def _model(mode="partial", **config):
    model = tiny_model(mode, model_config(**config)) if config else tiny_model(mode)
    _perturb(model)
    return model.eval()


def _assert_matches_full_forward(model, prompts, results, fmt, objective):
    for prompt, result in zip(prompts, results):
        assert len(result.tokens) > 0
        full = full_forward_logits(model, prompt + result.tokens, fmt, objective)
        expected = full[len(prompt) - 1:len(prompt) - 1 + len(result.logits)].clone()
        expected[:, list(SUPPRESSED_IDS)] = float("-inf")
        torch.testing.assert_close(result.logits, expected, **TOL)


# ----------------------------------------------------------------------------------------------------
# KV cache == full forward
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["text-code", "prefix-code"])
@pytest.mark.parametrize("mode", ["none", "partial", "full"])
def test_cached_decoding_equals_a_full_forward_pass(dist, mode, objective):
    model = _model(mode)
    prompts = _prompts("pangu")
    results = Generator(model, "pangu", objective, max_batch_size=3).generate(
        prompts, SamplingConfig(greedy=True, max_new_tokens=10), return_logits=True)
    _assert_matches_full_forward(model, prompts, results, "pangu", objective)


@pytest.mark.parametrize("objective", ["code", "prefix-code"])
def test_cached_decoding_pycodegpt_and_rope(dist, objective):
    model = _model("full", position_embedding_type="rope")
    prompts = _prompts("pycodegpt")
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=3)
    results = Generator(model, "pycodegpt", objective, max_batch_size=3).generate(prompts, sampling,
                                                                                  return_logits=True)
    _assert_matches_full_forward(model, prompts, results, "pycodegpt", objective)


def test_prefix_code_mask_is_the_training_mask_after_left_padding(dist):
    model = _model("partial")
    prompts = _prompts("pangu")
    gen = Generator(model, "pangu", "prefix-code")
    _, _, real, prefix = gen._prompt_tensors(prompts)
    masked = gen._prefill_mask(real, prefix)
    length = real.shape[1]
    for i, prompt in enumerate(prompts):
        pad = length - len(prompt)
        expected = attention_mask(torch.tensor(prompt), "pangu", "prefix-code")[0]
        assert torch.equal(masked[i, 0, pad:, pad:], expected)
        assert masked[i, 0, pad:, :pad].all()  # real queries never see padding
        assert expected[0, 1] == False  # noqa: E712 - the prefix really is bidirectional
    # ...and it matters: a causal-only prompt gives other logits (the release's bug class)
    causal = Generator(model, "pangu", "text-code").generate(prompts[:1], SamplingConfig(greedy=True, max_new_tokens=1),
                                                             return_logits=True)
    prefix_lm = gen.generate(prompts[:1], SamplingConfig(greedy=True, max_new_tokens=1), return_logits=True)
    assert (causal[0].logits - prefix_lm[0].logits).nan_to_num(0).abs().max() > 1e-3


def test_left_padding_does_not_change_a_prompts_generation(dist):
    model = _model("partial")
    prompts = _prompts("pangu")
    sampling = SamplingConfig(greedy=True, max_new_tokens=12)
    for objective in ("text-code", "prefix-code"):
        gen = Generator(model, "pangu", objective, max_batch_size=8)
        together = gen.generate(prompts, sampling, return_logits=True)
        for i, prompt in enumerate(prompts):
            alone = gen.generate([prompt], sampling, return_logits=True)[0]
            assert alone.tokens == together[i].tokens
            torch.testing.assert_close(alone.logits, together[i].logits, **TOL)


# ----------------------------------------------------------------------------------------------------
# Sampling, stopping
# ----------------------------------------------------------------------------------------------------

def test_sampling_is_seeded_per_sequence_and_independent_of_the_batch(dist):
    model = _model("partial")
    prompts = _prompts("pangu") * 2
    keys = [sequence_key("HumanEval/0", i) for i in range(len(prompts))]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    gen = Generator(model, "pangu", "text-code", max_batch_size=6)
    first = [r.tokens for r in gen.generate(prompts, sampling, keys)]
    assert [r.tokens for r in gen.generate(prompts, sampling, keys)] == first
    gen.max_batch_size = 1
    assert [r.tokens for r in gen.generate(prompts, sampling, keys)] == first  # batch size 1
    reordered = gen.generate(prompts[::-1], sampling, keys[::-1])
    assert [r.tokens for r in reordered][::-1] == first  # order of work does not matter
    other = [r.tokens for r in gen.generate(prompts, SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10,
                                                                    seed=8), keys)]
    assert other != first
    assert first[0] != first[3]  # same prompt, other key: another sample


def test_sample_tokens_greedy_topk_topp_and_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]))
    keys, steps = torch.arange(20000), torch.zeros(20000, dtype=torch.long)
    batch = logits.expand(20000, -1)
    draws = sample_tokens(batch, SamplingConfig(temperature=1.0, top_p=1.0), keys, steps)
    freq = torch.bincount(draws, minlength=5).double() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0], dtype=torch.float64), atol=0.015,
                               rtol=0)
    nucleus = sample_tokens(batch, SamplingConfig(temperature=1.0, top_p=0.75), keys, steps)
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reach 0.75: the rest is cut
    assert set(sample_tokens(batch, SamplingConfig(temperature=1.0, top_k=1, top_p=1.0), keys, steps).tolist()) == {0}
    assert sample_tokens(batch, SamplingConfig(greedy=True), keys, steps).unique().tolist() == [0]
    u = uniforms(1, keys, steps)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    with pytest.raises(ValueError):
        SamplingConfig(temperature=0.0)


def test_stops_at_eoc_per_sequence_and_at_the_limits(dist):
    model = _model("partial")
    prompts = _prompts("pangu")
    sampling = SamplingConfig(greedy=True, max_new_tokens=9)
    baseline = Generator(model, "pangu", "text-code").generate(prompts, sampling)
    assert all(r.stop == "length" and len(r.tokens) == 9 for r in baseline)

    def eoc_for_key_1_at_step_3(logits, keys, step):
        if step == 3:
            logits = logits.clone()
            logits[keys == 1, st.EOC_ID] = 1e9
        return logits

    gen = Generator(model, "pangu", "text-code", logits_hook=eoc_for_key_1_at_step_3)
    stopped = gen.generate(prompts, sampling)
    assert stopped[1].stop == "eoc" and stopped[1].finished
    assert stopped[1].tokens == baseline[1].tokens[:3]  # [eoc] is not part of the output
    for i in (0, 2):  # the batch shrank around them: unchanged
        assert stopped[i].tokens == baseline[i].tokens and stopped[i].stop == "length"
    # the context length (learned positions) caps a sequence: SEQ = 32 in the tiny config
    long_prompt = [st.DESCR_ID] + [200] * 25 + [st.PYTHON_ID, 20]
    capped = Generator(model, "pangu", "text-code").generate([long_prompt, prompts[1]],
                                                             SamplingConfig(greedy=True, max_new_tokens=20))
    assert capped[0].stop == "length" and len(long_prompt) + len(capped[0].tokens) == 32
    assert len(capped[1].tokens) == 20
    # the default runs every sample to the context length (the paper's budget), not to a token count
    assert SamplingConfig().max_new_tokens is None
    full = Generator(model, "pangu", "text-code").generate(prompts, SamplingConfig(greedy=True))
    for prompt, r, short in zip(prompts, full, baseline):
        assert r.tokens[:9] == short.tokens
        assert (r.stop == "length" and len(prompt) + len(r.tokens) == 32) or r.stop == "eoc"
    assert any(len(prompt) + len(r.tokens) == 32 for prompt, r in zip(prompts, full))
    with pytest.raises(ValueError, match="context"):
        Generator(model, "pangu", "text-code").generate([[st.PYTHON_ID] * 32], sampling)


# ----------------------------------------------------------------------------------------------------
# De-normalisation and the record contract of megatron_t2c/evaluation/execute.py
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from helpers.t2c_data import tiny_tokenizer

    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer

    return load_tokenizer(tiny_tokenizer())


@pytest.fixture(scope="module")
def humaneval():
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval

    return load_humaneval()[:12]


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_completions_rebuild_the_reference_program(tokenizer, humaneval, fmt):
    """Feed the normalised reference as the 'generation': the records must give the reference program, as
    ``megatron_t2c/evaluation/execute.py`` builds it, for plain and incremental prompts; no character is lost without [eoc]."""
    from megatron_t2c.evaluation.execute import Programs

    programs = Programs("humaneval")
    for problem in humaneval:
        reference = normalise(problem.function)
        prompt = tokenizer.encode_sample(problem.prompt(fmt))
        rest = reference[len(problem.normalised_signature):]
        generated = tokenizer.encode_text(rest)
        function = function_source(tokenizer, prompt, generated, fmt)
        assert ast.dump(ast.parse(function)) == ast.dump(ast.parse(denormalise(reference)))
        completion = completion_of(prompt_code_source(tokenizer, prompt, fmt), function)
        record = {"task_id": problem.task_id, "completion": completion, "prompt_format": fmt, "prefix_index": 0}
        assert ast.dump(ast.parse(programs.program(record))) == ast.dump(ast.parse(problem.program()))
        for q in problem.incremental()[:3]:
            prompt = tokenizer.encode_sample(q.prompt(fmt))
            generated = tokenizer.encode_text(reference[len(q.code):])
            function = function_source(tokenizer, prompt, generated, fmt)
            completion = completion_of(prompt_code_source(tokenizer, prompt, fmt), function)
            assert denormalise(q.code) + completion == function
            record = {"task_id": q.task_id, "completion": completion, "prompt_format": fmt,
                      "prefix_index": q.index}
            assert ast.dump(ast.parse(programs.program(record))) == ast.dump(ast.parse(problem.program()))


def test_denormalised_generation_indentation_and_last_character(tokenizer, humaneval):
    problem = humaneval[0]
    prompt = tokenizer.encode_sample(problem.prompt("pangu"))
    source = prompt_code_source(tokenizer, prompt, "pangu")
    body = " [new_line] [indent] for x in numbers: [new_line] [indent] if x: [new_line] [indent] return True " \
           "[new_line] [dedent] [dedent] return False"  # no [eoc], no final [new_line]: cut by the length limit
    function = function_source(tokenizer, prompt, tokenizer.encode_text(body), "pangu")
    completion = completion_of(source, function)
    assert completion == ("    for x in numbers:\n        if x:\n            return True\n"
                          "    return False\n")  # the last character survives
    ast.parse(problem.signature + "\n" + completion)
    # a body on the signature's own line moves to an indented line
    same_line = function_source(tokenizer, prompt, tokenizer.encode_text(" return len(numbers) > 1"), "pangu")
    assert completion_of(source, same_line) == "    return len(numbers) > 1\n"


# ----------------------------------------------------------------------------------------------------
# Checkpoint, TP=2, the generate stage
# ----------------------------------------------------------------------------------------------------

CKPT_SEQ = 256


def _save_tiny_checkpoint(save_dir: str, tokenizer_model: str) -> None:
    from megatron_t2c.training.loop import checkpointing
    from megatron_t2c.runtime import distributed
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.mrpt.separation import separated_token_ids
    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer

    tok = load_tokenizer(tokenizer_model)
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    config = model_config(seq_length=CKPT_SEQ, separation="partial")
    separated = separated_token_ids("partial", pieces)
    distributed.initialize_distributed(1, 1, cpu=True, seed=5)
    try:
        model = build_model(config, make_layout(config, separated, tok.vocab_size))
        _perturb(model, seed=1, scale=0.2)
        info = checkpointing.make_run_info(model_config=config, vocab_size=tok.vocab_size, separation="partial",
                                           separated=separated, tokenizer_model=tokenizer_model, fmt="pangu",
                                           objective="prefix-code", stage="mrpt")
        checkpointing.save_checkpoint(save_dir, 10, [model], None, None, progress={}, run_info=info,
                                      tokenizer_model=tokenizer_model)
    finally:
        distributed.destroy_distributed()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from helpers.t2c_data import tiny_tokenizer

    save_dir = str(tmp_path_factory.mktemp("gen-ckpt") / "run")
    _save_tiny_checkpoint(save_dir, str(tiny_tokenizer()))
    return save_dir


def _generate_from_checkpoint(ckpt: str, tp: int, prompts: list[list[int]]) -> dict:
    """Greedy and sampled tokens of ``prompts`` from the checkpoint at TP=tp."""
    from megatron_t2c.training.loop import checkpointing
    from megatron_t2c.runtime import distributed

    distributed.initialize_distributed(tp, 1, cpu=True, seed=9)
    try:
        model, info = checkpointing.model_from_checkpoint(ckpt)
        gen = Generator(model, info["format"], info["objective"], max_batch_size=4)
        greedy = gen.generate(prompts, SamplingConfig(greedy=True, max_new_tokens=6), return_logits=True)
        sampled = gen.generate(prompts * 2, SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=6, seed=2))
        return {"greedy": [r.tokens for r in greedy], "sampled": [r.tokens for r in sampled],
                "logits": [r.logits[:, :100].tolist() for r in greedy]}
    finally:
        distributed.destroy_distributed()


def _tp2_body(ckpt: str, expected_path: str) -> None:
    with open(expected_path, encoding="utf-8") as fh:
        expected = json.load(fh)
    got = _generate_from_checkpoint(ckpt, tp=2, prompts=expected["prompts"])
    assert got["greedy"] == expected["greedy"], (got["greedy"], expected["greedy"])
    assert got["sampled"] == expected["sampled"], (got["sampled"], expected["sampled"])
    torch.testing.assert_close(torch.tensor(got["logits"]), torch.tensor(expected["logits"]), atol=1e-4, rtol=1e-4)


def test_tensor_parallel_generation_equals_tp1(checkpoint, tokenizer, humaneval, tmp_path):
    prompts = [tokenizer.encode_sample(p.prompt("pangu")) for p in humaneval[:2]]
    expected = dict(_generate_from_checkpoint(checkpoint, tp=1, prompts=prompts), prompts=prompts)
    path = tmp_path / "expected.json"
    path.write_text(json.dumps(expected), encoding="utf-8")
    run_with_torchrun(__file__, "_tp2_body", nproc=2, timeout=120,
                      kwargs={"ckpt": checkpoint, "expected_path": str(path)})


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def test_generate_stage_end_to_end_with_resume(checkpoint, tmp_path):
    from megatron_t2c.evaluation.execute import Programs
    from megatron_t2c.evaluation.generate import main

    out = tmp_path / "samples.jsonl"
    common = ["--task", "humaneval", "--checkpoint", checkpoint, "--cpu", "--max-new-tokens", "8",
              "--no-progress", "--batch-size", "4"]
    summary = main(common + ["--output", str(out), "--limit", "3", "--n-samples", "2", "--temperature", "1.0",
                             "--seed", "11"])
    records = _read_jsonl(out)
    assert summary["generated"] == 6 and len(records) == 6
    assert [(r["task_id"], r["sample_index"]) for r in records] == [
        (f"HumanEval/{i}", s) for i in range(3) for s in range(2)]
    programs = Programs("humaneval")
    for r in records:
        assert r["prompt_format"] == "pangu" and r["prefix_index"] == 0 and r["source"] == "megatron_t2c"
        assert r["base_task_id"] == r["task_id"] and r["stop"] in ("eoc", "length")
        assert r["function"].endswith(r["completion"]) and 0 < r["num_tokens"] <= 8
        programs.program(r)  # the execute stage accepts the record
    # a rerun skips everything; a killed run's truncated last line is redone identically
    assert main(common + ["--output", str(out), "--limit", "3", "--n-samples", "2", "--temperature", "1.0",
                          "--seed", "11"])["generated"] == 0
    data = out.read_bytes()
    out.write_bytes(data[:len(data) - len(data.split(b"\n")[-2]) // 2 - 1])
    assert main(common + ["--output", str(out), "--limit", "3", "--n-samples", "2", "--temperature", "1.0",
                          "--seed", "11"])["generated"] == 1
    assert _read_jsonl(out) == records
    # other sampling settings into the same file are refused
    with pytest.raises(SystemExit):
        main(common + ["--output", str(out), "--limit", "3", "--n-samples", "2", "--temperature", "0.5"])
    # incremental: the plain prompt and all its incremental prompts (the pool of incremental pass@k);
    # --limit takes whole problems (at least one)
    inc = tmp_path / "incremental.jsonl"
    main(common + ["--output", str(inc), "--incremental", "--limit", "2", "--greedy"])
    records = _read_jsonl(inc)
    count = len(programs.incremental("HumanEval/0"))
    assert [r["task_id"] for r in records] == ["HumanEval/0"] + [f"HumanEval/0#{i}" for i in range(1, count + 1)]
    assert [r["prefix_index"] for r in records] == list(range(count + 1))
    assert {r["base_task_id"] for r in records} == {"HumanEval/0"}
    for r in records:
        programs.program(r)
    assert os.path.getsize(inc) > 0


def test_prompts_longer_than_the_context_become_empty_samples(checkpoint, tokenizer, tmp_path):
    from megatron_t2c.evaluation.execute import Programs
    from megatron_t2c.evaluation.generate import main
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval

    humaneval = load_humaneval()[:40]
    too_long = {p.task_id for p in humaneval if len(tokenizer.encode_sample(p.prompt("pangu"))) >= CKPT_SEQ}
    assert too_long  # the tiny tokenizer makes some HumanEval prompts longer than the 256-token context
    out = tmp_path / "samples.jsonl"
    summary = main(["--task", "humaneval", "--checkpoint", checkpoint, "--cpu", "--max-new-tokens", "1",
                    "--no-progress", "--greedy", "--limit", "40", "--output", str(out)])
    records = _read_jsonl(out)
    assert len(records) == len(humaneval) and summary["too_long"] == len(too_long)
    empty = {r["task_id"] for r in records if r["stop"] == "prompt_too_long"}
    assert empty == too_long
    assert all(r["completion"] == "" for r in records if r["task_id"] in empty)
    programs = Programs("humaneval")
    for r in records:
        programs.program(r)  # still a record the execute stage runs (and fails)
