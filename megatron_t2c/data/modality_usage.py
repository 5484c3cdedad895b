"""How often each token id is used as docstring and as code in an indexed dataset (input of ``auto`` separation)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from megatron_t2c.mrpt.separation import count_modality_usage

__all__ = ["count_dataset_usage"]


def count_dataset_usage(prefix: str, fmt: str, vocab_size: int, chunk_documents: int = 4096
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(doc_counts, code_counts)`` of :func:`~megatron_t2c.mrpt.separation.count_modality_usage` over
    every document of the megatron-core indexed dataset ``PREFIX.{bin,idx}``."""
    from megatron_t2c.data.preprocess.outputs import import_indexed_dataset

    dataset = import_indexed_dataset().IndexedDataset(str(prefix))

    def documents() -> Iterable[np.ndarray]:
        for start in range(0, len(dataset), chunk_documents):
            yield from dataset[start:start + chunk_documents]

    return count_modality_usage(documents(), fmt, vocab_size)
