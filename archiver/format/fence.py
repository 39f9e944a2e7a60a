"""The commit fence: no two committed objects of a generation ever hold one sequence.

A generation's archive is a chain of links, data files and the gap records between
them, each starting one seq after the previous one ends. A link counts as committed
once its commit marker exists: a small object keyed by the generation and the link's
first seq alone, created no-clobber (``If-None-Match``) after the link's object, and
naming it. Every run starts its chain right after the committed chain's end as it saw
it. Two runs that both believe they hold the lease (one frozen past it, a request held
up in the network) therefore reach the first seq of some link the other committed, and
only one marker can be created there: the loser stops with ``FenceLost``, whatever the
clocks, pauses or TTLs said. Its objects stay uncommitted (the archiver may not
delete), and every reader ignores them.

Archives written before the fence have no markers. A generation's base record, created
before its first marker, says up to which seq the unmarked objects of the generation
count; a generation with neither base nor markers was written wholly before the fence
and all of its objects count, as they always did.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from archiver.errors import AlreadyExists, FenceLost, StoreError
from archiver.format import layout
from archiver.store.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Link:
    """What a marker commits: the object ``key`` holding seqs ``first_seq..last_seq``."""

    key: str
    first_seq: int
    last_seq: int


def read_marker(store: Store, key: str) -> Link:
    try:
        body = json.loads(store.get_bytes(key))
        return Link(str(body["key"]), int(body["first_seq"]), int(body["last_seq"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"commit marker {key} is damaged: {exc}",
            hint="restore it from the bucket's versions; nothing can be committed past it",
        ) from exc


@dataclass(frozen=True, slots=True)
class Base:
    """A generation's base record."""

    fenced_after: int
    """The seq up to which the generation's unmarked objects count."""
    continues: str | None = None
    """The older generation a run chose to go on archiving into (the stream's creation
    time changed, its messages did not): every later run follows that choice."""

    def encode(self) -> bytes:
        body: dict[str, object] = {"fenced_after": self.fenced_after}
        if self.continues is not None:
            body["continues"] = self.continues
        return json.dumps(body).encode()


def read_base(store: Store, key: str) -> Base:
    try:
        body = json.loads(store.get_bytes(key))
        continues = body.get("continues")
        return Base(int(body["fenced_after"]), None if continues is None else str(continues))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"base record {key} is damaged: {exc}") from exc


def record_continuation(store: Store, stream: str, generation: str, older: str) -> bool:
    """Record, once for all runs, that ``generation`` is archived into ``older``.

    False when another run recorded first that ``generation`` starts afresh: follow it.
    """
    key = layout.base_key(stream, generation)
    try:
        store.put_bytes(key, Base(0, older).encode())
    except AlreadyExists:
        return read_base(store, key).continues == older
    return True


class Fence:
    """One run's side of the fence for one generation: ``claim`` each link right after
    its object is written. Calls come from one thread at a time (the cutter's).

    ``end`` is where the run resumes; ``has_base`` whether the generation has its base
    record, which ``prepare`` writes otherwise, before the run's first object: an
    object in a generation without a base counts (it was written before the fence), so
    none of ours may appear before the base does. Two runs starting the fence at once
    compute the same end from the same unmarked objects and write identical bytes; any
    other base means the archive moved under us, so we stop.
    """

    def __init__(
        self,
        store: Store,
        stream: str,
        generation: str,
        run: str,
        end: int = 0,
        has_base: bool = False,
    ) -> None:
        self.store = store
        self.stream = stream
        self.generation = generation
        self.run = run
        self._end = end
        self._has_base = has_base

    def prepare(self) -> None:
        """Call before writing each link's object (only the first call writes)."""
        if self._has_base:
            return
        key = layout.base_key(self.stream, self.generation)
        try:
            self.store.put_bytes(key, Base(self._end).encode())
        except AlreadyExists:
            if read_base(self.store, key) != Base(self._end):
                raise self._lost(self._end + 1, key) from None
        self._has_base = True

    def claim(self, key: str, first_seq: int, last_seq: int) -> None:
        """Commit ``key`` (already written) as the link starting at ``first_seq``.

        Raises ``FenceLost`` when another run's marker holds that seq, unless it names
        this very object and range (a retry of ours whose answer was lost, or another
        run that cut the same file).
        """
        self.prepare()
        marker = layout.marker_key(self.stream, self.generation, first_seq)
        body = {
            "key": key,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "run": self.run,
            "committed_at": time.time(),
        }
        if first_seq != self._end + 1:
            # The argument above needs every chain to be contiguous: a bug, not a race.
            raise RuntimeError(f"link at seq {first_seq} does not follow seq {self._end}")
        try:
            self.store.put_bytes(marker, json.dumps(body).encode())
        except AlreadyExists:
            theirs = read_marker(self.store, marker)
            if theirs != Link(key, first_seq, last_seq):
                raise self._lost(first_seq, theirs.key) from None
            # Another run committed this very object (the same seqs cut the same way):
            # ours too; where the two runs' cuts part, one of them stops.
        self._end = last_seq

    def _lost(self, seq: int, theirs: str) -> FenceLost:
        log.error(
            "%s: another run committed seq %d first (%s); stopping",
            self.stream,
            seq,
            theirs,
            extra={"stream": self.stream, "seq": seq},
        )
        return FenceLost(
            f"stream {self.stream}: another run committed seq {seq} first ({theirs}) while "
            "this run was paused past its lease; this run stopped and its uncommitted "
            "objects are ignored by every reader",
            hint="nothing to do: the archive holds every seq once; if it repeats, check "
            "that one archiver schedule per store runs at a time",
        )
