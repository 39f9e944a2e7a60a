"""``archiver replay``."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from archiver.cli.app import finish, main, run_async, settings_from, with_errors
from archiver.cli.options import OUTPUT_FILE, common_options, json_option
from archiver.config import Settings
from archiver.errors import UsageError
from archiver.timefmt import parse_time_bound

if TYPE_CHECKING:
    from archiver.replay import ReplayOptions


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
    **OUTPUT_FILE,
    help="Write archive seq -> target stream/seq (Parquet) from the acks.",
)
@click.option(
    "--allow-gaps",
    is_flag=True,
    help="Replay what there is where the archive cannot account for seqs (else exit 3).",
)
@click.option(
    "--include-delete-markers/--exclude-delete-markers",
    default=None,
    help="Replay KV/object-store delete and purge markers [default: for KV_ and OBJ_ "
    "streams, where without them deleted keys come back].",
)
@with_errors
def replay(as_json: bool, **params: Any) -> None:
    """Republish archived messages into NATS, in sequence order, exactly once.

    Each message gets a Nats-Msg-Id derived from stream, generation and seq, so a
    repeated or retried replay inside the target's duplicate window stores nothing
    twice; server-reserved headers travel as Archive-<name>.
    """
    from archiver.replay import replay as do_replay

    settings = settings_from(params)
    opts = replay_options(params, settings, progress=not as_json)
    finish(run_async(do_replay(settings, opts)), as_json)


def time_bound(option: str, value: str | None) -> int | None:
    """A ``--since``/``--until`` value in nanoseconds; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return parse_time_bound(value)
    except ValueError as exc:
        raise UsageError(f"--{option}: {exc}") from exc


def replay_options(params: dict[str, Any], settings: Settings, progress: bool) -> ReplayOptions:
    from archiver.replay import ReplayOptions
    from archiver.replay.mapping import SubjectMapper
    from archiver.replay.selection import Selection
    from archiver.replay.subjects import SubjectFilter

    if params["subject_prefix"] and params["subject_map"]:
        raise UsageError("use --subject-prefix or --subject-map, not both")
    selection = Selection(
        stream=params["replay_stream"],
        generation=params["generation"],
        subjects=SubjectFilter(params["subjects"]),
        from_seq=params["from_seq"],
        to_seq=params["to_seq"],
        since_ns=time_bound("since", params["since"]),
        until_ns=time_bound("until", params["until"]),
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
        allow_gaps=params["allow_gaps"],
        progress=progress,
        bounds_text=f"{params['since'] or ''}..{params['until'] or ''}",
    )
