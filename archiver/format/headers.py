"""The ``headers`` column: the queryable view of each row's raw header block.

``parse_header_block`` says what the view of one block is. ``headers_column`` builds
the column for a whole batch with Arrow's string kernels, which run without the
interpreter lock the reader needs (block by block in Python, the Parquet worker held
it a tenth of an archive run), and falls back to ``parse_header_block`` block by block
for the batches Arrow cannot do alike: a block that is not UTF-8, or a key repeated
within a block. tests/test_format.py checks the two agree on random batches.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

HEADERS_TYPE = pa.map_(pa.string(), pa.list_(pa.string()))


def parse_header_block(raw: bytes) -> list[tuple[str, list[str]]] | None:
    """The header block as (key, values) pairs in first-seen order, repeated keys kept.

    This is the queryable view for the ``headers`` column; ``raw_headers`` keeps the
    exact bytes. Values lose the one space after the colon, as every NATS client reads
    them; undecodable bytes are replaced. An inline status line (``NATS/1.0 503``) is
    not a header. Returns None for a block with no headers.
    """
    # Decoded whole, then split: the same text as decoding each key and value, since
    # CR, LF and ":" are ASCII and never inside a multi-byte sequence; 14% faster.
    pairs: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if value[:1] == " ":
            value = value[1:]
        values = pairs.get(key)
        if values is None:
            pairs[key] = [value]
        else:
            values.append(value)
    return list(pairs.items()) or None


def headers_column(raws: list[bytes | None], raw_array: Any) -> Any:
    """The ``headers`` column of a batch: ``raw_array`` is its ``raw_headers`` column
    (``raws`` the same as a list). Null where a row has no block, or a block with no
    headers."""
    n = len(raws)
    if raw_array.null_count == n:
        return pa.nulls(n, HEADERS_TYPE)
    has_block = raw_array.is_valid()
    parsed = _parsed_by_arrow(raw_array.filter(has_block))
    if parsed is None:
        parsed = pa.array([parse_header_block(r) for r in raws if r is not None], HEADERS_TYPE)
    # Row i takes parsed[k] where k counts the blocks before it, or null if it has none.
    position = pc.subtract(pc.cumulative_sum(has_block.cast(pa.int64())), 1)
    index = pc.if_else(has_block, position, pa.scalar(None, pa.int64()))
    return parsed.take(index)


def _parsed_by_arrow(blocks: Any) -> Any:
    """``parse_header_block`` of every block, as one map array; None when Arrow cannot
    give the same answer (see the module text)."""
    try:
        text = blocks.cast(pa.string())
    except pa.ArrowInvalid:
        return None  # not UTF-8: replacement characters are Python's to place
    lines = pc.list_slice(pc.split_pattern(text, "\r\n"), 1)  # not the status line
    parts = pc.split_pattern(pc.list_flatten(lines), ":", max_splits=1)
    is_pair = pc.equal(pc.list_value_length(parts), 2)
    parts = parts.filter(is_pair)
    keys = pc.list_element(parts, 0)
    values = pc.list_element(parts, 1)
    values = pc.if_else(pc.starts_with(values, " "), pc.utf8_slice_codeunits(values, 1), values)
    owners = pc.list_parent_indices(lines).filter(is_pair)
    pairs = len(keys)
    distinct = pa.table({"owner": owners, "key": keys}).group_by(["owner", "key"])
    if distinct.aggregate([]).num_rows != pairs:
        return None  # a repeated key: its values share one list, in Python's way
    # Block i's pairs start after the pairs among the lines of the blocks before it.
    pairs_before = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(is_pair.cast(pa.int32()))]
    )
    line_offsets = lines.offsets
    starts = pairs_before.take(pc.subtract(line_offsets, line_offsets[0]))
    empty = pc.equal(starts[1:], starts[:-1])  # no headers: null, as parse_header_block
    one_each = pa.array(range(pairs + 1), pa.int32())
    items = pa.ListArray.from_arrays(one_each, values)
    return pa.MapArray.from_arrays(starts, keys, items, type=HEADERS_TYPE, mask=empty)
