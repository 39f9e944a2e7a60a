"""The policy file: YAML, validated by pydantic, every mistake one line naming the field.

Imported only when a policy file is given: pydantic and yaml cost 80 ms of start-up
that ``verify``, ``ls`` and the others need not pay. A field left out is None here, and
its default lives once, in the settings it feeds (``FileLimits``, ``S3Options``,
``Settings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from archiver.config import LEASE_TTL_MAX_S, LEASE_TTL_MIN_S, parse_size
from archiver.errors import UsageError
from archiver.timefmt import parse_duration


def _seconds(value: float | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    return parse_duration(value).total_seconds()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class TlsPolicy(_Strict):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class NatsPolicy(_Strict):
    url: str | None = None
    creds: Path | None = None
    nkey_seed: Path | None = None
    tls: TlsPolicy = TlsPolicy()


class S3Policy(_Strict):
    endpoint: str | None = None
    region: str | None = None
    addressing_style: Literal["path", "virtual", "auto"] | None = None
    checksum: Literal["when_required", "when_supported"] | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    multipart_threshold: int | str | None = None
    part_size: int | str | None = None

    @field_validator("multipart_threshold", "part_size")
    @classmethod
    def _size(cls, v: int | str | None) -> int | None:
        return None if v is None else parse_size(v)


class StorePolicy(_Strict):
    url: str | None = None
    s3: S3Policy = S3Policy()


class ArchivePolicy(_Strict):
    streams: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    compression_level: int | None = Field(default=None, ge=1, le=22)
    row_group_rows: int | None = Field(default=None, ge=1_000)
    file_max_rows: int | None = Field(default=None, ge=1)
    file_max_bytes: int | str | None = None
    at_risk_margin: float | str | None = None
    """None: a quarter of the stream's max_age, at most 24h (see ``auto_margin``)."""
    lease_ttl: float | str | None = None
    lease_bucket: str | None = None
    spool_dir: Path | None = None
    # How long the store keeps files (its lifecycle rule's expiry); verify then reads a
    # hole before the oldest file at that horizon as retired, not missing.
    retention: float | str | None = None

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        seconds = _seconds(v)
        if seconds < 86_400:
            raise ValueError("retention must be at least a day (e.g. 1095d)")
        return seconds

    @field_validator("file_max_bytes")
    @classmethod
    def _size(cls, v: int | str | None) -> int | None:
        return None if v is None else parse_size(v)

    @field_validator("at_risk_margin")
    @classmethod
    def _duration(cls, v: float | str | None) -> float | None:
        return None if v is None else _seconds(v)

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        # Renewed every third of it: below a second the renewals are the run's work;
        # above an hour a killed run keeps its streams from the next hourly runs.
        seconds = _seconds(v)
        if not LEASE_TTL_MIN_S <= seconds <= LEASE_TTL_MAX_S:
            raise ValueError("lease_ttl must be between 1s and 1h (default 1m)")
        return seconds


class Policy(_Strict):
    nats: NatsPolicy = NatsPolicy()
    store: StorePolicy = StorePolicy()
    archive: ArchivePolicy = ArchivePolicy()

    def values(self) -> dict[str, Any]:
        """The fields the file sets, by the names of the flags and settings they feed."""
        n, s, a = self.nats, self.store, self.archive
        named = {
            "nats_url": n.url,
            "creds": n.creds,
            "nkey_seed": n.nkey_seed,
            "tls_ca": n.tls.ca,
            "tls_cert": n.tls.cert,
            "tls_key": n.tls.key,
            "store": s.url,
            "s3_endpoint": s.s3.endpoint,
            "s3_region": s.s3.region,
            "s3_addressing_style": s.s3.addressing_style,
            "s3_checksum": s.s3.checksum,
            "s3_sse": s.s3.sse,
            "s3_sse_kms_key_id": s.s3.sse_kms_key_id,
            "s3_storage_class": s.s3.storage_class,
            "s3_multipart_threshold": s.s3.multipart_threshold,
            "s3_part_size": s.s3.part_size,
            "stream": tuple(a.streams),
            "exclude": tuple(a.exclude),
            "compression_level": a.compression_level,
            "row_group_rows": a.row_group_rows,
            "file_max_rows": a.file_max_rows,
            "file_max_bytes": a.file_max_bytes,
            "at_risk_margin": a.at_risk_margin,
            "lease_ttl": a.lease_ttl,
            "lease_bucket": a.lease_bucket,
            "spool_dir": a.spool_dir,
            "retention": a.retention,
        }
        return {key: value for key, value in named.items() if value not in (None, ())}


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file."""
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read policy file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"policy file {path} is not valid YAML{where}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"policy file {path} must be a mapping of sections (nats, store, archive)")
    try:
        return Policy.model_validate(_drop_nulls(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UsageError(f"policy file {path}: {where}: {first['msg']}{more}") from exc


def _drop_nulls(value: Any) -> Any:
    """A key left empty (``tls:`` with every line commented) means "use the default"."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value
