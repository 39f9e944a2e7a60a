"""Which streams a command covers: those named, or all but the excluded and our own."""

from __future__ import annotations

import fnmatch

from archiver.config import CHECKPOINT_BUCKET, Settings
from archiver.errors import (
    UsageError,
)
from archiver.nats.api import StreamInfo


def select_streams(
    all_infos: list[StreamInfo], settings: Settings, unavailable: list[str] | None = None
) -> list[StreamInfo]:
    """The streams a run covers: those named (all must exist), or all minus excluded.
    ``unavailable`` names exist too, but are left to the caller."""
    by_name = {i.name: i for i in all_infos}
    lease_stream = f"KV_{settings.lease_bucket}"
    if settings.streams:
        unknown = [s for s in settings.streams if s not in by_name and s not in (unavailable or [])]
        known = sorted(set(by_name) - {lease_stream})
        if unknown:
            raise UsageError(
                f"unknown stream {', '.join(unknown)}",
                hint=f"streams on the server: {', '.join(known) or 'none'}",
            )
        return [by_name[s] for s in settings.streams if s in by_name]
    return [i for i in all_infos if is_selected(i.name, settings, i)]


def is_selected(name: str, settings: Settings, info: StreamInfo | None = None) -> bool:
    if settings.streams:
        return name in settings.streams
    # The archiver's own state (leases, replay checkpoints, drills' scratch streams) is
    # not worth archiving: known by the mark it gives them (another deployment's lease
    # bucket has another name), and by the default names.
    if info is not None and info.made_by_archiver:
        return False
    exclude = (
        *settings.exclude,
        f"KV_{settings.lease_bucket}",
        f"KV_{CHECKPOINT_BUCKET}",
        "DRILL_*",
    )
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)
