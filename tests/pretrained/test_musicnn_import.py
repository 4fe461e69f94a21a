"""musicnn's four published taggers imported into Keras, checked against the publisher's own graph."""

from __future__ import annotations

import os
import pathlib
import shutil

import librosa
import numpy as np
import pytest

from tfaural import signals, spectral
from tfaural.config import MusicnnConfig
from tfaural.errors import ModelError
from tfaural.pretrained import catalogue, musicnn
from tfaural.pretrained.coverage import input_coverage
from tfaural.pretrained.probes import music_like
from tfaural.signals import Note, Part

SR = 16000
PATCH = musicnn.PATCH_FRAMES
NAMES = ("MTT_vgg", "MSD_vgg", "MTT_musicnn", "MSD_musicnn")


@pytest.fixture(scope="module")
def imported() -> dict[str, tuple[object, object]]:
    return {name: musicnn.import_model(name) for name in NAMES}


def _mel(y: np.ndarray) -> np.ndarray:
    """tfaural's mel power of a whole track: float32 [96, frames]."""
    return spectral.melspectrogram(y, sample_rate=SR, n_fft=512, hop_length=256, n_mels=96).numpy()


def _patches(mel: np.ndarray, hop: int) -> np.ndarray:
    """musicnn's batching: patches of 187 frames every ``hop`` frames, [patches, 96, 187]."""
    starts = range(0, mel.shape[1] - PATCH + 1, hop)
    return np.stack([mel[:, s:s + PATCH] for s in starts])


def test_front_end_matches_librosa_melspectrogram() -> None:
    """The in-graph mel power equals musicnn's librosa call (librosa defaults) to float32 precision."""
    y = music_like(seconds=9.5, sample_rate=SR, seed=4, peak=0.25)
    reference = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=256, n_fft=512, n_mels=96)
    ours = _mel(y)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6 * float(reference.max()))
    # the compression, in float32 here, against NumPy's float64
    np.testing.assert_allclose(spectral.log10_compress(ours).numpy(), np.log10(1 + 10000 * ours.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_taggram_and_embeddings_equal_the_original_graph(imported: dict, name: str) -> None:
    """≤ 1e-5 absolute on the taggram and ≤ 1e-5 of the peak on every pooled/embedding output."""
    keras_model, _ = imported[name]
    y = music_like(seconds=10.0, sample_rate=SR, seed=7, peak=0.25)  # chords + drums, float16-safe level
    patches = _patches(_mel(y), hop=93)  # overlapping, as musicnn's input_overlap does
    assert len(patches) >= 5
    errors = musicnn.verify_import(name, keras_model, patches)
    expected_keys = {"taggram", *(f"pool{i}" for i in range(1, 6))} if "vgg" in name else {
        "taggram", "penultimate", "max_pool", "mean_pool"}
    assert set(errors) == expected_keys
    assert max(errors.values()) <= 1e-5, errors


def test_vgg_pool_geometry_is_read_from_each_graph(imported: dict) -> None:
    """The two vgg graphs were trained with different pools (musicnn's models.py builds MTT's for both)."""
    mtt, msd = imported["MTT_vgg"][1].model, imported["MSD_vgg"][1].model
    assert mtt.pools == ((1, 4, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))
    assert msd.pools == ((1, 4, 1, 4), (4, 1, 4, 1), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))
    def trainable(model: object) -> int:
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)  # type: ignore[attr-defined]

    assert trainable(imported["MTT_vgg"][0]) == 605_748  # as published
    assert trainable(imported["MTT_musicnn"][0]) == 787_159


def _reachable_interval(n: int, layers: list[tuple[str, int, int]]) -> int:
    """Receptive-field arithmetic on one axis: how many leading inputs reach the last layer's outputs.

    ``layers`` are ("conv", 3, 1) for a 3-tap 'same' conv or ("pool", size, stride) for a valid pool.
    Walks forward for the sizes, then back from the last output for the reachable prefix.
    """
    sizes = [n]
    for kind, size, stride in layers:
        sizes.append(sizes[-1] if kind == "conv" else (sizes[-1] - size) // stride + 1)
    last = sizes[-1] - 1  # index of the last output unit; every output unit reaches the dense layer
    for (kind, size, stride), before in zip(reversed(layers), reversed(sizes[:-1])):
        last = min(before - 1, last + 1) if kind == "conv" else last * stride + size - 1
    return last + 1


@pytest.mark.parametrize("name", ["MTT_vgg", "MSD_vgg"])
def test_coverage_equals_receptive_field_arithmetic(imported: dict, name: str) -> None:
    keras_model, info = imported[name]
    pools = info.model.pools
    frames_layers, bands_layers = [], []
    for f_size, t_size, f_stride, t_stride in pools:
        frames_layers += [("conv", 3, 1), ("pool", t_size, t_stride)]
        bands_layers += [("conv", 3, 1), ("pool", f_size, f_stride)]
    coverage = input_coverage(keras_model)
    assert coverage.leading_frames == _reachable_interval(PATCH, frames_layers) == 161
    assert int(coverage.bands.sum()) == _reachable_interval(96, bands_layers) == 94
    assert coverage.frames[:161].all() and not coverage.frames[161:].any()
    # the default hop leaves no frame of a track unread
    assert info.segment.step == 161 * 256 and info.extra["coverage"]["blind_frames"] == [[161, 187]]


def test_musicnn_reads_every_frame_and_band(imported: dict) -> None:
    for name in ("MTT_musicnn", "MSD_musicnn"):
        keras_model, info = imported[name]
        coverage = input_coverage(keras_model)
        assert coverage.frames.all() and coverage.bands.all()
        assert info.segment.step == PATCH * 256  # non-overlapping, as musicnn's default


def test_full_scale_music_stays_finite_where_musicnns_float16_front_end_overflows(imported: dict) -> None:
    keras_model, info = imported["MTT_vgg"]
    loud = music_like(seconds=9.0, sample_rate=SR, seed=11, peak=0.99)
    mel = _mel(loud)
    with np.errstate(over="ignore"):
        overflow = np.isinf(np.log10(10000 * mel.astype(np.float16) + 1))  # musicnn's extractor, verbatim
    assert overflow.mean() > 0.001, "the probe is not loud enough to show the float16 overflow"
    scores = musicnn.song_scores(keras_model, info, loud)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    quiet = musicnn.song_scores(keras_model, info, loud * 0.25)
    top_loud, top_quiet = set(np.argsort(-scores)[:5]), set(np.argsort(-quiet)[:5])
    assert len(top_loud & top_quiet) >= 3  # the same music at another level: mostly the same tags


def _piano_piece(seconds: float) -> np.ndarray:
    chords = [(48, 52, 55), (45, 48, 52), (41, 45, 48), (43, 47, 50)]
    notes, t = [], 0.0
    while t + 2 <= seconds:
        for i, pitch in enumerate(chords[int(t / 2) % 4] * 2):
            start = t + 0.25 * i
            notes.append(Note(pitch + (12 if i >= 3 else 0), start, min(seconds, start + 0.6), 70))
        t += 2
    return signals.render([Part(program=0, notes=tuple(notes))], sample_rate=SR, duration=seconds)


def test_mtt_vgg_hears_piano_and_drums(imported: dict) -> None:
    """A test of meaning on FluidSynth General MIDI renderings."""
    keras_model, info = imported["MTT_vgg"]
    piano = musicnn.song_scores(keras_model, info, _piano_piece(12.0))
    drums = musicnn.song_scores(
        keras_model, info, signals.render([signals.drum_pattern("8-beat", tempo=110, duration=12.0)],
                                          sample_rate=SR, duration=12.0))
    top = [info.labels[i] for i in np.argsort(-piano)[:3]]
    assert {"piano", "classical"} & set(top), top
    top = [info.labels[i] for i in np.argsort(-drums)[:5]]
    assert {"drums", "beat", "techno", "electronic"} & set(top), top


# --------------------------------------------------------------------------- errors


def test_missing_distribution_names_the_install_command() -> None:
    with pytest.raises(ModelError, match=r"pip install --no-deps musicnn==0\.1\.0"):
        musicnn.locate_model_dir("MTT_vgg", distribution="musicnn-not-installed")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="musicnn/MTT_vgg"):
        catalogue.resolve("musicnn/MTT_resnet")
    assert catalogue.resolve("mtt_VGG").name == "MTT_vgg"


def _copy_model_dir(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / name
    shutil.copytree(musicnn.locate_model_dir(name), target)
    return target


def test_truncated_checkpoint_names_model_and_variable(tmp_path: pathlib.Path) -> None:
    folder = _copy_model_dir("MTT_vgg", tmp_path)
    data = folder / ".data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.truncate(os.path.getsize(data) // 2)
    with pytest.raises(ModelError, match=r"musicnn/MTT_vgg: cannot read variable '[^']+'"):
        musicnn.import_model("MTT_vgg", checkpoint_dir=str(folder))


def test_mismatched_checkpoint_names_model_and_variable(tmp_path: pathlib.Path) -> None:
    """musicnn's weights offered as MTT_vgg: the first vgg variable is missing -> an error, never random weights."""
    folder = tmp_path / "mixed"
    shutil.copytree(musicnn.locate_model_dir("MTT_musicnn"), folder)
    shutil.copy(os.path.join(musicnn.locate_model_dir("MTT_vgg"), ".meta"), folder / ".meta")
    with pytest.raises(ModelError, match=r"musicnn/MTT_vgg: the checkpoint has no variable '1CNN/kernel'"):
        musicnn.import_model("MTT_vgg", checkpoint_dir=str(folder))


def test_wrong_shape_names_the_layer() -> None:
    from tfaural.models.musicnn import build_musicnn

    other = build_musicnn(MusicnnConfig(architecture="vgg", n_filters=64))
    prefix = os.path.join(musicnn.locate_model_dir("MTT_vgg"), "")
    with pytest.raises(ModelError, match=r"musicnn/MTT_vgg: variables 1CNN/\* have shapes .* layer 'conv1' needs"):
        musicnn.load_weights(other, other.tfaural_config, musicnn.MODELS["MTT_vgg"], prefix)


def test_import_refuses_to_overwrite_a_run(tmp_path: pathlib.Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ModelError, match="already holds a run"):
        catalogue.import_run("musicnn/MTT_vgg", tmp_path, verify=False)
