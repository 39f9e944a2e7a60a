"""`archiver run` against a real nats-server and real stores: exactly once, exact bytes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from helpers import (
    data_keys,
    nats_client,
    publish,
    read_archive,
    run_cli,
    settings,
    stored_messages,
    stream_messages,
    unfence,
    wait_until,
)
from natsserver import NatsServer
from rawpub import RawPublisher

from archiver.archive.run import run
from archiver.archive.status import State, status
from archiver.config import Settings
from archiver.format import layout
from archiver.format.gaps import GapKind, decode_record
from archiver.nats.api import stream_info
from archiver.store import Store

FIVE = {
    "AUTH": "auth.>",
    "COMPUTE": "compute.>",
    "GATEWAY": "gateway.>",
    "SFS": "sfs.>",
    "NOTIFICATIONS": "notify.>",
}

# Header blocks a plain client would mangle: repeated keys, significant spaces,
# an empty value, a non-UTF-8 byte.
ODD_HEADERS = [
    b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n",
    b"NATS/1.0\r\nKey:  two leading spaces \r\n\r\n",
    b"NATS/1.0\r\nEmpty:\r\nX-Bin: \xff\xfe\r\n\r\n",
]


async def add_streams(url: str, streams: dict[str, str], **config: object) -> None:
    async with nats_client(url) as nc:
        for name, subject in streams.items():
            await nc.jetstream().add_stream(name=name, subjects=[subject], **config)


async def delete_msgs(url: str, stream: str, seqs: list[int]) -> None:
    async with nats_client(url) as nc:
        for seq in seqs:
            await nc.jetstream().delete_msg(stream, seq)


def fill_tricky(nats: NatsServer, stream: str, prefix: str) -> None:
    """Empty, binary, near-1 MiB payloads and odd header blocks, exactly as stored."""
    pub = RawPublisher(nats.port)
    try:
        pub.publish(f"{prefix}.empty", b"")
        pub.publish(f"{prefix}.binary", bytes(range(256)) * 4)
        pub.publish(f"{prefix}.big", b"B" * (1024 * 1024 - 4096))
        for i, block in enumerate(ODD_HEADERS):
            pub.publish(f"{prefix}.hdr.{i}", f"payload {i}".encode(), block)
        for i in range(200):
            pub.publish(f"{prefix}.plain.{i % 7}", f"event {i}".encode())
    finally:
        pub.close()


def server_messages(url: str, stream: str) -> dict[int, tuple[str, bytes | None, bytes, int]]:
    """Every stored message of a stream, read without a consumer."""
    return {
        m.seq: (m.subject, m.raw_headers, m.data, m.time_ns) for m in stored_messages(url, stream)
    }


def test_every_message_archived_once_with_exact_bytes(
    nats: NatsServer, any_store: tuple[str, Store], tmp_path: Path
) -> None:
    store_url, store = any_store
    asyncio.run(add_streams(nats.url, FIVE))
    for name, subject in FIVE.items():
        fill_tricky(nats, name, subject.removesuffix(".>"))
    asyncio.run(delete_msgs(nats.url, "AUTH", [2, 50, 51, 52]))

    results = asyncio.run(run(settings(nats.url, store_url)))

    assert {r.stream for r in results} == set(FIVE)
    assert all(r.lost == 0 and r.error is None for r in results)
    table = read_archive(store, tmp_path)
    for name in FIVE:
        expected = server_messages(nats.url, name)
        rows = read_archive(store, tmp_path, name).to_pylist()
        got = {r["seq"]: (r["subject"], r["raw_headers"], r["data"], r["time_ns"]) for r in rows}
        assert len(rows) == len(got), "a sequence appears twice"
        assert got == expected
    auth = next(r for r in results if r.stream == "AUTH")
    assert auth.deleted == 4
    assert table.num_rows == sum(r.messages for r in results)
    # The parsed view keeps repeated keys in order.
    hdr_rows = [
        r for r in read_archive(store, tmp_path, "AUTH").to_pylist() if r["subject"] == "auth.hdr.0"
    ]
    assert hdr_rows[0]["headers"] == [("A", ["1", "2"])]


def test_duckdb_reads_the_archive_as_one_dataset(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "SFS": "sfs.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i}.created" for i in range(300)]))
    asyncio.run(publish(nats.url, "SFS", [f"sfs.ns.{i}" for i in range(120)]))
    root = tmp_path / "archive"
    asyncio.run(run(settings(nats.url, str(root))))

    rows = duckdb.sql(
        f"SELECT stream, count(*) AS n, count(DISTINCT seq) AS d, min(seq), max(seq) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true) GROUP BY stream ORDER BY stream"
    ).fetchall()
    assert rows == [("AUTH", 300, 300, 1, 300), ("SFS", 120, 120, 1, 120)]
    day = duckdb.sql(
        f"SELECT DISTINCT date FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert len(day) == 1


def test_second_run_writes_nothing_and_new_messages_go_to_new_files(
    nats: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 500))
    cfg = settings(nats.url, str(root))
    first = asyncio.run(run(cfg))
    from archiver.store import open_store

    store = open_store(str(root))
    keys = data_keys(store)
    contents = {k: store.get_bytes(k) for k in keys}
    assert first[0].messages == 500

    again = asyncio.run(run(cfg))
    assert again[0].messages == 0 and again[0].files == 0
    assert data_keys(store) == keys

    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 70))
    third = asyncio.run(run(cfg))
    assert third[0].messages == 70 and third[0].from_seq == 501
    new_keys = [k for k in data_keys(store) if k not in keys]
    assert len(new_keys) == 1 and layout.parse_data_key(new_keys[0]).first_seq == 501  # type: ignore[union-attr]
    assert {k: store.get_bytes(k) for k in keys} == contents
    seqs = read_archive(store, tmp_path).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, 571))


def test_files_are_cut_at_the_row_limit(nats: NatsServer, tmp_path: Path) -> None:
    from archiver.config import FileLimits
    from archiver.store import open_store

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 2500))
    root = tmp_path / "archive"
    asyncio.run(
        run(settings(nats.url, str(root), limits=FileLimits(row_group_rows=1000, max_rows=1000)))
    )
    names = [layout.parse_data_key(k) for k in data_keys(open_store(str(root)))]
    assert [(n.first_seq, n.last_seq) for n in names if n] == [
        (1, 1000),
        (1001, 2000),
        (2001, 2500),
    ]


def test_expired_before_archived_is_lost_recorded_and_reported(
    nats: NatsServer, tmp_path: Path
) -> None:
    from archiver.store import open_store

    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=1.5))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    cfg = settings(nats.url, str(root), at_risk_margin_s=0.0)
    assert asyncio.run(run(cfg))[0].messages == 10

    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 7))
    wait_until(lambda: stream_messages(nats.url, "AUTH") == 0, "every message to expire")
    before = asyncio.run(status(cfg))[0]
    assert before.state is State.LOST and before.lost == 7

    result = asyncio.run(run(cfg))[0]
    assert result.lost == 7 and result.exit_code == 3 and result.messages == 0
    store = open_store(str(root))
    records = [o.key for o in store.list(layout.gap_prefix("AUTH"))]
    assert len(records) == 1 and records[0].endswith("-lost.json.zst")
    gaps = decode_record(store.get_bytes(records[0]))
    assert [(g.first_seq, g.last_seq, g.kind) for g in gaps] == [(11, 17, GapKind.EXPIRED)]
    after = asyncio.run(status(cfg))[0]
    assert after.state is State.LOST and after.lost == 7 and after.archived_seq == 17
    # The loss is not counted twice by the next run.
    assert asyncio.run(run(cfg))[0].lost == 0


def test_status_at_risk_within_margin(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    root = str(tmp_path / "archive")
    near = asyncio.run(status(settings(nats.url, root, at_risk_margin_s=7200)))[0]
    assert near.state is State.AT_RISK and near.behind == 5
    assert near.expires_in_s is not None and 3500 < near.expires_in_s <= 3600
    far = asyncio.run(status(settings(nats.url, root, at_risk_margin_s=60)))[0]
    assert far.state is State.OK
    # The default margin is a quarter of max_age: a 1-hour stream is not at risk as soon
    # as a message waits (a fixed day would say so of every stream kept a day or less).
    auto = asyncio.run(status(settings(nats.url, root)))[0]
    assert auto.state is State.OK and auto.behind == 5
    asyncio.run(run(settings(nats.url, root)))
    done = asyncio.run(status(settings(nats.url, root, at_risk_margin_s=7200)))[0]
    assert done.state is State.OK and done.behind == 0 and done.archived_seq == 5


def test_recreated_stream_starts_a_new_generation(nats: NatsServer, tmp_path: Path) -> None:
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.old"] * 30))
    asyncio.run(run(cfg))
    store = open_store(str(root))
    old = {k: store.get_bytes(k) for k in data_keys(store)}

    asyncio.run(_delete_stream(nats.url, "AUTH"))
    time.sleep(0.01)
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.new"] * 12))
    result = asyncio.run(run(cfg))[0]

    assert result.messages == 12 and result.from_seq == 1 and result.lost == 0
    assert {k: store.get_bytes(k) for k in old} == old
    gens = {layout.parse_data_key(k).generation for k in data_keys(store)}  # type: ignore[union-attr]
    assert len(gens) == 2
    rows = read_archive(store, tmp_path).to_pylist()
    assert sorted(r["subject"] for r in rows) == ["auth.new"] * 12 + ["auth.old"] * 30


async def _delete_stream(url: str, name: str) -> None:
    async with nats_client(url) as nc:
        await nc.jetstream().delete_stream(name)


def test_stream_that_rewound_below_the_archive_is_not_resumed(
    nats: NatsServer, tmp_path: Path
) -> None:
    """A cluster that lost acknowledged writes comes back with a lower last sequence."""
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 20))
    asyncio.run(run(cfg))
    # Simulate the rewind by moving the archive ahead of the stream: a file claiming
    # sequences the server never had.
    store = open_store(str(root))
    key = data_keys(store)[0]
    name = layout.parse_data_key(key)
    assert name is not None
    unfence(store, "AUTH")
    store.put_bytes(
        layout.data_key("AUTH", name.day, name.generation, 21, 40), store.get_bytes(key)
    )
    before = set(data_keys(store))
    result = asyncio.run(run(cfg))[0]
    assert result.exit_code == 3 and result.error and "rebuilt" in result.error
    assert set(data_keys(store)) == before


@pytest.mark.parametrize("retention", ["workqueue", "interest"])
def test_workqueue_and_interest_streams_keep_their_messages(
    nats: NatsServer, tmp_path: Path, retention: str
) -> None:
    asyncio.run(_consumerless_case(nats, tmp_path, retention))


async def _consumerless_case(nats: NatsServer, tmp_path: Path, retention: str) -> None:
    async with nats_client(nats.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="WORK", subjects=["work.>"], retention=retention)
        # An interest stream stores only while someone is interested.
        sub = await js.pull_subscribe("work.>", durable="worker")
        for i in range(25):
            await js.publish(f"work.job.{i}", f"job {i}".encode())
        results = await run(settings(nats.url, str(tmp_path / "archive")))
        assert results[0].messages == 25 and results[0].error is None
        info = await stream_info(nc, "WORK")
        assert info.messages == 25
        consumers = await js.streams_info()
        names = [c.name for c in await _consumers(js, "WORK")]
        assert names == ["worker"], consumers
        got = await sub.fetch(25, timeout=5)
        assert sorted(m.data for m in got) == sorted(f"job {i}".encode() for i in range(25))


async def _consumers(js: object, stream: str) -> list[object]:
    jsm = js._jsm  # type: ignore[attr-defined]
    return list(await jsm.consumers_info(stream))


def archived_in_one_file(nats: NatsServer, root: Path) -> tuple[Settings, Store, str]:
    """Stream AUTH with 20 messages archived into one local file: settings, store, key."""
    from archiver.store import open_store

    cfg = settings(nats.url, str(root))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 20))
    asyncio.run(run(cfg))
    store = open_store(str(root))
    (key,) = data_keys(store)
    return cfg, store, key


def test_stream_whose_boundary_message_changed_is_not_resumed(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Same generation and a high enough last sequence, but our last seq holds another message."""
    import pyarrow.parquet as pq

    # Make the archive remember a different time for seq 20, as if the server had
    # lost it and stored another message under that number since.
    cfg, store, key = archived_in_one_file(nats, tmp_path / "archive")
    local = tmp_path / "f.parquet"
    store.download(key, local)
    table = pq.read_table(local)
    meta = dict(pq.read_metadata(local).metadata)
    meta[b"archiver.last_time_ns"] = b"1"
    pq.write_table(table.replace_schema_metadata(meta), local)
    store.delete(key)
    store.put_bytes(key, local.read_bytes())
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 5))

    result = asyncio.run(run(cfg))[0]
    assert result.exit_code == 3 and result.error and "diverged" in result.error
    assert data_keys(store) == [key]


def test_a_damaged_last_file_is_reported_as_damaged_not_as_a_diverged_stream(
    nats: NatsServer, tmp_path: Path
) -> None:
    """The footer reader raises: a damaged last file is never read as an empty one."""
    root = tmp_path / "archive"
    cfg, store, key = archived_in_one_file(nats, root)
    path = root / key
    path.write_bytes(path.read_bytes()[:-200] + b"\0" * 200)  # the footer, gone
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 5))

    result = asyncio.run(run(cfg))[0]
    assert result.exit_code == 3 and result.error
    assert "damaged" in result.error and key in result.error and "diverged" not in result.error
    assert data_keys(store) == [key]


def test_first_run_does_not_count_what_was_gone_before_it_as_lost(
    nats: NatsServer, tmp_path: Path
) -> None:
    from archiver.store import open_store

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.old"] * 10))
    asyncio.run(_purge(nats.url, "AUTH"))
    asyncio.run(publish(nats.url, "AUTH", ["auth.new"] * 5))
    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root), at_risk_margin_s=0.0)
    assert asyncio.run(status(cfg))[0].state is State.OK
    result = asyncio.run(run(cfg))[0]
    assert (result.lost, result.messages, result.exit_code) == (0, 5, 0)
    store = open_store(str(root))
    (record,) = [o.key for o in store.list(layout.gap_prefix("AUTH"))]
    gaps = decode_record(store.get_bytes(record))
    assert [(g.first_seq, g.last_seq, g.kind) for g in gaps] == [(1, 10, GapKind.BEFORE_ARCHIVE)]


async def _purge(url: str, stream: str) -> None:
    async with nats_client(url) as nc:
        await nc.jetstream().purge_stream(stream)


def test_workqueue_messages_taken_by_workers_are_consumed_not_lost(
    nats: NatsServer, tmp_path: Path
) -> None:
    async def case() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await js.add_stream(name="WORK", subjects=["work.>"], retention="workqueue")
            sub = await js.pull_subscribe("work.>", durable="worker")
            for i in range(10):
                await js.publish(f"work.job.{i}", b"j")
            for m in await sub.fetch(4, timeout=5):
                await m.ack_sync()
            result = (await run(settings(nats.url, str(tmp_path / "archive"))))[0]
            assert (result.messages, result.consumed, result.lost, result.exit_code) == (6, 0, 0, 0)
            for i in range(10, 15):
                await js.publish(f"work.job.{i}", b"j")
            for m in await sub.fetch(8, timeout=5):
                await m.ack_sync()
            # Before the next run, status must not call what the workers took lost.
            from archiver.archive.status import status

            (row,) = (await status(settings(nats.url, str(tmp_path / "archive")))).streams
            assert (row.state, row.lost) == ("ok", 0), row
            again = (await run(settings(nats.url, str(tmp_path / "archive"))))[0]
            # The worker took 5..12; 5..10 were archived already, 11 and 12 were not.
            assert (again.consumed, again.lost, again.exit_code) == (2, 0, 0)

    asyncio.run(case())


def test_a_changed_creation_time_continues_the_generation(nats: NatsServer, tmp_path: Path) -> None:
    """Some server releases change `created` on restart: that must not archive it all again."""
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 40))
    asyncio.run(run(cfg))
    # Pretend the archive was written when the stream had another creation time.
    store = open_store(str(root))
    unfence(store, "AUTH")
    for key in data_keys(store):
        n = layout.parse_data_key(key)
        assert n is not None
        old = layout.data_key("AUTH", n.day, "20200101T000000000000Z", n.first_seq, n.last_seq)
        store.put_bytes(old, store.get_bytes(key))
        store.delete(key)
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 5))
    result = asyncio.run(run(cfg))[0]
    assert (result.generation, result.from_seq, result.messages) == (
        "20200101T000000000000Z",
        41,
        5,
    )
    assert sorted(read_archive(store, tmp_path).column("seq").to_pylist()) == list(range(1, 46))


def test_a_run_records_the_streams_config_and_its_consumers_positions(
    nats: NatsServer, tmp_path: Path
) -> None:
    """What restore rebuilds from: written when something changed, not on every run;
    the archiver's own reader is not one of the stream's consumers."""
    from archiver.archive.state import newest_state
    from archiver.format import layout
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root))

    async def worker(acks: int) -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            sub = await js.pull_subscribe("auth.>", durable="billing")
            for m in await sub.fetch(acks, timeout=5):
                await m.ack_sync()

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_msgs=1000))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    asyncio.run(worker(4))
    first = asyncio.run(run(cfg))[0]
    assert first.state_record is not None
    store = open_store(str(root))
    state = newest_state(store, "AUTH", first.generation)
    assert state is not None and state["config"]["max_msgs"] == 1000
    (billing,) = state["consumers"]
    assert billing["name"] == "billing" and billing["ack_floor_stream_seq"] == 4
    assert billing["config"]["durable_name"] == "billing"
    assert asyncio.run(run(cfg))[0].state_record is None, "nothing changed: nothing written"
    asyncio.run(worker(2))
    moved = asyncio.run(run(cfg))[0]
    assert moved.state_record is not None
    assert (
        newest_state(store, "AUTH", first.generation)["consumers"][0]["ack_floor_stream_seq"] == 6
    )  # type: ignore[index]
    records = list(store.list(layout.state_prefix("AUTH", first.generation)))
    assert len(records) == 2
    listed = run_cli("ls", "--state", "--store", str(root), "AUTH", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["consumers"][0]["ack_floor_stream_seq"] for r in rows] == [4, 6]
    assert rows[0]["config"]["max_msgs"] == 1000
    text = run_cli("ls", "--state", "--store", str(root))
    assert "billing (acked 6, delivered 6)" in text.stdout


def test_deliveries_taken_in_runs_archive_the_same_rows_as_frame_by_frame(
    nats: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader's fast way (runs of deliveries taken from the receive buffer) against
    its frame-by-frame way, end to end: the same stream archived both ways gives the
    same rows, header view and content hash."""
    from archiver.format.digest import content_hash
    from archiver.nats.conn import RawClient
    from archiver.store import open_store

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    fill_tricky(nats, "AUTH", "auth")
    fill_tricky(nats, "AUTH", "auth.again")  # a near-1 MiB payload mid-stream: many reads
    asyncio.run(delete_msgs(nats.url, "AUTH", [3, 100, 101]))

    def archive(name: str) -> pa.Table:
        url = str(tmp_path / name)
        results = asyncio.run(run(settings(nats.url, url, streams=("AUTH",))))
        assert [r.error for r in results] == [None]
        table = read_archive(open_store(url, settings(nats.url, url).s3), tmp_path)
        return table.drop_columns(["generation"]).sort_by("seq")

    in_runs = archive("in-runs")
    subscribe_raw = RawClient.subscribe_raw

    async def frame_by_frame(self: RawClient, subject: str, handler: Any, taker: Any = None) -> Any:
        return await subscribe_raw(self, subject, handler)

    monkeypatch.setattr(RawClient, "subscribe_raw", frame_by_frame)
    one_by_one = archive("frame-by-frame")
    assert in_runs.num_rows == one_by_one.num_rows == 2 * (3 + len(ODD_HEADERS) + 200) - 3
    assert in_runs.equals(one_by_one)
    assert content_hash([in_runs]) == content_hash([one_by_one])
