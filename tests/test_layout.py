"""The README's map of the code is the tree, and no module outgrows one job."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "archiver"
MAX_LINES = 400


def readme_map() -> set[str]:
    """Paths the README's "Layout of the code" block names under archiver/."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout of the code", 1)[1].split("```", 2)[1]
    named: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, path) of the folders we are inside
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m:
            continue
        indent, name = len(m[1]), m[2]
        if not (name.endswith("/") or name.endswith(".py")):
            continue
        folders = [(i, p) for i, p in folders if i < indent]
        path = (folders[-1][1] if folders else "") + name
        if name.endswith("/"):
            folders.append((indent, path))
        if path.startswith("archiver/") and path != "archiver/":
            named.add(path)
    return named


def tree() -> set[str]:
    """Modules and folders of the package, as the map names them."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        found.add(relative)
    for folder in PACKAGE.rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            found.add(folder.relative_to(ROOT).as_posix() + "/")
    return found


def test_the_readme_map_names_every_module_and_folder_and_nothing_else() -> None:
    named, actual = readme_map(), tree()
    assert named == actual, (
        f"in the README but not the tree: {sorted(named - actual)}; "
        f"in the tree but not the README: {sorted(actual - named)}"
    )


def test_no_module_is_over_400_lines() -> None:
    long = {
        path.relative_to(ROOT).as_posix(): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"
