"""The fixed cost per stream of an ``archiver run``: many small streams in one run.

    python bench/bench_streams.py --streams 1000 --messages 100 [--json]

Starts a throwaway nats-server, creates ``--streams`` streams ``S0000``... (subject
``s<i>.>``) of ``--messages`` messages of ~300 B each (filled by ``fill.py``'s
pipelined, acked publisher), then runs ``archiver run --json`` as a child process into
a fresh local store: wall time, seconds per stream, peak RSS. Verifies that every
stream was archived whole (its summary row: messages, no error, nothing lost).
Writes ``bench/results/streams-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from common import HERE, archiver_command, run_json, say, versions
from fill import Message, PipelinedPublisher, payload_maker
from natsserver import NatsServer, newest_binary


async def fill(url: str, port: int, streams: int, messages: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(streams):
            await js.add_stream(name=f"S{i:04d}", subjects=[f"s{i:04d}.>"])
    finally:
        await nc.close()
    make = payload_maker(300)

    def message(index: int) -> Message:
        body = make(index)
        return Message(f"s{(index - 1) % streams:04d}.event", body.header, body.payload)

    await PipelinedPublisher("127.0.0.1", port).run(streams * messages, message)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100, help="per stream")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    (scratch / "nats").mkdir()
    server = NatsServer(newest_binary(), scratch / "nats")
    try:
        server.start()
        say(f"creating {args.streams} streams of {args.messages} messages ...")
        asyncio.run(fill(server.url, server.port, args.streams, args.messages))
        say("archiver run ...")
        command = [*archiver_command(), "run", "--nats-url", server.url]
        run = run_json([*command, "--store", str(scratch / "archive"), "--json"])
        rows = run.pop("result")
        wrong = [
            r["stream"] for r in rows if r["messages"] != args.messages or r["error"] or r["lost"]
        ]
        seconds = sum(float(r["seconds"]) for r in rows)
        doc: dict[str, Any] = {
            "benchmark": "streams",
            "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "load_avg_1m_before": round(os.getloadavg()[0], 2),
            "params": {"streams": args.streams, "messages_per_stream": args.messages},
            "versions": versions(),
            "wall_s": run["wall_s"],
            "streams_archived": len(rows) - len(wrong),
            "per_stream_s": round(run["wall_s"] / max(len(rows), 1), 4),
            "sum_of_stream_seconds": round(seconds, 3),
            "peak_rss_mb": run["peak_rss_mb"],
            "ok": len(rows) == args.streams and not wrong,
            "wrong": wrong[:10],
        }
        out = HERE / "results" / f"streams-{doc['timestamp']}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(
                f"{doc['streams_archived']:,} of {args.streams:,} streams of {args.messages} "
                f"messages archived in {doc['wall_s']:.1f} s wall "
                f"({doc['per_stream_s'] * 1000:.1f} ms per stream; the streams' own seconds "
                f"add up to {seconds:.1f} s); "
                f"peak RSS {doc['peak_rss_mb']:.0f} MB"
            )
        return 0 if doc["ok"] else 1
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
