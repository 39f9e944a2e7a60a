"""The archive's per-message Python work alone, beside nats-py's own parser, in one process.

    python bench/bench_frames.py [--messages 200000] [--repeat 7] [--json]

No server and no socket: one buffer of MSG/HMSG frames written as nats-server writes an
AckNone pull consumer's deliveries (300 B payloads, every tenth with a header block,
50 subjects) is fed in 64 KiB pieces, as a socket would hand it over, to:

1. nats-py's ``Parser`` with a client whose ``_process_msg`` does nothing: the cost of
   nats-py's frame loop before any work on the message (the limit to beat);
2. our ``FastParser`` with a raw handler that does nothing: the frame loop alone;
3. ``FastParser`` into ``ConsumerReader._on_frame`` one frame at a time (the way every
   frame the taker does not recognise still goes);
4. ``FastParser`` handing runs of frames to ``ConsumerReader._take_frames``: what the
   archive does per message on the event loop (parse, reply-subject tokens, checks,
   append to the batch).

Figures are microseconds per message, the best of ``--repeat`` rounds (the machine is
shared: the best round is the one least disturbed), and ratios to (1). Deterministic
input, so a change to either path can be compared on the same bytes in seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from common import base_parser, say
from nats.protocol.parser import Parser

from archiver.nats.consumer import ConsumerReader
from archiver.nats.parser import FastParser

SID = 7
CHUNK = 64 << 10


def wire(count: int) -> bytes:
    """``count`` deliveries of stream seqs 1..count, as the server frames them."""
    frames = []
    data = b'{"k":"' + b"x" * 290 + b'"}'
    block = b"NATS/1.0\r\nTrace-Id: 4bf92f3577b34da6\r\n\r\n"
    for seq in range(1, count + 1):
        subject = b"bench.events.%d" % (seq % 50)
        reply = b"$JS.ACK.BENCH.archiver-0123456789abcdef.1.%d.%d.%d.%d" % (
            seq,
            seq,
            1_795_810_694_975_729_016 + seq,
            count - seq,
        )
        if seq % 10 == 0:
            frames.append(
                b"HMSG %s %d %s %d %d\r\n%s%s\r\n"
                % (subject, SID, reply, len(block), len(block) + len(data), block, data)
            )
        else:
            frames.append(b"MSG %s %d %s %d\r\n%s\r\n" % (subject, SID, reply, len(data), data))
    return b"".join(frames)


class _Client:
    """What either parser needs of a client."""

    def __init__(self) -> None:
        self._raw_handlers: dict[int, Callable[..., None]] = {}
        self._raw_takers: dict[int, Callable[..., tuple[int, int, int]]] = {}
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.received = 0

    async def _process_msg(self, *args: Any) -> None:
        self.received += 1


async def _feed(parser: Any, buf: bytes) -> float:
    started = time.perf_counter()
    for at in range(0, len(buf), CHUNK):
        await parser.parse(buf[at : at + CHUNK])
    return time.perf_counter() - started


async def nats_py(buf: bytes, count: int) -> float:
    client = _Client()
    seconds = await _feed(Parser(client), buf)
    assert client.received == count, client.received
    return seconds


async def fast_parser(buf: bytes, count: int) -> float:
    client = _Client()
    client._raw_handlers[SID] = lambda subject, reply, data, header: None
    seconds = await _feed(FastParser(client), buf)
    assert client.stats["in_msgs"] == count, client.stats
    return seconds


async def _read(buf: bytes, count: int, *, take: bool) -> float:
    """The archive's reader on ``buf``: frame by frame, or with runs taken (``take``)."""
    client = _Client()
    reader = ConsumerReader(client, "BENCH", 1, count)  # type: ignore[arg-type]
    reader._asked = count  # one pull asked for everything
    reader._sid = b"%d" % SID
    client._raw_handlers[SID] = reader._on_frame
    if take:
        client._raw_takers[SID] = reader._take_frames
    seconds = await _feed(FastParser(client), buf)
    assert reader.delivered == count and reader._batch.seqs[-1] == count
    assert client.stats["in_msgs"] == count, client.stats
    return seconds


async def reader_frame_by_frame(buf: bytes, count: int) -> float:
    return await _read(buf, count, take=False)


async def archive_reader(buf: bytes, count: int) -> float:
    return await _read(buf, count, take=True)


async def measure(count: int, repeat: int) -> dict[str, Any]:
    buf = wire(count)
    paths = {
        "nats_py_parser": nats_py,
        "fast_parser": fast_parser,
        "reader_frame_by_frame": reader_frame_by_frame,
        "fast_parser_and_reader": archive_reader,
    }
    best = {
        name: min([await run(buf, count) for _ in range(repeat)]) for name, run in paths.items()
    }
    limit = best["nats_py_parser"]
    return {
        name: {
            "us_per_msg": round(seconds / count * 1e6, 3),
            "msgs_per_s": round(count / seconds),
            "of_nats_py_time": round(seconds / limit, 2),
        }
        for name, seconds in best.items()
    }


def main() -> int:
    parser = base_parser(__doc__)
    parser.set_defaults(messages=200_000)
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best counts")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    say(f"{args.messages:,} frames, best of {args.repeat} rounds ...")
    figures = asyncio.run(measure(args.messages, args.repeat))
    if args.json:
        print(json.dumps({"messages": args.messages, "repeat": args.repeat, **figures}))
        return 0
    print(f"{'path':<28}{'us/msg':>8}{'msgs/s':>12}{'of nats-py time':>17}")
    for name, row in figures.items():
        print(
            f"{name:<28}{row['us_per_msg']:>8.3f}{row['msgs_per_s']:>12,}"
            f"{row['of_nats_py_time']:>17.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
