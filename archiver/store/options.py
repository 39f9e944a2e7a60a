"""How to talk to S3: endpoint, addressing, checksums, encryption, storage class, parts.

Validated when made, so a bad value is one line before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from archiver.errors import UsageError

MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one).
MIN_PART_SIZE = 5 * MIB

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
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise UsageError(
                f"the S3 endpoint {self.endpoint_url!r} needs its scheme",
                hint=f"e.g. --s3-endpoint https://{self.endpoint_url}",
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
