"""Subject validation, NATS wildcard matching, Arrow filter masks and subject mapping."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from archiver.errors import UsageError
from archiver.replay.mapping import SubjectMapper
from archiver.replay.subjects import SubjectFilter, captured_by, matches, validate_subject

# ---------------------------------------------------------------------------------------
# validate_subject


@pytest.mark.parametrize(
    ("subject", "allow_wildcards"),
    [
        ("foo", False),
        ("foo.bar.baz", False),
        ("$JS.API.INFO", False),
        ("a-b_c.D9", False),
        ("foo.*", True),
        ("*.bar.>", True),
        (">", True),
        ("*", True),
    ],
)
def test_valid_subjects(subject: str, allow_wildcards: bool) -> None:
    validate_subject(subject, allow_wildcards=allow_wildcards)


@pytest.mark.parametrize(
    ("subject", "allow_wildcards", "reason"),
    [
        ("", True, "empty"),
        ("foo..bar", True, "empty token"),
        (".foo", True, "empty token"),
        ("foo.", True, "empty token"),
        ("foo bar", True, "whitespace"),
        ("foo.\tbar", True, "whitespace"),
        ("foo\n", True, "whitespace"),
        ("foo*", True, "whole tokens"),
        ("foo.b>", True, "whole tokens"),
        ("foo.>.bar", True, "last token"),
        ("foo.*", False, "not allowed"),
        ("foo.>", False, "not allowed"),
    ],
)
def test_invalid_subjects(subject: str, allow_wildcards: bool, reason: str) -> None:
    with pytest.raises(UsageError) as err:
        validate_subject(subject, allow_wildcards=allow_wildcards)
    message = str(err.value)
    assert reason in message
    assert repr(subject) in message
    assert "\n" not in message


def test_validate_names_what_it_checks() -> None:
    with pytest.raises(UsageError, match=r"^invalid subject filter 'a\.\.b': "):
        validate_subject("a..b", allow_wildcards=True, what="subject filter")


# ---------------------------------------------------------------------------------------
# matches / captured_by

MATCH_CASES = [
    # literal
    ("foo", "foo", True),
    ("foo", "bar", False),
    ("foo.bar", "foo", False),
    ("foo", "foo.bar", False),
    # "*" is exactly one non-empty token
    ("foo.*", "foo.bar", True),
    ("foo.*", "foo", False),
    ("foo.*", "foo.bar.baz", False),
    ("foo.*", "foo.", False),
    ("*", "foo", True),
    ("*", "foo.bar", False),
    ("*.bar", "foo.bar", True),
    ("*.bar", "foo.baz", False),
    ("foo.*.baz", "foo.x.baz", True),
    ("foo.*.baz", "foo.baz", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    # ">" is one or more trailing tokens
    ("foo.>", "foo.bar", True),
    ("foo.>", "foo.bar.baz.qux", True),
    ("foo.>", "foo", False),
    ("foo.>", "foo.", False),
    ("foo.>", "bar.baz", False),
    (">", "foo", True),
    (">", "foo.bar.baz", True),
    ("*.>", "foo", False),
    ("*.>", "foo.bar", True),
    ("foo.*.>", "foo.bar", False),
    ("foo.*.>", "foo.bar.baz", True),
    # tokens compare whole, not as prefixes
    ("foo", "foobar", False),
    ("foo.*", "foobar.x", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), MATCH_CASES)
def test_matches(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


@pytest.mark.parametrize(("pattern", "subject", "expected"), MATCH_CASES)
def test_single_pattern_filter_agrees_with_matches(
    pattern: str, subject: str, expected: bool
) -> None:
    assert SubjectFilter([pattern]).matches(subject) is expected


@pytest.mark.parametrize(
    ("subject", "patterns", "expected"),
    [
        ("orders.created", ["orders.>"], True),
        ("orders.created", ["payments.>", "orders.*"], True),
        ("orders", ["orders.>"], False),
        ("orders", ["orders.>", "orders"], True),
        ("orders.eu.created", ["orders.*"], False),
        ("anything", [], False),
    ],
)
def test_captured_by(subject: str, patterns: list[str], expected: bool) -> None:
    assert captured_by(subject, patterns) is expected
    assert captured_by(subject, iter(patterns)) is expected


# ---------------------------------------------------------------------------------------
# SubjectFilter


def test_empty_filter_matches_everything() -> None:
    flt = SubjectFilter([])
    assert flt.matches_all
    assert flt.matches("anything.at.all")
    assert flt.describe() == "all subjects"


def test_filter_with_several_patterns() -> None:
    flt = SubjectFilter(["orders.created", "payments.*", "audit.>"])
    assert flt.matches("orders.created")
    assert not flt.matches("orders.updated")
    assert flt.matches("payments.eu")
    assert not flt.matches("payments.eu.x")
    assert flt.matches("audit.a.b.c")
    assert not flt.matches("audit")
    assert "payments.*" in flt.describe()


@pytest.mark.parametrize("pattern", ["", "a..b", "a b", "a.>.b", "a*"])
def test_filter_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(UsageError, match="invalid subject filter"):
        SubjectFilter(["ok.>", pattern])


SUBJECTS = [
    "orders.created",
    "orders.eu.created",
    "orders",
    None,
    "payments.eu",
    "orders.created",
    "audit.x.y",
    "payments.eu",
    "payments",
    None,
    "orders.us.created",
]
FILTERS = [
    [],
    ["orders.created"],
    ["orders.*"],
    ["orders.>"],
    ["orders.*.created", "payments.*"],
    ["nothing.matches"],
    [">"],
]


def _expected(flt: SubjectFilter, subjects: list[str | None]) -> list[bool]:
    return [s is not None and flt.matches(s) for s in subjects]


def _as(kind: str, subjects: list[str | None]) -> pa.Array | pa.ChunkedArray:
    """The same column in each physical form the mask must accept."""
    plain = pa.array(subjects, pa.string())
    if kind == "string":
        return plain
    if kind == "large_string":
        return pa.array(subjects, pa.large_string())
    if kind == "string_view":
        return pa.array(subjects, pa.string_view())
    if kind == "dictionary":
        return plain.dictionary_encode()
    if kind == "sliced_dictionary":
        # A slice keeps the whole dictionary but offsets its indices.
        padded = pa.array(["pad.a", *subjects, "pad.b"], pa.string()).dictionary_encode()
        return padded.slice(1, len(subjects))
    if kind == "chunked":
        return pa.chunked_array([plain.slice(0, 4), plain.slice(4, 0), plain.slice(4)])
    if kind == "chunked_dictionary":
        # Chunks with different dictionaries, as a Parquet reader may produce.
        return pa.chunked_array(
            [plain.slice(0, 5).dictionary_encode(), plain.slice(5).dictionary_encode()]
        )
    raise AssertionError(kind)


KINDS = [
    "string",
    "large_string",
    "string_view",
    "dictionary",
    "sliced_dictionary",
    "chunked",
    "chunked_dictionary",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("patterns", FILTERS, ids=lambda p: ",".join(p) or "all")
def test_mask_equals_per_row_match(kind: str, patterns: list[str]) -> None:
    flt = SubjectFilter(patterns)
    column = _as(kind, SUBJECTS)
    mask = flt.mask(column)
    assert mask.type == pa.bool_()
    assert isinstance(mask, pa.ChunkedArray) == isinstance(column, pa.ChunkedArray)
    assert mask.null_count == 0
    assert mask.to_pylist() == _expected(flt, SUBJECTS)


def test_mask_filters_a_table() -> None:
    table = pa.table({"seq": list(range(len(SUBJECTS))), "subject": SUBJECTS})
    kept = table.filter(SubjectFilter(["orders.>"]).mask(table["subject"]))
    assert kept["seq"].to_pylist() == [0, 1, 5, 10]


def test_mask_of_empty_column() -> None:
    assert SubjectFilter(["a.*"]).mask(pa.array([], pa.string())).to_pylist() == []


def test_mask_rejects_non_string_column() -> None:
    with pytest.raises(TypeError, match="string column"):
        SubjectFilter(["a"]).mask(pa.array([1, 2]))


def test_mask_over_a_million_rows_with_few_distinct_subjects() -> None:
    # Performance is measured in bench/; this only checks the result at scale.
    distinct = [f"svc{i % 10}.region{i % 7}.event{i}" for i in range(1_000)]
    rows = 1_000_000
    column = pc.take(
        pa.array(distinct, pa.string()),
        pa.array([i % len(distinct) for i in range(rows)], pa.int32()),
    )
    flt = SubjectFilter(["svc3.*.>", "svc5.region2.*"])
    matching = [s for s in distinct if flt.matches(s)]
    assert 0 < len(matching) < len(distinct)

    mask = flt.mask(column)

    assert len(mask) == rows
    assert pc.sum(mask).as_py() == len(matching) * (rows // len(distinct))
    assert mask.equals(pc.is_in(column, value_set=pa.array(matching, pa.string())))


# ---------------------------------------------------------------------------------------
# SubjectMapper


def test_identity_mapper() -> None:
    mapper = SubjectMapper.identity()
    assert mapper.is_identity
    assert mapper.map("a.b.c") == "a.b.c"
    assert mapper.describe() == "subjects unchanged"


@pytest.mark.parametrize(
    ("prefix", "subject", "expected"),
    [
        ("restore", "orders.created", "restore.orders.created"),
        ("restore.v2", "a", "restore.v2.a"),
        ("$R", "x.y", "$R.x.y"),
    ],
)
def test_prefix_mapper(prefix: str, subject: str, expected: str) -> None:
    mapper = SubjectMapper.prefix(prefix)
    assert not mapper.is_identity
    assert mapper.map(subject) == expected
    assert repr(f"{prefix}.") in mapper.describe()


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("", "empty"),
        ("restore.", "empty token"),
        (".restore", "empty token"),
        ("re store", "whitespace"),
        ("restore.*", "not allowed"),
        ("restore.>", "not allowed"),
    ],
)
def test_prefix_rejects_bad_prefixes(prefix: str, reason: str) -> None:
    with pytest.raises(UsageError, match=r"invalid subject prefix") as err:
        SubjectMapper.prefix(prefix)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("src", "dst", "subject", "expected"),
    [
        # the documented example
        (
            "auth.user.*.created",
            "restore.user.{{wildcard(1)}}.created",
            "auth.user.42.created",
            "restore.user.42.created",
        ),
        # spaces inside the braces, and the server's capitalised spelling
        ("auth.user.*.created", "r.{{ wildcard( 1 ) }}", "auth.user.42.created", "r.42"),
        ("auth.user.*.created", "r.{{Wildcard(1)}}", "auth.user.42.created", "r.42"),
        # reorder several wildcards
        ("a.*.*", "b.{{wildcard(2)}}.{{wildcard(1)}}", "a.x.y", "b.y.x"),
        ("a.*.*", "b.{{wildcard(1)}}.{{wildcard(1)}}", "a.x.y", "b.x.x"),
        # legacy $N
        ("a.*", "b.$1", "a.x", "b.x"),
        ("a.*.*", "b.$2.c.$1", "a.x.y", "b.y.c.x"),
        # $ followed by anything but digits is a literal ($JS, $KV, ...)
        ("a.*", "$KV.$1", "a.x", "$KV.x"),
        # a wildcard need not be used
        ("a.*", "b.fixed", "a.x", "b.fixed"),
        # ">" carries the remaining tokens over
        ("auth.>", "restore.auth.>", "auth.user.1.created", "restore.auth.user.1.created"),
        ("auth.>", "restore.>", "auth.user.1.created", "restore.user.1.created"),
        ("auth.>", "restore.>", "auth.x", "restore.x"),
        (">", "restore.>", "a.b", "restore.a.b"),
        ("*.>", "{{wildcard(1)}}.tail.>", "a.b.c", "a.tail.b.c"),
        # literal to literal
        ("orders.placed", "orders.created", "orders.placed", "orders.created"),
        # no match: unchanged
        ("auth.user.*.created", "r.$1", "auth.user.42.deleted", "auth.user.42.deleted"),
        ("auth.>", "restore.>", "auth", "auth"),
        ("a.*", "b.$1", "a.x.y", "a.x.y"),
    ],
)
def test_transform(src: str, dst: str, subject: str, expected: str) -> None:
    mapper = SubjectMapper.transforms([(src, dst)])
    assert mapper.map(subject) == expected
    assert mapper.map(subject) == expected  # second call is served by the cache


def test_first_matching_transform_wins() -> None:
    mapper = SubjectMapper.transforms(
        [
            ("orders.eu.*", "eu.{{wildcard(1)}}"),
            ("orders.*.*", "other.$1.$2"),
            ("orders.>", "rest.>"),
        ]
    )
    assert mapper.map("orders.eu.created") == "eu.created"
    assert mapper.map("orders.us.created") == "other.us.created"
    assert mapper.map("orders.us.created.late") == "rest.us.created.late"
    assert mapper.map("payments.x") == "payments.x"
    line = mapper.describe()
    assert "\n" not in line
    assert "orders.eu.* -> eu.{{wildcard(1)}}" in line
    assert "first match wins" in line
    assert "unchanged" in line


def test_no_transforms_is_identity() -> None:
    mapper = SubjectMapper.transforms([])
    assert mapper.is_identity
    assert mapper.map("a.b") == "a.b"


def test_transform_cache_stays_bounded() -> None:
    mapper = SubjectMapper.transforms([("a.*", "b.$1")])
    for i in range(70_000):
        assert mapper.map(f"a.{i}") == f"b.{i}"
    assert len(mapper._cache) <= 65_536


@pytest.mark.parametrize(
    ("src", "dst", "reason"),
    [
        # wildcard references the source lacks
        ("a.*", "b.{{wildcard(2)}}", "refers to wildcard 2 but the source has only 1"),
        ("a.b", "b.{{wildcard(1)}}", "refers to wildcard 1 but the source has no"),
        ("a.*", "b.$2", "refers to wildcard 2"),
        ("a.*", "b.{{wildcard(0)}}", "refers to wildcard 0"),
        ("a.*", "b.$0", "refers to wildcard 0"),
        ("a.>", "b.$1.>", "refers to wildcard 1 but the source has no"),
        # wildcards in the destination
        ("a.*", "b.*", "'*' is not allowed in a destination"),
        ("a.*", "b.x*", "whole tokens"),
        # mismatched ">"
        ("a.>", "b", "destination must end in '>'"),
        ("a.>", "b.$1", "refers to wildcard 1"),
        ("a.*", "b.>", "the destination ends in '>' but the source does not"),
        ("a.>", "b.>.c", "'>' may only be the last token"),
        # unsupported transform functions
        ("a.*", "b.{{partition(3,1)}}", "'partition' is not supported"),
        ("a.*", "b.{{ split(1,-) }}", "'split' is not supported"),
        ("a.*", "b.{{SplitFromLeft(1,2)}}", "'SplitFromLeft' is not supported"),
        ("a.*", "b.{{unknown(1)}}", "'unknown' is not supported"),
        # malformed placeholders
        ("a.*", "b.{{wildcard()}}", "needs exactly one wildcard number"),
        ("a.*", "b.{{wildcard(1,2)}}", "needs exactly one wildcard number"),
        ("a.*", "b.{{wildcard(x)}}", "needs exactly one wildcard number"),
        ("a.*", "b.{{wildcard(1)", "not a valid placeholder"),
        ("a.*", "b.x{{wildcard(1)}}", "not a valid placeholder"),
        ("a.*", "b.{{wildcard}}", "not a valid placeholder"),
        # bad subjects on either side
        ("", "b", "invalid source: it is empty"),
        ("a..b", "b", "invalid source: empty token"),
        ("a.>.b", "b", "invalid source: '>' may only be the last token"),
        ("a b", "b", "invalid source: it contains whitespace"),
        ("a", "", "the destination is empty"),
        ("a", "b..c", "invalid destination: empty token"),
        ("a", "b.", "invalid destination: empty token"),
        ("a", "b c", "invalid destination: it contains whitespace"),
    ],
)
def test_invalid_transforms(src: str, dst: str, reason: str) -> None:
    with pytest.raises(UsageError) as err:
        SubjectMapper.transforms([("ok.*", "fine.$1"), (src, dst)])
    message = str(err.value)
    assert reason in message
    assert f"{src!r} -> {dst!r}" in message
    assert "\n" not in message


def test_unsupported_function_error_hints_at_what_works() -> None:
    with pytest.raises(UsageError) as err:
        SubjectMapper.transforms([("a.*", "{{partition(2,1)}}")])
    assert err.value.hint is not None
    assert "{{wildcard(N)}}" in err.value.hint
