"""A small SVG chart of archive coverage: files per hour and gaps, one row per stream.

SVG is text, needs no plotting library, and opens in any browser or Markdown viewer.
Footers are read by byte range, so the chart costs a few requests per file.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape

import zstandard

from archiver.errors import DataFileCorrupt
from archiver.format import catalog
from archiver.format.reader import read_footer
from archiver.store import Store

HOUR_NS = 3600 * 1_000_000_000
MAX_HOURS = 7 * 24
ROW, BAR_W, LEFT, TOP = 70, 5, 150, 30
TITLE_WIDTH = 480


def _hours(store: Store, stream: str) -> tuple[Counter[int], Counter[int]]:
    """Files per hour (by their last message) and gap records per hour recorded, over
    the last ``MAX_HOURS`` the chart draws: only the footers of files whose day can be
    drawn are read (years of hourly files would be a ranged GET each)."""
    found = catalog.read_stream(store, stream).values()
    files = [f for g in found for f in g.files]
    newest = max((f.name.day for f in files), default=None)
    files_per_hour: Counter[int] = Counter()
    for f in files:
        if newest is not None and (newest - f.name.day).days > MAX_HOURS // 24 + 1:
            continue
        try:
            last = int(read_footer(store, f).get("last_time_ns", 0) or 0)
        except DataFileCorrupt:
            continue  # the drill's verify step reports it; the chart shows what is readable
        if last:
            files_per_hour[last // HOUR_NS] += 1
    gaps: Counter[int] = Counter()
    for name in (r for g in found for r in g.records):
        try:
            body = json.loads(zstandard.ZstdDecompressor().decompress(store.get_bytes(name.key)))
        except (ValueError, zstandard.ZstdError):
            continue
        gaps[int(body.get("recorded_at", 0) * 1e9) // HOUR_NS] += 1
    return files_per_hour, gaps


def coverage_svg(store: Store, streams: list[str]) -> str:
    per_stream = {s: _hours(store, s) for s in streams}
    all_hours = [h for files, gaps in per_stream.values() for h in (*files, *gaps)]
    end = max(all_hours, default=0)
    start = max(min(all_hours, default=0), end - MAX_HOURS + 1)
    # Wide enough for the title too (it was clipped on a chart of a few hours).
    width = max(LEFT + (end - start + 1) * BAR_W + 20, TITLE_WIDTH)
    height = TOP + ROW * len(streams) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="13">Archive coverage per hour '
        f"(blue: files, red: gaps recorded), last {end - start + 1} h</text>",
    ]
    for row, stream in enumerate(streams):
        files, gaps = per_stream[stream]
        base = TOP + ROW * (row + 1) - 10
        peak = max(files.values(), default=1)
        out.append(f'<text x="10" y="{base - 20}">{escape(stream)}</text>')
        out.append(f'<line x1="{LEFT}" y1="{base}" x2="{width - 20}" y2="{base}" stroke="#999"/>')
        for hour in range(start, end + 1):
            x = LEFT + (hour - start) * BAR_W
            if files[hour]:
                h = max(2, round(40 * files[hour] / peak))
                out.append(
                    f'<rect x="{x}" y="{base - h}" width="{BAR_W - 1}" height="{h}" '
                    f'fill="#3b7dd8"><title>{files[hour]} file(s)</title></rect>'
                )
            if gaps[hour]:
                out.append(
                    f'<rect x="{x}" y="{base + 2}" width="{BAR_W - 1}" height="8" '
                    f'fill="#d83b3b"><title>{gaps[hour]} gap record(s)</title></rect>'
                )
    out.append("</svg>")
    return "\n".join(out) + "\n"
