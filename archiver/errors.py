"""Every exception class the tool raises, in one tree.

    ArchiverError                 exit 1: operational, the user can fix and retry
    ├── SourceError               NATS unreachable, refused, stream offline
    │   ├── ApiError              the JetStream API answered with an error code
    │   ├── LeaseHeld             another run holds the stream's lease
    │   └── LeaseLost             our lease expired or was taken: stop writing
    │       └── FenceLost         another run committed the same seqs first: stop
    ├── StoreError                S3 or directory unreachable, denied, missing bucket
    │   └── AlreadyExists         a commit found its final name taken
    ├── MetricsError              Pushgateway or metrics file could not take the metrics
    ├── Interrupted               stopped by a signal midway: what was done, how to go on
    ├── UsageError                exit 2: bad flags, bad policy file, unknown stream
    │   └── UnsafeActionRefused   exit 2: needs --yes or similar
    └── DataAtRisk                exit 3: data lost, rewound or differing
        └── DataFileCorrupt       a data file is damaged, truncated or not Parquet

Foreign errors (nats, botocore, OSError, pyarrow) are translated where they enter,
with ``raise ... from exc``, so the CLI prints one line and the right exit code.
"""

from __future__ import annotations

import logging


class ArchiverError(Exception):
    """Base of every error the tool reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def line(self) -> str:
        """What happened, and what to do where we know: the one line a user sees."""
        return f"{self}; {self.hint}" if self.hint else str(self)


class SourceError(ArchiverError):
    """NATS could not be reached or refused what we asked."""


class ApiError(SourceError):
    """The JetStream API answered with an error."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream API {subject}: {description} (code {code}/{err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class LeaseHeld(SourceError):
    """Another archiver holds this stream's lease."""


class LeaseLost(SourceError):
    """Our lease expired or was taken: stop writing at once."""


class FenceLost(LeaseLost):
    """Another run committed the sequences this run was about to commit: it took over
    while this one was paused. Nothing of ours counts; the other run's files do."""


class StoreError(ArchiverError):
    """The archive store could not be reached or refused what we asked."""


class AlreadyExists(StoreError):
    """A no-clobber write found its key already taken."""


class MetricsError(ArchiverError):
    """Metrics could not be delivered (Pushgateway unreachable, file not writable)."""


class Interrupted(ArchiverError):
    """A command stopped by SIGTERM or SIGINT midway: says what it had done and how to
    go on (the CLI exits 143 or 130)."""


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


def stream_failure(exc: Exception, stream: str, log: logging.Logger) -> tuple[str, int]:
    """One stream's failure in a multi-stream command, as (summary line, exit code).

    Our own errors are one line. Anything else is a bug or a failure nobody foresaw: its
    traceback goes to the log, the line says so, and the other streams go ahead.
    """
    if isinstance(exc, ArchiverError):
        log.error("%s: %s", stream, exc.line(), extra={"stream": stream})
        return exc.line(), exc.exit_code
    log.error("%s: unexpected error", stream, exc_info=exc, extra={"stream": stream})
    return f"unexpected error: {exc!r} (its traceback is in the log)", ArchiverError.exit_code
