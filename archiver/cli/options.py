"""Options shared by commands. Every option a deployment sets has an ``ARCHIVER_*``
variable, named here and only here: ``--s3-sse`` reads ``ARCHIVER_S3_SSE``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "ARCHIVER_"


def _writable_parent(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A file the command writes at its end must have somewhere to go: found out before
    the work (a drill's results would otherwise be lost), not after it."""
    if value is not None:
        parent = value.parent if str(value.parent) else Path()
        if not parent.is_dir():
            raise click.BadParameter(f"directory {parent} does not exist", ctx, param)
        if not os.access(parent, os.W_OK):
            raise click.BadParameter(f"directory {parent} is not writable", ctx, param)
    return value


OUTPUT_FILE: dict[str, Any] = {
    "type": click.Path(path_type=Path, dir_okay=False),
    "callback": _writable_parent,
}
"""The type and check of an option naming a file to write."""


def env_name(option: str) -> str:
    """``--s3-sse`` -> ``ARCHIVER_S3_SSE``."""
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def env_option(name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads its ``ARCHIVER_*`` variable."""
    return click.option(name, *decls, envvar=env_name(name), **kwargs)


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func: F) -> F:
    """The options every command takes."""
    path = click.Path(path_type=Path)
    return _apply(
        func,
        [
            env_option(
                "--nats-url",
                help="NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222].",
            ),
            env_option(
                "--store",
                help="Archive: s3://bucket/prefix, file:///path or a path [default: ./archive].",
            ),
            env_option("--policy", type=path, help="Policy file (YAML)."),
            env_option(
                "--s3-endpoint",
                help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS).",
            ),
            env_option(
                "--s3-addressing-style",
                type=click.Choice(["path", "virtual", "auto"]),
                help="Bucket in the path or in the host name [default: path].",
            ),
            env_option(
                "--s3-checksum",
                type=click.Choice(["when_required", "when_supported"]),
                help="When to send request checksums [default: when_required].",
            ),
            env_option(
                "--s3-sse",
                type=click.Choice(["AES256", "aws:kms"]),
                help="Server-side encryption of written objects: SSE-S3 or SSE-KMS.",
            ),
            env_option(
                "--s3-sse-kms-key-id",
                help="KMS key id or ARN for --s3-sse aws:kms [default: the bucket's key].",
            ),
            env_option(
                "--s3-storage-class",
                help="Storage class of written objects, e.g. STANDARD_IA [default: the bucket's].",
            ),
            env_option("--creds", type=path, help="NATS credentials file (JWT and nkey seed)."),
            env_option("--nkey-seed", type=path, help="NATS nkey seed file."),
            env_option("--tls-ca", type=path, help="CA certificate for the NATS server."),
            env_option("--tls-cert", type=path, help="Client certificate for mutual TLS."),
            env_option("--tls-key", type=path, help="Client key for mutual TLS."),
            click.option("-v", "--verbose", count=True, help="More log output (-vv for debug)."),
            env_option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="Log lines for people, or JSON lines for log collectors.",
            ),
        ],
    )


def metrics_options(func: F) -> F:
    """Where a command's metrics go: a CronJob has no scrape target."""
    return _apply(
        func,
        [
            env_option("--pushgateway", help="Push metrics to this Prometheus Pushgateway URL."),
            env_option(
                "--metrics-job",
                default="nats-archiver",
                show_default=True,
                help="Pushgateway job name: one per archiver deployment sharing a Pushgateway.",
            ),
            env_option(
                "--metrics-file",
                **OUTPUT_FILE,
                help="Write metrics for node-exporter's textfile collector.",
            ),
        ],
    )


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")(
        func
    )


def streams_option(func: F) -> F:
    """``--stream NAME``, repeatable: the streams a command covers [default: all]."""
    return click.option(
        "--stream",
        "stream",
        multiple=True,
        help="Only this stream (repeatable) [default: all].",
    )(func)
