"""``archiver sql``: SQL over the archive with nothing set up, local or S3."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import publish, run_cli, settings
from natsserver import NatsServer
from test_archive import add_streams

from archiver.archive.run import run
from archiver.store import Store


def test_sql_over_a_local_directory_and_s3(
    nats: NatsServer, any_store: tuple[str, Store], tmp_path: Path
) -> None:
    url, _ = any_store
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "PCT%41B": "pct.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.u{i % 3}.created" for i in range(40)]))
    asyncio.run(publish(nats.url, "PCT%41B", ["pct.a"] * 4))
    asyncio.run(run(settings(nats.url, url)))
    counted = run_cli(
        "sql", "SELECT count(*) AS n FROM messages WHERE stream='AUTH'", "--store", url, "--json"
    )
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == [{"n": 40}]
    odd = run_cli(
        "sql", "SELECT count(*) AS n FROM messages WHERE stream='PCT%41B'", "--store", url, "--json"
    )
    assert json.loads(odd.stdout) == [{"n": 4}]
    narrowed = run_cli(
        "sql",
        "SELECT stream, count(DISTINCT generation) AS g, max(seq) AS last FROM messages GROUP BY stream",
        "--store",
        url,
        "--stream",
        "AUTH",
        "--csv",
    )
    assert narrowed.returncode == 0, narrowed.stderr
    assert narrowed.stdout.splitlines() == ["stream,g,last", "AUTH,1,40"]
    bad = run_cli("sql", "SELEC 1", "--store", url)
    assert bad.returncode == 2 and "SQL: Parser Error" in bad.stderr


def test_a_store_failing_under_the_query_is_a_store_error_exit_1(
    nats: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archiver.errors import StoreError
    from archiver.store.local import LocalStore

    root = str(tmp_path / "archive")
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    asyncio.run(run(settings(nats.url, root)))

    def broken(self: LocalStore, key: str, start: int, length: int) -> bytes:
        raise StoreError(f"cannot read {key}: connection reset by peer")

    monkeypatch.setattr(LocalStore, "get_range", broken)
    result = run_cli("sql", "SELECT count(*) FROM messages", "--store", root)
    assert result.returncode == 1, result.stderr
    assert "connection reset by peer" in result.stderr and "SQL:" not in result.stderr
