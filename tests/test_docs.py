"""docs/results.md is generated (issue 18, item 7): its tables are `wpcompare show` of the
saved results in docs/results/data/, never pasted. The committed file must be exactly what
scripts/render_results.py writes, so a hand edit, a stale table or a data file changed
without rendering again fails here; and every relative link in README.md and docs/ must
lead to a file and heading that exist."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RENDERER = ROOT / "scripts" / "render_results.py"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_results_md_is_what_the_renderer_writes(tmp_path):
    rendered = tmp_path / "results.md"
    completed = subprocess.run([sys.executable, str(RENDERER), "--output", str(rendered)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    committed = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    expected = rendered.read_text(encoding="utf-8")
    if committed != expected:
        first = next(number for number, (a, b) in
                     enumerate(zip(committed.splitlines() + [""], expected.splitlines() + [""]), 1) if a != b)
        pytest.fail(f"docs/results.md differs from the renderer's output from line {first}: edit "
                    "docs/results.md.in and run `python scripts/render_results.py`, never results.md")
    assert "<!-- wpcompare show" in expected and "verdict:" in expected   # the markers were rendered


def _anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, blanks as -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path):
    return {_anchor(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("document", ["README.md", "docs/results.md.in", "docs/columns.md",
                                      "docs/result-files.md"])
def test_relative_links_lead_somewhere(document):
    source = ROOT / document
    broken = []
    for target in LINK.findall(source.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue        # http(s), mailto: not checked offline
        file_part, _, fragment = target.partition("#")
        path = (source.parent / file_part).resolve() if file_part else source
        if not path.exists():
            broken.append(f"{target}: no {path.relative_to(ROOT)}")
        elif fragment and path.suffix in (".md", ".in") and fragment not in _anchors(
                path.with_suffix(".md.in") if path.name == "results.md" else path):
            broken.append(f"{target}: no heading #{fragment}")
    assert not broken, f"{document}: " + "; ".join(broken)
