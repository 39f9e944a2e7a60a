"""Settings: flags > ``ARCHIVER_*`` environment > policy file > defaults, validated once.

The policy file is YAML (see ``policies/archive-policy.yaml``, every field commented).
Every mistake is reported as one line naming the field, before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.nats.options import NatsOptions
from archiver.store.options import S3Options

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
    merged: dict[str, Any] = {}
    if flags.get("policy") is not None:
        from archiver.policy import load_policy

        merged.update(load_policy(flags["policy"]).values())
    merged.update({k: v for k, v in flags.items() if v is not None and v != ()})

    def given(**names: str) -> dict[str, Any]:
        """Keyword arguments for the settings that were given; the rest keep their
        dataclass defaults, the one place a default is written."""
        return {arg: merged[name] for arg, name in names.items() if name in merged}

    nats_opts = NatsOptions(
        **given(
            url="nats_url",
            creds="creds",
            nkey_seed="nkey_seed",
            tls_ca="tls_ca",
            tls_cert="tls_cert",
            tls_key="tls_key",
        ),
    )
    s3 = S3Options(
        **given(
            endpoint_url="s3_endpoint",
            region="s3_region",
            addressing_style="s3_addressing_style",
            checksum="s3_checksum",
            sse="s3_sse",
            sse_kms_key_id="s3_sse_kms_key_id",
            storage_class="s3_storage_class",
            multipart_threshold="s3_multipart_threshold",
            part_size="s3_part_size",
        )
    )
    limits = FileLimits(
        **given(
            compression_level="compression_level",
            row_group_rows="row_group_rows",
            max_rows="file_max_rows",
            max_bytes="file_max_bytes",
        )
    )
    return Settings(
        nats=nats_opts,
        store_url=merged.get("store", DEFAULT_STORE),
        s3=s3,
        streams=tuple(merged.get("stream", ())),
        exclude=tuple(merged.get("exclude", ())),
        limits=limits,
        **given(
            at_risk_margin_s="at_risk_margin",
            lease_bucket="lease_bucket",
            lease_ttl_s="lease_ttl",
            spool_dir="spool_dir",
            retention_s="retention",
        ),
    )
