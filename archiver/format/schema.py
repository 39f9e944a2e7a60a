"""The columns of every data file, and how a batch of messages becomes them.

Columns are built straight from a batch's lists, by Arrow wherever it can: the Parquet
worker's Python holds the interpreter lock the reader needs."""

from __future__ import annotations

from array import array
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.format.batch import Batch
from archiver.format.headers import HEADERS_TYPE, headers_column

META_PREFIX = "archiver."


SCHEMA = pa.schema(
    [
        # int64, not uint64: Iceberg, Hive, Trino and Spark have no unsigned 64-bit type
        # (Spark read it as decimal(20,0)); a stream's seqs stay far below 2**63.
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        # Microseconds, not nanoseconds: every engine reads timestamp[us]; time_ns below
        # keeps the server's exact value.
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("headers", HEADERS_TYPE, nullable=True),
        pa.field("raw_headers", pa.binary(), nullable=True),
        pa.field("data", pa.binary(), nullable=False),
        # Appended last so positional readers of the documented columns are unaffected.
        pa.field("time_ns", pa.int64(), nullable=False),
        # Which generation the rows belong to: after a stream is recreated, SQL tells
        # the two apart without parsing file paths. Dictionary-encoded in the file.
        pa.field("generation", pa.string(), nullable=False),
    ]
)
"""The columns of every data file written now (schema version 2), in file order."""

SCHEMA_V1 = pa.schema([pa.field("seq", pa.uint64(), nullable=False), *list(SCHEMA)[1:-1]])
"""Files of schema version 1 (before 2026-11-27): ``seq`` uint64, no ``generation``.
Every reader reads both."""

DICTIONARY_COLUMNS = ["subject", "generation"]

# Statistics only where readers prune by range; stats on data/raw_headers/headers would
# copy up to two payload prefixes per row group into the footer for nothing.
STATS_COLUMNS = ["seq", "subject", "time", "time_ns"]


# ---------------------------------------------------------------------------- batches


def batch_to_table(batch: Batch, generation: str) -> Any:
    """A batch as a ``pa.Table`` with SCHEMA, its rows of ``generation``.

    Columns are built straight from the batch's lists; the ``headers`` map only for
    rows that have a header block (see headers.py).
    """
    raw_headers = pa.array(batch.raw_headers, pa.binary())
    times_ns = pa.array(batch.times_ns, pa.int64())
    arrays = {
        "seq": pa.array(batch.seqs, pa.int64()),
        "subject": pa.array(batch.subjects, pa.string()),
        "time": _micros(times_ns),
        "headers": headers_column(batch.raw_headers, raw_headers),
        "raw_headers": raw_headers,
        "data": _binary(batch.data),
        "time_ns": times_ns,
        "generation": pa.repeat(pa.scalar(generation, pa.string()), len(batch)),
    }
    for field in SCHEMA:
        if not field.nullable and arrays[field.name].null_count:
            raise ValueError(f"column {field.name} has nulls, which the schema forbids")
    return pa.Table.from_arrays([arrays[name] for name in SCHEMA.names], schema=SCHEMA)


def _binary(values: list[bytes]) -> Any:
    """``pa.array(values, pa.binary())``, built from one joined buffer and its offsets:
    half the time, which the Parquet worker spends holding the interpreter lock that
    the reader needs (3.8 against 1.7 ms for 20,000 payloads of 300 B)."""
    offsets = array("i", [0])
    try:
        offsets.extend(accumulate(map(len, values)))  # OverflowError past 2 GiB, no wrap
    except TypeError:
        return pa.array(values, pa.binary())  # a None: nulls, which the caller refuses
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.binary(), len(values), buffers)


def _micros(times_ns: Any) -> Any:
    """Integer nanoseconds -> timestamp[us, UTC], rounding down like ``ns // 1000``."""
    # floor_temporal floors (pc.divide would truncate toward zero before 1970); it runs
    # on a zone-less timestamp because with a zone it converts through local time, ~10x
    # slower. Tagging the zone afterwards is metadata only.
    as_ns = times_ns.cast(pa.timestamp("ns"))
    floored = pc.floor_temporal(as_ns, unit="microsecond")
    return floored.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def check_schema(schema: Any) -> list[str]:
    """Problems of ``schema`` against SCHEMA (or, for older files, SCHEMA_V1); an empty
    list when compatible.

    Extra columns are fine (the contract allows adding some). A dictionary-encoded
    column counts as its value type, and a nullable column where SCHEMA forbids nulls
    is only a problem that way round.
    """
    problems = _against(schema, SCHEMA)
    return problems if problems and _against(schema, SCHEMA_V1) else []


def _against(schema: Any, wanted: Any) -> list[str]:
    problems: list[str] = []
    for expected in wanted:
        index = schema.get_field_index(expected.name)
        if index < 0:
            problems.append(f"missing column {expected.name}")
            continue
        actual = schema.field(index)
        actual_type = actual.type
        if pa.types.is_dictionary(actual_type):
            actual_type = actual_type.value_type
        if not actual_type.equals(expected.type):
            problems.append(f"column {expected.name} is {actual_type}, expected {expected.type}")
        if actual.nullable and not expected.nullable:
            problems.append(f"column {expected.name} allows nulls, expected not null")
    return problems
