"""Every relative link and image in README.md and docs/ points at a file that exists.

Pages move and figures get renamed; a broken link is found here rather than by a reader. The
checker reads ``[text](target)`` and ``![alt](target)`` outside code (fenced blocks and inline
code spans are skipped, since their brackets are not links), drops a ``#anchor``, ignores
``http(s):``, ``mailto:`` and other schemes and pure ``#anchor`` links, and resolves the rest
against the page's folder (a leading ``/`` against the repository root). Anchors themselves are
not checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from helpers import REPO


# [text](target) or ![alt](target), optionally with a "title"; the text may hold one level of
# nested brackets ([`key[]`](#anchor)); the target may be wrapped in <...>.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages(root: Path) -> list[Path]:
    """README.md and every markdown page under docs/, in a stable order."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").rglob("*.md"))


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code in a markdown text."""
    found = []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        prose = CODE_SPAN.sub("code", line)
        found += [(number, match.group(1)) for match in LINK.finditer(prose)]
        found += [(number, match.group(1)) for match in REFERENCE.finditer(prose)]
    return found


def resolve(page: Path, target: str, root: Path) -> Path | None:
    """The file a relative link names, or None for a link that is not a local file."""
    target = target.strip("<>")
    if not target or target.startswith("#") or SCHEME.match(target):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not path:
        return None
    return (root / path.lstrip("/")) if path.startswith("/") else (page.parent / path)


def check(root: Path) -> tuple[int, list[str]]:
    """How many local links the pages under ``root`` hold, and one line per broken one."""
    checked, broken = 0, []
    for page in pages(root):
        for number, target in links(page.read_text(encoding="utf-8")):
            path = resolve(page, target, root)
            if path is None:
                continue
            checked += 1
            if not path.exists():
                broken.append(f"{page.relative_to(root)}:{number}: {target}")
    return checked, broken


def test_every_relative_link_and_image_exists():
    checked, broken = check(REPO)
    assert checked > 50, f"only {checked} links found: is the checker reading the pages?"
    assert not broken, (f"{len(broken)} of {checked} relative links in README.md and docs/ "
                        "point at nothing:\n" + "\n".join(broken))


def test_the_checker_finds_every_broken_link_and_only_those(tmp_path):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "figure.png").write_bytes(b"")
    (tmp_path / "docs" / "page.md").write_text("# Page\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "See [the page](docs/page.md#page), ![a figure](docs/img/figure.png),\n"
        "[a site](https://example.com/x.md), [mail](mailto:a@b.c), [here](#top),\n"
        "[root](/docs/page.md) and [missing](docs/missing.md#part).\n"
        "```\n[not a link](docs/nowhere.md)\n```\n"
        "`[code](docs/nowhere.md)` and ![gone](docs/img/gone.png \"title\")\n",
        encoding="utf-8")
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "deep.md").write_text(
        "[up](../page.md), [`key[]`](../img/figure.png), [bad](../../nothing.md)\n"
        "[ref]: ../lost.md\n", encoding="utf-8")
    checked, broken = check(tmp_path)
    assert broken == ["README.md:3: docs/missing.md#part",
                      "README.md:7: docs/img/gone.png",
                      os.path.join("docs", "sub", "deep.md") + ":1: ../../nothing.md",
                      os.path.join("docs", "sub", "deep.md") + ":2: ../lost.md"]
    assert checked == 9

