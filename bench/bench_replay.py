"""Benchmark ``archiver replay`` against the raw limit of nats-py, in one run.

    python bench/bench_replay.py --messages 1000000 --size 300 [--json] [--repeat N]

1. Starts a throwaway nats-server, fills stream BENCH (``bench.>``) with N messages as
   bench_archive.py does, and archives it with ``archiver run`` into a local temp store.
2. Raw limit: nats-py alone republishes the same N messages, read back from the
   archive's Parquet row group by row group, with a header dict like the one replay
   sends, into a fresh stream RAW (``raw.>``) with ``js.publish_async`` in a bounded
   window, every future checked.
3. Archiver: ``archiver replay --stream BENCH --subject-prefix restore --json`` as a
   child process into a fresh stream RESTORE (``restore.>``): wall time, rates, peak RSS.
4. Verifies RESTORE holds exactly N messages and that a random sample of them carries
   the archived subject, payload and header lines, with the right Archive-Seq.
5. Prints a table (``--json``: one JSON document on stdout) and writes
   ``bench/results/replay-<timestamp>.json``.

``--profile`` adds an in-process replay under cProfile and prints where the time goes.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# bench_archive imports common first, which puts bench/ and tests/ on sys.path.
from bench_archive import LocalTargets, ThreadProfiles, print_stats, run_archiver, total_time
from ceiling import protocol_publish
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
from nats.js.api import StorageType
from natsserver import NatsServer, newest_binary

from archiver.timefmt import format_ns

RAW_STREAM, RAW_PREFIX = "RAW", "raw"
RESTORE_STREAM, RESTORE_PREFIX = "RESTORE", "restore"
ACK_TIMEOUT = 30.0
NATS_PY_ASYNC_CAP = 4000
"""nats-py's default ``publish_async_max_pending``: a semaphore of 4000 in flight."""
COLUMNS = ["seq", "subject", "time_ns", "raw_headers", "data"]


def archive_row_groups(files: list[Path], columns: list[str]) -> Any:
    """The archive's rows as Python lists, one row group at a time."""
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            yield [table.column(c).to_pylist() for c in columns]


def header_dict(raw: bytes | None, seq: int, time_ns: int) -> dict[str, str]:
    """About what replay sends: a message id, the archived headers and provenance."""
    headers = {
        "Nats-Msg-Id": f"raw:{STREAM}:{seq}",
        "Archive-Stream": STREAM,
        "Archive-Seq": str(seq),
        "Archive-Time": format_ns(time_ns),
    }
    if raw:
        for line in raw.split(b"\r\n")[1:]:
            if line:
                key, _, value = line.decode().partition(":")
                headers[key.strip()] = value.strip()
    return headers


# ------------------------------------------------------------------------- raw limit


async def raw_publish(url: str, files: list[Path], count: int, window: int) -> dict[str, Any]:
    """nats-py ``publish_async`` of the archived messages into RAW; every ack checked.

    At most ``window`` futures are unresolved: before the next publish the oldest is
    awaited (bounded by ACK_TIMEOUT, since nats-py's futures never time out) and its
    PubAck checked (stream RAW, not a duplicate). A refusal fails the run.
    """
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()  # publish_async_max_pending=4000 by default
        await js.add_stream(name=RAW_STREAM, subjects=[f"{RAW_PREFIX}.>"], storage=StorageType.FILE)
        pending: deque[asyncio.Future[Any]] = deque()
        published = acked = nbytes = 0
        highest = 0

        async def settle() -> None:
            nonlocal acked, highest
            future = pending.popleft()
            if not future.done():
                try:
                    await asyncio.wait_for(future, ACK_TIMEOUT)
                except TimeoutError:
                    raise RuntimeError(f"raw publish: no ack within {ACK_TIMEOUT:.0f}s") from None
            ack = future.result()  # raises the server's refusal, if any
            if ack.stream != RAW_STREAM or ack.duplicate:
                raise RuntimeError(f"raw publish: unexpected ack {ack}")
            acked += 1
            highest = max(highest, ack.seq)

        started = time.perf_counter()
        for seqs, subjects, times, raws, payloads in archive_row_groups(files, COLUMNS):
            for seq, subject, time_ns, raw, data in zip(
                seqs, subjects, times, raws, payloads, strict=True
            ):
                if len(pending) >= window:
                    await settle()
                pending.append(
                    await js.publish_async(
                        f"{RAW_PREFIX}.{subject}", data, headers=header_dict(raw, seq, time_ns)
                    )
                )
                published += 1
                nbytes += len(data)
        while pending:
            await settle()
        seconds = time.perf_counter() - started
        state = (await js.stream_info(RAW_STREAM)).state
        await js.delete_stream(RAW_STREAM)  # the replay publishes into an equal server
    finally:
        await nc.close()
    if (published, acked, state.messages, highest) != (count, count, count, count):
        raise RuntimeError(
            f"raw publish: {published} published, {acked} acked, RAW holds "
            f"{state.messages} (last ack seq {highest}), expected {count}"
        )
    return {
        "window": window,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(rate(count, seconds)),
        "mb_per_s": round(rate(nbytes / MB, seconds), 1),
        "payload_bytes": nbytes,
        "stream_messages": state.messages,
    }


CEILING_STREAM, CEILING_PREFIX = "CEILING", "ceil"


async def ceiling_publish(server: NatsServer, files: list[Path], count: int) -> dict[str, Any]:
    """The publish ceiling into a fresh stream CEILING, deleted afterwards."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=CEILING_STREAM, subjects=[f"{CEILING_PREFIX}.>"], storage=StorageType.FILE
        )
        found = await protocol_publish(server.port, files, count, CEILING_PREFIX, window=2000)
        state = (await js.stream_info(CEILING_STREAM)).state
        await js.delete_stream(CEILING_STREAM)
    finally:
        await nc.close()
    if state.messages != count:
        raise RuntimeError(f"ceiling publish: {CEILING_STREAM} holds {state.messages}")
    return found


# --------------------------------------------------------------------------- archiver


async def create_restore(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=RESTORE_STREAM, subjects=[f"{RESTORE_PREFIX}.>"], storage=StorageType.FILE
        )
    finally:
        await nc.close()


async def delete_restore(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(RESTORE_STREAM)
    finally:
        await nc.close()


def replay_command(url: str, store_url: str) -> list[str]:
    return [
        *archiver_command(),
        "replay",
        "--nats-url",
        url,
        "--store",
        store_url,
        "--stream",
        STREAM,
        "--subject-prefix",
        RESTORE_PREFIX,
        "--json",
    ]


def run_replay(url: str, store_url: str, fill: dict[str, Any]) -> dict[str, Any]:
    """``archiver replay`` as a child process; wall time, its JSON summary, peak RSS."""
    run = run_json(replay_command(url, store_url))
    (run["result"],) = run["result"]  # --json prints an array of objects
    summary = run["result"]
    seconds = float(summary["seconds"])
    count = fill["messages"]
    run.update(
        {
            # The replay's own figure: connect, target checks, publish, last ack. The
            # plan (reading subjects and headers of the whole selection), interpreter
            # start-up and imports come before it and are only in wall_s.
            "seconds": seconds,
            "msgs_per_s": round(rate(summary["published"], seconds)),
            "mb_per_s": round(rate(summary["bytes"] / MB, seconds), 1),
            "wall_msgs_per_s": round(rate(summary["published"], run["wall_s"])),
            "wall_mb_per_s": round(rate(summary["bytes"] / MB, run["wall_s"]), 1),
        }
    )
    problems = [
        f"replay {name} is {got}, expected {want}"
        for name, got, want in (
            ("matched", summary["matched"], count),
            ("published", summary["published"], count),
            ("duplicates", summary["duplicates"], 0),
            ("skipped", summary["skipped"], 0),
            ("bytes", summary["bytes"], fill["payload_bytes"]),
            ("target_streams", summary["target_streams"], [RESTORE_STREAM]),
        )
        if got != want
    ]
    run["summary_problems"] = problems
    return run


# ------------------------------------------------------------------------ verification


def load_sample(files: list[Path], seqs: list[int]) -> dict[int, tuple[str, bytes | None, bytes]]:
    """Archived (subject, header block, payload) of each of ``seqs``."""
    wanted = pa.array(seqs, pa.uint64())
    rows: dict[int, tuple[str, bytes | None, bytes]] = {}
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["seq", "subject", "raw_headers", "data"])
            table = table.filter(pc.is_in(table.column("seq"), value_set=wanted))
            for seq, subject, raw, data in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            ):
                rows[seq] = (subject, raw, data)
    return rows


def header_lines(block: bytes | None) -> list[bytes]:
    return [line for line in (block or b"").split(b"\r\n")[1:] if line]


async def verify_restore(
    url: str, count: int, sample: dict[int, tuple[str, bytes | None, bytes]], generation: str
) -> dict[str, Any]:
    """RESTORE holds exactly 1..count; each sampled seq carries its archived message.

    Replay publishes in archive order, so RESTORE seq s must be archive seq s: its
    Archive-Seq says s, its Nats-Msg-Id is archive:BENCH:<generation>:s, subject and
    payload are the archived ones (subject prefixed), and the archived header lines
    follow the message id, in order and byte for byte (none here is a Nats- one).
    """
    problems: list[str] = []
    nc = await nats.connect(url)
    try:
        jsm = nc.jetstream()
        state = (await jsm.stream_info(RESTORE_STREAM)).state
        if (state.messages, state.first_seq, state.last_seq) != (count, 1, count):
            problems.append(
                f"{RESTORE_STREAM} holds {state.messages} messages "
                f"({state.first_seq}..{state.last_seq}), expected 1..{count}"
            )
        seqs = sorted(sample)
        checked = bad = 0
        for start in range(0, len(seqs), 100):
            chunk = seqs[start : start + 100]
            msgs = await asyncio.gather(
                *(jsm.get_msg(RESTORE_STREAM, s) for s in chunk), return_exceptions=True
            )
            for seq, msg in zip(chunk, msgs, strict=True):
                checked += 1
                if isinstance(msg, BaseException):
                    bad += 1
                    if bad <= 10:
                        problems.append(f"{RESTORE_STREAM} seq {seq}: {msg!r}")
                    continue
                subject, raw, data = sample[seq]
                block = base64.b64decode(msg.hdrs) if msg.hdrs else b""
                lines = header_lines(block)
                expected = [
                    f"Nats-Msg-Id: archive:{STREAM}:{generation}:{seq}".encode(),
                    *header_lines(raw),
                    f"Archive-Stream: {STREAM}".encode(),
                    f"Archive-Seq: {seq}".encode(),
                ]
                wrong = []
                if msg.subject != f"{RESTORE_PREFIX}.{subject}":
                    wrong.append(f"subject {msg.subject}")
                if (msg.data or b"") != data:
                    wrong.append("payload")
                if lines[: len(expected)] != expected:
                    wrong.append(f"headers {lines[:6]}")
                if wrong:
                    bad += 1
                    if bad <= 10:
                        problems.append(f"{RESTORE_STREAM} seq {seq}: wrong {', '.join(wrong)}")
    finally:
        await nc.close()
    if bad > 10:
        problems.append(f"... {bad} sampled messages wrong in all")
    return {
        "ok": not problems,
        "messages": state.messages,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "sampled": checked,
        "sample_wrong": bad,
        "problems": problems,
    }


# ---------------------------------------------------------------------------- profile


def run_profiled(url: str, store_url: str, out_path: Path) -> tuple[dict[str, Any], str]:
    """One replay in this process under cProfile (into a fresh RESTORE); a report."""
    from archiver.config import resolve
    from archiver.replay import ReplayOptions, replay
    from archiver.replay.mapping import SubjectMapper
    from archiver.replay.selection import Selection

    settings = resolve({"nats_url": url, "store": store_url})
    opts = ReplayOptions(selection=Selection(STREAM), mapper=SubjectMapper.prefix(RESTORE_PREFIX))
    profiles = ThreadProfiles()
    asyncio.run(create_restore(url))
    try:
        started = time.perf_counter()
        with profiles.installed():
            profiles.loop_profile.enable()
            try:
                summary = asyncio.run(replay(settings, opts))
            finally:
                profiles.loop_profile.disable()
        wall = time.perf_counter() - started
    finally:
        asyncio.run(delete_restore(url))
    combined = profiles.stats("all")
    combined.dump_stats(str(out_path))
    loop_stats, worker_stats = profiles.stats("loop"), profiles.stats("workers")
    figures = {
        "wall_s": round(wall, 3),
        "published": summary.published,
        "seconds": summary.seconds,
        "loop_thread_s": round(total_time(loop_stats), 3),
        "worker_threads_s": round(total_time(worker_stats), 3),
        "profile_file": str(out_path),
    }
    report = (
        f"\nProfiled replay: {wall:.2f} s wall, publish pass {summary.seconds:.2f} s "
        f"(cProfile slows Python code).\n"
        f"Event-loop thread (publisher): {figures['loop_thread_s']:.2f} s; worker threads "
        f"(store check, plan): {figures['worker_threads_s']:.2f} s.\n"
        f"Profile saved to {out_path}."
        + print_stats(combined, "cumulative", 30, "all threads, top 30 by cumulative time")
        + print_stats(loop_stats, "tottime", 20, "event-loop thread, top 20 by own time")
        + print_stats(worker_stats, "tottime", 10, "worker threads, top 10 by own time")
    )
    return figures, report


# -------------------------------------------------------------------------- reporting


def table(doc: dict[str, Any]) -> str:
    fill, archive, raw, rep = doc["fill"], doc["archive"], doc["raw"], doc["replay"]
    wall_row = {
        "msgs_per_s": rep["wall_msgs_per_s"],
        "mb_per_s": rep["wall_mb_per_s"],
        "seconds": rep["wall_s"],
        "foreign_cpu_s": rep["foreign_cpu_s"],
    }
    rows = [
        ("fill (pipelined acked publish)", fill, ""),
        ("archive (archiver run, setup)", archive, f"peak RSS {archive['peak_rss_mb']:.0f} MB"),
        (f"raw: nats-py publish_async w={raw['window']}", raw, "raw limit"),
        (
            "ceiling: bare-protocol publish",
            doc["ceiling"],
            "the protocol's limit here, every PubAck checked",
        ),
        (
            "archiver replay, publish pass",
            rep,
            f"x{rep['ratio_to_ceiling']:.2f} of the ceiling, x{rep['ratio_to_raw']:.2f} of raw",
        ),
        (
            "archiver replay, whole child",
            wall_row,
            f"x{rep['wall_ratio_to_raw']:.2f} of raw; start-up + plan included",
        ),
    ]
    lines = [f"{'':36} {'msgs/s':>10} {'MB/s':>8} {'seconds':>8} {'others CPU s':>13}"]
    lines += [
        f"{name:36} {r['msgs_per_s']:>10,} {r['mb_per_s']:>8.1f} {r['seconds']:>8.2f} "
        f"{r['foreign_cpu_s']:>13.2f}  {note}".rstrip()
        for name, r, note in rows
    ]
    check = doc["verify"]
    verify_line = (
        f"OK ({RESTORE_STREAM} holds {check['messages']:,}; {check['sampled']:,} sampled "
        "messages match the archive)"
        if check["ok"]
        else "FAILED " + "; ".join(check["problems"])
    )
    lines += [
        "",
        f"messages {doc['params']['messages']:,} of ~{doc['params']['size']} B, "
        f"payload {fill['payload_bytes'] / MB:,.1f} MB, {fill['header_messages']:,} with headers",
        f"replay peak RSS {rep['peak_rss_mb']:.1f} MB"
        + (
            f" (worst of {len(rep['all_peak_rss_mb'])} runs: "
            f"{' / '.join(f'{x:.1f}' for x in rep['all_peak_rss_mb'])}); median run: "
            if len(rep["all_peak_rss_mb"]) > 1
            else " "
        )
        + f"({rss_note(rep)})",
        f"nats-py publish_async caps in-flight publishes at {NATS_PY_ASYNC_CAP} by default; "
        f"the raw window was {raw['window']}, replay's window is 2000",
        f"verified: {verify_line}",
    ]
    if "archiver_tree_at_end" in doc["versions"]:
        lines.append(
            f"WARNING: archiver/ changed during the run ({doc['versions']['archiver_tree']} -> "
            f"{doc['versions']['archiver_tree_at_end']}): runs may have measured different code"
        )
    if doc["verdict"]["rate_below_half_raw"]:
        lines.append("WARNING: the replay is below half the raw limit")
    if doc["verdict"]["rss_above_limit"]:
        lines.append(f"WARNING: replay peak RSS is above {RSS_LIMIT_MB} MB")
    lines += busy_notes(rows)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure raw and replay this many times; medians"
    )
    parser.add_argument(
        "--raw-window",
        type=int,
        default=2000,
        help="unresolved publish_async futures at most, for the raw limit [%(default)s, "
        "as replay's window]",
    )
    parser.add_argument("--sample", type=int, default=1000, help="messages checked [%(default)s]")
    parser.add_argument(
        "--profile", action="store_true", help="also replay in-process under cProfile"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    return parser.parse_args()


def archive_once(url: str, targets: LocalTargets, fill: dict[str, Any]) -> tuple[Any, dict]:
    """``archiver run`` of BENCH into a fresh local store (set-up, not the measurement)."""
    target = targets.new()
    others = ForeignCpu()
    run = run_archiver(url, target)
    result = run["result"]
    if result["lost"] or result["error"] or result["messages"] != fill["messages"]:
        raise RuntimeError(f"archiving BENCH failed: {result}")
    seconds = float(result["seconds"])
    return target, {
        "seconds": seconds,
        "msgs_per_s": round(rate(result["messages"], seconds)),
        "mb_per_s": round(rate(fill["payload_bytes"] / MB, seconds), 1),
        "wall_s": run["wall_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "files": result["files"],
        "archive_bytes": target.archive_bytes(),
        "foreign_cpu_s": others.seconds(),
    }


def measure(args: argparse.Namespace, server: NatsServer, scratch: Path) -> dict[str, Any]:
    # Taken first: the code measured is the code at the start (see the check in main).
    started_with = versions()
    say(f"filling {STREAM} with {args.messages:,} messages of ~{args.size} B ...")
    others = ForeignCpu()
    fill = asyncio.run(create_and_fill(server.url, server.port, args.messages, args.size))
    fill["foreign_cpu_s"] = others.seconds()
    say(f"  {fill['msgs_per_s']:,} msgs/s, {fill['mb_per_s']} MB/s")

    say("archiving it with archiver run ...")
    target, archive = archive_once(server.url, LocalTargets(scratch, keep=True), fill)
    files = target.parquet_files()
    say(f"  {archive['msgs_per_s']:,} msgs/s, {len(files)} file(s), {target.store_url}")
    sample_seqs = sorted(random.Random(7).sample(range(1, args.messages + 1), args.sample))
    sample = load_sample(files, sample_seqs)
    if len(sample) != len(sample_seqs):
        raise RuntimeError(f"the archive holds {len(sample)} of {len(sample_seqs)} sampled seqs")

    raw_runs, ceiling_runs, replay_runs = [], [], []
    for attempt in range(args.repeat):
        tag = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
        say(f"raw: nats-py publish_async into {RAW_STREAM}, window {args.raw_window}{tag} ...")
        others.seconds()
        raw_runs.append(asyncio.run(raw_publish(server.url, files, args.messages, args.raw_window)))
        raw_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"  {raw_runs[-1]['msgs_per_s']:,} msgs/s")

        say(f"ceiling: bare-protocol pipelined publish into {CEILING_STREAM}{tag} ...")
        others.seconds()
        ceiling_runs.append(asyncio.run(ceiling_publish(server, files, args.messages)))
        ceiling_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"  {ceiling_runs[-1]['msgs_per_s']:,} msgs/s")

        say(f"archiver replay into {RESTORE_STREAM}{tag} ...")
        asyncio.run(create_restore(server.url))
        try:
            others.seconds()
            run = run_replay(server.url, target.store_url, fill)
            run["foreign_cpu_s"] = others.seconds()
            say(
                f"  {run['msgs_per_s']:,} msgs/s (wall {run['wall_s']:.1f} s), "
                f"peak RSS {run['peak_rss_mb']} MB; verifying ..."
            )
            check = asyncio.run(
                verify_restore(server.url, args.messages, sample, run["result"]["generation"])
            )
        finally:
            asyncio.run(delete_restore(server.url))
        check["problems"] = run.pop("summary_problems") + check["problems"]
        check["ok"] = not check["problems"]
        run["verify"] = check
        say(f"  verified: {check['ok']} {'; '.join(check['problems'])}".rstrip())
        replay_runs.append(run)

    raw = summarize_runs(raw_runs)
    rep = summarize_runs(replay_runs)
    rep["all_peak_rss_mb"] = [r["peak_rss_mb"] for r in replay_runs]
    rep["peak_rss_mb"] = max(rep["all_peak_rss_mb"])  # memory is judged by the worst run
    ceiling = summarize_runs(ceiling_runs)
    rep["ratio_to_raw"] = round(rep["msgs_per_s"] / raw["msgs_per_s"], 3)
    rep["ratio_to_ceiling"] = round(rep["msgs_per_s"] / ceiling["msgs_per_s"], 3)
    raw["ratio_to_ceiling"] = round(raw["msgs_per_s"] / ceiling["msgs_per_s"], 3)
    rep["wall_ratio_to_raw"] = round(rep["wall_msgs_per_s"] / raw["msgs_per_s"], 3)
    problems = [p for r in replay_runs for p in r["verify"]["problems"]]
    return {
        "benchmark": "replay",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "repeat": args.repeat,
            "raw_window": args.raw_window,
            "nats_py_publish_async_cap": NATS_PY_ASYNC_CAP,
            "sample": args.sample,
            "subjects": 50,
            "header_fraction": 0.1,
        },
        "versions": started_with,
        "fill": fill,
        "archive": archive,
        "raw": raw,
        "ceiling": ceiling,
        "replay": rep,
        "store_url": target.store_url,
        "verify": {**rep["verify"], "ok": not problems, "problems": problems},
        "verdict": {
            "rate_below_half_raw": rep["ratio_to_raw"] < 0.5,
            "rss_above_limit": rep["peak_rss_mb"] > RSS_LIMIT_MB,
            "rss_limit_mb": RSS_LIMIT_MB,
        },
    }


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    (scratch / "nats").mkdir()
    server = NatsServer(newest_binary(), scratch / "nats")
    try:
        server.start()
        say(f"nats-server on {server.url}, store {scratch / 'nats'}")
        doc = {
            "timestamp": stamp,
            "load_avg_1m_before": round(load_before, 2),
            **measure(args, server, scratch),
        }
        tree_now = versions()["archiver_tree"]
        if tree_now != doc["versions"]["archiver_tree"]:
            doc["versions"]["archiver_tree_at_end"] = tree_now
        report = ""
        if args.profile:
            say("archiver replay in-process under cProfile ...")
            doc["profile"], report = run_profiled(
                server.url, doc["store_url"], results_dir / f"profile-replay-{stamp}.prof"
            )
        out = results_dir / f"replay-{stamp}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2) if args.json else table(doc))
        if report:
            print(report, file=sys.stderr if args.json else sys.stdout)
        say(f"results written to {out}")
        return 0 if doc["verify"]["ok"] else 1
    finally:
        server.stop()
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
