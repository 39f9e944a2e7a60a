"""The plan of a replay: counts per mapped subject and a size bound, without payloads."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.compute as pc

from archiver.format.catalog import DataFile
from archiver.format.reader import read_footer
from archiver.replay.headers import (
    fixed_growth,
    is_delete_marker,
    renamed_growth,
)
from archiver.replay.request import ReplayOptions
from archiver.replay.selection import iter_selected, select_files
from archiver.store import Store

log = logging.getLogger(__name__)

SAMPLE_SUBJECTS = 5


@dataclass
class Plan:
    generation: str
    files: list[DataFile]
    messages: int = 0
    skipped_markers: int = 0
    by_subject: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[str, str]] = field(default_factory=list)
    largest_bound: int = 0
    payload_bytes: int | None = None


def make_plan(store: Store, opts: ReplayOptions) -> Plan:
    """Counts per mapped subject and a size bound, reading subjects and headers only."""
    sel = opts.selection
    generation, files = select_files(store, sel)
    plan = Plan(generation, files)
    largest_payload = max(
        (int(read_footer(store, f).get("max_message_bytes", -1)) for f in files),
        default=0,
    )
    columns = ["seq", "subject", "raw_headers"] + (["data"] if opts.dry_run else [])
    payload_total = 0
    for table in iter_selected(store, files, sel, columns):
        subjects = table.column("subject").to_pylist()
        raws = table.column("raw_headers").to_pylist()
        for subject, raw in zip(subjects, raws, strict=True):
            if not opts.keeps_markers and raw and is_delete_marker(raw):
                plan.skipped_markers += 1
                continue
            mapped = opts.mapper.map(subject)
            if mapped not in plan.by_subject and len(plan.samples) < SAMPLE_SUBJECTS:
                plan.samples.append((subject, mapped))
            plan.by_subject[mapped] += 1
            plan.messages += 1
            plan.largest_bound = max(plan.largest_bound, renamed_growth(raw) if raw else 0)
        if opts.dry_run:
            payload_total += pc.sum(pc.binary_length(table.column("data"))).as_py() or 0
    # Footers record the largest payload-plus-headers per file; add the most any header
    # block grows when rewritten for replay.
    plan.largest_bound += max(largest_payload, 0) + fixed_growth(sel.stream, generation)
    plan.payload_bytes = payload_total if opts.dry_run else None
    return plan


def exact_largest(store: Store, opts: ReplayOptions, plan: Plan) -> int:
    """The largest message of the selection itself, as it will be sent.

    The plan's bound comes from file footers, which count every message of a file; when
    that bound is over a target's limit, the selection's own messages decide (reading
    their payload lengths), so a large message elsewhere in a file refuses nothing.
    """
    largest = 0
    columns = ["seq", "subject", "raw_headers", "data"]
    for table in iter_selected(store, plan.files, opts.selection, columns):
        sizes = pc.binary_length(table.column("data")).to_pylist()
        raws = table.column("raw_headers").to_pylist()
        for size, raw in zip(sizes, raws, strict=True):
            if raw and not opts.keeps_markers and is_delete_marker(raw):
                continue
            largest = max(largest, size + (len(raw) + renamed_growth(raw) if raw else 0))
    return largest + fixed_growth(opts.selection.stream, plan.generation)
