"""Turn a store URL from the command line into a ``Store``.

s3://bucket/prefix     S3 or an S3-compatible server (see ``S3Options``)
file:///abs/path       a local directory; a plain path means the same
memory://              a fresh in-memory store (tests)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from archiver.errors import UsageError
from archiver.store.base import Store

MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one).
MIN_PART_SIZE = 5 * MIB

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ADDRESSING_STYLES = ("path", "virtual", "auto")
_CHECKSUM_MODES = ("when_required", "when_supported")
_SSE_MODES = ("AES256", "aws:kms")
# Objects in these classes cannot be read until restored (hours); GLACIER_IR can.
_RESTORE_FIRST_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


@dataclass(frozen=True)
class S3Options:
    """How to talk to S3. Credentials are deliberately absent: they come only from the
    standard AWS chain (environment, profile, web identity, pod identity, instance role).
    """

    # None: AWS itself, or whatever AWS_ENDPOINT_URL says (boto3 reads it).
    endpoint_url: str | None = None
    region: str | None = None
    # S3-compatible servers usually want path style; AWS accepts it too.
    addressing_style: str = "path"
    # boto3 >= 1.36 sends CRC checksums by default, which many S3-compatible servers
    # reject; "when_required" sends them only where the API demands one.
    checksum: str = "when_required"
    sse: str | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    multipart_threshold: int = 64 * MIB
    part_size: int = 16 * MIB
    max_attempts: int = 5
    connect_timeout: float = 5
    read_timeout: float = 60

    def __post_init__(self) -> None:
        _choice("addressing style", self.addressing_style, _ADDRESSING_STYLES)
        _choice("checksum mode", self.checksum, _CHECKSUM_MODES)
        if self.sse is not None:
            _choice("server-side encryption", self.sse, _SSE_MODES)
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise UsageError("an SSE KMS key id needs server-side encryption aws:kms (--s3-sse)")
        if self.storage_class in _RESTORE_FIRST_CLASSES:
            raise UsageError(
                f"storage class {self.storage_class} needs a restore before every read, so"
                " resume, verify and replay could not read the archive",
                hint="write STANDARD or STANDARD_IA and move old files with the lifecycle policy",
            )
        if self.part_size < MIN_PART_SIZE:
            raise UsageError(f"S3 part size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if self.multipart_threshold < 0:
            raise UsageError("the multipart threshold cannot be negative")
        if self.max_attempts < 1:
            raise UsageError("S3 max attempts must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise UsageError("S3 timeouts must be positive")


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")


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
