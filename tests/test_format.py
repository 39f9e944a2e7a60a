"""Segments: batches to Parquet and back, metadata, content hash, damage. No servers."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from natsserver import NatsServer

from archiver import SCHEMA_VERSION, __version__
from archiver.errors import DataFileCorrupt
from archiver.format import layout
from archiver.format.batch import Batch
from archiver.format.digest import ContentHash, content_hash
from archiver.format.reader import iter_row_groups, read_meta
from archiver.format.schema import SCHEMA, batch_to_table, check_schema
from archiver.format.writer import DataFileWriter

T0 = 1_795_722_037_123_456_789  # 2026-11-26T19:40:37.123456789Z
RAW = b"NATS/1.0\r\nA: 1\r\nA:  2 \r\nB:x\r\n\r\n"
ALL_BYTES = bytes(range(256))
MIB_PAYLOAD = bytes(range(256)) * 4096


def make_batch(rows: int = 10, first_seq: int = 1) -> Batch:
    """Rows with varied payloads; odd sequences carry the tricky header block."""
    batch = Batch()
    for seq in range(first_seq, first_seq + rows):
        raw = RAW if seq % 2 else None
        batch.append(seq, f"orders.{seq % 3}", T0 + seq * 1_001, raw, b"payload-%d" % seq)
    return batch


def write_data_file(path: Path, batches: list[Batch], row_group_rows: int = 4, **kw: Any) -> Any:
    writer = DataFileWriter(
        path,
        stream="ORDERS",
        generation="20261126T000000000000Z",
        stream_config='{"name":"ORDERS"}',
        compression_level=3,
        row_group_rows=row_group_rows,
        **kw,
    )
    for batch in batches:
        writer.write(batch)
    return writer.close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


# ------------------------------------------------------------------------ round trip


def test_round_trip_of_awkward_rows(tmp_path: Path) -> None:
    batch = Batch()
    batch.append(1, "a", T0, None, b"")
    batch.append(2, "b.é", T0 + 1, RAW, ALL_BYTES)
    batch.append(3, "c", T0 + 2, None, MIB_PAYLOAD)
    batch.append(4, "d", T0 + 3, b"NATS/1.0 503\r\n\r\n", b"status only")
    path = tmp_path / "s.parquet"
    summary = write_data_file(path, [batch])

    rows = read_rows(path)
    assert [r["data"] for r in rows] == [b"", ALL_BYTES, MIB_PAYLOAD, b"status only"]
    assert [r["subject"] for r in rows] == ["a", "b.é", "c", "d"]
    assert rows[1]["raw_headers"] == RAW
    assert rows[1]["headers"] == [("A", ["1", " 2 "]), ("B", ["x"])]
    assert (rows[0]["raw_headers"], rows[0]["headers"]) == (None, None)
    assert (rows[2]["raw_headers"], rows[2]["headers"]) == (None, None)
    # A block with no header lines keeps its bytes but has no queryable headers.
    assert (rows[3]["raw_headers"], rows[3]["headers"]) == (b"NATS/1.0 503\r\n\r\n", None)
    assert summary.raw_bytes == len(ALL_BYTES) + len(MIB_PAYLOAD) + 11 + len(RAW) + 16


def test_schema_written_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_data_file(path, [make_batch()])
    file_schema = pq.read_schema(path)
    assert check_schema(file_schema) == []
    assert file_schema.remove_metadata().equals(SCHEMA)


GEN = "20260101T000000000000Z"


def test_both_schema_versions_are_accepted() -> None:
    """Files written before seq became int64 and generation a column still read."""
    from archiver.format.schema import SCHEMA_V1

    assert check_schema(SCHEMA) == [] and check_schema(SCHEMA_V1) == []
    assert SCHEMA.field("seq").type == pa.int64() and "generation" in SCHEMA.names


def test_check_schema_reports_problems() -> None:
    wrong = pa.schema(
        [
            pa.field("seq", pa.float64(), nullable=False),
            pa.field("subject", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("data", pa.binary(), nullable=True),
            pa.field("extra", pa.string()),
        ]
    )
    problems = check_schema(wrong)
    assert "column seq is double, expected int64" in problems
    assert "column data allows nulls, expected not null" in problems
    assert "missing column time" in problems
    assert not any("subject" in p or "extra" in p for p in problems)


def test_time_is_utc_micros_and_time_ns_exact(tmp_path: Path) -> None:
    batch = Batch()
    batch.append(1, "a", T0, None, b"x")
    batch.append(2, "a", T0 + 210, None, b"x")  # ...456999: same microsecond, rounded down
    batch.append(3, "a", T0 + 211, None, b"x")  # ...457000: the next one
    path = tmp_path / "s.parquet"
    write_data_file(path, [batch])
    table = pq.read_table(path)
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    micros = T0 // 1000
    assert table.column("time").cast(pa.int64()).to_pylist() == [micros, micros, micros + 1]
    assert table.column("time_ns").to_pylist() == [T0, T0 + 210, T0 + 211]


# -------------------------------------------------------------------------- metadata


def test_metadata_keys_and_values(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    first = make_batch(10)
    summary = write_data_file(path, [first])
    # close() with extra goes through the same path; exercise it on a second file.
    path2 = tmp_path / "s2.parquet"
    writer = DataFileWriter(
        path2,
        stream="ORDERS",
        generation="g1",
        stream_config="{}",
        compression_level=1,
        row_group_rows=100,
    )
    writer.write(make_batch(3))
    writer.close({"archiver.deleted_ranges": "[[5,7]]"})

    meta = read_meta(path)
    assert meta == {
        "stream": "ORDERS",
        "generation": "20261126T000000000000Z",
        "first_seq": "1",
        "last_seq": "10",
        "rows": "10",
        "first_time": "2026-11-26T19:40:37.123457790Z",
        "last_time": "2026-11-26T19:40:37.123466799Z",
        "first_time_ns": str(T0 + 1_001),
        "last_time_ns": str(T0 + 10_010),
        "schema_version": SCHEMA_VERSION,
        "archiver_version": __version__,
        "stream_config": '{"name":"ORDERS"}',
        "content_hash": summary.content_hash,
        "max_message_bytes": str(
            max(len(d) + len(h or b"") for d, h in zip(first.data, first.raw_headers, strict=True))
        ),
    }
    assert read_meta(path2)["deleted_ranges"] == "[[5,7]]"


def test_summary_matches_file(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    summary = write_data_file(path, [make_batch(5, first_seq=100)])
    body = path.read_bytes()
    assert summary.path == path
    assert (summary.rows, summary.first_seq, summary.last_seq) == (5, 100, 104)
    assert (summary.first_time_ns, summary.last_time_ns) == (T0 + 100_100, T0 + 104_104)
    assert summary.file_bytes == len(body)
    assert summary.file_sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "extra",
    [{"deleted_ranges": "[]"}, {"archiver.rows": "99"}],
    ids=["no-prefix", "overrides-own-key"],
)
def test_bad_extra_metadata_is_refused(tmp_path: Path, extra: dict[str, str]) -> None:
    writer = DataFileWriter(
        tmp_path / "s.parquet",
        stream="S",
        generation="g",
        stream_config="{}",
        compression_level=1,
        row_group_rows=10,
    )
    writer.write(make_batch(2))
    with pytest.raises(ValueError, match="extra metadata key"):
        writer.close(extra)
    writer.abort()


# ------------------------------------------------------------------------ row groups


def test_row_groups_split_at_row_group_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_data_file(path, [make_batch(10)], row_group_rows=4)
    meta = pq.read_metadata(path)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 2]
    assert [t.num_rows for t in iter_row_groups(path)] == [4, 4, 2]


def test_small_batches_fill_whole_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    batch = make_batch(10)
    write_data_file(path, [batch.slice(i, i + 3) for i in range(0, 10, 3)], row_group_rows=4)
    assert [t.num_rows for t in iter_row_groups(path)] == [4, 4, 2]
    assert [r["seq"] for r in read_rows(path)] == list(range(1, 11))


def test_row_group_closes_early_on_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    batch = make_batch(6)  # about 10 bytes of payload per row
    write_data_file(path, [batch.slice(i, i + 2) for i in range(0, 6, 2)], row_group_bytes=1)
    assert [t.num_rows for t in iter_row_groups(path)] == [2, 2, 2]


def test_iter_row_groups_selects_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_data_file(path, [make_batch(5)])
    groups = list(iter_row_groups(path, columns=["seq", "data"]))
    assert all(g.column_names == ["seq", "data"] for g in groups)
    with pytest.raises(ValueError, match="no column"):
        list(iter_row_groups(path, columns=["seq", "nope"]))


def test_statistics_on_seq_and_time(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_data_file(path, [make_batch(10)], row_group_rows=4)
    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    seq_col, time_col = names.index("seq"), names.index("time")
    expected = [(1, 4), (5, 8), (9, 10)]
    for index, (lo, hi) in enumerate(expected):
        group = meta.row_group(index)
        seq_stats = group.column(seq_col).statistics
        assert seq_stats.has_min_max and (seq_stats.min, seq_stats.max) == (lo, hi)
        time_stats = group.column(time_col).statistics
        assert time_stats.has_min_max
        as_micros = [int(v.timestamp() * 1_000_000) for v in (time_stats.min, time_stats.max)]
        assert as_micros == [(T0 + lo * 1_001) // 1000, (T0 + hi * 1_001) // 1000]
    # Payload statistics would only bloat the footer.
    data_stats = meta.row_group(0).column(names.index("data")).statistics
    assert data_stats is None or not data_stats.has_min_max


# ---------------------------------------------------------------------- content hash


def test_content_hash_independent_of_layout(tmp_path: Path) -> None:
    batch = make_batch(10)
    path = tmp_path / "s.parquet"
    summary = write_data_file(path, [batch.slice(0, 3), batch.slice(3, 10)], row_group_rows=4)

    whole = content_hash([batch_to_table(batch, GEN)])
    read_back = content_hash(iter_row_groups(path))
    one_table = content_hash([pq.read_table(path)])
    # Slices with non-zero offsets inside chunks, and a multi-chunk table.
    table = batch_to_table(batch, GEN)
    sliced = content_hash([table.slice(0, 1), table.slice(1, 6), table.slice(7)])
    chunked = content_hash([pa.concat_tables([table.slice(0, 5), table.slice(5)])])
    assert summary.content_hash == whole == read_back == one_table == sliced == chunked
    assert read_meta(path)["content_hash"] == whole


def test_content_hash_handles_dictionary_subjects(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    summary = write_data_file(path, [make_batch(10)])
    table = pq.read_table(path, read_dictionary=["subject"])
    assert pa.types.is_dictionary(table.schema.field("subject").type)
    assert content_hash([table]) == summary.content_hash


def _mutated(change: str) -> Batch:
    batch = make_batch(6)
    if change == "payload":
        batch.data[2] = b"payload-4"[:-1] + b"X"
    elif change == "subject":
        batch.subjects[2] = "orders.9"
    elif change == "header":
        batch.raw_headers[2] = RAW.replace(b"A:  2 ", b"A:  3 ")
    elif change == "seq":
        batch.seqs[5] = 7
    elif change == "time":
        batch.times_ns[2] += 1
    elif change == "header-to-empty":
        batch.raw_headers[2] = b""
    elif change == "move-byte":
        # Same concatenated payload bytes, different boundaries.
        batch.data[1], batch.data[2] = b"payload-2p", b"ayload-3"
    return batch


@pytest.mark.parametrize(
    "change", ["payload", "subject", "header", "seq", "time", "header-to-empty", "move-byte"]
)
def test_content_hash_sees_every_change(change: str) -> None:
    original = content_hash([batch_to_table(make_batch(6), GEN)])
    assert content_hash([batch_to_table(_mutated(change), GEN)]) != original


def test_content_hash_is_incremental() -> None:
    table = batch_to_table(make_batch(6), GEN)
    hasher = ContentHash()
    hasher.update(table.slice(0, 2))
    partial = hasher.hexdigest()
    hasher.update(table.slice(2))
    assert partial != hasher.hexdigest() == content_hash([table])


# ------------------------------------------------------------------ writer behaviour


def test_an_empty_data_file_is_refused_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    writer = DataFileWriter(
        path, stream="S", generation="g", stream_config="{}", compression_level=1, row_group_rows=4
    )
    writer.write(Batch())
    with pytest.raises(ValueError, match="empty data file"):
        writer.close()
    assert not path.exists()


def test_abort_and_context_manager_remove_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    args: dict[str, Any] = {
        "stream": "S",
        "generation": "g",
        "stream_config": "{}",
        "compression_level": 1,
        "row_group_rows": 4,
    }
    writer = DataFileWriter(path, **args)
    writer.write(make_batch(5))
    writer.abort()
    writer.abort()
    assert not path.exists()

    with pytest.raises(RuntimeError), DataFileWriter(path, **args) as failing:
        failing.write(make_batch(5))
        raise RuntimeError("boom")
    assert not path.exists()

    with DataFileWriter(path, **args) as ok:
        ok.write(make_batch(5))
        summary = ok.close()
    assert path.exists() and summary.rows == 5


def test_failed_close_removes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.parquet"
    writer = DataFileWriter(
        path, stream="S", generation="g", stream_config="{}", compression_level=1, row_group_rows=4
    )
    writer.write(make_batch(5))

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer._writer, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert not path.exists()


def test_writer_state_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    writer = DataFileWriter(
        path, stream="S", generation="g", stream_config="{}", compression_level=1, row_group_rows=4
    )
    assert (writer.rows, writer.first_seq, writer.last_seq) == (0, None, None)
    writer.write(make_batch(3, first_seq=7))
    writer.write(make_batch(3, first_seq=10))
    assert (writer.rows, writer.first_seq, writer.last_seq) == (6, 7, 12)
    assert (writer.first_time_ns, writer.last_time_ns) == (T0 + 7 * 1_001, T0 + 12 * 1_001)
    assert writer.file_bytes > 4  # one row group is on disk already
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(make_batch(1, first_seq=20))


def test_sequences_must_increase(tmp_path: Path) -> None:
    writer = DataFileWriter(
        tmp_path / "s.parquet",
        stream="S",
        generation="g",
        stream_config="{}",
        compression_level=1,
        row_group_rows=4,
    )
    writer.write(make_batch(3, first_seq=5))
    with pytest.raises(ValueError, match="does not follow"):
        writer.write(make_batch(3, first_seq=7))
    shuffled = make_batch(3, first_seq=10)
    shuffled.seqs.reverse()
    with pytest.raises(ValueError, match="not increasing"):
        writer.write(shuffled)
    writer.abort()


def test_nulls_in_required_columns_are_refused() -> None:
    batch = make_batch(2)
    batch.data[1] = None  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="column data has nulls"):
        batch_to_table(batch, GEN)


# ------------------------------------------------------------------------- damage


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped-page-byte"])
def test_a_damaged_file_raises_data_file_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.parquet"
    batch = Batch()
    batch.append(1, "a", T0, None, ALL_BYTES * 64)
    write_data_file(path, [batch])
    body = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(body[: len(body) - 100])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 40)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        # Inside the payload column's page: only the page checksum notices this one.
        meta = pq.read_metadata(path)
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        chunk = meta.row_group(0).column(names.index("data"))
        at = chunk.data_page_offset + chunk.total_compressed_size // 2
        path.write_bytes(body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :])

    if damage != "flipped-page-byte":
        with pytest.raises(DataFileCorrupt, match=re.escape(str(path))) as info:
            read_meta(path)
        assert info.value.exit_code == 3
    with pytest.raises(DataFileCorrupt, match=re.escape(str(path))):
        list(iter_row_groups(path))


def test_missing_file_is_not_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_meta(tmp_path / "nope.parquet")


def test_a_stores_local_file_that_cannot_be_opened_is_store_trouble_not_damage(
    tmp_path: Path,
) -> None:
    """A file the archiver's user may not read was reported damaged (exit 3) once local
    files were opened by Arrow; it is the store's trouble (exit 1), as over S3. Running
    as root, a directory where the file should be stands in for an unreadable file."""
    from datetime import date

    from archiver.errors import StoreError
    from archiver.format.catalog import DataFile
    from archiver.format.reader import open_file
    from archiver.store.local import LocalStore

    store = LocalStore(tmp_path)
    key = layout.data_key("AUTH", date(2026, 3, 1), "20260301T000000000000Z", 1, 9)
    name = layout.parse_data_key(key)
    assert name is not None
    (tmp_path / key).mkdir(parents=True)
    with pytest.raises(StoreError, match="cannot read"):
        open_file(store, DataFile(key, name, 100))
    (tmp_path / key).rmdir()  # gone between the listing and the read
    with pytest.raises(StoreError, match="does not exist"):
        open_file(store, DataFile(key, name, 100))


# ------------------------------------------------------------------------- DuckDB


def test_duckdb_reads_the_same_rows(tmp_path: Path) -> None:
    batch = make_batch(10)
    batch.data[0] = ALL_BYTES
    path = tmp_path / "s.parquet"
    write_data_file(path, [batch])
    with duckdb.connect() as con:
        got = con.execute(
            "SELECT seq, subject, data, time_ns FROM read_parquet(?) ORDER BY seq", [str(path)]
        ).fetchall()
    expected = list(zip(batch.seqs, batch.subjects, batch.data, batch.times_ns, strict=True))
    assert [(s, subj, bytes(d), t) for s, subj, d, t in got] == expected


def test_an_archive_of_both_schema_versions_verifies_replays_and_lists(
    nats: NatsServer, tmp_path: Path
) -> None:
    import json

    from helpers import data_keys, publish, run_cli, settings
    from test_archive import add_streams

    from archiver.archive.run import run
    from archiver.config import FileLimits
    from archiver.store import open_store

    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.e{i % 5}" for i in range(300)]))
    asyncio.run(run(settings(nats.url, str(root), limits=FileLimits(1000, max_rows=100))))
    store = open_store(str(root))
    first, *_ = sorted(data_keys(store))
    local = tmp_path / "new.parquet"
    store.download(first, local)
    table = pq.read_table(local)
    assert table.schema.field("seq").type == pa.int64()
    assert set(table.column("generation").to_pylist()) == {layout.parse_data_key(first).generation}  # type: ignore[union-attr]
    # The same rows as a file of schema version 1 wrote them: seq uint64, no generation.
    meta = dict(pq.read_metadata(local).metadata)
    meta[b"archiver.schema_version"] = b"1"
    old = table.drop_columns(["generation"])
    old = old.set_column(
        0, pa.field("seq", pa.uint64(), nullable=False), old.column("seq").cast(pa.uint64())
    )
    old = old.replace_schema_metadata(meta)
    legacy = tmp_path / "old.parquet"
    pq.write_table(old, legacy, compression="zstd", write_page_checksum=True)
    store.delete(first)
    store.put_bytes(first, legacy.read_bytes())
    checked = run_cli("verify", "--store", str(root))
    assert checked.returncode == 0, checked.stdout
    dry = run_cli(
        "replay",
        "--nats-url",
        nats.url,
        "--store",
        str(root),
        "--stream",
        "AUTH",
        "--from-seq",
        "50",
        "--dry-run",
        "--yes",
        "--json",
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)[0]["matched"] == 251
    listed = run_cli("ls", "--store", str(root), "--json")
    assert [r["rows"] for r in json.loads(listed.stdout)] == [100, 100, 100]
    both = run_cli(
        "sql",
        "SELECT count(*) AS n, count(generation) AS g, sum(seq) AS s FROM messages",
        "--store",
        str(root),
        "--json",
    )
    assert json.loads(both.stdout) == [{"n": 300, "g": 200, "s": 300 * 301 // 2}]


def test_reading_a_data_file_starts_no_arrow_threads(tmp_path: Path) -> None:
    """Arrow's decoding threads, once started, abort about one exit in 25 ("terminate
    called without an active exception", exit -6) after the command's work is done:
    reading row groups or batches must not start them."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"seq": list(range(10_000)), "x": ["a"] * 10_000}), path)
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from archiver.format.reader import open_local\n"
        "def threads():\n"
        "    # jemalloc's own background thread (the CLI's pool) is not Arrow's CPU pool.\n"
        "    names = [open(f'/proc/self/task/{t}/comm').read().strip()\n"
        "             for t in os.listdir('/proc/self/task')]\n"
        "    return len([n for n in names if n != 'jemalloc_bg_thd'])\n"
        "before = threads()\n"
        "opened = open_local(Path(sys.argv[1]))\n"
        "rows = sum(t.num_rows for t in opened.row_groups())\n"
        "rows += sum(t.num_rows for t in opened.batches())\n"
        "print(rows, threads() - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    rows, started = map(int, out.stdout.split())
    # One IO thread reads the file; Arrow's CPU pool would add at least one more.
    assert rows == 20_000 and started <= 1, out.stdout + out.stderr


def test_batches_give_every_row_in_order_in_tables_of_at_most_the_asked_rows(
    tmp_path: Path,
) -> None:
    """Verify reads whole files by ``batches``: no row lost, repeated or reordered across
    row groups, and no table larger than asked (that is what keeps its buffers small)."""
    from archiver.format.reader import open_local

    path = tmp_path / "f.parquet"
    table = pa.table({"seq": list(range(1, 60_001)), "data": [b"x" * 7] * 60_000})
    pq.write_table(table, path, row_group_size=25_000)
    tables = list(open_local(path).batches(rows=10_000))
    assert max(t.num_rows for t in tables) <= 10_000
    assert pa.concat_tables(tables).equals(table)


# ------------------------------------------------------------- columns built quickly


def test_the_data_column_is_what_arrow_builds_from_the_payloads() -> None:
    payloads = [b"", b"x", ALL_BYTES, b"", MIB_PAYLOAD, b"\r\n"]
    for rows in ([], payloads, payloads * 300):
        batch = Batch()
        for seq, data in enumerate(rows, 1):
            batch.append(seq, "s", T0, None, data)
        column = batch_to_table(batch, "g").column("data").combine_chunks()
        column.validate(full=True)
        assert column.equals(pa.array(rows, pa.binary()))


def _header_view_line_by_line(raw: bytes) -> list[tuple[str, list[str]]] | None:
    """The header view as the contract words it: lines after the status line split at
    the first ":", one space dropped from the value, key and value decoded alone."""
    pairs: dict[str, list[str]] = {}
    for line in raw.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            text = value[1:] if value.startswith(b" ") else value
            pairs.setdefault(key.decode("utf-8", "replace"), []).append(
                text.decode("utf-8", "replace")
            )
    return list(pairs.items()) or None


def test_the_header_view_decodes_a_block_whole_with_the_same_result_as_line_by_line() -> None:
    import random

    from archiver.format.headers import parse_header_block

    pieces = [b"a", b"B", b":", b" ", b"\r", b"\n", b"\r\n", b"\xe2", b"\x82", b"\xac"]
    pieces += [b"\xff", b"\xc3\xa9", b"NATS/1.0", b"\x00", b"\xf0\x9f", b"\xed\xa0\x80"]
    rng = random.Random(14)
    for _ in range(50_000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert parse_header_block(raw) == _header_view_line_by_line(raw), raw
    assert parse_header_block(RAW) == [("A", ["1", " 2 "]), ("B", ["x"])]


def _headers_block_by_block(raws: list[bytes | None]) -> Any:
    from archiver.format.headers import HEADERS_TYPE, parse_header_block

    return pa.array([None if r is None else parse_header_block(r) for r in raws], HEADERS_TYPE)


@pytest.mark.parametrize("kind", ["utf-8", "any bytes"])
def test_the_headers_column_is_the_view_of_each_block_whichever_way_it_is_built(kind: str) -> None:
    import random

    from archiver.format.headers import _parsed_by_arrow, headers_column

    pieces = [b"a", b"B", b"k", b":", b" ", b"  ", b"\r", b"\n", b"\r\n", b"\r\n", b"\xc3\xa9"]
    pieces += [b"NATS/1.0", b"NATS/1.0 503", b"\x00", b"v:w", b"\xe2\x82\xac"]
    if kind == "any bytes":
        pieces += [b"\xff", b"\xe2\x82", b"\xed\xa0\x80"]
    rng = random.Random(kind)
    by_arrow = 0
    for _ in range(400):
        raws: list[bytes | None] = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.3:
                raws.append(None)
            else:
                raws.append(b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))))
        raw_array = pa.array(raws, pa.binary())
        column = headers_column(raws, raw_array)
        column.validate(full=True)
        assert column.to_pylist() == _headers_block_by_block(raws).to_pylist(), raws
        blocks = raw_array.filter(raw_array.is_valid())
        by_arrow += _parsed_by_arrow(blocks) is not None
    if kind == "utf-8":
        assert by_arrow > 100, "most batches of UTF-8 blocks are built by Arrow"


def test_the_headers_of_the_benchmarks_blocks_are_built_by_arrow() -> None:
    from archiver.format.headers import _parsed_by_arrow, headers_column

    block = b"NATS/1.0\r\nTrace-Id: 4bf92f3577b34da6\r\nSource: bench-fill\r\nEmpty:\r\n\r\n"
    raws = [block if i % 10 == 0 else None for i in range(2_000)]
    raws[5] = b"NATS/1.0 503\r\n\r\n"  # a status line alone: no headers
    raw_array = pa.array(raws, pa.binary())
    assert _parsed_by_arrow(raw_array.filter(raw_array.is_valid())) is not None
    column = headers_column(raws, raw_array)
    assert column.to_pylist() == _headers_block_by_block(raws).to_pylist()
    assert column[0].as_py() == [
        ("Trace-Id", ["4bf92f3577b34da6"]),
        ("Source", ["bench-fill"]),
        ("Empty", [""]),
    ]
    assert column[5].as_py() is None and column[1].as_py() is None
