"""``archiver run``, ``status``, ``ls`` and ``demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from archiver.cli.app import finish, main, run_async, settings_from, setup_logging, with_errors
from archiver.cli.options import (
    common_options,
    env_option,
    json_option,
    metrics_options,
    streams_option,
)

if TYPE_CHECKING:
    from archiver.delivery import MetricsTarget


def metrics_target(params: dict[str, Any]) -> MetricsTarget:
    """Take the metrics options out of ``params``: where the command's metrics go."""
    from archiver.delivery import MetricsTarget

    return MetricsTarget(
        params.pop("pushgateway"), params.pop("metrics_file"), params.pop("metrics_job")
    )


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
    from archiver.delivery import deliver

    target = metrics_target(params)
    settings = settings_from(params)
    report = run_async(archive_run(settings))
    finish(report, as_json, lambda: deliver("run", report, settings, target))


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
    import asyncio

    from archiver.archive.status import status as find_status
    from archiver.delivery import deliver

    target = metrics_target(params)
    settings = settings_from(params)
    report = asyncio.run(find_status(settings))
    finish(report, as_json, lambda: deliver("status", report, settings, target))


@main.command()
@common_options
@json_option
@click.argument("stream")
@click.option("--reason", required=True, help="Why the loss is accepted (kept in the archive).")
@click.option("--by", help="Who acknowledges [default: user@host].")
@with_errors
def acknowledge(as_json: bool, stream: str, reason: str, by: str | None, **params: Any) -> None:
    """Acknowledge the losses recorded for STREAM so far, after looking into them.

    Writes who, when and why next to the gap records. `status` then says ok for the
    stream (its `lost` still counts them) until a new loss.
    """
    import asyncio

    from archiver.archive.acknowledge import acknowledge as record

    settings = settings_from(params)
    finish(asyncio.run(record(settings, stream, by, reason)), as_json)


@main.command(name="ls")
@common_options
@json_option
@click.argument("streams", nargs=-1)
@streams_option
@click.option(
    "--state",
    "states",
    is_flag=True,
    help="List the state records instead: each stream's config and consumers as runs saw them.",
)
@with_errors
def ls_command(as_json: bool, streams: tuple[str, ...], states: bool, **params: Any) -> None:
    """List the archive's files (of STREAMS, default all)."""
    from archiver.archive.listing import list_files, list_states

    # Named here or with --stream; the policy's stream list is what to archive, not a
    # limit on what the archive shows.
    named = streams + params["stream"]
    settings = settings_from(params)
    finish(list_states(settings, named) if states else list_files(settings, named), as_json)


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
@click.option("--keep", is_flag=True, help="Leave the server and archive running afterwards.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@with_errors
def demo(workdir: Path, messages: int, keep: bool, verbose: int) -> None:
    """Start a throwaway nats-server, fill five streams, then run the archiver's commands
    against it, each shown as typed and explained."""
    import asyncio

    from archiver.demo import run_demo

    setup_logging(verbose)
    sys.exit(asyncio.run(run_demo(workdir, messages, click.echo, keep)))
