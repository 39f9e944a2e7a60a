"""The ``archiver`` command line: a thin click layer over one library function each."""

from archiver.cli.commands import main

__all__ = ["main"]
