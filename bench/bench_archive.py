"""Benchmark ``archiver run`` against the raw limit of nats-py, in one run.

    python bench/bench_archive.py --messages 1000000 --size 300 [--store DIR|s3] [--json]

1. Starts a throwaway nats-server (the newest, from the venv) and fills stream BENCH
   (``bench.>``, file storage) with N JSON event records of about S bytes over ~50
   subjects, ~10% with a small header, every publish acked (see fill.py).
2. Raw limit: nats-py alone draining the same stream, as an ordered push consumer and
   as a pull consumer fetching large batches; the better one is the raw limit.
3. Archiver: ``archiver run --json`` as a subprocess (so its peak RSS is its own),
   into a fresh local directory, or into a local SeaweedFS with ``--store s3``.
4. Verifies the archive (row count N, distinct seqs 1..N, payload bytes and header
   rows as published) with duckdb: a benchmark of a wrong result is worthless.
5. Prints a table (``--json``: one JSON document on stdout) and writes
   ``bench/results/archive-<timestamp>.json``.

``--profile`` adds an in-process archiver pass under cProfile (every thread) and
prints where the time goes. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import nats

# common.py puts bench/ and tests/ on sys.path: fill.py sits beside this file, and the
# tests' helpers start nats-server and SeaweedFS on free loopback ports.
from ceiling import protocol_drain
from common import (
    HERE,
    MB,
    RSS_LIMIT_MB,
    STREAM,
    ForeignCpu,
    archiver_command,
    base_parser,
    busy_notes,
    create_and_fill,
    rate,
    rss_note,
    run_json,
    say,
    summarize_runs,
    versions,
)
from nats.js.api import AckPolicy, ConsumerConfig
from natsserver import NatsServer, newest_binary

STALL_TIMEOUT = 30.0


# ------------------------------------------------------------------------- raw limit


class Counter:
    """Counts messages and payload bytes; ``done`` fires at ``target`` messages."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.nbytes = 0
        self.done = asyncio.Event()

    def add(self, data: bytes) -> None:
        self.count += 1
        self.nbytes += len(data)
        if self.count >= self.target:
            self.done.set()

    async def wait(self) -> None:
        """Wait for ``done``; fail if the count stops moving (a stalled consumer)."""
        last = -1
        while not self.done.is_set():
            if self.count == last:
                raise RuntimeError(f"drain stalled at {self.count} of {self.target} messages")
            last = self.count
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), STALL_TIMEOUT)


def drain_result(counter: Counter, seconds: float, expected_bytes: int) -> dict[str, Any]:
    if counter.count != counter.target or counter.nbytes != expected_bytes:
        raise RuntimeError(
            f"drain got {counter.count} messages / {counter.nbytes} bytes, "
            f"expected {counter.target} / {expected_bytes}"
        )
    return {
        "seconds": round(seconds, 3),
        "msgs_per_s": round(rate(counter.count, seconds)),
        "mb_per_s": round(rate(counter.nbytes / MB, seconds), 1),
    }


async def drain_ordered_push(url: str, count: int, expected_bytes: int) -> dict[str, Any]:
    """nats-py's ordered push consumer (flow control on) with a callback that only counts."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        counter = Counter(count)

        async def on_msg(msg: Any) -> None:
            counter.add(msg.data)

        started = time.perf_counter()
        sub = await js.subscribe("bench.>", stream=STREAM, ordered_consumer=True, cb=on_msg)
        await counter.wait()
        seconds = time.perf_counter() - started
        await sub.unsubscribe()
    finally:
        await nc.close()
    return drain_result(counter, seconds, expected_bytes)


async def drain_pull_fetch(url: str, count: int, expected_bytes: int, batch: int) -> dict[str, Any]:
    """nats-py's pull consumer (AckNone, in memory, like the archiver's) via ``fetch(batch)``."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        counter = Counter(count)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=60.0
        )
        started = time.perf_counter()
        psub = await js.pull_subscribe("bench.>", stream=STREAM, config=config)
        while counter.count < count:
            for msg in await psub.fetch(min(batch, count - counter.count), timeout=STALL_TIMEOUT):
                counter.add(msg.data)
        seconds = time.perf_counter() - started
        await psub.unsubscribe()
    finally:
        await nc.close()
    return drain_result(counter, seconds, expected_bytes)


# -------------------------------------------------------------------------- the store


class Target:
    """Where one archiver run writes, how to point the archiver there, and its files."""

    def __init__(
        self,
        store_url: str,
        env: dict[str, str | None],
        files: Callable[[], list[Path]],
        size: Callable[[], int],
        cleanup: Callable[[], None],
    ) -> None:
        self.store_url = store_url
        self.env = env
        """Environment changes for the archiver; None removes a variable."""
        self.parquet_files = files
        """Local paths of the archive's .parquet files (downloaded first for S3)."""
        self.archive_bytes = size
        self.cleanup = cleanup


class LocalTargets:
    """Fresh directories under ``base`` for each run."""

    def __init__(self, base: Path, keep: bool) -> None:
        self.base = base
        self.keep = keep
        self.kind = "local"

    def new(self) -> Target:
        root = self.base / f"archive-{uuid.uuid4().hex[:8]}"

        def files() -> list[Path]:
            return sorted(root.rglob("*.parquet"))

        def size() -> int:
            return sum(p.stat().st_size for p in files())

        def cleanup() -> None:
            if not self.keep:
                shutil.rmtree(root, ignore_errors=True)

        return Target(str(root), {}, files, size, cleanup)

    def close(self) -> None:
        pass


class S3Targets:
    """A local SeaweedFS; each run gets a fresh prefix of its bucket."""

    def __init__(self, scratch: Path) -> None:
        from s3server import AWS_ISOLATION, SeaweedS3

        self.kind = "s3"
        self.scratch = scratch
        self.server = SeaweedS3()
        say("starting SeaweedFS ...")
        self.server.start()
        self.client = self.server.client()
        # Removed, not emptied: boto3 takes AWS_PROFILE="" as a profile named "".
        self.env: dict[str, str | None] = dict.fromkeys(AWS_ISOLATION)
        self.env.update(
            {
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                **self.server.env(),
            }
        )

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.server.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def new(self) -> Target:
        prefix = f"bench-{uuid.uuid4().hex[:8]}/"
        local = self.scratch / prefix

        def files() -> list[Path]:
            paths = []
            for obj in self._objects(prefix):
                if obj["Key"].endswith(".parquet"):
                    path = local / obj["Key"][len(prefix) :]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.server.bucket, obj["Key"], str(path))
                    paths.append(path)
            return sorted(paths)

        def size() -> int:
            return sum(o["Size"] for o in self._objects(prefix) if o["Key"].endswith(".parquet"))

        def cleanup() -> None:
            shutil.rmtree(local, ignore_errors=True)
            for obj in list(self._objects(prefix)):
                self.client.delete_object(Bucket=self.server.bucket, Key=obj["Key"])

        url = f"s3://{self.server.bucket}/{prefix.rstrip('/')}"
        return Target(url, self.env, files, size, cleanup)

    def close(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- archiver


def run_archiver(url: str, target: Target) -> dict[str, Any]:
    """``archiver run`` as a child process; wall time, its JSON answer and its peak RSS
    (see ``common.run_measured``)."""
    command = [
        *archiver_command(),
        "run",
        "--nats-url",
        url,
        "--store",
        target.store_url,
        "--stream",
        STREAM,
        "--json",
    ]
    run = run_json(command, target.env)
    (run["result"],) = [r for r in run["result"] if r["stream"] == STREAM]
    return run


# ------------------------------------------------------------------------ verification


def verify(files: list[Path], count: int, fill: dict[str, Any]) -> dict[str, Any]:
    """Check the archive holds each of seqs 1..count exactly once, with the fill's bytes."""
    if not files:
        return {"ok": False, "problems": ["no .parquet files in the archive"]}
    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq), "
            "sum(octet_length(data)), count(raw_headers) FROM read_parquet(?)",
            [[str(p) for p in files]],
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    rows, distinct, low, high, payload, with_headers = row
    checks = {
        "rows": (rows, count),
        "distinct_seqs": (distinct, count),
        "min_seq": (low, 1),
        "max_seq": (high, count),
        "payload_bytes": (payload, fill["payload_bytes"]),
        "header_rows": (with_headers, fill["header_messages"]),
    }
    problems = [
        f"{name} is {got}, expected {want}" for name, (got, want) in checks.items() if got != want
    ]
    return {
        "ok": not problems,
        "files": len(files),
        "problems": problems,
        **{name: got for name, (got, _) in checks.items()},
    }


# ---------------------------------------------------------------------------- profile


class ThreadProfiles:
    """cProfile for the event loop thread and every worker thread the archiver uses.

    cProfile (Python 3.11) sees only the thread that enabled it, and the archiver does
    its Parquet work in ``asyncio.to_thread``: without this the profile would show the
    reader and one long await. Each worker thread gets its own profiler, switched on
    around each call, and the profiles are merged (or shown per thread) afterwards.
    """

    def __init__(self) -> None:
        self.loop_profile = cProfile.Profile()
        self.worker_profiles: list[cProfile.Profile] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def _worker_profile(self) -> cProfile.Profile:
        profile: cProfile.Profile | None = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile()
            with self._lock:
                self.worker_profiles.append(profile)
        return profile

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = asyncio.to_thread

        async def to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            def profiled() -> Any:
                profile = self._worker_profile()
                profile.enable()
                try:
                    return func(*args, **kwargs)
                finally:
                    profile.disable()

            return await original(profiled)

        # archive.py calls asyncio.to_thread through the module, so this reaches it.
        asyncio.to_thread = to_thread  # type: ignore[assignment]
        try:
            yield
        finally:
            asyncio.to_thread = original

    def stats(self, which: str) -> pstats.Stats:
        stream = io.StringIO()
        profiles = {
            "loop": [self.loop_profile],
            "workers": self.worker_profiles,
            "all": [self.loop_profile, *self.worker_profiles],
        }[which]
        stats = pstats.Stats(profiles[0], stream=stream)
        for extra in profiles[1:]:
            stats.add(extra)
        return stats


def print_stats(stats: pstats.Stats, sort: str, limit: int, title: str) -> str:
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    return f"\n=== {title} ===\n{stream.getvalue()}"


def total_time(stats: pstats.Stats) -> float:
    return float(stats.total_tt)  # type: ignore[attr-defined]


def waiting_time(stats: pstats.Stats) -> float:
    """Time the event loop spent blocked in epoll, i.e. waiting for the network."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(row[2] for (_, _, name), row in table.items() if "select.epoll" in name)


def run_profiled(url: str, target: Target, out_path: Path) -> tuple[dict[str, Any], str]:
    """One archiver pass in this process under cProfile; returns figures and a report."""
    from archiver.archive.run import run
    from archiver.config import resolve

    for name, value in target.env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    settings = resolve({"nats_url": url, "store": target.store_url, "stream": (STREAM,)})
    profiles = ThreadProfiles()
    started = time.perf_counter()
    with profiles.installed():
        profiles.loop_profile.enable()
        try:
            results = asyncio.run(run(settings))
        finally:
            profiles.loop_profile.disable()
    wall = time.perf_counter() - started
    (result,) = [r.as_json() for r in results if r.stream == STREAM]
    combined = profiles.stats("all")
    combined.dump_stats(str(out_path))
    loop_stats, worker_stats = profiles.stats("loop"), profiles.stats("workers")
    figures = {
        "wall_s": round(wall, 3),
        "result": result,
        "loop_thread_s": round(total_time(loop_stats), 3),
        "loop_waiting_s": round(waiting_time(loop_stats), 3),
        "worker_threads_s": round(total_time(worker_stats), 3),
        "worker_threads": len(profiles.worker_profiles),
        "profile_file": str(out_path),
    }
    report = (
        f"\nProfiled archiver pass: {wall:.2f} s wall (cProfile slows Python code).\n"
        f"Event-loop thread (reader): {figures['loop_thread_s']:.2f} s, of which "
        f"{figures['loop_waiting_s']:.2f} s waiting in epoll.\n"
        f"{figures['worker_threads']} worker thread(s) (Parquet writer): "
        f"{figures['worker_threads_s']:.2f} s in calls (including waits for the GIL).\n"
        f"Profile saved to {out_path}."
        + print_stats(combined, "cumulative", 25, "all threads, top 25 by cumulative time")
        + print_stats(loop_stats, "tottime", 15, "event-loop thread, top 15 by own time")
        + print_stats(worker_stats, "tottime", 15, "worker threads, top 15 by own time")
    )
    return figures, report


# -------------------------------------------------------------------------- reporting


def table(doc: dict[str, Any]) -> str:
    fill, raw, arch = doc["fill"], doc["raw"], doc["archiver"]
    push, pull = raw["ordered_push"], raw["pull_fetch"]
    ceiling = doc["ceiling"]
    rows = [
        ("fill (pipelined acked publish)", fill, ""),
        ("ceiling: bare-protocol pull drain", ceiling, "the protocol's limit here"),
        ("raw: nats-py ordered push", push, ""),
        (f"raw: nats-py pull fetch({raw['fetch_batch']})", pull, ""),
        (
            f"archiver run ({doc['params']['store']})",
            arch,
            f"wall {arch['wall_s']:.2f} s incl. start-up",
        ),
    ]
    lines = [f"{'':34} {'msgs/s':>10} {'MB/s':>8} {'seconds':>8} {'others CPU s':>13}"]
    lines += [
        f"{name:34} {r['msgs_per_s']:>10,} {r['mb_per_s']:>8.1f} {r['seconds']:>8.2f} "
        f"{r['foreign_cpu_s']:>13.2f}  {note}".rstrip()
        for name, r, note in rows
    ]
    verify_line = "OK" if doc["verify"]["ok"] else "FAILED " + "; ".join(doc["verify"]["problems"])
    lines += [
        "",
        f"messages {doc['params']['messages']:,} of ~{doc['params']['size']} B, "
        f"payload {fill['payload_bytes'] / MB:,.1f} MB, {fill['header_messages']:,} with headers",
        f"archiver / ceiling = {arch['ratio_to_ceiling']:.2f} of the medians (goal 0.45)"
        + (
            f", per round {', '.join(f'{r:.2f}' for r in arch['round_ratios_to_ceiling'])}"
            f" (median {arch['median_round_ratio_to_ceiling']:.2f})"
            if len(arch["round_ratios_to_ceiling"]) > 1
            else ""
        )
        + "; "
        f"nats-py ({raw['best']}) / ceiling = {raw['ratio_to_ceiling']:.2f}; "
        f"archiver / nats-py = {arch['ratio_to_raw']:.2f}",
        f"archiver peak RSS {arch['peak_rss_mb']:.1f} MB ({rss_note(arch)})",
        f"archive {arch['archive_bytes'] / MB:,.1f} MB in {arch['files']} file(s): "
        f"{arch['bytes_per_payload_byte']:.3f} archive bytes per payload byte",
        f"verified: {verify_line}",
    ]
    if doc["verdict"]["rate_below_half_raw"]:
        lines.append("WARNING: the archiver is below half the raw limit")
    if doc["verdict"]["rss_above_limit"]:
        lines.append(f"WARNING: archiver peak RSS is above {RSS_LIMIT_MB} MB")
    lines += busy_notes(rows)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--store",
        default=None,
        help="'s3' (a local SeaweedFS), or a directory to hold the archives "
        "[default: the run's temp directory]",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure drains and archiver this many times; report medians",
    )
    parser.add_argument(
        "--fetch-batch",
        type=int,
        default=10_000,
        help="batch for the pull-fetch drain [%(default)s]",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the archiver in-process under cProfile and print the top",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp dir (server store, archives) for inspection",
    )
    return parser.parse_args()


def archiver_round(
    url: str, targets: LocalTargets | S3Targets, count: int, fill: dict[str, Any]
) -> dict[str, Any]:
    """One measured ``archiver run`` into a fresh target, verified, then cleaned up."""
    target = targets.new()
    others = ForeignCpu()
    try:
        run = run_archiver(url, target)
        run["foreign_cpu_s"] = others.seconds()
        result = run["result"]
        seconds = float(result["seconds"])
        archive_bytes = target.archive_bytes()
        run.update(
            {
                # The archiver's own figure for the stream pass: from taking the lease to
                # the last commit, without interpreter start-up and imports (see wall_s).
                "seconds": seconds,
                "msgs_per_s": round(rate(result["messages"], seconds)),
                "mb_per_s": round(rate(fill["payload_bytes"] / MB, seconds), 1),
                "wall_msgs_per_s": round(rate(result["messages"], run["wall_s"])),
                "archive_bytes": archive_bytes,
                "files": result["files"],
                "bytes_per_payload_byte": round(archive_bytes / fill["payload_bytes"], 4),
            }
        )
        say(f"  {run['msgs_per_s']:,} msgs/s, peak RSS {run['peak_rss_mb']} MB; verifying ...")
        check = verify(target.parquet_files(), count, fill)
        if result["lost"] or result["error"] or result["messages"] != count:
            check["ok"] = False
            check["problems"].append(f"archiver reported {result}")
        run["verify"] = check
        say(f"  verified: {check['ok']} {'; '.join(check['problems'])}".rstrip())
        return run
    finally:
        target.cleanup()


def measure(
    args: argparse.Namespace, server: NatsServer, targets: LocalTargets | S3Targets
) -> dict[str, Any]:
    """Fill once, then drains and archiver runs (``--repeat`` times); the result document."""
    say(f"filling {STREAM} with {args.messages:,} messages of ~{args.size} B ...")
    others = ForeignCpu()
    fill = asyncio.run(create_and_fill(server.url, server.port, args.messages, args.size))
    fill["foreign_cpu_s"] = others.seconds()
    say(f"  {fill['msgs_per_s']:,} msgs/s, {fill['mb_per_s']} MB/s")

    push_runs, pull_runs, ceiling_runs, arch_runs = [], [], [], []
    for attempt in range(args.repeat):
        tag = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
        say(f"ceiling: bare-protocol pull drain{tag} ...")
        others.seconds()
        ceiling_runs.append(
            asyncio.run(
                protocol_drain(server.url, server.port, args.messages, fill["payload_bytes"])
            )
        )
        ceiling_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"  {ceiling_runs[-1]['msgs_per_s']:,} msgs/s")
        say(f"raw drain, ordered push consumer{tag} ...")
        others.seconds()
        push_runs.append(
            asyncio.run(drain_ordered_push(server.url, args.messages, fill["payload_bytes"]))
        )
        push_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"  {push_runs[-1]['msgs_per_s']:,} msgs/s")
        say(f"raw drain, pull fetch({args.fetch_batch}){tag} ...")
        pull_runs.append(
            asyncio.run(
                drain_pull_fetch(server.url, args.messages, fill["payload_bytes"], args.fetch_batch)
            )
        )
        pull_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"  {pull_runs[-1]['msgs_per_s']:,} msgs/s")
        say(f"archiver run{tag} ...")
        arch_runs.append(archiver_round(server.url, targets, args.messages, fill))

    push, pull = summarize_runs(push_runs), summarize_runs(pull_runs)
    best = "ordered_push" if push["msgs_per_s"] >= pull["msgs_per_s"] else "pull_fetch"
    raw = {
        "ordered_push": push,
        "pull_fetch": pull,
        "fetch_batch": args.fetch_batch,
        "best": best,
        "msgs_per_s": max(push["msgs_per_s"], pull["msgs_per_s"]),
        "mb_per_s": max(push["mb_per_s"], pull["mb_per_s"]),
    }
    arch = summarize_runs(arch_runs)
    ceiling = summarize_runs(ceiling_runs)
    # Memory is judged by the worst run, not the median one.
    arch["peak_rss_mb"] = max(r["peak_rss_mb"] for r in arch_runs)
    arch["ratio_to_raw"] = round(arch["msgs_per_s"] / raw["msgs_per_s"], 3)
    arch["ratio_to_ceiling"] = round(arch["msgs_per_s"] / ceiling["msgs_per_s"], 3)
    # Each round measures the ceiling just before the archiver: a round's own ratio is
    # paired, so the machine's drift over the rounds does not move it.
    rounds = [
        round(a["msgs_per_s"] / c["msgs_per_s"], 3)
        for a, c in zip(arch_runs, ceiling_runs, strict=True)
    ]
    arch["round_ratios_to_ceiling"] = rounds
    arch["median_round_ratio_to_ceiling"] = sorted(rounds)[(len(rounds) - 1) // 2]
    raw["ratio_to_ceiling"] = round(raw["msgs_per_s"] / ceiling["msgs_per_s"], 3)
    problems = [p for r in arch_runs for p in r["verify"]["problems"]]
    return {
        "benchmark": "archive",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "store": targets.kind,
            "repeat": args.repeat,
            "subjects": 50,
            "header_fraction": 0.1,
        },
        "versions": versions(),
        "fill": fill,
        "raw": raw,
        "ceiling": ceiling,
        "archiver": arch,
        "verify": {**arch["verify"], "ok": not problems, "problems": problems},
        "verdict": {
            "rate_below_half_raw": arch["ratio_to_raw"] < 0.5,
            "below_045_of_ceiling": arch["ratio_to_ceiling"] < 0.45,
            "rss_above_limit": arch["peak_rss_mb"] > RSS_LIMIT_MB,
            "rss_limit_mb": RSS_LIMIT_MB,
        },
    }


def profile_round(
    url: str, targets: LocalTargets | S3Targets, count: int, fill: dict[str, Any], out_path: Path
) -> tuple[dict[str, Any], str]:
    """The ``--profile`` pass into a fresh target, verified like the measured runs."""
    say("archiver run in-process under cProfile ...")
    target = targets.new()
    try:
        figures, report = run_profiled(url, target, out_path)
        figures["verified"] = verify(target.parquet_files(), count, fill)["ok"]
        return figures, report
    finally:
        target.cleanup()


def main() -> int:
    args = parse_args()
    # Other work on the machine skews every figure; a high load before we start says so.
    load_before = os.getloadavg()[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    (scratch / "nats").mkdir()
    server = NatsServer(newest_binary(), scratch / "nats")
    targets: LocalTargets | S3Targets | None = None
    try:
        if args.store == "s3":
            targets = S3Targets(scratch / "downloads")
        else:
            base = Path(args.store) if args.store else scratch
            base.mkdir(parents=True, exist_ok=True)
            targets = LocalTargets(base, keep=args.keep)
        server.start()
        say(f"nats-server on {server.url}, store {scratch / 'nats'}")
        doc = {
            "timestamp": stamp,
            "load_avg_1m_before": round(load_before, 2),
            **measure(args, server, targets),
        }
        report = ""
        if args.profile:
            doc["profile"], report = profile_round(
                server.url,
                targets,
                args.messages,
                doc["fill"],
                results_dir / f"profile-{stamp}.prof",
            )

        out = results_dir / f"archive-{stamp}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2) if args.json else table(doc))
        if report:
            # With --json the profile report goes to stderr: stdout stays one document.
            print(report, file=sys.stderr if args.json else sys.stdout)
        say(f"results written to {out}")
        return 0 if doc["verify"]["ok"] and doc.get("profile", {}).get("verified", True) else 1
    finally:
        server.stop()
        if targets is not None:
            targets.close()
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
