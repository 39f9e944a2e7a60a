"""``archiver restore``: rebuild streams from the archive alone, every message at its
original sequence number, their configuration and their durable consumers.

plan every stream (archive only) -> refuse what cannot be done before touching the
server -> per stream: prepare the target (create, or find where an interrupted restore
stopped) -> load the messages -> finish (archived configuration, consumers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from archiver.config import Settings
from archiver.errors import (
    ArchiverError,
    DataAtRisk,
    Interrupted,
    UnsafeActionRefused,
    UsageError,
    stream_failure,
)
from archiver.format import catalog
from archiver.nats.conn import RawClient, connect
from archiver.nats.options import NatsOptions, redact_url
from archiver.render import Rows, worst
from archiver.restore.config import Overrides
from archiver.restore.load import Loader
from archiver.restore.plan import StreamPlan, plan_stream, scan
from archiver.restore.target import assess, finish, prepare
from archiver.store import open_store
from archiver.store.base import Store
from archiver.timefmt import format_ns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreOptions:
    streams: tuple[str, ...] = ()
    """Archived streams to restore; empty: every one."""
    target: NatsOptions | None = None
    """None: the server of ``--nats-url``, which needs ``yes``."""
    as_of_ns: int | None = None
    renames: tuple[tuple[str, str], ...] = ()
    overrides: Overrides = field(default_factory=Overrides)
    consumers: bool = True
    dry_run: bool = False
    yes: bool = False
    allow_gaps: bool = False
    progress: bool = False

    def target_name(self, stream: str) -> str:
        return dict(self.renames).get(stream, stream)


@dataclass
class StreamRestore:
    stream: str
    target: str
    generation: str
    first_seq: int
    last_seq: int
    messages: int
    holes: int = 0
    consumers: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    continued: bool = False
    """An interrupted restore was continued (the target held an exact prefix)."""
    config_as_of: str | None = None
    """When the state record used was written; None: the data files' recorded config."""
    dropped: list[str] = field(default_factory=list)
    unexplained: list[list[int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    already_restored: bool = False
    """The target already held exactly what this restore puts there (a finished restore,
    or the very stream the archive was read from): nothing was done."""
    error: str | None = None
    error_exit: int = 0

    def as_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "error_exit"}

    @property
    def exit_code(self) -> int:
        if self.problems:
            return 2
        return max(self.error_exit, 3 if self.unexplained else 0)


class RestoreResult(Rows[StreamRestore]):
    COLUMNS = (
        "stream",
        "target",
        "first_seq",
        "last_seq",
        "messages",
        "holes",
        "consumers",
        "seconds",
    )

    def __init__(
        self, streams: list[StreamRestore], target_url: str, skipped: list[str] | None = None
    ) -> None:
        self.streams = streams
        self.target_url = target_url
        self.skipped = skipped or []
        """Archived streams with nothing to restore them from, left out of "every one"."""

    def text(self) -> str:
        lines = [f"restore into {self.target_url}", super().text()]
        for row in self.streams:
            if row.error:
                lines.append(f"{row.target}: FAILED: {row.error}")
            if row.continued:
                lines.append(f"{row.target}: continued an interrupted restore")
            if row.already_restored:
                lines.append(f"{row.target}: already holds exactly this restore; nothing done")
            if row.dropped:
                lines.append(f"{row.target}: not restored: {', '.join(row.dropped)}")
            if row.unexplained:
                shown = ", ".join(f"{a}-{b}" for a, b in row.unexplained[:5])
                lines.append(f"{row.target}: restored around seqs the archive lacks: {shown}")
            lines += [f"{row.target}: would stop: {p}" for p in row.problems]
        lines += [f"skipped {why}" for why in self.skipped]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return worst([row.exit_code for row in self.streams])


async def restore(settings: Settings, opts: RestoreOptions) -> RestoreResult:
    store = open_store(settings.store_url, settings.s3)
    await asyncio.to_thread(store.check)
    names = await asyncio.to_thread(catalog.choose_streams, store, opts.streams)
    plans, skipped = [], []
    for name in names:
        try:
            plans.append(
                await asyncio.to_thread(
                    plan_stream, store, name, opts.target_name(name), opts.as_of_ns, opts.overrides
                )
            )
        except UsageError as exc:
            if opts.streams:
                raise  # named, so expected: say why it cannot be
            skipped.append(f"{name} ({exc})")
    for plan in plans:
        if not opts.consumers and plan.config.get("retention") == "interest":
            # An Interest stream without consumers keeps nothing: the server would drop
            # every restored message the moment it turned Interest.
            plan.config["retention"] = "limits"
            plan.dropped.append("retention interest (kept limits: --no-consumers)")
    lacking = [p for p in plans if p.unexplained]
    if lacking and not opts.allow_gaps and not opts.dry_run:
        shown = "; ".join(
            f"{p.stream} seqs " + ", ".join(f"{a}-{b}" for a, b in p.unexplained[:3])
            for p in lacking
        )
        raise DataAtRisk(
            f"the archive cannot account for {shown} (a data file lost or deleted); "
            "nothing was restored",
            hint="run archiver verify; --allow-gaps restores around them",
        )
    target_opts = opts.target or settings.nats
    if opts.target is None and not opts.yes and not opts.dry_run:
        raise UnsafeActionRefused(
            "restore would write into the server the archive is read from (--nats-url)",
            hint="give --target-url for the server to rebuild, or --yes if it is this one",
        )
    target_opts.check()
    rows: list[StreamRestore] = []
    nc = await connect(target_opts)
    try:
        for plan in plans:
            try:
                rows.append(await _restore_stream(nc, store, plan, opts))
            except Interrupted:
                raise
            except ArchiverError as exc:
                # One stream's failure is reported with it; the others are still restored.
                rows.append(StreamRestore(plan.stream, plan.target, plan.generation, 0, 0, 0))
                rows[-1].error, rows[-1].error_exit = stream_failure(exc, plan.stream, log)
            except asyncio.CancelledError:
                done = ", ".join(r.target for r in rows) or "none"
                raise Interrupted(
                    f"stopped while restoring {plan.target} (streams finished: {done}); "
                    "nothing is at a wrong seq",
                    hint="run the same command again: it continues where this one stopped",
                ) from None
    finally:
        await nc.close()
    return RestoreResult(rows, redact_url(target_opts.url), skipped)


async def _restore_stream(
    nc: RawClient, store: Store, plan: StreamPlan, opts: RestoreOptions
) -> StreamRestore:
    started = time.monotonic()
    extent = await asyncio.to_thread(scan, store, plan)
    # A stream whose archive holds no message (all expired, say) still comes back, at
    # the seq the source would have given its next message, configured, with consumers.
    start, end = extent.start, extent.end
    row = StreamRestore(
        stream=plan.stream,
        target=plan.target,
        generation=plan.generation,
        first_seq=start,
        last_seq=end,
        messages=extent.count,
        holes=end - start + 1 - extent.count,
        consumers=len(plan.consumers) if opts.consumers else 0,
        dry_run=opts.dry_run,
        config_as_of=format_ns(plan.state_seen_ns) if plan.state_seen_ns else None,
        dropped=list(plan.dropped),
        unexplained=[[a, b] for a, b in plan.unexplained],
    )
    if opts.dry_run:
        found = await assess(nc, store, plan, extent)
        if found.action == "refuse":
            row.problems.append(found.why)
        if plan.unexplained and not opts.allow_gaps:
            row.problems.append("the archive cannot account for some seqs; --allow-gaps")
        return row
    target = await prepare(nc, store, plan, extent)
    row.continued, row.already_restored = target.continued, target.done
    row.dropped += [f"{key} (the target server does not know it)" for key in target.ignored]
    if not target.done:
        if not target.loaded:
            await Loader(nc, plan, extent, target.intake, opts.progress).load(store, target.after)
        row.consumers = await finish(nc, plan, extent, target, opts.consumers)
    row.seconds = round(time.monotonic() - started, 3)
    return row
