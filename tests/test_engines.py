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


def test_generations_payloads_and_headers_in_sql(nats: NatsServer, tmp_path: Path) -> None:
    """A recreated stream's two generations, payload bytes and a header looked up in the
    map column, in one DuckDB query over the whole archive; a partition filter prunes."""
    import duckdb
    from helpers import nats_client

    async def fill(tag: str, n: int) -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            for i in range(n):
                await js.publish(f"auth.{tag}", b"p" * 10, headers={"Trace": f"{tag}-{i}"})

    async def recreate() -> None:
        async with nats_client(nats.url) as nc:
            await nc.jetstream().delete_stream("AUTH")

    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(fill("old", 3))
    assert run_cli("run", "--nats-url", nats.url, "--store", str(root)).returncode == 0
    asyncio.run(recreate())
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(fill("new", 5))
    assert run_cli("run", "--nats-url", nats.url, "--store", str(root)).returncode == 0
    glob = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    rows = duckdb.sql(
        f"SELECT generation, count(*), sum(octet_length(data)) FROM {glob} "
        "WHERE stream = 'AUTH' GROUP BY generation ORDER BY generation"
    ).fetchall()
    assert [(n, b) for _, n, b in rows] == [(3, 30), (5, 50)] and rows[0][0] < rows[1][0]
    traced = duckdb.sql(
        f"SELECT seq FROM {glob} WHERE headers['Trace'][1] = 'new-2' AND date >= '2000-01-01'"
    ).fetchall()
    assert traced == [(3,)]

    import datafusion
    import polars as pl
    import pyarrow as pa

    frame = (
        pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
        .filter(pl.col("stream") == "AUTH")
        .group_by("generation")
        .agg(pl.len().alias("n"), pl.col("data").bin.size().sum().alias("bytes"))
        .sort("generation")
        .collect()
    )
    assert list(zip(frame["n"], frame["bytes"], strict=True)) == [(3, 30), (5, 50)]
    ctx = datafusion.SessionContext()
    ctx.register_parquet(
        "messages",
        str(root),
        table_partition_cols=[("stream", pa.string()), ("date", pa.string())],
        file_extension=".parquet",
    )
    table = ctx.sql(
        "SELECT generation, count(*) AS n, sum(length(data)) AS b FROM messages "
        "WHERE stream = 'AUTH' GROUP BY generation ORDER BY generation"
    ).to_arrow_table()
    assert list(zip(table["n"].to_pylist(), table["b"].to_pylist(), strict=True)) == [
        (3, 30),
        (5, 50),
    ]
