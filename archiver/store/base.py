"""The one small interface every archive store implements.

Keys are relative to the store's root, use ``/`` separators and never start with one.
Every write is no-clobber: a key, once written, is never replaced. That is the commit
rule: a data file is committed exactly when its final key exists.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class Store(Protocol):
    """Where the archive lives. Errors are translated to ``StoreError``."""

    def describe(self) -> str:
        """A human name for messages: ``s3://bucket/prefix`` or a path; never a secret."""
        ...

    def check(self, writing: bool = False) -> None:
        """Fail fast with one clear ``StoreError`` if the store is unreachable or denied.
        Read-only commands (``writing`` false) must not create anything."""
        ...

    def check_commit(self) -> None:
        """Fail with one clear ``StoreError`` unless no-clobber writes really work here."""
        ...

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Upload a local file to ``key`` atomically, only if ``key`` does not exist.

        ``sha256`` is the hex digest of the file's bytes, kept with the object so that a
        retry that finds the key taken can tell its own earlier success (same digest:
        return quietly) from a different writer (raise ``AlreadyExists``).
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically, only if ``key`` does not exist.

        If the key exists with identical bytes, return quietly; otherwise raise
        ``AlreadyExists``.
        """
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object. Raises ``StoreError`` when it is missing."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from offset ``start`` (fewer at the end of the object).

        Lets readers fetch a Parquet footer or one row group without the whole file.
        """
        ...

    def download(self, key: str, path: Path) -> None:
        """Copy the object to a local file (for pyarrow to read by row group)."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """The immediate "sub-directories" under ``prefix`` (which ends in ``/``), sorted.

        Each returned entry is a full key prefix ending in ``/``.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove an object (tests and drills only; archiving never deletes)."""
        ...
