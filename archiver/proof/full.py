"""``drill --full``: the drill restores with ``restore`` itself, into a renamed scratch
stream, and compares it with the archive seq for seq, so its RTO is a real recovery's.

The scratch stream keeps the restore's private intake subject (its archived subjects
would overlap the live stream's on the same server), and so it is never configured
as archived and gets no consumers: those steps are the restore tests' to prove. Every
archived message must be at its own seq with its subject, header block and payload,
and every other seq of the range must be a hole.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from archiver.nats.api import OWN_MARK, get_message
from archiver.nats.conn import RawClient
from archiver.proof.drill import StreamDrill
from archiver.replay.selection import iter_rows, iter_selected
from archiver.restore.config import Overrides
from archiver.restore.load import Loader
from archiver.restore.plan import StreamPlan, plan_stream, scan
from archiver.restore.target import prepare, remove_placeholders, rollup_of
from archiver.store import Store

GETS_AT_ONCE = 256
MAX_LISTED = 10


@dataclass
class FullRestore:
    scratch: str
    archived: int = 0
    restored: int = 0
    matched: int = 0
    differences: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def differ(self, text: str) -> None:
        self.differences += 1
        if len(self.examples) < MAX_LISTED:
            self.examples.append(text)


async def restore_and_compare(
    nc: RawClient, store: Store, stream: str, drilled: StreamDrill
) -> FullRestore:
    """Restore ``stream`` into a scratch stream on ``nc`` (its name set on ``drilled``
    first, so that the drill removes it whatever happens), then compare seq for seq."""
    scratch = f"DRILL_{uuid.uuid4().hex[:10]}_{stream}"[:200]
    drilled.scratch_stream = scratch
    # One replica: a drill proves the archive, not the cluster's placement.
    plan = await asyncio.to_thread(plan_stream, store, stream, scratch, None, Overrides(replicas=1))
    plan.config["description"] = f"{OWN_MARK} drill scratch stream of {stream}"
    plan.consumers = []
    found = FullRestore(scratch)
    extent = await asyncio.to_thread(scan, store, plan)
    started = time.monotonic()
    target = await prepare(nc, store, plan, extent)
    await Loader(nc, plan, extent, target.intake, progress=False).load(store, target.after)
    await remove_placeholders(nc, scratch, extent)
    found.seconds = time.monotonic() - started
    await _compare(nc, store, plan, found)
    return found


Row = tuple[int, str, bytes | None, bytes]


async def _compare(nc: RawClient, store: Store, plan: StreamPlan, found: FullRestore) -> None:
    """Each archived message at its seq, byte for byte, or gone the way the server
    removes messages itself (a later ``Nats-Rollup`` on its subject, or all; a TTL)."""
    columns = ["seq", "subject", "raw_headers", "data"]
    rows = iter_rows(iter_selected(store, plan.files, plan.selection, columns), columns)
    window: list[tuple[int, Row | None]] = []  # None: a hole, which must stay one
    missing: dict[str, list[int]] = {}  # by subject, until a later rollup explains them
    expected = None
    for row in rows:
        found.archived += 1
        rollup = rollup_of(row[2])
        if rollup == b"all":
            await _check(nc, plan.target, window, found, missing)
            window, missing = [], {}
        elif rollup == b"sub":
            await _check(nc, plan.target, window, found, missing)
            window = []
            missing.pop(row[1], None)
        if expected is not None:
            window += [(hole, None) for hole in range(expected, row[0])]
        window.append((row[0], row))
        expected = row[0] + 1
        if len(window) >= GETS_AT_ONCE:
            await _check(nc, plan.target, window, found, missing)
            window = []
    await _check(nc, plan.target, window, found, missing)
    for subject, seqs in missing.items():
        for seq in seqs:
            found.matched -= 1
            found.restored -= 1
            found.differ(f"seq {seq}: archived {subject}, not restored")


async def _check(
    nc: RawClient,
    scratch: str,
    window: list[tuple[int, Row | None]],
    found: FullRestore,
    missing: dict[str, list[int]],
) -> None:
    got = await asyncio.gather(*(get_message(nc, scratch, seq) for seq, _ in window))
    for (seq, row), stored in zip(window, got, strict=True):
        if stored is not None:
            found.restored += 1
        if row is None:
            if stored is not None:
                found.differ(f"seq {seq}: a hole in the archive, but {stored.subject} restored")
        elif stored is None:
            # Restored, then removed by the server as the source removed it (its TTL, a
            # later rollup): counted as restored and matched, and counted back out
            # below if no rollup explains it.
            found.restored += 1
            found.matched += 1
            if b"nats-ttl:" not in (row[2] or b"").lower():
                missing.setdefault(row[1], []).append(seq)
        elif (seq, stored.subject, stored.raw_headers, stored.data) == row:
            found.matched += 1
        else:
            found.differ(f"seq {seq}: {row[1]} restored differently")
