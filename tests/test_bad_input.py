"""The bad-input catalogue: wrong input and hostile conditions, each answered by one
line that says what to do, the contract's exit code, no traceback, and nothing written.

Every row here is a row of the README's catalogue table (checked at the end), run twice:
with text logs, and with ``--log-format json``, where every line on stderr must parse.
Rows that need more than one command (a server dying mid-run, a signal) live in other
modules; the table names their tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nkeys
import pytest
from helpers import publish, run_cli
from natsserver import NatsServer, newest_binary
from test_archive import add_streams

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Bad:
    name: str
    """The catalogue row: what is wrong."""
    args: tuple[str, ...]
    """The command; ``{nats}``, ``{store}``, ``{tmp}`` and ``{archived}`` (a store
    holding stream AUTH) are filled in."""
    exit: int
    says: str
    """What the one line says (a regex)."""
    setup: Callable[[Path], None] | None = None
    on_stdout: bool = False
    """The answer is the command's report on stdout (verify), not an error line."""
    keeps: tuple[str, ...] = field(default=())
    """Paths under ``{tmp}`` that must be unchanged: nothing written where it must not."""


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return setup


def _user_seed(tmp: Path) -> None:
    (tmp / "other.nk").write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))


def _damage(kind: str) -> Callable[[Path], None]:
    """Spoil the first data file of the archived copy in ``{tmp}/archived``."""

    def setup(tmp: Path) -> None:
        first = sorted((tmp / "archived").rglob("*.parquet"))[0]
        data = first.read_bytes()
        if kind == "truncated":
            first.write_bytes(data[: len(data) // 2])
        else:  # one flipped byte in the middle of the data pages
            middle = len(data) // 3
            first.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])

    return setup


def _foreign(tmp: Path) -> None:
    """A file no commit marker names, in the archived generation (seqs it holds)."""
    first = sorted((tmp / "archived").rglob("*.parquet"))[0]
    (
        first.parent / first.name.replace("-00000000000000000300.", "-00000000000000000009.")
    ).write_bytes(b"PAR1 not really")


CASES = [
    Bad("unknown option", ("run", "--no-such-flag"), 2, "No such option '--no-such-flag'"),
    Bad("unknown command", ("archive-everything",), 2, "No such command"),
    Bad(
        "NATS URL with an http scheme",
        ("run", "--nats-url", "http://127.0.0.1:4222", "--store", "{store}"),
        2,
        "is not a NATS server URL",
    ),
    Bad(
        "NATS URL with an ftp scheme",
        ("status", "--nats-url", "ftp://127.0.0.1", "--store", "{store}"),
        2,
        "is not a NATS server URL",
    ),
    Bad(
        "NATS URL that is a bare word",
        ("run", "--nats-url", "garbage", "--store", "{store}"),
        2,
        "use nats://HOST:4222",
    ),
    Bad(
        "NATS URL with a port that is not a number",
        ("run", "--nats-url", "nats://u:secret@h:abc", "--store", "{store}"),
        2,
        r"'nats://h:abc' is not a NATS",
    ),
    Bad(
        "NATS server not listening",
        ("run", "--nats-url", "nats://127.0.0.1:1", "--store", "{store}"),
        1,
        "cannot reach NATS at nats://127.0.0.1:1",
    ),
    Bad(
        "nkey seed file that is garbage",
        ("run", "--nkey-seed", "{tmp}/seed.nk", "--store", "{store}"),
        2,
        "does not hold a user nkey seed",
        _write("seed.nk", "garbage\n"),
    ),
    Bad(
        "nkey seed of an account, not a user",
        ("run", "--nkey-seed", "{tmp}/other.nk", "--store", "{store}"),
        2,
        "does not hold a user nkey seed",
        _user_seed,
    ),
    Bad(
        "nkey seed file missing",
        ("run", "--nkey-seed", "{tmp}/none.nk", "--store", "{store}"),
        2,
        "does not exist",
    ),
    Bad(
        "credentials file that is not a .creds file",
        ("run", "--creds", "{tmp}/x.creds", "--store", "{store}"),
        2,
        "does not hold a user JWT and nkey seed",
        _write("x.creds", "user: me\n"),
    ),
    Bad(
        "TLS CA file missing",
        ("run", "--tls-ca", "{tmp}/none.pem", "--store", "{store}"),
        2,
        r"cannot load TLS files \(.*none\.pem\): No such file",
    ),
    Bad(
        "TLS CA file that is not PEM",
        ("run", "--tls-ca", "{tmp}/ca.pem", "--store", "{store}"),
        2,
        r"cannot load TLS files \(.*ca\.pem\)",
        _write("ca.pem", "not a certificate\n"),
    ),
    Bad(
        "archive URL of an unknown scheme",
        ("ls", "--store", "gs://bucket/prefix"),
        2,
        "unsupported archive URL scheme 'gs'",
    ),
    Bad(
        "S3 endpoint without its scheme",
        ("verify", "--store", "s3://bucket/x", "--s3-endpoint", "127.0.0.1:9000"),
        2,
        "needs its scheme",
    ),
    Bad(
        "S3 server-side encryption mode unknown",
        ("run", "--s3-sse", "DES", "--store", "{store}"),
        2,
        "Invalid value for '--s3-sse'",
    ),
    Bad(
        "storage class that needs a restore before reads",
        ("run", "--s3-storage-class", "GLACIER", "--store", "s3://b/x"),
        2,
        "needs a restore before every read",
    ),
    Bad(
        "policy file missing",
        ("run", "--policy", "{tmp}/none.yaml", "--store", "{store}"),
        2,
        "cannot read policy file",
    ),
    Bad(
        "policy file that is not YAML",
        ("run", "--policy", "{tmp}/p.yaml"),
        2,
        "not valid YAML",
        _write("p.yaml", "archive: [unclosed\n"),
    ),
    Bad(
        "policy key misspelt",
        ("run", "--policy", "{tmp}/p.yaml"),
        2,
        r"archive\.compresion_level",
        _write("p.yaml", "archive:\n  compresion_level: 3\n"),
    ),
    Bad(
        "policy lease_ttl of 0",
        ("run", "--policy", "{tmp}/p.yaml"),
        2,
        "lease_ttl must be between 1s and 1h",
        _write("p.yaml", "archive:\n  lease_ttl: 0\n"),
    ),
    Bad(
        "policy duration that is not one",
        ("run", "--policy", "{tmp}/p.yaml"),
        2,
        r"archive\.at_risk_margin",
        _write("p.yaml", "archive:\n  at_risk_margin: soon\n"),
    ),
    Bad(
        "drill of a window that has not begun",
        ("drill", "--store", "{store}", "--since", "2999-01-01T00:00:00Z"),
        2,
        "--since 2999-01-01T00:00:00Z is in the future",
    ),
    Bad(
        "drill report into a missing directory",
        ("drill", "--store", "{store}", "--report", "{tmp}/none/r.md"),
        2,
        "directory .*none does not exist",
    ),
    Bad(
        "replay seq map into a missing directory",
        ("replay", "--store", "{store}", "--stream", "AUTH", "--seq-map", "{tmp}/none/m.parquet"),
        2,
        "directory .*none does not exist",
    ),
    Bad(
        "metrics file into a missing directory",
        ("status", "--metrics-file", "{tmp}/none/m.prom", "--store", "{store}"),
        2,
        "directory .*none does not exist",
    ),
    Bad(
        "replay seq range upside down",
        (
            "replay",
            "--store",
            "{archived}",
            "--stream",
            "AUTH",
            "--from-seq",
            "100",
            "--to-seq",
            "10",
        ),
        2,
        "--from-seq 100 is after --to-seq 10",
    ),
    Bad(
        "replay time window upside down",
        ("replay", "--store", "{archived}", "--stream", "AUTH", "--since", "10m", "--until", "1h"),
        2,
        "--since .* is after --until",
    ),
    Bad(
        "replay time that is not one",
        ("replay", "--store", "{archived}", "--stream", "AUTH", "--since", "yesterday-ish"),
        2,
        "--since: not an RFC 3339 time",
    ),
    Bad(
        "a stream the archive does not hold",
        ("ls", "--store", "{archived}", "NOPE"),
        2,
        "the archive holds no stream NOPE; streams in the archive: AUTH",
    ),
    Bad(
        "a stream the server does not have",
        ("run", "--nats-url", "{nats}", "--store", "{store}", "--stream", "NOPE"),
        2,
        "unknown stream NOPE",
    ),
    Bad(
        "spool directory missing",
        ("run", "--nats-url", "{nats}", "--store", "{store}", "--spool-dir", "{tmp}/none"),
        1,
        "check --spool-dir",
    ),
    Bad(
        "a data file with a flipped byte",
        ("verify", "--store", "{archived}"),
        3,
        "NOT WHOLE.*\n.*damaged",
        _damage("flipped"),
        on_stdout=True,
    ),
    Bad(
        "a truncated data file",
        ("verify", "--store", "{archived}"),
        3,
        "damaged",
        _damage("truncated"),
        on_stdout=True,
    ),
    Bad(
        "a foreign file named like a data file",
        ("verify", "--store", "{archived}"),
        0,
        "ok: 1 files, 300 rows.*uncommitted",
        _foreign,
        on_stdout=True,
    ),
    Bad(
        "restore of a stream the archive does not hold",
        ("restore", "--nats-url", "{nats}", "--store", "{archived}", "--stream", "NOPE", "--yes"),
        2,
        "the archive holds no stream NOPE; streams in the archive: AUTH",
    ),
    Bad(
        "restore --as-of that is not a time",
        ("restore", "--nats-url", "{nats}", "--store", "{archived}", "--as-of", "noonish"),
        2,
        "--as-of: .*noonish",
    ),
    Bad(
        "restore into the --nats-url server without --yes",
        ("restore", "--nats-url", "{nats}", "--store", "{archived}"),
        2,
        "give --target-url for the server to rebuild, or --yes",
    ),
    Bad(
        "restore --replicas out of range",
        ("restore", "--nats-url", "{nats}", "--store", "{archived}", "--replicas", "0"),
        2,
        "Invalid value for '--replicas'",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the rows that need one, with stream AUTH."""
    nats = NatsServer(newest_binary(), tmp_path_factory.mktemp("nats"))
    nats.start()
    asyncio.run(add_streams(nats.url, {"AUTH": "auth.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.{i % 3}" for i in range(300)]))
    try:
        yield nats
    finally:
        nats.stop()


def _fill(bad: Bad, tmp: Path, request: pytest.FixtureRequest) -> list[str]:
    joined = " ".join(bad.args)
    values = {"tmp": str(tmp), "store": str(tmp / "archive"), "archived": str(tmp / "archived")}
    if "{nats}" in joined or "{archived}" in joined:
        nats: NatsServer = request.getfixturevalue("server")
        values["nats"] = nats.url
        if "{archived}" in joined:
            done = run_cli("run", "--nats-url", nats.url, "--store", values["archived"])
            assert done.returncode == 0, done.stderr
    if bad.setup is not None:
        bad.setup(tmp)
    return [a.format(**values) for a in bad.args]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("logs", ["text", "json"])
def test_bad_input_gets_one_line_its_exit_code_and_writes_nothing(
    bad: Bad, logs: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    args = _fill(bad, tmp_path, request)
    if logs == "json":
        args += ["--log-format", "json"]
    before = _files(tmp_path / "archived")
    result = run_cli(*args)
    assert result.returncode == bad.exit, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "secret" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if logs == "json":
        for line in lines:
            json.loads(line)  # every line a log pipeline sees parses
    if bad.on_stdout:
        assert re.search(bad.says, result.stdout), result.stdout
    else:
        assert len(lines) == 1, result.stderr
        message = json.loads(lines[0])["message"] if logs == "json" else lines[0]
        assert re.search(bad.says, message), message
    # Nothing written: no archive where none was, and the archived copy unchanged but
    # for what the case planted.
    archive = tmp_path / "archive"
    assert not archive.exists() or not any(p.is_file() for p in archive.rglob("*"))
    assert _files(tmp_path / "archived") == before


def test_the_readme_catalogue_is_this_list_and_its_other_rows_name_real_tests() -> None:
    section = README.read_text().split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [
        r.split("|")[1:-1] for r in section.splitlines() if r.startswith("| ") and "---" not in r
    ]
    names = [cells[0].strip() for cells in rows[1:]]
    here = [c.name for c in CASES]
    assert [n for n in names if n in here] == here, "rows in the order of CASES"
    exits = {cells[0].strip(): cells[2].strip() for cells in rows[1:]}
    assert all(exits[c.name] == str(c.exit) for c in CASES), "the table's exit codes"
    tests = Path(__file__).resolve().parent
    source = "\n".join(p.read_text() for p in tests.glob("test_*.py"))
    for cells in rows[1:]:
        if cells[0].strip() in here:
            continue
        named = re.findall(r"`(test_\w+)`", cells[-1])
        assert named, f"row {cells[0].strip()!r} names no test"
        for test in named:
            assert f"def {test}(" in source, f"{test} does not exist"
    assert len(names) >= 30


def test_even_a_bug_ends_in_a_json_line_when_the_logs_are_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archiver.format import catalog

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(catalog, "choose_streams", broken)
    (tmp_path / "archive").mkdir()
    result = run_cli("ls", "--store", str(tmp_path / "archive"), "--log-format", "json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1]["level"] == "CRITICAL" and "ZeroDivisionError" in lines[-1]["message"]
    assert "Traceback" in lines[-1]["traceback"]
    text = run_cli("ls", "--store", str(tmp_path / "archive"))
    assert text.returncode == 1 and "ZeroDivisionError" in text.stderr  # the traceback, as is


def test_no_command_shows_the_help_and_an_explicit_log_format_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = run_cli()
    assert bare.returncode == 2 and bare.stdout.startswith("Usage: ")
    assert "error" not in bare.stderr
    monkeypatch.setenv("ARCHIVER_LOG_FORMAT", "json")
    text = run_cli("run", "--log-format", "text", "--no-such-flag")
    assert text.stderr.startswith("archiver: error: No such option")
