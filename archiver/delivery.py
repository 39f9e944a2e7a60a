"""Getting a command's metrics out: built from its result, with the status figures a run
adds, sent where the metrics options say, and the Pushgateway groups of streams deleted
from the server removed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from archiver.archive.run import RunReport
from archiver.archive.status import StatusReport, status
from archiver.config import Settings
from archiver.errors import ArchiverError
from archiver.metrics import (
    delete_streams,
    drill_metrics,
    export,
    pushed_streams,
    run_metrics,
    status_metrics,
)
from archiver.nats.api import list_all_streams
from archiver.nats.conn import connect
from archiver.proof.drill import DrillReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsTarget:
    """Where a command's metrics go (the metrics options)."""

    pushgateway: str | None
    textfile: Path | None
    job: str

    def __bool__(self) -> bool:
        return bool(self.pushgateway or self.textfile)


def deliver(
    command: str,
    result: RunReport | StatusReport | DrillReport,
    settings: Settings,
    target: MetricsTarget,
) -> None:
    """Build the command's metrics from its result and send them; with a Pushgateway,
    also drop the groups of streams deleted from the server (not after a drill: a
    deleted stream's archive is still drilled). Raises ``ArchiverError``, one line."""
    if not target:
        return
    registry = _registry(result, settings)
    export(registry, command, target.pushgateway, target.textfile, target.job)
    if target.pushgateway and not isinstance(result, DrillReport):
        asyncio.run(prune_deleted_streams(settings, target.pushgateway, target.job, command))


def _registry(
    result: RunReport | StatusReport | DrillReport, settings: Settings
) -> CollectorRegistry:
    if isinstance(result, RunReport):
        done = tuple(r.stream for r in result.streams if not r.skipped)
        statuses = asyncio.run(status_after_run(replace(settings, streams=done))) if done else None
        return run_metrics(result, statuses)
    if isinstance(result, StatusReport):
        return status_metrics(result)
    return drill_metrics(result)


async def status_after_run(settings: Settings) -> StatusReport | None:
    """Behind/expiry figures for a run's metrics. The run's own figures and summary
    matter more: if NATS or S3 fails now, they go out without these."""
    try:
        return await status(settings, skip_unavailable=True)
    except ArchiverError as exc:
        log.warning("no behind/expiry metrics this run: %s", exc)
        return None


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
