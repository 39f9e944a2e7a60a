"""How far behind the archive is, and how long until unarchived messages expire."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from archiver.archive.acknowledge import acknowledged_count, acknowledged_up_to, recorded_losses
from archiver.archive.generation import effective_generation
from archiver.archive.select import is_selected, select_streams
from archiver.config import Settings
from archiver.errors import stream_failure
from archiver.format.gaps import covered_count
from archiver.nats.api import StreamInfo, get_message, list_all_streams
from archiver.nats.conn import RawClient, connect
from archiver.render import EXIT_DATA, EXIT_OK, Rows, table
from archiver.store import Store, open_store

log = logging.getLogger(__name__)


class State(StrEnum):
    OK = "ok"
    AT_RISK = "at-risk"
    LOST = "lost"
    UNKNOWN = "unknown"
    """The stream's status could not be found out: ``error`` says why (exit 1)."""


@dataclass(slots=True)
class StreamStatus:
    stream: str
    first_seq: int
    last_seq: int
    archived_seq: int
    behind: int
    oldest_unarchived_age_s: float | None
    expires_in_s: float | None
    state: State
    generation: str
    lost: int
    """Messages recorded as expired before archiving, plus any expiring unarchived now."""
    acknowledged: int = 0
    """Of ``lost``, those an operator acknowledged (``archiver acknowledge``): the state
    is ``lost`` only while some are not."""
    error: str | None = None
    error_exit: int = 0

    @classmethod
    def failed(cls, info: StreamInfo, error: str, code: int) -> StreamStatus:
        """The row of a stream whose status could not be found out."""
        return cls(
            info.name,
            info.first_seq,
            info.last_seq,
            0,
            0,
            None,
            None,
            State.UNKNOWN,
            info.generation,
            0,
            0,
            error,
            code,
        )

    @property
    def exit_code(self) -> int:
        if self.state is State.UNKNOWN:
            return self.error_exit
        return EXIT_OK if self.state is State.OK else EXIT_DATA

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        out["state"] = str(self.state)
        del out["error_exit"]
        return out


@dataclass(slots=True)
class StatusReport(Rows[StreamStatus]):
    """What ``archiver status`` found: a row per stream."""

    streams: list[StreamStatus]
    COLUMNS = (
        "stream",
        "first_seq",
        "last_seq",
        "archived_seq",
        "behind",
        "oldest_unarchived_age_s",
        "expires_in_s",
        "state",
    )

    def text(self) -> str:
        rows = table(self.as_json(), self.COLUMNS)
        errors = [f"{s.stream}: {s.error}" for s in self.streams if s.error]
        return "\n".join([rows, *errors])


MAX_AUTO_MARGIN_S = 86_400.0


def auto_margin(info: StreamInfo) -> float:
    """The default at-risk margin: a quarter of the stream's max_age, at most a day.

    A fixed day would make every stream kept a day or less at-risk as soon as one message
    waits for the next hourly run; a quarter leaves an hourly job three chances on a
    4-hour stream and still a day's warning on a 7-day one.
    """
    if not info.max_age_ns:
        return MAX_AUTO_MARGIN_S
    return min(MAX_AUTO_MARGIN_S, info.max_age_ns / 1e9 / 4)


async def stream_status(
    nc: RawClient, store: Store, info: StreamInfo, margin_s: float | None
) -> StreamStatus:
    gen = await effective_generation(nc, store, info)
    archived = gen.end
    losses = await asyncio.to_thread(recorded_losses, store, gen)
    # Counted as a union: a loss seen by two runs (one whose file was never committed)
    # counts once.
    lost = covered_count(losses)
    up_to = await asyncio.to_thread(acknowledged_up_to, store, info.name, gen.name)
    acknowledged = acknowledged_count(losses, up_to)
    behind = max(0, info.last_seq - archived)
    age: float | None = None
    expires: float | None = None
    if behind:
        if archived and archived + 1 < info.first_seq and not info.needs_consumerless_read:
            # Unarchived messages are already gone; the next run records them. (Before a
            # generation's first run nothing was promised: see GapKind.BEFORE_ARCHIVE;
            # a WorkQueue or Interest stream's own consumers take messages by design:
            # GapKind.CONSUMED.)
            lost += info.first_seq - (archived + 1)
        oldest = await get_message(nc, info.name, max(archived + 1, info.first_seq), next_any=True)
        if oldest is not None:
            age = max(0.0, time.time() - oldest.time_ns / 1e9)
            if info.max_age_ns:
                expires = info.max_age_ns / 1e9 - age
    if lost > acknowledged:
        state = State.LOST
    elif expires is not None and expires < (auto_margin(info) if margin_s is None else margin_s):
        state = State.AT_RISK
    else:
        state = State.OK
    return StreamStatus(
        stream=info.name,
        first_seq=info.first_seq,
        last_seq=info.last_seq,
        archived_seq=archived,
        behind=behind,
        oldest_unarchived_age_s=None if age is None else round(age, 3),
        expires_in_s=None if expires is None else round(expires, 3),
        state=state,
        generation=gen.name,
        lost=lost,
        acknowledged=acknowledged,
    )


async def status(settings: Settings, skip_unavailable: bool = False) -> StatusReport:
    """Each selected stream's status. A stream the server cannot report on (its node is
    down) fails the whole call, unless ``skip_unavailable`` (after a run, which has
    reported those streams already)."""
    settings.nats.check()
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    nc = await connect(settings.nats)
    try:
        listing = await list_all_streams(nc)
        unavailable = [n for n in listing.unavailable if is_selected(n, settings)]
        if not skip_unavailable:
            replace(listing, unavailable=unavailable).all_available()
        infos = select_streams(listing.infos, settings, listing.unavailable)
        found = []
        for info in infos:
            try:
                found.append(await stream_status(nc, store, info, settings.at_risk_margin_s))
            except Exception as exc:
                found.append(StreamStatus.failed(info, *stream_failure(exc, info.name, log)))
        return StatusReport(found)
    finally:
        await nc.close()
