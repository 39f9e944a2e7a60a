"""The archive as query engines read it: every engine sees ``stream`` equal to the NATS
stream name, whatever characters it holds, in one query over the whole archive."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import publish, run_cli
from natsserver import NatsServer
from test_archive import add_streams

ODD = {"PCT%41B": "pct.>", "K=V": "kv.>", "SP:ACE": "space.>", "ÜBER": "uber.>"}
COUNTS = {"AUTH": 30, "PCT%41B": 3, "K=V": 4, "SP:ACE": 5, "ÜBER": 6}


@pytest.fixture
def odd_archive(nats: NatsServer, tmp_path: Path) -> Path:
    """AUTH and four streams with names Hive-style paths must escape, archived."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", **ODD}))
    for name, subject in {"AUTH": "auth.>", **ODD}.items():
        asyncio.run(publish(nats.url, name, [subject.replace(">", "e")] * COUNTS[name]))
    root = tmp_path / "archive"
    done = run_cli("run", "--nats-url", nats.url, "--store", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_odd_stream_names_archive_and_verify(odd_archive: Path) -> None:
    """PCT%41B archives on 2.10 too, where no consumer can read it (direct gets can)."""
    checked = run_cli("verify", "--store", str(odd_archive), "--json")
    assert checked.returncode == 0, checked.stdout
    assert (odd_archive / "stream=PCT%2541B").is_dir() and (odd_archive / "stream=K%3DV").is_dir()


def test_duckdb_reads_every_stream_name_back(odd_archive: Path) -> None:
    import duckdb

    rows = duckdb.sql(
        f"SELECT stream, count(*) FROM read_parquet('{odd_archive}/**/*.parquet', "
        "hive_partitioning=true) GROUP BY stream"
    ).fetchall()
    assert dict(rows) == COUNTS
    one = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{odd_archive}/**/*.parquet', "
        "hive_partitioning=true) WHERE stream = 'PCT%41B'"
    ).fetchall()
    assert one == [(3,)]


def test_polars_reads_every_stream_name_back(odd_archive: Path) -> None:
    import polars as pl

    frame = (
        pl.scan_parquet(f"{odd_archive}/**/*.parquet", hive_partitioning=True)
        .group_by("stream")
        .len()
        .collect()
    )
    assert dict(zip(frame["stream"].to_list(), frame["len"].to_list(), strict=True)) == COUNTS


def test_datafusion_reads_every_stream_name_back(odd_archive: Path) -> None:
    import datafusion
    import pyarrow as pa

    ctx = datafusion.SessionContext()
    ctx.register_parquet(
        "messages",
        str(odd_archive),
        table_partition_cols=[("stream", pa.string()), ("date", pa.string())],
        file_extension=".parquet",
    )
    table = ctx.sql("SELECT stream, count(*) AS n FROM messages GROUP BY stream").to_arrow_table()
    assert dict(zip(table["stream"].to_pylist(), table["n"].to_pylist(), strict=True)) == COUNTS
