"""Metrics (Pushgateway and textfile) and logs (text and JSON) carry the documented names
and values, and never a secret."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import nats_client, publish, run_cli, stream_messages, wait_until
from natsserver import NatsServer, binary_for
from prometheus_client.parser import text_string_to_metric_families
from pushgateway import Pushgateway, pushgateway
from s3server import free_ports
from test_archive import add_streams


def samples(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("stream", ""))] = s.value
    return out


def test_run_pushes_and_writes_its_metrics(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 25))
    textfile = tmp_path / "archiver.prom"
    with pushgateway() as url:
        result = run_cli(
            "run",
            "--nats-url",
            nats.url,
            "--store",
            str(tmp_path / "a"),
            "--pushgateway",
            url,
            "--metrics-file",
            str(textfile),
        )
        assert result.returncode == 0, result.stderr
    assert Pushgateway.requests == [
        ("DELETE", "/metrics/job/nats-archiver/command/run"),  # nothing without a stream
        ("POST", "/metrics/job/nats-archiver/command/run/stream/AUTH"),
    ]
    for got in (Pushgateway.scrape(), samples(textfile.read_text())):
        assert got[("nats_archiver_messages_archived", "AUTH")] == 25
        assert got[("nats_archiver_messages_lost_total", "AUTH")] == 0
        assert got[("nats_archiver_behind_messages", "AUTH")] == 0
        assert got[("nats_archiver_run_errors", "AUTH")] == 0
        assert got[("nats_archiver_last_success_timestamp_seconds", "AUTH")] > 1.7e9
        assert got[("nats_archiver_bytes_written", "AUTH")] > 0
        assert got[("nats_archiver_expires_in_seconds", "AUTH")] == float("inf")


def test_a_run_over_some_streams_keeps_the_other_streams_metrics(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Scale-out: archivers over different streams push to the same Pushgateway; one's
    push must not wipe the other's streams."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "GATEWAY": "gateway.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    asyncio.run(publish(nats.url, "GATEWAY", ["gateway.a"] * 7))
    store = ["--nats-url", nats.url, "--store", str(tmp_path / "a")]
    with pushgateway() as url:
        first = run_cli("run", *store, "--stream", "GATEWAY", "--pushgateway", url)
        asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 3))
        second = run_cli("run", *store, "--stream", "AUTH", "--pushgateway", url)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    got = Pushgateway.scrape()
    assert got[("nats_archiver_messages_archived", "GATEWAY")] == 7
    assert got[("nats_archiver_messages_archived", "AUTH")] == 8
    assert got[("nats_archiver_last_success_timestamp_seconds", "GATEWAY")] > 1.7e9


def test_a_deleted_streams_metrics_are_removed_and_others_kept(
    nats: NatsServer, tmp_path: Path
) -> None:
    """A per-stream group outlives its stream: its last success time would age and page
    someone forever. The next run removes the groups of streams gone from the server,
    and only those (other commands' groups and other jobs stay)."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "GATEWAY": "gateway.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    asyncio.run(publish(nats.url, "GATEWAY", ["gateway.a"] * 7))
    store = ["--nats-url", nats.url, "--store", str(tmp_path / "a")]
    with pushgateway() as url:
        assert run_cli("run", *store, "--pushgateway", url).returncode == 0
        assert run_cli("status", *store, "--pushgateway", url).returncode == 0
        # Another deployment on the same Pushgateway, with its own job name.
        other = run_cli("run", *store, "--pushgateway", url, "--metrics-job", "other")
        assert other.returncode == 0, other.stderr
        asyncio.run(_delete_stream(nats.url, "GATEWAY"))
        again = run_cli("run", *store, "--pushgateway", url)
    assert again.returncode == 0, again.stderr
    assert "removed the metrics of deleted streams: GATEWAY" in again.stderr
    assert sorted(Pushgateway.groups) == [
        "/metrics/job/nats-archiver/command/run/stream/AUTH",
        "/metrics/job/nats-archiver/command/status/stream/AUTH",
        "/metrics/job/nats-archiver/command/status/stream/GATEWAY",  # status prunes its own
        "/metrics/job/other/command/run/stream/AUTH",
        "/metrics/job/other/command/run/stream/GATEWAY",
    ]


async def _delete_stream(url: str, stream: str) -> None:
    async with nats_client(url) as nc:
        await nc.jetstream().delete_stream(stream)


def test_groups_from_before_per_stream_groups_give_way(nats: NatsServer, tmp_path: Path) -> None:
    """Earlier releases kept every stream's series in one group per command; the
    Pushgateway would refuse the per-stream pushes while that group holds them."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    legacy = "/metrics/job/nats-archiver/command/run"
    with pushgateway() as url:
        Pushgateway.groups[legacy] = {
            "nats_archiver_messages_archived": [
                ("nats_archiver_messages_archived", {"stream": "AUTH"}, 1.0)
            ]
        }
        result = run_cli(
            "run", "--nats-url", nats.url, "--store", str(tmp_path / "a"), "--pushgateway", url
        )
    assert result.returncode == 0, result.stderr
    assert legacy not in Pushgateway.groups
    assert Pushgateway.scrape()[("nats_archiver_messages_archived", "AUTH")] == 5


@pytest.mark.parametrize(
    "answer",
    [(404, b"not found"), (200, b"[]"), (200, b'{"data": {}}'), (200, b"not json")],
    ids=["404", "list", "data-not-a-list", "not-json"],
)
def test_a_pushgateway_without_the_groups_api_keeps_the_exit_code(
    answer: tuple[int, bytes], nats: NatsServer, tmp_path: Path
) -> None:
    """The push works, listing the groups to prune does not: one line, and a status that
    found a stream at risk still exits 3."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    policy = tmp_path / "policy.yaml"
    policy.write_text("archive:\n  at_risk_margin: 2h\n")  # unarchived, expiring in 1h
    with pushgateway() as url:
        Pushgateway.api_answer = answer
        result = run_cli(
            "status",
            "--nats-url",
            nats.url,
            "--store",
            str(tmp_path / "a"),
            "--policy",
            str(policy),
            "--pushgateway",
            url,
        )
    assert result.returncode == 3, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Pushgateway" in lines[0], result.stderr
    assert Pushgateway.scrape()[("nats_archiver_behind_messages", "AUTH")] == 5


def test_an_unreachable_pushgateway_keeps_the_summary_and_the_worse_exit_code(
    nats: NatsServer, tmp_path: Path
) -> None:
    """The run's summary is printed and its work kept; the exit code is 1 for the lost
    metrics, unless the run itself earned 3 (messages lost)."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    (port,) = free_ports(1)  # nothing listens there
    argv = ["run", "--nats-url", nats.url, "--store", str(tmp_path / "a"), "--json"]
    unreachable = ["--pushgateway", f"http://127.0.0.1:{port}"]
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 25))
    clean = run_cli(*argv, *unreachable)
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 4))
    asyncio.run(_set_max_age(nats.url, "AUTH", 1.0))
    # Those 4 expire before the next run.
    wait_until(lambda: stream_messages(nats.url, "AUTH") == 0, "every message to expire")
    asyncio.run(_set_max_age(nats.url, "AUTH", 3600.0))  # and nothing more expires
    asyncio.run(publish(nats.url, "AUTH", ["auth.c"] * 3))
    lossy = run_cli(*argv, *unreachable)
    for result, code, messages, lost in ((clean, 1, 25, 0), (lossy, 3, 3, 4)):
        assert result.returncode == code, result.stderr
        (row,) = json.loads(result.stdout)
        assert (row["stream"], row["messages"], row["lost"]) == ("AUTH", messages, lost)
        assert "cannot deliver metrics" in result.stderr


async def _set_max_age(url: str, stream: str, seconds: float) -> None:
    async with nats_client(url) as nc:
        js = nc.jetstream()
        config = (await js.stream_info(stream)).config
        config.max_age = seconds
        config.duplicate_window = min(seconds, 120)  # may not exceed max_age
        await js.update_stream(config)


def test_json_logs_carry_no_secret(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    server = NatsServer(
        binary_for("newest"),
        tmp_path / "nats",
        extra_conf='authorization { user: archiver, password: "p4ss-w0rd-x" }',
    )
    server.start()
    try:
        url = f"nats://archiver:p4ss-w0rd-x@127.0.0.1:{server.port}"
        asyncio.run(add_streams(url, {"AUTH": "auth.>"}))
        asyncio.run(publish(url, "AUTH", ["auth.a"] * 5))
        env = {"AWS_SECRET_ACCESS_KEY": "aws-s3cret-value", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY"}
        ok = run_cli(
            "run",
            "-vv",
            "--log-format",
            "json",
            "--nats-url",
            url,
            "--store",
            str(tmp_path / "a"),
            env=env,
        )
        bad = run_cli(
            "run",
            "-vv",
            "--log-format",
            "json",
            "--nats-url",
            f"nats://archiver:wrong-s3cret@127.0.0.1:{server.port}",
            "--store",
            str(tmp_path / "b"),
            env=env,
        )
        text = run_cli("run", "-vv", "--nats-url", url, "--store", str(tmp_path / "c"), env=env)
    finally:
        server.stop()
    assert ok.returncode == 0 and bad.returncode == 1 and text.returncode == 0
    lines = [json.loads(line) for line in ok.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "name", "message"} <= set(x) for x in lines)
    (commit,) = [x for x in lines if "committed" in x["message"]]
    assert commit["stream"] == "AUTH" and (commit["first_seq"], commit["last_seq"]) == (1, 5)
    assert commit["messages"] == 5 and commit["bytes"] > 0 and commit["seconds"] >= 0
    (done,) = [x for x in lines if x.get("from_seq") is not None]
    assert (done["stream"], done["from_seq"], done["to_seq"]) == ("AUTH", 1, 5)
    assert done["messages"] == 5 and done["files"] == 1 and done["seconds"] > 0
    assert done["lost"] == 0
    for out in (ok, bad, text):
        everything = out.stdout + out.stderr
        for secret in ("p4ss-w0rd-x", "wrong-s3cret", "aws-s3cret-value"):
            assert secret not in everything
