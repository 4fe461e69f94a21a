"""Start-up of ``python -m beam_jobs.tag`` on one track, and what it is made of.

Prints one JSON object. For each export (the 3^9-SampleCNN of Lee et al. 2018, random
weights, whose export also holds the deconvolution and auralisation graphs, and musicnn's
``MTT_vgg`` imported by ``tfaural.pretrained``), in one run:

* **one track**: wall time of ``python -m beam_jobs.tag --input ONE --model EXPORT --output OUT``
  (command to exit, default runner) on one 30-s 44.1 kHz stereo FLAC: what a user waits
  for when trying a model. The job loads the signature's own SavedModel
  (``assets.extra/signatures/serving_default``) in its model process;
* **one track, whole export**: the same job on a copy of the export without those one-signature
  SavedModels, so that the model process loads the whole export (every signature's graph), as
  jobs did before;
* **components**, each in a fresh process (wall and, for the imports, CPU seconds: on a shared
  machine the CPU time shows the work, the wall time what waiting for a core adds): Python
  alone; ``import apache_beam`` (the launcher's and every Beam worker's import); ``import
  tensorflow``, and as a command line imports it (``tfaural.cli.skip_keras_optional_imports``:
  without what Keras imports for its scikit-learn wrappers and its plots); TensorFlow's runtime
  and ``tf.saved_model.load``'s module without the public API (what the model process imports
  instead, ``beam_jobs.tf_runtime``); ``import numpy, ml_dtypes`` (the slowest part of that
  import with ml_dtypes 0.7, which setup.py therefore keeps out); ``tf.saved_model.load`` of the
  signature's SavedModel and of the whole export (after the import), and the first call on one
  segment (TensorFlow optimises a function's graph on its first call; the model process makes
  that call before the job needs it).

Every figure is the median of ``--repeats`` runs after one untimed warm-up run (page cache);
the two one-track variants alternate. Target: one track <= 6 s.

Usage:
    python benchmarks/startup.py [--quick] [--repeats 3] [--models samplecnn,mtt_vgg] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import machine_load, music_catalogue, musicnn_export, run_command, tag_command

TARGET_SECONDS = 6.0
MODELS = ("samplecnn", "mtt_vgg")

#: Loads a SavedModel in a fresh process; prints the load time and the first call's time as JSON.
_LOAD_SCRIPT = """
import json, sys, time
import numpy as np
import tensorflow as tf
path, length = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
loaded = tf.saved_model.load(path)
load = time.perf_counter() - start
function = loaded.signatures["serving_default"]
start = time.perf_counter()
function(waveform=tf.constant(np.zeros((1, length), np.float32)))["scores"].numpy()
print(json.dumps({"load_seconds": load, "first_call_seconds": time.perf_counter() - start}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min): a tiny SampleCNN, one run of each job variant, no components")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each figure (default 3; quick 1)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of samplecnn,mtt_vgg")
    parser.add_argument("--keep", default=None, help="keep the exports, audio and outputs in this folder")
    return parser.parse_args(argv)


def whole_export_copy(export_dir: str, target: Path) -> str:
    """A copy of the export whose metadata lists no one-signature SavedModels (the jobs then load it whole)."""
    shutil.copytree(export_dir, target)
    shutil.rmtree(target / "assets.extra" / "signatures", ignore_errors=True)
    meta_path = target / "assets" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("signature_savedmodels", None)
    meta_path.write_text(json.dumps(meta, indent=2))
    return str(target)


def component_times(export_dir: str, signature_dir: str, segment_length: int, *, repeats: int) -> dict[str, Any]:
    """Medians of the start-up components, each in a fresh process."""
    runs: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    for _ in range(repeats + 1):  # the first round warms the page cache
        for key, code in (("python", "pass"), ("import_apache_beam", "import apache_beam"),
                          ("import_tensorflow", "import tensorflow"),
                          # as a command line imports it: without Keras's optional scikit-learn and matplotlib
                          ("import_tensorflow_command_line",
                           "from tfaural import cli; cli.skip_keras_optional_imports(); import tensorflow"),
                          # what the model process imports instead (beam_jobs.tf_runtime), up to tf.saved_model.load
                          ("import_tensorflow_runtime",
                           "from beam_jobs import tf_runtime; tf_runtime.import_runtime(); "
                           "from tensorflow.python.saved_model import load"),
                          # part of TensorFlow's import (setup.py keeps ml_dtypes < 0.7)
                          ("import_numpy_ml_dtypes", "import numpy, ml_dtypes")):
            done = run_command([sys.executable, "-c", code])
            add(key, done["seconds"])
            add(f"{key}_cpu", done["cpu_seconds"])
        for key, path in (("signature_savedmodel", signature_dir), ("whole_export", export_dir)):
            done = run_command([sys.executable, "-c", _LOAD_SCRIPT, path, str(segment_length)])
            times = json.loads(done["stdout"].strip().splitlines()[-1])
            add(f"load_{key}", times["load_seconds"])
            add(f"first_call_{key}", times["first_call_seconds"])
    return {f"{key}_seconds": round(statistics.median(values[1:]), 2) for key, values in runs.items()}


def measure_model(name: str, root: Path, *, quick: bool, repeats: int) -> dict[str, Any]:
    """The one-track figures (and, unless quick, the components) of one export."""
    start = time.perf_counter()
    # The whole export holds every signature (the deconvolution graphs too), as jobs loaded it before the
    # one-signature SavedModels; a smoke run shares the other entries' tagging-only export (what it checks
    # is that the job runs, not the figures).
    signatures = "tagging" if quick else "all"
    if name == "samplecnn":
        from beam_tag import TINY, export_samplecnn

        export_dir = export_samplecnn(str(root / "export"), signatures=signatures, **(TINY if quick else {}))
        description = ("tiny 3^5-SampleCNN" if quick else "3^9-SampleCNN") + " (random weights, 50 labels, 22,050 Hz)"
    else:
        export_dir = musicnn_export("MTT_vgg", root, verify=False, signatures=signatures)
        description = "musicnn MTT_vgg imported by tfaural.pretrained (16 kHz, hop 161 frames)"
    export_seconds = time.perf_counter() - start
    whole = whole_export_copy(export_dir, root / "export-whole")
    track = root / "one"
    music_catalogue(track, tracks=1, seconds=30.0, formats=("flac",))
    variants = {"one_track": export_dir, "one_track_whole_export": whole}
    times: dict[str, list[float]] = {key: [] for key in variants}
    cpu: dict[str, list[float]] = {key: [] for key in variants}
    for rep in range(repeats + (0 if quick else 1)):
        order = list(variants.items()) if rep % 2 == 0 else list(variants.items())[::-1]
        for key, model in order:
            done = run_command(tag_command(f"{track}/*", model, root / f"out-{key}"))
            if "tag: 1 of 1 track(s) ok" not in done["stderr"]:
                raise RuntimeError(f"the one-track job did not tag its track: {done['stderr'][-2000:]}")
            if quick or rep > 0:
                times[key].append(done["seconds"])
                cpu[key].append(done["cpu_seconds"])
    result: dict[str, Any] = {"model": description, "export_signatures": signatures,
                              "export_seconds": round(export_seconds, 1)}
    for key, values in times.items():
        result[f"{key}_seconds"] = round(statistics.median(values), 2)
        result[f"{key}_runs"] = [round(v, 2) for v in values]
        result[f"{key}_cpu_seconds"] = round(statistics.median(cpu[key]), 2)  # every process of the run
    result["whole_export_vs_signature_savedmodel"] = round(result["one_track_whole_export_seconds"]
                                                           / result["one_track_seconds"], 2)
    result["meets_target"] = result["one_track_seconds"] <= TARGET_SECONDS
    meta = json.loads((Path(export_dir) / "assets" / "metadata.json").read_text())
    result["export_graph_bytes"] = {
        "whole_export": (Path(export_dir) / "saved_model.pb").stat().st_size,
        "signature_savedmodel": (Path(export_dir) / meta["signature_savedmodels"]["serving_default"]
                                 / "saved_model.pb").stat().st_size,
    }
    if not quick:
        signature_dir = str(Path(export_dir) / meta["signature_savedmodels"]["serving_default"])
        result["components"] = component_times(export_dir, signature_dir, int(meta["segment_length"]),
                                               repeats=repeats)
    return result


def run(*, quick: bool = False, repeats: int | None = None, models: tuple[str, ...] = MODELS,
        keep: str | None = None) -> dict[str, Any]:
    """Measures every model; returns the JSON-serialisable results."""
    repeats = repeats or (1 if quick else 3)
    models = ("samplecnn",) if quick else models
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected a subset of {','.join(MODELS)}")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-startup-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        load_before = machine_load()
        by_model = {name: measure_model(name, root / name, quick=quick, repeats=repeats) for name in models}
        return {
            "benchmark": "start-up of a one-track python -m beam_jobs.tag run (command to exit)",
            "track": "one 30-s music-like FLAC, 44.1 kHz stereo",
            "models": by_model,
            "one_track_seconds": {name: r["one_track_seconds"] for name, r in by_model.items()},
            "one_track_whole_export_seconds": {name: r["one_track_whole_export_seconds"]
                                               for name, r in by_model.items()},
            "target_seconds": TARGET_SECONDS,
            "meets_target": all(r["meets_target"] for r in by_model.values()),
            "repeats": repeats,
            "versions": {"ml_dtypes": importlib.metadata.version("ml_dtypes"),
                         "tensorflow": importlib.metadata.version("tensorflow")},
            "machine": {**machine_load(), "load_average_before": load_before["load_average"]},
            "quick": quick,
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    print(json.dumps(run(quick=args.quick, repeats=args.repeats, models=models, keep=args.keep), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
