"""TFDS names as training data: conversion of prepared TFDS datasets, its cache, and train/evaluate on them."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from typing import Any, ClassVar

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfaural.data import build_tfds, tfds_source
from tfaural.data.tfds_source import MARKER_FILENAME, prepare_tfds, read_tfds_source, resolve_data
from tfaural.data.tfrecord import decode_example, read_dataset_info
from tfaural.datasets import demo
from tfaural.errors import DataError
from tfaural.training import evaluate
from tfaural.training import train as train_module
from tfaural.training.run import read_run_info
from tfaural.training.train import TrainConfig, train

SR = 11025  # the Choi CNN's rate; 4.2 s clips hold one 4 s input


# ----------------------------------------------------------------------------- a generic (non-tfaural) TFDS builder


@dataclasses.dataclass(eq=False)
class ClipsConfig(tfds.core.BuilderConfig):
    """Audio dtype, channels, rate and split names of one :class:`TfauralTestClips` variant."""

    dtype: Any = np.int16
    channels: int = 0  # 0: mono [samples]; n: [samples, n]
    sample_rate: int | None = 16000
    splits: tuple[str, ...] = ("train", "valid", "test")


class TfauralTestClips(tfds.core.GeneratorBasedBuilder):
    """Sine clips labelled low/high, with boolean tags: a plain TFDS audio dataset, prepared locally."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        ClipsConfig(name="int16"),
        ClipsConfig(name="float_stereo", dtype=np.float32, channels=2, splits=("train", "test")),
        ClipsConfig(name="no_rate", sample_rate=None, splits=("train", "validation")),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        shape = (None,) if not config.channels else (None, config.channels)
        return tfds.core.DatasetInfo(  # not dataset_info_from_configs: it reads metadata files of a package
            builder=self,
            features=tfds.features.FeaturesDict({
                "audio": tfds.features.Audio(shape=shape, dtype=config.dtype, sample_rate=config.sample_rate),
                "label": tfds.features.ClassLabel(names=["low", "high"]),
                "tags": tfds.features.FeaturesDict({"bright": np.bool_, "loud": np.bool_}),
            }),
            supervised_keys=("audio", "label"),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        return {split: self._generate_examples(split) for split in self.builder_config.splits}

    def _generate_examples(self, split: str) -> Any:  # type: ignore[override]
        config = self.builder_config
        t = np.arange(1600) / 16000
        for i in range(4):
            high = i % 2
            y = (0.5 + 0.7 * (i == 3)) * np.sin(2 * np.pi * (200 + 600 * high + 17 * len(split)) * t)
            if config.channels:
                y = np.stack([y, 0.9 * y], axis=1)
                if split == "train" and i == 2:
                    y[5, 0] = np.nan  # an example the conversion must refuse, not quantise to garbage
            audio = y.astype(config.dtype) if config.dtype != np.int16 else np.round(y.clip(-1, 1) * 30000).astype(
                np.int16)
            yield f"{split}-{i}", {"audio": audio, "label": high, "tags": {"bright": bool(high), "loud": i >= 2}}


def prepare_clips(data_dir: pathlib.Path, config: str) -> None:
    builder = tfds.builder("tfaural_test_clips", config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 9-track FluidSynth demo catalogue prepared as the TFDS dataset tfaural_catalogue/demo."""
    root = tmp_path_factory.mktemp("tfds-demo")
    demo.render_catalogue(root / "catalogue", tracks_per_style=3, seconds=4.2, sample_rate=SR, seed=3,
                          progress=False)
    data_dir = root / "tfds"
    code = build_tfds.main(["tfaural_catalogue", "--manifest", str(root / "catalogue" / "manifest.csv"),
                            "--config", "demo", "--sample-rate", str(SR), "--data-dir", str(data_dir)])
    assert code == 0
    return {"data_dir": str(data_dir), "root": str(root)}


def converted(folder: str) -> dict[str, dict[str, Any]]:
    """Every record of a converted folder: split → track id → record."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.tfrecord"))):
        split = os.path.basename(path).split("-")[0]
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            record = decode_example(raw)
            out.setdefault(split, {})[record.track_id] = record
    return out


def by_tfds_id(name: str, split: str, data_dir: pathlib.Path) -> dict[str, Any]:
    """``tfds.load`` of a split: TFDS example id → example."""
    dataset = tfds.load(name, split=split, data_dir=str(data_dir), download=False,
                        read_config=tfds.ReadConfig(add_tfds_id=True))
    return {x["tfds_id"].decode(): x for x in tfds.as_numpy(dataset)}


def one_hot(indices: Any, n: int) -> np.ndarray:
    labels = np.zeros(n, np.float32)
    labels[np.atleast_1d(indices)] = 1
    return labels


def stamps(folder: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in pathlib.Path(folder).iterdir()}


# ----------------------------------------------------------------------------- conversion


def test_conversion_has_the_examples_of_tfds_load(prepared: dict[str, str], tmp_path: pathlib.Path) -> None:
    folder = prepare_tfds("tfaural_catalogue/demo", data_dir=prepared["data_dir"], cache_dir=str(tmp_path),
                          progress=False)
    assert folder == str(tmp_path / "tfaural_catalogue" / "demo" / "1.0.0")
    info = read_dataset_info(folder)
    assert info.sample_rate == SR and info.label_names == ("ballad", "dance", "hiphop")
    assert info.multi_label is False  # one style per track: classification, as make_tfrecords decides
    assert info.segment_length is None and info.manifest == "tfds:tfaural_catalogue/demo/1.0.0"
    records = converted(folder)
    for split in ("train", "validation", "test"):
        reference = {x["track_id"].decode(): x for x in tfds.as_numpy(
            tfds.load("tfaural_catalogue/demo", split=split, data_dir=prepared["data_dir"], download=False))}
        assert set(records[split]) == set(reference) and len(reference) == info.count(split, "tracks")
        for track_id, x in reference.items():
            record = records[split][track_id]
            assert record.audio.dtype == np.int16
            np.testing.assert_array_equal(record.audio, x["audio"])  # int16 kept sample for sample
            np.testing.assert_array_equal(record.labels, one_hot(x["labels"], 3))
            assert record.sample_rate == SR and record.segment_index == -1
        assert info.count(split, "samples") == sum(x["audio"].size for x in reference.values())
    assert sum(len(r) for r in records.values()) == 9
    source = read_tfds_source(folder)
    assert source is not None and (source.version, source.label_feature) == ("1.0.0", "labels")
    assert source.splits == {"train": "train", "validation": "validation", "test": "test"}


def test_cache_is_reused_and_redone_only_when_needed(prepared: dict[str, str], tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_convert = tfds_source._convert
    monkeypatch.setattr(tfds_source, "_convert", lambda *a, **k: (calls.append(a[2]), real_convert(*a, **k))[1])

    def prepare(name: str = "tfaural_catalogue/demo") -> str:
        return prepare_tfds(name, data_dir=prepared["data_dir"], cache_dir=str(tmp_path), progress=False)

    folder = prepare()
    before = stamps(folder)
    assert prepare("tfaural_catalogue/demo:1.0.0") == folder  # another spelling of the same data: reused
    assert len(calls) == 1 and stamps(folder) == before

    # An interrupted conversion (the temporary folder of a dead process, or a folder without marker) is redone.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = pathlib.Path(f"{folder}.tmp-{socket.gethostname()}-{int(dead.stdout)}")
    stale.mkdir()
    (pathlib.Path(folder) / MARKER_FILENAME).unlink()
    assert prepare() == folder and len(calls) == 2
    assert (pathlib.Path(folder) / MARKER_FILENAME).is_file() and not stale.exists()

    # A conversion that fails half-way leaves nothing behind that could be used.
    shutil.rmtree(folder)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tfds_source._SplitWriter, "close", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare()
    assert not os.path.exists(folder) and not glob.glob(f"{folder}.tmp-*")
    monkeypatch.undo()
    monkeypatch.setattr(tfds_source, "_convert", lambda *a, **k: (calls.append(a[2]), real_convert(*a, **k))[1])
    assert prepare() == folder and len(calls) == 4 and len(converted(folder)["train"]) > 0

    # Preparing the TFDS dataset again (new files) invalidates the conversion.
    before = stamps(folder)
    shard = sorted(glob.glob(os.path.join(prepared["data_dir"], "tfaural_catalogue", "demo", "1.0.0", "*train*")))[0]
    os.utime(shard, ns=(os.stat(shard).st_atime_ns, os.stat(shard).st_mtime_ns + 10**9))
    assert prepare() == folder and len(calls) == 5 and stamps(folder) != before

    # A converted shard that was damaged (cut short) or lost is found before the conversion is reused: redone.
    train = sorted(glob.glob(os.path.join(folder, "train-*.tfrecord")))
    with open(train[0], "r+b") as handle:
        handle.truncate(os.path.getsize(train[0]) - 100)
    assert prepare() == folder and len(calls) == 6
    os.remove(sorted(glob.glob(os.path.join(folder, "train-*.tfrecord")))[-1])
    assert prepare() == folder and len(calls) == 7
    assert prepare() == folder and len(calls) == 7  # and the new conversion is reused


def test_generic_tfds_audio_datasets(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "tfds"
    for config in ("int16", "float_stereo", "no_rate"):
        prepare_clips(data_dir, config)
    cache = str(tmp_path / "cache")

    # int16 mono with a 'valid' split: kept exactly, 'valid' becomes validation, the supervised label is used.
    folder = prepare_tfds("tfaural_test_clips/int16", data_dir=str(data_dir), cache_dir=cache, progress=False)
    info = read_dataset_info(folder)
    assert (info.sample_rate, info.label_names, info.multi_label) == (16000, ("low", "high"), False)
    records = converted(folder)
    for ours, theirs in (("train", "train"), ("validation", "valid"), ("test", "test")):
        reference = by_tfds_id("tfaural_test_clips/int16", theirs, data_dir)
        assert set(records[ours]) == set(reference) and len(reference) == 4  # track ids: the TFDS example ids
        for track_id, record in records[ours].items():
            assert record.audio.dtype == np.int16
            np.testing.assert_array_equal(record.audio, reference[track_id]["audio"])
            np.testing.assert_array_equal(record.labels, one_hot(reference[track_id]["label"], 2))

    # A FeaturesDict of booleans as multi-hot tags, chosen by name: a separate cache folder.
    tags = prepare_tfds("tfaural_test_clips/int16", data_dir=str(data_dir), cache_dir=cache, label="tags",
                        progress=False)
    assert tags != folder and read_dataset_info(tags).label_names == ("bright", "loud")
    assert read_dataset_info(tags).multi_label is True
    reference = by_tfds_id("tfaural_test_clips/int16", "train", data_dir)
    records = converted(tags)["train"]
    for track_id, record in records.items():
        expected = [reference[track_id]["tags"]["bright"], reference[track_id]["tags"]["loud"]]
        np.testing.assert_array_equal(record.labels, np.array(expected, np.float32))
    assert sorted(tuple(r.labels) for r in records.values()) == [(0, 0), (0, 1), (1, 0), (1, 1)]

    # Float stereo without a validation split: a clear error, then slices of train.
    with pytest.raises(DataError, match=r"no split for \['validation'\].*train \(4\), test \(4\).*--tfds-split"):
        prepare_tfds("tfaural_test_clips/float_stereo", data_dir=str(data_dir), cache_dir=cache,
                     require_splits=("train", "validation"))
    with pytest.raises(DataError, match="share examples of the TFDS split 'train'"):
        prepare_tfds("tfaural_test_clips/float_stereo", data_dir=str(data_dir), cache_dir=cache,
                     splits={"validation": "train[75%:]"})
    folder = prepare_tfds("tfaural_test_clips/float_stereo", data_dir=str(data_dir), cache_dir=cache,
                          splits={"train": "train[:75%]", "validation": "train[75%:]"},
                          require_splits=("train", "validation"), progress=False)
    info = read_dataset_info(folder)
    counts = {s: (info.count(s, "tracks") + info.count(s, "failed")) for s in info.splits}
    assert counts == {"train": 3, "validation": 1, "test": 4}
    assert info.total("failed") == 1 and info.total("tracks") == 7
    failures = [json.loads(line) for line in (pathlib.Path(folder) / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and "NaN" in failures[0]["reason"] and failures[0]["split"] in ("train", "validation")
    reference = by_tfds_id("tfaural_test_clips/float_stereo", "train+test", data_dir)
    records = converted(folder)
    for record in [*records["train"].values(), *records["validation"].values(), *records["test"].values()]:
        x = reference[record.track_id]
        mono = x["audio"].astype(np.float64).mean(axis=1)
        np.testing.assert_array_equal(record.audio, np.round(np.clip(mono, -1, 1) * 32767).astype(np.int16))
    assert max(int(np.abs(r.audio).max()) for r in records["test"].values()) == 32767  # the loud clip is clipped

    with pytest.raises(DataError, match="has no sample rate"):
        prepare_tfds("tfaural_test_clips/no_rate", data_dir=str(data_dir), cache_dir=cache)
    with pytest.raises(DataError, match="no feature 'genre'"):
        prepare_tfds("tfaural_test_clips/int16", data_dir=str(data_dir), cache_dir=cache, label="genre")


@pytest.mark.slow  # one fresh `python -m tfaural.training.train` process
def test_unknown_or_unprepared_names_are_clear_errors(prepared: dict[str, str], tmp_path: pathlib.Path) -> None:
    def prepare(name: str) -> str:
        return prepare_tfds(name, data_dir=prepared["data_dir"], cache_dir=str(tmp_path))

    with pytest.raises(DataError, match=r"neither a dataset folder.*Did you mean \['tfaural_catalogue'"):
        prepare("tfaural_catalog/demo")
    with pytest.raises(DataError, match=r"not prepared.*python -m tfaural\.data\.build_tfds tfaural_gtzan --config "
                                        r"22050hz --manual-dir AUDIO_DIR"):
        prepare("tfaural_gtzan/22050hz")
    with pytest.raises(DataError, match=r"not prepared.*never downloads.*tfds build speech_commands --data_dir"):
        prepare("speech_commands")
    with pytest.raises(DataError, match=r"Prepared there: \['tfaural_catalogue/demo:1\.0\.0'\]"):
        prepare("tfaural_catalogue/dmeo")
    with pytest.raises(DataError, match="not prepared"):
        train("tfaural_catalogue/dmeo", str(tmp_path / "run"), TrainConfig(model="choi"),
              tfds=tfds_source.TfdsOptions(data_dir=prepared["data_dir"]))
    assert not os.listdir(tmp_path)  # nothing converted, no run started
    folder = str(tmp_path / "mine")  # a dataset folder is used as it is
    os.makedirs(folder)
    pathlib.Path(folder, "dataset.json").write_text("{}")
    assert resolve_data(folder) == folder

    # The CLI, in a fresh process: $TFDS_DATA_DIR is where names are looked up; the error is one line.
    env = {**os.environ, "TFDS_DATA_DIR": prepared["data_dir"], "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "tfaural.training.train", "--model", "choi", "--data",
                             "tfaural_catalog/demo", "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"Prepared in {prepared['data_dir']}: ['tfaural_catalogue/demo:1.0.0']" in result.stderr
    help_text = train_module._parser().format_help()
    for option in ("--tfds-data-dir", "--tfds-cache", "--tfds-split", "--tfds-label", "DATASET_DIR_OR_TFDS_NAME"):
        assert option in help_text


# ----------------------------------------------------------------------------- training and evaluation


@pytest.mark.slow
def test_train_and_evaluate_on_a_tfds_name(prepared: dict[str, str], tmp_path: pathlib.Path) -> None:
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    tfds_flags = ["--tfds-data-dir", prepared["data_dir"], "--tfds-cache", str(cache)]
    code = train_module.main(["--model", "choi", "--data", "tfaural_catalogue/demo", *tfds_flags, "--output",
                              str(run_dir), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                              "--checkpoint-every", "0"])
    assert code == 0
    info = read_run_info(run_dir)
    recorded = info.extra["tfds"]
    assert (recorded["name"], recorded["version"], recorded["full_name"]) == (
        "tfaural_catalogue/demo", "1.0.0", "tfaural_catalogue/demo/1.0.0")
    assert recorded["data_dir"] == prepared["data_dir"] and recorded["cache_dir"] == str(cache)
    assert info.extra["dataset"] == str(cache / "tfaural_catalogue" / "demo" / "1.0.0")
    assert info.labels == ("ballad", "dance", "hiphop") and info.task == "single-label"

    # Without --data, evaluation finds the run's TFDS dataset again, even after its cache was deleted.
    shutil.rmtree(cache)
    assert evaluate.main(["--run", str(run_dir), "--segments-per-track", "1"]) == 0
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["n_tracks"] == 3 and sum(map(sum, saved["confusion_matrix"])) == 3
    assert (cache / "tfaural_catalogue" / "demo" / "1.0.0" / MARKER_FILENAME).is_file()
    # With the name given explicitly (reusing the conversion).
    assert evaluate.main(["--run", str(run_dir), "--data", "tfaural_catalogue/demo", *tfds_flags, "--split",
                          "validation", "--segments-per-track", "1"]) == 0
    assert json.loads((run_dir / "eval-validation.json").read_text())["n_tracks"] == 3
