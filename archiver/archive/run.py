"""One archive pass: resume point -> read -> cut into files -> commit, per stream.

``archive_stream`` is the step tests call directly; ``run`` selects the streams and
loops over them. A pass reads up to the stream's last sequence as seen when the pass
started, so every run ends at a fixed point.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import zstandard

from archiver import failpoints
from archiver.archive.cutter import Cutter
from archiver.archive.lease import Lease, LeaseHeld, Leases
from archiver.config import Settings
from archiver.errors import AlreadyExists, ArchiverError, DataAtRisk, SourceError, UsageError
from archiver.format import catalog, layout
from archiver.format.batch import Batch
from archiver.format.catalog import DataFile
from archiver.format.gaps import Gap, GapKind, classify
from archiver.format.reader import read_footer
from archiver.nats.api import StreamInfo, get_message, list_all_streams, stream_info
from archiver.nats.conn import RawClient, connect
from archiver.nats.reader import reader_for
from archiver.replay.headers import CHECKPOINT_BUCKET
from archiver.store import Store, open_store
from archiver.timefmt import format_ns

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamResult:
    """The per-stream summary of a run (the contract's JSON fields, plus a few)."""

    stream: str
    from_seq: int
    to_seq: int
    messages: int = 0
    files: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    lost: int = 0
    deleted: int = 0
    consumed: int = 0
    generation: str = ""
    skipped: str | None = None
    error: str | None = None
    error_exit: int = 0

    @property
    def exit_code(self) -> int:
        """3 when data was lost or is at risk, else 1 on an error, else 0."""
        if self.lost or self.error_exit == DataAtRisk.exit_code:
            return DataAtRisk.exit_code
        return self.error_exit

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        del out["error_exit"]
        return out

    def log_fields(self) -> dict[str, object]:
        """Fields for JSON log lines: the summary without the long texts."""
        return {
            k: v for k, v in self.as_json().items() if k not in ("error", "skipped", "generation")
        }


class HoleFinder:
    """Finds the sequences a reader skipped, and classifies them."""

    def __init__(self, nc: RawClient, info: StreamInfo, next_seq: int, first_run: bool) -> None:
        self.nc = nc
        self.info = info
        self.next_seq = next_seq
        # A generation's first run did not promise what was gone before it started.
        self.head_at_first_run = info.first_seq if first_run else 0
        # WorkQueue and Interest streams remove what their consumers take, by design.
        self.removed = GapKind.CONSUMED if info.needs_consumerless_read else GapKind.EXPIRED

    async def holes_before(self, seqs: list[int]) -> list[Gap]:
        """Holes between the expected next sequence and each of ``seqs`` (ascending)."""
        raw: list[tuple[int, int]] = []
        expected = self.next_seq
        for seq in seqs:
            if seq != expected:
                raw.append((expected, seq - 1))
            expected = seq + 1
        self.next_seq = expected
        return await self._classify(raw)

    async def holes_up_to(self, end_seq: int) -> list[Gap]:
        """The trailing hole after the last message read, up to ``end_seq``."""
        if self.next_seq > end_seq:
            return []
        raw = [(self.next_seq, end_seq)]
        self.next_seq = end_seq + 1
        return await self._classify(raw)

    async def _classify(self, raw: list[tuple[int, int]]) -> list[Gap]:
        if not raw:
            return []
        # The head only moves up: what lies below it now was removed from the head.
        head_now = (await _fresh_info(self.nc, self.info.name)).first_seq
        return [
            g
            for a, b in raw
            for g in classify(
                a,
                b,
                head_now=head_now,
                head_at_first_run=self.head_at_first_run,
                removed=self.removed,
            )
        ]


async def _fresh_info(nc: RawClient, name: str) -> StreamInfo:
    try:
        return await stream_info(nc, name)
    except UsageError as exc:
        raise SourceError(f"stream {name} disappeared during the run") from exc


async def archive_stream(
    nc: RawClient, store: Store, settings: Settings, leases: Leases, name: str
) -> StreamResult:
    """Archive one stream from its resume point to its last sequence as of now."""
    started = time.monotonic()
    try:
        lease = await leases.acquire(name)
    except LeaseHeld as exc:
        log.warning("%s", exc, extra={"stream": name})
        return StreamResult(name, 0, 0, skipped="leased")
    try:
        # Read the stream's state only now that it is ours: a run that held the lease
        # before us may have archived further, or the stream may have been recreated.
        info = await _fresh_info(nc, name)
        generation = await effective_generation(nc, store, info)
        done = await asyncio.to_thread(catalog.resume_after, store, name, generation)
        if done > info.last_seq:
            raise DataAtRisk(
                f"stream {name} ends at seq {info.last_seq} but the archive holds up to "
                f"{done}: the stream lost messages or was rebuilt",
                hint="investigate before archiving more; nothing was written",
            )
        await _check_boundary(nc, store, info, generation, done)
        result = StreamResult(name, done + 1, info.last_seq, generation=generation)
        if done < info.last_seq:
            lease.start_keepalive()
            try:
                await _copy(nc, store, settings, lease, info, generation, done, result)
            except ArchiverError as exc:
                # Keep what was committed before the failure in the summary.
                result.error = f"{exc}; {exc.hint}" if exc.hint else str(exc)
                result.error_exit = exc.exit_code
                log.error("%s: %s", name, result.error, extra=result.log_fields())
    finally:
        await lease.release()
    result.seconds = round(time.monotonic() - started, 3)
    log.info(
        "%s: seqs %d-%d: %d messages in %d files, %.1fs",
        name,
        result.from_seq,
        result.to_seq,
        result.messages,
        result.files,
        result.seconds,
        extra=result.log_fields(),
    )
    return result


async def effective_generation(nc: RawClient, store: Store, info: StreamInfo) -> str:
    """The generation to archive into: the stream's, unless it only looks new.

    Some nats-server releases change a stream's creation time on a restart or a config
    update. A stream whose "new" generation has nothing archived yet, but whose message
    at the previous generation's last archived seq is the very message archived there,
    is the same stream: continuing that generation avoids archiving it all again.
    """
    current = info.generation
    if await asyncio.to_thread(catalog.resume_after, store, info.name, current):
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


async def _check_boundary(
    nc: RawClient, store: Store, info: StreamInfo, generation: str, done: int
) -> None:
    """The server's message at our last archived seq must be the one we archived.

    A cluster that lost acknowledged writes and then took new ones can have a last
    sequence above ours while the sequences themselves now hold other messages.
    """
    if done < info.first_seq:
        return
    newest = await asyncio.to_thread(catalog.last_file, store, info.name, generation)
    if newest is None or newest.name.last_seq != done:
        return
    meta = await asyncio.to_thread(read_footer, store, newest)
    server = await get_message(nc, info.name, done)
    if server is not None and str(server.time_ns) != meta.get("last_time_ns"):
        raise DataAtRisk(
            f"stream {info.name} diverged from the archive: seq {done} now holds a message "
            f"stored at {format_ns(server.time_ns)}, not the archived {meta.get('last_time')}",
            hint="the stream lost and rewrote messages; investigate before archiving more",
        )


async def _copy(
    nc: RawClient,
    store: Store,
    settings: Settings,
    lease: Lease,
    info: StreamInfo,
    generation: str,
    done: int,
    result: StreamResult,
) -> None:
    cutter = Cutter(
        store,
        info.name,
        generation,
        info.config_json(),
        settings.limits,
        settings.spool_dir,
        before_commit=lease.ensure,
    )
    holes = HoleFinder(nc, info, done + 1, first_run=done == 0)
    # Reading overlaps writing: the reader fills the next batch meanwhile. The queue
    # carries batches, then None at the end, or the reader's error.
    queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for batch in reader_for(nc, info, done + 1, info.last_seq).batches():
                await queue.put(batch)
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(exc)
            return
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            failpoints.hit("after-read")
            _count(result, cutter.add_gaps, await holes.holes_before(item.seqs))
            await asyncio.to_thread(cutter.add, item)
        _count(result, cutter.add_gaps, await holes.holes_up_to(info.last_seq))
        await asyncio.to_thread(cutter.finish)
        # The run record is verify's end mark: without it, a lost last file would
        # leave no trace in the archive.
        await asyncio.to_thread(_record_run, store, generation, result)
    except BaseException:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
        cutter.abort()
        raise
    finally:
        t = cutter.totals
        result.messages, result.files = t.messages, t.files
        result.bytes_in, result.bytes_out = t.bytes_in, t.bytes_out
    if result.lost:
        log.error(
            "%s: %d messages expired before they could be archived",
            info.name,
            result.lost,
            extra=result.log_fields(),
        )


def _unavailable(name: str) -> StreamResult:
    """A stream the server could not report on (its node is down): not archived this
    time, said loudly, while the healthy streams go ahead."""
    error = (
        "offline or missing on the server, so its state is unknown; not archived this run; "
        "bring the cluster back to health"
    )
    log.error("%s: %s", name, error, extra={"stream": name})
    return StreamResult(name, 0, 0, error=error, error_exit=SourceError.exit_code)


def _record_run(store: Store, generation: str, result: StreamResult) -> None:
    body = {**result.as_json(), "finished_at": time.time()}
    key = layout.run_key(result.stream, generation, result.from_seq, result.to_seq)
    try:
        store.put_bytes(key, zstandard.ZstdCompressor().compress(json.dumps(body).encode()))
    except AlreadyExists:
        log.info("%s: run record %s exists already", result.stream, key)


def _count(result: StreamResult, record: Callable[[list[Gap]], None], gaps: list[Gap]) -> None:
    """Hand the gaps to the cutter and count them in the summary (not kept: memory)."""
    record(gaps)
    for g in gaps:
        if g.kind is GapKind.EXPIRED:
            result.lost += g.count
        elif g.kind is GapKind.DELETED:
            result.deleted += g.count
        elif g.kind is GapKind.CONSUMED:
            result.consumed += g.count


def select_streams(
    all_infos: list[StreamInfo], settings: Settings, unavailable: list[str] | None = None
) -> list[StreamInfo]:
    """The streams a run covers: those named (all must exist), or all minus excluded.
    ``unavailable`` names exist too, but are left to the caller."""
    by_name = {i.name: i for i in all_infos}
    lease_stream = f"KV_{settings.lease_bucket}"
    if settings.streams:
        unknown = [s for s in settings.streams if s not in by_name and s not in (unavailable or [])]
        known = sorted(set(by_name) - {lease_stream})
        if unknown:
            raise UsageError(
                f"unknown stream {', '.join(unknown)}",
                hint=f"streams on the server: {', '.join(known) or 'none'}",
            )
        return [by_name[s] for s in settings.streams if s in by_name]
    return [i for i in all_infos if is_selected(i.name, settings)]


def is_selected(name: str, settings: Settings) -> bool:
    if settings.streams:
        return name in settings.streams
    # The archiver's own state (leases, replay checkpoints, drills' scratch streams) is
    # not worth archiving.
    exclude = (
        *settings.exclude,
        f"KV_{settings.lease_bucket}",
        f"KV_{CHECKPOINT_BUCKET}",
        "DRILL_*",
    )
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


async def run(settings: Settings) -> list[StreamResult]:
    """Archive every selected stream once. Raises on errors that stop the whole run."""
    settings.nats.check()  # before the store is touched: nothing written on bad input
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    await asyncio.to_thread(store.check_commit)
    nc = await connect(settings.nats)
    try:
        listing = await list_all_streams(nc)
        infos = select_streams(listing.infos, settings, listing.unavailable)
        leases = Leases(nc, settings.lease_bucket, settings.lease_ttl_s)
        results = [
            _unavailable(name) for name in listing.unavailable if is_selected(name, settings)
        ]
        for info in infos:
            try:
                results.append(await archive_stream(nc, store, settings, leases, info.name))
            except ArchiverError as exc:
                # One stream's trouble must not keep the others from being archived.
                hint = f"; {exc.hint}" if exc.hint else ""
                log.error("%s: %s%s", info.name, exc, hint, extra={"stream": info.name})
                results.append(
                    StreamResult(
                        info.name,
                        0,
                        info.last_seq,
                        generation=info.generation,
                        error=f"{exc}{hint}",
                        error_exit=exc.exit_code,
                    )
                )
        return results
    finally:
        await nc.close()
