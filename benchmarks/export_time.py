"""Export time, from a trained model to a verified SavedModel version, with the verification's processes
started ahead (as ``export_model`` does) and started after the export is written (as it did before).

A verified export (:func:`export.export_model`, ``python -m export``) traces every signature in-process for
its reference outputs, writes the SavedModel, and then checks it in fresh processes (a TF2 loader, and a
TF1 session that also runs ``saved_model_cli``; :mod:`export.verify`), each of which imports TensorFlow first. Since
``cbf5e61`` those processes start while the exporter traces (:class:`export.verify.Processes`): on two cores
the imports run on the core the tracing leaves free. This entry measures what that gains, side by side:

* **ahead**: ``export_model(..., verify=True)``, the exporter as it is;
* **after**: ``export_model(..., verify=False)`` (timed alone as **write**: the unverified export), then
  ``verify_export(version)``, which starts its processes only then: the same checks in the old order.

Each measurement runs in a fresh process (``--child``), as ``python -m export`` does: the model is loaded
from its run directory (not timed), then the export is timed, wall clock and CPU seconds (this process and
the verification's). The two modes alternate within a round, in turn first. Cases: the paper-size Choi CNN
and the 3^9-SampleCNN (random weights) with every signature, and musicnn's ``MTT_vgg`` (imported by
``tfaural.pretrained``) with every signature and with ``--signatures tagging``.

Per case: the medians ``ahead_seconds``, ``after_seconds`` and ``write_seconds``, their ratio
``after_vs_ahead`` (above 1: starting ahead gains), what verification adds to the unverified export in each
mode (``verification_seconds_ahead`` / ``_after``: the mode's median minus ``write_seconds``), the CPU
seconds, and every round.

Prints one JSON object. Usage:
    python benchmarks/export_time.py [--quick] [--rounds 3] [--cases choi-all,mtt_vgg-tagging,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import REPO, job_env, machine_load

#: (case, model, signatures) of a timed run; ``--quick`` runs a small Choi CNN's tagging export alone.
CASES = (("choi-all", "choi", "all"), ("samplecnn_3_9-all", "samplecnn_3_9", "all"),
         ("mtt_vgg-all", "mtt_vgg", "all"), ("mtt_vgg-tagging", "mtt_vgg", "tagging"))
QUICK_CASES = (("choi_small-tagging", "choi_small", "tagging"),)
MODES = ("ahead", "after")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a small Choi CNN's tagging export, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both modes per case (default 3, quick 1)")
    parser.add_argument("--cases", default=None,
                        help=f"comma-separated cases (default: {','.join(c[0] for c in CASES)})")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "RUN_DIR", "SIGNATURES", "EXPORT_BASE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--save-run", nargs=2, metavar=("MODEL", "RUN_DIR"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _save_run(model_name: str, run_dir: Path) -> None:
    """Writes the run directory ``model_name`` is exported from: ``serving.py``'s models (random weights;
    ``choi_small`` is its smoke run's Choi CNN), or musicnn's ``MTT_vgg`` imported."""
    import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
    from serving import _models

    from tfaural.training.run import save_run

    if model_name == "mtt_vgg":
        from tfaural.pretrained.catalogue import import_run

        import_run("musicnn/MTT_vgg", run_dir, verify=False, overwrite=True)
        return
    small = model_name == "choi_small"
    ((_, model, info),) = _models(quick=small, only="choi" if small else model_name)
    save_run(run_dir, model, info)


def _cpu_seconds() -> float:
    """User + system seconds of this process and of its reaped children (the verification's processes)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def child(mode: str, run_dir: str, signatures: str, export_base: str) -> dict[str, Any]:
    """One measurement, in a fresh process: loads the run, exports it in ``mode``; returns the seconds."""
    import _kernels  # noqa: F401

    from export.exporter import export_model
    from export.verify import verify_export
    from tfaural.training.run import load_run

    model, info = load_run(run_dir)
    cpu, start = _cpu_seconds(), time.perf_counter()
    if mode == "ahead":
        export_model(model, info, export_base, signatures=signatures, verify=True)
        return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu}
    if mode != "after":
        raise ValueError(f"unknown mode {mode!r}")
    version = export_model(model, info, export_base, signatures=signatures, verify=False)
    write = time.perf_counter() - start
    report = verify_export(version)
    if not report.get("ok"):
        raise RuntimeError(f"verification failed: {report}")
    return {"seconds": time.perf_counter() - start, "write_seconds": write, "cpu_seconds": _cpu_seconds() - cpu}


def _subprocess(arguments: list[str], what: str) -> str:
    """Runs this script with ``arguments`` in a fresh process; returns its output (raises with its tail)."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=job_env(), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout


def _measure(mode: str, run_dir: Path, signatures: str, export_base: Path) -> dict[str, Any]:
    """Runs one ``--child`` measurement."""
    output = _subprocess(["--child", mode, str(run_dir), signatures, str(export_base)],
                         f"the {mode} export of {run_dir.name}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def run(*, quick: bool = False, rounds: int | None = None, cases: list[str] | None = None) -> dict[str, Any]:
    """Measures every case; returns the JSON-serialisable results."""
    rounds = (1 if quick else 3) if rounds is None else rounds
    if rounds < 1:
        raise SystemExit(f"--rounds {rounds} is invalid: expected a positive number of rounds")
    chosen = QUICK_CASES if quick else CASES
    if cases:
        known = {c[0]: c for c in CASES + QUICK_CASES}
        unknown = sorted(set(cases) - set(known))
        if unknown:
            raise SystemExit(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(known)}")
        chosen = tuple(known[c] for c in cases)
    results: dict[str, Any] = {
        "benchmark": "export to a verified version: verification processes started ahead vs after the write",
        "rounds": rounds, "machine": machine_load(), "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="tfaural-bench-export-") as scratch:
        root = Path(scratch)
        runs: dict[str, Path] = {}
        for case, model_name, signatures in chosen:
            if model_name not in runs:
                runs[model_name] = root / f"run-{model_name}"
                _subprocess(["--save-run", model_name, str(runs[model_name])], f"saving the {model_name} run")
            measured: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            for index in range(rounds):
                order = MODES if index % 2 == 0 else MODES[::-1]
                for mode in order:
                    base = root / f"export-{case}-{mode}-{index}"
                    measured[mode].append(_measure(mode, runs[model_name], signatures, base))
            ahead = _median([m["seconds"] for m in measured["ahead"]])
            after = _median([m["seconds"] for m in measured["after"]])
            write = _median([m["write_seconds"] for m in measured["after"]])
            results["cases"][case] = {
                "model": model_name, "signatures": signatures,
                "ahead_seconds": ahead, "after_seconds": after,
                "after_vs_ahead": round(after / ahead, 3),
                "write_seconds": write,
                "verification_seconds_ahead": round(ahead - write, 2),
                "verification_seconds_after": round(after - write, 2),
                "ahead_cpu_seconds": _median([m["cpu_seconds"] for m in measured["ahead"]]),
                "after_cpu_seconds": _median([m["cpu_seconds"] for m in measured["after"]]),
                "rounds": {mode: [{k: round(v, 2) for k, v in m.items()} for m in values]
                           for mode, values in measured.items()},
            }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if args.save_run:
        _save_run(args.save_run[0], Path(args.save_run[1]))
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    print(json.dumps(run(quick=args.quick, rounds=args.rounds, cases=cases), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
