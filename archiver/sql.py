"""``archiver sql``: SQL over the archive without setting anything up, local or S3.

DuckDB queries a ``messages`` view over the archive's Arrow dataset
(``archiver.format.dataset``): DuckDB's own S3 access would need an extension download
that air-gapped clusters cannot make, and credentials of its own. Filters on ``stream``,
``date``, ``seq`` and ``time`` are pushed down, so only what can match is read.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import duckdb

from archiver.config import Settings
from archiver.errors import StoreError, UsageError
from archiver.format import catalog
from archiver.format.dataset import archive_dataset
from archiver.render import EXIT_OK, table
from archiver.store import open_store


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def as_json(self) -> list[dict[str, object]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def text(self) -> str:
        return table(self.as_json(), self.columns)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def run_sql(settings: Settings, query: str, streams: tuple[str, ...]) -> QueryResult:
    """Run ``query`` against the view ``messages`` (of ``streams``, default all)."""
    store = open_store(settings.store_url, settings.s3)
    store.check()
    failures: list[StoreError] = []
    dataset = archive_dataset(store, catalog.choose_streams(store, streams), failures)
    con = duckdb.connect()
    try:
        con.register("messages", dataset)
        try:
            relation = con.sql(query)
            if relation is None:
                return QueryResult([], [])
            return QueryResult(list(relation.columns), relation.fetchall())
        except duckdb.Error as exc:
            if failures:  # the store failed under DuckDB: that is the error to report
                raise failures[0] from exc
            raise UsageError(
                f"SQL: {str(exc).splitlines()[0]}", hint="the view is messages"
            ) from exc
    finally:
        con.close()
