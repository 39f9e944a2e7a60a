"""The ``archiver`` command: a thin click layer; each command calls one library function."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from archiver import __version__
from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from archiver.config import Settings
    from archiver.delivery import MetricsTarget

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_OK, EXIT_DATA = 0, 3


def common_options(func: F) -> F:
    """The options every command takes; each also reads an ``ARCHIVER_*`` variable."""
    options = [
        click.option(
            "--nats-url",
            envvar="ARCHIVER_NATS_URL",
            help="NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222].",
        ),
        click.option(
            "--store",
            envvar="ARCHIVER_STORE",
            help="Archive: s3://bucket/prefix, file:///path or a path [default: ./archive].",
        ),
        click.option(
            "--policy",
            envvar="ARCHIVER_POLICY",
            type=click.Path(path_type=Path),
            help="Policy file (YAML).",
        ),
        click.option(
            "--s3-endpoint",
            envvar="ARCHIVER_S3_ENDPOINT",
            help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS).",
        ),
        click.option(
            "--s3-addressing-style",
            envvar="ARCHIVER_S3_ADDRESSING_STYLE",
            type=click.Choice(["path", "virtual", "auto"]),
            help="Bucket in the path or in the host name [default: path].",
        ),
        click.option(
            "--s3-checksum",
            envvar="ARCHIVER_S3_CHECKSUM",
            type=click.Choice(["when_required", "when_supported"]),
            help="When to send request checksums [default: when_required].",
        ),
        click.option(
            "--s3-sse",
            envvar="ARCHIVER_S3_SSE",
            type=click.Choice(["AES256", "aws:kms"]),
            help="Server-side encryption of written objects: SSE-S3 or SSE-KMS.",
        ),
        click.option(
            "--s3-sse-kms-key-id",
            envvar="ARCHIVER_S3_SSE_KMS_KEY_ID",
            help="KMS key id or ARN for --s3-sse aws:kms [default: the bucket's key].",
        ),
        click.option(
            "--s3-storage-class",
            envvar="ARCHIVER_S3_STORAGE_CLASS",
            help="Storage class of written objects, e.g. STANDARD_IA [default: the bucket's].",
        ),
        click.option(
            "--creds",
            envvar="ARCHIVER_CREDS",
            type=click.Path(path_type=Path),
            help="NATS credentials file (JWT and nkey seed).",
        ),
        click.option(
            "--nkey-seed",
            envvar="ARCHIVER_NKEY_SEED",
            type=click.Path(path_type=Path),
            help="NATS nkey seed file.",
        ),
        click.option(
            "--tls-ca",
            envvar="ARCHIVER_TLS_CA",
            type=click.Path(path_type=Path),
            help="CA certificate for the NATS server.",
        ),
        click.option(
            "--tls-cert",
            envvar="ARCHIVER_TLS_CERT",
            type=click.Path(path_type=Path),
            help="Client certificate for mutual TLS.",
        ),
        click.option(
            "--tls-key",
            envvar="ARCHIVER_TLS_KEY",
            type=click.Path(path_type=Path),
            help="Client key for mutual TLS.",
        ),
        click.option("-v", "--verbose", count=True, help="More log output (-vv for debug)."),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            envvar="ARCHIVER_LOG_FORMAT",
            show_default=True,
            help="Log lines for people, or JSON lines for log collectors.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def metrics_options(func: F) -> F:
    """Where a command's metrics go: a CronJob has no scrape target."""
    func = click.option(
        "--metrics-file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="ARCHIVER_METRICS_FILE",
        help="Write metrics for node-exporter's textfile collector.",
    )(func)
    func = click.option(
        "--metrics-job",
        envvar="ARCHIVER_METRICS_JOB",
        default="nats-archiver",
        show_default=True,
        help="Pushgateway job name: one per archiver deployment sharing a Pushgateway.",
    )(func)
    return click.option(
        "--pushgateway",
        envvar="ARCHIVER_PUSHGATEWAY",
        help="Push metrics to this Prometheus Pushgateway URL.",
    )(func)


def _metrics_target(params: dict[str, Any]) -> MetricsTarget:
    from archiver.delivery import MetricsTarget

    return MetricsTarget(
        params.pop("pushgateway"), params.pop("metrics_file"), params.pop("metrics_job")
    )


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")(
        func
    )


def _setup_logging(verbose: int, log_format: str = "text") -> None:
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


def _say(exc: ArchiverError) -> None:
    line = f"archiver: error: {exc}"
    if exc.hint:
        line += f"; {exc.hint}"
    click.echo(line, err=True)


def _fail(exc: ArchiverError) -> None:
    _say(exc)
    sys.exit(exc.exit_code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ArchiverError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits
    except KeyboardInterrupt:
        click.echo("archiver: interrupted; nothing half-written was committed", err=True)
        sys.exit(130)


def _settings(params: dict[str, Any]) -> Any:
    from archiver.config import resolve

    _setup_logging(params.get("verbose", 0), params.get("log_format") or "text")
    try:
        return resolve(params)
    except ArchiverError as exc:
        _fail(exc)


def _emit(rows: Sequence[dict[str, object]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    table = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def with_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ArchiverError as exc:
            _fail(exc)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def _deliver(
    registry: CollectorRegistry,
    command: str,
    settings: Settings,
    target: MetricsTarget,
    code: int,
    prune: bool = True,
) -> int:
    """Metrics go out after the command's work and summary: a failure is one line, and
    the exit code becomes 1 unless the command earned a worse one (3)."""
    from archiver.delivery import deliver

    try:
        deliver(registry, command, settings, target, prune)
    except ArchiverError as exc:
        _say(exc)
        return max(code, exc.exit_code)
    return code


@main.command()
@common_options
@json_option
@click.option("--stream", "stream", multiple=True, help="Archive only this stream (repeatable).")
@click.option(
    "--spool-dir",
    type=click.Path(path_type=Path),
    envvar="ARCHIVER_SPOOL_DIR",
    help="Scratch directory for files being written [default: system temp].",
)
@metrics_options
@with_errors
def run(as_json: bool, **params: Any) -> None:
    """Archive each selected stream (default: all) up to its last sequence, then exit."""
    from archiver.archive.run import run as archive_run

    metrics = _metrics_target(params)
    settings = _settings(params)
    results = _run(archive_run(settings))
    code = max((r.exit_code for r in results), default=EXIT_OK)
    # The summary first: a metrics failure afterwards must not hide what the run did.
    _emit(
        [r.as_json() for r in results],
        as_json,
        [
            "stream",
            "from_seq",
            "to_seq",
            "messages",
            "files",
            "bytes_in",
            "bytes_out",
            "seconds",
            "lost",
            "skipped",
            "error",
        ],
    )
    if metrics:
        from dataclasses import replace

        from archiver.delivery import status_after_run
        from archiver.metrics import run_metrics

        done = tuple(r.stream for r in results if not r.skipped)
        statuses = _run(status_after_run(replace(settings, streams=done))) if done else []
        code = _deliver(run_metrics(results, statuses), "run", settings, metrics, code)
    sys.exit(code)


@main.command()
@common_options
@json_option
@click.option("--stream", "stream", multiple=True, help="Only this stream (repeatable).")
@metrics_options
@with_errors
def status(as_json: bool, **params: Any) -> None:
    """How far behind the archive is and how long until unarchived messages expire.

    Exits 3 when a stream is at-risk or lost.
    """
    from archiver.archive.status import State
    from archiver.archive.status import status as get_status

    metrics = _metrics_target(params)
    settings = _settings(params)
    found = _run(get_status(settings))
    code = EXIT_DATA if any(s.state is not State.OK for s in found) else EXIT_OK
    _emit(
        [s.as_json() for s in found],
        as_json,
        [
            "stream",
            "first_seq",
            "last_seq",
            "archived_seq",
            "behind",
            "oldest_unarchived_age_s",
            "expires_in_s",
            "state",
        ],
    )
    if metrics:
        from archiver.metrics import status_metrics

        code = _deliver(status_metrics(found), "status", settings, metrics, code)
    sys.exit(code)


@main.command(name="ls")
@common_options
@json_option
@click.argument("streams", nargs=-1)
@with_errors
def ls_command(as_json: bool, streams: tuple[str, ...], **params: Any) -> None:
    """List the archive's files (of STREAMS, default all)."""
    from archiver.archive.listing import list_files

    settings = _settings(params)
    rows = list_files(settings, streams)
    _emit(
        rows,
        as_json,
        ["stream", "key", "first_seq", "last_seq", "rows", "bytes", "first_time", "last_time"],
    )


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path(),
    show_default=True,
    help="Where ./archive and the demo's server files go.",
)
@click.option("--messages", default=2000, show_default=True, help="Messages per stream.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@with_errors
def demo(workdir: Path, messages: int, verbose: int) -> None:
    """Start a throwaway nats-server, fill five streams, archive, show status."""
    from archiver.demo import run_demo

    _setup_logging(verbose)
    sys.exit(_run(run_demo(workdir, messages, click.echo)))


@main.command()
@common_options
@json_option
@click.option("--stream", "replay_stream", required=True, help="The archived stream to replay.")
@click.option("--generation", help="Which generation of the stream [default: the newest].")
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    help="Only subjects matching this NATS filter (repeatable; * and > wildcards).",
)
@click.option("--from-seq", type=click.IntRange(min=1), help="First archived seq (inclusive).")
@click.option("--to-seq", type=click.IntRange(min=1), help="Last archived seq (inclusive).")
@click.option("--since", help="From this time: RFC 3339, or a duration ago (90m, 36h, 7d).")
@click.option("--until", help="Up to this time (inclusive): RFC 3339 or a duration ago.")
@click.option("--subject-prefix", help="Publish to PREFIX.<original subject>.")
@click.option(
    "--subject-map",
    nargs=2,
    multiple=True,
    metavar="SRC DST",
    help="Map subjects like a NATS transform: auth.*.x restore.{{wildcard(1)}}.x",
)
@click.option("--target-url", help="NATS server to publish to [default: --nats-url].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="At most N messages/s.")
@click.option("--dry-run", is_flag=True, help="Send nothing; show counts per subject and samples.")
@click.option("--yes", is_flag=True, help="Allow publishing into the live source stream.")
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted replay after its acked prefix."
)
@click.option(
    "--seq-map",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write archive seq -> target stream/seq (Parquet) from the acks.",
)
@click.option(
    "--include-delete-markers",
    is_flag=True,
    help="Also replay KV delete/purge markers (KV clients read them as deletes).",
)
@with_errors
def replay(as_json: bool, **params: Any) -> None:
    """Republish archived messages into NATS, in sequence order, exactly once.

    Each message gets a Nats-Msg-Id derived from stream, generation and seq, so a
    repeated or retried replay inside the target's duplicate window stores nothing
    twice; server-reserved headers travel as Archive-<name>.
    """
    from archiver.replay import replay as do_replay

    settings = _settings(params)
    opts = _replay_options(params, settings, progress=not as_json)
    summary = _run(do_replay(settings, opts))
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
        return
    verb = "would publish" if summary.dry_run else "published"
    click.echo(
        f"{summary.stream} (generation {summary.generation}) -> {summary.target} "
        f"{', '.join(summary.target_streams)}: {summary.matched} matched, {verb} "
        f"{summary.matched if summary.dry_run else summary.published}, "
        f"duplicates dropped {summary.duplicates}, skipped {summary.skipped}, "
        f"{summary.bytes:,} payload bytes, {summary.seconds:.1f}s"
    )
    if summary.dry_run:
        for subject, count in summary.by_subject.items():
            click.echo(f"  {count:>10}  {subject}")
        for original, mapped in summary.sample_subjects:
            click.echo(f"  e.g. {original} -> {mapped}")


def _replay_options(params: dict[str, Any], settings: Any, progress: bool) -> Any:
    from dataclasses import replace

    from archiver.errors import UsageError
    from archiver.replay import ReplayOptions
    from archiver.replay.mapping import SubjectMapper
    from archiver.replay.selection import Selection
    from archiver.replay.subjects import SubjectFilter
    from archiver.timefmt import parse_time_bound

    if params["subject_prefix"] and params["subject_map"]:
        raise UsageError("use --subject-prefix or --subject-map, not both")

    def bound(name: str) -> int | None:
        value = params[name]
        if value is None:
            return None
        try:
            return parse_time_bound(value)
        except ValueError as exc:
            raise UsageError(f"--{name}: {exc}") from exc

    selection = Selection(
        stream=params["replay_stream"],
        generation=params["generation"],
        subjects=SubjectFilter(params["subjects"]),
        from_seq=params["from_seq"],
        to_seq=params["to_seq"],
        since_ns=bound("since"),
        until_ns=bound("until"),
    )
    if params["subject_prefix"]:
        mapper = SubjectMapper.prefix(params["subject_prefix"])
    elif params["subject_map"]:
        mapper = SubjectMapper.transforms(params["subject_map"])
    else:
        mapper = SubjectMapper.identity()
    target = replace(settings.nats, url=params["target_url"]) if params["target_url"] else None
    return ReplayOptions(
        selection=selection,
        mapper=mapper,
        target=target,
        rate=params["rate"],
        dry_run=params["dry_run"],
        yes=params["yes"],
        resume=params["resume"],
        seq_map=params["seq_map"],
        delete_markers=params["include_delete_markers"],
        progress=progress,
        bounds_text=f"{params['since'] or ''}..{params['until'] or ''}",
    )


@main.command(name="verify")
@common_options
@json_option
@click.argument("streams", nargs=-1)
@click.option(
    "--against-nats",
    is_flag=True,
    help="Also compare message for message with what the server still holds.",
)
@with_errors
def verify_command(
    as_json: bool, streams: tuple[str, ...], against_nats: bool, **params: Any
) -> None:
    """Check that the archive (of STREAMS, default all) is whole and intact.

    Reads every file; checks schema, checksums, content hash, ranges; classifies every
    hole: deleted in NATS, expired before archiving, or missing from the archive.
    Exits 3 when anything is missing, damaged or different.
    """
    from archiver.proof.verify import verify

    settings = _settings(params)
    reports = verify(settings, streams)
    if against_nats:
        from archiver.proof.compare import compare_with_nats

        _run(compare_with_nats(settings, reports))
    if as_json:
        click.echo(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        for r in reports:
            state = "ok" if r.ok else "NOT WHOLE"
            counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts().items())) or "no gaps"
            click.echo(
                f"{r.stream} g{r.generation}: {state}: {r.files} files, {r.rows} rows, "
                f"seq {r.first_seq}..{r.last_seq}; {counts}"
            )
            for f in r.findings:
                if f.kind in ("damaged", "mismatch", "overlap", "missing", "differs"):
                    click.echo(
                        f"  {f.kind} seq {f.first_seq}..{f.last_seq} {f.key or ''} {f.detail}"
                    )
    sys.exit(EXIT_OK if all(r.ok for r in reports) else EXIT_DATA)


@main.command(name="drill")
@common_options
@json_option
@click.option(
    "--stream",
    "drill_streams",
    multiple=True,
    help="Drill this stream (repeatable) [default: all archived].",
)
@click.option("--target-url", help="NATS server to restore into [default: --nats-url].")
@click.option("--since", help="Restore only messages since T (RFC 3339 or a duration ago).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report here (.json), with .md and .svg beside it.",
)
@click.option("--keep", is_flag=True, help="Keep the scratch streams for inspection.")
@metrics_options
@with_errors
def drill_command(
    as_json: bool,
    drill_streams: tuple[str, ...],
    target_url: str | None,
    since: str | None,
    report_path: Path | None,
    keep: bool,
    **params: Any,
) -> None:
    """Disaster-recovery drill: restore into scratch streams, compare, report RPO and RTO.

    Exits 0 when every restored message matched the archive, 3 otherwise.
    """
    from archiver.errors import UsageError
    from archiver.proof.drill import drill, write_reports
    from archiver.store import open_store
    from archiver.timefmt import parse_time_bound

    metrics = _metrics_target(params)
    settings = _settings(params)
    try:
        since_ns = parse_time_bound(since) if since else None
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from exc
    report = _run(drill(settings, drill_streams, target_url, since_ns, keep))
    if report_path:
        written = write_reports(report, open_store(settings.store_url, settings.s3), report_path)
        if not as_json:
            click.echo("report: " + ", ".join(str(p) for p in written))
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for s in report.streams:
            click.echo(
                f"{s.stream}: {'ok' if s.ok else 'FAILED'}: {s.restored}/{s.archived} restored, "
                f"{s.matched} matched, {s.differences} differ; RTO {s.rto_seconds}s "
                f"({s.restore_msgs_per_s} msgs/s); RPO {s.rpo_seconds}s"
            )
            for text in s.verify_problems + s.examples + ([s.error] if s.error else []):
                click.echo(f"  {text}")
    code = EXIT_OK if report.ok else EXIT_DATA
    if metrics:
        from archiver.metrics import drill_metrics

        # A deleted stream's archive is still drilled: its drill groups stay.
        code = _deliver(drill_metrics(report), "drill", settings, metrics, code, prune=False)
    sys.exit(code)
