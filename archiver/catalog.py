"""What the archive holds for a stream, read from key names alone (no file is opened).

Progress is nothing but committed objects: the resume point of a generation is the
highest sequence covered by a data file or a gap record of that generation.
"""

from __future__ import annotations

from dataclasses import dataclass

from archiver import layout
from archiver.layout import FileName, GapName
from archiver.store.base import Store


@dataclass(frozen=True, slots=True)
class DataFile:
    key: str
    name: FileName
    size: int


def data_files(store: Store, stream: str) -> list[DataFile]:
    """Every data file of the stream, in key order (date, generation, sequence)."""
    files = []
    for obj in store.list(layout.stream_prefix(stream)):
        name = layout.parse_data_key(obj.key)
        if name is not None:
            files.append(DataFile(obj.key, name, obj.size))
    return files


def gap_records(store: Store, stream: str) -> list[GapName]:
    found = (layout.parse_gap_key(o.key) for o in store.list(layout.gap_prefix(stream)))
    return [g for g in found if g is not None]


def last_file(store: Store, stream: str, generation: str) -> DataFile | None:
    """The generation's data file with the highest sequences, or None.

    Walks the date partitions newest first and stops at the first that holds a file of
    the generation, so a run lists one or two days, not years of files.
    """
    for prefix in reversed(store.list_dirs(layout.stream_prefix(stream))):
        if layout.parse_date_prefix(prefix) is None:
            continue
        files = [
            DataFile(o.key, n, o.size)
            for o in store.list(prefix)
            if (n := layout.parse_data_key(o.key)) is not None and n.generation == generation
        ]
        if files:
            return max(files, key=lambda f: f.name.last_seq)
    return None


def resume_after(store: Store, stream: str, generation: str) -> int:
    """The highest sequence this generation's archive accounts for (0: nothing yet)."""
    gaps = [g.last_seq for g in gap_records(store, stream) if g.generation == generation]
    newest = last_file(store, stream, generation)
    return max([*gaps, newest.name.last_seq if newest else 0])


def streams_in_archive(store: Store) -> list[str]:
    names = []
    for prefix in store.list_dirs(""):
        part = prefix.rstrip("/")
        if part.startswith("stream="):
            names.append(part.removeprefix("stream="))
    return names
