"""Publish exact header blocks (repeated keys, odd spacing) at the protocol layer.

nats-py's publish takes headers as a dict, which cannot repeat a key or keep spacing;
a backup tool must prove it keeps such blocks byte for byte, so tests need to make them.
Each publish asks JetStream for an ack, so the message is known to be stored.
"""

from __future__ import annotations

import json
import socket


class RawPublisher:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self._line()  # INFO
        self.sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
        )
        self.sock.sendall(b"SUB _RAWPUB.ack 1\r\n")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def publish(self, subject: str, data: bytes, header_block: bytes | None = None) -> int:
        """Publish and wait for the JetStream ack; returns the stored sequence."""
        if header_block is None:
            self.sock.sendall(
                f"PUB {subject} _RAWPUB.ack {len(data)}\r\n".encode() + data + b"\r\n"
            )
        else:
            total = len(header_block) + len(data)
            self.sock.sendall(
                f"HPUB {subject} _RAWPUB.ack {len(header_block)} {total}\r\n".encode()
                + header_block
                + data
                + b"\r\n"
            )
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith((b"MSG", b"HMSG")):
                parts = line.split()
                body = self._read(int(parts[-1]))
                if line.startswith(b"HMSG"):
                    body = body[int(parts[-2]) :]
                ack = json.loads(body)
                if "error" in ack:
                    raise RuntimeError(ack["error"])
                return int(ack["seq"])
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())

    def close(self) -> None:
        self.sock.close()
