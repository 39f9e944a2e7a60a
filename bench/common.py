"""Helpers shared by the benchmarks: progress, CPU of others, the fill, a measured child.

Importing this module puts ``bench/`` and ``tests/`` on ``sys.path``, so fill.py and the
tests' nats-server helper (``natsserver``) import from any working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.js.api import StorageType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fill import PipelinedPublisher, payload_maker  # noqa: E402
from natsserver import newest_binary  # noqa: E402

STREAM = "BENCH"
MB = 1_000_000
RSS_LIMIT_MB = 300
RSS_POLL_S = 0.05


def say(text: str) -> None:
    """Progress goes to stderr, so stdout can carry exactly one JSON document."""
    print(text, file=sys.stderr, flush=True)


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


class ForeignCpu:
    """CPU seconds used by processes outside this benchmark's own process tree.

    On a 2-core machine anything else running (a test suite, say) skews every figure,
    so each phase reports how much CPU others took meanwhile: the machine's busy time
    (user + nice + system, from /proc/stat) minus our tree's (this process, its reaped
    children and its live descendants, such as the nats-server). Interrupt time is left
    out: loopback networking is mostly our own.
    """

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.start = self._snapshot()

    def _snapshot(self) -> float:
        machine = psutil.cpu_times()
        busy = machine.user + machine.nice + machine.system
        ours = 0.0
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                ours += t.user + t.system + t.children_user + t.children_system
        return busy - ours

    def seconds(self) -> float:
        """CPU seconds others used since construction (or the last call), then restart."""
        now = self._snapshot()
        used, self.start = now - self.start, now
        return round(max(used, 0.0), 2)


# ------------------------------------------------------------------------ the server


async def create_and_fill(url: str, port: int, count: int, size: int) -> dict[str, Any]:
    """Create stream BENCH and fill it; fails unless the stream holds exactly 1..count."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=["bench.>"], storage=StorageType.FILE)
        make = payload_maker(size)
        stats = await PipelinedPublisher("127.0.0.1", port).run(count, make)
        state = (await js.stream_info(STREAM)).state
        if (state.messages, state.first_seq, state.last_seq) != (count, 1, count):
            raise RuntimeError(
                f"stream holds {state.messages} messages "
                f"({state.first_seq}..{state.last_seq}), expected 1..{count}"
            )
    finally:
        await nc.close()
    return {
        "messages": stats.messages,
        "payload_bytes": stats.payload_bytes,
        "header_messages": stats.header_messages,
        "header_bytes": stats.header_bytes,
        "resent": stats.resent,
        "refusals": stats.errors,
        "seconds": round(stats.seconds, 3),
        "msgs_per_s": round(rate(count, stats.seconds)),
        "mb_per_s": round(rate(stats.payload_bytes / MB, stats.seconds), 1),
    }


# ---------------------------------------------------------------------- child processes


def archiver_command() -> list[str]:
    """The venv's ``archiver`` script, else ``python -m archiver`` (the same code)."""
    script = Path(sys.executable).parent / "archiver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archiver"]


def _vm_hwm(pid: int) -> int:
    """The high-water RSS of ``pid``'s own address space (``VmHWM``), in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return 0


def run_measured(command: list[str], env: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Run ``command`` to the end; its wall time, output and peak RSS.

    Peak RSS is the larger of two readings taken every 50 ms while the child runs: its
    RSS (psutil; misses short spikes) and the kernel's high-water mark of its address
    space, ``VmHWM`` in /proc/<pid>/status (catches spikes; only growth in the last
    50 ms before exit can escape it).

    The ``ru_maxrss`` that ``os.wait4`` returns is reported too, but not used: on Linux
    it includes the high-water RSS of *this* process at the time of the spawn (the
    child starts on the parent's address space, vfork or fork, and exec keeps that
    mark), so after an in-process phase that used more memory than the child it reports
    the parent's peak [seen: /bin/true at 393 MB after the parent touched 400 MB].
    ``env`` changes the environment; None removes a variable. Raises on a non-zero exit.
    """
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=merged)
        watched = psutil.Process(proc.pid)
        sampled = hwm = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _vm_hwm(proc.pid))
            with contextlib.suppress(psutil.Error):
                sampled = max(sampled, watched.memory_info().rss)
            time.sleep(RSS_POLL_S)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen won't wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} exited {proc.returncode}:\n{stderr[-3000:]}")
    return {
        "wall_s": round(wall, 3),
        "stdout": stdout,
        "peak_rss_psutil_mb": round(sampled / MB, 1),
        "peak_rss_hwm_mb": round(hwm / MB, 1),
        "peak_rss_mb": round(max(sampled, hwm) / MB, 1),
        # An upper bound only: includes this process's own peak (see above).
        "ru_maxrss_mb": round(usage.ru_maxrss * 1024 / MB, 1),  # Linux reports KiB
        "command": " ".join(command),
    }


def rss_note(run: dict[str, Any]) -> str:
    """How ``peak_rss_mb`` was made, for a table line."""
    return (
        f"psutil {run['peak_rss_psutil_mb']:.1f}, VmHWM {run['peak_rss_hwm_mb']:.1f}; wait4 "
        f"ru_maxrss {run['ru_maxrss_mb']:.1f}, not used: it includes the benchmark's own peak"
    )


def run_json(command: list[str], env: dict[str, str | None] | None = None) -> dict[str, Any]:
    """``run_measured``, with the child's stdout parsed as JSON into ``result``."""
    run = run_measured(command, env)
    run["result"] = json.loads(run.pop("stdout"))
    return run


# -------------------------------------------------------------------------- reporting


def versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    server = subprocess.run(
        [newest_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    # The commit, and the archiver package's own tree: the commit moves with unrelated
    # changes (docs, tests), the tree only when the code measured changes.
    dirty = "+dirty" if git("status", "--porcelain", "--", "archiver") else ""
    return {
        "git_commit": git("rev-parse", "--short", "HEAD") or "?",
        "archiver_tree": (git("rev-parse", "--short", "HEAD:archiver") or "?") + dirty,
        "python": platform.python_version(),
        "nats_server": server.removeprefix("nats-server: "),
        "nats_py": version("nats-py"),
        "pyarrow": version("pyarrow"),
        "nats_archiver": version("nats-archiver"),
        "cpus": str(os.cpu_count()),
        "machine": platform.machine(),
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by rate (one run: that run), with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["msgs_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        median["all_msgs_per_s"] = [r["msgs_per_s"] for r in runs]
        median["all_foreign_cpu_s"] = [r["foreign_cpu_s"] for r in runs]
    return median


def busy_notes(rows: list[tuple[str, dict[str, Any], str]]) -> list[str]:
    """A line naming the phases other processes disturbed (over a tenth of a core)."""
    busy = [name for name, r, _ in rows if r["foreign_cpu_s"] > 0.1 * r["seconds"]]
    if not busy:
        return []
    return [
        f"NOTE: other processes used over 10% of a core during: {', '.join(busy)}; "
        "those figures are likely low"
    ]


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: N messages of about S bytes."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="N [%(default)s]")
    parser.add_argument("--size", type=int, default=300, help="payload bytes, about [%(default)s]")
    return parser
