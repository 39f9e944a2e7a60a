"""Named points where tests make the process die, to prove crash safety.

``ARCHIVER_FAILPOINTS="after-commit:2,mid-upload"`` kills the process with SIGKILL the
2nd time it passes ``after-commit`` (the 1st time for a bare name). Unset in
production, where ``hit`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_armed: dict[str, int] = {}
for _item in filter(None, os.environ.get("ARCHIVER_FAILPOINTS", "").split(",")):
    _name, _, _count = _item.partition(":")
    _armed[_name.strip()] = int(_count or 1)


def hit(name: str) -> None:
    """Die here if the failpoint ``name`` is armed and its count is reached."""
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
