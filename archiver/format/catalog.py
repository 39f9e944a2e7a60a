"""What the archive holds for a stream, read from key names alone (no file is opened).

Progress is nothing but committed objects: the resume point of a generation is the
highest sequence covered by a data file or a gap record of that generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from archiver.errors import UsageError
from archiver.format import layout
from archiver.format.layout import FileName, GapName
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


def gap_records(store: Store, stream: str, generation: str | None = None) -> list[GapName]:
    """The stream's gap records (of one generation: only that one is listed)."""
    prefix = layout.gap_prefix(stream) + (f"g{generation}-" if generation else "")
    found = (layout.parse_gap_key(o.key) for o in store.list(prefix))
    return [g for g in found if g is not None]


def last_file(store: Store, stream: str, generation: str) -> DataFile | None:
    """The generation's data file with the highest sequences, or None.

    Walks the date partitions newest first. Stored times may step back across midnight
    (the cutter then starts a file in the earlier day), so once a partition holds a file
    of the generation, the day before it is looked at too; older days cannot hold
    higher sequences. A run lists two or three days, not years of files.
    """
    best: DataFile | None = None
    found_on: date | None = None
    for prefix in reversed(store.list_dirs(layout.stream_prefix(stream))):
        day = layout.parse_date_prefix(prefix)
        if day is None:
            continue
        if found_on is not None and (found_on - day).days > 1:
            break
        for o in store.list(prefix):
            n = layout.parse_data_key(o.key)
            if (
                n is not None
                and n.generation == generation
                and (best is None or n.last_seq > best.name.last_seq)
            ):
                best = DataFile(o.key, n, o.size)
        if best is not None and found_on is None:
            found_on = day
    return best


def newest_other_generation(store: Store, stream: str, generation: str) -> DataFile | None:
    """The last file of the newest generation other than ``generation``, if any."""
    others = sorted({f.name.generation for f in data_files(store, stream)} - {generation})
    return last_file(store, stream, others[-1]) if others else None


def archived_seq(store: Store, stream: str, generation: str) -> int:
    """The highest sequence this generation's archive accounts for (0: nothing yet)."""
    gaps = [g.last_seq for g in gap_records(store, stream, generation)]
    newest = last_file(store, stream, generation)
    return max([*gaps, newest.name.last_seq if newest else 0])


def choose_streams(store: Store, names: tuple[str, ...]) -> list[str]:
    """The archived streams a command covers: those named, each of which the archive
    must hold, or every stream in the archive."""
    known = streams_in_archive(store)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise UsageError(
            f"the archive holds no stream {', '.join(unknown)}",
            hint=f"streams in the archive: {', '.join(known) or 'none'}; check --store",
        )
    return list(names) or known


def streams_in_archive(store: Store) -> list[str]:
    names = []
    for prefix in store.list_dirs(""):
        part = prefix.rstrip("/")
        if part.startswith("stream="):
            names.append(part.removeprefix("stream="))
    return names


def run_records(store: Store, stream: str, generation: str) -> list[layout.RunName]:
    """The generation's run records: the seq range each finished run covered."""
    prefix = layout.run_prefix(stream) + f"g{generation}-"
    runs = (layout.parse_run_key(o.key) for o in store.list(prefix))
    return [r for r in runs if r is not None]


def finished_seq(store: Store, stream: str, generation: str) -> int:
    """The highest sequence a finished run of the generation archived up to (0: none)."""
    return max((r.last_seq for r in run_records(store, stream, generation)), default=0)
