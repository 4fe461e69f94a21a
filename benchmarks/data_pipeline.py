"""Can the tf.data input pipeline keep a SampleCNN fed? Prints one JSON object.

Usage::

    python benchmarks/data_pipeline.py [--quick] [--output results.json]

Measured on this machine, in one process:

1. **Input pipeline**: :func:`tfaural.data.pipeline.make_dataset` reading local
   TFRecord shards of 29.1 s clips at 22,050 Hz (synthetic int16 noise, written
   here in the schema of ``make_tfrecords``), parsing, cropping a random 59,049
   sample segment, shuffling (buffer in segments) and batching. Both layouts of
   ``make_tfrecords`` are measured: whole-track records (the default, 1.3 MB read
   per 118 kB segment) and segment records (``--segment-length 59049
   --max-segments 10``). Each is run with all cores and with tf.data restricted
   to one thread (``private_threadpool_size=1``), which is the per-core rate.
2. **Training**: the 3^9 SampleCNN (``tfaural.models.samplecnn.samplecnn_model``, 50
   sigmoid outputs) ``train_on_batch`` on fixed batches, all cores.

Every number is the median of several timed runs after a warm-up (which also
fills the shuffle buffer). ``feed_ratio`` is the one-thread pipeline rate divided
by the whole-machine CPU training rate, both in segments/s; the target is 20, so
that the input pipeline on a 16-core GPU host can feed an accelerator that is
hundreds of times faster than this CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _kernels  # noqa: F401  (before TensorFlow: the kernels tfaural's command lines run)
import numpy as np
import tensorflow as tf

from tfaural.data.pipeline import SAMPLECNN_SEGMENT_LENGTH, make_dataset
from tfaural.data.tfrecord import DatasetInfo, encode_example, shard_path

logger = logging.getLogger("benchmarks.data_pipeline")

SAMPLE_RATE = 22050
CLIP_SAMPLES = int(29.1 * SAMPLE_RATE)  # MagnaTagATune clip length
N_LABELS = 50
TARGET_RATIO = 20.0


def write_shards(folder: str, *, tracks: int, shards: int, segment_length: int | None, seed: int = 0) -> str:
    """Writes synthetic clips as TFRecords (+ dataset.json); returns the shard glob."""
    rng = np.random.default_rng(seed)
    writers = [tf.io.TFRecordWriter(shard_path(folder, "train", i, shards)) for i in range(shards)]
    max_segments = 1
    for t in range(tracks):
        pcm = rng.integers(-8000, 8000, CLIP_SAMPLES, dtype=np.int16)
        labels = (rng.random(N_LABELS) < 0.1).astype(np.float32)
        if segment_length is None:
            pieces = [(-1, pcm)]
        else:
            count = min(10, CLIP_SAMPLES // segment_length)
            max_segments = count
            pieces = [(i, pcm[i * segment_length : (i + 1) * segment_length]) for i in range(count)]
        for index, piece in pieces:
            record = encode_example(audio=piece, sample_rate=SAMPLE_RATE, track_id=f"t{t:05d}", labels=labels,
                                    segment_index=index, num_segments=len(pieces))
            writers[t % shards].write(record)
    for writer in writers:
        writer.close()
    DatasetInfo(sample_rate=SAMPLE_RATE, label_names=tuple(f"tag{i}" for i in range(N_LABELS)),
                segment_length=segment_length, max_segments=10 if segment_length else None,
                max_segments_per_track=max_segments).write(folder)
    return os.path.join(folder, "train-*.tfrecord")


def timed_runs(step: Callable[[], int], *, warmup: int, runs: int) -> list[float]:
    """Calls ``step`` (which returns a number of segments) and returns segments/s per run."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        count = step()
        rates.append(count / (time.perf_counter() - start))
    return rates


def pipeline_rate(pattern: str, *, batch_size: int, shuffle_buffer: int, batches: int, runs: int,
                  threads: int | None) -> dict[str, Any]:
    """Segments/s of read-parse-crop-shuffle-batch, with ``threads`` tf.data threads (None: all)."""
    ds = make_dataset(pattern, segment_length=SAMPLECNN_SEGMENT_LENGTH, batch_size=batch_size, training=True,
                      shuffle_buffer=shuffle_buffer, seed=1).repeat()
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    iterator: Iterator[Any] = iter(ds)

    def step() -> int:
        count = 0
        for _ in range(batches):
            inputs, _ = next(iterator)
            count += int(inputs.shape[0])
        return count

    fill = max(1, shuffle_buffer // batch_size + 1)  # the first batches wait for the shuffle buffer
    start = time.perf_counter()
    for _ in range(fill):
        next(iterator)
    warmup_seconds = time.perf_counter() - start
    rates = timed_runs(step, warmup=1, runs=runs)
    return {"segments_per_s": statistics.median(rates), "runs": [round(r, 1) for r in rates],
            "threads": threads or "all", "shuffle_fill_s": round(warmup_seconds, 2)}


def build_samplecnn() -> Any:
    """The 3^9 SampleCNN of Lee et al. (2018): 59,049-sample input, 50 sigmoid outputs."""
    from tfaural.models.samplecnn import samplecnn_model

    return samplecnn_model(filter_sizes=(3,) * 10, n_outputs=N_LABELS, n_samples=SAMPLECNN_SEGMENT_LENGTH)


def train_rate(*, batch_size: int, steps: int, runs: int) -> dict[str, Any]:
    """Segments/s of ``train_on_batch`` for the 3^9 SampleCNN (SGD with Nesterov momentum, as the paper)."""
    import keras

    model = build_samplecnn()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
                  loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.3, 0.3, (batch_size, SAMPLECNN_SEGMENT_LENGTH, 1)).astype(np.float32)
    y = (rng.random((batch_size, N_LABELS)) < 0.1).astype(np.float32)

    def step() -> int:
        for _ in range(steps):
            model.train_on_batch(x, y)
        return batch_size * steps

    rates = timed_runs(step, warmup=1, runs=runs)
    return {"model": "3^9 SampleCNN (tfaural.models.samplecnn.samplecnn_model)", "params": int(model.count_params()),
            "batch_size": batch_size, "segments_per_s": statistics.median(rates),
            "steps_per_s": statistics.median(rates) / batch_size, "runs": [round(r, 2) for r in rates]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 tracks, 4 batches, one run (< 30 s)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quick = args.quick
    tracks, batch_size, shuffle_buffer = (24, 23, 64) if quick else (64, 23, 1024)  # a batch needs 23 tracks
    batches, runs = (4, 1) if quick else (40, 5)
    results: dict[str, Any] = {
        "benchmark": "data_pipeline",
        "machine": {
            "cores": cores, "os_cpu_count": os.cpu_count(), "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "auto",
        },
        "settings": {"quick": quick, "tracks": tracks, "clip_seconds": 29.1, "sample_rate": SAMPLE_RATE,
                     "segment_length": SAMPLECNN_SEGMENT_LENGTH, "batch_size": batch_size,
                     "shuffle_buffer_segments": shuffle_buffer, "timed_batches_per_run": batches, "runs": runs},
    }
    with tempfile.TemporaryDirectory(prefix="tfaural-bench-") as tmp:
        for layout, segment_length in (("whole_track_records", None), ("segment_records", SAMPLECNN_SEGMENT_LENGTH)):
            folder = os.path.join(tmp, layout)
            os.makedirs(folder)
            logger.info("writing %d synthetic clips (%s)", tracks, layout)
            pattern = write_shards(folder, tracks=tracks, shards=8, segment_length=segment_length)
            one = pipeline_rate(pattern, batch_size=batch_size, shuffle_buffer=shuffle_buffer, batches=batches,
                                runs=runs, threads=1)
            logger.info("%s, 1 thread: %.0f segments/s", layout, one["segments_per_s"])
            every = pipeline_rate(pattern, batch_size=batch_size, shuffle_buffer=shuffle_buffer, batches=batches,
                                  runs=runs, threads=None)
            logger.info("%s, all cores: %.0f segments/s", layout, every["segments_per_s"])
            results[f"pipeline_{layout}"] = {
                "segments_per_s_per_core": round(one["segments_per_s"], 1),
                "segments_per_s_all_cores": round(every["segments_per_s"], 1),
                "one_thread": one, "all_cores": every,
            }
    logger.info("timing the 3^9 SampleCNN training step")
    train = train_rate(batch_size=4 if quick else 23, steps=1 if quick else 4, runs=1 if quick else 5)
    train["segments_per_s_per_core"] = train["segments_per_s"] / cores
    results["train"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in train.items()}
    per_core = results["pipeline_whole_track_records"]["segments_per_s_per_core"]
    results["feed_ratio"] = round(per_core / train["segments_per_s"], 1)
    results["feed_ratio_segment_records"] = round(
        results["pipeline_segment_records"]["segments_per_s_per_core"] / train["segments_per_s"], 1)
    results["feed_ratio_definition"] = ("one-thread tf.data segments/s (whole-track records, random crops) "
                                        "/ whole-machine CPU 3^9 SampleCNN training segments/s")
    results["target_ratio"] = TARGET_RATIO
    results["meets_target"] = results["feed_ratio"] >= TARGET_RATIO
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
