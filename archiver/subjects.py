"""NATS subjects: validation, wildcard matching, Arrow filter masks and subject rewriting.

Matching follows NATS: a subject is ``.``-separated non-empty tokens; in a pattern ``*``
matches exactly one token and ``>`` (only as the last token) one or more trailing tokens.

Rewriting (:class:`SubjectMapper`) follows the NATS *subject transform* language, limited
to the parts that only move tokens around:

* ``{{wildcard(N)}}`` (spaces allowed inside the braces, ``Wildcard`` too, as the server
  accepts) and the legacy ``$N``: the token the N-th ``*`` of the source matched, 1-based;
* a trailing ``>`` in the source carried over to a trailing ``>`` in the destination.

Every other transform function (``{{partition(...)}}``, ``{{split(...)}}``, ...) is refused
with a :class:`UsageError` instead of being approximated: a restore that silently lands
messages on different subjects than the server would have is worse than an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.errors import UsageError

__all__ = [
    "SubjectFilter",
    "SubjectMapper",
    "captured_by",
    "matches",
    "validate_subject",
]

_SEP = "."
_PWC = "*"
_FWC = ">"
_WHITESPACE = re.compile(r"\s")

# The server's own pattern is {{\s*[wW]ildcard\s*\((.*)\)\s*}}; ours only takes one index
# so a bad argument gets a precise message instead of a generic "unsupported".
_WILDCARD_FN = re.compile(r"\{\{\s*[wW]ildcard\s*\(\s*(\d+)\s*\)\s*\}\}")
_ANY_FN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(.*\)\s*\}\}")
# Only "$" plus digits is a reference: the server leaves "$JS", "$KV" etc. as literals.
_LEGACY_REF = re.compile(r"\$(\d+)")

# Mapped subjects repeat heavily (a stream has far fewer distinct subjects than messages);
# past this many distinct ones the cache is dropped and refilled rather than grown forever.
_MAP_CACHE_LIMIT = 65_536


def validate_subject(subject: str, *, allow_wildcards: bool, what: str = "subject") -> None:
    """Raise :class:`UsageError` unless ``subject`` is a valid NATS subject.

    Rules: non-empty ``.``-separated tokens, no whitespace, ``*`` only as a whole token,
    ``>`` only as the whole last token; with ``allow_wildcards=False`` neither may appear.
    ``what`` names the thing in the message (``"prefix"``, ``"filter"``, ...).

    Stricter than the server in one way: a token such as ``a*`` is refused although NATS
    would take it as a literal, because in a filter or mapping it is almost surely a typo.
    """
    reason = _subject_problem(subject, allow_wildcards=allow_wildcards)
    if reason is not None:
        raise UsageError(f"invalid {what} {subject!r}: {reason}")


def _subject_problem(subject: str, *, allow_wildcards: bool) -> str | None:
    """Why ``subject`` is invalid, or None if it is fine."""
    if not subject:
        return "it is empty"
    if _WHITESPACE.search(subject):
        return "it contains whitespace"
    tokens = subject.split(_SEP)
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token:
            return "empty token (leading, trailing or doubled '.')"
        if _PWC not in token and _FWC not in token:
            continue
        if token not in (_PWC, _FWC):
            return f"'*' and '>' must be whole tokens, not part of {token!r}"
        if not allow_wildcards:
            return "wildcards ('*', '>') are not allowed here"
        if token == _FWC and i != last:
            return "'>' may only be the last token"
    return None


def _match_tokens(pattern: Sequence[str], tokens: Sequence[str]) -> bool:
    """Token-wise NATS match; ``pattern`` is assumed valid, ``tokens`` is a concrete subject."""
    n = len(tokens)
    for i, ptok in enumerate(pattern):
        if ptok == _FWC:
            # ">" needs at least one token, and none of them may be empty.
            return n > i and all(tokens[i:])
        if i >= n:
            return False
        token = tokens[i]
        if ptok == _PWC:
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
    return _match_tokens(pattern.split(_SEP), subject.split(_SEP))


def captured_by(subject: str, patterns: Iterable[str]) -> bool:
    """Whether a stream whose ``subjects`` config is ``patterns`` would capture ``subject``."""
    tokens = subject.split(_SEP)
    return any(_match_tokens(p.split(_SEP), tokens) for p in patterns)


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
        self._literals = frozenset(p for p in self._patterns if not _has_wildcard(p))
        self._wildcards = tuple(tuple(p.split(_SEP)) for p in self._patterns if _has_wildcard(p))

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
        tokens = subject.split(_SEP)
        return any(_match_tokens(p, tokens) for p in self._wildcards)

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


def _has_wildcard(subject: str) -> bool:
    return _PWC in subject or _FWC in subject


@dataclass(frozen=True, slots=True)
class _Transform:
    """One compiled ``src -> dst`` rule.

    ``parts`` holds the destination tokens before any trailing ``>``: a ``str`` is a
    literal token, an ``int`` the 0-based index into the tokens the source's ``*`` matched.
    """

    src: str
    dst: str
    src_tokens: tuple[str, ...]
    star_positions: tuple[int, ...]
    parts: tuple[str | int, ...]
    tail: bool  # source ends in ">", destination carries the remaining tokens

    def apply(self, tokens: list[str]) -> str | None:
        """The mapped subject, or None if ``tokens`` do not match the source."""
        if not _match_tokens(self.src_tokens, tokens):
            return None
        captured = [tokens[i] for i in self.star_positions]
        out = [captured[p] if isinstance(p, int) else p for p in self.parts]
        if self.tail:
            out.extend(tokens[len(self.src_tokens) - 1 :])
        return _SEP.join(out)


def _compile_transform(src: str, dst: str) -> _Transform:
    """Validate one ``src -> dst`` pair the way the server would, and compile it."""
    where = f"subject transform {src!r} -> {dst!r}"
    reason = _subject_problem(src, allow_wildcards=True)
    if reason is not None:
        raise UsageError(f"{where}: invalid source: {reason}")
    src_tokens = tuple(src.split(_SEP))
    star_positions = tuple(i for i, t in enumerate(src_tokens) if t == _PWC)
    src_tail = src_tokens[-1] == _FWC

    if not dst:
        raise UsageError(f"{where}: the destination is empty")
    dst_tokens = dst.split(_SEP)
    dst_tail = dst_tokens[-1] == _FWC
    if dst_tail:
        dst_tokens.pop()
    parts: list[str | int] = []
    for token in dst_tokens:
        parts.append(_destination_part(token, where, len(star_positions)))
    if src_tail and not dst_tail:
        raise UsageError(
            f"{where}: the source ends in '>' so the destination must end in '>' too",
            hint="the tokens '>' matched have to go somewhere, e.g. 'a.>' -> 'b.>'",
        )
    if dst_tail and not src_tail:
        raise UsageError(f"{where}: the destination ends in '>' but the source does not")
    if not parts and not dst_tail:
        raise UsageError(f"{where}: the destination is empty")
    return _Transform(src, dst, src_tokens, star_positions, tuple(parts), src_tail)


def _destination_part(token: str, where: str, stars: int) -> str | int:
    """One destination token: a literal, or the 0-based index of a ``*`` of the source."""
    index: int | None = None
    if (m := _WILDCARD_FN.fullmatch(token)) or (m := _LEGACY_REF.fullmatch(token)):
        index = int(m.group(1))
    elif "{{" in token or "}}" in token:
        # The server would take "x{{wildcard(1)}}" as a literal token; that is never
        # what was meant, so it is refused rather than copied through verbatim.
        fn = _ANY_FN.fullmatch(token)
        if fn is None:
            raise UsageError(
                f"{where}: {token!r} is not a valid placeholder",
                hint="a placeholder is a whole token, e.g. 'a.{{wildcard(1)}}.b'",
            )
        if fn.group(1).lower() == "wildcard":
            raise UsageError(f"{where}: {token!r} needs exactly one wildcard number, e.g. 1")
        raise UsageError(
            f"{where}: transform function {fn.group(1)!r} is not supported",
            hint="only {{wildcard(N)}}, $N and a trailing '>' are supported",
        )
    if index is None:
        reason = _subject_problem(token, allow_wildcards=False)
        if reason is not None:
            if not token:
                reason = "empty token (leading, trailing or doubled '.')"
            elif token == _FWC:
                reason = "'>' may only be the last token"
            elif token == _PWC:
                reason = "'*' is not allowed in a destination; use {{wildcard(N)}}"
            raise UsageError(f"{where}: invalid destination: {reason}")
        return token
    if not 1 <= index <= stars:
        have = f"only {stars}" if stars else "no"
        raise UsageError(
            f"{where}: {token!r} refers to wildcard {index} but the source has {have} '*'"
        )
    return index - 1


class SubjectMapper:
    """Rewrites subjects, e.g. when replaying an archive onto other subjects.

    Build one with :meth:`identity`, :meth:`prefix` or :meth:`transforms`; ``map`` is
    then a pure function of the subject, memoised because subjects repeat.
    """

    def __init__(self, rules: Sequence[_Transform], description: str) -> None:
        """Internal: use the ``identity``, ``prefix`` or ``transforms`` constructors."""
        self._rules = tuple(rules)
        self._description = description
        self._cache: dict[str, str] = {}

    @classmethod
    def identity(cls) -> SubjectMapper:
        """Every subject maps to itself."""
        return cls((), "subjects unchanged")

    @classmethod
    def prefix(cls, prefix: str) -> SubjectMapper:
        """``subject`` maps to ``prefix + "." + subject``; ``prefix`` has no wildcards
        and no leading or trailing ``.``."""
        validate_subject(prefix, allow_wildcards=False, what="subject prefix")
        # A prefix is exactly the transform '>' -> 'prefix.>', so it shares that code path.
        rule = _compile_transform(_FWC, f"{prefix}{_SEP}{_FWC}")
        return cls((rule,), f"subjects prefixed with '{prefix}.'")

    @classmethod
    def transforms(cls, pairs: Iterable[tuple[str, str]]) -> SubjectMapper:
        """NATS-style subject transforms, tried in order; the first whose source matches wins.

        A subject that matches no source is returned **unchanged**, like the server's
        account mappings ("non-matching subjects will be unchanged"). Each pair is checked
        here, so a bad one fails before any message is touched.
        """
        rules = [_compile_transform(src, dst) for src, dst in pairs]
        if not rules:
            return cls((), "subjects unchanged (no transforms)")
        listed = ", ".join(f"{r.src} -> {r.dst}" for r in rules)
        return cls(rules, f"subjects mapped {listed} (first match wins; others unchanged)")

    @property
    def is_identity(self) -> bool:
        """True when no subject can change."""
        return not self._rules

    def map(self, subject: str) -> str:
        """The subject ``subject`` is rewritten to (itself if no rule matches)."""
        if not self._rules:
            return subject
        mapped = self._cache.get(subject)
        if mapped is not None:
            return mapped
        mapped = subject
        tokens = subject.split(_SEP)
        for rule in self._rules:
            result = rule.apply(tokens)
            if result is not None:
                mapped = result
                break
        if len(self._cache) >= _MAP_CACHE_LIMIT:
            self._cache.clear()
        self._cache[subject] = mapped
        return mapped

    def describe(self) -> str:
        """One human-readable line, e.g. for a restore's plan output."""
        return self._description

    def __repr__(self) -> str:
        return f"<SubjectMapper: {self._description}>"
