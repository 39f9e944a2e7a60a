"""NATS subjects: validation, wildcard matching and Arrow filter masks.

Matching follows NATS: a subject is ``.``-separated non-empty tokens; in a pattern ``*``
matches exactly one token and ``>`` (only as the last token) one or more trailing tokens.
Rewriting subjects is ``archiver.replay.mapping``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.errors import UsageError

__all__ = ["SubjectFilter", "captured_by", "has_wildcard", "matches", "validate_subject"]

SEP = "."
PWC = "*"
FWC = ">"
_WHITESPACE = re.compile(r"\s")


def validate_subject(subject: str, *, allow_wildcards: bool, what: str = "subject") -> None:
    """Raise :class:`UsageError` unless ``subject`` is a valid NATS subject.

    Rules: non-empty ``.``-separated tokens, no whitespace, ``*`` only as a whole token,
    ``>`` only as the whole last token; with ``allow_wildcards=False`` neither may appear.
    ``what`` names the thing in the message (``"prefix"``, ``"filter"``, ...).

    Stricter than the server in one way: a token such as ``a*`` is refused although NATS
    would take it as a literal, because in a filter or mapping it is almost surely a typo.
    """
    reason = subject_problem(subject, allow_wildcards=allow_wildcards)
    if reason is not None:
        raise UsageError(f"invalid {what} {subject!r}: {reason}")


def subject_problem(subject: str, *, allow_wildcards: bool) -> str | None:
    """Why ``subject`` is invalid, or None if it is fine."""
    if not subject:
        return "it is empty"
    if _WHITESPACE.search(subject):
        return "it contains whitespace"
    tokens = subject.split(SEP)
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token:
            return "empty token (leading, trailing or doubled '.')"
        if PWC not in token and FWC not in token:
            continue
        if token not in (PWC, FWC):
            return f"'*' and '>' must be whole tokens, not part of {token!r}"
        if not allow_wildcards:
            return "wildcards ('*', '>') are not allowed here"
        if token == FWC and i != last:
            return "'>' may only be the last token"
    return None


def match_tokens(pattern: Sequence[str], tokens: Sequence[str]) -> bool:
    """Token-wise NATS match; ``pattern`` is assumed valid, ``tokens`` is a concrete subject."""
    n = len(tokens)
    for i, ptok in enumerate(pattern):
        if ptok == FWC:
            # ">" needs at least one token, and none of them may be empty.
            return n > i and all(tokens[i:])
        if i >= n:
            return False
        token = tokens[i]
        if ptok == PWC:
            if not token:
                return False
        elif ptok != token:
            return False
    return n == len(pattern)


def matches(pattern: str, subject: str) -> bool:
    """Whether the concrete ``subject`` is matched by ``pattern`` (NATS wildcard rules).

    ``*`` matches exactly one non-empty token, ``>`` one or more trailing tokens: so
    ``foo.*`` and ``foo.>`` both fail to match ``foo``. ``pattern`` is not validated here
    (this runs per subject); check it once with :func:`validate_subject`.
    """
    return match_tokens(pattern.split(SEP), subject.split(SEP))


def captured_by(subject: str, patterns: Iterable[str]) -> bool:
    """Whether a stream whose ``subjects`` config is ``patterns`` would capture ``subject``."""
    tokens = subject.split(SEP)
    return any(match_tokens(p.split(SEP), tokens) for p in patterns)


def _is_string_type(typ: Any) -> bool:
    return bool(
        pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)
    )


class SubjectFilter:
    """A set of NATS subject patterns; a subject passes if any pattern matches it.

    An empty pattern list matches every subject (no filter given means "everything").
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._patterns = tuple(patterns)
        for pattern in self._patterns:
            validate_subject(pattern, allow_wildcards=True, what="subject filter")
        # Literal patterns are a set lookup; only wildcard ones need the token walk.
        self._literals = frozenset(p for p in self._patterns if not has_wildcard(p))
        self._wildcards = tuple(tuple(p.split(SEP)) for p in self._patterns if has_wildcard(p))

    @property
    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    @property
    def matches_all(self) -> bool:
        """True when built from no patterns: every subject passes."""
        return not self._patterns

    def matches(self, subject: str) -> bool:
        """Whether ``subject`` passes the filter."""
        if not self._patterns or subject in self._literals:
            return True
        if not self._wildcards:
            return False
        tokens = subject.split(SEP)
        return any(match_tokens(p, tokens) for p in self._wildcards)

    def mask(self, subjects: Any) -> Any:
        """A boolean mask, one entry per row of ``subjects``: True where the row passes.

        ``subjects`` is a ``pyarrow`` Array or ChunkedArray of ``string``,
        ``large_string``, ``string_view`` or ``dictionary<...string>``; the mask has the
        same shape (Array or ChunkedArray), usable with ``Table.filter``. Null rows are False.

        Python matching runs once per *distinct* subject, never per row: rows are
        dictionary-encoded (one hash pass in C), each dictionary entry gets a verdict, and
        the verdicts are gathered back by the dictionary indices with ``take``.
        """
        if not _is_string_type(subjects.type) and not (
            pa.types.is_dictionary(subjects.type) and _is_string_type(subjects.type.value_type)
        ):
            raise TypeError(f"subject mask needs a string column, got {subjects.type}")
        if self.matches_all:
            return pc.is_valid(subjects)
        if isinstance(subjects, pa.ChunkedArray):
            if not pa.types.is_dictionary(subjects.type):
                # Encoding the whole column gives every chunk the same dictionary, so the
                # verdict array below is built once and reused for each chunk.
                subjects = subjects.dictionary_encode()
            cache = _VerdictCache(self)
            return pa.chunked_array(
                [cache.mask_encoded(chunk) for chunk in subjects.chunks], type=pa.bool_()
            )
        if not pa.types.is_dictionary(subjects.type):
            subjects = subjects.dictionary_encode()
        return _VerdictCache(self).mask_encoded(subjects)

    def describe(self) -> str:
        """One line for logs and ``--help``-style output."""
        if self.matches_all:
            return "all subjects"
        return "subjects matching " + ", ".join(self._patterns)

    def __repr__(self) -> str:
        return f"SubjectFilter({list(self._patterns)!r})"


class _VerdictCache:
    """Per-``mask`` call state: verdicts per distinct subject, and the last dictionary's
    verdict array (chunks of one column usually share one dictionary)."""

    def __init__(self, flt: SubjectFilter) -> None:
        self._filter = flt
        # Chunks with different dictionaries still share most values: judge each once.
        self._verdicts: dict[str, bool] = {}
        self._last_dictionary: Any = None
        self._last_array: Any = None

    def _verdict(self, value: str | None) -> bool:
        if value is None:
            return False
        verdict = self._verdicts.get(value)
        if verdict is None:
            verdict = self._verdicts[value] = self._filter.matches(value)
        return verdict

    def mask_encoded(self, encoded: Any) -> Any:
        """Mask of one DictionaryArray."""
        dictionary = encoded.dictionary
        last = self._last_dictionary
        if last is None or not (last is dictionary or last.equals(dictionary)):
            self._last_array = pa.array(
                [self._verdict(v) for v in dictionary.to_pylist()], type=pa.bool_()
            )
            self._last_dictionary = dictionary
        mask = pc.take(self._last_array, encoded.indices)
        # Null rows have null indices, which take turns into null: they do not match.
        return pc.fill_null(mask, False) if mask.null_count else mask


def has_wildcard(subject: str) -> bool:
    return PWC in subject or FWC in subject
