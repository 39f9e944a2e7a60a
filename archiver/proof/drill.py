"""``archiver drill``: a disaster-recovery drill with evidence for auditors.

For each chosen stream: verify its archive, restore it (or a time window of it) into a
scratch stream on the target whose name and subjects cannot collide with live ones,
read the scratch stream back and compare it with the archive message for message,
measure RTO (time to restore, messages/s) and RPO (the time since the archive last
held everything the live stream held; how much the live stream holds that the archive
does not yet), then remove the scratch
stream unless ``--keep``. The report is JSON for machines and Markdown for people, with
an SVG chart of archive coverage per hour beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors

from archiver.config import Settings
from archiver.errors import (
    ArchiverError,
    DataFileCorrupt,
    SourceError,
    UsageError,
    stream_failure,
)
from archiver.format import catalog
from archiver.format.reader import read_footer
from archiver.nats.api import OWN_MARK, get_message, stream_info
from archiver.nats.conn import RawClient, connect
from archiver.nats.options import NatsOptions, redact_url
from archiver.proof.findings import PROBLEMS
from archiver.proof.restored import MAX_LISTED, compare_restored
from archiver.proof.verify import verify_generation
from archiver.render import EXIT_DATA, EXIT_OK
from archiver.replay import ReplayOptions, replay
from archiver.replay.mapping import SubjectMapper
from archiver.replay.selection import Selection, select_files
from archiver.store import Store, open_store
from archiver.timefmt import format_ns

log = logging.getLogger(__name__)


@dataclass
class StreamDrill:
    stream: str
    generation: str = ""
    scratch_stream: str = ""
    archived: int = 0
    restored: int = 0
    matched: int = 0
    markers: int = 0
    """KV and object-store delete and purge markers restored (in ``matched``)."""
    differences: int = 0
    examples: list[str] = field(default_factory=list)
    verify_problems: list[str] = field(default_factory=list)
    rto_seconds: float = 0.0
    restore_msgs_per_s: float = 0.0
    newest_archived: str | None = None
    rpo_seconds: float | None = None
    live_not_archived: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and not self.verify_problems
            and not self.differences
            and self.restored == self.archived
        )

    def notes(self) -> list[str]:
        """What went wrong, a line each: verify's problems, differences, the error."""
        return self.verify_problems + self.examples + ([self.error] if self.error else [])


@dataclass
class DrillReport:
    started_at: str
    finished_at: str = ""
    target: str = ""
    since: str | None = None
    streams: list[StreamDrill] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.streams)

    @property
    def exit_code(self) -> int:
        """0 when every restored message matched the archive, 3 otherwise."""
        return EXIT_OK if self.ok else EXIT_DATA

    def document(self) -> dict[str, Any]:
        """The whole report, as the ``--report`` JSON file holds it."""
        out = asdict(self)
        out["ok"] = self.ok
        for s, raw in zip(self.streams, out["streams"], strict=True):
            raw["ok"] = s.ok
        return out

    def as_json(self) -> list[dict[str, object]]:
        """A row per stream, each with the drill's own fields."""
        whole = self.document()
        rows = whole.pop("streams")
        del whole["ok"]
        return [{**row, **whole} for row in rows]

    def text(self) -> str:
        lines = []
        for s in self.streams:
            lines.append(
                f"{s.stream}: {'ok' if s.ok else 'FAILED'}: {s.restored}/{s.archived} restored, "
                f"{s.matched} matched, {s.differences} differ; RTO {s.rto_seconds}s "
                f"({s.restore_msgs_per_s} msgs/s); RPO {s.rpo_seconds}s"
            )
            lines += [
                f"  {t}" for t in s.verify_problems + s.examples + ([s.error] if s.error else [])
            ]
        return "\n".join(lines)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def _create_scratch(nc: RawClient, stream: str) -> tuple[str, str]:
    """A stream and a subject space nobody else uses."""
    token = uuid.uuid4().hex[:10]
    name = f"DRILL_{token}_{stream}"[:200]
    subject = f"drill.{token}"
    js = nc.jetstream()
    try:
        await js.add_stream(
            name=name,
            subjects=[f"{subject}.>"],
            description=f"{OWN_MARK} drill scratch stream of {stream}",
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise SourceError(
            f"cannot create the scratch stream {name} on the target: {exc}",
            hint="the drill user needs to create streams named DRILL_* on drill.>",
        ) from exc
    return name, subject


async def _drill_stream(
    settings: Settings,
    nc: RawClient,
    source: RawClient | None,
    store: Store,
    target: NatsOptions,
    stream: str,
    since_ns: int | None,
    keep: bool,
    full: bool = False,
) -> StreamDrill:
    result = StreamDrill(stream)
    sel = Selection(stream, since_ns=since_ns)
    generation, files = await asyncio.to_thread(select_files, store, sel)
    result.generation = generation
    gen = await asyncio.to_thread(catalog.generation, store, stream, generation)
    all_files = gen.files
    checked = await asyncio.to_thread(verify_generation, store, stream, gen, settings.retention_s)
    result.verify_problems = [
        f"{f.kind} seq {f.first_seq}..{f.last_seq} {f.key or ''} {f.detail}".strip()
        for f in checked.findings
        if f.kind in PROBLEMS
    ][:MAX_LISTED]
    _rpo(store, all_files, result)
    if source is not None:
        await _live_gap(source, store, stream, generation, result)
    if full:
        return await _drill_full(nc, store, stream, keep, result)
    scratch, prefix = await _create_scratch(nc, stream)
    result.scratch_stream = scratch
    try:
        opts = ReplayOptions(
            selection=sel,
            mapper=SubjectMapper.prefix(prefix),
            target=target,
            yes=True,
            checkpoint=False,
            allow_gaps=True,  # the drill's verify step has reported the holes already
        )
        started = time.monotonic()
        summary = await replay(settings, opts)
        result.rto_seconds = round(time.monotonic() - started, 3)
        result.archived = summary.matched
        result.restore_msgs_per_s = round(summary.matched / max(result.rto_seconds, 1e-9), 1)
        compared = await compare_restored(
            nc, store, sel, generation, files, scratch, prefix, opts.keeps_markers
        )
        result.restored, result.matched = compared.restored, compared.matched
        result.markers = compared.markers
        result.differences, result.examples = compared.differences, compared.examples
    except ArchiverError as exc:
        result.error = f"{exc}"
    finally:
        if not keep:
            try:
                await nc.jetstream().delete_stream(scratch)
            except (nats.errors.Error, TimeoutError) as exc:
                result.error = result.error or f"could not remove scratch stream {scratch}: {exc}"
    return result


async def _drill_full(
    nc: RawClient, store: Store, stream: str, keep: bool, result: StreamDrill
) -> StreamDrill:
    """``--full``: restored by ``archiver restore``'s own code, compared seq for seq."""
    from archiver.proof.full import restore_and_compare

    try:
        found = await restore_and_compare(nc, store, stream, result)
        result.archived, result.restored = found.archived, found.restored
        result.matched, result.differences = found.matched, found.differences
        result.examples = found.examples
        result.rto_seconds = round(found.seconds, 3)
        result.restore_msgs_per_s = round(found.archived / max(found.seconds, 1e-9), 1)
    except ArchiverError as exc:
        result.error = f"{exc}"
    finally:
        if result.scratch_stream and not keep:
            try:
                await nc.jetstream().delete_stream(result.scratch_stream)
            except (nats.errors.Error, TimeoutError) as exc:
                result.error = result.error or f"could not remove {result.scratch_stream}: {exc}"
    return result


def _rpo(store: Store, files: list[Any], result: StreamDrill) -> None:
    """The newest archived message, for the report (RPO itself needs the live stream)."""
    if not files:
        return
    newest = max(files, key=lambda f: f.name.last_seq)
    try:
        last_ns = int(read_footer(store, newest).get("last_time_ns", 0) or 0)
    except DataFileCorrupt:
        return  # verify's findings name the damaged file
    if last_ns:
        result.newest_archived = format_ns(last_ns)


async def _live_gap(
    source: RawClient, store: Store, stream: str, generation: str, result: StreamDrill
) -> None:
    """RPO: the time since the archive last held everything the live stream held, which
    is the age of the oldest message it does not hold yet (0 when it holds them all: a
    quiet, fully archived stream loses nothing however old its newest message)."""
    try:
        info = await stream_info(source, stream)
    except UsageError:
        return
    if info.generation != generation:
        return
    archived_seq = await asyncio.to_thread(catalog.archived_seq, store, stream, generation)
    result.live_not_archived = max(0, info.last_seq - archived_seq)
    result.rpo_seconds = 0.0
    if result.live_not_archived:
        start = max(archived_seq + 1, info.first_seq)
        oldest = await get_message(source, stream, start, next_any=True)
        if oldest is not None:
            result.rpo_seconds = round(max(0.0, time.time() - oldest.time_ns / 1e9), 3)


async def drill(
    settings: Settings,
    streams: tuple[str, ...],
    target_url: str | None,
    since_ns: int | None,
    keep: bool,
    full: bool = False,
) -> DrillReport:
    settings.nats.check()
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    names = await asyncio.to_thread(catalog.choose_streams, store, streams)
    if not names:
        raise UsageError("the archive holds no streams to drill", hint="check --store")
    target = (
        NatsOptions(**{**asdict(settings.nats), "url": target_url}) if target_url else settings.nats
    )
    report = DrillReport(
        started_at=_now(),
        target=redact_url(target.url),
        since=format_ns(since_ns) if since_ns else None,
    )
    nc = await connect(target)
    source = nc if target is settings.nats else await _maybe_connect(settings.nats)
    try:
        for stream in names:
            try:
                drilled = await _drill_stream(
                    settings, nc, source, store, target, stream, since_ns, keep, full
                )
            except Exception as exc:
                drilled = StreamDrill(stream, error=stream_failure(exc, stream, log)[0])
            report.streams.append(drilled)
    finally:
        if source is not None and source is not nc:
            await source.close()
        await nc.close()
    report.finished_at = _now()
    return report


async def _maybe_connect(opts: NatsOptions) -> RawClient | None:
    try:
        return await connect(opts)
    except ArchiverError:
        return None  # the source may be the very thing that is down: RPO from the archive
