"""Reading a slice of the archive: only the files and row groups that can hold matches.

File names carry the generation and sequence range, date partitions the UTC day, and
each row group's statistics the ``seq`` and ``time_ns`` range, so a replay of one hour
of one stream reads that hour's row groups and nothing else. Rows come out in
sequence order, one row group at a time: memory stays flat however large the slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.errors import DataFileCorrupt, UsageError
from archiver.format import catalog, layout
from archiver.format.catalog import DataFile
from archiver.format.reader import open_file
from archiver.replay.subjects import SubjectFilter
from archiver.store.base import Store
from archiver.timefmt import format_ns

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Selection:
    """Which archived messages: bounds are inclusive, None means unbounded."""

    stream: str
    generation: str | None = None
    """None: the newest generation in the archive."""
    subjects: SubjectFilter = field(default_factory=lambda: SubjectFilter([]))
    from_seq: int | None = None
    to_seq: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None

    def __post_init__(self) -> None:
        # An empty range is a mistake, not a selection: it would silently match nothing.
        if self.from_seq is not None and self.to_seq is not None and self.from_seq > self.to_seq:
            raise UsageError(
                f"--from-seq {self.from_seq} is after --to-seq {self.to_seq}: nothing can match",
                hint="give the lower sequence to --from-seq",
            )
        since, until = self.since_ns, self.until_ns
        if since is not None and until is not None and since > until:
            raise UsageError(
                f"--since {format_ns(since)} is after --until {format_ns(until)}: "
                "nothing can match",
                hint="a duration means that long ago: --since 1h --until 10m is the last "
                "hour but ten minutes",
            )

    def describe(self) -> str:
        parts = [self.stream]
        if self.generation:
            parts.append(f"generation {self.generation}")
        if self.from_seq is not None or self.to_seq is not None:
            parts.append(f"seq {self.from_seq or 1}..{self.to_seq or 'end'}")
        if self.since_ns is not None or self.until_ns is not None:
            parts.append("time window")
        return ", ".join(parts)


def _day(ns: int) -> date:
    return datetime.fromtimestamp(ns // NS_PER_S, UTC).date()


def resolve_generation(files: list[DataFile], wanted: str | None, stream: str) -> str:
    generations = sorted({f.name.generation for f in files})
    if not generations:
        raise UsageError(
            f"the archive holds no files of stream {stream}", hint="check --store and --stream"
        )
    if wanted is None:
        return generations[-1]
    if wanted not in generations:
        raise UsageError(
            f"stream {stream} has no generation {wanted}",
            hint=f"generations in the archive: {', '.join(generations)}",
        )
    return wanted


def select_files(store: Store, sel: Selection) -> tuple[str, list[DataFile]]:
    """The generation and its files that can hold matches, in sequence order."""
    files = catalog.data_files(store, sel.stream)
    generation = resolve_generation(files, sel.generation, sel.stream)
    chosen = []
    for f in files:
        n = f.name
        if n.generation != generation:
            continue
        if sel.from_seq is not None and n.last_seq < sel.from_seq:
            continue
        if sel.to_seq is not None and n.first_seq > sel.to_seq:
            continue
        # A file holds one UTC day, so the day in its path bounds its times.
        if sel.since_ns is not None and n.day < _day(sel.since_ns):
            continue
        if sel.until_ns is not None and n.day > _day(sel.until_ns):
            continue
        chosen.append(f)
    return generation, sorted(chosen, key=lambda f: f.name.first_seq)


def unexplained_holes(
    store: Store, sel: Selection, generation: str, files: list[DataFile]
) -> list[tuple[int, int]]:
    """Seqs in the selection's span that no committed file or gap record accounts for:
    a data file lost or deleted. Replaying around them would look complete and is not.

    The span is the selection's seq bounds, else the seqs of the committed links on the
    window's days (a time window: a lost file's key still says its day), else the
    archive's extent from its first committed link (a head the store's lifecycle rule
    removed, markers and all, is no hole) to where the archive ends.
    """
    gen = catalog.generation(store, sel.stream, generation)
    present = [(f.name.first_seq, f.name.last_seq) for f in gen.files]
    present += [(r.first_seq, r.last_seq) for r in gen.records if not r.inside]
    lost = [(m.first_seq, m.last_seq) for m in gen.missing]
    if not present and not lost:
        return []
    lo, hi = min(a for a, _ in present + lost), max(gen.end, gen.finished)
    if sel.since_ns is not None or sel.until_ns is not None:
        names = [f.name for f in files]
        names += [n for n in map(layout.parse_data_key, (m.key for m in gen.missing)) if n]
        on_days = [
            (n.first_seq, n.last_seq)
            for n in names
            if (sel.since_ns is None or n.day >= _day(sel.since_ns))
            and (sel.until_ns is None or n.day <= _day(sel.until_ns))
        ]
        if not on_days:
            return []
        lo, hi = min(a for a, _ in on_days), max(b for _, b in on_days)
    lo = max(lo, sel.from_seq or lo)
    hi = min(hi, sel.to_seq or hi)
    holes, expected = [], lo
    for first, last in sorted(present):
        if first > expected and expected <= hi:
            holes.append((expected, min(first - 1, hi)))
        expected = max(expected, last + 1)
    if expected <= hi:
        holes.append((expected, hi))
    return holes


def _stat_range(meta: Any, group: int, column: int) -> tuple[int, int] | None:
    stats = meta.row_group(group).column(column).statistics
    if stats is None or not stats.has_min_max:
        return None
    return int(stats.min), int(stats.max)


def _group_may_match(meta: Any, group: int, seq_col: int, time_col: int, sel: Selection) -> bool:
    seqs = _stat_range(meta, group, seq_col)
    if seqs is not None:
        if sel.from_seq is not None and seqs[1] < sel.from_seq:
            return False
        if sel.to_seq is not None and seqs[0] > sel.to_seq:
            return False
    times = _stat_range(meta, group, time_col)
    if times is not None:
        if sel.since_ns is not None and times[1] < sel.since_ns:
            return False
        if sel.until_ns is not None and times[0] > sel.until_ns:
            return False
    return True


def _row_mask(table: pa.Table, sel: Selection) -> Any:
    mask = sel.subjects.mask(table.column("subject"))
    seq = table.column("seq").cast(pa.int64())  # uint64 in files of schema version 1
    time_ns = table.column("time_ns")
    if sel.from_seq is not None:
        mask = pc.and_(mask, pc.greater_equal(seq, pa.scalar(sel.from_seq, pa.int64())))
    if sel.to_seq is not None:
        mask = pc.and_(mask, pc.less_equal(seq, pa.scalar(sel.to_seq, pa.int64())))
    if sel.since_ns is not None:
        mask = pc.and_(mask, pc.greater_equal(time_ns, sel.since_ns))
    if sel.until_ns is not None:
        mask = pc.and_(mask, pc.less_equal(time_ns, sel.until_ns))
    return mask


def iter_selected(
    store: Store, files: list[DataFile], sel: Selection, columns: list[str]
) -> Iterator[pa.Table]:
    """The matching rows, one row group at a time, in sequence order."""
    needed = sorted({*columns, "seq", "time_ns", "subject"})
    for f in files:
        opened = open_file(store, f)
        meta = opened.metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if "seq" not in names or "time_ns" not in names:
            raise DataFileCorrupt(f"data file {f.key} lacks the seq or time_ns column")
        seq_col, time_col = names.index("seq"), names.index("time_ns")
        for group in range(meta.num_row_groups):
            if not _group_may_match(meta, group, seq_col, time_col, sel):
                continue
            table = opened.row_group(group, needed)
            mask = _row_mask(table, sel)
            if pc.all(mask).as_py():
                yield table.select(columns)  # no copy of a whole row group for nothing
                continue
            selected = table.filter(mask)
            if selected.num_rows:
                yield selected.select(columns)


ROWS_AT_ONCE = 10_000
"""Rows turned into Python objects at a time: a whole row group at once would hold about
a hundred thousand payloads as objects besides the Arrow buffers."""


def iter_rows(tables: Iterator[pa.Table], columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """Row tuples of ``columns``, a slice of each table at a time."""
    for table in tables:
        for start in range(0, table.num_rows, ROWS_AT_ONCE):
            part = table.slice(start, ROWS_AT_ONCE)
            yield from zip(*(part.column(c).to_pylist() for c in columns), strict=True)
