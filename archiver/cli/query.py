"""``archiver sql``: ask the archive a question before deciding what to replay."""

from __future__ import annotations

from typing import Any

import click

from archiver.cli.app import finish, main, settings_from, with_errors
from archiver.cli.options import common_options, json_option, streams_option
from archiver.ddl import ENGINES


@main.command()
@common_options
@json_option
@streams_option
@click.argument("query")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a header row, then rows).")
@with_errors
def sql(as_json: bool, as_csv: bool, query: str, stream: tuple[str, ...], **params: Any) -> None:
    """Run QUERY (DuckDB SQL) over the view `messages`: every column of the archive plus
    `stream` and `date`, local or S3, nothing to set up.

    \b
    archiver sql "SELECT time, subject FROM messages WHERE stream = 'AUTH'
                  AND subject LIKE 'auth.user.%.created'
                  AND time BETWEEN '2026-11-27 02:00Z' AND '2026-11-27 03:00Z'"
    """
    from archiver.sql import run_sql

    settings = settings_from(params)
    result = run_sql(settings, query, stream)
    if as_csv:
        click.echo(result.csv(), nl=False)
        return
    finish(result, as_json)


@main.command()
@common_options
@click.option("--engine", type=click.Choice(ENGINES), required=True)
@click.option("--table", default="nats_archive", show_default=True, help="The table's name.")
@click.option("--location", help="The archive's URL as the engine reaches it [default: --store].")
@with_errors
def ddl(engine: str, table: str, location: str | None, **params: Any) -> None:
    """Print a table definition of the archive for ENGINE: its real columns, its streams,
    its location."""
    from archiver.ddl import make_ddl
    from archiver.store import open_store

    settings = settings_from(params)
    store = open_store(settings.store_url, settings.s3)
    store.check()
    click.echo(make_ddl(store, engine, table, location), nl=False)
