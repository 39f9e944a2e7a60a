"""What a restore will do for each stream, worked out from the archive alone.

A restore rebuilds a stream as the archive last saw it (or as it was at ``--as-of``):
its configuration and its consumers from the newest state record at or before that
time (a data file's footer when the archive has no state record yet), its messages
from the newest generation's committed files, up to that time.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from archiver.archive.state import read_state
from archiver.errors import UsageError
from archiver.format import catalog, layout
from archiver.format.catalog import DataFile
from archiver.format.reader import read_footer
from archiver.replay.selection import Selection, select_files, unexplained_holes
from archiver.store.base import Store

log = logging.getLogger(__name__)

LIMITS_OFF: dict[str, Any] = {
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "discard": "old",
    "discard_new_per_subject": False,
}
"""While messages go back, no limit may refuse or drop one: a refusal in the middle of
a pipelined window would shift every later message to a wrong seq. The archived limits
are set at the end, and the server applies them then."""

DROPPED = ("mirror", "sources", "first_seq", "template_owner")
"""Configuration a restored stream does not take: a mirror or a source would copy its
origin into the stream again on top of the restored messages (re-add them once the
origins are back), and the first seq is set by the restore itself."""


@dataclass(frozen=True)
class Overrides:
    """What a smaller recovery cluster needs changed; None keeps the archived value."""

    replicas: int | None = None
    storage: str | None = None
    placement_cluster: str | None = None
    placement_tags: tuple[str, ...] = ()

    def apply(self, config: dict[str, Any]) -> None:
        if self.replicas is not None:
            config["num_replicas"] = self.replicas
        if self.storage is not None:
            config["storage"] = self.storage
        if self.placement_cluster or self.placement_tags:
            placement: dict[str, Any] = {}
            if self.placement_cluster:
                placement["cluster"] = self.placement_cluster
            if self.placement_tags:
                placement["tags"] = list(self.placement_tags)
            config["placement"] = placement


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
    unexplained: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Configuration left out of the restored stream (see ``DROPPED``)."""

    @property
    def selection(self) -> Selection:
        return Selection(
            stream=self.stream,
            generation=self.generation,
            from_seq=self.from_seq,
            until_ns=self.until_ns,
        )


def _seen_ns(key: str) -> int:
    stamp = key.rsplit("-", 1)[1].removesuffix(".json.zst")
    created = layout.generation_created(stamp)
    return int(created.timestamp()) * 1_000_000_000 + created.microsecond * 1000


def _state_as_of(store: Store, stream: str, generation: str, as_of_ns: int | None) -> Any:
    """The newest state record at or before ``as_of_ns`` (any time when None)."""
    keys = sorted(o.key for o in store.list(layout.state_prefix(stream, generation)))
    chosen = [k for k in keys if as_of_ns is None or _seen_ns(k) <= as_of_ns]
    if not chosen:
        return None, None
    return read_state(store, chosen[-1]), _seen_ns(chosen[-1])


def _generation_as_of(store: Store, stream: str, as_of_ns: int | None) -> str:
    files = catalog.data_files(store, stream)
    names = sorted({f.name.generation for f in files})
    if as_of_ns is not None:
        names = [g for g in names if _created_ns(g) <= as_of_ns]
    if not names:
        raise UsageError(
            f"the archive holds no messages of {stream}"
            + (" from before --as-of" if as_of_ns is not None else ""),
            hint="check --stream and --as-of against archiver ls",
        )
    return names[-1]


def _created_ns(generation: str) -> int:
    created = layout.generation_created(generation)
    return int(created.timestamp()) * 1_000_000_000 + created.microsecond * 1000


def keep_user_metadata(config: dict[str, Any]) -> None:
    """Drop the ``_nats.*`` metadata the server writes itself (versions, API levels)."""
    metadata = {
        k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats")
    }
    if metadata:
        config["metadata"] = metadata
    else:
        config.pop("metadata", None)


def final_config(
    archived: dict[str, Any], target: str, overrides: Overrides
) -> tuple[dict[str, Any], list[str]]:
    """The archived configuration as the restored stream takes it, and what was left out."""
    config = copy.deepcopy(archived)
    config["name"] = target
    dropped = [k for k in DROPPED if config.get(k) not in (None, [], 0)]
    for key in DROPPED:
        config.pop(key, None)
    keep_user_metadata(config)
    overrides.apply(config)
    return config, [k for k in dropped if k != "first_seq"]


def plan_stream(
    store: Store, stream: str, target: str, as_of_ns: int | None, overrides: Overrides
) -> StreamPlan:
    generation = _generation_as_of(store, stream, as_of_ns)
    sel = Selection(stream=stream, generation=generation, until_ns=as_of_ns)
    generation, files = select_files(store, sel)
    state, seen_ns = _state_as_of(store, stream, generation, as_of_ns)
    if state is not None:
        archived, consumers = state["config"], state.get("consumers") or []
    else:
        # Archives written before state records: each file's footer has the config.
        newest = files[-1] if files else catalog.data_files(store, stream)[-1]
        archived, consumers = json.loads(read_footer(store, newest).get("config", "{}")), []
    if not archived.get("subjects") and not archived.get("mirror"):
        raise UsageError(f"the archive of {stream} records no configuration to restore it with")
    config, dropped = final_config(archived, target, overrides)
    durable = [c for c in consumers if (c.get("config") or {}).get("durable_name")]
    if overrides.replicas is not None:
        for consumer in durable:  # a consumer cannot have more replicas than its stream
            if int(consumer["config"].get("num_replicas") or 0) > overrides.replicas:
                consumer["config"]["num_replicas"] = overrides.replicas
    plan = StreamPlan(
        stream, target, generation, files, config, durable, seen_ns, as_of_ns, dropped=dropped
    )
    if config.get("retention") in ("workqueue", "interest") and durable:
        plan.from_seq = min(int(c.get("ack_floor_stream_seq") or 0) for c in durable) + 1
    plan.unexplained = unexplained_holes(store, plan.selection, generation, files)
    return plan


def intake_config(final: dict[str, Any], intake: str, marker: dict[str, str]) -> dict[str, Any]:
    """The stream's configuration while messages go back: the final one with limits off,
    rollups allowed (KV purges carry ``Nats-Rollup``), deletes allowed (holes), the
    shortest duplicate window, and one private subject that the server transforms back
    into each message's own subject, so nothing but the restore can publish into it."""
    config = copy.deepcopy(final)
    config.update(LIMITS_OFF)
    if final.get("retention") == "interest":
        # With no consumer yet, an Interest stream keeps nothing; the server allows the
        # change to Interest at the end, when the consumers come.
        config["retention"] = "limits"
    config.update(
        {
            "subjects": [f"{intake}.>"],
            "subject_transform": {"src": f"{intake}.>", "dest": ">"},
            "allow_rollup_hdrs": True,
            "deny_delete": False,
            "deny_purge": False,
            "sealed": False,
            "duplicate_window": 100_000_000,  # the server's minimum, 100 ms
        }
    )
    config["metadata"] = {**(final.get("metadata") or {}), **marker}
    return config
