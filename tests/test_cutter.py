"""Files are cut by UTC day and size, committed in order, each after its gap record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver.archive.cutter import Cutter
from archiver.config import FileLimits
from archiver.format import layout
from archiver.format.batch import Batch
from archiver.format.fence import Fence
from archiver.format.gaps import Gap, GapKind, decode_record
from archiver.store.memory import MemoryStore

MIDNIGHT_NS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
MIDNIGHT_DAY = datetime(2026, 3, 1, tzinfo=UTC).date()


def batch(seqs: list[int], times: list[int]) -> Batch:
    b = Batch()
    for seq, t in zip(seqs, times, strict=True):
        b.append(seq, f"auth.{seq}", t, None, b"x" * 10)
    return b


def cutter(store: MemoryStore, tmp_path: Path, **limits: int) -> tuple[Cutter, list[str]]:
    order: list[str] = []
    c = Cutter(
        Fence(store, "AUTH", "20260101T000000000000Z", "test"),
        "{}",
        FileLimits(row_group_rows=1000, **limits),
        tmp_path,
        before_commit=lambda: order.append("renew"),
    )
    return c, order


def keys(store: MemoryStore) -> list[str]:
    return [o.key for o in store.list("")]


def test_a_file_never_spans_two_utc_days(tmp_path: Path) -> None:
    store = MemoryStore()
    c, _ = cutter(store, tmp_path)
    before, after = MIDNIGHT_NS - 2_000, MIDNIGHT_NS + 5
    c.add(batch([1, 2, 3, 4], [before, before + 1, after, after + 1]))
    c.finish()
    names = [layout.parse_data_key(k) for k in keys(store)]
    assert [(n.day.isoformat(), n.first_seq, n.last_seq) for n in names if n] == [
        ("2026-02-28", 1, 2),
        ("2026-03-01", 3, 4),
    ]


def test_times_going_back_across_midnight_still_cut(tmp_path: Path) -> None:
    store = MemoryStore()
    c, _ = cutter(store, tmp_path)
    c.add(batch([1, 2, 3], [MIDNIGHT_NS + 1, MIDNIGHT_NS - 1, MIDNIGHT_NS + 2]))
    c.finish()
    names = [layout.parse_data_key(k) for k in keys(store)]
    days = sorted((n.first_seq, n.day.isoformat()) for n in names if n)
    assert days == [(1, "2026-03-01"), (2, "2026-02-28"), (3, "2026-03-01")]


def test_row_limit_cuts_files(tmp_path: Path) -> None:
    store = MemoryStore()
    c, _ = cutter(store, tmp_path, max_rows=3)
    c.add(batch(list(range(1, 8)), [MIDNIGHT_NS + i for i in range(7)]))
    c.finish()
    names = [layout.parse_data_key(k) for k in keys(store)]
    assert [(n.first_seq, n.last_seq) for n in names if n] == [(1, 3), (4, 6), (7, 7)]
    assert c.totals.files == 3 and c.totals.messages == 7


def test_gap_record_is_committed_before_the_file_after_it(tmp_path: Path) -> None:
    store = MemoryStore()
    c, order = cutter(store, tmp_path, max_rows=2)
    committed: list[str] = []
    real_put_file, real_put_bytes = store.put_file, store.put_bytes
    store.put_file = lambda k, p, h: (committed.append(k), real_put_file(k, p, h))  # type: ignore[method-assign]
    store.put_bytes = lambda k, d: (committed.append(k), real_put_bytes(k, d))  # type: ignore[method-assign]
    c.add(batch([1, 2], [MIDNIGHT_NS, MIDNIGHT_NS + 1]))
    c.add_gaps([Gap(3, 5, GapKind.DELETED)])
    c.add(batch([6, 7], [MIDNIGHT_NS + 2, MIDNIGHT_NS + 3]))
    c.add_gaps([Gap(8, 9, GapKind.EXPIRED)])
    c.finish()

    def kind(key: str) -> str:
        if "_commits" in key:
            return "base" if key.endswith("-base.json") else "marker"
        return "gap" if "_gaps" in key else "data"

    kinds = [kind(k) for k in committed]
    assert kinds == ["base", "data", "marker", "gap", "marker", "data", "marker", "gap", "marker"]
    assert order == ["renew"] * 4, "the lease is renewed before every commit"
    last = decode_record(store.get_bytes(committed[-2]))
    assert last == [Gap(8, 9, GapKind.EXPIRED)] and committed[-2].endswith("-lost.json.zst")


def test_a_failed_commit_leaves_nothing_and_no_spool_file(tmp_path: Path) -> None:
    store = MemoryStore()

    def refuse() -> None:
        raise RuntimeError("lease lost")

    c = Cutter(
        Fence(store, "AUTH", "20260101T000000000000Z", "test"),
        "{}",
        FileLimits(row_group_rows=1000, max_rows=2),
        tmp_path,
        before_commit=refuse,
    )
    with pytest.raises(RuntimeError):
        c.add(batch([1, 2], [MIDNIGHT_NS, MIDNIGHT_NS + 1]))
    c.abort()
    assert keys(store) == []
    assert list(tmp_path.iterdir()) == []


def test_a_batch_whose_middle_row_is_on_the_next_day_is_cut(tmp_path: Path) -> None:
    store = MemoryStore()
    c, _ = cutter(store, tmp_path)
    c.add(batch([1, 2, 3], [MIDNIGHT_NS - 2, MIDNIGHT_NS + 1, MIDNIGHT_NS - 1]))
    c.finish()
    names = [layout.parse_data_key(k) for k in keys(store)]
    assert sorted((n.first_seq, n.day.isoformat()) for n in names if n) == [
        (1, "2026-02-28"),
        (2, "2026-03-01"),
        (3, "2026-02-28"),
    ]


def test_holes_inside_a_file_travel_in_its_footer(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store = MemoryStore()
    c, _ = cutter(store, tmp_path)
    c.add(batch([1, 2], [MIDNIGHT_NS, MIDNIGHT_NS + 1]))
    c.add_gaps([Gap(3, 4, GapKind.DELETED)])
    c.add(batch([5], [MIDNIGHT_NS + 2]))
    c.finish()
    (key,) = [k for k in keys(store) if layout.parse_data_key(k)]
    local = tmp_path / "f.parquet"
    store.download(key, local)
    meta = pq.read_metadata(local).metadata
    assert meta[b"archiver.gaps"] == b'[[3, 4, "deleted"]]'


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_an_earlier_runs_uncommitted_copy_is_committed_with_its_own_losses(
    tmp_path: Path, kind: str
) -> None:
    """A run that finds its file's key taken by an earlier run's uncommitted copy commits
    that copy, and the losses written in the copy's footer get their loss record (status
    and metrics read losses from records, not footers). This read a footer key that
    never exists (losses dropped silently) of a file taken to be 0 bytes long."""
    from archiver.store.local import LocalStore

    for spool in ("first", "again"):
        (tmp_path / spool).mkdir()
    earlier = MemoryStore()
    first, _ = cutter(earlier, tmp_path / "first")
    first.add_gaps([Gap(3, 3, GapKind.EXPIRED)])
    first.add(batch([1, 2, 4, 5], [MIDNIGHT_NS + i for i in range(4)]))
    first.finish()
    (data_key,) = [k for k in keys(earlier) if layout.parse_data_key(k)]
    store = MemoryStore() if kind == "memory" else LocalStore(tmp_path / "store")
    store.check(writing=True)
    store.put_bytes(data_key, earlier.get_bytes(data_key))  # the copy, without its marker

    again, _ = cutter(store, tmp_path / "again")  # type: ignore[arg-type]
    again.add_gaps([Gap(3, 3, GapKind.DELETED)])  # what this run makes of the hole
    again.add(batch([1, 2, 4, 5], [MIDNIGHT_NS + i for i in range(4)]))
    again.finish()
    records = [k for k in (o.key for o in store.list("")) if layout.parse_gap_key(k)]
    assert [decode_record(store.get_bytes(k)) for k in records] == [[Gap(3, 3, GapKind.EXPIRED)]]


def test_an_earlier_runs_copy_with_unreadable_gaps_stops_the_stream_saying_so(
    tmp_path: Path,
) -> None:
    """Its footer's gaps are the only record of its losses: they cannot be guessed, and
    a bare ValueError from json was an unexpected error with a traceback."""
    from archiver.errors import DataFileCorrupt
    from archiver.format.writer import DataFileWriter

    (tmp_path / "again").mkdir()
    path = tmp_path / "copy.parquet"
    writer = DataFileWriter(
        path,
        stream="AUTH",
        generation="20260101T000000000000Z",
        stream_config="{}",
        compression_level=1,
        row_group_rows=1000,
    )
    writer.write(batch([1, 2], [MIDNIGHT_NS, MIDNIGHT_NS + 1]))
    writer.close({"archiver.gaps": "not json"})
    store = MemoryStore()
    key = layout.data_key("AUTH", MIDNIGHT_DAY, "20260101T000000000000Z", 1, 2)
    store.put_bytes(key, path.read_bytes())

    again, _ = cutter(store, tmp_path / "again")
    again.add(batch([1, 2], [MIDNIGHT_NS, MIDNIGHT_NS + 1]))
    with pytest.raises(DataFileCorrupt, match="unreadable gaps"):
        again.finish()
