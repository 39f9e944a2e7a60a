"""Fill a JetStream stream fast, with every message acked: payloads and a pipelined publisher.

nats-py's ``js.publish_async`` manages ~35-40k msg/s on these machines; this publisher
speaks the NATS protocol on its own socket and keeps thousands of acked publishes in
flight, which is several times faster. Every publish carries a reply subject naming its
index, so each JetStream ack (or error) is matched to its message: errors are resent,
a missing ack stalls the window and fails the fill. Never publish without acks: under
load the server drops what its ingest queue cannot hold.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SUBJECT_AREAS = ("orders", "payments", "users", "carts", "shipments")
SUBJECTS = tuple(f"bench.{area}.{k}" for area in SUBJECT_AREAS for k in range(10))
"""~50 subjects under ``bench.>``, so the subject column's dictionary has real work."""

HEADER_EVERY = 10
"""About one message in this many carries a small header block."""

_VOCAB = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "payment",
    "refund",
    "shipment",
    "invoice",
    "customer",
    "warehouse",
    "parcel",
    "delayed",
    "confirmed",
    "pending",
    "cancelled",
    "express",
    "standard",
    "priority",
    "return",
    "exchange",
    "voucher",
    "discount",
    "loyalty",
)
_EVENTS = (
    "order.created",
    "order.paid",
    "order.shipped",
    "order.cancelled",
    "payment.authorized",
    "payment.captured",
    "refund.issued",
    "cart.updated",
    "user.login",
    "user.logout",
)
_COUNTRIES = ("DE", "FR", "NL", "US", "GB", "ES", "IT", "PL", "SE", "JP", "BR", "IN")
_CURRENCIES = ("EUR", "USD", "GBP", "JPY", "BRL", "INR", "PLN", "SEK")
_ACK_PREFIX = b"_BENCHFILL."


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    header: bytes | None
    payload: bytes


def payload_maker(size: int, seed: int = 1) -> Callable[[int], Message]:
    """A function ``i -> Message`` of JSON event records of about ``size`` bytes (±10%).

    Every record has a random id, amounts, user, SKU and a free-text note, so zstd gets
    honest work (about 4:1, like real JSON events) instead of compressing repeats. The
    notes come from a pool of 65,536 random texts: far more than a Parquet page holds,
    so pool repeats cannot flatter the ratio, and ~3x cheaper than fresh text per message.
    """
    rnd = random.Random(seed)
    getrandbits = rnd.getrandbits
    notes = [" ".join(rnd.choices(_VOCAB, k=max(4, size // 4))) for _ in range(1 << 16)]
    combos = [
        f'"type":"{e}","country":"{c}","currency":"{u}"'
        for e in _EVENTS
        for c in _COUNTRIES
        for u in _CURRENCIES
    ]
    jitter = max(1, size // 5)
    base_ms = 1_778_000_000_000

    def make(i: int) -> Message:
        r = getrandbits(96)  # one draw, sliced into every random field below
        head = (
            f'{{"id":"{getrandbits(64):016x}","seq":{i},{combos[r % len(combos)]},'
            f'"ts":{base_ms + i * 7 + (r >> 90)},"user":{(r >> 20) & 0xFFFFF},'
            f'"amount":{(r >> 40) % 50000 / 100},"qty":{(r >> 10) % 9 + 1},'
            f'"sku":"SKU-{(r >> 44) & 0xFFFF:05d}","note":"'
        )
        room = size - len(head) - 2 + (r >> 60) % jitter - jitter // 2
        payload = (head + notes[(r >> 64) & 0xFFFF][: max(0, room)] + '"}').encode()
        header = None
        if (r >> 80) % HEADER_EVERY == 0:
            header = b"NATS/1.0\r\nTrace-Id: %016x\r\nSource: bench-fill\r\n\r\n" % getrandbits(64)
        return Message(SUBJECTS[(r >> 84) % len(SUBJECTS)], header, payload)

    return make


@dataclass(slots=True)
class FillStats:
    messages: int = 0
    payload_bytes: int = 0
    header_messages: int = 0
    header_bytes: int = 0
    resent: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class FillError(RuntimeError):
    """The fill could not store every message."""


class _AckReader(asyncio.Protocol):
    """Parses the server's frames; hands each ack (index, ok, error text) to ``on_ack``.

    The buffer is consumed through an offset and compacted once per read: deleting
    from the front of a bytearray per frame would move the whole buffer every time.
    """

    def __init__(self, on_ack: Callable[[int, str | None], None]) -> None:
        self.on_ack = on_ack
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.server_error: str | None = None
        self.progress = asyncio.Event()
        self.closed = asyncio.Event()
        self.pong = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.progress.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            op = buf[pos : pos + 4]
            if op in (b"MSG ", b"HMSG"):
                parts = bytes(buf[pos:end]).split()
                size = int(parts[-1])
                if len(buf) < end + 2 + size + 2:
                    break  # the body has not fully arrived
                body = bytes(buf[end + 2 : end + 2 + size])
                pos = end + 2 + size + 2
                self._ack(parts, body)
            else:
                line = bytes(buf[pos:end])
                pos = end + 2
                if line == b"PING":
                    assert self.transport is not None
                    self.transport.write(b"PONG\r\n")
                elif line == b"PONG":
                    self.pong.set()
                elif line.startswith(b"-ERR"):
                    self.server_error = line.decode(errors="replace")
                    self.progress.set()
                # INFO and +OK need nothing.
        del buf[:pos]

    def _ack(self, parts: list[bytes], body: bytes) -> None:
        index = int(parts[1][len(_ACK_PREFIX) :])
        if parts[0] == b"HMSG":
            # A status frame instead of an ack: "NATS/1.0 503" (no responders) and the like.
            header_len = int(parts[-2])
            self.on_ack(index, body[:header_len].split(b"\r\n", 1)[0].decode(errors="replace"))
        elif b'"error"' in body:
            error = json.loads(body)["error"]
            self.on_ack(index, f"{error.get('code')} {error.get('description')}")
        else:
            self.on_ack(index, None)
        self.progress.set()


class PipelinedPublisher:
    """Publishes ``count`` messages with up to ``window`` unacknowledged at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        window: int = 4000,
        chunk: int = 500,
        stall_timeout: float = 30.0,
        max_resends: int = 10_000,
    ) -> None:
        self.host, self.port = host, port
        self.window = window
        self.chunk = chunk
        self.stall_timeout = stall_timeout
        self.max_resends = max_resends
        self.inflight: dict[int, bytes] = {}
        self.resend: list[int] = []
        self.stats = FillStats()
        self._proto: _AckReader | None = None

    def _on_ack(self, index: int, error: str | None) -> None:
        if error is None:
            self.inflight.pop(index, None)
            return
        # Not stored (a 429/503 answer, say): send the same frame again.
        self.stats.errors[error] = self.stats.errors.get(error, 0) + 1
        if index in self.inflight:
            self.resend.append(index)

    async def run(self, count: int, make: Callable[[int], Message]) -> FillStats:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(
            lambda: _AckReader(self._on_ack), self.host, self.port
        )
        self._proto = proto
        try:
            transport.write(
                b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                b'"no_responders":true,"name":"bench-fill"}\r\n'
                b"SUB " + _ACK_PREFIX + b"* 1\r\nPING\r\n"
            )
            # The PONG proves CONNECT and SUB were processed before the first publish.
            await asyncio.wait_for(proto.pong.wait(), 10)
            started = time.perf_counter()
            await self._pump(transport, proto, count, make)
            self.stats.seconds = time.perf_counter() - started
        finally:
            transport.close()
        return self.stats

    async def _pump(
        self,
        transport: asyncio.Transport,
        proto: _AckReader,
        count: int,
        make: Callable[[int], Message],
    ) -> None:
        stats = self.stats
        next_index = 0
        while next_index < count or self.inflight:
            if proto.server_error:
                raise FillError(f"server error during fill: {proto.server_error}")
            if proto.closed.is_set():
                raise FillError("the server closed the fill connection")
            frames: list[bytes] = []
            if self.resend:
                stats.resent += len(self.resend)
                if stats.resent > self.max_resends:
                    raise FillError(f"too many publishes refused: {stats.errors}")
                frames = [self.inflight[i] for i in self.resend if i in self.inflight]
                self.resend.clear()
            room = min(self.window - len(self.inflight), count - next_index)
            # Send whole chunks (one write each), and the short tail at the very end.
            if room >= self.chunk or (room > 0 and next_index + room == count):
                fresh = min(room, self.chunk)
                for index in range(next_index, next_index + fresh):
                    frame = self._frame(make(index + 1), index)
                    self.inflight[index] = frame
                    frames.append(frame)
                next_index += fresh
            if frames:
                transport.write(b"".join(frames))
                await asyncio.sleep(0)  # let the loop send and read acks
                continue
            # The window is full: wait for acks, failing if none come at all.
            proto.progress.clear()
            try:
                await asyncio.wait_for(proto.progress.wait(), self.stall_timeout)
            except TimeoutError:
                raise FillError(
                    f"no acks for {self.stall_timeout:.0f}s with "
                    f"{len(self.inflight)} publishes in flight"
                ) from None

    def _frame(self, msg: Message, index: int) -> bytes:
        stats = self.stats
        stats.messages += 1
        stats.payload_bytes += len(msg.payload)
        reply = b"%s%d" % (_ACK_PREFIX, index)
        subject = msg.subject.encode()
        if msg.header is None:
            return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(msg.payload), msg.payload)
        stats.header_messages += 1
        stats.header_bytes += len(msg.header)
        total = len(msg.header) + len(msg.payload)
        return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject,
            reply,
            len(msg.header),
            total,
            msg.header,
            msg.payload,
        )
