"""TensorFlow's oneDNN CPU kernels against its own, side by side, on what tfaural runs.

Prints one JSON object. ``TF_ENABLE_ONEDNN_OPTS`` is read once, when a process's TensorFlow runtime
starts, so each setting runs in a child process of its own (``--child``): ``0`` (TensorFlow's own
kernels) and ``1`` (oneDNN's), alternately, ``--rounds`` times (the order swapped every round, so
that a drifting background load affects both alike). Each child times, after a warm-up call, the
median of several calls of:

* ``matmul``: a 2048 x 2048 float32 product (GFLOP/s);
* ``musicnn_mel_front_end``: the musicnn exports' log-mel front end (``tfaural.spectral``) of ten
  187-frame 16-kHz patches;
* ``musicnn_temporal_filters_conv2d`` / ``..._row_conv``: musicnn's three temporal filter banks (1 x 128,
  64 and 32 taps, 51 maps each) on those ten patches, as ``keras.layers.Conv2D`` and as
  ``tfaural.models.layers.RowConv2D`` (what the musicnn models use since 2026-12-03);
* ``mtt_vgg_tagging`` / ``musicnn_tagging``: the ``MTT_vgg`` / ``MTT_musicnn`` architectures (random
  weights, ``benchmarks/deconvnet_mtt_vgg.py``) on those ten patches (a 30-s track's);
* ``samplecnn_3_9_tagging``: the 3^9 SampleCNN on ten 59,049-sample segments;
* ``choi_auralisation``: every feature of every layer of the 5-layer Choi CNN auralised on a 4-s clip
  (``Auraliser.layers``, phase mode; what ``benchmarks/deconvolution.py`` times).

Reported per workload: the median seconds with each setting over the rounds, ``speedup`` (off / on),
and the largest difference between the two settings' outputs (the outputs of the first round, the
same seeded weights in both; oneDNN computes in another order: round-off only). Also the CPU's
flags, TensorFlow's default here and whether tfaural's command lines turn oneDNN on here
(``tfaural.cpu.onednn_preferred``): they do where TensorFlow leaves it off on an AVX2 + FMA CPU,
which this benchmark is there to justify.

``--quick`` (smoke mode: it checks that both settings and every workload run, not the speed): one round,
two timed calls of each workload (one of the auralisation), a 512 x 512 product, two patches, the musicnn
architectures with 16 maps per layer, a tiny SampleCNN on one segment, a Choi CNN of 2 layers of 16 maps
on a 1-s clip.

Usage:
    python benchmarks/onednn.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

from tfaural import cpu

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (about half a minute): small models and inputs, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both settings (default 3, quick 1)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: write outputs to this .npz
    return parser.parse_args(argv)


def child(outputs_path: str, *, quick: bool) -> dict[str, Any]:
    """Times every workload in this process (its oneDNN setting is the environment's); writes the outputs."""
    import keras
    import tensorflow as tf
    from _timing import compiled, matmul_gflops, run_times
    from deconvnet_mtt_vgg import random_musicnn_tagger

    from tfaural import auralise, spectral
    from tfaural.models import choi_cnn, samplecnn_preset
    from tfaural.models.layers import RowConv2D
    from tfaural.models.samplecnn import samplecnn_model

    rng = np.random.default_rng(0)
    repeats = 2 if quick else 5
    seconds: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}

    def timed(name: str, fn: Any, x: Any, *, times: int = repeats) -> None:
        result = fn(x)
        outputs[name] = np.concatenate([np.asarray(v).ravel() for v in tf.nest.flatten(result)])
        seconds[name] = statistics.median(run_times(lambda: fn(x), warmup=0, repeats=times))

    matmul, _ = matmul_gflops(n=512 if quick else 2048, repeats=repeats)
    n_patches = 2 if quick else 10
    segments = tf.constant(0.3 * rng.standard_normal((n_patches, 186 * 256)).astype(np.float32))
    timed("musicnn_mel_front_end", compiled(lambda y: spectral.melspectrogram(
        y, sample_rate=16000, n_fft=512, hop_length=256, n_mels=96)), segments)
    patches = tf.constant(rng.standard_normal((n_patches, 96, 187, 1)).astype(np.float32))
    for name, layer in (("musicnn_temporal_filters_conv2d", keras.layers.Conv2D),
                        ("musicnn_temporal_filters_row_conv", RowConv2D)):
        keras.utils.set_random_seed(2)
        convs = [layer(51, (1, taps), padding="same") for taps in (128, 64, 32)]
        timed(name, compiled(lambda x, convs=convs: [conv(x) for conv in convs]), patches)
    for name, architecture in (("mtt_vgg_tagging", "vgg"), ("musicnn_tagging", "musicnn")):
        model = random_musicnn_tagger(architecture=architecture, **({"n_filters": 16} if quick else {}))
        timed(name, compiled(lambda x, model=model: model(x, training=False)), patches)
    keras.utils.set_random_seed(0)  # the same weights in both processes
    if quick:  # a tiny 3^5 model
        sample_model = samplecnn_model(filter_sizes=(3,) * 6, channels=(16, 16, 32, 32, 32), front_filters=16,
                                       top_filters=64)
    else:
        sample_model = samplecnn_preset(22050)
    length = sample_model.tfaural_config.input_length
    segments = tf.constant(0.3 * rng.standard_normal((1 if quick else 10, length)).astype(np.float32))
    timed("samplecnn_3_9_tagging", compiled(lambda x: sample_model(x, training=False)), segments)
    keras.utils.set_random_seed(1)
    choi = choi_cnn(n_outputs=50, **({"n_filters": 16, "n_layers": 2} if quick else {}))
    auraliser = auralise.Auraliser(choi)
    t = np.arange(int((1.0 if quick else 4.0) * choi.tfaural_config.sample_rate)) / choi.tfaural_config.sample_rate
    clip = tf.constant((0.4 * np.sin(2 * np.pi * (110 * t + 200 * t**2)))[None].astype(np.float32))
    batched = compiled(lambda y: {str(k): v.audio for k, v in auraliser.layers(y, mode="phase").items()})
    timed("choi_auralisation", batched, clip, times=1 if quick else 3)
    np.savez(outputs_path, **outputs)
    return {"matmul_gflops": round(matmul, 1), "seconds": seconds}


def run(*, quick: bool = False, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (1 if quick else 3)
    flags = cpu.cpu_flags() or frozenset()
    results: dict[str, list[dict[str, Any]]] = {"0": [], "1": []}
    with tempfile.TemporaryDirectory(prefix="tfaural-onednn-") as folder:
        for r in range(rounds):
            for setting in (("0", "1") if r % 2 == 0 else ("1", "0")):
                path = os.path.join(folder, f"outputs-{setting}-{r}.npz")
                env = {**os.environ, cpu.ONEDNN_VARIABLE: setting, "TF_CPP_MIN_LOG_LEVEL": "2"}
                command = [sys.executable, str(Path(__file__).resolve()), "--child", path, *(["--quick"] * quick)]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"the child with {cpu.ONEDNN_VARIABLE}={setting} failed: {done.stderr[-3000:]}")
                results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
        off, on = np.load(os.path.join(folder, "outputs-0-0.npz")), np.load(os.path.join(folder, "outputs-1-0.npz"))
        differences = {name: (float(np.max(np.abs(off[name] - on[name]))), float(np.max(np.abs(off[name]))))
                       for name in off.files}
    workloads: dict[str, Any] = {}
    for name in results["0"][0]["seconds"]:
        off_s = statistics.median(r["seconds"][name] for r in results["0"])
        on_s = statistics.median(r["seconds"][name] for r in results["1"])
        largest, scale = differences[name]
        workloads[name] = {"seconds_onednn_off": round(off_s, 4), "seconds_onednn_on": round(on_s, 4),
                           "speedup": round(off_s / on_s, 3),
                           "rounds_off": [round(r["seconds"][name], 4) for r in results["0"]],
                           "rounds_on": [round(r["seconds"][name], 4) for r in results["1"]],
                           "largest_output_difference": largest, "largest_output": scale}
    matmul = {setting: statistics.median(r["matmul_gflops"] for r in results[setting]) for setting in results}
    workloads["matmul"] = {"gflops_onednn_off": matmul["0"], "gflops_onednn_on": matmul["1"],
                           "speedup": round(matmul["1"] / matmul["0"], 3)}
    preferred = cpu.onednn_preferred(flags, system=platform.system(), machine=platform.machine())
    return {
        "benchmark": "oneDNN's CPU kernels against TensorFlow's own (TF_ENABLE_ONEDNN_OPTS=1 vs 0)",
        "quick": quick,
        "rounds": rounds,
        "cpu_flags": cpu.notable_flags(flags),
        "tensorflow_default": "on" if cpu.onednn_default_on(flags) else "off",
        "tfaural_command_lines_turn_it_on_here": preferred,
        "workloads": workloads,
        "slowest_speedup": min(w["speedup"] for w in workloads.values()),
        "onednn_faster_for_every_workload": all(w["speedup"] > 1.0 for w in workloads.values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, quick=args.quick)))
        return 0
    print(json.dumps(run(quick=args.quick, rounds=args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
