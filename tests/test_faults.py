"""S3 trouble mid-run, and the lease as a fence: retried when transient, clean when not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import data_keys, nats_client, publish, read_archive, settings
from natsserver import NatsServer
from s3server import FaultProxy
from test_archive import add_streams

from archiver.archive.lease import Leases
from archiver.archive.run import run
from archiver.config import FileLimits
from archiver.errors import LeaseHeld, LeaseLost
from archiver.store.options import S3Options
from archiver.store.s3 import S3Store

N = 2000


@pytest.fixture
def stream(nats: NatsServer) -> NatsServer:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i % 9}.login" for i in range(N)]))
    return nats


def through_proxy(store: S3Store, proxy: FaultProxy, attempts: int = 3) -> tuple[str, S3Options]:
    options = S3Options(endpoint_url=proxy.endpoint, max_attempts=attempts, read_timeout=5)
    return f"s3://{store.bucket}/{store.prefix}", options


def small_files() -> FileLimits:
    return FileLimits(row_group_rows=1000, max_rows=500)


def test_transient_s3_errors_are_retried(
    stream: NatsServer, s3_store: S3Store, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    url, options = through_proxy(s3_store, fault_proxy, attempts=5)
    fault_proxy.inject("503", "^PUT ", times=2)
    fault_proxy.inject("drop", "^PUT ", times=1)
    result = asyncio.run(run(settings(stream.url, url, s3=options, limits=small_files())))[0]
    assert result.error is None and result.messages == N
    assert len(fault_proxy.injected) == 3
    seqs = read_archive(s3_store, tmp_path).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, N + 1))


def test_s3_timeout_mid_upload_is_retried_without_a_duplicate(
    stream: NatsServer, s3_store: S3Store, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    url, _ = through_proxy(s3_store, fault_proxy)
    options = S3Options(endpoint_url=fault_proxy.endpoint, max_attempts=3, read_timeout=1)
    # The PUT reaches S3, the answer never comes back: a timeout after the server acted.
    fault_proxy.inject("stall", "^PUT ", times=1)
    result = asyncio.run(run(settings(stream.url, url, s3=options, limits=small_files())))[0]
    assert result.error is None and result.messages == N
    assert fault_proxy.injected and fault_proxy.injected[0].startswith("stall")
    seqs = read_archive(s3_store, tmp_path).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, N + 1)) and len(seqs) == len(set(seqs))


def test_persistent_s3_failure_ends_with_exit_1_and_nothing_half_committed(
    stream: NatsServer, s3_store: S3Store, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    url, options = through_proxy(s3_store, fault_proxy, attempts=2)
    # The first file goes through; every later PUT fails.
    fault_proxy.inject("503", "^PUT .*-00000000000000000501-", times=50)
    result = asyncio.run(run(settings(stream.url, url, s3=options, limits=small_files())))[0]
    assert result.exit_code == 1 and result.error is not None
    assert (result.files, result.messages) == (1, 500), "the committed part is reported"
    assert len(data_keys(s3_store)) == 1
    # The next run, with S3 healthy again, continues exactly where the archive ends.
    fault_proxy.close()
    healthy = S3Options(endpoint_url=None, max_attempts=3)
    again = asyncio.run(run(settings(stream.url, url, s3=healthy, limits=small_files())))[0]
    assert again.error is None and again.from_seq == 501
    seqs = read_archive(s3_store, tmp_path).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, N + 1)) and len(seqs) == len(set(seqs))


def test_lease_is_exclusive_and_a_lost_lease_stops_commits(nats: NatsServer) -> None:
    asyncio.run(_lease_case(nats))


async def _lease_case(nats: NatsServer) -> None:
    async with nats_client(nats.url) as nc:
        first, second = Leases(nc, "leases", ttl=30), Leases(nc, "leases", ttl=30)
        held = await first.acquire("AUTH")
        with pytest.raises(LeaseHeld):
            await second.acquire("AUTH")
        await held.renew()
        # Another run takes over after the lease ended (simulated by purging the key).
        kv = await nc.jetstream().key_value("leases")
        await kv.purge("stream.AUTH")
        taken = await second.acquire("AUTH")
        with pytest.raises(LeaseLost):
            await held.renew()
        await taken.release()
        again = await first.acquire("AUTH")
        await again.release()


def test_a_kept_lease_outlives_its_ttl(nats: NatsServer) -> None:
    async def case() -> None:
        async with nats_client(nats.url) as nc:
            mine = await Leases(nc, "leases", ttl=1.2).acquire("AUTH")
            mine.start_keepalive()
            await asyncio.sleep(3)
            mine.ensure()  # still ours, though three TTLs passed
            with pytest.raises(LeaseHeld):
                await Leases(nc, "leases", ttl=1.2).acquire("AUTH")
            await mine.release()

    asyncio.run(case())


def test_a_failing_reader_ends_the_run_with_an_error(
    stream: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a hang: the CronJob's Forbid policy would block every later run."""
    import archiver.archive.run as archive_module
    from archiver.errors import SourceError
    from archiver.format.batch import Batch

    class Broken:
        async def batches(self):  # type: ignore[no-untyped-def]
            b = Batch()
            b.append(1, "auth.x", 1, None, b"")
            yield b
            raise SourceError("reading stream AUTH keeps failing at seq 2")

    monkeypatch.setattr(archive_module, "reader_for", lambda *a: Broken())
    result = asyncio.run(asyncio.wait_for(run(settings(stream.url, str(tmp_path / "a"))), 30))[0]
    assert result.exit_code == 1 and result.error and "keeps failing" in result.error


def test_an_unexpected_error_in_one_stream_leaves_the_others_archived(
    nats: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug met in one stream is that stream's error row (traceback in the log), not the
    end of the run: the other streams are archived and the exit code is 1."""
    import archiver.archive.run as archive_module

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "SFS": "sfs.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    asyncio.run(publish(nats.url, "SFS", ["sfs.a"] * 7))
    real = archive_module.reader_for

    def reader_for(nc, info, start, end):  # type: ignore[no-untyped-def]
        if info.name == "AUTH":
            raise KeyError("a bug")
        return real(nc, info, start, end)

    monkeypatch.setattr(archive_module, "reader_for", reader_for)
    report = asyncio.run(run(settings(nats.url, str(tmp_path / "a"))))
    rows = {r.stream: r for r in report}
    assert rows["SFS"].messages == 7 and rows["SFS"].error is None
    assert rows["AUTH"].error and "unexpected error" in rows["AUTH"].error
    assert report.exit_code == 1
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_an_unexpected_error_in_one_stream_leaves_verify_going(
    nats: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import archiver.proof.verify as verify_module

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "SFS": "sfs.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 5))
    asyncio.run(publish(nats.url, "SFS", ["sfs.a"] * 7))
    cfg = settings(nats.url, str(tmp_path / "a"))
    asyncio.run(run(cfg))
    real = verify_module.verify_generation

    def verify_generation(store, stream, *rest):  # type: ignore[no-untyped-def]
        if stream == "AUTH":
            raise ZeroDivisionError("a bug")
        return real(store, stream, *rest)

    monkeypatch.setattr(verify_module, "verify_generation", verify_generation)
    report = verify_module.verify(cfg, ())
    rows = {r.stream: r for r in report}
    assert rows["SFS"].ok and rows["SFS"].rows == 7
    assert not rows["AUTH"].ok and "unexpected error" in (rows["AUTH"].error or "")
    assert report.exit_code == 1


def test_a_transient_footer_read_error_is_an_error_not_a_diverged_stream(
    stream: NatsServer, s3_store: S3Store, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """The run reads its last file's footer to check the stream still holds the archived
    message there. S3 trouble on that read must not read as "diverged" (exit 3), nor as
    "nothing archived" (a new generation archiving the whole stream again)."""
    url, options = through_proxy(s3_store, fault_proxy, attempts=2)
    asyncio.run(run(settings(stream.url, url, s3=options, limits=small_files())))
    asyncio.run(publish(stream.url, "AUTH", ["auth.more"] * 10))
    before = set(data_keys(s3_store))
    fault_proxy.inject("503", r"^GET .*\.parquet", times=20)
    result = asyncio.run(run(settings(stream.url, url, s3=options, limits=small_files())))[0]
    assert result.exit_code == 1 and result.error is not None, result
    assert "diverged" not in result.error, result.error
    assert "503" in result.error or "SlowDown" in result.error, result.error
    assert set(data_keys(s3_store)) == before
    fault_proxy.close()
    healthy = S3Options(endpoint_url=None, max_attempts=3)
    again = asyncio.run(run(settings(stream.url, url, s3=healthy, limits=small_files())))[0]
    assert (again.error, again.from_seq, again.messages) == (None, N + 1, 10)
    seqs = read_archive(s3_store, tmp_path).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, N + 11))
