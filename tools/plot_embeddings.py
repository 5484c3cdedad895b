#!/usr/bin/env python
"""Nearest neighbours of tokens in a checkpoint's docstring and code embedding spaces, drawn with t-SNE
(paper Figures 3 and 5).

A thin command line over :mod:`megatron_t2c.embeddings`: reads the word-embedding table of a megatron_t2c
checkpoint (a run directory: its latest iteration; or an iteration directory), finds the top-k cosine
neighbours of each token in the docstring space (base rows) and the code space (the code row of a separated
token, the base row of the others: the model's own rule), and writes PREFIX.png (one t-SNE panel per space,
queries as stars, neighbours labelled), PREFIX.json (the neighbours with their cosines) and, with
--per-token, PREFIX_<token>.png.  A token is a whole vocabulary piece: "▁tok" if the vocabulary has it, else
"tok".  For a model without separation the code space is the docstring space (the plot title says so)."""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_t2c.cli import option, parse_config  # noqa: E402
from megatron_t2c.embeddings import DEFAULT_TOKENS  # noqa: E402

EPILOG = """examples:
  tools/plot_embeddings.py runs/quickstart/train/mrpt_code_full/checkpoints --output-prefix plots/fes
  tools/plot_embeddings.py runs/quickstart/train/mapt/checkpoints/iter_0000300 --output-prefix plots/mapt \\
      --tokens open join def split return --neighbours 20 --per-token"""


@dataclasses.dataclass
class PlotEmbeddingsConfig:
    """Embedding neighbourhoods of a checkpoint."""

    checkpoint: str = option(positional=True, help="a checkpoint: run directory (latest iteration) or iteration "
                                                   "directory")
    output_prefix: str = option(help="writes PREFIX.png and PREFIX.json", metavar="PREFIX")
    tokens: list[str] = option(default_factory=lambda: list(DEFAULT_TOKENS),
                               help="query words (whole vocabulary pieces, '▁word' preferred)")
    neighbours: int = option(20, "neighbours per token and space")
    tokenizer_model: str = option(None, "the SentencePiece model (default: the one stored with the checkpoint)")
    include_bytes: bool = option(False, "let byte-fallback pieces <0x..> be neighbours")
    per_token: bool = option(False, "also one PNG per token (PREFIX_<token>.png)")
    seed: int = option(0, "t-SNE random_state (the plots are reproducible)")


def main(argv=None) -> int:
    config = parse_config(PlotEmbeddingsConfig, argv, description=__doc__, epilog=EPILOG,
                          prog="tools/plot_embeddings.py")
    from megatron_t2c.embeddings import analyse, format_markdown

    result = analyse(config.checkpoint, config.output_prefix, words=config.tokens, k=config.neighbours,
                     tokenizer_model=config.tokenizer_model, include_bytes=config.include_bytes,
                     per_token=config.per_token, seed=config.seed)
    print(format_markdown(result))
    print(f"wrote {result['png']} and {result['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
