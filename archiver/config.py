"""Settings: flags > ``ARCHIVER_*`` environment > policy file > defaults, validated once.

The policy file is YAML (see ``policies/archive-policy.yaml``, every field commented).
Every mistake is reported as one line naming the field, before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from archiver.errors import UsageError
from archiver.nats.options import NatsOptions
from archiver.store.options import S3Options
from archiver.timefmt import parse_duration

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_STORE = "./archive"
CHECKPOINT_BUCKET = "archiver-replays"
"""KV bucket on a replay's target holding each replay's acknowledged prefix."""
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}


LEASE_TTL_MIN_S, LEASE_TTL_MAX_S = 1.0, 3600.0


@dataclass(frozen=True, slots=True)
class FileLimits:
    """How data files are cut and written: zstd level, row group and file sizes."""

    compression_level: int = 3
    row_group_rows: int = 50_000
    max_rows: int = 5_000_000
    max_bytes: int = 256 << 20


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 256MiB)")
    return int(m[1]) * _SIZE_UNITS[m[2]]


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
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    checksum: Literal["when_required", "when_supported"] = "when_required"
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    multipart_threshold: int | str = "64MiB"
    part_size: int | str = "16MiB"

    @field_validator("multipart_threshold", "part_size")
    @classmethod
    def _size(cls, v: int | str) -> int:
        return parse_size(v)


class StorePolicy(_Strict):
    url: str | None = None
    s3: S3Policy = S3Policy()


class ArchivePolicy(_Strict):
    streams: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    compression_level: int = Field(default=3, ge=1, le=22)
    row_group_rows: int = Field(default=50_000, ge=1_000)
    file_max_rows: int = Field(default=5_000_000, ge=1)
    file_max_bytes: int | str = "256MiB"
    at_risk_margin: float | str | None = None
    """None: a quarter of the stream's max_age, at most 24h (see ``auto_margin``)."""
    lease_ttl: float | str = "1m"
    lease_bucket: str = "archiver-leases"
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
    def _size(cls, v: int | str) -> int:
        return parse_size(v)

    @field_validator("at_risk_margin")
    @classmethod
    def _duration(cls, v: float | str | None) -> float | None:
        return None if v is None else _seconds(v)

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, v: float | str) -> float:
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


def load_policy(path: Path | None) -> Policy:
    """Read and validate a policy file; None gives the defaults."""
    if path is None:
        return Policy()
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs, resolved and validated."""

    nats: NatsOptions
    store_url: str
    s3: S3Options
    streams: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    limits: FileLimits = field(default_factory=FileLimits)
    at_risk_margin_s: float | None = None
    lease_bucket: str = "archiver-leases"
    lease_ttl_s: float = 60.0
    spool_dir: Path | None = None
    retention_s: float | None = None


def resolve(flags: dict[str, Any]) -> Settings:
    """Merge flags and environment (already merged by click, None when unset) over the
    policy file and defaults."""
    policy = load_policy(flags.get("policy"))
    n, s, a = policy.nats, policy.store, policy.archive

    def pick(flag: str, from_policy: Any, default: Any = None) -> Any:
        value = flags.get(flag)
        if value is not None and value != ():
            return value
        return from_policy if from_policy is not None else default

    nats_opts = NatsOptions(
        url=pick("nats_url", n.url, DEFAULT_NATS_URL),
        creds=pick("creds", n.creds),
        nkey_seed=pick("nkey_seed", n.nkey_seed),
        tls_ca=pick("tls_ca", n.tls.ca),
        tls_cert=pick("tls_cert", n.tls.cert),
        tls_key=pick("tls_key", n.tls.key),
    )
    s3 = S3Options(
        endpoint_url=pick("s3_endpoint", s.s3.endpoint),
        region=s.s3.region,
        addressing_style=pick("s3_addressing_style", s.s3.addressing_style),
        checksum=pick("s3_checksum", s.s3.checksum),
        sse=pick("s3_sse", s.s3.sse),
        sse_kms_key_id=pick("s3_sse_kms_key_id", s.s3.sse_kms_key_id),
        storage_class=pick("s3_storage_class", s.s3.storage_class),
        multipart_threshold=int(s.s3.multipart_threshold),
        part_size=int(s.s3.part_size),
    )
    limits = FileLimits(
        compression_level=a.compression_level,
        row_group_rows=a.row_group_rows,
        max_rows=a.file_max_rows,
        max_bytes=int(a.file_max_bytes),
    )
    return Settings(
        nats=nats_opts,
        store_url=pick("store", s.url, DEFAULT_STORE),
        s3=s3,
        streams=tuple(pick("stream", a.streams, ())),
        exclude=tuple(a.exclude),
        limits=limits,
        at_risk_margin_s=None if a.at_risk_margin is None else float(a.at_risk_margin),
        lease_bucket=a.lease_bucket,
        lease_ttl_s=float(a.lease_ttl),
        spool_dir=pick("spool_dir", a.spool_dir),
        retention_s=None if a.retention is None else float(a.retention),
    )
