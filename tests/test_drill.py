"""`archiver drill`: restore into scratch streams, compare, report RPO/RTO, clean up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from helpers import data_keys, nats_client, publish, run_cli, settings
from natsserver import NatsServer
from rawpub import RawPublisher
from test_archive import add_streams

from archiver.archive.run import run
from archiver.config import FileLimits
from archiver.nats.api import list_streams
from archiver.store import open_store


def stream_names(url: str) -> list[str]:
    async def go() -> list[str]:
        async with nats_client(url) as nc:
            return sorted(s.name for s in await list_streams(nc))

    return asyncio.run(go())


def archive_two_streams(nats: NatsServer, tmp_path: Path) -> Path:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "SFS": "sfs.>"}))
    pub = RawPublisher(nats.port)
    try:
        for i in range(200):
            pub.publish(
                f"auth.user.{i}.created",
                b"u%d" % i,
                b"NATS/1.0\r\nA: 1\r\nA:  2 \r\n\r\n" if i % 5 == 0 else None,
            )
    finally:
        pub.close()
    asyncio.run(publish(nats.url, "SFS", [f"sfs.ns{i % 3}.file" for i in range(1200)]))
    root = tmp_path / "archive"
    asyncio.run(
        run(settings(nats.url, str(root), limits=FileLimits(row_group_rows=1000, max_rows=500)))
    )
    asyncio.run(publish(nats.url, "SFS", ["sfs.late"] * 7))  # live, not archived yet
    return root


def test_drill_on_a_healthy_archive(nats: NatsServer, tmp_path: Path) -> None:
    root = archive_two_streams(nats, tmp_path)
    before = stream_names(nats.url)
    report_path = tmp_path / "reports" / "drill.json"
    report_path.parent.mkdir()
    result = run_cli(
        "drill",
        "--nats-url",
        nats.url,
        "--store",
        str(root),
        "--report",
        str(report_path),
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and all(s["ok"] for s in rows)
    assert all(s["target"] and s["started_at"] for s in rows), "each row carries the drill's own"
    by_stream = {s["stream"]: s for s in rows}
    assert by_stream["AUTH"]["matched"] == 200 and by_stream["SFS"]["matched"] == 1200
    for s in by_stream.values():
        assert s["rto_seconds"] > 0 and s["restore_msgs_per_s"] > 0
        assert s["rpo_seconds"] is not None and s["rpo_seconds"] >= 0
    assert (
        by_stream["SFS"]["live_not_archived"] == 7 and by_stream["AUTH"]["live_not_archived"] == 0
    )
    assert json.loads(report_path.read_text())["ok"]
    markdown = (tmp_path / "reports" / "drill.md").read_text()
    assert "PASSED" in markdown and "| SFS | 1200 | 1200 | 1200 | 0 |" in markdown
    svg = (tmp_path / "reports" / "drill.svg").read_text()
    assert svg.startswith("<svg") and "AUTH" in svg and "<rect" in svg
    assert stream_names(nats.url) == before, "scratch streams were left behind"


def test_drill_over_a_damaged_file_fails_and_names_it(nats: NatsServer, tmp_path: Path) -> None:
    root = archive_two_streams(nats, tmp_path)
    store = open_store(str(root))
    victim = data_keys(store, "SFS")[1]
    path = root / victim
    path.write_bytes(path.read_bytes()[:-200] + b"\0" * 200)  # a damaged footer
    before = stream_names(nats.url)
    result = run_cli("drill", "--nats-url", nats.url, "--store", str(root), "--json")
    assert result.returncode == 3, result.stderr
    rows = json.loads(result.stdout)
    sfs = next(s for s in rows if s["stream"] == "SFS")
    assert not sfs["ok"] and any(victim in p for p in sfs["verify_problems"] + [sfs["error"] or ""])
    assert next(s for s in rows if s["stream"] == "AUTH")["ok"]
    assert stream_names(nats.url) == before


def test_drill_of_a_stream_with_kv_delete_markers_passes(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"KVLIKE": "kv.>"}))
    pub = RawPublisher(nats.port)
    try:
        pub.publish("kv.a", b"1")
        pub.publish("kv.a", b"", b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n")
        pub.publish("kv.b", b"2")
    finally:
        pub.close()
    root = tmp_path / "archive"
    asyncio.run(run(settings(nats.url, str(root))))
    result = run_cli("drill", "--nats-url", nats.url, "--store", str(root), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (s,) = json.loads(result.stdout)
    assert (s["archived"], s["restored"], s["matched"], s["differences"]) == (2, 2, 2, 0)
