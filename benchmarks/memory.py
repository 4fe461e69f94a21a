"""Peak memory of ``beam_jobs.extract_features`` on one long file: 1, 10 and 60 minutes of music.

Prints one JSON object. Target (issue 10): feature extraction of a single 1-hour file stays
under 2 GiB peak RSS, because the job decodes block by block and sends the track to the model
in chunks of whole segments (``--chunk-seconds``, 30 s by default) instead of one tensor; the
peaks for 1, 10 and 60 minutes show whether memory grows with the track's length.

* **Input**: a generated 44.1 kHz stereo 16-bit FLAC per duration (chords of harmonic tones,
  a noisy beat and a noise floor, written block by block with soundfile).
* **Model**: the 3^9-SampleCNN of Lee et al. 2018 (random weights, 50 labels, 22,050 Hz), the
  export ``benchmarks/beam_tag.py`` uses. The job sends it at most ``--chunk-seconds`` (30 s: 11
  segments) of audio per call; its activations take ~26 MiB per segment.
* **Job**: ``python -m beam_jobs.extract_features --input FILE --model EXPORT --output DIR
  --format npz`` in a fresh process per file and runner: ``default`` (no ``--runner``, what a
  user gets: the DirectRunner in multi-processing mode, one SDK worker process for one track)
  and ``in_process`` (``--runner=DirectRunner``: the pipeline in one process); in both the model
  runs in a process of its own (``beam_jobs.model_process``). Every process of the job's tree
  (launcher, SDK workers, the model process) is watched: ``sum_of_process_peaks_mib``
  adds up each process's own peak (``VmHWM``, kept by the kernel; a forked worker counts from
  its ``exec``), an upper bound of the tree's peak that no polling can miss, and is what
  ``peak_rss_mib_by_minutes`` and ``meets_2gib_at_60min`` (of the first runner measured) use;
  ``peak_rss_mib`` / ``peak_pss_mib`` are the largest sums of resident / proportional set sizes
  seen (polled every 50 ms).
* **Baselines**: a fresh process that imports TensorFlow, and one that also loads the export
  (no audio, no Beam): what any TensorFlow program holding this model needs.

Each run checks that the whole file was analysed (``num_segments`` of the output equals the
number of whole segments of the file). Timings are wall time of the job's process, start-up
(workers, TensorFlow import, model load) included, and ``x_real_time`` is audio seconds per
wall second.

``--quick`` is a smoke run: a tiny SampleCNN, one 1-minute file, the ``default`` runner only, and
the baseline that loads the export only (it runs the same code as the one that only imports
TensorFlow): ``baselines.import_tensorflow_mib`` and ``growth_mib_per_hour_of_audio`` (which needs
a second length) are ``null``.

Usage:
    python benchmarks/memory.py [--quick] [--minutes 1 10 60] [--runners default in_process] [--export-dir DIR]
        [--keep DIR]
    python benchmarks/memory.py --make-tfrecords [--quick] [--keep DIR]
    python benchmarks/memory.py --auralise [--quick] [--families choi samplecnn_3_9 musicnn_vgg musicnn]
        [--repeats 3] [--serving-only] [--keep DIR]

``--make-tfrecords`` measures ``beam_jobs.make_tfrecords`` instead (issue 17; see
:func:`make_tfrecords_memory`): peak RSS of the job's process tree on one 1-hour and one
6-hour file, for segments as the issue ran it (``--segment-length 44100
--max-segments 10``), for every segment of the track (``--segment-length 59049``) and
for one whole-track record (``--quick``: 0.5 and 2 minutes, whole-track records only).
Target: the longer file within 10 % of the shorter one.

**Worst-case auralise** (``--auralise``, issue 17; :func:`run_auralise`): the largest call an
export's budgets allow (``export/budget.py``), per exported family -- the Choi CNN of the paper
(11,025 Hz, 64 maps per layer), the 3^9-SampleCNN (22,050 Hz) and musicnn's vgg tagger (MTT_vgg's
shape: 16 kHz log-mel, 128 maps per layer; the imported pretrained taggers), random weights, default
budgets: one clip of the family's ``max_deconv_seconds`` (Choi 20 s, SampleCNN 15 s, musicnn's vgg 15 s,
its musicnn architecture 9 s) and as many features as ``max_deconv_feature_samples`` allows (64; SampleCNN
32) at the deepest layer and at the first layer, and (``short``) one model segment with as many features as
the budget allows at the deepest layer (up to the layer's width: the call whose chunks hold the most
features; with its former chunks, the musicnn architecture's short calls peaked higher than its longest
clip's), mode ``phase``, sent to the
SavedModel's ``auralise`` signature in a fresh process that loads the export
with ``tf.saved_model.load`` (as TF Serving or a Beam worker would). Its peak RSS (``VmHWM``) is
compared with the 2 GiB target, next to a baseline process that loads the export and makes the
smallest call (one feature of one segment). The same process checks that one feature more is
refused with ``InvalidArgumentError`` before any work (not for a ``short`` call that already holds every
feature of the layer). Each large call runs in ``--repeats`` fresh
processes (default 3) and the worst peak counts: with TensorFlow's oneDNN ops on (Intel CPUs with
AVX512_VNNI or AVX512_BF16, ``docs/serving.md``) the same call's peak has varied by ~20 % between
processes. The same exports' **largest ``serving_default`` call** (``serving``: as many inputs of the longest
allowed length, ``max_samples``, as ``max_request_samples`` holds: two of 600 s by default) runs in
``--repeats`` fresh processes too, with its peak against the same 2 GiB (``serving_meets_2gib``), and one
input more must be refused. ``--quick`` exports one small Choi CNN (16 maps
per layer) with a 4-s limit, 16 features per call, inputs of up to 8 s and 16 s per request, and only the
``serving_default`` and ``auralise`` signatures, and measures the deepest layer's largest and short
calls only (a smoke test of the machinery, not the target); a family whose segment is as long as that
limit (the Choi CNN's 4 s) has a ``short`` call identical to its largest one, which is then left out
(the figures of ``calls.short`` are ``null``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import numpy as np
import psutil
import soundfile as sf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

SOURCE_RATE = 44100
MODEL_RATE = 22050
MINUTES = (1.0, 10.0, 60.0)
QUICK_MINUTES = (1.0,)
TARGET_MIB = 2048.0
POLL_SECONDS = 0.05
MIB = 1024.0 * 1024.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny SampleCNN on one file of "
                             f"{', '.join(f'{m:g}' for m in QUICK_MINUTES)} min, the default runner and the "
                             "baseline that loads the export only: a smoke test (< 1 min)")
    parser.add_argument("--minutes", type=float, nargs="+", default=None,
                        help=f"durations to measure (default {' '.join(f'{m:g}' for m in MINUTES)})")
    parser.add_argument("--runners", nargs="+", choices=("default", "in_process"), default=None,
                        help="how to run the job: 'default' (no --runner: multi-processing DirectRunner) and/or "
                             "'in_process' (--runner=DirectRunner); default both, quick only 'default'")
    parser.add_argument("--export-dir", default=None,
                        help="reuse this export version directory instead of exporting a fresh 3^9-SampleCNN")
    parser.add_argument("--keep", default=None, help="keep the audio, export and outputs in this folder")
    parser.add_argument("--make-tfrecords", action="store_true",
                        help="measure beam_jobs.make_tfrecords on a 1-h and a 6-h file instead (--quick: 0.5 and 2 "
                             "min)")
    parser.add_argument("--auralise", action="store_true",
                        help="measure the worst-case auralise call of each exported family instead (issue 17)")
    parser.add_argument("--families", nargs="+", choices=AURALISE_FAMILIES, default=None,
                        help="with --auralise: the families to measure (default all; --quick: choi)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"with --auralise: fresh processes per large call, the worst peak counts (default "
                             f"{AURALISE_REPEATS}; --quick: 1)")
    parser.add_argument("--serving-only", action="store_true",
                        help="with --auralise: measure the largest serving_default call (and the baseline) only")
    args = parser.parse_args(argv)
    if args.serving_only and not args.auralise:
        parser.error("--serving-only goes with --auralise")
    return args


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------


def _bars(rng: np.random.Generator, *, count: int, seconds: float) -> list[np.ndarray]:
    """``count`` stereo bars ``[samples, 2]``: a chord of three harmonic tones and a noisy beat."""
    n = int(round(seconds * SOURCE_RATE))
    t = (np.arange(n) / SOURCE_RATE).astype(np.float32)
    bars = []
    for _ in range(count):
        y = np.zeros((n, 2), np.float32)
        for f0 in 110.0 * 2 ** (rng.integers(0, 24, 3) / 12):
            tone = sum(np.sin(np.float32(2 * np.pi * f0 * k) * t) / k for k in (1, 2, 3))
            y += (0.07 * tone)[:, None] * rng.uniform(0.5, 1.0, 2).astype(np.float32)
        beat = (np.sin(np.float32(2 * np.pi * 2.0) * t) > 0.9).astype(np.float32)
        y += (0.08 * beat * rng.standard_normal(n).astype(np.float32))[:, None]
        bars.append(y)
    return bars


def write_music(path: Path, minutes: float, *, seed: int = 2018, block_seconds: float = 2.0) -> int:
    """Writes ``minutes`` of 44.1 kHz stereo 16-bit FLAC block by block; returns its frames per channel.

    The file is a sequence of 2-s bars drawn from a dozen chords (each with its own beat) plus
    fresh noise, so FLAC compresses it like music rather than like silence or white noise.
    """
    rng = np.random.default_rng(seed)
    bars = _bars(rng, count=12, seconds=block_seconds)
    total = int(round(minutes * 60 * SOURCE_RATE))
    written = 0
    with sf.SoundFile(path, "w", samplerate=SOURCE_RATE, channels=2, subtype="PCM_16", format="FLAC") as out:
        while written < total:
            bar = bars[int(rng.integers(len(bars)))][: total - written]
            noise = rng.standard_normal(bar.shape, np.float32) * np.float32(0.01)
            out.write(np.clip(bar + noise, -0.99, 0.99))
            written += len(bar)
    return written


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------


def _pss_bytes(pid: int) -> int:
    """A process's proportional set size (shared pages split between their users), or 0."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _peak_rss_bytes(pid: int) -> int | None:
    """A process's own peak resident set (``VmHWM`` of ``/proc/PID/status``), or ``None``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _describe(process: psutil.Process) -> str:
    """What a process of the job's tree is, from its command line."""
    try:
        args = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    text = " ".join(args)
    for marker, role in (("beam_jobs.model_process", "model process (python -m beam_jobs.model_process)"),
                         ("beam_jobs.", "launcher (python -m beam_jobs...)"), ("sdk_worker", "Beam SDK worker"),
                         ("multiprocessing", "multiprocessing child"), ("-c", "python -c")):
        if marker in text:
            return role
    return " ".join(os.path.basename(a) for a in args[:3])[:80]


def measure(command: list[str], *, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Runs ``command`` and watches its whole process tree until it exits.

    A process that is forked and then executes another program (a worker started with
    ``subprocess``) is counted from its ``exec`` on: before it, it shares its parent's pages.

    Returns:
        ``seconds`` (wall), ``peak_rss_mib`` (largest sum of the tree's resident sets seen),
        ``peak_pss_mib`` (the same with proportional set sizes: shared pages counted once),
        ``sum_of_process_peaks_mib`` and ``largest_process_peak_mib`` (each process's ``VmHWM``),
        ``processes`` (how many were seen), ``returncode`` and the tail of stderr.
    """
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        root = psutil.Process(proc.pid)
        peaks: dict[int, int] = {}
        names: dict[int, str] = {}
        images: dict[int, tuple[str, ...]] = {}
        tree_peak = pss_peak = 0
        while proc.poll() is None:
            if time.perf_counter() - start > timeout:
                for child in root.children(recursive=True):
                    child.kill()
                proc.kill()
                raise RuntimeError(f"{command[:4]} timed out after {timeout:.0f} s")
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = pss = 0
            for process in processes:
                try:
                    if process.status() == psutil.STATUS_ZOMBIE:  # exited: its peak is already recorded
                        continue
                    total += process.memory_info().rss
                    image = tuple(process.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss += _pss_bytes(process.pid)
                if image and images.get(process.pid) != image:  # new process, or it executed another program
                    images[process.pid] = image
                    names[process.pid] = _describe(process)
                    peaks[process.pid] = 0
                hwm = _peak_rss_bytes(process.pid)
                if hwm is not None:
                    peaks[process.pid] = max(peaks.get(process.pid, 0), hwm)
            tree_peak = max(tree_peak, total)
            pss_peak = max(pss_peak, pss)
            time.sleep(POLL_SECONDS)
        proc.wait()
        seconds = time.perf_counter() - start
        errors.seek(0)
        stderr = errors.read()
    return {
        "seconds": seconds,
        "peak_rss_mib": tree_peak / MIB,
        "peak_pss_mib": pss_peak / MIB,
        "sum_of_process_peaks_mib": sum(peaks.values()) / MIB,
        "largest_process_peak_mib": max(peaks.values(), default=0) / MIB,
        "processes": len(peaks),
        "per_process_peak_mib": sorted(([names.get(pid, "?"), round(peak / MIB, 1)] for pid, peak in peaks.items()),
                                       key=lambda item: -item[1]),
        "returncode": proc.returncode,
        "stderr_tail": stderr[-2000:],
    }


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


_BASELINE = """
import sys
import tensorflow as tf
if sys.argv[1] != "-":
    tf.saved_model.load(sys.argv[1])
"""


def baseline(export_dir: str | None) -> float:
    """Peak RSS (MiB) of a fresh process that imports TensorFlow (and loads the export if given)."""
    result = measure([sys.executable, "-c", _BASELINE, export_dir or "-"], env=_env(), timeout=300)
    if result["returncode"] != 0:
        raise RuntimeError(f"the baseline process failed: {result['stderr_tail']}")
    return float(result["largest_process_peak_mib"])


RUNNERS = {
    "default": ("python -m beam_jobs.extract_features without --runner: DirectRunner, multi_processing, one worker "
                "process per core but at most one per track (1 here); the model loads in a process of its own"),
    "in_process": "--runner=DirectRunner: the in-process DirectRunner (FnApiRunner), the pipeline in one process",
}


def extract(path: Path, export_dir: str, output: Path, *, runner: str, timeout: float) -> dict[str, Any]:
    """Runs the job on one file in a fresh process; checks that the whole file was analysed."""
    command = [sys.executable, "-m", "beam_jobs.extract_features", f"--input={path}", f"--model={export_dir}",
               f"--output={output}", "--format=npz"]
    if runner == "in_process":
        command.append("--runner=DirectRunner")
    result = measure(command, env=_env(), timeout=timeout)
    if result["returncode"] != 0:
        raise RuntimeError(f"extract_features failed on {path}: {result['stderr_tail']}")
    rows = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    if [row["status"] for row in rows] != ["ok"]:
        raise RuntimeError(f"extract_features did not process {path}: {rows}")
    with np.load(output / "features-00000-of-00001.npz") as shard:
        result["num_segments"] = int(shard["num_segments"][0])
        result["seconds_analysed"] = float(shard["seconds"][0])
    job = json.loads((output / "job.json").read_text())
    result["chunk_seconds"] = job["chunk_seconds"]
    result["chunk_segments"] = job["chunk_segments"]
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Peaks by duration, growth per hour of audio, and the verdict at 60 minutes."""
    longest = max(runs, key=lambda r: r["minutes"])
    shortest = min(runs, key=lambda r: r["minutes"])
    span_hours = (longest["audio_seconds"] - shortest["audio_seconds"]) / 3600
    hour = next((r for r in runs if r["minutes"] == 60), None)
    return {
        "peak_rss_mib_by_minutes": {f"{r['minutes']:g}": round(r["sum_of_process_peaks_mib"], 1) for r in runs},
        "growth_mib_per_hour_of_audio": (
            None if span_hours <= 0 else
            round((longest["sum_of_process_peaks_mib"] - shortest["sum_of_process_peaks_mib"]) / span_hours, 1)),
        "meets_2gib_at_60min": None if hour is None else hour["sum_of_process_peaks_mib"] < TARGET_MIB,
    }


def run(*, quick: bool = False, minutes: list[float] | None = None, runners: list[str] | None = None,
        export_dir: str | None = None, keep: str | None = None) -> dict[str, Any]:
    """Generates the files, measures the baselines and the job per file and runner; returns the results."""
    from beam_tag import TINY, export_samplecnn

    durations = list(minutes or (QUICK_MINUTES if quick else MINUTES))
    modes = list(runners or (["default"] if quick else list(RUNNERS)))
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        export_dir = export_dir or export_samplecnn(str(root / "export"), **(TINY if quick else {}))
        export_seconds = time.perf_counter() - start
        segment = int(json.loads((Path(export_dir) / "assets" / "metadata.json").read_text())["segment_length"])
        # A smoke run measures the baseline that loads the export only: the other runs the same code.
        baselines = {"import_tensorflow_mib": None if quick else baseline(None),
                     "import_tensorflow_load_export_mib": baseline(export_dir)}
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        chunk: dict[str, Any] = {}
        for index, length in enumerate(durations):
            path = root / f"music-{length:g}min.flac"
            start = time.perf_counter()
            frames = write_music(path, length, seed=2018 + index)
            generate_seconds = time.perf_counter() - start
            expected = (frames * MODEL_RATE // SOURCE_RATE) // segment
            audio_seconds = frames / SOURCE_RATE
            for mode in modes:
                result = extract(path, export_dir, root / f"features-{mode}-{length:g}min", runner=mode,
                                 timeout=max(600.0, 10 * 60 * length))
                if result["num_segments"] != expected:
                    raise RuntimeError(f"{path}: {result['num_segments']} segments analysed, expected {expected}")
                chunk = {"chunk_seconds": result["chunk_seconds"], "chunk_segments": result["chunk_segments"]}
                runs[mode].append({
                    "minutes": length,
                    "audio_seconds": audio_seconds,
                    "file_mib": path.stat().st_size / MIB,
                    "decoded_mono_at_model_rate_mib": frames * MODEL_RATE / SOURCE_RATE * 4 / MIB,
                    "sum_of_process_peaks_mib": result["sum_of_process_peaks_mib"],
                    "peak_rss_mib": result["peak_rss_mib"],
                    "peak_pss_mib": result["peak_pss_mib"],
                    "largest_process_peak_mib": result["largest_process_peak_mib"],
                    "per_process_peak_mib": result["per_process_peak_mib"],
                    "seconds": result["seconds"],
                    "x_real_time": audio_seconds / result["seconds"],
                    "num_segments": result["num_segments"],
                    "seconds_analysed": result["seconds_analysed"],
                    "generate_seconds": generate_seconds,
                })
            path.unlink()  # the files are large; only one exists at a time
        report: dict[str, Any] = {
            "benchmark": "peak memory of beam_jobs.extract_features on one long file",
            "target": f"a 60-min file under {TARGET_MIB:g} MiB peak RSS of the job's whole process tree",
            "model": ("tiny 3^5-SampleCNN" if quick else "3^9-SampleCNN")
            + " (random weights, 50 labels, 22,050 Hz), SavedModel features signature",
            "source": {"sample_rate": SOURCE_RATE, "channels": 2, "format": "FLAC", "subtype": "PCM_16"},
            **chunk,
            "baselines": baselines,
            "runners": {mode: {"runner": RUNNERS[mode], **_summary(runs[mode]), "runs": runs[mode]} for mode in modes},
            "export_seconds": export_seconds,
            "quick": quick,
        }
        first = modes[0]
        report["meets_2gib_at_60min"] = report["runners"][first]["meets_2gib_at_60min"]
        report["meets_2gib_at_60min_runner"] = first
        from _timing import environment

        report.update(environment())
        return report
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# make_tfrecords (issue 17)
# ---------------------------------------------------------------------------

TFRECORDS_MINUTES = (60.0, 360.0)
TFRECORDS_QUICK_MINUTES = (0.5, 2.0)
TFRECORDS_FLATNESS = 1.10
TFRECORDS_MODES: dict[str, list[str]] = {
    "segments_max10": ["--segment-length", "44100", "--max-segments", "10"],
    "all_segments": ["--segment-length", "59049"],
    "whole_track": [],
}


def _make_tfrecords(path: Path, output: Path, flags: list[str], *, timeout: float) -> dict[str, Any]:
    """Runs ``python -m beam_jobs.make_tfrecords`` (no --runner: what a user gets) on one file; checks the dataset."""
    manifest = output.parent / f"{output.name}-manifest.csv"
    manifest.write_text(f"path,track_id,labels,split\n{path},long,music,train\n", encoding="utf-8")
    command = [sys.executable, "-m", "beam_jobs.make_tfrecords", f"--manifest={manifest}", f"--output={output}",
               f"--sample-rate={MODEL_RATE}", *flags]
    result = measure(command, env=_env(), timeout=timeout)
    if result["returncode"] != 0:
        raise RuntimeError(f"make_tfrecords failed on {path}: {result['stderr_tail']}")
    info = json.loads((output / "dataset.json").read_text(encoding="utf-8"))
    counts = info["splits"]["train"]
    if counts["tracks"] != 1 or counts["failed"]:
        raise RuntimeError(f"make_tfrecords did not write the track of {path}: {counts}")
    result["records"] = counts["records"]
    result["samples_stored"] = counts["samples"]
    result["record_bytes"] = counts["bytes"]
    return result


def make_tfrecords_memory(*, quick: bool = False, minutes: list[float] | None = None,
                          modes: list[str] | None = None, keep: str | None = None) -> dict[str, Any]:
    """Peak RSS of ``beam_jobs.make_tfrecords`` (whole process tree) on one short and one long file per mode.

    The input is :func:`write_music` (44.1 kHz stereo FLAC, resampled by the job to 22,050 Hz);
    the job runs as a user runs it (no ``--runner``: the multi-processing DirectRunner, here
    a launcher and one SDK worker). Each run checks that the dataset holds the track with the
    expected number of samples. ``peak_ratio`` is the long file's peak over the short one's
    (``sum_of_process_peaks_mib``, each process's ``VmHWM``); the target is at most 1.10.
    ``--quick`` (a smoke test of a minute or two) measures whole-track records only, the worst case.
    """
    durations = list(minutes or (TFRECORDS_QUICK_MINUTES if quick else TFRECORDS_MINUTES))
    chosen = {m: TFRECORDS_MODES[m] for m in (modes or (["whole_track"] if quick else list(TFRECORDS_MODES)))}
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-memory-tfrecords-"))
    root.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in chosen}
    try:
        for index, length in enumerate(durations):
            path = root / f"music-{length:g}min.flac"
            start = time.perf_counter()
            frames = write_music(path, length, seed=17 + index)
            generate_seconds = time.perf_counter() - start
            model_samples = -(-frames * MODEL_RATE // SOURCE_RATE)
            for mode, flags in chosen.items():
                output = root / f"tfrecords-{mode}-{length:g}min"
                result = _make_tfrecords(path, output, flags, timeout=max(900.0, 8 * 60 * length))
                if mode == "whole_track" and result["samples_stored"] != model_samples:
                    raise RuntimeError(f"{path}: {result['samples_stored']} samples stored, expected {model_samples}")
                runs[mode].append({
                    "minutes": length,
                    "file_mib": round(path.stat().st_size / MIB, 1),
                    "decoded_mono_at_22050_hz_float32_mib": round(model_samples * 4 / MIB, 1),
                    "records": result["records"],
                    "record_payload_mib": round(result["record_bytes"] / MIB, 1),
                    "sum_of_process_peaks_mib": round(result["sum_of_process_peaks_mib"], 1),
                    "peak_rss_mib": round(result["peak_rss_mib"], 1),
                    "peak_pss_mib": round(result["peak_pss_mib"], 1),
                    "per_process_peak_mib": result["per_process_peak_mib"],
                    "seconds": round(result["seconds"], 1),
                    "generate_seconds": round(generate_seconds, 1),
                })
                shutil.rmtree(output, ignore_errors=True)  # the whole-track dataset of 6 h is ~950 MB
            path.unlink()
        modes = {}
        for mode, rows in runs.items():
            short, long = min(rows, key=lambda r: r["minutes"]), max(rows, key=lambda r: r["minutes"])
            ratio = long["sum_of_process_peaks_mib"] / short["sum_of_process_peaks_mib"]
            modes[mode] = {
                "flags": " ".join(TFRECORDS_MODES[mode]) or "(none: one whole-track record)",
                "peak_mib_by_minutes": {f"{r['minutes']:g}": r["sum_of_process_peaks_mib"] for r in rows},
                "peak_ratio": round(ratio, 3),
                "flat_within_10pct": ratio <= TFRECORDS_FLATNESS,
                "runs": rows,
            }
        report: dict[str, Any] = {
            "benchmark": "peak memory of beam_jobs.make_tfrecords on one long file",
            "target": f"peak RSS of the job's whole process tree on the longer file within "
                      f"{(TFRECORDS_FLATNESS - 1) * 100:.0f} % of the shorter one, in every mode",
            "source": {"sample_rate": SOURCE_RATE, "channels": 2, "format": "FLAC", "subtype": "PCM_16"},
            "sample_rate": MODEL_RATE,
            "runner": "python -m beam_jobs.make_tfrecords without --runner (DirectRunner, multi_processing, "
                      "one worker process for one track)",
            "modes": modes,
            "flat_within_10pct": all(m["flat_within_10pct"] for m in modes.values()),
            "worst_peak_ratio": max(m["peak_ratio"] for m in modes.values()),
            "quick": quick,
        }
        from _timing import environment

        report.update(environment())
        return report
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# Worst-case auralise call (issue 17)
# ---------------------------------------------------------------------------

AURALISE_TARGET_MIB = 2048.0
#: Quick mode: small models whose largest auralise call is 16 features of a 4-s clip.
QUICK_AURALISE: dict[str, Any] = {"max_deconv_seconds": 4.0, "max_deconv_feature_seconds": 64.0, "max_seconds": 8.0,
                                  "max_request_seconds": 16.0}
#: Quick mode: the exports hold the signatures the calls use only (``export_model``'s ``signatures``; all in a full
#: run): they export and load faster.
QUICK_SIGNATURES = "serving_default,auralise"
QUICK_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "choi": {"n_filters": 16},
    "samplecnn_3_9": {"filter_sizes": (3,) * 7, "channels": (16,) * 6, "front_filters": 16, "top_filters": 32},
    "musicnn_vgg": {"n_filters": 16},
    # 160 timbral maps: enough for its 266- and 469-tap adjoints to go as products, as at full width
    "musicnn": {"frontend_scale": 1.25, "midend_filters": 16, "backend_units": 32},
}


#: What ``limits`` may set in the exporters below, and where each goes: the family's budget or ``export_model``.
_BUDGET_LIMITS = ("max_deconv_feature_seconds", "max_request_seconds")
_EXPORT_LIMITS = ("max_deconv_seconds", "max_seconds")


def _export_random(model: Any, info: Any, base: str, family: str, *, limits: Mapping[str, Any] | None,
                   signatures: str | None, architecture: str | None = None) -> str:
    """Exports ``model`` (described by ``info``) under ``base`` without verifying it, with the family's budget and
    ``limits`` (``QUICK_AURALISE``'s keys; ``None`` values: the defaults); returns the version directory."""
    from export import exporter
    from export.budget import budget_for

    limits = {key: value for key, value in (limits or {}).items() if value is not None}
    unknown = sorted(set(limits) - {*_BUDGET_LIMITS, *_EXPORT_LIMITS})
    if unknown:
        raise ValueError(f"unknown export limits {unknown}; known: {[*_BUDGET_LIMITS, *_EXPORT_LIMITS]}")
    budget = budget_for(family, architecture=architecture, **{k: v for k, v in limits.items() if k in _BUDGET_LIMITS})
    return exporter.export_model(model, info, base, budget=budget, verify=False, signatures=signatures,
                                 **{k: v for k, v in limits.items() if k in _EXPORT_LIMITS})


def export_choi(base: str, *, limits: Mapping[str, Any] | None = None, signatures: str | None = None,
                **architecture: Any) -> str:
    """Exports a randomly initialised Choi CNN (10 labels, 11,025 Hz; ``architecture``: ``choi_cnn`` keywords,
    default the paper's; ``limits``: :func:`_export_random`'s; ``signatures``: ``export_model``'s, default all);
    returns the version directory."""
    import keras

    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import choi_cnn, config_from_model
    from tfaural.training.run import RunInfo

    keras.utils.set_random_seed(0)
    model = choi_cnn(n_outputs=10, **architecture)
    info = RunInfo(model=config_from_model(model), labels=tuple(f"genre{i}" for i in range(10)),
                   task="single-label", audio=AudioConfig(sample_rate=11025), segment=SegmentConfig(length=44100))
    return _export_random(model, info, base, "choi", limits=limits, signatures=signatures)


def export_musicnn_vgg(base: str, *, limits: Mapping[str, Any] | None = None, signatures: str | None = None,
                       **architecture: Any) -> str:
    """Exports a randomly initialised musicnn vgg tagger (MTT_vgg's shape: 16 kHz log-mel, 128 maps per layer,
    50 tags; ``architecture``: ``MusicnnConfig`` fields; ``limits``, ``signatures``: as :func:`export_choi`'s);
    returns the version directory."""
    import keras

    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import config_from_model
    from tfaural.models.musicnn import musicnn_tagger
    from tfaural.training.run import RunInfo

    keras.utils.set_random_seed(0)
    model = musicnn_tagger(**{"architecture": "vgg", **architecture})
    config = config_from_model(model)
    info = RunInfo(model=config, labels=tuple(f"tag{i:02d}" for i in range(config.n_outputs)), task="multi-label",
                   audio=AudioConfig(sample_rate=config.sample_rate),
                   segment=SegmentConfig(length=config.segment_length))
    return _export_random(model, info, base, "musicnn", limits=limits, signatures=signatures,
                          architecture=config.architecture)


def export_musicnn(base: str, *, limits: Mapping[str, Any] | None = None, signatures: str | None = None,
                   **architecture: Any) -> str:
    """Exports a randomly initialised musicnn-architecture tagger (MTT_musicnn's shape: 16 kHz log-mel 96 x 187,
    204 timbral and 51 temporal front-end maps, 50 tags; ``architecture``: ``MusicnnConfig`` fields; ``limits``,
    ``signatures``: as :func:`export_choi`'s); returns the version directory."""
    return export_musicnn_vgg(base, limits=limits, signatures=signatures, **{"architecture": "musicnn", **architecture})


def export_samplecnn_3_9(base: str, *, limits: Mapping[str, Any] | None = None, signatures: str | None = None,
                         **architecture: Any) -> str:
    """Exports a randomly initialised SampleCNN (50 labels, 22,050 Hz; ``architecture``: ``samplecnn`` keywords,
    default the 3^9 model; ``limits``, ``signatures``: as :func:`export_choi`'s); returns the version directory."""
    import keras

    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import config_from_model
    from tfaural.models.samplecnn import samplecnn_model
    from tfaural.training.run import RunInfo

    keras.utils.set_random_seed(0)
    model = samplecnn_model(n_outputs=50, sample_rate=MODEL_RATE, **architecture)
    config = config_from_model(model)
    info = RunInfo(model=config, labels=tuple(f"tag{i:02d}" for i in range(50)), task="multi-label",
                   audio=AudioConfig(sample_rate=MODEL_RATE), segment=SegmentConfig(length=config.input_length))
    return _export_random(model, info, base, "samplecnn", limits=limits, signatures=signatures)


#: The families ``--auralise`` measures, in order, and how each is exported.
AURALISE_EXPORTERS: dict[str, Callable[..., str]] = {
    "choi": export_choi, "samplecnn_3_9": export_samplecnn_3_9, "musicnn_vgg": export_musicnn_vgg,
    "musicnn": export_musicnn,
}
AURALISE_FAMILIES = tuple(AURALISE_EXPORTERS)

#: What both child scripts start with: imports, and whether a call over the export's budget is refused.
_CHILD_HEAD = """
import json, sys, time
import numpy as np
import tensorflow as tf


def refusal(call, **inputs):
    try:
        call(**inputs)
        return {"over_budget_refused": False}
    except tf.errors.InvalidArgumentError as err:
        lines = [line for line in err.message.splitlines() if "assertion failed" in line]
        return {"over_budget_refused": True, "over_budget_message": (lines or [err.message])[0][:400]}
"""

_AURALISE_CHILD = _CHILD_HEAD + """

export_dir, which, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
meta = json.load(open(export_dir + "/assets/metadata.json"))
rate = int(meta["sample_rate"])
model = tf.saved_model.load(export_dir)
auralise = model.signatures["auralise"]
layers = meta["deconvolvable_layers"]
layer = int(layers[-1] if which in ("deepest", "short", "baseline") else layers[0] if which == "first" else which)
width = int(meta["features_per_layer"][str(layer)])
if which == "baseline":
    n, k = int(meta["segment_length"]), 1
else:
    n = int(meta["segment_length"] if which == "short" else meta["max_deconv_samples"])
    k = min(width, int(meta["max_deconv_feature_samples"]) // n)
t = np.arange(n) / rate
rng = np.random.default_rng(17)
y = 0.3 * np.sin(2 * np.pi * (110 * t + 40 * t ** 2)) + 0.1 * np.sign(np.sin(2 * np.pi * 2 * t)) * rng.random(n)
y = np.clip(y, -1, 1).astype(np.float32)[None]
start = time.perf_counter()
out = auralise(waveform=tf.constant(y), layer=tf.constant(layer, tf.int32),
               features=tf.constant(np.arange(k, dtype=np.int32)), mode=tf.constant("phase"))
audio = out["audio"].numpy()
seconds = time.perf_counter() - start
result = {"layer": layer, "features": k, "samples": n, "clip_seconds": n / rate, "feature_samples": k * n,
          "call_seconds": seconds, "audio_shape": list(audio.shape), "silent": int(out["silent"].numpy().sum()),
          "finite": bool(np.isfinite(audio).all())}
if which != "baseline" and (which != "short" or k < width):  # a short clip of every feature is within budget
    more = (np.arange(k + 1) if k < width else np.arange(k)).astype(np.int32)
    y_more = y if k < width else np.concatenate([y, y])
    result.update(refusal(auralise, waveform=tf.constant(y_more), layer=tf.constant(layer, tf.int32),
                          features=tf.constant(more), mode=tf.constant("phase")))
with open(out_path, "w") as handle:
    json.dump(result, handle)
"""


_SERVING_CHILD = _CHILD_HEAD + """

export_dir, which, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
meta = json.load(open(export_dir + "/assets/metadata.json"))
rate, n = int(meta["sample_rate"]), int(meta["max_samples"])
batch = max(1, int(meta["max_request_samples"]) // n)  # the largest call: inputs of the longest length
serving = tf.saved_model.load(export_dir).signatures["serving_default"]
t = np.arange(n) / rate
y = 0.3 * np.sin(2 * np.pi * (110 * t + 40 * t ** 2) % (2 * np.pi)) + 0.05 * np.sin(2 * np.pi * 3 * t)
y = np.stack([y * (1 - 0.2 * i) for i in range(batch)]).astype(np.float32)
del t
start = time.perf_counter()
scores = serving(waveform=tf.constant(y))["scores"].numpy()
seconds = time.perf_counter() - start
result = {"batch": batch, "samples": n, "request_seconds": batch * n / rate, "call_seconds": seconds,
          "scores_shape": list(scores.shape), "finite": bool(np.isfinite(scores).all())}
result.update(refusal(serving, waveform=tf.constant(np.concatenate([y, y[:1]]))))  # one input more: over budget
with open(out_path, "w") as handle:
    json.dump(result, handle)
"""


#: Fresh processes per large auralise call in a full run (the worst peak counts).
AURALISE_REPEATS = 3


def auralise_call(export_dir: str, which: str, scratch: Path, *, repeats: int = 1,
                  timeout: float = 1800.0) -> dict[str, Any]:
    """Runs one auralise call (``which``: ``deepest``, ``first``, ``short`` or ``baseline``; ``serving``: the largest
    ``serving_default`` call, inputs of ``max_samples`` up to ``max_request_samples``) in ``repeats`` fresh
    processes; the worst peak RSS (``peak_rss_mib``), each run's (``peak_rss_mib_runs``) and the slowest call."""
    runs = []
    child = _SERVING_CHILD if which == "serving" else _AURALISE_CHILD
    for _ in range(repeats):
        out = scratch / f"auralise-{which}-{time.time_ns()}.json"
        result = measure([sys.executable, "-c", child, export_dir, which, str(out)], env=_env(), timeout=timeout)
        if result["returncode"] != 0 or not out.exists():
            raise RuntimeError(f"the auralise call ({which}) on {export_dir} failed: {result['stderr_tail']}")
        runs.append((json.loads(out.read_text()), result))
    call = dict(runs[0][0])
    if "over_budget_refused" in call:  # the large calls check that one feature more is refused
        call["over_budget_refused"] = all(c["over_budget_refused"] for c, _ in runs)
    peaks = [round(result["largest_process_peak_mib"], 1) for _, result in runs]
    return {**call, "call_seconds": max(c["call_seconds"] for c, _ in runs),
            "peak_rss_mib": max(peaks), "peak_rss_mib_runs": peaks,
            "process_seconds": round(max(result["seconds"] for _, result in runs), 1)}


def run_auralise(*, quick: bool = False, keep: str | None = None, families_wanted: Sequence[str] | None = None,
                 repeats: int | None = None, serving_only: bool = False) -> dict[str, Any]:
    """The worst-case auralise call of each exported family (module docstring); returns the report.

    Args:
        quick: Small models and budgets (:data:`QUICK_AURALISE`); one family unless ``families_wanted``.
        keep: Keep the exports and outputs in this folder.
        families_wanted: Names from :data:`AURALISE_FAMILIES` (default all of them).
        repeats: Fresh processes per large call, the worst peak counts (default :data:`AURALISE_REPEATS`;
            quick: 1).
        serving_only: Measure the largest ``serving_default`` call and the baseline only (the auralise
            figures are ``null``).
    """
    from export.budget import budget_for

    limits: dict[str, Any] = QUICK_AURALISE if quick else {}
    repeats = repeats if repeats is not None else 1 if quick else AURALISE_REPEATS
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-memory-auralise-"))
    root.mkdir(parents=True, exist_ok=True)
    families: dict[str, Any] = {}
    try:
        chosen = families_wanted or (AURALISE_FAMILIES[:1] if quick else AURALISE_FAMILIES)  # smoke run: one
        for family in chosen:
            export = AURALISE_EXPORTERS[family]
            start = time.perf_counter()
            export_dir = export(str(root / family), limits=limits, signatures=QUICK_SIGNATURES if quick else None,
                                **(QUICK_ARCHITECTURES[family] if quick else {}))
            export_seconds = time.perf_counter() - start
            meta = json.loads((Path(export_dir) / "assets" / "metadata.json").read_text())
            layers: tuple[str, ...] = ("deepest", "short") if quick else ("deepest", "first", "short")
            if quick and meta["segment_length"] == meta["max_deconv_samples"]:
                layers = ("deepest",)  # the short call would be the deepest one again (one segment is the limit)
            if serving_only:
                layers = ()
            calls: dict[str, Any] = {
                "baseline": auralise_call(export_dir, "baseline", root),
                **{which: auralise_call(export_dir, which, root, repeats=repeats) for which in layers}}
            serving = auralise_call(export_dir, "serving", root, repeats=repeats)
            if "short" not in calls and quick and layers:  # left out as the deepest call again: every figure null
                calls["short"] = dict.fromkeys(key for key in calls["deepest"] if not key.startswith("over_budget"))
            worst = max(calls[which]["peak_rss_mib"] for which in layers) if layers else None
            families[family] = {
                "budget": {key: meta[key] for key in (
                    "sample_rate", "max_deconv_seconds", "max_deconv_samples", "max_deconv_feature_seconds",
                    "max_deconv_feature_samples", "deconv_chunk_elements", "max_seconds", "max_request_seconds")},
                "family_default_budget": dataclasses.asdict(budget_for(
                    meta["family"], architecture=meta["model_config"]["config"].get("architecture"))),
                "calls": calls,
                "worst_peak_rss_mib": worst,
                "added_by_the_request_mib": None if worst is None else round(worst - calls["baseline"]["peak_rss_mib"],
                                                                             1),
                "meets_2gib": None if worst is None else worst <= AURALISE_TARGET_MIB,
                "over_budget_refused": all(calls[which]["over_budget_refused"] for which in layers
                                           if "over_budget_refused" in calls[which]),
                "export_seconds": round(export_seconds, 1),
                "serving": serving,
                "serving_meets_2gib": serving["peak_rss_mib"] <= AURALISE_TARGET_MIB,
            }
        from _timing import environment

        return {
            "benchmark": "peak memory of the largest auralise call an export allows (issue 17), and of its largest "
                         "serving_default call",
            "target": f"at most {AURALISE_TARGET_MIB:g} MiB peak RSS of the process calling the SavedModel",
            "repeats": repeats,
            "models": (QUICK_ARCHITECTURES if quick else
                       "random weights: the paper's Choi CNN (11,025 Hz), the 3^9-SampleCNN (22,050 Hz), "
                       "musicnn's vgg tagger (MTT_vgg's shape, 16 kHz log-mel) and its musicnn architecture "
                       "(MTT_musicnn's shape)"),
            "families": families,
            "meets_2gib": None if serving_only else all(f["meets_2gib"] for f in families.values()),
            "serving_meets_2gib": all(f["serving_meets_2gib"] for f in families.values()),
            "quick": quick,
            **environment(),
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_tfrecords:
        print(json.dumps(make_tfrecords_memory(quick=args.quick, minutes=args.minutes, keep=args.keep), indent=2))
        return 0
    if args.auralise:
        print(json.dumps(run_auralise(quick=args.quick, keep=args.keep, families_wanted=args.families,
                                      repeats=args.repeats, serving_only=args.serving_only), indent=2))
        return 0
    result = run(quick=args.quick, minutes=args.minutes, runners=args.runners, export_dir=args.export_dir,
                 keep=args.keep)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
