"""`archiver demo` works on a machine with nothing else running, and teaches the tool:
the commands it runs are shown as typed, and run as printed."""

from __future__ import annotations

import os
import re
import shlex
import signal
from pathlib import Path

from helpers import run_cli, run_process


def test_demo_runs_and_shows_the_real_commands(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path), "--messages", "300", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for command in ("run", "status", "sql", "replay", "verify", "drill", "restore"):
        assert f"\n$ archiver {command} " in out, command
    assert out.count("\n-> ") == 10, "one line on what each command showed"
    seqs = "AUTH seqs 1..300, 296 messages, 4 deleted; auth-audit"
    assert f"source  : {seqs} acknowledged up to seq 100" in out
    assert f"restored: {seqs} delivers next from seq 101" in out, "seqs and a consumer came back"
    assert "AUTH           301       300     0" in out, "the second run archives nothing new"
    assert "GATEWAY: ok: 300/300 restored, 300 matched" in out and "RPO" in out
    assert "NOT WHOLE" not in out and "(exit" not in out
    streams = sorted(p.name for p in (tmp_path / "archive").iterdir())
    assert streams == [
        f"stream={s}" for s in ("AUTH", "COMPUTE", "GATEWAY", "NOTIFICATIONS", "SFS")
    ]
    again = run_cli("demo", "--dir", str(tmp_path), "--messages", "50", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "holds an earlier demo's archive" in again.stdout


def test_demo_keep_leaves_a_server_the_printed_commands_run_against(tmp_path: Path) -> None:
    result = run_process("demo", "--dir", str(tmp_path), "--messages", "100", "--keep", timeout=300)
    pids = [int(p) for p in re.findall(r"kill ([\d ]+)", result.stdout)[-1].split()]
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        after = result.stdout.split("try next:", 1)[1]
        commands = [line.strip() for line in after.splitlines() if line.startswith("  archiver ")]
        assert len(commands) == 3
        for command in commands:
            ran = run_cli(*shlex.split(command)[1:])
            assert ran.returncode == 0, (command, ran.stdout + ran.stderr)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
