"""Checkpoint conversion (issue 6): megatron_t2c <-> Hugging Face, parity of logits and of greedy generation.

One torchrun run (2 CPU ranks) makes every multi-rank artefact: tiny checkpoints saved at TP=2 and at PP=2
for three model kinds (no separation + learned positions -> stock GPT-2; partial separation; full separation
+ RoPE + prefix-code), with each model's own logits on fixed rows as the reference; and a stock
``GPT2LMHeadModel`` directory imported with ``--from-hf`` and loaded back at TP=2 and at PP=2 (logits checked
there).  The tests in this process export those checkpoints and compare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # the [hf] extra
from safetensors.torch import load_file  # noqa: E402
from helpers.t2c_data import tiny_tokenizer  # noqa: E402
from helpers.torchrun import run_with_torchrun  # noqa: E402

from megatron_t2c.mrpt import special_tokens as st  # noqa: E402
from megatron_t2c.hf.architecture import ConversionError, HFArchitecture  # noqa: E402
from megatron_t2c.hf.export import export_to_hf, write_tokenizer  # noqa: E402
from megatron_t2c.hf.import_hf import import_from_hf  # noqa: E402
from megatron_t2c.hf.safetensors_files import write_safetensors  # noqa: E402
from megatron_t2c.hf.verify import megatron_logits, sample_rows, verify  # noqa: E402
from megatron_t2c.hf.weight_map import deinterleave_qkv, interleave_qkv  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

VOCAB = 400  # the tiny tokenizer's size
SEQ = 64
#: name -> (separation, position embedding, objective)
KINDS = {"none": ("none", "learned_absolute", "text-code"),
         "partial": ("partial", "learned_absolute", "code"),
         "full-rope-prefix": ("full", "rope", "prefix-code")}
PROMPTS = ["[descr] Return the sum of two numbers. [python] def add(a, b):",
           "[descr] Sort a list of names. [python]",
           "[descr] x [python] def f(x): [new_line] [indent] return",
           "[descr] Count the words. [python] def wc(text):"]
TOL = dict(atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Multi-rank artefacts (torchrun body)
# ---------------------------------------------------------------------------------------------------

def _model_config(kind: str):
    from megatron_t2c.models.config import ModelConfig

    separation, positions, _ = KINDS[kind]
    return ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, seq_length=SEQ, hidden_dropout=0.0,
                       attention_dropout=0.0, make_vocab_size_divisible_by=64, separation=separation,
                       position_embedding_type=positions)


def _save(root: str, name: str, kind: str, tokenizer: str):
    """Build this rank's part of a perturbed ``kind`` model and save it under ``root/name``."""
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.mrpt.separation import separated_token_ids
    from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore

    core = T2CTokenizerCore(tokenizer)
    pieces = [core.id_to_piece(i) for i in range(core.vocab_size)]
    config = _model_config(kind)
    separated = separated_token_ids(config.separation, pieces)
    model = build_model(config, make_layout(config, separated, VOCAB),
                        transformer_config=config.transformer_config(pipeline_dtype=torch.float32))
    with torch.no_grad():  # code rows unlike their base rows, non-trivial layer norms and biases; the noise
        for param_name, p in model.named_parameters():  # noise by name: TP replicas and PP copies agree
            key = "embedding.word_embeddings.weight" if param_name == "output_layer.weight" else param_name
            gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    info = make_run_info(model_config=config, vocab_size=VOCAB, separation=config.separation, separated=separated,
                         tokenizer_model=tokenizer, fmt="pangu", objective=KINDS[kind][2], stage="mrpt")
    save_checkpoint(f"{root}/{name}", 1, [model], None, None, progress={}, run_info=info, tokenizer_model=tokenizer)
    return model.eval(), HFArchitecture.from_run_info(info)


def _pipeline_logits(stage, tokens, arch):
    """Logits of a PP=2 model (on the last stage; None on the first) through megatron's schedule."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_t2c.mrpt.modality import modality_ids, segment_ids
    from megatron_t2c.mrpt.objectives import attention_mask

    def step(data_iterator, model):
        tokens = next(data_iterator)
        mask = attention_mask(tokens, "pangu", "prefix-code") if arch.prefix_lm else None
        out = model(input_ids=stage.layout.rows(tokens, modality_ids(tokens, "pangu")),
                    position_ids=torch.arange(tokens.shape[1])[None].expand_as(tokens), attention_mask=mask,
                    label_modality=segment_ids(tokens, "pangu"), runtime_gather_output=True)
        return out, lambda o: (o.sum() * 0, {"logits": o.detach()[..., :VOCAB]})

    with torch.no_grad():
        out = get_forward_backward_func()(forward_step_func=step, data_iterator=iter([tokens]), model=[stage],
                                          num_microbatches=1, seq_length=tokens.shape[1],
                                          micro_batch_size=tokens.shape[0], forward_only=True)
    return out[0]["logits"] if parallel_state.is_pipeline_last_stage() else None


def _make_artefacts(root: str, tokenizer: str):
    import torch.distributed as dist
    from transformers import GPT2Config, GPT2LMHeadModel

    from megatron_t2c.runtime import distributed
    from megatron_t2c.training.checkpointing import model_from_checkpoint

    rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
    # 1. a stock GPT-2 directory (as save_pretrained writes it) -> --from-hf, recorded for TP=2/PP=2
    distributed.initialize_distributed(1, 1, cpu=True, seed=7)
    gpt2_dir = f"{root}/stock-gpt2"
    if rank == 0:
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=4,
                            activation_function="gelu", bos_token_id=None, eos_token_id=st.EOC_ID,
                            pad_token_id=st.PAD_ID)
        GPT2LMHeadModel(config).save_pretrained(gpt2_dir)
        write_tokenizer(gpt2_dir, tokenizer, SEQ)
    dist.barrier()
    arch, _ = HFArchitecture.from_hf_config(json.load(open(f"{gpt2_dir}/config.json")))
    tokens = sample_rows(arch, rows=3, length=SEQ)
    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        want = hf(input_ids=tokens).logits
    imported = import_from_hf(gpt2_dir, f"{root}/from-hf", tensor_model_parallel_size=2,
                              pipeline_model_parallel_size=2)
    distributed.destroy_distributed(keep_process_group=True)
    # 2. TP=2: the imported checkpoint loads with equal logits; checkpoints of each kind + their logits
    distributed.initialize_distributed(2, 1, cpu=True, seed=11)
    model, _ = model_from_checkpoint(imported)
    torch.testing.assert_close(megatron_logits(model, tokens, arch), want, **TOL)
    print("from-hf checkpoint at TP=2: logits equal", flush=True)
    for kind in KINDS:
        model, kind_arch = _save(root, f"tp2-{kind}", kind, tokenizer)
        logits = megatron_logits(model, sample_rows(kind_arch, length=SEQ), kind_arch)
        if rank == 0:
            torch.save(logits, f"{root}/tp2-{kind}.pt")
    distributed.destroy_distributed(keep_process_group=True)
    # 3. PP=2: likewise
    distributed.initialize_distributed(1, 2, cpu=True, seed=13)
    stage, _ = model_from_checkpoint(imported, transformer_overrides={"pipeline_dtype": torch.float32})
    got = _pipeline_logits(stage, tokens, arch)
    if got is not None:
        torch.testing.assert_close(got, want, **TOL)
        print("from-hf checkpoint at PP=2: logits equal", flush=True)
    for kind in KINDS:
        stage, kind_arch = _save(root, f"pp2-{kind}", kind, tokenizer)
        logits = _pipeline_logits(stage, sample_rows(kind_arch, length=SEQ), kind_arch)
        if logits is not None:
            torch.save(logits, f"{root}/pp2-{kind}.pt")
    dist.barrier()


@pytest.fixture(scope="module")
def tokenizer() -> str:
    return str(tiny_tokenizer(vocab_size=VOCAB))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("convert")
    out = run_with_torchrun(__file__, "_make_artefacts", nproc=2, timeout=180,
                            kwargs={"root": str(root), "tokenizer": tokenizer})
    assert "from-hf checkpoint at TP=2: logits equal" in out and "from-hf checkpoint at PP=2: logits equal" in out
    return root


@pytest.fixture(scope="module")
def exported(artefacts) -> dict:
    """Every TP=2/PP=2 checkpoint exported once: name -> (HF directory, export summary)."""
    out = {}
    for layout in ("tp2", "pp2"):
        for kind in KINDS:
            name = f"{layout}-{kind}"
            out[name] = (artefacts / f"hf-{name}", export_to_hf(str(artefacts / name), str(artefacts / f"hf-{name}")))
    return out


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()


# ---------------------------------------------------------------------------------------------------
# Export: layout, parity
# ---------------------------------------------------------------------------------------------------

def test_qkv_interleaving_matches_megatron_and_inverts():
    heads, groups, d, h = 4, 2, 3, 5
    fused = torch.arange((heads + 2 * groups) * d * h, dtype=torch.float32).view(-1, h)
    # megatron's own split (SelfAttention.get_query_key_value_tensors): per group [q.., k, v]
    grouped = fused.view(groups, (heads // groups + 2) * d, h)
    q = grouped[:, :heads // groups * d].reshape(heads * d, h)
    k, v = grouped[:, heads // groups * d:-d].reshape(-1, h), grouped[:, -d:].reshape(-1, h)
    assert torch.equal(deinterleave_qkv(fused, heads, groups, d), torch.cat([q, k, v]))
    assert torch.equal(interleave_qkv(deinterleave_qkv(fused, heads, groups, d), heads, groups, d), fused)
    bias = torch.arange((heads + 2 * groups) * d, dtype=torch.float32)
    assert torch.equal(interleave_qkv(deinterleave_qkv(bias, heads, groups, d), heads, groups, d), bias)


def test_streaming_safetensors_writer_matches_the_library(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2, 2).to(torch.bfloat16)}
    path = str(tmp_path / "x.safetensors")
    meta = [(k, torch.empty_like(v, device="meta")) for k, v in tensors.items()]
    write_safetensors(path, meta, tensors.items())
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with pytest.raises(RuntimeError, match="does not match"):
        write_safetensors(path, meta, [("a", tensors["b"])])


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_export_has_the_logits_of_the_trained_model(artefacts, exported, layout, kind):
    hf_dir, summary = exported[f"{layout}-{kind}"]
    files = set(os.listdir(hf_dir))
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
            "tokenizer_config.json", "tokenization_t2c.py", "special_tokens.py"} <= files
    config = json.loads((hf_dir / "config.json").read_text())
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == st.EOC_ID and st.PYTHON_ID in generation["suppress_tokens"]
    stock = kind == "none"
    assert summary.remote_code != stock
    if stock:  # a stock GPT-2: no remote model code at all
        assert config["model_type"] == "gpt2" and "auto_map" not in config
        assert not files & {"modeling_t2c.py", "modality.py"}
    else:
        assert config["model_type"] == "t2c_gpt" and config["auto_map"]["AutoModelForCausalLM"]
        for name in ("modality.py", "objectives.py", "special_tokens.py"):  # megatron_t2c's sources, verbatim
            assert (hf_dir / name).read_bytes() == (Path(st.__file__).parent / name).read_bytes()
    weights = load_file(str(hf_dir / "model.safetensors"))
    assert weights["transformer.wte.weight"].shape == (VOCAB, 32)  # vocabulary padding (384 at TP=2) dropped
    assert "lm_head.weight" not in weights  # tied
    model = _hf(hf_dir)
    assert type(model).__name__ == ("GPT2LMHeadModel" if stock else "T2CForCausalLM")
    info = json.loads((artefacts / f"{layout}-{kind}" / "iter_0000001" / "t2c_run.json").read_text())
    arch = HFArchitecture.from_run_info(info)
    tokens = sample_rows(arch, length=SEQ)
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    torch.testing.assert_close(logits, torch.load(artefacts / f"{layout}-{kind}.pt"), **TOL)
    if kind == "full-rope-prefix":  # the modality rules matter: without them the logits differ
        from megatron_t2c.hf.modeling_t2c import modality_inputs

        plain = dict(modality_inputs(tokens, model.config), modality=torch.zeros_like(tokens))
        plain.update(prefix=torch.zeros_like(tokens, dtype=torch.bool))
        with torch.no_grad():
            assert (model(input_ids=tokens, **plain).logits - logits).abs().max() > 1e-2


def test_verify_reports_parity_and_catches_a_wrong_export(artefacts, exported, capsys):
    result = verify(str(artefacts / "tp2-partial"), str(exported["tp2-partial"][0]))
    assert result.ok and result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    assert "top-1 agreement 100.00%" in str(result)
    wrong = verify(str(artefacts / "pp2-partial"), str(exported["tp2-partial"][0]))  # other weights
    assert not wrong.ok and "FAILED" in str(wrong)


def test_bfloat16_export(artefacts, tmp_path):
    hf_dir = tmp_path / "bf16"
    export_to_hf(str(artefacts / "tp2-partial"), str(hf_dir), dtype="bfloat16")
    weights = load_file(str(hf_dir / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    result = verify(str(artefacts / "tp2-partial"), str(hf_dir))
    assert result.tolerance == 5e-2 and result.ok and result.max_abs_diff > 0


# ---------------------------------------------------------------------------------------------------
# generate() = our engine
# ---------------------------------------------------------------------------------------------------

def _reference_greedy(model, prompt: list[int], arch, steps: int) -> list[int]:
    """Greedy decoding by full forward passes (no cache), suppressing what the engine never generates."""
    from megatron_t2c.hf.export import SUPPRESSED_IDS

    tokens = list(prompt)
    for _ in range(steps):
        logits = megatron_logits(model, torch.tensor([tokens]), arch)[0, -1]
        logits[list(SUPPRESSED_IDS)] = float("-inf")
        token = int(logits.argmax())
        if token == st.EOC_ID:
            break
        tokens.append(token)
    return tokens[len(prompt):]


def _cut(ids: list[int]) -> list[int]:
    return ids[:ids.index(st.EOC_ID)] if st.EOC_ID in ids else ids


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_generate_writes_what_our_engine_writes(dist, artefacts, exported, kind):
    from transformers import AutoTokenizer

    from megatron_t2c.training.checkpointing import model_from_checkpoint
    from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore

    checkpoint, hf_dir = str(artefacts / f"tp2-{kind}"), exported[f"tp2-{kind}"][0]
    tok = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=True)
    ours = T2CTokenizerCore(str(hf_dir / "tokenizer.model"))
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    assert ids == [ours.tokenize(p) for p in PROMPTS]
    model, info = model_from_checkpoint(checkpoint)
    arch = HFArchitecture.from_run_info(info)
    steps = 10
    want = [_reference_greedy(model, p, arch, steps) for p in ids]
    try:
        from megatron_t2c.inference.generator import Generator, SamplingConfig
    except ImportError:  # the engine is optional here
        Generator = None
    if Generator is not None:
        engine = Generator(model, "pangu", info["objective"]).generate(
            ids, SamplingConfig(greedy=True, max_new_tokens=steps))
        assert [r.tokens for r in engine] == want
    hf = _hf(hf_dir)
    batch = tok(PROMPTS, return_tensors="pt", padding=True)  # left padding
    out = hf.generate(**batch, max_new_tokens=steps)
    batched = [_cut(row[batch["input_ids"].shape[1]:].tolist()) for row in out]
    assert batched == want
    single = hf.generate(**tok(PROMPTS[0], return_tensors="pt"), max_new_tokens=steps)
    assert _cut(single[0, len(ids[0]):].tolist()) == want[0]
    assert len(set(map(tuple, want))) > 1


def test_exported_directory_works_without_megatron_t2c(artefacts, exported, tokenizer):
    hf_dir = exported["tp2-full-rope-prefix"][0]
    model = _hf(hf_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=True)
    want = _cut(model.generate(**tok(PROMPTS[1], return_tensors="pt"), max_new_tokens=6)[0].tolist())
    script = f"""
import sys, json
sys.modules["megatron_t2c"] = None  # not installed, as far as this process can tell
sys.modules["megatron"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(hf_dir)!r}, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained({str(hf_dir)!r}, trust_remote_code=True).eval()
out = model.generate(**tok({PROMPTS[1]!r}, return_tensors="pt"), max_new_tokens=6)
print(json.dumps(out[0].tolist()))
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(artefacts / "hf_modules"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/",
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _cut(json.loads(done.stdout.strip().splitlines()[-1])) == want


# ---------------------------------------------------------------------------------------------------
# Import: round trips
# ---------------------------------------------------------------------------------------------------

def _same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    left.pop("lm_head.weight", None)  # a stock save_pretrained may or may not write the tied copy
    assert left.keys() == right.keys()
    for key in left:
        assert left[key].dtype == right[key].dtype and torch.equal(left[key], right[key]), key


def test_stock_gpt2_round_trip_is_bit_identical(artefacts):
    run = artefacts / "from-hf"
    info = json.loads(next(run.glob("iter_*/t2c_run.json")).read_text())
    assert info["config"]["target_parallel"] == {"tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 2}
    assert info["separation"] == "none" and info["vocab_size"] == VOCAB
    back = artefacts / "stock-gpt2-back"
    summary = export_to_hf(str(run), str(back))
    assert summary.model_class == "GPT2LMHeadModel"
    _same_weights(artefacts / "stock-gpt2", back)


def test_t2c_round_trip_is_bit_identical(artefacts, exported):
    hf_dir = exported["tp2-partial"][0]
    checkpoint = import_from_hf(str(hf_dir), str(artefacts / "partial-back"))
    info = json.loads((Path(checkpoint) / "t2c_run.json").read_text())
    assert info["separation"] == "partial" and info["objective"] == "code" and info["separated_ids"]
    again = artefacts / "hf-partial-again"
    export_to_hf(checkpoint, str(again))
    _same_weights(hf_dir, again)
    assert verify(checkpoint, str(hf_dir)).max_abs_diff == 0.0


# ---------------------------------------------------------------------------------------------------
# Errors and the command line
# ---------------------------------------------------------------------------------------------------

def test_clear_errors(artefacts, exported, tmp_path, tokenizer):
    from megatron_t2c.training.checkpointing import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        export_to_hf(str(tmp_path / "nothing"), str(tmp_path / "out"))
    # a checkpoint that stored no tokenizer
    bare = tmp_path / "bare"
    shutil.copytree(artefacts / "tp2-none", bare)
    for path in bare.glob("iter_*/tokenizer.model"):
        path.unlink()
    with pytest.raises(ConversionError, match="missing file.*tokenizer"):
        export_to_hf(str(bare), str(tmp_path / "out"))
    export_to_hf(str(bare), str(tmp_path / "out"), tokenizer_model=tokenizer)  # ... unless given
    with pytest.raises(ConversionError, match="not empty"):
        export_to_hf(str(bare), str(tmp_path / "out"), tokenizer_model=tokenizer)
    with pytest.raises(ConversionError, match="not a stock GPT2LMHeadModel"):
        export_to_hf(str(artefacts / "tp2-partial"), str(tmp_path / "o2"), model_class="gpt2")
    # unknown architectures
    hf = tmp_path / "hf"
    shutil.copytree(exported["tp2-none"][0], hf)
    config = json.loads((hf / "config.json").read_text())
    for change, message in (({"model_type": "bert"}, "unknown architecture: model_type 'bert'"),
                            ({"activation_function": "mish"}, "unsupported activation activation_function='mish'"),
                            ({"tie_word_embeddings": False}, "tie_word_embeddings")):
        (hf / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ConversionError, match=message):
            import_from_hf(str(hf), str(tmp_path / "ck"))
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="split over TP=3"):
        import_from_hf(str(hf), str(tmp_path / "ck"), tensor_model_parallel_size=3)
    (hf / "tokenizer.model").unlink()
    (hf / "tokenizer.json").unlink()
    (hf / "vocab.json").write_text("{}")  # half a GPT-2 tokenizer (no merges.txt)
    with pytest.raises(ConversionError, match="not a tokenizer megatron_t2c reads"):
        import_from_hf(str(hf), str(tmp_path / "ck"))
    (hf / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="missing file.*model.safetensors"):
        import_from_hf(str(hf), str(tmp_path / "ck"), tokenizer_model=tokenizer)
    with pytest.raises(ConversionError, match="missing file.*config.json"):
        import_from_hf(str(tmp_path), str(tmp_path / "ck"))


def test_a_checkpoint_with_unknown_tensors_is_refused(artefacts, tmp_path, monkeypatch):
    from megatron_t2c.hf import export

    real = export.MegatronTensors.__init__

    def with_extra(self, path):
        real(self, path)
        self.shapes["decoder.layers.mlp.router.weight"] = ((2, 4, 32), torch.float32)  # an MoE, say

    monkeypatch.setattr(export.MegatronTensors, "__init__", with_extra)
    with pytest.raises(ConversionError, match="unknown architecture.*router"):
        export_to_hf(str(artefacts / "tp2-none"), str(tmp_path / "out"))


def _cli(*args):
    tool = Path(__file__).resolve().parent.parent.parent / "tools" / "convert_checkpoint.py"
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_cli(artefacts, tmp_path):
    done = _cli("--help")
    assert done.returncode == 0 and "--to-hf" in done.stdout and "examples:" in done.stdout
    done = _cli("--to-hf", "--load", str(artefacts / "pp2-full-rope-prefix"), "--output", str(tmp_path / "hf"),
                "--verify")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[0])["model_class"] == "T2CForCausalLM"
    assert "verify: max |logit difference|" in done.stdout and "OK" in done.stdout
    done = _cli("--to-hf", "--from-hf", "--load", "x", "--output", "y")
    assert done.returncode == 2 and "exactly one" in done.stderr
    done = _cli("--from-hf", "--load", str(tmp_path / "missing"), "--output", str(tmp_path / "ck"))
    assert done.returncode == 1 and "error: missing file" in done.stderr
