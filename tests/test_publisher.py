"""The JetStream publisher: exact header blocks, order, acks, duplicates, refusals,
timeouts and a server restart, against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from natsserver import NatsServer

from archiver.errors import SourceError
from archiver.nats.api import get_message, stream_info
from archiver.nats.conn import RawClient, connect
from archiver.nats.options import NatsOptions
from archiver.nats.publisher import JsPublisher

Acked = list[tuple[int, str, int, bool]]


async def open_stream(url: str, stream: str, subject: str, **config: Any) -> RawClient:
    nc = await connect(NatsOptions(url=url))
    await nc.jetstream().add_stream(name=stream, subjects=[subject], **config)
    return nc


async def started(nc: RawClient, acked: Acked | None = None, **kwargs: Any) -> JsPublisher[int]:
    def on_acked(key: int, stream: str, seq: int, duplicate: bool) -> None:
        assert acked is not None
        acked.append((key, stream, seq, duplicate))

    pub: JsPublisher[int] = JsPublisher(
        nc, on_acked=on_acked if acked is not None else None, **kwargs
    )
    await pub.start()
    return pub


def with_id(msg_id: str, extra: bytes = b"") -> bytes:
    """Nats-Msg-Id first: nats-server 2.10 only finds headers the way it expects them."""
    return b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode() + b"\r\n" + extra + b"\r\n"


def run(case: Callable[[], Awaitable[Any]], limit: float = 30) -> Any:
    """Run a case with a hard time limit, so a hang fails the test instead of stalling it."""

    async def bounded() -> Any:
        return await asyncio.wait_for(case(), limit)

    return asyncio.run(bounded())


def test_header_blocks_and_payloads_are_stored_byte_for_byte(nats: NatsServer) -> None:
    messages: list[tuple[bytes | None, bytes]] = [
        (b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n", b"repeated keys"),
        (b"NATS/1.0\r\nX:   padded value  \r\nEmpty:\r\nB:\t tab \r\n\r\n", b"spacing"),
        (b"NATS/1.0\r\nA: 1\r\na: 2\r\nA:3\r\n\r\n", b""),
        (None, bytes(range(256)) + b"\r\n\r\nPUB x 1\r\n"),
        (None, b""),
        (b"NATS/1.0\r\nK: v\r\n\r\n", b"\x00\xff\r\n"),
    ]

    async def case() -> None:
        nc = await open_stream(nats.url, "EXACT", "exact.>")
        acked: Acked = []
        pub = await started(nc, acked)
        try:
            for i, (block, data) in enumerate(messages):
                await pub.publish(f"exact.{i}", block, data, key=i)
            await pub.drain()
            assert [(k, s) for k, s, _, _ in acked] == [(i, "EXACT") for i in range(len(messages))]
            for i, (block, data) in enumerate(messages):
                stored = await get_message(nc, "EXACT", acked[i][2])
                assert stored is not None
                assert stored.subject == f"exact.{i}"
                assert stored.raw_headers == block
                assert stored.data == data
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_many_messages_arrive_in_order_and_are_reported_in_order(nats: NatsServer) -> None:
    n, window = 5000, 500

    async def case() -> None:
        nc = await open_stream(nats.url, "ORDER", "order.>")
        acked: Acked = []
        pub = await started(nc, acked, window=window)
        try:
            most_in_flight = 0
            for i in range(n):
                block = with_id(f"o-{i}", b"Seq: " + str(i).encode() + b"\r\n")
                await pub.publish(f"order.{i % 7}", block, b"p" * 300, key=i)
                most_in_flight = max(most_in_flight, pub.in_flight)
                # The acknowledged prefix only ever covers what on_acked was told.
                assert pub.acked_prefix_key == (acked[-1][0] if acked else None)
            await pub.drain()
            assert most_in_flight <= window
            assert [a[0] for a in acked] == list(range(n))
            assert [a[2] for a in acked] == list(range(1, n + 1))
            assert not any(a[3] for a in acked)
            assert pub.acked_prefix_key == n - 1
            assert (pub.published, pub.duplicates, pub.resent, pub.in_flight) == (n, 0, 0, 0)
            last = await get_message(nc, "ORDER", n)
            assert last is not None and last.subject == f"order.{(n - 1) % 7}"
            assert last.raw_headers == with_id(f"o-{n - 1}", f"Seq: {n - 1}\r\n".encode())
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_the_byte_window_bounds_what_is_held_for_resends(nats: NatsServer) -> None:
    """Frames are kept until acked (for resends): with large messages the byte window,
    not the message window, is what keeps memory flat. A message larger than the byte
    window still goes, alone."""
    window_bytes, size = 64 * 1024, 10_000

    async def case() -> None:
        nc = await open_stream(nats.url, "BIG", "big.>")
        acked: Acked = []
        pub = await started(nc, acked, window=2000, window_bytes=window_bytes)
        try:
            most = 0
            for i in range(300):
                await pub.publish("big.x", with_id(f"b-{i}"), b"b" * size, key=i)
                most = max(most, pub.in_flight_bytes)
            assert window_bytes - 2 * size < most <= window_bytes  # reached, never passed
            await pub.publish("big.huge", with_id("huge"), b"h" * (window_bytes * 2), key=300)
            assert pub.in_flight <= 1  # it waited for everything before it
            await pub.drain()
            assert pub.in_flight_bytes == 0
            assert [a[0] for a in acked] == list(range(301))
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_the_same_msg_id_twice_is_stored_once_and_counted_as_duplicate(nats: NatsServer) -> None:
    async def case() -> None:
        nc = await open_stream(nats.url, "DUP", "dup.>")
        acked: Acked = []
        pub = await started(nc, acked)
        try:
            await pub.publish("dup.a", with_id("same"), b"first", key=1)
            await pub.publish("dup.a", with_id("same"), b"second", key=2)
            await pub.publish("dup.a", with_id("other"), b"third", key=3)
            await pub.drain()
            assert acked == [(1, "DUP", 1, False), (2, "DUP", 1, True), (3, "DUP", 2, False)]
            assert pub.duplicates == 1
            info = await stream_info(nc, "DUP")
            assert (info.messages, info.last_seq) == (2, 2)
            stored = await get_message(nc, "DUP", 1)
            assert stored is not None and stored.data == b"first"
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_no_stream_for_the_subject_is_one_clear_error(nats: NatsServer) -> None:
    async def case() -> None:
        nc = await open_stream(nats.url, "SOME", "some.>")
        acked: Acked = []
        pub = await started(nc, acked, ack_timeout=0.5, max_attempts=3)
        try:
            await pub.publish("some.ok", None, b"1", key=1)
            await pub.drain()
            await pub.publish("nowhere.orders", None, b"2", key=2)
            await pub.publish("some.ok", None, b"3", key=3)
            with pytest.raises(SourceError) as err:
                # 503 is retried briefly (a server shutting down answers it too).
                await asyncio.wait_for(pub.drain(), 5)
            assert str(err.value) == (
                "cannot publish to nowhere.orders: no stream on the target captures this "
                "subject (3 attempts)"
            )
            assert pub.resent == 2
            assert pub.acked_prefix_key == 1
            assert [a[0] for a in acked] == [1]
            with pytest.raises(SourceError, match=r"nowhere\.orders"):
                await pub.publish("some.ok", None, b"4", key=4)
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_refusals_carry_the_servers_description(nats: NatsServer) -> None:
    async def case() -> None:
        nc = await open_stream(nats.url, "SMALL", "small.>", max_msg_size=100)
        pub = await started(nc)
        try:
            # Over the connection's max_payload: refused before sending, since the server
            # would close the connection; the publisher stays usable.
            with pytest.raises(SourceError, match="max_payload"):
                await pub.publish("small.x", b"NATS/1.0\r\nA: b\r\n\r\n", b"x" * nc.max_payload, 0)
            await pub.publish("small.x", None, b"x" * 50, key=1)
            await pub.drain()
            # Over the stream's max_msg_size: JetStream's own refusal.
            await pub.publish("small.x", None, b"x" * 200, key=2)
            with pytest.raises(SourceError, match=r"small\.x: .*maximum") as err:
                await pub.drain()
            assert "10054" in str(err.value)
            assert pub.acked_prefix_key == 1
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_lost_acks_are_resent_with_the_same_bytes_and_deduplicated(nats: NatsServer) -> None:
    """Every first ack goes missing; each message is resent once and stored once."""
    n = 50

    async def case() -> None:
        nc = await open_stream(nats.url, "LOSSY", "lossy.>")
        acked: Acked = []
        pub = await started(nc, acked, ack_timeout=0.2)
        deliver = pub._on_frame
        answered: set[bytes] = set()

        def lose_first_ack(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
            if subject in answered:
                deliver(subject, reply, data, hdr)
            answered.add(subject)

        nc._raw_handlers[pub._sub._id] = lose_first_ack
        try:
            for i in range(n):
                await pub.publish("lossy.a", with_id(f"l-{i}"), str(i).encode(), key=i)
            await pub.drain()
            assert pub.resent == n and pub.duplicates == n
            assert acked == [(i, "LOSSY", i + 1, True) for i in range(n)]
            info = await stream_info(nc, "LOSSY")
            assert (info.messages, info.last_seq) == (n, n)
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_unanswered_publishes_fail_after_max_attempts_with_identical_resends(
    nats: NatsServer,
) -> None:
    """A plain subscriber that never answers: no 503, no ack, so only the timeout helps."""

    async def case() -> None:
        listener = await connect(NatsOptions(url=nats.url))
        seen: list[tuple[bytes, bytes | None, bytes]] = []
        await listener.subscribe_raw(
            "void.>", lambda subj, reply, data, hdr: seen.append((subj, hdr, data))
        )
        await listener.flush()
        nc = await connect(NatsOptions(url=nats.url))
        pub = await started(nc, ack_timeout=0.1, max_attempts=3)
        block = b"NATS/1.0\r\nNats-Msg-Id: v-1\r\nA: 1\r\nA: 2\r\n\r\n"
        try:
            await pub.publish("void.x", block, b"payload", key=1)
            with pytest.raises(SourceError) as err:
                await asyncio.wait_for(pub.drain(), 5)
            assert str(err.value) == "no acknowledgement for void.x after 3 attempts"
            assert pub.resent == 2
            await listener.flush()
            assert seen == [(b"void.x", block, b"payload")] * 3
        finally:
            await pub.close()
            await nc.close()
            await listener.close()

    run(case)


def test_a_server_restart_mid_publish_stores_every_message_exactly_once(
    nats: NatsServer,
) -> None:
    n = 3000

    async def case() -> None:
        nc = await open_stream(nats.url, "DURABLE", "durable.>", storage="file")
        acked: Acked = []
        pub = await started(nc, acked, window=300, ack_timeout=0.5)
        try:
            restart: asyncio.Future[None] | None = None
            for i in range(n):
                if i == n // 3:
                    # In a thread, so publishing goes on while the server goes away.
                    restart = asyncio.ensure_future(asyncio.to_thread(nats.restart))
                block = with_id(f"d-{i}", b"K: v\r\n")
                await pub.publish(f"durable.{i % 3}", block, b"x" * 200, key=i)
            assert restart is not None
            await restart
            await pub.drain()
            assert nc.stats["reconnects"] >= 1
            # The publisher outruns the server, so the window is full when it goes down:
            # those publishes lost either the message or the ack, and were resent.
            assert pub.resent > 0
            assert [a[0] for a in acked] == list(range(n))
            # Distinct stored seqs for distinct keys, and no more messages than keys:
            # every message is stored exactly once.
            assert sorted(a[2] for a in acked) == list(range(1, n + 1))
            info = await stream_info(nc, "DURABLE")
            assert (info.messages, info.last_seq) == (n, n)
        finally:
            await pub.close()
            await nc.close()

    run(case, limit=60)


def test_a_failing_on_acked_stops_the_publisher_but_not_the_connection(
    nats: NatsServer,
) -> None:
    class MapFull(Exception):
        pass

    async def case() -> None:
        nc = await open_stream(nats.url, "CB", "cb.>")
        seen: list[int] = []

        def on_acked(key: int, stream: str, seq: int, duplicate: bool) -> None:
            if key == 3:
                raise MapFull("sequence map is full")
            seen.append(key)

        pub: JsPublisher[int] = JsPublisher(nc, on_acked=on_acked)
        await pub.start()
        try:
            for i in range(6):
                await pub.publish("cb.a", None, b"x", key=i)
            with pytest.raises(MapFull):
                await pub.drain()
            assert seen == [0, 1, 2] and pub.acked_prefix_key == 2
            # The exception did not reach nats-py's parser: the connection still works.
            assert (await stream_info(nc, "CB")).messages == 6
        finally:
            await pub.close()
            await nc.close()

    run(case)


def test_plain_acks_are_read_as_json_would_read_them() -> None:
    """The fast path for ordinary PubAcks agrees with ``json.loads`` on every shape the
    servers send, and leaves the rest (errors, escapes) to it."""
    import json

    from archiver.nats.publisher import _plain_ack

    acks = [
        b'{"stream":"RESTORE", "seq":10}',  # 2.10
        b'{"stream":"RESTORE","seq":18446744073709551}',
        b'{"stream":"T","seq":10,"duplicate": true}',
        b'{"stream":"T","seq":10,"duplicate":true}',
        b'{"stream":"T","domain":"hub","seq":7}',
        b'{"stream":"KV_a b","seq":3,"duplicate":false}',
        b'{"stream":"T","domain":"hub","seq":7,"duplicate":true}',
    ]
    for raw in acks:
        parsed = json.loads(raw)
        assert _plain_ack(raw) == (parsed["stream"], parsed["seq"], parsed.get("duplicate", False))
    others = (
        b'{"error":{"code":503,"description":"x"}}',
        b'{"stream":"a\\"b","seq":1}',
        b'{"stream":"T","seq":5,"val":"3"}',  # a counter stream's ack: the full parse
        b'{"stream":"T","seq":007}',  # not JSON: json.loads says so, not us
        b'{"stream":"a\nb","seq":1}',
        b'{"stream":"T","domain":"\xff","seq":1}',
        b'{"stream":"\xed\xa0\x80","seq":1}',  # a surrogate, which UTF-8 forbids
        b'{"stream":"T","seq":' + b"9" * 5000 + b"}",
    )
    for raw in others:
        assert _plain_ack(raw) is None


def test_an_ack_without_stream_or_seq_fails_the_publisher_with_one_clear_error(
    nats: NatsServer,
) -> None:
    """A JSON answer that is no PubAck raised KeyError inside the protocol parser,
    which nats-py takes as the end of reading: the connection went silently dead."""

    async def case() -> None:
        nc = await open_stream(nats.url, "ODD", "odd.>")
        pub = await started(nc)
        deliver = pub._on_frame

        def garble(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
            deliver(subject, reply, b'{"seq":1}', hdr)

        nc._raw_handlers[pub._sub._id] = garble
        try:
            await pub.publish("odd.a", None, b"x", key=1)
            with pytest.raises(SourceError, match="unreadable JetStream ack"):
                await pub.drain()
            assert nc.is_connected
        finally:
            await pub.close()
            await nc.close()

    run(case)
