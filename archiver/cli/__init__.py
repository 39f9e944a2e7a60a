"""The ``archiver`` command line: each command parses its flags, calls one library
function, and prints the result, which renders itself (``archiver.render``)."""

from archiver.cli import archive, proof, query, replay, restore
from archiver.cli.app import main

__all__ = ["archive", "main", "proof", "query", "replay", "restore"]
