"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.config import FileLimits, Settings
from archiver.nats.api import StoredMessage
from archiver.nats.conn import RawClient, connect
from archiver.nats.options import NatsOptions
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
    """Every row of every committed data file (of one stream), as the commit fence says,
    downloaded and read with pyarrow."""
    from archiver.format import catalog

    tables = []
    streams = [stream] if stream else catalog.streams_in_archive(store)
    keys = [f.key for s in streams for f in catalog.data_files(store, s)]
    for i, key in enumerate(keys):
        local = tmp / f"read-{i}.parquet"
        store.download(key, local)
        tables.append(pq.read_table(local))
    if not tables:
        return pa.table({"seq": pa.array([], pa.uint64())})
    return pa.concat_tables(tables, promote_options="default")


def data_keys(store: Store, stream: str | None = None) -> list[str]:
    from archiver.format import layout

    prefix = layout.stream_prefix(stream) if stream else ""
    return [o.key for o in store.list(prefix) if layout.parse_data_key(o.key)]


def unfence(store: Store, stream: str) -> None:
    """Make the stream's archive one written before the commit fence (no markers, no
    base records), so that a test can plant objects that count without a marker."""
    from archiver.format import layout

    for o in list(store.list(layout.commit_prefix(stream))):
        store.delete(o.key)


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
    """Run the ``archiver`` command: in this process (click's runner), or as a real
    process when the test sets environment variables (secrets, failpoints), which must
    reach a fresh interpreter exactly as a deployment's would."""
    if env is not None:
        return run_process(*args, env=env, timeout=timeout)
    return run_in_process(*args)


def run_process(
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


def run_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command through click's test runner, shaped like a finished process: an
    exception that would have been a traceback is one, on stderr."""
    from click.testing import CliRunner

    from archiver.cli import main

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    finally:
        # The command logs to the runner's stderr, which is gone after the call.
        root.handlers[:], root.level = saved[0], saved[1]
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(result.exception)
        )
    return subprocess.CompletedProcess(["archiver", *args], result.exit_code, result.stdout, stderr)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition, never for a fixed time; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def lease_released(url: str, stream: str, bucket: str = "archiver-leases") -> bool:
    """Whether no run holds the stream's lease (released, or expired by the bucket's TTL)."""
    import nats.js.errors

    from archiver.archive.lease import lease_key

    async def go() -> bool:
        async with nats_client(url) as nc:
            try:
                kv = await nc.jetstream().key_value(bucket)
                await kv.get(lease_key(stream))
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
                return True
            return False

    return asyncio.run(go())


def stream_messages(url: str, stream: str) -> int:
    """How many messages the stream holds now."""
    from archiver.nats.api import stream_info

    async def go() -> int:
        async with nats_client(url) as nc:
            return (await stream_info(nc, stream)).messages

    return asyncio.run(go())


GETS_AT_ONCE = 256


def stored_messages(url: str, stream: str) -> list[StoredMessage]:
    """Every message the stream holds, exactly as stored, in sequence order.

    Read with the server's message get (not a consumer, which the archiver reads
    through), so the archive is checked against an independent path; the gets are
    pipelined, a window at a time.
    """
    from archiver.nats.api import get_message, stream_info

    async def go() -> list[StoredMessage]:
        async with nats_client(url) as nc:
            info = await stream_info(nc, stream)
            found: list[StoredMessage] = []
            if not info.messages:
                return found
            for start in range(info.first_seq, info.last_seq + 1, GETS_AT_ONCE):
                seqs = range(start, min(start + GETS_AT_ONCE, info.last_seq + 1))
                got = await asyncio.gather(*(get_message(nc, stream, s) for s in seqs))
                found += [m for m in got if m is not None]
            return found

    return asyncio.run(go())
