"""Tests of the SampleCNN family against Lee et al. (2018), Tables 1-3."""

from __future__ import annotations

import math

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from tfaural.config import SampleCNNConfig, default_module_channels
from tfaural.errors import ConfigError, ModelError, ParameterError
from tfaural.models import (
    PRESET_INPUT_SIZES,
    SAMPLECNN_PRESETS,
    TABLE2_FRAME_SETTINGS,
    adapt_standardise,
    build,
    config_from_model,
    conv_blocks,
    count_macs,
    mel_frame_cnn,
    mn_filter_sizes,
    preset_filter_sizes,
    raw_frame_cnn,
    samplecnn_preset,
)
from tfaural.models.layers import LogMelSpectrogram
from tfaural.models.samplecnn import samplecnn_model

# Table 1 of the paper: (layer, output time steps, channels, parameters of the conv/dense).
TABLE1 = [
    ("conv0", 19683, 128, 512),
    ("conv1", 19683, 128, 49280), ("pool1", 6561, 128, None),
    ("conv2", 6561, 128, 49280), ("pool2", 2187, 128, None),
    ("conv3", 2187, 256, 98560), ("pool3", 729, 256, None),
    ("conv4", 729, 256, 196864), ("pool4", 243, 256, None),
    ("conv5", 243, 256, 196864), ("pool5", 81, 256, None),
    ("conv6", 81, 256, 196864), ("pool6", 27, 256, None),
    ("conv7", 27, 256, 196864), ("pool7", 9, 256, None),
    ("conv8", 9, 512, 393728), ("pool8", 3, 512, None),
    ("conv9", 3, 512, 786944), ("pool9", 1, 512, None),
    ("conv_1x1", 1, 512, 262656), ("dropout", 1, 512, None),
]

# Table 3: sample rate -> (input samples, input ms, parameters in millions).
TABLE3 = {
    2000: (5184, 2592, 1.80), 4000: (10368, 2592, 1.93), 8000: (20736, 2592, 2.06), 12000: (31104, 2592, 2.13),
    16000: (43740, 2733, 2.19), 20000: (52488, 2624, 2.32), 22050: (59049, 2678, 2.46),
}

# Table 2: (window, hop) -> number of 3-size modules n.
TABLE2_N = {(729, 729): 4, (729, 243): 5, (243, 243): 5, (243, 81): 6, (81, 81): 6}


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _randomise(model: keras.Model, seed: int) -> None:
    """Random weights everywhere, positive BN variances, so reload tests compare non-trivial values."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        value = rng.normal(0, 0.1, w.shape).astype(np.float32)
        if "variance" in w.path or w.path.endswith("/std"):
            value = np.abs(value) + 0.5
        weights.append(value)
    model.set_weights(weights)


@pytest.fixture(scope="module")
def model_3_9() -> keras.Model:
    return samplecnn_model()



def test_table1_shapes_and_parameters(model_3_9: keras.Model) -> None:
    assert tuple(model_3_9.inputs[0].shape) == (None, 59049, 1)
    for name, steps, channels, params in TABLE1:
        layer = model_3_9.get_layer(name)
        assert tuple(layer.output.shape) == (None, steps, channels), name
        if params is not None:
            assert layer.count_params() == params, name
    output = model_3_9.get_layer("output")
    assert tuple(output.output.shape) == (None, 50) and output.count_params() == 25650


def test_table1_strides_and_sizes(model_3_9: keras.Model) -> None:
    conv0 = model_3_9.get_layer("conv0")
    assert conv0.kernel_size == (3,) and conv0.strides == (3,) and conv0.filters == 128
    for i in range(1, 10):
        conv, pool = model_3_9.get_layer(f"conv{i}"), model_3_9.get_layer(f"pool{i}")
        assert conv.kernel_size == (3,) and conv.strides == (1,) and conv.padding == "same"
        assert pool.pool_size == (3,) and pool.strides == (3,)
    assert model_3_9.get_layer("conv_1x1").kernel_size == (1,)
    assert model_3_9.get_layer("dropout").rate == 0.5
    assert model_3_9.get_layer("output").get_config()["activation"] == "sigmoid"


def test_table1_total_trainable_parameters(model_3_9: keras.Model) -> None:
    conv_and_dense = sum(p for *_, p in TABLE1 if p is not None) + 25650
    batch_norm = 2 * (128 + 128 + 128 + 256 * 5 + 512 * 2 + 512)  # bn0, bn1..bn9, bn_1x1 (gamma and beta)
    assert _trainable(model_3_9) == conv_and_dense + batch_norm == 2_460_466
    assert float(f"{_trainable(model_3_9):.3g}") == 2.46e6


def test_every_conv_is_followed_by_bn_and_relu(model_3_9: keras.Model) -> None:
    names = [layer.name for layer in model_3_9.layers]
    for block in conv_blocks(model_3_9):
        i = names.index(block.conv)
        assert names[i + 1 : i + 3] == [block.batch_norm, block.relu]
    assert [b.level for b in conv_blocks(model_3_9)] == list(range(11))
    assert conv_blocks(model_3_9)[-1].names == ("conv_1x1", "bn_1x1", "relu_1x1", "dropout")


def test_count_macs_hand_computed(model_3_9: keras.Model) -> None:
    expected = 19683 * 3 * 1 * 128  # conv0
    for name, steps, channels, _ in TABLE1[1:-2:2]:  # module convs at their output length
        in_channels = model_3_9.get_layer(name).input.shape[-1]
        expected += steps * 3 * in_channels * channels
    expected += 512 * 512 + 512 * 50
    assert count_macs(config_from_model(model_3_9)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("sample_rate", sorted(TABLE3))
def test_table3_presets(sample_rate: int, rng: np.random.Generator) -> None:
    samples, ms, millions = TABLE3[sample_rate]
    sizes = preset_filter_sizes(sample_rate)
    assert len(sizes) == 10 and sizes[:4] == (3, 3, 3, 3)
    assert math.prod(sizes) == samples == PRESET_INPUT_SIZES[sample_rate]
    model = samplecnn_preset(sample_rate)
    config = config_from_model(model)
    assert isinstance(config, SampleCNNConfig) and config.input_length == samples
    # Within 1 ms: the paper truncates 2733.75 to 2733 but rounds 2677.96 to 2678.
    assert abs(1000 * config.input_seconds - ms) < 1.0
    # Trainable parameters (conv, dense and BN gamma/beta) truncated to 3 significant digits
    # reproduce every Table 3 entry (rounding would give 1.81, 1.94, 2.07, 2.20, 2.33 for five of them).
    assert math.floor(_trainable(model) / 1e4) / 100 == millions
    assert tuple(model.get_layer(f"pool{config.n_modules}").output.shape) == (None, 1, 512)
    x = rng.uniform(-1, 1, (2, samples, 1)).astype(np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, 50) and np.all((y > 0) & (y < 1))


def test_unknown_preset_raises() -> None:
    with pytest.raises(ModelError, match="44100"):
        samplecnn_preset(44100)
    assert set(SAMPLECNN_PRESETS) == set(TABLE3)


@pytest.mark.parametrize(("window", "hop"), TABLE2_FRAME_SETTINGS)
def test_table2_frame_models_output_dimensions(window: int, hop: int, rng: np.random.Generator) -> None:
    n = TABLE2_N[(window, hop)]
    frames = 59049 // hop
    assert frames == 3**n
    mel, raw = mel_frame_cnn(window=window, hop=hop), raw_frame_cnn(window=window, hop=hop)
    for model in (mel, raw):
        config = config_from_model(model)
        assert isinstance(config, SampleCNNConfig) and config.n_modules == n and config.input_length == 59049
        assert tuple(model.get_layer("conv1").input.shape) == (None, frames, 128)
        assert tuple(model.get_layer(f"pool{n}").output.shape) == (None, 1, 512)
        table1_channels = (128, 128, 256, 256, 256, 256, 256, 512, 512)
        assert config.module_channels == default_module_channels(n) == table1_channels[-n:]
    conv0 = raw.get_layer("conv0")
    assert conv0.kernel_size == (window,) and conv0.strides == (hop,) and conv0.filters == 128
    assert tuple(mel.get_layer("melspectrogram").output.shape) == (None, frames, 128)
    assert "conv0" not in {layer.name for layer in mel.layers}
    x = rng.uniform(-1, 1, (1, 59049, 1)).astype(np.float32)
    for model in (mel, raw):
        assert model(x, training=False).shape == (1, 50)


def test_frame_models_share_the_module_stack() -> None:
    mel, sample = mel_frame_cnn(window=729, hop=729), samplecnn_model()
    for i in range(1, 5):  # the top four modules are identical layers with identical shapes
        top = 9 - 4 + i
        for prefix in ("conv", "bn", "relu", "pool"):
            a, b = mel.get_layer(f"{prefix}{i}"), sample.get_layer(f"{prefix}{top}")
            assert type(a) is type(b)
            assert tuple(a.output.shape) == tuple(b.output.shape)
            if i > 1:  # module 1 sees 128 mel bands instead of 256 channels
                assert a.count_params() == b.count_params()


def test_log_mel_matches_librosa_with_documented_framing(rng: np.random.Generator) -> None:
    window, hop, n_fft, sr = 243, 81, 729, 22050
    layer = LogMelSpectrogram(sample_rate=sr, n_fft=n_fft, window=window, hop=hop)
    y = rng.uniform(-1, 1, 81 * 27).astype(np.float32)
    ours = layer(y[None, :, None]).numpy()[0]  # [frames, mels]
    assert ours.shape == (27, 128)
    left = (n_fft - window) // 2
    padded = np.pad(y, (left, n_fft - hop - left))
    mel = librosa.feature.melspectrogram(
        y=padded, sr=sr, n_fft=n_fft, hop_length=hop, win_length=window, center=False, power=1.0
    )
    np.testing.assert_allclose(ours, np.log1p(10 * mel).T, rtol=1e-4, atol=1e-4)


def test_log_mel_frame_t_windows_samples_from_t_times_hop() -> None:
    window, hop = 243, 81
    layer = LogMelSpectrogram(sample_rate=22050, n_fft=729, window=window, hop=hop)
    # An impulse at sample k must reach exactly the frames t with t*hop <= k < t*hop + window
    # (k is never a frame start, where the periodic Hann window is exactly 0).
    for k, expected in ((40, [0]), (500, [4, 5, 6]), (81 * 27 - 1, [24, 25, 26])):
        y = np.zeros((1, 81 * 27, 1), np.float32)
        y[0, k, 0] = 1.0
        energy = layer(y).numpy()[0].sum(axis=1)
        assert np.flatnonzero(energy > 0).tolist() == expected
        assert expected == [t for t in range(27) if t * hop <= k < t * hop + window]


def test_adapt_standardise_sets_mean_and_std(rng: np.random.Generator) -> None:
    model = mel_frame_cnn(window=729, hop=729)
    waves = rng.uniform(-0.5, 0.5, (5, 59049)).astype(np.float32)
    mean, std = adapt_standardise(model, waves, batch_size=2)
    mel = model.get_layer("melspectrogram")(waves[:, :, None]).numpy().astype(np.float64)
    assert mean == pytest.approx(mel.mean(), rel=1e-5) and std == pytest.approx(mel.std(), rel=1e-4)
    front_end = keras.Model(model.inputs[0], model.get_layer("standardise").output)
    standardised = front_end(waves[:, :, None]).numpy()
    assert abs(standardised.mean()) < 1e-4 and standardised.std() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ModelError):
        adapt_standardise(samplecnn_preset(2000), waves)


def test_channel_schedule_for_other_depths() -> None:
    assert default_module_channels(4) == (256, 256, 512, 512)
    assert default_module_channels(12) == (128,) * 3 + (128, 128, 256, 256, 256, 256, 256, 512, 512)
    deep = samplecnn_model(filter_sizes=mn_filter_sizes(2, 13), n_outputs=10)
    assert tuple(deep.inputs[0].shape) == (None, 2**14, 1)  # "2^13-SampleCNN", ~743 ms at 22,050 Hz
    assert deep.get_layer("conv1").filters == 128 and deep.get_layer("conv13").filters == 512


@pytest.mark.parametrize(
    "make",
    [
        lambda: samplecnn_preset(2000, n_outputs=7),
        lambda: mel_frame_cnn(window=243, hop=243, n_samples=243 * 27, n_outputs=7),
        lambda: raw_frame_cnn(window=81, hop=27, n_samples=27 * 81, n_outputs=7),
    ],
    ids=["samplecnn", "mel-frame", "raw-frame"],
)
def test_save_reload_and_json_identical(make: object, tmp_path: object, rng: np.random.Generator) -> None:
    model = make()  # type: ignore[operator]
    _randomise(model, 7)
    length = config_from_model(model).input_length  # type: ignore[attr-defined]
    x = rng.uniform(-1, 1, (3, length, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    path = f"{tmp_path}/model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded(x, training=False).numpy(), expected)
    assert config_from_model(reloaded) == config_from_model(model)
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x, training=False).numpy(), expected)
    assert build(config_from_model(model)).count_params() == model.count_params()


def test_name_and_unknown_batch_in_tf_function(rng: np.random.Generator) -> None:
    model = samplecnn_preset(2000, name="tagger_2k")
    assert model.name == "tagger_2k"
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, 5184, 1])])
    for batch in (1, 4):
        assert fn(rng.uniform(-1, 1, (batch, 5184, 1)).astype(np.float32)).shape == (batch, 50)


def test_wrong_arguments_raise() -> None:
    with pytest.raises(ConfigError, match=r"filter_sizes=\(3, 1, 3\)"):
        samplecnn_model(filter_sizes=(3, 1, 3))
    with pytest.raises(ParameterError, match="n_samples=59000"):
        samplecnn_model(n_samples=59000)
    with pytest.raises(ConfigError, match="channels"):
        samplecnn_model(filter_sizes=(3, 3, 3), channels=(64,))
    with pytest.raises(ParameterError, match="power"):
        mel_frame_cnn(window=729, hop=700)
    with pytest.raises(ConfigError, match="window"):
        raw_frame_cnn(window=81, hop=243)
    with pytest.raises(ConfigError, match="n_fft"):
        mel_frame_cnn(window=729, hop=729, n_fft=512)
    with pytest.raises(ConfigError, match="window"):
        SampleCNNConfig(window=3)
    samplecnn_model(filter_sizes=(3,) * 10, n_samples=59049)  # the matching length is accepted
