"""`archiver restore`: a lost server rebuilt from the archive alone, against real
nats-servers: configuration, every message at its seq with its exact bytes, holes where
they were, KV buckets and object stores that work, durable consumers at their floors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import (
    nats_client,
    publish,
    run_cli,
    stored_messages,
    stream_messages,
    wait_until,
)
from nats.js.api import ConsumerConfig
from natsserver import NatsServer
from rawpub import RawPublisher
from test_archive import ODD_HEADERS, add_streams, delete_msgs

from archiver.demo import STREAMS
from archiver.nats.api import StoredMessage
from archiver.nats.conn import js_api

BIG_OBJECT = bytes(range(256)) * 1200  # 300 KiB: three chunks of the default 128 KiB


def fill_source(nats: NatsServer) -> None:
    """Streams with an expired head and interior deletes, odd header blocks, a KV bucket
    with history, deletes and a purge, an object store with a multi-chunk object."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}, max_msgs=40))
    asyncio.run(add_streams(nats.url, {k: v for k, v in STREAMS.items() if k != "AUTH"}))
    asyncio.run(publish(nats.url, "SFS", [f"sfs.file.f{i}.written" for i in range(12)]))
    asyncio.run(publish(nats.url, "NOTIFICATIONS", ["notify.email.sent"] * 9))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.u{i % 7}.login" for i in range(60)]))
    asyncio.run(publish(nats.url, "COMPUTE", [f"compute.job.{i}" for i in range(30)]))
    raw = RawPublisher(nats.port)
    for i, block in enumerate(ODD_HEADERS * 3):
        raw.publish(f"gateway.req.{i}", b"payload %d" % i, block)
    raw.publish("gateway.req.id", b"with id", b"NATS/1.0\r\nNats-Msg-Id: g-1\r\n\r\n")
    asyncio.run(delete_msgs(nats.url, "AUTH", [25, 26, 27, 40]))
    asyncio.run(delete_msgs(nats.url, "COMPUTE", [1, 2, 15]))
    asyncio.run(delete_msgs(nats.url, "SFS", [6]))

    async def buckets() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            kv = await js.create_key_value(bucket="CONFIG", history=5)
            await kv.put("a", b"1")
            await kv.put("a", b"2")
            await kv.put("b", b"1")
            await kv.delete("b")
            await kv.put("c", b"3")
            await kv.put("c", b"4")
            await kv.purge("c")
            await kv.put("d", b"5")
            obj = await js.create_object_store("FILES")
            await obj.put("big.bin", BIG_OBJECT)
            await obj.put("small.txt", b"hello")

    asyncio.run(buckets())


CONSUMERS = {
    # name: (filter, fetch, acks)
    "billing": ("auth.>", 12, 12),
    "audit": ("auth.user.u3.>", 4, 2),
    "jobs": ("compute.>", 10, 5),
}


def move_consumers(nats: NatsServer, consumers: dict[str, tuple[str, int, int]]) -> None:
    """Durable pull consumers as the platform's services use them, at different floors;
    some messages delivered and not acknowledged."""

    async def go() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            for name, (subject, fetch, acks) in consumers.items():
                sub = await js.pull_subscribe(
                    subject,
                    durable=name,
                    config=ConsumerConfig(max_deliver=5, ack_wait=30, filter_subject=subject),
                )
                got = await sub.fetch(fetch, timeout=5)
                for m in got[:acks]:
                    await m.ack_sync()

    asyncio.run(go())


def everything(url: str, names: list[str]) -> dict[str, Any]:
    """Each stream's configuration (without the server's own metadata) and messages,
    and each consumer's configuration and ack floor."""

    async def go() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with nats_client(url) as nc:
            for name in names:
                info = await js_api(nc, f"$JS.API.STREAM.INFO.{name}")
                config = _plain(info["config"])
                listed = await js_api(nc, f"$JS.API.CONSUMER.LIST.{name}", {"offset": 0})
                consumers = {
                    c["name"]: (_plain(c["config"]), c["ack_floor"]["stream_seq"])
                    for c in listed.get("consumers") or []
                }
                found[name] = (config, info["state"]["first_seq"], consumers)
        return found

    got = asyncio.run(go())
    return {n: (*got[n], _messages(stored_messages(url, n))) for n in names}


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in config.items() if k not in ("created",)}
    meta = {k: v for k, v in (config.pop("metadata", None) or {}).items() if not k.startswith("_")}
    if meta:
        config["metadata"] = meta
    return config


def _messages(found: list[StoredMessage]) -> list[tuple[int, str, bytes | None, bytes]]:
    return [(m.seq, m.subject, m.raw_headers, m.data) for m in found]


ALL = [*STREAMS, "KV_CONFIG", "OBJ_FILES"]


def lose_the_server(nats: NatsServer) -> None:
    nats.stop()
    shutil.rmtree(nats.store_dir / "js")
    nats.start()


def test_a_lost_server_is_rebuilt_from_the_archive_alone(nats: NatsServer, tmp_path: Path) -> None:
    fill_source(nats)
    move_consumers(nats, CONSUMERS)
    root = str(tmp_path / "archive")
    archived = run_cli("run", "--nats-url", nats.url, "--store", root)
    assert archived.returncode == 0, archived.stdout + archived.stderr
    before = everything(nats.url, ALL)
    assert before["AUTH"][1] == 21, "the head expired before the archive saw it"
    lose_the_server(nats)

    refused = run_cli("restore", "--nats-url", nats.url, "--store", root)
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    done = run_cli("restore", "--nats-url", nats.url, "--store", root, "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["stream"]: r for r in json.loads(done.stdout)}
    assert set(rows) == set(ALL)
    assert (rows["AUTH"]["first_seq"], rows["AUTH"]["last_seq"]) == (21, 60)
    assert rows["AUTH"]["holes"] == 4 and rows["COMPUTE"]["holes"] == 1
    assert rows["SFS"]["holes"] == 1 and rows["COMPUTE"]["first_seq"] == 3
    assert rows["COMPUTE"]["consumers"] == 1 and rows["AUTH"]["consumers"] == 2

    after = everything(nats.url, ALL)
    for name in ALL:
        config, first, consumers, messages = before[name]
        got_config, got_first, got_consumers, got_messages = after[name]
        assert got_config == config, name
        assert got_first == first, name
        assert got_messages == messages, f"{name}: every message at its seq, exact bytes"
        for consumer, (cfg, floor) in consumers.items():
            new_cfg, _ = got_consumers[consumer]
            moved = {"deliver_policy", "opt_start_seq"}
            assert {k: v for k, v in new_cfg.items() if k not in moved} == {
                k: v for k, v in cfg.items() if k not in moved
            }, consumer
            assert new_cfg["opt_start_seq"] == floor + 1
    _next_deliveries_follow_the_floors(nats, before)
    _buckets_work(nats)


def _next_deliveries_follow_the_floors(nats: NatsServer, before: dict[str, Any]) -> None:
    from archiver.replay.subjects import SubjectFilter

    async def next_seq(stream: str, name: str) -> int:
        async with nats_client(nats.url) as nc:
            sub = await nc.jetstream().pull_subscribe_bind(name, stream=stream)
            (m,) = await sub.fetch(1, timeout=5)
            return int(m.metadata.sequence.stream)

    for stream in ("AUTH", "COMPUTE"):
        _, _, consumers, messages = before[stream]
        for name, (cfg, floor) in consumers.items():
            wanted = SubjectFilter([cfg["filter_subject"]])
            expected = next(
                seq for seq, subject, _, _ in messages if seq > floor and wanted.matches(subject)
            )
            assert asyncio.run(next_seq(stream, name)) == expected, name


def _buckets_work(server: NatsServer) -> None:
    from nats.js.errors import KeyNotFoundError

    async def go() -> None:
        async with nats_client(server.url) as nc:
            js = nc.jetstream()
            kv = await js.key_value("CONFIG")
            a = await kv.get("a")
            assert (a.value, a.revision) == (b"2", 2)
            assert [e.value for e in await kv.history("a")] == [b"1", b"2"]
            for gone in ("b", "c"):
                try:
                    await kv.get(gone)
                except KeyNotFoundError:
                    pass
                else:
                    raise AssertionError(f"deleted key {gone} came back")
            assert (await kv.get("d")).value == b"5"
            obj = await js.object_store("FILES")
            assert (await obj.get("big.bin")).data == BIG_OBJECT
            assert (await obj.get("small.txt")).data == b"hello"

    asyncio.run(go())


def _fresh_server(nats: NatsServer, path: Path) -> NatsServer:
    path.mkdir()
    server = NatsServer(nats.binary, path)
    server.start()
    return server


def test_a_restore_killed_anywhere_and_run_again_is_identical_to_one_never_killed(
    nats: NatsServer, tmp_path: Path
) -> None:
    """SIGKILL before anything is stored, with publishes in flight, and after the
    configuration is applied before the consumers: each run again continues, nothing
    twice, no seq shifted; once finished, a further run finds it done and changes
    nothing."""
    asyncio.run(add_streams(nats.url, {"BIG": "big.>"}))
    asyncio.run(publish(nats.url, "BIG", [f"big.k{i % 13}" for i in range(20_000)], b"v" * 40))
    raw = RawPublisher(nats.port)
    for i, block in enumerate(ODD_HEADERS * 50):
        raw.publish(f"big.odd.{i}", b"%d" % i, block)
    asyncio.run(delete_msgs(nats.url, "BIG", sorted({*range(5, 20_000, 97), *range(9_000, 9_050)})))
    move_consumers(nats, {"worker": ("big.k1", 40, 30)})
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0

    calm, killed = _fresh_server(nats, tmp_path / "calm"), _fresh_server(nats, tmp_path / "kill")
    try:
        args = ("restore", "--nats-url", nats.url, "--store", root, "--json")
        once = run_cli(*args, "--target-url", calm.url)
        assert once.returncode == 0, once.stdout + once.stderr
        for point in ("restore-message:1", "restore-message:7000", "restore-configured"):
            died = run_cli(*args, "--target-url", killed.url, env={"ARCHIVER_FAILPOINTS": point})
            assert died.returncode == -9, died.stdout + died.stderr
        again = run_cli(*args, "--target-url", killed.url)
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads(again.stdout)[0]["continued"] is True
        assert everything(killed.url, ["BIG"]) == everything(calm.url, ["BIG"])
        assert everything(calm.url, ["BIG"])["BIG"][3] == everything(nats.url, ["BIG"])["BIG"][3]
        twice = run_cli(*args, "--target-url", killed.url)
        assert twice.returncode == 0, twice.stdout + twice.stderr
        assert json.loads(twice.stdout)[0]["already_restored"] is True
        assert everything(killed.url, ["BIG"]) == everything(calm.url, ["BIG"])
    finally:
        calm.stop()
        killed.stop()


def test_as_of_restores_every_stream_as_it_was_at_that_time(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Messages with time <= T across streams, and the configuration the last run
    before T recorded."""
    from archiver.timefmt import format_ns

    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "COMPUTE": "compute.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    asyncio.run(publish(nats.url, "COMPUTE", ["compute.a"] * 7))
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    then = everything(nats.url, ["AUTH", "COMPUTE"])
    as_of = format_ns(__import__("time").time_ns())
    asyncio.run(publish(nats.url, "AUTH", ["auth.b"] * 5))
    asyncio.run(publish(nats.url, "COMPUTE", ["compute.b"] * 5))

    async def reconfigure() -> None:
        async with nats_client(nats.url) as nc:
            info = await js_api(nc, "$JS.API.STREAM.INFO.AUTH")
            await js_api(nc, "$JS.API.STREAM.UPDATE.AUTH", {**info["config"], "max_msgs": 900})

    asyncio.run(reconfigure())
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    lose_the_server(nats)
    done = run_cli(
        "restore", "--nats-url", nats.url, "--store", root, "--yes", "--as-of", as_of, "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["last_seq"] for r in json.loads(done.stdout)] == [10, 7]
    assert everything(nats.url, ["AUTH", "COMPUTE"]) == then


def test_a_target_stream_with_messages_is_refused_and_left_as_it_was(
    nats: NatsServer, tmp_path: Path
) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    target = _fresh_server(nats, tmp_path / "target")
    try:
        asyncio.run(add_streams(target.url, {"AUTH": "auth.>"}, max_msgs=5))
        asyncio.run(publish(target.url, "AUTH", ["auth.live"] * 3))
        before = everything(target.url, ["AUTH"])
        args = ("restore", "--nats-url", nats.url, "--store", root, "--target-url", target.url)
        dry = run_cli(*args, "--dry-run")
        assert dry.returncode == 2 and "would stop: target stream AUTH exists" in dry.stdout
        refused = run_cli(*args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "exists and holds 3 messages; nothing was changed" in refused.stderr
        assert everything(target.url, ["AUTH"]) == before
    finally:
        target.stop()


def test_a_hole_the_archive_cannot_explain_stops_the_restore_unless_allowed(
    nats: NatsServer, tmp_path: Path
) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    root = tmp_path / "archive"
    for batch in range(3):
        asyncio.run(publish(nats.url, "AUTH", [f"auth.b{batch}"] * 10))
        assert run_cli("run", "--nats-url", nats.url, "--store", str(root)).returncode == 0
    source = everything(nats.url, ["AUTH"])["AUTH"][3]
    (middle,) = [p for p in root.rglob("*.parquet") if "-00000000000000000011-" in p.name]
    middle.unlink()
    lose_the_server(nats)
    args = ("restore", "--nats-url", nats.url, "--store", str(root), "--yes")
    stopped = run_cli(*args)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "AUTH seqs 11-20" in stopped.stderr and "nothing was restored" in stopped.stderr
    assert run_cli("ls", "--nats-url", nats.url, "--store", str(root)).returncode == 0
    assert not asyncio.run(_stream_names(nats.url)), "nothing created"
    around = run_cli(*args, "--allow-gaps", "--json")
    assert around.returncode == 3, around.stdout + around.stderr
    (row,) = json.loads(around.stdout)
    assert row["unexplained"] == [[11, 20]] and row["holes"] == 10
    restored = everything(nats.url, ["AUTH"])["AUTH"][3]
    assert restored == [m for m in source if not 11 <= m[0] <= 20]


async def _stream_names(url: str) -> list[str]:
    async with nats_client(url) as nc:
        return list((await js_api(nc, "$JS.API.STREAM.NAMES")).get("streams") or [])


def test_drill_full_restores_at_the_original_seqs_and_compares_seq_for_seq(
    nats: NatsServer, tmp_path: Path
) -> None:
    fill_source(nats)
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0

    async def purge_archived_key() -> None:
        async with nats_client(nats.url) as nc:
            await (await nc.jetstream().key_value("CONFIG")).purge("d")

    # The purge rolls up d=5, which the archive holds: gone on the server, as restored.
    asyncio.run(purge_archived_key())
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    source = everything(nats.url, ["AUTH"])["AUTH"][3]
    base = ("drill", "--nats-url", nats.url, "--store", root, "--full", "--json")
    done = run_cli(*base, "--stream", "AUTH", "--stream", "KV_CONFIG", "--keep")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["stream"]: r for r in json.loads(done.stdout)}
    auth = rows["AUTH"]
    assert (auth["archived"], auth["restored"], auth["matched"]) == (36, 36, 36)
    assert auth["differences"] == 0 and auth["rto_seconds"] > 0
    assert rows["KV_CONFIG"]["ok"] is True, rows["KV_CONFIG"]
    kept = stored_messages(nats.url, auth["scratch_stream"])
    assert [(m.seq, m.subject, m.raw_headers, m.data) for m in kept] == source
    names = asyncio.run(_stream_names(nats.url))
    archived = run_cli("run", "--nats-url", nats.url, "--store", root, "--json")
    assert auth["scratch_stream"] not in {r["stream"] for r in json.loads(archived.stdout)}
    assert auth["scratch_stream"] in names, "kept with --keep"
    removed = run_cli(*base, "--stream", "COMPUTE")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not [n for n in asyncio.run(_stream_names(nats.url)) if n.endswith("_COMPUTE")]
    window = run_cli(*base, "--since", "1h")
    assert window.returncode == 2 and "--since cannot narrow it" in window.stderr


def _frozen(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _halfway(nats: NatsServer, tmp_path: Path, point: str) -> tuple[str, NatsServer, Any]:
    """An archived stream BIG and a restore of it frozen at ``point`` on a fresh server."""
    asyncio.run(add_streams(nats.url, {"ALPHA": "alpha.>", "BIG": "big.>"}))
    asyncio.run(publish(nats.url, "ALPHA", ["alpha.a"] * 10))  # restored first, whole
    asyncio.run(publish(nats.url, "BIG", [f"big.k{i % 5}" for i in range(3000)], b"v" * 20))
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    target = _fresh_server(nats, tmp_path / "target")
    command = [sys.executable, "-m", "archiver", "restore", "--nats-url", nats.url]
    command += ["--store", root, "--target-url", target.url]
    frozen = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ARCHIVER_FAILPOINTS": f"{point}=stop"},
    )
    wait_until(lambda: _frozen(frozen.pid), "the restore to freeze")
    return root, target, frozen


def test_sigterm_stops_a_restore_saying_so_and_the_same_command_continues(
    nats: NatsServer, tmp_path: Path
) -> None:
    root, target, frozen = _halfway(nats, tmp_path, "restore-message:1500")
    try:
        frozen.send_signal(signal.SIGTERM)
        frozen.send_signal(signal.SIGCONT)
        _, stderr = frozen.communicate(timeout=60)
        assert frozen.returncode == 143, stderr
        assert "stopped while restoring BIG (streams finished: ALPHA)" in stderr
        assert "run the same command again" in stderr
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        again = run_cli(
            "restore", "--nats-url", nats.url, "--store", root, "--target-url", target.url
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "BIG: continued an interrupted restore" in again.stdout
        assert "ALPHA: already holds exactly this restore; nothing done" in again.stdout
        source = everything(nats.url, ["ALPHA", "BIG"])
        assert everything(target.url, ["ALPHA", "BIG"]) == source
    finally:
        target.stop()


def test_a_half_restored_stream_that_was_changed_is_refused_not_continued(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Only an exact prefix of the archive is continued: a message missing near the end
    of what an interrupted restore left (as a lost publish would leave it) is refused."""
    root, target, frozen = _halfway(nats, tmp_path, "restore-message:1500")
    try:
        frozen.kill()
        frozen.communicate(timeout=60)

        async def spoil() -> tuple[int, dict[str, Any]]:
            async with nats_client(target.url) as nc:
                last = (await js_api(nc, "$JS.API.STREAM.INFO.BIG"))["state"]["last_seq"]
                await js_api(nc, "$JS.API.STREAM.MSG.DELETE.BIG", {"seq": last - 3})
                return last, await js_api(nc, "$JS.API.STREAM.INFO.BIG")

        last, before = asyncio.run(spoil())
        again = run_cli(
            "restore", "--nats-url", nats.url, "--store", root, "--target-url", target.url
        )
        assert again.returncode == 2, again.stdout + again.stderr
        assert (
            f"does not hold an exact prefix of the archive (seq {last - 3} differs)" in again.stderr
        )
        assert "delete stream BIG on the target" in again.stderr

        async def state() -> dict[str, Any]:
            async with nats_client(target.url) as nc:
                return await js_api(nc, "$JS.API.STREAM.INFO.BIG")

        assert asyncio.run(state())["state"] == before["state"], "nothing changed"
    finally:
        target.stop()


def test_workqueue_and_interest_streams_come_back_with_what_their_consumers_had_not_acked(
    nats: NatsServer, tmp_path: Path
) -> None:
    async def make() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            for name, retention in (("WORK", "workqueue"), ("INTEREST", "interest")):
                await js_api(
                    nc,
                    f"$JS.API.STREAM.CREATE.{name}",
                    {"name": name, "subjects": [f"{name.lower()}.>"], "retention": retention},
                )
                sub = await js.pull_subscribe(f"{name.lower()}.>", durable="worker", stream=name)
                for i in range(10):
                    await js.publish(f"{name.lower()}.job", b"%d" % i)
                for m in await sub.fetch(4, timeout=5):
                    await m.ack_sync()

    asyncio.run(make())
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    before = everything(nats.url, ["WORK", "INTEREST"])
    lose_the_server(nats)
    done = run_cli("restore", "--nats-url", nats.url, "--store", root, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    after = everything(nats.url, ["WORK", "INTEREST"])
    for name in ("WORK", "INTEREST"):
        assert (
            [m[0] for m in after[name][3]] == [m[0] for m in before[name][3]] == list(range(5, 11))
        ), name


def test_rename_and_no_consumers(nats: NatsServer, tmp_path: Path) -> None:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    move_consumers(nats, {"billing": ("auth.>", 5, 5)})
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    source = everything(nats.url, ["AUTH"])["AUTH"]
    target = _fresh_server(nats, tmp_path / "target")
    try:
        args = ("restore", "--nats-url", nats.url, "--store", root, "--target-url", target.url)
        done = run_cli(*args, "--rename", "AUTH", "AUTH_DR", "--no-consumers", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        (row,) = json.loads(done.stdout)
        assert (row["stream"], row["target"], row["consumers"]) == ("AUTH", "AUTH_DR", 0)
        config, first, consumers, messages = everything(target.url, ["AUTH_DR"])["AUTH_DR"]
        assert config == {**source[0], "name": "AUTH_DR"} and consumers == {}
        assert (first, messages) == (source[1], source[3])
    finally:
        target.stop()


def test_the_restored_stream_reaches_the_archive_end_and_its_consumers_positions(
    nats: NatsServer, tmp_path: Path
) -> None:
    """Deleted tail messages and a consumer that acknowledged everything: the restored
    stream ends where the source did, so the next message gets the source's next seq and
    the consumer delivers it."""
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", ["auth.a"] * 10))
    move_consumers(nats, {"billing": ("auth.>", 10, 10)})
    asyncio.run(delete_msgs(nats.url, "AUTH", [9, 10]))
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0
    lose_the_server(nats)
    done = run_cli("restore", "--nats-url", nats.url, "--store", root, "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["first_seq"], row["last_seq"], row["messages"], row["holes"]) == (1, 10, 8, 2)
    assert asyncio.run(publish(nats.url, "AUTH", ["auth.new"])) == [11]

    async def next_seq() -> int:
        async with nats_client(nats.url) as nc:
            sub = await nc.jetstream().pull_subscribe_bind("billing", stream="AUTH")
            (m,) = await sub.fetch(1, timeout=5)
            return int(m.metadata.sequence.stream)

    assert asyncio.run(next_seq()) == 11


def test_restore_what_the_server_had_only_recently(nats: NatsServer, tmp_path: Path) -> None:
    """The newest incarnation of a recreated stream, even with no message archived; a
    republish that stays quiet while messages go back; a mirror restored as a plain
    stream; a KV key updated twice between runs (its update checks a revision the
    archive never saw); an Interest stream without its consumers keeping its messages."""

    async def make() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await js.add_stream(name="OLD", subjects=["old.>"])
            await js.publish("old.a", b"1")
            await js_api(
                nc,
                "$JS.API.STREAM.CREATE.LOUD",
                {
                    "name": "LOUD",
                    "subjects": ["loud.>"],
                    "republish": {"src": "loud.>", "dest": "heard.>"},
                },
            )
            await js.publish("loud.a", b"1")
            await js_api(
                nc, "$JS.API.STREAM.CREATE.COPY", {"name": "COPY", "mirror": {"name": "LOUD"}}
            )
            await js_api(
                nc,
                "$JS.API.STREAM.CREATE.NOTE",
                {
                    "name": "NOTE",
                    "subjects": ["note.>"],
                    "retention": "interest",
                },
            )
            await js.pull_subscribe("note.>", durable="reader", stream="NOTE")
            await js.publish("note.a", b"1")
            kv = await js.create_key_value(bucket="ONE", history=1)
            await kv.put("k", b"1")

    asyncio.run(make())
    wait_until(lambda: stream_messages(nats.url, "COPY") == 1, "the mirror to copy LOUD")
    root = str(tmp_path / "archive")
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 0

    async def change() -> None:
        async with nats_client(nats.url) as nc:
            js = nc.jetstream()
            await js.delete_stream("OLD")
            await js.add_stream(name="OLD", subjects=["new.>"])
            kv = await js.key_value("ONE")
            entry = await kv.get("k")
            revision = await kv.update("k", b"2", last=entry.revision)
            await kv.update("k", b"3", last=revision)

    asyncio.run(change())
    # Revision 2 was superseded (history 1) before any run saw it: recorded as lost.
    assert run_cli("run", "--nats-url", nats.url, "--store", root).returncode == 3
    before = everything(nats.url, ["OLD", "KV_ONE", "COPY"])
    lose_the_server(nats)

    heard: list[bytes] = []

    async def restore_listening() -> Any:
        async with nats_client(nats.url) as nc:

            async def hear(msg: Any) -> None:
                heard.append(msg.data)

            await nc.subscribe("heard.>", cb=hear)
            args = ["restore", "--nats-url", nats.url, "--store", root, "--yes", "--no-consumers"]
            done = await asyncio.to_thread(run_cli, *args, "--json", env={})
            await nc.flush()
            return done

    done = asyncio.run(restore_listening())
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["stream"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {"OLD", "LOUD", "COPY", "NOTE", "KV_ONE"}, done.stdout
    assert heard == [], "the archive's history was republished to live subscribers"
    assert "mirror" in rows["COPY"]["dropped"] and "mirror_direct" not in str(rows["LOUD"])
    after = everything(nats.url, ["OLD", "KV_ONE", "COPY", "NOTE"])
    assert after["OLD"][0]["subjects"] == ["new.>"] and after["OLD"][3] == []
    assert after["KV_ONE"][3] == before["KV_ONE"][3]
    assert after["COPY"][3] == before["COPY"][3]
    assert [m[1] for m in after["NOTE"][3]] == ["note.a"], "Interest without consumers kept"
    assert after["NOTE"][0]["retention"] == "limits"


def test_the_final_configuration_takes_the_overrides_and_drops_what_cannot_be_restored() -> None:
    from archiver.restore.config import Overrides, final_config

    archived = {
        "name": "AUTH",
        "subjects": ["auth.>"],
        "num_replicas": 3,
        "storage": "file",
        "mirror": {"name": "ORIGIN"},
        "mirror_direct": True,
        "first_seq": 5,
        "metadata": {"_nats.ver": "2.15.1", "team": "auth"},
    }
    overrides = Overrides(
        replicas=1, storage="memory", placement_cluster="dr", placement_tags=("ssd",)
    )
    config, dropped = final_config(archived, "AUTH_DR", overrides)
    assert config == {
        "name": "AUTH_DR",
        "subjects": ["auth.>"],
        "num_replicas": 1,
        "storage": "memory",
        "placement": {"cluster": "dr", "tags": ["ssd"]},
        "metadata": {"team": "auth"},
    }
    assert dropped == ["mirror", "mirror_direct"]
    assert archived["num_replicas"] == 3, "the recorded configuration is left as it was"
