"""The restored stream on the target server: created for the restore, continued after
an interruption, refused when it is anything else, and finished with its archived
configuration and its durable consumers.

A stream being restored carries ``MARKER`` in its metadata (which archive stream and
generation, and its private intake subject) until the last step removes it, so a restore
run again knows its own unfinished work from a stream that merely has the same name.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from archiver import failpoints
from archiver.errors import ApiError, SourceError, UnsafeActionRefused
from archiver.nats.api import STREAM_NOT_FOUND, get_message
from archiver.nats.conn import RawClient, js_api
from archiver.replay.selection import Selection, iter_rows, iter_selected
from archiver.restore.load import HOLE_SUBJECT, WINDOW
from archiver.restore.plan import StreamPlan, intake_config, keep_user_metadata
from archiver.store.base import Store

log = logging.getLogger(__name__)

MARKER = "nats-archiver.restore"
CONSUMER_NOT_FOUND = 10014


@dataclass
class Target:
    """Where a stream's restore stands on the target."""

    intake: str
    after: int
    """The highest seq already in place: the load continues after it."""
    loaded: bool = False
    """Every message is in place and the archived configuration applied."""
    continued: bool = False


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


def refusal(plan: StreamPlan, info: dict[str, Any] | None) -> str | None:
    """Why the target cannot take this restore, or None."""
    if info is None:
        return None
    raw = (info["config"].get("metadata") or {}).get(MARKER)
    messages = int(info["state"].get("messages", 0))
    if raw is not None:
        ours = json.loads(raw)
        if (ours.get("stream"), ours.get("generation")) != (plan.stream, plan.generation):
            return (
                f"target stream {plan.target} is being restored from {ours.get('stream')} "
                f"generation {ours.get('generation')}, not this one; nothing was changed"
            )
        return None
    if messages:
        return (
            f"target stream {plan.target} exists and holds {messages} messages; nothing was changed"
        )
    return None


async def prepare(nc: RawClient, store: Store, plan: StreamPlan, first_seq: int) -> Target:
    """Create the stream for the restore, or find where an interrupted one stopped."""
    info = await stream_state(nc, plan.target)
    why = refusal(plan, info)
    if why:
        raise UnsafeActionRefused(
            why, hint="restore into a server without it, --rename it, or delete it first"
        )
    if info is None or MARKER not in (info["config"].get("metadata") or {}):
        intake = f"_archiver_restore.{secrets.token_hex(8)}"
        config = intake_config(plan.config, intake, _marker(plan, intake))
        verb = "CREATE" if info is None else "UPDATE"  # an empty stream of that name
        try:
            await js_api(nc, f"$JS.API.STREAM.{verb}.{plan.target}", config)
        except ApiError as exc:
            raise SourceError(
                f"the target cannot make stream {plan.target} as archived: {exc.description}",
                hint="--replicas, --storage and --placement-* fit it to a smaller cluster",
            ) from exc
        await _start_at(nc, plan.target, first_seq)
        return Target(intake, first_seq - 1)
    intake = json.loads(info["config"]["metadata"][MARKER])["intake"]
    last = int(info["state"].get("last_seq", 0))
    if info["config"].get("subjects") != [f"{intake}.>"]:
        return Target(intake, last, loaded=True, continued=True)
    if last < first_seq - 1:
        await _start_at(nc, plan.target, first_seq)
        return Target(intake, first_seq - 1, continued=True)
    await _check_tail(nc, store, plan, max(first_seq, last - WINDOW), last)
    return Target(intake, last, continued=True)


async def _start_at(nc: RawClient, stream: str, first_seq: int) -> None:
    """On an empty stream, a purge up to ``first_seq`` makes it the next seq."""
    if first_seq > 1:
        await js_api(nc, f"$JS.API.STREAM.PURGE.{stream}", {"seq": first_seq})


async def _check_tail(nc: RawClient, store: Store, plan: StreamPlan, lo: int, hi: int) -> None:
    """An interrupted restore left an exact prefix of the archive: any shift could only
    be among its last ``WINDOW`` seqs (see ``load``), so those are compared one by one."""
    sel = Selection(plan.stream, plan.generation, from_seq=lo, to_seq=hi, until_ns=plan.until_ns)
    columns = ["seq", "subject", "raw_headers", "data"]
    archived = {
        row[0]: row[1:]
        for row in iter_rows(iter_selected(store, plan.files, sel, columns), columns)
    }
    for seq in range(lo, hi + 1):
        stored = await get_message(nc, plan.target, seq)
        want = archived.get(seq)
        if want is None:
            same = stored is None or stored.subject == HOLE_SUBJECT
        else:
            same = stored is not None and (stored.subject, stored.raw_headers, stored.data) == want
        if not same:
            raise UnsafeActionRefused(
                f"target stream {plan.target} does not hold an exact prefix of the archive "
                f"(seq {seq} differs); nothing was changed",
                hint=f"delete stream {plan.target} on the target and run the restore again",
            )


def consumer_config(recorded: dict[str, Any], retention: str | None) -> dict[str, Any]:
    """A recorded durable consumer's configuration, delivering from the first seq after
    its acknowledged floor: what was delivered but not acknowledged comes again. On a
    WorkQueue stream (which takes only deliver-all consumers) the restored stream itself
    starts after the floor."""
    config: dict[str, Any] = copy.deepcopy(recorded["config"])
    config.pop("opt_start_time", None)
    if retention == "workqueue":
        config["deliver_policy"] = "all"
        config.pop("opt_start_seq", None)
    else:
        config["deliver_policy"] = "by_start_sequence"
        config["opt_start_seq"] = int(recorded.get("ack_floor_stream_seq") or 0) + 1
    keep_user_metadata(config)
    return config


async def finish(nc: RawClient, plan: StreamPlan, target: Target, consumers: bool) -> int:
    """Purge the placeholders, apply the archived configuration, recreate the durable
    consumers, then drop the marker; the number of consumers in place."""
    name = plan.target
    if not target.loaded:
        await js_api(nc, f"$JS.API.STREAM.PURGE.{name}", {"filter": HOLE_SUBJECT})
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
