"""The README's equation <-> code table links to line ranges; check each still lands on what it names."""
import re

from conftest import REPO

LINK = re.compile(r"\[`(\w+)`[^\]]*\]\((\w+\.py)#L(\d+)-L(\d+)\)")


def test_readme_line_links_land_on_the_named_code():
    links = LINK.findall((REPO / "README.md").read_text())
    assert len(links) >= 10
    for name, path, start, end in links:
        lines = (REPO / path).read_text().splitlines()
        start, end = int(start), int(end)
        assert start <= end <= len(lines), (name, start, end)
        head = lines[start - 1]
        assert head.startswith((f"def {name}(", f"{name} = ")), f"{path}#L{start} is {head!r}, not {name}"
        # the range must not run into the next top-level definition
        inside = lines[start:end]
        assert not any(re.match(r"(def |class |@)", line) for line in inside), f"{name}: range too long"
        following = lines[end:end + 1]
        assert not following or not following[0].startswith("    "), f"{name}: range ends inside the function"
