"""Benchmark ``archiver restore`` beside replay and the raw limit of nats-py, in one run.

    python bench/bench_restore.py --messages 1000000 --size 300 [--json] [--repeat N]

1. A throwaway nats-server; stream BENCH (``bench.>``) filled with N messages as
   bench_archive.py fills it, and archived with ``archiver run`` into a local temp store.
2. Raw limit: nats-py alone republishes the N archived messages (``bench_replay``'s
   ``raw_publish``: ``js.publish_async``, window 2000, every ack checked).
3. ``archiver replay --subject-prefix restore`` (as ``bench_replay.py`` runs it).
4. ``archiver restore --target-url <a second, empty nats-server> --stream BENCH`` as a
   child process: wall time, the restore's own seconds, rates, peak RSS; the second
   server is emptied (restarted without its store) before each run.
5. Verifies the restored BENCH holds exactly seqs 1..N and that a random sample of
   them carries the archived subject, header block and payload, byte for byte.
Writes ``bench/results/restore-<timestamp>.json``. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from bench_archive import LocalTargets
from bench_replay import (
    archive_once,
    ceiling_publish,
    create_restore,
    delete_restore,
    load_sample,
    raw_publish,
)
from bench_replay import run_replay as run_replay_child
from common import (
    HERE,
    MB,
    RSS_LIMIT_MB,
    STREAM,
    ForeignCpu,
    archiver_command,
    base_parser,
    create_and_fill,
    rate,
    run_json,
    say,
    summarize_runs,
    versions,
)
from natsserver import NatsServer, newest_binary


def run_restore(url: str, target: NatsServer, store_url: str, count: int) -> dict[str, Any]:
    command = [*archiver_command(), "restore", "--nats-url", url, "--store", store_url]
    command += ["--target-url", target.url, "--stream", STREAM, "--json"]
    run = run_json(command)
    (row,) = run["result"]
    seconds = float(row["seconds"])
    run.update(
        {
            "seconds": seconds,
            "msgs_per_s": round(rate(row["messages"], seconds)),
            "wall_msgs_per_s": round(rate(row["messages"], run["wall_s"])),
        }
    )
    run["summary_problems"] = (
        []
        if (row["first_seq"], row["last_seq"], row["messages"]) == (1, count, count)
        else [f"restore summary {row}"]
    )
    return run


async def verify_restored(
    url: str, count: int, sample: dict[int, tuple[str, bytes | None, bytes]]
) -> list[str]:
    """The restored BENCH holds 1..count, and each sampled seq its archived message."""
    problems: list[str] = []
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        if (state.messages, state.first_seq, state.last_seq) != (count, 1, count):
            problems.append(
                f"{STREAM} holds {state.messages} ({state.first_seq}..{state.last_seq})"
            )
        seqs = sorted(sample)
        for start in range(0, len(seqs), 100):
            chunk = seqs[start : start + 100]
            got = await asyncio.gather(*(js.get_msg(STREAM, s) for s in chunk))
            for seq, msg in zip(chunk, got, strict=True):
                block = base64.b64decode(msg.hdrs) if msg.hdrs else None
                if (msg.subject, block, msg.data or b"") != sample[seq] and len(problems) < 10:
                    problems.append(f"{STREAM} seq {seq} differs from the archive")
    finally:
        await nc.close()
    return problems


def empty(server: NatsServer) -> None:
    server.stop()
    shutil.rmtree(server.store_dir / "js", ignore_errors=True)
    server.start()


def measure(args: Any, server: NatsServer, target: NatsServer, scratch: Path) -> dict[str, Any]:
    started_with = versions()
    say(f"filling {STREAM} with {args.messages:,} messages of ~{args.size} B ...")
    fill = asyncio.run(create_and_fill(server.url, server.port, args.messages, args.size))
    say("archiving it with archiver run ...")
    store, archive = archive_once(server.url, LocalTargets(scratch, keep=True), fill)
    files = store.parquet_files()
    seqs = sorted(random.Random(7).sample(range(1, args.messages + 1), args.sample))
    sample = load_sample(files, seqs)
    others = ForeignCpu()
    raw_runs, ceiling_runs, replay_runs, restore_runs = [], [], [], []
    for attempt in range(args.repeat):
        tag = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
        say(f"raw: nats-py publish_async{tag} ...")
        others.seconds()
        raw_runs.append(asyncio.run(raw_publish(server.url, files, args.messages, 2000)))
        raw_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"ceiling: bare-protocol publish{tag} ...")
        others.seconds()
        ceiling_runs.append(asyncio.run(ceiling_publish(server, files, args.messages)))
        ceiling_runs[-1]["foreign_cpu_s"] = others.seconds()
        say(f"archiver replay{tag} ...")
        asyncio.run(create_restore(server.url))
        try:
            others.seconds()
            replayed = run_replay_child(server.url, store.store_url, fill)
            replayed["foreign_cpu_s"] = others.seconds()
        finally:
            asyncio.run(delete_restore(server.url))
        replay_runs.append(replayed)
        say(f"archiver restore into an empty server{tag} ...")
        empty(target)
        others.seconds()
        restored = run_restore(server.url, target, store.store_url, args.messages)
        restored["foreign_cpu_s"] = others.seconds()
        restored["problems"] = restored.pop("summary_problems") + asyncio.run(
            verify_restored(target.url, args.messages, sample)
        )
        say(f"  {restored['msgs_per_s']:,} msgs/s, peak RSS {restored['peak_rss_mb']} MB")
        restore_runs.append(restored)
    raw, rep, res = (summarize_runs(r) for r in (raw_runs, replay_runs, restore_runs))
    ceiling = summarize_runs(ceiling_runs)
    res["peak_rss_mb"] = max(r["peak_rss_mb"] for r in restore_runs)
    problems = [p for r in restore_runs for p in r["problems"]]
    return {
        "benchmark": "restore",
        "params": {"messages": args.messages, "size": args.size, "repeat": args.repeat},
        "versions": started_with,
        "fill": fill,
        "archive": archive,
        "raw": raw,
        "ceiling": ceiling,
        "replay": {
            **rep,
            "ratio_to_raw": round(rep["msgs_per_s"] / raw["msgs_per_s"], 3),
            "ratio_to_ceiling": round(rep["msgs_per_s"] / ceiling["msgs_per_s"], 3),
        },
        "restore": {
            **res,
            "ratio_to_raw": round(res["msgs_per_s"] / raw["msgs_per_s"], 3),
            "ratio_to_ceiling": round(res["msgs_per_s"] / ceiling["msgs_per_s"], 3),
        },
        "verify": {"ok": not problems, "problems": problems, "sampled": len(sample)},
        "verdict": {"rss_above_limit": res["peak_rss_mb"] > RSS_LIMIT_MB},
    }


def table(doc: dict[str, Any]) -> str:
    raw, rep, res = doc["raw"], doc["replay"], doc["restore"]
    lines = [f"{'':34} {'msgs/s':>10} {'seconds':>8}  vs ceiling, vs nats-py"]
    for name, r, ratio in (
        ("ceiling: bare-protocol publish", doc["ceiling"], ""),
        ("raw: nats-py publish_async w=2000", raw, ""),
        (
            "archiver replay, publish pass",
            rep,
            f"x{rep['ratio_to_ceiling']:.2f}, x{rep['ratio_to_raw']:.2f}",
        ),
        (
            "archiver restore, its own seconds",
            res,
            f"x{res['ratio_to_ceiling']:.2f}, x{res['ratio_to_raw']:.2f}",
        ),
    ):
        lines.append(f"{name:34} {r['msgs_per_s']:>10,} {r['seconds']:>8.2f}  {ratio}")
    fill = doc["fill"]
    lines += [
        "",
        f"messages {doc['params']['messages']:,}, payload {fill['payload_bytes'] / MB:,.1f} MB",
        f"restore wall {res['wall_s']:.1f} s ({res['wall_msgs_per_s']:,} msgs/s with start-up "
        f"and planning), peak RSS {res['peak_rss_mb']:.1f} MB",
        "verified: "
        + (
            f"OK (1..N restored; {doc['verify']['sampled']:,} sampled messages exact)"
            if doc["verify"]["ok"]
            else "FAILED " + "; ".join(doc["verify"]["problems"])
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians [%(default)s]")
    parser.add_argument("--sample", type=int, default=1000, help="messages checked")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scratch = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    servers = []
    for name in ("nats", "target"):
        (scratch / name).mkdir()
        servers.append(NatsServer(newest_binary(), scratch / name))
    try:
        for server in servers:
            server.start()
        doc = {"timestamp": stamp, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
        doc.update(measure(args, servers[0], servers[1], scratch))
        out = HERE / "results" / f"restore-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2) if args.json else table(doc))
        return 0 if doc["verify"]["ok"] else 1
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
