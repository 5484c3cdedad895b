"""The outputs of a run: megatron-core's indexed-dataset builder and files renamed into place only on success.

Outputs go to temporary files beside the targets and are renamed into place only when everything
succeeded (``.idx`` last), so an error, ``Ctrl-C`` or ``SIGTERM`` leaves pre-existing outputs untouched and
no partial or temporary files behind.  Nothing is held in memory but the dataset index (12 bytes per
document in typed arrays).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import warnings
from array import array
from typing import Callable, TypeVar

import numpy as np

from megatron_t2c.data.preprocess.config import PreprocessConfig

T = TypeVar("T")


def add_documents(builder, tokens: np.ndarray, lengths: np.ndarray) -> None:
    """Append several documents to an ``IndexedDatasetBuilder`` with one write.

    ``add_document`` stores its ``lengths`` as the sequences of a single document; each record is its own
    document here (megatron-core's GPT preprocessing writes one sequence per document too), so the
    document boundaries it appended are replaced by one per sequence.
    """
    if not len(lengths):
        return
    builder.add_document(tokens, lengths.tolist())
    end = len(builder.sequence_lengths)
    builder.document_indices[-1:] = array("q", range(end - len(lengths) + 1, end + 1))


def new_builder(indexed_dataset, bin_path: str, dtype):
    """megatron-core's ``IndexedDatasetBuilder``, its index kept in typed arrays (12 bytes per document
    instead of ~70 in lists of Python ints); the files it writes are the same."""
    builder = indexed_dataset.IndexedDatasetBuilder(bin_path, dtype=dtype)
    builder.sequence_lengths = array("i")
    builder.document_indices = array("q", [0])
    return builder


def import_indexed_dataset():
    """megatron-core's ``indexed_dataset`` module (imported on first use: it takes seconds)."""
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": irrelevant here
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex", category=UserWarning)
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


class StagedOutputs:
    """Temporary files beside the targets, renamed into place by :meth:`commit`, else removed."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.temps: list[str] = []
        for target in targets:
            directory, name = os.path.split(os.path.abspath(target))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            os.close(fd)
            self.temps.append(tmp)

    def commit(self) -> None:
        """Rename every temporary file onto its target, in order (so the ``.idx`` goes last).

        Ctrl-C and SIGTERM wait until all are renamed, so that ``.bin`` and ``.idx`` always match.
        """
        main = threading.current_thread() is threading.main_thread()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
        try:
            for tmp, target in zip(self.temps, self.targets):
                os.replace(tmp, target)
            self.temps = []
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def discard(self) -> None:
        for tmp in self.temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.temps = []


def write_staged(targets: list[str], write: Callable[[StagedOutputs], T]) -> T:
    """``write(outputs)`` fills the temporary files of :class:`StagedOutputs` for ``targets``; they replace the
    targets only when it returns (and are removed either way)."""
    outputs = StagedOutputs(targets)
    try:
        result = write(outputs)
        outputs.commit()
    finally:
        outputs.discard()
    return result


def token_dtype(vocab_size: int) -> type:
    """The token dtype of the ``.bin``: uint16 while the vocabulary fits (megatron-core's own rule)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def import_checked(vocab_size: int, dtype):
    """:func:`import_indexed_dataset`, checking that megatron-core picks ``dtype`` for this vocabulary too."""
    indexed_dataset = import_indexed_dataset()
    if indexed_dataset.DType.optimal_dtype(vocab_size) != dtype:
        raise RuntimeError("megatron-core chooses another token dtype than token_dtype()")
    return indexed_dataset


def targets(config: PreprocessConfig) -> list[str]:
    """The files a run writes, in renaming order: ``.bin``, the index map, ``.idx`` last."""
    out = [config.output_prefix + ".bin"] + [p for p in (config.index_map,) if p]
    out.append(config.output_prefix + ".idx")
    return out
