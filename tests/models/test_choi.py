"""Tests of the Choi et al. (2015) STFT CNN: layers, shapes, receptive fields, serialisation."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfaural.config import ChoiConfig
from tfaural.errors import ConfigError, ModelError, ParameterError, TfauralError
from tfaural.models import build, choi_cnn, config_from_model, conv_blocks, paper_effective_sizes, receptive_fields
from tfaural.models.choi import PAPER_TABLE1

SAMPLE_RATE, N_FFT, HOP = 11025, 512, 256


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return choi_cnn(n_outputs=3)



def _magnitudes(rng: np.random.Generator, batch: int, n_freq: int = 257, n_frames: int = 173) -> np.ndarray:
    return np.abs(rng.normal(size=(batch, n_freq, n_frames, 1))).astype(np.float32)


def test_layer_names_in_forward_order(model: keras.Model) -> None:
    expected = ["spectrogram", "input_scaling"]
    for i in range(1, 6):
        expected += [f"conv{i}", f"relu{i}", f"pool{i}", f"dropout{i}"]
    expected += ["flatten", "fc1", "fc1_dropout", "fc2", "fc2_dropout", "output"]
    assert [layer.name for layer in model.layers] == expected


def test_block_shapes_halve_with_floor(model: keras.Model) -> None:
    # 257 x 173 -> floor halving five times: 128x86, 64x43, 32x21, 16x10, 8x5 (64 maps each).
    expected = [(128, 86), (64, 43), (32, 21), (16, 10), (8, 5)]
    conv_sizes = [(257, 173), *expected[:-1]]  # "same" convs keep the size they are given
    for i, ((freq, frames), conv_size) in enumerate(zip(expected, conv_sizes, strict=True), start=1):
        assert tuple(model.get_layer(f"conv{i}").output.shape) == (None, *conv_size, 64)
        assert tuple(model.get_layer(f"pool{i}").output.shape) == (None, freq, frames, 64)
    assert tuple(model.get_layer("flatten").output.shape) == (None, 8 * 5 * 64)


def test_conv_and_pool_settings(model: keras.Model) -> None:
    for i in range(1, 6):
        conv = model.get_layer(f"conv{i}")
        assert conv.kernel_size == (3, 3) and conv.padding == "same" and conv.filters == 64
        assert conv.get_config()["activation"] == "linear"  # ReLU is its own layer
        pool = model.get_layer(f"pool{i}")
        assert pool.pool_size == (2, 2) and pool.strides == (2, 2) and pool.padding == "valid"
        assert model.get_layer(f"dropout{i}").rate == 0.5
    # 3*3*1*64 + 64 and 3*3*64*64 + 64 parameters
    assert model.get_layer("conv1").count_params() == 640
    assert model.get_layer("conv2").count_params() == 36928
    assert model.get_layer("fc1_dropout").rate == model.get_layer("fc2_dropout").rate == 0.5


def test_softmax_output_and_unknown_batch(model: keras.Model, rng: np.random.Generator) -> None:
    for batch in (1, 3):
        y = model(_magnitudes(rng, batch), training=False).numpy()
        assert y.shape == (batch, 3)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_sigmoid_for_tags(rng: np.random.Generator) -> None:
    tagger = choi_cnn(n_outputs=5, output_activation="sigmoid", n_freq=65, n_fft=128, n_frames=40, fc_units=(8, 8))
    y = tagger(_magnitudes(rng, 2, 65, 40)).numpy()
    assert y.shape == (2, 5) and np.all((y > 0) & (y < 1))
    assert not np.allclose(y.sum(axis=1), 1.0)


@pytest.mark.parametrize("scaling", ["linear", "log"])
def test_input_scaling_layer(scaling: str, rng: np.random.Generator) -> None:
    small = choi_cnn(n_outputs=2, n_freq=65, n_fft=128, n_frames=40, input_scaling=scaling, fc_units=(4, 4))
    x = _magnitudes(rng, 2, 65, 40)
    scaled = small.get_layer("input_scaling")(x).numpy()
    expected = x if scaling == "linear" else np.log1p(10.0 * x)
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)
    assert config_from_model(small).input_scaling == scaling


def test_paper_convention_reproduces_table1_up_to_layer5_frequency() -> None:
    sizes = paper_effective_sizes()
    assert [s.frames for s in sizes] == [4, 7, 13, 25, 49]
    hop_ms = 1000 * HOP / SAMPLE_RATE
    for size, (paper_ms, paper_hz) in zip(sizes, PAPER_TABLE1, strict=True):
        assert size.ms == pytest.approx(size.frames * hop_ms)
        assert abs(size.ms - paper_ms) < 1.0  # 92.9, 162.5, 301.9, 580.5, 1137.8 ms
        if size.layer < 5:
            assert abs(size.hz - paper_hz) < 1.0  # 86.1, 150.7, 279.9, 538.3 Hz
    # The paper's units are rounded: 23.2 ms per hop and 21.5 Hz per bin reproduce Table 1 exactly.
    assert [round(s.frames * 23.2) for s in sizes] == [93, 162, 302, 580, 1137]
    assert [math.floor(s.bins * 21.5 + 0.5) for s in sizes[:4]] == [86, 151, 280, 538]


def test_paper_layer5_frequency_is_inconsistent() -> None:
    """Table 1 gives 1270 Hz for layer 5, but the pattern (49 bins) gives 1055 Hz.

    1270 Hz is ~59 bins of 21.5 Hz, a value that no kernel/pooling arithmetic of the
    network produces (true receptive field: 78 bins at conv5, 94 after pool5).
    """
    layer5 = paper_effective_sizes()[4]
    assert layer5.hz == pytest.approx(49 * SAMPLE_RATE / N_FFT)
    assert layer5.hz == pytest.approx(1055.1, abs=0.1)
    assert PAPER_TABLE1[4][1] - layer5.hz > 200
    assert round(PAPER_TABLE1[4][1] / (SAMPLE_RATE / N_FFT)) == 59


def test_true_receptive_fields_hand_computed() -> None:
    # r += (k - 1) * j for the 3x3 conv, r += (p - 1) * j and j *= 2 for the 2x2 pool.
    assert [f.frames for f in receptive_fields()] == [4, 10, 22, 46, 94]
    assert [f.bins for f in receptive_fields(after_pool=False)] == [3, 8, 18, 38, 78]
    layer5 = receptive_fields()[4]
    assert layer5.ms == pytest.approx(94 * 256 / 11025 * 1000)
    assert layer5.hz == pytest.approx(94 * 11025 / 512)


@pytest.mark.parametrize("after_pool", [True, False])
def test_true_receptive_fields_match_gradient_support(model: keras.Model, after_pool: bool) -> None:
    """Measures the receptive field numerically on the builder's own conv/pool geometry.

    Max pooling routes gradients to one argmax, so the conv/pool layers are
    re-created with all-ones kernels and *average* pooling of the same size,
    stride and padding; the gradient support of one interior unit is then exactly
    its receptive field.
    """
    inputs = keras.Input(shape=model.inputs[0].shape[1:])
    x, taps = inputs, {}
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Conv2D):
            cfg = {**layer.get_config(), "kernel_initializer": "ones", "bias_initializer": "zeros", "filters": 1}
            x = keras.layers.Conv2D.from_config(cfg)(x)
            taps[f"conv{len(taps) // 2 + 1}"] = x
        elif isinstance(layer, keras.layers.MaxPooling2D):
            x = keras.layers.AveragePooling2D.from_config(layer.get_config())(x)
            taps[f"pool{len(taps) // 2 + 1}"] = x
    fields = receptive_fields(after_pool=after_pool)
    probe = keras.Model(inputs, [taps[f"{'pool' if after_pool else 'conv'}{f.layer}"] for f in fields])
    x0 = tf.ones((1, *model.inputs[0].shape[1:]))
    for field, tap_index in zip(fields, range(len(fields)), strict=True):
        with tf.GradientTape() as tape:
            tape.watch(x0)
            out = probe(x0)[tap_index]
            unit = out[0, out.shape[1] // 2, out.shape[2] // 2, 0]
        support = np.abs(tape.gradient(unit, x0).numpy()[0, :, :, 0]) > 0
        assert np.flatnonzero(support.any(axis=1)).size == field.bins
        assert np.flatnonzero(support.any(axis=0)).size == field.frames


def test_conv_blocks_names(model: keras.Model) -> None:
    blocks = conv_blocks(model)
    assert [b.names for b in blocks] == [(f"conv{i}", f"relu{i}", f"pool{i}", f"dropout{i}") for i in range(1, 6)]
    assert blocks[0].output == "pool1"


def test_config_recorded_and_name(model: keras.Model) -> None:
    config = config_from_model(model)
    assert config == ChoiConfig(n_outputs=3)
    assert config.input_scaling == "linear"
    named = choi_cnn(n_outputs=2, name="genre_cnn", n_freq=65, n_fft=128, n_frames=40)
    assert named.name == "genre_cnn"
    assert build(config_from_model(named)).count_params() == named.count_params()


def test_keras_save_and_reload_identical(model: keras.Model, tmp_path: object, rng: np.random.Generator) -> None:
    path = f"{tmp_path}/choi.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = _magnitudes(rng, 2)
    np.testing.assert_array_equal(reloaded(x, training=False).numpy(), model(x, training=False).numpy())
    assert config_from_model(reloaded) == config_from_model(model)
    assert reloaded.name == model.name
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


def test_json_round_trip_identical(rng: np.random.Generator) -> None:
    small = choi_cnn(n_outputs=4, n_freq=65, n_fft=128, n_frames=40, input_scaling="log", fc_units=(16, 8))
    text = small.to_json()
    assert json.loads(text)["config"]["tfaural_config"]["config"]["input_scaling"] == "log"
    clone = keras.models.model_from_json(text)
    clone.set_weights(small.get_weights())
    x = _magnitudes(rng, 2, 65, 40)
    np.testing.assert_array_equal(clone(x).numpy(), small(x).numpy())
    assert config_from_model(clone) == config_from_model(small)


def test_runs_in_tf_function_with_unknown_batch(model: keras.Model, rng: np.random.Generator) -> None:
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, 257, 173, 1])])
    assert fn(_magnitudes(rng, 2)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_outputs": 0}, "n_outputs"),
        ({"n_outputs": 3, "n_freq": 129}, "n_freq"),  # not 512 // 2 + 1
        ({"n_outputs": 3, "n_frames": 20}, "n_frames"),  # < 2 ** 5
        ({"n_outputs": 3, "output_activation": "relu"}, "output_activation"),
        ({"n_outputs": 3, "input_scaling": "db"}, "input_scaling"),
        ({"n_outputs": 3, "dropout": 1.0}, "dropout"),
        ({"n_outputs": 3, "fc_units": ()}, "fc_units"),
    ],
)
def test_wrong_arguments_raise(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        choi_cnn(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, (ParameterError, TfauralError))


def test_config_from_foreign_model_raises() -> None:
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ModelError):
        config_from_model(plain)
