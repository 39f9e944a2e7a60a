"""An archive in a local (or mounted) directory.

A write goes to a hidden temp file in the final directory, is fsynced, and is then
hard-linked to its final name. ``link`` fails when the name exists, which gives the same
no-clobber commit as S3's ``If-None-Match: *``: a reader sees either no file or the
whole file, never a partial one, and two writers can never both win.
"""

from __future__ import annotations

import builtins  # the method `list` shadows the type inside the class
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from archiver import failpoints
from archiver.errors import AlreadyExists, StoreError
from archiver.store.base import ObjectInfo

_CHUNK = 1024 * 1024


def _oserror(action: str, exc: OSError, target: object = None) -> StoreError:
    """One line for an ``OSError``: what we did, on which file, and the OS's reason."""
    target = target or exc.filename
    where = f" {target}" if target else ""
    return StoreError(f"cannot {action}{where}: {exc.strerror or exc}")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new name, a new sub-directory) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _has_visible_file(path: str) -> bool:
    """Whether a directory holds any object; S3 has no empty "directories" either."""
    for _dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") for f in filenames):
            return True
    return False


class LocalStore:
    """Objects as files under ``root``; keys map to relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        """The root directory."""
        return str(self.root)

    def check(self, writing: bool = False) -> None:
        """For writing, create the root if needed and make sure we may write in it;
        for reading, create nothing: a missing root is an empty archive."""
        if not writing:
            if self.root.exists() and not os.access(self.root, os.R_OK | os.X_OK):
                raise StoreError(f"archive directory {self.root} is not readable")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _oserror("create archive directory", exc) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"archive directory {self.root} is not writable")

    def _path(self, key: str) -> Path:
        """The file for ``key``, refusing keys that could escape the root or hide."""
        parts = key.split("/")
        if not key or any(not p or p.startswith(".") for p in parts):
            raise StoreError(f"invalid key {key!r} for {self.root}")
        return self.root.joinpath(*parts)

    def file_of(self, key: str) -> Path:
        """Where the file of ``key`` is (it may not exist), for readers that open files
        themselves."""
        return self._path(key)

    def _dir(self, head: str) -> Path | None:
        """The directory for a key prefix's directory part; None if no key can be there."""
        parts = head.split("/") if head else []
        if any(not p or p.startswith(".") for p in parts):
            return None  # "..", "a//b", hidden: never a key, and never outside the root
        return self.root.joinpath(*parts)

    def check_commit(self) -> None:
        """Hard links never replace an existing name: nothing to probe."""

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Copy the local file to ``key`` unless the key is taken by different bytes."""

        def copy(dst: BinaryIO) -> None:
            try:
                src = path.open("rb")
            except OSError as exc:
                raise _oserror("read", exc) from exc
            with src:
                shutil.copyfileobj(src, dst, _CHUNK)

        self._commit(key, copy, sha256)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` unless the key is taken by different bytes."""
        self._commit(key, lambda dst: dst.write(data), hashlib.sha256(data).hexdigest())

    def _commit(self, key: str, write: Callable[[BinaryIO], object], sha256: str) -> None:
        final = self._path(key)
        temp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")
        try:
            self._make_dirs(final.parent)
            with temp.open("xb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            failpoints.hit("mid-upload")
            linked = self._link(temp, final, sha256)
            if linked:
                _fsync_dir(final.parent)
        except OSError as exc:
            raise _oserror("write", exc, final) from exc
        finally:
            # The temp name is never visible as an object, but it would waste space.
            temp.unlink(missing_ok=True)

    def _link(self, temp: Path, final: Path, sha256: str) -> bool:
        """Publish ``temp`` as ``final``; False if ``final`` already holds these bytes."""
        try:
            os.link(temp, final)
        except FileExistsError:
            if _sha256_of(final) == sha256:
                return False  # a retry of a write that had already succeeded
            raise AlreadyExists(f"{final} already exists with different content") from None
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise StoreError(
                    f"cannot link {final}: {exc.strerror}",
                    hint="the archive directory must be on a file system with hard links",
                ) from exc
            raise
        return True

    def _make_dirs(self, directory: Path) -> None:
        """``mkdir -p`` that also fsyncs each new directory's parent, so it survives a crash."""
        missing: builtins.list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)  # exist_ok: a concurrent writer may have made it
            _fsync_dir(new.parent)

    def get_bytes(self, key: str) -> bytes:
        """The file's bytes; ``StoreError`` if it is missing."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{path} does not exist") from exc
        except OSError as exc:
            raise _oserror("read", exc) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A byte range of the file."""
        path = self._path(key)
        try:
            with path.open("rb") as f:
                f.seek(start)
                return f.read(max(0, length))
        except FileNotFoundError as exc:
            raise StoreError(f"{path} does not exist") from exc
        except OSError as exc:
            raise _oserror("read", exc) from exc

    def download(self, key: str, path: Path) -> None:
        """Copy the file to ``path``."""
        source = self._path(key)
        try:
            shutil.copyfile(source, path)
        except FileNotFoundError as exc:
            if not source.exists():
                raise StoreError(f"{source} does not exist") from exc
            raise _oserror("write", exc) from exc
        except OSError as exc:
            raise _oserror("copy", exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Files whose key starts with ``prefix``, in key order, skipping temp files."""
        head, _, stem = prefix.rpartition("/")
        base = self._dir(head)
        if base is None:
            return
        try:
            yield from self._walk(str(base), f"{head}/" if head else "", stem)
        except OSError as exc:
            raise _oserror("list", exc) from exc

    def _walk(self, directory: str, key_prefix: str, stem: str = "") -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not e.name.startswith(".") and e.name.startswith(stem)]
        except FileNotFoundError:
            return  # never written, or deleted meanwhile: no objects here either way
        # Sorting a directory as "name/" makes the walk yield exact key order: every key
        # below it starts with "name/", and "a-b" < "a/b" although "a" < "a-b".
        entries.sort(key=lambda e: e.name + "/" if e.is_dir() else e.name)
        for entry in entries:
            if entry.is_dir():
                yield from self._walk(entry.path, f"{key_prefix}{entry.name}/")
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue  # deleted since the directory was read
            yield ObjectInfo(f"{key_prefix}{entry.name}", size)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Sub-directories one level below ``prefix`` that hold at least one object."""
        head, _, stem = prefix.rpartition("/")
        base = self._dir(head)
        if base is None:
            return []
        key_prefix = f"{head}/" if head else ""
        try:
            with os.scandir(base) as it:
                names = [
                    e.name
                    for e in it
                    if e.is_dir()
                    and not e.name.startswith(".")
                    and e.name.startswith(stem)
                    and _has_visible_file(e.path)
                ]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _oserror("list", exc) from exc
        return sorted(f"{key_prefix}{name}/" for name in names)

    def delete(self, key: str) -> None:
        """Remove the file; a missing file is not an error (as in S3)."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _oserror("delete", exc) from exc
