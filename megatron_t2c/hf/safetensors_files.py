"""Reading and writing ``.safetensors`` files one tensor at a time (the peak memory of a conversion); reading
PyTorch ``pytorch_model.bin`` weights too (:func:`open_hf_weights`)."""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
from typing import Iterable, Optional, Union

import torch

from megatron_t2c.hf.architecture import ConversionError

SAFETENSORS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: ``save_pretrained``'s default in transformers 5.
DEFAULT_MAX_SHARD_SIZE = "50GB"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
_ST_NAMES = {name: dtype for dtype, name in _ST_DTYPES.items()}


def write_safetensors(path: str, header_tensors: Iterable[tuple[str, torch.Tensor]],
                      tensors: Iterable[tuple[str, torch.Tensor]], metadata: Optional[dict] = None) -> int:
    """Write a ``.safetensors`` file streaming: the header from ``header_tensors`` (meta tensors are fine),
    then each tensor of ``tensors`` (same names, shapes and order) as it comes; returns the data size.

    Only one tensor is held at a time (``safetensors.torch.save_file`` needs them all, plus a bytes copy).
    """
    header, specs, offset = {}, [], 0
    for name, t in header_tensors:
        if t.dtype not in _ST_DTYPES:
            raise ConversionError(f"{name}: dtype {t.dtype} cannot be written to safetensors")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        specs.append((name, tuple(t.shape), t.dtype))
        offset += size
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    partial = path + ".partial"
    written = 0
    tensors = iter(tensors)
    with open(partial, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        # exactly len(specs) tensors are taken from ``tensors`` (the next shard's follow)
        for (name, t), (want_name, shape, dtype) in zip(itertools.islice(tensors, len(specs)), specs, strict=True):
            if name != want_name or tuple(t.shape) != shape or t.dtype != dtype:
                raise RuntimeError(f"tensor {name} {tuple(t.shape)} {t.dtype} does not match the header's "
                                   f"{want_name} {shape} {dtype}")
            data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            fh.write(memoryview(data))
            written += data.nbytes
            del t, data
    os.replace(partial, path)
    return written


def parse_size(size: Union[int, str]) -> int:
    """Bytes of a size as ``save_pretrained``'s ``max_shard_size`` takes it: an int, or ``"5GB"`` (10^9),
    ``"500MiB"`` (2^20), ``"10KB"`` ..."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
    if not m or m.group(2) not in _UNITS:
        raise ConversionError(f"cannot read the size {size!r} (e.g. 5GB, 500MB, 2GiB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def shard_plan(header_tensors: list[tuple[str, torch.Tensor]], max_shard_size: Union[int, str]) -> list[list]:
    """The tensors split into shards as ``save_pretrained`` does: in order, a new shard when the next tensor
    would take the current one over ``max_shard_size`` (a tensor bigger than that gets a shard of its own)."""
    limit = parse_size(max_shard_size)
    shards: list[list] = [[]]
    size = 0
    for name, t in header_tensors:
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += n
    return shards


def write_model_weights(directory: str, header_tensors: list[tuple[str, torch.Tensor]],
                        tensors: Iterable[tuple[str, torch.Tensor]], max_shard_size: Union[int, str] =
                        DEFAULT_MAX_SHARD_SIZE, metadata: Optional[dict] = None) -> tuple[int, list[str]]:
    """``model.safetensors``, or -- above ``max_shard_size`` -- ``model-0000k-of-0000n.safetensors`` shards and
    ``model.safetensors.index.json`` (Hugging Face's layout), streamed one tensor at a time.  The index is
    written last (atomically), so an interrupted export has shards but no index.  Returns the data size and
    the files written."""
    shards = shard_plan(header_tensors, max_shard_size)
    tensors = iter(tensors)
    if len(shards) == 1:
        return write_safetensors(os.path.join(directory, SAFETENSORS_FILE), shards[0], tensors, metadata), \
            [SAFETENSORS_FILE]
    total, files, weight_map = 0, [], {}
    for k, shard in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(os.path.join(directory, name), shard, tensors, metadata)
        weight_map.update({tensor_name: name for tensor_name, _ in shard})
        files.append(name)
    from megatron_t2c.utils.atomic import write_json

    write_json(os.path.join(directory, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total, files + [INDEX_FILE]


class SafetensorsReader:
    """The tensors of a Hugging Face directory's safetensors file(s), read one at a time with plain reads.

    Not memory-mapped (as ``safetensors.safe_open`` is): pages of a mapping count towards the process's
    resident memory for as long as it is open, i.e. the whole file by the end of a conversion.
    """

    def __init__(self, directory: str):
        index = os.path.join(directory, INDEX_FILE)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        elif os.path.isfile(os.path.join(directory, SAFETENSORS_FILE)):
            files = [SAFETENSORS_FILE]
        else:
            raise ConversionError(f"missing file: {directory} holds no {SAFETENSORS_FILE} (nor an index, nor "
                                  f"{TORCH_FILE}); save the model with save_pretrained()")
        self._where: dict[str, tuple[str, int, dict]] = {}
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            header.pop("__metadata__", None)
            self._where.update({key: (path, 8 + size, entry) for key, entry in header.items()})

    def _name(self, key: str) -> str:
        """``key``, or its form without the ``transformer.`` prefix (the hub's original GPT-2 files)."""
        if key not in self._where and key.startswith("transformer.") and key[12:] in self._where:
            return key[12:]
        return key

    def __contains__(self, key):
        return self._name(key) in self._where

    def keys(self):
        return self._where.keys()

    def get(self, key: str) -> torch.Tensor:
        key = self._name(key)
        if key not in self._where:
            raise ConversionError(f"missing tensor {key} in the Hugging Face weights")
        path, base, entry = self._where[key]
        dtype = _ST_NAMES.get(entry["dtype"])
        if dtype is None:
            raise ConversionError(f"{key}: unsupported safetensors dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=dtype)
        buffer = tensor.reshape(-1).view(torch.uint8).numpy()
        if buffer.nbytes != end - start:
            raise ConversionError(f"{key}: {end - start} bytes stored for shape {entry['shape']} {entry['dtype']}")
        with open(path, "rb") as fh:
            fh.seek(base + start)
            if fh.readinto(memoryview(buffer)) != buffer.nbytes:
                raise ConversionError(f"{path} is truncated ({key})")
        return tensor


TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX_FILE = "pytorch_model.bin.index.json"


class TorchWeightsReader(SafetensorsReader):
    """The tensors of a directory's PyTorch weights (``pytorch_model.bin``, or shards with an index), loaded
    with ``torch.load(weights_only=True, mmap=True)``: tensors only, no pickled code runs, pages read on use."""

    def __init__(self, directory: str):
        index = os.path.join(directory, TORCH_INDEX_FILE)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        else:
            files = [TORCH_FILE]
        self._where = {}
        for name in files:
            path = os.path.join(directory, name)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - a damaged or non-tensor file
                raise ConversionError(f"{path}: not PyTorch weights torch.load reads safely: {exc}") from exc
            self._where.update(state)

    def get(self, key: str) -> torch.Tensor:
        key = self._name(key)
        if key not in self._where:
            raise ConversionError(f"missing tensor {key} in the Hugging Face weights")
        return self._where[key].clone()


def open_hf_weights(directory: str) -> SafetensorsReader:
    """A reader of a Hugging Face directory's weights: safetensors when present, else PyTorch's."""
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(directory, name))

    if not (has(INDEX_FILE) or has(SAFETENSORS_FILE)) and (has(TORCH_FILE) or has(TORCH_INDEX_FILE)):
        return TorchWeightsReader(directory)
    return SafetensorsReader(directory)
