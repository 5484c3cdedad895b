"""Training the SentencePiece tokenizer on JSONL extraction records (fixed special ids, exact round trip).

Training (:func:`train_tokenizer`) streams the formatted samples of a JSONL file of extraction records into
SentencePiece with identity normalisation, no whitespace clean-up, no dummy prefix and byte fallback, so
that ``detokenize(tokenize(text)) == text`` exactly for every sample (whitespace inside string literals
included); the markers and ``\\n \\t \\r`` are user-defined pieces, always atomic (ids: see
:mod:`megatron_t2c.tokenizer.sentencepiece`).  Training is single-threaded with a fixed random seed: the
same input and seed give the same ``.model`` bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Mapping

import sentencepiece as spm

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.formats import FORMATS, format_code, has_docstring, record_code, sample_text
from megatron_t2c.tokenizer.sentencepiece import check_special_ids
from megatron_t2c.utils.atomic import atomic_open
from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.utils.records import BadLine, LineReport, iter_line_blocks, parse_record, split_lines

__all__ = ["MODEL_TYPES", "TrainerOptions", "TrainSummary", "train_tokenizer", "trainer_kwargs", "split_long",
           "vocab_text", "format_summary"]

MODEL_TYPES = ("bpe", "unigram")
_NEEDS_ESCAPE = re.compile(r"[\s\\]")


@dataclass(kw_only=True)
class TrainerOptions:
    """SentencePiece trainer settings; the ones fixed for exact round trips are in trainer_kwargs()."""

    vocab_size: int = option(32000, "vocabulary size, special and byte-fallback pieces included")
    model_type: str = option("bpe", "SentencePiece model type", choices=MODEL_TYPES)
    seed: int = option(1234, "random seed of SentencePiece (sentence sampling, unigram seeding)")
    split_digits: bool = option(True, "make every digit its own piece: numbers do not fill the vocabulary "
                                      "and tokenise regularly")
    character_coverage: float = option(0.9995, "share of characters that get pieces; the rare rest is "
                                               "written as UTF-8 bytes (byte fallback)")
    max_sentence_length: int = option(8192, "longest training sentence in bytes; longer samples are cut at "
                                             "spaces into several sentences (no piece crosses a space)")
    input_sentence_size: int = option(2_000_000, "train on at most this many sentences, sampled with the "
                                                 "seed when there are more (0: all)")
    hard_vocab_limit: bool = option(True, "fail when the corpus cannot fill --vocab-size; with "
                                          "--no-hard-vocab-limit the vocabulary is smaller instead")
    num_threads: int = option(1, "trainer threads; 1 keeps training deterministic")


def trainer_kwargs(options: TrainerOptions) -> dict:
    """All keyword arguments for ``SentencePieceTrainer.train`` but the input and the writer."""
    if options.model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {options.model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    return dict(
        model_type=options.model_type,
        vocab_size=options.vocab_size,
        character_coverage=options.character_coverage,
        split_digits=options.split_digits,
        max_sentence_length=options.max_sentence_length,
        input_sentence_size=options.input_sentence_size,
        shuffle_input_sentence=True,
        hard_vocab_limit=options.hard_vocab_limit,
        num_threads=options.num_threads,
        # exact round trip: no normalisation, no whitespace clean-up, no leading space, bytes for the rest
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        byte_fallback=True,
        # fixed ids: control pieces 0-3, then the user-defined pieces in special_tokens order
        pad_id=st.PAD_ID, unk_id=st.UNK_ID, bos_id=st.BOS_ID, eos_id=st.EOS_ID,
        pad_piece=st.PAD, unk_piece=st.UNK, bos_piece=st.BOS, eos_piece=st.EOS,
        user_defined_symbols=list(st.USER_DEFINED),
        minloglevel=2,
    )


def split_long(text: str, max_bytes: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_bytes`` UTF-8 bytes, before spaces where possible.

    ``"".join(pieces) == text``.  SentencePiece never learns pieces across a space
    (``split_by_whitespace``) and each space stays with the word after it, so cutting there loses nothing;
    a word longer than ``max_bytes`` is cut at character boundaries.
    """
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return [text]
    out: list[str] = []
    current: list[str] = []
    size = 0
    for i, word in enumerate(text.split(" ")):
        piece = " " + word if i else word
        n = len(piece.encode("utf-8"))
        if current and size + n > max_bytes:
            out.append("".join(current))
            current, size = [], 0
        while n > max_bytes:
            head = piece.encode("utf-8")[:max_bytes].decode("utf-8", "ignore") or piece[0]
            out.append(head)
            piece = piece[len(head):]
            n = len(piece.encode("utf-8"))
        current.append(piece)
        size += n
    if current:
        out.append("".join(current))
    return [piece for piece in out if piece]


@dataclass
class CorpusStats:
    """What the trainer was fed: records read, sentences and characters passed to SentencePiece."""

    lines: int = 0
    records: int = 0
    text_code: int = 0
    sentences: int = 0
    characters: int = 0
    report: LineReport = field(default_factory=LineReport)


def training_sentences(path: str | os.PathLike, fmt: str, max_sentence_length: int,
                       stats: CorpusStats) -> Iterator[str]:
    """The formatted samples of every valid record of a JSONL file, cut to ``max_sentence_length``.

    Bad lines are counted in ``stats.report`` with their line numbers (the reader preprocessing uses).
    """
    with open(path, "rb") as stream:
        for first, block in iter_line_blocks(stream):
            for offset, line in enumerate(split_lines(block)):
                stats.lines += 1
                try:
                    record = parse_record(line)
                    code = record_code(record)
                    if not code:
                        raise BadLine("empty_code", "no code left after normalisation")
                    text = sample_text(format_code(code, record["docstring"], fmt))
                except BadLine as exc:
                    stats.report.bad(first + offset, exc.reason, exc.detail)
                    continue
                except ValueError as exc:  # normalise() rejects the code
                    stats.report.bad(first + offset, "normalise_error", str(exc))
                    continue
                stats.records += 1
                stats.text_code += has_docstring(record)
                for piece in split_long(text, max_sentence_length):
                    stats.sentences += 1
                    stats.characters += len(piece)
                    yield piece


@dataclass
class TrainSummary:
    """Outcome of :func:`train_tokenizer`, JSON-serialisable through :meth:`as_dict`."""

    model: str
    vocab: str
    vocab_size: int
    model_type: str
    format: str
    seed: int
    lines: int
    records: int
    text_code: int
    sentences: int
    characters: int
    skipped: dict
    seconds: float
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


def train_tokenizer(input_path: str | os.PathLike, output_prefix: str | os.PathLike, *,
                    vocab_size: int = 32000, model_type: str = "bpe", fmt: str = "pangu", seed: int = 1234,
                    options: TrainerOptions | None = None, report: LineReport | None = None) -> TrainSummary:
    """Train a SentencePiece model on a JSONL file of records; write ``P.model`` and ``P.vocab``.

    ``options`` overrides every trainer setting (its ``vocab_size``, ``model_type`` and ``seed`` win over
    the keyword arguments).  The special pieces are checked against :data:`special_tokens.IDS` before
    anything is written; both files are written atomically.  Raises ``ValueError`` when the corpus is empty
    or cannot fill the vocabulary (with the largest size that would work).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"{input_path}: no such file")
    if options is None:
        options = TrainerOptions(vocab_size=vocab_size, model_type=model_type, seed=seed)
    stats = CorpusStats(report=report if report is not None else LineReport(label=str(input_path)))
    sentences = training_sentences(input_path, fmt, options.max_sentence_length, stats)
    writer = io.BytesIO()
    start = time.perf_counter()
    spm.set_random_generator_seed(options.seed)
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=writer,
                                       **trainer_kwargs(options))
    except RuntimeError as exc:
        message = str(exc)
        if stats.records == 0:
            raise ValueError(f"{input_path}: no valid records to train on") from None
        match = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
        if match:
            raise ValueError(f"vocabulary size {match[1]} is larger than this corpus supports ({match[2]} at "
                             f"most); lower --vocab-size or pass --no-hard-vocab-limit") from None
        raise
    finally:
        stats.report.close()
    seconds = time.perf_counter() - start
    model = writer.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=model)
    check_special_ids(processor)
    prefix = str(output_prefix)
    with atomic_open(prefix + ".model", "wb") as fh:
        fh.write(model)
    with atomic_open(prefix + ".vocab", "wb") as fh:
        fh.write(vocab_text(processor).encode("utf-8"))
    return TrainSummary(
        model=prefix + ".model", vocab=prefix + ".vocab", vocab_size=processor.get_piece_size(),
        model_type=options.model_type, format=fmt, seed=options.seed, lines=stats.lines, records=stats.records,
        text_code=stats.text_code, sentences=stats.sentences, characters=stats.characters,
        skipped=dict(stats.report.counts), seconds=round(seconds, 3), sha256=hashlib.sha256(model).hexdigest())


def vocab_text(processor: spm.SentencePieceProcessor) -> str:
    """The ``.vocab`` file: one line per id, ``piece<TAB>score``.

    Pieces holding whitespace or a backslash (``\\n``, ``\\t``, ``\\r``) are written with Python escapes so
    that every piece stays on its line.
    """
    lines = []
    for i in range(processor.get_piece_size()):
        piece = processor.id_to_piece(i)
        escaped = piece.encode("unicode_escape").decode("ascii") if _NEEDS_ESCAPE.search(piece) else piece
        lines.append(f"{escaped}\t{processor.get_score(i):g}")
    return "\n".join(lines) + "\n"


def format_summary(summary: Mapping) -> str:
    """A few human-readable lines about a training run."""
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(summary["skipped"].items())) or "none"
    return (f"wrote {summary['model']} and {summary['vocab']}: {summary['model_type']} vocabulary of "
            f"{summary['vocab_size']} pieces, format {summary['format']}, seed {summary['seed']}\n"
            f"trained on {summary['records']} records ({summary['text_code']} with docstrings) of "
            f"{summary['lines']} lines, {summary['sentences']} sentences, {summary['characters']} characters "
            f"in {summary['seconds']:.2f} s; bad lines: {skipped}")
