"""Reading an offline Weights & Biases run file (``run-*.wandb``) back: its history rows, for the logging tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768  # the file is a LevelDB-style log: 32 KiB blocks of records with 7-byte headers
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def history(path: str | Path) -> list[dict]:
    """The rows that ``wandb.log`` wrote, in order, values decoded from their JSON."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, rows = 7, b"", []  # after the file header: ':W&B', a 2-byte magic, a version byte
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows
