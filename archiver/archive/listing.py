"""``archiver ls``: the archive's files with what their footers say, or (``--state``)
its state records: each stream's configuration and consumers as runs saw them."""

from __future__ import annotations

from dataclasses import dataclass

from archiver.archive.state import read_state
from archiver.config import Settings
from archiver.errors import DataFileCorrupt
from archiver.format import catalog, layout
from archiver.format.reader import read_footer
from archiver.render import table
from archiver.store import open_store
from archiver.timefmt import format_ns


@dataclass(slots=True)
class Listing:
    """What ``archiver ls`` found: a row per data file."""

    files: list[dict[str, object]]
    COLUMNS = ("stream", "key", "first_seq", "last_seq", "rows", "bytes", "first_time", "last_time")

    def as_json(self) -> list[dict[str, object]]:
        return self.files

    def text(self) -> str:
        return table(self.files, self.COLUMNS)

    @property
    def exit_code(self) -> int:
        return 0


def list_files(settings: Settings, streams: tuple[str, ...]) -> Listing:
    """One row per data file, in stream and key order; footers read by byte range."""
    store = open_store(settings.store_url, settings.s3)
    store.check()
    rows: list[dict[str, object]] = []
    for stream in catalog.choose_streams(store, streams):
        for f in catalog.data_files(store, stream):
            try:
                meta = read_footer(store, f)
            except DataFileCorrupt as exc:
                # A damaged file is listed, not fatal: verify is the tool that judges it.
                meta = {"rows": "-1", "first_time": f"unreadable: {str(exc)[:60]}"}
            rows.append(
                {
                    "stream": stream,
                    "key": f.key,
                    "generation": f.name.generation,
                    "first_seq": f.name.first_seq,
                    "last_seq": f.name.last_seq,
                    "rows": int(meta.get("rows", -1)),
                    "bytes": f.size,
                    "first_time": meta.get("first_time"),
                    "last_time": meta.get("last_time"),
                }
            )
    return Listing(rows)


@dataclass(slots=True)
class StateListing:
    """What ``archiver ls --state`` found: a row per state record, oldest first."""

    records: list[dict[str, object]]
    COLUMNS = ("stream", "generation", "seen_at", "consumers")

    def as_json(self) -> list[dict[str, object]]:
        return self.records

    def text(self) -> str:
        rows = [
            {
                **r,
                "consumers": ", ".join(
                    f"{c['name']} (acked {c['ack_floor_stream_seq']}, "
                    f"delivered {c['delivered_stream_seq']})"
                    for c in r["consumers"]  # type: ignore[attr-defined]
                )
                or "-",
            }
            for r in self.records
        ]
        return table(rows, self.COLUMNS)

    @property
    def exit_code(self) -> int:
        return 0


def list_states(settings: Settings, streams: tuple[str, ...]) -> StateListing:
    """Every state record of the streams (default all), oldest first per generation."""
    store = open_store(settings.store_url, settings.s3)
    store.check()
    rows: list[dict[str, object]] = []
    for stream in catalog.choose_streams(store, streams):
        for gen in catalog.read_stream(store, stream):
            for key in sorted(o.key for o in store.list(layout.state_prefix(stream, gen))):
                body = read_state(store, key)
                rows.append(
                    {
                        "stream": stream,
                        "generation": gen,
                        "seen_at": format_ns(int(body.get("seen_at_ns", 0))),
                        "consumers": body.get("consumers", []),
                        "config": body.get("config", {}),
                        "key": key,
                    }
                )
    return StateListing(rows)
