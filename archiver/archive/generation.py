"""Which generation a pass archives into, and whether the stream still is the archived one.

A generation is the stream's creation time; see ``archiver.format.layout``."""

from __future__ import annotations

import asyncio
import logging

from archiver.errors import (
    DataAtRisk,
)
from archiver.format import catalog
from archiver.format.catalog import DataFile
from archiver.format.reader import read_footer
from archiver.nats.api import StreamInfo, get_message
from archiver.nats.conn import RawClient
from archiver.store import Store
from archiver.timefmt import format_ns

log = logging.getLogger(__name__)


async def effective_generation(nc: RawClient, store: Store, info: StreamInfo) -> str:
    """The generation to archive into: the stream's, unless it only looks new.

    Some nats-server releases change a stream's creation time on a restart or a config
    update. A stream whose "new" generation has nothing archived yet, but whose message
    at the previous generation's last archived seq is the very message archived there,
    is the same stream: continuing that generation avoids archiving it all again.
    """
    current = info.generation
    if await asyncio.to_thread(catalog.archived_seq, store, info.name, current):
        return current
    previous = await asyncio.to_thread(catalog.newest_other_generation, store, info.name, current)
    if previous is None or previous.name.last_seq > info.last_seq:
        return current  # sequences restarted: a new stream
    if await _holds_archived_message(nc, store, info.name, previous):
        log.warning(
            "%s: creation time changed but seq %d still holds the archived message; "
            "continuing generation %s",
            info.name,
            previous.name.last_seq,
            previous.name.generation,
        )
        return previous.name.generation
    return current


async def _holds_archived_message(nc: RawClient, store: Store, stream: str, f: DataFile) -> bool:
    meta = await asyncio.to_thread(read_footer, store, f)
    server = await get_message(nc, stream, f.name.last_seq)
    return server is not None and str(server.time_ns) == meta.get("last_time_ns")


async def check_boundary(
    nc: RawClient, store: Store, info: StreamInfo, generation: str, archived_seq: int
) -> None:
    """The server's message at our last archived seq must be the one we archived.

    A cluster that lost acknowledged writes and then took new ones can have a last
    sequence above ours while the sequences themselves now hold other messages.
    """
    if archived_seq < info.first_seq:
        return
    newest = await asyncio.to_thread(catalog.last_file, store, info.name, generation)
    if newest is None or newest.name.last_seq != archived_seq:
        return
    meta = await asyncio.to_thread(read_footer, store, newest)
    server = await get_message(nc, info.name, archived_seq)
    if server is not None and str(server.time_ns) != meta.get("last_time_ns"):
        raise DataAtRisk(
            f"stream {info.name} diverged from the archive: seq {archived_seq} now holds a message "
            f"stored at {format_ns(server.time_ns)}, not the archived {meta.get('last_time')}",
            hint="the stream lost and rewrote messages; investigate before archiving more",
        )
