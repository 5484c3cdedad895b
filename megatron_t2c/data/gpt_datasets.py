"""Training data: megatron-core ``GPTDataset`` blends of our indexed datasets, and the batches of each step.

* **Datasets** (:func:`build_datasets`): ``--data-path [WEIGHT] PREFIX ...`` through megatron-core's
  ``BlendedMegatronDatasetBuilder``: documents split train/valid/test by ``--split`` and shuffled with the
  run's seed.  ``--packing whole`` (the default, paper Appendix B.3):
  :class:`~megatron_t2c.data.packed_dataset.PackedDocumentDataset` packs whole documents into rows of
  ``seq_length + 1`` tokens and pads the rest; ``--packing continuous``: megatron's ``GPTDataset``
  concatenates the documents and cuts rows anywhere.  Documents end with ``[eoc]`` (megatron's end of
  document); attention and positions restart at every ``[eoc]`` -- computed with each objective's masks
  by :func:`megatron_t2c.mrpt.objectives.build_batch`.
* **Sample-index cache** (``--data-cache-path``): rank 0 builds megatron's index files once; every other
  rank then reads them.  Nodes that do not see rank 0's files (no shared file system) receive them over the
  process group and write them to their own cache path (:func:`_share_cache`), so every node reads the
  same indices without building them again.
* **Batches** (:class:`StepBatches`): the samples of optimiser step ``i`` are the global sample indices
  ``consumed + [0, global_batch)``; micro-batch ``m`` of data-parallel rank ``d`` takes
  ``consumed + (m * dp + d) * mbs + [0, mbs)``.  Resuming with the stored ``consumed_samples`` therefore
  continues with exactly the next samples, whatever the parallel layout.  CORRUPT-CODE draws its
  corruption from the sample's global index and the seed (reproducible anywhere).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from megatron_t2c.mrpt.objectives import Batch, build_batch

__all__ = ["DataError", "PACKINGS", "parse_blend", "check_datasets", "samples_per_epoch", "build_datasets",
           "packing_figures", "StepBatches"]

#: ``whole``: rows of whole documents plus padding (the paper's); ``continuous``: megatron's GPTDataset.
PACKINGS = ("whole", "continuous")

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data flags do not describe usable datasets."""


def parse_blend(data_path: Sequence[str]) -> tuple[list[str], Optional[list[float]]]:
    """``["0.7", "A", "0.3", "B"]`` or ``["A", "B"]`` (items may also hold several words) ->
    ``(prefixes, weights or None)``."""
    words = [w for item in data_path for w in str(item).split()]
    if not words:
        raise DataError("--data-path: no dataset given")

    def is_number(word: str) -> bool:
        try:
            float(word)
            return True
        except ValueError:
            return False

    if not any(is_number(w) for w in words):
        return words, None
    if len(words) % 2 or not all(is_number(w) for w in words[::2]):
        raise DataError(f"--data-path: expected WEIGHT PREFIX pairs or prefixes only, got {' '.join(words)}")
    weights = [float(w) for w in words[::2]]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"--data-path: weights must be non-negative and not all 0, got {weights}")
    return words[1::2], weights


def check_datasets(prefixes: Sequence[str], vocab_size: int, fmt: str) -> None:
    """Every prefix has its ``.bin`` and ``.idx``; where preprocess's ``.summary.json`` is beside them, its
    vocabulary size and format must be this run's.  Raises :class:`DataError` naming the dataset."""
    for prefix in prefixes:
        missing = [prefix + ext for ext in (".bin", ".idx") if not os.path.exists(prefix + ext)]
        if missing:
            raise DataError(f"dataset {prefix}: missing {', '.join(missing)} (make it with tools/preprocess_data.py)")
        summary_path = prefix + ".summary.json"
        if os.path.exists(summary_path):
            with open(summary_path, encoding="utf-8") as fh:
                summary = json.load(fh)
            if summary.get("vocab_size") not in (None, vocab_size):
                raise DataError(f"dataset {prefix} was tokenized with a {summary['vocab_size']}-token vocabulary, "
                                f"--tokenizer-model has {vocab_size}: use the tokenizer the dataset was made with")
            if summary.get("format") not in (None, fmt):
                raise DataError(f"dataset {prefix} is in the {summary['format']!r} format, --format is {fmt!r}")
        else:
            _check_token_range(prefix, vocab_size)


def _check_token_range(prefix: str, vocab_size: int, documents: int = 1000) -> None:
    """Without a summary: the first documents' ids must fit the vocabulary."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)
    for i in range(min(documents, len(dataset))):
        top = int(np.max(dataset[i])) if len(dataset[i]) else 0
        if top >= vocab_size:
            raise DataError(f"dataset {prefix} holds token id {top} (document {i}) but --tokenizer-model has "
                            f"{vocab_size} tokens: use the tokenizer the dataset was made with")


def _split_bounds(split: str, num_documents: int) -> list[tuple[int, int]]:
    """Document ranges of train/valid/test, as megatron-core computes them."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
    bounds = []
    for part in matrix:
        if part is None:
            bounds.append((0, 0))
        else:
            bounds.append((int(round(part[0] * num_documents)), int(round(part[1] * num_documents))))
    return bounds


def samples_per_epoch(prefixes: Sequence[str], split: str, seq_length: int, packing: str = "whole",
                      seed: int = 1234) -> int:
    """Rows of ``seq_length`` tokens in one pass over the training split of every prefix (unweighted):
    with whole-instance packing, the rows of epoch 0's packing (the seed's shuffle)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_t2c.data.packing import packing_stats

    total = 0
    for prefix in prefixes:
        dataset = IndexedDataset(prefix)
        start, stop = _split_bounds(split, len(dataset))[0]
        if packing == "whole":
            total += packing_stats(dataset.sequence_lengths, seq_length, seed, np.arange(start, stop)).rows
            continue
        tokens = int(np.sum(dataset.sequence_lengths[start:stop], dtype=np.int64))
        total += max(0, (tokens - 1) // seq_length)
    return total


def default_cache_path(prefixes: Sequence[str]) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(prefixes[0])), "index_cache")


def _share_cache(cache_dir: str) -> None:
    """Copy rank 0's index files to every rank that does not see them (another node's local disk)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    manifest = [None]
    if dist.get_rank() == 0:
        manifest[0] = {name: os.path.getsize(os.path.join(cache_dir, name)) for name in sorted(os.listdir(cache_dir))
                       if os.path.isfile(os.path.join(cache_dir, name))}
    dist.broadcast_object_list(manifest, src=0)
    files: dict = manifest[0]
    missing = sorted(name for name, size in files.items()
                     if not (os.path.isfile(os.path.join(cache_dir, name))
                             and os.path.getsize(os.path.join(cache_dir, name)) == size))
    needs: list = [None] * dist.get_world_size()
    dist.all_gather_object(needs, missing)
    wanted = sorted(set().union(*map(set, needs)))
    for name in wanted:
        payload = [None]
        if dist.get_rank() == 0:
            with open(os.path.join(cache_dir, name), "rb") as fh:
                payload[0] = fh.read()
        dist.broadcast_object_list(payload, src=0)
        if name in missing:  # ranks of one node may all write it: each through its own temporary name
            os.makedirs(cache_dir, exist_ok=True)
            tmp = os.path.join(cache_dir, f".{name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as fh:
                fh.write(payload[0])
            os.replace(tmp, os.path.join(cache_dir, name))
    if wanted:
        log.info("index cache: sent %d file(s) to ranks that do not share rank 0's %s", len(wanted), cache_dir)
    dist.barrier()


def build_datasets(prefixes: Sequence[str], weights: Optional[Sequence[float]], *, split: str, seq_length: int,
                   sizes: Sequence[Optional[int]], seed: int, tokenizer, cache_path: Optional[str],
                   packing: str = "whole") -> list:
    """``[train, valid, test]`` megatron datasets (None for an empty split) with ``sizes`` samples each."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from megatron_t2c.data.packed_dataset import PackedDocumentDataset

    if packing not in PACKINGS:
        raise DataError(f"--packing must be one of {', '.join(PACKINGS)}, got {packing!r}")
    cls = PackedDocumentDataset if packing == "whole" else GPTDataset

    cache_path = cache_path or default_cache_path(prefixes)
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=(list(prefixes), list(weights) if weights else None),
        split=split, path_to_cache=cache_path, tokenizer=tokenizer, reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False, mid_level_dataset_surplus=0.05)
    rank = dist.get_rank() if dist.is_initialized() else 0
    sizes = list(sizes)
    if dist.is_initialized() and dist.get_world_size() > 1:
        # Rank 0 builds (or finds) the index files; they then reach every node; then every rank loads them.
        BlendedMegatronDatasetBuilder(cls, sizes, lambda: rank == 0, config).build()
        _share_cache(cache_path)
    return BlendedMegatronDatasetBuilder(cls, sizes, lambda: True, config).build()


def packing_figures(dataset) -> Optional[dict]:
    """The packing figures of a (blended) whole-instance dataset, summed over its parts; None for
    continuous packing.  Per part and in total: rows and documents of one epoch, documents per row, the
    padding fraction, dropped documents."""
    parts = list(getattr(dataset, "datasets", [dataset]))
    stats = [getattr(part, "stats", None) for part in parts]
    if not stats or any(s is None for s in stats):
        return None
    from megatron_t2c.data.packing import PackingStats

    total = PackingStats(documents=sum(s["documents"] for s in stats), dropped=sum(s["dropped"] for s in stats),
                         rows=sum(s["rows"] for s in stats), tokens=sum(s["tokens"] for s in stats),
                         capacity=stats[0]["capacity"])
    return {**total.as_dict(), "rows_built": len(dataset), "description": total.describe()}


class StepBatches:
    """The micro-batches of one data-parallel rank for each optimiser step (see the module docstring)."""

    def __init__(self, dataset, *, fmt: str, objective: str, micro_batch_size: int, num_microbatches: int,
                 dp_rank: int, dp_size: int, layout, seed: int, vocab_size: int, device: torch.device):
        self.dataset, self.fmt, self.objective = dataset, fmt, objective
        self.mbs, self.num_microbatches, self.dp_rank, self.dp_size = (micro_batch_size, num_microbatches,
                                                                       dp_rank, dp_size)
        self.layout, self.seed, self.vocab_size, self.device = layout, seed, vocab_size, device

    @property
    def global_batch_size(self) -> int:
        return self.mbs * self.num_microbatches * self.dp_size

    def micro_batch(self, consumed: int, m: int) -> dict:
        """Micro-batch ``m`` of the step that starts at sample ``consumed``: the model's inputs."""
        start = consumed + (m * self.dp_size + self.dp_rank) * self.mbs
        indices = [i % len(self.dataset) for i in range(start, start + self.mbs)]
        rows = [self.dataset[i] for i in indices]
        tokens = torch.stack([r["tokens"] for r in rows])
        labels = torch.stack([r["labels"] for r in rows])
        batch: Batch = build_batch(tokens, labels, self.fmt, self.objective, seed=self.seed,
                                   sample_ids=torch.tensor(indices), vocab_size=self.vocab_size)
        out = {
            "input_ids": self.layout.rows(batch.input_ids, batch.modality),
            "position_ids": batch.position_ids,
            "attention_mask": batch.attention_mask,
            "labels": batch.labels,
            "loss_mask": batch.loss_mask,
            "label_modality": batch.label_modality,
        }
        if self.device.type == "cuda":  # a non-blocking copy needs pinned host memory
            out = {k: v.pin_memory() for k, v in out.items()}
        return {k: v.to(self.device, non_blocking=True) for k, v in out.items()}

    def step(self, consumed: int) -> list[dict]:
        """All micro-batches of the step that starts at sample ``consumed``."""
        return [self.micro_batch(consumed, m) for m in range(self.num_microbatches)]


def train_samples_for(epochs: float, prefixes: Sequence[str], split: str, seq_length: int,
                      packing: str = "whole", seed: int = 1234) -> int:
    """Samples for ``epochs`` passes over the training split."""
    per_epoch = samples_per_epoch(prefixes, split, seq_length, packing, seed)
    if per_epoch == 0:
        raise DataError(f"the training split of {', '.join(prefixes)} holds less than one {seq_length}-token row")
    return max(1, math.ceil(epochs * per_epoch))
