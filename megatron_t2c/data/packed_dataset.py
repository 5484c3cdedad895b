"""``PackedDocumentDataset``: a megatron-core dataset whose rows are whole documents plus padding (paper B.3).

It is a ``MegatronDataset`` like ``GPTDataset`` and goes through the same ``BlendedMegatronDatasetBuilder``
(blends, weights, ``--split``): the builder hands it the split's document ids and a sample count; it builds
its index (:func:`~megatron_t2c.data.packing.build_packing_index`: epochs of shuffled, next-fit packed
whole documents until the count is reached) once on rank 0, saves it in the cache directory under a name
hashed from everything that decides it (dataset, split, count, seed, sequence length), and every other rank
loads it, exactly as ``GPTDataset`` does with its own index files.  Indexing by the global sample number is
therefore deterministic, and a resumed run reads the same rows.  ``__getitem__`` returns ``tokens`` and
``labels`` (``row[:-1]``, ``row[1:]``, ``<pad>`` after the last document), like ``GPTDataset``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_t2c.data.packing import build_packing_index
from megatron_t2c.mrpt.special_tokens import PAD_ID

__all__ = ["PackedDocumentDataset"]

log = logging.getLogger(__name__)


class PackedDocumentDataset(GPTDataset):
    """Rows of whole documents (see the module docstring); the low-level dataset and split are GPTDataset's."""

    def __init__(self, indexed_dataset: IndexedDataset, dataset_path: Optional[str],
                 indexed_indices: np.ndarray, num_samples: Optional[int], index_split: Split,
                 config: GPTDatasetConfig) -> None:
        # MegatronDataset's bookkeeping (unique description and hash); GPTDataset's own index is not built.
        super(GPTDataset, self).__init__(indexed_dataset, dataset_path, indexed_indices, num_samples,
                                         index_split, config)
        self.document_index, self.row_index, self.stats = self._build_or_load_index()

    def __len__(self) -> int:
        return len(self.row_index) - 1

    def __getitem__(self, idx: Optional[int]) -> Dict[str, torch.Tensor]:
        capacity = self.config.sequence_length + 1
        row = np.full(capacity, PAD_ID, dtype=np.int64)
        at = 0
        for doc in self.document_index[self.row_index[idx]:self.row_index[idx + 1]]:
            ids = self.dataset.get(int(doc))
            row[at:at + len(ids)] = ids
            at += len(ids)
        row_t = torch.from_numpy(row)
        return {"tokens": row_t[:-1], "labels": row_t[1:]}

    def documents_of(self, idx: int) -> np.ndarray:
        """The document ids packed into row ``idx``, in order."""
        return np.asarray(self.document_index[self.row_index[idx]:self.row_index[idx + 1]])

    # -- the index ----------------------------------------------------------------------------------
    def _paths(self) -> Optional[dict]:
        cache = self.config.path_to_cache
        if not cache:
            return None
        base = os.path.join(cache, f"{self.unique_description_hash}-{type(self).__name__}-{self.index_split.name}")
        return {name: f"{base}-{name}" for name in ("description.txt", "document_index.npy", "row_index.npy",
                                                    "stats.json")}

    def _build_or_load_index(self) -> tuple[np.ndarray, np.ndarray, dict]:
        paths = self._paths()
        hit = paths is not None and all(os.path.isfile(p) for p in paths.values())
        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        if not hit and (paths is None or rank0):
            start = time.perf_counter()
            document_index, row_index, packing = build_packing_index(
                self.dataset.sequence_lengths, self.indices, self.config.sequence_length, self.config.random_seed,
                self.num_samples)
            stats = packing.as_dict()
            log.info("%s %s: packed index of %d rows built in %.2f s", self.dataset_path, self.index_split.name,
                     len(row_index) - 1, time.perf_counter() - start)
            if paths is not None:
                _save(paths, self.unique_description, document_index, row_index, stats)
            return document_index, row_index, stats
        with open(paths["stats.json"], encoding="utf-8") as fh:
            stats = json.load(fh)
        return (np.load(paths["document_index.npy"], mmap_mode="r"), np.load(paths["row_index.npy"], mmap_mode="r"),
                stats)


def _save(paths: dict, description: str, document_index: np.ndarray, row_index: np.ndarray, stats: dict) -> None:
    """Each file through a temporary name, the description last (its presence marks a complete set)."""
    os.makedirs(os.path.dirname(paths["description.txt"]), exist_ok=True)

    def put(path: str, write) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)

    put(paths["document_index.npy"], lambda fh: np.save(fh, document_index, allow_pickle=False))
    put(paths["row_index.npy"], lambda fh: np.save(fh, row_index, allow_pickle=False))
    put(paths["stats.json"], lambda fh: fh.write(json.dumps(stats, indent=1).encode()))
    put(paths["description.txt"], lambda fh: fh.write(description.encode()))
