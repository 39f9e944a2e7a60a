"""Which generation a pass archives into, and whether the stream still is the archived one.

A generation is the stream's creation time; see ``archiver.format.layout``."""

from __future__ import annotations

import asyncio
import logging

from archiver.errors import (
    DataAtRisk,
)
from archiver.format import catalog
from archiver.format.catalog import DataFile, Generation
from archiver.format.fence import record_continuation
from archiver.format.reader import read_footer
from archiver.nats.api import StreamInfo, get_message
from archiver.nats.conn import RawClient
from archiver.store import Store
from archiver.timefmt import format_ns

log = logging.getLogger(__name__)


async def effective_generation(
    nc: RawClient, store: Store, info: StreamInfo, record: bool = False
) -> Generation:
    """The generation to archive into: the stream's, unless it only looks new.

    Some nats-server releases change a stream's creation time on a restart or a config
    update. A stream whose "new" generation has nothing archived yet, but whose message
    at the previous generation's last archived seq is the very message archived there,
    is the same stream: continuing that generation avoids archiving it all again. With
    ``record`` (a run about to write), the choice is recorded no-clobber in the new
    generation's base record before anything is written, so that two runs can never
    archive the same seqs into two generations, and later runs follow it even once the
    message it was judged by is gone.
    """
    found = await asyncio.to_thread(catalog.read_stream, store, info.name)
    current = found.get(info.generation) or Generation(info.generation)
    if current.continues:
        return found.get(current.continues) or Generation(current.continues)
    if current.end or current.fenced:
        return current
    others = [g for name, g in found.items() if name != info.generation and g.files]
    previous = others[-1] if others else None
    last = previous.last_file if previous else None
    if previous is None or last is None or last.name.last_seq > info.last_seq:
        return current  # sequences restarted: a new stream
    if await _holds_archived_message(nc, store, info.name, last):
        if record and not await asyncio.to_thread(
            record_continuation, store, info.name, info.generation, previous.name
        ):
            return current  # another run chose a fresh start first
        log.warning(
            "%s: creation time changed but seq %d still holds the archived message; "
            "continuing generation %s",
            info.name,
            last.name.last_seq,
            previous.name,
        )
        return previous
    return current


async def _holds_archived_message(nc: RawClient, store: Store, stream: str, f: DataFile) -> bool:
    meta = await asyncio.to_thread(read_footer, store, f)
    server = await get_message(nc, stream, f.name.last_seq)
    return server is not None and str(server.time_ns) == meta.get("last_time_ns")


async def check_boundary(nc: RawClient, store: Store, info: StreamInfo, gen: Generation) -> None:
    """The server's message at our last archived seq must be the one we archived.

    A cluster that lost acknowledged writes and then took new ones can have a last
    sequence above ours while the sequences themselves now hold other messages.
    """
    newest = gen.last_file
    if gen.end < info.first_seq or newest is None or newest.name.last_seq != gen.end:
        return
    meta = await asyncio.to_thread(read_footer, store, newest)
    server = await get_message(nc, info.name, gen.end)
    if server is not None and str(server.time_ns) != meta.get("last_time_ns"):
        raise DataAtRisk(
            f"stream {info.name} diverged from the archive: seq {gen.end} now holds a message "
            f"stored at {format_ns(server.time_ns)}, not the archived {meta.get('last_time')}",
            hint="the stream lost and rewrote messages; investigate before archiving more",
        )
