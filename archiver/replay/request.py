"""What a replay is asked to do, and what it did."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from archiver.nats.options import NatsOptions
from archiver.replay.mapping import SubjectMapper
from archiver.replay.selection import Selection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    selection: Selection
    mapper: SubjectMapper = field(default_factory=SubjectMapper.identity)
    target: NatsOptions | None = None
    """None: the source server."""
    rate: float | None = None
    dry_run: bool = False
    yes: bool = False
    resume: bool = False
    seq_map: Path | None = None
    delete_markers: bool | None = None
    """Replay KV and object-store delete and purge markers; None: for ``KV_`` and
    ``OBJ_`` streams yes (without them deleted keys come back), for others no."""
    allow_gaps: bool = False
    """Replay what there is even where the archive cannot explain a hole."""
    window: int = 2000
    ack_timeout: float = 5.0
    progress: bool = False
    checkpoint: bool = True
    """False for drills: a scratch restore is never resumed, so it leaves no state."""
    bounds_text: str = ""
    """``--since``/``--until`` as typed: part of the replay's identity for --resume."""


    @property
    def keeps_markers(self) -> bool:
        if self.delete_markers is not None:
            return self.delete_markers
        return self.selection.stream.startswith(MARKER_STREAM_PREFIXES)


MARKER_STREAM_PREFIXES = ("KV_", "OBJ_")
"""Streams behind KV buckets and object stores, where a delete marker is data."""


SUBJECTS_SHOWN = 10
"""Subjects a dry run lists in text (the JSON has them all)."""


@dataclass
class ReplaySummary:
    stream: str
    generation: str
    target: str
    target_streams: list[str]
    matched: int
    published: int = 0
    duplicates: int = 0
    skipped: int = 0
    resumed_after_seq: int | None = None
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    by_subject: dict[str, int] = field(default_factory=dict)
    sample_subjects: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """A dry run's findings that would stop the real replay (then exit 2)."""
    unexplained: list[list[int]] = field(default_factory=list)
    """Seq ranges the archive cannot account for, replayed around (``--allow-gaps``)."""

    def as_json(self) -> list[dict[str, object]]:
        return [dict(self.__dict__)]

    def text(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        lines = [
            f"{self.stream} (generation {self.generation}) -> {self.target} "
            f"{', '.join(self.target_streams)}: {self.matched} matched, {verb} "
            f"{self.matched if self.dry_run else self.published}, "
            f"duplicates dropped {self.duplicates}, skipped {self.skipped}, "
            f"{self.bytes:,} payload bytes, {self.seconds:.1f}s"
        ]
        if self.dry_run:
            shown = list(self.by_subject.items())[:SUBJECTS_SHOWN]
            lines += [f"  {count:>10}  {subject}" for subject, count in shown]
            if len(self.by_subject) > SUBJECTS_SHOWN:
                lines.append(f"  ... and {len(self.by_subject) - SUBJECTS_SHOWN} more subjects")
            lines += [f"  e.g. {original} -> {mapped}" for original, mapped in self.sample_subjects]
            lines += [f"  would stop: {problem}" for problem in self.problems]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        """A replay that returns has published (or planned) everything it matched; a dry
        run that found what would stop the real one is a usage error."""
        return 2 if self.problems else 0
