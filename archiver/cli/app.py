"""The ``archiver`` group and what every command shares: settings, logging, one-line
errors, and printing a result."""

from __future__ import annotations

import functools
import gc
import itertools
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click

from archiver import __version__
from archiver.config import Settings
from archiver.errors import ArchiverError, UsageError
from archiver.render import Result, to_json

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

INTERRUPTED = 130


class _Group(click.Group):
    """Click's own usage errors (an unknown flag, a bad value) as our one line: JSON
    when the logs are JSON, so that every line a log pipeline sees parses."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "see archiver -h")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = exc.format_message().rstrip(".")
            error = UsageError(message, hint="see archiver -h")
            say(error if exc.exit_code == 2 else ArchiverError(message), _json_logs_asked(argv))
            sys.exit(exc.exit_code)
        except click.Abort:
            _stopped_line("interrupted", INTERRUPTED)
        except Exception as exc:
            if not _json_logs_asked(argv):
                raise  # a bug: its traceback is what a report needs
            # Even a bug's last words parse in a JSON log pipeline, traceback included.
            line = {
                "level": "CRITICAL",
                "message": f"unexpected error: {exc!r}",
                "traceback": traceback.format_exc(),
                "exit_code": 1,
            }
            click.echo(json.dumps(line), err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _json_logs_asked(argv: list[str]) -> bool:
    """The log format asked for when parsing failed: the last flag, else the variable."""
    given = [b for a, b in itertools.pairwise(argv) if a == "--log-format"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--log-format=")]
    if given:
        return given[-1] == "json"
    return os.environ.get("ARCHIVER_LOG_FORMAT") == "json"


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="archiver")
def main() -> None:
    """Archive NATS JetStream streams to zstd Parquet in S3-compatible storage,
    replay them into NATS, and prove the archive is complete.

    Exit codes: 0 success, 1 operational error, 2 usage error or refused unsafe
    action, 3 data at risk or lost.
    """
    _return_memory_promptly()


def _return_memory_promptly() -> None:
    """Use jemalloc with immediate decay for Arrow buffers where pyarrow has it.

    Arrow's default allocator keeps freed row-group buffers around (40-55 MB measured
    on a 1M-message run); a CronJob pod's memory limit is better spent elsewhere.
    """
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:
        logging.getLogger(__name__).debug("pyarrow built without jemalloc; default pool")


def setup_logging(verbose: int, log_format: str = "text") -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # nats-py logs reconnect chatter at error level on its own; ours says it once.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    # botocore's debug lines carry request headers (signatures, session tokens): never.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _context_meta()["log_format"] = log_format


def _context_meta() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def say(exc: ArchiverError, json_logs: bool | None = None) -> None:
    """The one line a user sees for an error: JSON when the logs are JSON."""
    if json_logs is None:
        json_logs = _context_meta().get("log_format") == "json"
    if json_logs:
        line = json.dumps({"level": "ERROR", "message": exc.line(), "exit_code": exc.exit_code})
    else:
        line = f"archiver: error: {exc.line()}"
    click.echo(line, err=True)


class Stopped(Exception):
    """The work was cancelled by SIGTERM or SIGINT and has cleaned up after itself;
    ``detail`` is what it said about where it stopped, if anything."""

    def __init__(self, signum: int, detail: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` where SIGTERM (Kubernetes stopping the pod) and SIGINT cancel the
    work instead of killing the process: its ``finally`` blocks release leases and
    remove spool files, then ``Stopped`` is raised. A second signal ends the process
    at once, as if no handler were there."""
    # Imported here, as in every command module: the commands that never touch NATS
    # (verify, ls, query) start 25 ms sooner without it.
    import asyncio

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def stop(signum: int) -> None:
            if received:  # a second signal: the clean-up takes too long; go at once
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            received.append(signum)
            task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        try:
            result = await work
        except BaseException as exc:
            # However the work ended, a signal it received means the run was stopped.
            if received:
                detail = exc.line() if isinstance(exc, ArchiverError) else None
                raise Stopped(received[0], detail) from None
            raise
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        if received:
            raise Stopped(received[0])
        return result

    # What exists by now (modules, classes, functions: some hundred thousand objects)
    # outlives the command; frozen, the collector stops walking it in every full
    # collection the per-message allocations set off (archive of 500,000 messages:
    # 0.951 of the time, farm-bench, 15 runs each). Thawed after, for callers that go on.
    gc.freeze()
    try:
        return asyncio.run(main())
    finally:
        gc.unfreeze()


def with_errors(func: F) -> F:
    """Our errors end the command with one line and their exit code; Ctrl-C with one
    line and 130, SIGTERM (through ``run_async``) with one line and 143."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ArchiverError as exc:
            say(exc)
            sys.exit(exc.exit_code)
        except Stopped as exc:
            _stopped_line(
                f"stopped by {exc}: "
                + (
                    exc.detail
                    or "leases released, nothing half-written was committed; the next run "
                    "resumes where this one stopped"
                ),
                128 + exc.signum,
            )
        except KeyboardInterrupt:
            _stopped_line("interrupted; nothing half-written was committed", INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _stopped_line(message: str, code: int) -> None:
    if _context_meta().get("log_format") == "json":
        line = json.dumps({"level": "WARNING", "message": message, "exit_code": code})
    else:
        line = f"archiver: {message}"
    click.echo(line, err=True)
    sys.exit(code)


def settings_from(params: dict[str, Any]) -> Settings:
    """Logging first (so resolving can log), then flags > env > policy > defaults."""
    from archiver.config import resolve

    setup_logging(params.get("verbose", 0), params.get("log_format") or "text")
    return resolve(params)


def finish(result: Result, as_json: bool, deliver: Callable[[], None] | None = None) -> None:
    """Print the result, then deliver its metrics, then exit with the worse code: a
    metrics failure is one line and must not hide what the command did."""
    click.echo(to_json(result) if as_json else result.text())
    code = result.exit_code
    if deliver is not None:
        try:
            deliver()
        except ArchiverError as exc:
            say(exc)
            code = max(code, exc.exit_code)
    sys.exit(code)
