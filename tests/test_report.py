"""BENCHMARKS.md's generated sections equal what benchmarks/report.py builds from the committed results."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import report  # noqa: E402


def test_benchmarks_md_matches_its_results():
    doc = (REPO / "BENCHMARKS.md").read_text()
    for name in report.SECTIONS:
        assert report.markers(name)[0] in doc, f"BENCHMARKS.md has no generated {name!r} section"
    assert report.render(doc) == doc, "BENCHMARKS.md is stale: run python benchmarks/report.py"


def test_a_changed_figure_is_caught(tmp_path):
    doc = (REPO / "BENCHMARKS.md").read_text()
    begin, _ = report.markers("scaling")
    head, rest = doc.split(begin, 1)
    tampered = head + begin + rest.replace("|", "| 9 |", 1)
    assert report.render(tampered) != tampered
