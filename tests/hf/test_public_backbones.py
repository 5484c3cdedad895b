"""Public backbones (issue 13): GPT-Neo (PyCodeGPT's class) and GPT-2 checkpoints with their own byte-level BPE
tokenizers -- imported, trained with MRPT, exported back.

The backbones are tiny random models built with transformers (GPT-Neo: 2 layers, one global and one local
with a window of 8, on sequences longer than it; GPT-2 with ``gelu_new``, saved as PyTorch weights) over a BPE
tokenizer trained with the ``tokenizers`` library on stdlib text; the loading path is the one a real
``Daoguang/PyCodeGPT`` directory takes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # the [hf] extra
from helpers.hf_tokenizers import tiny_hf_tokenizer  # noqa: E402
from helpers.torchrun import run_with_torchrun  # noqa: E402
from helpers.training_runs import to_flags  # noqa: E402

from megatron_t2c.hf.architecture import ConversionError, HFArchitecture  # noqa: E402
from megatron_t2c.hf.export import export_to_hf  # noqa: E402
from megatron_t2c.hf.import_hf import import_from_hf  # noqa: E402
from megatron_t2c.hf.verify import megatron_logits, verify  # noqa: E402
from megatron_t2c.hf.vocab_map import MARKERS  # noqa: E402
from megatron_t2c.mrpt import special_tokens as st  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

SEQ = 64
WINDOW = 8  # GPT-Neo's local window: position i sees i-7 .. i
OFFSET = 15  # our id = the tokenizer's id + OFFSET (HFTokenizerCore.OFFSET)
FMT = "pycodegpt"
PROMPTS = ["[sos] def add(a, b): [descr] Return the sum of two numbers. [python]",
           "[sos] def count_words(text): [descr] Count the words of a text, separated by spaces. [python]",
           "[sos] def f(x): [descr] x [python] [new_line] [indent] return"]


# ---------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------

def _perturb(model, seed: int) -> None:
    """Non-trivial layer norms and biases (transformers initialises them to 1 and 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _backbone(kind: str, directory: Path, tokenizer_dir: Path, rows: int | None = None) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

    vocab = rows or len(AutoTokenizer.from_pretrained(tokenizer_dir))
    torch.manual_seed(0)
    if kind == "gpt_neo":
        model = GPTNeoForCausalLM(GPTNeoConfig(
            vocab_size=vocab, max_position_embeddings=SEQ, hidden_size=64, num_layers=2, num_heads=4,
            attention_types=[[["global", "local"], 1]], window_size=WINDOW, activation_function="gelu_new",
            embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0, bos_token_id=0, eos_token_id=0))
    else:
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_positions=SEQ, n_embd=64, n_layer=2, n_head=4, activation_function="gelu_new",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    _perturb(model, 1)
    # GPT-Neo as safetensors, GPT-2 as PyTorch weights: both loading paths
    model.save_pretrained(directory, safe_serialization=kind == "gpt_neo")
    for name in os.listdir(tokenizer_dir):
        shutil.copy(tokenizer_dir / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def bpe() -> Path:
    return tiny_hf_tokenizer(800, FMT)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, bpe) -> dict[str, tuple[Path, str]]:
    """kind -> (Hugging Face directory, imported checkpoint recorded for TP=2/PP=2)."""
    root = tmp_path_factory.mktemp("backbones")
    out = {}
    for kind in ("gpt_neo", "gpt2"):
        hf_dir = _backbone(kind, root / kind, bpe)
        ckpt = import_from_hf(str(hf_dir), str(root / f"{kind}-ckpt"), tensor_model_parallel_size=2,
                              pipeline_model_parallel_size=2, sample_format=FMT)
        out[kind] = (hf_dir, ckpt)
    return out


def _hf(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32).eval()


# ---------------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt_neo", "gpt2"])
def test_import_computes_the_hf_model(backbones, kind):
    from megatron_t2c.training.checkpointing import read_run_info

    hf_dir, ckpt = backbones[kind]
    result = verify(ckpt, str(hf_dir))
    assert result.ok and result.max_abs_diff <= 1e-4, str(result)
    assert result.positions >= 4 * 48  # rows longer than the local window
    info = read_run_info(ckpt)
    rows = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
    assert info["vocab_size"] == OFFSET + rows and info["stage"] == "imported"
    assert info["config"]["hf_vocabulary"]["markers_added"] == list(MARKERS)
    arch = HFArchitecture.from_run_info(info)
    if kind == "gpt_neo":
        assert (arch.qkv_bias, arch.softmax_scale, arch.window_size, arch.local_layers()) == (False, 1.0, 7, [0, 1])
        assert arch.activation == "gelu_tanh" and arch.stock_target == "gpt_neo"
    else:
        assert arch.qkv_bias and arch.activation == "gelu_tanh" and arch.stock_target == "gpt2"


def test_marker_rows_start_as_the_mean_row(backbones):
    from safetensors.torch import load_file

    from megatron_t2c.training.checkpointing import model_from_checkpoint
    from megatron_t2c.hf.import_hf import single_rank

    hf_dir, ckpt = backbones["gpt_neo"]
    original = load_file(str(hf_dir / "model.safetensors"))["transformer.wte.weight"]
    with single_rank():
        model, _ = model_from_checkpoint(ckpt)
        table = model.embedding.word_embeddings.weight.detach()
    assert torch.equal(table[OFFSET:OFFSET + len(original)], original)
    mean = original.double().mean(0).float()
    for marker in MARKERS:
        torch.testing.assert_close(table[st.IDS[marker]], mean)


def _body_parallel(ckpt: str, hf_dir: str, reference: str) -> None:
    """torchrun body: the import loads at TP=2 and at PP=2 with the logits of the HF model."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_t2c.runtime import distributed
    from megatron_t2c.training.checkpointing import model_from_checkpoint, read_run_info

    tokens, want = torch.load(reference)
    arch = HFArchitecture.from_run_info(read_run_info(ckpt))
    distributed.initialize_distributed(2, 1, cpu=True, seed=3)
    model, _ = model_from_checkpoint(ckpt)
    got = megatron_logits(model, tokens, arch)[..., OFFSET:OFFSET + want.shape[-1]]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    print("TP=2: logits equal", flush=True)
    distributed.destroy_distributed(keep_process_group=True)
    distributed.initialize_distributed(1, 2, cpu=True, seed=3)
    stage, _ = model_from_checkpoint(ckpt, transformer_overrides={"pipeline_dtype": torch.float32})

    def step(data_iterator, model):
        batch = next(data_iterator)
        out = model(input_ids=batch, position_ids=torch.arange(batch.shape[1])[None].expand_as(batch),
                    attention_mask=None, runtime_gather_output=True)
        return out, lambda o: (o.sum() * 0, {"logits": o.detach()})

    with torch.no_grad():
        out = get_forward_backward_func()(forward_step_func=step, data_iterator=iter([tokens]), model=[stage],
                                          num_microbatches=1, seq_length=tokens.shape[1],
                                          micro_batch_size=tokens.shape[0], forward_only=True)
    if parallel_state.is_pipeline_last_stage():
        torch.testing.assert_close(out[0]["logits"][..., OFFSET:OFFSET + want.shape[-1]], want, atol=1e-4, rtol=0)
        print("PP=2: logits equal", flush=True)


def test_import_loads_at_tp2_and_pp2(backbones, tmp_path):
    hf_dir, ckpt = backbones["gpt_neo"]
    hf = _hf(hf_dir)
    gen = torch.Generator().manual_seed(0)
    hf_tokens = torch.randint(0, hf.config.vocab_size, (2, 40), generator=gen)  # 40 > the window
    with torch.no_grad():
        want = hf(input_ids=hf_tokens).logits
    torch.save((hf_tokens + OFFSET, want), tmp_path / "reference.pt")
    out = run_with_torchrun(__file__, "_body_parallel", nproc=2, timeout=240,
                            kwargs={"ckpt": ckpt, "hf_dir": str(hf_dir), "reference": str(tmp_path / "reference.pt")})
    assert "TP=2: logits equal" in out and "PP=2: logits equal" in out


# ---------------------------------------------------------------------------------------------------
# Export back
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt_neo", "gpt2"])
def test_round_trip_keeps_every_original_weight(backbones, kind, tmp_path):
    from transformers import AutoTokenizer

    hf_dir, ckpt = backbones[kind]
    out = tmp_path / "back"
    summary = export_to_hf(ckpt, str(out))
    stock = {"gpt_neo": "GPTNeoForCausalLM", "gpt2": "GPT2LMHeadModel"}[kind]
    assert summary.model_class == stock and not summary.remote_code
    assert not list(out.glob("*.py"))  # no remote code: vLLM / TGI serve it
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == kind and "auto_map" not in config
    original, back = _hf(hf_dir).state_dict(), _hf(out).state_dict()
    rows = original["transformer.wte.weight"].shape[0]
    assert back["transformer.wte.weight"].shape[0] == rows + len(MARKERS)
    for name, tensor in original.items():
        got = back[name][:rows] if name in ("transformer.wte.weight", "lm_head.weight") else back[name]
        assert torch.equal(got, tensor), name
    # the tokenizer: the original ids, the markers after the model's rows, atomic
    theirs, ours = AutoTokenizer.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(out)
    text = "def add(a, b): return a + b  # the sum"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert [ours.convert_tokens_to_ids(m) for m in MARKERS] == list(range(rows, rows + len(MARKERS)))
    ids = ours(PROMPTS[0])["input_ids"]
    assert ids[0] == rows + MARKERS.index(st.SOS) and ids[-1] == rows + MARKERS.index(st.PYTHON)
    assert ours.decode(ids) == PROMPTS[0]
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == rows + MARKERS.index(st.EOC)
    result = verify(ckpt, str(out))  # now with the markers in the rows
    assert result.ok, str(result)
    card = (out / "README.md").read_text()  # says which tokenizer it is, and its snippet runs
    assert "the backbone's Hugging Face tokenizer" in card and "trust_remote_code" not in card
    exec(card.split("```python\n")[1].split("```")[0], {})
    # and back again: nothing changes any more
    again = import_from_hf(str(out), str(tmp_path / "again"), sample_format=FMT)
    export_to_hf(again, str(tmp_path / "back2"))
    twice = _hf(tmp_path / "back2").state_dict()
    assert all(torch.equal(twice[k], v) for k, v in back.items())


# ---------------------------------------------------------------------------------------------------
# MRPT on an import, then export and generation
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory, bpe) -> str:
    """Docstring-code pairs of the stdlib fixture in the PyCodeGPT format, tokenised with the BPE tokenizer."""
    from megatron_t2c.data import preprocess
    from helpers.t2c_data import corpus_jsonl

    prefix = str(tmp_path_factory.mktemp("bpe-data") / "pycodegpt_text_code")
    preprocess.preprocess(preprocess.PreprocessConfig(
        input=str(corpus_jsonl()), tokenizer_model=str(bpe), output_prefix=prefix, format=FMT,
        include="text-code", max_seq_length=SEQ, progress=False), log=None)
    return prefix


def _mrpt_args(ckpt: str, dataset: str, out: Path, separation: str, **more) -> list[str]:
    # no --tokenizer-model and no architecture flags: both come from the imported checkpoint
    return to_flags({"cpu": True, "init_from": ckpt, "data_path": dataset, "format": FMT, "stage": "mrpt",
                     "objective": "code", "separation": separation, "train_iters": 5, "micro_batch_size": 2,
                     "global_batch_size": 2, "lr": 1e-3, "log_interval": 1, "save": str(out / "ckpt"),
                     "save_interval": 5, "data_cache_path": str(out / "cache"), "log_jsonl": str(out / "log.jsonl"),
                     **more})


def _mrpt(ckpt: str, dataset: str, out: Path, separation: str) -> str:
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain

    result = pretrain(parse_run_config(_mrpt_args(ckpt, dataset, out, separation)))
    assert result["iteration"] == 5
    return str(out / "ckpt")


def _body_mrpt(args: list[str]) -> None:
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain

    assert pretrain(parse_run_config(args))["iteration"] == 5


@pytest.mark.parametrize("layout", [{"tensor_model_parallel_size": 2}, {"pipeline_model_parallel_size": 2}],
                         ids=["tp2", "pp2"])
def test_mrpt_starts_from_an_import_at_tp2_and_pp2(backbones, dataset, layout, tmp_path):
    from megatron_t2c.training.checkpointing import read_run_info

    _, ckpt = backbones["gpt_neo"]
    args = _mrpt_args(ckpt, dataset, tmp_path, "partial", hidden_dropout=0.0, attention_dropout=0.0, **layout)
    run_with_torchrun(__file__, "_body_mrpt", nproc=2, timeout=240, kwargs={"args": args})
    info = read_run_info(str(tmp_path / "ckpt"))
    assert info["iteration"] == 5 and info["architecture"] == read_run_info(ckpt)["architecture"]
    assert info["parallel"]["tensor_model_parallel_size"] == layout.get("tensor_model_parallel_size", 1)


def _greedy_engine(checkpoint: str, prompts: list[list[int]], steps: int) -> list[list[int]]:
    from megatron_t2c.hf.import_hf import single_rank
    from megatron_t2c.inference.generator import Generator, SamplingConfig
    from megatron_t2c.training.checkpointing import model_from_checkpoint

    with single_rank():
        model, info = model_from_checkpoint(checkpoint)
        results = Generator(model, FMT, info["objective"]).generate(
            prompts, SamplingConfig(greedy=True, max_new_tokens=steps))
    return [list(r.tokens) for r in results]


def _cut(ids: list[int], eoc: int) -> list[int]:
    return ids[:ids.index(eoc)] if eoc in ids else ids


@pytest.mark.parametrize("kind,separation", [("gpt_neo", "partial"), ("gpt_neo", "full"), ("gpt2", "partial"),
                                             ("gpt2", "full"), ("gpt_neo", "none")])
def test_mrpt_on_an_import_exports_and_generates_like_our_engine(backbones, dataset, kind, separation, tmp_path):
    from transformers import AutoTokenizer

    from megatron_t2c.training.checkpointing import read_run_info, tokenizer_path
    from megatron_t2c.tokenizer.loading import open_tokenizer

    hf_dir, ckpt = backbones[kind]
    trained = _mrpt(ckpt, dataset, tmp_path, separation)
    info = read_run_info(trained)
    assert info["architecture"] == read_run_info(ckpt)["architecture"]  # read from the import
    if separation == "partial":  # grammar pieces with and without GPT-2's "Ġ"
        tokenizer = open_tokenizer(tokenizer_path(trained))
        pieces = {tokenizer.id_to_piece(i) for i in info["separated_ids"]}
        assert {"return", "\u0120return"} & pieces and "\u0120def" in pieces | {"\u0120def"}
        assert 0 < len(info["separated_ids"]) < info["vocab_size"] // 2
    elif separation == "full":
        assert len(info["separated_ids"]) > info["vocab_size"] // 2
    out = tmp_path / "hf"
    summary = export_to_hf(trained, str(out))
    assert summary.remote_code == (separation != "none")
    result = verify(trained, str(out))
    assert result.ok, str(result)

    ours = open_tokenizer(tokenizer_path(trained))
    prompts = [ours.tokenize(p) for p in PROMPTS]
    steps = 12
    want = _greedy_engine(trained, prompts, steps)
    tok, hf = AutoTokenizer.from_pretrained(out, trust_remote_code=True), _hf(out)
    if separation == "none":  # the stock class: the tokenizer's own ids
        to_hf = {i: h for i, h in enumerate(ours.to_hf_ids(range(ours.vocab_size)).tolist()) if h >= 0}
        markers = {m: tok.convert_tokens_to_ids(m) for m in MARKERS}
        to_hf.update({st.IDS[m]: h for m, h in markers.items()})
        prompts, want = [[to_hf[i] for i in p] for p in prompts], [[to_hf[i] for i in w] for w in want]
        eoc = markers[st.EOC]
    else:
        eoc = st.EOC_ID
    assert [tok(p)["input_ids"] for p in PROMPTS] == prompts
    for prompt, expected in zip(prompts, want):
        got = hf.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=steps)
        assert _cut(got[0, len(prompt):].tolist(), eoc) == expected


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------

def test_bad_input_gets_one_line_errors(backbones, bpe, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf_dir, _ = backbones["gpt_neo"]
    # an unsupported architecture
    odd = tmp_path / "odd"
    shutil.copytree(hf_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "gptj"}))
    with pytest.raises(ConversionError, match="unknown architecture: model_type 'gptj'"):
        import_from_hf(str(odd), str(tmp_path / "c1"))
    (odd / "config.json").write_text(json.dumps({**config, "activation_function": "mish"}))
    with pytest.raises(ConversionError, match="unsupported activation"):
        import_from_hf(str(odd), str(tmp_path / "c1"))
    # a tokenizer that does not match the weights: more ids than the model has rows
    small = _backbone("gpt2", tmp_path / "small", bpe, rows=100)
    with pytest.raises(ConversionError, match="does not match the weights.*100 rows"):
        import_from_hf(str(small), str(tmp_path / "c2"))
    # a vocabulary too small for the markers: the tokenizer has them, beyond the model's rows
    marked = tmp_path / "marked"
    shutil.copytree(hf_dir, marked)
    tok = PreTrainedTokenizerFast.from_pretrained(marked)
    tok.add_special_tokens({"additional_special_tokens": list(MARKERS)})
    tok.save_pretrained(marked)
    with pytest.raises(ConversionError, match=r"too small for the markers.*\[descr\] at id"):
        import_from_hf(str(marked), str(tmp_path / "c3"))
    for error in ("c1", "c2", "c3"):
        assert not (tmp_path / error / "latest_checkpointed_iteration.txt").exists()


def test_pycodegpt_trained_here_exports_as_stock_gpt_neo(tmp_path):
    """MAPT from scratch with the pycodegpt-100m preset and an import give the same class: GPT-Neo."""
    from helpers.t2c_data import tiny_tokenizer

    from megatron_t2c.hf.import_hf import single_rank
    from megatron_t2c.models.config import ModelConfig
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint

    tokenizer = str(tiny_tokenizer(vocab_size=400))
    config = ModelConfig(preset="pycodegpt-100m", num_layers=2, hidden_size=32, num_attention_heads=4,
                         seq_length=SEQ, hidden_dropout=0.0, attention_dropout=0.0, make_vocab_size_divisible_by=64)
    with single_rank():
        model = build_model(config, make_layout(config, [], 400))
        info = make_run_info(model_config=config, vocab_size=400, separation="none", separated=[],
                             tokenizer_model=tokenizer, fmt=FMT, objective="text-code", stage="mapt")
        ckpt = save_checkpoint(str(tmp_path / "mapt"), 1, [model], None, None, progress={}, run_info=info,
                               tokenizer_model=tokenizer)
    summary = export_to_hf(ckpt, str(tmp_path / "hf"))
    assert summary.model_class == "GPTNeoForCausalLM" and not summary.remote_code
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["attention_layers"] == ["global", "local"] and config["window_size"] == 256
    assert verify(ckpt, str(tmp_path / "hf")).ok
