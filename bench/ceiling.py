"""The bare-protocol ceilings the benchmarks report against: what Python itself gets
from the NATS protocol on this machine, with none of the archiver's work.

- ``protocol_drain``: an AckNone pull consumer read on its own socket, two pulls in
  flight, frames found with ``bytes.find`` in one receive buffer; per message it keeps
  what the archiver must keep (subject, stream seq and stored time from the reply
  subject, header block, payload) and drops them a batch at a time.
- ``protocol_publish``: ``fill.PipelinedPublisher`` (HPUB frames on its own socket,
  every PubAck checked, refusals resent) republishing the archived rows with a header
  block like replay's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pyarrow.parquet as pq
from common import MB, STREAM, rate
from fill import Message, PipelinedPublisher
from nats.js.api import AckPolicy, ConsumerConfig

PULL_BATCH = 5_000
KEEP_BATCH = 20_000
"""Messages kept before they are dropped, as the archiver's batches."""
_INBOX = b"_CEILING.pull"


class _Drain(asyncio.Protocol):
    def __init__(self, count: int, consumer: str) -> None:
        self.count = count
        self.pull = (
            b"PUB $JS.API.CONSUMER.MSG.NEXT.%s.%s %s %d\r\n%s\r\n"
            % (STREAM.encode(), consumer.encode(), _INBOX, *_pull_body())
        )
        self.buf = bytearray()
        self.received = 0
        self.nbytes = 0
        self.requested = 0
        self.kept: list[tuple[bytes, int, int, bytes | None, bytes]] = []
        self.done = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
            b"SUB " + _INBOX + b" 1\r\n"
        )
        self._ask()
        self._ask()  # two pulls in flight: the server never waits for the next one

    def _ask(self) -> None:
        if self.requested < self.count and self.transport is not None:
            self.transport.write(self.pull)
            self.requested += PULL_BATCH

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            if buf[pos] == 0x48 or buf[pos] == 0x4D:  # HMSG / MSG
                parts = bytes(buf[pos:end]).split(b" ")
                size = int(parts[-1])
                if len(buf) < end + 4 + size:
                    break
                body = bytes(buf[end + 2 : end + 2 + size])
                pos = end + 4 + size
                self._message(parts, body)
            else:
                if buf[pos : pos + 4] == b"PING" and self.transport is not None:
                    self.transport.write(b"PONG\r\n")
                pos = end + 2
        del buf[:pos]

    def _message(self, parts: list[bytes], body: bytes) -> None:
        hmsg = parts[0] == b"HMSG"
        reply = parts[3] if len(parts) == (6 if hmsg else 5) else b""
        if not reply:  # a pull's status (408 expired, 404 no messages): nothing kept
            return
        header_len = int(parts[-2]) if hmsg else 0
        tokens = reply.split(b".")  # $JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>
        self.kept.append(
            (
                parts[1],
                int(tokens[-4]),
                int(tokens[-2]),
                body[:header_len] if header_len else None,
                body[header_len:],
            )
        )
        self.received += 1
        self.nbytes += len(body) - header_len
        if len(self.kept) >= KEEP_BATCH:
            self.kept = []
        if self.received % PULL_BATCH == 0:
            self._ask()
        if self.received >= self.count:
            self.done.set()


def _pull_body() -> tuple[int, bytes]:
    body = b'{"batch":%d,"expires":30000000000}' % PULL_BATCH
    return len(body), body


async def protocol_drain(url: str, port: int, count: int, expected_bytes: int) -> dict[str, Any]:
    """The read ceiling: the whole stream through a bare-protocol AckNone pull consumer."""
    nc = await nats.connect(url)
    consumer = f"ceiling{time.monotonic_ns()}"
    try:
        config = ConsumerConfig(
            name=consumer, ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=60.0
        )
        await nc.jetstream().add_consumer(STREAM, config)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        transport, proto = await loop.create_connection(
            lambda: _Drain(count, consumer), "127.0.0.1", port
        )
        try:
            await asyncio.wait_for(proto.done.wait(), 600)
        finally:
            transport.close()
        seconds = time.perf_counter() - started
        await nc.jetstream().delete_consumer(STREAM, consumer)
    finally:
        await nc.close()
    if (proto.received, proto.nbytes) != (count, expected_bytes):
        raise RuntimeError(f"ceiling drain got {proto.received} / {proto.nbytes} bytes")
    return {
        "seconds": round(seconds, 3),
        "msgs_per_s": round(rate(count, seconds)),
        "mb_per_s": round(rate(proto.nbytes / MB, seconds), 1),
        "pull_batch": PULL_BATCH,
        "pulls_in_flight": 2,
    }


def _archived(files: list[Path], prefix: str) -> Iterator[Message]:
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["seq", "subject", "raw_headers", "data"])
            for seq, subject, raw, data in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            ):
                lines = b"Nats-Msg-Id: ceiling:%d\r\nArchive-Seq: %d\r\n" % (seq, seq)
                if raw:
                    lines += raw[len(b"NATS/1.0\r\n") : -2]
                yield Message(f"{prefix}.{subject}", b"NATS/1.0\r\n" + lines + b"\r\n", data)


async def protocol_publish(
    port: int, files: list[Path], count: int, prefix: str, window: int
) -> dict[str, Any]:
    """The publish ceiling: the archived rows republished on a bare-protocol pipeline,
    every PubAck checked (into a stream capturing ``prefix.>``, made by the caller)."""
    rows = _archived(files, prefix)
    stats = await PipelinedPublisher("127.0.0.1", port, window=window).run(
        count, lambda _index: next(rows)
    )
    return {
        "seconds": round(stats.seconds, 3),
        "msgs_per_s": round(rate(count, stats.seconds)),
        "mb_per_s": round(rate(stats.payload_bytes / MB, stats.seconds), 1),
        "window": window,
        "resent": stats.resent,
    }
