"""Every relative link and image in every committed Markdown file and notebook (model
cards, the committed report, notebook outputs included) resolves in a fresh clone, and
nothing committed points outside the repository or at a path of one machine."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
# [text](target "title"), ![alt](target), <img src="...">, <a href="...">, [ref]: target
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", flags=re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
# An absolute path of a machine, as notebook outputs or generated text would print it.
OUTSIDE = "/".join(("..", "shared"))  # the folder beside the repository its users do not have
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|Users|private/var)/[\w.-]+")


def committed(*suffixes: str) -> list[Path]:
    """The files git tracks with these suffixes (a fresh clone's files); the tree's
    files outside ignored folders where this is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        files = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "build", "report", "runs", ".git", "node_modules"}
        files = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in files if p.suffix in suffixes and p.is_file())


def _text_parts(path: Path) -> list[tuple[str, str]]:
    """(where, text) pieces of a file whose links are checked: a Markdown file whole; a
    notebook's markdown cells and its outputs' markdown and HTML."""
    if path.suffix == ".md":
        return [("", path.read_text())]
    nb = json.loads(path.read_text())
    parts = []
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append((f"cell {i}", src))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for kind in ("text/markdown", "text/html"):
                if kind in data:
                    parts.append((f"cell {i} output", "".join(data[kind])))
    return parts


def links(text: str) -> list[str]:
    """The link and image targets of Markdown or HTML text, outside code."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m for rx in (MD_LINK, HTML_LINK, REF_LINK) for m in rx.findall(text)]


def broken(path: Path) -> list[str]:
    """The relative targets of `path` that do not resolve inside the repository."""
    bad = []
    for where, text in _text_parts(path):
        for target in links(text):
            url = urlparse(target)
            if url.scheme or target.startswith(("#", "//", "mailto:")):
                continue  # a web link or an anchor in the same page
            if target.startswith("/"):
                bad.append(f"{where} {target}: an absolute path")
                continue
            dest = (path.parent / unquote(url.path)).resolve()
            if not dest.is_relative_to(ROOT):
                bad.append(f"{where} {target}: outside the repository")
            elif not dest.exists():
                bad.append(f"{where} {target}: not there")
    return bad


FILES = committed(".md", ".ipynb")


def test_the_walk_finds_the_documents():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "CONTRIBUTING.md", "docs/design.md", "checkpoints/dense/README.md",
            "notebooks/the_gap.ipynb"} <= names  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert broken(path) == []


@pytest.mark.parametrize(
    "path", committed(".md", ".ipynb", ".py", ".toml", ".yaml", ".cfg", ".txt") + [ROOT / "Makefile"],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)  # fmt: skip
def test_nothing_points_outside_the_repository(path):
    text = path.read_text(errors="replace")
    assert OUTSIDE not in text, "a path outside the repository"
    found = sorted(set(MACHINE_PATH.findall(text)))
    assert not found, f"absolute paths of a machine: {found}"


def test_the_link_walk_catches_what_it_should(tmp_path):
    text = "[ok](README.md) ![pic](docs/none.png) `[code](nowhere.md)` [web](https://x.org)\n"
    text += '<img src="../../outside.png"> [anchor](#top)\n```\n[fenced](nowhere.md)\n```\n'
    assert links(text) == [
        "README.md",
        "docs/none.png",
        "https://x.org",
        "#top",
        "../../outside.png",
    ]
