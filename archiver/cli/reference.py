"""The README's CLI reference, generated from ``--help`` so it cannot drift.

``python -m archiver.cli.reference README.md`` rewrites the part between the markers;
tests/test_cli_reference.py fails when the README and ``--help`` disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from archiver.cli import main as cli

START = "<!-- cli-reference:start (generated: python -m archiver.cli.reference README.md) -->"
END = "<!-- cli-reference:end -->"


def _help(command: click.Command, name: str) -> str:
    # The names the group gives its subcommands' contexts too: click caches a command's
    # help option, so every context must agree on them or the output depends on order.
    ctx = click.Context(
        command,
        info_name=name,
        terminal_width=100,
        max_content_width=100,
        help_option_names=cli.context_settings["help_option_names"],
    )
    return command.get_help(ctx)


def render() -> str:
    parts = [f"```\n$ archiver --help\n{_help(cli, 'archiver')}\n```"]
    group = cli if isinstance(cli, click.Group) else None
    assert group is not None
    for name in sorted(group.commands):
        parts.append(
            f"```\n$ archiver {name} --help\n{_help(group.commands[name], f'archiver {name}')}\n```"
        )
    return "\n\n".join(parts)


def replace_section(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(replace_section(path.read_text()))


if __name__ == "__main__":
    main()
