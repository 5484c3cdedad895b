"""The pipe protocol between the harness and its workers: length-prefixed JSON messages, and polling."""

from __future__ import annotations

import json
import os
import select
import struct
from typing import Any


def send(fd: int, obj: Any) -> None:
    """Write ``obj`` as one message (4-byte big-endian length, then UTF-8 JSON)."""
    data = json.dumps(obj).encode("utf-8")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(fd: int) -> Any:
    """The next message, or ``None`` at end of file."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` becomes readable within ``timeout`` seconds (poll: any descriptor number, where
    select() fails above 1023 -- a long-lived harness process can hold that many files)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(timeout, 0.0) * 1000.0))
