"""`archiver replay` against a real nats-server: exact, filtered, mapped, idempotent, safe."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import (
    data_keys,
    nats_client,
    publish,
    run_cli,
    settings,
    stored_messages,
    stream_messages,
    wait_until,
)
from natsserver import NatsServer
from rawpub import RawPublisher
from test_archive import add_streams

from archiver.archive.run import run
from archiver.config import FileLimits
from archiver.nats.api import StoredMessage, stream_info
from archiver.replay.headers import message_id, replay_headers
from archiver.store import open_store


def reserved_block(i: int) -> bytes:
    """Reserved headers the source accepted when they were first published."""
    expected = b"Nats-Expected-Last-Sequence: 0\r\n" if i == 0 else b""
    return (
        b"NATS/1.0\r\nNats-Msg-Id: original-%d\r\n" % i
        + expected
        + b"Nats-Expected-Stream: AUTH\r\nA: 1\r\nA:  2 \r\n\r\n"
    )


stored = stored_messages


@pytest.fixture
def archived(nats: NatsServer, tmp_path: Path) -> tuple[NatsServer, str, list[StoredMessage]]:
    """Stream AUTH with 300 messages (odd headers, reserved headers, binary) archived to a
    local store; a RESTORE stream (restore.>) waits on the same server."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    pub = RawPublisher(nats.port)
    try:
        for i in range(300):
            kind = ["created", "login", "deleted"][i % 3]
            block = (
                reserved_block(i)
                if i % 50 == 0
                else (b"NATS/1.0\r\nTrace: t\r\nTrace: u\r\n\r\n" if i % 7 == 0 else None)
            )
            pub.publish(f"auth.user.u{i % 10}.{kind}", bytes([i % 256]) * (i % 40), block)
            if i == 149:
                time.sleep(0.05)  # a clear time boundary in the middle
    finally:
        pub.close()
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    return nats, root, stored(nats.url, "AUTH")


def expected_block(m: StoredMessage, generation: str) -> bytes:
    return replay_headers(
        m.raw_headers,
        msg_id=message_id("AUTH", generation, m.seq),
        stream="AUTH",
        seq=m.seq,
        time_ns=m.time_ns,
    )


def generation_of(url: str) -> str:
    async def go() -> str:
        async with nats_client(url) as nc:
            return (await stream_info(nc, "AUTH")).generation

    return asyncio.run(go())


def replay(
    nats: NatsServer, root: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "replay",
        "--nats-url",
        nats.url,
        "--store",
        root,
        "--stream",
        "AUTH",
        "--json",
        *args,
        env=env,
    )


def test_filters_and_ranges_select_exactly_and_map_subjects(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, source = archived
    gen = generation_of(nats.url)
    result = replay(
        nats,
        root,
        "--subject",
        "auth.user.*.created",
        "--subject",
        "auth.user.u3.>",
        "--from-seq",
        "20",
        "--to-seq",
        "250",
        "--subject-map",
        "auth.user.*.*",
        "restore.{{wildcard(2)}}.{{wildcard(1)}}",
    )
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    want = [
        m
        for m in source
        if 20 <= m.seq <= 250
        and (m.subject.endswith(".created") or m.subject.startswith("auth.user.u3."))
    ]
    assert summary["published"] == len(want) and summary["duplicates"] == 0
    got = stored(nats.url, "RESTORE")
    assert [m.seq for m in got] == list(range(1, len(want) + 1))
    for original, copy in zip(want, got, strict=True):
        _, _, user, kind = original.subject.split(".")
        assert copy.subject == f"restore.{kind}.{user}"
        assert copy.data == original.data
        assert copy.raw_headers == expected_block(original, gen)


def test_time_window_and_prefix(archived: tuple[NatsServer, str, list[StoredMessage]]) -> None:
    from archiver.timefmt import format_ns

    nats, root, source = archived
    since, until = source[150].time_ns, source[199].time_ns
    result = replay(
        nats,
        root,
        "--since",
        format_ns(since),
        "--until",
        format_ns(until),
        "--subject-prefix",
        "restore",
    )
    assert result.returncode == 0, result.stderr
    got = stored(nats.url, "RESTORE")
    want = [m for m in source if since <= m.time_ns <= until]
    assert [m.subject for m in got] == [f"restore.{m.subject}" for m in want]
    assert [m.data for m in got] == [m.data for m in want]


def test_reserved_headers_arrive_renamed_and_nothing_is_dropped(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, _source = archived
    result = replay(nats, root, "--subject-prefix", "restore")
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["published"] == 300 and summary["duplicates"] == 0
    got = stored(nats.url, "RESTORE")
    assert len(got) == 300
    reserved = [
        m for m in got if m.raw_headers and b"Archive-Nats-Msg-Id: original-" in m.raw_headers
    ]
    assert len(reserved) == 6
    assert b"\r\nArchive-Nats-Expected-Last-Sequence: 0\r\n" in reserved[0].raw_headers
    for m in reserved:
        assert m.raw_headers.startswith(b"NATS/1.0\r\nNats-Msg-Id: archive:AUTH:")
        assert b"\r\nArchive-Nats-Expected-Stream: AUTH\r\n" in m.raw_headers
        assert b"\r\nA: 1\r\nA:  2 \r\n" in m.raw_headers
        assert b"\r\nArchive-Stream: AUTH\r\n" in m.raw_headers


def test_the_same_replay_twice_stores_each_message_once(
    archived: tuple[NatsServer, str, list[StoredMessage]], tmp_path: Path
) -> None:
    nats, root, _ = archived
    first = replay(
        nats, root, "--subject-prefix", "restore", "--seq-map", str(tmp_path / "map.parquet")
    )
    assert first.returncode == 0, first.stderr
    second = replay(nats, root, "--subject-prefix", "restore")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)[0]["duplicates"] == 300
    assert len(stored(nats.url, "RESTORE")) == 300
    rows = pq.read_table(tmp_path / "map.parquet").to_pylist()
    assert [r["archive_seq"] for r in rows] == list(range(1, 301))
    assert [r["seq"] for r in rows] == list(range(1, 301))
    assert {r["stream"] for r in rows} == {"RESTORE"} and not any(r["duplicate"] for r in rows)


def test_into_the_live_source_needs_yes(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, _ = archived
    refused = replay(nats, root, "--subject", "auth.user.u1.>")
    assert refused.returncode == 2
    assert "live stream AUTH" in refused.stderr and "--yes" in refused.stderr
    assert len(stored(nats.url, "AUTH")) == 300
    allowed = replay(nats, root, "--subject", "auth.user.u1.>", "--yes")
    assert allowed.returncode == 0, allowed.stderr
    assert len(stored(nats.url, "AUTH")) == 330


def test_dry_run_sends_nothing_and_counts(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, source = archived
    result = replay(
        nats, root, "--dry-run", "--subject", "auth.user.u2.*", "--subject-prefix", "restore"
    )
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    want = [m for m in source if m.subject.startswith("auth.user.u2.")]
    assert summary["matched"] == len(want) and summary["published"] == 0
    counts: dict[str, int] = {}
    for m in want:
        counts[f"restore.{m.subject}"] = counts.get(f"restore.{m.subject}", 0) + 1
    assert summary["by_subject"] == counts
    assert summary["bytes"] == sum(len(m.data) for m in want)
    assert summary["sample_subjects"][0] == [want[0].subject, f"restore.{want[0].subject}"]
    assert stored(nats.url, "RESTORE") == []


def test_no_stream_for_mapped_subjects_exit_1_nothing_sent(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, _ = archived
    result = replay(nats, root, "--subject-prefix", "nowhere")
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "no stream on the target captures subject nowhere." in lines[0]
    assert stored(nats.url, "RESTORE") == []


def test_message_too_large_for_the_target_is_refused_before_sending(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, _ = archived

    async def small_stream() -> None:
        async with nats_client(nats.url) as nc:
            await nc.jetstream().add_stream(name="SMALL", subjects=["small.>"], max_msg_size=100)

    asyncio.run(small_stream())
    result = replay(nats, root, "--subject-prefix", "small")
    assert result.returncode == 1
    assert "larger than stream SMALL" in result.stderr
    assert stored(nats.url, "SMALL") == []


def test_unknown_generation_and_bad_flags_are_usage_errors(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    nats, root, _ = archived
    assert replay(nats, root, "--generation", "20000101T000000000000Z").returncode == 2
    assert replay(nats, root, "--subject", "auth..x").returncode == 2
    assert replay(nats, root, "--since", "yesterday").returncode == 2
    both = replay(nats, root, "--subject-prefix", "a", "--subject-map", "x", "y")
    assert both.returncode == 2


@pytest.mark.slow
def test_interrupted_replay_resumes_with_each_message_once(
    nats: NatsServer, tmp_path: Path
) -> None:
    total = 20_000
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    # A one-second duplicate window: the resume below comes after it has closed, so the
    # server cannot drop repeats; the checkpoint and the tail check must.
    asyncio.run(add_streams(nats.url, {"RESTORE": "restore.>"}, duplicate_window=1.0))
    from helpers import publish

    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 30}.login" for i in range(total)]))
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    cmd = replay_to_restore(nats.url, root, "--rate", "4000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _count(nats.url, "RESTORE") < 6000:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _count(nats.url, "RESTORE")
    assert 0 < partial < total
    time.sleep(1.5)
    resumed = run_cli(*cmd[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    (summary,) = json.loads(resumed.stdout)
    assert summary["resumed_after_seq"] is not None and summary["skipped"] > 0
    got = stored(nats.url, "RESTORE")
    ids = [m.raw_headers.split(b"\r\n")[1] for m in got if m.raw_headers]
    assert len(got) == total and len(set(ids)) == total


def replay_to_restore(url: str, root: str, *extra: str) -> list[str]:
    """The command that replays all of AUTH into restore.>, as a subprocess argv."""
    return [
        sys.executable,
        "-m",
        "archiver",
        "replay",
        "--nats-url",
        url,
        "--store",
        root,
        "--stream",
        "AUTH",
        "--subject-prefix",
        "restore",
        "--json",
        *extra,
    ]


_count = stream_messages


@pytest.mark.slow
def test_nats_restart_mid_replay(nats: NatsServer, tmp_path: Path) -> None:
    total = 20_000
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    from helpers import publish

    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 30}.login" for i in range(total)]))
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    cmd = replay_to_restore(nats.url, root, "-v", "--rate", "5000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _count(nats.url, "RESTORE") < 3000:
        time.sleep(0.05)
    nats.restart()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "reconnected" in err
    got = stored(nats.url, "RESTORE")
    assert len(got) == total
    archived_seqs = [
        int(m.raw_headers.split(b"\r\n")[1].rsplit(b":", 1)[1]) for m in got if m.raw_headers
    ]
    # Each once. Messages in flight when the server went down may land after later ones
    # (nats-py flushes what it buffered during the outage first); Archive-Seq tells.
    assert sorted(archived_seqs) == list(range(1, total + 1))


def test_kv_delete_markers_only_with_the_flag(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"KVLIKE": "kv.>", "RESTORE": "restore.>"}))
    pub = RawPublisher(nats.port)
    try:
        pub.publish("kv.a", b"1")
        pub.publish("kv.a", b"", b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n")
        pub.publish("kv.b", b"", b"NATS/1.0\r\nKV-Operation: PURGE\r\n\r\n")
        pub.publish("kv.c", b"3")
    finally:
        pub.close()
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    base = ["replay", "--nats-url", nats.url, "--store", root, "--stream", "KVLIKE", "--json"]
    plain = run_cli(*base, "--subject-prefix", "restore")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)[0]["skipped"] == 2
    assert [m.subject for m in stored(nats.url, "RESTORE")] == ["restore.kv.a", "restore.kv.c"]
    both = run_cli(*base, "--subject-prefix", "restore", "--include-delete-markers")
    assert both.returncode == 0, both.stderr
    got = stored(nats.url, "RESTORE")
    assert [m.subject for m in got] == [
        "restore.kv.a",
        "restore.kv.c",
        "restore.kv.a",
        "restore.kv.b",
    ]
    assert b"\r\nKV-Operation: DEL\r\n" in (got[2].raw_headers or b"")


def test_replay_identity_survives_a_server_restart_but_not_a_new_target() -> None:
    from archiver.nats.api import StreamInfo
    from archiver.replay import ReplayOptions
    from archiver.replay.checkpoint import replay_id
    from archiver.replay.selection import Selection

    def target(created: int) -> StreamInfo:
        return StreamInfo("RESTORE", {}, created, 1, 10, 10, None, None)

    opts = ReplayOptions(selection=Selection("AUTH"), bounds_text="36h..")
    assert replay_id(opts, "g1", [target(5)]) == replay_id(opts, "g1", [target(5)])
    assert replay_id(opts, "g1", [target(5)]) != replay_id(opts, "g1", [target(6)])
    other = ReplayOptions(selection=Selection("AUTH"), bounds_text="37h..")
    assert replay_id(opts, "g1", [target(5)]) != replay_id(other, "g1", [target(5)])


def test_server_max_payload_counts_the_rewritten_headers(tmp_path: Path) -> None:
    """A message that fits the source but not with replay's headers is refused up front:
    an oversized publish would make the server drop the connection."""
    from natsserver import binary_for

    (tmp_path / "nats").mkdir()
    server = NatsServer(binary_for("newest"), tmp_path / "nats", max_payload=2000)
    server.start()
    try:
        asyncio.run(add_streams(server.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
        from helpers import publish

        asyncio.run(publish(server.url, "AUTH", ["auth.big"], payload=b"p" * 1950))
        root = str(tmp_path / "archive")
        asyncio.run(run(settings(server.url, root)))
        result = run_cli(*replay_to_restore(server.url, root)[3:])
        assert result.returncode == 1
        assert "(2000 bytes)" in result.stderr and "nothing was sent" in result.stderr
        assert stored(server.url, "RESTORE") == []
    finally:
        server.stop()


def test_rate_paces_the_replay(archived: tuple[NatsServer, str, list[StoredMessage]]) -> None:
    nats, root, _ = archived
    result = replay(nats, root, "--subject-prefix", "restore", "--to-seq", "150", "--rate", "100")
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["published"] == 150 and summary["seconds"] >= 1.4  # 150 at 100/s


def test_the_size_check_weighs_the_selection_not_its_files(
    nats: NatsServer, tmp_path: Path
) -> None:
    """A large message elsewhere in the same file must not refuse a selection of small ones."""

    async def setup() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await js.add_stream(name="AUTH", subjects=["auth.>"])
            await js.add_stream(name="SMALL", subjects=["small.>"], max_msg_size=2_000)
            for i in range(20):
                await js.publish(f"auth.e{i}", b"small")
            await js.publish("auth.big", b"B" * 50_000)

    asyncio.run(setup())
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    small = replay(nats, root, "--to-seq", "20", "--subject-prefix", "small")
    assert small.returncode == 0, small.stderr
    assert len(stored(nats.url, "SMALL")) == 20
    whole = replay(nats, root, "--subject-prefix", "small")
    assert whole.returncode == 1 and "larger than stream SMALL" in whole.stderr


def test_a_hole_the_archive_cannot_explain_stops_the_replay(
    nats: NatsServer, tmp_path: Path
) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.e{i % 4}" for i in range(300)]))
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root, limits=FileLimits(1000, max_rows=100))))
    store = open_store(root)
    store.delete(sorted(data_keys(store))[1])  # seqs 101-200
    refused = replay(nats, root, "--subject-prefix", "restore")
    assert refused.returncode == 3
    assert "cannot account for seqs 101-200" in refused.stderr and "--allow-gaps" in refused.stderr
    assert stored(nats.url, "RESTORE") == []
    allowed = replay(nats, root, "--subject-prefix", "restore", "--allow-gaps")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)[0]["unexplained"] == [[101, 200]]
    assert len(stored(nats.url, "RESTORE")) == 200
    # A selection clear of the hole is replayed as before.
    assert (
        replay(
            nats, root, "--from-seq", "201", "--subject-prefix", "restore", "--dry-run"
        ).returncode
        == 0
    )


def test_a_replay_stopped_by_sigint_says_how_far_it_got_and_how_to_go_on(
    nats: NatsServer, tmp_path: Path
) -> None:
    total = 10_000
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 30}.login" for i in range(total)]))
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root)))
    cmd = replay_to_restore(nats.url, root, "--rate", "3000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _count(nats.url, "RESTORE") >= 2000, "the replay to be under way")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    line = stderr.strip().splitlines()[-1]
    published = int(line.split("stopped by SIGINT: ")[1].split(" of ")[0])
    assert 2000 <= published < total and f" of {total} messages were published" in line
    assert "--resume" in line and "Traceback" not in stderr
    resumed = run_cli(*cmd[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(stored(nats.url, "RESTORE")) == total


def test_a_dry_run_shows_its_plan_and_what_would_stop_the_replay(
    archived: tuple[NatsServer, str, list[StoredMessage]],
) -> None:
    """The README's own example on a server without a stream for restore.>: the plan,
    then every problem, exit 2; the hint no longer names the flag already given."""
    nats, root, _ = archived
    result = run_cli(
        "replay",
        "--nats-url",
        nats.url,
        "--store",
        root,
        "--stream",
        "AUTH",
        "--subject-prefix",
        "elsewhere",
        "--dry-run",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "300 matched, would publish 300" in result.stdout
    (stop,) = [line for line in result.stdout.splitlines() if "would stop:" in line]
    assert "no stream on the target captures subject elsewhere.auth.user" in stop
    assert "--subject-prefix" not in stop
    live = run_cli(
        "replay", "--nats-url", nats.url, "--store", root, "--stream", "AUTH", "--dry-run", "--json"
    )
    assert live.returncode == 2
    assert any("live stream AUTH" in p for p in json.loads(live.stdout)[0]["problems"])


def test_a_lost_first_file_or_one_at_a_windows_edge_stops_the_replay(
    nats: NatsServer, tmp_path: Path
) -> None:
    """The committed links a marker names count, present or not: a replay of the whole
    archive, or of a time window, notices a lost file at either end."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.e{i % 4}" for i in range(300)]))
    root = str(tmp_path / "archive")
    asyncio.run(run(settings(nats.url, root, limits=FileLimits(1000, max_rows=100))))
    store = open_store(root)
    first, _, last = sorted(data_keys(store))
    store.delete(first)
    whole = replay(nats, root, "--subject-prefix", "restore")
    assert whole.returncode == 3 and "cannot account for seqs 1-100" in whole.stderr
    store.delete(last)
    window = replay(nats, root, "--subject-prefix", "restore", "--since", "1h")
    assert window.returncode == 3 and "1-100" in window.stderr and "201-300" in window.stderr
    dry = replay(nats, root, "--subject-prefix", "restore", "--since", "1h", "--dry-run")
    assert dry.returncode == 2 and "cannot account for seqs 1-100" in dry.stdout
    assert stored(nats.url, "RESTORE") == []
