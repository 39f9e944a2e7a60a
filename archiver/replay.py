"""``archiver replay``: republish a slice of the archive into NATS, exactly and idempotently.

select -> plan (counts, sizes; reads no payloads) -> check the target -> publish in
sequence order with a deterministic ``Nats-Msg-Id`` per archived message, pacing and a
bounded window of unacknowledged messages -> report. Progress is checkpointed in a KV
bucket on the target, so ``--resume`` continues after the acknowledged prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.catalog import DataFile
from archiver.config import Settings
from archiver.errors import SourceError, UnsafeActionRefused
from archiver.listing import read_footer
from archiver.natsconn import NatsOptions, RawClient, connect, redact_url
from archiver.publisher import JsPublisher
from archiver.replay_headers import (
    CHECKPOINT_BUCKET,
    fixed_growth,
    is_delete_marker,
    message_id,
    renamed_growth,
    replay_block,
)
from archiver.selection import Selection, iter_rows, iter_selected, select_files
from archiver.store import Store, open_store
from archiver.streams import StreamInfo, get_message, list_streams, stream_info
from archiver.subjects import SubjectMapper, captured_by

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
CHECKPOINT_EVERY_MESSAGES = 5_000
"""Acks after the last checkpoint are found again on --resume by reading the target's
newest messages; these bound how many that can be."""
SAMPLE_SUBJECTS = 5
SEQ_MAP_SCHEMA = pa.schema(
    [
        pa.field("archive_seq", pa.uint64(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("duplicate", pa.bool_(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ReplayOptions:
    selection: Selection
    mapper: SubjectMapper = field(default_factory=SubjectMapper.identity)
    target: NatsOptions | None = None
    """None: the source server."""
    rate: float | None = None
    dry_run: bool = False
    yes: bool = False
    resume: bool = False
    seq_map: Path | None = None
    delete_markers: bool = False
    window: int = 2000
    ack_timeout: float = 5.0
    progress: bool = False
    checkpoint: bool = True
    bounds_text: str = ""
    """``--since``/``--until`` as typed: part of the replay's identity for --resume."""
    """False for drills: a scratch restore is never resumed, so it leaves no state."""


@dataclass
class Plan:
    generation: str
    files: list[DataFile]
    messages: int = 0
    skipped_markers: int = 0
    by_subject: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[str, str]] = field(default_factory=list)
    largest_bound: int = 0
    payload_bytes: int | None = None


@dataclass
class ReplaySummary:
    stream: str
    generation: str
    target: str
    target_streams: list[str]
    matched: int
    published: int = 0
    duplicates: int = 0
    skipped: int = 0
    resumed_after_seq: int | None = None
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    by_subject: dict[str, int] = field(default_factory=dict)
    sample_subjects: list[list[str]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


# -- plan ---------------------------------------------------------------------------------


def make_plan(store: Store, opts: ReplayOptions) -> Plan:
    """Counts per mapped subject and a size bound, reading subjects and headers only."""
    sel = opts.selection
    generation, files = select_files(store, sel)
    plan = Plan(generation, files)
    largest_payload = max(
        (int(read_footer(store, f.key, f.size).get("max_message_bytes", -1)) for f in files),
        default=0,
    )
    columns = ["seq", "subject", "raw_headers"] + (["data"] if opts.dry_run else [])
    payload_total = 0
    for table in iter_selected(store, files, sel, columns):
        subjects = table.column("subject").to_pylist()
        raws = table.column("raw_headers").to_pylist()
        for subject, raw in zip(subjects, raws, strict=True):
            if not opts.delete_markers and raw and is_delete_marker(raw):
                plan.skipped_markers += 1
                continue
            mapped = opts.mapper.map(subject)
            if mapped not in plan.by_subject and len(plan.samples) < SAMPLE_SUBJECTS:
                plan.samples.append((subject, mapped))
            plan.by_subject[mapped] += 1
            plan.messages += 1
            plan.largest_bound = max(plan.largest_bound, renamed_growth(raw) if raw else 0)
        if opts.dry_run:
            payload_total += pc.sum(pc.binary_length(table.column("data"))).as_py() or 0
    # Footers record the largest payload-plus-headers per file; add the most any header
    # block grows when rewritten for replay.
    plan.largest_bound += max(largest_payload, 0) + fixed_growth(sel.stream, generation)
    plan.payload_bytes = payload_total if opts.dry_run else None
    return plan


# -- target checks ------------------------------------------------------------------------


async def check_target(nc: RawClient, plan: Plan) -> list[StreamInfo]:
    """Every mapped subject is captured by a stream that accepts the largest message."""
    streams = await list_streams(nc)
    used: dict[str, StreamInfo] = {}
    for subject in plan.by_subject:
        owner = next(
            (s for s in streams if captured_by(subject, s.config.get("subjects") or [])), None
        )
        if owner is None:
            raise SourceError(
                f"no stream on the target captures subject {subject}",
                hint="create one, or map with --subject-prefix/--subject-map; nothing was sent",
            )
        used[owner.name] = owner
    max_payload = int(nc.max_payload)
    for info in used.values():
        limit = max_payload
        max_msg_size = int(info.config.get("max_msg_size", -1))
        if max_msg_size > 0:
            limit = min(limit, max_msg_size)
        if plan.largest_bound > limit:
            raise SourceError(
                f"a message of up to {plan.largest_bound} bytes (headers included) is larger "
                f"than stream {info.name} on the target accepts ({limit} bytes)",
                hint="raise max_payload / max_msg_size on the target; nothing was sent",
            )
    return list(used.values())


async def _same_server(source: NatsOptions, target: RawClient, target_opts: NatsOptions) -> bool:
    if source.url == target_opts.url:
        return True
    try:
        nc = await connect(source)
    except SourceError:
        return False  # the source is not reachable, so it cannot be the target
    try:
        return bool(nc._server_info.get("server_id") == target._server_info.get("server_id"))
    finally:
        await nc.close()


async def check_safety(
    settings: Settings,
    opts: ReplayOptions,
    target: RawClient,
    target_opts: NatsOptions,
    plan: Plan,
    streams: list[StreamInfo],
) -> None:
    """Replaying into the live source stream on the same server needs --yes."""
    if opts.yes or opts.dry_run:
        return
    live = opts.selection.stream
    named = [s for s in streams if s.name == live]
    if not named:
        return
    # The same stream, whichever node or URL it is reached through: its creation time
    # is the archive's generation. A stream of that name elsewhere (a DR cluster) is not.
    if named[0].generation == plan.generation or await _same_server(
        settings.nats, target, target_opts
    ):
        raise UnsafeActionRefused(
            f"this replay would publish into the live stream {live} on the server it came from",
            hint="map subjects elsewhere (--subject-prefix), use --target-url, or pass --yes",
        )


# -- checkpoints ----------------------------------------------------------------------------


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
            opts.delete_markers,
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
                    bucket=CHECKPOINT_BUCKET, history=1, description="nats-archiver replay progress"
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


async def _tail_already_stored(
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
                if m is None or not m.raw_header:
                    continue
                for line in m.raw_header.split(b"\r\n"):
                    if line.startswith(marker):
                        archived = int(line.rsplit(b":", 1)[1])
                        if archived > after_seq:
                            found.add(archived)
    return found


# -- publish ------------------------------------------------------------------------------


class SeqMapWriter:
    """``--seq-map``: archive seq -> target stream and seq, from the acks, in order."""

    def __init__(self, path: Path) -> None:
        self.writer = pq.ParquetWriter(str(path), SEQ_MAP_SCHEMA, compression="zstd")
        self.rows: list[tuple[int, str, int, bool]] = []

    def add(self, archive_seq: int, stream: str, seq: int, duplicate: bool) -> None:
        self.rows.append((archive_seq, stream, seq, duplicate))
        if len(self.rows) >= 50_000:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            self.writer.write_table(pa.table([pa.array(c) for c in cols], schema=SEQ_MAP_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


class Pacer:
    """At most ``rate`` messages per second, smoothly."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


async def _publish_all(
    store: Store,
    opts: ReplayOptions,
    plan: Plan,
    nc: RawClient,
    checkpoint: Checkpoint,
    skip_through: int | None,
    skip: set[int],
    summary: ReplaySummary,
) -> None:
    sel = opts.selection
    seq_map = SeqMapWriter(opts.seq_map) if opts.seq_map else None

    def on_acked(archive_seq: int, stream: str, seq: int, duplicate: bool) -> None:
        if seq_map:
            seq_map.add(archive_seq, stream, seq, duplicate)

    publisher: JsPublisher[int] = JsPublisher(
        nc, window=opts.window, ack_timeout=opts.ack_timeout, on_acked=on_acked
    )
    await publisher.start()
    pacer = Pacer(opts.rate)
    bar = _progress(plan.messages, opts.progress)
    last_save, since_save = time.monotonic(), 0
    try:
        columns = ["seq", "subject", "time_ns", "raw_headers", "data"]
        rows = iter_rows(iter_selected(store, plan.files, sel, columns), columns)
        for seq, subject, time_ns, raw, data in rows:
            if not opts.delete_markers and raw and is_delete_marker(raw):
                summary.skipped += 1
                continue
            if (skip_through is not None and seq <= skip_through) or seq in skip:
                summary.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            block = replay_block(
                raw,
                msg_id=message_id(sel.stream, plan.generation, seq),
                stream=sel.stream,
                seq=seq,
                time_ns=time_ns,
            )
            await pacer.wait()
            await publisher.publish(opts.mapper.map(subject), block, data, seq)
            summary.bytes += len(data)
            if bar is not None:
                bar.update(1)
            since_save += 1
            if (
                since_save >= CHECKPOINT_EVERY_MESSAGES
                or time.monotonic() - last_save > CHECKPOINT_EVERY_S
            ):
                await checkpoint.save(publisher.acked_prefix_key)
                last_save, since_save = time.monotonic(), 0
        await publisher.drain()
        await checkpoint.save(publisher.acked_prefix_key)
    finally:
        summary.published = publisher.published
        summary.duplicates = publisher.duplicates
        if bar is not None:
            bar.close()
        if seq_map:
            seq_map.close()
        await publisher.close()


def _progress(total: int, wanted: bool) -> Any:
    if not (wanted and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, file=sys.stderr, desc="replay")


# -- the command ----------------------------------------------------------------------------


async def replay(settings: Settings, opts: ReplayOptions) -> ReplaySummary:
    settings.nats.check()
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    plan = await asyncio.to_thread(make_plan, store, opts)
    sel = opts.selection
    target_opts = opts.target or settings.nats
    summary = ReplaySummary(
        stream=sel.stream,
        generation=plan.generation,
        target=redact_url(target_opts.url),
        target_streams=[],
        matched=plan.messages,
        skipped=plan.skipped_markers,
        dry_run=opts.dry_run,
        by_subject=dict(plan.by_subject.most_common()),
        sample_subjects=[list(p) for p in plan.samples],
    )
    summary.bytes = plan.payload_bytes or 0
    if plan.messages == 0:
        return summary
    started = time.monotonic()
    nc = await connect(target_opts)
    try:
        streams = await check_target(nc, plan)
        summary.target_streams = [s.name for s in streams]
        await check_safety(settings, opts, nc, target_opts, plan, streams)
        if opts.dry_run:
            return summary
        summary.skipped = 0
        checkpoint = Checkpoint(nc, replay_id(opts, plan.generation, streams), opts.checkpoint)
        await checkpoint.open()
        skip_through: int | None = None
        skip: set[int] = set()
        if opts.resume:
            skip_through = await checkpoint.load()
            summary.resumed_after_seq = skip_through
            if skip_through is not None:
                prefix = f"archive:{sel.stream}:{plan.generation}:"
                skip = await _tail_already_stored(
                    nc,
                    streams,
                    prefix,
                    skip_through,
                    depth=opts.window + 2 * CHECKPOINT_EVERY_MESSAGES,
                )
        summary.bytes = 0
        await _publish_all(store, opts, plan, nc, checkpoint, skip_through, skip, summary)
    finally:
        await nc.close()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
