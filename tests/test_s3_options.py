"""S3 write options (encryption, storage class, addressing, checksums) reach the server
from flags and environment, on every kind of write, and bad ones are refused up front."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from botocore.awsrequest import AWSPreparedRequest
from helpers import publish, run_cli
from natsserver import NatsServer
from s3server import SeaweedS3
from test_archive import add_streams

from archiver.store.options import S3Options
from archiver.store.s3 import S3Store


def _archive_with(
    nats: NatsServer, s3: SeaweedS3, tmp_path: Path, *flags: str, env: dict[str, str] | None = None
) -> str:
    """Archive 300 messages into a fresh prefix and return it. Every data file goes up
    as a multipart upload (threshold 1 byte), gap and run records as single PUTs."""
    asyncio.run(add_streams(nats.url, {"ORDERS": "orders.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "ORDERS", [f"orders.{i % 3}" for i in range(300)]))
    asyncio.run(_delete_first(nats.url))  # a gap record: one small PUT besides the run record
    policy = tmp_path / "policy.yaml"
    policy.write_text("store:\n  s3:\n    multipart_threshold: 1\n")
    prefix = f"opts-{uuid.uuid4().hex[:10]}"
    result = run_cli(
        "run",
        "--nats-url",
        nats.url,
        "--store",
        f"s3://{s3.bucket}/{prefix}",
        "--policy",
        str(policy),
        *flags,
        env={**s3.env(), **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return prefix


async def _delete_first(url: str) -> None:
    from helpers import nats_client

    async with nats_client(url) as nc:
        await nc.jetstream().purge_stream("ORDERS", keep=290)


def _heads(s3: SeaweedS3, prefix: str) -> dict[str, dict[str, str]]:
    client = s3.client()
    listing = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    heads = {}
    for key in keys:
        head = client.head_object(Bucket=s3.bucket, Key=key)
        heads[key] = {
            "class": head.get("StorageClass", "STANDARD"),
            "sse": head.get("ServerSideEncryption", ""),
        }
    return heads


def _kinds(heads: dict[str, dict[str, str]]) -> set[str]:
    return {"data" if k.endswith(".parquet") else k.split("/")[-2] for k in heads}


def test_flags_encrypt_and_class_every_object(
    nats: NatsServer, s3_env: SeaweedS3, tmp_path: Path
) -> None:
    prefix = _archive_with(
        nats, s3_env, tmp_path, "--s3-sse", "AES256", "--s3-storage-class", "STANDARD_IA"
    )
    heads = _heads(s3_env, prefix)
    # The no-clobber probe too: a bucket policy that denies unencrypted writes would
    # refuse it, and with it every run.
    assert _kinds(heads) == {"data", "_gaps", "_runs", "_commits", "_probe", "_state"}
    assert all(h == {"class": "STANDARD_IA", "sse": "AES256"} for h in heads.values()), heads
    # Encrypted objects read back as before: verify reads every byte.
    verify = run_cli("verify", "--store", f"s3://{s3_env.bucket}/{prefix}", env=s3_env.env())
    assert verify.returncode == 0, verify.stderr


def test_environment_sets_the_same_options(
    nats: NatsServer, s3_env: SeaweedS3, tmp_path: Path
) -> None:
    env = {"ARCHIVER_S3_SSE": "AES256", "ARCHIVER_S3_STORAGE_CLASS": "STANDARD_IA"}
    prefix = _archive_with(nats, s3_env, tmp_path, env=env)
    heads = _heads(s3_env, prefix)
    assert heads and all(h == {"class": "STANDARD_IA", "sse": "AES256"} for h in heads.values())


def test_without_options_the_bucket_defaults_apply(
    nats: NatsServer, s3_env: SeaweedS3, tmp_path: Path
) -> None:
    prefix = _archive_with(nats, s3_env, tmp_path)
    heads = _heads(s3_env, prefix)
    assert heads and all(h == {"class": "STANDARD", "sse": ""} for h in heads.values())


def test_kms_key_id_goes_with_every_write(s3_env: SeaweedS3, tmp_path: Path) -> None:
    """SeaweedFS has no KMS configured here, so SSE-KMS is checked as the request leaves
    boto3: a single PUT and a multipart upload both carry the mode and the key id."""
    options = S3Options(
        endpoint_url=s3_env.endpoint,
        sse="aws:kms",
        sse_kms_key_id="alias/archive",
        multipart_threshold=1,
    )
    store = S3Store(s3_env.bucket, "kms", options)
    sent: list[dict[str, str]] = []

    def capture(request: AWSPreparedRequest, **_: object) -> None:
        sent.append({k.lower(): _text(v) for k, v in request.headers.items()})
        raise _Stop

    store.client.meta.events.register("before-send.s3.*", capture)
    (tmp_path / "f").write_bytes(b"x" * 100)
    with pytest.raises(_Stop):
        store.put_bytes("small", b"x")
    with pytest.raises(_Stop):
        store.put_file("large", tmp_path / "f", "0" * 64)
    assert len(sent) == 2
    for headers in sent:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/archive"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--s3-sse-kms-key-id", "alias/archive"], "needs server-side encryption aws:kms"),
        (["--s3-sse", "AES256", "--s3-sse-kms-key-id", "k"], "needs server-side encryption"),
        (["--s3-storage-class", "GLACIER"], "needs a restore before every read"),
        (["--s3-storage-class", "DEEP_ARCHIVE"], "lifecycle policy"),
        (["--s3-sse", "SSE-C"], "Invalid value for '--s3-sse'"),
        (["--s3-addressing-style", "dns"], "Invalid value for '--s3-addressing-style'"),
    ],
)
def test_bad_s3_options_are_refused_before_any_work(
    flags: list[str], says: str, tmp_path: Path
) -> None:
    result = run_cli("run", "--nats-url", "nats://127.0.0.1:9", "--store", "s3://b/p", *flags)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_flag_beats_policy(tmp_path: Path) -> None:
    from archiver.config import resolve

    policy = tmp_path / "policy.yaml"
    policy.write_text("store:\n  s3:\n    storage_class: STANDARD_IA\n    sse: AES256\n")
    from_policy = resolve({"policy": policy})
    assert (from_policy.s3.storage_class, from_policy.s3.sse) == ("STANDARD_IA", "AES256")
    from_flag = resolve({"policy": policy, "s3_storage_class": "ONEZONE_IA"})
    assert (from_flag.s3.storage_class, from_flag.s3.sse) == ("ONEZONE_IA", "AES256")
    assert resolve({}).s3.addressing_style == "path"
    assert resolve({"s3_addressing_style": "virtual"}).s3.addressing_style == "virtual"


def test_verify_of_an_empty_prefix_says_there_is_no_archive(s3_env: SeaweedS3) -> None:
    url = f"s3://{s3_env.bucket}/natz-typo"
    result = run_cli("verify", "--store", url, env=s3_env.env())
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"archiver: error: no archive at {url}; check --store: it holds nothing the archiver wrote"
    ]
    listing = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix="natz-typo")
    assert listing.get("KeyCount", 0) == 0, "a read-only command wrote something"
