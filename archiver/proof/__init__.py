"""Proving the archive: verify, compare with NATS, drill, coverage chart."""
