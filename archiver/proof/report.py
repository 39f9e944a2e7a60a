"""A drill's report files: JSON for machines, Markdown for people, an SVG chart beside them."""

from __future__ import annotations

import json
from pathlib import Path

from archiver.proof.coverage import coverage_svg
from archiver.proof.drill import DrillReport
from archiver.store import Store


def write_reports(report: DrillReport, store: Store, path: Path) -> list[Path]:
    """The file the user named, in the format its suffix says (JSON for ``.json``,
    Markdown otherwise), and the other forms beside it: JSON, Markdown, the SVG chart."""
    as_json = path.suffix == ".json"
    base = path.with_suffix("")
    json_path = path if as_json else base.with_suffix(".json")
    md_path = base.with_suffix(".md") if as_json else path
    svg_path = base.with_suffix(".svg")
    json_path.write_text(json.dumps(report.document(), indent=2))
    svg_path.write_text(coverage_svg(store, [s.stream for s in report.streams]))
    md_path.write_text(_markdown(report, svg_path.name))
    return [path, *(p for p in (json_path, md_path, svg_path) if p != path)]


def _markdown(report: DrillReport, chart: str) -> str:
    verdict = "PASSED" if report.ok else "FAILED"
    lines = [
        f"# Disaster-recovery drill: {verdict}",
        "",
        f"- Started {report.started_at}, finished {report.finished_at}",
        f"- Restored into scratch streams on {report.target}"
        + (f", messages since {report.since}" if report.since else ""),
        "",
        "| stream | archived | restored | matched | differences | RTO s | msgs/s | RPO s "
        "| live not archived | verify |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.streams:
        cells = [
            s.stream,
            s.archived,
            s.restored,
            s.matched,
            s.differences,
            s.rto_seconds,
            s.restore_msgs_per_s,
            _dash(s.rpo_seconds),
            _dash(s.live_not_archived),
            "ok" if not s.verify_problems else "PROBLEMS",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for s in report.streams:
        lines += [f"- {s.stream}: {note}" for note in s.notes()]
    lines += [
        "",
        f"![archive coverage per hour]({chart})",
        "",
        "RTO: time to restore the selection into a scratch stream. RPO: the time since the "
        "archive last held everything the live stream held (the age of the oldest message "
        "not archived yet; 0 when none); live not archived: messages the live stream holds "
        "beyond the archive.",
        "",
    ]
    return "\n".join(lines)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
