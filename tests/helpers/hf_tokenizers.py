"""Small byte-level BPE tokenizers in Hugging Face directories, trained with ``tokenizers`` on stdlib functions."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterable, Optional

EOT = "<|endoftext|>"


def train_bpe_tokenizer(directory, texts: Iterable[str], vocab_size: int = 800, *,
                        extra_special: tuple[str, ...] = ()) -> Path:
    """A GPT-2-style byte-level BPE trained on ``texts``, saved by ``transformers`` as a Hugging Face
    directory (tokenizer.json, tokenizer_config.json, ...); ``extra_special``: more special added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, *extra_special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    directory = Path(directory)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, unk_token=EOT,
                            model_max_length=2048).save_pretrained(str(directory))
    return directory


def write_vocab_merges(source: Path, directory) -> Path:
    """The GPT-2 file pair (vocab.json + merges.txt, nothing else) of a byte-level BPE directory."""
    data = json.loads((Path(source) / "tokenizer.json").read_text(encoding="utf-8"))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = dict(data["model"]["vocab"])
    for t in data["added_tokens"]:
        vocab.setdefault(t["content"], t["id"])
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


def stdlib_texts(fmt: str = "pangu") -> list[str]:
    """The formatted sample text of every fixture stdlib record."""
    from megatron_t2c.mrpt.formats import format_record, sample_text
    from helpers.t2c_data import stdlib_records

    return [sample_text(format_record(r, fmt)) for r in stdlib_records()]


@functools.lru_cache(maxsize=None)
def tiny_hf_tokenizer(vocab_size: int = 800, fmt: str = "pangu") -> Path:
    """A byte-level BPE directory trained on the fixture corpus (cached for the test session)."""
    from helpers.t2c_data import session_dir

    return train_bpe_tokenizer(session_dir() / f"hf-bpe-{vocab_size}-{fmt}", stdlib_texts(fmt), vocab_size)


@functools.lru_cache(maxsize=None)
def hf_indexed_dataset(fmt: str = "pycodegpt", tokenizer: Optional[str] = None) -> str:
    """Prefix of an indexed dataset of every fixture record, tokenised by :func:`tiny_hf_tokenizer`."""
    from megatron_t2c.data import preprocess
    from helpers.t2c_data import corpus_jsonl, session_dir

    prefix = str(session_dir() / f"hf-dataset-{fmt}")
    preprocess.preprocess(preprocess.PreprocessConfig(
        input=str(corpus_jsonl()), tokenizer_model=tokenizer or str(tiny_hf_tokenizer()), output_prefix=prefix,
        format=fmt, include="all", max_seq_length=10**6, progress=False), log=None)
    return prefix
