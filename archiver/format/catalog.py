"""What the archive holds for a stream: the committed objects, from one listing.

Progress is nothing but committed objects (see ``archiver.format.fence``): the resume
point of a generation is the end of its committed chain. Key names say almost
everything; the one object read per generation is the last link's marker (and the
base record), so the answer never depends on message times or date partitions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from archiver.errors import StoreError, UsageError
from archiver.format import layout
from archiver.format.fence import Link, read_base, read_marker
from archiver.format.layout import FileName, GapName, MarkerName
from archiver.store.base import Store


@dataclass(frozen=True, slots=True)
class DataFile:
    key: str
    name: FileName
    size: int


@dataclass(slots=True)
class Generation:
    """One generation of a stream as the fence says: what counts and what does not."""

    name: str
    files: list[DataFile] = field(default_factory=list)
    """Committed data files, in seq order."""
    records: list[GapName] = field(default_factory=list)
    """Gap records that count: committed links, records from before the fence, and the
    ``-inside`` records of committed files."""
    end: int = 0
    """The highest seq the committed chain accounts for: the next run resumes after it."""
    missing: list[Link] = field(default_factory=list)
    """Committed links whose object is gone from the store (healable while the server
    still holds their seqs)."""
    orphans: list[str] = field(default_factory=list)
    """Objects no marker commits: left by runs that lost the fence or crashed between
    writing an object and its marker. Ignored by every reader."""
    fenced: bool = False
    """The generation has a base record (its new links carry markers)."""
    finished: int = 0
    """Where the generation's last finished run stopped (its run records): everything up
    to here was archived once, whatever is in the store now."""
    continues: str | None = None
    """The older generation runs archive this one into (see ``fence.Base``)."""

    @property
    def last_file(self) -> DataFile | None:
        return self.files[-1] if self.files else None


@dataclass(slots=True)
class _Listed:
    files: list[DataFile] = field(default_factory=list)
    records: list[GapName] = field(default_factory=list)
    markers: list[MarkerName] = field(default_factory=list)
    base: bool = False
    finished: int = 0


def read_stream(store: Store, stream: str) -> dict[str, Generation]:
    """Every generation of the stream that left objects, by generation id (sorted)."""
    listed: dict[str, _Listed] = defaultdict(_Listed)
    for obj in store.list(layout.stream_prefix(stream)):
        if (f := layout.parse_data_key(obj.key)) is not None and f.stream == stream:
            listed[f.generation].files.append(DataFile(obj.key, f, obj.size))
        elif (g := layout.parse_gap_key(obj.key)) is not None and g.stream == stream:
            listed[g.generation].records.append(g)
        elif (m := layout.parse_marker_key(obj.key)) is not None and m.stream == stream:
            if m.first_seq is None:
                listed[m.generation].base = True
            else:
                listed[m.generation].markers.append(m)
        elif (r := layout.parse_run_key(obj.key)) is not None and r.stream == stream:
            run = listed[r.generation]
            run.finished = max(run.finished, r.last_seq)
    return {gen: _resolve(store, stream, gen, listed[gen]) for gen in sorted(listed)}


def _resolve(store: Store, stream: str, gen: str, listed: _Listed) -> Generation:
    out = Generation(gen, fenced=listed.base or bool(listed.markers), finished=listed.finished)
    links = [r for r in listed.records if not r.inside]
    if not out.fenced:
        # Written wholly before the fence: everything counts, as it always did.
        out.files = sorted(listed.files, key=lambda f: f.name.first_seq)
        out.records = listed.records
        out.end = max([f.name.last_seq for f in out.files] + [r.last_seq for r in links] + [0])
        return out
    recorded = read_base(store, layout.base_key(stream, gen)) if listed.base else None
    base = recorded.fenced_after if recorded else 0
    out.continues = recorded.continues if recorded else None
    # Objects by seq range; a range with more than one (a run that lost the fence left
    # its own) is decided by reading the marker.
    by_range: dict[tuple[int, int], list[str]] = defaultdict(list)
    for r in links:
        by_range[(r.first_seq, r.last_seq)].append(r.key)
    for f in listed.files:
        by_range[(f.name.first_seq, f.name.last_seq)].append(f.key)
    present = {f.key for f in listed.files} | {r.key for r in links}
    # Below the base, unmarked objects count: they were written before the fence.
    committed = {f.key for f in listed.files if f.name.last_seq <= base}
    committed |= {r.key for r in links if r.last_seq <= base}
    firsts = sorted(m.first_seq for m in listed.markers if m.first_seq is not None)
    out.end = base
    for i, first in enumerate(firsts):
        same = by_range.get((first, firsts[i + 1] - 1), []) if i + 1 < len(firsts) else []
        if len(same) == 1:
            # A link ends where the next one starts: its key name says which object.
            committed.add(same[0])
            continue
        link = read_marker(store, layout.marker_key(stream, gen, first))
        out.end = max(out.end, link.last_seq)
        if link.key in present:
            committed.add(link.key)
        else:
            out.missing.append(link)
    out.files = sorted(
        (f for f in listed.files if f.key in committed), key=lambda f: f.name.first_seq
    )
    file_ranges = {(f.name.first_seq, f.name.last_seq) for f in out.files}
    for r in listed.records:
        counts = (r.first_seq, r.last_seq) in file_ranges if r.inside else r.key in committed
        if counts:
            out.records.append(r)
        else:
            out.orphans.append(r.key)
    out.orphans += [f.key for f in listed.files if f.key not in committed]
    return out


def data_files(store: Store, stream: str) -> list[DataFile]:
    """Every committed data file of the stream, by generation then sequence."""
    return [f for g in read_stream(store, stream).values() for f in g.files]


def generation(store: Store, stream: str, gen: str) -> Generation:
    """One generation (empty when it left no objects)."""
    return read_stream(store, stream).get(gen) or Generation(gen)


def archived_seq(store: Store, stream: str, gen: str) -> int:
    """The highest sequence this generation's archive accounts for (0: nothing yet)."""
    return generation(store, stream, gen).end


def choose_streams(store: Store, names: tuple[str, ...]) -> list[str]:
    """The archived streams a command covers: those named, each of which the archive
    must hold, or every stream in the archive."""
    known = streams_in_archive(store)
    if not known:
        raise StoreError(
            f"no archive at {store.describe()}",
            hint="check --store: it holds nothing the archiver wrote",
        )
    unknown = [s for s in names if s not in known]
    if unknown:
        raise UsageError(
            f"the archive holds no stream {', '.join(unknown)}",
            hint=f"streams in the archive: {', '.join(known) or 'none'}; check --store",
        )
    return list(names) or known


def streams_in_archive(store: Store) -> list[str]:
    """Streams the archiver wrote: a ``stream=`` folder holding only foreign objects
    (a file put there by hand) is not one."""
    names = []
    for prefix in store.list_dirs(""):
        part = prefix.rstrip("/")
        if part.startswith("stream=") and _holds_archive_objects(store, prefix):
            names.append(layout.unescape_name(part.removeprefix("stream=")))
    return names


def _holds_archive_objects(store: Store, prefix: str) -> bool:
    # Markers sort first under a stream: known at once, not after paging past them all.
    parsers = (
        layout.parse_marker_key,
        layout.parse_data_key,
        layout.parse_gap_key,
        layout.parse_run_key,
    )
    return any(any(p(o.key) for p in parsers) for o in store.list(prefix))


def run_records(store: Store, stream: str, generation: str) -> list[layout.RunName]:
    """The generation's run records: the seq range each finished run covered."""
    prefix = layout.run_prefix(stream) + f"g{generation}-"
    runs = (layout.parse_run_key(o.key) for o in store.list(prefix))
    return [r for r in runs if r is not None]
