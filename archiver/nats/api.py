"""What the server says about streams: listing, info, single messages (read-only)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from archiver.errors import ApiError, SourceError, UsageError
from archiver.format.layout import generation_of
from archiver.nats.conn import js_api
from archiver.timefmt import parse_rfc3339_ns

STREAM_NOT_FOUND = 10059
NO_MESSAGE_FOUND = 10037
CONSUMERLESS_RETENTION = ("workqueue", "interest")
OWN_MARK = "nats-archiver"
"""How every stream or bucket the archiver creates begins its description."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream's config and state as the server reported it."""

    name: str
    config: dict[str, Any]
    created_ns: int
    first_seq: int
    last_seq: int
    messages: int
    first_time_ns: int | None
    last_time_ns: int | None

    @property
    def generation(self) -> str:
        return generation_of(self.created_ns)

    @property
    def retention(self) -> str:
        return str(self.config.get("retention", "limits"))

    @property
    def max_age_ns(self) -> int:
        return int(self.config.get("max_age", 0))

    @property
    def made_by_archiver(self) -> bool:
        """A stream the archiver made for itself (leases, replay progress, a drill's
        scratch stream), known by the description it gives them, whatever its name."""
        return str(self.config.get("description") or "").startswith(OWN_MARK)

    @property
    def needs_consumerless_read(self) -> bool:
        """WorkQueue and Interest streams: any consumer would take or pin messages."""
        return self.retention in CONSUMERLESS_RETENTION

    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True)


def _time_or_none(text: str | None) -> int | None:
    if not text or text.startswith("0001-01-01"):
        return None
    return parse_rfc3339_ns(text)


def _parse_info(raw: dict[str, Any]) -> StreamInfo:
    state = raw.get("state", {})
    config = raw["config"]
    return StreamInfo(
        name=config["name"],
        config=config,
        created_ns=parse_rfc3339_ns(raw["created"]),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        messages=int(state.get("messages", 0)),
        first_time_ns=_time_or_none(state.get("first_ts")),
        last_time_ns=_time_or_none(state.get("last_ts")),
    )


@dataclass(frozen=True, slots=True)
class StreamListing:
    infos: list[StreamInfo]
    unavailable: list[str]
    """Listed by the meta leader, but the server holding them did not answer (a node
    down): their state is unknown. The listing still carries them with zeroed state
    [seen on 2.10 and 2.12], which must never be read as "empty"."""

    def all_available(self) -> list[StreamInfo]:
        """The streams, or one clear error when any is unavailable."""
        if self.unavailable:
            raise SourceError(
                f"streams offline or missing on the server: {', '.join(self.unavailable)}",
                hint="bring the cluster back to health; their state is unknown until then",
            )
        return self.infos


async def list_all_streams(nc: Client) -> StreamListing:
    """Every stream of the account, page by page, the unavailable ones apart."""
    infos: list[StreamInfo] = []
    unavailable: set[str] = set()
    offset = 0
    while True:
        page = await js_api(nc, "$JS.API.STREAM.LIST", {"offset": offset})
        streams = page.get("streams") or []
        unavailable.update(page.get("missing") or [])
        unavailable.update((page.get("offline") or {}).keys())
        infos.extend(_parse_info(s) for s in streams)
        offset += len(streams)
        if not streams or offset >= int(page.get("total", 0)):
            break
    return StreamListing([i for i in infos if i.name not in unavailable], sorted(unavailable))


async def list_streams(nc: Client) -> list[StreamInfo]:
    """Every stream of the account; any unavailable one fails loudly."""
    return (await list_all_streams(nc)).all_available()


async def stream_info(nc: Client, name: str) -> StreamInfo:
    try:
        return _parse_info(await js_api(nc, f"$JS.API.STREAM.INFO.{name}"))
    except ApiError as exc:
        if exc.err_code == STREAM_NOT_FOUND:
            raise UsageError(f"stream {name} does not exist on the server") from exc
        raise


_OUR_CONSUMER = re.compile(r"^archiver-[0-9a-f]{16}$")
"""The archiver's own ephemeral reader (``ConsumerReader``): not the stream's."""


async def list_consumers(nc: Client, stream: str) -> list[dict[str, Any]]:
    """Every consumer of the stream as the server describes it (config, positions),
    page by page, without the archiver's own readers. Read-only."""
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await js_api(nc, f"$JS.API.CONSUMER.LIST.{stream}", {"offset": offset})
        consumers = page.get("consumers") or []
        found += [c for c in consumers if not _OUR_CONSUMER.match(str(c.get("name", "")))]
        offset += len(consumers)
        if not consumers or offset >= int(page.get("total", 0)):
            return found


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    subject: str
    time_ns: int
    raw_headers: bytes | None
    data: bytes


async def get_message(
    nc: Client, stream: str, seq: int, next_any: bool = False
) -> StoredMessage | None:
    """The stored message at ``seq`` (or the first after it with ``next_any``), exact bytes.

    Uses the non-direct get, which returns the stored header block untouched and works
    on every retention policy without a consumer. None when there is no such message.
    """
    body: dict[str, Any] = {"seq": seq}
    if next_any:
        body["next_by_subj"] = ">"
    try:
        answer = await js_api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", body)
    except ApiError as exc:
        if exc.err_code == NO_MESSAGE_FOUND or exc.code == 404:
            return None
        raise
    m = answer["message"]
    hdrs = m.get("hdrs")
    return StoredMessage(
        seq=int(m["seq"]),
        subject=m["subject"],
        time_ns=parse_rfc3339_ns(m["time"]),
        raw_headers=base64.b64decode(hdrs) if hdrs else None,
        data=base64.b64decode(m.get("data") or ""),
    )
