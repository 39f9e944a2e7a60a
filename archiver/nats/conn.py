"""Connecting to NATS and talking to the JetStream API, with errors translated.

nats-py handles authentication, TLS and reconnects. Two things it cannot give us are
added here: the JetStream API as raw JSON (nats-py's models drop fields we need, such as
``deleted_details``, the server's ``offline`` list and nanosecond times), and raw
protocol frames for chosen subscriptions (nats-py parses headers into a dict that loses
repeated keys and spacing; the archive keeps the exact block).
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from archiver.errors import ApiError, SourceError, UsageError
from archiver.nats import parser
from archiver.nats.options import NatsOptions, redact_url
from archiver.nats.parser import FrameTaker, RawHandler

log = logging.getLogger(__name__)

API_TIMEOUT = 10.0


class RawClient(Client):
    """A nats-py client that hands chosen subscriptions' frames over unparsed.

    Hooks ``Client._process_msg``, which the protocol parser calls with the raw header
    block; pinned nats-py versions are checked by tests/test_source.py.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}
        self._raw_takers: dict[int, FrameTaker] = {}
        parser.install(self)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)

    async def subscribe_raw(
        self, subject: str, handler: RawHandler, taker: FrameTaker | None = None
    ) -> Any:
        """Subscribe so that every frame on ``subject`` goes to ``handler`` unparsed, or,
        where ``taker`` recognises it, into ``taker`` with the frames after it (see
        ``parser.FrameTaker``)."""
        sub = await self.subscribe(subject)
        self._raw_handlers[sub._id] = handler
        if taker is not None:
            self._raw_takers[sub._id] = taker
        return sub

    async def unsubscribe_raw(self, sub: Any) -> None:
        self._raw_handlers.pop(sub._id, None)
        self._raw_takers.pop(sub._id, None)
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            log.debug("unsubscribe failed; the connection is going away")


def _tls_context(opts: NatsOptions) -> ssl.SSLContext | None:
    if not (opts.tls_ca or opts.tls_cert or opts.url.startswith("tls://")):
        return None
    ctx = ssl.create_default_context(cafile=str(opts.tls_ca) if opts.tls_ca else None)
    if opts.tls_cert:
        if not opts.tls_key:
            raise UsageError("--tls-cert needs --tls-key")
        ctx.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
    return ctx


async def connect(opts: NatsOptions, name: str = "nats-archiver") -> RawClient:
    """Connect, or raise one clear ``SourceError`` naming the server (without secrets)."""
    opts.check()
    where = redact_url(opts.url)
    nc = RawClient()
    kwargs: dict[str, Any] = {
        "servers": opts.url.split(","),
        "name": name,
        "connect_timeout": opts.connect_timeout,
        # nats-py retries a failed first connect as if reconnecting; a wrong URL should
        # fail within seconds, so patient reconnects are switched on once connected.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": False,
        "error_cb": _log_error,
        "disconnected_cb": _log_disconnect,
        "reconnected_cb": _log_reconnect,
    }
    try:
        tls = _tls_context(opts)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(str(p) for p in (opts.tls_ca, opts.tls_cert, opts.tls_key) if p)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(
            f"cannot load TLS files ({files}): {reason}",
            hint="check --tls-ca, --tls-cert and --tls-key: PEM files this user can read",
        ) from exc
    if tls:
        kwargs["tls"] = tls
    if opts.creds:
        kwargs["user_credentials"] = str(opts.creds)
    if opts.nkey_seed:
        kwargs["nkeys_seed"] = str(opts.nkey_seed)
    try:
        # allow_reconnect during the first connect would retry forever on a wrong URL.
        await nc.connect(**kwargs)
    except nats.errors.NoServersError as exc:
        raise SourceError(
            f"cannot reach NATS at {where}", hint="check --nats-url and that the server runs"
        ) from exc
    except (TimeoutError, nats.errors.Error, OSError, ssl.SSLError) as exc:
        text = str(exc).lower()
        if "authorization" in text or "authentication" in text or "auth" in text:
            raise SourceError(
                f"NATS at {where} refused our credentials",
                hint="check the user, token, --creds or --nkey-seed",
            ) from exc
        if isinstance(exc, OSError | TimeoutError):
            raise SourceError(
                f"cannot reach NATS at {where}", hint="check --nats-url and that the server runs"
            ) from exc
        raise SourceError(f"cannot connect to NATS at {where}: {exc}") from exc
    # Ride out a server restart or leader change of up to about a minute.
    nc.options.update(allow_reconnect=True, max_reconnect_attempts=60, reconnect_time_wait=1)
    return nc


async def _log_error(exc: Exception) -> None:
    # Connection trouble ends in one clear error or a "reconnected" warning; the
    # individual attempts are detail.
    log.info("nats: %s", exc)


async def _log_disconnect() -> None:
    log.info("nats: disconnected")


async def _log_reconnect() -> None:
    log.warning("nats: reconnected")


async def js_api(
    nc: Client, subject: str, body: dict[str, Any] | None = None, timeout: float = API_TIMEOUT
) -> dict[str, Any]:
    """One JetStream API request as raw JSON; an error answer raises ``ApiError``."""
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError as exc:
        raise SourceError(
            "JetStream is not enabled on this server or account",
            hint="enable JetStream, or check the account's permissions",
        ) from exc
    except nats.errors.TimeoutError as exc:
        raise SourceError(f"JetStream API {subject} timed out after {timeout:.0f}s") from exc
    except nats.errors.Error as exc:
        raise SourceError(f"JetStream API {subject} failed: {exc}") from exc
    answer: dict[str, Any] = json.loads(msg.data)
    err = answer.get("error")
    if err:
        raise ApiError(
            subject, err.get("code", 0), err.get("err_code", 0), err.get("description", "")
        )
    return answer
