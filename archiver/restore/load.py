"""Putting a stream's archived messages back at their original sequence numbers.

The restored stream takes messages on one private intake subject only (``intake``),
which its configuration transforms back into each message's own subject, so nothing
else can publish into it. Messages go out pipelined, in seq order, with their exact
header block and payload; a seq the archive does not hold (an interior delete, an
expired or lost message) gets a placeholder on ``HOLE_SUBJECT``, and the placeholders
are purged together at the end, leaving holes where the source had them.

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
from collections.abc import Callable
from typing import Any

from archiver import failpoints
from archiver.errors import SourceError
from archiver.nats.conn import RawClient
from archiver.nats.publisher import JsPublisher
from archiver.replay.selection import iter_rows, iter_selected
from archiver.restore.plan import StreamPlan
from archiver.store.base import Store

HOLE_SUBJECT = "_archiver_restore.hole"
"""Where placeholders are stored (after the intake transform) until they are purged."""

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


def _header_keys(raw: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in raw.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


class Loader:
    """Publishes one stream's rows and holes after seq ``after``; counts what it did."""

    def __init__(self, nc: RawClient, plan: StreamPlan, intake: str, progress: bool) -> None:
        self.nc = nc
        self.plan = plan
        self.intake = intake
        self.messages = 0
        self.holes = 0
        self.last_seq = 0
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
        self.last_seq = seq

    async def load(self, store: Store, after: int, total: int) -> None:
        publisher: JsPublisher[int] = JsPublisher(
            self.nc, window=WINDOW, max_attempts=1, ack_timeout=10.0, on_acked=self._check_ack
        )
        await publisher.start()
        bar = _progress(total, self._progress, self.plan.target)
        try:
            await self._publish_rows(store, publisher, after, bar.update if bar else None)
            await publisher.drain()
        finally:
            if bar is not None:
                bar.close()
            await publisher.close()

    async def _publish_rows(
        self,
        store: Store,
        publisher: JsPublisher[int],
        after: int,
        tick: Callable[[int], Any] | None,
    ) -> None:
        columns = ["seq", "subject", "raw_headers", "data"]
        rows = iter_rows(
            iter_selected(store, self.plan.files, self.plan.selection, columns), columns
        )
        expected = after + 1
        hole = f"{self.intake}.{HOLE_SUBJECT}"
        for seq, subject, raw, data in rows:
            if seq <= after:
                continue
            while expected < seq:
                await publisher.publish(hole, None, b"", expected)
                self.holes += 1
                expected += 1
            failpoints.hit("restore-message")
            alone = raw is not None and await self._must_go_alone(publisher, raw)
            await publisher.publish(f"{self.intake}.{subject}", raw, data, seq)
            if alone:
                await publisher.drain()  # a refusal must find nothing after it in flight
            self.messages += 1
            expected = seq + 1
            if tick is not None:
                tick(1)

    async def _must_go_alone(self, publisher: JsPublisher[int], raw: bytes) -> bool:
        """Wait until ``raw``'s headers cannot make the server refuse or drop it silently;
        True when it must also be acknowledged before anything else is sent."""
        pairs = _header_keys(raw)
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
        sent_at = self._recent_set.get(ids[-1])
        if sent_at is not None:
            # The same id went out moments ago: within the duplicate window the server
            # would drop this one and every later message would shift.
            await publisher.drain()
            await asyncio.sleep(max(0.0, sent_at + DUPLICATE_WINDOW_S - time.monotonic()))
        self._recent_ids.append((time.monotonic(), ids[-1]))
        self._recent_set[ids[-1]] = time.monotonic()
        return False


def _progress(total: int, wanted: bool, name: str) -> Any:
    if not (wanted and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, file=sys.stderr, desc=name)
