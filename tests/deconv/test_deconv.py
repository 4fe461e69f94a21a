"""tfaural.deconv against an independent NumPy Zeiler–Fergus walk written here."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfaural import deconv
from tfaural.errors import ParameterError
from tfaural.models import choi_cnn
from tfaural.models.samplecnn import samplecnn_model

# ------------------------------------------------------------------ NumPy reference


def np_conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Keras/TF 'same' cross-correlation, stride 1 (even kernels pad one more on the right)."""
    rank = x.ndim - 1
    pads = [((k - 1) // 2, k // 2) for k in w.shape[:rank]] + [(0, 0)]
    xp = np.pad(x, pads)
    out = np.zeros((*x.shape[:rank], w.shape[-1]))
    for offset in np.ndindex(*w.shape[:rank]):
        window = xp[tuple(slice(o, o + n) for o, n in zip(offset, x.shape[:rank]))]
        out += window @ w[offset]
    return out if b is None else out + b


def np_conv_same_adjoint(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The transpose of np_conv_same (no bias): scatter every output back through the kernel."""
    rank = y.ndim - 1
    pads = [((k - 1) // 2, k // 2) for k in w.shape[:rank]]
    shape = tuple(n + p0 + p1 for n, (p0, p1) in zip(y.shape[:rank], pads))
    xp = np.zeros((*shape, w.shape[-2]))
    for offset in np.ndindex(*w.shape[:rank]):
        region = tuple(slice(o, o + n) for o, n in zip(offset, y.shape[:rank]))
        xp[region] += y @ w[offset].T
    return xp[tuple(slice(p0, p0 + n) for (p0, _), n in zip(pads, y.shape[:rank]))]


def np_conv_strided_valid(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    n_out = (x.shape[0] - w.shape[0]) // stride + 1
    return np.stack([x[t * stride : t * stride + w.shape[0]].reshape(-1) @ w.reshape(-1, w.shape[-1])
                     for t in range(n_out)]) + b


def np_conv_strided_valid_adjoint(y: np.ndarray, w: np.ndarray, stride: int, length: int) -> np.ndarray:
    x = np.zeros((length, w.shape[1]))
    for t in range(y.shape[0]):
        x[t * stride : t * stride + w.shape[0]] += np.einsum("kco,o->kc", w, y[t])
    return x


def np_pool(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Max pool (floor) with first-argmax switches, by explicit loops over windows."""
    rank = x.ndim - 1
    out_shape = tuple(n // p for n in x.shape[:rank])
    pooled = np.zeros((*out_shape, x.shape[-1]))
    mask = np.zeros_like(x)
    for idx in np.ndindex(*out_shape):
        for c in range(x.shape[-1]):
            window = x[(*tuple(slice(i * p, i * p + p) for i in idx), c)]
            flat = int(np.argmax(window))
            pooled[(*idx, c)] = window.reshape(-1)[flat]
            pos = np.unravel_index(flat, window.shape)
            mask[(*tuple(i * p + q for i, q in zip(idx, pos)), c)] = 1
    return pooled, mask


def np_unpool(y: np.ndarray, mask: np.ndarray, p: int) -> np.ndarray:
    rank = y.ndim - 1
    up = y
    for axis in range(rank):
        up = np.repeat(up, p, axis=axis)
    full = np.zeros_like(mask)
    full[tuple(slice(0, n) for n in up.shape[:rank])] = up
    return full * mask


def np_choi_deconv(model: keras.Model, x: np.ndarray, layer: int, feature: int) -> np.ndarray:
    """Zeiler–Fergus for the Choi CNN, one input [freq, frames] and one feature."""
    h = x[..., None].astype(np.float64)
    masks, weights = [], []
    for level in range(1, layer + 1):
        conv = model.get_layer(f"conv{level}")
        w, b = (np.asarray(v, np.float64) for v in conv.get_weights())
        h = np.maximum(np_conv_same(h, w, b), 0)
        h, mask = np_pool(h, 2)
        masks.append(mask)
        weights.append(w)
    y = np.zeros_like(h)
    y[..., feature] = h[..., feature]
    for mask, w in zip(reversed(masks), reversed(weights)):
        y = np_conv_same_adjoint(np.maximum(np_unpool(y, mask, 2), 0), w)
    return y[..., 0]


# ------------------------------------------------------------------ tests


def np_pool_general(x: np.ndarray, size: tuple[int, ...], strides: tuple[int, ...], padding: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling by loops over windows (TensorFlow's padding rule): pooled values and, per pooled
    value, the row-major window index of the window's first maximum."""
    rank = x.ndim - 1
    if padding == "same":
        out = [-(-n // s) for n, s in zip(x.shape[:rank], strides)]
        before = [max((o - 1) * s + p - n, 0) // 2 for o, s, p, n in zip(out, strides, size, x.shape[:rank])]
    else:
        out = [(n - p) // s + 1 for n, p, s in zip(x.shape[:rank], size, strides)]
        before = [0] * rank
    pooled = np.zeros((*out, x.shape[-1]))
    switches = np.zeros((*out, x.shape[-1]), np.int64)
    for idx in np.ndindex(*out):
        for c in range(x.shape[-1]):
            best, arg = -np.inf, -1
            for w, offset in enumerate(np.ndindex(*size)):
                pos = [i * s + o - b for i, s, o, b in zip(idx, strides, offset, before)]
                if all(0 <= q < n for q, n in zip(pos, x.shape[:rank])) and x[(*pos, c)] > best:
                    best, arg = x[(*pos, c)], w
            pooled[(*idx, c)], switches[(*idx, c)] = best, arg
    return pooled, switches


def np_unpool_general(y: np.ndarray, switches: np.ndarray, size: tuple[int, ...], strides: tuple[int, ...],
                      padding: str, shape: tuple[int, ...]) -> np.ndarray:
    """Adds every pooled value at its switch (overlapping windows accumulate)."""
    rank = len(size)
    before = [max((o - 1) * s + p - n, 0) // 2 if padding == "same" else 0
              for o, s, p, n in zip(y.shape[:rank], strides, size, shape)]
    out = np.zeros((*shape, y.shape[-1]))
    offsets = list(np.ndindex(*size))
    for idx in np.ndindex(*y.shape[:rank]):
        for c in range(y.shape[-1]):
            offset = offsets[switches[(*idx, c)]]
            out[(*[i * s + o - b for i, s, o, b in zip(idx, strides, offset, before)], c)] += y[(*idx, c)]
    return out


@pytest.mark.parametrize("shape,size,strides,padding", [
    ((1, 7, 5, 3), (2, 2), (2, 2), "valid"),  # odd sizes: the floor leaves a row and a column out
    ((2, 9, 2), (3,), (3,), "valid"),
    ((1, 8, 6, 2), (2, 2), (2, 2), "valid"),
    ((1, 10, 4), (2,), (2,), "valid"),
    ((1, 12, 22, 3), (1, 4), (2, 2), "valid"),  # MTT_vgg's first pool: overlapping in time, skipping in freq
    ((2, 7, 9, 2), (3, 3), (2, 2), "same"),  # overlapping on both axes, TensorFlow's "same" padding
    ((1, 11, 3), (4,), (3,), "same"),
    ((1, 6, 7, 2), (2, 3), (2, 3), "same"),  # non-overlapping with padding
])
def test_switches_and_unpooling_against_numpy(rng: np.random.Generator, shape: tuple[int, ...],
                                              size: tuple[int, ...], strides: tuple[int, ...], padding: str) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0] = x[0, 1, 0] = 5.0  # a tie inside a window: the first maximum wins
    pooled, switches = deconv.pool_with_switches(tf.constant(x), size, strides, padding)
    layer = (keras.layers.MaxPooling2D if len(size) == 2 else keras.layers.MaxPooling1D)(size, strides, padding)
    np.testing.assert_array_equal(pooled.numpy(), layer(x).numpy())
    signal = rng.standard_normal((shape[0], 2, *pooled.shape[1:])).astype(np.float32)
    unpooled = deconv.unpool(tf.constant(signal), switches, size, strides, padding, input_shape=shape[1:-1]).numpy()
    assert unpooled.shape == (shape[0], 2, *shape[1:])
    for b in range(shape[0]):
        ref_pooled, ref_switches = np_pool_general(x[b].astype(np.float64), size, strides, padding)
        np.testing.assert_array_equal(pooled.numpy()[b], ref_pooled)
        np.testing.assert_array_equal(switches.numpy()[b], ref_switches)
        for k in range(2):
            expected = np_unpool_general(signal[b, k].astype(np.float64), ref_switches, size, strides, padding,
                                         shape[1:-1])
            np.testing.assert_allclose(unpooled[b, k], expected, rtol=1e-6, atol=1e-6)


def _random_choi(n_layers: int, rng: np.random.Generator, *, n_filters: int = 6) -> keras.Model:
    model = choi_cnn(n_outputs=3, n_freq=33, n_frames=21, n_fft=64, hop_length=32, n_layers=n_layers,
                     n_filters=n_filters, fc_units=(8,))
    for layer in model.layers:
        if layer.name.startswith("conv"):
            w, b = layer.get_weights()
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5,
                               rng.standard_normal(b.shape).astype(np.float32) * 0.1])
    return model


def test_one_layer_model_is_the_numpy_transposed_convolution(rng: np.random.Generator) -> None:
    model = _random_choi(1, rng)
    x = np.abs(rng.standard_normal((2, 33, 21))).astype(np.float32)
    out = deconv.deconvolve(model, x, layer=1, features=[4, 0]).numpy()
    assert out.shape == (2, 2, 33, 21)
    for b in range(2):
        for k, feature in enumerate([4, 0]):
            np.testing.assert_allclose(out[b, k], np_choi_deconv(model, x[b], 1, feature), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_multi_layer_random_model_matches_numpy_walk(rng: np.random.Generator, layer: int) -> None:
    model = _random_choi(3, rng)
    x = np.abs(rng.standard_normal((1, 33, 21))).astype(np.float32)
    out = deconv.deconvolve(model, x, layer=layer).numpy()
    assert out.shape == (1, 6, 33, 21)
    scale = max(1e-6, float(np.abs(out).max()))
    for feature in range(6):
        ref = np_choi_deconv(model, x[0], layer, feature)
        np.testing.assert_allclose(out[0, feature], ref, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(out).max() > 0  # not a vacuous comparison


@pytest.mark.parametrize("layer", [2, 3])
def test_wide_first_layer_walk_through_unpooling_matches_numpy(rng: np.random.Generator, layer: int) -> None:
    """With at least 36 maps, the first layer's 3 x 3 adjoint meets the unpooled signal as per-offset
    products (the paper's CNN: 64 maps), not as a convolution: the same walk as NumPy's."""
    model = _random_choi(3, rng, n_filters=40)
    assert deconv._few_taps(deconv._adjoint_kernel(model.get_layer("conv1"), 2))  # the path under test
    x = np.abs(rng.standard_normal((2, 33, 21))).astype(np.float32)
    features = [0, 7, 39]
    out = deconv.deconvolve(model, x, layer=layer, features=features).numpy()
    assert out.shape == (2, 3, 33, 21)
    for b in range(2):
        scale = max(1e-6, float(np.abs(out[b]).max()))
        for k, feature in enumerate(features):
            ref = np_choi_deconv(model, x[b], layer, feature)
            np.testing.assert_allclose(out[b, k], ref, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(out).max() > 0  # not a vacuous comparison


def test_any_input_size_and_full_paper_model(rng: np.random.Generator) -> None:
    model = choi_cnn(n_outputs=3)  # 257 x 173 inputs for classification
    x = np.abs(rng.standard_normal((1, 257, 90))).astype(np.float32)  # the conv part takes any length
    out = deconv.deconvolve(model, x, layer=5, features=[1, 63])
    assert out.shape == (1, 2, 257, 90) and np.isfinite(out.numpy()).all()


def np_samplecnn_deconv(model: keras.Model, x: np.ndarray, layer: int, feature: int) -> np.ndarray:
    """Zeiler–Fergus for SampleCNN with BN folded into the kernel scale; x [samples]."""
    h = x[:, None].astype(np.float64)
    saved = []
    for level in range(0, layer + 1):
        conv = model.get_layer(f"conv{level}")
        w, b = (np.asarray(v, np.float64) for v in conv.get_weights())
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in model.get_layer(f"bn{level}").get_weights())
        scale = gamma / np.sqrt(var + model.get_layer(f"bn{level}").epsilon)
        length = h.shape[0]
        if level == 0:
            stride = w.shape[0]
            h = np_conv_strided_valid(h, w, b, stride)
        else:
            h = np_conv_same(h, w, b)
        h = np.maximum((h - mean) * scale + beta, 0)
        mask = None
        if level > 0:
            h, mask = np_pool(h, model.get_layer(f"pool{level}").pool_size[0])
        saved.append((w * scale, mask, length))
    y = np.zeros_like(h)
    y[:, feature] = h[:, feature]
    for level, (w, mask, length) in reversed(list(enumerate(saved))):
        if mask is not None:
            y = np_unpool(y, mask, w.shape[0])
        y = np.maximum(y, 0)
        y = np_conv_strided_valid_adjoint(y, w, w.shape[0], length) if level == 0 else np_conv_same_adjoint(y, w)
    return y[:, 0]


def test_samplecnn_deconvolution_with_batch_norm_matches_numpy(rng: np.random.Generator) -> None:
    model = samplecnn_model(filter_sizes=(3, 3, 2, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8)
    for layer in model.layers:  # non-trivial BN statistics and weights
        if layer.name.startswith("bn"):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2, n)])
    x = rng.standard_normal((1, 54)).astype(np.float32)
    for layer in (0, 2, 3):
        out = deconv.deconvolve(model, x, layer=layer, features=[0, 5]).numpy()
        assert out.shape == (1, 2, 54)
        for k, feature in enumerate([0, 5]):
            ref = np_samplecnn_deconv(model, x[0], layer, feature)
            np.testing.assert_allclose(out[0, k], ref, rtol=1e-4, atol=1e-4 * max(1e-6, np.abs(ref).max()))


def test_features_are_a_batch_axis_equal_to_one_at_a_time(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    x = np.abs(rng.standard_normal((2, 33, 21))).astype(np.float32)
    together = deconv.deconvolve(model, x, layer=2).numpy()
    atol = 1e-6 * np.abs(together).max()  # float32 rounding: the depthwise top step sums in another order
    for feature in range(6):
        alone = deconv.deconvolve(model, x, layer=2, features=[feature]).numpy()
        np.testing.assert_allclose(together[:, feature], alone[:, 0], rtol=1e-5, atol=atol)


def test_runs_under_tf_function_with_tensor_features(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    net = deconv.DeconvNet(model)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(x: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        return net(x, layer=2, features=features)

    x = np.abs(rng.standard_normal((1, 33, 25))).astype(np.float32)
    out = run(x, tf.constant([3, 1]))
    np.testing.assert_allclose(out.numpy(), net(x, layer=2, features=[3, 1]).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature indices must be < 6"):
        run(x, tf.constant([7]))


def test_invalid_layer_and_features_are_clear_errors(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    x = np.ones((1, 33, 21), np.float32)
    with pytest.raises(ParameterError, match=r"layer=7 is invalid .* expected one of \[1, 2\]"):
        deconv.deconvolve(model, x, layer=7)
    with pytest.raises(ParameterError, match=r"feature indices \[6\] are out of range"):
        deconv.deconvolve(model, x, layer=1, features=[0, 6])
    with pytest.raises(ParameterError, match="non-empty list of integers"):
        deconv.deconvolve(model, x, layer=1, features=[])
    assert deconv.deconvolvable_layers(model) == (1, 2)
    assert deconv.n_features(model, 2) == 6


def test_activation_is_the_feature_maps_maximum(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    x = np.abs(rng.standard_normal((2, 33, 21))).astype(np.float32)
    deconvolved, activation = deconv.DeconvNet(model)(x, layer=2, features=[5, 1], return_activation=True)
    h = x[..., None]
    for name in ("input_scaling", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2"):
        h = model.get_layer(name)(h)
    np.testing.assert_allclose(activation.numpy(), np.asarray(h).max(axis=(1, 2))[:, [5, 1]], rtol=1e-5)
    assert deconvolved.shape == (2, 2, 33, 21)
    # DeconvNet.activations: every map's maximum from the forward pass alone (what visualise uses to pick the
    # most active features before deconvolving only those), per layer asked for.
    every = deconv.DeconvNet(model).activations(x, layers=[2, 1])
    assert sorted(every) == [1, 2] and every[2].shape == (2, 6)
    np.testing.assert_allclose(every[2].numpy(), np.asarray(h).max(axis=(1, 2)), rtol=1e-5)
    h1 = x[..., None]
    for name in ("input_scaling", "conv1", "relu1", "pool1"):
        h1 = model.get_layer(name)(h1)
    np.testing.assert_allclose(every[1].numpy(), np.asarray(h1).max(axis=(1, 2)), rtol=1e-5)


# ------------------------------------------------------------------ bounded memory: features in chunks (issue 17)


def test_walk_expansion_is_the_largest_activation_per_input_element() -> None:
    choi = choi_cnn(n_outputs=3, n_freq=33, n_frames=21, n_fft=64, hop_length=32, n_layers=2, n_filters=6,
                    fc_units=(8,))
    assert deconv.walk_expansion(choi) == 6.0  # conv1: 33 x 21 x 6 maps of a 33 x 21 input
    sample = samplecnn_model(filter_sizes=(3, 3, 2, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8)
    assert deconv.walk_expansion(sample) == pytest.approx(18 * 8 / 54)  # conv0: 54 samples -> 18 steps x 8 maps
    x = tf.zeros([2, 33, 21])
    per_feature = 2 * 33 * 21 * 6
    assert int(deconv.features_per_chunk(x, expansion=6.0, chunk_elements=5 * per_feature + 1)) == 5
    assert int(deconv.features_per_chunk(x, expansion=6.0, chunk_elements=1)) == 1  # never less than one


@pytest.mark.parametrize("chunk_elements", [1, 3 * 2 * 33 * 21 * 6])  # one feature, three features per chunk
def test_features_in_chunks_match_the_numpy_walk(rng: np.random.Generator, chunk_elements: int) -> None:
    model = _random_choi(2, rng)
    net = deconv.DeconvNet(model)
    x = np.abs(rng.standard_normal((2, 33, 21))).astype(np.float32)
    features = [5, 0, 3, 1, 4]
    eager = net(x, layer=2, features=features, chunk_elements=chunk_elements).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, 33, None], tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(x: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        return net(x, layer=2, features=features, chunk_elements=chunk_elements)

    graph = run(x, tf.constant(features)).numpy()
    assert eager.shape == graph.shape == (2, 5, 33, 21)
    for b in range(2):
        for k, feature in enumerate(features):
            ref = np_choi_deconv(model, x[b], 2, feature)
            atol = 1e-4 * max(1e-6, np.abs(ref).max())
            np.testing.assert_allclose(eager[b, k], ref, rtol=1e-4, atol=atol)
            np.testing.assert_allclose(graph[b, k], ref, rtol=1e-4, atol=atol)
    assert np.abs(eager).max() > 0


def test_switches_are_made_once_outside_the_chunk_loop(rng: np.random.Generator) -> None:
    """The max-pooling switches depend on the forward pass only: none inside the loop over feature chunks."""
    model = _random_choi(3, rng)
    net = deconv.DeconvNet(model)
    x = np.abs(rng.standard_normal((1, 33, 21))).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 33, None], tf.float32)])
    def run(x: tf.Tensor) -> dict[int, tf.Tensor]:
        return net.deconvolve_layers(x, layers=[2, 3], chunk_elements=1)  # one feature per chunk: a while loop

    graph = run.get_concrete_function().graph
    bodies = [f for f in graph.as_graph_def().library.function  # while_(1_)body_N writing the chunks' results
              if "_body_" in f.signature.name and any(node.op in ("TensorListSetItem", "TensorArrayWriteV3")
                                                      for node in f.node_def)]
    assert len(bodies) == 2  # one chunk loop per layer
    assert all(node.op != "ArgMax" for body in bodies for node in body.node_def)
    outer = graph.get_operations()
    # Levels 2 and 3 end at pool2 and pool3: pool1's and pool2's switches, made once for both walks, and pool3's.
    assert sum(op.type == "ArgMax" for op in outer) == 3
    full = deconv.DeconvNet(model).deconvolve_layers(x, layers=[2, 3], chunk_elements=0)
    for layer, maps in run(x).items():
        # float32 sums of another batch shape: kernels may add in another order (seen on an AVX2-only CPU:
        # 1.9e-6 apart on one of 4,158 values of maps up to 16.6), so the tolerance scales with the maps
        want = full[layer].numpy()
        np.testing.assert_allclose(maps.numpy(), want, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(want))))


def test_samplecnn_layers_in_chunks_match_the_numpy_walk(rng: np.random.Generator) -> None:
    model = samplecnn_model(filter_sizes=(3, 3, 2, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8)
    x = rng.standard_normal((1, 54)).astype(np.float32)
    maps = deconv.DeconvNet(model).deconvolve_layers(x, layers=[1, 3], features=[6, 2, 0], chunk_elements=1)
    for layer, out in maps.items():
        assert out.shape == (1, 3, 54)
        for k, feature in enumerate([6, 2, 0]):
            ref = np_samplecnn_deconv(model, x[0], layer, feature)
            np.testing.assert_allclose(out.numpy()[0, k], ref, rtol=1e-4, atol=1e-4 * max(1e-6, np.abs(ref).max()))


def test_per_chunk_results_are_concatenated_along_the_features(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    x = np.abs(rng.standard_normal((1, 33, 21))).astype(np.float32)
    full = deconv.deconvolve(model, x, layer=2).numpy()
    peaks, positive = deconv.DeconvNet(model)(
        x, layer=2, chunk_elements=1, per_chunk=lambda d: (tf.reduce_max(d, axis=[2, 3]), d > 0),
        per_chunk_dtypes=(tf.float32, tf.bool),
    )
    np.testing.assert_allclose(peaks.numpy(), full.max(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_array_equal(positive.numpy(), full > 0)


def test_repeated_features_are_rejected(rng: np.random.Generator) -> None:
    model = _random_choi(2, rng)
    net = deconv.DeconvNet(model)
    x = np.ones((1, 33, 21), np.float32)
    with pytest.raises(ParameterError, match=r"feature indices \[0, 4\] are repeated: ask for each feature once"):
        net(x, layer=2, features=[4, 0, 4, 1, 0])
    run = tf.function(lambda f: net(x, layer=2, features=f))
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature indices must not repeat"):
        run(tf.constant([2, 2]))


@pytest.mark.parametrize(("shape", "size", "pads"), [
    ((2, 9, 11, 8), (3, 5), [[1, 2], [0, 4]]),  # rows of 5 taps over 8 channels: 3 groups of one row
    ((1, 12, 10, 8), (7, 3), [[6, 6], [2, 2]]),  # a valid convolution's adjoint: groups of 2, 2, 2, 1 rows
    ((3, 40, 8), (20,), [[3, 19]]),  # 1-D, 20 taps: one group
    ((1, 7, 6, 12), (1, 3), [[0, 0], [1, 1]]),  # 3 taps <= 12 / 4: each tap's window summed
])
def test_single_output_convolution_is_scipys_correlation(rng: np.random.Generator, shape: tuple[int, ...],
                                                         size: tuple[int, ...], pads: list[list[int]]) -> None:
    """The product-and-shifted-sums adjoint (rows of taps in groups) against scipy.signal.correlate."""
    import scipy.signal

    y = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((*size, shape[-1], 1)).astype(np.float32)
    paddings = [[0, 0], *pads, [0, 0]]
    assert deconv._product_taps(tf.constant(kernel))
    out = deconv._single_output_convolution(tf.constant(y), tf.constant(kernel), paddings).numpy()
    padded = np.pad(y, paddings).astype(np.float64)
    expected = np.stack([scipy.signal.correlate(padded[b], kernel[..., 0].astype(np.float64), mode="valid")
                         for b in range(shape[0])])
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("spatial", "size"), [
    ((9, 11), (3, 3)),  # 9 taps: one window per tap
    ((20, 13), (7, 5)),  # 35 taps: framed along both axes (musicnn's timbral kernels: 38 x 7, 67 x 7)
    ((40,), (5,)),
    ((40,), (21,)),  # 1-D, framed
])
def test_one_channel_adjoint_is_scipys_correlation(rng: np.random.Generator, spatial: tuple[int, ...],
                                                   size: tuple[int, ...]) -> None:
    """A seeded layer's adjoint (each feature's signal in one channel) against scipy.signal.correlate,
    whether its columns are one window per tap or framed along each axis (a few ops for any kernel)."""
    import scipy.signal

    batch, k, channels_out, channels_in = 2, 3, 6, 4
    features = np.array([4, 0, 2], np.int32)
    value = rng.standard_normal((batch, *spatial, k)).astype(np.float32)
    kernel = rng.standard_normal((*size, channels_out, channels_in)).astype(np.float32)  # [*taps, out, in]
    pads = [[n - 1 - (n - 1) // 2, (n - 1) // 2] for n in size]
    ctx = deconv._Context(tf.constant(batch), tf.constant(k), tf.constant(features), "deconvnet", {})
    out = deconv._one_channel_adjoint(tf.constant(value), tf.constant(kernel), pads, ctx).numpy()
    padded = np.pad(value, [[0, 0], *pads, [0, 0]]).astype(np.float64)
    expected = np.stack([np.stack([np.stack([scipy.signal.correlate(padded[b, ..., j], kernel[..., f, c], mode="valid")
                                             for c in range(channels_in)], axis=-1)
                                   for j, f in enumerate(features)]) for b in range(batch)])
    assert (np.prod(size) > deconv.FEW_COLUMN_TAPS) == (size in ((7, 5), (21,)))
    assert out.shape == (batch * k, *spatial, channels_in)
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=0, atol=1e-5 * np.abs(expected).max())


def test_which_one_channel_adjoints_go_as_products() -> None:
    """musicnn's timbral adjoints (204 maps; 38 x 7 and 67 x 7 taps) and temporal ones (51 maps, 1 x 128 taps)
    go as products; a kernel with more than PRODUCT_TAPS_PER_CHANNEL taps per channel, or several output
    channels, as a convolution."""
    def kernel(*shape: int) -> tf.Tensor:
        return tf.zeros(shape)

    assert deconv._product_taps(kernel(38, 7, 204, 1)) and deconv._product_taps(kernel(67, 7, 204, 1))
    assert deconv._product_taps(kernel(1, 128, 51, 1))
    assert not deconv._product_taps(kernel(1, 128, 16, 1))
    assert not deconv._product_taps(kernel(3, 3, 64, 2))


_MEMORY_CHILD = """
import resource, sys
import numpy as np
from tfaural import deconv
from tfaural.models import choi_cnn
net = deconv.DeconvNet(choi_cnn(n_outputs=3))  # the paper's CNN: 64 maps per layer
x = np.abs(np.random.default_rng(0).standard_normal((1, 257, 861))).astype(np.float32)  # 20 s at 11,025 Hz
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = net(x, layer=2, features=list(range(16)))
assert out.shape == (1, 16, 257, 861) and np.isfinite(out.numpy()).all()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.slow
def test_deconvolution_memory_is_bounded_by_the_chunks() -> None:
    """16 features of a 20-s clip: all at once the walk holds ~2 GiB more; in chunks well under 1 GiB."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    added_mib = float(done.stdout.split()[-1])
    assert added_mib < 1024, f"the deconvolution added {added_mib:.0f} MiB of peak RSS"


_POOLED_FIRST_LAYERS = pytest.mark.parametrize(("pool", "strides", "size", "pads", "spatial"), [
    ((2, 2), (2, 2), (3, 3), [[1, 1], [1, 1]], (33, 21)),  # the paper's CNN's first layer (odd: a row no window covers)
    ((1, 4), (2, 2), (3, 3), [[1, 1], [1, 1]], (30, 17)),  # MTT_vgg's first pool: gaps on one axis, overlaps on one
    ((4, 1), (4, 1), (3, 3), [[1, 1], [1, 1]], (30, 7)),  # taller pools
    ((2, 3), (2, 3), (5, 3), [[0, 4], [2, 0]], (17, 20)),  # one-sided padding, a kernel wider than the pool
    ((3, 2), (1, 3), (2, 2), [[1, 0], [0, 1]], (9, 14)),  # overlapping windows, stride 1
    ((1, 1), (1, 1), (3, 2), [[2, 0], [0, 1]], (5, 6)),  # no pooling: shifts only
    ((3,), (3,), (5,), [[2, 2]], (31,)),  # one spatial axis
    ((2,), (5,), (3,), [[1, 1]], (23,)),  # strides longer than the window and the kernel: phases with no term
])


@_POOLED_FIRST_LAYERS
def test_polyphase_tap_sum_is_the_unpooled_window_sum(rng: np.random.Generator, pool: tuple[int, ...],
                                                       strides: tuple[int, ...], size: tuple[int, ...],
                                                       pads: list[list[int]], spatial: tuple[int, ...]) -> None:
    """The first layer's taps summed at the pooled resolution equal the taps' maps unpooled (summed where
    windows overlap) and summed with their shifts (valid pooling), computed here in NumPy."""
    pooled = [(n - p) // s + 1 for n, p, s in zip(spatial, pool, strides)]
    n_taps, n = int(np.prod(size)), 3
    maps = rng.standard_normal((int(np.prod(pool)), n_taps, n, *pooled)).astype(np.float32)
    got = deconv._polyphase_tap_sum([tf.constant(m) for m in maps], pool, strides, size, pads,
                                    list(spatial)).numpy()
    unpooled = np.zeros((n_taps, n, *spatial))  # tap t's map at its window offsets, zeros where no window reaches
    for o, offset in enumerate(np.ndindex(*pool)):
        index = tuple(slice(offset[i], offset[i] + (pooled[i] - 1) * strides[i] + 1, strides[i])
                      for i in range(len(pool)))
        unpooled[(slice(None), slice(None), *index)] += maps[o]
    padded = np.pad(unpooled, [[0, 0], [0, 0], *pads])
    out = [padded.shape[2 + i] - size[i] + 1 for i in range(len(size))]
    expected = sum(padded[(t, slice(None), *[slice(d[i], d[i] + out[i]) for i in range(len(size))])]
                   for t, d in enumerate(np.ndindex(*size)))
    assert got.shape == (n, *out, 1)
    np.testing.assert_allclose(got[..., 0], expected, rtol=1e-5, atol=1e-5)


@_POOLED_FIRST_LAYERS
@pytest.mark.parametrize("scaled", [False, True])
def test_folded_weights_give_the_unpooled_correlation(rng: np.random.Generator, pool: tuple[int, ...],
                                                      strides: tuple[int, ...], size: tuple[int, ...],
                                                      pads: list[list[int]], spatial: tuple[int, ...],
                                                      scaled: bool) -> None:
    """The first layer's adjoint with the switches folded into its weights (one product per pooled position)
    against NumPy: each value placed at its switch (summed where windows overlap), times a pending per-channel
    scale, then correlated with the one-output-channel kernel. It also equals the per-offset products."""
    rank = len(pool)
    pooled = [(n - p) // s + 1 for n, p, s in zip(spatial, pool, strides)]
    batch, k, channels = 2, 3, 5
    value = rng.standard_normal((batch, k, *pooled, channels)).astype(np.float32)
    switches = rng.integers(0, int(np.prod(pool)), (batch, *pooled, channels)).astype(np.int32)
    kernel = rng.standard_normal((*size, channels, 1)).astype(np.float32)
    scale = rng.uniform(-1.5, 1.5, channels).astype(np.float32) if scaled else None
    ctx = deconv._Context(tf.constant(batch), tf.constant(k), tf.range(k), "deconvnet", {})
    weights = deconv._folded_weights(tf.constant(switches), tf.constant(kernel), pool, strides, pads)
    assert weights.shape == (batch, *pooled, channels, len(deconv._folded_keys(pool, strides, size, pads)))
    cot = deconv._Unpooled(tf.constant(value.reshape(batch * k, *pooled, channels)), tf.constant(switches), pool,
                           strides, "valid", tf.constant(spatial), None if scale is None else tf.constant(scale),
                           folded=(weights,))
    got = deconv._folded_single_output_correlation(cot, tf.constant(kernel), pads, ctx).numpy()

    offsets = list(np.ndindex(*pool))
    unpooled = np.zeros((batch, k, *spatial, channels))
    for b, *p, c in np.ndindex(*switches.shape):
        at = tuple(p[i] * strides[i] + offsets[switches[(b, *p, c)]][i] for i in range(rank))
        unpooled[(b, slice(None), *at, c)] += value[(b, slice(None), *p, c)] * (1.0 if scale is None else scale[c])
    padded = np.pad(unpooled, [[0, 0], [0, 0], *pads, [0, 0]])
    out = [padded.shape[2 + i] - size[i] + 1 for i in range(rank)]
    expected = sum(np.tensordot(padded[(slice(None), slice(None), *[slice(d[i], d[i] + out[i]) for i in range(rank)])],
                                kernel[(*d, slice(None), 0)], axes=([-1], [0]))
                   for d in np.ndindex(*size))
    assert got.shape == (batch * k, *out, 1)
    np.testing.assert_allclose(got[..., 0], expected.reshape(batch * k, *out), rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    per_offset = deconv._unpooled_single_output_correlation(cot, tf.constant(kernel), pads, ctx).numpy()
    np.testing.assert_allclose(got, per_offset, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
