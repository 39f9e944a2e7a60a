"""Subject rewriting for replay, following the NATS *subject transform* language,
limited to the parts that only move tokens around:

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

from archiver.errors import UsageError

__all__ = ["SubjectMapper"]

from archiver.replay.subjects import (
    FWC,
    PWC,
    SEP,
    match_tokens,
    subject_problem,
    validate_subject,
)

# The server's own pattern is {{\s*[wW]ildcard\s*\((.*)\)\s*}}; ours only takes one index
# so a bad argument gets a precise message instead of a generic "unsupported".
_WILDCARD_FN = re.compile(r"\{\{\s*[wW]ildcard\s*\(\s*(\d+)\s*\)\s*\}\}")
_ANY_FN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(.*\)\s*\}\}")
# Only "$" plus digits is a reference: the server leaves "$JS", "$KV" etc. as literals.
_LEGACY_REF = re.compile(r"\$(\d+)")

# Mapped subjects repeat heavily (a stream has far fewer distinct subjects than messages);
# past this many distinct ones the cache is dropped and refilled rather than grown forever.
_MAP_CACHE_LIMIT = 65_536


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
        if not match_tokens(self.src_tokens, tokens):
            return None
        captured = [tokens[i] for i in self.star_positions]
        out = [captured[p] if isinstance(p, int) else p for p in self.parts]
        if self.tail:
            out.extend(tokens[len(self.src_tokens) - 1 :])
        return SEP.join(out)


def _compile_transform(src: str, dst: str) -> _Transform:
    """Validate one ``src -> dst`` pair the way the server would, and compile it."""
    where = f"subject transform {src!r} -> {dst!r}"
    reason = subject_problem(src, allow_wildcards=True)
    if reason is not None:
        raise UsageError(f"{where}: invalid source: {reason}")
    src_tokens = tuple(src.split(SEP))
    star_positions = tuple(i for i, t in enumerate(src_tokens) if t == PWC)
    src_tail = src_tokens[-1] == FWC

    if not dst:
        raise UsageError(f"{where}: the destination is empty")
    dst_tokens = dst.split(SEP)
    dst_tail = dst_tokens[-1] == FWC
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
        reason = subject_problem(token, allow_wildcards=False)
        if reason is not None:
            if not token:
                reason = "empty token (leading, trailing or doubled '.')"
            elif token == FWC:
                reason = "'>' may only be the last token"
            elif token == PWC:
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
        rule = _compile_transform(FWC, f"{prefix}{SEP}{FWC}")
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
        tokens = subject.split(SEP)
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
