"""Getting a command's metrics out: where they go, the status figures a run adds, and
the Pushgateway groups of streams deleted from the server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from archiver.archive.status import StreamStatus, status
from archiver.config import Settings
from archiver.errors import ArchiverError
from archiver.metrics import delete_streams, export, pushed_streams
from archiver.nats.api import list_all_streams
from archiver.nats.conn import connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsTarget:
    """Where a command's metrics go (the metrics options)."""

    pushgateway: str | None
    textfile: Path | None
    job: str

    def __bool__(self) -> bool:
        return bool(self.pushgateway or self.textfile)


async def status_after_run(settings: Settings) -> list[StreamStatus]:
    """Behind/expiry figures for a run's metrics. The run's own figures and summary
    matter more: if NATS or S3 fails now, they go out without these."""
    try:
        return await status(settings, skip_unavailable=True)
    except ArchiverError as exc:
        log.warning("no behind/expiry metrics this run: %s", exc)
        return []


def deliver(
    registry: CollectorRegistry,
    command: str,
    settings: Settings,
    target: MetricsTarget,
    prune: bool = True,
) -> None:
    """Export the metrics; with ``prune``, also drop the Pushgateway groups of streams
    deleted from the server. Raises ``ArchiverError`` with one clear line."""
    export(registry, command, target.pushgateway, target.textfile, target.job)
    if target.pushgateway and prune:
        asyncio.run(prune_deleted_streams(settings, target.pushgateway, target.job, command))


async def prune_deleted_streams(
    settings: Settings, pushgateway: str, job: str, command: str
) -> None:
    """Per-stream groups outlive their stream: a deleted stream's last success time
    would age and keep the no-recent-success alert firing. The groups are listed
    first, so a stream created and pushed meanwhile is on the server's list."""
    pushed = await asyncio.to_thread(pushed_streams, pushgateway, job, command)
    if not pushed:
        return
    nc = await connect(settings.nats)
    try:
        listing = await list_all_streams(nc)
    finally:
        await nc.close()
    gone = pushed - {i.name for i in listing.infos} - set(listing.unavailable)
    if gone:
        await asyncio.to_thread(delete_streams, pushgateway, job, command, gone)
        log.warning("removed the metrics of deleted streams: %s", ", ".join(sorted(gone)))
