"""Turn a store URL from the command line into a ``Store``.

s3://bucket/prefix     S3 or an S3-compatible server (see ``S3Options``)
file:///abs/path       a local directory; a plain path means the same
memory://              a fresh in-memory store (tests)
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from archiver.errors import UsageError
from archiver.store.base import Store
from archiver.store.options import S3Options

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(url: str, s3: S3Options | None = None) -> Store:
    """The store a URL names; ``UsageError`` for anything we cannot open."""
    match = _SCHEME_RE.match(url)
    if match is None:
        if not url:
            raise UsageError("the archive location is empty")
        from archiver.store.local import LocalStore

        return LocalStore(Path(url).expanduser())
    scheme = match.group(1).lower()
    if scheme == "s3":
        return _open_s3(url, s3 or S3Options())
    if scheme == "file":
        return _open_file(url)
    if scheme == "memory":
        from archiver.store.memory import MemoryStore

        return MemoryStore()
    raise UsageError(
        f"unsupported archive URL scheme {scheme!r} in {url}",
        hint="use s3://bucket/prefix, file:///path or a plain directory path",
    )


def _open_s3(url: str, options: S3Options) -> Store:
    parts = urlsplit(url)
    if not parts.netloc:
        raise UsageError(f"no bucket in {url}", hint="use s3://bucket/prefix")
    if parts.query or parts.fragment:
        raise UsageError(f"unexpected '?' or '#' in {url}")
    # Imported here: boto3 is slow to import and not needed for local archives.
    from archiver.store.s3 import S3Store

    return S3Store(parts.netloc, parts.path.strip("/"), options)


def _open_file(url: str) -> Store:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"file URLs must name a local path, not host {parts.netloc!r}")
    if not parts.path.startswith("/"):
        raise UsageError(f"file URL {url} needs an absolute path: file:///abs/path")
    from archiver.store.local import LocalStore

    return LocalStore(Path(unquote(parts.path)))
