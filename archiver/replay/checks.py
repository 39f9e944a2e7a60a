"""Checks on the target before anything is sent: every subject captured, every message
fits, and no replay into the live source stream without ``--yes``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from archiver.config import Settings
from archiver.errors import ArchiverError, SourceError, UnsafeActionRefused
from archiver.nats.api import StreamInfo, list_streams
from archiver.nats.conn import RawClient, connect
from archiver.nats.options import NatsOptions
from archiver.replay.plan import Plan
from archiver.replay.request import ReplayOptions
from archiver.replay.subjects import captured_by

log = logging.getLogger(__name__)


async def check_target(
    nc: RawClient,
    plan: Plan,
    exact_largest: Callable[[], int],
    mapped: bool,
    problems: list[str] | None = None,
) -> list[StreamInfo]:
    """Every mapped subject is captured by a stream that accepts the largest message
    (the plan's bound from file footers, or ``exact_largest()`` where that is over).

    With ``problems`` (a dry run), each problem is added there instead of raised, so the
    plan is shown with everything that would stop the real replay.
    """
    streams = await list_streams(nc)
    used: dict[str, StreamInfo] = {}
    uncaptured = []
    for subject in plan.by_subject:
        owner = next(
            (s for s in streams if captured_by(subject, s.config.get("subjects") or [])), None
        )
        if owner is None:
            uncaptured.append(subject)
        else:
            used[owner.name] = owner
    if uncaptured:
        shown = ", ".join(uncaptured[:3]) + (" ..." if len(uncaptured) > 3 else "")
        _problem(
            problems,
            SourceError(
                f"no stream on the target captures subject {shown}",
                hint="create a stream on the target that captures them"
                + ("" if mapped else ", or map them with --subject-prefix/--subject-map")
                + "; nothing was sent",
            ),
        )
    max_payload = int(nc.max_payload)
    for info in used.values():
        limit = max_payload
        max_msg_size = int(info.config.get("max_msg_size", -1))
        if max_msg_size > 0:
            limit = min(limit, max_msg_size)
        if plan.largest_bound > limit:
            plan.largest_bound = await asyncio.to_thread(exact_largest)
        if plan.largest_bound > limit:
            _problem(
                problems,
                SourceError(
                    f"a message of up to {plan.largest_bound} bytes (headers included) is "
                    f"larger than stream {info.name} on the target accepts ({limit} bytes)",
                    hint="raise max_payload / max_msg_size on the target; nothing was sent",
                ),
            )
    return list(used.values())


def _problem(problems: list[str] | None, error: ArchiverError) -> None:
    if problems is None:
        raise error
    problems.append(error.line())


async def _same_server(source: NatsOptions, target: RawClient, target_opts: NatsOptions) -> bool:
    if source.url == target_opts.url:
        return True
    try:
        nc = await connect(source)
    except SourceError:
        return False  # the source is not reachable, so it cannot be the target
    try:
        return bool(nc._server_info.get("server_id") == target._server_info.get("server_id"))
    finally:
        await nc.close()


async def check_safety(
    settings: Settings,
    opts: ReplayOptions,
    target: RawClient,
    target_opts: NatsOptions,
    plan: Plan,
    streams: list[StreamInfo],
) -> None:
    """Replaying into the live source stream on the same server needs --yes (a dry run
    without it is told, as a problem it would meet)."""
    if opts.yes:
        return
    live = opts.selection.stream
    named = [s for s in streams if s.name == live]
    if not named:
        return
    # The same stream, whichever node or URL it is reached through: its creation time
    # is the archive's generation. A stream of that name elsewhere (a DR cluster) is not.
    if named[0].generation == plan.generation or await _same_server(
        settings.nats, target, target_opts
    ):
        raise UnsafeActionRefused(
            f"this replay would publish into the live stream {live} on the server it came from",
            hint="map subjects elsewhere (--subject-prefix), use --target-url, or pass --yes",
        )
