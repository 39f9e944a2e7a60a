"""How to reach NATS, checked before connecting: options, credential files, URLs.

Apart from ``archiver.nats.conn`` so that commands that never connect (``ls``,
``verify``, ``sql``) load no NATS client to read their settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from archiver.errors import UsageError


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """How to reach NATS. Secrets live only in these fields and are never printed."""

    url: str = "nats://127.0.0.1:4222"
    creds: Path | None = None
    nkey_seed: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = 5.0

    def check(self) -> None:
        """Refuse missing or malformed credential files. Commands that connect call it
        before they touch the store; commands that never connect (ls, verify) do not,
        so a stale ARCHIVER_CREDS does not stop them."""
        _check_url(self.url)
        if self.creds:
            _check_creds(self.creds)
        if self.nkey_seed:
            _check_nkey_seed(self.nkey_seed)


def redact_url(url: str) -> str:
    """The URL without user, password or token, fit for messages and logs."""
    parts = urlsplit(url.split(",")[0])
    host = parts.hostname or ""
    try:
        port = str(parts.port or "")
    except ValueError:  # not a number: shown as given, it carries no secret
        port = parts.netloc.rpartition(":")[2]
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _check_url(url: str) -> None:
    """A URL nats-py cannot mean is a usage error, not "cannot reach NATS"."""
    for one in url.split(","):
        parts = urlsplit(one.strip())
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in NATS_SCHEMES or not parts.hostname:
            raise UsageError(
                f"--nats-url {redact_url(one.strip())!r} is not a NATS server URL",
                hint="use nats://HOST:4222 (or tls://, ws://, wss://); several separated by commas",
            )


def _check_nkey_seed(path: Path) -> None:
    """Refuse a seed file nats-py would fail on with a traceback mid-handshake."""
    if not path.is_file():
        raise UsageError(f"nkey seed file {path} does not exist")
    try:
        seed = path.read_text(errors="replace").strip()
    except OSError as exc:
        raise UsageError(f"cannot read nkey seed file {path}: {exc.strerror}") from exc
    if not re.fullmatch(r"SU[A-Z2-7]{56}", seed):
        raise UsageError(
            f"nkey seed file {path} does not hold a user nkey seed",
            hint="it must hold one line starting SU (nsc or `nk -gen user` make one)",
        )


def _check_creds(path: Path) -> None:
    """Refuse a creds file without a user JWT and seed before connecting: nats-py would
    fail on it mid-handshake with an error that names neither the file nor the fix."""
    if not path.is_file():
        raise UsageError(f"credentials file {path} does not exist")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    jwt = re.search(r"-----BEGIN NATS USER JWT-----\s*(\S+)\s*-+END NATS USER JWT", text)
    seed = re.search(r"-----BEGIN USER NKEY SEED-----\s*(SU[A-Z2-7]+)\s*-+END USER NKEY", text)
    if not jwt or jwt.group(1).count(".") != 2 or not seed:
        raise UsageError(
            f"credentials file {path} does not hold a user JWT and nkey seed",
            hint="pass the .creds file nsc or your account server generated for this user",
        )
