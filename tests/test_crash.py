"""Crashes, restarts and races: whatever fails, no message is missing or stored twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import data_keys, lease_released, publish, read_archive, run_cli, wait_until
from natsserver import NatsServer
from test_archive import add_streams

from archiver.store import Store, open_store

# Real processes killed, restarted or raced: slow by nature (-m 'not slow' skips them).
pytestmark = pytest.mark.slow

N = 3000


def write_policy(tmp_path: Path, store_url: str, **archive: object) -> Path:
    """Small files (500 rows) so a run commits several, and a short lease for restarts."""
    fields = {"file_max_rows": 500, "row_group_rows": 1000, "lease_ttl": "2s", **archive}
    lines = [
        "store:",
        f"  url: {store_url}",
        "  s3:",
        "    multipart_threshold: 5MiB",
        "    part_size: 5MiB",
        "archive:",
    ]
    lines += [f"  {k}: {v}" for k, v in fields.items()]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_exactly_once(store: Store, tmp_path: Path, expected: list[int]) -> None:
    seqs = read_archive(store, tmp_path).column("seq").to_pylist()
    assert len(seqs) == len(set(seqs)), "a message is stored twice"
    assert sorted(seqs) == expected, "messages are missing"


@pytest.fixture
def stream(nats: NatsServer) -> NatsServer:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 50}.login" for i in range(N)]))
    return nats


@pytest.mark.parametrize(
    "failpoint",
    [
        "after-read:1",
        "after-write:3",
        "mid-upload:2",
        "before-commit:2",
        "after-commit:1",
        "after-commit:3",
    ],
)
def test_sigkill_at_each_stage_then_rerun(
    stream: NatsServer, tmp_path: Path, failpoint: str
) -> None:
    root = str(tmp_path / "archive")
    policy = write_policy(tmp_path, root)
    killed = run_cli(
        "run",
        "--nats-url",
        stream.url,
        "--policy",
        str(policy),
        env={"ARCHIVER_FAILPOINTS": failpoint},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_until(lambda: lease_released(stream.url, "AUTH"), "the dead run's lease to run out")
    rerun = run_cli("run", "--nats-url", stream.url, "--policy", str(policy), "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)[0]["skipped"] is None
    assert_exactly_once(open_store(root), tmp_path, list(range(1, N + 1)))


def test_sigkill_mid_multipart_upload_to_s3(
    stream: NatsServer, s3_env: object, s3_store: Store, tmp_path: Path
) -> None:
    url = f"s3://{s3_store.bucket}/{s3_store.prefix}"  # type: ignore[attr-defined]
    # Incompressible payloads so a file exceeds the 5 MiB multipart threshold.
    for _ in range(24):
        asyncio.run(publish(stream.url, "AUTH", ["auth.rand"], payload=os.urandom(900_000)))
    policy = write_policy(tmp_path, url, file_max_rows=100_000)
    killed = run_cli(
        "run",
        "--nats-url",
        stream.url,
        "--policy",
        str(policy),
        env={"ARCHIVER_FAILPOINTS": "mid-upload:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not data_keys(s3_store), "a half-uploaded file became visible"
    wait_until(lambda: lease_released(stream.url, "AUTH"), "the dead run's lease to run out")
    rerun = run_cli("run", "--nats-url", stream.url, "--policy", str(policy))
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(s3_store, tmp_path, list(range(1, N + 25)))


def test_two_runs_at_once_store_nothing_twice(stream: NatsServer, tmp_path: Path) -> None:
    root = str(tmp_path / "archive")
    policy = write_policy(tmp_path, root, lease_ttl="30s")
    cmd = [
        sys.executable,
        "-m",
        "archiver",
        "run",
        "--nats-url",
        stream.url,
        "--policy",
        str(policy),
        "--json",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    results = [json.loads(o[0])[0] for o in outs]
    assert sum(r["messages"] for r in results) == N
    assert_exactly_once(open_store(root), tmp_path, list(range(1, N + 1)))


def test_nats_restart_mid_run(nats: NatsServer, tmp_path: Path) -> None:
    total = 60_000
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 50}.login" for i in range(total)]))
    root = tmp_path / "archive"
    policy = write_policy(tmp_path, str(root), file_max_rows=2000, lease_ttl="60s")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archiver",
            "run",
            "-v",
            "--nats-url",
            nats.url,
            "--policy",
            str(policy),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(root.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    nats.restart()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "reconnected" in err, "the restart did not happen while the run was reading"
    assert json.loads(out)[0]["messages"] == total
    assert_exactly_once(open_store(str(root)), tmp_path, list(range(1, total + 1)))
