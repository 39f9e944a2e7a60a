"""One archiver per stream at a time: a lease held in a NATS key-value bucket.

The CronJob's ``concurrencyPolicy: Forbid`` does not stop a manual run, a second
CronJob or a slow pod that outlives its deadline. The lease does, using the bucket's
compare-and-set: ``create`` succeeds for one holder only, each renewal names the
revision it last wrote, and the bucket's ``max_age`` ends a killed holder's lease
within ``lease_ttl``. The lease only saves work: a holder paused past its TTL may still
believe it holds it, and the commit fence (``archiver.format.fence``), not the lease,
keeps such a run from committing anything twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from archiver.errors import ArchiverError, LeaseHeld, LeaseLost, SourceError
from archiver.nats.api import OWN_MARK

log = logging.getLogger(__name__)

_KEY_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def lease_key(stream: str) -> str:
    if _KEY_SAFE.match(stream):
        return f"stream.{stream}"
    return "stream.x" + stream.encode().hex()


class Leases:
    """Leases for streams, in bucket ``bucket`` with time-to-live ``ttl`` seconds."""

    def __init__(self, nc: Client, bucket: str, ttl: float) -> None:
        self.js = nc.jetstream()
        self.bucket = bucket
        self.ttl = ttl
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self.holder = f"{self.host}/{self.pid}/{uuid.uuid4().hex[:8]}"
        self._kv: Any = None

    async def _bucket(self) -> Any:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)
                await self._check_ttl()
            except nats.js.errors.BucketNotFoundError:
                try:
                    self._kv = await self.js.create_key_value(
                        bucket=self.bucket,
                        history=1,
                        ttl=self.ttl,
                        description=f"{OWN_MARK} leases: one archiver per stream",
                    )
                except nats.js.errors.BadRequestError:
                    # Another archiver created it in the meantime.
                    self._kv = await self.js.key_value(self.bucket)
            except nats.errors.Error as exc:
                raise SourceError(f"cannot open lease bucket {self.bucket}: {exc}") from exc
            except ArchiverError:
                self._kv = None
                raise
        return self._kv

    async def _check_ttl(self) -> None:
        """The bucket's TTL is fixed when it is created: a ``lease_ttl`` changed since
        would be silently ignored, and two runs could hold one lease. Fix it, or refuse."""
        stream = f"KV_{self.bucket}"
        try:
            info = await self.js.stream_info(stream)
            if info.config.max_age is not None and abs(info.config.max_age - self.ttl) < 0.001:
                return
            old = info.config.max_age
            info.config.max_age = self.ttl
            await self.js.update_stream(info.config)
        except nats.errors.Error as exc:
            raise SourceError(
                f"the lease bucket {self.bucket} does not expire leases after lease_ttl "
                f"({self.ttl:g}s) and cannot be changed: {exc}",
                hint=f"run `nats stream edit {stream} --max-age {self.ttl:g}s`, or set "
                "lease_ttl to the bucket's TTL",
            ) from exc
        log.warning(
            "lease bucket %s expired leases after %ss; changed to lease_ttl, %gs",
            self.bucket,
            "never " if old is None else f"{old:g}",
            self.ttl,
        )

    def _value(self) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at,
                "renewed_at": time.time(),
                "ttl": self.ttl,
            }
        ).encode()

    async def acquire(self, stream: str) -> Lease:
        """Take the stream's lease or raise ``LeaseHeld`` saying who holds it."""
        kv = await self._bucket()
        key = lease_key(stream)
        try:
            revision = await kv.create(key, self._value())
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            held = LeaseHeld(f"stream {stream} is being archived by {await self._holder(kv, key)}")
            raise held from exc
        except nats.errors.Error as exc:
            raise SourceError(f"cannot take the lease for {stream}: {exc}") from exc
        return Lease(self, kv, stream, key, revision)

    async def _holder(self, kv: Any, key: str) -> str:
        """Who holds the lease, and until when unless renewed: for the skip's line."""
        try:
            entry = await kv.get(key)
            value = json.loads(entry.value)
            until = float(value["renewed_at"]) + float(value.get("ttl", self.ttl))
            return (
                f"another run (host {value['host']}, pid {value['pid']}, started "
                f"{_utc(value['started_at'])}); its lease runs until {_utc(until)} "
                "unless renewed"
            )
        except (nats.errors.Error, ValueError, KeyError, TypeError):
            return "another run"  # released meanwhile, or a holder of an older version


class Lease:
    """A held lease; ``renew`` before each commit, ``release`` when done."""

    def __init__(self, owner: Leases, kv: Any, stream: str, key: str, revision: int) -> None:
        self.owner = owner
        self.kv = kv
        self.stream = stream
        self.key = key
        self.revision = revision
        self.renewed = time.monotonic()
        self._lost: LeaseLost | None = None
        self._keeper: asyncio.Task[None] | None = None

    def remaining(self) -> float:
        return self.owner.ttl - (time.monotonic() - self.renewed)

    def start_keepalive(self) -> None:
        """Renew every third of the TTL in the background, however long a file takes."""
        self._keeper = asyncio.create_task(self._keep(), name=f"lease-{self.stream}")

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.owner.ttl / 3)
            try:
                await self.renew()
            except LeaseLost as exc:
                self._lost = exc
                log.error("%s", exc)
                return

    def ensure(self) -> None:
        """Raise ``LeaseLost`` unless the lease is surely ours for a while yet.

        Thread-safe (reads only); called right before each commit. Half the TTL left is
        the margin an upload gets before another run could take over.
        """
        if self._lost is not None:
            raise self._lost
        if self.remaining() < self.owner.ttl / 2:
            raise LeaseLost(
                f"the lease on stream {self.stream} was not renewed in time",
                hint="nothing half-written was committed; the next run resumes",
            )

    async def renew(self) -> None:
        started = time.monotonic()
        try:
            self.revision = await self.kv.update(self.key, self.owner._value(), last=self.revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise LeaseLost(
                f"lost the lease on stream {self.stream} (another run took over)",
                hint="nothing half-written was committed; the next run resumes",
            ) from exc
        except nats.errors.Error as exc:
            raise LeaseLost(f"cannot renew the lease on stream {self.stream}: {exc}") from exc
        self.renewed = started

    async def release(self) -> None:
        try:
            if self._keeper is not None:
                self._keeper.cancel()
                # Not ``await self._keeper``: a SIGTERM landing here must not be taken
                # for the keeper's own cancellation and swallowed.
                await asyncio.wait([self._keeper])
        finally:
            await self._delete()

    async def _delete(self) -> None:
        try:
            await self.kv.delete(self.key, last=self.revision)
        except nats.errors.Error:
            log.warning(
                "could not release the lease on %s; it expires in %.0fs",
                self.stream,
                self.remaining(),
            )


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
