"""``archiver ls``: the archive's files with what their footers say."""

from __future__ import annotations

from dataclasses import dataclass

from archiver.config import Settings
from archiver.errors import DataFileCorrupt
from archiver.format import catalog
from archiver.format.reader import read_footer
from archiver.render import table
from archiver.store import open_store


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
