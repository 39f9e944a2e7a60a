"""Work in a worker thread that a cancelled run waits for instead of abandoning.

Parquet encoding and uploads run in threads so the event loop keeps reading. A thread
cannot be cancelled: when the run is (SIGTERM, SIGINT), the thread is told to stop at
its next safe point and waited for, so nothing uses an open file while it is removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(work: Callable[..., T], *args: object, stop: Callable[[], None]) -> T:
    """``work(*args)`` in a thread; on cancellation ``stop()``, wait, then re-raise."""
    running = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop()
        await asyncio.wait([running])
        if not running.cancelled():
            running.exception()  # seen: the stop it asked for, or a failure meanwhile
        raise
