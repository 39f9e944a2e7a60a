"""Each NATS auth mode against a real nats-server configured for it; wrong credentials
give one line and exit 1."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import natsjwt
import nkeys
import pytest
import trustme
from conftest import NATS_VERSIONS
from helpers import run_cli
from natsserver import NatsServer, binary_for

STREAM_CONF = "jetstream: enabled\n"


def start(tmp_path: Path, conf: str, version: str = "newest") -> NatsServer:
    (tmp_path / "nats").mkdir(exist_ok=True)
    server = NatsServer(binary_for(version), tmp_path / "nats", extra_conf=conf)
    server.start()
    return server


def run_ok(args: list[str], tmp_path: Path) -> None:
    result = run_cli("run", *args, "--store", str(tmp_path / "archive"), "--json")
    assert result.returncode == 0, result.stderr


def run_refused(args: list[str], tmp_path: Path, secret: str = "") -> None:
    result = run_cli("run", *args, "--store", str(tmp_path / "refused"))
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    if secret:
        assert secret not in result.stderr + result.stdout


def test_token(tmp_path: Path) -> None:
    server = start(tmp_path, 'authorization { token: "t0ken-s3cret" }')
    try:
        run_ok(["--nats-url", f"nats://t0ken-s3cret@127.0.0.1:{server.port}"], tmp_path)
        run_refused(
            ["--nats-url", f"nats://wr0ng-t0ken@127.0.0.1:{server.port}"], tmp_path, "wr0ng-t0ken"
        )
    finally:
        server.stop()


def test_nkey_seed(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    server = start(tmp_path, f"authorization {{ users = [ {{ nkey: {public} }} ] }}")
    try:
        url = ["--nats-url", f"nats://127.0.0.1:{server.port}"]
        run_ok([*url, "--nkey-seed", str(seed_file)], tmp_path)
        run_refused([*url, "--nkey-seed", str(other)], tmp_path, other.read_text())
    finally:
        server.stop()


@pytest.mark.parametrize("version", NATS_VERSIONS)
def test_creds_file(version: str, tmp_path: Path) -> None:
    """Operator mode (decentralised JWT auth): the user's creds file holds its JWT and
    seed; a user whose account the server does not know is refused."""
    op = natsjwt.operator()
    system = natsjwt.account(op, "SYS")
    app = natsjwt.account(op, "APP", natsjwt.UNLIMITED_ACCOUNT)
    good = tmp_path / "archiver.creds"
    good.write_text(natsjwt.creds(natsjwt.user(app, "archiver")))
    stranger = natsjwt.user(natsjwt.account(op, "UNKNOWN", natsjwt.UNLIMITED_ACCOUNT), "x")
    bad = tmp_path / "stranger.creds"
    bad.write_text(natsjwt.creds(stranger))
    server = start(tmp_path, natsjwt.server_conf(op, system, [app]), version)
    try:
        url = ["--nats-url", f"nats://127.0.0.1:{server.port}"]
        asyncio.run(_stream_as(server.url, good))
        run_ok([*url, "--creds", str(good)], tmp_path)
        assert list((tmp_path / "archive").glob("stream=EVENTS/date=*/*.parquet"))
        run_refused([*url, "--creds", str(bad)], tmp_path, stranger.seed.decode())
        run_refused(url, tmp_path)  # no credentials at all
    finally:
        server.stop()


async def _stream_as(url: str, creds: Path) -> None:
    nc = await nats.connect(url, user_credentials=str(creds))
    try:
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        for i in range(10):
            await js.publish(f"events.{i}", b"x")
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN NATS USER JWT-----\nnot a jwt\n",
        "",
        # A JWT without its seed: a half-copied secret.
        "-----BEGIN NATS USER JWT-----\na.b.c\n------END NATS USER JWT------\n",
    ],
    ids=["truncated", "empty", "no-seed"],
)
def test_unusable_creds_file_is_a_usage_error(text: str, tmp_path: Path) -> None:
    creds = tmp_path / "broken.creds"
    creds.write_text(text)
    result = run_cli(
        "run",
        "--nats-url",
        "nats://127.0.0.1:9",
        "--creds",
        str(creds),
        "--store",
        str(tmp_path / "a"),
    )
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "does not hold a user JWT and nkey seed" in result.stderr
    assert not (tmp_path / "a").exists()


def test_commands_that_never_connect_ignore_a_stale_creds_setting(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    env = {"ARCHIVER_CREDS": str(tmp_path / "gone.creds")}
    for command in ("ls", "verify"):
        result = run_cli(command, "--store", str(tmp_path / "a"), env=env)
        assert "credentials file" not in result.stderr, result.stderr
    refused = run_cli("status", "--store", str(tmp_path / "a"), env=env)
    assert refused.returncode == 2 and "does not exist" in refused.stderr


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("archiver@example.test")
    paths = {
        name: tmp_path / f"{name}.pem"
        for name in ("ca", "server", "server_key", "client", "client_key")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(paths["server"]))
    server_cert.private_key_pem.write_to_path(str(paths["server_key"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["client"]))
    client_cert.private_key_pem.write_to_path(str(paths["client_key"]))
    return paths


def test_tls_with_a_private_ca(tmp_path: Path, certs: dict[str, Path]) -> None:
    conf = f'tls {{ cert_file: "{certs["server"]}", key_file: "{certs["server_key"]}" }}'
    server = start(tmp_path, conf)
    try:
        url = ["--nats-url", f"tls://127.0.0.1:{server.port}"]
        run_ok([*url, "--tls-ca", str(certs["ca"])], tmp_path)
        run_refused(url, tmp_path)  # the system trust store does not know our CA
    finally:
        server.stop()


def test_mutual_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    conf = (
        f'tls {{ cert_file: "{certs["server"]}", key_file: "{certs["server_key"]}", '
        f'ca_file: "{certs["ca"]}", verify: true }}'
    )
    server = start(tmp_path, conf)
    try:
        url = ["--nats-url", f"tls://127.0.0.1:{server.port}", "--tls-ca", str(certs["ca"])]
        run_ok(
            [*url, "--tls-cert", str(certs["client"]), "--tls-key", str(certs["client_key"])],
            tmp_path,
        )
        run_refused(url, tmp_path)  # no client certificate
    finally:
        server.stop()


def test_missing_credential_files_are_usage_errors(tmp_path: Path) -> None:
    for flag in ("--creds", "--nkey-seed"):
        result = run_cli("run", flag, str(tmp_path / "nope"), "--store", str(tmp_path / "a"))
        assert result.returncode == 2 and "does not exist" in result.stderr
