"""Object keys of the archive: pure functions, the only place names are made or parsed.

    stream=<NAME>/date=<YYYY-MM-DD>/g<GEN>-<first_seq>-<last_seq>.parquet
    stream=<NAME>/_gaps/g<GEN>-<first_seq>-<last_seq>[-lost].json.zst
    stream=<NAME>/_gaps/g<GEN>-<first_seq>-<last_seq>-inside.json.zst
    stream=<NAME>/_runs/g<GEN>-<first_seq>-<last_seq>.json.zst
    stream=<NAME>/_commits/g<GEN>-<first_seq>.json
    stream=<NAME>/_commits/g<GEN>-base.json
    stream=<NAME>/_acks/g<GEN>-<up_to_seq>.json
    stream=<NAME>/_state/g<GEN>-<seen_at>.json.zst

A gap record ``-inside`` holds the losses inside the data file of the same generation
and range. A commit marker says which object holds the sequences from ``first_seq``
on; the base record says where a generation's markers begin (see
``archiver.format.fence``).

Sequences are zero-padded to 20 digits (the width of a uint64) so that a listing
returns files in sequence order. ``GEN`` is the stream's creation time
(``YYYYMMDDTHHMMSSffffffZ``): a stream deleted and recreated restarts sequences at 1
but gets a new creation time, so its files can never collide with the old ones, and
every archiver derives the same generation from the server without shared state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

SEQ_WIDTH = 20
_FILE_RE = re.compile(
    r"^stream=(?P<stream>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"g(?P<gen>\d{8}T\d{12}Z)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)
_GAP_RE = re.compile(
    r"^stream=(?P<stream>[^/]+)/_gaps/"
    r"g(?P<gen>\d{8}T\d{12}Z)-(?P<first>\d{20})-(?P<last>\d{20})(?P<suffix>-lost|-inside)?"
    r"\.json\.zst$"
)
_MARKER_RE = re.compile(
    r"^stream=(?P<stream>[^/]+)/_commits/g(?P<gen>\d{8}T\d{12}Z)-(?P<first>\d{20}|base)\.json$"
)


@dataclass(frozen=True, slots=True)
class FileName:
    """What a data file's key says about it."""

    stream: str
    day: date
    generation: str
    first_seq: int
    last_seq: int


_RUN_RE = re.compile(
    r"^stream=(?P<stream>[^/]+)/_runs/"
    r"g(?P<gen>\d{8}T\d{12}Z)-(?P<first>\d{20})-(?P<last>\d{20})\.json\.zst$"
)


@dataclass(frozen=True, slots=True)
class RunName:
    """A finished run's record: it archived up to ``last_seq`` (verify's end mark)."""

    stream: str
    generation: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class GapName:
    """What a gap record's key says about it."""

    stream: str
    generation: str
    first_seq: int
    last_seq: int
    lost: bool
    """The record holds messages that expired before they were archived."""
    inside: bool = False
    """The record holds the losses inside the data file of this range (not a link of
    the generation's chain: the file is)."""

    @property
    def key(self) -> str:
        return gap_key(
            self.stream, self.generation, self.first_seq, self.last_seq, self.lost, self.inside
        )


@dataclass(frozen=True, slots=True)
class MarkerName:
    """A commit marker's key: the link of ``generation`` that starts at ``first_seq``, or
    (``first_seq`` None) the generation's base record."""

    stream: str
    generation: str
    first_seq: int | None


def generation_of(created_ns: int) -> str:
    """The generation id of a stream created at ``created_ns`` (nanoseconds since epoch)."""
    secs, frac = divmod(created_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y%m%dT%H%M%S") + f"{frac // 1000:06d}Z"


def generation_created(generation: str) -> datetime:
    """When the generation's stream was created (the inverse of ``generation_of``)."""
    return datetime.strptime(generation, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


# What Hive escapes in a partition value (FileUtils.escapePathName), so that every
# engine that reads ``stream=`` as a Hive partition (DuckDB, polars, DataFusion, Spark,
# Trino, Athena) decodes it back to the NATS stream name. Names without these
# characters, every name the deployment uses, are unchanged.
_ESCAPED = frozenset("\"#%'*/:=?\\{[]^\x7f") | {chr(c) for c in range(1, 32)}
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def escape_name(stream: str) -> str:
    """A stream name as the ``stream=`` partition value: Hive's percent-escaping."""
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in stream)


def unescape_name(value: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(int(m[1], 16)), value)


def stream_prefix(stream: str) -> str:
    return f"stream={escape_name(stream)}/"


def date_prefix(stream: str, day: date) -> str:
    return f"{stream_prefix(stream)}date={day.isoformat()}/"


def data_key(stream: str, day: date, generation: str, first_seq: int, last_seq: int) -> str:
    return (
        f"{date_prefix(stream, day)}"
        f"g{generation}-{first_seq:0{SEQ_WIDTH}d}-{last_seq:0{SEQ_WIDTH}d}.parquet"
    )


def gap_prefix(stream: str) -> str:
    return f"{stream_prefix(stream)}_gaps/"


def gap_key(
    stream: str, generation: str, first_seq: int, last_seq: int, lost: bool, inside: bool = False
) -> str:
    suffix = "-inside" if inside else "-lost" if lost else ""
    return (
        f"{gap_prefix(stream)}"
        f"g{generation}-{first_seq:0{SEQ_WIDTH}d}-{last_seq:0{SEQ_WIDTH}d}{suffix}.json.zst"
    )


def parse_data_key(key: str) -> FileName | None:
    """Parse a data file key; None for anything that is not one (temp files, records)."""
    m = _FILE_RE.match(key)
    if not m:
        return None
    return FileName(
        stream=unescape_name(m["stream"]),
        day=date.fromisoformat(m["date"]),
        generation=m["gen"],
        first_seq=int(m["first"]),
        last_seq=int(m["last"]),
    )


def parse_gap_key(key: str) -> GapName | None:
    m = _GAP_RE.match(key)
    if not m:
        return None
    inside = m["suffix"] == "-inside"
    return GapName(
        unescape_name(m["stream"]),
        m["gen"],
        int(m["first"]),
        int(m["last"]),
        inside or bool(m["suffix"]),
        inside,
    )


def commit_prefix(stream: str) -> str:
    return f"{stream_prefix(stream)}_commits/"


def marker_key(stream: str, generation: str, first_seq: int) -> str:
    return f"{commit_prefix(stream)}g{generation}-{first_seq:0{SEQ_WIDTH}d}.json"


def base_key(stream: str, generation: str) -> str:
    return f"{commit_prefix(stream)}g{generation}-base.json"


def parse_marker_key(key: str) -> MarkerName | None:
    m = _MARKER_RE.match(key)
    if not m:
        return None
    first = None if m["first"] == "base" else int(m["first"])
    return MarkerName(unescape_name(m["stream"]), m["gen"], first)


def parse_date_prefix(prefix: str) -> date | None:
    """``stream=X/date=2026-01-02/`` -> date(2026, 1, 2)."""
    m = re.search(r"date=(\d{4}-\d{2}-\d{2})/?$", prefix)
    return date.fromisoformat(m[1]) if m else None


def run_prefix(stream: str) -> str:
    return f"{stream_prefix(stream)}_runs/"


def run_key(stream: str, generation: str, first_seq: int, last_seq: int) -> str:
    return (
        f"{run_prefix(stream)}"
        f"g{generation}-{first_seq:0{SEQ_WIDTH}d}-{last_seq:0{SEQ_WIDTH}d}.json.zst"
    )


def parse_run_key(key: str) -> RunName | None:
    m = _RUN_RE.match(key)
    if not m:
        return None
    return RunName(unescape_name(m["stream"]), m["gen"], int(m["first"]), int(m["last"]))


_ACK_RE = re.compile(
    r"^stream=(?P<stream>[^/]+)/_acks/g(?P<gen>\d{8}T\d{12}Z)-(?P<seq>\d{20})\.json$"
)


def ack_prefix(stream: str, generation: str) -> str:
    return f"{stream_prefix(stream)}_acks/g{generation}-"


def ack_key(stream: str, generation: str, up_to_seq: int) -> str:
    """An operator's acknowledgment of the generation's losses up to ``up_to_seq``."""
    return f"{ack_prefix(stream, generation)}{up_to_seq:0{SEQ_WIDTH}d}.json"


def parse_ack_key(key: str) -> tuple[str, str, int] | None:
    """``(stream, generation, up_to_seq)`` of an acknowledgment's key."""
    m = _ACK_RE.match(key)
    return (unescape_name(m["stream"]), m["gen"], int(m["seq"])) if m else None


def state_prefix(stream: str, generation: str) -> str:
    return f"{stream_prefix(stream)}_state/g{generation}-"


def state_key(stream: str, generation: str, seen_ns: int) -> str:
    """A state record: the stream's configuration and its consumers' configurations
    and positions as a run saw them at ``seen_ns`` (same form as a generation id)."""
    return f"{state_prefix(stream, generation)}{generation_of(seen_ns)}.json.zst"


_STATE_RE = re.compile(r"/_state/g(?P<gen>\d{8}T\d{12}Z)-(?P<seen>\d{8}T\d{12}Z)\.json\.zst$")


def parse_state_key(key: str) -> tuple[str, str] | None:
    """(generation, seen_at) of a state record's key."""
    m = _STATE_RE.search(key)
    return (m["gen"], m["seen"]) if m else None
