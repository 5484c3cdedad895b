"""An exact set of fixed-width hash keys in flat arrays: the only state of a corpus run that grows.

Extraction's dedup keys are hashes already (file MD5: 16 bytes, record id: 8 bytes of SHA-256), so the
low 64 bits serve as the slot index directly.  :class:`KeySet` stores them in an open-addressing table
(linear probing, load between 0.35 and 0.7) of ``array('Q')`` words: 8-byte keys take about 13-26 bytes
each, 16-byte keys about 25-50 bytes each, against ~100 bytes for a Python ``set`` of hex strings.
"""

from __future__ import annotations

from array import array

_M64 = (1 << 64) - 1
_MAX_LOAD = 0.7


class KeySet:
    """A set of ``width * 8``-bit integers (``width`` 1 or 2 words); :meth:`add` says whether it was new."""

    def __init__(self, width: int = 1, capacity: int = 1 << 12) -> None:
        if width not in (1, 2):
            raise ValueError("width must be 1 or 2 (64 or 128-bit keys)")
        self.width = width
        size = 1 << max(4, (max(capacity, 1) - 1).bit_length())
        self._alloc(size)
        self.count = 0

    def _alloc(self, size: int) -> None:
        self.mask = size - 1
        self.used = bytearray(size)
        self.lo = array("Q", bytes(8 * size))
        self.hi = array("Q", bytes(8 * size)) if self.width == 2 else None
        self.limit = int(size * _MAX_LOAD)

    def __len__(self) -> int:
        return self.count

    def nbytes(self) -> int:
        """Bytes held by the table."""
        return len(self.used) * (1 + 8 * self.width)

    def add(self, key: int) -> bool:
        """Insert ``key``; True when it was not there yet."""
        lo = key & _M64
        hi = key >> 64
        used, los, his, mask = self.used, self.lo, self.hi, self.mask
        i = lo & mask
        while used[i]:
            if los[i] == lo and (his is None or his[i] == hi):
                return False
            i = (i + 1) & mask
        used[i] = 1
        los[i] = lo
        if his is not None:
            his[i] = hi
        self.count += 1
        if self.count > self.limit:
            self._grow()
        return True

    def __contains__(self, key: int) -> bool:
        lo = key & _M64
        hi = key >> 64
        i = lo & self.mask
        while self.used[i]:
            if self.lo[i] == lo and (self.hi is None or self.hi[i] == hi):
                return True
            i = (i + 1) & self.mask
        return False

    def _grow(self) -> None:
        used, los, his = self.used, self.lo, self.hi
        self._alloc(2 * len(used))
        self.count = 0
        for i in range(len(used)):
            if used[i]:
                self.add(los[i] | (his[i] << 64 if his is not None else 0))


def hex_key(digest: str) -> int:
    """A hex digest as a key integer."""
    return int(digest, 16)
