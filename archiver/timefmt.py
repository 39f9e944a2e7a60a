"""Times and durations as users and the NATS server write them."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RFC3339_NS_RE = re.compile(r"^(.*?T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def parse_duration(text: str) -> timedelta:
    """``90m``, ``36h``, ``7d``, ``30s``, ``1.5h`` -> timedelta. Raises ValueError."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90m, 36h, 7d)")
    return timedelta(seconds=float(m[1]) * _UNIT_SECONDS[m[2]])


def parse_rfc3339_ns(text: str) -> int:
    """An RFC 3339 time with up to nanoseconds -> integer nanoseconds since the epoch."""
    m = _RFC3339_NS_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    frac = (m[2] or "").ljust(9, "0")
    return int(base.timestamp()) * 1_000_000_000 + int(frac)


def format_ns(ns: int) -> str:
    """Integer nanoseconds -> ``2026-11-26T19:40:37.123456789Z``."""
    secs, frac = divmod(ns, 1_000_000_000)
    return f"{_second(secs)}.{frac:09d}Z"


@functools.lru_cache(maxsize=64)
def _second(secs: int) -> str:
    # Messages come a second at a time: replay formats each one's time, and the date
    # part costs as much as the rest of its header block.
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time_bound(text: str, now: datetime | None = None) -> int:
    """A ``--since``/``--until`` value: RFC 3339, or a duration meaning that long ago."""
    try:
        ago = parse_duration(text)
    except ValueError:
        return parse_rfc3339_ns(text)
    current = now or datetime.now(UTC)
    return int((current - ago).timestamp() * 1_000_000_000)
