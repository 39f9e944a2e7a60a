"""``archiver ddl``: each engine's table definition, checked the way that engine would:
DuckDB's executed, Trino's, Athena's and Spark's parsed in their own dialects."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot
from helpers import publish, run_cli, settings
from natsserver import NatsServer
from test_archive import add_streams

from archiver.archive.run import run

README = Path(__file__).resolve().parent.parent / "README.md"
FIVE = {
    "AUTH": "auth.>",
    "COMPUTE": "compute.>",
    "GATEWAY": "gateway.>",
    "SFS": "sfs.>",
    "NOTIFICATIONS": "notifications.>",
}
DIALECT = {"athena": "athena", "trino": "trino", "spark": "spark"}


@pytest.fixture
def five(nats: NatsServer, tmp_path: Path) -> Path:
    """The deployment's five streams, archived to a local directory."""
    asyncio.run(add_streams(nats.url, FIVE))
    for name, subject in FIVE.items():
        asyncio.run(publish(nats.url, name, [subject.replace(">", "e")] * 7))
    root = tmp_path / "archive"
    asyncio.run(run(settings(nats.url, str(root))))
    return root


def ddl(root: Path, engine: str, *extra: str) -> str:
    result = run_cli("ddl", "--engine", engine, "--store", str(root), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_duckdbs_ddl_runs_and_reads_the_archive(five: Path) -> None:
    con = duckdb.connect()
    con.execute(ddl(five, "duckdb"))
    rows = con.sql(
        "SELECT stream, count(*), count(generation) FROM nats_archive GROUP BY stream"
    ).fetchall()
    assert {r[0]: r[1:] for r in rows} == {name: (7, 7) for name in FIVE}


@pytest.mark.parametrize("engine", ["athena", "trino", "spark"])
def test_each_engines_ddl_parses_in_its_dialect_and_names_the_archives_streams(
    five: Path, engine: str
) -> None:
    text = ddl(five, engine, "--location", "s3://my-bucket/nats")
    statements = [s for s in sqlglot.parse(text, read=DIALECT[engine]) if s is not None]
    assert statements and statements[0].key == "create"
    assert "s3://my-bucket/nats/" in text and "generation" in text
    if engine == "athena":
        values = re.search(r"'projection.stream.values' = '([^']*)'", text)
        assert values and set(values[1].split(",")) == set(FIVE)


def test_the_readme_shows_the_ddl_the_command_makes(five: Path) -> None:
    readme = README.read_text()
    for engine in ("athena", "trino", "spark", "duckdb"):
        text = ddl(five, engine, "--location", "s3://my-bucket/nats")
        assert text in readme, (
            f"README's {engine} DDL differs from `archiver ddl --engine {engine}`"
        )


def test_bad_table_names_and_locations_are_usage_errors(five: Path) -> None:
    for extra in (["--table", "x; DROP"], ["--location", "bucket/it's"]):
        result = run_cli("ddl", "--engine", "trino", "--store", str(five), *extra)
        assert result.returncode == 2, result.stderr
