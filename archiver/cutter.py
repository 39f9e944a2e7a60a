"""Turns a stream of batches into committed files: cut by UTC day and size, then commit.

Runs in a worker thread (Parquet encoding and uploads must not stall the event loop,
or the server would cut the reader off as a slow consumer). Commits happen strictly in
sequence order, each preceded by the gap record of the holes before it, so a crash at
any point leaves the archive a clean prefix of the stream.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from archiver import failpoints, layout
from archiver.gaps import Gap, encode_record
from archiver.records import Batch
from archiver.segment import SegmentSummary, SegmentWriter
from archiver.store.base import Store

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class FileLimits:
    compression_level: int = 3
    row_group_rows: int = 100_000
    max_rows: int = 5_000_000
    max_bytes: int = 256 << 20


@dataclass(slots=True)
class CutterTotals:
    files: int = 0
    messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    keys: list[str] = field(default_factory=list)


def day_of(time_ns: int) -> date:
    return datetime.fromtimestamp(time_ns // NS_PER_DAY * 86_400, UTC).date()


class Cutter:
    """Writes one stream generation's messages into day- and size-bounded files."""

    def __init__(
        self,
        store: Store,
        stream: str,
        generation: str,
        stream_config: str,
        limits: FileLimits,
        spool_dir: Path | None,
        before_commit: Callable[[], None],
    ) -> None:
        self.store = store
        self.stream = stream
        self.generation = generation
        self.stream_config = stream_config
        self.limits = limits
        self.spool_dir = spool_dir
        self.before_commit = before_commit
        self.totals = CutterTotals()
        self._writer: SegmentWriter | None = None
        self._day: int | None = None
        self._holes: list[Gap] = []

    def add_gaps(self, gaps: list[Gap]) -> None:
        """Holes found before the next rows; recorded before the file that follows them."""
        self._holes.extend(gaps)

    def add(self, batch: Batch) -> None:
        """Write rows, committing a file whenever the day changes or a limit is reached."""
        times = batch.times_ns
        start = 0
        while start < len(batch):
            day = times[start] // NS_PER_DAY
            stop = start + 1
            # Fast path: the whole rest is one day when its ends are (times are nearly
            # monotonic); otherwise find where the day changes.
            if times[-1] // NS_PER_DAY == day and min(times[start:]) // NS_PER_DAY == day:
                stop = len(batch)
            else:
                while stop < len(batch) and times[stop] // NS_PER_DAY == day:
                    stop += 1
            if self._day is not None and self._day != day:
                self._commit()
            self._write(
                batch.slice(start, stop) if (start, stop) != (0, len(batch)) else batch, day
            )
            start = stop

    def _write(self, rows: Batch, day: int) -> None:
        start = 0
        while start < len(rows):
            writer = self._writer or self._open(day)
            room = self.limits.max_rows - writer.rows
            part = rows if start == 0 and room >= len(rows) else rows.slice(start, start + room)
            writer.write(part)
            failpoints.hit("after-write")
            start += len(part)
            if writer.rows >= self.limits.max_rows or writer.file_bytes >= self.limits.max_bytes:
                self._commit()

    def _open(self, day: int) -> SegmentWriter:
        spool = Path(self.spool_dir or tempfile.gettempdir())
        self._writer = SegmentWriter(
            spool / f"{self.stream}-{uuid.uuid4().hex}.parquet.part",
            stream=self.stream,
            generation=self.generation,
            stream_config=self.stream_config,
            compression_level=self.limits.compression_level,
            row_group_rows=self.limits.row_group_rows,
        )
        self._day = day
        return self._writer

    def _commit(self) -> None:
        writer, self._writer, day = self._writer, None, self._day
        self._day = None
        if writer is None or day is None:
            return
        try:
            summary = writer.close()
        except BaseException:
            writer.abort()
            raise
        try:
            self._record_holes(before=summary.first_seq)
            key = layout.data_key(
                self.stream,
                day_of(day * NS_PER_DAY),
                self.generation,
                summary.first_seq,
                summary.last_seq,
            )
            self.before_commit()
            failpoints.hit("before-commit")
            self.store.put_file(key, summary.path, summary.file_sha256)
            failpoints.hit("after-commit")
            log.info("%s: committed %s (%d messages)", self.stream, key, summary.rows)
        finally:
            summary.path.unlink(missing_ok=True)
        self._count(key, summary)

    def _count(self, key: str, summary: SegmentSummary) -> None:
        t = self.totals
        t.files += 1
        t.messages += summary.rows
        t.bytes_in += summary.raw_bytes
        t.bytes_out += summary.file_bytes
        t.keys.append(key)

    def _record_holes(self, before: int | None) -> None:
        """Commit a gap record for the pending holes below ``before`` (all when None)."""
        ready = [g for g in self._holes if before is None or g.last_seq < before]
        if not ready:
            return
        key, body = encode_record(self.stream, self.generation, ready)
        self.before_commit()
        self.store.put_bytes(key, body)
        self._holes = [g for g in self._holes if g not in ready]

    def finish(self) -> None:
        """Commit the open file, then the trailing holes after it."""
        self._commit()
        self._record_holes(before=None)

    def abort(self) -> None:
        """Drop the open file uncommitted (the next run re-reads it)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
