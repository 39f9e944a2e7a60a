"""Putting a stream's archived messages back at their original sequence numbers.

The restored stream takes messages on one private intake subject only (``intake``),
which its configuration transforms back into each message's own subject, so nothing
else can publish into it. Messages go out pipelined, in seq order, with their exact
header block and payload; a seq the archive does not hold (an interior delete, an
expired or lost message) gets a placeholder, removed at the end, leaving a hole where
the source had one; after the last archived message, placeholders carry the stream on
to ``plan.end_seq``.

Every acknowledgement must name the archived seq; the first that does not stops the
restore. NATS has no header-free sequence guard (``Nats-Expected-Last-Sequence`` would be
stored in every restored message), so the rest is made impossible instead: no limit
is on while messages go back, the window is smaller than the server's ingest queue (no
429), nothing is resent blindly (``max_attempts=1``), and a message whose own headers
could make the server refuse or drop it (``Nats-Expected-*``, a ``Nats-Msg-Id`` sent
within the duplicate window) goes out alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from archiver import failpoints
from archiver.errors import SourceError
from archiver.nats.conn import RawClient
from archiver.nats.publisher import JsPublisher
from archiver.replay.selection import iter_rows, iter_selected
from archiver.restore.plan import HOLE_SUBJECT, Extent, StreamPlan
from archiver.store.base import Store

WINDOW = 1000
"""Publishes in flight: well under the server's per-stream ingest queue, so none is
refused as too many; a shift, were one to happen, could only be among the last WINDOW
seqs, which is what a continued restore checks."""

DUPLICATE_WINDOW_S = 0.25
"""Longer than the 100 ms duplicate window the stream has while messages go back."""

_CHECKED = (b"nats-expected-",)
_MSG_ID = b"nats-msg-id"


class Shifted(SourceError):
    """A message was stored at another seq than its archived one."""


def _header_pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in raw.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


class Loader:
    """Publishes one stream's rows and holes after seq ``after``; counts what it did."""

    def __init__(
        self, nc: RawClient, plan: StreamPlan, extent: Extent, intake: str, progress: bool
    ) -> None:
        self.nc = nc
        self.plan = plan
        self.extent = extent
        self.intake = intake
        self.messages = 0
        self.holes = 0
        self._progress = progress
        self._recent_ids: deque[tuple[float, bytes]] = deque()
        self._recent_set: dict[bytes, float] = {}

    def _check_ack(self, expected: int, stream: str, seq: int, duplicate: bool) -> None:
        if duplicate or seq != expected:
            what = "dropped as a duplicate" if duplicate else f"stored at seq {seq}"
            raise Shifted(
                f"restoring {self.plan.stream} into {stream}: archived seq {expected} was {what}",
                hint=f"delete stream {stream} on the target and run the restore again",
            )

    async def load(self, store: Store, after: int) -> None:
        publisher: JsPublisher[int] = JsPublisher(
            self.nc, window=WINDOW, max_attempts=1, ack_timeout=10.0, on_acked=self._check_ack
        )
        await publisher.start()
        bar = _progress(self.extent.count, self._progress, self.plan.target)
        try:
            await self._publish(store, publisher, after, bar.update if bar else None)
            await publisher.drain()
        except SourceError as exc:
            if publisher.refused is None or isinstance(exc, Shifted):
                raise
            seq, why = publisher.refused
            hint = "running again will not help; restore the other streams with --stream"
            if "10071" in why:  # wrong last sequence for the subject
                hint += (
                    "; a clustered stream on nats-server before 2.12.8 checks "
                    "Nats-Expected-Last-Subject-Sequence against the restore's intake "
                    "subject: restore with --replicas 1 and raise the replicas afterwards"
                )
            raise SourceError(
                f"the target refused archived seq {seq} of {self.plan.stream}: {why}",
                hint=hint,
            ) from exc
        finally:
            if bar is not None:
                bar.close()
            await publisher.close()

    def _rows(self, store: Store) -> Iterator[tuple[Any, ...]]:
        columns = ["seq", "subject", "raw_headers", "data"]
        tables = iter_selected(store, self.plan.files, self.plan.selection, columns)
        return iter_rows(tables, columns)

    async def _holes(self, publisher: JsPublisher[int], first: int, last: int) -> None:
        for seq in range(first, last + 1):
            subject = self.extent.hole_subjects.get(seq, HOLE_SUBJECT)
            await publisher.publish(f"{self.intake}.{subject}", None, b"", seq)
            self.holes += 1

    async def _publish(
        self,
        store: Store,
        publisher: JsPublisher[int],
        after: int,
        tick: Callable[[int], Any] | None,
    ) -> None:
        expected = after + 1
        for seq, subject, raw, data in self._rows(store):
            if seq <= after:
                continue
            await self._holes(publisher, expected, seq - 1)
            failpoints.hit("restore-message")
            alone = raw is not None and await self._must_go_alone(publisher, raw)
            await publisher.publish(f"{self.intake}.{subject}", raw, data, seq)
            if alone:
                await publisher.drain()  # a refusal must find nothing after it in flight
            self.messages += 1
            expected = seq + 1
            if tick is not None:
                tick(1)
        await self._holes(publisher, expected, self.plan.end_seq)

    async def _must_go_alone(self, publisher: JsPublisher[int], raw: bytes) -> bool:
        """Wait until ``raw``'s headers cannot make the server refuse or drop it silently;
        True when it must also be acknowledged before anything else is sent."""
        pairs = _header_pairs(raw)
        if any(key.startswith(_CHECKED) for key, _ in pairs):
            await publisher.drain()
            return True
        ids = [value for key, value in pairs if key == _MSG_ID]
        if not ids:
            return False
        now = time.monotonic()
        while self._recent_ids and now - self._recent_ids[0][0] > DUPLICATE_WINDOW_S:
            _, old = self._recent_ids.popleft()
            if self._recent_set.get(old, 0) <= now - DUPLICATE_WINDOW_S:
                self._recent_set.pop(old, None)
        if ids[-1] in self._recent_set:
            # The same id went out moments ago: once it is stored, the server would drop
            # this one as a duplicate for the next 100 ms, and every later message would
            # shift. Wait for its acknowledgement, then longer than the window.
            await publisher.drain()
            await asyncio.sleep(DUPLICATE_WINDOW_S)
        self._recent_ids.append((time.monotonic(), ids[-1]))
        self._recent_set[ids[-1]] = time.monotonic()
        return False


def _progress(total: int, wanted: bool, name: str) -> Any:
    if not (wanted and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, file=sys.stderr, desc=name)
