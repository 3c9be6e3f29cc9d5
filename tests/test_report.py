"""BENCHMARKS.md and the README's results blocks equal what benchmarks/report.py builds from the committed results."""

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import report  # noqa: E402


def test_benchmarks_md_is_generated_from_the_committed_results():
    assert (REPO / "BENCHMARKS.md").read_text() == report.build(), \
        "BENCHMARKS.md is stale or edited by hand: run python benchmarks/report.py"


def test_readme_results_blocks_are_generated_from_the_committed_results():
    doc = (REPO / "README.md").read_text()
    for name in report.README_BLOCKS:
        assert report.readme_markers(name)[0] in doc, f"README.md has no generated {name!r} block"
    assert report.render_readme(doc) == doc, "README.md's results blocks are stale: run python benchmarks/report.py"


def test_every_result_file_a_section_reads_is_committed():
    names = {n for files in report.FILES.values() for n in files if n}
    missing = sorted(n for n in names if not (report.RESULTS / n).exists())
    assert not missing, f"result files missing from benchmarks/results: {missing}"


def test_a_changed_figure_is_caught(tmp_path):
    """Change one number in one result file: the generated document changes with it."""
    for name in {n for files in report.FILES.values() for n in files if n}:
        shutil.copy(report.RESULTS / name, tmp_path / name)
    d = json.loads((tmp_path / "forecast_defaults.json").read_text())
    run = next(r for r in d["runs"] if r["model"] == "odernn")
    run["test"]["mse"] *= 2
    (tmp_path / "forecast_defaults.json").write_text(json.dumps(d))
    assert report.build(report.Results(tmp_path)) != report.build()
    doc = (REPO / "README.md").read_text()
    assert report.render_readme(doc, report.Results(tmp_path)) != doc


def test_a_missing_result_file_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="forecast_defaults.json"):
        report.physionet_forecast(report.Results(tmp_path))


def test_check_fails_on_a_hand_edit(tmp_path):
    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    bench.write_text(report.build().replace("| latentode, defaults |", "| latentode, defaults (edited) |", 1))
    readme.write_text((REPO / "README.md").read_text())
    assert report.main(["--check", "--benchmarks", str(bench), "--readme", str(readme)]) == 1
    bench.write_text(report.build())
    assert report.main(["--check", "--benchmarks", str(bench), "--readme", str(readme)]) == 0
