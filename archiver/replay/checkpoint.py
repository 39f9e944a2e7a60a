"""A replay's progress on its target, so ``--resume`` continues after the acknowledged
prefix: a KV checkpoint, and a scan of the target's newest messages for later acks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

import nats.errors
import nats.js.errors

from archiver.config import CHECKPOINT_BUCKET
from archiver.errors import SourceError
from archiver.nats.api import OWN_MARK, StreamInfo, get_message, stream_info
from archiver.nats.conn import RawClient
from archiver.replay.request import ReplayOptions

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
CHECKPOINT_EVERY_MESSAGES = 5_000
"""Acks after the last checkpoint are found again on --resume by reading the target's
newest messages; these bound how many that can be."""


def replay_id(opts: ReplayOptions, generation: str, targets: list[StreamInfo]) -> str:
    """The identity of a replay: what it selects, how it maps, and where it goes.

    The target streams count by name and creation time (a server's id changes on every
    restart; a recreated stream is a new target). Time bounds count as the user typed
    them, so ``--since 36h`` resumes an hour later too.
    """
    sel = opts.selection
    ident = json.dumps(
        [
            sel.stream,
            generation,
            list(sel.subjects.patterns),
            sel.from_seq,
            sel.to_seq,
            opts.bounds_text,
            opts.mapper.describe(),
            sorted((t.name, t.created_ns) for t in targets),
            opts.keeps_markers,
        ]
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


class Checkpoint:
    """The acknowledged prefix of one replay, kept on the target in a KV bucket."""

    def __init__(self, nc: RawClient, key: str, enabled: bool = True) -> None:
        self.nc = nc
        self.key = key
        self.enabled = enabled
        self.kv: Any = None
        self.saved: int | None = None

    async def open(self) -> None:
        if not self.enabled:
            return
        js = self.nc.jetstream()
        try:
            try:
                self.kv = await js.key_value(CHECKPOINT_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self.kv = await js.create_key_value(
                    bucket=CHECKPOINT_BUCKET, history=1, description=f"{OWN_MARK} replay progress"
                )
        except nats.js.errors.BadRequestError:
            self.kv = await js.key_value(CHECKPOINT_BUCKET)  # created meanwhile by another
        except (nats.errors.Error, TimeoutError) as exc:
            raise SourceError(
                f"cannot open the replay checkpoint bucket {CHECKPOINT_BUCKET}: {exc}",
                hint="the replay user needs to create and write that KV bucket on the target",
            ) from exc

    async def load(self) -> int | None:
        if not self.enabled:
            return None
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise SourceError(f"cannot read the replay checkpoint: {exc}") from exc
        return int(json.loads(entry.value)["acked_through_seq"])

    async def save(self, seq: int | None) -> None:
        if not self.enabled or seq is None or seq == self.saved:
            return
        body = json.dumps({"acked_through_seq": seq, "at": time.time()}).encode()
        try:
            await self.kv.put(self.key, body)
        except (nats.errors.Error, TimeoutError) as exc:
            raise SourceError(f"cannot save the replay checkpoint: {exc}") from exc
        self.saved = seq


TAIL_GETS_AT_ONCE = 64
"""Concurrent message gets in the resume scan: bounded, since each may be 1 MiB or more."""


async def tail_already_stored(
    nc: RawClient, streams: list[StreamInfo], prefix: str, after_seq: int, depth: int
) -> set[int]:
    """Archive seqs after the checkpoint that already reached the target.

    Acks that arrived after the last checkpoint write were not recorded; they are among the
    newest messages of the target stream, so its last ``depth`` messages tell, even long
    after the server's duplicate window has closed.
    """
    found: set[int] = set()
    marker = b"Nats-Msg-Id: " + prefix.encode()
    for info in streams:
        last = (await stream_info(nc, info.name)).last_seq
        seqs = range(last, max(0, last - depth), -1)
        # A few dozen gets in flight: one round trip each would take seconds per 10k.
        for start in range(0, len(seqs), TAIL_GETS_AT_ONCE):
            chunk = seqs[start : start + TAIL_GETS_AT_ONCE]
            # A TaskGroup: if one get fails, the others are cancelled, not left running;
            # the caller sees that first failure itself, not a group of one.
            try:
                async with asyncio.TaskGroup() as group:
                    gets = [group.create_task(get_message(nc, info.name, q)) for q in chunk]
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None
            for m in (g.result() for g in gets):
                if m is None or not m.raw_headers:
                    continue
                for line in m.raw_headers.split(b"\r\n"):
                    if line.startswith(marker):
                        archived = int(line.rsplit(b":", 1)[1])
                        if archived > after_seq:
                            found.add(archived)
    return found
