"""``archiver ls``: the archive's files with what their footers say."""

from __future__ import annotations

import pyarrow.parquet as pq

from archiver import catalog
from archiver.config import Settings
from archiver.segment import META_PREFIX
from archiver.store import Store, open_store
from archiver.store.rangefile import RangeFile


def list_files(settings: Settings, streams: tuple[str, ...]) -> list[dict[str, object]]:
    """One row per data file, in stream and key order; footers read by byte range."""
    store = open_store(settings.store_url, settings.s3)
    store.check()
    rows: list[dict[str, object]] = []
    for stream in streams or tuple(catalog.streams_in_archive(store)):
        for f in catalog.data_files(store, stream):
            meta = read_footer(store, f.key, f.size)
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
    return rows


def read_footer(store: Store, key: str, size: int) -> dict[str, str]:
    """A data file's ``archiver.*`` metadata (prefix stripped), read by byte range."""
    try:
        raw = pq.ParquetFile(RangeFile(store, key, size)).metadata.metadata or {}
    except (OSError, ValueError) as exc:
        # A damaged file is listed, not fatal: verify is the tool that judges it.
        return {"rows": "-1", "first_time": f"unreadable: {str(exc)[:60]}"}
    out = {}
    for k, v in raw.items():
        name = k.decode()
        if name.startswith(META_PREFIX):
            out[name.removeprefix(META_PREFIX)] = v.decode()
    return out
