"""Throughput curve of ``python -m beam_jobs.tag``: catalogues of 1, 10, 100 and 1,000 tracks, two runners.

Prints one JSON object and draws ``--plot`` (PNG). On catalogues of ``--sizes`` music-like
tracks of ``--seconds`` s (44.1 kHz stereo, WAV/FLAC/MP3 in turn; at most 100 distinct
pieces, larger catalogues repeat them under other names: decoding and the model cost the
same for every copy) it times the job from command to exit, with musicnn's ``MTT_vgg``
imported by ``tfaural.pretrained`` (default hop, 161 frames), on

* the **DirectRunner** with the job's defaults (``python -m beam_jobs.tag`` with no runner flag:
  every core, the model in a process of its own);
* a **local Dask cluster** (``dask.distributed.LocalCluster``, one worker process per core, one
  thread each, started fresh for every run; its start is reported apart: a user's cluster is
  already running), with ``--runner=apache_beam.runners.dask.dask_runner.DaskRunner
  --dask_client_address=...``; every Dask worker loads the model.

For each runner, the least-squares line ``seconds = fixed + tracks / marginal rate`` through the
points gives the fixed cost (start-up) and the slope (tracks/s once running). The plot shows
tracks/s against catalogue size (log scale) and the wall time with its fitted line.

Usage:
    python benchmarks/tag_curve.py [--quick] [--sizes 1,10,100,1000] [--seconds 10] [--runners direct,dask]
                                   [--plot benchmarks/tag_curve.png] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import REPO, machine_load, music_catalogue, musicnn_export, run_command, tag_command

HERE = Path(__file__).resolve().parent
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUNNERS = ("direct", "dask")
DISTINCT = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny SampleCNN on catalogues of 1 and 3 tracks of 4 s")
    parser.add_argument("--sizes", default=None, help="comma-separated catalogue sizes (default 1,10,100,1000)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each track (default 10; quick 4)")
    parser.add_argument("--runners", default=None,
                        help="comma-separated subset of direct,dask (default both; quick: direct, as scaling.py "
                        "--quick already runs the Dask runner)")
    parser.add_argument("--plot", default=None,
                        help="PNG to draw (default benchmarks/tag_curve.png; quick: in the temporary folder)")
    parser.add_argument("--keep", default=None, help="keep the catalogues, export and outputs in this folder")
    return parser.parse_args(argv)


def catalogue(pieces: list[Path], folder: Path, size: int) -> Path:
    """``size`` tracks in ``folder``: the distinct pieces, then hard links to them under other names."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(size):
        source = pieces[index % len(pieces)]
        target = folder / f"{index:05d}-{source.name}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return folder


def fit(points: list[tuple[int, float]]) -> dict[str, float | None]:
    """Least-squares ``seconds = fixed + tracks / rate``: the fixed cost and the marginal tracks/s."""
    if len(points) < 2:
        return {"fixed_seconds": None, "marginal_tracks_per_second": None}
    tracks = np.array([p[0] for p in points], float)
    seconds = np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(tracks, seconds, 1)
    return {"fixed_seconds": round(float(intercept), 2),
            "marginal_tracks_per_second": None if slope <= 0 else round(float(1.0 / slope), 2)}


def run_once(runner: str, folder: Path, export_dir: str, output: Path, size: int) -> dict[str, Any]:
    """One timed job run (on Dask, in a fresh cluster)."""
    if runner == "direct":
        done = run_command(tag_command(f"{folder}/*", export_dir, output))
        cluster_seconds = None
    else:
        from dask.distributed import LocalCluster

        start = time.perf_counter()
        with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            cluster_seconds = time.perf_counter() - start
            done = run_command(tag_command(f"{folder}/*", export_dir, output, f"--runner={DASK_RUNNER}",
                                           f"--dask_client_address={cluster.scheduler_address}"))
    if f"tag: {size} of {size} track(s) ok" not in done["stderr"]:
        raise RuntimeError(f"{runner}: the job did not tag all {size} tracks: {done['stderr'][-3000:]}")
    record: dict[str, Any] = {"seconds": round(done["seconds"], 2),
                              "tracks_per_second": round(size / done["seconds"], 2)}
    if cluster_seconds is not None:
        record["cluster_start_seconds"] = round(cluster_seconds, 2)
    return record


def plot(curves: dict[str, dict[str, Any]], path: str, *, seconds: float) -> None:
    """Tracks/s against catalogue size, and wall time with the fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for runner, curve in curves.items():
        sizes = [int(s) for s in curve["points"]]
        rates = [curve["points"][str(s)]["tracks_per_second"] for s in sizes]
        walls = [curve["points"][str(s)]["seconds"] for s in sizes]
        label = {"direct": "DirectRunner (defaults)", "dask": "local Dask cluster"}[runner]
        rate_axis.plot(sizes, rates, "o-", label=label)
        line = time_axis.plot(sizes, walls, "o", label=label)[0]
        if curve["fixed_seconds"] is not None and curve["marginal_tracks_per_second"]:
            xs = np.linspace(0, max(sizes), 50)
            time_axis.plot(xs, curve["fixed_seconds"] + xs / curve["marginal_tracks_per_second"], "-",
                           color=line.get_color(), alpha=0.6,
                           label=f"{curve['fixed_seconds']:.1f} s + n / {curve['marginal_tracks_per_second']:.1f}/s")
    rate_axis.set_xscale("log")
    rate_axis.set_xlabel("tracks in the catalogue")
    rate_axis.set_ylabel("tracks per second (command to exit)")
    rate_axis.set_title(f"beam_jobs.tag, MTT_vgg, {seconds:g}-s tracks")
    time_axis.set_xlabel("tracks in the catalogue")
    time_axis.set_ylabel("wall seconds")
    time_axis.set_title("fixed cost and slope")
    for axis in (rate_axis, time_axis):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it (the committed report names no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def run(*, quick: bool = False, sizes: tuple[int, ...] | None = None, seconds: float | None = None,
        runners: tuple[str, ...] | None = None, plot_path: str | None = None, keep: str | None = None
        ) -> dict[str, Any]:
    """Measures every (runner, size); returns the JSON-serialisable results.

    ``runners`` defaults to both, and in a smoke run (``quick``) to the DirectRunner alone: ``scaling.py --quick``
    runs the Dask runner already, and its cluster took most of this entry's smoke run.
    """
    runners = runners or (("direct",) if quick else RUNNERS)
    sizes = sizes or ((1, 3) if quick else (1, 10, 100, 1000))
    seconds = seconds or (4.0 if quick else 10.0)
    unknown = sorted(set(runners) - set(RUNNERS))
    if unknown:
        raise SystemExit(f"--runners: unknown {unknown}; expected a subset of {','.join(RUNNERS)}")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-tag-curve-"))
    root.mkdir(parents=True, exist_ok=True)
    plot_path = plot_path or (str(Path(tempfile.gettempdir()) / "tfaural-tag-curve-quick.png") if quick
                              else str(HERE / "tag_curve.png"))
    try:
        load_before = machine_load()
        start = time.perf_counter()
        if quick:  # the job's fixed cost and slope, not the model's: the smoke run's tiny SampleCNN
            from beam_tag import TINY, export_samplecnn

            export_dir = export_samplecnn(str(root / "exports"), **TINY)
        else:
            export_dir = musicnn_export("MTT_vgg", root / "exports")
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pieces = music_catalogue(root / "pieces", tracks=min(max(sizes), DISTINCT), seconds=seconds)
        folders = {size: catalogue(pieces, root / f"catalogue-{size}", size) for size in sizes}
        generate_seconds = time.perf_counter() - start
        if not quick:  # page cache: TensorFlow's libraries, Beam's modules, the export, the audio
            run_once("direct", folders[min(sizes)], export_dir, root / "out" / "warmup", min(sizes))
        curves: dict[str, dict[str, Any]] = {}
        for runner in runners:
            points = {str(size): run_once(runner, folders[size], export_dir, root / "out" / f"{runner}-{size}", size)
                      for size in sizes}
            curves[runner] = {"points": points,
                              **fit([(int(s), p["seconds"]) for s, p in points.items()])}
        plot(curves, plot_path, seconds=seconds)
        return {
            "benchmark": "python -m beam_jobs.tag throughput against catalogue size (command to exit)",
            "model": ("tiny 3^5-SampleCNN (random weights)" if quick
                      else "musicnn MTT_vgg imported by tfaural.pretrained (16 kHz, hop 161 frames)"),
            "track_seconds": seconds,
            "source": {"sample_rate": 44100, "channels": 2, "formats": ["wav", "flac", "mp3"],
                       "distinct_pieces": len(pieces)},
            "sizes": list(sizes),
            "runners": curves,
            "fixed_seconds": {runner: c["fixed_seconds"] for runner, c in curves.items()},
            "marginal_tracks_per_second": {runner: c["marginal_tracks_per_second"] for runner, c in curves.items()},
            "plot": _shown(plot_path),
            "export_seconds": round(export_seconds, 1),
            "generate_seconds": round(generate_seconds, 1),
            "machine": {**machine_load(), "load_average_before": load_before["load_average"]},
            "quick": quick,
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    runners = tuple(r.strip() for r in args.runners.split(",") if r.strip()) if args.runners else None
    print(json.dumps(run(quick=args.quick, sizes=sizes, seconds=args.seconds, runners=runners, plot_path=args.plot,
                         keep=args.keep), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
