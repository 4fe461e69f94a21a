"""Scaling of ``beam_jobs.tag`` from 1 to 2 workers, on the local DirectRunner and on a local Dask cluster.

Prints one JSON object. On generated catalogues of ``--seconds``-long tracks (44.1 kHz
stereo, FLAC and WAV alternating; see ``beam_tag.generate_catalogue``) and one export (the
3^9-SampleCNN of Lee et al. 2018, random weights, 50 labels, 22,050 Hz), it times
``beam_jobs.tag.run`` end to end (launch, worker start-up, model load, decoding,
resampling, inference, writing the outputs) with

* the DirectRunner in multi-processing mode, ``--direct_num_workers=1`` and ``=2``;
* the Dask runner against a fresh ``dask.distributed.LocalCluster`` of 1 worker process
  and of 2 worker processes, one thread each (the cluster's start is timed apart: a
  user's cluster is already running; its workers still import TensorFlow and load the
  model during the job, which is counted).

Every configuration runs on two catalogues, ``--small`` and ``--tracks`` tracks. The
large one gives the raw end-to-end throughput; the difference quotient of the two (extra
audio over extra wall time) gives the marginal, steady-state throughput with the fixed
start-up cost taken out, and the intercept of that line estimates the start-up cost.
Throughput is in times real time (seconds of audio per wall second). Each figure is the
median of ``--repeats`` runs, after one untimed warm-up run (page cache, imports); the
runs of the configurations are interleaved so that a drifting background load spreads
over all of them. ``speedup_2_vs_1`` is the ratio of 2-worker to 1-worker throughput.

Beside the wall times, each configuration reports CPU seconds (medians): the launcher's
(which also runs the in-process Dask scheduler), the DirectRunner's worker processes
(``children``) and the Dask workers', and the Dask scheduler's task transitions, which show
the runner's per-partition overhead (one partition per track, up to 64). For the Dask
runner the TensorFlow thread settings found in the worker processes are reported
(``worker_threads``), to show whether two TensorFlow runtimes share two cores;
``--dask-tf-default-threads`` gives the workers TensorFlow's default of one thread per core
(``TF_NUM_INTRAOP_THREADS`` = cores), for comparison with what the job chooses.

``--quick`` is a smoke run (a tiny model, 2 tracks of 4 s, the large catalogue only, one
run, no warm-up, and 2 workers only): it checks that each runner runs with more than one
worker and that the JSON has its keys. The 1-worker runs, the same code with another worker
count, are left out: the figures of each runner's ``workers["1"]`` and the ``speedup_2_vs_1*``
figures are ``null``, as are the marginal figures; the figures it has are start-up dominated.

Usage:
    python benchmarks/scaling.py [--quick] [--tracks 16] [--small 2] [--seconds 30] [--repeats 2]
                                 [--runners direct,dask] [--dask-tf-default-threads] [--export-dir DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
from _timing import environment
from beam_tag import SAMPLE_RATE, SOURCE_RATE, TINY, export_samplecnn, generate_catalogue

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUNNERS = ("direct", "dask")
WORKERS = (1, 2)
#: The smoke run's worker counts: the 2-worker runs (the 1-worker ones run the same code).
QUICK_WORKERS = (2,)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (under 1 min): 2 tracks of 4 s, a tiny SampleCNN, one run, 2 workers only (no "
                             "1-worker runs: the speed-ups are null), no small catalogue and no warm-up; checks "
                             "that each runner runs, not its speed")
    parser.add_argument("--tracks", type=int, default=None, help="tracks of the large catalogue (default 16; quick 2)")
    parser.add_argument("--small", type=int, default=None,
                        help="tracks of the small catalogue (default 2; quick: none); 0 skips it")
    parser.add_argument("--seconds", type=float, default=None, help="length of each track (default 30; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (default 2; quick 1)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated subset of direct,dask")
    parser.add_argument("--dask-tf-default-threads", action="store_true",
                        help="Dask workers run TensorFlow with its default threads (one per core) instead of the "
                             "job's choice (TF_NUM_INTRAOP_THREADS=cores in the workers' environment)")
    parser.add_argument("--export-dir", default=None,
                        help="reuse this export version directory instead of exporting a fresh SampleCNN")
    parser.add_argument("--keep", default=None, help="keep the catalogues, export and outputs in this folder")
    return parser.parse_args(argv)


#: The smoke run's small 3^5-SampleCNN (729-sample segments).


def link_subset(paths: list[Path], folder: Path) -> None:
    """Hard-links (or copies) ``paths`` into ``folder``: the small catalogue is the start of the large one."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            os.link(path, folder / path.name)
        except OSError:
            shutil.copy2(path, folder / path.name)


def tf_threads_probe() -> dict[str, Any]:
    """Runs in a Dask worker process: its TensorFlow thread settings and environment."""
    import os
    import resource
    import sys

    usage = resource.getrusage(resource.RUSAGE_SELF)
    info: dict[str, Any] = {"pid": os.getpid(), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                            "os_threads": len(os.listdir("/proc/self/task"))
                            if os.path.isdir("/proc/self/task") else None,
                            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                            "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS"),
                            "tensorflow_imported": "tensorflow" in sys.modules}
    if info["tensorflow_imported"]:
        import tensorflow as tf

        info["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()  # 0: one per core
        info["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return info


@contextmanager
def dask_cluster(workers: int, *, env: dict[str, str]) -> Iterator[tuple[str, Any, float]]:
    """A fresh local cluster of ``workers`` processes of one thread: ``(address, client, start seconds)``."""
    from dask.distributed import Client, LocalCluster

    start = time.perf_counter()
    with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                       env=env) as cluster, Client(cluster) as client):
        client.wait_for_workers(workers)
        yield cluster.scheduler_address, client, time.perf_counter() - start


def run_tag(folder: Path, export_dir: str, output: Path, runner_args: list[str], *,
            expected: int) -> dict[str, float]:
    """Runs ``beam_jobs.tag`` on ``folder``; checks that every track was tagged.

    Returns:
        ``seconds`` (wall), ``launcher_cpu_seconds`` (this process: the launcher, and the
        scheduler of an in-process Dask cluster) and ``children_cpu_seconds`` (child
        processes that ended during the run: the DirectRunner's workers).
    """
    from beam_jobs import tag
    from beam_jobs.accounting import summarize

    cpu, children = time.process_time(), _children_cpu()
    start = time.perf_counter()
    tag.run([f"--input={folder}/*", f"--model={export_dir}", f"--output={output}", *runner_args])
    seconds = time.perf_counter() - start
    usage = {"seconds": seconds, "launcher_cpu_seconds": time.process_time() - cpu,
             "children_cpu_seconds": _children_cpu() - children}
    summary = summarize(str(output))
    if summary.ok != expected:
        raise RuntimeError(f"the job tagged {summary.ok} of {expected} tracks: {summary.describe('tag')}")
    return usage


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _scheduler_transitions(dask_scheduler: Any = None) -> int:
    """Runs on the Dask scheduler: task state transitions so far (a measure of its work)."""
    return int(dask_scheduler.transition_counter)


def direct_args(workers: int) -> list[str]:
    return ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]


def one_run(runner: str, workers: int, folder: Path, export_dir: str, output: Path, *, expected: int,
            dask_env: dict[str, str]) -> dict[str, Any]:
    """One timed job run; on Dask inside a fresh cluster (whose start and close are reported apart)."""
    if runner == "direct":
        return run_tag(folder, export_dir, output, direct_args(workers), expected=expected)
    with dask_cluster(workers, env=dask_env) as (address, client, cluster_seconds):
        transitions = client.run_on_scheduler(_scheduler_transitions)
        record = run_tag(folder, export_dir, output, [f"--runner={DASK_RUNNER}", f"--dask_client_address={address}"],
                         expected=expected)
        record["scheduler_transitions"] = client.run_on_scheduler(_scheduler_transitions) - transitions
        threads = sorted(client.run(tf_threads_probe).values(), key=lambda info: info["pid"])
        closing = time.perf_counter()
    record["workers_cpu_seconds"] = sum(info["cpu_seconds"] for info in threads)
    return {**record, "cluster_start_seconds": cluster_seconds, "cluster_close_seconds": time.perf_counter() - closing,
            "worker_threads": threads}


def line_fit(small: tuple[float, float], large: tuple[float, float]) -> tuple[float | None, float | None]:
    """``(marginal x real time, start-up seconds)`` of the line through ``(audio s, wall s)`` points."""
    (a0, t0), (a1, t1) = small, large
    if a1 <= a0 or t1 <= t0:
        return None, None  # noise swamped the difference
    marginal = (a1 - a0) / (t1 - t0)
    return marginal, t0 - a0 / marginal


def summarise(runs: dict[str, list[dict[str, Any]]], audio: dict[str, float]) -> dict[str, Any]:
    """Medians, throughputs and the start-up estimate of one (runner, workers) configuration."""
    out: dict[str, Any] = {}
    medians = {}
    for size in ("large", "small"):
        records = runs.get(size) or []
        if not records:
            out[f"seconds_{size}_median"] = out[f"x_real_time_{size}"] = None
            continue
        seconds = [r["seconds"] for r in records]
        medians[size] = statistics.median(seconds)
        out[f"seconds_{size}"] = [round(s, 3) for s in seconds]
        out[f"seconds_{size}_median"] = round(medians[size], 3)
        out[f"x_real_time_{size}"] = round(audio[size] / medians[size], 2)
        for key in ("launcher_cpu_seconds", "children_cpu_seconds", "workers_cpu_seconds", "scheduler_transitions"):
            values = [r[key] for r in records if key in r]
            if values:
                out[f"{key}_{size}_median"] = round(statistics.median(values), 2)
    out["x_real_time"] = out["x_real_time_large"]
    marginal = startup = None
    if "small" in medians:
        marginal, startup = line_fit((audio["small"], medians["small"]), (audio["large"], medians["large"]))
    out["x_real_time_marginal"] = None if marginal is None else round(marginal, 2)
    out["startup_seconds"] = None if startup is None else round(startup, 2)
    dask_runs = [r for records in runs.values() for r in records if "cluster_start_seconds" in r]
    if dask_runs:
        out["cluster_start_seconds"] = [round(r["cluster_start_seconds"], 2) for r in dask_runs]
        out["cluster_close_seconds"] = [round(r["cluster_close_seconds"], 2) for r in dask_runs]
        out["worker_threads"] = dask_runs[-1]["worker_threads"]
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else round(numerator / denominator, 3)


def run(*, quick: bool = False, tracks: int | None = None, small: int | None = None, seconds: float | None = None,
        repeats: int | None = None, runners: tuple[str, ...] = RUNNERS, dask_tf_default_threads: bool = False,
        export_dir: str | None = None, keep: str | None = None) -> dict[str, Any]:
    """Runs every configuration and returns the JSON-serialisable results."""
    tracks = tracks or (2 if quick else 16)
    small = (0 if quick else 2) if small is None else small
    seconds = seconds or (4.0 if quick else 30.0)
    repeats = repeats or (1 if quick else 2)
    if not 0 <= small < tracks:
        raise SystemExit(f"--small {small} must be below --tracks {tracks}")
    unknown = sorted(set(runners) - set(RUNNERS))
    if unknown:
        raise SystemExit(f"--runners: unknown {unknown}; expected a subset of {','.join(RUNNERS)}")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        if export_dir is None:
            export_dir = export_samplecnn(str(root / "export"), **(TINY if quick else {}))
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        paths = generate_catalogue(root / "large", tracks=tracks, seconds=seconds)
        folders = {"large": root / "large"}
        counts = {"large": tracks}
        if small:
            link_subset(paths[:small], root / "small")
            folders["small"], counts["small"] = root / "small", small
        generate_seconds = time.perf_counter() - start
        audio = {size: n * seconds for size, n in counts.items()}
        dask_env = {"TF_NUM_INTRAOP_THREADS": str(os.cpu_count() or 1)} if dask_tf_default_threads else {}

        warmup_seconds = None
        if not quick:  # page cache (TensorFlow's libraries, the export, the audio), the launcher's imports
            size = "small" if small else "large"
            warmup_seconds = run_tag(folders[size], export_dir, root / "out" / "warmup", direct_args(1),
                                     expected=counts[size])["seconds"]

        measured_workers = QUICK_WORKERS if quick else WORKERS
        configs = [(runner, workers) for runner in runners for workers in measured_workers]
        records: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {
            config: {size: [] for size in folders} for config in configs}
        started = time.perf_counter()
        for rep in range(repeats):
            order = configs if rep % 2 == 0 else configs[::-1]
            for runner, workers in order:
                for size in folders:
                    output = root / "out" / f"{runner}-{workers}-{size}-{rep}"
                    record = one_run(runner, workers, folders[size], export_dir, output, expected=counts[size],
                                     dask_env=dask_env)
                    records[(runner, workers)][size].append(record)
                    logging.warning("scaling: %s, %d worker(s), %s catalogue, run %d: %.1f s", runner, workers, size,
                                    rep + 1, record["seconds"])
        jobs_seconds = time.perf_counter() - started

        by_runner: dict[str, Any] = {}
        for runner in runners:
            measured = {w: summarise(records[(runner, w)], audio) for w in measured_workers}
            keys = next(iter(measured.values()))  # a worker count not run (quick): its keys, every figure null
            per_workers = {str(w): measured.get(w) or dict.fromkeys(keys) for w in WORKERS}
            one, two = per_workers["1"], per_workers["2"]
            by_runner[runner] = {
                "options": ([*direct_args(0)[:2], "--direct_num_workers=N"] if runner == "direct"
                            else [f"--runner={DASK_RUNNER}", "--dask_client_address=<LocalCluster(n_workers=N, "
                                  "threads_per_worker=1, processes=True)>"]),
                "workers": per_workers,
                "speedup_2_vs_1": _ratio(two["x_real_time"], one["x_real_time"]),
                "speedup_2_vs_1_small": _ratio(two["x_real_time_small"], one["x_real_time_small"]),
                "speedup_2_vs_1_marginal": _ratio(two["x_real_time_marginal"], one["x_real_time_marginal"]),
            }
        result: dict[str, Any] = {
            "benchmark": "beam_jobs.tag throughput with 1 vs 2 workers (DirectRunner multi-processing, Dask)",
            "model": ("tiny 3^5-SampleCNN" if quick else "3^9-SampleCNN") + " (random weights, 50 labels), "
                     "SavedModel serving_default",
            "sample_rate": SAMPLE_RATE,
            "source": {"sample_rate": SOURCE_RATE, "channels": 2, "formats": ["flac", "wav"]},
            "track_seconds": seconds,
            "catalogues": {size: {"tracks": counts[size], "audio_seconds": audio[size]} for size in counts},
            "repeats": repeats,
            "dask_tf_threads": ("TensorFlow's default (TF_NUM_INTRAOP_THREADS=cores)" if dask_tf_default_threads
                                else "the job's choice"),
            "runners": by_runner,
            "speedup_2_vs_1": {runner: by_runner[runner]["speedup_2_vs_1"] for runner in runners},
            "speedup_2_vs_1_marginal": {runner: by_runner[runner]["speedup_2_vs_1_marginal"] for runner in runners},
            "warmup_seconds": None if warmup_seconds is None else round(warmup_seconds, 1),
            "jobs_seconds": round(jobs_seconds, 1),
            "export_seconds": round(export_seconds, 1),
            "generate_seconds": round(generate_seconds, 1),
            "quick": quick,
        }
        result.update(environment())
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("distributed", "apache_beam", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    runners = tuple(r.strip() for r in args.runners.split(",") if r.strip())
    result = run(quick=args.quick, tracks=args.tracks, small=args.small, seconds=args.seconds, repeats=args.repeats,
                 runners=runners, dask_tf_default_threads=args.dask_tf_default_threads, export_dir=args.export_dir,
                 keep=args.keep)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
