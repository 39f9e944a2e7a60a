"""Every metric in one place, pushed to a Pushgateway or written for node-exporter.

A CronJob has no scrape target, so each command that reports builds a fresh registry
and hands it over at the end: ``--pushgateway URL`` or ``--metrics-file PATH``
(node-exporter's textfile collector; written to a temp name and renamed, so the
collector never reads half a file).

On the Pushgateway each stream's series live in a group of their own (job
``nats-archiver`` or ``--metrics-job``, ``command``, ``stream``), pushed with POST, which replaces only the
metrics pushed: several archivers sharing the streams (scale-out) never wipe each
other's streams, a stream skipped because another run holds it keeps that run's
figures, and a failed pass (which sets no new success time) keeps the last success
time, so the no-recent-success alert sees it age. ``pushed_streams`` and
``delete_streams`` let a run remove the groups of streams deleted from the server.

| metric | type | labels | meaning |
|---|---|---|---|
| nats_archiver_last_success_timestamp_seconds | gauge | stream | end of the last run that archived the stream without error |
| nats_archiver_run_duration_seconds | gauge | stream | how long the stream's pass took |
| nats_archiver_messages_archived | gauge | stream | messages archived by this run |
| nats_archiver_bytes_archived | gauge | stream | payload and header bytes archived by this run |
| nats_archiver_bytes_written | gauge | stream | Parquet bytes written by this run |
| nats_archiver_messages_lost_total | counter | stream | messages that expired before this run could archive them |
| nats_archiver_behind_messages | gauge | stream | messages the stream holds beyond the archive (status) |
| nats_archiver_expires_in_seconds | gauge | stream | time until the oldest unarchived message expires; +Inf when none |
| nats_archiver_run_errors | gauge | stream | 1 when the stream's pass failed |
| nats_archiver_drill_success | gauge | stream | 1 when the last drill restored and matched everything |
| nats_archiver_drill_rto_seconds | gauge | stream | the drill's restore time |
| nats_archiver_drill_rpo_seconds | gauge | stream | age of the newest archived message at drill time |
| nats_archiver_drill_timestamp_seconds | gauge | | when the last drill finished |
"""  # noqa: E501

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
    write_to_textfile,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from archiver.errors import MetricsError

if TYPE_CHECKING:
    from archiver.archive.run import RunReport
    from archiver.archive.status import StatusReport
    from archiver.proof.drill import DrillReport

P = "nats_archiver_"
JOB = "nats-archiver"


def _gauge(reg: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(P + name, doc, ["stream"], registry=reg)


def run_metrics(report: RunReport, statuses: StatusReport | None) -> CollectorRegistry:
    reg = CollectorRegistry()
    success = _gauge(reg, "last_success_timestamp_seconds", "End of the last error-free run")
    duration = _gauge(reg, "run_duration_seconds", "Seconds the stream's pass took")
    messages = _gauge(reg, "messages_archived", "Messages archived by this run")
    bytes_in = _gauge(reg, "bytes_archived", "Payload and header bytes archived by this run")
    bytes_out = _gauge(reg, "bytes_written", "Parquet bytes written by this run")
    lost = Counter(
        P + "messages_lost",
        "Messages that expired before they were archived",
        ["stream"],
        registry=reg,
    )
    errors = _gauge(reg, "run_errors", "1 when the stream's pass failed")
    now = time.time()
    for r in report.streams:
        if r.skipped:
            continue
        if r.error is None:
            success.labels(r.stream).set(now)
        duration.labels(r.stream).set(r.seconds)
        messages.labels(r.stream).set(r.messages)
        bytes_in.labels(r.stream).set(r.bytes_in)
        bytes_out.labels(r.stream).set(r.bytes_out)
        lost.labels(r.stream).inc(r.lost)
        errors.labels(r.stream).set(1 if r.error else 0)
    if statuses is not None:
        add_status(reg, statuses)
    return reg


def add_status(reg: CollectorRegistry, statuses: StatusReport) -> None:
    behind = _gauge(reg, "behind_messages", "Messages the stream holds beyond the archive")
    expires = _gauge(
        reg, "expires_in_seconds", "Seconds until the oldest unarchived message expires"
    )
    for s in statuses.streams:
        if s.error:
            continue  # unknown: no figure is better than a wrong one
        behind.labels(s.stream).set(s.behind)
        expires.labels(s.stream).set(math.inf if s.expires_in_s is None else s.expires_in_s)


def status_metrics(statuses: StatusReport) -> CollectorRegistry:
    reg = CollectorRegistry()
    add_status(reg, statuses)
    return reg


def drill_metrics(report: DrillReport) -> CollectorRegistry:
    reg = CollectorRegistry()
    ok = _gauge(reg, "drill_success", "1 when the drill restored and matched everything")
    rto = _gauge(reg, "drill_rto_seconds", "Seconds the drill's restore took")
    rpo = _gauge(reg, "drill_rpo_seconds", "Age of the newest archived message at drill time")
    for s in report.streams:
        ok.labels(s.stream).set(1 if s.ok else 0)
        rto.labels(s.stream).set(s.rto_seconds)
        if s.rpo_seconds is not None:
            rpo.labels(s.stream).set(s.rpo_seconds)
    Gauge(P + "drill_timestamp_seconds", "When the last drill finished", registry=reg).set(
        time.time()
    )
    return reg


def pushed_streams(pushgateway: str, job: str, command: str) -> set[str]:
    """The streams that have a group of this job and command on the Pushgateway."""
    base = (pushgateway if "://" in pushgateway else f"http://{pushgateway}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise MetricsError(f"--pushgateway must be an http(s) URL, not {base.split(':')[0]}:")
    try:
        with urllib.request.urlopen(f"{base}/api/v1/metrics", timeout=10) as answer:  # noqa: S310
            body = json.load(answer)
    except (OSError, ValueError) as exc:
        raise MetricsError(
            f"cannot list the Pushgateway's groups: {exc}", hint="check --pushgateway"
        ) from exc
    groups = body.get("data") if isinstance(body, dict) else None
    if not isinstance(groups, list):
        raise MetricsError(
            "the Pushgateway's /api/v1/metrics answer has no list of groups",
            hint="check that --pushgateway points at a Prometheus Pushgateway (1.0 or later)",
        )
    found = set()
    for group in groups:
        labels = group.get("labels") if isinstance(group, dict) else None
        if (
            isinstance(labels, dict)
            and labels.get("job") == job
            and labels.get("command") == command
            and isinstance(labels.get("stream"), str)
            and labels["stream"]
        ):
            found.add(labels["stream"])
    return found


def delete_streams(pushgateway: str, job: str, command: str, streams: set[str]) -> None:
    """Delete these streams' groups (streams gone from the server)."""
    try:
        for stream in sorted(streams):
            delete_from_gateway(
                pushgateway,
                job=job,
                grouping_key={"command": command, "stream": stream},
                timeout=10,
            )
    except OSError as exc:
        raise MetricsError(
            f"cannot delete metrics of deleted streams: {exc}", hint="check --pushgateway"
        ) from exc


def export(
    reg: CollectorRegistry,
    command: str,
    pushgateway: str | None,
    textfile: Path | None,
    job: str = JOB,
) -> None:
    """Hand the metrics over; a failure is one clear error, after the work is done.

    The group without a stream (job and command only) is replaced whole (PUT), or
    deleted when there is nothing for it: releases before per-stream groups kept every
    stream's series there, and the Pushgateway refuses a push whose series another
    group already holds. Then each stream's group gets a POST.
    """
    try:
        if textfile is not None:
            write_to_textfile(str(textfile), reg)
        if pushgateway:
            groups = split_by_stream(reg)
            streamless = groups.pop("", None)
            key = {"command": command}
            if streamless is None:
                delete_from_gateway(pushgateway, job=job, grouping_key=key, timeout=10)
            else:
                push_to_gateway(
                    pushgateway, job=job, grouping_key=key, registry=streamless, timeout=10
                )
            for stream, group in groups.items():
                pushadd_to_gateway(
                    pushgateway,
                    job=job,
                    grouping_key=key | {"stream": stream},
                    registry=group,
                    timeout=10,
                )
    except OSError as exc:
        raise MetricsError(
            f"cannot deliver metrics: {exc}", hint="check --pushgateway / --metrics-file"
        ) from exc


class _Samples:
    """A collector that hands back metric families as they were collected."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, family: Metric, sample: Sample) -> None:
        if family.name not in self.families:
            self.families[family.name] = Metric(family.name, family.documentation, family.type)
        self.families[family.name].samples.append(sample)

    def collect(self) -> list[Metric]:
        return list(self.families.values())


def split_by_stream(reg: CollectorRegistry) -> dict[str, CollectorRegistry]:
    """One registry per ``stream`` label value ("" for series without one)."""
    by_stream: dict[str, _Samples] = {}
    for family in reg.collect():
        for sample in family.samples:
            stream = sample.labels.get("stream", "")
            by_stream.setdefault(stream, _Samples()).add(family, sample)
    out = {}
    for stream, samples in by_stream.items():
        group = CollectorRegistry(auto_describe=False)
        group.register(samples)
        out[stream] = group
    return out
