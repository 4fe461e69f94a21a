"""tfaural against musicnn's own tagger: the same published weights, the same files, the same machine, one run.

Prints one JSON object. On a generated catalogue (``--tracks`` music-like pieces of
``--seconds`` s: chords over drums, :func:`tfaural.pretrained.probes.music_like`; 44.1 kHz
stereo; WAV, FLAC and MP3 in turn), for each musicnn model (``MTT_vgg``, ``MTT_musicnn``):

* **musicnn**: its own ``tagger.py``/``extractor.py`` (musicnn 0.1.0 from PyPI, unchanged), file
  by file as its README shows: ``top_tags(file, model=..., topN=5)`` in one Python process
  (``benchmarks/musicnn_v1_layers.py``, which installs a stand-in for the removed
  ``tf.compat.v1.layers`` with TF1's variable names so that musicnn's Saver restores its
  checkpoint; see that module). Timed from command to exit. musicnn cuts each track into
  non-overlapping 187-frame patches (its default). It runs with TensorFlow's default kernels, as its
  users run it; tfaural's job and the model alone with those tfaural's command lines choose (oneDNN's
  on AVX2 CPUs too, ``tfaural.cpu``; reported under ``onednn``);
* **tfaural**: ``python -m beam_jobs.tag --input ... --model EXPORT --output ...`` with the
  default runner (every core), on the model imported by ``python -m tfaural.pretrained`` and
  exported by ``python -m export``, timed from command to exit; for the vgg models once with the
  default hop (161 frames: the frames the model can hear tile the track) and once with
  non-overlapping patches (``--hop-frames 187``, musicnn's patching). A one-track run of the
  same command measures the fixed start-up, for the throughput after start-up;
* **model only**: the export's ``serving_default`` signature in this process on the already
  decoded 16-kHz waveforms (batches of 1 and of 8 tracks; the faster counts), after a warm-up
  call: the rate the model allows at that patching.

Each model's runs (musicnn, then ``--repeats`` rounds of tfaural, model only and the one-track
start-up in turn; 3 by default) follow one another, so that a background load that drifts over the
benchmark affects them alike; the medians over the rounds are reported (each round's figures and
ratio too: on a shared 2-core VM the CPU time of identical work drifts from minute to minute, by up to
16-18 % between rounds in RESULTS.md's run, more than the margins the verdicts turn on). Every round
must tag every track as the first did. The first round times model only with batches of 1 and of 8;
the others with the faster.

Reported: tracks/s and times real time of each, the ratios tfaural/musicnn (target >= 3) and
end to end / model only (target >= 0.8) in wall time, the same ratios in CPU seconds (every
process's user + system time: the work done, whatever share of the cores a shared machine left
to each run), and the agreement of the top-5 tags (overlap of the
two sets, identical sets, same best tag) over all tracks and over those where musicnn's float16
front end stays finite (the share of infinite mel bins per file is measured with musicnn's own
``batch_data``, untimed). musicnn's own code builds ``MSD_vgg`` with ``MTT_vgg``'s pools (see
``docs/pretrained.md``), so this benchmark compares the MTT models only.

Usage:
    python benchmarks/peer_musicnn.py [--quick] [--tracks 100] [--seconds 30] [--models MTT_vgg,MTT_musicnn]
                                      [--keep DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _jobs import (
    machine_load,
    music_catalogue,
    musicnn_export,
    read_tags,
    run_command,
    tag_command,
)

from tfaural.cpu import onednn_state, peer_environment

HERE = Path(__file__).resolve().parent
MODELS = ("MTT_vgg", "MTT_musicnn")
TOP_N = 5
SAMPLE_RATE = 16000
PATCH_SAMPLES = 47616  # 187 centred frames of hop 256
TARGET_VS_MUSICNN = 3.0
TARGET_VS_MODEL = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min on a quiet machine): 3 tracks of 10 s, MTT_vgg with its default "
                             "hop only, no import verification, no start-up probe; checks that it runs, not the speed")
    parser.add_argument("--tracks", type=int, default=None, help="generated tracks (default 100; quick 3)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each track (default 30; quick 10)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of MTT_vgg,MTT_musicnn")
    parser.add_argument("--keep", default=None, help="keep the catalogue, runs, exports and outputs in this folder")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of tfaural / model only / start-up per model, in turn (default 3; quick 1): "
                             "the medians are reported")
    return parser.parse_args(argv)


def run_musicnn(model: str, paths: list[Path]) -> dict[str, Any]:
    """musicnn's README loop in a process of its own, timed from command to exit."""
    done = run_command([sys.executable, str(HERE / "musicnn_v1_layers.py"), "--model", model, "--top-n", str(TOP_N),
                        *map(str, paths)], peer=True)
    out = json.loads(done["stdout"].strip().splitlines()[-1])
    per_file = out["per_file_seconds"]
    return {"seconds": done["seconds"], "cpu_seconds": done["cpu_seconds"], "loop_seconds": out["seconds"],
            "first_file_seconds": per_file[0],
            "per_file_seconds_median": statistics.median(per_file[1:] if len(per_file) > 1 else per_file),
            "tags": {Path(p).name: tags for p, tags in out["tags"].items()}}


def front_end_overflow(paths: list[Path]) -> dict[str, float]:
    """Share of infinite bins of musicnn's float16 log-mel (its ``batch_data``), per file name (untimed)."""
    done = run_command([sys.executable, str(HERE / "musicnn_v1_layers.py"), "--overflow-only", *map(str, paths)],
                       peer=True)
    return {Path(p).name: v for p, v in json.loads(done["stdout"].strip().splitlines()[-1]).items()}


def run_tfaural(folder: Path, export_dir: str, output: Path, *, expected: int) -> dict[str, Any]:
    """``python -m beam_jobs.tag`` from the command line, timed from command to exit."""
    done = run_command(tag_command(f"{folder}/*", export_dir, output))
    if f"tag: {expected} of {expected} track(s) ok" not in done["stderr"]:
        raise RuntimeError(f"the tag job did not tag every track: {done['stderr'][-3000:]}")
    tags = read_tags(output)
    return {"seconds": done["seconds"], "cpu_seconds": done["cpu_seconds"],
            "tags": {name: [label for label, _ in record["top_k"]] for name, record in tags.items()}}


def decoded(paths: list[Path]) -> list[np.ndarray]:
    """The tracks as the job decodes them: mono, 16 kHz (tfaural.audio)."""
    from tfaural import audio

    return [audio.load(str(path), sample_rate=SAMPLE_RATE)[0] for path in paths]


def model_only(export_dir: str, waveforms: list[np.ndarray], *, batches: tuple[int, ...] = (1, 8)) -> dict[str, Any]:
    """The export's ``serving_default`` on decoded waveforms, after a warm-up call: for each batch size in
    ``batches`` (1, and 8 equal-length tracks per call) the time of the whole catalogue; the faster counts."""
    import tensorflow as tf

    from beam_jobs.model_process import load_signature

    _, serving = load_signature(export_dir, "serving_default")
    serving(waveform=tf.constant(waveforms[0][np.newaxis]))["scores"].numpy()  # warm-up
    groups: dict[int, list[np.ndarray]] = {}
    for y in waveforms:
        groups.setdefault(len(y), []).append(y)
    timed: dict[int, tuple[float, float]] = {}
    for batch in batches:
        start, cpu = time.perf_counter(), time.process_time()
        for same in groups.values():
            for i in range(0, len(same), batch):
                serving(waveform=tf.constant(np.stack(same[i:i + batch])))["scores"].numpy()
        timed[batch] = (time.perf_counter() - start, time.process_time() - cpu)
    best = min(timed, key=lambda batch: timed[batch][0])
    return {**{f"seconds_batch_{batch}": seconds for batch, (seconds, _) in timed.items()},
            "seconds": timed[best][0], "cpu_seconds": timed[best][1], "batch": best}


def patch_count(waveforms: list[np.ndarray], hop: int) -> int:
    """Patches the export's serving_default runs: whole 47,616-sample patches every ``hop`` samples."""
    return sum(max(0, (len(y) - PATCH_SAMPLES) // hop + 1) for y in waveforms)


def agreement(ours: dict[str, list[str]], theirs: dict[str, list[str]], names: list[str]) -> dict[str, Any]:
    """Top-5 agreement over ``names``: mean overlap of the sets (0-5), identical sets, same best tag."""
    if not names:
        return {"tracks": 0}
    overlap = [len(set(ours[n]) & set(theirs[n])) for n in names]
    return {"tracks": len(names), "mean_overlap_of_5": round(float(np.mean(overlap)), 3),
            "identical_sets": round(float(np.mean([set(ours[n]) == set(theirs[n]) for n in names])), 3),
            "same_best_tag": round(float(np.mean([ours[n][0] == theirs[n][0] for n in names])), 3),
            "identical_ranking": round(float(np.mean([ours[n] == theirs[n] for n in names])), 3)}


def median(rounds: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


def speed(seconds: float, tracks: int, audio_seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 2), "tracks_per_second": round(tracks / seconds, 3),
            "x_real_time": round(audio_seconds / seconds, 1)}


def run(*, quick: bool = False, tracks: int | None = None, seconds: float | None = None,
        models: tuple[str, ...] = MODELS, keep: str | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Runs every comparison; returns the JSON-serialisable results."""
    repeats = repeats or (1 if quick else 3)
    if repeats < 1:
        raise SystemExit(f"--repeats {repeats}: expected at least 1")
    tracks = tracks or (3 if quick else 100)
    seconds = seconds or (10.0 if quick else 30.0)
    models = ("MTT_vgg",) if quick else models
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected a subset of {','.join(MODELS)}")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tfaural-peer-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        load_before = machine_load()
        start = time.perf_counter()
        paths = music_catalogue(root / "audio", tracks=tracks, seconds=seconds)
        generate_seconds = time.perf_counter() - start
        audio_seconds = tracks * seconds
        one = music_catalogue(root / "one", tracks=1, seconds=seconds, formats=("flac",))[0]
        configs = [(m, hop) for m in models for hop in ((None, 187) if "vgg" in m and not quick else (None,))]
        start = time.perf_counter()
        exports = {(m, hop): musicnn_export(m, root / "exports", hop_frames=hop, verify=not quick)
                   for m, hop in configs}
        export_seconds = time.perf_counter() - start
        overflow = front_end_overflow(paths)
        finite = sorted(name for name, share in overflow.items() if share == 0.0)

        waveforms = decoded(paths)
        theirs: dict[str, dict[str, Any]] = {}
        ours: dict[tuple[str, int | None], dict[str, Any]] = {}
        alone: dict[tuple[str, int | None], dict[str, Any]] = {}
        rounds: dict[tuple[str, int | None], list[dict[str, float]]] = {}
        for m, hop in configs:  # each model's runs back to back: a drifting background load hits them alike
            if m not in theirs:
                theirs[m] = run_musicnn(m, paths)
            key = f"{m}-{hop or 'default'}"
            rounds[(m, hop)] = []
            for r in range(repeats):  # tfaural, model only and start-up in turn, `repeats` times
                mine = run_tfaural(paths[0].parent, exports[(m, hop)], root / "tags" / key, expected=tracks)
                model = model_only(exports[(m, hop)], waveforms,
                                   batches=(1, 8) if r == 0 else (int(alone[(m, hop)]["batch"]),))
                this = {"tfaural_seconds": mine["seconds"], "tfaural_cpu_seconds": mine["cpu_seconds"],
                        "model_only_seconds": model["seconds"], "model_only_cpu_seconds": model["cpu_seconds"]}
                if not quick:
                    this["startup_seconds"] = run_tfaural(one.parent, exports[(m, hop)], root / "tags" / f"{key}-one",
                                                          expected=1)["seconds"]
                if r == 0:
                    ours[(m, hop)], alone[(m, hop)] = mine, model
                elif mine["tags"] != ours[(m, hop)]["tags"]:
                    raise RuntimeError(f"{key}: round {r + 1} tagged differently from round 1")
                rounds[(m, hop)].append(this)
        results: dict[str, Any] = {}
        for m, hop in configs:
            meta = json.loads((Path(exports[(m, hop)]) / "assets" / "metadata.json").read_text())
            hop_samples = int(meta["segment_hop"])
            peer, each = theirs[m], rounds[(m, hop)]
            mine = {"seconds": median(each, "tfaural_seconds"), "cpu_seconds": median(each, "tfaural_cpu_seconds"),
                    "tags": ours[(m, hop)]["tags"]}
            if not quick:
                mine["startup_seconds"] = median(each, "startup_seconds")
            model = {**alone[(m, hop)], "seconds": median(each, "model_only_seconds"),
                     "cpu_seconds": median(each, "model_only_cpu_seconds")}
            entry: dict[str, Any] = {
                "hop_frames": hop_samples // 256,
                "patches": {"tfaural": patch_count(waveforms, hop_samples),
                            "musicnn": patch_count(waveforms, 187 * 256)},
                "musicnn": {**speed(peer["seconds"], tracks, audio_seconds),
                            "loop_seconds": round(peer["loop_seconds"], 2),
                            "first_file_seconds": round(peer["first_file_seconds"], 2),
                            "per_file_seconds_median": round(peer["per_file_seconds_median"], 3),
                            "cpu_seconds": round(peer["cpu_seconds"], 1)},
                "tfaural": {**speed(mine["seconds"], tracks, audio_seconds),
                            "cpu_seconds": round(mine["cpu_seconds"], 1)},
                "model_only": {**speed(model["seconds"], tracks, audio_seconds),
                               "cpu_seconds": round(model["cpu_seconds"], 1),
                               "x_real_time_batch_1": round(audio_seconds / model["seconds_batch_1"], 1),
                               "x_real_time_batch_8": round(audio_seconds / model["seconds_batch_8"], 1),
                               "batch": model["batch"]},
            }
            entry["model_only"]["patches_per_second"] = round(entry["patches"]["tfaural"] / model["seconds"], 1)
            if mine.get("startup_seconds") is not None:
                after = max(mine["seconds"] - mine["startup_seconds"], 1e-9)
                entry["tfaural"]["startup_seconds"] = round(mine["startup_seconds"], 2)
                entry["tfaural"]["x_real_time_after_startup"] = round(audio_seconds / after, 1)
                entry["ratios_after_startup"] = {"end_to_end_vs_model_only": round(model["seconds"] / after, 3)}
            entry["rounds"] = [{k: round(v, 2) for k, v in r.items()} for r in each]
            entry["end_to_end_vs_model_only_each_round"] = [round(r["model_only_seconds"] / r["tfaural_seconds"], 3)
                                                            for r in each]
            entry["ratios"] = {
                "tfaural_vs_musicnn": round(peer["seconds"] / mine["seconds"], 2),
                "tfaural_vs_musicnn_target": TARGET_VS_MUSICNN,
                "tfaural_vs_musicnn_met": peer["seconds"] / mine["seconds"] >= TARGET_VS_MUSICNN,
                "end_to_end_vs_model_only": round(model["seconds"] / mine["seconds"], 3),
                "end_to_end_vs_model_only_target": TARGET_VS_MODEL,
                "end_to_end_vs_model_only_met": model["seconds"] / mine["seconds"] >= TARGET_VS_MODEL,
                # CPU seconds of every process: the work done, whatever share of the cores a shared machine gave
                "tfaural_vs_musicnn_cpu": round(peer["cpu_seconds"] / mine["cpu_seconds"], 2),
                "end_to_end_vs_model_only_cpu": round(model["cpu_seconds"] / mine["cpu_seconds"], 3),
            }
            names = sorted(mine["tags"])
            entry["top5_agreement"] = {"all_tracks": agreement(mine["tags"], peer["tags"], names),
                                       "finite_front_end": agreement(mine["tags"], peer["tags"],
                                                                     [n for n in names if n in finite])}
            results[f"{m}" if hop is None else f"{m}_hop{hop}"] = entry
        return {
            "benchmark": "musicnn's own tagger vs python -m beam_jobs.tag on the same weights and files",
            "catalogue": {"tracks": tracks, "track_seconds": seconds, "audio_seconds": audio_seconds,
                          "sample_rate": 44100, "channels": 2, "formats": ["wav", "flac", "mp3"],
                          "generate_seconds": round(generate_seconds, 1)},
            "musicnn_front_end": {"tracks_with_inf_bins": len(paths) - len(finite),
                                  "largest_inf_share": max(overflow.values()) if overflow else None},
            "results": results,
            "export_seconds": round(export_seconds, 1),
            "machine": {**machine_load(), "load_average_before": load_before["load_average"]},
            "onednn": {"tfaural_and_model_only": onednn_state(), "musicnn": onednn_state(peer_environment())},
            "quick": quick,
            "repeats": repeats,
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    print(json.dumps(run(quick=args.quick, tracks=args.tracks, seconds=args.seconds, models=models, keep=args.keep,
                         repeats=args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
