"""Messages as the archiver carries them: column lists, not one object per message.

A million live Python objects make the garbage collector dominate the run, so the reader
appends straight into parallel lists and the writer turns each batch into Arrow arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Batch:
    """Messages of one stream in sequence order, as parallel columns."""

    seqs: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    times_ns: list[int] = field(default_factory=list)
    raw_headers: list[bytes | None] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    """Header and payload bytes held, to bound memory."""

    def append(
        self, seq: int, subject: str, time_ns: int, raw_headers: bytes | None, data: bytes
    ) -> None:
        self.seqs.append(seq)
        self.subjects.append(subject)
        self.times_ns.append(time_ns)
        self.raw_headers.append(raw_headers)
        self.data.append(data)
        self.nbytes += len(data) + (len(raw_headers) if raw_headers else 0)

    def __len__(self) -> int:
        return len(self.seqs)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start`` up to (not including) ``stop`` as a new batch."""
        data = self.data[start:stop]
        raws = self.raw_headers[start:stop]
        return Batch(
            seqs=self.seqs[start:stop],
            subjects=self.subjects[start:stop],
            times_ns=self.times_ns[start:stop],
            raw_headers=raws,
            data=data,
            nbytes=sum(map(len, data)) + sum(len(r) for r in raws if r),
        )
