"""A JetStream cluster with a node down: the streams it held are unavailable (the
server lists them with zeroed state), reported loudly, and the healthy ones archived."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from conftest import NATS_VERSIONS
from helpers import nats_client, run_cli
from natsserver import NatsServer, binary_for, start_cluster

# Real processes killed, restarted or raced: slow by nature (-m 'not slow' skips them).
pytestmark = pytest.mark.slow


async def _streams_on_a_cluster(servers: list[NatsServer]) -> int:
    """R1 streams ONE and TWO, R3 stream ALL, 5 messages each; returns the index of the
    node that holds ONE."""
    async with nats_client(servers[0].url) as nc:
        js = nc.jetstream()
        for _ in range(150):  # until the cluster has elected its meta leader
            try:
                await js.add_stream(name="ONE", subjects=["one.>"], num_replicas=1)
                break
            except nats.errors.Error:
                await asyncio.sleep(0.1)
        await js.add_stream(name="TWO", subjects=["two.>"], num_replicas=1)
        for _ in range(150):  # until every peer has joined ("no suitable peers" before)
            try:
                await js.add_stream(name="ALL", subjects=["all.>"], num_replicas=3)
                break
            except nats.errors.Error:
                await asyncio.sleep(0.1)
        for subject in ("one", "two", "all") * 5:
            await js.publish(f"{subject}.x", b"x")
        info = await js.stream_info("ONE")
        assert info.cluster is not None and info.cluster.leader is not None
        return int(info.cluster.leader.removeprefix("n"))


@pytest.mark.parametrize("version", NATS_VERSIONS)
def test_a_node_down_leaves_its_streams_reported_and_the_rest_archived(
    version: str, tmp_path: Path
) -> None:
    servers = start_cluster(binary_for(version), tmp_path / "cluster")
    try:
        down = asyncio.run(_streams_on_a_cluster(servers))
        servers[down].stop()
        alive = next(s for i, s in enumerate(servers) if i != down)
        asyncio.run(_until_the_api_answers(alive.url))
        store = ["--nats-url", alive.url, "--store", str(tmp_path / "archive")]
        result = run_cli("run", *store, "--json", timeout=180)
        status = run_cli("status", *store, timeout=120)
        healthy_status = run_cli("status", *store, "--stream", "ALL", "--json", timeout=120)
    finally:
        for server in servers:
            server.stop()
    assert result.returncode == 1, result.stderr
    rows = {r["stream"]: r for r in json.loads(result.stdout)}
    assert rows["ALL"]["messages"] == 5 and rows["ALL"]["error"] is None
    assert "offline or missing on the server" in rows["ONE"]["error"]
    assert rows["ONE"]["messages"] == 0
    assert "ONE: offline or missing" in result.stderr
    # The stream TWO is where the server put it: reported if it shared ONE's node.
    assert rows["TWO"]["messages"] == 5 or "offline or missing" in rows["TWO"]["error"]
    lines = [x for x in status.stderr.splitlines() if x.strip()]
    assert status.returncode == 1 and len(lines) == 1, status.stderr
    assert "offline or missing on the server: " in lines[0] and "ONE" in lines[0]
    # A stream on a healthy node reports as usual.
    assert healthy_status.returncode == 0, healthy_status.stderr
    (row,) = json.loads(healthy_status.stdout)
    assert (row["stream"], row["archived_seq"], row["state"]) == ("ALL", 5, "ok")


async def _until_the_api_answers(url: str) -> None:
    """If the stopped node led the cluster, the others elect a new leader first."""
    async with nats_client(url) as nc:
        for _ in range(60):
            try:
                reply = await nc.request("$JS.API.STREAM.LIST", b"{}", timeout=1)
            except nats.errors.TimeoutError:
                continue
            if "error" not in json.loads(reply.data):
                return
            await asyncio.sleep(0.5)  # e.g. 503 while there is no meta leader
    raise AssertionError("the JetStream API did not answer after the node stopped")


@pytest.mark.parametrize("version", NATS_VERSIONS)
def test_a_three_replica_stream_is_restored_into_one_node_with_replicas_1(
    version: str, tmp_path: Path
) -> None:
    """What a smaller recovery cluster needs: the archived R3 stream comes back R1, the
    rest of its configuration and every message at its seq as they were."""
    from test_restore import everything

    servers = start_cluster(binary_for(version), tmp_path / "cluster")
    store = str(tmp_path / "archive")
    try:
        asyncio.run(_streams_on_a_cluster(servers))
        archived = run_cli("run", "--nats-url", servers[0].url, "--store", store, timeout=180)
        assert archived.returncode == 0, archived.stdout + archived.stderr
        before = everything(servers[0].url, ["ALL"])["ALL"]
    finally:
        for server in servers:
            server.stop()
    (tmp_path / "one").mkdir()
    single = NatsServer(binary_for(version), tmp_path / "one")
    single.start()
    try:
        args = ("restore", "--nats-url", single.url, "--store", store, "--stream", "ALL")
        r3 = run_cli(*args, "--yes")
        assert r3.returncode == 1 and "cannot make stream ALL" in r3.stderr, r3.stderr
        assert "--replicas" in r3.stderr and len(r3.stderr.splitlines()) == 1
        done = run_cli(*args, "--yes", "--replicas", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        config, first, _, messages = everything(single.url, ["ALL"])["ALL"]
    finally:
        single.stop()
    assert before[0]["num_replicas"] == 3 and config["num_replicas"] == 1
    assert {**config, "num_replicas": 3} == before[0]
    assert (first, messages) == (before[1], before[3])
