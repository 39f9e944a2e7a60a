"""Publishing a replay: in sequence order, paced, with a bounded window of unacknowledged
messages, checkpointed as it goes, with an optional seq map from the acks."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.nats.conn import RawClient
from archiver.nats.publisher import JsPublisher
from archiver.replay.checkpoint import (
    CHECKPOINT_EVERY_MESSAGES,
    CHECKPOINT_EVERY_S,
    Checkpoint,
)
from archiver.replay.headers import (
    is_delete_marker,
    message_id,
    replay_headers,
)
from archiver.replay.plan import Plan
from archiver.replay.request import ReplayOptions, ReplaySummary
from archiver.replay.selection import iter_rows, iter_selected
from archiver.store import Store

log = logging.getLogger(__name__)

SEQ_MAP_SCHEMA = pa.schema(
    [
        pa.field("archive_seq", pa.uint64(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("duplicate", pa.bool_(), nullable=False),
    ]
)


class SeqMapWriter:
    """``--seq-map``: archive seq -> target stream and seq, from the acks, in order."""

    def __init__(self, path: Path) -> None:
        self.writer = pq.ParquetWriter(str(path), SEQ_MAP_SCHEMA, compression="zstd")
        self.rows: list[tuple[int, str, int, bool]] = []

    def add(self, archive_seq: int, stream: str, seq: int, duplicate: bool) -> None:
        self.rows.append((archive_seq, stream, seq, duplicate))
        if len(self.rows) >= 50_000:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            self.writer.write_table(pa.table([pa.array(c) for c in cols], schema=SEQ_MAP_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


class Pacer:
    """At most ``rate`` messages per second, smoothly."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


async def publish_all(
    store: Store,
    opts: ReplayOptions,
    plan: Plan,
    nc: RawClient,
    checkpoint: Checkpoint,
    skip_through: int | None,
    skip: set[int],
    summary: ReplaySummary,
) -> None:
    sel = opts.selection
    seq_map = SeqMapWriter(opts.seq_map) if opts.seq_map else None

    def on_acked(archive_seq: int, stream: str, seq: int, duplicate: bool) -> None:
        if seq_map:
            seq_map.add(archive_seq, stream, seq, duplicate)

    publisher: JsPublisher[int] = JsPublisher(
        nc, window=opts.window, ack_timeout=opts.ack_timeout, on_acked=on_acked
    )
    await publisher.start()
    pacer = Pacer(opts.rate)
    bar = _progress(plan.messages, opts.progress)
    last_save, since_save = time.monotonic(), 0
    try:
        columns = ["seq", "subject", "time_ns", "raw_headers", "data"]
        rows = iter_rows(iter_selected(store, plan.files, sel, columns), columns)
        drops_markers, paced = not opts.keeps_markers, opts.rate is not None
        for seq, subject, time_ns, raw, data in rows:
            if drops_markers and raw and is_delete_marker(raw):
                summary.skipped += 1
                continue
            if (skip_through is not None and seq <= skip_through) or seq in skip:
                summary.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            headers = replay_headers(
                raw,
                msg_id=message_id(sel.stream, plan.generation, seq),
                stream=sel.stream,
                seq=seq,
                time_ns=time_ns,
            )
            if paced:  # not even a coroutine per message when unpaced
                await pacer.wait()
            await publisher.publish(opts.mapper.map(subject), headers, data, seq)
            summary.bytes += len(data)
            if bar is not None:
                bar.update(1)
            since_save += 1
            if (
                since_save >= CHECKPOINT_EVERY_MESSAGES
                or time.monotonic() - last_save > CHECKPOINT_EVERY_S
            ):
                await checkpoint.save(publisher.acked_prefix_key)
                last_save, since_save = time.monotonic(), 0
        await publisher.drain()
        await checkpoint.save(publisher.acked_prefix_key)
    except asyncio.CancelledError:
        # Stopped (SIGTERM, SIGINT): keep what was acknowledged, for --resume.
        await checkpoint.save(publisher.acked_prefix_key)
        raise
    finally:
        summary.published = publisher.published
        summary.duplicates = publisher.duplicates
        if bar is not None:
            bar.close()
        if seq_map:
            seq_map.close()
        await publisher.close()


def _progress(total: int, wanted: bool) -> Any:
    if not (wanted and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, file=sys.stderr, desc="replay")
