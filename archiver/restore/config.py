"""The configurations a restore gives the server: the restored stream's while messages
go back (``intake_config``) and at the end (``final_config``), and each durable
consumer's (``consumer_config``), all derived from what the archive recorded."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

LIMITS_OFF: dict[str, Any] = {
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,
    "max_msg_size": -1,
    "discard": "old",
    "discard_new_per_subject": False,
}
"""While messages go back, no limit may refuse one: a refusal in the middle of a
pipelined window would shift every later message to a wrong seq. The archived limits
are set at the end, and the server applies them then (placeholders would otherwise
count against them). The per-subject limit stays on: with discard old it only removes
a subject's older messages, as it did on the source, and nats-server 2.10 does not
apply it when it is set later."""

DROPPED = ("mirror", "mirror_direct", "sources", "first_seq", "template_owner")
"""Configuration a restored stream does not take: a mirror or a source would copy its
origin into the stream again on top of the restored messages (re-add them once the
origins are back; ``mirror_direct`` goes with the mirror), and the first seq is set by
the restore itself."""

NOT_WHILE_LOADING = ("republish", "subject_delete_marker_ttl")
"""Taken only at the end: a republish would send the archive's history to live
subscribers, and a delete marker the server adds when a TTL expires would take a seq
of its own in the middle of the restored range."""


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
    dropped = [k for k in DROPPED if config.get(k) not in (None, [], 0, False)]
    for key in DROPPED:
        config.pop(key, None)
    keep_user_metadata(config)
    overrides.apply(config)
    return config, [k for k in dropped if k != "first_seq"]


def intake_config(final: dict[str, Any], intake: str, marker: dict[str, str]) -> dict[str, Any]:
    """The stream's configuration while messages go back: the final one with limits off,
    rollups allowed (KV purges carry ``Nats-Rollup``), deletes allowed (holes), the
    shortest duplicate window, and one private subject that the server transforms back
    into each message's own subject, so nothing but the restore can publish into it."""
    config = copy.deepcopy(final)
    config.update(LIMITS_OFF)
    for key in NOT_WHILE_LOADING:
        config.pop(key, None)
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
