"""The README's CLI reference is exactly what ``--help`` says."""

from __future__ import annotations

from pathlib import Path

from archiver.cli.reference import END, START, render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_cli_reference_matches_help() -> None:
    text = README.read_text()
    assert START in text and END in text
    section = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert section == render().strip(), "run: python -m archiver.cli.reference README.md"
