"""``archiver replay``: republish a slice of the archive into NATS, exactly and idempotently.

select -> plan (counts, sizes; reads no payloads) -> check the target -> publish in
sequence order with a deterministic ``Nats-Msg-Id`` per archived message, pacing and a
bounded window of unacknowledged messages -> report. Progress is checkpointed in a KV
bucket on the target, so ``--resume`` continues after the acknowledged prefix.
"""

from __future__ import annotations

import asyncio
import logging
import time

from archiver.config import Settings
from archiver.errors import DataAtRisk, Interrupted, UnsafeActionRefused
from archiver.nats.conn import connect
from archiver.nats.options import redact_url
from archiver.replay.checkpoint import (
    CHECKPOINT_EVERY_MESSAGES,
    Checkpoint,
    replay_id,
    tail_already_stored,
)
from archiver.replay.checks import check_safety, check_target
from archiver.replay.plan import exact_largest, make_plan
from archiver.replay.publish import publish_all
from archiver.replay.request import ReplayOptions, ReplaySummary
from archiver.replay.selection import unexplained_holes
from archiver.store import open_store

log = logging.getLogger(__name__)


async def replay(settings: Settings, opts: ReplayOptions) -> ReplaySummary:
    settings.nats.check()
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    plan = await asyncio.to_thread(make_plan, store, opts)
    sel = opts.selection
    target_opts = opts.target or settings.nats
    summary = ReplaySummary(
        stream=sel.stream,
        generation=plan.generation,
        target=redact_url(target_opts.url),
        target_streams=[],
        matched=plan.messages,
        skipped=plan.skipped_markers,
        dry_run=opts.dry_run,
        by_subject=dict(plan.by_subject.most_common()),
        sample_subjects=[list(p) for p in plan.samples],
    )
    summary.bytes = plan.payload_bytes or 0
    holes = await asyncio.to_thread(unexplained_holes, store, sel, plan.generation, plan.files)
    if holes and not opts.allow_gaps and not opts.dry_run:
        shown = ", ".join(f"{a}-{b}" for a, b in holes[:5]) + (" ..." if len(holes) > 5 else "")
        raise DataAtRisk(
            f"the archive of {sel.stream} cannot account for seqs {shown} in this selection "
            "(a data file lost or deleted); nothing was sent",
            hint="run archiver verify (and archiver run, which heals what the server still "
            "holds); --allow-gaps replays what there is",
        )
    summary.unexplained = [[a, b] for a, b in holes]
    if plan.messages == 0:
        return summary
    started = time.monotonic()
    nc = await connect(target_opts)
    try:
        problems: list[str] | None = [] if opts.dry_run else None
        mapped = not opts.mapper.is_identity
        streams = await check_target(
            nc, plan, lambda: exact_largest(store, opts, plan), mapped, problems
        )
        summary.target_streams = [s.name for s in streams]
        try:
            await check_safety(settings, opts, nc, target_opts, plan, streams)
        except UnsafeActionRefused as exc:
            if problems is None:
                raise
            problems.append(exc.line())
        if opts.dry_run:
            if holes and not opts.allow_gaps:
                assert problems is not None  # a list in a dry run
                shown = ", ".join(f"{a}-{b}" for a, b in holes[:5])
                problems.append(
                    f"the archive cannot account for seqs {shown}; --allow-gaps replays "
                    "around them"
                )
            summary.problems = problems or []
            return summary
        summary.skipped = 0
        checkpoint = Checkpoint(nc, replay_id(opts, plan.generation, streams), opts.checkpoint)
        await checkpoint.open()
        skip_through: int | None = None
        skip: set[int] = set()
        if opts.resume:
            skip_through = await checkpoint.load()
            summary.resumed_after_seq = skip_through
            if skip_through is not None:
                prefix = f"archive:{sel.stream}:{plan.generation}:"
                skip = await tail_already_stored(
                    nc,
                    streams,
                    prefix,
                    skip_through,
                    depth=opts.window + 2 * CHECKPOINT_EVERY_MESSAGES,
                )
        summary.bytes = 0
        try:
            await publish_all(store, opts, plan, nc, checkpoint, skip_through, skip, summary)
        except asyncio.CancelledError:
            raise Interrupted(
                f"{summary.published} of {summary.matched} messages were published before the "
                "stop; those acknowledged are kept as this replay's progress",
                hint="run the same command with --resume to continue after them",
            ) from None
    finally:
        await nc.close()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
