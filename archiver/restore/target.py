"""The restored stream on the target server: created for the restore, continued after
an interruption, recognised when already restored, refused when it is anything else,
and finished with its archived configuration and its durable consumers.

A stream being restored carries ``MARKER`` in its metadata (which archive stream and
generation, and its private intake subject) until the last step removes it, so a restore
run again knows its own unfinished work from a stream that merely has the same name.
"""

from __future__ import annotations

import copy
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from archiver import failpoints
from archiver.errors import ApiError, SourceError, UnsafeActionRefused
from archiver.nats.api import STREAM_NOT_FOUND, get_message
from archiver.nats.conn import RawClient, js_api
from archiver.replay.selection import Selection, iter_rows, iter_selected
from archiver.restore.config import consumer_config, intake_config
from archiver.restore.load import WINDOW
from archiver.restore.plan import HOLE_SUBJECT, Extent, StreamPlan
from archiver.store.base import Store

MARKER = "nats-archiver.restore"
CONSUMER_NOT_FOUND = 10014
NO_MESSAGE = (10037, 10043)  # no message found; sequence not found
_FITTING = ("replica", "peer", "placement", "storage", "cluster", "resources")


@dataclass
class Target:
    """Where a stream's restore stands on the target."""

    intake: str
    after: int
    """The highest seq already in place: the load continues after it."""
    loaded: bool = False
    """Every message is in place and the archived configuration applied."""
    done: bool = False
    """The stream already holds this restore, finished: nothing left to do."""
    continued: bool = False
    ignored: list[str] = field(default_factory=list)
    """Configuration the target server does not know (an older server): left out."""


async def stream_state(nc: RawClient, name: str) -> dict[str, Any] | None:
    try:
        return await js_api(nc, f"$JS.API.STREAM.INFO.{name}")
    except ApiError as exc:
        if exc.err_code == STREAM_NOT_FOUND:
            return None
        raise


def _marker(plan: StreamPlan, intake: str) -> dict[str, str]:
    body = {"stream": plan.stream, "generation": plan.generation, "intake": intake}
    return {MARKER: json.dumps(body, sort_keys=True)}


def _ours(info: dict[str, Any]) -> dict[str, Any] | None:
    raw = (info["config"].get("metadata") or {}).get(MARKER)
    return json.loads(raw) if raw is not None else None


def _pristine(info: dict[str, Any]) -> bool:
    """A stream of that name that never held anything and has no consumers."""
    state = info["state"]
    return not state.get("last_seq") and not state.get("consumer_count")


@dataclass
class Assessment:
    """What the target holds under the plan's name, and so what the restore will do."""

    action: str
    """``create`` (no such stream, or one that never held anything), ``continue`` (this
    restore, interrupted), ``done`` (this restore, finished) or ``refuse``."""
    why: str = ""
    after: int = 0
    intake: str = ""
    loaded: bool = False
    exists: bool = False
    """``create`` over a stream of that name that never held anything: an update."""


async def assess(nc: RawClient, store: Store, plan: StreamPlan, extent: Extent) -> Assessment:
    """Look at the target without changing anything."""
    start = extent.start
    info = await stream_state(nc, plan.target)
    if info is None or _pristine(info):
        return Assessment("create", exists=info is not None)
    ours = _ours(info)
    last = int(info["state"].get("last_seq", 0))
    if ours is None:
        # No marker: a finished restore of this very archive, if it ends exactly here.
        end = extent.end
        same_stream = info["config"].get("subjects") == plan.config.get("subjects")
        if (
            same_stream
            and last == end
            and await _first_difference(nc, store, plan, extent, start, last) is None
        ):
            return Assessment("done", after=last)
        messages = int(info["state"].get("messages", 0))
        return Assessment(
            "refuse",
            f"target stream {plan.target} exists and holds {messages} messages; "
            "nothing was changed",
        )
    if (ours.get("stream"), ours.get("generation")) != (plan.stream, plan.generation):
        return Assessment(
            "refuse",
            f"target stream {plan.target} is being restored from {ours.get('stream')} "
            f"generation {ours.get('generation')}, not this one; nothing was changed",
        )
    intake = str(ours["intake"])
    if info["config"].get("subjects") != [f"{intake}.>"]:
        return Assessment("continue", after=last, intake=intake, loaded=True)
    if last >= start:
        differs = await _first_difference(nc, store, plan, extent, start, last)
        if differs is not None:
            return Assessment(
                "refuse",
                f"target stream {plan.target} does not hold an exact prefix of the archive "
                f"(seq {differs} differs); nothing was changed",
            )
    return Assessment("continue", after=max(last, start - 1), intake=intake)


async def prepare(nc: RawClient, store: Store, plan: StreamPlan, extent: Extent) -> Target:
    """Create the stream for the restore, or find where an interrupted one stopped."""
    start = extent.start
    found = await assess(nc, store, plan, extent)
    if found.action == "refuse":
        hint = (
            f"delete stream {plan.target} on the target and run the restore again"
            if "exact prefix" in found.why
            else "restore into a server without it, --rename it, or delete it first"
        )
        raise UnsafeActionRefused(found.why, hint=hint)
    if found.action == "create":
        return await _create(nc, plan, start, "UPDATE" if found.exists else "CREATE")
    if found.action == "done":
        return Target("", found.after, loaded=True, done=True)
    if not found.loaded and found.after < start:
        await _start_at(nc, plan.target, start)  # killed between creating and the purge
    return Target(found.intake, max(found.after, start - 1), loaded=found.loaded, continued=True)


async def _create(nc: RawClient, plan: StreamPlan, start: int, verb: str) -> Target:
    intake = f"_archiver_restore.{secrets.token_hex(8)}"
    config = intake_config(plan.config, intake, _marker(plan, intake))
    try:
        made = await js_api(nc, f"$JS.API.STREAM.{verb}.{plan.target}", config)
    except ApiError as exc:
        fitting = any(word in exc.description.lower() for word in _FITTING)
        raise SourceError(
            f"the target cannot make stream {plan.target} as archived: {exc.description}",
            hint="--replicas, --storage and --placement-* fit it to a smaller cluster"
            if fitting
            else "nothing was written; see what the server says",
        ) from exc
    taken = made.get("config", {})
    ignored = sorted(k for k in plan.config if k not in taken and k != "metadata")
    await _start_at(nc, plan.target, start)
    return Target(intake, start - 1, ignored=ignored)


async def _start_at(nc: RawClient, stream: str, first_seq: int) -> None:
    """On an empty stream, a purge up to ``first_seq`` makes it the next seq."""
    if first_seq > 1:
        await js_api(nc, f"$JS.API.STREAM.PURGE.{stream}", {"seq": first_seq})


async def _first_difference(
    nc: RawClient, store: Store, plan: StreamPlan, extent: Extent, start: int, last: int
) -> int | None:
    """The first of the target's newest ``WINDOW`` seqs up to ``last`` that is not the
    archive's, or None.

    An interrupted restore leaves an exact prefix: a shift could only be among its last
    WINDOW seqs (see ``load``). A hole must be empty or hold its placeholder; an
    archived message must be there byte for byte, or gone the way the server removes
    messages itself: rolled up by a later ``Nats-Rollup`` message, or expired by its TTL.
    """
    lo = max(start, last - WINDOW, 1)
    if lo > last:
        return None
    sel = Selection(plan.stream, plan.generation, from_seq=lo, to_seq=last, until_ns=plan.until_ns)
    columns = ["seq", "subject", "raw_headers", "data"]
    rows = iter_rows(iter_selected(store, plan.files, sel, columns), columns)
    archived = {row[0]: row[1:] for row in rows}
    rollups = [(seq, rollup_of(raw), subject) for seq, (subject, raw, _) in archived.items()]
    for seq in range(lo, last + 1):
        stored = await get_message(nc, plan.target, seq)
        want = archived.get(seq)
        if want is None:
            placeholder = (HOLE_SUBJECT, extent.hole_subjects.get(seq))
            same = stored is None or (stored.subject in placeholder and not stored.data)
        elif stored is None:
            subject, raw, _ = want
            same = b"nats-ttl:" in (raw or b"").lower() or any(
                later > seq and (kind == b"all" or (kind == b"sub" and on == subject))
                for later, kind, on in rollups
            )
        else:
            same = (stored.subject, stored.raw_headers, stored.data) == want
        if not same:
            return seq
    return None


def rollup_of(raw: bytes | None) -> bytes | None:
    """A message's ``Nats-Rollup`` value (``sub`` or ``all``), lower case, if any."""
    for line in (raw or b"").split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"nats-rollup":
            return value.strip().lower()
    return None


async def remove_placeholders(nc: RawClient, name: str, extent: Extent) -> None:
    """Turn every placeholder into the hole it stands for."""
    for seq in sorted(extent.hole_subjects):  # placeholders on messages' own subjects
        try:
            await js_api(nc, f"$JS.API.STREAM.MSG.DELETE.{name}", {"seq": seq})
        except ApiError as exc:
            # Gone already: rolled up, or removed by the per-subject limit (2.10 answers
            # "no message found" with a code of its own).
            if exc.err_code not in NO_MESSAGE and "no message" not in exc.description:
                raise
    await js_api(nc, f"$JS.API.STREAM.PURGE.{name}", {"filter": HOLE_SUBJECT})


async def finish(
    nc: RawClient, plan: StreamPlan, extent: Extent, target: Target, consumers: bool
) -> int:
    """Remove the placeholders, apply the archived configuration, recreate the durable
    consumers, then drop the marker; the number of consumers in place."""
    name = plan.target
    try:
        return await _finish(nc, plan, extent, target, consumers)
    except ApiError as exc:
        raise SourceError(
            f"stream {name} holds every restored message but could not be finished "
            f"(configuration and consumers): {exc.description}",
            hint="it keeps its restore marker: fix what the server says and run the same "
            "command again, which finishes it",
        ) from exc


async def _finish(
    nc: RawClient, plan: StreamPlan, extent: Extent, target: Target, consumers: bool
) -> int:
    name = plan.target
    if not target.loaded:
        await remove_placeholders(nc, name, extent)
        marked = copy.deepcopy(plan.config)
        marked["metadata"] = {**(plan.config.get("metadata") or {}), **_marker(plan, target.intake)}
        marked["sealed"] = False  # a sealed stream takes no more updates
        if plan.config.get("retention") == "interest":
            marked["retention"] = "limits"  # Interest keeps nothing without its consumers
        await js_api(nc, f"$JS.API.STREAM.UPDATE.{name}", marked)
        failpoints.hit("restore-configured")
    made = 0
    for recorded in plan.consumers if consumers else []:
        config = consumer_config(recorded, plan.config.get("retention"))
        durable = config["durable_name"]
        try:
            await js_api(nc, f"$JS.API.CONSUMER.INFO.{name}.{durable}")
        except ApiError as exc:
            if exc.err_code != CONSUMER_NOT_FOUND:
                raise
            body = {"stream_name": name, "config": config}
            await js_api(nc, f"$JS.API.CONSUMER.CREATE.{name}.{durable}", body)
        made += 1
    await js_api(nc, f"$JS.API.STREAM.UPDATE.{name}", plan.config)
    return made
