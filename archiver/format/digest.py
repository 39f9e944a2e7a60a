"""The content hash of a data file: a digest of its rows, the same however they were
split into batches or row groups, so a file can be checked against the stream or
against another copy of itself."""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# The rows a content hash covers, in digest order. `time` and `headers` are derived
# from `time_ns` and `raw_headers`, so hashing them would add nothing.
_FIXED_COLUMNS = (("seq", pa.uint64()), ("time_ns", pa.int64()))
_VARIABLE_COLUMNS = ("subject", "raw_headers", "data")


class ContentHash:
    """Incremental hash of a data file's rows, the same however they are split.

    Per column: fixed-width columns (seq, time_ns) feed their little-endian values to
    one sha256; variable-width ones (subject, raw_headers, data) feed their lengths as
    int64 LE (-1 for null) to one sha256 and the concatenated values to another. The
    digest is the sha256 of the column digests in a fixed order. Only whole columns are
    fed, through Arrow buffers, never a Python loop over rows.
    """

    def __init__(self) -> None:
        self._fixed = {name: hashlib.sha256() for name, _ in _FIXED_COLUMNS}
        self._lengths = {name: hashlib.sha256() for name in _VARIABLE_COLUMNS}
        self._values = {name: hashlib.sha256() for name in _VARIABLE_COLUMNS}

    def update(self, table: Any) -> None:
        """Add the rows of ``table`` (SCHEMA columns; chunked, sliced, read back: all fine)."""
        for name, arrow_type in _FIXED_COLUMNS:
            for chunk in _chunks(table.column(name)):
                self._fixed[name].update(_fixed_width_bytes(chunk.cast(arrow_type), name))
        for name in _VARIABLE_COLUMNS:
            for chunk in _chunks(table.column(name)):
                binary = _as_binary(chunk)
                lengths = pc.binary_length(binary).fill_null(-1).cast(pa.int64())
                self._lengths[name].update(_fixed_width_bytes(lengths, name))
                self._values[name].update(_value_bytes(binary))

    def hexdigest(self) -> str:
        """The hash so far, hex; more rows may still be added."""
        outer = hashlib.sha256()
        for name, _ in _FIXED_COLUMNS:
            outer.update(self._fixed[name].digest())
        for name in _VARIABLE_COLUMNS:
            outer.update(self._lengths[name].digest())
            outer.update(self._values[name].digest())
        return outer.hexdigest()


def content_hash(tables: Iterable[Any]) -> str:
    """The ContentHash hex digest of the rows of ``tables``, in order."""
    hasher = ContentHash()
    for table in tables:
        hasher.update(table)
    return hasher.hexdigest()


def _chunks(column: Any) -> Iterator[Any]:
    """The non-empty arrays of a column (a ChunkedArray or a plain Array)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return (chunk for chunk in chunks if len(chunk))


def _fixed_width_bytes(chunk: Any, name: str) -> memoryview:
    """The values of a non-null 8-byte-wide array as little-endian bytes, slice-aware."""
    if chunk.null_count:
        raise ValueError(f"column {name} has nulls, which the schema forbids")
    width = 8
    start = chunk.offset * width
    view = memoryview(chunk.buffers()[1])[start : start + len(chunk) * width]
    if sys.byteorder == "little":
        return view
    # Arrow buffers are native-endian; the hash is defined on little-endian values.
    swapped = array("q", view.tobytes())
    swapped.byteswap()
    return memoryview(swapped).cast("B")


def _as_binary(chunk: Any) -> Any:
    """A string/binary-like array as binary or large_binary, without copying if possible."""
    kind = chunk.type
    if pa.types.is_dictionary(kind):
        chunk = chunk.dictionary_decode()
        kind = chunk.type
    if pa.types.is_string(kind):
        return chunk.view(pa.binary())
    if pa.types.is_large_string(kind):
        return chunk.view(pa.large_binary())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return chunk
    return chunk.cast(pa.large_binary())


def _value_bytes(binary: Any) -> memoryview:
    """The concatenated bytes of the non-null values of a binary array, slice-aware."""
    if binary.null_count:
        # Arrow lets a null slot span bytes; dropping nulls compacts them away.
        binary = binary.drop_null()
        if not len(binary):
            return memoryview(b"")
    offsets, values = binary.buffers()[1:3]
    offset_format = "=q" if pa.types.is_large_binary(binary.type) else "=i"
    width = struct.calcsize(offset_format)
    (start,) = struct.unpack_from(offset_format, offsets, binary.offset * width)
    (end,) = struct.unpack_from(offset_format, offsets, (binary.offset + len(binary)) * width)
    if values is None or start == end:
        return memoryview(b"")
    return memoryview(values)[start:end]
