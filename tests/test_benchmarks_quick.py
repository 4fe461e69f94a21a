"""``python -m benchmarks --quick``: the whole suite runs (smoke mode: it checks that it runs, not the speed)."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from beam_jobs import tf_runtime
from tfaural import cpu

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent


# 17 entries then (19 now), 7 to 97 s each in smoke mode (9.5 min one at a time on a busy 2-core machine,
# 2026-12-01); two at a time (--jobs 2), since most of each entry is single-threaded start-up: 3.2 min alone,
# 5.6 min beside the other pytest worker of make test. With 20 entries, 10.4 min beside it on a 2-core AVX2-only
# AMD EPYC (2026-12-06); 5.0 min alone there after eight smoke runs were made smaller (the same day). The limits
# leave room for a machine many times slower.
@pytest.mark.timeout(5400)
def test_quick_suite_runs_every_benchmark(tmp_path: pathlib.Path) -> None:
    from benchmarks.__main__ import BENCHMARKS

    results, markdown = tmp_path / "results.json", tmp_path / "RESULTS.md"
    # As from a shell without any oneDNN or thread setting (tests/conftest.py made them in this process).
    shell = {k: v for k, v in os.environ.items()
             if k not in (cpu.ONEDNN_VARIABLE, cpu.CHOSEN_VARIABLE, *tf_runtime.THREAD_VARIABLES)}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--jobs", "2", "--output", str(results),
                           "--markdown", str(markdown)], cwd=ROOT, capture_output=True, text=True, timeout=5100,
                          env=shell)
    report = json.loads(results.read_text())
    errors = {name: r.get("error") for name, r in report["results"].items() if "error" in r}
    assert done.returncode == 0 and not errors, (errors, done.stdout[-3000:], done.stderr[-3000:])
    assert set(report["results"]) == {name for name, *_ in BENCHMARKS}
    # Each entry's own work, counted apart from the entry run beside it: at least its TensorFlow import.
    assert all(r["cpu_seconds"] >= 1.0 for r in report["results"].values()), {
        name: r["cpu_seconds"] for name, r in report["results"].items()}
    assert report["quick"] is True and report["machine"]["cores"] >= 1
    measured = [row for row in report["targets"] if row["figure"] is not None]
    assert len(measured) >= 10  # every issue target has a figure, even in smoke mode
    table = markdown.read_text()
    assert "| target | measured | goal | met |" in table and "## Machine" in table
    # Every entry's own TensorFlow work ran the kernels tfaural's command lines run (benchmarks/_kernels.py), as
    # the report says; musicnn ran TensorFlow's default, as its users run it.
    peer = report["results"]["peer_musicnn"]["onednn"]
    assert peer["tfaural_and_model_only"] == report["machine"]["onednn"] and "TensorFlow's default" in peer["musicnn"]
    kernels = {name: _onednn_states(r) for name, r in report["results"].items()}  # (musicnn's state: not an "onednn")
    assert sum(map(bool, kernels.values())) >= 10, kernels
    assert set().union(*kernels.values()) == {report["machine"]["onednn"]}, kernels

    # --update keeps the entries not named (with their dates) from the report; --add records an entry's JSON as its
    # script printed it when run on its own (here: ceilings' own output again, nothing re-run).
    before = report["results"]
    printed = tmp_path / "ceilings.json"
    printed.write_text("a line of log\n" + json.dumps({k: v for k, v in before["ceilings"].items()
                                                        if k not in ("measured_at", "load_average_at_start")}))
    os.utime(printed, (2e9, 2e9))  # 2033: later than the smoke run
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--update", "--only", "ceilings",
                           "--add", f"ceilings={printed}", "--note", "smoke", "--output", str(results),
                           "--markdown", str(markdown)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(results.read_text())
    assert after["updated"] == ["ceilings"] and after["notes"] == ["smoke"]
    assert list(after["results"]) == [name for name, *_ in BENCHMARKS]
    assert all(after["results"][name] == before[name] for name in before if name != "ceilings")
    added = after["results"]["ceilings"]
    assert added["measured_at"].startswith("2033-05-18") and added["measured_at"] > before["ceilings"]["measured_at"]
    assert added["run_on_its_own"].startswith(str(printed)) and "load_average_at_start" not in added
    assert {k: v for k, v in added.items() if k not in ("measured_at", "run_on_its_own")} == json.loads(
        printed.read_text().splitlines()[-1])
    assert "[benchmarks] ceilings" not in done.stdout  # nothing ran
    assert "updated then: ceilings" in markdown.read_text()


def test_an_entrys_cpu_seconds_are_its_processes_and_a_late_one_is_killed(tmp_path: pathlib.Path) -> None:
    """``cpu_seconds`` counts the entry's process and the processes it waited for (here a child that spins
    for 0.4 s of CPU, measured by itself), not this process's other children; a run past its timeout is killed
    and reported as such, without waiting for its end."""
    from benchmarks.__main__ import _run_counting_cpu

    def spin(seconds: float) -> str:
        return (f"import time\nstart = time.process_time()\nwhile time.process_time() - start < {seconds}: pass\n"
                "print(time.process_time())")

    parent = (f"import subprocess, sys\ndone = subprocess.run([sys.executable, '-c', {spin(0.4)!r}], "
              "capture_output=True, text=True)\nprint('child', done.stdout.strip())\n"
              "print('to stderr', file=sys.stderr)")
    beside = subprocess.Popen([sys.executable, "-c", spin(2.0)], stdout=subprocess.DEVNULL)  # not the entry's
    done = _run_counting_cpu([sys.executable, "-c", parent], timeout=120, env=dict(os.environ))
    beside.wait()
    assert done.returncode == 0 and not done.timed_out and done.stderr.strip() == "to stderr", done
    spun = float(done.stdout.split()[-1])
    # the two interpreters' start-up on top of the spin, far less than the 2 s spun beside
    assert spun >= 0.4 and spun <= done.cpu_seconds < spun + 1.5, (spun, done.cpu_seconds)

    start = time.monotonic()
    late = _run_counting_cpu([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(600)"],
                             timeout=1.0, env=dict(os.environ))
    assert late.timed_out and late.returncode == -9 and late.stdout == "started\n"
    assert time.monotonic() - start < 60


def _onednn_states(result: object) -> set[str]:
    """Every ``onednn`` state an entry's JSON reports (its ``environment``'s and its own)."""
    if isinstance(result, dict):
        return set().union(*(({value} if key == "onednn" and isinstance(value, str) else _onednn_states(value))
                             for key, value in result.items()))
    if isinstance(result, list):
        return set().union(*map(_onednn_states, result))
    return set()


# The scripts whose own process runs TensorFlow (imported at module level, or through these helpers).
_TENSORFLOW_MODULES = {"tensorflow", "keras", "_timing", "explicit_walk", "deconvnet_mtt_vgg", "ceilings"}
_CHOOSERS = {"_kernels", "_jobs"}


def test_every_entry_chooses_the_command_lines_kernels_before_tensorflow() -> None:
    """A benchmark times what tfaural runs: its script imports ``_kernels`` (or ``_jobs``, which makes the same
    choice) before anything that imports TensorFlow, so that it runs the kernels tfaural's command lines run on
    this CPU (``tfaural.cpu.prefer_onednn``) whether it runs alone or under ``python -m benchmarks``."""
    from benchmarks.__main__ import BENCHMARKS

    for script in sorted({script for _, script, *_ in BENCHMARKS}):
        tree = ast.parse((ROOT / "benchmarks" / script).read_text())
        order = [alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
                 for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in (node.names if isinstance(node, ast.Import) else node.names[:1])]
        first_tf = next((i for i, name in enumerate(order) if name in _TENSORFLOW_MODULES), None)
        if script == "onednn.py":  # each setting in a child process of its own, set explicitly
            assert first_tf is None, order
            continue
        chooser = next((i for i, name in enumerate(order) if name in _CHOOSERS), None)
        assert chooser is not None, f"{script} imports neither _kernels nor _jobs"
        assert first_tf is None or chooser < first_tf, f"{script}: {order}"


def test_the_markdown_goes_beside_its_report_and_lists_only_measured_targets(tmp_path: pathlib.Path) -> None:
    from benchmarks.__main__ import markdown_path, targets, write_markdown

    assert markdown_path("benchmarks/results.json") == os.path.join("benchmarks", "RESULTS.md")
    assert markdown_path("/x/results_amd_zen5.json") == "/x/RESULTS_amd_zen5.md"
    assert markdown_path("/x/peer.json") == "/x/peer.md"
    # A report of one entry (--only into a new file): the targets of the entries not run are counted, not listed.
    results = {"bf16": {"speedup": {"MTT_vgg": 1.5}, "max_abs_score_change": {"MTT_vgg": 0.002},
                        "cpu_has_avx512_bf16": True},
               "serving": {"error": "exit status 1"}}
    rows = targets(results)
    report = {"quick": False, "created": "2026-12-04", "machine": {"cores": 2}, "results": results, "targets": rows}
    write_markdown(report, str(tmp_path / "RESULTS_x.md"), json_path=str(tmp_path / "results_x.json"))
    table = (tmp_path / "RESULTS_x.md").read_text()
    assert "| bfloat16 / float32 speed-up, MTT_vgg (CPU AVX512_BF16: True) | 1.5 |" in table
    assert "| ... largest score change, MTT_vgg | 0.002 | <= 1e-3 | **no** |" in table
    assert "| None |" not in table
    unmeasured = sum(row["figure"] is None for row in rows)
    assert unmeasured > 10 and f"{unmeasured} other target(s) have no figure in this report: their entries were " \
        "not run or failed (serving)." in table
