"""The single-process run of preprocessing, and :func:`preprocess`, which picks it or the sharded run.

One document per kept record, in input order, each the record's formatted sample
(:mod:`megatron_t2c.mrpt.formats`) encoded by the tokenizer's ``encode_samples`` and ending with ``[eoc]``
(megatron-core's end of document).  Samples longer than ``max_seq_length`` tokens are dropped, as in the
paper.  The parent process only writes, a block at a time and in input order, through megatron-core's
``IndexedDatasetBuilder``; the blocks are encoded by :mod:`.encode`'s workers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO

from megatron_t2c.data import corpus_ranks
from megatron_t2c.data.preprocess.accounting import RunAccounts, Totals, account, run_summary
from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.encode import Chunk, Encoders, encoder_args
from megatron_t2c.data.preprocess.inputs import Piece, encoded_chunks, is_gzip, resolve_inputs
from megatron_t2c.data.preprocess.outputs import (StagedOutputs, add_documents, import_checked,
                                                  import_indexed_dataset, new_builder, targets, token_dtype,
                                                  write_staged)
from megatron_t2c.data.preprocess.shards import sharded
from megatron_t2c.tokenizer.loading import open_tokenizer
from megatron_t2c.utils.atomic import write_json


def preprocess(config: PreprocessConfig, log: IO[str] | None = sys.stderr) -> dict | None:
    """Run the whole conversion; return the summary (also written to ``config.summary`` when set).

    Raises :class:`~.accounting.StrictError` for a bad line under ``strict``, ``ValueError`` for bad
    options.  The summary's ``tokens_per_s`` is over ``seconds.run``: reading, parsing, encoding and
    writing, from the first byte read to the outputs renamed into place; ``seconds.setup`` (imports, model
    loading, starting workers) is reported apart.  Several ranks, ``ranks > 1``, ``shard_dir`` or
    ``resume``: a sharded run (:mod:`.shards`); ranks other than 0 return None.
    """
    start = time.perf_counter()
    if config.workers < 1:
        raise ValueError("--workers must be at least 1")
    if config.max_seq_length < 1:
        raise ValueError("--max-seq-length must be positive")
    if config.shard_bytes < 1:
        raise ValueError("--shard-bytes must be positive")
    inputs = resolve_inputs(config)
    vocab_size = open_tokenizer(config.tokenizer_model).vocab_size  # fails early on a wrong model
    if not corpus_ranks.is_sharded(config):
        return _single(config, inputs, vocab_size, log, start)
    if config.ranks > 1:
        import_indexed_dataset()  # once, before the local ranks are forked
    return corpus_ranks.run_ranks(config, lambda world: sharded(config, inputs, vocab_size, log, world, start))


def _single(config: PreprocessConfig, inputs: list[str], vocab_size: int, log, start: float) -> dict:
    dtype = token_dtype(vocab_size)
    accounts = RunAccounts(config, inputs, log)
    with Encoders(config.workers, encoder_args(config, dtype)) as encoders:
        indexed_dataset = import_checked(vocab_size, dtype)
        setup_seconds = time.perf_counter() - start
        run_start = time.perf_counter()
        with contextlib.closing(accounts.report):
            write_staged(targets(config), lambda outputs: _convert(config, inputs, indexed_dataset, dtype, encoders,
                                                                   outputs, accounts, run_start))
        run_seconds = time.perf_counter() - run_start
    summary = run_summary(config, inputs, vocab_size, dtype, accounts, setup_seconds, run_seconds)
    if config.summary:
        write_json(config.summary, summary)
    return summary


def _convert(config: PreprocessConfig, inputs: list[str], indexed_dataset, dtype, encoders: Encoders,
             outputs: StagedOutputs, accounts: RunAccounts, run_start: float) -> None:
    """Encode the inputs and write every output to its temporary file."""
    report, skipped, totals = accounts.report, accounts.skipped, accounts.totals
    builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
    index_map = None
    try:
        if config.index_map:
            index_map = open(outputs.temps[1], "w", encoding="ascii")
        pieces = (Piece(i, path) for i, path in enumerate(inputs))
        with _progress(config, inputs) as bar:
            for piece, chunk in encoded_chunks(config, encoders, pieces):
                report.label = piece.path
                account(chunk, totals.input_lines[piece.input] + 1, report, skipped, config.strict,
                        piece.path if len(inputs) > 1 else None)
                add_documents(builder, chunk.tokens, chunk.lengths)
                if index_map is not None and len(chunk.line_numbers):
                    lines = chunk.line_numbers + (totals.lines + 1)
                    index_map.write("\n".join(map(str, lines.tolist())) + "\n")
                totals.input_lines[piece.input] += chunk.n_lines
                totals.lines += chunk.n_lines
                totals.documents += len(chunk.lengths)
                totals.tokens += len(chunk.tokens)
                _advance(bar, chunk, totals, run_start)
        if index_map is not None:
            index_map.close()
        builder.finalize(outputs.temps[-1])
    finally:
        builder.data_file.close()
        if index_map is not None:
            index_map.close()


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _progress(config: PreprocessConfig, inputs: list[str]):
    """A tqdm bar over input bytes (docs/s and tokens/s in its postfix), or nothing."""
    if not config.progress:
        return _NoBar()
    from tqdm import tqdm

    sizes = [0 if is_gzip(p) or not os.path.isfile(p) else os.path.getsize(p) for p in inputs]
    size = sum(sizes) if all(sizes) else None
    return tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc="preprocess",
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)


def _advance(bar, chunk: Chunk, totals: Totals, run_start: float) -> None:
    if bar is None:
        return
    elapsed = max(time.perf_counter() - run_start, 1e-9)
    bar.set_postfix_str(f"{totals.documents / elapsed:,.0f} docs/s, {totals.tokens / elapsed:,.0f} tok/s",
                        refresh=False)
    bar.update(chunk.n_bytes)

