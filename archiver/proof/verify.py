"""``archiver verify``: is the archive whole and intact, and is every hole explained?

Per stream and generation: every data file is read a batch of rows at a time (memory stays
flat) and checked against its own footer and its name: schema, page checksums, content
hash, row count, sequence range, rising sequences, times. Then files and gap records
must tile the sequence space: every sequence is in a file, explained inside a file's
footer, or explained by a gap record. Each hole is classified:

- ``deleted``: deleted in NATS (an interior delete the server had made when archived)
- ``expired``: removed from the stream before it was archived (lost; recorded by run)
- ``before-archive`` / ``consumed``: gone before the first run / taken by a WorkQueue
- ``missing``: in no file and no record: a file lost or damaged after it was committed
  (``healable`` in its detail when a commit marker names the lost file: the next
  ``archiver run`` archives those seqs again while the server still holds them)
- ``uncommitted``: an object no commit marker names, left by a run that lost the commit
  fence or died before its marker; ignored by every reader, safe to delete

Findings of kind ``damaged``, ``mismatch``, ``overlap`` and ``missing`` make exit 3.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from archiver.config import Settings
from archiver.errors import DataFileCorrupt, stream_failure
from archiver.format import catalog, layout
from archiver.format.catalog import DataFile
from archiver.format.digest import ContentHash
from archiver.format.gaps import Gap, GapKind, decode_record
from archiver.format.reader import OpenFile, open_file
from archiver.format.schema import check_schema
from archiver.proof.findings import Finding, StreamReport, VerifyReport
from archiver.store import Store, open_store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Covered:
    """What one intact file accounts for."""

    first_seq: int
    last_seq: int
    key: str
    inner_gaps: list[Gap]


def check_file(store: Store, f: DataFile) -> tuple[_Covered | None, list[Finding], int]:
    """Read one file completely; what it covers (None if unusable), findings, rows."""
    n = f.name

    def finding(kind: str, detail: str) -> Finding:
        return Finding(n.stream, n.generation, kind, n.first_seq, n.last_seq, f.key, detail)

    try:
        opened = open_file(store, f)
        meta = opened.footer()
        problems = check_schema(opened.schema)
        if problems:
            return None, [finding("damaged", "; ".join(problems))], 0
        digest, rows, seqs_ok, first, last, first_t, last_t, inner = _read_rows(opened)
    except DataFileCorrupt as exc:
        return None, [finding("damaged", f"unreadable: {str(exc)[:200]}")], 0
    wrong = []
    claims = {
        "stream": n.stream,
        "generation": n.generation,
        "first_seq": str(n.first_seq),
        "last_seq": str(n.last_seq),
        "rows": str(rows),
        "content_hash": digest,
        "first_time_ns": str(first_t),
        "last_time_ns": str(last_t),
    }
    for key, value in claims.items():
        if meta.get(key) != value:
            wrong.append(f"{key} is {meta.get(key)!r}, expected {value!r}")
    if (first, last) != (n.first_seq, n.last_seq):
        wrong.append(f"rows hold seq {first}..{last}, the name says {n.first_seq}..{n.last_seq}")
    if not seqs_ok:
        wrong.append("sequences do not rise")
    if wrong:
        kind = "damaged" if meta.get("content_hash") != digest else "mismatch"
        return None, [finding(kind, "; ".join(wrong))], rows
    try:
        declared = [Gap(a, b, GapKind(k)) for a, b, k in json.loads(meta.get("gaps", "[]"))]
    except (ValueError, TypeError) as exc:
        return None, [finding("damaged", f"unreadable gaps in the footer: {exc}")], rows
    findings = []
    undeclared = _subtract(inner, declared)
    for a, b in undeclared:
        findings.append(
            Finding(
                n.stream,
                n.generation,
                "missing",
                a,
                b,
                f.key,
                "a hole inside the file that its footer does not explain",
            )
        )
    return _Covered(n.first_seq, n.last_seq, f.key, declared), findings, rows


_Rows = tuple[str, int, bool, int, int, int, int, list[tuple[int, int]]]


def _read_rows(opened: OpenFile) -> _Rows:
    """Hash every row; check that sequences rise; list the holes between them.

    The hash runs on a second thread, one batch behind the reading: sha256 and
    Parquet decoding both release the GIL, so the two cores share a file's work.
    """
    digest = ContentHash()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-hash") as hasher:
        return _scan_rows(opened, digest, hasher)


def _scan_rows(opened: OpenFile, digest: ContentHash, hasher: ThreadPoolExecutor) -> _Rows:
    hashing: Future[None] | None = None  # one batch in flight: memory stays flat
    rows, rising = 0, True
    first = last = first_t = last_t = -1
    holes: list[tuple[int, int]] = []
    for table in opened.batches():
        if hashing is not None:
            hashing.result()
        hashing = hasher.submit(digest.update, table)
        rows += table.num_rows
        if not table.num_rows:
            continue
        seqs = pc.cast(table.column("seq").combine_chunks(), pa.int64())
        times = table.column("time_ns")
        head, tail = seqs[0].as_py(), seqs[-1].as_py()
        if first < 0:
            first, first_t = head, times[0].as_py()
        elif head <= last:
            rising = False
        elif head > last + 1:
            holes.append((last + 1, head - 1))
        if len(seqs) > 1:
            steps = pc.subtract(seqs[1:], seqs[:-1])
            if pc.min(steps).as_py() <= 0:
                rising = False
            for i in pc.indices_nonzero(pc.greater(steps, 1)).to_pylist():
                holes.append((seqs[i].as_py() + 1, seqs[i + 1].as_py() - 1))
        last, last_t = tail, times[-1].as_py()
    if hashing is not None:
        hashing.result()
    return digest.hexdigest(), rows, rising, first, last, first_t, last_t, holes


def _subtract(holes: list[tuple[int, int]], gaps: list[Gap]) -> list[tuple[int, int]]:
    """The parts of ``holes`` no gap covers."""
    out = []
    for a, b in holes:
        cursor = a
        for g in sorted(gaps, key=lambda g: g.first_seq):
            if g.last_seq < cursor or g.first_seq > b:
                continue
            if g.first_seq > cursor:
                out.append((cursor, g.first_seq - 1))
            cursor = max(cursor, g.last_seq + 1)
        if cursor <= b:
            out.append((cursor, b))
    return out


def _records(store: Store, gen: catalog.Generation) -> Iterator[tuple[str, list[Gap] | None]]:
    for name in gen.records:
        try:
            yield name.key, decode_record(store.get_bytes(name.key))
        except (ValueError, KeyError, zstandard.ZstdError):
            yield name.key, None


def verify_generation(
    store: Store,
    stream: str,
    gen: catalog.Generation,
    retention_s: float | None = None,
    now: datetime | None = None,
) -> StreamReport:
    generation, files = gen.name, gen.files
    report = StreamReport(stream, generation)
    spans: list[tuple[int, int, str, str | None, str]] = []  # first, last, kind, key, detail
    held: list[tuple[int, int, str]] = []  # seq ranges files hold rows for, and the file
    recorded: list[tuple[Gap, str]] = []  # gaps from gap records, and the record
    for f in sorted(files, key=lambda f: (f.name.first_seq, f.name.last_seq)):
        covered, findings, rows = check_file(store, f)
        report.findings += findings
        report.files += 1
        report.rows += rows
        if covered is not None:
            spans.append((covered.first_seq, covered.last_seq, "file", covered.key, ""))
            spans += [
                (g.first_seq, g.last_seq, str(g.kind), covered.key, "inside the file")
                for g in covered.inner_gaps
            ]
            held += [
                (a, b, covered.key)
                for a, b in _subtract([(covered.first_seq, covered.last_seq)], covered.inner_gaps)
            ]
    for key, gaps in _records(store, gen):
        if gaps is None:
            name = layout.parse_gap_key(key)
            assert name is not None
            report.add("damaged", name.first_seq, name.last_seq, key, "unreadable gap record")
            continue
        spans += [(g.first_seq, g.last_seq, str(g.kind), key, "gap record") for g in gaps]
        recorded += [(g, key) for g in gaps]
    _tile(report, spans, max(gen.end, gen.finished))
    _records_over_rows(report, held, recorded)
    _healable(report, gen)
    for key in gen.orphans:
        orphan = layout.parse_data_key(key) or layout.parse_gap_key(key)
        assert orphan is not None
        report.add(
            "uncommitted",
            orphan.first_seq,
            orphan.last_seq,
            key,
            "no commit marker names it (a run lost the commit fence or died before its "
            "marker): ignored, safe to delete",
        )
    if retention_s is not None:
        runs = catalog.run_records(store, stream, generation)
        _retire_expired_head(report, runs, retention_s, now or datetime.now(UTC))
    return report


def _healable(report: StreamReport, gen: catalog.Generation) -> None:
    """Say which missing seqs the next run archives again: those of committed data
    files that are gone from the store (their markers still say where they belong)."""
    lost_files = [m for m in gen.missing if layout.parse_data_key(m.key) is not None]
    for i, f in enumerate(report.findings):
        if f.kind != "missing":
            continue
        for m in lost_files:
            if m.first_seq <= f.last_seq and f.first_seq <= m.last_seq:
                report.findings[i] = replace(
                    f,
                    key=m.key,
                    detail=f"committed file {m.key} is gone from the store; healable: the "
                    "next archiver run archives these seqs again while the server holds them",
                )
                break


def _retire_expired_head(
    report: StreamReport, runs: list[layout.RunName], retention_s: float, now: datetime
) -> None:
    """The store's lifecycle rule removes old objects: files, gap and run records alike,
    oldest first, so what remains starts with a hole at seq 1. That hole is the rule's
    work, not a loss, when (a) the generation is older than the retention, so the rule
    could have removed something, and (b) no run record covers any of it: a run writes
    its record after its files, so the rule removes the record with them or soon after,
    while a file lost any other way leaves its run's record behind."""
    if now - layout.generation_created(report.generation) < timedelta(seconds=retention_s):
        return
    for i, f in enumerate(report.findings):
        if f.kind != "missing" or f.first_seq != 1:
            continue
        if any(r.first_seq <= f.last_seq for r in runs):
            return
        days = round(retention_s / 86_400)
        report.findings[i] = replace(
            f,
            kind="retired",
            detail=f"removed by the {days}-day retention: the generation is older, and no "
            "run record covers these seqs any more",
        )
        return


def _records_over_rows(
    report: StreamReport, held: list[tuple[int, int, str]], recorded: list[tuple[Gap, str]]
) -> None:
    """A gap record that says a seq was never archived while a file holds its row: one
    of the two is wrong (a record written for the wrong range, a file from elsewhere)."""
    held.sort()
    starts = [a for a, _, _ in held]
    for gap, key in recorded:
        # Held ranges do not overlap each other unless files do (reported as overlap),
        # so the ones that can meet this gap start before its end.
        i = max(bisect.bisect_right(starts, gap.last_seq) - 1, 0)
        while i >= 0 and i < len(held):
            a, b, file_key = held[i]
            if b < gap.first_seq:
                break
            if a <= gap.last_seq:
                report.add(
                    "overlap",
                    max(a, gap.first_seq),
                    min(b, gap.last_seq),
                    key,
                    f"gap record says {gap.kind}, but {file_key} holds these seqs",
                )
            i -= 1


def _tile(
    report: StreamReport, spans: list[tuple[int, int, str, str | None, str]], end: int
) -> None:
    """Walk the spans in order: report holes (missing), overlaps, and explained gaps;
    everything up to ``end`` (where the last finished run stopped) must be covered."""
    expected = 1
    files_end = 0
    last_file_key: str | None = None
    for first, last, kind, key, detail in sorted(spans, key=lambda s: (s[0], s[1])):
        if first > expected:
            report.add("missing", expected, first - 1, None, "in no file and no gap record")
        if kind == "file":
            if first <= files_end:
                report.add("overlap", first, min(last, files_end), key, f"also in {last_file_key}")
            files_end = max(files_end, last)
            last_file_key = key
            report.first_seq = report.first_seq or first
            report.last_seq = max(report.last_seq, last)
        else:
            report.add(kind, first, last, key, detail)
        expected = max(expected, last + 1)
    if expected <= end:
        report.add("missing", expected, end, None, "archived by a finished run, now in no file")


def verify(settings: Settings, streams: tuple[str, ...]) -> VerifyReport:
    """Verify the named streams (default: every stream in the archive)."""
    store = open_store(settings.store_url, settings.s3)
    store.check()
    reports = []
    for stream in catalog.choose_streams(store, streams):
        try:
            reports += verify_stream(store, stream, settings.retention_s)
        except Exception as exc:
            failed = StreamReport(stream, "")
            failed.error, failed.error_exit = stream_failure(exc, stream, log)
            reports.append(failed)
    return VerifyReport(reports)


def verify_stream(store: Store, stream: str, retention_s: float | None) -> list[StreamReport]:
    """A report per generation of the stream."""
    generations = [
        g
        for g in catalog.read_stream(store, stream).values()
        if g.files or g.records or g.end or g.finished or g.orphans
    ]
    if not generations:
        report = StreamReport(stream, "")
        report.add("missing", 1, 1, None, "no files at all")
        return [report]
    return [verify_generation(store, stream, g, retention_s) for g in generations]
