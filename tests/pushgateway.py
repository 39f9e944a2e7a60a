"""A Prometheus Pushgateway in small, for tests: its grouping semantics over HTTP on a
free loopback port (no Pushgateway release ships on the package index).

Each URL path under /metrics/ is a group whose labels are the path's key/value pairs.
PUT replaces the group, POST replaces only the metric families it carries, DELETE drops
it, and a push is refused (400) when a series it would expose, with the group's labels
added, is already exposed by another group: the check Pushgateway 1.0+ makes.
GET /api/v1/metrics lists the groups' labels, or answers ``api_answer`` when set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families

Series = list[tuple[str, dict[str, str], float]]
"""One metric family's samples: (sample name, labels, value)."""


def group_labels(path: str) -> dict[str, str]:
    parts = path.removeprefix("/metrics/").split("/")
    return dict(zip(parts[::2], parts[1::2], strict=True))


class Pushgateway(BaseHTTPRequestHandler):
    groups: ClassVar[dict[str, dict[str, Series]]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []
    api_answer: ClassVar[tuple[int, bytes] | None] = None

    def do_PUT(self) -> None:
        self._push(replace_group=True)

    def do_POST(self) -> None:
        self._push(replace_group=False)

    def _push(self, replace_group: bool) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        Pushgateway.requests.append((self.command, self.path))
        group = {} if replace_group else dict(Pushgateway.groups.get(self.path, {}))
        for family in text_string_to_metric_families(body):
            group[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
        if self._collides(group):
            self._answer(400, b"pushed metrics are inconsistent with existing metrics")
            return
        Pushgateway.groups[self.path] = group
        self._answer(200, b"")

    def _collides(self, candidate: dict[str, Series]) -> bool:
        def exposed(path: str, group: dict[str, Series]) -> set[tuple[str, frozenset[str]]]:
            extra = group_labels(path)
            return {
                (name, frozenset(f"{k}={v}" for k, v in (labels | extra).items()))
                for series in group.values()
                for name, labels, _ in series
            }

        others = set()
        for path, group in Pushgateway.groups.items():
            if path != self.path:
                others |= exposed(path, group)
        return bool(exposed(self.path, candidate) & others)

    def do_DELETE(self) -> None:
        Pushgateway.requests.append((self.command, self.path))
        Pushgateway.groups.pop(self.path, None)
        self._answer(202, b"")

    def do_GET(self) -> None:
        if self.path != "/api/v1/metrics":
            self._answer(404, b"not found")
        elif Pushgateway.api_answer is not None:
            self._answer(*Pushgateway.api_answer)
        else:
            data = [{"labels": group_labels(path)} for path in Pushgateway.groups]
            self._answer(200, json.dumps({"status": "success", "data": data}).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    @classmethod
    def scrape(cls) -> dict[tuple[str, str], float]:
        """(sample name, stream label) -> value over every group, as Prometheus sees it."""
        return {
            (name, labels.get("stream", "") or group_labels(path).get("stream", "")): value
            for path, group in cls.groups.items()
            for series in group.values()
            for name, labels, value in series
        }


@contextmanager
def pushgateway() -> Iterator[str]:
    """A fresh, empty Pushgateway; yields its URL."""
    Pushgateway.groups, Pushgateway.requests, Pushgateway.api_answer = {}, [], None
    server = HTTPServer(("127.0.0.1", 0), Pushgateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
