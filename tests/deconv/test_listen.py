"""``python -m tfaural.listen``: a Keras model file and real audio files on disk -> beam_jobs.auralise's layout.

The models are saved ``.keras`` files of kinds tfaural did not build (a waveform model with its own
``keras.layers.MelSpectrogram``; a model fed librosa's dB log-mel; a raw-waveform CNN; one with a ``Lambda``)
and a tfaural Choi CNN. As in ``test_own_models``, the first conv of the spectrogram models passes the
spectrogram's rise above silence through as feature 0, so what its auralisation must sound like is known.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from ffmpeg_files import write as write_with_ffmpeg
from signal_makers import chirp

from tfaural import audio, listen
from tfaural.auralise import front_end_filterbank
from tfaural.config import FrontEndConfig
from tfaural.errors import ParameterError
from tfaural.formats import parse_job_record, parse_manifest, parse_track_record

SR = 16000
N_FFT, HOP, N_MELS = 512, 256, 64


def _music(seconds: float, *, seed: int) -> np.ndarray:
    """A chirp over two tones and a little noise, float32 ``[samples]`` at 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    y = (chirp(200, 2000, seconds, sample_rate=SR) + 0.3 * np.sin(2 * np.pi * 330 * t)
         + 0.2 * np.sin(2 * np.pi * 523 * t))
    return (0.3 * y + 0.003 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def _blocks(x: keras.KerasTensor, h: keras.KerasTensor, *, bias: float, name: str) -> keras.Model:
    """``h`` [..., 1] -> a 1x1 conv whose feature 0 is ``h + bias`` -> two random conv blocks -> 3 tags."""
    passthrough = keras.layers.Conv2D(4, 1, activation="relu", name="passthrough")
    h = passthrough(h)
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(8, 3, padding="same", activation="elu", name="block2")(h))
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block3")(h))
    model = keras.Model(x, keras.layers.Dense(3, activation="sigmoid")(keras.layers.GlobalMaxPooling2D()(h)),
                        name=name)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in layer.get_weights()])
    kernel, bias_vector = passthrough.get_weights()
    kernel[..., 0, 0], bias_vector[0] = 1.0, bias
    passthrough.set_weights([kernel, bias_vector])
    return model


def _correlation(path: pathlib.Path, y: np.ndarray) -> float:
    heard, rate = sf.read(path, dtype="float32")
    assert rate == SR and heard.shape == y.shape
    return float(np.corrcoef(heard, y)[0, 1])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A FLAC, an MP3 (LAME through FFmpeg), a corrupt WAV, a silent WAV and a 0.7-s FLAC."""
    folder = tmp_path_factory.mktemp("music")
    paths = {"flac": folder / "first song.flac", "mp3": folder / "second.mp3", "corrupt": folder / "broken.wav",
             "silent": folder / "silence.wav", "short": folder / "blip.flac"}
    audio.write(paths["flac"], _music(3.0, seed=1), sample_rate=SR)
    write_with_ffmpeg(paths["mp3"], _music(3.0, seed=2), sample_rate=SR, kind="mp3-lame")
    paths["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + os.urandom(64))
    audio.write(paths["silent"], np.zeros(SR * 2, np.float32), sample_rate=SR)
    audio.write(paths["short"], _music(0.7, seed=3), sample_rate=SR)  # 0.2 s after the offset
    return paths


@pytest.fixture(scope="module")
def keras_mel_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Waveform in, ``keras.layers.MelSpectrogram`` (dB, top_db 80) inside; feature 0 of level 1 is the dB
    spectrogram's rise above -80 dB (its floor for a song whose loudest bin is near 0 dB)."""
    x = keras.Input((None,))
    mel = keras.layers.MelSpectrogram(fft_length=N_FFT, sequence_stride=HOP, sampling_rate=SR, num_mel_bins=N_MELS,
                                      name="mel")(x)
    model = _blocks(x, keras.layers.Reshape((N_MELS, -1, 1))(mel), bias=80.0, name="keras_mel_tagger")
    path = tmp_path_factory.mktemp("models") / "keras_mel_tagger.keras"
    model.save(path)
    return path


def test_the_command_line_on_real_files_writes_what_the_report_reads(
    files: dict[str, pathlib.Path], keras_mel_model: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A fresh process, as a user runs it: every file in the manifest once, the bad ones failed with the
    reason, every written file with its SHA-256, and the HTML listening report."""
    out = tmp_path / "heard"
    order = ["flac", "corrupt", "mp3", "silent", "short"]
    run = subprocess.run(
        [sys.executable, "-m", "tfaural.listen", "--model", str(keras_mel_model), "--output", str(out),
         "--layers", "1,3", "--features", "top2", "--clip-seconds", "2", "--offset-seconds", "0.5", "--report",
         *[str(files[k]) for k in order]],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert run.returncode == 0, run.stderr
    assert "listen: 2 of 5 file(s) ok, 3 failed" in run.stdout
    rows = parse_manifest((out / "manifest.jsonl").read_text(), path="manifest.jsonl")
    assert [row.path for row in rows] == [str(files[k]) for k in order]
    status = {pathlib.Path(row.path).name: row for row in rows}
    assert [row.status for row in rows] == ["ok", "failed", "ok", "failed", "failed"]
    broken = status["broken.wav"]
    assert broken.stage == "decode" and broken.error_type == "AudioDecodeError"
    # the reason alone, as in the Beam jobs' manifests (the row has the path); the summary names the file once
    assert broken.error and not broken.error.startswith(str(files["corrupt"]))
    assert f"failed: {files['corrupt']}: AudioDecodeError (decode): {broken.error}\n" in run.stderr
    assert status["silence.wav"].error == "the audio is digital silence (every sample is 0)"
    assert status["silence.wav"].error_type == "InvalidAudioError"
    assert "short" in (status["blip.flac"].error or "")
    job = parse_job_record((out / "job.json").read_text(), path="job.json")
    assert job.job == "auralise" and job.extra["layers"] == [1, 3]
    chosen = {int(k): v for k, v in job.extra["features"].items()}
    assert [len(v) for v in chosen.values()] == [2, 2]
    for row in rows[::2][:2]:  # the two songs
        folder = out / row.name
        track = parse_track_record((folder / "track.json").read_text(), path="track.json")
        assert track.sample_rate == SR and track.clip_seconds == 2.0 and track.offset_seconds == 0.5
        assert {layer: [e.feature for e in entries] for layer, entries in track.layers.items()} == chosen
        assert set(track.checksums or {}) == set(track.files())
        for file, digest in (track.checksums or {}).items():
            assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest
        assert sorted(row.outputs) == sorted([f"{row.name}/{f}" for f in track.files()] + [f"{row.name}/track.json"])
        original, _ = sf.read(folder / "original.wav", dtype="float32")
        for entries in track.layers.values():
            for entry in entries:
                heard, _ = sf.read(folder / entry.file, dtype="float32")
                assert heard.shape == original.shape and np.isfinite(heard).all()
                assert entry.silent or abs(np.abs(heard).max() - 0.9) < 1e-3
    report = (out / "report" / "index.html").read_text()
    assert "first_song" in report and "second" in report
    assert "Keras model file" in report and str(keras_mel_model) in report and "keras_mel_tagger" in report


def test_what_a_passthrough_feature_sounds_like_is_the_song(
    files: dict[str, pathlib.Path], keras_mel_model: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Feature 0 of level 1 passes the dB mel spectrogram's rise above its floor: its auralisation is the excerpt."""
    out = tmp_path / "heard"
    summary = listen.listen(str(keras_mel_model), [str(files["flac"])], str(out), layers="1", features="0",
                            seconds=2.0, progress=False)
    assert summary["ok"] == 1 and summary["layers"] == {"1": [0]}
    folder = out / "first_song"
    original, _ = sf.read(folder / "original.wav", dtype="float32")
    assert _correlation(folder / "layer1" / "feature0.wav", original) > 0.9


def test_a_model_fed_librosa_decibels_says_so_with_front_end_options(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """librosa.power_to_db(mel, ref=np.max) made before the model: --compression db-max and the STFT settings."""
    x = keras.Input((N_MELS, None, 1))
    path = tmp_path / "db_tagger.keras"
    _blocks(x, x, bias=80.0, name="db_tagger").save(path)
    out = tmp_path / "heard"
    argv = ["--model", str(path), "--output", str(out), "--layers", "1", "--features", "0", "--clip-seconds", "2",
            str(files["mp3"])]
    front = ["--sample-rate", str(SR), "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels", str(N_MELS)]
    assert listen.main([*argv, *front, "--compression", "db-max"]) == 0
    original, _ = sf.read(out / "second" / "original.wav", dtype="float32")
    assert _correlation(out / "second" / "layer1" / "feature0.wav", original) > 0.9
    job = json.loads((out / "job.json").read_text())
    assert job["settings"]["front_end"]["compression"] == "db-max" and job["settings"]["sample_rate"] == SR


def test_a_yamnet_shaped_model_with_its_own_mel_bands(files: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """[96 frames, 64 bands, 1] patches of ln(mel magnitude + 0.001), YAMNet's HTK bands of 125-7500 Hz with peaks
    of 1 and its 10-ms hop: the clip is the model's 0.95 s unless asked, and feature 0 of level 1 is the excerpt;
    a 0.7-s file is heard zero-padded to 0.95 s, as its track.json says."""
    x = keras.Input((96, N_MELS, 1))
    path = tmp_path / "yamnet_like.keras"
    _blocks(x, x, bias=-float(np.log(0.001)), name="yamnet_like").save(path)
    out = tmp_path / "heard"
    argv = ["--model", str(path), "--output", str(out), "--layers", "1", "--features", "0", "--sample-rate", str(SR),
            "--n-fft", str(N_FFT), "--hop-length", "160", "--n-mels", str(N_MELS), "--power", "1",
            "--compression", "ln-offset:0.001", "--htk", "--mel-norm", "none", "--fmin", "125", "--fmax", "7500",
            str(files["flac"]), str(files["short"])]
    assert listen.main(argv) == 0
    track = parse_track_record((out / "first_song" / "track.json").read_text(), path="track.json")
    assert track.clip_seconds == 95 * 160 / SR and track.padded_seconds == 0.0
    blip = parse_track_record((out / "blip" / "track.json").read_text(), path="track.json")
    assert (blip.clip_seconds, blip.padded_seconds) == (95 * 160 / SR, pytest.approx((95 * 160 - 0.7 * SR) / SR))
    original, _ = sf.read(out / "first_song" / "original.wav", dtype="float32")
    assert _correlation(out / "first_song" / "layer1" / "feature0.wav", original) > 0.9
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=160, n_mels=N_MELS, fmin=125.0, fmax=7500.0,
                           htk=True, mel_norm="none")
    expected = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=125.0, fmax=7500.0, htk=True, norm=None)
    np.testing.assert_allclose(front_end_filterbank(front), expected, atol=1e-6)


def test_a_model_that_compresses_in_a_lambda_layer(files: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """Mel power in, ``Lambda(tf.math.log(1 + 10000 m) / ln 10)`` inside (code Keras alone cannot reload: its
    rebuilt function has no ``tf``): --trust-lambda, --input-layer and --compression log10-1p:10000."""
    x = keras.Input((N_MELS, None, 1))
    log_mel = keras.layers.Lambda(lambda m: tf.math.log(1.0 + 10000.0 * m) / np.log(10.0), name="log_mel")(x)
    path = tmp_path / "lambda_tagger.keras"
    _blocks(x, log_mel, bias=0.0, name="lambda_tagger").save(path)
    out = tmp_path / "heard"
    argv = ["--model", str(path), "--output", str(out), "--layers", "1", "--features", "0", "--clip-seconds", "2",
            "--sample-rate", str(SR), "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels", str(N_MELS),
            "--input-layer", "log_mel", "--compression", "log10-1p:10000", str(files["flac"])]
    assert listen.main(argv) == 2  # not trusted
    assert listen.main([*argv, "--trust-lambda"]) == 0
    original, _ = sf.read(out / "first_song" / "original.wav", dtype="float32")
    assert _correlation(out / "first_song" / "layer1" / "feature0.wav", original) > 0.9


def test_a_raw_waveform_model_needs_only_its_sample_rate(files: dict[str, pathlib.Path],
                                                         tmp_path: pathlib.Path) -> None:
    x = keras.Input((None, 1))
    passthrough = keras.layers.Conv1D(2, 1, activation="relu", name="passthrough")
    h = keras.layers.MaxPooling1D(3)(keras.layers.Conv1D(4, 3, activation="relu", name="conv2")(passthrough(x)))
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(h)), name="wave_tagger")
    passthrough.set_weights([np.array([[[1.0, -1.0]]], np.float32), np.zeros(2, np.float32)])
    path = tmp_path / "wave_tagger.keras"
    model.save(path)
    out = tmp_path / "heard"
    argv = ["--model", str(path), "--output", str(out), "--layers", "1", "--features", "all", "--clip-seconds", "1",
            str(files["flac"])]
    assert listen.main(argv) == 2  # no --sample-rate
    assert listen.main([*argv, "--sample-rate", str(SR)]) == 0
    original, _ = sf.read(out / "first_song" / "original.wav", dtype="float32")
    halves = [sf.read(out / "first_song" / "layer1" / f"feature{k}.wav", dtype="float32")[0] for k in (0, 1)]
    # ReLU(y) and ReLU(-y) back through their kernels (1 and -1): the positive and the negative half-waves
    for half, sign in zip(halves, (1.0, -1.0)):
        expected = sign * np.maximum(sign * original, 0.0)
        np.testing.assert_allclose(half, expected * 0.9 / np.abs(expected).max(), atol=2e-4)


def test_a_tfaural_model_needs_nothing_but_its_file(files: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tfaural.models import choi_cnn

    path = tmp_path / "model.keras"  # as in a training run's folder, which may be named instead
    choi_cnn(n_outputs=3, n_filters=4, fc_units=(8,), input_scaling="log").save(path)
    out = tmp_path / "heard"
    argv = ["--model", str(tmp_path), "--output", str(out), "--layers", "2,5", "--features", "top3",
            str(files["flac"])]
    assert listen.main([*argv, "--sample-rate", "16000"]) == 2  # the config says it: 11,025 Hz
    # 10 minutes of 4 maps of 257 bins x 25,841 frames, 7 float32 tensors of them: 0.69 GiB
    assert listen.main([*argv, "--clip-seconds", "600", "--max-memory-gib", "0.1"]) == 2
    refusal = capsys.readouterr().err
    assert re.search(r"holds about 0\.7 GiB \(--max-memory-gib 0\.1\); clips up to 8[67] s fit", refusal)
    assert listen.main(argv) == 0
    track = parse_track_record((out / "first_song" / "track.json").read_text(), path="track.json")
    assert track.sample_rate == 11025 and track.clip_seconds == 3.0  # 4 s asked of a 3-s song
    assert {layer: len(entries) for layer, entries in track.layers.items()} == {2: 3, 5: 3}


def test_bad_options_and_models_exit_2_with_a_message(
    files: dict[str, pathlib.Path], keras_mel_model: pathlib.Path, tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    out, song = str(tmp_path / "heard"), str(files["flac"])
    export_like = tmp_path / "exports" / "1"
    export_like.mkdir(parents=True)
    (export_like / "saved_model.pb").write_bytes(b"")
    x = keras.Input((N_MELS, None, 1))
    lambda_path = tmp_path / "lambda_tagger.keras"
    _blocks(x, keras.layers.Lambda(lambda m: tf.math.log(1.0 + m), name="log")(x), bias=0.0,
            name="lambda_tagger").save(lambda_path)
    _blocks(x, x, bias=0.0, name="tagger").save(tmp_path / "tagger.keras")
    cases = [
        (["--model", str(tmp_path / "missing.keras")], "no such file"),
        (["--model", str(export_like)], "is a SavedModel export; auralise an export with python -m beam_jobs.auralise"),
        (["--model", str(lambda_path)], "--trust-lambda"),
        (["--model", str(keras_mel_model), "--layers", "7"], "--layers"),
        (["--model", str(keras_mel_model), "--features", "top0"], "N must be at least 1"),
        (["--model", str(keras_mel_model), "--features", "0-99"], "--features (layer"),
        (["--model", str(keras_mel_model), "--n-fft", "1024"], "n_fft=1024 conflicts with the model's MelSpectrogram"),
        (["--model", str(lambda_path), "--trust-lambda", "--sample-rate", "16000", "--n-fft", "512", "--hop-length",
          "256", "--n-mels", "64", "--input-layer", "log", "--compression", "magic"], "--compression 'magic'"),
        (["--model", str(keras_mel_model), "--top-db", "60"], "--compression db or db-max"),
        (["--model", str(tmp_path / "tagger.keras"), "--sample-rate", "16000", "--n-fft", "512", "--hop-length",
          "256", "--n-mels", "64"], "takes its input as it is"),
        (["--model", str(tmp_path / "tagger.keras"), "--n-fft", "512"],
         "does not say how it is made: pass --sample-rate, --hop-length, --n-mels, and --compression"),
        (["--model", str(keras_mel_model), "--htk"], "--htk: the model's MelSpectrogram layer makes its own mel bands"),
        (["--model", str(keras_mel_model), "--method", "saliency"], None),
    ]
    for extra, message in cases:
        if message is None:  # argparse's own refusal
            with pytest.raises(SystemExit) as exit_:
                listen.main(["--output", out, *extra, song])
            assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
            continue
        assert listen.main(["--output", out, *extra, song]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not os.path.exists(out)  # nothing was written before the options were checked


def test_a_stereo_waveform_model_is_refused_unless_told_it_takes_two_bands(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keras.Input((None, 2))`` with no front end: a stereo waveform, not a spectrogram of 2 bands to be told how
    it is made; the refusal's remedy (a mono input fed to both channels) is heard as a waveform model. Only
    ``--n-mels 2`` (the user's word) reads it as 2 bands."""
    x = keras.Input((None, 2))
    h = keras.layers.Conv1D(4, 3, activation="relu", name="conv2")(keras.layers.Conv1D(4, 9, strides=3, name="c1")(x))
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(h)), name="stereo")
    model.save(tmp_path / "stereo.keras")
    spectrogram = ["--n-fft", "512", "--hop-length", "256", "--compression", "db"]
    for extra in ([], [*spectrogram, "--n-mels", "64"]):
        assert listen.main(["--model", str(tmp_path / "stereo.keras"), "--output", str(tmp_path / "heard"),
                            "--sample-rate", str(SR), *extra, str(files["flac"])]) == 2
        said = capsys.readouterr().err
        assert ("model 'stereo' takes an input of shape (None, 2) (its input): a stereo waveform [samples, 2]. A "
                "waveform model must take mono audio ([samples, 1] or [samples]") in said, said
        assert "a 2-channel input is not supported" in said and "--n-fft" not in said.split("(A spectrogram")[0]
    assert not (tmp_path / "heard").exists()
    two_bands = FrontEndConfig(sample_rate=SR, n_fft=512, hop_length=256, n_mels=2, compression="db")
    auraliser, _ = listen.auraliser_for_model(model, two_bands)
    assert (auraliser.n_mels, auraliser.layout) == (2, "frames_mels")
    mono = keras.Input((None, 1))
    wrapped = keras.Model(mono, model(keras.layers.Concatenate()([mono, mono])), name="mono")
    auraliser, rate = listen.auraliser_for_model(wrapped, FrontEndConfig(sample_rate=SR))
    assert rate == SR and not auraliser.is_spectral
    heard = auraliser(_music(0.5, seed=4)[None], layer=1, features=[0, 1]).audio
    assert heard.shape == (1, 2, SR // 2) and np.isfinite(heard.numpy()).all()


def test_what_says_how_a_spectrogram_model_is_read_is_named_as_a_flag(
    files: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A square patch and a spectrogram of any size on both axes need ``--layout``; a ``channels_first`` conv is
    named as what makes the model unheard, with or without the spectrogram options."""
    square, any_size = keras.Input((N_MELS, N_MELS, 1)), keras.Input((None, None, 1))
    _blocks(square, square, bias=0.0, name="square").save(tmp_path / "square.keras")
    _blocks(any_size, any_size, bias=0.0, name="any_size").save(tmp_path / "any_size.keras")
    first = keras.Input((1, N_MELS, None))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", data_format="channels_first", name="cf")(first)
    keras.Model(first, keras.layers.Dense(3)(keras.layers.GlobalMaxPooling2D(data_format="channels_first")(h)),
                name="first").save(tmp_path / "first.keras")
    spectrogram = ["--sample-rate", str(SR), "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels",
                   str(N_MELS), "--compression", "db"]
    layout = "on the command line --layout mels_frames or --layout frames_mels"
    cases = [
        ("square", spectrogram, f"both axes have n_mels={N_MELS} sizes; pass layout='mels_frames' ([n_mels, frames]) "
                                f"or layout='frames_mels' ([frames, n_mels]); {layout}"),
        ("any_size", spectrogram, f"shape (None, None, 1)): both axes take any size, so which one holds the "
                                  f"n_mels={N_MELS} bands cannot be told; pass layout='mels_frames'"),
        ("any_size", spectrogram, layout),
        ("first", spectrogram, "model 'first': layer(s) 'cf' (Conv2D) take data_format='channels_first'; tfaural "
                               "deconvolves and hears channels_last models only"),
        ("first", ["--sample-rate", str(SR)], "layer(s) 'cf' (Conv2D) take data_format='channels_first'"),
    ]
    for name, options, message in cases:
        assert listen.main(["--model", str(tmp_path / f"{name}.keras"), "--output", str(tmp_path / "heard"),
                            *options, str(files["flac"])]) == 2
        said = capsys.readouterr().err
        assert message in said, (name, said)
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, compression="db",
                           layout="frames_mels")
    auraliser, _ = listen.auraliser_for_model(keras.models.load_model(tmp_path / "any_size.keras"), front)
    assert (auraliser.layout, auraliser.frames) == ("frames_mels", None)


def test_features_named_by_the_flag() -> None:
    from tfaural.cli import choose_features

    mean = [0.1, 0.9, 0.5, 0.9, 0.0]
    assert choose_features("top3", n_maps=5, layer=2, mean_activation=mean) == [1, 3, 2]  # most active first; ties
    assert choose_features("top9", n_maps=5, layer=2, mean_activation=mean) == [1, 3, 2, 0, 4]  # at most all
    assert choose_features("top2", n_maps=5, layer=2) == [0, 1]  # no activations yet: the syntax, the first two
    assert choose_features("all", n_maps=3, layer=1) == [0, 1, 2]
    assert choose_features("4,0-1", n_maps=5, layer=1) == [0, 1, 4]
    for spec, message in [("top", "expected topN"), ("top0", "N must be at least 1"), ("5", "do not exist")]:
        with pytest.raises(ParameterError, match=message):
            choose_features(spec, n_maps=5, layer=3)


def test_an_earlier_run_is_replaced_only_when_asked(files: dict[str, pathlib.Path], keras_mel_model: pathlib.Path,
                                                    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heard"
    base = ["--model", str(keras_mel_model), "--output", str(out), "--layers", "1", "--features", "0",
            "--clip-seconds", "1"]
    assert listen.main([*base, "--report", str(files["flac"])]) == 0
    (out / "notes.txt").write_text("mine")
    assert listen.main([*base, str(files["mp3"])]) == 2
    assert "holds an earlier run's results (job.json, manifest.jsonl, report)" in capsys.readouterr().err
    assert (out / "first_song" / "track.json").is_file()  # nothing was touched
    assert listen.main([*base, "--overwrite", str(files["mp3"])]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["job.json", "manifest.jsonl", "notes.txt", "second"]
    rows = parse_manifest((out / "manifest.jsonl").read_text(), path="manifest.jsonl")
    assert [row.name for row in rows] == ["second"]
