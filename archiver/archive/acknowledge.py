"""Acknowledging a loss: an operator's record that it was seen, kept in the archive.

``status`` says ``lost`` while a generation has losses nobody acknowledged; once an
operator has looked into them (who, when, why: written next to the gap records, never
removed), the stream is ``ok`` again while ``lost`` still counts them, and a later loss
makes it ``lost`` again.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from dataclasses import dataclass

import zstandard

from archiver.archive.generation import effective_generation
from archiver.config import Settings
from archiver.errors import AlreadyExists, DataAtRisk, UsageError
from archiver.format import catalog, layout
from archiver.format.catalog import Generation
from archiver.format.gaps import Gap, GapKind, covered_count, decode_record
from archiver.nats.api import stream_info
from archiver.nats.conn import connect
from archiver.render import EXIT_OK, table
from archiver.store import Store, open_store


def recorded_losses(store: Store, gen: Generation) -> list[Gap]:
    """The expired gaps the generation's counting records hold."""
    expired: list[Gap] = []
    for name in gen.records:
        if name.lost:
            try:
                body = decode_record(store.get_bytes(name.key))
            except (ValueError, KeyError, zstandard.ZstdError) as exc:
                raise DataAtRisk(
                    f"gap record {name.key} is damaged: {exc}", hint="run archiver verify"
                ) from exc
            expired += [g for g in body if g.kind is GapKind.EXPIRED]
    return expired


def acknowledged_up_to(store: Store, stream: str, generation: str) -> int:
    """The highest seq up to which the generation's losses are acknowledged (0: none)."""
    found = (layout.parse_ack_key(o.key) for o in store.list(layout.ack_prefix(stream, generation)))
    return max((a[2] for a in found if a is not None), default=0)


def acknowledged_count(losses: list[Gap], up_to: int) -> int:
    return covered_count(
        [Gap(g.first_seq, min(g.last_seq, up_to), g.kind) for g in losses if g.first_seq <= up_to]
    )


@dataclass(slots=True)
class Acknowledgment:
    stream: str
    generation: str
    lost: int
    up_to_seq: int
    by: str
    reason: str
    at: float

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def as_json(self) -> list[dict[str, object]]:
        return [
            {
                "stream": self.stream,
                "generation": self.generation,
                "lost": self.lost,
                "up_to_seq": self.up_to_seq,
                "by": self.by,
                "reason": self.reason,
                "at": self.at,
            }
        ]

    def text(self) -> str:
        return table(self.as_json(), ("stream", "generation", "lost", "up_to_seq", "by", "reason"))


async def acknowledge(
    settings: Settings, stream: str, by: str | None, reason: str
) -> Acknowledgment:
    """Record that the stream's current generation's losses so far were seen."""
    if not reason.strip():
        raise UsageError("say why with --reason: it is kept in the archive with the loss")
    settings.nats.check()
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    await asyncio.to_thread(catalog.choose_streams, store, (stream,))  # a wrong --store
    nc = await connect(settings.nats)
    try:
        info = await stream_info(nc, stream)
        gen = await effective_generation(nc, store, info)
    finally:
        await nc.close()
    losses = await asyncio.to_thread(recorded_losses, store, gen)
    if not losses:
        raise UsageError(f"stream {stream} has no recorded losses in generation {gen.name}")
    up_to = max(g.last_seq for g in losses)
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    ack = Acknowledgment(stream, gen.name, covered_count(losses), up_to, who, reason, time.time())
    key = layout.ack_key(stream, gen.name, up_to)
    try:
        await asyncio.to_thread(store.put_bytes, key, json.dumps(ack.as_json()[0]).encode())
    except AlreadyExists:
        earlier = json.loads(await asyncio.to_thread(store.get_bytes, key))
        raise UsageError(
            f"the losses of stream {stream} up to seq {up_to} were acknowledged already, by "
            f"{earlier.get('by')}: {earlier.get('reason')}"
        ) from None
    return ack
