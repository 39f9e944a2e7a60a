"""Archiving: one pass per stream (read, cut into files, commit), the lease, status
and listing."""
