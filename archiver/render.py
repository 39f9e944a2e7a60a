"""How results show themselves: every command's result is a ``Result``.

``--json`` prints ``as_json()``, one JSON document, always an array of objects (one per
stream, file or replay); without it, ``text()`` is for people. ``exit_code`` is the
worst of the result's parts, by the contract's codes. Commands print and exit; they do
not format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

EXIT_OK, EXIT_ERROR, EXIT_DATA = 0, 1, 3


class Result(Protocol):
    """What a command returns."""

    def as_json(self) -> list[dict[str, object]]: ...

    def text(self) -> str: ...

    @property
    def exit_code(self) -> int: ...


def to_json(result: Result) -> str:
    return json.dumps(result.as_json(), indent=2, default=str)


def table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """Rows as aligned columns under upper-case headings; ``-`` for nothing."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def worst(codes: Sequence[int]) -> int:
    """The exit code of several outcomes: data at risk (3) over errors (1) over success."""
    return max(codes, default=EXIT_OK)


class Row(Protocol):
    """One stream's part of a result."""

    def as_json(self) -> dict[str, object]: ...

    @property
    def exit_code(self) -> int: ...


R = TypeVar("R", bound=Row)


class Rows(Generic[R]):
    """A result made of one row per stream: iterable, sized and indexable like its list;
    JSON is the rows', text a table of ``COLUMNS``, the exit code the worst row's."""

    __slots__ = ()
    streams: list[R]
    COLUMNS: tuple[str, ...] = ()

    def as_json(self) -> list[dict[str, object]]:
        return [row.as_json() for row in self.streams]

    def text(self) -> str:
        return table(self.as_json(), self.COLUMNS)

    @property
    def exit_code(self) -> int:
        return worst([row.exit_code for row in self.streams])

    def __iter__(self) -> Iterator[R]:
        return iter(self.streams)

    def __len__(self) -> int:
        return len(self.streams)

    def __getitem__(self, index: int) -> R:
        return self.streams[index]
