"""Archive again the committed data files that are gone from the store.

A commit marker outlives its file when the file is deleted by hand, by a wrong
lifecycle rule or by a store that lost it. The marker still says which object held
which seqs, so while the server holds those seqs the file is rebuilt under its very
key: the marker commits it again, and nothing else in the archive changes.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from archiver.archive.cutter import gaps_json
from archiver.archive.threads import in_thread
from archiver.config import FileLimits
from archiver.errors import AlreadyExists
from archiver.format import layout
from archiver.format.fence import Fence, Link
from archiver.format.gaps import Gap, GapKind
from archiver.format.writer import DataFileWriter
from archiver.nats.api import StreamInfo
from archiver.nats.conn import RawClient
from archiver.nats.reader import reader_for

log = logging.getLogger(__name__)


async def heal(
    nc: RawClient,
    fence: Fence,
    info: StreamInfo,
    missing: list[Link],
    before_commit: Callable[[], None],
    limits: FileLimits,
    spool_dir: Path | None,
) -> int:
    """Rebuild each lost data file the server can still fill; the number rebuilt."""
    healed = 0
    for link in missing:
        if layout.parse_data_key(link.key) is None:
            continue  # a lost gap record: its seqs are gone from the server anyway
        if link.first_seq < info.first_seq or link.last_seq > info.last_seq:
            log.error(
                "%s: committed file %s is gone and the server no longer holds seqs %d-%d; "
                "it cannot be healed",
                info.name,
                link.key,
                link.first_seq,
                link.last_seq,
                extra={"stream": info.name, "key": link.key},
            )
            continue
        if await _rebuild(nc, fence, info, link, before_commit, limits, spool_dir):
            healed += 1
    return healed


def _nothing() -> None:
    """Heal's thread work has no point to stop at: a write or an upload finishes."""


async def _rebuild(
    nc: RawClient,
    fence: Fence,
    info: StreamInfo,
    link: Link,
    before_commit: Callable[[], None],
    limits: FileLimits,
    spool_dir: Path | None,
) -> bool:
    spool = Path(spool_dir or tempfile.gettempdir())
    writer = DataFileWriter(
        spool / f"{info.name}-heal-{uuid.uuid4().hex}.parquet.part",
        stream=info.name,
        generation=fence.generation,
        stream_config=info.config_json(),
        compression_level=limits.compression_level,
        row_group_rows=limits.row_group_rows,
    )
    holes: list[Gap] = []
    try:
        async for batch in reader_for(nc, info, link.first_seq, link.last_seq).batches():
            expected = (writer.last_seq or link.first_seq - 1) + 1
            for seq in batch.seqs:
                if seq > expected:
                    # Inside the range the server still holds both ends of: deleted.
                    holes.append(Gap(expected, seq - 1, GapKind.DELETED))
                expected = seq + 1
            await in_thread(writer.write, batch, stop=_nothing)
        if writer.first_seq != link.first_seq or writer.last_seq != link.last_seq:
            log.error(
                "%s: committed file %s is gone and the server's seqs %d-%d no longer start "
                "and end as it did; it cannot be healed",
                info.name,
                link.key,
                link.first_seq,
                link.last_seq,
                extra={"stream": info.name, "key": link.key},
            )
            writer.abort()
            return False
        extra = {"archiver.gaps": gaps_json(holes)} if holes else None
        summary = await in_thread(writer.close, extra, stop=_nothing)
    except BaseException:
        writer.abort()
        raise
    try:
        before_commit()
        await in_thread(
            fence.store.put_file, link.key, summary.path, summary.file_sha256, stop=_nothing
        )
    except AlreadyExists:
        log.info("%s: %s was healed by another run meanwhile", info.name, link.key)
        return False
    finally:
        summary.path.unlink(missing_ok=True)
    log.warning(
        "%s: healed %s: the committed file was gone from the store; archived seqs %d-%d again",
        info.name,
        link.key,
        link.first_seq,
        link.last_seq,
        extra={"stream": info.name, "key": link.key, "messages": summary.rows},
    )
    return True
