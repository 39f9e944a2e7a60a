"""The consumer reader's frames taken in runs (``ConsumerReader._take_frames``) against
the same frames one by one through ``_on_frame``: the same wire bytes, cut at every
place, leave the same batch, the same reader state and the same client calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.errors import ProtocolError
from test_natsparser import RAW_SID, Recorder, cuts, hmsg, msg

from archiver.nats.consumer import ConsumerReader
from archiver.nats.parser import FastParser

OTHER_SID = 9
BLOCK = b"NATS/1.0\r\nTrace-Id: 4bf92f3577b34da6\r\nA: 1\r\nA: 2\r\n\r\n"


def ack(seq: int, dseq: int, pending: int, *, domain: bool = False) -> str:
    tail = f"1.{seq}.{dseq}.{1_700_000_000_000_000_000 + seq}.{pending}"
    if domain:
        return f"$JS.ACK.hub.ACCHASH.AUTH.archiver-0123.{tail}.rnd{seq}"
    return f"$JS.ACK.AUTH.archiver-0123.{tail}"


def deliveries(last: int, *, jump_at: int = 0, ping: bool = True, odd: bool = True) -> bytes:
    """Seqs 1..last (every third missing from the stream), with what else a connection
    carries in between: another subscription, PING, a status, an odd line."""
    frames, dseq = [], 0
    seqs = [s for s in range(1, 3 * last) if s % 3][:last]
    for n, seq in enumerate(seqs):
        dseq += 2 if jump_at and n == jump_at else 1
        pending = len(seqs) - n - 1
        reply = ack(seq, dseq, pending, domain=n % 4 == 3)
        subject = f"auth.{seq % 5}"
        if n % 3 == 1:
            frames.append(hmsg(subject, RAW_SID, BLOCK, b"payload %d" % seq, reply))
        elif n == 5:
            frames.append(msg(subject, RAW_SID, b"", reply))  # empty payload
        elif n == 7:
            frames.append(msg(subject, RAW_SID, b"MSG x 7 1\r\nPING\r\n", reply))
        elif n == 9 and odd:
            # Spaced as nats-py allows and the server never writes: taken one by one.
            frames.append(f"MSG  {subject} {RAW_SID} {reply}  3\r\nodd\r\n".encode())
        else:
            frames.append(msg(subject, RAW_SID, b'{"seq":%d}' % seq, reply))
        if n == 4:
            frames.append(msg("other.x", OTHER_SID, b"not ours", "_INBOX.r"))
        if n == 6 and ping:
            # nats-py's parser takes the rest of this buffer from here, frame by frame.
            frames.append(b"PING\r\n")
        if n == 8:
            frames.append(
                hmsg("_INBOX.pull", RAW_SID, b"NATS/1.0 408 Request Timeout\r\n\r\n", b"")
            )
    return b"".join(frames)


def read(wire: bytes, chunks: list[bytes], end_seq: int, *, take: bool) -> Any:
    client = Recorder()
    reader = ConsumerReader(client, "AUTH", 1, end_seq)  # type: ignore[arg-type]
    reader._asked = 12  # answered part-way: the pull's done flag is compared too
    reader._sid = b"%d" % RAW_SID
    client._raw_handlers = {RAW_SID: reader._on_frame}
    if take:
        client._raw_takers = {RAW_SID: reader._take_frames}
    parser = FastParser(client)

    async def run() -> None:
        for chunk in chunks:
            await parser.parse(chunk)

    asyncio.run(run())
    assert not parser.buf, "everything consumed"
    batch = reader._batch
    return (
        (batch.seqs, batch.subjects, batch.times_ns, batch.raw_headers, batch.data, batch.nbytes),
        (reader.cursor, reader._expected_dseq, reader._received, reader.delivered),
        (reader._finished, reader._broken, reader._done.is_set(), reader._status),
        client.calls,
        client.stats,
    )


CASES = {
    "to the end": (deliveries(20), 10_000),
    "end seq": (deliveries(20), 17),
    "end seq deleted": (deliveries(20), 18),  # seq 18 is not in the stream: 19 ends it
    "jump": (deliveries(20, jump_at=13), 10_000),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_taken_in_runs_or_one_by_one_the_reader_ends_the_same_for_every_cut(case: str) -> None:
    wire, end_seq = CASES[case]
    expected = read(wire, [wire], end_seq, take=False)
    assert expected[0][0], "the frame-by-frame reading kept rows"
    assert read(wire, [wire], end_seq, take=True) == expected
    for size in (1, 2, 3, 7, 64, 500):
        assert read(wire, cuts(wire, size), end_seq, take=True) == expected, size
    for at in range(1, len(wire)):
        assert read(wire, [wire[:at], wire[at:]], end_seq, take=True) == expected, at


def test_runs_of_frames_are_taken_by_the_taker() -> None:
    """The fast way is the one used: only the frames where a run cannot go on reach
    ``_on_frame``."""
    wire = deliveries(20, ping=False, odd=False)
    client = Recorder()
    reader = ConsumerReader(client, "AUTH", 1, 10_000)  # type: ignore[arg-type]
    reader._asked, reader._sid = 100, b"%d" % RAW_SID
    one_by_one: list[bytes] = []

    def on_frame(subject: bytes, reply: bytes, data: bytes, header: bytes | None) -> None:
        one_by_one.append(reply)
        reader._on_frame(subject, reply, data, header)

    client._raw_handlers = {RAW_SID: on_frame}
    client._raw_takers = {RAW_SID: reader._take_frames}
    asyncio.run(FastParser(client).parse(wire))
    assert reader.delivered == 20
    # The first frame (no run yet), the one after another subscription's, the status.
    assert one_by_one == [ack(1, 1, 19).encode(), ack(8, 6, 14).encode(), b""]


@pytest.mark.parametrize(
    "frame", [b"MSG  7 %s 3\r\ntwo\r\n", b"HMSG  7 %s 12 15\r\nNATS/1.0\r\n\r\ntwo\r\n"]
)
def test_a_frame_without_a_subject_is_refused_as_frame_by_frame(frame: bytes) -> None:
    """Two spaces where the subject goes: nats-py's parser refuses the line, and the
    taker must not take it as a delivery with an empty subject."""
    wire = msg("auth.1", RAW_SID, b"one", ack(1, 1, 5)) + frame % ack(2, 2, 4).encode()
    outcomes = []
    for take in (False, True):
        client = Recorder()
        reader = ConsumerReader(client, "AUTH", 1, 10)  # type: ignore[arg-type]
        reader._asked, reader._sid = 10, b"%d" % RAW_SID
        client._raw_handlers = {RAW_SID: reader._on_frame}
        if take:
            client._raw_takers = {RAW_SID: reader._take_frames}
        with pytest.raises(ProtocolError):
            asyncio.run(FastParser(client).parse(wire))
        outcomes.append((reader._batch.seqs, reader._batch.subjects, reader.delivered))
    assert outcomes[0] == outcomes[1] == ([1], ["auth.1"], 1)
