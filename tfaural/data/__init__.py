"""Datasets: catalogue manifests, the TFRecord schema, tf.data pipelines and TFDS builders.

From "a folder of audio files with labels" to "batches on the accelerator":

1. :mod:`tfaural.data.catalogue` — describe the dataset (a CSV/JSONL manifest, a
   ``genre/track.wav`` folder, MagnaTagATune or GTZAN).
2. ``python -m beam_jobs.make_tfrecords`` — decode it into TFRecord shards and
   ``dataset.json`` (schema in :mod:`tfaural.data.tfrecord`).
3. :mod:`tfaural.data.pipeline` — read the shards into ``(inputs, labels)``
   batches for SampleCNN (waveform) or the Choi CNN (STFT magnitude).

:mod:`tfaural.data.tfds_builders` (imported on demand, it pulls in
tensorflow-datasets) offers the same catalogues as TFDS datasets
(``python -m tfaural.data.build_tfds`` prepares them), and
:mod:`tfaural.data.tfds_source` converts any prepared TFDS audio dataset into a
dataset folder, which is how ``--data NAME`` of training and evaluation works.
"""

from typing import TYPE_CHECKING, Any

from tfaural.data.catalogue import (
    GTZAN_GENRES,
    MTAT_TOP50_TAGS,
    SPLITS,
    Catalogue,
    Track,
    manifest_from_folder,
    read_gtzan,
    read_magnatagatune,
    read_manifest,
    write_manifest,
)

if TYPE_CHECKING:
    from tfaural.data.pipeline import input_shape, make_dataset, make_track_dataset
    from tfaural.data.tfrecord import DatasetInfo, decode_example, encode_example, parse_example, read_dataset_info

#: Names of the modules that import TensorFlow, loaded on first use: reading a manifest
#: (e.g. in a Beam launcher) must not cost TensorFlow's ~600 MiB and seconds of import.
_LAZY = {
    "input_shape": "tfaural.data.pipeline",
    "make_dataset": "tfaural.data.pipeline",
    "make_track_dataset": "tfaural.data.pipeline",
    "DatasetInfo": "tfaural.data.tfrecord",
    "decode_example": "tfaural.data.tfrecord",
    "encode_example": "tfaural.data.tfrecord",
    "parse_example": "tfaural.data.tfrecord",
    "read_dataset_info": "tfaural.data.tfrecord",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "SPLITS",
    "MTAT_TOP50_TAGS",
    "GTZAN_GENRES",
    "Track",
    "Catalogue",
    "read_manifest",
    "write_manifest",
    "manifest_from_folder",
    "read_magnatagatune",
    "read_gtzan",
    "DatasetInfo",
    "read_dataset_info",
    "encode_example",
    "decode_example",
    "parse_example",
    "make_dataset",
    "make_track_dataset",
    "input_shape",
]
