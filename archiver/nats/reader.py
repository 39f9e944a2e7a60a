"""Reads one stream, read-only, from a start sequence up to a fixed end sequence.

Two readers with one shape (``async for batch in reader.batches()``):

- ``ConsumerReader`` (consumer.py) for limits streams: an ephemeral AckNone pull
  consumer, checked for lost deliveries.
- ``MsgGetReader`` for WorkQueue and Interest streams, where any consumer would take
  or pin messages: one stream get per sequence, pipelined.

Both yield messages in sequence order and never beyond ``end_seq``. Sequences they do
not yield (deleted, expired) are the caller's to notice and explain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from archiver.format.batch import Batch
from archiver.nats.api import StreamInfo, get_message
from archiver.nats.conn import RawClient
from archiver.nats.consumer import ConsumerReader, ConsumerUnusable

log = logging.getLogger(__name__)


class Reader(Protocol):
    def batches(self) -> AsyncIterator[Batch]: ...


class MsgGetReader:
    """Reads WorkQueue and Interest streams one stored message at a time, no consumer."""

    def __init__(
        self,
        nc: RawClient,
        stream: str,
        start_seq: int,
        end_seq: int,
        *,
        batch_rows: int = 10_000,
        batch_bytes: int = 16 << 20,
        window: int = 64,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.start_seq = start_seq
        self.end_seq = end_seq
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.window = window

    async def batches(self) -> AsyncIterator[Batch]:
        batch = Batch()
        seq = self.start_seq
        while seq <= self.end_seq:
            stop = min(seq + self.window, self.end_seq + 1)
            found = await asyncio.gather(
                *(get_message(self.nc, self.stream, s) for s in range(seq, stop))
            )
            for m in found:
                if m is not None:
                    batch.append(m.seq, m.subject, m.time_ns, m.raw_headers, m.data)
            seq = stop
            if len(batch) >= self.batch_rows or batch.nbytes >= self.batch_bytes:
                yield batch
                batch = Batch()
        if len(batch):
            yield batch


class FallbackReader:
    """A consumer, unless the server cannot serve the stream through one: then stream
    gets from where the consumer stopped (slower, but every server answers them)."""

    def __init__(self, nc: RawClient, info: StreamInfo, start_seq: int, end_seq: int) -> None:
        self.nc, self.info, self.end_seq = nc, info, end_seq
        self.consumer = ConsumerReader(nc, info.name, start_seq, end_seq)

    async def batches(self) -> AsyncIterator[Batch]:
        try:
            async for batch in self.consumer.batches():
                yield batch
            return
        except ConsumerUnusable as exc:
            start = max(self.consumer.cursor, self.info.first_seq)
            log.warning(
                "%s; reading it with stream gets from seq %d instead",
                exc,
                start,
                extra={"stream": self.info.name},
            )
        async for batch in MsgGetReader(self.nc, self.info.name, start, self.end_seq).batches():
            yield batch


def reader_for(nc: RawClient, info: StreamInfo, start_seq: int, end_seq: int) -> Reader:
    """The right reader for the stream's retention policy."""
    if info.needs_consumerless_read:
        return MsgGetReader(nc, info.name, max(start_seq, info.first_seq), end_seq)
    return FallbackReader(nc, info, start_seq, end_seq)
