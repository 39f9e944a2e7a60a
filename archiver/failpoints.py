"""Named points where tests make the process die or freeze, to prove crash safety.

``ARCHIVER_FAILPOINTS="after-commit:2,mid-upload"`` kills the process with SIGKILL the
2nd time it passes ``after-commit`` (the 1st time for a bare name). ``=stop`` instead
freezes it with SIGSTOP (``mid-upload:1=stop``), as a long pause would, until a test
sends SIGCONT. Unset in production, where ``hit`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_armed: dict[str, list[int]] = {}
for _item in filter(None, os.environ.get("ARCHIVER_FAILPOINTS", "").split(",")):
    _spec, _, _action = _item.partition("=")
    _name, _, _count = _spec.partition(":")
    _signal = signal.SIGSTOP if _action.strip() == "stop" else signal.SIGKILL
    _armed[_name.strip()] = [int(_count or 1), _signal]


def hit(name: str) -> None:
    """Die (or freeze) here if the failpoint ``name`` is armed and its count is reached."""
    if name not in _armed:
        return
    point = _armed[name]
    point[0] -= 1
    if point[0] == 0:
        # At this thread: a signal sent to the process may be taken by another thread
        # while this one runs on past the point.
        signal.pthread_kill(threading.get_ident(), point[1])
