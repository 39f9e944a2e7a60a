"""``archiver restore``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from archiver.cli.app import finish, main, run_async, settings_from, with_errors
from archiver.cli.options import common_options, json_option
from archiver.cli.replay import time_bound


@main.command(name="restore")
@common_options
@json_option
@click.option(
    "--stream",
    "restore_streams",
    multiple=True,
    help="Restore this archived stream (repeatable) [default: every one].",
)
@click.option("--target-url", help="NATS server to rebuild [default: --nats-url, with --yes].")
@click.option(
    "--as-of",
    help="Restore each stream as it was at this time (RFC 3339 or a duration ago): "
    "messages up to it, configuration and consumers as the last run before it saw them.",
)
@click.option(
    "--rename", nargs=2, multiple=True, metavar="SRC DST", help="Restore stream SRC as DST."
)
@click.option("--replicas", type=click.IntRange(1, 5), help="Replicas for every restored stream.")
@click.option("--storage", type=click.Choice(["file", "memory"]), help="Storage for every stream.")
@click.option("--placement-cluster", help="Place every restored stream in this cluster.")
@click.option("--placement-tag", multiple=True, help="Placement tag (repeatable).")
@click.option("--no-consumers", is_flag=True, help="Do not recreate durable consumers.")
@click.option(
    "--allow-gaps",
    is_flag=True,
    help="Restore around seqs the archive cannot account for (else exit 3, nothing done).",
)
@click.option("--dry-run", is_flag=True, help="Change nothing; show what would be restored.")
@click.option("--yes", is_flag=True, help="Allow writing into the --nats-url server.")
@with_errors
def restore_command(as_json: bool, **params: Any) -> None:
    """Rebuild streams from the archive alone: configuration, every message at its
    original seq (holes where the archive has none), durable consumers at their
    acknowledged floors.

    Refuses (exit 2, nothing changed) a target stream that exists and holds messages,
    unless it is this restore's own, interrupted: then it continues. Exits 3 when the
    archive cannot account for some seqs (--allow-gaps restores around them).
    """
    from archiver.restore import Overrides, RestoreOptions, restore

    settings = settings_from(params)
    target = replace(settings.nats, url=params["target_url"]) if params["target_url"] else None
    opts = RestoreOptions(
        streams=params["restore_streams"],
        target=target,
        as_of_ns=time_bound("as-of", params["as_of"]),
        renames=tuple(params["rename"]),
        overrides=Overrides(
            replicas=params["replicas"],
            storage=params["storage"],
            placement_cluster=params["placement_cluster"],
            placement_tags=params["placement_tag"],
        ),
        consumers=not params["no_consumers"],
        dry_run=params["dry_run"],
        yes=params["yes"],
        allow_gaps=params["allow_gaps"],
        progress=not as_json,
    )
    finish(run_async(restore(settings, opts)), as_json)
