"""The header block a replayed message carries: the archived one, made safe to publish.

Headers the server reads (``Nats-Msg-Id``, ``Nats-Expected-*``, ``Nats-Rollup``,
``Nats-TTL``, ...: every ``Nats-`` name) would change how the target stores the message,
or have it refused or silently dropped, so they travel renamed ``Archive-<name>``; every
other line is kept byte for byte, repeated keys and spacing included. Our own
``Nats-Msg-Id`` comes first: nats-server 2.10 looks a header up by the first place its
name occurs anywhere in the block, and an ``Archive-Nats-Msg-Id`` line before it would
hide it.
"""

from __future__ import annotations

from archiver.timefmt import format_ns

_RESERVED = b"nats-"
_RENAMED = b"Archive-"
_KV_OPERATION = b"kv-operation"
_KV_DELETES = (b"DEL", b"PURGE")
_MARKER = b"nats-marker-reason"


def message_id(stream: str, generation: str, seq: int) -> str:
    """The deterministic id of an archived message: the same for every replay of it."""
    return f"archive:{stream}:{generation}:{seq}"


def _lines(raw: bytes | None) -> list[bytes]:
    if not raw:
        return []
    return [line for line in raw.split(b"\r\n")[1:] if line]


def _key(line: bytes) -> bytes:
    return line.partition(b":")[0].strip().lower()


def is_delete_marker(raw: bytes | None) -> bool:
    """A KV delete/purge, or a server marker: read by KV clients as a deletion."""
    for line in _lines(raw):
        key = _key(line)
        if key == _MARKER:
            return True
        if key == _KV_OPERATION and line.partition(b":")[2].strip().upper() in _KV_DELETES:
            return True
    return False


def replay_headers(raw: bytes | None, *, msg_id: str, stream: str, seq: int, time_ns: int) -> bytes:
    """The block to publish: our message id, the archived lines (reserved ones renamed),
    then the provenance headers."""
    out = [b"NATS/1.0", b"Nats-Msg-Id: " + msg_id.encode()]
    for line in _lines(raw):
        out.append(_RENAMED + line if _key(line).startswith(_RESERVED) else line)
    out += [
        b"Archive-Stream: " + stream.encode(),
        b"Archive-Seq: " + str(seq).encode(),
        b"Archive-Time: " + format_ns(time_ns).encode(),
    ]
    return b"\r\n".join(out) + b"\r\n\r\n"


def growth_bound(raw: bytes | None, stream: str, generation: str) -> int:
    """How many bytes ``replay_headers`` adds at most to a block (for size checks)."""
    return fixed_growth(stream, generation) + renamed_growth(raw)


def fixed_growth(stream: str, generation: str) -> int:
    """The bytes every replayed block carries whatever the archived one held."""
    biggest = 10**20 - 1  # the largest sequence a name can hold
    return len(
        replay_headers(
            None,
            msg_id=message_id(stream, generation, biggest),
            stream=stream,
            seq=biggest,
            time_ns=0,
        )
    )


def renamed_growth(raw: bytes | None) -> int:
    """The bytes renaming reserved headers adds to this block."""
    return sum(len(_RENAMED) for line in _lines(raw) if _key(line).startswith(_RESERVED))
