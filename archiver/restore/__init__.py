"""Rebuilding streams from the archive alone: ``archiver restore``."""

from archiver.restore.config import Overrides
from archiver.restore.run import RestoreOptions, RestoreResult, restore

__all__ = ["Overrides", "RestoreOptions", "RestoreResult", "restore"]
