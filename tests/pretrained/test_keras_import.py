"""Any Keras audio CNN imported as a run (``python -m tfaural.pretrained my.keras``), exported and run over a
catalogue by the Beam jobs, against independent references: the model called by Keras on librosa's (or the
model's own) spectrogram of the decoded audio.

Three models stand for what users bring: a tagger with its own ``keras.layers.MelSpectrogram`` (any length),
a YAMNet-like model on ``librosa.power_to_db(ref=np.max)`` patches ``[frames, mels, 1]`` with a flattening
head (fixed length), and a 1D CNN on the waveform ``[samples, 1]``; and a small CRNN whose layers take only its
own patch length (a BatchNormalization per frame). Level 1's feature 0 of each spectrogram
model passes the input's rise above its floor through, so what it sounds like is known: the excerpt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import keras
import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.signal
import soundfile as sf
import tensorflow as tf
from ffmpeg_files import write as write_with_ffmpeg
from signal_makers import chirp

from export.exporter import build_module, export_run
from tfaural import audio, deconv, listen
from tfaural.auralise import Auraliser, MelAuraliser, auraliser_for
from tfaural.cli import add_front_end_flags, front_end_from_args
from tfaural.config import FrontEndConfig, KerasConfig, model_config_from_dict, model_config_to_dict
from tfaural.errors import ConfigError, ModelError, ParameterError
from tfaural.formats import parse_manifest, parse_track_record
from tfaural.pretrained import __main__ as pretrained_cli
from tfaural.pretrained.keras_model import import_keras_model, read_labels
from tfaural.training.run import load_run
from tfaural.visualise import make_figures

SR = 16000
N_FFT, HOP, N_MELS = 512, 160, 64
PATCH_FRAMES = 96
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _music(seconds: float, *, seed: int, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    y = (chirp(200, 2000, seconds, sample_rate=rate) + 0.3 * np.sin(2 * np.pi * 330 * t)
         + 0.2 * np.sin(2 * np.pi * 523 * t))
    return (0.3 * y + 0.003 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def _conv_blocks(x: keras.KerasTensor, h: keras.KerasTensor, *, floor: float, name: str, head: str) -> keras.Model:
    """``h`` [..., 1] -> 1x1 conv whose feature 0 is ``h + floor`` (the rise above the floor) -> two conv blocks ->
    3 sigmoid tags (``head``: ``"pool"`` any size, ``"flatten"`` a fixed one)."""
    passthrough = keras.layers.Conv2D(4, 1, activation="relu", name="passthrough")
    h = passthrough(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(
        keras.layers.Conv2D(8, 3, padding="same", activation="elu", name="block2")(h))
    h = keras.layers.MaxPooling2D(2, name="pool3")(
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block3")(h))
    h = keras.layers.GlobalMaxPooling2D()(h) if head == "pool" else keras.layers.Flatten()(h)
    model = keras.Model(x, keras.layers.Dense(3, activation="sigmoid", name="tags")(h), name=name)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in layer.get_weights()])
    kernel, bias = passthrough.get_weights()
    kernel[..., 0, 0], bias[0] = 1.0, floor
    passthrough.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("models")
    x = keras.Input((None,))
    mel = keras.layers.MelSpectrogram(fft_length=N_FFT, sequence_stride=256, sampling_rate=SR,
                                      num_mel_bins=N_MELS, name="mel")(x)
    keras_mel = _conv_blocks(x, keras.layers.Reshape((N_MELS, -1, 1))(mel), floor=80.0, name="keras_mel_tagger",
                             head="pool")
    patches = keras.Input((PATCH_FRAMES, N_MELS, 1))
    db_patches = _conv_blocks(patches, patches, floor=80.0, name="db_patch_tagger", head="flatten")
    wave = keras.Input((4000, 1))
    h = keras.layers.Conv1D(8, 9, strides=3, activation="relu", name="wconv1")(wave)
    h = keras.layers.MaxPooling1D(3, name="wpool1")(h)
    h = keras.layers.Conv1D(8, 3, activation="relu", name="wconv2")(h)
    waveform = keras.Model(wave, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h)),
                           name="waveform_genres")
    paths = {}
    for key, model in (("keras_mel", keras_mel), ("db_patches", db_patches), ("waveform", waveform)):
        paths[key] = folder / f"{model.name}.keras"
        model.save(paths[key])
    return paths


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """44.1 kHz stereo FLAC and MP3 (LAME through FFmpeg), a 22.05 kHz mono OGG, and a corrupt 'MP3'."""
    folder = tmp_path_factory.mktemp("catalogue")
    paths = {"flac": folder / "first song.flac", "mp3": folder / "second.mp3", "ogg": folder / "third.ogg",
             "broken": folder / "broken.mp3"}
    left = _music(7.0, seed=1, rate=44100)
    sf.write(paths["flac"], np.stack([left, 0.8 * left], 1), 44100, subtype="PCM_24")
    write_with_ffmpeg(paths["mp3"], np.stack([_music(7.0, seed=2, rate=44100)] * 2), sample_rate=44100,
                      kind="mp3-lame")
    sf.write(paths["ogg"], _music(6.0, seed=3, rate=22050), 22050, subtype="VORBIS")
    paths["broken"].write_bytes(b"ID3\x04\x00" + os.urandom(300))
    return paths


def _db_max_patch_scores(model: keras.Model, y: np.ndarray, segment: int) -> np.ndarray:
    """The reference: librosa's dB mel patch of each whole segment (ref=np.max, top_db 80, [frames, mels]),
    the Keras model on each, averaged."""
    patches = []
    for start in range(0, len(y) - segment + 1, segment):
        mel = librosa.feature.melspectrogram(y=y[start:start + segment], sr=SR, n_fft=N_FFT, hop_length=HOP,
                                             n_mels=N_MELS, power=2.0)
        patches.append(librosa.power_to_db(mel, ref=np.max, top_db=80.0).T[..., None])
    return np.asarray(model(np.stack(patches).astype(np.float32), training=False)).mean(axis=0)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV, timeout=900)


def test_front_end_and_keras_configs_round_trip_and_refuse_bad_values() -> None:
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, compression="ln-offset:0.001",
                           htk=True, mel_norm="none", fmin=125.0, fmax=7500.0, layout="frames_mels")
    config = KerasConfig(front_end=front, takes="spectrogram", n_fft=N_FFT, hop_length=HOP, n_outputs=521,
                         segment_length=15200, feature_layers=("a", "b"), source="yamnet.keras")
    assert model_config_from_dict(json.loads(json.dumps(model_config_to_dict(config)))) == config
    assert config.stft is not None and (config.stft.n_fft, config.stft.hop_length) == (N_FFT, HOP)
    assert front.given() == ["--sample-rate", "--n-fft", "--hop-length", "--n-mels", "--compression", "--layout",
                             "--fmin", "--fmax", "--htk", "--mel-norm"]
    for bad, match in ((dict(compression="db:3"), "compression 'db:3'"), (dict(compression="ln-offset:-1"), "EPS"),
                       (dict(layout="time_first"), "layout"), (dict(fmin=100.0, fmax=50.0), "fmax"),
                       (dict(power=0.0), "power")):
        with pytest.raises(ConfigError, match=match):
            FrontEndConfig(sample_rate=SR, **bad)  # type: ignore[arg-type]
    for bad, match in ((dict(frame_length=255), r"frame_length=255 is invalid: expected None with centred frames"),
                       (dict(center=False, n_fft=256, frame_length=300), "frame_length=300 is invalid: expected at")):
        with pytest.raises(ConfigError, match=match):
            FrontEndConfig(sample_rate=SR, **bad)  # type: ignore[arg-type]
    tutorial = ["--sample-rate", "16000", "--n-fft", "256", "--hop-length", "128", "--no-center", "--frame-length",
                "255", "--linear-frequency", "--power", "1", "--compression", "linear"]
    parser = argparse.ArgumentParser()
    add_front_end_flags(parser)
    args = parser.parse_args(tutorial)
    front = front_end_from_args(args)
    assert (front.center, front.frame_length) == (False, 255)
    assert front.given() == ["--sample-rate", "--n-fft", "--hop-length", "--power", "--compression",
                             "--linear-frequency", "--no-center", "--frame-length"]
    args = parser.parse_args(["--frame-length", "255"])
    with pytest.raises(ParameterError, match=r"--frame-length 255 is invalid: expected None with .*--no-center"):
        front_end_from_args(args)
    with pytest.raises(ConfigError, match="sample_rate"):
        KerasConfig(front_end=FrontEndConfig(), n_outputs=3, segment_length=100)
    with pytest.raises(ConfigError, match="n_fft"):
        KerasConfig(front_end=FrontEndConfig(sample_rate=SR), takes="spectrogram", n_outputs=3, segment_length=100)


def test_an_imported_waveform_model_serves_its_own_outputs(models: dict[str, pathlib.Path],
                                                           tmp_path: pathlib.Path) -> None:
    """A 1D CNN on 4000-sample inputs: the run holds the model's own length, the softmax's task, the top levels;
    the export's scores are the mean of the model's outputs on each whole segment of a clip."""
    model, info = import_keras_model(models["waveform"], tmp_path / "run", front=FrontEndConfig(sample_rate=8000),
                                     labels=["calm", "busy"])
    config = info.model
    assert isinstance(config, KerasConfig) and config.takes == "waveform" and config.stft is None
    assert info.segment.length == 4000 and info.task == "single-label" and info.labels == ("calm", "busy")
    assert config.feature_layers == ("wpool1", "wconv2")  # its two levels: conv + pool, conv
    assert info.extra["imported"]["reproduction_max_abs_difference"] == 0.0
    assert isinstance(model.tfaural_config, KerasConfig)
    auraliser = auraliser_for(model)
    assert type(auraliser) is Auraliser and auraliser.sample_rate == 8000
    module, metadata = build_module(model, info, signatures="tagging")
    assert metadata["family"] == "keras" and metadata["stft"] is None and metadata["segment_length"] == 4000
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 10_500).astype(np.float32)  # two whole segments and a rest
    scores = module.call("serving_default", {"waveform": y[None]})["scores"][0]
    expected = np.asarray(model(y[:8000].reshape(2, 4000, 1), training=False)).mean(axis=0)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert tuple(metadata["signatures"]) == ("serving_default", "serving_wav", "features")
    assert metadata["deconvolvable_layers"] == [1, 2]
    # --levels: the export deconvolves a range of them only
    model, info = import_keras_model(models["waveform"], tmp_path / "run2", front=FrontEndConfig(sample_rate=8000),
                                     levels="2")
    assert info.model.levels == (2, 2)
    assert build_module(model, info, signatures="tagging")[1]["deconvolvable_layers"] == [2]


def test_a_mixed_precision_model_is_exported_with_float32_features_as_keras_computes_them(
        tmp_path: pathlib.Path) -> None:
    """A model made under the ``mixed_float16`` policy (float16 maps, a float32 output layer): its export (the
    tagging signatures, verified in fresh processes) serves float32 features, and its scores and pooled maps are
    the Keras model's on each segment, to float16 precision (its maps are float16 inside Keras)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = keras.Input((2000, 1))
        h = keras.layers.Conv1D(6, 9, strides=3, activation="relu", name="c1")(x)
        h = keras.layers.Conv1D(6, 3, activation="relu", name="c2")(keras.layers.MaxPooling1D(3, name="p1")(h))
        tags = keras.layers.Dense(3, activation="sigmoid", dtype="float32", name="tags")(
            keras.layers.GlobalMaxPooling1D()(h))
        keras.Model(x, tags, name="mixed").save(tmp_path / "mixed.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model, info = import_keras_model(tmp_path / "mixed.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=8000))
    assert model.get_layer("c2").compute_dtype == "float16" and info.segment.length == 2000
    served = tf.saved_model.load(export_run(tmp_path / "run", tmp_path / "export", signatures="tagging"))
    y = 0.5 * np.sin(np.arange(4500) * 0.05).astype(np.float32) * np.linspace(0.2, 1, 4500, dtype=np.float32)
    segments = y[:4000].reshape(2, 2000, 1)  # two whole segments and a rest
    scores = served.signatures["serving_default"](waveform=tf.constant(y[None]))["scores"].numpy()[0]
    np.testing.assert_allclose(scores, np.asarray(model(segments, training=False)).mean(axis=0), atol=1e-3)
    features = served.signatures["features"](waveform=tf.constant(y[None]))
    assert features["features"].dtype == tf.float32
    maps = keras.Model(model.inputs[0], [model.get_layer(name).output for name in info.model.feature_layers])(segments)
    for level, keras_map in enumerate(maps, start=1):
        keras_map = np.asarray(keras_map, np.float32)
        np.testing.assert_allclose(features[f"level{level}_max"].numpy()[0], keras_map.max(axis=(0, 1)),
                                   rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(features[f"level{level}_mean"].numpy()[0], keras_map.mean(axis=(0, 1)),
                                   rtol=1e-2, atol=1e-3)


def test_a_model_with_its_own_compression_layer_is_served_and_deconvolved_from_that_layer(
        tmp_path: pathlib.Path) -> None:
    """Mel power in, ``Lambda(log10(1 + 10000 m))`` inside (code: --trust-lambda), named by --input-layer: the run
    reloads the Lambda, the export's scores are the model's on librosa's mel power, and its deconvolution ends at
    that layer's input."""
    x = keras.Input((N_MELS, None, 1))
    log_mel = keras.layers.Lambda(lambda m: tf.math.log(1.0 + 10000.0 * m) / tf.math.log(10.0), name="log_mel")(x)
    model = _conv_blocks(x, log_mel, floor=0.0, name="lambda_tagger", head="pool")
    model.save(tmp_path / "lambda.keras")
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, input_layer="log_mel",
                           compression="log10-1p:10000")
    with pytest.raises(ModelError, match="--trust-lambda"):
        import_keras_model(tmp_path / "lambda.keras", tmp_path / "run", front=front, segment_seconds=1.0)
    model, info = import_keras_model(tmp_path / "lambda.keras", tmp_path / "run", front=front, segment_seconds=1.0,
                                     trust_lambda=True)
    assert info.segment.length == 100 * HOP and info.model.trust_lambda
    auraliser = auraliser_for(model)
    assert isinstance(auraliser, MelAuraliser) and auraliser.takes == "mel power"
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve"])
    assert metadata["deconvolvable_layers"] == [1, 2, 3] and metadata["mel"]["input_layer"] == "log_mel"
    y = _music(2.5, seed=4)
    scores = module.call("serving_default", {"waveform": y[None]})["scores"][0]
    segment = info.segment.length
    mels = [librosa.feature.melspectrogram(y=y[i:i + segment], sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
            for i in (0, segment)]
    expected = np.asarray(model(np.stack(mels)[..., None].astype(np.float32), training=False)).mean(axis=0)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    out = module.call("deconvolve", {"waveform": y[None, :segment], "layer": np.int32(1),
                                     "features": np.array([0], np.int32)})
    assert out["deconvolved"].shape == (1, 1, N_MELS, 101) and out["spectrogram"].shape == (1, N_MELS, 101)
    assert metadata["signatures"]["deconvolve"]["outputs"]["deconvolved"]["shape"] == ["batch", "k", N_MELS, "frames"]
    # feature 0 of level 1 passes log10(1 + 10000 m) through: its deconvolution is the compressed input
    compressed = np.log10(1 + 10000 * out["spectrogram"][0])
    np.testing.assert_allclose(out["deconvolved"][0, 0], compressed, rtol=1e-4, atol=1e-4)


def test_layers_inside_a_nested_backbone_serve_features_and_attribution(tmp_path: pathlib.Path) -> None:
    """A backbone called as a layer (as keras.applications models are): its layers are levels, the features
    signature pools their maps (as a Keras model cut at that layer computes them) and attribute reaches them."""
    inner_in = keras.Input((N_MELS, None, 1))
    h = keras.layers.MaxPooling2D(2, name="b_pool1")(keras.layers.Conv2D(6, 3, activation="relu", name="b_conv1")(
        inner_in))
    h = keras.layers.MaxPooling2D(2, name="b_pool2")(keras.layers.Conv2D(5, 3, activation="relu", name="b_conv2")(h))
    backbone = keras.Model(inner_in, h, name="backbone")
    x = keras.Input((None,))
    mel = keras.layers.MelSpectrogram(fft_length=N_FFT, sequence_stride=256, sampling_rate=SR, num_mel_bins=N_MELS,
                                      name="mel")(x)
    scaled = keras.layers.Rescaling(1 / 80.0, offset=1.0, name="scale")(keras.layers.Reshape((N_MELS, -1, 1))(mel))
    tags = keras.layers.Dense(3, activation="sigmoid")(keras.layers.GlobalMaxPooling2D()(backbone(scaled)))
    keras.Model(x, tags, name="nested").save(tmp_path / "nested.keras")
    model, info = import_keras_model(tmp_path / "nested.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=SR),
                                     segment_seconds=1.0)
    assert info.model.feature_layers == ("b_pool1", "b_pool2")  # inside the backbone
    module, metadata = build_module(model, info, signatures=["serving_default", "features", "attribute"])
    assert [level["channels"] for level in metadata["feature_levels"]] == [6, 5]
    y = _music(1.2, seed=6)[None, :info.segment.length]
    got = module.call("features", {"waveform": y})
    to_backbone = keras.Model(model.inputs[0], model.get_layer("scale").output)
    for index, name in enumerate(("b_pool1", "b_pool2"), start=1):
        cut = keras.Model(backbone.inputs[0], backbone.get_layer(name).output)
        maps = np.asarray(cut(to_backbone(y, training=False), training=False))
        np.testing.assert_allclose(got[f"level{index}_max"][0], maps.max(axis=(1, 2))[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[f"level{index}_mean"][0], maps.mean(axis=(1, 2))[0], rtol=1e-5, atol=1e-6)
    attributed = module.call("attribute", {"waveform": y, "layer": np.int32(2), "top_tags": np.int32(2)})
    assert attributed["contributions"].shape == (1, 2, 5) and np.isfinite(attributed["contributions"]).all()
    assert np.abs(attributed["contributions"]).max() > 0


def test_an_any_length_model_deconvolves_and_hears_clips_shorter_than_its_segment(tmp_path: pathlib.Path) -> None:
    """``valid`` 3x3 convolutions and 2x2 poolings on log-mel frames: the deepest level's maps need 22 frames
    (22 -> conv 20 -> pool 10 -> conv 8 -> pool 4 -> conv 2 -> pool 1), i.e. 21 hops of a centred STFT. The export's
    ``min_deconv_samples`` is that, far under the 2-s segment; ``deconvolve`` takes a clip of exactly that length
    (its activations are a Keras model cut at the level on librosa's log-mel frames) and refuses one sample less;
    ``tfaural.listen`` hears a clip of it and names the shortest clip when asked for less."""
    x = keras.Input((N_MELS, None, 1))
    h = x
    for level in (1, 2, 3):
        h = keras.layers.Conv2D(4, 3, activation="relu", name=f"conv{level}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool{level}")(h)
    tags = keras.layers.Dense(2, activation="sigmoid")(keras.layers.GlobalMaxPooling2D()(h))
    keras.Model(x, tags, name="valid_convs").save(tmp_path / "valid.keras")
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, compression="log10-1p:10000")
    model, info = import_keras_model(tmp_path / "valid.keras", tmp_path / "run", front=front, segment_seconds=2.0)
    shortest = 21 * HOP
    assert info.segment.length == 200 * HOP
    assert info.extra["imported"]["clips"] == {"shortest_samples": shortest, "longest_samples": None}
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve", "auralise"])
    assert metadata["min_deconv_samples"] == shortest and metadata["min_deconv_seconds"] == shortest / SR
    assert "min_deconv_samples" in metadata["signatures"]["deconvolve"]["inputs"]["waveform"]["description"]
    assert metadata["mel"] == {  # what the model takes, as the flags and their defaults made it
        "takes": "spectrogram", "input_layer": None, "n_fft": N_FFT, "hop_length": HOP, "n_mels": N_MELS, "power": 2.0,
        "layout": "mels_frames", "frames": None, "compression": "log10-1p:10000", "filterbank": "mel",
        "linear_frequency": False, "fmin": 0.0, "fmax": None, "htk": False, "mel_norm": "slaney", "framing": "centred"}
    y = _music(1.0, seed=7)[None, :shortest]
    out = module.call("deconvolve", {"waveform": y, "layer": np.int32(3), "features": np.array([0, 1, 2], np.int32)})
    assert out["deconvolved"].shape == (1, 3, N_MELS, 22)
    mel = librosa.feature.melspectrogram(y=y[0], sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
    cut = keras.Model(model.inputs[0], model.get_layer("pool3").output)
    maps = np.asarray(cut(np.log10(1 + 10000 * mel)[None, ..., None].astype(np.float32), training=False))
    assert maps.shape[1:3] == (6, 1)  # 64 mels -> 6 rows; one position in time
    np.testing.assert_allclose(out["activation"][0], maps.max(axis=(1, 2))[0, :3], rtol=1e-4, atol=1e-5)
    heard = module.call("auralise", {"waveform": y, "layer": np.int32(3), "features": np.array([0], np.int32),
                                     "mode": np.array(b"phase", dtype=object)})
    assert heard["audio"].shape == (1, 1, shortest) and np.isfinite(heard["audio"]).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"need at least {shortest} \(.*not empty"):
        module.call("deconvolve", {"waveform": y[:, :-1], "layer": np.int32(1), "features": np.array([0], np.int32)})
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"need at least {info.segment.length} \(.*segment"):
        module.call("serving_default", {"waveform": y})
    clip = tmp_path / "clip.wav"
    sf.write(clip, _music(1.0, seed=8), SR)
    summary = listen.listen(str(tmp_path / "run"), [str(clip)], str(tmp_path / "heard"), layers="3", features="0",
                            seconds=shortest / SR, progress=False)
    assert summary["ok"] == 1
    assert sf.info(tmp_path / "heard" / "clip" / "layer3" / "feature0.wav").frames == shortest
    with pytest.raises(ParameterError, match=rf"too short for layer 3: .* shorter than {shortest / SR:.4g} s"):
        listen.listen(str(tmp_path / "run"), [str(clip)], str(tmp_path / "short"), layers="1-3", features="0",
                      seconds=0.1, progress=False)


def _stft_tagger(mode: str = "log", padding: str = "same") -> keras.Model:
    """A tagger on the waveform ``[samples, 1]`` through its own ``keras.layers.STFTSpectrogram`` (Hann window of
    512, hop 128), then :func:`_conv_blocks` (feature 0 of level 1 passes the rise above the log's silence)."""
    x = keras.Input((None, 1))
    stft = keras.layers.STFTSpectrogram(mode=mode, frame_length=N_FFT, frame_step=128, fft_length=N_FFT,
                                        padding=padding, expand_dims=True, name="stft")
    spectrogram = stft(x)
    kernels = stft.get_weights()
    silence = float(np.log(np.sqrt(keras.config.epsilon())))
    model = _conv_blocks(x, spectrogram, floor=-silence if mode == "log" else 0.0, name=f"stft_{mode}_tagger",
                         head="pool")
    stft.set_weights(kernels)  # _conv_blocks draws every layer's weights: the STFT keeps its DFT kernels
    return model


def _numpy_stft_magnitude(y: np.ndarray) -> np.ndarray:
    """The reference: ``[bins, frames]`` |rfft| of symmetric-Hann frames (hop 128) after TensorFlow's ``same``
    zero padding, over sqrt(sum w^2) (the layer's ``density`` scaling), in NumPy and SciPy."""
    hop, n = 128, y.size
    frames = -(-n // hop)
    total = max((frames - 1) * hop + N_FFT - n, 0)
    padded = np.pad(y, (total // 2, total - total // 2))
    window = scipy.signal.get_window("hann", N_FFT, fftbins=False)
    framed = np.stack([padded[t * hop:t * hop + N_FFT] for t in range(frames)])
    return (np.abs(np.fft.rfft(framed * window, axis=-1)) / np.sqrt(np.sum(window**2))).T


def test_a_keras_stft_tagger_is_heard_through_its_own_frames(tmp_path: pathlib.Path) -> None:
    """A model with its own ``keras.layers.STFTSpectrogram`` (not tfaural's centred STFT: a strided convolution,
    zero ``same`` padding, a symmetric window, density scaling) imports with only --sample-rate: its spectrogram is
    NumPy's STFT of those frames, its scores the Keras model's on the waveform, and its passthrough feature, heard
    with the excerpt's phase through the exact inverse of those frames, is the excerpt."""
    _stft_tagger().save(tmp_path / "stft.keras")
    model, info = import_keras_model(tmp_path / "stft.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=SR),
                                     segment_seconds=1.0)
    assert (info.model.takes, info.model.n_fft, info.model.hop_length) == ("keras stft", N_FFT, 128)
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve", "auralise"])
    assert metadata["stft"] == {"n_fft": N_FFT, "hop_length": 128, "win_length": None, "window": "hann",
                                "center": False, "padding": "same", "layer": "keras.layers.STFTSpectrogram",
                                "mode": "log"}
    mel = metadata["mel"]  # only what applies: the layer's bins, magnitude, its log (ln(|X| + sqrt(epsilon)))
    assert {k: mel[k] for k in ("takes", "n_fft", "hop_length", "n_mels", "power", "layout")} == {
        "takes": "keras stft", "n_fft": N_FFT, "hop_length": 128, "n_mels": N_FFT // 2 + 1, "power": 1.0,
        "layout": "frames_mels"}
    assert mel["compression"].startswith("ln-offset:") and "mel_norm" not in mel and "htk" not in mel
    assert float(mel["compression"].split(":")[1]) == np.sqrt(keras.config.epsilon())
    y = _music(2.2, seed=10)
    segment = info.segment.length
    scores = module.call("serving_default", {"waveform": y[None]})["scores"][0]
    expected = np.asarray(model(np.stack([y[:segment], y[segment:2 * segment]])[..., None], training=False))
    np.testing.assert_allclose(scores, expected.mean(axis=0), atol=1e-5)
    clip = y[None, :segment]
    out = module.call("deconvolve", {"waveform": clip, "layer": np.int32(1), "features": np.array([0], np.int32)})
    reference = _numpy_stft_magnitude(clip[0])
    np.testing.assert_allclose(out["spectrogram"][0], reference, atol=1e-5 * reference.max())
    heard = module.call("auralise", {"waveform": clip, "layer": np.int32(1), "features": np.array([0], np.int32),
                                     "mode": np.array(b"phase", dtype=object)})
    np.testing.assert_allclose(heard["audio"][0, 0], auraliser_for(model)(clip, layer=1, features=[0]).audio[0, 0],
                               atol=1e-5)
    assert float(np.corrcoef(heard["audio"][0, 0], clip[0])[0, 1]) > 0.999  # sqrt(eps) below the music: inaudible
    frames = auraliser_for(model).keras_frames  # the inverse of the layer's frames is exact
    np.testing.assert_allclose(frames.istft(frames.stft(clip), segment).numpy(), clip, atol=1e-6)


def test_what_of_a_keras_stft_front_end_cannot_be_heard_is_refused(tmp_path: pathlib.Path) -> None:
    """Phase-like modes, kernels trained away from the window's DFT and front-end flags are refused, naming why;
    nothing is written. ``valid`` padding and the magnitude mode are heard (the exact inverse where frames cover)."""
    front = FrontEndConfig(sample_rate=SR)
    for mode, message in (("psd", "mode='psd'"), ("angle", "mode='angle'")):
        _stft_tagger(mode).save(tmp_path / f"{mode}.keras")
        with pytest.raises(ModelError, match=rf"STFTSpectrogram layer 'stft' has {message}.*DeconvNet"):
            import_keras_model(tmp_path / f"{mode}.keras", tmp_path / "run", front=front, segment_seconds=1.0)
    trained = _stft_tagger()
    layer = trained.get_layer("stft")
    layer.real_kernel.assign(layer.real_kernel * 1.01 + 1e-3)
    trained.save(tmp_path / "trained.keras")
    with pytest.raises(ModelError, match="kernels that are not its window's DFT"):
        import_keras_model(tmp_path / "trained.keras", tmp_path / "run", front=front, segment_seconds=1.0)
    _stft_tagger("magnitude", "valid").save(tmp_path / "valid.keras")
    with pytest.raises(ParameterError, match=r"--n-fft: model .* keras.layers.STFTSpectrogram 'stft'; only --sample"):
        import_keras_model(tmp_path / "valid.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=SR, n_fft=256),
                           segment_seconds=1.0)
    with pytest.raises(ParameterError, match="pass the model's --sample-rate"):
        import_keras_model(tmp_path / "valid.keras", tmp_path / "run", front=FrontEndConfig(), segment_seconds=1.0)
    assert not (tmp_path / "run").exists()
    model, _ = import_keras_model(tmp_path / "valid.keras", tmp_path / "run", front=front, segment_seconds=1.0)
    frames = auraliser_for(model).keras_frames
    assert frames is not None and (frames.padding, frames.mode) == ("valid", "magnitude")
    y = _music(1.05, seed=11)[None]  # 16800 samples: the last 32 are in no frame
    back = frames.istft(frames.stft(y), y.shape[-1]).numpy()
    end = (y.shape[-1] - N_FFT) // 128 * 128 + N_FFT  # the frames' span, less the ends where the window's square
    covered = slice(40, end - 40)                      # is under 1e-3 of the frames' sum of squares (1.5)
    np.testing.assert_allclose(back[:, covered], y[:, covered], atol=1e-6)
    assert not back[:, end:].any()  # no frame covers the last samples


def _simple_audio_model() -> keras.Model:
    """The model of TensorFlow's "Simple audio recognition" tutorial (tensorflow.org/tutorials/audio/simple_audio),
    random weights: ``|tf.signal.stft(y, frame_length=255, frame_step=128)|`` of 1-s clips at 16 kHz, [124 frames,
    129 bins, 1], resized to 32 x 32, normalised (adapted on spectrograms), two convolutions, a dense head."""
    rng = np.random.default_rng(8)
    waves = np.stack([_music(1.0, seed=s) * rng.uniform(0.5, 2) for s in range(8)])
    spectrograms = _tutorial_spectrogram(waves)
    norm = keras.layers.Normalization()
    norm.adapt(spectrograms)
    return keras.Sequential([
        keras.Input(shape=spectrograms.shape[1:]), keras.layers.Resizing(32, 32), norm,
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Dropout(0.25), keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dropout(0.5), keras.layers.Dense(8, name="logits"),
    ], name="simple_audio")


def _tutorial_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """The tutorial's own ``get_spectrogram``: ``[batch, 124, 129, 1]`` of 16000-sample clips."""
    return tf.abs(tf.signal.stft(waveform, frame_length=255, frame_step=128)).numpy()[..., np.newaxis]


def test_tensorflows_tutorial_model_is_tagged_through_tf_signal_stfts_frames(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The most-run TensorFlow audio model makes its spectrogram with ``tf.signal.stft``: frames from the first
    sample on, 255 samples zero-padded to the 256-point FFT, and TensorFlow's "periodic" Hann window (symmetric for
    an odd length). Imported with ``--no-center --frame-length 255``, the export scores a clip as the tutorial's
    own code and the Keras model do (the reference: its ``get_spectrogram``); tfaural's centred frames would not.
    Its last layer gives logits (it trains with ``from_logits=True``): the import says so, and ``--scores softmax``
    serves the probabilities the tutorial computes with ``tf.nn.softmax``."""
    _simple_audio_model().save(tmp_path / "simple_audio.keras")
    tutorial = ["--sample-rate", "16000", "--n-fft", "256", "--hop-length", "128", "--linear-frequency", "--power",
                "1", "--compression", "linear"]
    assert pretrained_cli.main([str(tmp_path / "simple_audio.keras"), "--output", str(tmp_path / "run"),
                                *tutorial, "--no-center", "--frame-length", "255"]) == 0
    said = capsys.readouterr()
    assert "8 outputs (multi-label), segments of 15999 samples" in said.out
    assert "note: model 'simple_audio''s last layer 'logits' has no activation: its outputs are logits" in said.err
    model, info = load_run(tmp_path / "run")
    assert (info.extra["imported"]["output_activation"], info.extra["imported"]["scores"]) == ("linear", "as-is")
    assert info.segment.length == 123 * 128 + 255  # the 15999 samples that make 124 frames
    module, metadata = build_module(model, info, signatures=["serving_default"])
    assert metadata["stft"] == {"n_fft": 256, "hop_length": 128, "win_length": 255, "window": "hann",
                                "center": False, "padding": "valid", "layer": "tf.signal.stft", "mode": "magnitude"}
    mel = metadata["mel"]  # the STFT's own bins: no mel-band settings
    assert (mel["filterbank"], mel["framing"], mel["frames"], mel["layout"]) == (
        "none: the STFT's bins", "tf.signal.stft", 124, "frames_mels") and "mel_norm" not in mel
    keras_model = keras.models.load_model(tmp_path / "simple_audio.keras")
    clips = np.stack([_music(1.0, seed=s) for s in (20, 21)])
    expected = np.asarray(keras_model(_tutorial_spectrogram(clips), training=False))
    scores = module.call("serving_default", {"waveform": clips})["scores"]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # the same model read as centred frames (tfaural's STFT) scores the clips otherwise: the flag matters
    assert pretrained_cli.main([str(tmp_path / "simple_audio.keras"), "--output", str(tmp_path / "centred"),
                                *tutorial]) == 0
    model, info = load_run(tmp_path / "centred")
    centred = build_module(model, info, signatures=["serving_default"])[0]
    assert np.abs(centred.call("serving_default", {"waveform": clips[:, :info.segment.length]})["scores"]
                  - expected).max() > 1e-3
    # --scores softmax: the tutorial's probabilities, one label per clip
    capsys.readouterr()
    assert pretrained_cli.main([str(tmp_path / "simple_audio.keras"), "--output", str(tmp_path / "softmax"),
                                *tutorial, "--no-center", "--frame-length", "255", "--scores", "softmax"]) == 0
    said = capsys.readouterr()
    assert "8 outputs (single-label, softmax scores)" in said.out and "logits" not in said.err
    model, info = load_run(tmp_path / "softmax")
    assert info.task == "single-label" and info.extra["imported"]["scores"] == "softmax"
    probabilities = build_module(model, info, signatures=["serving_default"])[0]
    np.testing.assert_allclose(probabilities.call("serving_default", {"waveform": clips})["scores"],
                               tf.nn.softmax(expected).numpy(), atol=1e-6)


@pytest.mark.parametrize(("head", "activation"), [
    (lambda: keras.layers.Softmax(name="probabilities"), "softmax"),
    (lambda: keras.layers.Softmax(axis=1, name="probabilities"), "softmax"),
    (lambda: keras.layers.Activation(keras.activations.softmax, name="probabilities"), "softmax"),
    (lambda: keras.layers.Activation(keras.activations.sigmoid, name="probabilities"), "sigmoid"),
], ids=["Softmax", "Softmax(axis=1)", "Activation(softmax fn)", "Activation(sigmoid fn)"])
def test_a_probability_layer_of_any_kind_after_the_logits_is_known_to_give_probabilities(
        head: Callable[[], keras.layers.Layer], activation: str, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Logits, then a ``keras.layers.Softmax`` (or an ``Activation`` of the function itself): the import knows the
    outputs are probabilities as for ``Activation("softmax")``: ``--scores softmax`` is refused (it would apply
    softmax twice), there is no note about logits, and a softmax makes the task single-label."""
    x = keras.Input((800, 1))
    h = keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(4, 9, activation="relu", name="c")(x))
    keras.Model(x, head()(keras.layers.Dense(3, name="logits")(h)), name="tagger").save(tmp_path / "m.keras")
    assert pretrained_cli.main([str(tmp_path / "m.keras"), "--output", str(tmp_path / "twice"), "--sample-rate",
                                str(SR), "--scores", "softmax"]) == 2
    assert (f"--scores softmax: model 'tagger''s last layer 'probabilities' already applies {activation}: its "
            "outputs are probabilities (leave --scores out)") in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()
    assert pretrained_cli.main([str(tmp_path / "m.keras"), "--output", str(tmp_path / "run"), "--sample-rate",
                                str(SR)]) == 0
    assert "logits" not in capsys.readouterr().err
    info = load_run(tmp_path / "run")[1]
    assert (info.task, info.extra["imported"]["output_activation"], info.extra["imported"]["scores"]) == (
        "single-label" if activation == "softmax" else "multi-label", activation, "as-is")


def test_a_tf_signal_stft_model_is_heard_through_the_exact_inverse_of_its_frames(tmp_path: pathlib.Path) -> None:
    """A spectrogram of ``tf.signal.stft`` frames shorter than the FFT (400 of 512, hop 160): the export's
    spectrogram is NumPy's |rfft| of those frames, and the passthrough feature, heard through the least-squares
    inverse of the same frames, is the excerpt."""
    x = keras.Input((None, N_FFT // 2 + 1, 1))
    _conv_blocks(x, x, floor=0.0, name="tf_stft_tagger", head="pool").save(tmp_path / "m.keras")
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, power=1.0, compression="linear",
                           linear_frequency=True, center=False, frame_length=400)
    with pytest.raises(ParameterError, match=r"--scores sigmoid: .*last layer 'tags' already applies sigmoid"):
        import_keras_model(tmp_path / "m.keras", tmp_path / "run", front=front, segment_seconds=1.0, scores="sigmoid")
    model, info = import_keras_model(tmp_path / "m.keras", tmp_path / "run", front=front, segment_seconds=1.0)
    assert info.segment.length == 98 * HOP + 400  # 1 s rounded to whole frames: 99 of them
    assert (info.task, info.extra["imported"]["output_activation"]) == ("multi-label", "sigmoid")
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve", "auralise"])
    assert (metadata["stft"]["win_length"], metadata["stft"]["layer"]) == (400, "tf.signal.stft")
    clip = _music(1.3, seed=12)[None]
    out = module.call("deconvolve", {"waveform": clip, "layer": np.int32(1), "features": np.array([0], np.int32)})
    window = scipy.signal.get_window("hann", 400, fftbins=True)  # periodic (400 is even)
    frames = 1 + (clip.shape[-1] - 400) // HOP
    framed = np.stack([clip[0, t * HOP:t * HOP + 400] * window for t in range(frames)])
    reference = np.abs(np.fft.rfft(framed, n=N_FFT, axis=-1)).T
    np.testing.assert_allclose(out["spectrogram"][0], reference, atol=1e-5 * reference.max())
    heard = module.call("auralise", {"waveform": clip, "layer": np.int32(1), "features": np.array([0], np.int32),
                                     "mode": np.array(b"phase", dtype=object)})["audio"][0, 0]
    span = slice(HOP, (frames - 1) * HOP + 400 - HOP)  # inside the frames (the window is near 0 at the very ends)
    assert float(np.corrcoef(heard[span], clip[0, span])[0, 1]) > 0.999
    inverse = auraliser_for(model).keras_frames
    back = inverse.istft(inverse.stft(clip), clip.shape[-1]).numpy()
    np.testing.assert_allclose(back[:, span], clip[:, span], atol=1e-6)


def _gtzan_mfcc_cnn() -> keras.Model:
    """A genre CNN of the kind most music-ML courses train on GTZAN: 13 MFCCs of 3-s segments at 22,050 Hz
    (``librosa.feature.mfcc(n_fft=2048, hop_length=512)``: 130 frames), ``[130, 13, 1]``, three conv blocks with
    batch norm, a dense head, 10 genres (random weights)."""
    x = keras.Input((130, 13, 1))
    h = x
    for kernel, pool in ((3, 3), (3, 3), (2, 2)):
        h = keras.layers.Conv2D(16, kernel, activation="relu")(h)
        h = keras.layers.MaxPooling2D(pool, strides=2, padding="same")(h)
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(x, keras.layers.Dense(10, activation="softmax")(h), name="gtzan_mfcc")


def test_an_mfcc_model_is_tagged_as_librosa_feeds_it_and_its_maps_go_back_to_the_bands(tmp_path: pathlib.Path) -> None:
    """``--n-mfcc 13 --compression db``: the export feeds the model ``librosa.feature.mfcc`` of the clip (the
    reference: librosa itself), and a deconvolved map comes back to the 128 mel bands by the inverse DCT that
    ``librosa.feature.inverse.mfcc_to_mel`` uses (the coefficients left out are zero), then is heard."""
    _gtzan_mfcc_cnn().save(tmp_path / "gtzan.keras")
    flags = ["--sample-rate", "22050", "--n-fft", "2048", "--hop-length", "512", "--n-mels", "128", "--compression",
             "db", "--n-mfcc", "13"]
    front = FrontEndConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, n_mfcc=13)
    for bad, message in ((dict(), "--n-mfcc: MFCCs are taken of a compressed spectrogram made outside the model: "
                                  "pass --compression"),
                         (dict(compression="db", n_mfcc=200), "--n-mfcc 200 is invalid: expected at most the 128 "
                                                              "bands")):
        with pytest.raises(ParameterError, match=message):
            import_keras_model(tmp_path / "gtzan.keras", tmp_path / "run", front=dataclasses.replace(front, **bad))
    assert pretrained_cli.main([str(tmp_path / "gtzan.keras"), "--output", str(tmp_path / "run"), *flags]) == 0
    model, info = load_run(tmp_path / "run")
    assert info.segment.length == 129 * 512 and info.task == "single-label"
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve", "auralise"])
    assert {k: metadata["mel"][k] for k in ("n_mels", "n_mfcc", "frames", "layout", "compression")} == {
        "n_mels": 128, "n_mfcc": 13, "frames": 130, "layout": "frames_mels", "compression": "db"}
    clip = _music(129 * 512 / 22050, seed=30, rate=22050)[None]
    mfcc = librosa.feature.mfcc(y=clip[0], sr=22050, n_mfcc=13, n_fft=2048, hop_length=512)  # [13, 130]
    keras_model = keras.models.load_model(tmp_path / "gtzan.keras")
    expected = np.asarray(keras_model(mfcc.T[None, ..., None], training=False))
    np.testing.assert_allclose(module.call("serving_default", {"waveform": clip})["scores"], expected, atol=1e-4)
    out = module.call("deconvolve", {"waveform": clip, "layer": np.int32(1), "features": np.array([0, 3], np.int32)})
    maps = np.asarray(deconv.deconvolve(keras_model, mfcc.T[None, ..., None], layer=1, features=[0, 3]))
    raw = np.swapaxes(maps.reshape(1, 2, 130, 13), -1, -2)  # [1, 2, 13 coefficients, 130 frames]
    bands = scipy.fft.idct(raw, type=2, norm="ortho", n=128, axis=-2)  # as librosa's mfcc_to_mel
    np.testing.assert_allclose(out["deconvolved"], maps, atol=1e-3 * np.abs(maps).max())  # the model's domain
    heard_maps = np.asarray(auraliser_for(model)(clip, layer=1, features=[0, 3]).deconvolved)
    assert heard_maps.shape == (1, 2, 128, 130)  # the maps heard: back in the bands
    np.testing.assert_allclose(heard_maps, bands, atol=1e-3 * np.abs(bands).max())
    heard = module.call("auralise", {"waveform": clip, "layer": np.int32(1), "features": np.array([0, 3], np.int32),
                                     "mode": np.array(b"phase", dtype=object)})
    for k in range(2):
        assert np.all(np.isfinite(heard["audio"][0, k]))
        assert heard["silent"][0, k] or abs(np.abs(heard["audio"][0, k]).max() - 0.9) < 1e-3


def _mel_transformer() -> keras.Model:
    """An AST-like tagger on dB mel patches ``[frames, 64, 1]``: an 8x8 patch convolution, two pre-norm transformer
    blocks (attention, GELU MLP, residual sums), mean over tokens, 3 sigmoid tags (random weights)."""
    x = keras.Input((None, N_MELS, 1))
    h = keras.layers.Reshape((-1, 16))(keras.layers.Conv2D(16, 8, strides=8, name="patch_embed")(x))
    for i in range(2):
        a = keras.layers.LayerNormalization(name=f"ln{i}a")(h)
        h = keras.layers.Add(name=f"res{i}a")([h, keras.layers.MultiHeadAttention(2, 8, name=f"mha{i}")(a, a)])
        m = keras.layers.Dense(32, activation="gelu", name=f"mlp{i}")(keras.layers.LayerNormalization()(h))
        h = keras.layers.Add(name=f"res{i}b")([h, keras.layers.Dense(16, name=f"mlp{i}_out")(m)])
    out = keras.layers.Dense(3, activation="sigmoid", name="tags")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(x, out, name="mel_transformer")


def test_a_transformers_blocks_are_heard_as_extra_levels(tmp_path: pathlib.Path) -> None:
    """Its convolutions mark one level (the patch embedding); ``--extra-levels res0b,res1b`` makes its blocks levels 2
    and 3, for the export (deconvolve, auralise, attribute) and ``tfaural.listen`` alike. The export's deconvolution
    of a block's feature is tfaural.deconv's walk of the Keras model on librosa's dB mel patch of the clip."""
    _mel_transformer().save(tmp_path / "ast.keras")
    flags = ["--sample-rate", str(SR), "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels", str(N_MELS),
             "--compression", "db-max", "--segment-seconds", "1"]
    assert pretrained_cli.main([str(tmp_path / "ast.keras"), "--output", str(tmp_path / "run"), *flags,
                                "--extra-levels", "res0b,res1b"]) == 0
    model, info = load_run(tmp_path / "run")
    assert info.model.extra_levels == ("res0b", "res1b")
    module, metadata = build_module(model, info, signatures=["serving_default", "deconvolve", "auralise",
                                                                  "attribute"])
    assert metadata["deconvolvable_layers"] == [1, 2, 3]
    assert {k: metadata["layer_names"][k] for k in ("2", "3")} == {"2": "res0b", "3": "res1b"}
    assert metadata["features_per_layer"]["3"] == 16
    clip = _music(1.0, seed=40)[None, :info.segment.length]
    out = module.call("deconvolve", {"waveform": clip, "layer": np.int32(3), "features": np.array([0, 5], np.int32)})
    mel = librosa.feature.melspectrogram(y=clip[0], sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
    patch = librosa.power_to_db(mel, ref=np.max, top_db=80.0).T[None, ..., None].astype(np.float32)
    keras_model = keras.models.load_model(tmp_path / "ast.keras")
    expected = np.asarray(deconv.deconvolve(keras_model, patch, layer="res1b", features=[0, 5]))
    np.testing.assert_allclose(out["deconvolved"].reshape(expected.shape), expected,
                               atol=2e-3 * np.abs(expected).max())
    heard = module.call("auralise", {"waveform": clip, "layer": np.int32(3), "features": np.array([0, 5], np.int32),
                                     "mode": np.array(b"phase", dtype=object)})
    assert np.all(np.isfinite(heard["audio"])) and not heard["silent"].all()
    said = module.call("attribute", {"waveform": clip, "layer": np.int32(3), "top_tags": np.int32(2)})
    assert said["contributions"].shape == (1, 2, 16) and np.all(np.isfinite(said["contributions"]))
    # tfaural.listen hears the same model file's block, named the same way
    wav = tmp_path / "clip.wav"
    audio.write(wav, clip[0], sample_rate=SR)
    summary = listen.listen(str(tmp_path / "ast.keras"), [str(wav)], str(tmp_path / "heard"), layers="2",
                            features="0", front=FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP,
                                                               n_mels=N_MELS, compression="db-max"),
                            extra_levels=("res1b",), report=True, progress=False)
    assert summary["ok"] == 1
    job = json.loads((tmp_path / "heard" / "job.json").read_text())
    assert job["settings"]["extra_levels"] == ["res1b"] and job["layer_names"] == {"2": "res1b"}
    # its report heads the level with the block's name, not only its number
    page = next((tmp_path / "heard" / "report" / "tracks").glob("*.html")).read_text(encoding="utf-8")
    assert '<h2 id="layer2-heading">Layer 2 <code class="layer-name">res1b</code>' in page


@pytest.mark.slow
def test_a_keras_stft_tagger_is_auralised_by_the_beam_job_from_the_command_line(
        catalogue: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """Imported by ``python -m tfaural.pretrained`` with only --sample-rate, exported (verified without tfaural and
    in a TF1 session) and auralised by ``python -m beam_jobs.auralise`` over a FLAC, an MP3, an OGG and a broken
    file: each is in the manifest once, and each song's passthrough feature is its excerpt."""
    _stft_tagger().save(tmp_path / "stft.keras")
    done = _run("tfaural.pretrained", str(tmp_path / "stft.keras"), "--output", str(tmp_path / "run"),
                "--sample-rate", str(SR), "--segment-seconds", "1")
    assert done.returncode == 0 and "takes keras stft" in done.stdout, done.stderr[-3000:]
    export = pathlib.Path(export_run(tmp_path / "run", tmp_path / "export"))
    job_out = tmp_path / "job"
    done = _run("beam_jobs.auralise", "--input", str(catalogue["flac"].parent / "*"), "--model", str(export),
                "--output", str(job_out), "--layers", "1", "--features", "0,1", "--clip-seconds", "3",
                "--offset-seconds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {pathlib.Path(r.path).name: r for r in parse_manifest((job_out / "manifest.jsonl").read_text(),
                                                                 path="manifest.jsonl")}
    assert len(rows) == 4 and rows["broken.mp3"].status == "failed" and rows["broken.mp3"].stage == "decode"
    for key in ("flac", "mp3", "ogg"):
        name = rows[catalogue[key].name].name
        original, _ = sf.read(job_out / name / "original.wav", dtype="float32")
        passthrough, _ = sf.read(job_out / name / "layer1" / "feature0.wav", dtype="float32")
        assert original.size == 3 * SR and float(np.corrcoef(original, passthrough)[0, 1]) > 0.99, key

@pytest.mark.slow
def test_a_db_patch_model_imported_from_the_command_line_is_exported_and_tagged_as_librosa_would(
        models: dict[str, pathlib.Path], catalogue: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """CLI import (fresh process) -> export with every signature, verified without tfaural and as TF Serving loads
    it -> python -m beam_jobs.tag over a mixed catalogue: every file in the manifest once, the broken one failed
    with its reason, and each track's scores those of the Keras model on librosa's dB patches of the decoded audio."""
    run_dir, labels = tmp_path / "run", tmp_path / "tags.txt"
    labels.write_text("piano\nstrings\ndrums\n")
    done = _run("tfaural.pretrained", str(models["db_patches"]), "--output", str(run_dir), "--labels", str(labels),
                "--sample-rate", str(SR), "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels", str(N_MELS),
                "--compression", "db-max", "--layout", "frames_mels")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "takes spectrogram, 3 outputs (multi-label), segments of 15200 samples" in done.stdout
    model, info = load_run(run_dir)
    assert info.labels == ("piano", "strings", "drums") and info.segment.length == (PATCH_FRAMES - 1) * HOP
    assert isinstance(auraliser_for(model), MelAuraliser)
    export = pathlib.Path(export_run(run_dir, tmp_path / "export"))
    metadata = json.loads((export / "assets" / "metadata.json").read_text())
    assert metadata["family"] == "keras" and metadata["mel"]["compression"] == "db-max"
    assert metadata["stft"]["hop_length"] == HOP and metadata["input_scaling"] == {"mode": "db-max"}
    assert set(metadata["signatures"]) == {"serving_default", "serving_wav", "features", "deconvolve", "auralise",
                                           "attribute"}

    out = tmp_path / "tags"
    done = _run("beam_jobs.tag", "--input", str(catalogue["flac"].parent / "*"), "--model", str(export),
                "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = parse_manifest((out / "manifest.jsonl").read_text(), path="manifest.jsonl")
    assert sorted(pathlib.Path(r.path).name for r in rows) == sorted(p.name for p in catalogue.values())
    failed = [r for r in rows if r.status == "failed"]
    assert [pathlib.Path(r.path).name for r in failed] == ["broken.mp3"]
    assert failed[0].stage == "decode" and "not a readable audio file" in (failed[0].error or "")
    tagged = {pathlib.Path(row["path"]).name: row for row in map(json.loads, (out / "tags.jsonl").read_text().split(
        "\n")[:-1])}
    assert len(tagged) == 3
    for key in ("flac", "mp3", "ogg"):
        y, _ = audio.load(catalogue[key], sample_rate=SR)
        expected = _db_max_patch_scores(model, y, info.segment.length)
        got = np.array([tagged[catalogue[key].name]["scores"][name] for name in info.labels])
        # librosa's float64 STFT against tfaural's float32 one, through dB and the model: within 2e-4
        np.testing.assert_allclose(got, expected, atol=2e-4)


def _crnn(patch_frames: int) -> keras.Model:
    """A CRNN of Choi et al. 2017 in small: dB mel patches ``[frames, mels, 1]``, a BatchNormalization per frame
    (weights for each of the ``patch_frames`` frames: the model takes that length and no other), two conv blocks,
    a GRU over time, 3 sigmoid tags."""
    x = keras.Input((patch_frames, N_MELS, 1))
    h = keras.layers.BatchNormalization(axis=1, name="bn_frames")(x)
    for i in (1, 2):
        h = keras.layers.Conv2D(8, 3, padding="same", activation="elu", name=f"conv{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool{i}")(h)
    h = keras.layers.Reshape((patch_frames // 4, -1))(h)
    h = keras.layers.GRU(8, name="gru")(h)
    model = keras.Model(x, keras.layers.Dense(3, activation="sigmoid", name="tags")(h), name="crnn")
    rng = np.random.default_rng(11)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


@pytest.mark.slow
def test_a_crnn_built_for_one_length_is_exported_auralised_and_tagged_with_short_tracks_padded(
        tmp_path: pathlib.Path) -> None:
    """A model whose layers take exactly its patch (per-frame weights): the export takes deconvolution clips only
    as long as give that patch (``max_deconv_samples``, refused above with the reason); ``beam_jobs.auralise``
    without ``--clip-seconds`` takes such clips rather than refusing its own default, and with ``--pad-short``
    hears a track shorter than a patch zero-padded; ``beam_jobs.tag --pad-short`` scores it as the Keras model
    scores librosa's dB patch of the zero-padded audio."""
    model = _crnn(PATCH_FRAMES)
    model.save(tmp_path / "crnn.keras")
    short = tmp_path / "catalogue" / "jingle.wav"  # 0.5 s: under the 0.95-s patch
    short.parent.mkdir()
    sf.write(short, _music(0.5, seed=4, rate=22050), 22050, subtype="PCM_16")
    sf.write(short.parent / "song.flac", _music(3.0, seed=5, rate=44100), 44100, subtype="PCM_24")
    run_dir = tmp_path / "run"
    done = _run("tfaural.pretrained", str(tmp_path / "crnn.keras"), "--output", str(run_dir), "--sample-rate", str(SR),
                "--n-fft", str(N_FFT), "--hop-length", str(HOP), "--n-mels", str(N_MELS), "--compression", "db-max")
    assert done.returncode == 0, done.stderr[-3000:]
    segment = (PATCH_FRAMES - 1) * HOP  # 15,200 samples: 96 centred frames, as are up to 96 * 160 - 1
    assert "clips to listen to: 0.95-0.9599 s (its layers take only its own length)" in done.stdout
    export = pathlib.Path(export_run(run_dir, tmp_path / "export", verify=False))
    metadata = json.loads((export / "assets" / "metadata.json").read_text())
    assert (metadata["segment_length"], metadata["min_deconv_samples"]) == (segment, segment)
    assert metadata["max_deconv_samples"] == PATCH_FRAMES * HOP - 1
    deconvolve = tf.saved_model.load(str(export)).signatures["deconvolve"]
    clip = _music(1.0, seed=6)[np.newaxis]
    assert deconvolve(waveform=tf.constant(clip[:, : PATCH_FRAMES * HOP - 1]), layer=tf.constant(2),
                      features=tf.constant([0]))["deconvolved"].shape[2:] == (PATCH_FRAMES, N_MELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="built for one input length"):
        deconvolve(waveform=tf.constant(clip[:, : PATCH_FRAMES * HOP]), layer=tf.constant(2), features=tf.constant([0]))

    heard = tmp_path / "heard"
    done = _run("beam_jobs.auralise", "--input", str(short.parent / "*"), "--model", str(export), "--output",
                str(heard), "--features", "0-1", "--pad-short")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {pathlib.Path(r.path).name: r for r in parse_manifest((heard / "manifest.jsonl").read_text(), path="m")}
    assert [rows[name].status for name in ("jingle.wav", "song.flac")] == ["ok", "ok"]
    job = json.loads((heard / "job.json").read_text())
    assert job["clip_seconds"] == pytest.approx((PATCH_FRAMES * HOP - 1) / SR)  # the longest the export takes
    song = parse_track_record((heard / rows["song.flac"].name / "track.json").read_text(), path="t")
    assert song.clip_seconds == pytest.approx(job["clip_seconds"]) and song.padded_seconds == 0.0 and song.tags
    jingle = parse_track_record((heard / rows["jingle.wav"].name / "track.json").read_text(), path="t")
    assert jingle.clip_seconds == pytest.approx(segment / SR)  # --tags scores one patch: padded to it
    assert jingle.padded_seconds == pytest.approx((segment - 8000) / SR)

    tags = tmp_path / "tags"
    done = _run("beam_jobs.tag", "--input", str(short.parent / "*"), "--model", str(export), "--output", str(tags),
                "--pad-short")
    assert done.returncode == 0, done.stderr[-3000:]
    tagged = {pathlib.Path(r["path"]).name: r for r in map(json.loads, (tags / "tags.jsonl").read_text().splitlines())}
    y, _ = audio.load(short, sample_rate=SR)
    assert len(y) == 8000 and tagged["jingle.wav"]["padded_seconds"] == pytest.approx((segment - 8000) / SR)
    expected = _db_max_patch_scores(model, np.pad(y, (0, segment - len(y))), segment)
    got = [tagged["jingle.wav"]["scores"][f"output{i}"] for i in range(3)]
    np.testing.assert_allclose(got, expected, atol=2e-4)  # librosa's float64 STFT against tfaural's float32 one


@pytest.mark.slow
def test_a_keras_mel_tagger_is_auralised_by_the_beam_job_as_tfaural_listen_hears_it(
        models: dict[str, pathlib.Path], catalogue: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """A model with its own MelSpectrogram, imported with only --sample-rate and --segment-seconds: the auralise
    job's excerpts (0.75 s, shorter than the 2-s segment: --tags turns off) and features equal tfaural.listen's on
    the run's folder (within one 16-bit step), and the passthrough feature sounds like the excerpt."""
    run_dir = tmp_path / "run"
    assert pretrained_cli.main([str(models["keras_mel"]), "--output", str(run_dir), "--sample-rate", str(SR),
                                "--segment-seconds", "2"]) == 0
    info = load_run(run_dir)[1]
    config = info.model
    assert isinstance(config, KerasConfig) and config.takes == "keras mel" and (config.n_fft, config.hop_length) == (
        N_FFT, 256)
    assert info.segment.length == 125 * 256
    export = pathlib.Path(export_run(run_dir, tmp_path / "export"))
    job_out = tmp_path / "job"
    done = _run("beam_jobs.auralise", "--input", str(catalogue["flac"].parent / "*"), "--model", str(export),
                "--output", str(job_out), "--layers", "1,3", "--features", "0,1", "--clip-seconds", "0.75",
                "--offset-seconds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--clip-seconds 0.75 is shorter than one model segment (2 s), which attribution scores: --tags is off" \
        in done.stderr
    job = json.loads((job_out / "job.json").read_text())
    assert job["settings"]["tags"] == 0 and job["metadata"]["min_deconv_samples"] < info.segment.length
    mel = job["metadata"]["mel"]  # the layer's own settings (Keras's dB of power), not the flags' defaults
    assert (mel["takes"], mel["n_fft"], mel["hop_length"], mel["n_mels"], mel["compression"], mel["fmin"],
            mel["fmax"]) == ("keras mel", N_FFT, 256, N_MELS, "db", 20.0, SR / 2)  # Keras's default min_freq: 20 Hz
    assert "mel_norm" not in mel and "MelSpectrogram 'mel'" in mel["filterbank"]
    rows = {pathlib.Path(r.path).name: r for r in parse_manifest((job_out / "manifest.jsonl").read_text(),
                                                                 path="manifest.jsonl")}
    assert len(rows) == 4 and rows["broken.mp3"].status == "failed"
    heard = tmp_path / "listen"
    summary = listen.listen(str(run_dir), [str(catalogue["flac"]), str(catalogue["mp3"])], str(heard), layers="1,3",
                            features="0,1", offset=1.0, seconds=0.75, progress=False)
    assert summary["ok"] == 2
    for key in ("flac", "mp3"):
        name = rows[catalogue[key].name].name
        track = parse_track_record((job_out / name / "track.json").read_text(), path="track.json")
        for file in track.files():
            if not file.endswith(".wav"):
                continue
            ours, _ = sf.read(job_out / name / file, dtype="float32")
            theirs, _ = sf.read(heard / name / file, dtype="float32")
            np.testing.assert_allclose(ours, theirs, atol=2.0**-15 + 1e-7, err_msg=f"{key} {file}")
        original, _ = sf.read(job_out / name / "original.wav", dtype="float32")
        assert original.size == int(0.75 * SR)
        passthrough, _ = sf.read(job_out / name / "layer1" / "feature0.wav", dtype="float32")
        assert float(np.corrcoef(original, passthrough)[0, 1]) > 0.9


def test_the_import_names_what_is_missing_or_wrong(models: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    front = FrontEndConfig(sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, compression="db-max")
    cases = [
        (models["db_patches"], FrontEndConfig(), {}, ParameterError, "--sample-rate"),
        (models["db_patches"], FrontEndConfig(sample_rate=SR), {}, ParameterError,
         "pass --n-fft, --hop-length, --n-mels, and --compression"),
        (models["keras_mel"], FrontEndConfig(sample_rate=SR), {}, ParameterError, "--segment-seconds"),
        (models["db_patches"], front, {"segment_seconds": 3.0}, ParameterError, "built for inputs of 15200 samples"),
        (models["db_patches"], front, {"labels": "a,b"}, ParameterError, "2 label name(s) for a model with 3 outputs"),
        (models["db_patches"], front, {"labels": "a,a,b"}, ParameterError, "a repeat"),
        (models["db_patches"], front, {"feature_layers": ["nope"]}, ParameterError, "no layer(s) ['nope']"),
        (models["db_patches"], front, {"levels": "1,3"}, ParameterError, "a range of consecutive levels"),
        (models["db_patches"], front, {"levels": "2-5"}, ParameterError, "--levels"),
        (models["waveform"], FrontEndConfig(sample_rate=SR, n_mels=64), {}, ParameterError, "--n-mels: model"),
        (tmp_path / "missing.keras", front, {}, ModelError, "no such file"),
    ]
    for path, given, options, error, message in cases:
        with pytest.raises(error) as caught:
            import_keras_model(path, tmp_path / "run", front=given, **options)
        assert message in str(caught.value), (message, str(caught.value))
        assert not (tmp_path / "run").exists()
    # a model with two outputs, and one tfaural built
    x = keras.Input((800, 1))
    h = keras.layers.Conv1D(2, 3, name="c")(x)
    keras.Model(x, [keras.layers.GlobalMaxPooling1D()(h), keras.layers.GlobalAveragePooling1D()(h)]).save(
        tmp_path / "two.keras")
    with pytest.raises(ModelError, match="has 2 outputs"):
        import_keras_model(tmp_path / "two.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=SR))
    # a model of two inputs (the audio and, say, metadata): each input named, nothing written
    mel, meta = keras.Input((64, 40, 1), name="mel"), keras.Input((4,), name="meta")
    h = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(2, 3, name="c")(mel))
    keras.Model([mel, meta], keras.layers.Dense(3, activation="sigmoid")(
        keras.layers.Concatenate()([h, meta]))).save(tmp_path / "two_inputs.keras")
    with pytest.raises(ModelError, match=r"has 2 inputs \(mel \[None, 64, 40, 1\], meta \[None, 4\]\); tfaural "
                                         r"deconvolves, auralises and tags models of one input"):
        import_keras_model(tmp_path / "two_inputs.keras", tmp_path / "run", front=FrontEndConfig(sample_rate=SR))
    assert not (tmp_path / "run").exists()
    # an existing run is kept unless --overwrite
    import_keras_model(models["waveform"], tmp_path / "run", front=FrontEndConfig(sample_rate=SR))
    with pytest.raises(ModelError, match="already holds a run"):
        import_keras_model(models["waveform"], tmp_path / "run", front=FrontEndConfig(sample_rate=SR))
    assert read_labels(None, 2) == ("output0", "output1")
    # the command line: exit 2 with the message; front-end flags refused for a published tagger
    assert pretrained_cli.main([str(models["db_patches"]), "--output", str(tmp_path / "cli"), "--sample-rate",
                                str(SR), "--compression", "db:2"]) == 2
    assert "--compression 'db:2' is invalid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrained_cli.main(["musicnn/MTT_vgg", "--output", str(tmp_path / "m"), "--n-mels", "96"])
    assert "--n-mels: for a Keras model file only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrained_cli.main([str(models["waveform"]), "--output", str(tmp_path / "w"), "--hop-frames", "10"])
    assert "--hop-frames: for a published tagger only" in capsys.readouterr().err
    # tfaural.listen on an imported run needs no front-end options, and refuses them; the figures say where to go
    imported = load_run(tmp_path / "run")[0]
    with pytest.raises(ParameterError, match="imported as a run"):
        listen.auraliser_for_model(imported, FrontEndConfig(sample_rate=SR))
    with pytest.raises(ModelError, match=r"python -m tfaural\.listen --model RUN_DIR"):
        make_figures(imported, str(tmp_path / "figures"))
