"""``python -m benchmarks --quick``: the whole suite runs (smoke mode: it checks that it runs, not the speed)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent


# 17 entries, 7 to 97 s each in smoke mode (9.5 min one at a time on a busy 2-core machine, 2026-12-01); two at
# a time (--jobs 2), since most of each entry is single-threaded start-up: 3.2 min alone, 5.6 min beside the
# other pytest worker of make test. The limits leave room for a machine many times slower.
@pytest.mark.timeout(5400)
def test_quick_suite_runs_every_benchmark(tmp_path: pathlib.Path) -> None:
    from benchmarks.__main__ import BENCHMARKS

    results, markdown = tmp_path / "results.json", tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--jobs", "2", "--output", str(results),
                           "--markdown", str(markdown)], cwd=ROOT, capture_output=True, text=True, timeout=5100)
    report = json.loads(results.read_text())
    errors = {name: r.get("error") for name, r in report["results"].items() if "error" in r}
    assert done.returncode == 0 and not errors, (errors, done.stdout[-3000:], done.stderr[-3000:])
    assert set(report["results"]) == {name for name, *_ in BENCHMARKS}
    assert report["quick"] is True and report["machine"]["cores"] >= 1
    measured = [row for row in report["targets"] if row["figure"] is not None]
    assert len(measured) >= 10  # every issue target has a figure, even in smoke mode
    table = markdown.read_text()
    assert "| target | measured | goal | met |" in table and "## Machine" in table

    # --update re-measures the named entries only and keeps the others (with their dates) from the report.
    before = report["results"]
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--update", "--only", "ceilings",
                           "--note", "smoke", "--output", str(results), "--markdown", str(markdown)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(results.read_text())
    assert after["updated"] == ["ceilings"] and after["notes"] == ["smoke"]
    assert list(after["results"]) == [name for name, *_ in BENCHMARKS]
    assert all(after["results"][name] == before[name] for name in before if name != "ceilings")
    assert after["results"]["ceilings"]["measured_at"] > before["ceilings"]["measured_at"]
    assert "load_average_at_start" in after["results"]["ceilings"] and "updated then: ceilings" in (
        markdown.read_text())
