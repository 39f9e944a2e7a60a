"""Benchmark ``archiver verify`` against DuckDB reading the same files, in one run.

    python bench/bench_verify.py --messages 1000000 --size 300 [--small 200000] [--json]

1. Starts a throwaway nats-server, fills stream BENCH with ``--small`` messages as
   bench_archive.py does and archives it with ``archiver run`` (no policy file: the
   default file limits) into a local temp store; then deletes the stream, fills it
   again with N messages and archives that into a second store. The server is stopped
   before anything is measured.
2. ``archiver verify --store DIR --json`` as a child process on the N archive: wall
   time, rows/s, MB/s of archive bytes, peak RSS (``common.run_measured``, as the other
   benchmarks measure it); it must exit 0 and report one whole stream of N rows.
3. The same on the small archive: its peak RSS beside the large one shows whether
   verify's memory stays flat as the archive grows. And on an empty store: the
   start-up (interpreter, imports, exit) that every verify pays.
4. DuckDB reading the same files in a child process (so interpreter start-up and
   imports count on both sides): ``count(*)``, ``sum(octet_length(data))``,
   ``count(DISTINCT seq)`` over ``read_parquet('<root>/**/*.parquet',
   hive_partitioning=true)``, which decompresses the payload column fully as verify
   must. Once with DuckDB's default threads, once with ``SET threads=1``. Its answer
   must match the fill.
5. ``archiver.proof.verify.verify`` in this process, timed, for its own seconds without
   start-up (after the children of each round: nothing is spawned from this process
   while it holds the Arrow memory of a verify): once with the memory pool the CLI sets
   up (jemalloc returning freed pages at once), once with Arrow's default pool, each
   with the minor page faults it took.
   ``--repeat K`` repeats 2-5 K times; figures are the median run's (by seconds), peak
   RSS the worst run's.
6. Prints a table (``--json``: one JSON document on stdout) and writes
   ``bench/results/verify-<timestamp>.json``.

``--profile`` adds a cProfile of ``archiver.proof.verify.verify`` in-process on the small
archive and prints where the time goes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

# bench_archive imports common first, which puts bench/ and tests/ on sys.path.
from bench_archive import LocalTargets, Target, run_archiver
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
    run_measured,
    say,
    versions,
)
from nats.js.errors import NotFoundError
from natsserver import NatsServer, newest_binary

RSS_GROWTH_LIMIT = 0.2
"""Verify's peak RSS on the N archive may exceed the small archive's by this fraction."""

# DuckDB has no length(BLOB); octet_length is the byte length of the payload.
QUERY = (
    "SELECT count(*), sum(octet_length(data)), count(DISTINCT seq) "
    "FROM read_parquet('{glob}', hive_partitioning=true)"
)

# The DuckDB child: argv = root, threads (0: DuckDB's default), query. Prints one JSON line.
DUCKDB_CHILD = """\
import json, sys, time
started = time.perf_counter()
import duckdb
con = duckdb.connect()
if int(sys.argv[2]):
    con.execute(f"SET threads={int(sys.argv[2])}")
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
ready = time.perf_counter()
rows, payload, distinct = con.execute(sys.argv[3]).fetchone()
done = time.perf_counter()
print(json.dumps({"rows": rows, "payload_bytes": int(payload), "distinct_seqs": distinct,
                  "threads": int(threads), "import_s": round(ready - started, 3),
                  "query_s": round(done - ready, 3)}))
"""


# -------------------------------------------------------------------------- archives


async def refill(url: str, port: int, count: int, size: int) -> dict[str, Any]:
    """Delete stream BENCH if it exists, then create and fill it with ``count`` messages."""
    nc = await nats.connect(url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(STREAM)
    finally:
        await nc.close()
    return await create_and_fill(url, port, count, size)


def build_archive(server: NatsServer, target: Target, count: int, size: int) -> dict[str, Any]:
    """Fill BENCH with ``count`` messages and archive them into ``target``; the figures."""
    say(f"filling {STREAM} with {count:,} messages of ~{size} B ...")
    fill = asyncio.run(refill(server.url, server.port, count, size))
    say(f"  {fill['msgs_per_s']:,} msgs/s; archiver run ...")
    run = run_archiver(server.url, target)
    result = run["result"]
    if result["messages"] != count or result["lost"] or result["error"]:
        raise RuntimeError(f"archiver run did not archive 1..{count}: {result}")
    files = target.parquet_files()
    archive = {
        "root": target.store_url,
        "messages": count,
        "payload_bytes": fill["payload_bytes"],
        "header_messages": fill["header_messages"],
        "files": len(files),
        "archive_bytes": target.archive_bytes(),
        "archiver_seconds": result["seconds"],
        "archiver_peak_rss_mb": run["peak_rss_mb"],
    }
    say(
        f"  {archive['files']} file(s), {archive['archive_bytes'] / MB:,.1f} MB "
        f"in {result['seconds']:.1f} s"
    )
    return archive


# ------------------------------------------------------------------------- measuring


def verify_child(archive: dict[str, Any]) -> dict[str, Any]:
    """``archiver verify --store ROOT --json`` as a child; fails unless whole, N rows."""
    others = ForeignCpu()
    run = run_json([*archiver_command(), "verify", "--store", archive["root"], "--json"])
    run["foreign_cpu_s"] = others.seconds()
    reports = run.pop("result")
    count = archive["messages"]
    want = {"stream": STREAM, "ok": True, "rows": count, "first_seq": 1, "last_seq": count}
    got = [{k: r[k] for k in want} for r in reports]
    if got != [want]:
        raise RuntimeError(f"verify reported {reports}, expected one report like {want}")
    wall = run["wall_s"]
    run.update(
        {
            "rows": reports[0]["rows"],
            "files": reports[0]["files"],
            "findings": reports[0]["counts"],
            "seconds": wall,
            "msgs_per_s": round(rate(count, wall)),
            "mb_per_s": round(rate(archive["archive_bytes"] / MB, wall), 1),
            "payload_mb_per_s": round(rate(archive["payload_bytes"] / MB, wall), 1),
        }
    )
    return run


# What verify of a local store imports (the archives measured here are local; an S3
# store adds boto3, about 0.1 s).
STARTUP_CHILD = "import archiver.cli, archiver.proof.verify, archiver.store.local"


def startup_child(empty: Path) -> dict[str, Any]:
    """What ``archiver verify`` costs before it reads anything: interpreter start-up and
    its imports (verify of an empty store is an error since it says there is no archive
    there, so the child imports what verify imports, and exits)."""
    others = ForeignCpu()
    run = run_measured([sys.executable, "-c", STARTUP_CHILD])
    run["foreign_cpu_s"] = others.seconds()
    run.pop("stdout", None)
    run.update({"seconds": run["wall_s"], "msgs_per_s": 0, "mb_per_s": 0.0})
    return run


def duckdb_child(archive: dict[str, Any], threads: int) -> dict[str, Any]:
    """The DuckDB query as a child process; fails unless it agrees with the fill."""
    query = QUERY.format(glob=f"{archive['root']}/**/*.parquet")
    others = ForeignCpu()
    run = run_json([sys.executable, "-c", DUCKDB_CHILD, archive["root"], str(threads), query])
    run["foreign_cpu_s"] = others.seconds()
    result = run.pop("result")
    count = archive["messages"]
    want = {"rows": count, "distinct_seqs": count, "payload_bytes": archive["payload_bytes"]}
    if {k: result[k] for k in want} != want:
        raise RuntimeError(f"duckdb answered {result}, expected {want}")
    wall = run["wall_s"]
    run.update(
        {
            **result,
            "query": query,
            "seconds": wall,
            "msgs_per_s": round(rate(count, wall)),
            "mb_per_s": round(rate(archive["archive_bytes"] / MB, wall), 1),
            "query_msgs_per_s": round(rate(count, result["query_s"])),
        }
    )
    return run


@functools.cache
def arrow_default_pool() -> Any:
    """Arrow's own default memory pool (mimalloc here), captured before any change."""
    import pyarrow as pa

    return pa.default_memory_pool()


def use_pool(kind: str) -> str:
    """Set this process's Arrow memory pool; its backend's name.

    ``cli``: the pool the ``archiver`` command sets up at start (jemalloc, freed pages
    returned to the system at once) for pyarrow's own allocations. Parquet's buffers
    come from Arrow's C++ default pool, fixed when this process imported pyarrow
    (mimalloc unless ARROW_DEFAULT_MEMORY_POOL said otherwise), while the command
    names jemalloc there too: in-process figures are near the child's, not equal.
    ``arrow``: Arrow's default, which keeps freed pages for reuse.
    """
    import pyarrow as pa

    from archiver.cli.app import _return_memory_promptly

    arrow = arrow_default_pool()
    if kind == "cli":
        _return_memory_promptly()
    else:
        pa.set_memory_pool(arrow)
    return f"{pa.default_memory_pool().backend_name} ({kind})"


def verify_in_process(archive: dict[str, Any], pool: str) -> dict[str, Any]:
    """``archiver.proof.verify.verify`` in this process: its own seconds, without start-up, and
    the minor page faults it took (memory handed back and touched again)."""
    from archiver.config import resolve
    from archiver.proof.verify import verify

    pool_name = use_pool(pool)
    settings = resolve({"store": archive["root"]})
    others = ForeignCpu()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    (report,) = verify(settings, ())
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    if not report.ok or report.rows != archive["messages"]:
        raise RuntimeError(f"in-process verify: {report.as_json()}")
    return {
        "seconds": round(seconds, 3),
        "msgs_per_s": round(rate(report.rows, seconds)),
        "mb_per_s": round(rate(archive["archive_bytes"] / MB, seconds), 1),
        "foreign_cpu_s": others.seconds(),
        "memory_pool": pool_name,
        "minor_faults": faults,
    }


def profile_verify(archive: dict[str, Any], out_path: Path) -> tuple[dict[str, Any], str]:
    """cProfile of ``archiver.proof.verify.verify`` in-process; figures and a printed report."""
    from archiver.config import resolve
    from archiver.proof.verify import verify

    use_pool("cli")
    settings = resolve({"store": archive["root"]})
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    try:
        (report,) = verify(settings, ())
    finally:
        profile.disable()
    wall = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"profiled verify: {report.as_json()}")
    profile.dump_stats(str(out_path))
    stats = pstats.Stats(profile)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def cumulative(name: str, file_part: str = "") -> float:
        return sum(
            row[3] for (path, _, func), row in table.items() if func == name and file_part in path
        )

    def own(fragment: str) -> float:
        return sum(row[2] for (_, _, func), row in table.items() if fragment in func)

    # Where the time goes: the buckets below overlap nothing (each is a leaf or a
    # subtree that contains none of the others).
    parts = {
        "read_row_group (decompress + decode, page CRCs)": cumulative("read_row_group"),
        "sha256 of the columns (hashlib update)": own("update' of '_hashlib.HASH"),
        "ContentHash.update without sha256": cumulative("update", "digest.py")
        - own("update' of '_hashlib.HASH"),
        "seq checks (_read_rows without the above)": cumulative("_read_rows")
        - cumulative("read_row_group")
        - cumulative("update", "digest.py"),
        "opening files and footers (ParquetFile)": cumulative("__init__", "parquet/core.py"),
    }
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    figures = {
        "rows": report.rows,
        "wall_s": round(wall, 3),
        "profiled_s": round(total, 3),
        "parts_s": {k: round(v, 3) for k, v in parts.items()},
        "profile_file": str(out_path),
    }
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(15)
    lines = [
        f"\nProfiled verify of {report.rows:,} rows: {wall:.2f} s wall "
        "(cProfile slows Python code).",
        *(f"  {v:6.2f} s {100 * v / total:5.1f}%  {k}" for k, v in parts.items()),
        f"Profile saved to {out_path}.",
        "\n=== top 15 by own time ===",
        stream.getvalue(),
    ]
    return figures, "\n".join(lines)


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by wall time, with every run's beside it; peak RSS of the worst."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        out["all_seconds"] = [r["seconds"] for r in runs]
        out["all_foreign_cpu_s"] = [r["foreign_cpu_s"] for r in runs]
    if "peak_rss_mb" in out:
        worst = max(runs, key=lambda r: r["peak_rss_mb"])
        for key in ("peak_rss_mb", "peak_rss_psutil_mb", "peak_rss_hwm_mb", "ru_maxrss_mb"):
            out[key] = worst[key]
        out["all_peak_rss_mb"] = [r["peak_rss_mb"] for r in runs]
    return out


def measure(
    args: argparse.Namespace, big: dict[str, Any], small: dict[str, Any], empty: Path
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "verify",
            "verify_small",
            "startup",
            "duckdb",
            "duckdb_1_thread",
            "own",
            "own_arrow",
        )
    }
    for attempt in range(args.repeat):
        tag = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
        for key, archive in (("verify", big), ("verify_small", small)):
            say(f"archiver verify, {archive['messages']:,} rows{tag} ...")
            runs[key].append(verify_child(archive))
            say(f"  {runs[key][-1]['wall_s']:.2f} s, peak RSS {runs[key][-1]['peak_rss_mb']} MB")
        say(f"archiver verify, empty store (start-up){tag} ...")
        runs["startup"].append(startup_child(empty))
        say(f"  {runs['startup'][-1]['wall_s']:.2f} s")
        for key, threads in (("duckdb", 0), ("duckdb_1_thread", 1)):
            say(f"duckdb, threads {threads or 'default'}{tag} ...")
            runs[key].append(duckdb_child(big, threads))
            say(f"  {runs[key][-1]['wall_s']:.2f} s (query {runs[key][-1]['query_s']:.2f} s)")
        # Last: after them this process holds Arrow memory, which no child may inherit.
        for key, pool in (("own", "cli"), ("own_arrow", "arrow")):
            say(f"archiver.proof.verify.verify in-process, {pool} memory pool{tag} ...")
            runs[key].append(verify_in_process(big, pool))
            say(f"  {runs[key][-1]['seconds']:.2f} s, {runs[key][-1]['minor_faults']:,} faults")
    v, vs, up, own, own_arrow = (
        median(runs[k]) for k in ("verify", "verify_small", "startup", "own", "own_arrow")
    )
    d, d1 = median(runs["duckdb"]), median(runs["duckdb_1_thread"])
    return {
        "verify": v,
        "verify_small": vs,
        "verify_startup": up,
        "verify_in_process": own,
        "verify_in_process_arrow_pool": own_arrow,
        "duckdb": d,
        "duckdb_1_thread": d1,
        "ratios": {
            "verify_wall_over_duckdb_wall": round(v["wall_s"] / d["wall_s"], 2),
            "verify_wall_over_duckdb_1_thread_wall": round(v["wall_s"] / d1["wall_s"], 2),
            "verify_own_over_duckdb_query": round(own["seconds"] / d["query_s"], 2),
            "verify_own_over_duckdb_1_thread_query": round(own["seconds"] / d1["query_s"], 2),
        },
        "verdict": {
            "rss_above_limit": v["peak_rss_mb"] > RSS_LIMIT_MB,
            "rss_limit_mb": RSS_LIMIT_MB,
            "rss_grows_with_n": v["peak_rss_mb"] > vs["peak_rss_mb"] * (1 + RSS_GROWTH_LIMIT),
            "rss_growth_limit": RSS_GROWTH_LIMIT,
        },
    }


# -------------------------------------------------------------------------- reporting


def table(doc: dict[str, Any]) -> str:
    big, small = doc["archives"]["large"], doc["archives"]["small"]
    m = doc["measured"]
    v, vs, up, own, own_arrow, d, d1 = (
        m[k]
        for k in (
            "verify",
            "verify_small",
            "verify_startup",
            "verify_in_process",
            "verify_in_process_arrow_pool",
            "duckdb",
            "duckdb_1_thread",
        )
    )
    rows = [
        (f"archiver verify (child), {big['messages']:,}", v, f"{v['peak_rss_mb']:.1f}"),
        (f"archiver verify (child), {small['messages']:,}", vs, f"{vs['peak_rss_mb']:.1f}"),
        ("archiver verify (child), empty store", up, f"{up['peak_rss_mb']:.1f}"),
        (f"verify() in-process, {big['messages']:,}", own, "-"),
        (f"  same, Arrow's pool ({own_arrow['memory_pool'].split()[0]})", own_arrow, "-"),
        (f"duckdb (child, {d['threads']} threads)", d, f"{d['peak_rss_mb']:.1f}"),
        ("duckdb (child, 1 thread)", d1, f"{d1['peak_rss_mb']:.1f}"),
    ]
    lines = [
        f"{'':38} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} {'peak RSS MB':>12} "
        f"{'others CPU s':>13}"
    ]
    for name, r, rss in rows:
        rows_s = f"{r['msgs_per_s']:,}" if r["msgs_per_s"] else "-"
        mb_s = f"{r['mb_per_s']:.1f}" if r["msgs_per_s"] else "-"
        lines.append(
            f"{name:38} {r['seconds']:>8.2f} {rows_s:>10} {mb_s:>7} {rss:>12} "
            f"{r['foreign_cpu_s']:>13.2f}"
        )
    ratios = m["ratios"]
    lines += [
        "",
        "seconds: wall of the child from spawn to exit (start-up and imports included); "
        "in-process: verify() alone. MB/s: archive (Parquet) bytes.",
        f"verify() in-process: memory pool {own['memory_pool']} as the CLI sets it, "
        f"{own['minor_faults']:,} minor page faults; {own_arrow['memory_pool']}: "
        f"{own_arrow['minor_faults']:,}",
        f"verify child minus start-up: {v['wall_s'] - up['wall_s']:.2f} s "
        f"({big['messages']:,} rows), {vs['wall_s'] - up['wall_s']:.2f} s "
        f"({small['messages']:,} rows)",
        f"duckdb query alone: {d['query_s']:.2f} s ({d['threads']} threads), "
        f"{d1['query_s']:.2f} s (1 thread); import + connect {d['import_s']:.2f} s",
        f"verify / duckdb: wall {ratios['verify_wall_over_duckdb_wall']:.2f} "
        f"(1 thread {ratios['verify_wall_over_duckdb_1_thread_wall']:.2f}); "
        f"own time {ratios['verify_own_over_duckdb_query']:.2f} "
        f"(1 thread {ratios['verify_own_over_duckdb_1_thread_query']:.2f})",
        f"archive {big['messages']:,} x ~{doc['params']['size']} B: {big['files']} file(s), "
        f"{big['archive_bytes'] / MB:,.1f} MB Parquet for {big['payload_bytes'] / MB:,.1f} MB "
        f"payload; small: {small['files']} file(s), {small['archive_bytes'] / MB:,.1f} MB",
        f"verify peak RSS {big['messages']:,}: {v['peak_rss_mb']:.1f} MB ({rss_note(v)})",
        f"verify peak RSS {small['messages']:,}: {vs['peak_rss_mb']:.1f} MB ({rss_note(vs)})",
        f"both verify runs exit 0, one stream ok, rows = N, seq 1..N; duckdb rows, distinct "
        f"seqs and payload bytes = the fill's; load avg 1m before measuring "
        f"{doc['load_avg_1m_before_measuring']:.2f}",
    ]
    if doc["measured"]["verdict"]["rss_above_limit"]:
        lines.append(f"WARNING: verify peak RSS is above {RSS_LIMIT_MB} MB")
    if doc["measured"]["verdict"]["rss_grows_with_n"]:
        lines.append(
            f"WARNING: verify peak RSS grows with N (over {RSS_GROWTH_LIMIT:.0%} above "
            "the small archive's)"
        )
    lines += busy_notes(rows)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--small",
        type=int,
        default=200_000,
        help="messages in the small archive, for verify's memory [%(default)s]",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure this many times; report medians"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile archiver.proof.verify.verify in-process on the small archive",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (server store, archives)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    (scratch / "nats").mkdir()
    server = NatsServer(newest_binary(), scratch / "nats")
    targets = LocalTargets(scratch, keep=True)  # removed with scratch, unless --keep
    try:
        server.start()
        say(f"nats-server on {server.url}, store {scratch / 'nats'}")
        small = build_archive(server, targets.new(), args.small, args.size)
        big = build_archive(server, targets.new(), args.messages, args.size)
        server.stop()  # nothing of ours runs while we measure
        # Write the stream's and the archives' dirty pages back now, so the kernel's
        # writeback does not run during the measurements; the files stay in the page
        # cache, warm for every reader alike.
        os.sync()
        empty = scratch / "empty-store"
        empty.mkdir()
        load_measuring = os.getloadavg()[0]
        doc: dict[str, Any] = {
            "benchmark": "verify",
            "timestamp": stamp,
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_before_measuring": round(load_measuring, 2),
            "params": {
                "messages": args.messages,
                "size": args.size,
                "small": args.small,
                "repeat": args.repeat,
                "store": "local",
                "policy": "none (default file limits)",
            },
            "versions": {**versions(), "duckdb": _version("duckdb")},
            "archives": {"large": big, "small": small},
            "measured": measure(args, big, small, empty),
        }
        report = ""
        if args.profile:
            say(f"cProfile of verify on {args.small:,} rows ...")
            doc["profile"], report = profile_verify(
                small, results_dir / f"profile-verify-{stamp}.prof"
            )
        out = results_dir / f"verify-{stamp}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2) if args.json else table(doc))
        if report:
            # With --json the profile report goes to stderr: stdout stays one document.
            print(report, file=sys.stderr if args.json else sys.stdout)
        say(f"results written to {out}")
        return 0
    finally:
        server.stop()
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
