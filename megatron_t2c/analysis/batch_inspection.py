"""See exactly what one objective and separation feed the model: per-position JSON of packed sequences.

Documents come from JSONL extraction records (``--input``: formatted and encoded as preprocessing does) or
from a megatron-core indexed dataset (``--dataset PREFIX``), in order (no shuffling), and are packed as
training packs them: ``--packing whole`` (the default, :mod:`megatron_t2c.data.packing`): whole documents
next-fit into rows of ``S + 1`` tokens (``S`` = ``seq_length``), the rest ``<pad>``, a document longer than
a row dropped (counted on stderr); ``--packing continuous`` (megatron's ``GPTDataset``): the token streams
concatenated and sequence ``i`` is ``stream[i*S : i*S + S + 1]`` (consecutive sequences share one token; a
tail too short for a whole row is left out).  Then ``tokens = row[:-1]``, ``labels = row[1:]``.  The
sequence index is the ``sample_id`` of the corruption hash.

Every sequence becomes one JSON object (:func:`sequence_json`) with, per position: ``piece``, ``token_id``,
``modality`` (of the token: ``shared|docstring|code``), ``row``, ``position_id``, ``loss``, ``input_id``
(after corruption), ``input_piece``, ``label_id``, ``attends`` (``[start, end)`` key ranges), ``document``
(which document of the row the token belongs to, from 0; null for padding) and ``padding``; per sequence
``documents`` and ``padding`` (how many positions are padding).

``row`` is the embedding row the input uses, in a simple global layout for display: the base id for
shared and docstring tokens and for code tokens without a code row; ``vocab_size + j`` for a code token
that is the ``j``-th (from 0) id of the sorted separated list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Sequence

import numpy as np
import torch

from megatron_t2c.mrpt import objectives
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt import separation
from megatron_t2c.data.modality_usage import count_dataset_usage
from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.mrpt.formats import FORMATS, INCLUDE, format_record, included
from megatron_t2c.mrpt.modality import CODE, DOCSTRING, SHARED

MODALITY_NAMES = {SHARED: "shared", DOCSTRING: "docstring", CODE: "code"}


@dataclass(kw_only=True)
class InspectConfig:
    """What to pack and show."""

    tokenizer_model: str = option(help="SentencePiece model from tools/train_tokenizer.py or Hugging Face "
                                  "tokenizer directory", metavar="P.model|DIR")
    input: str | None = option(None, "JSONL extraction records (fields docstring, code, normalised) to pack",
                               metavar="FILE.jsonl")
    dataset: str | None = option(None, "megatron indexed dataset: the documents to pack when there is no "
                                       "--input, and the usage counts of --separation auto", metavar="PREFIX")
    format: str = option("pangu", "sample format", choices=FORMATS)
    include: str = option("text-code", "records of --input to keep", choices=INCLUDE)
    objective: str = option("text-code", "MRPT objective", choices=objectives.OBJECTIVES)
    separation: str = option("none", "which tokens get a code row", choices=separation.MODES)
    k: int = option(256, "--separation auto: how many tokens to separate")
    min_count: int = option(5, "--separation auto: least occurrences for a token to be considered")
    seq_length: int = option(128, "tokens per packed sequence")
    packing: str = option("whole", "whole documents per row plus padding (training's default), or megatron's "
                                   "continuous packing", choices=("whole", "continuous"))
    max_sequences: int = option(4, "print at most this many sequences")
    seed: int = option(1234, "corruption seed (corrupt-code)")
    print_separation: bool = option(False, "print the separated tokens (id, piece) to stderr")


def record_documents(path: str, tokenizer, fmt: str, include: str) -> Iterator[np.ndarray]:
    """The encoded documents of the kept records of a JSONL file, in order (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            if included(record, include):
                yield np.asarray(tokenizer.encode_sample(format_record(record, fmt)), dtype=np.int64)


def dataset_documents(prefix: str) -> Iterator[np.ndarray]:
    """The documents of a megatron-core indexed dataset, in order."""
    from megatron_t2c.data.preprocess.outputs import import_indexed_dataset

    dataset = import_indexed_dataset().IndexedDataset(str(prefix))
    for i in range(len(dataset)):
        yield np.asarray(dataset[i], dtype=np.int64)


def pack(documents: Iterable[np.ndarray], seq_length: int, max_sequences: int) -> np.ndarray:
    """``[n, seq_length + 1]`` rows packed as ``GPTDataset`` does (see the module notes); reads only what it needs."""
    if seq_length < 1 or max_sequences < 0:
        raise ValueError("seq_length must be positive and max_sequences non-negative")
    needed = max_sequences * seq_length + 1
    parts, total = [], 0
    for doc in documents:
        if total >= needed:
            break
        parts.append(doc)
        total += len(doc)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    n = min(max_sequences, max(0, (len(stream) - 1) // seq_length))
    return np.stack([stream[i * seq_length:i * seq_length + seq_length + 1] for i in range(n)]) if n else \
        np.zeros((0, seq_length + 1), dtype=np.int64)


def pack_whole(documents: Iterable[np.ndarray], seq_length: int, max_sequences: int) -> tuple[np.ndarray, int]:
    """``([n, seq_length + 1] rows, dropped)``: whole documents next-fit in their order, ``<pad>`` after them
    (:func:`megatron_t2c.data.packing.next_fit_row_starts`); a document longer than a row is dropped."""
    from megatron_t2c.data.packing import next_fit_row_starts

    if seq_length < 1 or max_sequences < 0:
        raise ValueError("seq_length must be positive and max_sequences non-negative")
    capacity, kept, dropped = seq_length + 1, [], 0
    for doc in documents:
        if len(doc) > capacity:
            dropped += 1
            continue
        kept.append(doc)
        if len(next_fit_row_starts(np.array([len(d) for d in kept]), capacity)) - 1 > max_sequences:
            kept.pop()  # this document opens a row beyond the last one shown
            break
    starts = next_fit_row_starts(np.array([len(d) for d in kept], dtype=np.int64), capacity)
    rows = np.full((len(starts) - 1, capacity), st.PAD_ID, dtype=np.int64)
    for r in range(len(starts) - 1):
        row = np.concatenate(kept[starts[r]:starts[r + 1]])
        rows[r, :len(row)] = row
    return rows, dropped


def separated_ids(config: InspectConfig, pieces: Sequence[str], tokenizer) -> list[int]:
    """The separated ids for ``config.separation`` (auto: counts from ``--dataset``, else from ``--input``)."""
    if config.separation != "auto":
        return separation.separated_token_ids(config.separation, pieces)
    if config.dataset:
        counts = count_dataset_usage(config.dataset, config.format, len(pieces))
    elif config.input:
        documents = record_documents(config.input, tokenizer, config.format, config.include)
        counts = separation.count_modality_usage(documents, config.format, len(pieces))
    else:
        raise ValueError("--separation auto needs --dataset or --input for its usage counts")
    return separation.separated_token_ids("auto", pieces, k=config.k, doc_counts=counts[0],
                                          code_counts=counts[1], min_count=config.min_count)


def sequence_json(index: int, tokens: Sequence[int], batch: objectives.Batch, row: int, pieces: Sequence[str],
                  code_rows: dict[int, int], config: InspectConfig) -> dict:
    """Packed sequence ``index`` (its original ``tokens``, row ``row`` of ``batch``) as a JSON-ready dict.

    ``code_rows`` maps each separated id to its index in the sorted separated list.
    """
    vocab_size = len(pieces)
    fields = {name: getattr(batch, name)[row].tolist() for name in
              ("input_ids", "labels", "loss_mask", "position_ids", "modality")}
    ranges = objectives.attends(batch.attention_mask[row])
    padding = [config.packing == "whole" and all(t == st.PAD_ID for t in tokens[i:]) for i in range(len(tokens))]
    documents = objectives.document_ids(torch.as_tensor(list(tokens))).tolist()
    positions = []
    for i, token_id in enumerate(tokens):
        input_id, modality = fields["input_ids"][i], fields["modality"][i]
        embedding_row = vocab_size + code_rows[input_id] if modality == CODE and input_id in code_rows else input_id
        positions.append({
            "piece": pieces[token_id], "token_id": token_id, "modality": MODALITY_NAMES[modality],
            "row": embedding_row, "position_id": fields["position_ids"][i], "loss": bool(fields["loss_mask"][i]),
            "input_id": input_id, "input_piece": pieces[input_id], "label_id": fields["labels"][i],
            "attends": ranges[i], "document": None if padding[i] else documents[i], "padding": padding[i],
        })
    return {"sequence": index, "sample_id": index, "format": config.format, "objective": config.objective,
            "separation": config.separation, "separated": len(code_rows), "vocab_size": vocab_size,
            "seq_length": len(tokens), "packing": config.packing, "padding": sum(padding),
            "documents": len({p["document"] for p in positions if p["document"] is not None}),
            "positions": positions}


def inspect(config: InspectConfig, out: IO[str], err: IO[str] | None = None) -> int:
    """Write one JSON line per packed sequence to ``out``; returns how many."""
    from megatron_t2c.tokenizer.loading import open_tokenizer  # without megatron-core's adapter (seconds to import)

    if not config.input and not config.dataset:
        raise ValueError("give --input FILE.jsonl or --dataset PREFIX")
    tokenizer = open_tokenizer(config.tokenizer_model)
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    ids = separated_ids(config, pieces, tokenizer)
    if config.print_separation and err is not None:
        print(separation.describe(ids, pieces), file=err)
    documents = (record_documents(config.input, tokenizer, config.format, config.include) if config.input
                 else dataset_documents(config.dataset))
    if config.packing == "whole":
        packed, dropped = pack_whole(documents, config.seq_length, config.max_sequences)
        if dropped and err is not None:
            print(f"{dropped} document(s) longer than a row of {config.seq_length + 1} tokens dropped", file=err)
    else:
        packed = pack(documents, config.seq_length, config.max_sequences)
    rows = torch.from_numpy(packed)
    if not len(rows):
        return 0
    tokens, labels = rows[:, :-1], rows[:, 1:]
    batch = objectives.build_batch(tokens, labels, config.format, config.objective, seed=config.seed,
                                   sample_ids=torch.arange(len(rows)), vocab_size=len(pieces))
    code_rows = {token_id: j for j, token_id in enumerate(ids)}
    for i in range(len(rows)):
        record = sequence_json(i, tokens[i].tolist(), batch, i, pieces, code_rows, config)
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(rows)
