"""``archiver verify`` and ``drill``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from archiver.cli.app import finish, main, settings_from, with_errors
from archiver.cli.archive import metrics_target
from archiver.cli.options import (
    OUTPUT_FILE,
    common_options,
    json_option,
    metrics_options,
    streams_option,
)
from archiver.cli.replay import time_bound
from archiver.errors import UsageError


@main.command(name="verify")
@common_options
@json_option
@click.argument("streams", nargs=-1)
@streams_option
@click.option(
    "--against-nats",
    is_flag=True,
    help="Also compare message for message with what the server still holds.",
)
@with_errors
def verify_command(
    as_json: bool, streams: tuple[str, ...], against_nats: bool, **params: Any
) -> None:
    """Check that the archive (of STREAMS, default all) is whole and intact.

    Reads every file; checks schema, checksums, content hash, ranges; classifies every
    hole: deleted in NATS, expired before archiving, or missing from the archive.
    Exits 3 when anything is missing, damaged or different.
    """
    from archiver.proof.verify import verify

    named = streams + params["stream"]
    settings = settings_from(params)
    report = verify(settings, named)
    if against_nats:
        import asyncio

        from archiver.proof.compare import compare_with_nats

        asyncio.run(compare_with_nats(settings, report))
    finish(report, as_json)


@main.command(name="drill")
@common_options
@json_option
@click.option(
    "--stream",
    "drill_streams",
    multiple=True,
    help="Drill this stream (repeatable) [default: all archived].",
)
@click.option("--target-url", help="NATS server to restore into [default: --nats-url].")
@click.option("--since", help="Restore only messages since T (RFC 3339 or a duration ago).")
@click.option(
    "--report",
    "report_path",
    **OUTPUT_FILE,
    help="Write the report here: JSON for .json, else Markdown; the other forms and the "
    ".svg chart beside it.",
)
@click.option("--keep", is_flag=True, help="Keep the scratch streams for inspection.")
@click.option(
    "--full",
    is_flag=True,
    help="Restore with archiver restore's own code, every message at its original seq "
    "in a renamed scratch stream, and compare seq for seq: a real recovery's RTO.",
)
@metrics_options
@with_errors
def drill_command(
    as_json: bool,
    drill_streams: tuple[str, ...],
    target_url: str | None,
    since: str | None,
    report_path: Path | None,
    keep: bool,
    full: bool,
    **params: Any,
) -> None:
    """Disaster-recovery drill: restore into scratch streams, compare, report RPO and RTO.

    Exits 0 when every restored message matched the archive, 3 otherwise.
    """
    import asyncio

    from archiver.delivery import deliver
    from archiver.proof.drill import drill
    from archiver.proof.report import write_reports
    from archiver.store import open_store

    target = metrics_target(params)
    settings = settings_from(params)
    since_ns = time_bound("since", since)
    if since_ns is not None and since_ns > time.time_ns():
        # A window that has not begun restores nothing, and "0 of 0 matched" is no proof.
        raise UsageError(
            f"--since {since} is in the future: the drill would restore nothing",
            hint="give a past time (RFC 3339) or a duration ago, e.g. --since 24h",
        )
    if full and since is not None:
        raise UsageError(
            "--full restores whole streams, at their original seqs: --since cannot narrow it",
            hint="drop --since, or drop --full to drill a time window",
        )
    report = asyncio.run(drill(settings, drill_streams, target_url, since_ns, keep, full))
    if report_path:
        written = write_reports(report, open_store(settings.store_url, settings.s3), report_path)
        if not as_json:
            click.echo("report: " + ", ".join(str(p) for p in written))
    finish(report, as_json, lambda: deliver("drill", report, settings, target))
