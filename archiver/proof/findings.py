"""What ``verify`` (and ``--against-nats``) found: findings per stream and generation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from archiver.render import EXIT_DATA, EXIT_OK, Rows

PROBLEMS = ("damaged", "mismatch", "overlap", "missing", "differs")
"""Finding kinds that mean the archive is not whole (exit 3)."""


@dataclass(frozen=True, slots=True)
class Finding:
    stream: str
    generation: str
    kind: str
    first_seq: int
    last_seq: int
    key: str | None = None
    detail: str = ""

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass
class StreamReport:
    stream: str
    generation: str
    files: int = 0
    rows: int = 0
    first_seq: int = 0
    last_seq: int = 0
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    """Why this stream could not be verified (then ``ok`` is false, exit 1)."""
    error_exit: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not any(f.kind in PROBLEMS for f in self.findings)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_exit
        return EXIT_OK if self.ok else EXIT_DATA

    def add(
        self, kind: str, first_seq: int, last_seq: int, key: str | None = None, detail: str = ""
    ) -> None:
        """Record a finding of this stream and generation."""
        self.findings.append(
            Finding(self.stream, self.generation, kind, first_seq, last_seq, key, detail)
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + (
                f.count if f.kind not in ("damaged", "mismatch") else 1
            )
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "stream": self.stream,
            "generation": self.generation,
            "ok": self.ok,
            "files": self.files,
            "rows": self.rows,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
            "error": self.error,
        }


@dataclass(slots=True)
class VerifyReport(Rows[StreamReport]):
    """Every stream's and generation's report; exit 3 when any is not whole."""

    streams: list[StreamReport]

    def text(self) -> str:
        lines = []
        for r in self.streams:
            if r.error:
                lines.append(f"{r.stream}: ERROR: {r.error}")
                continue
            state = "ok" if r.ok else "NOT WHOLE"
            counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts().items())) or "no gaps"
            lines.append(
                f"{r.stream} g{r.generation}: {state}: {r.files} files, {r.rows} rows, "
                f"seq {r.first_seq}..{r.last_seq}; {counts}"
            )
            lines += [
                f"  {f.kind} seq {f.first_seq}..{f.last_seq} {f.key or ''} {f.detail}"
                for f in r.findings
                if f.kind in PROBLEMS
            ]
        return "\n".join(lines)
