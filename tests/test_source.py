"""The reader: exact frames, holes in consumer sequences, fixed end points, paging."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import nats_client, publish
from natsserver import NatsServer
from test_archive import add_streams, delete_msgs

from archiver.format.batch import Batch
from archiver.nats.api import list_streams
from archiver.nats.conn import RawClient
from archiver.nats.consumer import ConsumerReader
from archiver.nats.parser import FrameTaker, RawHandler


async def read_all(reader: ConsumerReader) -> Batch:
    out = Batch()
    async for batch in reader.batches():
        for i in range(len(batch)):
            out.append(
                batch.seqs[i],
                batch.subjects[i],
                batch.times_ns[i],
                batch.raw_headers[i],
                batch.data[i],
            )
    return out


class DroppingClient(RawClient):
    """Loses chosen deliveries on the way in, as a slow consumer or a lost pull would."""

    def __init__(self, drop_at: set[int]) -> None:
        super().__init__()
        self.drop_at = drop_at
        self.seen = 0

    async def subscribe_raw(
        self, subject: str, handler: RawHandler, taker: FrameTaker | None = None
    ) -> Any:
        # Frames are dropped one by one, so none is taken in runs: the same jump met by
        # the reader's taker is in tests/test_deliveries.py.
        def dropping(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            if reply.startswith(b"$JS.ACK."):
                self.seen += 1
                if self.seen in self.drop_at:
                    return
            handler(subject, reply, data, headers)

        return await super().subscribe_raw(subject, dropping)


def test_a_lost_delivery_is_noticed_and_re_read(nats: NatsServer) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.{i}" for i in range(5000)]))

    async def case() -> tuple[Batch, int]:
        nc = DroppingClient({100, 2500})
        await nc.connect(servers=[nats.url])
        try:
            reader = ConsumerReader(nc, "AUTH", 1, 5000, fetch_rows=1000)
            return await read_all(reader), reader.restarts
        finally:
            await nc.close()

    batch, restarts = asyncio.run(case())
    assert batch.seqs == list(range(1, 5001))
    assert batch.subjects[:3] == ["auth.0", "auth.1", "auth.2"]
    assert restarts == 2


def test_reader_stops_at_the_end_point_while_messages_keep_arriving(nats: NatsServer) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 300))

    async def case() -> Batch:
        async with nats_client(nats.url) as nc:
            reader = ConsumerReader(nc, "AUTH", 1, 300, fetch_rows=50)
            feeder = asyncio.create_task(publish(nats.url, "AUTH", ["auth.late"] * 500))
            got = await read_all(reader)
            await feeder
            return got

    assert asyncio.run(case()).seqs == list(range(1, 301))


def test_reader_ends_when_the_last_messages_were_deleted(nats: NatsServer) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 20))
    asyncio.run(delete_msgs(nats.url, "AUTH", [19, 20]))

    async def case() -> Batch:
        async with nats_client(nats.url) as nc:
            return await read_all(ConsumerReader(nc, "AUTH", 5, 20, stall_timeout=3))

    assert asyncio.run(case()).seqs == list(range(5, 19))


def test_a_message_larger_than_the_fetch_byte_cap_is_still_read(nats: NatsServer) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.big"] * 3, payload=b"b" * 50_000))

    async def case() -> Batch:
        async with nats_client(nats.url) as nc:
            return await read_all(ConsumerReader(nc, "AUTH", 1, 3, fetch_bytes=1000))

    got = asyncio.run(case())
    assert got.seqs == [1, 2, 3] and all(len(d) == 50_000 for d in got.data)


def test_listing_pages_past_256_streams(nats: NatsServer) -> None:
    async def case() -> list[str]:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await asyncio.gather(
                *(js.add_stream(name=f"S{i:03d}", subjects=[f"s{i}.>"]) for i in range(300))
            )
            return [s.name for s in await list_streams(nc)]

    names = asyncio.run(case())
    assert sorted(names) == [f"S{i:03d}" for i in range(300)]


def test_batches_are_handed_over_as_they_fill(nats: NatsServer) -> None:
    """Memory stays at about one batch: the reader must not hold the whole stream."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5000))

    async def case() -> list[int]:
        async with nats_client(nats.url) as nc:
            reader = ConsumerReader(nc, "AUTH", 1, 5000, batch_rows=1000, fetch_rows=500)
            return [len(b) async for b in reader.batches()]

    sizes = asyncio.run(case())
    assert sum(sizes) == 5000 and max(sizes) <= 1500 and len(sizes) >= 4


def test_the_reader_takes_seq_time_and_pending_from_both_reply_subject_forms() -> None:
    """$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>, and the
    12-token form with a domain and an account hash in front and a random token after."""
    from archiver.nats.consumer import ConsumerReader

    reader = ConsumerReader(None, "AUTH", 1, 10)  # type: ignore[arg-type]
    reader._asked = 10
    replies = [
        b"$JS.ACK.AUTH.archiver-0123456789abcdef.1.7.1.1700000000123456789.3",
        b"$JS.ACK.hub.ACCHASH.AUTH.archiver-0123456789abcdef.1.8.2.1700000000223456789.0.rnd42",
    ]
    for reply in replies:
        reader._on_frame(b"auth.a", reply, b"x", None)
    batch = reader._batch
    assert batch.seqs == [7, 8] and batch.subjects == ["auth.a", "auth.a"]
    assert batch.times_ns == [1700000000123456789, 1700000000223456789]
    assert reader._finished, "pending 0 ends the read"
