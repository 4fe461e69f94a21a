"""``serving_default`` through the exported SavedModel vs the Keras model, same process.

For the paper-size Choi CNN (257 x 173 STFT input, 4-s segments at 11,025 Hz) and
the 3^9-SampleCNN (59,049-sample segments at 22,050 Hz), both with random weights:
export the model (``export.export_model``, into a temporary directory), load it
with ``tf.saved_model.load`` and time ``signatures["serving_default"]`` on a 30-s
clip at batch 1 and 8 against the Keras model called on the same segments. The
export holds the tagging signatures only (``--signatures tagging``, the default
here): ``serving_default`` is the same function with or without the
deconvolution signatures beside it, which only cost export time
(``--signatures all`` to export those too).

The Keras baseline (``keras``) is the Keras model called on the same segments in
one ``tf.function``: the 30-s clips are cut into whole segments beforehand
(outside the timing), the model's front end runs on them (for the Choi CNN the
STFT magnitude, with the same ``tfaural.spectral.stft``; nothing for the
waveform SampleCNN), then ``model(x, training=False)`` and the segment mean. The
SavedModel path does everything in-graph: input validation, segmentation, STFT,
the model in chunks of ``max_batch_segments``, the mean and the top-k labels.
For the Choi CNN the model alone on precomputed magnitudes is timed too
(``keras_model_only``): the STFT of 7 segments x 173 frames costs ~10 % of this
small CNN's time, and both serving paths must pay it.
Runs are interleaved (SavedModel, Keras, ...) after warm-up and the median is
reported; the target is ``savedmodel / keras <= 1.10``.

Prints one JSON object. Usage:
    python benchmarks/serving.py [--quick] [--repeats N] [--verify] [--signatures tagging|all]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import environment

from export import export_model
from tfaural import spectral
from tfaural.config import AudioConfig, ChoiConfig, SegmentConfig
from tfaural.models import choi_cnn, config_from_model
from tfaural.models.samplecnn import samplecnn_model
from tfaural.training.run import RunInfo

CLIP_SECONDS = 30.0
BATCH_SIZES = (1, 8)
TARGET_RATIO = 1.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min): small models, one timed run per path and batch")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per path and batch (default 9, quick 1)")
    parser.add_argument("--verify", action="store_true", help="also verify each export (adds ~20 s per model)")
    parser.add_argument("--signatures", default="tagging", choices=("tagging", "all"),
                        help="the exports' signatures (python -m export --signatures; default: %(default)s)")
    return parser.parse_args(argv)


def _models(*, quick: bool = False, only: str | None = None) -> list[tuple[str, Any, RunInfo]]:
    """The paper's Choi CNN and the 3^9-SampleCNN; quick: few filters, and a 3^5 SampleCNN.

    Args:
        quick: the smoke run's small models.
        only: build just the model of this name (``"choi"`` or the SampleCNN's name); ``None`` builds both.

    Raises:
        ValueError: ``only`` names neither model.
    """
    sample_name = "samplecnn_3_5_tiny" if quick else "samplecnn_3_9"
    if only is not None and only not in ("choi", sample_name):
        raise ValueError(f"unknown model {only!r}: choose 'choi' or {sample_name!r}")
    models: list[tuple[str, Any, RunInfo]] = []
    if only in (None, "choi"):
        choi = choi_cnn(n_outputs=10, **({"n_filters": 16} if quick else {}))
        choi_config = config_from_model(choi)
        assert isinstance(choi_config, ChoiConfig)
        labels10 = tuple(f"genre{i}" for i in range(10))
        choi_info = RunInfo(
            model=choi_config, labels=labels10, task="single-label", audio=AudioConfig(sample_rate=11025),
            segment=SegmentConfig(length=44100),
        )
        models.append(("choi", choi, choi_info))
    if only in (None, sample_name):
        tiny = {"filter_sizes": (3,) * 6, "channels": (16, 16, 32, 32, 32), "front_filters": 16, "top_filters": 64}
        sample = samplecnn_model(n_outputs=50, **(tiny if quick else {}))
        sample_config = config_from_model(sample)
        sample_info = RunInfo(
            model=sample_config, labels=tuple(f"tag{i}" for i in range(50)), task="multi-label",
            audio=AudioConfig(sample_rate=22050), segment=SegmentConfig(length=sample_config.input_length),
        )
        models.append((sample_name, sample, sample_info))
    return models


def _keras_paths(model: Any, info: RunInfo, clips: np.ndarray) -> dict[str, tuple[Any, tf.Tensor]]:
    """The Keras baselines, each with its input: ``keras`` (segments) and, for STFT models, ``keras_model_only``."""
    length = info.segment.length
    n_segments = clips.shape[1] // length
    batch = clips.shape[0]
    segments = tf.constant(clips[:, : n_segments * length].reshape(-1, length))

    def stft(y: tf.Tensor) -> tf.Tensor:
        assert info.stft is not None
        magnitude = tf.abs(spectral.stft(y, n_fft=info.stft.n_fft, hop_length=info.stft.hop_length))
        return magnitude[..., tf.newaxis]

    def scores(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.reshape(model(x, training=False), [batch, n_segments, -1]), axis=1)

    segment_spec = [tf.TensorSpec(segments.shape, tf.float32)]
    if info.stft is None:
        return {"keras": (tf.function(lambda y: scores(y[..., tf.newaxis]), input_signature=segment_spec), segments)}
    magnitudes = stft(segments)
    return {
        "keras": (tf.function(lambda y: scores(stft(y)), input_signature=segment_spec), segments),
        "keras_model_only": (
            tf.function(scores, input_signature=[tf.TensorSpec(magnitudes.shape, tf.float32)]), magnitudes
        ),
    }


def _time(fn: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    for value in tf.nest.flatten(fn(*args, **kwargs)):
        value.numpy()
    return time.perf_counter() - start


def run(*, quick: bool = False, repeats: int | None = None, verify: bool = False,
        signatures: str = "tagging") -> dict[str, Any]:
    """Exports, loads and times both models; returns the JSON-serialisable results."""
    repeats = repeats or (1 if quick else 9)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {
        "clip_seconds": CLIP_SECONDS, "repeats": repeats, "target_ratio": TARGET_RATIO, "environment": environment(),
        "export_signatures": signatures,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="tfaural-bench-") as scratch:
        for name, model, info in _models(quick=quick):
            started = time.perf_counter()
            version_dir = export_model(model, info, os.path.join(scratch, name), verify=verify, signatures=signatures)
            export_seconds = time.perf_counter() - started
            serving = tf.saved_model.load(version_dir).signatures["serving_default"]
            rate = info.audio.sample_rate
            per_batch: dict[str, Any] = {}
            for batch in BATCH_SIZES:
                clips = (0.1 * rng.standard_normal((batch, int(CLIP_SECONDS * rate)))).astype(np.float32)
                waveform = tf.constant(clips)
                paths = _keras_paths(model, info, clips)
                saved = serving(waveform=waveform)["scores"].numpy()  # warm-up (and a correctness check)
                max_diff = max(float(np.max(np.abs(saved - fn(x).numpy()))) for fn, x in paths.values())
                times: dict[str, list[float]] = {"savedmodel": [], **{path: [] for path in paths}}
                for _ in range(repeats):
                    times["savedmodel"].append(_time(serving, waveform=waveform))
                    for path, (fn, x) in paths.items():
                        times[path].append(_time(fn, x))
                medians = {path: statistics.median(values) for path, values in times.items()}
                ratio = medians["savedmodel"] / medians["keras"]
                per_batch[str(batch)] = {
                    "segments": int(paths["keras"][1].shape[0]),
                    **{f"{path}_seconds": round(value, 4) for path, value in medians.items()},
                    "ratio": round(ratio, 3),
                    **(
                        {"ratio_to_model_only": round(medians["savedmodel"] / medians["keras_model_only"], 3)}
                        if "keras_model_only" in medians else {}
                    ),
                    "target_met": ratio <= TARGET_RATIO,
                    "max_abs_score_difference": max_diff,
                }
            results["models"][name] = {
                "segment_length": info.segment.length, "sample_rate": rate, "export_seconds": round(export_seconds, 1),
                "batches": per_batch,
            }
    results["target_met"] = all(
        b["target_met"] for m in results["models"].values() for b in m["batches"].values()
    )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(quick=args.quick, repeats=args.repeats, verify=args.verify, signatures=args.signatures)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
