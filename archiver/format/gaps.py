"""Sequences the archive does not hold, and why: found while reading, kept as records.

Every sequence of a generation ends up either in a data file or in a gap record, so
``verify`` can tell "deleted in NATS" and "expired before archiving" from "missing".
NATS keeps no reason for a missing sequence; what we can know is its position: below
the stream's current first sequence it was removed from the head (age or limits, and
if we had not archived it, it is lost); above, it was deleted inside the stream.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import zstandard

from archiver.format import layout


class GapKind(StrEnum):
    EXPIRED = "expired"
    """Removed from the head of the stream before it was archived: lost."""
    DELETED = "deleted"
    """Deleted inside the stream (delete API, per-subject limits, TTL): not ours to keep."""
    BEFORE_ARCHIVE = "before-archive"
    """Gone before this generation's first run: the archive never promised it."""
    CONSUMED = "consumed"
    """Taken by a consumer of a WorkQueue or Interest stream before it was archived: such
    streams remove messages by design, so this is reported but not an alarm."""


@dataclass(frozen=True, slots=True)
class Gap:
    first_seq: int
    last_seq: int
    kind: GapKind

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


def classify(
    first_seq: int, last_seq: int, *, head_now: int, head_at_first_run: int, removed: GapKind
) -> list[Gap]:
    """Split the hole ``[first_seq, last_seq]`` by why its messages are gone.

    Below ``head_at_first_run`` (0 unless this is the generation's first run) they were
    gone before the archive began; below ``head_now`` (the stream's current first
    sequence) they were removed from the head (``removed``: expired, or consumed); above
    it they were deleted inside the stream.
    """
    bounds = [
        (first_seq, min(last_seq, head_at_first_run - 1), GapKind.BEFORE_ARCHIVE),
        (max(first_seq, head_at_first_run), min(last_seq, head_now - 1), removed),
        (max(first_seq, head_now, head_at_first_run), last_seq, GapKind.DELETED),
    ]
    return [Gap(a, b, kind) for a, b, kind in bounds if a <= b]


def lost_count(gaps: list[Gap]) -> int:
    return sum(g.count for g in gaps if g.kind is GapKind.EXPIRED)


def covered_count(gaps: list[Gap]) -> int:
    """How many seqs the gaps cover together (overlaps counted once)."""
    total, reach = 0, 0
    for g in sorted(gaps, key=lambda g: g.first_seq):
        if g.last_seq > reach:
            total += g.last_seq - max(g.first_seq, reach + 1) + 1
            reach = g.last_seq
    return total


def encode_record(
    stream: str, generation: str, gaps: list[Gap], inside: tuple[int, int] | None = None
) -> tuple[str, bytes]:
    """The key and zstd JSON body of a gap record covering ``gaps`` (in order), or with
    ``inside`` the ``(first_seq, last_seq)`` of the data file whose losses it holds."""
    body: dict[str, Any] = {
        "stream": stream,
        "generation": generation,
        "recorded_at": time.time(),
        "lost": lost_count(gaps),
        "gaps": [{**asdict(g), "kind": str(g.kind)} for g in gaps],
    }
    first, last = inside or (gaps[0].first_seq, gaps[-1].last_seq)
    key = layout.gap_key(stream, generation, first, last, body["lost"] > 0, inside is not None)
    return key, zstandard.ZstdCompressor().compress(json.dumps(body).encode())


def decode_record(data: bytes) -> list[Gap]:
    body = json.loads(zstandard.ZstdDecompressor().decompress(data))
    return [Gap(g["first_seq"], g["last_seq"], GapKind(g["kind"])) for g in body["gaps"]]
