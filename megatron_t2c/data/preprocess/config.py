"""The options of a preprocessing run (``t2c preprocess`` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_t2c.data.corpus_ranks import ShardingOptions
from megatron_t2c.mrpt.formats import FORMATS, INCLUDE
from megatron_t2c.utils.dataclass_flags import option


@dataclass(kw_only=True)
class PreprocessConfig(ShardingOptions):
    """What to convert and how."""

    input: list[str] = option(help="JSONL files of extraction records (tools/extract_functions.py), read in "
                                   "the order given: FILE.jsonl, FILE.jsonl.gz, a FIFO, a directory (its "
                                   "*.jsonl[.gz], sorted) or a glob pattern ('shards/*.jsonl.gz')",
                              metavar="FILE.jsonl")
    files_from: str | None = option(None, "also read input paths from this file, one a line ('-': stdin)",
                                    metavar="FILE")
    tokenizer_model: str = option(help="SentencePiece model from tools/train_tokenizer.py or Hugging Face "
                                  "tokenizer directory (tokenizer.json, or vocab.json + merges.txt)",
                                  metavar="P.model|DIR")
    output_prefix: str = option(help="write OUT.bin and OUT.idx", metavar="OUT")
    format: str = option("pangu", "sample format", choices=FORMATS)
    include: str = option("text-code", "records to keep: with a docstring, without, or all", choices=INCLUDE)
    max_seq_length: int = option(1024, "drop samples longer than this many tokens ([eoc] included)")
    workers: int = option(1, "encoding processes (1: everything in this process)")
    summary: str | None = option(None, "write a JSON summary (counts, skipped lines by reason, timings)",
                                 metavar="FILE.json")
    index_map: str | None = option(None, "write the 1-based input line number of every document, one a line",
                                   metavar="FILE")
    strict: bool = option(False, "stop at the first bad input line (exit status 1)")
    chunk_bytes: int = option(1 << 20, "input bytes per work item")
    shard_bytes: int = option(256 << 20, "sharded runs: cut plain input files into shards of about this many "
                                         "bytes (a .gz file is one shard)")
    show_bad: int = option(10, "print at most this many bad lines in full")
    progress: bool = option(True, "show a progress bar on stderr")
