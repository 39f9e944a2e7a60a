"""One archive file: the Arrow schema, batches to Parquet and back, row group by row group.

A segment is a zstd Parquet file of consecutive messages of one stream. It is written
in bounded row groups so memory stays flat however long the segment, carries its own
description in ``archiver.*`` key-value metadata, and a content hash that depends only
on the rows, not on how they were split into batches or row groups, so a file can be
checked against the stream or against another copy of itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver import SCHEMA_VERSION, __version__
from archiver.errors import DataAtRisk
from archiver.records import Batch, parse_header_block
from archiver.timefmt import format_ns

__all__ = [
    "META_PREFIX",
    "SCHEMA",
    "ContentHash",
    "SegmentCorrupt",
    "SegmentSummary",
    "SegmentWriter",
    "batch_to_table",
    "check_schema",
    "content_hash",
    "iter_row_groups",
    "read_meta",
]

META_PREFIX = "archiver."

HEADERS_TYPE = pa.map_(pa.string(), pa.list_(pa.string()))

SCHEMA = pa.schema(
    [
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        # Microseconds, not nanoseconds: every engine reads timestamp[us]; time_ns below
        # keeps the server's exact value.
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("headers", HEADERS_TYPE, nullable=True),
        pa.field("raw_headers", pa.binary(), nullable=True),
        pa.field("data", pa.binary(), nullable=False),
        # Appended last so positional readers of the documented columns are unaffected.
        pa.field("time_ns", pa.int64(), nullable=False),
    ]
)
"""The columns of every segment, in file order."""

# Statistics only where readers prune by range; stats on data/raw_headers/headers would
# copy up to two payload prefixes per row group into the footer for nothing.
_STATS_COLUMNS = ["seq", "subject", "time", "time_ns"]

# The rows a content hash covers, in digest order. `time` and `headers` are derived
# from `time_ns` and `raw_headers`, so hashing them would add nothing.
_FIXED_COLUMNS = (("seq", pa.uint64()), ("time_ns", pa.int64()))
_VARIABLE_COLUMNS = ("subject", "raw_headers", "data")

_HASH_CHUNK = 1 << 20
_DEFAULT_ROW_GROUP_BYTES = 64 << 20


class SegmentCorrupt(DataAtRisk):
    """A segment file is damaged, truncated, or not Parquet at all."""


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a closed segment holds, for naming, committing and progress."""

    path: Path
    rows: int
    first_seq: int
    last_seq: int
    first_time_ns: int
    last_time_ns: int
    content_hash: str
    """Hex digest of the rows (see ContentHash), independent of row group layout."""
    file_sha256: str
    """Hex sha256 of the file's bytes, for the store."""
    file_bytes: int
    raw_bytes: int
    """Payload plus raw header bytes written, before compression."""


# ---------------------------------------------------------------------------- batches


def batch_to_table(batch: Batch) -> Any:
    """A batch as a ``pa.Table`` with SCHEMA.

    Columns are built straight from the batch's lists; only rows that have a header
    block cost Python work (parsing it for the ``headers`` map).
    """
    raw_headers = pa.array(batch.raw_headers, pa.binary())
    times_ns = pa.array(batch.times_ns, pa.int64())
    arrays = {
        "seq": pa.array(batch.seqs, pa.uint64()),
        "subject": pa.array(batch.subjects, pa.string()),
        "time": _micros(times_ns),
        "headers": _headers_map(batch.raw_headers, raw_headers),
        "raw_headers": raw_headers,
        "data": pa.array(batch.datas, pa.binary()),
        "time_ns": times_ns,
    }
    for field in SCHEMA:
        if not field.nullable and arrays[field.name].null_count:
            raise ValueError(f"column {field.name} has nulls, which the schema forbids")
    return pa.Table.from_arrays([arrays[name] for name in SCHEMA.names], schema=SCHEMA)


def _micros(times_ns: Any) -> Any:
    """Integer nanoseconds -> timestamp[us, UTC], rounding down like ``ns // 1000``."""
    # floor_temporal floors (pc.divide would truncate toward zero before 1970); it runs
    # on a zone-less timestamp because with a zone it converts through local time, ~10x
    # slower. Tagging the zone afterwards is metadata only.
    as_ns = times_ns.cast(pa.timestamp("ns"))
    floored = pc.floor_temporal(as_ns, unit="microsecond")
    return floored.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def _headers_map(raws: list[bytes | None], raw_array: Any) -> Any:
    """The ``headers`` column: parse only the rows with a block, then scatter them."""
    n = len(raws)
    if raw_array.null_count == n:
        return pa.nulls(n, HEADERS_TYPE)
    # A block can still parse to None (a bare status line): the map is null there.
    parsed = pa.array([parse_header_block(raw) for raw in raws if raw is not None], HEADERS_TYPE)
    # Row i takes parsed[k] where k counts the blocks before it, or null if it has none.
    has_block = raw_array.is_valid()
    position = pc.subtract(pc.cumulative_sum(has_block.cast(pa.int64())), 1)
    index = pc.if_else(has_block, position, pa.scalar(None, pa.int64()))
    return parsed.take(index)


# ----------------------------------------------------------------------- content hash


class ContentHash:
    """Incremental hash of a segment's rows, the same however they are split.

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


# ---------------------------------------------------------------------------- writing


class SegmentWriter:
    """Writes one segment file from batches, in bounded row groups.

    Rows are buffered until a full row group (``row_group_rows`` rows, or
    ``row_group_bytes`` of payload and headers, whichever comes first) so that small
    batches do not make small row groups; the buffer is at most one row group.

    Use ``close()`` to finish the file, or ``abort()`` to remove it; after an error
    from ``write()`` only ``abort()`` is safe. As a context
    manager, leaving the block without ``close()`` (normally or by an exception)
    aborts: a file is never finished implicitly.
    """

    def __init__(
        self,
        path: Path,
        *,
        stream: str,
        generation: str,
        stream_config: str,
        compression_level: int,
        row_group_rows: int,
        row_group_bytes: int = _DEFAULT_ROW_GROUP_BYTES,
    ) -> None:
        if row_group_rows < 1 or row_group_bytes < 1:
            raise ValueError("row_group_rows and row_group_bytes must be positive")
        self._path = path
        self._stream = stream
        self._generation = generation
        self._stream_config = stream_config
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._writer: Any = pq.ParquetWriter(
            str(path),
            SCHEMA,
            compression="zstd",
            compression_level=compression_level,
            use_dictionary=["subject"],
            write_statistics=_STATS_COLUMNS,
            # A CRC per page lets a reader detect a flipped bit on its own, before
            # comparing content hashes; it costs a few percent of write time.
            write_page_checksum=True,
        )
        self._closed = False
        self._hash = ContentHash()
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._rows = 0
        self._raw_bytes = 0
        self._first_seq: int | None = None
        self._last_seq: int | None = None
        self._first_time_ns: int | None = None
        self._last_time_ns: int | None = None
        self._max_message_bytes = 0

    # -- state

    @property
    def path(self) -> Path:
        """The local file being written."""
        return self._path

    @property
    def rows(self) -> int:
        """Rows accepted so far (written or buffered for the current row group)."""
        return self._rows

    @property
    def first_seq(self) -> int | None:
        """Sequence of the first row, None before any row."""
        return self._first_seq

    @property
    def last_seq(self) -> int | None:
        """Sequence of the last row, None before any row."""
        return self._last_seq

    @property
    def first_time_ns(self) -> int | None:
        """Server time of the first row in nanoseconds, None before any row."""
        return self._first_time_ns

    @property
    def last_time_ns(self) -> int | None:
        """Server time of the last row in nanoseconds, None before any row."""
        return self._last_time_ns

    @property
    def raw_bytes(self) -> int:
        """Payload plus raw header bytes accepted so far, before compression."""
        return self._raw_bytes

    @property
    def file_bytes(self) -> int:
        """Current size of the file on disk (excludes the row group being buffered)."""
        return self._path.stat().st_size

    # -- writing

    def write(self, batch: Batch) -> None:
        """Add a batch; full row groups go to disk now, the rest waits for more rows.

        Sequences must increase strictly across the whole segment, since its name and
        metadata claim the range first_seq..last_seq.
        """
        self._check_open()
        if not len(batch):
            return
        table = batch_to_table(batch)
        self._check_order(batch, table)
        self._hash.update(table)
        size = _binary_size(table.column("data")) + _binary_size(table.column("raw_headers"))
        self._account(batch, size)
        self._max_message_bytes = max(self._max_message_bytes, _largest_message(table))
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += size
        if self._pending_rows >= self._row_group_rows:
            self._flush(whole_groups_only=True)
        elif self._pending_bytes >= self._row_group_bytes:
            self._flush(whole_groups_only=False)

    def close(self, extra: dict[str, str] | None = None) -> SegmentSummary:
        """Finish the file: flush, write metadata, fsync, hash its bytes.

        ``extra`` adds key-value metadata; its keys must start with ``archiver.`` and
        must not replace the writer's own. Raises ValueError for an empty segment (the
        file is removed).
        """
        self._check_open()
        if not self._rows:
            self.abort()
            raise ValueError(f"refusing to write an empty segment: {self._path}")
        metadata = self._metadata(extra or {})
        try:
            self._flush(whole_groups_only=False)
            self._writer.add_key_value_metadata(metadata)
            self._closed = True
            self._writer.close()
            file_sha256, file_bytes = _fsync_and_sha256(self._path)
        except BaseException:
            # Disk full or the like: a half-written file must not look finished.
            self._closed = False
            self.abort()
            raise
        assert self._first_seq is not None and self._last_seq is not None
        assert self._first_time_ns is not None and self._last_time_ns is not None
        return SegmentSummary(
            path=self._path,
            rows=self._rows,
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            first_time_ns=self._first_time_ns,
            last_time_ns=self._last_time_ns,
            content_hash=self._hash.hexdigest(),
            file_sha256=file_sha256,
            file_bytes=file_bytes,
            raw_bytes=self._raw_bytes,
        )

    def abort(self) -> None:
        """Close without finishing and remove the file; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._pending.clear()
            # The file is being thrown away: failing to finish it is no news (and may be
            # why we are aborting), so only a failure to remove it is reported.
            with suppress(Exception):
                self._writer.close()
            self._path.unlink(missing_ok=True)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"segment writer for {self._path} is closed")

    def _check_order(self, batch: Batch, table: Any) -> None:
        if self._last_seq is not None and batch.seqs[0] <= self._last_seq:
            raise ValueError(
                f"sequence {batch.seqs[0]} does not follow {self._last_seq} in {self._path}"
            )
        seqs = table.column("seq")
        if len(seqs) > 1 and not pc.all(pc.greater(seqs[1:], seqs[:-1])).as_py():
            raise ValueError(f"sequences of a batch for {self._path} are not increasing")

    def _account(self, batch: Batch, size: int) -> None:
        if self._first_seq is None:
            self._first_seq = batch.seqs[0]
            self._first_time_ns = batch.times_ns[0]
        self._last_seq = batch.seqs[-1]
        self._last_time_ns = batch.times_ns[-1]
        self._rows += len(batch)
        self._raw_bytes += size

    def _flush(self, *, whole_groups_only: bool) -> None:
        """Write buffered rows as row groups of at most row_group_rows.

        With ``whole_groups_only`` a short tail stays buffered for the next batch.
        """
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending)
        size = self._row_group_rows
        count = (table.num_rows // size) * size if whole_groups_only else table.num_rows
        if count:
            self._writer.write_table(table.slice(0, count), row_group_size=size)
        rest = table.slice(count)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._pending_bytes = (
            _binary_size(rest.column("data")) + _binary_size(rest.column("raw_headers"))
            if rest.num_rows
            else 0
        )

    def _metadata(self, extra: dict[str, str]) -> dict[str, str]:
        assert self._first_time_ns is not None and self._last_time_ns is not None
        own = {
            "stream": self._stream,
            "generation": self._generation,
            "first_seq": str(self._first_seq),
            "last_seq": str(self._last_seq),
            "rows": str(self._rows),
            "first_time": format_ns(self._first_time_ns),
            "last_time": format_ns(self._last_time_ns),
            "first_time_ns": str(self._first_time_ns),
            "last_time_ns": str(self._last_time_ns),
            "schema_version": SCHEMA_VERSION,
            "archiver_version": __version__,
            "stream_config": self._stream_config,
            "content_hash": self._hash.hexdigest(),
            # Replay checks the target's size limits from footers alone.
            "max_message_bytes": str(self._max_message_bytes),
        }
        metadata = {META_PREFIX + key: value for key, value in own.items()}
        for key, value in extra.items():
            if not key.startswith(META_PREFIX):
                raise ValueError(f"extra metadata key {key!r} must start with {META_PREFIX!r}")
            if key in metadata:
                raise ValueError(f"extra metadata key {key!r} would replace the writer's own")
            metadata[key] = value
        return metadata


def _largest_message(table: Any) -> int:
    """The largest header block plus payload of the rows, in bytes."""
    data = pc.binary_length(table.column("data"))
    headers = pc.fill_null(pc.binary_length(table.column("raw_headers")), 0)
    largest = pc.max(pc.add(data, headers)).as_py()
    return int(largest or 0)


def _binary_size(column: Any) -> int:
    """Total bytes of the values of a binary column (nulls count 0)."""
    total = pc.sum(pc.binary_length(column)).as_py()
    return int(total or 0)


def _fsync_and_sha256(path: Path) -> tuple[str, int]:
    """Force the file to disk, then hash its bytes in chunks; returns (hex, size)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ---------------------------------------------------------------------------- reading


@contextmanager
def _corrupt_on_error(path: Path) -> Iterator[None]:
    """Turn pyarrow's complaints about a file into SegmentCorrupt naming it.

    A missing file is not a damaged one: FileNotFoundError passes through.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SegmentCorrupt(f"segment {path} is damaged or not Parquet: {exc}") from exc


def read_meta(path: Path) -> dict[str, str]:
    """The ``archiver.*`` key-value metadata of a segment, prefix stripped."""
    with _corrupt_on_error(path):
        raw = pq.read_metadata(str(path)).metadata or {}
        return {
            key.decode()[len(META_PREFIX) :]: value.decode()
            for key, value in raw.items()
            if key.startswith(META_PREFIX.encode())
        }


def iter_row_groups(path: Path, columns: list[str] | None = None) -> Iterator[Any]:
    """The segment's rows as one ``pa.Table`` per row group, so memory stays bounded.

    Page checksums are verified. Raises ValueError for a column the file lacks
    (pyarrow would silently return nothing for it).
    """
    with _corrupt_on_error(path):
        parquet = pq.ParquetFile(str(path), page_checksum_verification=True)
    try:
        unknown = sorted(set(columns or ()) - set(parquet.schema_arrow.names))
        if unknown:
            raise ValueError(f"segment {path} has no column(s) {', '.join(unknown)}")
        for index in range(parquet.num_row_groups):
            with _corrupt_on_error(path):
                group = parquet.read_row_group(index, columns=columns)
            yield group
    finally:
        parquet.close()


def check_schema(schema: Any) -> list[str]:
    """Problems of ``schema`` against SCHEMA; an empty list when compatible.

    Extra columns are fine (the contract allows adding some). A dictionary-encoded
    column counts as its value type, and a nullable column where SCHEMA forbids nulls
    is only a problem that way round.
    """
    problems: list[str] = []
    for expected in SCHEMA:
        index = schema.get_field_index(expected.name)
        if index < 0:
            problems.append(f"missing column {expected.name}")
            continue
        actual = schema.field(index)
        actual_type = actual.type
        if pa.types.is_dictionary(actual_type):
            actual_type = actual_type.value_type
        if not actual_type.equals(expected.type):
            problems.append(f"column {expected.name} is {actual_type}, expected {expected.type}")
        if actual.nullable and not expected.nullable:
            problems.append(f"column {expected.name} allows nulls, expected not null")
    return problems
