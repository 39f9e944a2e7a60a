"""``verify --against-nats``: the archive and the server, message for message.

For the part of each stream the server still holds, both sides are read in sequence
order and merged: archive row groups on one side, the read-only reader of ``run`` on
the other. Memory holds one row group and one batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from archiver.archive.generation import effective_generation
from archiver.config import Settings
from archiver.errors import UsageError, stream_failure
from archiver.format import catalog
from archiver.format.batch import Batch
from archiver.nats.api import stream_info
from archiver.nats.conn import RawClient, connect
from archiver.nats.reader import reader_for
from archiver.proof.findings import StreamReport, VerifyReport
from archiver.replay.selection import Selection, iter_rows, iter_selected
from archiver.store import Store, open_store

log = logging.getLogger(__name__)

COLUMNS = ["seq", "subject", "time_ns", "raw_headers", "data"]
Row = tuple[int, str, int, bytes | None, bytes]


class _Ranges:
    """Collapses consecutive sequences with the same verdict into one finding."""

    def __init__(self, report: StreamReport) -> None:
        self.report = report
        self.open: tuple[int, int, str, str] | None = None

    def add(self, seq: int, kind: str, detail: str) -> None:
        o = self.open
        if o and o[2] == kind and o[3] == detail and o[1] == seq - 1:
            self.open = (o[0], seq, kind, detail)
            return
        self.close()
        self.open = (seq, seq, kind, detail)

    def close(self) -> None:
        if self.open:
            a, b, kind, detail = self.open
            self.report.add(kind, a, b, None, detail)
            self.open = None


def _archive_rows(store: Store, files: list[Any], sel: Selection) -> Iterator[Row]:
    return iter_rows(iter_selected(store, files, sel, COLUMNS), COLUMNS)


def _differences(a: Row, b: Row) -> str:
    names = ("subject", "time", "header block", "payload")
    return ", ".join(n for n, x, y in zip(names, a[1:], b[1:], strict=True) if x != y)


async def _server_rows(nc: RawClient, info: Any, start: int, end: int) -> Any:
    reader = reader_for(nc, info, start, end)
    async for batch in reader.batches():
        b: Batch = batch
        for i in range(len(b)):
            yield (b.seqs[i], b.subjects[i], b.times_ns[i], b.raw_headers[i], b.data[i])


async def compare_report(nc: RawClient, store: Store, report: StreamReport) -> None:
    try:
        info = await stream_info(nc, report.stream)
    except UsageError:
        return  # the stream is gone from the server: nothing to compare with
    current = await effective_generation(nc, store, info)
    if current.name != report.generation or not report.last_seq:
        return
    start, end = max(info.first_seq, 1), min(info.last_seq, report.last_seq)
    if start > end:
        return
    # Files verify found damaged are reported already; reading them here would abort.
    damaged = {f.key for f in report.findings if f.kind in ("damaged", "mismatch")}
    files = [
        f
        for f in catalog.data_files(store, report.stream)
        if f.name.generation == report.generation and f.key not in damaged
    ]
    sel = Selection(report.stream, report.generation, from_seq=start, to_seq=end)
    archive = _archive_rows(store, files, sel)
    ranges = _Ranges(report)

    def next_archived() -> Row | None:
        return next(archive, None)

    mine = await asyncio.to_thread(next_archived)
    async for theirs in _server_rows(nc, info, start, end):
        while mine is not None and mine[0] < theirs[0]:
            ranges.add(mine[0], "deleted-since", "archived, no longer on the server")
            mine = await asyncio.to_thread(next_archived)
        if mine is None or mine[0] > theirs[0]:
            ranges.add(theirs[0], "missing", "on the server, not in the archive")
            continue
        detail = _differences(mine, theirs)
        if detail:
            ranges.add(mine[0], "differs", f"{detail} differ(s) from the server")
        mine = await asyncio.to_thread(next_archived)
    while mine is not None:
        ranges.add(mine[0], "deleted-since", "archived, no longer on the server")
        mine = await asyncio.to_thread(next_archived)
    ranges.close()


async def compare_with_nats(settings: Settings, verified: VerifyReport) -> None:
    """Add the differences to each report (of the stream's current generation)."""
    store = open_store(settings.store_url, settings.s3)
    nc = await connect(settings.nats)
    try:
        for report in verified.streams:
            if report.error:
                continue
            try:
                await compare_report(nc, store, report)
            except Exception as exc:
                report.error, report.error_exit = stream_failure(exc, report.stream, log)
    finally:
        await nc.close()
