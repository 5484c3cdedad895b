"""The generate stage: sample completions of HumanEval or MBPP prompts from a megatron_t2c checkpoint.

    python tasks/evaluate.py generate --task humaneval --checkpoint runs/mrpt --output samples.jsonl \\
        --n-samples 200 --temperature 0.95 --top-p 0.8            # pass@10 / pass@100 (paper)
    python tasks/evaluate.py generate --task humaneval --checkpoint runs/mrpt --output greedy.jsonl --greedy
    python tasks/evaluate.py generate --task humaneval --incremental --greedy ...   # paper §3.4 prompts
    torchrun --nproc-per-node 4 tasks/evaluate.py generate --tensor-model-parallel-size 2 ...  # TP 2 x DP 2

Prompts (:func:`build_prompts`): each benchmark problem's plain prompt in the checkpoint's format (PanGu or
PyCodeGPT); ``--incremental`` adds its incremental prompts ``<task id>#<i>`` (paper §3.4).  Samples run to
the model's context (``--max-new-tokens`` caps them) and stop at ``[eoc]``.

**Samples** (``--output``, JSON lines; the record format that ``megatron_t2c/evaluation/execute.py`` reads):
one record per sample (:func:`make_record`), appended and flushed as each batch finishes; rerunning the same
command resumes (:func:`read_done`).  Under torchrun, tensor- and data-parallel (:func:`generate`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from typing import Any, Optional, Sequence


from megatron_t2c.evaluation.tasks import NAMES as TASKS, get_task
from megatron_t2c.inference.generator import SamplingConfig
from megatron_t2c.utils.dataclass_flags import option, parse_configs
from megatron_t2c.utils.jsonl import JsonlError, read_jsonl

SOURCE = "megatron_t2c"
DTYPES = ("fp32", "bf16", "fp16")

EPILOG = """examples:
  python tasks/evaluate.py generate --task humaneval --checkpoint runs/mrpt --output greedy.jsonl --greedy
  python tasks/evaluate.py generate --task humaneval --checkpoint runs/mrpt --output s200.jsonl \\
      --n-samples 200 --temperature 0.95 --top-p 0.8 --batch-size 50

  Rerun the same command after an interruption: finished samples are kept, the rest are generated."""


@dataclasses.dataclass
class GenerateConfig:
    """Sample completions of benchmark prompts from a checkpoint (KV-cached, batched, resumable)."""

    task: str = option(help="benchmark", choices=TASKS)
    checkpoint: str = option(help="checkpoint: a run directory (its latest iteration) or an iteration directory",
                             metavar="DIR")
    output: str = option(help="samples, JSON lines; resumed if it exists", metavar="FILE.jsonl")
    incremental: bool = option(False, "also generate for every problem's incremental prompts (<task id>#<i>, "
                                      "paper §3.4): the plain prompt and its incremental prompts, pooled per "
                                      "problem by the execute stage's incremental pass@k")
    tokenizer_model: Optional[str] = option(None, "SentencePiece model or Hugging Face tokenizer "
                                                  "directory (default: the one stored in the checkpoint)",
                                            metavar="PATH")
    format: Optional[str] = option(None, "prompt format (default: the checkpoint's)",
                                   choices=("pangu", "pycodegpt"))
    n_samples: int = option(1, "samples per prompt (paper: 1 greedy for pass@1, 200 for pass@10/100)")
    batch_size: int = option(16, "sequences decoded together per rank")
    mbpp_path: Optional[str] = option(None, "the official mbpp.jsonl (default: ../shared/data/mbpp.jsonl "
                                            "from the repository root)", metavar="P")
    mbpp_split: str = option("test", "MBPP split: test (task ids 11-510) or validation (the dev set, 511-600)",
                             choices=("test", "validation"))
    limit: Optional[int] = option(None, "only the first N prompts (with --incremental: whole problems, as many as "
                                        "fit in N prompts, at least one)")
    cpu: bool = option(False, "run on the CPU (gloo) instead of CUDA")
    tensor_model_parallel_size: int = option(1, "tensor-parallel ranks per model replica (under torchrun)")
    dtype: str = option("fp32", "compute precision of the model", choices=DTYPES)
    progress: bool = option(True, "show a progress bar with tokens/s")
    also_write: list[str] = option(default_factory=list,
                                   help="also write the samples for other harnesses: evalplus:FILE (its JSONL, "
                                        "task_id + solution) and/or bigcode:FILE (bigcode-evaluation-harness's "
                                        "generations.json); incremental prompts are left out",
                                   metavar="FORMAT:FILE")

    def __post_init__(self):
        if self.n_samples < 1 or self.batch_size < 1:
            raise ValueError("--n-samples and --batch-size must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be >= 1")


@dataclasses.dataclass(frozen=True)
class PromptItem:
    """One prompt: a plain benchmark prompt or an incremental one."""

    task_id: str
    base_task_id: str
    prefix_index: int
    ids: tuple[int, ...]


# --------------------------------------------------------------------------------------------- prompts
def build_prompts(problems, tokenizer, fmt: str, incremental: bool, limit: Optional[int] = None) -> list[PromptItem]:
    """The prompts in benchmark order; ``incremental``: each problem's plain prompt then its incremental
    prompts ``#1 ..`` (the pool of incremental pass@k), whole problems only when ``limit`` cuts.

    Prompts (:mod:`megatron_t2c.evaluation.problem`): PanGu ``[descr] description [python] signature``,
    PyCodeGPT ``[sos] signature [descr] description [python]``; ``--incremental``: each plain prompt followed
    by its incremental prompts ``<task id>#<i>`` (signature plus the first ``i`` reference body lines): the
    pool of the paper's incremental pass@k.  Samples run to the model's context (``--max-new-tokens`` caps
    them) and stop at ``[eoc]``.  The format and the objective (``prefix-code``: bidirectional prompt
    prefix) come from the checkpoint's run info; the tokenizer from the checkpoint.
    """
    items: list[PromptItem] = []
    for problem in problems:
        if limit is not None and len(items) >= limit:
            break
        own = [PromptItem(problem.task_id, problem.task_id, 0, tuple(tokenizer.encode_sample(problem.prompt(fmt))))]
        if incremental:
            own += [PromptItem(q.task_id, q.base_task_id, q.index, tuple(tokenizer.encode_sample(q.prompt(fmt))))
                    for q in problem.incremental()]
            if limit is not None and items and len(items) + len(own) > limit:
                break
        items.extend(own)
    return items if incremental or limit is None else items[:limit]


# ---------------------------------------------------------------------------------------------- output
def read_done(path: str | os.PathLike) -> dict[tuple[str, int], dict]:
    """Records already in ``path`` by ``(task_id, sample_index)``; a torn last line is cut off the file.

    Resume: samples are appended and flushed as each batch finishes; rerunning the same command skips the
    ``(task_id, sample_index)`` pairs already in ``--output`` (a truncated last line, from a killed run, is
    cut off and redone).  Samples are seeded per ``(seed, task_id, sample_index)``, so a resumed run writes
    the same samples an uninterrupted one would (up to floating-point differences between batch
    compositions).
    """
    try:
        contents = read_jsonl(path, repair=True)
    except JsonlError as exc:
        raise SystemExit(f"error: {exc}: not a sample record of this stage; choose another --output") from None
    done = {}
    for lineno, record in contents.records:
        try:
            done[(str(record["task_id"]), int(record["sample_index"]))] = record
        except (KeyError, TypeError, ValueError):
            raise SystemExit(f"error: {path}:{lineno} is not a sample record of this stage; choose another "
                             "--output") from None
    return done


def check_resumable(done: dict, *, task: str, fmt: str, sampling: dict, keys: set) -> None:
    """Refuse to mix samples of other settings into one file (for the pairs this run would write)."""
    for key, record in done.items():
        if key not in keys:
            continue
        theirs = (record.get("task"), record.get("prompt_format"), record.get("sampling"))
        if theirs != (task, fmt, sampling):
            raise SystemExit(f"error: the output already holds {key[0]} sample {key[1]} made with other settings "
                             f"(task, format, sampling = {theirs}, now {(task, fmt, sampling)}); choose another "
                             "--output")


def make_record(item: PromptItem, sample_index: int, result, tokenizer, fmt: str, task: str, sampling: dict,
                iteration: Any) -> dict:
    """The sample record of one generation.

    Samples (``--output``, JSON lines; the record format that ``megatron_t2c/evaluation/execute.py`` reads):
    ``task_id`` (``HumanEval/0``, or ``HumanEval/0#3`` for incremental prompt 3), ``completion``
    (de-normalised source that continues the prompt's code: for a plain prompt the function body after the
    signature, for an incremental prompt the lines after the reference prefix, absolute indentation),
    ``prompt_format`` (the format: marks the record as ours), ``prefix_index`` (0 plain, ``i`` incremental),
    ``base_task_id``, ``sample_index``, ``source`` = ``"megatron_t2c"``, plus ``function`` (the
    de-normalised prompt code + ``completion``: the whole function as executed, with the normalised
    signature), ``generation`` (the generated normalised text), ``num_tokens``, ``stop`` (``eoc``;
    ``length``: the sample reached the model's context, or ``--max-new-tokens``; ``prompt_too_long``: the
    prompt leaves no room in the model's context, the sample is empty), ``task``, ``sampling`` (the
    settings) and ``checkpoint_iteration``.
    """
    from megatron_t2c.evaluation.completions import completion_of, function_source, prompt_code_source

    prompt_source = prompt_code_source(tokenizer, item.ids, fmt)
    completion = completion_of(prompt_source, function_source(tokenizer, item.ids, result.tokens, fmt))
    record = {"task_id": item.task_id, "completion": completion, "prompt_format": fmt,
              "prefix_index": item.prefix_index, "base_task_id": item.base_task_id, "sample_index": sample_index,
              "source": SOURCE, "function": prompt_source + completion, "generation": tokenizer.detokenize(result.tokens),
              "num_tokens": len(result.tokens), "stop": result.stop, "task": task, "sampling": sampling,
              "checkpoint_iteration": iteration}
    return record


# ----------------------------------------------------------------------------------------------- stage
def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _broadcast_object(obj: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_records(records: list[dict]) -> list[dict]:
    """Every data-parallel replica's records on global rank 0 (only TP rank 0 of a replica contributes)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return records
    gathered: Optional[list] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(records, gathered, dst=0)
    if dist.get_rank() != 0:
        return []
    return [r for part in gathered for r in part]


def generate(config: GenerateConfig, sampling: SamplingConfig) -> dict[str, Any]:
    """Run the stage (under the current process group, initialised here); returns a summary.

    Parallelism: under torchrun, ``--tensor-model-parallel-size`` ranks share the model and compute
    together; the remaining factor of the world size is data parallel (batches are dealt out round-robin)
    and only global rank 0 writes.
    """
    import torch.distributed as dist
    from megatron.core import parallel_state

    from megatron_t2c.training import checkpointing
    from megatron_t2c.runtime import distributed as parallel
    from megatron_t2c.inference.generator import GenerationResult, Generator, sequence_key
    from megatron_t2c.tokenizer.loading import open_tokenizer, tokenizer_fingerprint

    if sampling.greedy and config.n_samples > 1:
        warnings.warn("--greedy with --n-samples > 1 gives identical samples")
    parallel.initialize_distributed(config.tensor_model_parallel_size, 1, cpu=config.cpu, seed=sampling.seed)
    try:
        ckpt = checkpointing.resolve(config.checkpoint)
        info = checkpointing.read_run_info(ckpt)
        fmt = config.format or info["format"]
        objective = info["objective"]
        tokenizer_file = config.tokenizer_model or checkpointing.tokenizer_path(ckpt)
        expected = (info.get("tokenizer") or {}).get("sha256")
        if expected and tokenizer_fingerprint(tokenizer_file) != expected:
            raise SystemExit(f"error: {tokenizer_file} is not the tokenizer {ckpt} was trained with")
        tokenizer = open_tokenizer(tokenizer_file)
        model, info = checkpointing.model_from_checkpoint(ckpt)
        model.to(_torch_dtype(config.dtype))

        rank = dist.get_rank()
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        dp_rank = parallel_state.get_data_parallel_rank()
        dp_size = parallel_state.get_data_parallel_world_size()
        described = sampling.describe()

        problems = get_task(config.task).load_from(config)
        items = build_prompts(problems, tokenizer, fmt, config.incremental, config.limit)
        units = [(item, s) for item in items for s in range(config.n_samples)]
        done_keys = None
        if rank == 0:
            done = read_done(config.output)
            check_resumable(done, task=config.task, fmt=fmt, sampling=described,
                            keys={(item.task_id, s) for item, s in units})
            done_keys = set(done)
        done_keys = _broadcast_object(done_keys)
        todo = [(item, s) for item, s in units if (item.task_id, s) not in done_keys]
        generator = Generator(model, fmt, objective, max_batch_size=config.batch_size)
        # A prompt that leaves no room in the model's context gets an empty sample (counted, and it fails
        # when executed) instead of stopping the stage.
        too_long = [(item, s) for item, s in todo if len(item.ids) >= generator.context_length]
        todo = [(item, s) for item, s in todo if len(item.ids) < generator.context_length]
        batches = [todo[lo:lo + config.batch_size] for lo in range(0, len(todo), config.batch_size)]
        rounds = (len(batches) + dp_size - 1) // dp_size
        bar = None
        if rank == 0 and config.progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(generator.budget(len(item.ids), sampling) for item, _ in todo), unit="tok", desc=f"generate {config.task}",
                       dynamic_ncols=True, smoothing=0.1)
        if rank == 0:
            print(f"{config.task}: {len(items)} prompts x {config.n_samples} samples, {len(units) - len(todo)} "
                  f"already in {config.output}, {len(todo)} to generate ({fmt}, {objective}, "
                  f"TP={parallel_state.get_tensor_model_parallel_world_size()}, DP={dp_size})", file=sys.stderr)
        out = open(config.output, "a", encoding="utf-8") if rank == 0 else None
        written, cut, tokens, start = 0, 0, 0, time.perf_counter()
        if out is not None and too_long:
            print(f"{len(too_long)} prompt(s) of {generator.context_length} tokens or more: written as empty samples "
                  "(stop = prompt_too_long)", file=sys.stderr)
            empty = GenerationResult(tokens=[], stop="prompt_too_long")
            out.write("".join(json.dumps(make_record(item, s, empty, tokenizer, fmt, config.task, described,
                                                     info.get("iteration"))) + "\n" for item, s in too_long))
            out.flush()
            written += len(too_long)
        try:
            for r in range(rounds):
                index = r * dp_size + dp_rank
                batch = batches[index] if index < len(batches) else []
                records = []
                if batch:
                    results = generator.generate([item.ids for item, _ in batch], sampling,
                                                 [sequence_key(item.task_id, s) for item, s in batch],
                                                 bar=bar if dp_rank == 0 else None)
                    tokens += generator.stats["tokens"]
                    if tp_rank == 0:
                        records = [make_record(item, s, res, tokenizer, fmt, config.task, described,
                                               info.get("iteration"))
                                   for (item, s), res in zip(batch, results)]
                records = _gather_records(records)
                if out is not None and records:
                    out.write("".join(json.dumps(rec) + "\n" for rec in records))
                    out.flush()
                    written += len(records)
                    cut += sum(rec["stop"] == "length" for rec in records)
        finally:
            if out is not None:
                out.close()
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        summary = {"prompts": len(items), "samples": len(units), "generated": written,
                   "skipped": len(units) - len(todo) - len(too_long),
                   "too_long": len(too_long), "stop_length": cut, "tokens_rank0": tokens, "seconds": round(seconds, 3),
                   "tokens_per_second_rank0": round(tokens / seconds, 1) if seconds > 0 else None,
                   "format": fmt, "objective": objective}
        if rank == 0:
            summary["also_written"] = write_other_formats(config, problems)
            print(json.dumps(summary), file=sys.stderr)
        return summary
    finally:
        parallel.destroy_distributed()


def write_other_formats(config: GenerateConfig, problems) -> list[dict]:
    """Convert the finished samples file for ``--also-write`` (:mod:`megatron_t2c.evaluation.interchange`)."""
    from megatron_t2c.evaluation.interchange import convert_samples, parse_targets

    targets = parse_targets(config.also_write)
    if not targets:
        return []
    records = [record for _, record in read_jsonl(config.output, missing_ok=False).records]
    order = {p.task_id: i for i, p in enumerate(problems)}
    wanted = [p for p in problems if any(str(r["task_id"]).partition("#")[0] == p.task_id for r in records)]
    if config.limit is None:  # every problem: keep the benchmark's order and length (bigcode needs them all)
        wanted = list(problems)
    records.sort(key=lambda r: (order.get(str(r["task_id"]).partition("#")[0], 0), int(r.get("sample_index", 0))))
    return [convert_samples(records, wanted, fmt, path) for fmt, path in targets]


def main(argv: Sequence[str] | None = None, prog: str = "t2c evaluate generate") -> dict[str, Any]:
    config, sampling = parse_configs(GenerateConfig, SamplingConfig, argv=argv, epilog=EPILOG,
                                     prog=prog,
                                     description=(__doc__ or "").split("\n\n")[0])
    return generate(config, sampling)


if __name__ == "__main__":  # guarded: megatron's checkpoint loading may start helper processes
    main()
