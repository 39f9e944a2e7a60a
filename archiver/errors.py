"""One error tree for the whole tool.

    ArchiverError               exit 1: operational, the user can fix and retry
    ├── SourceError             NATS unreachable, refused, stream offline
    ├── StoreError              S3 or directory unreachable, denied, missing bucket
    │   └── AlreadyExists       a commit found its final name taken
    ├── UsageError              exit 2: bad flags, bad policy file, unknown stream
    │   └── UnsafeActionRefused exit 2: needs --yes or similar
    └── DataAtRisk              exit 3: data lost, rewound or differing

Foreign errors (nats, botocore, OSError, pyarrow) are translated where they enter,
with ``raise ... from exc``, so the CLI prints one line and the right exit code.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base of every error the tool reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class SourceError(ArchiverError):
    """NATS could not be reached or refused what we asked."""


class StoreError(ArchiverError):
    """The archive store could not be reached or refused what we asked."""


class AlreadyExists(StoreError):
    """A no-clobber write found its key already taken."""


class UsageError(ArchiverError):
    """Wrong flags, a bad policy file, an unknown stream."""

    exit_code = 2


class UnsafeActionRefused(UsageError):
    """An action that could harm live data, refused without explicit consent."""


class DataAtRisk(ArchiverError):
    """Data is lost or inconsistent: the archive cannot vouch for it."""

    exit_code = 3


class DataFileCorrupt(DataAtRisk):
    """A data file is damaged, truncated, or not Parquet at all."""
