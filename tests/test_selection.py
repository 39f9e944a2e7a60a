"""Replay's selection reads only the files and row groups that can hold matches."""

from __future__ import annotations

import os
from pathlib import Path

from archiver.archive.cutter import Cutter
from archiver.config import FileLimits
from archiver.format.batch import Batch
from archiver.format.fence import Fence
from archiver.replay.selection import Selection, iter_selected, select_files
from archiver.replay.subjects import SubjectFilter
from archiver.store.memory import MemoryStore

T0 = 1_780_000_000 * 1_000_000_000  # a whole day after midnight, far from a day change
GEN = "20260101T000000000000Z"


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.range_bytes = 0

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        self.range_bytes += len(data)
        return data


def archive(tmp_path: Path) -> CountingStore:
    """9,000 incompressible 2 kB messages, files of 3,000, row groups of 1,000, 1 ms apart."""
    store = CountingStore()
    cutter = Cutter(
        Fence(store, "AUTH", GEN, "test"),
        "{}",
        FileLimits(row_group_rows=1000, max_rows=3000),
        tmp_path,
        before_commit=lambda: None,
    )
    b = Batch()
    for seq in range(1, 9001):
        b.append(seq, f"auth.user.u{seq % 10}.login", T0 + seq * 1_000_000, None, os.urandom(2000))
    cutter.add(b)
    cutter.finish()
    return store


def seqs(store: CountingStore, sel: Selection) -> list[int]:
    _, files = select_files(store, sel)
    return [
        s for t in iter_selected(store, files, sel, ["seq"]) for s in t.column("seq").to_pylist()
    ]


def test_sequence_range_reads_one_row_group(tmp_path: Path) -> None:
    store = archive(tmp_path)
    total = sum(o.size for o in store.list(""))
    sel = Selection("AUTH", from_seq=4500, to_seq=4600)
    _, files = select_files(store, sel)
    assert len(files) == 1
    assert seqs(store, sel) == list(range(4500, 4601))
    # One footer and one row group's columns, not the archive.
    assert store.range_bytes < total / 4


def test_time_window_and_subjects(tmp_path: Path) -> None:
    store = archive(tmp_path)
    sel = Selection(
        "AUTH",
        since_ns=T0 + 2000 * 1_000_000,
        until_ns=T0 + 2100 * 1_000_000,
        subjects=SubjectFilter(["auth.user.u3.*"]),
    )
    assert seqs(store, sel) == [s for s in range(2000, 2101) if s % 10 == 3]


def test_everything_in_order(tmp_path: Path) -> None:
    store = archive(tmp_path)
    assert seqs(store, Selection("AUTH")) == list(range(1, 9001))
