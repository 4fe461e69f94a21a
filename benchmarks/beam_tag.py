"""End-to-end speed of ``beam_jobs.tag`` with a 3^9-SampleCNN export, beside the model alone and a naive loop.

Prints one JSON object. In one run, on the same generated catalogue (``--tracks`` files of
``--seconds`` seconds, 44.1 kHz stereo, FLAC and WAV alternating) and the same export
(the 3^9-SampleCNN of Lee et al. 2018, random weights, 50 labels, 22,050 Hz):

* **end to end**: wall time of ``python -m beam_jobs.tag --input=... --model=...
  --output=...`` in a fresh process, from the command to its exit, as a user runs it (the
  default runner: the local DirectRunner in multi-processing mode, one worker per core, the
  model in its own process; ``--workers N`` adds ``--direct_num_workers=N``): launching,
  start-up, decoding and resampling, inference, writing ``tags.jsonl``/``tags.csv``/
  ``manifest.jsonl``. The same command on a one-track catalogue measures the fixed start-up
  cost, so that the throughput after start-up is reported too (not with ``--quick``);
* **end to end, in process** (a second figure): ``beam_jobs.tag.run([...])`` called from
  this process after it exported the model (TensorFlow already imported: what a notebook
  gets), ``--runner=DirectRunner --direct_running_mode=multi_processing`` with as many
  workers: the workers load the model themselves, as before the model process existed;
* **model only**: the ``serving_default`` signature of the loaded SavedModel on the
  already decoded waveforms in this process (batches of 1 and of up to 8 equal-length
  tracks; the faster counts), after one warm-up call;
* **naive loop**: ``librosa.load(path, sr=22050)`` and one signature call per file, in
  this process, timed with the SavedModel load (a script's start-up, like the job's) and
  without it. The loop calls the same SavedModel as the job, and for this model that call is
  most of the loop's time (the model alone: 55.6 of the loop's 72.6 s, RESULTS_intel.md), so
  the ">= 3 x naive" target cannot be met by any job around this model; issue 19's comparison
  with musicnn's own tagger (``peer_musicnn.py``) is the one against a real peer.

``beam_jobs.extract_features`` is measured the same ways (command line, and in process), and with
``--per-segment`` (command line) beside its model-only work: the ``features`` signature on each whole
track and on its segments as one batch ``[n, segment_length]`` (each pooled alone), one call each.

Throughput is reported as times real time (seconds of audio per second, = audio hours per
hour), with the ratios against the targets: end to end >= 0.6 x model only, >= 3 x naive.

``--quick`` is a smoke run: a tiny SampleCNN, 2 tracks of 4 s, no start-up probe, and one run in
process (``beam_jobs.tag``, with 1 worker unless ``--workers``): ``extract_features`` runs from the
command line only (plain and ``--per-segment``), since the in-process launch is the same code for
both jobs. Its ``extract_features.end_to_end_in_process_*`` figures and
``ratios.extract_features_end_to_end_in_process_vs_model_only`` are ``null``, as are the start-up ones.

Usage:
    python benchmarks/beam_tag.py [--quick] [--tracks 200] [--seconds 30] [--workers 2] [--export-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import run_command, shared_export
from _timing import environment

SAMPLE_RATE = 22050
SOURCE_RATE = 44100
BATCH = 8
TARGET_VS_MODEL = 0.6
TARGET_VS_NAIVE = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny SampleCNN, 2 tracks of 4 s, no start-up probe, only beam_jobs.tag run in process "
                             "(1 worker) and extract_features from the command line only: a smoke test (< 1 min); "
                             "the targets need the default model and catalogue, whose audio outweighs the fixed "
                             "start-up")
    parser.add_argument("--tracks", type=int, default=None, help="number of generated tracks (default 200; quick 2)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each track (default 30; quick 4)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DirectRunner worker processes (default: the job's own, one per core; the in-process "
                             "figure uses the number of cores, quick 1)")
    parser.add_argument("--export-dir", default=None,
                        help="reuse this export version directory instead of exporting a fresh 3^9-SampleCNN")
    parser.add_argument("--keep", default=None, help="keep the catalogue, export and outputs in this folder")
    return parser.parse_args(argv)


#: The smoke runs' SampleCNN: a 3^5 model with few channels (exports and runs in seconds).
TINY: dict[str, Any] = {"filter_sizes": (3,) * 6, "channels": (16, 16, 32, 32, 32), "front_filters": 16,
                        "top_filters": 64}


def export_samplecnn(base: str, *, signatures: str = "tagging", **architecture: Any) -> str:
    """Exports a randomly initialised SampleCNN (50 labels, 22,050 Hz); returns the version directory.

    Args:
        base: Export base folder.
        signatures: The export's signatures (``python -m export --signatures``): ``tagging`` by
            default, all a tag job calls (it loads ``serving_default``'s own SavedModel either way);
            ``all`` for the start-up comparison with the whole export.
        **architecture: ``samplecnn`` keyword arguments (default: the 3^9 model of Lee et al. 2018).
    """
    import keras

    from export import exporter
    from tfaural.config import AudioConfig, SegmentConfig
    from tfaural.models import config_from_model
    from tfaural.models.samplecnn import samplecnn_model
    from tfaural.training.run import RunInfo

    def build(folder: Path) -> str:
        keras.utils.set_random_seed(0)
        model = samplecnn_model(n_outputs=50, sample_rate=SAMPLE_RATE, **architecture)
        config = config_from_model(model)
        info = RunInfo(model=config, labels=tuple(f"tag{i:02d}" for i in range(50)), task="multi-label",
                       audio=AudioConfig(sample_rate=SAMPLE_RATE), segment=SegmentConfig(length=config.input_length))
        return exporter.export_model(model, info, str(folder), verify=False, signatures=signatures)

    digest = hashlib.sha1(json.dumps(architecture, sort_keys=True, default=str).encode()).hexdigest()[:12]
    # A smoke run: one export per architecture and signature set.
    return shared_export(f"samplecnn-{digest}-{signatures}", build, Path(base))


def generate_catalogue(folder: Path, *, tracks: int, seconds: float) -> list[Path]:
    """``tracks`` synthetic stereo 44.1 kHz pieces (chords of harmonic tones, noise, a beat), FLAC/WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2018)
    n = int(round(seconds * SOURCE_RATE))
    t = np.arange(n) / SOURCE_RATE
    paths = []
    for index in range(tracks):
        y = np.zeros((2, n), np.float32)
        for f0 in 110.0 * 2 ** (rng.integers(0, 24, 3) / 12):
            tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
            y += (0.08 * tone * rng.uniform(0.5, 1.0, (2, 1))).astype(np.float32)
        beat = (np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * t) > 0.95).astype(np.float32)
        y += 0.1 * beat * rng.standard_normal(n).astype(np.float32)
        y += 0.01 * rng.standard_normal((2, n)).astype(np.float32)
        y *= 0.9 / np.max(np.abs(y))
        path = folder / f"track {index:03d}.{'flac' if index % 2 == 0 else 'wav'}"
        sf.write(path, y.T, SOURCE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def _check(job: str, paths: list[Path], output: Path) -> None:
    from beam_jobs.accounting import summarize

    summary = summarize(str(output))
    if summary.ok != len(paths):
        raise RuntimeError(f"the {job} job handled {summary.ok} of {len(paths)} tracks: {summary.describe(job)}")


def end_to_end(paths: list[Path], export_dir: str, output: Path, *, workers: int | None,
               job: str = "tag", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``python -m beam_jobs.<job>`` in a fresh process, command to exit: wall and CPU seconds."""
    command = [sys.executable, "-m", f"beam_jobs.{job}", f"--input={paths[0].parent}/*", f"--model={export_dir}",
               f"--output={output}", *extra, *([f"--direct_num_workers={workers}"] if workers else [])]
    done = run_command(command)
    _check(job, paths, output)
    return {"seconds": done["seconds"], "cpu_seconds": done["cpu_seconds"]}


def end_to_end_in_process(paths: list[Path], export_dir: str, output: Path, *, workers: int,
                          job: str = "tag", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``beam_jobs.<job>.run([...])`` in this process (TensorFlow already imported), multi-processing
    DirectRunner with ``workers`` workers, each loading the model."""
    import importlib

    module = importlib.import_module(f"beam_jobs.{job}")
    start = time.perf_counter()
    module.run([f"--input={paths[0].parent}/*", f"--model={export_dir}", f"--output={output}", *extra,
                "--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
    seconds = time.perf_counter() - start
    _check(job, paths, output)
    return {"seconds": seconds}


def features_only(waveforms: list[np.ndarray], features: Any) -> float:
    """Seconds of the ``features`` signature alone on decoded waveforms, one track per call."""
    import tensorflow as tf

    features(waveform=tf.constant(waveforms[0][np.newaxis]))  # warm-up
    start = time.perf_counter()
    for y in waveforms:
        features(waveform=tf.constant(y[np.newaxis]))["features"].numpy()
    return time.perf_counter() - start


def features_per_segment_only(waveforms: list[np.ndarray], features: Any, *, segment: int) -> float:
    """Seconds of ``--per-segment``'s model work alone: ``features`` on each whole track and on its segments."""
    import tensorflow as tf

    features(waveform=tf.constant(waveforms[0].reshape(-1, segment)))  # warm-up of the batch shape
    start = time.perf_counter()
    for y in waveforms:
        features(waveform=tf.constant(y[np.newaxis]))["features"].numpy()
        features(waveform=tf.constant(y.reshape(-1, segment)))["features"].numpy()
    return time.perf_counter() - start


def model_only(waveforms: list[np.ndarray], serving: Any) -> dict[str, Any]:
    """The signature alone on decoded waveforms: batches of 1, and of up to 8 equal-length tracks."""
    import tensorflow as tf

    serving(waveform=tf.constant(waveforms[0][np.newaxis]))  # warm-up
    start = time.perf_counter()
    for y in waveforms:
        serving(waveform=tf.constant(y[np.newaxis]))["scores"].numpy()
    batch_1 = time.perf_counter() - start
    groups: dict[int, list[np.ndarray]] = {}
    for y in waveforms:
        groups.setdefault(len(y), []).append(y)
    start = time.perf_counter()
    for same_length in groups.values():
        for i in range(0, len(same_length), BATCH):
            serving(waveform=tf.constant(np.stack(same_length[i : i + BATCH])))["scores"].numpy()
    batched = time.perf_counter() - start
    return {"seconds_batch_1": batch_1, "seconds_batch_8": batched, "seconds": min(batch_1, batched)}


def naive_loop(paths: list[Path], serving: Any) -> dict[str, Any]:
    """``librosa.load`` + one signature call per file."""
    import librosa
    import tensorflow as tf

    start = time.perf_counter()
    for path in paths:
        y, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True)
        serving(waveform=tf.constant(y[np.newaxis]))["scores"].numpy()
    return {"loop_seconds": time.perf_counter() - start}


def run(*, quick: bool = False, tracks: int | None = None, seconds: float | None = None, workers: int | None = None,
        export_dir: str | None = None, keep: str | None = None) -> dict[str, Any]:
    """Runs the measurements and returns the JSON-serialisable results."""
    tracks = tracks or (2 if quick else 200)
    seconds = seconds or (4.0 if quick else 30.0)
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-beam-tag-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        export_dir = export_dir or export_samplecnn(str(root / "export"), **(TINY if quick else {}))
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        paths = generate_catalogue(root / "audio", tracks=tracks, seconds=seconds)
        generate_seconds = time.perf_counter() - start
        audio_seconds = tracks * seconds

        startup = None
        if not quick:
            probe = generate_catalogue(root / "one", tracks=1, seconds=seconds)
            startup = end_to_end(probe, export_dir, root / "tags-one", workers=workers)["seconds"]
        e2e = end_to_end(paths, export_dir, root / "tags", workers=workers)
        in_process_workers = workers or (1 if quick else os.cpu_count() or 1)
        e2e_in_process = end_to_end_in_process(paths, export_dir, root / "tags-in-process",
                                               workers=in_process_workers)

        import tensorflow as tf

        from tfaural import audio

        start = time.perf_counter()
        serving = tf.saved_model.load(export_dir).signatures["serving_default"]
        load_seconds = time.perf_counter() - start
        segment = int(json.loads((Path(export_dir) / "assets" / "metadata.json").read_text())["segment_length"])
        waveforms = []
        for path in paths:
            y, _ = audio.load(str(path), sample_rate=SAMPLE_RATE)
            waveforms.append(y[: len(y) // segment * segment])
        model = model_only(waveforms, serving)
        extract = end_to_end(paths, export_dir, root / "features", workers=workers, job="extract_features",
                             extra=("--format=npz",))
        extract_in_process: dict[str, Any] = {"seconds": None}
        if not quick:  # the smoke run launches in process once (the tag job above): the same code for both jobs
            extract_in_process = end_to_end_in_process(paths, export_dir, root / "features-in-process",
                                                       workers=in_process_workers, job="extract_features",
                                                       extra=("--format=npz",))
        extract_segments = end_to_end(paths, export_dir, root / "features-per-segment", workers=workers,
                                      job="extract_features", extra=("--format=npz", "--per-segment"))
        features = tf.saved_model.load(export_dir).signatures["features"]
        features_seconds = features_only(waveforms, features)
        per_segment_seconds = features_per_segment_only(waveforms, features, segment=segment)
        naive = naive_loop(paths, serving)
        naive["seconds"] = naive["loop_seconds"] + load_seconds

        def speed(value: float) -> float:
            return audio_seconds / value

        def ratio(numerator: float, denominator: float | None) -> float | None:
            return None if denominator is None else numerator / denominator

        result = {
            "benchmark": "beam_jobs.tag end to end vs model only vs naive loop",
            "model": ("tiny 3^5-SampleCNN" if quick else "3^9-SampleCNN")
            + " (random weights, 50 labels), SavedModel serving_default",
            "sample_rate": SAMPLE_RATE,
            "tracks": tracks,
            "track_seconds": seconds,
            "audio_seconds": audio_seconds,
            "source": {"sample_rate": SOURCE_RATE, "channels": 2, "formats": ["flac", "wav"]},
            "workers": workers or f"the job's default (one per core: {os.cpu_count()})",
            "end_to_end": {
                "how": "python -m beam_jobs.tag in a fresh process, command to exit (default runner)",
                "seconds": e2e["seconds"], "cpu_seconds": e2e["cpu_seconds"], "x_real_time": speed(e2e["seconds"]),
                "startup_seconds": startup,
                "x_real_time_after_startup": (None if startup is None
                                              else audio_seconds / max(e2e["seconds"] - startup, 1e-9)),
            },
            "end_to_end_in_process": {
                "how": (f"beam_jobs.tag.run([...]) in this process (TensorFlow imported), multi-processing "
                        f"DirectRunner, {in_process_workers} workers each loading the model"),
                "seconds": e2e_in_process["seconds"], "x_real_time": speed(e2e_in_process["seconds"]),
            },
            "model_only": {
                "seconds": model["seconds"], "x_real_time": speed(model["seconds"]),
                "x_real_time_batch_1": speed(model["seconds_batch_1"]),
                "x_real_time_batch_8": speed(model["seconds_batch_8"]),
            },
            "naive_loop": {
                "seconds": naive["seconds"], "x_real_time": speed(naive["seconds"]),
                "loop_seconds": naive["loop_seconds"], "x_real_time_without_model_load": speed(naive["loop_seconds"]),
            },
            "model_load_seconds": load_seconds,
            "export_seconds": export_seconds,
            "generate_seconds": generate_seconds,
        }
        result["extract_features"] = {
            "end_to_end_seconds": extract["seconds"], "end_to_end_x_real_time": speed(extract["seconds"]),
            "end_to_end_cpu_seconds": extract["cpu_seconds"],
            "end_to_end_in_process_seconds": extract_in_process["seconds"],
            "end_to_end_in_process_x_real_time": ratio(audio_seconds, extract_in_process["seconds"]),
            "model_only_seconds": features_seconds, "model_only_x_real_time": speed(features_seconds),
            "per_segment": {
                "how": "python -m beam_jobs.extract_features --per-segment, command to exit (default runner); "
                       "model only: features on each whole track and on its segments as one batch",
                "end_to_end_seconds": extract_segments["seconds"],
                "end_to_end_x_real_time": speed(extract_segments["seconds"]),
                "model_only_seconds": per_segment_seconds, "model_only_x_real_time": speed(per_segment_seconds),
            },
        }
        vs_model = model["seconds"] / e2e["seconds"]
        vs_naive = naive["seconds"] / e2e["seconds"]
        result["ratios"] = {
            "end_to_end_vs_model_only": vs_model,
            "end_to_end_vs_model_only_target": TARGET_VS_MODEL,
            "end_to_end_vs_model_only_met": vs_model >= TARGET_VS_MODEL,
            "end_to_end_in_process_vs_model_only": model["seconds"] / e2e_in_process["seconds"],
            "end_to_end_vs_naive": vs_naive,
            "end_to_end_vs_naive_without_model_load": naive["loop_seconds"] / e2e["seconds"],
            "end_to_end_vs_naive_target": TARGET_VS_NAIVE,
            "end_to_end_vs_naive_met": vs_naive >= TARGET_VS_NAIVE,
            "extract_features_end_to_end_vs_model_only": features_seconds / extract["seconds"],
            "extract_features_end_to_end_vs_model_only_met": features_seconds / extract["seconds"] >= TARGET_VS_MODEL,
            "extract_features_end_to_end_in_process_vs_model_only": ratio(features_seconds,
                                                                          extract_in_process["seconds"]),
            "extract_features_per_segment_end_to_end_vs_model_only": per_segment_seconds / extract_segments["seconds"],
        }
        result["quick"] = quick
        result.update(environment())
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(quick=args.quick, tracks=args.tracks, seconds=args.seconds, workers=args.workers,
                 export_dir=args.export_dir, keep=args.keep)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
