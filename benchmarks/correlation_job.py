"""``python -m beam_jobs.correlation`` on the paper's full model-signal grid: wall time and peak memory.

The job's bulk is its deconvolved maps (224 signals × 5 layers × 64 maps of 257 × 173 for the Choi CNN
at 11,025 Hz: 11.87 GiB). It keeps them on disk (``.maps/`` in the output folder) and groups only
references to them, so its memory should not grow with them: this entry records the peak RSS of the
job's process beside the maps' bytes (``peak_rss_over_maps``). Before the maps were stored, the
job grouped them in memory and the full grid did not fit on a 24-GiB machine.

* **Model**: the Choi CNN of the paper (random weights, 64 maps per layer), exported with
  ``export.exporter.export_model`` (every signature). ``--quick``: 2 layers of 16 maps, exported with the
  two signatures the job needs (``serving_default`` and ``deconvolve``): the job's code is the same.
* **Job**: the command as a user types it, ``python -m beam_jobs.correlation --model EXPORT --output
  DIR --signals CACHE`` (the local DirectRunner: one process, ``in_memory``), in a fresh process; the
  signals are rendered into the cache first, so the time is the job's. ``--quick``: the 8-signal grid
  of 2-s signals (2 timbres × 2 chords × 2 keys).
* **Peak RSS**: the kernel's record of the job's process (``ru_maxrss`` of this script's children:
  the job is its only child).

Run ``python benchmarks/correlation_job.py [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
from _jobs import run_command
from _timing import environment
from correlation import QUICK_GRID  # the library benchmark's smoke grid
from serving import _models  # the paper's Choi CNN and its RunInfo

from beam_jobs.correlation import GIB, MAPS_FOLDER, OUTPUT_FILES, map_bytes
from export import exporter
from tfaural import signals
from tfaural.formats import read_export_metadata
from tfaural.models import choi_cnn, config_from_model


def _grid_flags(grid: signals.SignalGrid) -> list[str]:
    """The job's flags for ``grid``."""
    return [f"--timbres={','.join(grid.timbres)}", f"--chords={','.join(grid.chords)}",
            f"--keys={','.join(grid.keys)}", f"--signal-seconds={grid.duration}"]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the 8-signal grid of 2-s signals and a Choi CNN of 2 layers of 16 maps, "
                             "exported with serving_default and deconvolve only")
    args = parser.parse_args(argv)

    ((_, model, info),) = _models(quick=args.quick, only="choi")
    if args.quick:  # the smoke run's Choi CNN: 2 layers (its tracing and its deconvolutions grow with the layers)
        model = choi_cnn(n_outputs=len(info.labels), n_filters=16, n_layers=2)
        info = dataclasses.replace(info, model=config_from_model(model))
    config = model.tfaural_config
    grid = QUICK_GRID if args.quick else signals.SignalGrid()
    with tempfile.TemporaryDirectory(prefix="tfaural-corr-job-") as scratch:
        root = Path(scratch)
        export_dir = exporter.export_model(model, info, root / "exports", verify=False,
                                           signatures="serving_default,deconvolve" if args.quick else None)
        start = time.perf_counter()
        rendered = signals.model_signals(grid, sample_rate=config.sample_rate, cache_dir=str(root / "signals"))
        render_seconds = time.perf_counter() - start
        samples = int(len(rendered[0].audio))
        maps = map_bytes(read_export_metadata(export_dir), None, signals=len(rendered), samples=samples)
        output = root / "correlation"
        command = [sys.executable, "-m", "beam_jobs.correlation", f"--model={export_dir}", f"--output={output}",
                   f"--signals={root / 'signals'}", *(_grid_flags(grid) if args.quick else [])]
        run = run_command(command, timeout=3600)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the job: this script's only child
        summary = json.loads((output / "summary.json").read_text())
        written = sorted(p.name for p in output.iterdir())
        if written != sorted(OUTPUT_FILES):
            raise RuntimeError(f"the job left {written} in its output folder, expected {sorted(OUTPUT_FILES)}")
        deconvolutions = len(rendered) * sum(-(-summary["model"]["features_per_layer"][str(layer)]
                                               // summary["features_per_call"][str(layer)])
                                             for layer in summary["layers"])  # one call per chunk of features
    report: dict[str, object] = {
        "benchmark": "correlation_job",
        "mode": "quick" if args.quick else "full",
        "grid": {"n_signals": len(rendered), "seconds": grid.duration, "sample_rate": config.sample_rate},
        "layers": len(summary["layers"]),
        "features_per_layer": int(config.n_filters),
        "maps_gib": round(maps / GIB, 3),
        "render_seconds": round(render_seconds, 2),
        "job_seconds": round(run["seconds"], 1),
        "pipeline_seconds": summary["timings_seconds"]["pipeline"],
        "deconvolutions": deconvolutions,
        "deconvolutions_per_minute": round(60 * deconvolutions / summary["timings_seconds"]["pipeline"], 1),
        "cpu_seconds": round(run["cpu_seconds"], 1),
        "peak_rss_gib": round(peak / GIB, 3),
        "peak_rss_over_maps": round(peak / maps, 3),
        "maps_folder_removed": not (output / MAPS_FOLDER).exists(),
        "table": summary["table"],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "environment": environment(),
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
