"""``t2c inspect`` with a Hugging Face tokenizer directory: pieces, markers and PES separation of a byte-level BPE."""

import json
import subprocess
import sys

from megatron_t2c.mrpt import separation as S
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.huggingface import HFTokenizerCore
from helpers.hf_tokenizers import hf_indexed_dataset, tiny_hf_tokenizer
from helpers.t2c_data import corpus_jsonl


def test_cli_inspect_with_a_hf_tokenizer_directory():
    model = str(tiny_hf_tokenizer())
    proc = subprocess.run([sys.executable, "-m", "megatron_t2c", "inspect", "--tokenizer-model", model,
                           "--input", str(corpus_jsonl()), "--format", "pycodegpt", "--include", "all",
                           "--objective", "code", "--separation", "partial", "--seq-length", "64",
                           "--max-sequences", "3", "--packing", "continuous"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sequences = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(sequences) == 3
    tok = HFTokenizerCore(model)
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    separated = S.separated_token_ids("partial", pieces)
    assert separated and any(pieces[i].startswith("\u0120") for i in separated)
    positions = [p for s in sequences for p in s["positions"]]
    assert all(p["piece"] == pieces[p["token_id"]] for p in positions)
    assert st.SOS_ID in {p["token_id"] for p in positions}
    assert any(p["row"] >= tok.vocab_size for p in positions)  # code tokens of the PES list use their code row


def test_inspect_hf_dataset_in_process():
    import io

    from megatron_t2c.analysis.batch_inspection import InspectConfig, inspect

    out = io.StringIO()
    config = InspectConfig(tokenizer_model=str(tiny_hf_tokenizer()), dataset=hf_indexed_dataset("pycodegpt"),
                           format="pycodegpt", objective="text-code", seq_length=256, max_sequences=2)
    assert inspect(config, out) == 2
    tok = HFTokenizerCore(tiny_hf_tokenizer())
    for line in out.getvalue().splitlines():
        ids = [p["token_id"] for p in json.loads(line)["positions"] if not p["padding"]]
        assert "[sos]" in tok.detokenize(ids) and tok.detokenize(ids).count("[eoc]") == ids.count(st.EOC_ID)
