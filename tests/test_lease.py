"""Leases that tell the truth: their TTL is the policy's, they say who holds them, and a
stopped run gives them back at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import lease_released, nats_client, publish, read_archive, run_cli, wait_until
from natsserver import NatsServer
from test_archive import add_streams
from test_crash import write_policy
from test_fence import _stopped

from archiver.archive.lease import Leases
from archiver.config import resolve
from archiver.errors import LeaseHeld
from archiver.store import open_store

N = 3000


def test_the_default_lease_is_taken_over_within_a_minute() -> None:
    """A run killed with SIGKILL (an OOM kill, a lost node) cannot release its lease: the
    next hourly run, or the Job's retry, must not skip the stream for long."""
    assert resolve({}).lease_ttl_s == 60


def test_a_bucket_made_with_another_ttl_is_set_to_the_policys(nats: NatsServer) -> None:
    """The server keeps a bucket's TTL from its creation: a lease_ttl raised later was
    silently ignored, and a second run took a lease the first still believed it held."""

    async def case() -> float | None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await js.create_key_value(bucket="leases", history=1, ttl=3)
            lease = await Leases(nc, "leases", ttl=60).acquire("AUTH")
            await lease.release()
            return (await js.stream_info("KV_leases")).config.max_age

    assert asyncio.run(case()) == 60


def test_a_leased_stream_says_who_holds_it_and_until_when(nats: NatsServer) -> None:
    async def case() -> str:
        async with nats_client(nats.url) as nc:
            held = await Leases(nc, "leases", ttl=30).acquire("AUTH")
            try:
                await Leases(nc, "leases", ttl=30).acquire("AUTH")
            except LeaseHeld as exc:
                return str(exc)
            finally:
                await held.release()
            raise AssertionError("the second acquire took a held lease")

    message = asyncio.run(case())
    assert f"pid {os.getpid()}" in message and "host " in message, message
    assert "started 20" in message and "runs until 20" in message, message


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_releases_its_lease_and_spool_and_says_so(
    nats: NatsServer, tmp_path: Path, signum: int
) -> None:
    """Kubernetes stops pods with SIGTERM: the next run must archive at once, not skip
    the stream as leased until the lease runs out."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.{i % 9}" for i in range(N)]))
    root = tmp_path / "archive"
    spool = tmp_path / "spool"
    spool.mkdir()
    policy = write_policy(tmp_path, str(root), lease_ttl="1h", spool_dir=str(spool))
    proc = subprocess.Popen(
        [sys.executable, "-m", "archiver", "run", "--nats-url", nats.url, "--policy", str(policy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Freeze in the middle of the second file, a spool file open.
        env={**os.environ, "ARCHIVER_FAILPOINTS": "after-write:2=stop"},
    )
    wait_until(lambda: _stopped(proc.pid), "the run to reach the middle of a file")
    assert list(spool.iterdir()), "a spool file is being written"
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines()[-1] == (
        f"archiver: stopped by {name}: leases released, nothing half-written was committed; "
        "the next run resumes where this one stopped"
    )
    assert list(spool.iterdir()) == []
    assert lease_released(nats.url, "AUTH")  # at once: the lease's TTL is an hour
    again = run_cli("run", "--nats-url", nats.url, "--policy", str(policy), "--json")
    assert again.returncode == 0, again.stderr
    (row,) = json.loads(again.stdout)
    # The stopped run committed its whole files and nothing else: one, or two when the
    # freeze came on the write that filled the second (a reader's batches vary in size,
    # and the cutter's thread finishes the commit it was in the middle of).
    assert row["skipped"] is None and row["from_seq"] in (501, 1001)
    seqs = read_archive(open_store(str(root)), tmp_path)
    assert sorted(seqs.column("seq").to_pylist()) == list(range(1, N + 1))


@pytest.mark.slow
def test_a_killed_runs_streams_are_archived_within_a_minute(
    nats: NatsServer, tmp_path: Path
) -> None:
    """SIGKILL (an OOM kill, a lost node) cannot release a lease. With the default
    lease_ttl the next run, a minute later at most, archives every stream: none is
    skipped while the archive falls behind."""
    streams = {"AUTH": "auth.>", "SFS": "sfs.>"}
    asyncio.run(add_streams(nats.url, streams))
    for name, subject in streams.items():
        asyncio.run(publish(nats.url, name, [subject.replace(">", "x")] * 1000))
    root = tmp_path / "archive"
    args = ("run", "--nats-url", nats.url, "--store", str(root), "--json")
    killed = run_cli(*args, env={"ARCHIVER_FAILPOINTS": "after-read:1"})
    assert killed.returncode == -signal.SIGKILL
    assert not lease_released(nats.url, "AUTH"), "the killed run held AUTH's lease"
    wait_until(lambda: lease_released(nats.url, "AUTH"), "the lease to lapse", timeout=75)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)
    assert [(r["stream"], r["skipped"], r["messages"]) for r in rows] == [
        ("AUTH", None, 1000),
        ("SFS", None, 1000),
    ]


def test_another_deployments_lease_bucket_is_not_archived(nats: NatsServer, tmp_path: Path) -> None:
    """Every stream is archived by default, but not what an archiver made for itself:
    known by its mark, not only by this deployment's bucket name."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))

    async def other_deployment() -> None:
        async with nats_client(nats.url) as nc:
            lease = await Leases(nc, "team-b-leases", ttl=30).acquire("AUTH")
            await lease.release()

    asyncio.run(other_deployment())
    done = run_cli("run", "--nats-url", nats.url, "--store", str(tmp_path / "a"), "--json")
    assert done.returncode == 0, done.stderr
    assert [r["stream"] for r in json.loads(done.stdout)] == ["AUTH"]
