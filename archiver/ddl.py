"""``archiver ddl``: table definitions for other engines, made from the archive itself.

The columns are the files' own (schema version 2), the stream list is the streams the
archive holds, the location is the store's. Each engine gets the syntax it parses:
Athena's Hive DDL with partition projection (new days need no ``MSCK REPAIR``), Trino's
Hive connector (``external_location``, ``partitioned_by``), Spark's ``USING parquet``,
and a DuckDB view. Engine notes are comments in the output, so they travel with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from archiver.errors import StoreError, UsageError
from archiver.format import catalog, layout
from archiver.store.base import Store

# (name, Hive/Athena/Spark type, Trino type): the columns of schema version 2.
COLUMNS = [
    ("seq", "BIGINT", "BIGINT"),
    ("subject", "STRING", "VARCHAR"),
    ("time", "TIMESTAMP", "TIMESTAMP(3)"),
    ("headers", "MAP<STRING, ARRAY<STRING>>", "MAP(VARCHAR, ARRAY(VARCHAR))"),
    ("raw_headers", "BINARY", "VARBINARY"),
    ("data", "BINARY", "VARBINARY"),
    ("time_ns", "BIGINT", "BIGINT"),
    ("generation", "STRING", "VARCHAR"),
]
ENGINES = ("athena", "trino", "spark", "duckdb")
UNCOMMITTED_NOTE = (
    "-- Reads every data file under the location: delete the files `archiver verify` lists\n"
    "-- as uncommitted first (archiver sql and every archiver command ignore them).\n"
)


def make_ddl(store: Store, engine: str, table: str, location: str | None) -> str:
    """The DDL of ``engine`` for the archive in ``store`` (``location``: its URL as the
    engine reaches it, default the store's own)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise UsageError(f"--table {table!r} is not a plain SQL name", hint="e.g. nats_archive")
    if location is not None and (
        "'" in location or ("://" not in location and not location.startswith("/"))
    ):
        raise UsageError(f"--location {location!r} is not a URL", hint="e.g. s3://my-bucket/nats")
    streams = catalog.streams_in_archive(store)
    if not streams:
        raise StoreError(f"no archive at {store.describe()}", hint="check --store")
    where = (location or store.describe()).rstrip("/") + "/"
    # Engines reading the files directly see every object named like a data file, also
    # those no commit marker names (a run that lost the fence or died before its marker
    # leaves them): the output says so, at its top.
    builders: dict[str, Callable[[str, str, list[str]], str]] = {
        "athena": _athena,
        "trino": _trino,
        "spark": _spark,
        "duckdb": _duckdb,
    }
    return UNCOMMITTED_NOTE + builders[engine](table, where, streams)


def _hive_columns() -> str:
    return ",\n".join(f"  `{name}` {hive}" for name, hive, _ in COLUMNS)


def _athena(table: str, where: str, streams: list[str]) -> str:
    values = ",".join(layout.escape_name(s) for s in streams)
    return f"""-- Athena. Timestamps read to the millisecond; time_ns keeps the nanoseconds.
-- Partition projection: new days need no MSCK REPAIR; add a stream to the archive,
-- then run archiver ddl again (or list it in projection.stream.values).
CREATE EXTERNAL TABLE `{table}` (
{_hive_columns()}
)
PARTITIONED BY (`stream` STRING, `date` STRING)
STORED AS PARQUET
LOCATION '{where}'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.stream.type' = 'enum',
  'projection.stream.values' = '{values}',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2020-01-01,NOW',
  'storage.location.template' = '{where}stream=${{stream}}/date=${{date}}/'
);
"""


def _trino(table: str, where: str, streams: list[str]) -> str:
    columns = ",\n".join(f'  "{name}" {trino}' for name, _, trino in COLUMNS)
    return f"""-- Trino, Hive connector (catalog hive). Partition columns come last. TIMESTAMP(3) is
-- the connector's default precision (hive.timestamp-precision); time_ns keeps nanoseconds.
CREATE TABLE hive.default.{table} (
{columns},
  "stream" VARCHAR,
  "date" VARCHAR
)
WITH (
  format = 'PARQUET',
  external_location = '{where}',
  partitioned_by = ARRAY['stream', 'date']
);
-- Then, and after each new day: register the partitions found under the location.
CALL hive.system.sync_partition_metadata('default', '{table}', 'ADD');
"""


def _spark(table: str, where: str, streams: list[str]) -> str:
    return f"""-- Spark SQL, its own Parquet reader (reads INT64 timestamps; Hive before 4 cannot).
CREATE TABLE {table} (
{_hive_columns()},
  `stream` STRING,
  `date` STRING
)
USING parquet
PARTITIONED BY (`stream`, `date`)
LOCATION '{where}';
MSCK REPAIR TABLE {table};
"""


def _duckdb(table: str, where: str, streams: list[str]) -> str:
    # Text for the user to run; table and location were checked in make_ddl.
    return f"""-- DuckDB (for s3:// locations: INSTALL httpfs; LOAD httpfs; and a secret), or
-- without any of that: archiver sql.
CREATE VIEW {table} AS
SELECT * FROM read_parquet('{where}**/*.parquet', hive_partitioning = true, union_by_name = true);
"""  # noqa: S608
