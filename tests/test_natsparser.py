"""The fast parser against nats-py's own: the same wire bytes, cut into chunks at every
possible place, give the same deliveries and protocol calls in the same order."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from archiver.nats.parser import FastParser

RAW_SID, OTHER_SID = 7, 9


def msg(subject: str, sid: int, payload: bytes, reply: str = "") -> bytes:
    line = (
        f"MSG {subject} {sid} {reply} {len(payload)}"
        if reply
        else f"MSG {subject} {sid} {len(payload)}"
    )
    return line.encode() + b"\r\n" + payload + b"\r\n"


def hmsg(subject: str, sid: int, header: bytes, payload: bytes, reply: str = "") -> bytes:
    sizes = f"{len(header)} {len(header) + len(payload)}"
    line = f"HMSG {subject} {sid} {reply} {sizes}" if reply else f"HMSG {subject} {sid} {sizes}"
    return line.encode() + b"\r\n" + header + payload + b"\r\n"


WIRE = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        msg("events.a", RAW_SID, b"hello"),
        msg("events.b", RAW_SID, b"abc", "$JS.ACK.S.C.1.2.2.1700000000000000000.10"),
        b"+OK\r\n",
        hmsg(
            "events.c",
            RAW_SID,
            b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n",
            b"xyz\r\n",
            "$JS.ACK.S.C.1.3.3.1700000000000000001.9",
        ),
        msg("other.d", OTHER_SID, b"data", "_INBOX.r"),
        b"PING\r\n",
        hmsg("events.e", RAW_SID, b"NATS/1.0 404\r\n\r\n", b""),  # a status, no payload
        msg("events.f", RAW_SID, b""),  # empty payload
        b"MSG  events.g\t7  2\r\nhi\r\n",  # odd spacing: nats-py's regex allows it
        msg("events.h", RAW_SID, b"MSG \r\nPING\r\n"),  # a payload that looks like protocol
        b"PONG\r\n",
        hmsg("events.i", RAW_SID, b"NATS/1.0\r\n\r\n", b"ok", "reply.i"),
        b"-ERR 'Stale Connection'\r\n",
        msg("events.j", RAW_SID, b"z"),
    ]
)


class Recorder:
    """Stands in for the nats-py client: records what the parser hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self._raw_handlers = {RAW_SID: self._raw}
        self._raw_takers: dict[int, Any] = {}
        self.parser: Parser | None = None

    def _raw(self, subject: bytes, reply: bytes, data: bytes, header: bytes | None) -> None:
        self.calls.append(("msg", RAW_SID, subject, reply, data, header))

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, header: bytes | None
    ) -> None:
        # What RawClient._process_msg does: raw sids go to their handler, counted.
        if sid in self._raw_handlers:
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            self._raw_handlers[sid](subject, reply, data, header)
            return
        self.calls.append(("msg", sid, subject, reply, data, header))
        await asyncio.sleep(0)  # a real client may yield here

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", json.dumps(info, sort_keys=True)))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def feed(parser_type: type[Parser], chunks: list[bytes]) -> list[tuple[Any, ...]]:
    client = Recorder()
    parser = parser_type(client)

    async def run() -> None:
        for chunk in chunks:
            await parser.parse(chunk)

    asyncio.run(run())
    assert not parser.buf, "everything consumed"
    raw = [c for c in client.calls if c[0] == "msg" and c[1] == RAW_SID]
    assert client.stats == {"in_msgs": len(raw), "in_bytes": sum(len(c[4]) for c in raw)}
    return client.calls


def outcome(parser_type: type[Parser], data: bytes, client: Recorder | None = None) -> Any:
    """Calls, the error if any, and the parser's state afterwards."""
    client = client or Recorder()
    parser = parser_type(client)
    client.parser = parser
    try:
        asyncio.run(parser.parse(data))
        error = None
    except Exception as exc:
        error = type(exc)
    return client.calls, error, bytes(parser.buf), parser.state, parser.needed


def cuts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


EXPECTED = feed(Parser, [WIRE])


def test_the_reference_sees_every_frame() -> None:
    messages = [c for c in EXPECTED if c[0] == "msg"]
    assert len(messages) == 10
    assert ("msg", OTHER_SID, b"other.d", b"_INBOX.r", b"data", None) in messages
    assert [c[0] for c in EXPECTED if c[0] != "msg"] == ["info", "ping", "pong", "err"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 16, 64, 100, len(WIRE)])
def test_same_calls_for_every_chunk_size(size: int) -> None:
    assert feed(FastParser, cuts(WIRE, size)) == EXPECTED


def test_same_calls_for_every_single_cut() -> None:
    for at in range(1, len(WIRE)):
        assert feed(FastParser, [WIRE[:at], WIRE[at:]]) == EXPECTED, at


def test_same_calls_for_random_cuts_of_many_frames() -> None:
    rng = random.Random(7)
    frames = []
    for i in range(2000):
        payload = rng.randbytes(rng.randrange(0, 300))
        if rng.random() < 0.3:
            header = b"NATS/1.0\r\nK: " + str(i).encode() + b"\r\n\r\n"
            total = len(header) + len(payload)
            line = f"HMSG s.{i} 7 $JS.ACK.S.C.1.{i}.{i}.1.0 {len(header)} {total}\r\n"
            frames.append(line.encode() + header + payload + b"\r\n")
        else:
            frames.append(f"MSG s.{i} 7 r.{i} {len(payload)}\r\n".encode() + payload + b"\r\n")
        if rng.random() < 0.01:
            frames.append(b"PING\r\n")
    wire = b"".join(frames)
    expected = feed(Parser, [wire])
    assert len([c for c in expected if c[0] == "msg"]) == 2000
    chunks, at = [], 0
    while at < len(wire):
        step = rng.randrange(1, 40_000)
        chunks.append(wire[at : at + step])
        at += step
    assert feed(FastParser, chunks) == expected


def test_a_malformed_message_line_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        feed(FastParser, [b"MSG only.subject\r\n"])
    with pytest.raises(ProtocolError):
        feed(FastParser, [b"HMSG s 7 x 5\r\n"])


@pytest.mark.parametrize(
    "data",
    [
        b"MSG a 7 +5\r\nhello\r\n",
        b"MSG a 7 1_0\r\n0123456789\r\n",
        b"MSG a -7 5\r\nhello\r\n",
        b"MSG a 7 5 \r\nhello\r\n",
        b"MSG a 7 5\r\r\nhello\r\n",
        b"HMSG a 7 9 5\r\nNATS/1.0\r\n\r\n\r\n",
        b"MSG a 7 r x 5\r\nhello\r\n",
        b"MSG  a 7 5\r\nhello\r\nMSG a 7 2\r\nhi\r\n",
        b"HMSG\r\n",
        b"MSG\r\n",
        b"MSGX a 7 5\r\nhello\r\n",
    ],
    ids=[
        "plus",
        "underscore",
        "negative-sid",
        "trailing-space",
        "cr-cr-lf",
        "header-too-big",
        "six-fields",
        "double-space",
        "bare-hmsg",
        "bare-msg",
        "msgx",
    ],
)
def test_unusual_lines_get_nats_pys_judgement(data: bytes) -> None:
    assert outcome(FastParser, data) == outcome(Parser, data)


class Resetting(Recorder):
    """Resets the parser while handling a frame of another subscription, as a
    reconnect does; frames after that must not be delivered."""

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, header: bytes | None
    ) -> None:
        await super()._process_msg(sid, subject, reply, data, header)
        if sid == OTHER_SID:
            assert self.parser is not None
            self.parser.reset()


class Raising(Recorder):
    """A raw handler that fails on its second frame."""

    def _raw(self, subject: bytes, reply: bytes, data: bytes, header: bytes | None) -> None:
        super()._raw(subject, reply, data, header)
        if sum(1 for c in self.calls if c[1] == RAW_SID) == 2:
            raise RuntimeError("handler failed")


@pytest.mark.parametrize("client_type", [Resetting, Raising])
def test_a_reset_or_a_failing_handler_leaves_the_same_state(client_type: type[Recorder]) -> None:
    data = b"".join(
        [
            msg("a", RAW_SID, b"1"),
            msg("b", OTHER_SID, b"2"),
            msg("c", RAW_SID, b"3"),
            msg("d", RAW_SID, b"4"),
        ]
    )
    fast = outcome(FastParser, data, client_type())
    assert fast == outcome(Parser, data, client_type())
    calls, error, *_ = fast
    # Nothing after the reset (at b) or the failure (at c).
    assert [c[2] for c in calls] == ([b"a", b"b", b"c"] if error else [b"a", b"b"])
    assert error is (RuntimeError if client_type is Raising else None)
