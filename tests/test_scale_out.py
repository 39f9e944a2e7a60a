"""Scale-out: several archivers at once share the streams through the NATS leases alone
(as parallel pods of one Job, or CronJobs over overlapping stream sets)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import publish, read_archive
from natsserver import NatsServer
from test_archive import add_streams

from archiver.store import open_store

# Real processes killed, restarted or raced: slow by nature (-m 'not slow' skips them).
pytestmark = pytest.mark.slow

STREAMS = {f"S{i:02d}": f"s{i}.>" for i in range(20)}
PER_STREAM = 2000


def test_two_archivers_share_twenty_streams(nats: NatsServer, tmp_path: Path) -> None:
    """Each stream archived exactly once, by one of the two, and both did work."""
    asyncio.run(add_streams(nats.url, STREAMS))
    for name, subject in STREAMS.items():
        asyncio.run(publish(nats.url, name, [subject.replace(">", "x")] * PER_STREAM))
    root = tmp_path / "archive"
    cmd = [sys.executable, "-m", "archiver", "run", "--nats-url", nats.url]
    procs = [
        subprocess.Popen(
            [*cmd, "--store", str(root), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    did = [{r["stream"] for r in json.loads(out) if r["messages"]} for out, _ in outs]
    assert did[0] and did[1], "each archiver archived some streams"
    assert not did[0] & did[1], "no stream archived by both"
    assert did[0] | did[1] == set(STREAMS)
    # The archive itself: every message of every stream once, nothing twice.
    store = open_store(str(root))
    for name in STREAMS:
        seqs = read_archive(store, tmp_path, name)["seq"].to_pylist()
        assert sorted(seqs) == list(range(1, PER_STREAM + 1)), name
