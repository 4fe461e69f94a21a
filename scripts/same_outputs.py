"""Do the Beam jobs of two commits write the same files? (A refactoring must not change a byte.)

    python scripts/same_outputs.py --base 9329a90 [--work /tmp/same-outputs]

Renders a small demo catalogue (FluidSynth; WAV, FLAC and MP3, plus one corrupt file), saves a
small Choi CNN run with random weights, checks out ``--base`` beside this tree (``git worktree``)
and, with each tree's own code, exports that run and runs ``tag``, ``extract_features``,
``auralise`` (``--spectrograms --tags``), ``make_tfrecords`` and ``correlation`` from the command
line. Then it compares every file the jobs wrote, byte for byte. Only what records the moment of a
run is left out: ``created`` in ``job.json`` and ``dataset.json``, the export's time
(``exported``) in ``job.json``, ``timings_seconds`` in the correlation's ``summary.json``. Each side
runs twice, as a control: files that differ between two runs of the same code are not reproducible,
whatever changed. Prints JSON; exits 0 if head is reproducible and every file is the same in base
and head except those that already differed between two runs of base.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE_RATE = 11025
#: What records the moment of a run (file name -> top-level keys left out of the comparison); in
#: job.json also the export's time (each side exports the same run itself).
VOLATILE = {"job.json": ("created",), "dataset.json": ("created",), "summary.json": ("timings_seconds",)}
EXPORT_TIME = "exported"


def _catalogue(folder: pathlib.Path) -> pathlib.Path:
    """The demo catalogue (3 tracks of 5 s per style) and a manifest with a corrupt file added."""
    from tfaural.datasets.demo import render_catalogue

    if not (folder / "manifest.csv").exists():
        render_catalogue(folder, tracks_per_style=3, seconds=5.0, sample_rate=22050, seed=3,
                         formats=("wav", "flac", "mp3"), progress=False)
        (folder / "audio" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
        with open(folder / "manifest.csv", "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(["audio/corrupt.wav", "corrupt", "rock", "train"])
    return folder / "manifest.csv"


def _run_dir(folder: pathlib.Path, labels: list[str]) -> pathlib.Path:
    """A small Choi CNN training run (random weights, seed 0) that each side exports with its own code."""
    if (folder / "run.json").exists():
        return folder
    import keras

    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import choi_cnn, config_from_model
    from tfaural.training.run import RunInfo, save_run

    keras.utils.set_random_seed(0)
    model = choi_cnn(n_outputs=len(labels), n_freq=257, n_frames=87, n_fft=512, hop_length=256, n_filters=8,
                     fc_units=(16,), sample_rate=SAMPLE_RATE, output_activation="sigmoid")
    info = RunInfo(model=config_from_model(model), labels=tuple(labels), task="multi-label",
                   audio=AudioConfig(sample_rate=SAMPLE_RATE), segment=SegmentConfig(length=256 * 86))
    save_run(folder, model, info)
    return folder


def _jobs(manifest: pathlib.Path, export: str, out: pathlib.Path) -> dict[str, list[str]]:
    common = [f"--manifest={manifest}", f"--model={export}"]
    return {
        "tag": ["beam_jobs.tag", *common, f"--output={out / 'tag'}"],
        "extract_features": ["beam_jobs.extract_features", *common, f"--output={out / 'extract_features'}"],
        "auralise": ["beam_jobs.auralise", *common, f"--output={out / 'auralise'}", "--layers=1,3,5",
                     "--features=0-3", "--clip-seconds=3", "--offset-seconds=1", "--spectrograms", "--tags=2"],
        "make_tfrecords": ["beam_jobs.make_tfrecords", f"--manifest={manifest}", f"--output={out / 'make_tfrecords'}",
                           f"--sample-rate={SAMPLE_RATE}"],
        "correlation": ["beam_jobs.correlation", f"--model={export}", f"--output={out / 'correlation'}",
                        "--timbres=sine,piano", "--chords=major,minor", "--keys=A3,G4", "--signal-seconds=2.5"],
    }


def _run(tree: pathlib.Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "TFAURAL_QUIET": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *argv], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: python -m {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _content(path: pathlib.Path) -> Any:
    volatile = VOLATILE.get(path.name)
    if volatile is None:
        return path.read_bytes()
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return data
    return {k: ({i: j for i, j in v.items() if i != EXPORT_TIME} if isinstance(v, dict) else v)
            for k, v in data.items() if k not in volatile}


def _compare(a: pathlib.Path, b: pathlib.Path) -> dict[str, Any]:
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    differ = sorted(name for name in files_a & files_b if _content(a / name) != _content(b / name))
    return {"files": len(files_a | files_b), "identical": len(files_a & files_b) - len(differ), "differ": differ,
            "only_base": sorted(files_a - files_b), "only_head": sorted(files_b - files_a)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare this tree with (e.g. 9329a90)")
    parser.add_argument("--only", nargs="*", help="run only these jobs (default: all five)")
    parser.add_argument("--work", default="/tmp/tfaural-same-outputs", help="scratch folder (kept, reused)")
    args = parser.parse_args(argv)
    work = pathlib.Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    manifest = _catalogue(work / "catalogue")
    with open(manifest, encoding="utf-8") as handle:
        labels = sorted({label for row in csv.DictReader(handle) for label in row["labels"].split(";") if label})
    run_dir = _run_dir(work / "run", labels)
    base = work / "base-tree"
    if base.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
        shutil.rmtree(base, ignore_errors=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                   capture_output=True)
    results: dict[str, Any] = {"base": args.base, "head": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                     capture_output=True, text=True).stdout.strip()),
        "jobs": {}}
    try:
        for side, tree in (("base", base), ("head", REPO), ("base-again", base), ("head-again", REPO)):
            out = work / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            # the same folder for every side: the jobs record the export's path
            shutil.rmtree(work / "export", ignore_errors=True)
            _run(tree, ["export", f"--run={run_dir}", f"--output={work / 'export'}", "--no-verify", "--quiet"])
            export = str(next((work / "export").glob("*/saved_model.pb")).parent)
            for job, job_argv in _jobs(manifest, export, out).items():
                if args.only and job not in args.only:
                    continue
                seconds = _run(tree, job_argv)
                results["jobs"].setdefault(job, {})[f"{side}_seconds"] = round(seconds, 1)
        for job in results["jobs"]:
            results["jobs"][job].update(_compare(work / "out-base" / job, work / "out-head" / job))
            # The control: the base run twice. A file that differs there is not reproducible even unchanged.
            control = _compare(work / "out-base" / job, work / "out-base-again" / job)
            results["jobs"][job]["differ_between_two_base_runs"] = control["differ"]
            again = _compare(work / "out-head" / job, work / "out-head-again" / job)
            results["jobs"][job]["differ_between_two_head_runs"] = again["differ"]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    jobs = results["jobs"].values()
    results["byte_identical"] = all(not (r["differ"] or r["only_base"] or r["only_head"]) for r in jobs)
    results["identical_where_base_is_reproducible"] = all(
        not (set(r["differ"]) - set(r["differ_between_two_base_runs"]) or r["only_base"] or r["only_head"])
        for r in jobs)
    results["head_reproducible"] = all(not r["differ_between_two_head_runs"] for r in jobs)
    print(json.dumps(results, indent=1))
    return 0 if results["identical_where_base_is_reproducible"] and results["head_reproducible"] else 1


if __name__ == "__main__":
    sys.exit(main())
