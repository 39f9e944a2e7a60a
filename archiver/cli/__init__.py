"""The ``archiver`` command line: each command parses its flags, calls one library
function, and prints the result, which renders itself (``archiver.render``)."""

import os
import sys

JEMALLOC_FOR_ARROW = sys.platform == "linux" and os.uname().machine in ("x86_64", "aarch64")
"""Where the command line names jemalloc for Arrow's C++ allocations (see below)."""

if JEMALLOC_FOR_ARROW:
    # Arrow's C++ code (Parquet's page buffers, compression) allocates from the pool
    # this names, chosen once when pyarrow is imported: pa.set_memory_pool later
    # reaches only pyarrow's own allocations. With jemalloc here, the decay of 0 set
    # in ``app`` hands those pages back too (verify of 1M rows: 120 MB of anonymous
    # memory less). PyPI's wheels for these platforms have jemalloc (a build without
    # it prints one warning and keeps its default); a user's choice is kept.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

# After the environment is set: these import pyarrow.
from archiver.cli import archive, proof, query, replay, restore  # noqa: E402
from archiver.cli.app import main  # noqa: E402

__all__ = ["archive", "main", "proof", "query", "replay", "restore"]
