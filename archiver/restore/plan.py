"""What a restore will do for each stream, worked out from the archive alone.

A restore rebuilds a stream as the archive last saw it (or as it was at ``--as-of``):
its configuration and its consumers from the newest state record at or before that
time (a data file's footer when the archive has no state record yet), its messages
from the newest generation's committed files, up to that time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.archive.state import read_state
from archiver.errors import UsageError
from archiver.format import catalog, layout
from archiver.format.catalog import DataFile
from archiver.format.reader import read_footer
from archiver.replay.selection import Selection, iter_rows, iter_selected, unexplained_holes
from archiver.restore.config import Overrides, final_config
from archiver.store.base import Store

HOLE_SUBJECT = "_archiver_restore.hole"
"""Where placeholders are stored (after the intake transform) until they are purged."""


@dataclass
class StreamPlan:
    """One stream's restore: where from, where to, and with what."""

    stream: str
    target: str
    generation: str
    files: list[DataFile]
    config: dict[str, Any]
    """The configuration the restored stream ends with (overrides applied)."""
    consumers: list[dict[str, Any]]
    """Durable consumers as recorded: name, config, ack floor and delivered stream seqs."""
    state_seen_ns: int | None
    """When the state record used was written; None: no state record (footer config)."""
    until_ns: int | None
    from_seq: int | None = None
    """WorkQueue and Interest streams: what their consumers acknowledged is gone from
    them, so the restore starts after the lowest recorded ack floor."""
    end_seq: int = 0
    """The seq the restored stream reaches at least: the archive's end (without
    ``--as-of``) and every consumer's delivered seq, so that the next message published
    gets the seq the source would have given it and no consumer starts past the end."""
    unexplained: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Configuration left out of the restored stream (see ``config.DROPPED``)."""

    @property
    def selection(self) -> Selection:
        return Selection(
            stream=self.stream,
            generation=self.generation,
            from_seq=self.from_seq,
            until_ns=self.until_ns,
        )


def _ns(stamp: str) -> int:
    created = layout.generation_created(stamp)
    return int(created.timestamp()) * 1_000_000_000 + created.microsecond * 1000


def _seen_ns(key: str) -> int:
    parsed = layout.parse_state_key(key)
    assert parsed is not None, key  # listed under the state prefix
    return _ns(parsed[1])


def _state_as_of(store: Store, stream: str, generation: str, as_of_ns: int | None) -> Any:
    """The newest state record at or before ``as_of_ns`` (any time when None)."""
    keys = sorted(o.key for o in store.list(layout.state_prefix(stream, generation)))
    chosen = [k for k in keys if as_of_ns is None or _seen_ns(k) <= as_of_ns]
    if not chosen:
        return None, None
    return read_state(store, chosen[-1]), _seen_ns(chosen[-1])


def _generation_as_of(store: Store, stream: str, as_of_ns: int | None) -> catalog.Generation:
    """The newest generation (created by ``as_of_ns``) of everything the archive holds,
    data files or not: a stream recreated empty is restored empty, not as the older
    incarnation. A generation whose runs continue an older one is that one."""
    generations = catalog.read_stream(store, stream)
    # A generation whose first run found the stream empty leaves only a state record.
    for obj in store.list(f"{layout.stream_prefix(stream)}_state/"):
        parsed = layout.parse_state_key(obj.key)
        if parsed is not None and parsed[0] not in generations:
            generations[parsed[0]] = catalog.Generation(parsed[0])
    names = sorted(g for g in generations if as_of_ns is None or _ns(g) <= as_of_ns)
    if not names:
        raise UsageError(
            f"the archive holds nothing of {stream} from before --as-of",
            hint="check --as-of against archiver ls",
        )
    chosen = generations[names[-1]]
    while chosen.continues and chosen.continues in generations:
        chosen = generations[chosen.continues]
    return chosen


def plan_stream(
    store: Store, stream: str, target: str, as_of_ns: int | None, overrides: Overrides
) -> StreamPlan:
    gen = _generation_as_of(store, stream, as_of_ns)
    until_day = datetime.fromtimestamp(as_of_ns / 1e9, UTC).date() if as_of_ns else None
    files = sorted(
        (f for f in gen.files if until_day is None or f.name.day <= until_day),
        key=lambda f: f.name.first_seq,
    )
    state, seen_ns = _state_as_of(store, stream, gen.name, as_of_ns)
    if state is not None:
        archived, consumers = state["config"], state.get("consumers") or []
    elif files:
        # Archives written before state records: each file's footer has the config.
        archived, consumers = json.loads(read_footer(store, files[-1]).get("config", "{}")), []
    else:
        archived, consumers = {}, []
    if not archived.get("subjects") and not archived.get("mirror"):
        raise UsageError(f"the archive of {stream} records no configuration to restore it with")
    if archived.get("allow_msg_counter"):
        raise UsageError(
            f"{stream} is a counter stream: the server adds up what is published to it, so "
            "its messages cannot be put back as they were",
            hint="restore the other streams with --stream",
        )
    config, dropped = final_config(archived, target, overrides)
    durable = [c for c in consumers if (c.get("config") or {}).get("durable_name")]
    if overrides.replicas is not None:
        for consumer in durable:  # a consumer cannot have more replicas than its stream
            if int(consumer["config"].get("num_replicas") or 0) > overrides.replicas:
                consumer["config"]["num_replicas"] = overrides.replicas
    plan = StreamPlan(
        stream, target, gen.name, files, config, durable, seen_ns, as_of_ns, dropped=dropped
    )
    if config.get("retention") in ("workqueue", "interest") and durable:
        plan.from_seq = min(int(c.get("ack_floor_stream_seq") or 0) for c in durable) + 1
    delivered = [int(c.get("delivered_stream_seq") or 0) for c in durable]
    plan.end_seq = max([gen.end if as_of_ns is None else 0, *delivered])
    plan.unexplained = unexplained_holes(store, plan.selection, gen.name, files) if files else []
    return plan


@dataclass
class Extent:
    """What the archive will put back: the first and last seq, how many messages, and
    the subject each hole's placeholder must have (see ``scan``)."""

    first: int = 0
    last: int = 0
    count: int = 0
    hole_subjects: dict[int, str] = field(default_factory=dict)
    start: int = 1
    """The restored stream's first seq: after the lowest ack floor (WorkQueue, Interest),
    else the first archived message, else (nothing archived) after ``plan.end_seq``,
    the seq the source would have given its next message."""
    end: int = 0
    """The restored stream's last seq (holes up to it where the archive has none)."""


_LAST_SUBJECT_SEQ = b"nats-expected-last-subject-sequence"


def scan(store: Store, plan: StreamPlan) -> Extent:
    """One pass over seqs and header blocks (no payloads).

    A message carrying ``Nats-Expected-Last-Subject-Sequence: X`` was stored when the
    last message on its subject was at X; when the archive lacks X (an update the
    archiver never saw, superseded in between), the placeholder at X goes on that
    subject, so the server's check holds again. Messages checking the stream's name
    cannot go into a renamed stream: refused here, before anything is written.
    """
    found = Extent()
    wanted: dict[int, str] = {}
    columns = ["seq", "subject", "raw_headers"]
    for table in iter_selected(store, plan.files, plan.selection, columns):
        seqs = table.column("seq")
        if not found.count:
            found.first = int(seqs[0].as_py())
        found.last = int(seqs[-1].as_py())
        found.count += table.num_rows
        checked = table.filter(
            pc.fill_null(pc.match_substring(table["raw_headers"], "Nats-Expected-"), False)
        )
        for seq, subject, raw in iter_rows(iter([checked]), columns):
            for line in raw.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == _LAST_SUBJECT_SEQ and value.strip().isdigit():
                    wanted[int(value)] = subject
                elif key == b"nats-expected-stream" and plan.target != plan.stream:
                    raise UsageError(
                        f"{plan.stream} seq {seq} carries Nats-Expected-Stream, which a stream "
                        f"named {plan.target} refuses",
                        hint=f"restore {plan.stream} under its own name",
                    )
    if wanted:
        present: set[int] = set()
        values = pa.array(sorted(wanted), pa.int64())
        for table in iter_selected(store, plan.files, plan.selection, ["seq"]):
            hits = table.filter(pc.is_in(table["seq"].cast(pa.int64()), value_set=values))
            present.update(hits["seq"].to_pylist())
        found.hole_subjects = {s: subj for s, subj in wanted.items() if s not in present}
    found.start = plan.from_seq or (found.first if found.count else plan.end_seq + 1)
    found.end = max(found.last, plan.end_seq, found.start - 1)
    return found
