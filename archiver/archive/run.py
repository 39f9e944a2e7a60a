"""One archive pass: resume point -> read -> cut into files -> commit, per stream.

``archive_stream`` is the step tests call directly; ``run`` selects the streams and
loops over them. A pass reads up to the stream's last sequence as seen when the pass
started, so every run ends at a fixed point.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import zstandard

from archiver import failpoints
from archiver.archive.cutter import Cutter
from archiver.archive.generation import check_boundary, effective_generation
from archiver.archive.heal import heal
from archiver.archive.holes import HoleFinder, fresh_info
from archiver.archive.lease import Lease, Leases
from archiver.archive.select import is_selected, select_streams
from archiver.archive.state import record_state
from archiver.archive.threads import in_thread
from archiver.config import Settings
from archiver.errors import (
    AlreadyExists,
    DataAtRisk,
    LeaseHeld,
    SourceError,
    stream_failure,
)
from archiver.format import layout
from archiver.format.batch import Batch
from archiver.format.fence import Fence
from archiver.format.gaps import Gap, GapKind
from archiver.nats.api import StreamInfo, list_all_streams, list_consumers
from archiver.nats.conn import RawClient, connect
from archiver.nats.reader import reader_for
from archiver.render import Rows
from archiver.store import Store, open_store

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
    healed: int = 0
    """Committed data files found gone from the store and archived again."""
    generation: str = ""
    skipped: str | None = None
    state_record: str | None = None
    """The state record this run wrote (stream and consumer configurations and
    positions), or None when nothing changed since the last one."""
    leased_by: str | None = None
    """Who holds the lease of a stream skipped as leased, and until when."""
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
            k: v
            for k, v in self.as_json().items()
            if k not in ("error", "skipped", "leased_by", "generation", "state_record")
        }


@dataclass(slots=True)
class RunReport(Rows[StreamResult]):
    """What ``archiver run`` did: a summary row per stream."""

    streams: list[StreamResult]
    COLUMNS = (
        "stream",
        "from_seq",
        "to_seq",
        "messages",
        "files",
        "bytes_in",
        "bytes_out",
        "seconds",
        "lost",
        "skipped",
        "error",
    )

    def text(self) -> str:
        held = [f"{r.stream}: skipped: {r.leased_by}" for r in self.streams if r.leased_by]
        return "\n".join([Rows.text(self), *held])


async def archive_stream(
    nc: RawClient, store: Store, settings: Settings, leases: Leases, name: str
) -> StreamResult:
    """Archive one stream from its resume point to its last sequence as of now."""
    started = time.monotonic()
    try:
        lease = await leases.acquire(name)
    except LeaseHeld as exc:
        log.warning("%s", exc, extra={"stream": name})
        held_by = str(exc).removeprefix(f"stream {name} is being archived by ")
        return StreamResult(name, 0, 0, skipped="leased", leased_by=held_by)
    try:
        # Read the stream's state only now that it is ours: a run that held the lease
        # before us may have archived further, or the stream may have been recreated.
        info = await fresh_info(nc, name)
        gen = await effective_generation(nc, store, info, record=True)
        archived_seq = gen.end
        if archived_seq > info.last_seq:
            raise DataAtRisk(
                f"stream {name} ends at seq {info.last_seq} but the archive holds up to "
                f"{archived_seq}: the stream lost messages or was rebuilt",
                hint="investigate before archiving more; nothing was written",
            )
        await check_boundary(nc, store, info, gen)
        result = StreamResult(name, archived_seq + 1, info.last_seq, generation=gen.name)
        fence = Fence(store, name, gen.name, leases.holder, archived_seq, gen.fenced)
        if archived_seq < info.last_seq or gen.missing:
            lease.start_keepalive()
            try:
                if gen.missing:
                    result.healed = await heal(
                        nc,
                        fence,
                        info,
                        gen.missing,
                        lease.ensure,
                        settings.limits,
                        settings.spool_dir,
                    )
                if archived_seq < info.last_seq:
                    await _copy(nc, settings, lease, info, fence, archived_seq, result)
            except Exception as exc:
                # Keep what was committed before the failure in the summary.
                result.error, result.error_exit = stream_failure(exc, name, log)
        if result.error is None:  # else the next run that gets through records it
            try:
                consumers = await list_consumers(nc, name)
                result.state_record = await asyncio.to_thread(
                    record_state, store, info, gen.name, consumers
                )
            except Exception as exc:
                error, code = stream_failure(exc, name, log)
                result.error, result.error_exit = f"recording its state: {error}", code
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


async def _copy(
    nc: RawClient,
    settings: Settings,
    lease: Lease,
    info: StreamInfo,
    fence: Fence,
    archived_seq: int,
    result: StreamResult,
) -> None:
    store, generation = fence.store, fence.generation
    cutter = Cutter(
        fence,
        info.config_json(),
        settings.limits,
        settings.spool_dir,
        before_commit=lease.ensure,
    )
    holes = HoleFinder(nc, info, archived_seq + 1, first_run=archived_seq == 0)
    # Reading overlaps writing: the reader fills the next batch meanwhile. The queue
    # carries batches, then None at the end, or the reader's error.
    queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for batch in reader_for(nc, info, archived_seq + 1, info.last_seq).batches():
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
            await in_thread(cutter.add, item, stop=cutter.stop)
        _count(result, cutter.add_gaps, await holes.holes_up_to(info.last_seq))
        await in_thread(cutter.finish, stop=cutter.stop)
        # The run record is verify's end mark: without it, a lost last file would
        # leave no trace in the archive.
        await asyncio.to_thread(_record_run, store, generation, result)
    except BaseException:
        producer.cancel()
        # Not ``await producer``: its CancelledError and ours would look alike.
        await asyncio.wait([producer])
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


async def run(settings: Settings) -> RunReport:
    """Archive every selected stream once. Raises on errors that stop the whole run."""
    settings.nats.check()  # before the store is touched: nothing written on bad input
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check, True)
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
            except Exception as exc:
                # One stream's trouble must not keep the others from being archived.
                error, code = stream_failure(exc, info.name, log)
                failed = StreamResult(info.name, 0, info.last_seq, generation=info.generation)
                failed.error, failed.error_exit = error, code
                results.append(failed)
        return RunReport(results)
    finally:
        await nc.close()
