"""tfaural.models.layers.RowConv2D: Conv2D's outputs (to round-off) from a convolution of blocks.

Checked against an independent NumPy correlation (TensorFlow's "same": the extra padding sample on the
right) and against keras.layers.Conv2D with the same weights, for kernel lengths around the block size and
musicnn's own, both paddings, lengths that are and are not multiples of the block, shorter than the kernel,
and unknown shapes inside tf.function; also gradients, the fallback to Conv2D for other shapes, a .keras
round trip and a bfloat16 policy.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfaural.models import musicnn_tagger
from tfaural.models.layers import ROW_BLOCK, RowConv2D


def _numpy_row_correlation(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, padding: str) -> np.ndarray:
    """x [batch, rows, columns, 1], kernel [1, K, 1, filters] -> [batch, rows, columns', filters] (float64)."""
    taps = kernel.shape[1]
    row = x[..., 0].astype(np.float64)
    if padding == "same":
        left = (taps - 1) // 2
        row = np.pad(row, ((0, 0), (0, 0), (left, taps - 1 - left)))
    windows = np.lib.stride_tricks.sliding_window_view(row, taps, axis=2)  # [batch, rows, columns', K]
    return windows @ kernel[0, :, 0, :].astype(np.float64) + bias


def _pair(taps: int, filters: int, padding: str, seed: int = 0) -> tuple[RowConv2D, keras.layers.Conv2D]:
    rng = np.random.default_rng(seed)
    ours = RowConv2D(filters, (1, taps), padding=padding)
    reference = keras.layers.Conv2D(filters, (1, taps), padding=padding)
    ours.build((None, None, None, 1))
    reference.build((None, None, None, 1))
    weights = [rng.standard_normal((1, taps, 1, filters)).astype(np.float32),
               rng.standard_normal(filters).astype(np.float32)]
    ours.set_weights(weights)
    reference.set_weights(weights)
    return ours, reference


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("taps", [1, 2, 7, ROW_BLOCK, ROW_BLOCK + 1, 32, 64, 128])
def test_row_conv_equals_numpy_and_conv2d(taps: int, padding: str) -> None:
    rng = np.random.default_rng(taps)
    ours, reference = _pair(taps, 5, padding)
    for columns in (taps + 3, 187, 4 * ROW_BLOCK, max(1, taps // 2)):
        if padding == "valid" and columns < taps:
            continue
        x = rng.standard_normal((2, 3, columns, 1)).astype(np.float32)
        expected = _numpy_row_correlation(x, *[w for w in ours.get_weights()], padding)
        got = ours(x).numpy()
        assert got.shape == expected.shape == reference(x).shape
        scale = np.sqrt(taps)  # a sum of K unit-variance products
        np.testing.assert_allclose(got, expected, atol=2e-6 * scale, rtol=0)
        np.testing.assert_allclose(got, reference(x).numpy(), atol=2e-6 * scale, rtol=0)


def test_row_conv_with_unknown_shapes_in_a_graph() -> None:
    ours, reference = _pair(64, 51, "same")
    traced = tf.function(ours, input_signature=[tf.TensorSpec([None, 96, None, 1], tf.float32)])
    rng = np.random.default_rng(1)
    for batch, columns in ((1, 187), (3, 937), (2, 5)):
        x = rng.standard_normal((batch, 96, columns, 1)).astype(np.float32)
        np.testing.assert_allclose(traced(x).numpy(), reference(x).numpy(), atol=2e-5, rtol=0)


def test_row_conv_gradients_equal_conv2d() -> None:
    ours, reference = _pair(32, 4, "same")
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 4, 50, 1)).astype(np.float32))
    grads = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)))
        grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-4)


def test_row_conv_leaves_other_shapes_to_conv2d() -> None:
    rng = np.random.default_rng(3)
    for kernel, channels, kwargs in (((1, 16), 2, {}), ((3, 16), 1, {}), ((1, 16), 1, {"strides": (1, 2)}),
                                     ((1, 16), 1, {"dilation_rate": (1, 2)})):
        ours = RowConv2D(4, kernel, padding="same", **kwargs)
        reference = keras.layers.Conv2D(4, kernel, padding="same", **kwargs)
        x = rng.standard_normal((1, 6, 40, channels)).astype(np.float32)
        ours(x)
        reference(x)
        reference.set_weights(ours.get_weights())
        np.testing.assert_array_equal(ours(x).numpy(), reference(x).numpy())


def test_musicnn_temporal_filters_are_row_convolutions_and_survive_a_keras_round_trip(tmp_path: Path) -> None:
    model = musicnn_tagger(architecture="musicnn", frontend_scale=0.5, midend_filters=8, backend_units=16)
    kinds = {layer.name: type(layer) for layer in model.layers if layer.name.endswith("_conv")}
    assert kinds["temporal1_conv"] is RowConv2D and kinds["temporal3_conv"] is RowConv2D
    assert kinds["timbral1_conv"] is keras.layers.Conv2D
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("temporal2_conv")) is RowConv2D
    x = np.random.default_rng(4).standard_normal((2, 96, 187, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6, rtol=0)


def test_row_conv_under_a_bfloat16_policy() -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 40, 1)).astype(np.float32)
    weights = _pair(32, 3, "same")[1].get_weights()
    ours = RowConv2D(3, (1, 32), padding="same", dtype="mixed_bfloat16")
    ours.build((None, None, None, 1))
    ours.set_weights(weights)
    got = ours(x)
    assert got.dtype == tf.bfloat16
    expected = _numpy_row_correlation(x, *weights, "same")
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), expected, atol=0.1 * np.sqrt(32), rtol=0.02)
