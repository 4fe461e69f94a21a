"""``python -m tfaural.visualise``: figures of a saved run from real audio files."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import keras
import matplotlib.image
import numpy as np
import pytest
from signal_makers import chirp, clicks

from tfaural import spectral, visualise
from tfaural.config import AudioConfig, SegmentConfig
from tfaural.models import choi_cnn, config_from_model, conv_blocks
from tfaural.models.samplecnn import samplecnn_model
from tfaural.training.run import RunInfo, save_run

RATE = 4000


def _choi_run(root: pathlib.Path) -> tuple[pathlib.Path, keras.Model]:
    model = choi_cnn(n_outputs=3, n_freq=65, n_frames=63, n_fft=128, hop_length=64, n_filters=8, fc_units=(8,),
                     sample_rate=RATE)
    info = RunInfo(model=config_from_model(model), labels=("a", "b", "c"), task="single-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=62 * 64))
    save_run(root / "choi", model, info)
    return root / "choi", model


def _samplecnn_run(root: pathlib.Path) -> pathlib.Path:
    model = samplecnn_model(filter_sizes=(3,) * 7, n_outputs=2, channels=(8,) * 6, front_filters=8, top_filters=8,
                      sample_rate=RATE)
    info = RunInfo(model=config_from_model(model), labels=("x", "y"), task="multi-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=3**7))
    save_run(root / "samplecnn", model, info)
    return root / "samplecnn"


def _looks_like_a_figure(path: pathlib.Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_choi_figures_pick_the_most_active_features(
    tmp_path: pathlib.Path, write_audio: Callable[..., pathlib.Path]
) -> None:
    run, model = _choi_run(tmp_path)
    tracks = [
        write_audio("chirp.wav", chirp(100, 1500, 1.2, sample_rate=8000), sample_rate=8000),  # resampled to 4 kHz
        write_audio("clicks.flac", clicks(1.2, sample_rate=RATE), sample_rate=RATE),
    ]
    out = tmp_path / "figures"
    code = visualise.main(["--run", str(run), "--output", str(out), "--audio", *map(str, tracks),
                           "--layers", "1,3", "--features", "top3", "--clip-seconds", "1.0"])
    assert code == 0
    summary = json.loads((out / visualise.FIGURES_FILE).read_text())
    assert summary["figures"] == ["first-layer-weights.png", "deconvolution-layer1.png", "deconvolution-layer3.png"]
    for name in summary["figures"]:
        _looks_like_a_figure(out / name)

    # Independently: the block's pooled output from a Keras sub-model, maximum over positions, mean over tracks.
    from tfaural import audio

    clips = np.zeros((2, RATE), np.float32)
    for i, path in enumerate(tracks):
        y, _ = audio.load(str(path), sample_rate=RATE, duration=1.0)
        clips[i, : y.size] = y[:RATE]
    magnitude = np.abs(spectral.stft(clips, n_fft=128, hop_length=64).numpy())
    for layer in (1, 3):
        pool = conv_blocks(model)[layer - 1].pool
        sub = keras.Model(model.inputs, model.get_layer(pool).output)
        act = sub([magnitude[..., : model.inputs[0].shape[2]]]).numpy().max(axis=(1, 2)).mean(axis=0)
        assert summary["features"][str(layer)] == [int(f) for f in np.argsort(-act, kind="stable")[:3]]


def test_samplecnn_filter_spectra_and_deconvolution(
    tmp_path: pathlib.Path, write_audio: Callable[..., pathlib.Path]
) -> None:
    run = _samplecnn_run(tmp_path)
    track = write_audio("song.ogg", chirp(200, 1800, 1.0, sample_rate=RATE), sample_rate=RATE)
    out = tmp_path / "figures"
    code = visualise.main(["--run", str(run), "--output", str(out), "--audio", str(track), "--layers", "2",
                           "--features", "0,5", "--filter-layers", "1-2", "--steps", "5"])
    assert code == 0
    summary = json.loads((out / visualise.FIGURES_FILE).read_text())
    assert summary["figures"] == ["filter-spectra.png", "deconvolution-layer2.png"]
    assert summary["features"] == {"2": [0, 5]}
    for name in summary["figures"]:
        _looks_like_a_figure(out / name)


def test_log_mel_tagger_deconvolution_grid(tmp_path: pathlib.Path, write_audio: Callable[..., pathlib.Path]) -> None:
    """An imported-style log-mel tagger (musicnn's vgg architecture, small, random weights): mel-band grids."""
    from tfaural.config import MusicnnConfig
    from tfaural.models.musicnn import musicnn_tagger

    keras.utils.set_random_seed(1)
    model = musicnn_tagger(architecture="vgg", n_outputs=4, n_filters=8)
    config = config_from_model(model)
    assert isinstance(config, MusicnnConfig)
    info = RunInfo(model=config, labels=("a", "b", "c", "d"), task="multi-label",
                   audio=AudioConfig(sample_rate=16000), segment=SegmentConfig(length=config.segment_length))
    save_run(tmp_path / "mel", model, info)
    track = write_audio("song.flac", chirp(200, 4000, 3.5, sample_rate=22050), sample_rate=22050)
    out = tmp_path / "figures"
    code = visualise.main(["--run", str(tmp_path / "mel"), "--output", str(out), "--audio", str(track),
                           "--layers", "1,5", "--features", "top2", "--clip-seconds", "3"])
    assert code == 0
    summary = json.loads((out / visualise.FIGURES_FILE).read_text())
    assert summary["figures"] == ["deconvolution-layer1.png", "deconvolution-layer5.png"]
    assert all(len(summary["features"][layer]) == 2 for layer in ("1", "5"))
    for name in summary["figures"]:
        _looks_like_a_figure(out / name)
    bad = visualise.main(["--run", str(tmp_path / "mel"), "--output", str(tmp_path / "f2"), "--audio", str(track),
                          "--layers", "6"])
    assert bad == 2 and not (tmp_path / "f2").exists()


def test_bad_input_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], write_audio: Callable[..., pathlib.Path]
) -> None:
    run, _ = _choi_run(tmp_path)
    broken = tmp_path / "broken track.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    assert visualise.main(["--run", str(run), "--output", str(tmp_path / "o"), "--audio", str(broken)]) == 2
    assert "broken track.wav" in capsys.readouterr().err
    good = write_audio("ok.wav", chirp(100, 900, 1.0, sample_rate=RATE), sample_rate=RATE)
    assert visualise.main(["--run", str(run), "--output", str(tmp_path / "o"), "--audio", str(good),
                           "--features", "top0"]) == 2
    assert "N must be at least 1" in capsys.readouterr().err
    assert visualise.main(["--run", str(run), "--output", str(tmp_path / "o"), "--audio", str(good),
                           "--layers", "7"]) == 2
    assert "--layers" in capsys.readouterr().err
    assert visualise.main(["--run", str(run), "--output", str(tmp_path / "o"), "--audio", str(good),
                           "--features", "0-99"]) == 2
    assert "--features" in capsys.readouterr().err
    # every argument is checked before the first figure is drawn
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.parametrize(
    "family,flags,message",
    [
        ("choi", ["--layers", "9"], "--layers '9' names [9]"),
        ("choi", ["--layers", "9", "--no-audio"], "--layers '9' names [9]"),
        ("choi", ["--features", "0,70"], "--features (layer 1) '0,70' names [70]"),
        ("choi", ["--clip-seconds", "-1"], "--clip-seconds -1.0 is invalid"),
        # five 2x2 poolings need 32 frames: 31 hops of 64 samples at 4 kHz
        ("choi", ["--clip-seconds", "0.2"], "--clip-seconds 0.2 is too short for layer 5: its maps are empty on "
                                            "clips shorter than 0.496 s (1984 samples at 4000 Hz)"),
        ("choi", ["--missing-audio"], "missing.wav"),
        ("samplecnn", ["--layers", "9"], "--layers '9' names [9]"),
        ("samplecnn", ["--steps", "0"], "--steps 0 is invalid"),
    ],
)
def test_every_argument_is_checked_before_any_figure(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], write_audio: Callable[..., pathlib.Path],
    family: str, flags: list[str], message: str,
) -> None:
    run = _choi_run(tmp_path)[0] if family == "choi" else _samplecnn_run(tmp_path)
    track = write_audio("song.wav", chirp(100, 900, 1.0, sample_rate=RATE), sample_rate=RATE)
    audio = [] if "--no-audio" in flags else [str(tmp_path / "missing.wav")] if "--missing-audio" in flags else [
        str(track)]
    extra = [f for f in flags if f not in ("--no-audio", "--missing-audio")]
    out = tmp_path / "figures"
    code = visualise.main(["--run", str(run), "--output", str(out), *(["--audio", *audio] if audio else []),
                           "--steps", "2", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists() or not list(out.iterdir())  # no figure was drawn before the error
