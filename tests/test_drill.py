"""`archiver drill`: restore into scratch streams, compare, report RPO/RTO, clean up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
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
    assert (
        by_stream["SFS"]["live_not_archived"] == 7 and by_stream["AUTH"]["live_not_archived"] == 0
    )
    # RPO is the time since the archive last held everything the server held: 0 for a
    # fully archived stream however old its newest message, the age of the oldest
    # unarchived message otherwise.
    assert by_stream["AUTH"]["rpo_seconds"] == 0
    assert 0 < by_stream["SFS"]["rpo_seconds"] < 120
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


def test_a_kv_buckets_deletes_and_purges_are_replayed_and_counted(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Without its delete and purge markers a KV bucket's stream brings deleted keys
    back: for KV_ and OBJ_ streams they are replayed by default, and the drill counts
    them."""

    async def bucket() -> None:
        async with nats_client(nats.url) as nc:
            kv = await nc.jetstream().create_key_value(bucket="CONFIG", history=5)
            await kv.put("a", b"1")
            await kv.put("b", b"2")
            await kv.delete("a")
            await kv.put("c", b"3")
            await kv.purge("c")

    asyncio.run(bucket())
    root = tmp_path / "archive"
    asyncio.run(run(settings(nats.url, str(root))))
    base = ("--nats-url", nats.url, "--store", str(root), "--json")
    dry = run_cli("replay", *base, "--stream", "KV_CONFIG", "--dry-run", "--yes")
    assert dry.returncode == 0, dry.stderr
    # a=1, b=2, the delete of a, the purge of c (which rolled up c=3): four messages.
    assert (json.loads(dry.stdout)[0]["matched"], json.loads(dry.stdout)[0]["skipped"]) == (4, 0)
    without = run_cli(
        "replay", *base, "--stream", "KV_CONFIG", "--dry-run", "--yes", "--exclude-delete-markers"
    )
    plain = json.loads(without.stdout)[0]
    assert (plain["matched"], plain["skipped"]) == (2, 2)
    drilled = run_cli("drill", *base, "--stream", "KV_CONFIG")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    (s,) = json.loads(drilled.stdout)
    assert (s["archived"], s["restored"], s["matched"], s["markers"]) == (4, 4, 4, 2)


def test_restored_messages_are_matched_by_archived_seq_not_position() -> None:
    """One message resent after an ack timeout lands after its neighbours: that is no
    difference at all."""
    from archiver.proof.restored import _Matcher
    from archiver.replay.headers import message_id, replay_headers
    from archiver.replay.selection import Selection

    sel = Selection("AUTH")
    gen = "20260101T000000000000Z"
    rows = [(seq, f"auth.{seq}", seq * 10, None, b"x%d" % seq) for seq in range(1, 6)]
    matcher = _Matcher(iter(rows), sel, gen, "drill.t")
    matcher.start(keep_markers=True)
    for seq in (1, 3, 4, 2, 5):  # 2 was resent
        block = replay_headers(
            None, msg_id=message_id("AUTH", gen, seq), stream="AUTH", seq=seq, time_ns=seq * 10
        )
        matcher.pending[seq] = (f"drill.t.auth.{seq}", block, b"x%d" % seq)
        matcher.arrived += 1
        matcher.settle(final=False)
    matcher.settle(final=True)
    assert (matcher.out.matched, matcher.out.differences) == (5, 0), matcher.out.examples


def test_the_report_file_is_the_one_named_in_the_format_its_suffix_says(
    nats: NatsServer, tmp_path: Path
) -> None:
    root = archive_two_streams(nats, tmp_path)
    named = tmp_path / "drill-report.txt"
    args = ("drill", "--nats-url", nats.url, "--store", str(root), "--stream", "AUTH")
    result = run_cli(*args, "--report", str(named))
    assert result.returncode == 0, result.stdout + result.stderr
    assert named.read_text().startswith("# Disaster-recovery drill: PASSED")
    assert json.loads((tmp_path / "drill-report.json").read_text())["ok"]
    svg = (tmp_path / "drill-report.svg").read_text()
    width = int(svg.split('width="', 1)[1].split('"', 1)[0])
    assert width >= 480, "the title fits"


def test_the_chart_reads_only_the_footers_it_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Years of hourly files would be a ranged GET each; the chart draws a week."""
    from archiver.archive.cutter import Cutter
    from archiver.config import FileLimits
    from archiver.format.batch import Batch
    from archiver.format.fence import Fence
    from archiver.proof import coverage
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    cutter = Cutter(
        Fence(store, "AUTH", "20260101T000000000000Z", "test"),
        "{}",
        FileLimits(row_group_rows=1000),
        tmp_path,
        before_commit=lambda: None,
    )
    day_ns = 86_400 * 10**9
    batch = Batch()
    for i in range(60):  # a message a day: a file a day
        batch.append(i + 1, "auth.a", 1_767_225_600 * 10**9 + i * day_ns, None, b"x")
    cutter.add(batch)
    cutter.finish()
    reads: list[str] = []
    real = coverage.read_footer

    def counted(store: object, f: object) -> dict[str, str]:
        reads.append(str(f))
        return real(store, f)  # type: ignore[arg-type]

    monkeypatch.setattr(coverage, "read_footer", counted)
    svg = coverage.coverage_svg(store, ["AUTH"])
    assert "<rect" in svg
    assert 7 <= len(reads) <= 10, len(reads)


def test_a_resend_in_a_sparse_stream_is_no_difference_either() -> None:
    """Seqs 1, 5001, 10001, ...: a resent message lands thousands of seqs late, a few
    messages late."""
    from archiver.proof.restored import _Matcher
    from archiver.replay.headers import message_id, replay_headers
    from archiver.replay.selection import Selection

    gen = "20260101T000000000000Z"
    seqs = [1 + 5000 * i for i in range(6)]
    rows = [(seq, "kv.a", seq, None, b"v") for seq in seqs]
    matcher = _Matcher(iter(rows), Selection("KV_X"), gen, "drill.t")
    matcher.start(keep_markers=True)
    for seq in [seqs[0], *seqs[2:], seqs[1]]:  # the second was resent last
        block = replay_headers(
            None, msg_id=message_id("KV_X", gen, seq), stream="KV_X", seq=seq, time_ns=seq
        )
        matcher.pending[seq] = ("drill.t.kv.a", block, b"v")
        matcher.arrived += 1
        matcher.settle(final=False)
    matcher.settle(final=True)
    assert (matcher.out.matched, matcher.out.differences) == (6, 0), matcher.out.examples
