"""Writes one data file: a zstd Parquet file of consecutive messages of one stream.

It is written in bounded row groups so memory stays flat however long the file, and
carries its own description in ``archiver.*`` key-value metadata and a content hash."""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver import SCHEMA_VERSION, __version__
from archiver.format.batch import Batch
from archiver.format.digest import ContentHash
from archiver.format.schema import (
    DICTIONARY_COLUMNS,
    META_PREFIX,
    SCHEMA,
    STATS_COLUMNS,
    batch_to_table,
)
from archiver.timefmt import format_ns

_HASH_CHUNK = 1 << 20
_DEFAULT_ROW_GROUP_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class DataFileSummary:
    """What a closed data file holds, for naming, committing and progress."""

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


class DataFileWriter:
    """Writes one data file from batches, in bounded row groups.

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
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=STATS_COLUMNS,
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

        Sequences must increase strictly across the whole data file, since its name and
        metadata claim the range first_seq..last_seq.
        """
        self._check_open()
        if not len(batch):
            return
        table = batch_to_table(batch, self._generation)
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

    def close(self, extra: dict[str, str] | None = None) -> DataFileSummary:
        """Finish the file: flush, write metadata, fsync, hash its bytes.

        ``extra`` adds key-value metadata; its keys must start with ``archiver.`` and
        must not replace the writer's own. Raises ValueError for an empty data file (the
        file is removed).
        """
        self._check_open()
        if not self._rows:
            self.abort()
            raise ValueError(f"refusing to write an empty data file: {self._path}")
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
        return DataFileSummary(
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

    def __enter__(self) -> DataFileWriter:
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
            raise ValueError(f"data file writer for {self._path} is closed")

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
