"""What a run records besides messages: the stream's configuration and its consumers'
configurations and positions, so that a lost cluster can be rebuilt from the archive.

One small object per change (``_state/``), written no-clobber when anything but the
time differs from the generation's newest record, so an idle stream adds nothing, and
always on a generation's first run. Positions are stream sequences (delivered and
acknowledged), which the archive keeps as they were. Read-only on the server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import zstandard

from archiver.errors import AlreadyExists, DataAtRisk
from archiver.format import layout
from archiver.nats.api import StreamInfo
from archiver.store.base import Store


def _positions(consumer: dict[str, Any]) -> dict[str, Any]:
    """What restore needs of a consumer, without the times that change on every look."""
    return {
        "name": consumer.get("name"),
        "config": consumer.get("config") or {},
        "delivered_stream_seq": (consumer.get("delivered") or {}).get("stream_seq", 0),
        "ack_floor_stream_seq": (consumer.get("ack_floor") or {}).get("stream_seq", 0),
        "num_pending": consumer.get("num_pending", 0),
        "num_ack_pending": consumer.get("num_ack_pending", 0),
        "num_redelivered": consumer.get("num_redelivered", 0),
    }


def state_of(info: StreamInfo, consumers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stream": info.name,
        "config": info.config,
        "consumers": sorted((_positions(c) for c in consumers), key=lambda c: str(c["name"])),
    }


def read_state(store: Store, key: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = json.loads(
            zstandard.ZstdDecompressor().decompress(store.get_bytes(key))
        )
    except (ValueError, zstandard.ZstdError) as exc:
        raise DataAtRisk(
            f"state record {key} is damaged: {exc}", hint="run archiver verify"
        ) from exc
    return body


def newest_state(store: Store, stream: str, generation: str) -> dict[str, Any] | None:
    keys = [o.key for o in store.list(layout.state_prefix(stream, generation))]
    return read_state(store, max(keys)) if keys else None


def record_state(
    store: Store, info: StreamInfo, generation: str, consumers: list[dict[str, Any]]
) -> str | None:
    """Write a state record unless the newest one says the same; its key, or None."""
    state = state_of(info, consumers)
    newest = newest_state(store, info.name, generation)
    if newest is not None and {k: newest.get(k) for k in state} == state:
        return None
    seen_ns = time.time_ns()
    body = {**state, "generation": generation, "seen_at_ns": seen_ns}
    key = layout.state_key(info.name, generation, seen_ns)
    try:
        store.put_bytes(key, zstandard.ZstdCompressor().compress(json.dumps(body).encode()))
    except AlreadyExists:
        return None  # another run recorded it in the same microsecond
    return key
