"""``archiver run``, ``status``, ``ls`` and ``demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from archiver.cli.app import finish, main, run_async, settings_from, setup_logging, with_errors
from archiver.cli.options import (
    common_options,
    env_option,
    json_option,
    metrics_options,
    streams_option,
)


def metrics_delivery(command: str, params: dict[str, Any]) -> Any:
    """Take the metrics options out of ``params``; a function that delivers a result's
    metrics to them (None when none are set)."""
    from archiver.delivery import MetricsTarget

    target = MetricsTarget(
        params.pop("pushgateway"), params.pop("metrics_file"), params.pop("metrics_job")
    )
    if not target:
        return None

    def deliver_for(result: Any, settings: Any) -> Any:
        from archiver.delivery import deliver

        return lambda: deliver(command, result, settings, target)

    return deliver_for


@main.command()
@common_options
@json_option
@streams_option
@env_option(
    "--spool-dir",
    type=click.Path(path_type=Path),
    help="Scratch directory for files being written [default: system temp].",
)
@metrics_options
@with_errors
def run(as_json: bool, **params: Any) -> None:
    """Archive each selected stream (default: all) up to its last sequence, then exit."""
    from archiver.archive.run import run as archive_run

    delivery = metrics_delivery("run", params)
    settings = settings_from(params)
    report = run_async(archive_run(settings))
    finish(report, as_json, delivery and delivery(report, settings))


@main.command()
@common_options
@json_option
@streams_option
@metrics_options
@with_errors
def status(as_json: bool, **params: Any) -> None:
    """How far behind the archive is and how long until unarchived messages expire.

    Exits 3 when a stream is at-risk or lost.
    """
    from archiver.archive.status import status as find_status

    delivery = metrics_delivery("status", params)
    settings = settings_from(params)
    report = run_async(find_status(settings))
    finish(report, as_json, delivery and delivery(report, settings))


@main.command(name="ls")
@common_options
@json_option
@click.argument("streams", nargs=-1)
@streams_option
@with_errors
def ls_command(as_json: bool, streams: tuple[str, ...], **params: Any) -> None:
    """List the archive's files (of STREAMS, default all)."""
    from archiver.archive.listing import list_files

    # Named here or with --stream; the policy's stream list is what to archive, not a
    # limit on what the archive shows.
    named = streams + params["stream"]
    finish(list_files(settings_from(params), named), as_json)


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path(),
    show_default=True,
    help="Where ./archive and the demo's server files go.",
)
@click.option("--messages", default=2000, show_default=True, help="Messages per stream.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@with_errors
def demo(workdir: Path, messages: int, verbose: int) -> None:
    """Start a throwaway nats-server, fill five streams, archive, show status."""
    from archiver.demo import run_demo

    setup_logging(verbose)
    sys.exit(run_async(run_demo(workdir, messages, click.echo)))
