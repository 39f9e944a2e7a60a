"""The command line: contract fields, exit codes, and one clear line for each bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from helpers import publish, run_cli
from natsserver import NatsServer, free_port
from s3server import SeaweedS3
from test_archive import add_streams

CONTRACT_RUN = {
    "stream",
    "from_seq",
    "to_seq",
    "messages",
    "files",
    "bytes_in",
    "bytes_out",
    "seconds",
    "lost",
}
CONTRACT_STATUS = {
    "stream",
    "first_seq",
    "last_seq",
    "archived_seq",
    "behind",
    "oldest_unarchived_age_s",
    "expires_in_s",
    "state",
}
CONTRACT_LS = {"stream", "key", "first_seq", "last_seq", "rows", "bytes", "first_time", "last_time"}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def nothing_written(root: Path) -> bool:
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


@pytest.fixture
def filled(nats: NatsServer) -> NatsServer:
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>", "SFS": "sfs.>"}, max_age=3600))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.{i}.created" for i in range(40)]))
    asyncio.run(publish(nats.url, "SFS", ["sfs.ns.file"] * 15))
    return nats


def test_run_status_ls_json_carry_the_contract_fields(filled: NatsServer, tmp_path: Path) -> None:
    root = str(tmp_path / "archive")
    policy = tmp_path / "policy.yaml"
    policy.write_text("archive:\n  at_risk_margin: 24h\n")
    before = run_cli(
        "status", "--nats-url", filled.url, "--store", root, "--policy", str(policy), "--json"
    )
    assert before.returncode == 3, before.stderr  # an hour left, 24 h margin: at risk
    states = {s["stream"]: s for s in json.loads(before.stdout)}
    assert set(states) == {"AUTH", "SFS"}
    assert all(set(s) >= CONTRACT_STATUS for s in states.values())
    assert states["AUTH"]["state"] == "at-risk" and states["AUTH"]["behind"] == 40

    run = run_cli("run", "--nats-url", filled.url, "--store", root, "--json")
    assert run.returncode == 0, run.stderr
    results = {r["stream"]: r for r in json.loads(run.stdout)}
    assert all(set(r) >= CONTRACT_RUN for r in results.values())
    assert results["AUTH"]["messages"] == 40 and results["AUTH"]["to_seq"] == 40
    assert results["SFS"]["lost"] == 0

    after = run_cli("status", "--nats-url", filled.url, "--store", root, "--json")
    assert after.returncode == 0, after.stderr
    assert {s["state"] for s in json.loads(after.stdout)} == {"ok"}

    ls = run_cli("ls", "--store", root, "--json")
    assert ls.returncode == 0, ls.stderr
    files = json.loads(ls.stdout)
    assert all(set(f) >= CONTRACT_LS for f in files)
    assert sorted((f["stream"], f["rows"]) for f in files) == [("AUTH", 40), ("SFS", 15)]


def test_only_the_named_streams_are_archived(filled: NatsServer, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    result = run_cli(
        "run", "--nats-url", filled.url, "--store", str(root), "--stream", "SFS", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert [r["stream"] for r in json.loads(result.stdout)] == ["SFS"]
    assert [p.name for p in root.iterdir()] == ["stream=SFS"]


def test_environment_and_policy_file_give_settings_flags_win(
    filled: NatsServer, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"nats:\n  url: nats://127.0.0.1:{free_port()}\narchive:\n  streams: [AUTH]\n"
    )
    root = tmp_path / "archive"
    env = {"ARCHIVER_STORE": str(root)}
    # The policy's URL leads nowhere; the flag overrides it.
    ok = run_cli("run", "--policy", str(policy), "--nats-url", filled.url, "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert [r["stream"] for r in json.loads(ok.stdout)] == ["AUTH"]
    assert (root / "stream=AUTH").is_dir()
    # Without the flag, the policy's URL is used: unreachable, exit 1.
    bad = run_cli("run", "--policy", str(policy), env=env)
    assert bad.returncode == 1
    assert "cannot reach NATS" in one_line(bad.stderr)


def test_unreachable_nats_is_one_line_exit_1_nothing_written(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    result = run_cli("run", "--nats-url", f"nats://127.0.0.1:{free_port()}", "--store", str(root))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "cannot reach NATS at nats://127.0.0.1" in line and "--nats-url" in line
    assert nothing_written(root)


def test_with_json_logs_the_error_line_is_json_too(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    argv = ["run", "--log-format", "json", "--nats-url", f"nats://127.0.0.1:{free_port()}"]
    result = run_cli(*argv, "--store", str(root))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    error = json.loads(line)
    assert error["level"] == "ERROR" and error["exit_code"] == 1
    assert "cannot reach NATS" in error["message"]
    assert nothing_written(root)


def test_read_only_commands_on_a_store_without_an_archive_say_so_and_create_nothing(
    tmp_path: Path,
) -> None:
    """A mistyped --store was an empty listing and a clean verify, exit 0, and a local
    path that did not exist was created. (A name the archive does not hold, in an archive
    that holds others, is a usage error: the bad-input catalogue runs it.)"""
    for root in (tmp_path / "empty", tmp_path / "missing"):
        if root.name == "empty":
            root.mkdir()
        for argv in (
            ["ls", "NOPE"],
            ["ls", "--stream", "NOPE"],
            ["verify", "NOPE"],
            ["ls"],
            ["verify"],
        ):
            result = run_cli(*argv, "--store", str(root))
            assert result.returncode == 1, argv
            assert f"no archive at {root}; check --store" in one_line(result.stderr)
        assert root.exists() == (root.name == "empty"), "a read-only command created it"


def test_every_variable_is_named_after_its_option() -> None:
    """ARCHIVER_<OPTION> for every option a deployment sets, named in one place."""
    import click

    from archiver.cli import main
    from archiver.cli.options import env_name

    assert isinstance(main, click.Group)
    seen = set()
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                long = max(param.opts, key=len)
                assert (
                    param.envvar
                    == env_name(long)
                    == "ARCHIVER_" + long[2:].replace("-", "_").upper()
                )
                seen.add(param.envvar)
    assert {"ARCHIVER_NATS_URL", "ARCHIVER_S3_SSE", "ARCHIVER_SPOOL_DIR"} <= seen
    assert {"ARCHIVER_PUSHGATEWAY", "ARCHIVER_METRICS_FILE", "ARCHIVER_LOG_FORMAT"} <= seen


def test_nats_password_is_never_printed(tmp_path: Path) -> None:
    url = f"nats://archiver:s3cr3t-pass@127.0.0.1:{free_port()}"
    result = run_cli("run", "-vv", "--nats-url", url, "--store", str(tmp_path / "a"))
    assert result.returncode == 1
    assert "s3cr3t-pass" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("archive: [unclosed\n", "not valid YAML"),
        ("archive:\n  compresion_level: 3\n", "archive.compresion_level"),
        ("archive:\n  compression_level: 99\n", "archive.compression_level"),
        ("archive:\n  at_risk_margin: soon\n", "archive.at_risk_margin"),
        ("archive:\n  lease_ttl: 0\n", "lease_ttl must be between 1s and 1h"),
        ("archive:\n  lease_ttl: 2d\n", "lease_ttl must be between 1s and 1h"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_policy_file_is_one_line_exit_2(tmp_path: Path, content: str, expect: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(content)
    root = tmp_path / "archive"
    result = run_cli("run", "--policy", str(policy), "--store", str(root))
    assert result.returncode == 2
    assert expect in one_line(result.stderr)
    assert nothing_written(root)


def test_missing_policy_file_and_unknown_flag_exit_2(tmp_path: Path) -> None:
    missing = run_cli("run", "--policy", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read policy file" in one_line(missing.stderr)
    unknown = run_cli("run", "--no-such-flag")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr


def test_unknown_stream_is_exit_2_nothing_written(filled: NatsServer, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    result = run_cli("run", "--nats-url", filled.url, "--store", str(root), "--stream", "NOPE")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "unknown stream NOPE" in line and "AUTH" in line
    assert nothing_written(root)


def s3_env(s3: SeaweedS3, **changes: str) -> dict[str, str]:
    env = {
        **s3.env(),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(changes)
    return env


def test_s3_wrong_credentials_one_line_exit_1_secret_not_shown(
    filled: NatsServer, s3_server: SeaweedS3
) -> None:
    env = s3_env(s3_server, AWS_SECRET_ACCESS_KEY="wrong-secret-value")
    result = run_cli(
        "run", "--nats-url", filled.url, "--store", f"s3://{s3_server.bucket}/creds", env=env
    )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "credential" in line.lower()
    assert "wrong-secret-value" not in result.stderr + result.stdout
    assert not list(
        s3_server.client()
        .list_objects_v2(Bucket=s3_server.bucket, Prefix="creds/")
        .get("Contents", [])
    )


def test_s3_missing_bucket_and_unreachable_endpoint(
    filled: NatsServer, s3_server: SeaweedS3
) -> None:
    env = s3_env(s3_server)
    missing = run_cli("run", "--nats-url", filled.url, "--store", "s3://no-such-bucket/x", env=env)
    assert missing.returncode == 1
    assert "no-such-bucket" in one_line(missing.stderr)
    env = s3_env(s3_server, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    down = run_cli(
        "run", "--nats-url", filled.url, "--store", f"s3://{s3_server.bucket}/x", env=env
    )
    assert down.returncode == 1
    assert "cannot reach" in one_line(down.stderr).lower()


def test_run_against_s3_through_the_cli(filled: NatsServer, s3_server: SeaweedS3) -> None:
    env = s3_env(s3_server)
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    result = run_cli(
        "run",
        "--nats-url",
        filled.url,
        "--store",
        f"s3://{s3_server.bucket}/{prefix}",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert sum(r["messages"] for r in json.loads(result.stdout)) == 55
    ls = run_cli("ls", "--store", f"s3://{s3_server.bucket}/{prefix}", "--json", env=env)
    assert ls.returncode == 0, ls.stderr
    assert sum(f["rows"] for f in json.loads(ls.stdout)) == 55


def test_wrong_nats_credentials_one_line_exit_1(tmp_path: Path) -> None:
    from natsserver import binary_for

    server = NatsServer(
        binary_for("newest"),
        tmp_path / "nats",
        extra_conf='authorization { user: archiver, password: "right-pass" }',
    )
    (tmp_path / "nats").mkdir()
    server.start()
    try:
        root = tmp_path / "archive"
        bad = f"nats://archiver:wrong-pass@127.0.0.1:{server.port}"
        result = run_cli("run", "--nats-url", bad, "--store", str(root))
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert "refused our credentials" in line
        assert "wrong-pass" not in result.stderr + result.stdout
        assert nothing_written(root)
        good = f"nats://archiver:right-pass@127.0.0.1:{server.port}"
        ok = run_cli("run", "--nats-url", good, "--store", str(root), "--json")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout) == []
    finally:
        server.stop()


def test_missing_spool_dir_is_one_line_exit_1(filled: NatsServer, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    result = run_cli(
        "run", "--nats-url", filled.url, "--store", str(root), "--spool-dir", str(tmp_path / "nope")
    )
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert "Traceback" not in result.stderr
    assert all("check --spool-dir" in x for x in lines) and len(lines) == 2  # one per stream
    assert nothing_written(root)


def test_a_policy_file_sets_every_setting_and_flags_win_over_it(tmp_path: Path) -> None:
    """Each policy field reaches its setting; a field left out keeps the default."""
    from archiver.config import FileLimits, resolve
    from archiver.nats.options import NatsOptions
    from archiver.store.options import S3Options

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "nats: {url: 'nats://127.0.0.1:1', creds: /c, nkey_seed: /n,"
        " tls: {ca: /ca, cert: /cert, key: /key}}\n"
        "store:\n  url: s3://b/p\n  s3: {endpoint: 'http://127.0.0.1:2', region: r1,"
        " addressing_style: virtual, checksum: when_supported, sse: 'aws:kms',"
        " sse_kms_key_id: k, storage_class: GLACIER_IR, multipart_threshold: 8MiB,"
        " part_size: 5MiB}\n"
        "archive: {streams: [A, B], exclude: [C], compression_level: 9,"
        " row_group_rows: 2000, file_max_rows: 10, file_max_bytes: 1MiB,"
        " at_risk_margin: 2h, lease_ttl: 30s, lease_bucket: lb, spool_dir: /s,"
        " retention: 2d}\n"
    )
    s = resolve({"policy": policy})
    assert (s.nats.url, s.nats.creds, s.nats.nkey_seed) == (
        "nats://127.0.0.1:1",
        Path("/c"),
        Path("/n"),
    )
    assert (s.nats.tls_ca, s.nats.tls_cert, s.nats.tls_key) == (
        Path("/ca"),
        Path("/cert"),
        Path("/key"),
    )
    assert s.store_url == "s3://b/p"
    assert s.s3 == S3Options(
        endpoint_url="http://127.0.0.1:2",
        region="r1",
        addressing_style="virtual",
        checksum="when_supported",
        sse="aws:kms",
        sse_kms_key_id="k",
        storage_class="GLACIER_IR",
        multipart_threshold=8 << 20,
        part_size=5 << 20,
    )
    assert (s.streams, s.exclude) == (("A", "B"), ("C",))
    assert s.limits == FileLimits(
        compression_level=9, row_group_rows=2000, max_rows=10, max_bytes=1 << 20
    )
    assert (s.at_risk_margin_s, s.lease_ttl_s, s.lease_bucket) == (7200, 30, "lb")
    assert (s.spool_dir, s.retention_s) == (Path("/s"), 2 * 86_400)
    flagged = resolve({"policy": policy, "nats_url": "nats://127.0.0.1:3", "stream": ("X",)})
    assert (flagged.nats.url, flagged.streams) == ("nats://127.0.0.1:3", ("X",))
    plain = resolve({})
    assert (plain.nats, plain.s3, plain.limits) == (NatsOptions(), S3Options(), FileLimits())
    assert (plain.store_url, plain.lease_ttl_s, plain.lease_bucket) == (
        "./archive",
        60,
        "archiver-leases",
    )


def test_without_a_policy_file_the_command_line_does_not_load_pydantic_or_yaml() -> None:
    """Their 80 ms of imports are start-up that verify, ls and the rest need not pay."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import archiver.cli\n"
        "from archiver.config import resolve\n"
        "resolve({'store': '/tmp/x'})\n"
        "print(sorted({'pydantic', 'yaml', 'asyncio'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_command_line_gives_arrows_own_allocations_to_jemalloc() -> None:
    """Parquet's page buffers come from Arrow's C++ default pool, which pa.set_memory_pool
    does not reach: without jemalloc there, freed pages stay in the process (verify of
    1M rows: 120 MB more)."""
    import os
    import subprocess
    import sys

    import pyarrow as pa

    from archiver.cli import JEMALLOC_FOR_ARROW

    if not JEMALLOC_FOR_ARROW:
        pytest.skip("the command line names jemalloc on Linux x86_64 and aarch64 only")
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow was built without jemalloc")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    script = "import archiver.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "jemalloc", out.stdout + out.stderr


def test_a_command_runs_with_the_start_up_heap_frozen_and_thaws_it_after() -> None:
    """Unfrozen, the collector walks all that start-up made (modules, classes) in every
    full collection the per-message allocations set off: 4% of an archive run. A caller
    that goes on afterwards (the tests, click's runner) gets its heap back as it was."""
    import gc

    from archiver.cli.app import run_async

    async def frozen_now() -> int:
        return gc.get_freeze_count()

    before = gc.get_freeze_count()
    assert run_async(frozen_now()) > before
    assert gc.get_freeze_count() == before
