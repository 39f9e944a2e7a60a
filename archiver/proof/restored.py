"""A drill's restored messages against the archive, matched by archived seq.

Replay sends in sequence order, but a resend (an ack timeout, a 429, a 503) can land a
message later than its neighbours. Each restored message names its archived seq in its
``Nats-Msg-Id``, so messages are matched by it, not by position: one resend is not
thousands of differences. A message still missing once a whole publish window of
messages has arrived after it was due was not restored (counted in messages, not seqs:
a sparse stream's seqs say nothing of how far a resend can land). Memory holds at most
that window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from archiver.nats.api import stream_info
from archiver.nats.conn import RawClient
from archiver.nats.consumer import ConsumerReader
from archiver.replay.headers import is_delete_marker, message_id, replay_headers
from archiver.replay.request import ReplayOptions
from archiver.replay.selection import Selection, iter_rows, iter_selected
from archiver.store import Store

COLUMNS = ["seq", "subject", "time_ns", "raw_headers", "data"]
MAX_LISTED = 20
REORDER_WINDOW = 2 * ReplayOptions.window
"""How far from its place a resent message can land: the publisher's window, twice."""
_ID = b"Nats-Msg-Id:"


@dataclass
class Comparison:
    restored: int = 0
    matched: int = 0
    markers: int = 0
    """KV and object-store delete and purge markers restored (and matched)."""
    differences: int = 0
    examples: list[str] = field(default_factory=list)

    def differ(self, text: str) -> None:
        self.differences += 1
        if len(self.examples) < MAX_LISTED:
            self.examples.append(text)


def archived_seq(raw_headers: bytes | None) -> int | None:
    """The archived seq a restored message carries in its ``Nats-Msg-Id``."""
    for line in (raw_headers or b"").split(b"\r\n"):
        if line.startswith(_ID):
            tail = line[len(_ID) :].strip().rsplit(b":", 1)[-1]
            return int(tail) if tail.isdigit() else None
    return None


class _Matcher:
    """The archive's rows in seq order against restored messages as they come."""

    def __init__(
        self, rows: Iterator[tuple[Any, ...]], sel: Selection, generation: str, prefix: str
    ) -> None:
        self.rows = rows
        self.sel, self.generation, self.prefix = sel, generation, prefix
        self.pending: dict[int, tuple[str, bytes | None, bytes]] = {}
        self.arrived = 0
        """Restored messages taken in so far."""
        self._waiting_since: int | None = None
        self.keep_markers = True
        self.next: tuple[Any, ...] | None = None
        self.out = Comparison()

    def start(self, keep_markers: bool) -> None:
        self.keep_markers = keep_markers
        self.next = self._advance()

    def _advance(self) -> tuple[Any, ...] | None:
        for row in self.rows:
            if self.keep_markers or not (row[3] and is_delete_marker(row[3])):
                return row
        return None

    def settle(self, final: bool) -> None:
        """Match what can be matched; call with ``final`` once every message is in."""
        while self.next is not None:
            seq = self.next[0]
            if seq not in self.pending:
                if not final:
                    if self._waiting_since is None:
                        self._waiting_since = self.arrived
                    if self.arrived - self._waiting_since < REORDER_WINDOW:
                        return  # it may still come
                self.out.differ(f"archived seq {seq} was not restored")
            else:
                self._check(self.next, self.pending.pop(seq))
            self.next = self._advance()
            self._waiting_since = None
        if final:
            for seq in sorted(self.pending)[:MAX_LISTED]:
                self.out.differ(f"restored archived seq {seq} is not in the selection")
            self.out.differences += max(0, len(self.pending) - MAX_LISTED)

    def _check(self, want: tuple[Any, ...], got: tuple[str, bytes | None, bytes]) -> None:
        seq, subject, time_ns, raw, data = want
        headers = replay_headers(
            raw,
            msg_id=message_id(self.sel.stream, self.generation, seq),
            stream=self.sel.stream,
            seq=seq,
            time_ns=time_ns,
        )
        wrong = [
            name
            for name, ok in (
                ("subject", got[0] == f"{self.prefix}.{subject}"),
                ("payload", got[2] == data),
                ("headers", got[1] == headers),
            )
            if not ok
        ]
        if wrong:
            self.out.differ(f"archived seq {seq}: {', '.join(wrong)} differ")
            return
        self.out.matched += 1
        if raw and is_delete_marker(raw):
            self.out.markers += 1


async def compare_restored(
    nc: RawClient,
    store: Store,
    sel: Selection,
    generation: str,
    files: list[Any],
    scratch: str,
    prefix: str,
    keep_markers: bool,
) -> Comparison:
    """Every restored message against the archived one of its seq, and every archived
    one (of the selection, as replay sends them) restored."""
    info = await stream_info(nc, scratch)
    rows = iter_rows(iter_selected(store, files, sel, COLUMNS), COLUMNS)
    matcher = _Matcher(rows, sel, generation, prefix)
    await asyncio.to_thread(matcher.start, keep_markers)
    matcher.out.restored = info.messages
    if info.messages:
        async for batch in ConsumerReader(nc, scratch, 1, info.last_seq).batches():
            for i in range(len(batch)):
                seq = archived_seq(batch.raw_headers[i])
                if seq is None:
                    matcher.out.differ(f"scratch seq {batch.seqs[i]} carries no archive id")
                elif seq in matcher.pending:
                    matcher.out.differ(f"archived seq {seq} was restored twice")
                else:
                    matcher.pending[seq] = (batch.subjects[i], batch.raw_headers[i], batch.data[i])
                    matcher.arrived += 1
            await asyncio.to_thread(matcher.settle, False)
    await asyncio.to_thread(matcher.settle, True)
    return matcher.out
