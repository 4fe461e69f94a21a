"""TFDS builders: tiny builds from manual_dir (generator and Beam mode) and loads with tfds.load."""

from __future__ import annotations

import pathlib

import apache_beam as beam
import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds
from signal_makers import chirp, sine

from tfaural import audio
from tfaural.data.catalogue import GTZAN_GENRES, MTAT_TOP50_TAGS
from tfaural.data.tfds_builders import CatalogueConfig, TfauralCatalogue
from tfaural.errors import DataError

SR = 8000


def pcm(path: pathlib.Path, sample_rate: int) -> np.ndarray:
    """NumPy's int16 quantisation of tfaural.audio's decoding (an independent reference)."""
    y, _ = audio.load(str(path), sample_rate=sample_rate)
    return np.round(np.clip(y.astype(np.float64), -1, 1) * 32767).astype(np.int16)


def manual(tmp_path: pathlib.Path, **kwargs: object) -> dict:
    return {"download_config": tfds.download.DownloadConfig(manual_dir=str(tmp_path), **kwargs)}


def test_catalogue_builder_with_tfds_load(tmp_path: pathlib.Path) -> None:
    sf.write(tmp_path / "a.wav", sine(440, 0.5, sample_rate=22050), 22050, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", chirp(100, 2000, 0.3, sample_rate=16000), 16000)
    (tmp_path / "c.wav").write_bytes(b"RIFF junk")
    (tmp_path / "manifest.csv").write_text(
        "path,track_id,labels,split\na.wav,,rock;slow,train\nb.flac,,jazz,\nc.wav,,rock,train\n"
    )
    # A relative manifest is looked up in manual_dir; the vocabulary comes with the config.
    config = CatalogueConfig(name="mine", manifest="manifest.csv", sample_rate=SR, label_names=("jazz", "rock", "slow"))
    data_dir = str(tmp_path / "tfds")
    ds, info = tfds.load("tfaural_catalogue", split="train", data_dir=data_dir, builder_kwargs={"config": config},
                         download_and_prepare_kwargs=manual(tmp_path), with_info=True)
    (example,) = list(tfds.as_numpy(ds))
    assert example["track_id"] == b"a"
    np.testing.assert_array_equal(example["audio"], pcm(tmp_path / "a.wav", SR))
    assert [info.features["labels"].feature.int2str(i) for i in example["labels"]] == ["rock", "slow"]
    assert info.features["audio"].sample_rate == SR and info.features["audio"].dtype == np.int16
    assert set(info.splits) == {"train", "unsplit"} and info.splits["unsplit"].num_examples == 1
    assert [(f["track_id"], f["error"]) for f in info.metadata["failures"]] == [("c", "AudioDecodeError")]
    (b,) = list(tfds.as_numpy(tfds.load("tfaural_catalogue", split="unsplit", data_dir=data_dir,
                                        builder_kwargs={"config": config})))
    np.testing.assert_array_equal(b["audio"], pcm(tmp_path / "b.flac", SR))


def test_catalogue_config_from_manifest_and_missing_config(tmp_path: pathlib.Path) -> None:
    (tmp_path / "manifest.jsonl").write_text('{"path": "x.wav", "labels": ["b", "a"]}\n')
    config = CatalogueConfig.from_manifest(tmp_path / "manifest.jsonl", sample_rate=11025)
    assert config.label_names == ("a", "b") and config.sample_rate == 11025
    assert config.name.endswith("manifest_11025hz") and config.manifest == str(tmp_path / "manifest.jsonl")
    with pytest.raises(DataError, match="needs a config naming the manifest"):
        TfauralCatalogue(data_dir=str(tmp_path / "tfds")).info  # noqa: B018


def test_gtzan_builder_with_split_lists_built_with_beam(tmp_path: pathlib.Path) -> None:
    genres = tmp_path / "genres_original"
    for g, genre in enumerate(("blues", "rock")):
        for i in range(2):
            (genres / genre).mkdir(parents=True, exist_ok=True)
            sf.write(genres / genre / f"{genre}.0000{i}.wav", sine(200 + 100 * g + 10 * i, 0.3, sample_rate=22050),
                     22050, subtype="PCM_16")
    (tmp_path / "train_filtered.txt").write_text("blues/blues.00000.wav\nrock/rock.00001.wav\n")
    (tmp_path / "valid_filtered.txt").write_text("rock/rock.00000.wav\n")
    (tmp_path / "test_filtered.txt").write_text("blues/blues.00001.wav\n")
    builder = tfds.builder("tfaural_gtzan", config="11025hz", data_dir=str(tmp_path / "tfds"), use_beam=True)
    builder.download_and_prepare(**manual(tmp_path, beam_runner=beam.runners.DirectRunner()))
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 2, "validation": 1, "test": 1}
    assert builder.info.features["label"].names == list(GTZAN_GENRES)
    assert builder.info.supervised_keys == ("audio", "label")
    train = {x["track_id"].decode(): x for x in tfds.as_numpy(builder.as_dataset(split="train"))}
    assert set(train) == {"blues.00000", "rock.00001"}
    assert GTZAN_GENRES[train["rock.00001"]["label"]] == "rock"
    np.testing.assert_array_equal(train["blues.00000"]["audio"], pcm(genres / "blues" / "blues.00000.wav", 11025))
    audio_, label = next(iter(tfds.as_numpy(builder.as_dataset(split="test", as_supervised=True))))
    assert GTZAN_GENRES[label] == "blues" and audio_.dtype == np.int16


def test_magnatagatune_builder(tmp_path: pathlib.Path) -> None:
    tags = [*MTAT_TOP50_TAGS, "rare tag"]
    rows = [(2, {"guitar", "slow"}, "0/a.mp3"), (5, {"rare tag"}, "1/b.mp3"), (7, {"choral"}, "c/c.mp3"),
            (9, {"piano"}, "f/d.mp3")]
    lines = ["\t".join(f'"{h}"' for h in ["clip_id", *tags, "mp3_path"])]
    for clip, on, mp3 in rows:
        lines.append("\t".join(f'"{v}"' for v in [clip, *[int(t in on) for t in tags], mp3]))
        (tmp_path / "mp3" / mp3).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "mp3" / mp3, sine(440 + clip, 0.3, sample_rate=16000), 16000, format="MP3")
    (tmp_path / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    builder = tfds.builder("tfaural_magnatagatune", config="16000hz", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(**manual(tmp_path))
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 1, "validation": 1, "test": 1}  # clip 5 has no top-50 tag
    (train,) = list(tfds.as_numpy(builder.as_dataset(split="train")))
    names = builder.info.features["labels"].feature.names
    assert names == list(MTAT_TOP50_TAGS)
    assert train["track_id"] == b"2" and sorted(names[i] for i in train["labels"]) == ["guitar", "slow"]
    np.testing.assert_array_equal(train["audio"], pcm(tmp_path / "mp3" / "0" / "a.mp3", 16000))
