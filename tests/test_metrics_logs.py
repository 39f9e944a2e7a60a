"""Metrics (Pushgateway and textfile) and logs (text and JSON) carry the documented names
and values, and never a secret."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

from helpers import publish, run_cli
from natsserver import NatsServer, binary_for
from prometheus_client.parser import text_string_to_metric_families
from s3server import free_ports
from test_archive import add_streams


def samples(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("stream", ""))] = s.value
    return out


class Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        Receiver.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


def test_run_pushes_and_writes_its_metrics(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 25))
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.bodies = []
    try:
        textfile = tmp_path / "archiver.prom"
        result = run_cli(
            "run",
            "--nats-url",
            nats.url,
            "--store",
            str(tmp_path / "a"),
            "--pushgateway",
            f"http://127.0.0.1:{server.server_port}",
            "--metrics-file",
            str(textfile),
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
    ((path, body),) = Receiver.bodies
    assert path == "/metrics/job/nats-archiver/command/run"
    for text in (body.decode(), textfile.read_text()):
        got = samples(text)
        assert got[("nats_archiver_messages_archived", "AUTH")] == 25
        assert got[("nats_archiver_messages_lost_total", "AUTH")] == 0
        assert got[("nats_archiver_behind_messages", "AUTH")] == 0
        assert got[("nats_archiver_run_errors", "AUTH")] == 0
        assert got[("nats_archiver_last_success_timestamp_seconds", "AUTH")] > 1.7e9
        assert got[("nats_archiver_bytes_written", "AUTH")] > 0
        assert got[("nats_archiver_expires_in_seconds", "AUTH")] == float("inf")


def test_an_unreachable_pushgateway_keeps_the_summary_and_the_worse_exit_code(
    nats: NatsServer, tmp_path: Path
) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 25))
    (port,) = free_ports(1)  # nothing listens there
    result = run_cli(
        "run",
        "--nats-url",
        nats.url,
        "--store",
        str(tmp_path / "a"),
        "--json",
        "--pushgateway",
        f"http://127.0.0.1:{port}",
    )
    assert result.returncode == 1
    (row,) = json.loads(result.stdout)
    assert (row["stream"], row["messages"], row["error"]) == ("AUTH", 25, None)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "cannot deliver metrics" in lines[0], result.stderr


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
