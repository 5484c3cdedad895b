"""The sharded run of preprocessing: ranks convert shards of the input, rank 0 merges them in input order.

With several ranks (``mpiexec``, ``srun``, torchrun, ``--ranks N``; :mod:`megatron_t2c.data.corpus_ranks`)
or ``--shard-dir``/``--resume``, the inputs are cut into shards (a compressed file is one shard, a plain
file is cut at line ends every ``--shard-bytes``); each rank converts its shards into ``pp-NNNNNN.bin/.idx``
plus the documents' line numbers and a marker with its counts, and rank 0 merges the shards in input order
with ``IndexedDatasetBuilder.add_index``, renumbering lines and replaying the bad-line report.  The
``.bin``, ``.idx``, index map and summary are byte-identical to a single-process run on the same input.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from megatron_t2c.data import corpus_ranks
from megatron_t2c.data.corpus_ranks import World
from megatron_t2c.data.preprocess.accounting import RunAccounts, run_summary, strict_error
from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.encode import Encoders, encoder_args
from megatron_t2c.data.preprocess.inputs import Piece, encoded_chunks, pieces_of
from megatron_t2c.data.preprocess.outputs import (StagedOutputs, add_documents, import_checked, new_builder,
                                                  targets, token_dtype, write_staged)
from megatron_t2c.utils.atomic import write_json

#: Options that change what a shard holds: a shard directory is only resumed with the same ones.
_PLAN_OPTIONS = ("format", "include", "max_seq_length", "shard_bytes", "show_bad", "strict")


def _tokenizer_fingerprint(path: str) -> dict:
    """A SentencePiece file's path, size and mtime; a Hugging Face directory's path and tokenization hash."""
    if os.path.isdir(path):
        from megatron_t2c.tokenizer.loading import tokenizer_fingerprint

        return {"path": os.path.abspath(path), "sha256": tokenizer_fingerprint(path)}
    return corpus_ranks.file_fingerprint(path)


def sharded(config: PreprocessConfig, inputs: list[str], vocab_size: int, log, world: World,
            start: float) -> dict | None:
    """This rank's part of a sharded run; rank 0 returns the summary, the others None."""
    dtype = token_dtype(vocab_size)
    shard_dir = config.shard_dir or config.output_prefix + ".shards"
    plan = {"tool": "preprocess_data", "inputs": [corpus_ranks.file_fingerprint(p) for p in inputs],
            "tokenizer_model": _tokenizer_fingerprint(config.tokenizer_model),
            **{k: getattr(config, k) for k in _PLAN_OPTIONS}}
    with Encoders(config.workers, encoder_args(config, dtype)) as encoders:
        indexed_dataset = import_checked(vocab_size, dtype)
        pieces = [p for i, path in enumerate(inputs) for p in pieces_of(i, path, config.shard_bytes)]
        setup_seconds = time.perf_counter() - start
        run_start = time.perf_counter()

        def convert(name: str, index: int, piece: Piece) -> bool:
            meta = _convert_shard(config, indexed_dataset, dtype, encoders, shard_dir, name, index, piece,
                                  world.rank)
            return not meta.get("strict")  # a strict run fails; rank 0 reports the first bad line of all

        corpus_ranks.process_shards(world, shard_dir=shard_dir, plan=plan, resume=config.resume, kind="pp",
                                    shards=pieces, convert=convert, still_valid=_valid_done)
    if world.rank != 0:
        return None
    accounts = RunAccounts(config, inputs, log)
    with contextlib.closing(accounts.report):
        manifest = write_staged(targets(config), lambda outputs: _merge(config, inputs, pieces, indexed_dataset,
                                                                        dtype, shard_dir, outputs, accounts))
    run_seconds = time.perf_counter() - run_start
    summary = run_summary(config, inputs, vocab_size, dtype, accounts, setup_seconds, run_seconds)
    summary.update(ranks=world.size, shards=len(pieces))
    write_json(os.path.join(shard_dir, corpus_ranks.MANIFEST),
               {"tool": "preprocess_data", "inputs": inputs, "outputs": targets(config), "shards": manifest})
    if not config.keep_shards:
        corpus_ranks.remove_shards(shard_dir)
    world.cleanup()
    if config.summary:
        write_json(config.summary, summary)
    return summary


def _valid_done(meta: dict, piece: Piece) -> bool:
    return (not meta.get("strict") and meta["input"] == piece.path
            and meta["start"] == piece.start and meta["length"] == piece.length)


@dataclass
class _ShardLog:
    """The bad-line bookkeeping of one shard (lines counted from 0 at the shard's first)."""

    max_shown: int
    n_bad: int = 0
    first_bad: list = field(default_factory=list)


def _convert_shard(config: PreprocessConfig, indexed_dataset, dtype, encoders: Encoders, shard_dir: str,
                   name: str, index: int, piece: Piece, rank: int) -> dict:
    """Convert one piece into the shard's ``.bin``/``.idx``/``.lines``; write its marker; return it."""
    t0 = time.perf_counter()
    base = os.path.join(shard_dir, name)
    outputs = StagedOutputs([base + ".bin", base + ".lines", base + ".idx"])
    skipped: Counter = Counter()
    log = _ShardLog(config.show_bad)
    lines = documents = tokens = 0
    strict = None
    try:
        builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
        try:
            with open(outputs.temps[1], "wb") as line_file:
                for _, chunk in encoded_chunks(config, encoders, [piece]):
                    if chunk.bad and config.strict:
                        at, reason, detail = chunk.bad[0]
                        strict = {"line": lines + at, "reason": reason, "detail": detail}
                        break
                    for at, reason, detail in chunk.bad:
                        if len(log.first_bad) < log.max_shown:
                            log.first_bad.append([lines + at, reason, detail])
                        skipped[reason] += 1
                    log.n_bad += len(chunk.bad)
                    skipped.update(chunk.skipped)
                    add_documents(builder, chunk.tokens, chunk.lengths)
                    (chunk.line_numbers + lines).tofile(line_file)
                    lines += chunk.n_lines
                    documents += len(chunk.lengths)
                    tokens += len(chunk.tokens)
            builder.finalize(outputs.temps[-1])
        finally:
            builder.data_file.close()
        meta = {"shard": index, "rank": rank, "input": piece.path, "start": piece.start, "length": piece.length,
                "outputs": [name + ".bin", name + ".idx", name + ".lines"], "lines": lines,
                "documents": documents, "tokens": tokens, "skipped": dict(sorted(skipped.items())),
                "bad_lines": log.n_bad, "first_bad_lines": log.first_bad,
                "seconds": round(time.perf_counter() - t0, 3)}
        if strict is not None:
            meta["strict"] = strict
        else:
            outputs.commit()
    finally:
        outputs.discard()
    corpus_ranks.write_done(shard_dir, name, meta)
    return meta


def _merge(config: PreprocessConfig, inputs: list[str], pieces: list[Piece], indexed_dataset, dtype,
           shard_dir: str, outputs: StagedOutputs, accounts: RunAccounts) -> list[dict]:
    """Concatenate the shards, in order, into the final outputs; replay their accounting."""
    report, skipped, totals = accounts.report, accounts.skipped, accounts.totals
    builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
    index_map = open(outputs.temps[1], "w", encoding="ascii") if config.index_map else None
    manifest = []
    # add_index runs gc.collect() for every shard: without freezing, each walks all of torch (~0.25 s)
    gc.freeze()
    try:
        for s, piece in enumerate(pieces):
            name = corpus_ranks.shard_name("pp", s)
            meta = corpus_ranks.read_done(shard_dir, name)
            if meta is None or meta["input"] != piece.path or meta["start"] != piece.start:
                raise RuntimeError(f"shard {name} in {shard_dir} is missing or does not match the inputs")
            first_line = totals.input_lines[piece.input] + 1
            if meta.get("strict"):
                bad = meta["strict"]
                raise strict_error(first_line + bad["line"], bad["reason"], bad["detail"],
                                    piece.path if len(inputs) > 1 else None)
            report.label = piece.path
            for at, reason, detail in meta["first_bad_lines"]:
                report.bad(first_line + at, reason, detail)
            report.n_bad += meta["bad_lines"] - len(meta["first_bad_lines"])
            skipped.update(meta["skipped"])
            base = os.path.join(shard_dir, name)
            if meta["documents"]:
                builder.add_index(base)
            if index_map is not None and meta["documents"]:
                lines = np.fromfile(base + ".lines", dtype=np.int64) + (totals.lines + 1)
                for part in np.array_split(lines, max(1, len(lines) // (1 << 20))):
                    index_map.write("\n".join(map(str, part.tolist())) + "\n")
            totals.input_lines[piece.input] += meta["lines"]
            totals.lines += meta["lines"]
            totals.documents += meta["documents"]
            totals.tokens += meta["tokens"]
            manifest.append(meta)
        if index_map is not None:
            index_map.close()
        builder.finalize(outputs.temps[-1])
    finally:
        gc.unfreeze()
        builder.data_file.close()
        if index_map is not None:
            index_map.close()
    return manifest
