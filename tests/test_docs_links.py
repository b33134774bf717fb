"""Every relative link and every #anchor of README.md, docs/*.md and benchmarks/README.md resolves.

Anchors follow GitHub's rule for headings: the heading's text (markup dropped), lowercased, every character but
letters, digits, '-', '_' and spaces dropped, spaces -> '-'; a repeated heading gets -1, -2, ... appended.
"""
import re
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]*)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks, inline code spans replaced by a placeholder."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a markdown text."""
    seen, out = {}, set()
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link in a heading: its text
        heading = re.sub(r"[`*]", "", heading)  # code and emphasis markers are markup, not text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """The links of one page that do not resolve, each as 'target: why'."""
    bad = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            bad.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
        elif anchor and file.suffix != ".md":
            lines = re.fullmatch(r"L(\d+)(?:-L(\d+))?", anchor)
            if not lines or int(lines.group(lines.lastindex)) > len(file.read_text().splitlines()):
                bad.append(f"{target}: #{anchor} is not a line range of {file.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_pages_do_link():  # a checker that finds no link would pass anything
    assert sum(len(LINK.findall(prose(page.read_text()))) for page in PAGES) >= 40


def test_the_anchor_rule_and_the_checker_catch_what_they_should(tmp_path):
    # GitHub's rule on headings of this README, and a repeated heading
    assert {"losses-equation--code", "etr-our-reading", "etr--elastic-trust-regions-a-reference-implementation"} <= \
        anchors((REPO / "README.md").read_text())
    assert anchors("# A (`b.py`)\n## A (`b.py`)\n```\n# not a heading\n```\n") == {"a-bpy", "a-bpy-1"}
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n")
    page.write_text("# Here\n[ok](#here) [ok](other.md#other-page) [`x`](other.md)\n"
                    "[bad](#there) [bad](other.md#nowhere) [bad](missing.md) ![bad](missing.png)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert [b.split(":")[0] for b in broken_links(page)] == ["#there", "other.md#nowhere", "missing.md",
                                                             "missing.png"]
