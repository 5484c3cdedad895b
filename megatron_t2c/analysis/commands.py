"""Command-line entry points of the analysis tools (t2c inspect, report, embeddings, contamination, correlation)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from megatron_t2c.analysis.batch_inspection import InspectConfig, inspect
from megatron_t2c.analysis.embedding_spaces import DEFAULT_TOKENS
from megatron_t2c.utils.atomic import atomic_open, write_json
from megatron_t2c.utils.dataclass_flags import option, parse_config


def _emit(text: str, result: dict, output, markdown) -> None:
    """Print a tool's markdown; write it (``--markdown``) and the result as JSON (``--output``), atomically."""
    print(text)
    if output:
        write_json(output, result)
    if markdown:
        with atomic_open(markdown) as fh:
            fh.write(text)


INSPECT_DOC = """Print what an MRPT objective and separation feed the model, one JSON object per packed sequence.

A thin command line over :func:`megatron_t2c.analysis.batch_inspection.inspect`; see that module for the details.
"""

INSPECT_DESCRIPTION = INSPECT_DOC.split("\n\n")[0] + """

Documents (records of --input, formatted and encoded as preprocessing does, or the documents of --dataset)
are packed as megatron-core's GPTDataset packs them: sequence i is stream[i*S : i*S+S+1], tokens = row[:-1],
labels = row[1:].  Per position: piece, token_id, modality (shared|docstring|code), row (embedding row: the
base id, or vocab_size + j for a code token that is the j-th separated id), position_id, loss, input_id
(after corruption), input_piece, label_id and attends ([start, end) key ranges)."""

INSPECT_EPILOG = """examples:
  tools/inspect_batch.py --tokenizer-model tokenizer.model --input functions.jsonl \\
      --format pangu --objective prefix-code --separation partial --seq-length 64 --max-sequences 2
  tools/inspect_batch.py --tokenizer-model tokenizer.model --dataset data/stdlib_pangu \\
      --objective corrupt-code --separation auto --k 128 --seed 7 --print-separation | head -1 | python -m json.tool"""


def inspect_main(argv: list[str] | None = None) -> int:
    config = parse_config(InspectConfig, argv, description=INSPECT_DESCRIPTION, epilog=INSPECT_EPILOG)
    try:
        inspect(config, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


REPORT_DOC = """Write RUN_DIR/report.md (and its PNGs beside it) for a pipeline run directory.

A thin command line over :mod:`megatron_t2c.analysis.report`: pipeline status; a results table shaped like the
paper's Table 2 (MAPT and the MRPT runs by objective x separation; HumanEval and MBPP pass@1/10/100 and
incremental pass@1, micro and macro); training curves from the TensorBoard logs (training_curves.png);
corpus and dataset statistics (summary.json); t-SNE plots of embedding neighbours (embeddings_<run>.png) for
the MAPT checkpoint and one separated MRPT checkpoint; the Hugging Face export check (hf/<run>/verify.json);
the contamination check (contamination.json, computed from data/functions.jsonl when absent); stage timings
(timings.json).  Missing parts are reported as "not run"; the report is written for partial runs too."""

REPORT_EPILOG = """examples:
  tools/make_report.py runs/quickstart
  tools/make_report.py runs/quickstart --embedding-runs mapt mrpt_code_full --tokens open join def split \\
      --no-contamination"""


@dataclasses.dataclass
class ReportConfig:
    """The run to report on."""

    run_dir: str = option(positional=True, help="the pipeline run directory (data/, train/, eval/, hf/ ...)")
    output: str = option(None, "the report file (default: RUN_DIR/report.md; PNGs go to RUN_DIR)")
    embeddings: bool = option(True, "draw the embedding-neighbour t-SNE plots")
    embedding_runs: list[str] = option(default_factory=list, help="runs to draw (default: mapt and one MRPT run "
                                                                  "with separation full, else partial)")
    tokens: list[str] = option(default_factory=lambda: ["open", "join", "def", "split"],
                               help="query tokens of the embedding plots")
    neighbours: int = option(20, "neighbours per token and space")
    contamination: bool = option(True, "include the contamination check (computed when contamination.json is "
                                       "missing)")
    mbpp_path: str = option(None, "the official mbpp.jsonl for the contamination check")


def report_main(argv=None) -> int:
    config = parse_config(ReportConfig, argv, description=REPORT_DOC, epilog=REPORT_EPILOG)
    from megatron_t2c.analysis.report import build_report

    result = build_report(config.run_dir, output=config.output, embeddings=config.embeddings,
                          embedding_runs=config.embedding_runs, tokens=config.tokens,
                          neighbours=config.neighbours, contamination=config.contamination,
                          mbpp_path=config.mbpp_path)
    for section, status in result["sections"].items():
        if status != "ok":
            print(f"warning: section {section!r}: {status}", file=sys.stderr)
    print(f"wrote {result['report']}")
    return 0


EMBEDDINGS_DOC = """Nearest neighbours of tokens in a checkpoint's docstring and code embedding spaces, drawn with t-SNE
(paper Figures 3 and 5).

A thin command line over :mod:`megatron_t2c.analysis.embedding_spaces`: reads the word-embedding table of a megatron_t2c
checkpoint (a run directory: its latest iteration; or an iteration directory), finds the top-k cosine
neighbours of each token in the docstring space (base rows) and the code space (the code row of a separated
token, the base row of the others: the model's own rule), and writes PREFIX.png (one t-SNE panel per space,
queries as stars, neighbours labelled), PREFIX.json (the neighbours with their cosines) and, with
--per-token, PREFIX_<token>.png.  A token is a whole vocabulary piece: "▁tok" if the vocabulary has it, else
"tok".  For a model without separation the code space is the docstring space (the plot title says so)."""

EMBEDDINGS_EPILOG = """examples:
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
    tokenizer_model: str = option(None, "the SentencePiece model or Hugging Face tokenizer directory "
                                  "(default: the one stored with the checkpoint)")
    include_bytes: bool = option(False, "let byte-fallback pieces <0x..> be neighbours")
    per_token: bool = option(False, "also one PNG per token (PREFIX_<token>.png)")
    seed: int = option(0, "t-SNE random_state (the plots are reproducible)")


def embeddings_main(argv=None) -> int:
    config = parse_config(PlotEmbeddingsConfig, argv, description=EMBEDDINGS_DOC, epilog=EMBEDDINGS_EPILOG)
    from megatron_t2c.analysis.embedding_spaces import analyse, format_markdown

    result = analyse(config.checkpoint, config.output_prefix, words=config.tokens, k=config.neighbours,
                     tokenizer_model=config.tokenizer_model, include_bytes=config.include_bytes,
                     per_token=config.per_token, seed=config.seed)
    print(format_markdown(result))
    print(f"wrote {result['png']} and {result['json']}")
    return 0


CONTAMINATION_DOC = """Contamination check (paper §3.3): exact matches of HumanEval and MBPP prompts in the training data,
whitespace ignored.

A thin command line over :mod:`megatron_t2c.analysis.contamination`.  Probes per problem: its description (the
natural-language prompt: HumanEval's entry-point docstring, MBPP's text) and its reference solution
(signature and body, comments removed), each reduced to its non-whitespace characters; a probe matches a
training text that contains it.  Training texts, streamed: the docstring and code of every record of
--functions (extraction JSONL) and/or every document of --dataset PREFIX (decoded with --tokenizer-model,
markers removed).  Reports per benchmark the number of contaminated problems and every matching
(problem id, training record id / document) pair, as JSON (--output) and markdown (--markdown, printed)."""

CONTAMINATION_EPILOG = """examples:
  tools/contamination.py --functions runs/quickstart/data/functions.jsonl --output contamination.json
  tools/contamination.py --dataset runs/quickstart/data/pangu_all \\
      --tokenizer-model runs/quickstart/data/tokenizer.model --benchmarks humaneval --probes description"""


@dataclasses.dataclass
class ContaminationConfig:
    """Where the training data is and what to look for."""

    functions: list[str] = option(default_factory=list, help="extraction JSONL files (docstring and code of "
                                                             "each record are searched)", metavar="FILE.jsonl")
    dataset: list[str] = option(default_factory=list, help="indexed dataset prefixes (PREFIX.bin/.idx)",
                                metavar="PREFIX")
    tokenizer_model: str = option(None, "SentencePiece model or Hugging Face tokenizer directory to decode "
                                  "--dataset documents")
    benchmarks: list[str] = option(default_factory=lambda: ["humaneval", "mbpp"], help="benchmarks to check",
                                   choices=("humaneval", "mbpp"))
    mbpp_splits: list[str] = option(default_factory=lambda: ["test", "validation"],
                                    help="MBPP splits (test = task ids 11-510, validation = dev, 511-600)",
                                    choices=("prompt", "test", "validation", "train"))
    mbpp_path: str = option(None, "the official mbpp.jsonl (default: ../shared/data/mbpp.jsonl)")
    probes: list[str] = option(default_factory=lambda: ["description", "code"], help="what to search for",
                               choices=("description", "code"))
    min_chars: int = option(20, "probes with fewer non-whitespace characters are not searched")
    output: str = option(None, "write the report as JSON", metavar="FILE.json")
    markdown: str = option(None, "write the markdown summary", metavar="FILE.md")


def contamination_main(argv=None) -> int:
    config = parse_config(ContaminationConfig, argv, description=CONTAMINATION_DOC, epilog=CONTAMINATION_EPILOG)
    from megatron_t2c.analysis import contamination as C

    if not config.functions and not config.dataset:
        raise SystemExit("error: give --functions and/or --dataset")
    if config.dataset and not config.tokenizer_model:
        raise SystemExit("error: --dataset needs --tokenizer-model")
    probes, problems, notes = C.benchmark_probes(config.benchmarks, mbpp_path=config.mbpp_path,
                                                 mbpp_splits=config.mbpp_splits, kinds=config.probes)
    sources = [(os.path.basename(p), C.iter_jsonl_texts(p)) for p in config.functions]
    sources += [(os.path.basename(p), C.iter_dataset_texts(p, config.tokenizer_model)) for p in config.dataset]
    if config.min_chars < 1:
        raise SystemExit("error: --min-chars must be at least 1")
    report = C.check(sources, probes, problems, k=min(16, config.min_chars), min_chars=config.min_chars, notes=notes)
    _emit(C.format_markdown(report), report, config.output, config.markdown)
    return 0


CORRELATION_DOC = """Pearson correlation of pass@1 across a series of checkpoints between test sets (paper Table 4).

A thin command line over :mod:`megatron_t2c.analysis.checkpoint_correlation`.  Inputs (any mix):

  --root DIR        DIR/<checkpoint>/<testset>.summary.json or DIR/<checkpoint>/<testset>/<mode>.summary.json
                    (summaries written by `tasks/evaluate.py execute --summary`)
  --summary CKPT:TESTSET=PATH ...   single summaries (several after one --summary)
  --table FILE.json {checkpoint: {testset: value}}
  --runs NAME=DIR ...   several models (each DIR as --root): per-model r and the average (paper Table 4)

Test sets are named freely; the paper's are humaneval, mbpp_dev (MBPP task ids 511-600) and mbpp_test
(11-510), shown first and in that order.  Writes the matrix (with the number of shared checkpoints) and the
per-checkpoint values as JSON (--output) and markdown (--markdown, also printed).  A correlation is null when
a series is constant or fewer than two checkpoints share both test sets; the notes say which."""

CORRELATION_EPILOG = """examples:
  tools/checkpoint_correlation.py --root runs/series/eval --mode greedy --output corr.json --markdown corr.md
  tools/checkpoint_correlation.py --runs pangu=runs/pangu/eval pycodegpt=runs/pycodegpt/eval   # averaged
  tools/checkpoint_correlation.py \\
      --summary iter_1000:humaneval=eval/1000/he.json iter_1000:mbpp_test=eval/1000/mbpp.json \\
                iter_2000:humaneval=eval/2000/he.json iter_2000:mbpp_test=eval/2000/mbpp.json"""


@dataclasses.dataclass
class CorrelationConfig:
    """Checkpoint correlation between test sets."""

    root: str = option(None, "a directory of per-checkpoint summaries (see above)", metavar="DIR")
    summary: list[str] = option(default_factory=list,
                                help="summaries, CHECKPOINT:TESTSET=PATH ... (all after one --summary)",
                                metavar="CKPT:TESTSET=PATH")
    table: str = option(None, "a JSON table {checkpoint: {testset: value}}", metavar="FILE.json")
    runs: list[str] = option(default_factory=list,
                             help="several models, NAME=DIR ... (each DIR laid out as --root): each model's "
                                  "correlations and their average across models (paper Table 4)",
                             metavar="NAME=DIR")
    mode: str = option("greedy", "with --root: the <mode>.summary.json read inside DIR/<ckpt>/<testset>/")
    metric: str = option("pass@1", "the summary key to correlate")
    testsets: list[str] = option(default_factory=list, help="test sets to include, in this order (default: all "
                                                            "found; humaneval, mbpp_dev, mbpp_test first)")
    output: str = option(None, "write the result as JSON", metavar="FILE.json")
    markdown: str = option(None, "write the markdown tables", metavar="FILE.md")


def _correlation_across_runs(config, C) -> int:
    from megatron_t2c.utils.atomic import atomic_open, write_json

    results = {}
    for spec in config.runs:
        name, sep, root = spec.partition("=")
        if not sep or not name or not root:
            raise SystemExit(f"error: bad --runs {spec!r}: expected NAME=DIR")
        table = C.collect_directory(root, mode=config.mode, metric=config.metric)
        if not table:
            raise SystemExit(f"error: no values found under {root}")
        results[name] = C.correlation_matrix(table, config.testsets or None)
    average = C.average_across_runs(results)
    text = C.format_runs_markdown(average)
    print(text)
    if config.output:
        write_json(config.output, {"metric": config.metric, "runs": results, "average": average})
    if config.markdown:
        with atomic_open(config.markdown) as fh:
            fh.write(text)
    return 0


def correlation_main(argv=None) -> int:
    config = parse_config(CorrelationConfig, argv, description=CORRELATION_DOC, epilog=CORRELATION_EPILOG)
    from megatron_t2c.analysis import checkpoint_correlation as C

    if config.runs:
        return _correlation_across_runs(config, C)
    tables = []
    if config.root:
        tables.append(C.collect_directory(config.root, mode=config.mode, metric=config.metric))
    if config.table:
        with open(config.table, encoding="utf-8") as fh:
            tables.append(json.load(fh))
    if config.summary:
        tables.append(C.parse_summary_specs(config.summary, config.metric))
    if not tables:
        raise SystemExit("error: give --root, --summary or --table")
    table = C.merge_tables(*tables)
    if not table:
        raise SystemExit("error: no values found")
    result = C.correlation_matrix(table, config.testsets or None)
    result["metric"] = config.metric
    _emit(C.format_markdown(result), result, config.output, config.markdown)
    return 0


CODE_LOSS_EPILOG = """examples:
  t2c code-loss runs/quickstart/train/mrpt_code_full/checkpoints --output code_loss.json
  t2c code-loss runs/mrpt --tasks humaneval --limit 50 --no-cpu"""


def code_loss_main(argv=None) -> int:
    from megatron_t2c.analysis.code_loss import CodeLossConfig, format_markdown, measure

    config = parse_config(CodeLossConfig, argv, epilog=CODE_LOSS_EPILOG,
                          description="Held-out code loss: the mean per-token loss of the HumanEval and MBPP "
                                      "reference solutions given their prompts (code space).")
    result = measure(config)
    print(format_markdown(result))
    return 0
