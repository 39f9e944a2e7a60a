"""A dict-backed store for unit tests: the same contract as S3, without a server."""

from __future__ import annotations

import builtins  # the method `list` shadows the type inside the class
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from archiver.errors import AlreadyExists, StoreError
from archiver.store.base import ObjectInfo


class MemoryStore:
    """Objects kept in a dict, each with the sha256 it was written with (like S3 metadata)."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}
        # Tests race writers against each other; the lock makes no-clobber atomic.
        self._lock = threading.Lock()

    def describe(self) -> str:
        """Always ``memory://``: there is nothing else to name."""
        return "memory://"

    def check(self, writing: bool = False) -> None:
        """A dict is always reachable."""

    def check_commit(self) -> None:
        """The dictionary is no-clobber by construction."""

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Store a copy of the file's bytes under ``key`` unless the key is taken."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self._put(key, data, sha256)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` unless the key is taken."""
        self._put(key, bytes(data), hashlib.sha256(data).hexdigest())

    def _put(self, key: str, data: bytes, sha256: str) -> None:
        with self._lock:
            existing = self._objects.get(key)
            if existing is None:
                self._objects[key] = (data, sha256)
                return
        if existing[1] != sha256:
            raise AlreadyExists(f"memory://{key} already exists with different content")

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; ``StoreError`` if it is missing."""
        with self._lock:
            existing = self._objects.get(key)
        if existing is None:
            raise StoreError(f"memory://{key} does not exist")
        return existing[0]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A slice of the object's bytes."""
        return self.get_bytes(key)[start : start + max(0, length)]

    def download(self, key: str, path: Path) -> None:
        """Write the object's bytes to a local file."""
        data = self.get_bytes(key)
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order, from a snapshot taken at the call."""
        with self._lock:
            snapshot = sorted(
                (key, len(data))
                for key, (data, _) in self._objects.items()
                if key.startswith(prefix)
            )
        return iter([ObjectInfo(key, size) for key, size in snapshot])

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Key prefixes one ``/`` deeper than ``prefix``, as S3's delimiter listing does."""
        dirs: set[str] = set()
        for info in self.list(prefix):
            head, slash, _ = info.key[len(prefix) :].partition("/")
            if slash:
                dirs.add(f"{prefix}{head}/")
        return sorted(dirs)

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (as in S3)."""
        with self._lock:
            self._objects.pop(key, None)
