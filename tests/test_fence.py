"""The commit is the fence: whatever the timing, no two committed files hold one seq.

Leases save work; these tests take them out of the picture (a run frozen past its
lease, or leases disabled) and check that the archive, as every reader sees it, still
holds each message exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    data_keys,
    nats_client,
    publish,
    read_archive,
    run_cli,
    settings,
    unfence,
    wait_until,
)
from natsserver import NatsServer
from test_archive import add_streams
from test_crash import write_policy

from archiver.archive import run as run_module
from archiver.archive.lease import Leases
from archiver.config import FileLimits
from archiver.format import catalog, layout
from archiver.store import Store

N = 1500


async def publish_incompressible(url: str, n: int) -> None:
    """12 kB of random bytes each: 500 rows make a 6 MB file, a multipart upload on S3."""
    async with nats_client(url) as nc:
        js = nc.jetstream()
        for i in range(n):
            await js.publish(f"auth.{i % 7}", os.urandom(12_000))


def _stopped(pid: int) -> bool:
    """Whether the process is frozen by SIGSTOP (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _exactly_once(store: Store, tmp_path: Path, n: int) -> None:
    seqs = read_archive(store, tmp_path, "AUTH").column("seq").to_pylist()
    assert len(seqs) == len(set(seqs)), "a message is stored twice"
    assert sorted(seqs) == list(range(1, n + 1)), "messages are missing"


@pytest.mark.slow
def test_a_run_frozen_past_its_lease_mid_upload_commits_nothing_twice(
    nats: NatsServer, any_store: tuple[str, Store], tmp_path: Path
) -> None:
    """Run A freezes in the middle of its first upload; its lease runs out; run B, which
    cuts files of another size, archives the stream; then A wakes and finishes."""
    url, store = any_store
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish_incompressible(nats.url, N))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    policy_a = write_policy(tmp_path / "a", url, file_max_rows=500)
    policy_b = write_policy(tmp_path / "b", url, file_max_rows=700)
    frozen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archiver",
            "run",
            "--nats-url",
            nats.url,
            "--policy",
            str(policy_a),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ARCHIVER_FAILPOINTS": "mid-upload:1=stop"},
    )
    try:
        wait_until(lambda: _stopped(frozen.pid), "run A to freeze mid-upload")

        def b_archived() -> bool:
            b = run_cli("run", "--nats-url", nats.url, "--policy", str(policy_b), "--json")
            return b.returncode == 0 and '"messages": 0' not in b.stdout

        wait_until(b_archived, "run B to take the lease over and archive the stream")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    _, stderr = frozen.communicate(timeout=120)
    assert frozen.returncode == 1, stderr
    assert "another run committed seq 1 first" in stderr, stderr
    assert "Traceback" not in stderr
    _exactly_once(store, tmp_path, N)
    # A's file is in the store, uncommitted: verify names it and the archive is whole.
    assert len(data_keys(store)) == len(catalog.data_files(store, "AUTH")) + 1
    checked = run_cli("verify", "--store", url, "--json")
    assert checked.returncode == 0, checked.stdout
    assert '"uncommitted"' in checked.stdout


class _NoLease:
    """A lease that never refuses: as if the lease's timing had failed entirely."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier
        self.waited = False

    def start_keepalive(self) -> None:
        pass

    def ensure(self) -> None:
        # Both runs reach their first commit before either makes it: they both started
        # from the same resume point and race for the same seqs.
        if not self.waited:
            self.waited = True
            self.barrier.wait(timeout=60)

    async def release(self) -> None:
        pass


def test_two_runs_without_leases_never_commit_a_seq_twice(
    nats: NatsServer,
    any_store: tuple[str, Store],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, store = any_store
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.{i % 7}" for i in range(N)]))
    barrier = threading.Barrier(2)

    async def acquire(self: Leases, stream: str) -> Any:
        return _NoLease(barrier)

    monkeypatch.setattr(Leases, "acquire", acquire)

    async def both() -> list[run_module.RunReport]:
        return await asyncio.gather(
            *(
                run_module.run(settings(nats.url, url, limits=FileLimits(1000, max_rows=rows)))
                for rows in (400, 700)
            )
        )

    reports = asyncio.run(both())
    rows = [r.streams[0] for r in reports]
    losers = [r for r in rows if r.error]
    assert len(losers) == 1, [r.error for r in rows]
    assert "another run committed seq 1 first" in (losers[0].error or "")
    _exactly_once(store, tmp_path, N)
    # Every file of the winner counts; the loser's first file is in the store, ignored.
    (winner,) = [r for r in rows if not r.error]
    assert len(catalog.data_files(store, "AUTH")) == winner.files
    assert run_cli("verify", "--store", url).returncode == 0


def test_resume_point_ignores_message_times_and_date_partitions(
    nats: NatsServer, tmp_path: Path
) -> None:
    """The chain's end is the resume point, wherever the files' date partitions are: a
    newer file filed under an older day (a node whose clock ran ahead, then was set
    back) must not make the next run archive anything twice."""
    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root), limits=FileLimits(1000, max_rows=10))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 30))
    asyncio.run(run_module.run(cfg))
    from archiver.store import open_store

    store = open_store(str(root))
    # Move the newest file two days back, as a clock stepping back would have filed it.
    newest = sorted(data_keys(store))[-1]
    name = layout.parse_data_key(newest)
    assert name is not None and name.last_seq == 30
    old_day = name.day.replace(day=1) if name.day.day > 3 else name.day.replace(year=2020)
    moved = layout.data_key("AUTH", old_day, name.generation, name.first_seq, name.last_seq)
    store.put_bytes(moved, store.get_bytes(newest))
    store.delete(newest)
    marker = layout.marker_key("AUTH", name.generation, name.first_seq)
    for _o in list(store.list(marker)):  # its commit marker now names the moved file
        body = store.get_bytes(marker).replace(newest.encode(), moved.encode())
        store.delete(marker)
        store.put_bytes(marker, body)
    assert catalog.archived_seq(store, "AUTH", name.generation) == 30
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 5))
    again = asyncio.run(run_module.run(cfg)).streams[0]
    assert (again.from_seq, again.messages) == (31, 5)
    _exactly_once(store, tmp_path, 35)


def test_a_lost_data_file_is_healed_by_the_next_run(nats: NatsServer, tmp_path: Path) -> None:
    """A committed file deleted from the store while the server still holds its seqs:
    verify says it is healable, the next run archives it again under its own key."""
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root), limits=FileLimits(1000, max_rows=100))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.{i % 3}" for i in range(300)]))
    asyncio.run(run_module.run(cfg))
    store = open_store(str(root))
    lost = sorted(data_keys(store))[1]  # seqs 101-200
    store.delete(lost)
    before = run_cli("verify", "--store", str(root))
    assert before.returncode == 3
    assert "missing seq 101..200" in before.stdout and "healable" in before.stdout
    healed = asyncio.run(run_module.run(cfg)).streams[0]
    assert healed.error is None and healed.healed == 1 and healed.messages == 0
    assert lost in data_keys(store)
    assert run_cli("verify", "--store", str(root)).returncode == 0
    _exactly_once(store, tmp_path, 300)


def test_the_loss_record_of_a_file_is_written_before_its_commit(tmp_path: Path) -> None:
    """A run that dies right after committing a file must not leave its losses
    unrecorded: status and the metrics count losses from records, not from files."""
    from archiver.archive.cutter import Cutter
    from archiver.format.batch import Batch
    from archiver.format.fence import Fence
    from archiver.format.gaps import Gap, GapKind
    from archiver.store.memory import MemoryStore

    class DiesAfterFirstMarker(MemoryStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            if "/_commits/" in key and any(
                "/_commits/g" in k and "base" not in k for k in self.keys()
            ):
                raise KeyboardInterrupt("killed")
            super().put_bytes(key, data)

        def keys(self) -> list[str]:
            return [o.key for o in self.list("")]

    store = DiesAfterFirstMarker()
    gen = "20260101T000000000000Z"
    cutter = Cutter(
        Fence(store, "AUTH", gen, "test"),
        "{}",
        FileLimits(row_group_rows=1000, max_rows=4),
        tmp_path,
        before_commit=lambda: None,
    )
    batch = Batch()
    for seq in (1, 4):
        batch.append(seq, "auth.a", 1_700_000_000_000_000_000 + seq, None, b"x")
    cutter.add_gaps([Gap(2, 3, GapKind.EXPIRED)])  # expired while the file was read
    cutter.add(batch)
    with pytest.raises(KeyboardInterrupt):
        cutter.add_gaps([Gap(5, 6, GapKind.EXPIRED)])
        cutter.finish()
    (committed,) = catalog.generation(store, "AUTH", gen).files
    assert (committed.name.first_seq, committed.name.last_seq) == (1, 4)
    records = catalog.generation(store, "AUTH", gen).records
    assert [(r.first_seq, r.last_seq, r.inside) for r in records] == [(1, 4, True)]


GEN_OLD, GEN_NEW = "20260101T000000000000Z", "20260102T000000000000Z"


def _put_link(store: Store, fence: Any, key: str, first: int, last: int) -> None:
    store.put_bytes(key, b"x")
    fence.claim(key, first, last)


def test_where_objects_share_a_range_the_marker_decides() -> None:
    """A run that lost the fence may leave an object of the same seq range as the
    committed one (a hole it saw as expired, the winner as deleted): readers must count
    the one the marker names, and see a committed file gone as missing."""
    from archiver.format.fence import Fence
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    fence = Fence(store, "AUTH", GEN_OLD, "winner")
    gap = layout.gap_key("AUTH", GEN_OLD, 1, 10, lost=False)
    data = layout.data_key("AUTH", date(2026, 1, 1), GEN_OLD, 11, 20)
    _put_link(store, fence, gap, 1, 10)
    _put_link(store, fence, data, 11, 20)
    _put_link(store, fence, layout.gap_key("AUTH", GEN_OLD, 21, 30, lost=False), 21, 30)
    # The loser's objects over the same ranges.
    store.put_bytes(layout.gap_key("AUTH", GEN_OLD, 1, 10, lost=True), b"x")
    store.put_bytes(layout.gap_key("AUTH", GEN_OLD, 11, 20, lost=True), b"x")
    gen = catalog.generation(store, "AUTH", GEN_OLD)
    assert [r.key for r in gen.records if r.last_seq <= 20] == [gap]
    assert [f.key for f in gen.files] == [data] and gen.end == 30
    assert len(gen.orphans) == 2


def test_a_claim_of_the_very_same_object_is_no_loss_and_chains_stay_contiguous() -> None:
    from archiver.errors import FenceLost
    from archiver.format.fence import Fence
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    key = layout.data_key("AUTH", date(2026, 1, 1), GEN_OLD, 1, 10)
    _put_link(store, Fence(store, "AUTH", GEN_OLD, "a"), key, 1, 10)
    Fence(store, "AUTH", GEN_OLD, "b").claim(key, 1, 10)  # cut the same way: ours too
    other = layout.data_key("AUTH", date(2026, 1, 1), GEN_OLD, 1, 12)
    with pytest.raises(FenceLost):
        _put_link(store, Fence(store, "AUTH", GEN_OLD, "c"), other, 1, 12)
    with pytest.raises(RuntimeError, match="does not follow"):
        Fence(store, "AUTH", GEN_OLD, "d", end=10, has_base=True).claim(key, 12, 20)


def test_the_choice_to_continue_an_older_generation_is_made_once() -> None:
    """A changed creation time is judged by one message, which can expire: the first
    run's choice (continue the older generation, or start afresh) binds every run."""
    from archiver.errors import FenceLost
    from archiver.format.fence import Fence, record_continuation
    from archiver.store.memory import MemoryStore

    store = MemoryStore()
    assert record_continuation(store, "AUTH", GEN_NEW, GEN_OLD)
    assert catalog.generation(store, "AUTH", GEN_NEW).continues == GEN_OLD
    with pytest.raises(FenceLost):  # a run that judged "a new stream" writes nothing
        Fence(store, "AUTH", GEN_NEW, "fresh").prepare()
    fresh = MemoryStore()
    Fence(fresh, "AUTH", GEN_NEW, "fresh").prepare()
    assert not record_continuation(fresh, "AUTH", GEN_NEW, GEN_OLD)


def test_a_signal_the_work_swallowed_still_stops_the_command() -> None:
    """A SIGTERM that lands where the run waits on a task of its own must not be taken
    for that task's cancellation: the command still ends as stopped."""
    from archiver.cli.app import Stopped, run_async

    async def swallows() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return 0

    with pytest.raises(Stopped):
        run_async(swallows())


def test_an_archive_written_before_the_fence_stays_valid_and_goes_on(
    nats: NatsServer, tmp_path: Path
) -> None:
    from archiver.store import open_store

    root = tmp_path / "archive"
    cfg = settings(nats.url, str(root), limits=FileLimits(1000, max_rows=40))
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 100))
    asyncio.run(run_module.run(cfg))
    store = open_store(str(root))
    unfence(store, "AUTH")  # as the archiver wrote it before commit markers existed
    assert len(catalog.data_files(store, "AUTH")) == 3
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 50))
    again = asyncio.run(run_module.run(cfg)).streams[0]
    assert (again.error, again.from_seq, again.messages) == (None, 101, 50)
    assert len(catalog.data_files(store, "AUTH")) == 5
    assert run_cli("verify", "--store", str(root)).returncode == 0
    _exactly_once(store, tmp_path, 150)


def test_a_foreign_file_named_like_a_data_file_changes_no_answer(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Named for seqs beyond the stream's end, it made status say archived_seq above
    last_seq, ok, and replay fail; no commit marker names it, so nothing counts it."""
    from archiver.store import open_store

    root = tmp_path / "archive"
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "RESTORE": "restore.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 50))
    asyncio.run(run_module.run(settings(nats.url, str(root))))
    store = open_store(str(root))
    (real,) = data_keys(store, "AUTH")
    name = layout.parse_data_key(real)
    assert name is not None
    foreign = layout.data_key("AUTH", name.day, name.generation, 51, 900)
    store.put_bytes(foreign, store.get_bytes(real))
    status = run_cli(
        "status", "--nats-url", nats.url, "--store", str(root), "--stream", "AUTH", "--json"
    )
    (row,) = json.loads(status.stdout)
    assert (row["archived_seq"], row["last_seq"], row["state"]) == (50, 50, "ok")
    replayed = run_cli(
        "replay",
        "--nats-url",
        nats.url,
        "--store",
        str(root),
        "--stream",
        "AUTH",
        "--subject-prefix",
        "restore",
        "--json",
    )
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)[0]["published"] == 50
