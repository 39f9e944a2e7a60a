"""A read-only, seekable file over a stored object, fetched by byte range.

pyarrow reads a Parquet footer from the end and then only the row groups and columns
it is asked for; over this adapter that becomes a few ranged GETs instead of a whole
download, so ``ls`` and footer checks stay cheap on years of files.
"""

from __future__ import annotations

import io

from archiver.store.base import Store

TAIL_BYTES = 256 << 10
"""Fetched on the first read near the end: the footer of a file almost always fits."""


class RangeFile(io.RawIOBase):
    def __init__(self, store: Store, key: str, size: int) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.size = size
        self._pos = 0
        self._tail_start = max(0, size - TAIL_BYTES)
        self._cache = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            return 0
        data = self._read(self._pos, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _read(self, start: int, length: int) -> bytes:
        if start >= self._tail_start:
            if not self._cache:
                self._cache = self.store.get_range(
                    self.key, self._tail_start, self.size - self._tail_start
                )
            offset = start - self._tail_start
            return self._cache[offset : offset + length]
        return self.store.get_range(self.key, start, length)
