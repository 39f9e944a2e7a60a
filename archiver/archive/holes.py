"""Sequences a reader skipped on its way through a stream, found and classified."""

from __future__ import annotations

from archiver.errors import (
    SourceError,
    UsageError,
)
from archiver.format.gaps import Gap, GapKind, classify
from archiver.nats.api import StreamInfo, stream_info
from archiver.nats.conn import RawClient


class HoleFinder:
    """Finds the sequences a reader skipped, and classifies them."""

    def __init__(self, nc: RawClient, info: StreamInfo, next_seq: int, first_run: bool) -> None:
        self.nc = nc
        self.info = info
        self.next_seq = next_seq
        # A generation's first run did not promise what was gone before it started.
        self.head_at_first_run = info.first_seq if first_run else 0
        # WorkQueue and Interest streams remove what their consumers take, by design.
        self.removed = GapKind.CONSUMED if info.needs_consumerless_read else GapKind.EXPIRED

    async def holes_before(self, seqs: list[int]) -> list[Gap]:
        """Holes between the expected next sequence and each of ``seqs`` (strictly rising,
        as every reader yields them)."""
        expected = self.next_seq
        if seqs and seqs[0] == expected and seqs[-1] - expected == len(seqs) - 1:
            # Rising seqs that span exactly their count have no hole: the common
            # batch, checked without a Python loop over 20,000 seqs.
            self.next_seq = seqs[-1] + 1
            return []
        raw: list[tuple[int, int]] = []
        for seq in seqs:
            if seq != expected:
                raw.append((expected, seq - 1))
            expected = seq + 1
        self.next_seq = expected
        return await self._classify(raw)

    async def holes_up_to(self, end_seq: int) -> list[Gap]:
        """The trailing hole after the last message read, up to ``end_seq``."""
        if self.next_seq > end_seq:
            return []
        raw = [(self.next_seq, end_seq)]
        self.next_seq = end_seq + 1
        return await self._classify(raw)

    async def _classify(self, raw: list[tuple[int, int]]) -> list[Gap]:
        if not raw:
            return []
        # The head only moves up: what lies below it now was removed from the head.
        head_now = (await fresh_info(self.nc, self.info.name)).first_seq
        return [
            g
            for a, b in raw
            for g in classify(
                a,
                b,
                head_now=head_now,
                head_at_first_run=self.head_at_first_run,
                removed=self.removed,
            )
        ]


async def fresh_info(nc: RawClient, name: str) -> StreamInfo:
    try:
        return await stream_info(nc, name)
    except UsageError as exc:
        raise SourceError(f"stream {name} disappeared during the run") from exc
