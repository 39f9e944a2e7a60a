"""Replayed header blocks: reserved names renamed, the rest byte for byte, our id first."""

from __future__ import annotations

from archiver.replay.headers import growth_bound, is_delete_marker, message_id, replay_headers


def test_block_keeps_lines_renames_reserved_and_puts_our_id_first() -> None:
    raw = (
        b"NATS/1.0\r\nA: 1\r\nA:  2 \r\nNats-Msg-Id: orig\r\nNats-Expected-Last-Sequence: 5\r\n"
        b"nats-ttl: 1s\r\nNats-Rollup: sub\r\n\r\n"
    )
    out = replay_headers(raw, msg_id="archive:S:g:7", stream="S", seq=7, time_ns=1_000_000_001)
    assert out == (
        b"NATS/1.0\r\nNats-Msg-Id: archive:S:g:7\r\nA: 1\r\nA:  2 \r\nArchive-Nats-Msg-Id: orig\r\n"
        b"Archive-Nats-Expected-Last-Sequence: 5\r\nArchive-nats-ttl: 1s\r\nArchive-Nats-Rollup: sub\r\n"
        b"Archive-Stream: S\r\nArchive-Seq: 7\r\nArchive-Time: 1970-01-01T00:00:01.000000001Z\r\n\r\n"
    )
    assert len(out) - len(raw) <= growth_bound(raw, "S", "g")


def test_message_without_headers_gets_id_and_provenance() -> None:
    out = replay_headers(None, msg_id=message_id("AUTH", "g1", 3), stream="AUTH", seq=3, time_ns=0)
    assert out.startswith(b"NATS/1.0\r\nNats-Msg-Id: archive:AUTH:g1:3\r\n")
    assert out.endswith(b"Archive-Seq: 3\r\nArchive-Time: 1970-01-01T00:00:00.000000000Z\r\n\r\n")


def test_delete_markers() -> None:
    assert is_delete_marker(b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n")
    assert is_delete_marker(b"NATS/1.0\r\nKV-Operation: PURGE\r\n\r\n")
    assert is_delete_marker(b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\n\r\n")
    assert not is_delete_marker(b"NATS/1.0\r\nKV-Operation: PUT\r\n\r\n")
    assert not is_delete_marker(None)
