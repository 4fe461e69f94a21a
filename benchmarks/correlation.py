"""The correlation analysis of Choi et al. (2015, §4.2) on the full model-signal grid.

224 model signals (7 timbres × 8 chord types × 4 keys, 4 s at 11,025 Hz) × 5 layers × 64
features: every feature deconvolved for every signal, then the pairwise correlations by
attribute (:func:`tfaural.correlation.analyse`, the library path, one layer at a time).

Target (issue 9): the full grid in ≤ 10 minutes on this 2-core CPU. ``--quick`` runs a
smoke run: 2 timbres × 2 chords × 2 keys = 8 signals of 2 s through a Choi CNN of 16 filters
per layer (its full-grid extrapolation is not a measurement of the target).

Run ``python benchmarks/correlation.py [--quick] [--run RUN_DIR] [--output DIR]``; prints one
JSON object. Without ``--run`` the Choi CNN has random weights (the timing does not depend
on the weights); ``--output`` also writes the four result files (including figure10.png).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
from _timing import environment

from tfaural import correlation, signals
from tfaural.models import choi_cnn

TARGET_SECONDS = 600.0
FULL_GRID = signals.SignalGrid()
QUICK_GRID = signals.SignalGrid(timbres=("sine", "piano"), chords=("major", "minor"), keys=("Eb2", "G4"), duration=2.0)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: an 8-signal grid of 2-s signals and a Choi CNN of 16 filters per layer "
                             "(the full-grid time it extrapolates is not comparable)")
    parser.add_argument("--run", default=None, help="a training run directory (default: random weights)")
    parser.add_argument("--signals", default=None, help="cache folder for the rendered signals (default: a temp dir)")
    parser.add_argument("--output", default=None, help="also write correlations.csv, ..., figure10.png here")
    parser.add_argument("--batch-size", type=int, default=1, help="signals per deconvolution call")
    args = parser.parse_args(argv)

    if args.run:
        from tfaural.training.run import load_run

        model, info = load_run(args.run)
        model_description = {"run": os.path.abspath(args.run), "labels": list(info.labels), "run_id": info.run_id}
    else:
        model = choi_cnn(n_outputs=3, **({"n_filters": 16} if args.quick else {}))
        model_description = {"run": None, "weights": "random"}
    config = model.tfaural_config
    grid = QUICK_GRID if args.quick else FULL_GRID

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        sigs = signals.model_signals(grid, sample_rate=config.sample_rate, cache_dir=args.signals or scratch)
        render_seconds = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    result = correlation.analyse(model, sigs, batch_size=args.batch_size, progress=False, keep_pairs=False)
    analysis_seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_start

    n_layers = len({row.layer for row in result.table})
    per_signal = analysis_seconds / len(sigs)
    full_estimate = per_signal * len(FULL_GRID)
    report: dict[str, object] = {
        "benchmark": "correlation",
        "mode": "quick" if args.quick else "full",
        "grid": {"timbres": list(grid.timbres), "chords": list(grid.chords), "keys": list(grid.keys),
                 "seconds": grid.duration, "sample_rate": config.sample_rate, "n_signals": len(sigs)},
        "layers": n_layers,
        "features_per_layer": int(getattr(config, "n_filters", 0)),
        "model": model_description,
        "render_seconds": round(render_seconds, 2),
        "analysis_seconds": round(analysis_seconds, 2),
        "deconvolution_seconds": round(result.timings["deconvolution"], 2),
        "correlation_seconds": round(result.timings["correlation"], 2),
        "seconds_per_signal": round(per_signal, 3),
        # Other processes share the 2 cores: CPU time used / cores is what an idle machine would take
        # (an estimate: it assumes the analysis keeps every core busy, as the deconvolution does).
        "analysis_cpu_seconds": round(cpu_seconds, 1),
        "cores_used_on_average": round(cpu_seconds / analysis_seconds, 2),
        "idle_machine_estimate_seconds": round(cpu_seconds / (os.cpu_count() or 1), 1),
        "full_grid_seconds": round(analysis_seconds if not args.quick else full_estimate, 1),
        "full_grid_seconds_is_extrapolated": bool(args.quick),
        "target_seconds": TARGET_SECONDS,
        "meets_target": (analysis_seconds if not args.quick else full_estimate) <= TARGET_SECONDS,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "table": [row.to_dict() for row in result.table],
        "environment": environment(),
    }
    if args.output:
        correlation.save(result, args.output, summary={"grid": report["grid"], "model": model_description,
                                                        "benchmark": {k: report[k] for k in (
                                                            "render_seconds", "analysis_seconds",
                                                            "deconvolution_seconds", "correlation_seconds")}})
        report["output"] = os.path.abspath(args.output)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
