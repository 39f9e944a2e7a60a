"""`archiver verify`: a whole archive passes; each kind of damage is found and located."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers import data_keys, publish, run_cli, settings, stream_messages, unfence, wait_until
from natsserver import NatsServer
from test_archive import add_streams, delete_msgs

from archiver.archive.run import run
from archiver.config import FileLimits
from archiver.format import catalog, layout
from archiver.format.batch import Batch
from archiver.format.gaps import Gap, GapKind, encode_record
from archiver.format.writer import DataFileWriter
from archiver.proof.verify import verify_generation
from archiver.store import Store, open_store

N = 1500


@pytest.fixture
def archived(nats: NatsServer, tmp_path: Path) -> tuple[NatsServer, Path, Store]:
    """AUTH: 1,500 messages in files of 500, messages 700-704 deleted before archiving."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 7}.login" for i in range(N)]))
    asyncio.run(delete_msgs(nats.url, "AUTH", [700, 701, 702, 703, 704]))
    root = tmp_path / "archive"
    asyncio.run(
        run(settings(nats.url, str(root), limits=FileLimits(row_group_rows=1000, max_rows=500)))
    )
    return nats, root, open_store(str(root))


def verify(root: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = run_cli("verify", "--store", str(root), "--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    reports = json.loads(result.stdout)
    return result.returncode, reports[0]


def kinds(report: dict[str, object]) -> list[tuple[str, int, int]]:
    return [(f["kind"], f["first_seq"], f["last_seq"]) for f in report["findings"]]  # type: ignore[index,union-attr]


def rewrite(store: Store, key: str, tmp_path: Path, change: object) -> None:
    """Replace a file by a valid archive file of the same name whose rows ``change`` edited."""
    local = tmp_path / "orig.parquet"
    store.download(key, local)
    meta = pq.read_metadata(local).metadata
    rows = pq.read_table(local).to_pylist()
    change(rows)  # type: ignore[operator]
    batch = Batch()
    for r in rows:
        batch.append(r["seq"], r["subject"], r["time_ns"], r["raw_headers"], r["data"])
    out = tmp_path / "new.parquet"
    writer = DataFileWriter(
        out,
        stream="AUTH",
        generation=meta[b"archiver.generation"].decode(),
        stream_config="{}",
        compression_level=1,
        row_group_rows=1000,
    )
    writer.write(batch)
    gaps = meta.get(b"archiver.gaps")
    writer.close({"archiver.gaps": gaps.decode()} if gaps else None)
    store.delete(key)
    store.put_bytes(key, out.read_bytes())


def test_a_whole_archive_verifies(archived: tuple[NatsServer, Path, Store]) -> None:
    _, root, _ = archived
    code, report = verify(root)
    assert code == 0 and report["ok"] and report["rows"] == N - 5 and report["files"] == 3
    assert kinds(report) == [("deleted", 700, 704)]


def test_changed_bytes_are_damage(archived: tuple[NatsServer, Path, Store]) -> None:
    _, root, store = archived
    key = data_keys(store)[1]
    path = root / key
    body = bytearray(path.read_bytes())
    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index("data"))
    # Inside the compressed page data (the middle of a small chunk can be its header).
    body[chunk.data_page_offset + chunk.total_compressed_size - 3] ^= 0x40
    path.write_bytes(bytes(body))
    code, report = verify(root)
    assert code == 3 and not report["ok"]
    found = [f for f in report["findings"] if f["kind"] == "damaged"]  # type: ignore[union-attr]
    assert len(found) == 1 and found[0]["key"] == key
    assert ("missing", 501, 1005) in kinds(report)  # the file held 501..1005 less 700..704


def test_a_deleted_file_is_missing(archived: tuple[NatsServer, Path, Store]) -> None:
    _, root, store = archived
    store.delete(data_keys(store)[2])
    code, report = verify(root)
    assert code == 3 and ("missing", 1006, 1500) in kinds(report)


def test_retention_retires_the_expired_head_but_not_a_lost_file(
    nats: NatsServer, tmp_path: Path
) -> None:
    """The lifecycle rule removes the oldest objects: the first run's file and its run
    record. Once the generation is older than the policy's retention, that hole is
    retired; a file lost while its run record remains, or a hole in a generation
    younger than the retention, is still missing."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    root = tmp_path / "archive"
    limits = settings(nats.url, str(root), limits=FileLimits(row_group_rows=1000, max_rows=500))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 500))
    asyncio.run(run(limits))
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 1000))
    asyncio.run(run(limits))
    store = open_store(str(root))
    store.delete(data_keys(store)[0])  # seqs 1-500
    generation = catalog.data_files(store, "AUTH")[0].name.generation
    first_run = layout.run_key("AUTH", generation, 1, 500)
    three_years = 1095 * 86_400.0
    later = datetime.now(UTC) + timedelta(days=1096)

    def head(**kwargs: Any) -> tuple[str, int, int, bool]:
        gen = catalog.generation(store, "AUTH", generation)
        report = verify_generation(store, "AUTH", gen, **kwargs)
        f = report.findings[0]
        return f.kind, f.first_seq, f.last_seq, report.ok

    # The file is gone but its run's record is not: lost, not retired.
    assert head(retention_s=three_years, now=later) == ("missing", 1, 500, False)
    store.delete(first_run)  # as the lifecycle rule does
    assert head(retention_s=three_years, now=later) == ("retired", 1, 500, True)
    assert head(retention_s=three_years) == ("missing", 1, 500, False)  # young generation
    assert head(retention_s=None, now=later) == ("missing", 1, 500, False)
    policy = tmp_path / "policy.yaml"
    policy.write_text("archive:\n  retention: 1095d\n")
    code, report = verify(root, "--policy", str(policy))
    assert code == 3 and kinds(report)[0] == ("missing", 1, 500)


def test_a_valid_file_with_other_content_is_found(
    archived: tuple[NatsServer, Path, Store], tmp_path: Path
) -> None:
    _, root, store = archived
    key = data_keys(store)[0]

    def shift(rows: list[dict[str, object]]) -> None:
        for r in rows:
            r["seq"] = int(r["seq"]) + 1  # type: ignore[call-overload]

    rewrite(store, key, tmp_path, shift)
    code, report = verify(root)
    assert code == 3
    bad = [f for f in report["findings"] if f["key"] == key]  # type: ignore[union-attr]
    assert bad and bad[0]["kind"] in ("mismatch", "damaged") and "2..501" in bad[0]["detail"]


def test_overlapping_files_are_found(
    archived: tuple[NatsServer, Path, Store], tmp_path: Path
) -> None:
    _, root, store = archived
    first, second = data_keys(store)[:2]
    n = layout.parse_data_key(first)
    assert n is not None
    local = tmp_path / "a.parquet"
    rows = []
    for key in (first, second):
        store.download(key, local)
        rows += [r for r in pq.read_table(local).to_pylist() if 250 <= r["seq"] <= 750]
    batch = Batch()
    for r in rows:
        batch.append(r["seq"], r["subject"], r["time_ns"], r["raw_headers"], r["data"])
    out = tmp_path / "o.parquet"
    writer = DataFileWriter(
        out,
        stream="AUTH",
        generation=n.generation,
        stream_config="{}",
        compression_level=1,
        row_group_rows=1000,
    )
    writer.write(batch)
    writer.close()
    store.put_bytes(layout.data_key("AUTH", n.day, n.generation, 250, 750), out.read_bytes())
    # No commit marker names the foreign file: it counts for nothing.
    code, report = verify(root)
    assert code == 0
    assert ("uncommitted", 250, 750) in kinds(report)
    # An archive written before the commit fence has no markers: every file counts.
    for o in list(store.list(layout.commit_prefix("AUTH"))):
        store.delete(o.key)
    code, report = verify(root)
    assert code == 3
    assert [k for k in kinds(report) if k[0] == "overlap"] == [
        ("overlap", 250, 500),
        ("overlap", 501, 750),
    ]


def test_a_gap_record_over_archived_rows_is_found(
    archived: tuple[NatsServer, Path, Store],
) -> None:
    """A gap record saying seqs 650-660 expired while a file holds them contradicts the
    file; a record over the seqs a file really lacks (the deletes 700-704) does not."""
    _, root, store = archived
    n = layout.parse_data_key(data_keys(store)[0])
    assert n is not None
    unfence(store, "AUTH")  # a committed archive cannot hold such a record
    for gaps in (
        [Gap(650, 660, GapKind.EXPIRED)],
        [Gap(700, 704, GapKind.DELETED)],
    ):
        key, body = encode_record("AUTH", n.generation, gaps)
        store.put_bytes(key, body)
    code, report = verify(root)
    assert code == 3
    overlaps = [f for f in report["findings"] if f["kind"] == "overlap"]  # type: ignore[index,union-attr]
    assert [(f["first_seq"], f["last_seq"]) for f in overlaps] == [(650, 660)]
    assert "holds these seqs" in overlaps[0]["detail"] and "/_gaps/" in overlaps[0]["key"]


def test_expired_before_archiving_is_classified_not_damage(
    nats: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=1.5))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    asyncio.run(run(settings(nats.url, str(root))))
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 4))
    wait_until(lambda: stream_messages(nats.url, "AUTH") == 0, "every message to expire")
    asyncio.run(publish(nats.url, "AUTH", ["auth.c"] * 3))
    assert asyncio.run(run(settings(nats.url, str(root))))[0].lost == 4
    code, report = verify(root)
    assert code == 0 and report["ok"]
    assert ("expired", 11, 14) in kinds(report) and report["rows"] == 13


def test_against_nats_finds_a_changed_payload_and_is_silent_otherwise(
    archived: tuple[NatsServer, Path, Store], tmp_path: Path
) -> None:
    nats, root, store = archived
    code, report = verify(root, "--nats-url", nats.url, "--against-nats")
    assert code == 0 and [k for k in kinds(report) if k[0] != "deleted"] == []

    def tamper(rows: list[dict[str, object]]) -> None:
        rows[10]["data"] = b"not what the server holds"

    rewrite(store, data_keys(store)[0], tmp_path, tamper)
    assert verify(root)[0] == 0  # the file itself is consistent
    code, report = verify(root, "--nats-url", nats.url, "--against-nats")
    assert code == 3
    assert [k for k in kinds(report) if k[0] == "differs"] == [("differs", 11, 11)]
    detail = next(f["detail"] for f in report["findings"] if f["kind"] == "differs")  # type: ignore[union-attr]
    assert "payload" in detail and "subject" not in detail


def test_against_nats_with_a_damaged_file_still_reports(
    archived: tuple[NatsServer, Path, Store],
) -> None:
    nats, root, store = archived
    path = root / data_keys(store)[0]
    path.write_bytes(path.read_bytes()[:-100])
    result = run_cli(
        "verify", "--store", str(root), "--json", "--nats-url", nats.url, "--against-nats"
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)[0]
    assert any(f["kind"] == "damaged" for f in report["findings"])


def test_an_unknown_stream_is_a_usage_error(archived: tuple[NatsServer, Path, Store]) -> None:
    _, root, _ = archived
    result = run_cli("verify", "--store", str(root), "AUHT")
    assert result.returncode == 2 and "no stream AUHT" in result.stderr and "AUTH" in result.stderr


def test_a_generation_whose_files_are_all_gone_is_not_whole(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Its run records remain: they say what was archived, so the loss is reported."""
    from test_archive import _delete_stream

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.old"] * 30))
    asyncio.run(run(cfg))
    store = open_store(str(root))
    (old,) = {layout.parse_data_key(k).generation for k in data_keys(store)}  # type: ignore[union-attr]
    asyncio.run(_delete_stream(nats.url, "AUTH"))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.new"] * 12))
    asyncio.run(run(cfg))
    for o in list(store.list("stream=AUTH/")):
        if f"g{old}-" in o.key and "/_runs/" not in o.key:
            store.delete(o.key)
    code, report = verify(root)
    assert code == 3
    assert [
        (f["generation"], f["kind"], f["first_seq"], f["last_seq"]) for f in report["findings"]
    ] == [  # type: ignore[index,union-attr]
        (old, "missing", 1, 30)
    ]


def test_a_foreign_folder_named_like_a_stream_is_not_a_stream(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    (root / "stream=NEWS").mkdir(parents=True)
    (root / "stream=NEWS" / "readme.txt").write_text("not ours")
    result = run_cli("verify", "--store", str(root), "--json")
    assert "NEWS" not in result.stdout


def test_an_acknowledged_loss_clears_status_until_the_next_one(
    nats: NatsServer, tmp_path: Path
) -> None:
    """status said lost for the rest of a generation's life: its check never cleared."""
    root = str(tmp_path / "archive")
    base = ("--nats-url", nats.url, "--store", root)

    def lose(n: int) -> None:
        asyncio.run(publish(nats.url, "AUTH", ["auth.gone"] * n))
        wait_until(lambda: stream_messages(nats.url, "AUTH") == 0, "every message to expire")
        asyncio.run(publish(nats.url, "AUTH", ["auth.kept"]))
        assert asyncio.run(run(settings(nats.url, root)))[0].lost == n

    def state() -> tuple[int, str, int, int]:
        result = run_cli("status", *base, "--json")
        (row,) = json.loads(result.stdout)
        return result.returncode, row["state"], row["lost"], row["acknowledged"]

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=1.5))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 3))
    asyncio.run(run(settings(nats.url, root)))
    lose(4)
    assert state() == (3, "lost", 4, 0)
    done = run_cli(
        "acknowledge",
        "AUTH",
        *base,
        "--reason",
        "job down over the weekend",
        "--by",
        "oncall",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["lost"] == 4
    assert state() == (0, "ok", 4, 4)
    again = run_cli("acknowledge", "AUTH", *base, "--reason", "twice")
    assert again.returncode == 2 and "acknowledged already, by oncall" in again.stderr
    lose(2)
    assert state() == (3, "lost", 6, 4)
