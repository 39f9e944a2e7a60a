"""Fault campaign: does any fault make the archive lose or duplicate a message?

Each trial runs ``archiver run`` as the CronJob does (a fresh process, the policy file)
while publishers keep writing into five streams on a real 3-node cluster (AUTH
replicated on all three), and hits it with one fault drawn at random: SIGKILL, SIGTERM
or SIGSTOP at a random moment (the frozen run is woken after another run took over),
a second run with another policy at the same time, a node killed (the stream leader
included) or a leader step-down, an S3 fault from a proxy in front of SeaweedFS on one
call kind, or the spool running out of room. Then, with every fault cleared: a clean
run, ``archiver verify``, and the newly archived seqs compared message for message
with what the servers store. Prints a Markdown table per fault kind (progress on
stderr) and exits 1 if any trial lost or duplicated a message.

    python bench/faults.py --trials 100 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pyarrow.parquet as pq
from common import archiver_command, say  # also puts tests/ on sys.path
from natsserver import newest_binary, start_cluster
from s3server import FaultProxy, SeaweedS3

from archiver.format import catalog
from archiver.nats.api import get_message, stream_info
from archiver.nats.conn import connect
from archiver.nats.options import NatsOptions
from archiver.store.options import S3Options
from archiver.store.s3 import S3Store

STREAMS = {"AUTH": 3, "COMPUTE": 1, "GATEWAY": 1, "SFS": 1, "NOTIFICATIONS": 1}
"""Stream name -> replicas."""
LEASE_TTL_S = 2
S3_CALLS = {
    "PUT": r"^PUT (?!.*(partNumber|uploadId))",
    "multipart-create": r"^POST .*\?uploads",
    "multipart-part": r"^PUT .*partNumber=",
    "multipart-complete": r"^POST .*uploadId=",
    "GET": r"^GET .*\.json",
    "ranged-GET": r"^GET .*\.parquet",
    "LIST": r"^GET [^ ]*list-type=2",
    "HEAD": r"^HEAD ",
}
S3_FAULTS = ("503", "500", "reset", "stall", "truncate")
FAULTS = (
    "sigkill",
    "sigterm",
    "sigstop",
    "second-run",
    "node-kill",
    "leader-kill",
    "step-down",
    "s3",
    "spool-full",
)


@dataclass
class Trial:
    fault: str
    detail: str = ""
    faulted_exit: int | None = None
    clean_exit: int | None = None
    verify_exit: int | None = None
    compared: int = 0
    lost: int = 0
    duplicated: int = 0
    differing: int = 0

    @property
    def ok(self) -> bool:
        whole = self.clean_exit == 0 and self.verify_exit == 0
        return whole and not (self.lost or self.duplicated or self.differing)


class Publishers(threading.Thread):
    """Publishes into every stream until stopped, riding out node restarts. What was
    stored is read back from the servers, so a failed publish needs no bookkeeping."""

    def __init__(self, urls: list[str], per_second: float) -> None:
        super().__init__(daemon=True)
        self.urls, self.pause = urls, 1 / per_second
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._publish())

    async def _publish(self) -> None:
        async def quiet(exc: Exception) -> None:
            """Node restarts are the campaign's own doing: no need to log them."""

        nc = await nats.connect(servers=self.urls, max_reconnect_attempts=-1, error_cb=quiet)
        js = nc.jetstream(timeout=2)
        i = 0
        while not self.done.is_set():
            for name in STREAMS:
                headers = {"Trace": f"t-{i}"} if i % 3 == 0 else None
                try:
                    await js.publish(f"{name.lower()}.e{i % 5}", os.urandom(200), headers=headers)
                except Exception:
                    await asyncio.sleep(0.1)
            i += 1
            await asyncio.sleep(self.pause)
        await nc.close()


class Lab:
    """The servers, the proxy, the publishers, and the archive they all work on."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.nodes = start_cluster(newest_binary(), root / "nats")
        self.urls = [n.url for n in self.nodes]
        self.s3 = SeaweedS3()
        self.s3.start()
        os.environ.update(self.s3.env())  # this process's own reads of the archive
        self.proxy = FaultProxy(self.s3.port)
        self.prefix = f"faults-{int(time.time())}"
        self.store_url = f"s3://{self.s3.bucket}/{self.prefix}"
        self.store = S3Store(
            self.s3.bucket,
            self.prefix,
            S3Options(endpoint_url=self.s3.endpoint, region="us-east-1"),
        )
        asyncio.run(self._create_streams())
        self.publishers = Publishers(self.urls, per_second=20)
        self.publishers.start()
        self.compared_to: dict[str, int] = defaultdict(int)

    async def _create_streams(self) -> None:
        nc = await nats.connect(servers=self.urls)
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        for name, replicas in STREAMS.items():
            while True:
                try:
                    await js.add_stream(
                        name=name, subjects=[f"{name.lower()}.>"], num_replicas=replicas
                    )
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        await nc.close()

    def close(self) -> None:
        self.publishers.done.set()
        self.publishers.join(10)
        self.proxy.close()
        self.s3.stop()
        for node in self.nodes:
            node.stop()

    # -- running the archiver

    def policy(self, name: str, file_max_rows: int) -> Path:
        path = self.root / f"{name}.yaml"
        spool = self.root / f"spool-{name}"
        spool.mkdir(exist_ok=True)
        path.write_text(
            f"store:\n  url: {self.store_url}\n  s3:\n    multipart_threshold: 64KiB\n"
            f"    part_size: 5MiB\narchive:\n  file_max_rows: {file_max_rows}\n"
            f"  row_group_rows: 1000\n  lease_ttl: {LEASE_TTL_S}s\n  spool_dir: {spool}\n"
        )
        return path

    def start(
        self, policy: Path, through_proxy: bool = False, file_limit: int | None = None
    ) -> subprocess.Popen[str]:
        env = {**os.environ, **self.s3.env()}
        if through_proxy:
            env["AWS_ENDPOINT_URL"] = self.proxy.endpoint

        def limit() -> None:
            if file_limit is not None:  # the spool's disk is full past this size
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

        return subprocess.Popen(
            [
                *archiver_command(),
                "run",
                "--nats-url",
                ",".join(self.urls),
                "--policy",
                str(policy),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=limit,
        )

    def command(self, *args: str) -> int:
        env = {**os.environ, **self.s3.env()}
        done = subprocess.run(
            [*archiver_command(), *args], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode:
            say(f"    {' '.join(args[:1])} exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return done.returncode

    def random_moment(self) -> None:
        time.sleep(self.rng.uniform(0.05, 1.5))

    # -- the faults

    def inject(self, trial: Trial) -> None:
        clean = self.policy("clean", 200)
        if trial.fault in ("sigkill", "sigterm", "sigstop"):
            run = self.start(clean)
            self.random_moment()
            sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(trial.fault)
            if sig is not None:
                run.send_signal(sig)
            else:
                run.send_signal(signal.SIGSTOP)
                self.take_over(self.policy("other", 333))
                run.send_signal(signal.SIGCONT)
            trial.faulted_exit = wait(run)
        elif trial.fault == "second-run":
            runs = [self.start(clean), self.start(self.policy("other", 333))]
            trial.faulted_exit = max(wait(r) for r in runs)
        elif trial.fault in ("node-kill", "leader-kill", "step-down"):
            run = self.start(clean)
            self.random_moment()
            trial.detail = self.hit_cluster(trial.fault)
            trial.faulted_exit = wait(run)
        elif trial.fault == "s3":
            call = self.rng.choice(list(S3_CALLS))
            kind = self.rng.choice([f for f in S3_FAULTS if f != "truncate" or "GET" in call])
            times = self.rng.randint(1, 6)
            trial.detail = f"{kind} x{times} on {call}"
            self.proxy.inject(kind, S3_CALLS[call], times=times)  # type: ignore[arg-type]
            trial.faulted_exit = wait(self.start(clean, through_proxy=True))
        elif trial.fault == "spool-full":
            limit = self.rng.choice([4_096, 65_536, 262_144])
            trial.detail = f"{limit // 1024} KiB left"
            trial.faulted_exit = wait(self.start(clean, file_limit=limit))

    def take_over(self, policy: Path) -> None:
        """While a run is frozen, another takes its streams over once its leases lapse."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.command("run", "--nats-url", ",".join(self.urls), "--policy", str(policy))
            if done == 0 and self.leases_held() == 0:
                return
            time.sleep(0.5)

    def hit_cluster(self, fault: str) -> str:
        if fault == "step-down":
            asyncio.run(self._api("$JS.API.STREAM.LEADER.STEPDOWN.AUTH"))
            return "AUTH leader stepped down"
        if fault == "leader-kill":
            leader = asyncio.run(self._leader("AUTH"))
            node = next(n for n in self.nodes if n.store_dir.name == leader)
        else:
            node = self.rng.choice(self.nodes)
        node.proc.kill()  # type: ignore[union-attr]
        node.proc.wait()  # type: ignore[union-attr]
        node.proc = None
        return f"{node.store_dir.name} killed"

    async def _api(self, subject: str) -> None:
        nc = await nats.connect(servers=self.urls)
        try:
            await nc.request(subject, b"", timeout=5)
        finally:
            await nc.close()

    async def _leader(self, stream: str) -> str:
        nc = await nats.connect(servers=self.urls)
        try:
            info = await nc.jetstream().stream_info(stream)
            return str(info.cluster.leader if info.cluster else "n0")
        finally:
            await nc.close()

    # -- after each trial

    def settle(self) -> None:
        """Every node up, every stream led, no fault armed, no lease held."""
        self.proxy.clear()
        for node in self.nodes:
            if node.proc is None:
                node.start()
        until(lambda: asyncio.run(self.healthy()), "every stream to have a leader")
        until(lambda: self.leases_held() == 0, "the killed runs' leases to lapse")

    async def healthy(self) -> bool:
        try:
            nc = await connect(NatsOptions(url=",".join(self.urls)))
        except Exception:
            return False
        try:
            for name in STREAMS:
                info = await nc.jetstream(timeout=2).stream_info(name)
                if not info.cluster or not info.cluster.leader:
                    return False
                if any(not r.current for r in info.cluster.replicas or []):
                    return False
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    def leases_held(self) -> int:
        async def count() -> int:
            nc = await nats.connect(servers=self.urls)
            try:
                kv = await nc.jetstream().key_value("archiver-leases")
                return len(await kv.keys())
            except Exception:
                return 0
            finally:
                await nc.close()

        return asyncio.run(count())

    def check(self, trial: Trial) -> None:
        """A clean run, verify, and the newly archived seqs against the servers."""
        args = (
            "run",
            "--nats-url",
            ",".join(self.urls),
            "--policy",
            str(self.policy("clean", 200)),
        )
        trial.clean_exit = self.command(*args)
        trial.verify_exit = self.command("verify", "--store", self.store_url)
        for name in STREAMS:
            self.compare(name, trial)

    def compare(self, stream: str, trial: Trial) -> None:
        generation = asyncio.run(self._generation(stream))
        gen = catalog.generation(self.store, stream, generation)
        start, end = self.compared_to[stream] + 1, gen.end
        if end < start:
            return
        archived: Counter[int] = Counter()
        rows: dict[int, tuple[str, bytes, bytes]] = {}
        for f in gen.files:
            if f.name.last_seq < start or f.name.first_seq > end:
                continue
            local = self.root / "compare.parquet"
            self.store.download(f.key, local)
            table = pq.read_table(local, columns=["seq", "subject", "raw_headers", "data"])
            for seq, subject, headers, data in zip(
                *(c.to_pylist() for c in table.columns), strict=True
            ):
                if start <= seq <= end:
                    archived[seq] += 1
                    rows[seq] = (subject, headers or b"", data)
        stored = asyncio.run(self._stored(stream, start, end))
        trial.compared += len(stored)
        trial.lost += sum(1 for seq in stored if seq not in archived)
        trial.duplicated += sum(n - 1 for n in archived.values())
        trial.differing += sum(1 for seq, row in stored.items() if seq in rows and rows[seq] != row)
        self.compared_to[stream] = end

    async def _generation(self, stream: str) -> str:
        nc = await connect(NatsOptions(url=",".join(self.urls)))
        try:
            return (await stream_info(nc, stream)).generation
        finally:
            await nc.close()

    async def _stored(
        self, stream: str, start: int, end: int
    ) -> dict[int, tuple[str, bytes, bytes]]:
        nc = await connect(NatsOptions(url=",".join(self.urls)))
        out: dict[int, tuple[str, bytes, bytes]] = {}
        try:
            for first in range(start, end + 1, 256):
                seqs = range(first, min(first + 256, end + 1))
                for m in await asyncio.gather(*(get_message(nc, stream, s) for s in seqs)):
                    if m is not None:
                        out[m.seq] = (m.subject, m.raw_headers or b"", m.data)
        finally:
            await nc.close()
        return out


def wait(proc: subprocess.Popen[str], timeout: float = 120) -> int:
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def table(trials: list[Trial]) -> str:
    lines = [
        "| fault | trials | faulted run exit codes | clean run, verify ok | messages compared "
        "| lost | duplicated | differing |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for fault in FAULTS:
        mine = [t for t in trials if t.fault == fault]
        if not mine:
            continue
        exits = Counter(t.faulted_exit for t in mine)
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(exits.items(), key=str))
        lines.append(
            f"| {fault} | {len(mine)} | {codes} | {sum(t.ok for t in mine)} "
            f"| {sum(t.compared for t in mine)} | {sum(t.lost for t in mine)} "
            f"| {sum(t.duplicated for t in mine)} | {sum(t.differing for t in mine)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="every trial as JSON, not a table")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        lab = Lab(Path(tmp), rng)
        try:
            until(lambda: asyncio.run(lab.healthy()), "the cluster")
            for n in range(1, args.trials + 1):
                trial = Trial(rng.choice(FAULTS))
                lab.inject(trial)
                lab.settle()
                lab.check(trial)
                trials.append(trial)
                say(
                    f"trial {n}/{args.trials}: {trial.fault} {trial.detail}: run exit "
                    f"{trial.faulted_exit}, clean {trial.clean_exit}, verify {trial.verify_exit}, "
                    f"{trial.compared} compared, {trial.lost} lost, {trial.duplicated} duplicated"
                )
        finally:
            lab.close()
    if args.json:
        print(json.dumps([t.__dict__ for t in trials], indent=2))
    else:
        print(table(trials))
        print(
            f"\n{sum(t.ok for t in trials)} of {len(trials)} trials ended in a verified archive "
            f"with every message once (seed {args.seed})."
        )
    return 0 if all(t.ok for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
