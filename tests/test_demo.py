"""`archiver demo` works on a machine with nothing else running."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli


def test_demo_archives_five_streams_and_replays(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path), "--messages", "300", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for stream in ("AUTH", "COMPUTE", "GATEWAY", "SFS", "NOTIFICATIONS"):
        assert f"archived {stream}: seq 1-300, 300 messages" in out
    assert "ran again: 0 new messages archived" in out
    assert "replayed" in out and "stored nothing twice" in out
    assert "verify: 5 files, 1500 rows, whole and intact" in out
    assert "drill GATEWAY: restored 300 of 300" in out and "PASSED" in out
    streams = sorted(p.name for p in (tmp_path / "archive").iterdir())
    assert streams == [
        f"stream={s}" for s in ("AUTH", "COMPUTE", "GATEWAY", "NOTIFICATIONS", "SFS")
    ]
