"""Replay: select -> plan -> check the target -> map subjects -> publish."""

from archiver.replay.request import ReplayOptions, ReplaySummary
from archiver.replay.run import replay

__all__ = ["ReplayOptions", "ReplaySummary", "replay"]
