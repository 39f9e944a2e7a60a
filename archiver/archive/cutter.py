"""Turns a stream of batches into committed files: cut by UTC day and size, then commit.

Runs in a worker thread (Parquet encoding and uploads must not stall the event loop,
or the server would cut the reader off as a slow consumer). Commits happen strictly in
sequence order, each preceded by the gap record of the holes before it, so a crash at
any point leaves the archive a clean prefix of the stream. Each link (gap record or
data file) is written, then claimed with its commit marker (``archiver.format.fence``);
the record of losses inside a file is written between the two, so no committed file
can be without it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from archiver import failpoints
from archiver.config import FileLimits
from archiver.errors import AlreadyExists, DataFileCorrupt, StoreError
from archiver.format import layout
from archiver.format.batch import Batch
from archiver.format.catalog import DataFile
from archiver.format.fence import Fence
from archiver.format.gaps import Gap, GapKind, encode_record
from archiver.format.reader import read_footer
from archiver.format.writer import DataFileSummary, DataFileWriter

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(slots=True)
class CutterTotals:
    files: int = 0
    messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


def day_of(time_ns: int) -> date:
    return datetime.fromtimestamp(time_ns // NS_PER_DAY * 86_400, UTC).date()


class Cutter:
    """Writes one stream generation's messages into day- and size-bounded files."""

    def __init__(
        self,
        fence: Fence,
        stream_config: str,
        limits: FileLimits,
        spool_dir: Path | None,
        before_commit: Callable[[], None],
    ) -> None:
        self._stopping = False
        self.fence = fence
        self.store = fence.store
        self.stream = fence.stream
        self.generation = fence.generation
        self.stream_config = stream_config
        self.limits = limits
        self.spool_dir = spool_dir
        self.before_commit = before_commit
        self.totals = CutterTotals()
        self._writer: DataFileWriter | None = None
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
            rest = times[start:]
            if min(rest) // NS_PER_DAY == day and max(rest) // NS_PER_DAY == day:
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
            try:
                writer.write(part)
            except OSError as exc:
                raise _spool_error(self.spool_dir, exc) from exc
            failpoints.hit("after-write")
            start += len(part)
            if writer.rows >= self.limits.max_rows or writer.file_bytes >= self.limits.max_bytes:
                self._commit()

    def _open(self, day: int) -> DataFileWriter:
        spool = Path(self.spool_dir or tempfile.gettempdir())
        try:
            self._writer = self._new_writer(spool)
        except OSError as exc:
            raise _spool_error(spool, exc) from exc
        self._day = day
        return self._writer

    def _new_writer(self, spool: Path) -> DataFileWriter:
        return DataFileWriter(
            spool / f"{self.stream}-{uuid.uuid4().hex}.parquet.part",
            stream=self.stream,
            generation=self.generation,
            stream_config=self.stream_config,
            compression_level=self.limits.compression_level,
            row_group_rows=self.limits.row_group_rows,
        )

    def _commit(self) -> None:
        writer, self._writer, day = self._writer, None, self._day
        self._day = None
        if writer is None or day is None:
            return
        inside = self._take_holes(below=writer.last_seq or 0)
        before = [g for g in inside if g.last_seq < (writer.first_seq or 0)]
        inside = inside[len(before) :]
        try:
            # Holes inside the file's range travel in its footer, committed with it.
            summary = writer.close({"archiver.gaps": gaps_json(inside)} if inside else None)
        except OSError as exc:
            writer.abort()
            raise _spool_error(self.spool_dir, exc) from exc
        except BaseException:
            writer.abort()
            raise
        try:
            self._record(before)
            key = layout.data_key(
                self.stream,
                day_of(day * NS_PER_DAY),
                self.generation,
                summary.first_seq,
                summary.last_seq,
            )
            self._check()
            failpoints.hit("before-commit")
            upload_started = time.monotonic()
            self.fence.prepare()
            losses = self._upload(key, summary, [g for g in inside if g.kind is GapKind.EXPIRED])
            if losses:
                # Before the marker: a committed file always has its loss record, so
                # status and metrics see the loss without opening files.
                self._put(
                    *encode_record(
                        self.stream, self.generation, losses, (summary.first_seq, summary.last_seq)
                    )
                )
            failpoints.hit("before-marker")
            self.fence.claim(key, summary.first_seq, summary.last_seq)
            failpoints.hit("after-commit")
            log.info(
                "%s: committed %s (%d messages)",
                self.stream,
                key,
                summary.rows,
                extra={
                    "stream": self.stream,
                    "key": key,
                    "first_seq": summary.first_seq,
                    "last_seq": summary.last_seq,
                    "messages": summary.rows,
                    "bytes": summary.file_bytes,
                    "seconds": round(time.monotonic() - upload_started, 3),
                },
            )
        finally:
            summary.path.unlink(missing_ok=True)
        self._count(summary)

    def _upload(self, key: str, summary: DataFileSummary, losses: list[Gap]) -> list[Gap]:
        """Upload the file; the losses inside the stored object (ours, or those of an
        uncommitted copy of the same range left by an earlier run, which we commit)."""
        try:
            self.store.put_file(key, summary.path, summary.file_sha256)
            return losses
        except AlreadyExists:
            log.warning(
                "%s: an uncommitted copy of %s exists already (left by an earlier run); "
                "committing it",
                self.stream,
                key,
                extra={"stream": self.stream, "key": key},
            )
        name = layout.parse_data_key(key)
        assert name is not None
        # Its footer is read by byte range from the end, so the stored size is needed.
        size = next((o.size for o in self.store.list(key) if o.key == key), None)
        if size is None:
            raise StoreError(f"{key} exists (the upload was refused) but is not listed")
        meta = read_footer(self.store, DataFile(key, name, size))
        try:
            found = [Gap(a, b, GapKind(k)) for a, b, k in json.loads(meta.get("gaps") or "[]")]
        except (ValueError, TypeError) as exc:
            raise DataFileCorrupt(
                f"{key}: an earlier run's uncommitted copy has unreadable gaps in its footer",
                hint="delete that object (no commit marker names it) and run again",
            ) from exc
        return [g for g in found if g.kind is GapKind.EXPIRED]

    def _put(self, key: str, body: bytes) -> None:
        """Write a record; an earlier run's record of the same range stands for ours
        (the seqs it names are gone either way)."""
        try:
            self.store.put_bytes(key, body)
        except AlreadyExists:
            log.info("%s: record %s exists already", self.stream, key)

    def _count(self, summary: DataFileSummary) -> None:
        t = self.totals
        t.files += 1
        t.messages += summary.rows
        t.bytes_in += summary.raw_bytes
        t.bytes_out += summary.file_bytes

    def _take_holes(self, below: int) -> list[Gap]:
        """Remove and return the pending holes that end below ``below`` (a prefix)."""
        n = 0
        while n < len(self._holes) and self._holes[n].last_seq < below:
            n += 1
        taken, self._holes = self._holes[:n], self._holes[n:]
        return taken

    def _record(self, gaps: list[Gap]) -> None:
        """Commit a gap record for ``gaps`` (nothing when empty) as a link."""
        if not gaps:
            return
        key, body = encode_record(self.stream, self.generation, gaps)
        self._check()
        self.fence.prepare()
        self._put(key, body)
        self.fence.claim(key, gaps[0].first_seq, gaps[-1].last_seq)

    def finish(self) -> None:
        """Commit the open file, then the trailing holes after it."""
        self._commit()
        self._record(self._holes)
        self._holes = []

    def stop(self) -> None:
        """Make the next commit raise instead (thread-safe): the run is being stopped."""
        self._stopping = True

    def _check(self) -> None:
        if self._stopping:
            raise StopRequested("the run was stopped before this commit")
        self.before_commit()

    def abort(self) -> None:
        """Drop the open file uncommitted (the next run re-reads it)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


class StopRequested(Exception):
    """Raised in the cutter's thread when the run is stopped (never reaches a user: the
    cancellation that caused it does)."""


def gaps_json(gaps: list[Gap]) -> str:
    return json.dumps([[g.first_seq, g.last_seq, str(g.kind)] for g in gaps])


def _spool_error(spool: Path | None, exc: OSError) -> StoreError:
    where = spool or tempfile.gettempdir()
    return StoreError(
        f"cannot write the file being archived in {where}: {exc.strerror or exc}",
        hint="check --spool-dir (it must exist, be writable and have room for one file)",
    )
