"""Exports that write real Python (issue 14, part 2): Python decoding, tokenizer.json, sharding, model card.

Two tiny models are trained here (a few seconds each) to write three short functions from their
descriptions -- one without separation (exported as a stock GPT-2, sharded), one with partial separation
(remote-code ``T2CForCausalLM``) -- and ``pipeline("text-generation")`` on their exports must return code that
``ast.parse`` accepts.  The decoding rules and ``tokenizer.json`` are checked against megatron_t2c's own
functions on the standard-library corpus.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # the [hf] extra
from helpers.t2c_data import MODULES, _module_path, stdlib_records, tiny_tokenizer  # noqa: E402

from megatron_t2c.hf import SHIPPED_MODULES  # noqa: E402
from megatron_t2c.hf.export import export_to_hf, write_tokenizer  # noqa: E402
from megatron_t2c.hf.fast_tokenizer import build_fast_tokenizer  # noqa: E402
from megatron_t2c.hf.import_hf import import_from_hf  # noqa: E402
from megatron_t2c.hf.safetensors_files import SafetensorsReader, parse_size, shard_plan  # noqa: E402
from megatron_t2c.hf.tokenization_t2c import T2CTokenizer  # noqa: E402
from megatron_t2c.hf.verify import verify  # noqa: E402
from megatron_t2c.mrpt import special_tokens as st  # noqa: E402
from megatron_t2c.mrpt.formats import format_code, sample_text  # noqa: E402
from megatron_t2c.mrpt.normalise import denormalise, normalise, split_signature  # noqa: E402
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

SEQ = 96
#: (description, source) of the functions the tiny models learn
FUNCTIONS = [("Return the sum of a and b.", "def add(a, b):\n    return a + b\n"),
             ("Return the larger of a and b.", "def larger(a, b):\n    if a > b:\n        return a\n    return b\n"),
             ("Count the vowels in text.", "def vowels(text):\n    return sum(1 for c in text if c in 'aeiou')\n")]
MORE_MODULES = MODULES + ("inspect", "dataclasses", "tokenize", "pathlib")


@pytest.fixture(scope="module")
def tokenizer() -> str:
    return str(tiny_tokenizer())


@pytest.fixture(scope="module")
def core(tokenizer) -> T2CTokenizerCore:
    return T2CTokenizerCore(tokenizer)


# ---------------------------------------------------------------------------------------------------
# The shipped sources and decoding
# ---------------------------------------------------------------------------------------------------

def test_shipped_modules_import_only_siblings_and_the_stdlib():
    for module in SHIPPED_MODULES:
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must be a shipped sibling
                    sibling = node.module or node.names[0].name
                    assert sibling in {m.__name__.rsplit(".", 1)[-1] for m in SHIPPED_MODULES}, module.__name__
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or (top == "torch" and "normalise" not in module.__name__), \
                    f"{module.__name__} imports {name}"


def _doc_ids(core, description, source, fmt="pangu"):
    return core.encode_sample(format_code(normalise(source), description, fmt))


def test_decode_gives_python_for_documents(tokenizer, core):
    tok = T2CTokenizer(tokenizer)
    for description, source in FUNCTIONS:
        for fmt in ("pangu", "pycodegpt"):
            ids = _doc_ids(core, description, source, fmt)
            assert tok.decode(ids) == f"# {description}\n{source}"
            assert tok.decode(ids, raw=True) == core.detokenize(ids)
    # two documents, padding, the raw flag of the tokenizer
    ids = [st.PAD_ID] + _doc_ids(core, *FUNCTIONS[0]) + _doc_ids(core, None, FUNCTIONS[1][1])
    assert tok.decode(ids) == f"# {FUNCTIONS[0][0]}\n{FUNCTIONS[0][1]}\n{FUNCTIONS[1][1]}"
    raw = T2CTokenizer(tokenizer, decode_python=False)
    kept = [i for i in ids if i not in (st.PAD_ID, st.DESCR_ID, st.PYTHON_ID, st.EOC_ID)]
    assert raw.decode(ids, skip_special_tokens=True) == core.detokenize(kept)
    assert "[new_line]" in raw.decode(ids) and raw.decode(ids, raw=False) == tok.decode(ids)


def _bodies():
    """(header, body) of every stdlib function whose normalised body starts a new line."""
    for r in stdlib_records(MORE_MODULES):
        header, body = split_signature(r["normalised"])
        if body:
            yield r["normalised"], header, body


def test_a_continuation_appends_to_the_prompts_source(tokenizer, core):
    """What pipeline("text-generation") decodes (the new tokens alone) appends to the prompt's code:
    after the signature, and after a prompt cut inside a line of the body."""
    tok = T2CTokenizer(tokenizer)
    n_signature = n_inside = 0
    for normalised, header, body in _bodies():
        whole = denormalise(normalised)
        prompt_source = denormalise(header).rstrip("\n")
        assert prompt_source + tok.decode(core.tokenize(" " + body + " [eoc]")) == whole, header
        n_signature += 1
        # cut after the first word of the body's first line (not inside a string literal)
        m = re.match(r"(\[new_line\] \[indent\] )(\S+)( .*)", body, re.DOTALL)
        if m and not re.search("['\"#]", m.group(2)) and len(m.group(3)) > 1:
            prompt = header + " " + m.group(1) + m.group(2)
            assert denormalise(prompt).rstrip("\n") + tok.decode(core.tokenize(m.group(3))) == whole, prompt
            n_inside += 1
    assert n_signature > 800 and n_inside > 300, (n_signature, n_inside)


# ---------------------------------------------------------------------------------------------------
# tokenizer.json
# ---------------------------------------------------------------------------------------------------

def test_fast_tokenizer_encodes_as_ours_on_the_stdlib(tokenizer, core, tmp_path):
    fast = build_fast_tokenizer(tokenizer)
    texts = []
    for r in stdlib_records(MORE_MODULES):
        texts += [r["code"], sample_text(format_code(r["normalised"], r["docstring"])),
                  sample_text(format_code(r["normalised"], r["docstring"], "pycodegpt"))]
    texts += [_module_path(name).read_text(encoding="utf-8") for name in MORE_MODULES]  # whole files, comments too
    assert len(texts) > 2000
    for text in texts:
        ids = core.tokenize(text)
        assert fast.encode(text, add_special_tokens=False).ids == ids, text[:200]
        assert fast.decode(ids, skip_special_tokens=False) == text
    # through transformers: the remote-code class and the stock one serving stacks build from tokenizer.json
    from transformers import AutoTokenizer

    write_tokenizer(str(tmp_path), tokenizer, SEQ)
    remote = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    stock = AutoTokenizer.from_pretrained(tmp_path)
    assert type(remote).__name__ == "T2CTokenizerFast" and type(stock).__name__ == "TokenizersBackend"
    for text in texts[:300]:
        ids = core.tokenize(text)
        assert remote(text)["input_ids"] == ids and stock(text)["input_ids"] == ids
    ids = _doc_ids(core, *FUNCTIONS[1])
    assert remote.decode(ids) == T2CTokenizer(tokenizer).decode(ids) == f"# {FUNCTIONS[1][0]}\n{FUNCTIONS[1][1]}"
    assert remote.decode(ids, raw=True) == stock.decode(ids) == core.detokenize(ids)
    batch = remote(["[descr] a [python]", "[descr] longer text here [python]"], padding=True)
    assert batch["input_ids"][0][0] == st.PAD_ID  # left padding


def test_shard_sizes_follow_save_pretrained():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(100) == 100
    assert parse_size("1.5MB") == 1_500_000
    with pytest.raises(Exception, match="cannot read the size"):
        parse_size("lots")
    # float32: 40, 120, 20 and 400 bytes
    tensors = [(n, torch.empty(k, device="meta")) for n, k in (("a", 10), ("b", 30), ("c", 5), ("d", 100))]
    assert [[n for n, _ in s] for s in shard_plan(tensors, 180)] == [["a", "b", "c"], ["d"]]
    assert [[n for n, _ in s] for s in shard_plan(tensors, 140)] == [["a"], ["b", "c"], ["d"]]
    assert [[n for n, _ in s] for s in shard_plan(tensors, "50GB")] == [["a", "b", "c", "d"]]


# ---------------------------------------------------------------------------------------------------
# Tiny trained models, exported
# ---------------------------------------------------------------------------------------------------

def _train(kind: str, tokenizer: str, run_dir: Path) -> str:
    """Train a tiny model on FUNCTIONS until it writes them greedily; save it in the pipeline's layout."""
    from megatron_t2c.models.config import ModelConfig
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.mrpt.modality import modality_ids, segment_ids
    from megatron_t2c.mrpt.separation import separated_token_ids
    from megatron_t2c.runtime import distributed
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint

    core = T2CTokenizerCore(tokenizer)
    docs = [_doc_ids(core, d, s) for d, s in FUNCTIONS]
    assert all(d[-1] == st.EOC_ID and len(d) <= SEQ for d in docs)
    tokens = torch.full((len(docs), max(map(len, docs))), st.PAD_ID)
    for i, d in enumerate(docs):
        tokens[i, :len(d)] = torch.tensor(d)
    loss_mask = (tokens[:, 1:] != st.PAD_ID).float()
    distributed.initialize_distributed(1, 1, cpu=True, seed=3)
    try:
        config = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=SEQ,
                             hidden_dropout=0.0, attention_dropout=0.0, make_vocab_size_divisible_by=64,
                             separation=kind)
        separated = separated_token_ids(kind, [core.id_to_piece(i) for i in range(core.vocab_size)])
        model = build_model(config, make_layout(config, separated, core.vocab_size),
                            transformer_config=config.transformer_config(pipeline_dtype=torch.float32))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        rows, labels = model.layout.rows(tokens, modality_ids(tokens, "pangu")), segment_ids(tokens, "pangu")
        positions = torch.arange(tokens.shape[1])[None].expand_as(tokens)
        for step in range(400):
            logits = model(input_ids=rows, position_ids=positions, attention_mask=None, label_modality=labels,
                           runtime_gather_output=True)[:, :-1, :core.vocab_size]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                                     reduction="none")
            loss = (loss * loss_mask.reshape(-1)).sum() / loss_mask.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if float(loss) < 0.03:
                break
        assert float(loss) < 0.05, (step, float(loss))  # the descriptions' first words are not predictable
        info = make_run_info(model_config=config, vocab_size=core.vocab_size, separation=kind, separated=separated,
                             tokenizer_model=tokenizer, fmt="pangu", objective="code", stage="mrpt",
                             config={"data": {"data_path": [str(run_dir / "data" / "three_functions")]},
                                     "training": {"train_iters": 300, "seed": 3, "lr": 3e-3}})
        name = f"mrpt_code_{kind}"
        return save_checkpoint(str(run_dir / "train" / name / "checkpoints"), 300, [model.eval()], None, None,
                               progress={}, run_info=info, tokenizer_model=tokenizer)
    finally:
        distributed.destroy_distributed()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer) -> dict:
    """kind -> (checkpoint, export directory): 'none' as a sharded stock GPT-2, 'partial' as T2CForCausalLM."""
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_dir / "eval" / "mrpt_code_partial" / "humaneval" / "greedy.summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"pass@1": 0.125, "samples": 164, "passed": 20, "problems": 164}))
    (run_dir / "data").mkdir()  # preprocessing's summary beside the dataset prefix
    (run_dir / "data" / "three_functions.summary.json").write_text(json.dumps({"documents": 3, "tokens": 123}))
    out = {}
    for kind, shard in (("none", "40KB"), ("partial", "50GB")):
        checkpoint = _train(kind, tokenizer, run_dir)
        hf_dir = run_dir / "hf" / kind
        out[kind] = (checkpoint, hf_dir, export_to_hf(checkpoint, str(hf_dir), max_shard_size=shard))
    return out


def _pipeline(hf_dir, **tokenizer_kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=True, **tokenizer_kwargs)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True)
    return pipeline("text-generation", model=model, tokenizer=tok)


@pytest.mark.parametrize("kind", ["none", "partial"])
def test_pipeline_writes_python(trained, kind):
    _, hf_dir, summary = trained[kind]
    assert summary.model_class == ("GPT2LMHeadModel" if kind == "none" else "T2CForCausalLM")
    generate = _pipeline(hf_dir)
    for description, source in FUNCTIONS:
        signature = source.split("\n")[0]
        prompt = f"[descr] {description} [python] {signature}"
        body = generate(prompt, return_full_text=False, max_new_tokens=40)[0]["generated_text"]
        assert "[new_line]" not in body and "[eoc]" not in body
        ast.parse(signature + body)
        assert signature + body == source  # the function it learnt
        full = generate(prompt, max_new_tokens=40)[0]["generated_text"]
        assert full == prompt + body
        ast.parse(full.split("[python] ", 1)[1])


def test_raw_decoding_gives_the_normalised_text(trained, core):
    _, hf_dir, _ = trained["partial"]
    description, source = FUNCTIONS[1]
    prompt = f"[descr] {description} [python] def larger(a, b):"
    raw = _pipeline(hf_dir, decode_python=False)(prompt, return_full_text=False, max_new_tokens=40)
    body = normalise(source)[len("def larger(a, b):"):]
    assert raw[0]["generated_text"] == body + " "  # the space before [eoc]; [eoc] dropped (skip_special_tokens)
    tok = _pipeline(hf_dir).tokenizer
    ids = _doc_ids(core, description, source)
    assert tok.decode(ids, raw=True) == core.detokenize(ids)
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["decode_python"] is True


def test_sharded_export_round_trips(trained, tmp_path):
    checkpoint, hf_dir, summary = trained["none"]
    files = set(os.listdir(hf_dir))
    shards = sorted(f for f in files if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f))
    assert len(shards) > 1 and "model.safetensors" not in files and "model.safetensors.index.json" in files
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) == set(summary.weight_files) - {
        "model.safetensors.index.json"}
    assert index["metadata"]["total_size"] == summary.bytes == sum(
        (hf_dir / f).stat().st_size - 8 - int.from_bytes((hf_dir / f).read_bytes()[:8], "little") for f in shards)
    for f in shards:  # at most 40KB of data, or one tensor bigger than that
        data = (hf_dir / f).stat().st_size - 8 - int.from_bytes((hf_dir / f).read_bytes()[:8], "little")
        assert data <= 40_000 or list(index["weight_map"].values()).count(f) == 1
    assert verify(checkpoint, str(hf_dir)).ok
    back = import_from_hf(str(hf_dir), str(tmp_path / "back"))
    assert verify(back, str(hf_dir)).ok
    again = tmp_path / "again"
    export_to_hf(back, str(again))  # unsharded this time
    left, right = SafetensorsReader(str(hf_dir)), SafetensorsReader(str(again))
    assert set(left.keys()) == set(right.keys())
    assert all(torch.equal(left.get(k), right.get(k)) for k in left.keys())


def test_cli_shards_and_verifies(trained, tmp_path):
    checkpoint = trained["partial"][0]
    tool = Path(__file__).resolve().parent.parent.parent / "tools" / "convert_checkpoint.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(tool), "--to-hf", "--load", checkpoint, "--output",
                           str(tmp_path / "hf"), "--max-shard-size", "100KB", "--raw-decode", "--verify",
                           "--eval-dir", str(tmp_path / "none")], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout and (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["decode_python"] is False
    assert "No evaluation results" in (tmp_path / "hf" / "README.md").read_text()
    done = subprocess.run([sys.executable, str(tool), "--from-hf", "--load", str(tmp_path / "hf"), "--output",
                           str(tmp_path / "back"), "--verify"], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def test_model_card_and_its_snippet(trained):
    _, hf_dir, _ = trained["partial"]
    card = (hf_dir / "README.md").read_text()
    for needle in ("# mrpt_code_partial", "T2CForCausalLM", "layers / hidden / heads | 2 / 64 / 4", "partial (PES)", "objective: `code`",
                   "three_functions`: 3 documents, 123 tokens", "`train_iters`: 300", "`lr`: 0.003", "| humaneval | greedy | 164 | 12.50 |", "pipeline_tag"):
        assert needle in card, needle
    assert "No evaluation results" in (trained["none"][1] / "README.md").read_text()
    for kind in ("partial", "none"):  # remote code; stock GPT-2 (the model without remote code)
        card = (trained[kind][1] / "README.md").read_text()
        snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
        assert ("trust_remote_code=True)\ngenerate" in snippet) == (kind == "partial")
        script = 'import sys\nsys.modules["megatron_t2c"] = None\nsys.modules["megatron"] = None\n' + snippet
        env = dict(os.environ, HF_MODULES_CACHE=str(hf_dir.parent / "hf_modules"), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/",
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout == FUNCTIONS[0][1] + "\n"
        ast.parse(done.stdout)


def test_an_interrupted_export_leaves_no_export(trained, tmp_path, monkeypatch):
    from megatron_t2c.hf import export

    checkpoint = trained["partial"][0]

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    out = tmp_path / "hf"
    with monkeypatch.context() as m:
        m.setattr(export, "write_tokenizer", crash)  # after the weights and config.json
        with pytest.raises(RuntimeError, match="killed"):
            export_to_hf(checkpoint, str(out))
    assert not out.exists()  # only the staging directory, hf.partial
    export_to_hf(checkpoint, str(out))  # a re-run replaces what the interrupted one left
    assert not (tmp_path / "hf.partial").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:
        m.setattr(export, "write_tokenizer", crash)
        with pytest.raises(RuntimeError, match="killed"):
            export_to_hf(checkpoint, str(out), overwrite=True, max_shard_size="100KB")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, untouched
    export_to_hf(checkpoint, str(out), overwrite=True, max_shard_size="100KB")
    names = set(os.listdir(out))
    assert "model.safetensors" not in names and "model.safetensors.index.json" in names  # no stale weights
