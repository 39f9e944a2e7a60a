"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.config import FileLimits, Settings
from archiver.nats.conn import NatsOptions, RawClient, connect
from archiver.store import Store
from archiver.store.options import S3Options


@asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[RawClient]:
    """A connection for test set-up and checks, closed however the block ends."""
    nc = await connect(NatsOptions(url=url))
    try:
        yield nc
    finally:
        await nc.close()


def settings(nats_url: str, store_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "nats": NatsOptions(url=nats_url),
        "store_url": store_url,
        "s3": S3Options(),
        "limits": FileLimits(row_group_rows=1_000),
    }
    base.update(overrides)
    return Settings(**base)


def read_archive(store: Store, tmp: Path, stream: str | None = None) -> pa.Table:
    """Every row of every data file (of one stream), downloaded and read with pyarrow."""
    from archiver.format import layout

    tables = []
    prefix = layout.stream_prefix(stream) if stream else ""
    for i, obj in enumerate(store.list(prefix)):
        if layout.parse_data_key(obj.key) is None:
            continue
        local = tmp / f"read-{i}.parquet"
        store.download(obj.key, local)
        tables.append(pq.read_table(local))
    if not tables:
        return pa.table({"seq": pa.array([], pa.uint64())})
    return pa.concat_tables(tables, promote_options="default")


def data_keys(store: Store, stream: str | None = None) -> list[str]:
    from archiver.format import layout

    prefix = layout.stream_prefix(stream) if stream else ""
    return [o.key for o in store.list(prefix) if layout.parse_data_key(o.key)]


async def publish(
    url: str, stream: str, subjects: Iterable[str], payload: bytes = b"x" * 100
) -> list[int]:
    """Publish with acks; returns the stored sequences."""
    async with nats_client(url) as nc:
        js = nc.jetstream()
        futures = [await js.publish_async(s, payload) for s in subjects]
        acks = await asyncio.gather(*futures)
        return [a.seq for a in acks]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real ``archiver`` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
