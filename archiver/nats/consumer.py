"""Reads a limits stream through an ephemeral, in-memory, AckNone pull consumer, so
nothing is acked away or pinned.

Frames arrive unparsed (see ``RawClient``): the stream sequence, consumer sequence,
stored time in nanoseconds and pending count come from the reply subject, the header
block is kept byte for byte. Runs of deliveries are taken straight from the receive
buffer in one loop (``_take_frames``); anything else goes frame by frame to
``_on_frame``. AckNone deliveries that go missing are never redelivered, so every
consumer sequence is checked for holes; on a hole, a stall, or a consumer lost to a
server restart, the consumer is recreated at the last good stream sequence + 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator

import nats.errors

from archiver.errors import SourceError
from archiver.format.batch import Batch
from archiver.nats.conn import RawClient, js_api

log = logging.getLogger(__name__)

MAX_FETCH_BYTES = 128 << 20
"""Above any server's max_payload (64 MiB at most): a cap on doubling the pull's byte limit."""
INACTIVE_THRESHOLD_NS = 600 * 1_000_000_000
"""The server deletes an idle ephemeral consumer after this; a long upload must not lose it."""


SUBJECTS_CACHED = 10_000
"""Decoded subjects kept for reuse: a stream's subjects repeat, and decoding each
message's subject was a tenth of the reader's time."""

_REPLY_SEQ_AT = {9: 5, 12: 7}
"""Where the stream seq is among an ack subject's tokens (consumer seq, stored time and
pending follow it), by how many tokens the subject has."""

UNANSWERED_PULLS = 3
"""Fresh consumers whose first pull got 503 before the stream counts as unreadable
through consumers (nats-server 2.10 cannot serve a stream whose name holds a ``%``)."""


class ConsumerUnusable(SourceError):
    """The server creates consumers on the stream but never delivers through them."""


class ConsumerReader:
    """Reads a limits stream through an ephemeral AckNone pull consumer."""

    def __init__(
        self,
        nc: RawClient,
        stream: str,
        start_seq: int,
        end_seq: int,
        *,
        batch_rows: int = 20_000,
        batch_bytes: int = 16 << 20,
        fetch_rows: int = 10_000,
        fetch_bytes: int = 8 << 20,
        stall_timeout: float = 10.0,
        max_restarts: int = 8,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.end_seq = end_seq
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.fetch_rows = fetch_rows
        self.fetch_bytes = fetch_bytes
        self.stall_timeout = stall_timeout
        self.max_restarts = max_restarts
        self.restarts = 0
        """Consumers recreated after a hole, stall or loss (for tests and logs)."""
        self._cursor = start_seq
        self._batch = Batch()
        self._subjects: dict[bytes, str] = {}
        self._sid = b""
        """The subscription's id as the server writes it in frames."""
        self._done = asyncio.Event()
        self._expected_dseq = 1
        self._asked = 0
        self._received = 0
        self._status = b""
        self._status_line = b""
        self._broken = False
        self._finished = False
        self._unanswered = 0
        """Pulls in a row answered 503 before any message came: see ``ConsumerUnusable``."""
        self.delivered = 0

    @property
    def cursor(self) -> int:
        """The next seq to read: everything before it was delivered."""
        return self._cursor

    # -- frames -------------------------------------------------------------------

    def _on_frame(
        self, subject: bytes, reply: bytes, data: bytes, raw_headers: bytes | None
    ) -> None:
        """Handle one frame; runs inside the protocol parser, so it must be quick."""
        if not reply:
            # A status frame ends the pull request: 404/408 nothing (more) now,
            # 409 max bytes or consumer trouble, 503 no consumer to answer.
            self._status = raw_headers[9:12] if raw_headers else b""
            self._status_line = raw_headers.split(b"\r\n", 1)[0] if raw_headers else b""
            self._done.set()
            return
        if self._broken or self._finished:
            return
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>, or the
        # 12-token form with domain and account hash in front and a random token after.
        # Only the tail is split: the stream and consumer tokens are never needed.
        tokens = reply.rsplit(b".", 4 if reply.count(b".") == 8 else 5)
        seq = int(tokens[1])
        dseq = int(tokens[2])
        if dseq != self._expected_dseq:
            log.warning(
                "%s: consumer sequence jumped to %d, expected %d: re-reading from %d",
                self.stream,
                dseq,
                self._expected_dseq,
                self._cursor,
            )
            self._broken = True
            self._done.set()
            return
        self._expected_dseq = dseq + 1
        if seq > self.end_seq:
            self._finished = True
            self._done.set()
            return
        text = self._subjects.get(subject)
        if text is None:
            # Subjects repeat: decode each once (a bounded cache; cleared when full).
            if len(self._subjects) >= SUBJECTS_CACHED:
                self._subjects.clear()
            text = self._subjects[subject] = subject.decode("utf-8", "replace")
        self._batch.append(seq, text, int(tokens[3]), raw_headers, data)
        self._cursor = seq + 1
        self._received += 1
        self.delivered += 1
        if seq >= self.end_seq or tokens[4] == b"0":
            self._finished = True
            self._done.set()
        elif self._received >= self._asked:
            self._done.set()

    def _take_frames(
        self, buf: bytearray, view: memoryview, pos: int, size: int
    ) -> tuple[int, int, int]:
        """``_on_frame``'s common case for a run of frames, in one loop over the receive
        buffer (a ``parser.FrameTaker``): a third less time a message than frame by
        frame (bench/bench_frames.py). It takes deliveries exactly as ``_on_frame``
        would, and stops at anything else (a status, a jump, the end, another
        subscription, an odd line, a frame not all here), which then goes to
        ``_on_frame`` by way of the parser."""
        if self._broken or self._finished:
            return pos, 0, 0
        batch, subjects, sid = self._batch, self._subjects, self._sid
        seqs, texts, times = batch.seqs.append, batch.subjects.append, batch.times_ns.append
        headers, payloads = batch.raw_headers.append, batch.data.append
        expected, end_seq = self._expected_dseq, self.end_seq
        room = self._asked - self._received  # deliveries until this pull is answered
        frames = payload_bytes = block_bytes = 0
        find = buf.find
        try:
            while pos < size:
                eol = find(b"\r\n", pos)
                if eol < 0:
                    break
                fields = bytes(view[pos:eol]).split(b" ")
                count = len(fields)
                if count == 5 and fields[0] == b"MSG":
                    header_size, total = b"0", fields[4]
                elif count == 6 and fields[0] == b"HMSG":
                    header_size, total = fields[4], fields[5]
                else:
                    break
                if fields[2] != sid or not (
                    fields[1] and header_size.isdigit() and total.isdigit()
                ):
                    break
                # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>, or
                # the 12-token form (domain and account hash in front, a random token after).
                tokens = fields[3].split(b".")
                at = _REPLY_SEQ_AT.get(len(tokens))
                if at is None:
                    break
                seq_n, stored_ns = int(tokens[at]), int(tokens[at + 2])
                if int(tokens[at + 1]) != expected or seq_n > end_seq:
                    break  # _on_frame says what happened
                body = eol + 2
                split = body + int(header_size)
                end = body + int(total)
                if end + 2 > size or split > end:
                    break
                expected += 1
                subject = fields[1]
                text = subjects.get(subject)
                if text is None:
                    if len(subjects) >= SUBJECTS_CACHED:
                        subjects.clear()
                    text = subjects[subject] = subject.decode("utf-8", "replace")
                seqs(seq_n)
                texts(text)
                times(stored_ns)
                headers(bytes(view[body:split]) if split > body else None)
                payloads(bytes(view[split:end]))
                pos = end + 2
                frames += 1
                payload_bytes += end - split
                block_bytes += end - body
                self._cursor = seq_n + 1
                if seq_n >= end_seq or tokens[at + 3] == b"0":
                    self._finished = True
                    self._done.set()
                    break
                if frames >= room:
                    self._done.set()
        except ValueError:
            pass  # checked before anything is kept: _on_frame's way judges that frame
        self._expected_dseq = expected
        self._received += frames
        self.delivered += frames
        batch.nbytes += block_bytes
        return pos, frames, payload_bytes

    # -- consumer lifecycle ---------------------------------------------------------

    async def _create_consumer(self) -> str:
        name = f"archiver-{uuid.uuid4().hex[:16]}"
        config = {
            "name": name,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": self._cursor,
            "ack_policy": "none",
            "replay_policy": "instant",
            "inactive_threshold": INACTIVE_THRESHOLD_NS,
            "mem_storage": True,
            "num_replicas": 1,
            "max_waiting": 4,
        }
        await js_api(
            self.nc,
            f"$JS.API.CONSUMER.CREATE.{self.stream}.{name}",
            {"stream_name": self.stream, "config": config},
        )
        self._expected_dseq = 1
        self._broken = False
        return name

    async def _delete_consumer(self, name: str) -> None:
        try:
            await js_api(self.nc, f"$JS.API.CONSUMER.DELETE.{self.stream}.{name}", timeout=2)
        except SourceError:
            # It expires by itself after INACTIVE_THRESHOLD_NS; nothing is pinned by it.
            log.debug("%s: could not delete consumer %s", self.stream, name)

    async def _num_pending(self, name: str) -> int | None:
        """The consumer's pending count, or None if the consumer is gone or silent."""
        try:
            info = await js_api(self.nc, f"$JS.API.CONSUMER.INFO.{self.stream}.{name}")
        except SourceError:
            return None
        return int(info.get("num_pending", 0))

    # -- the read loop ----------------------------------------------------------------

    async def _pull(self, next_subject: str, inbox: str, max_bytes: int) -> None:
        self._done.clear()
        self._received = 0
        self._status = b""
        self._asked = min(self.fetch_rows, self.end_seq - self._cursor + 1)
        request = {"batch": self._asked, "max_bytes": max_bytes, "no_wait": True}
        await self.nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
        try:
            await asyncio.wait_for(self._done.wait(), self.stall_timeout)
        except TimeoutError:
            log.warning("%s: no answer from the consumer in %.0fs", self.stream, self.stall_timeout)
            self._broken = True

    async def batches(self) -> AsyncIterator[Batch]:
        """Batches of at most ``batch_rows`` rows / about ``batch_bytes`` bytes, in order."""
        if self._cursor > self.end_seq:
            return
        failures = 0
        max_bytes = self.fetch_bytes
        while not self._finished:
            try:
                name = await self._create_consumer()
                inbox = self.nc.new_inbox()
                sub = await self.nc.subscribe_raw(inbox, self._on_frame, self._take_frames)
                self._sid = b"%d" % sub._id
            except (SourceError, nats.errors.Error) as exc:
                failures += 1
                if failures > self.max_restarts:
                    raise SourceError(f"cannot read stream {self.stream}: {exc}") from exc
                await asyncio.sleep(min(0.5 * 2**failures, 5.0))
                continue
            next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}"
            try:
                while not self._finished and not self._broken:
                    # Hand over a full batch before pulling more: memory stays at about
                    # one batch however long the stream.
                    if (
                        len(self._batch) >= self.batch_rows
                        or self._batch.nbytes >= self.batch_bytes
                    ):
                        yield self._take()
                    try:
                        await self._pull(next_subject, inbox, max_bytes)
                    except nats.errors.Error as exc:
                        log.warning("%s: pull failed: %s", self.stream, exc)
                        self._broken = True
                        break
                    if self._received:
                        failures = 0
                        continue
                    # Nothing arrived: the status says why.
                    if self._status == b"409" and b"MaxBytes" in self._status_line:
                        # One message is larger than the byte cap: raise the cap for it.
                        max_bytes = min(max_bytes * 2, MAX_FETCH_BYTES)
                    elif self._status in (b"404", b"408"):
                        pending = await self._num_pending(name)
                        if pending == 0:
                            self._finished = True
                        else:
                            # The consumer is gone (None) or claims messages it does not
                            # deliver: start over from the cursor.
                            self._broken = True
                    else:
                        # 503 no consumer, 409 consumer deleted or leadership change, ...
                        self._broken = True
                        if self._status == b"503" and not self.delivered:
                            self._unanswered += 1
                            if self._unanswered >= UNANSWERED_PULLS:
                                raise ConsumerUnusable(
                                    f"stream {self.stream}: every pull of a fresh consumer is "
                                    "answered 503"
                                )
            finally:
                await self.nc.unsubscribe_raw(sub)
                await self._delete_consumer(name)
            if self._broken and not self._finished:
                failures += 1
                self.restarts += 1
                if failures > self.max_restarts:
                    raise SourceError(
                        f"reading stream {self.stream} keeps failing at seq {self._cursor}",
                        hint="check the server's health; the next run resumes here",
                    )
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
        if len(self._batch):
            yield self._take()

    def _take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        return batch
