"""The general deconvnet (tfaural.deconv) on layouts beyond tfaural's own models.

* against a NumPy walk written here, on a small model with ReLU -> BatchNorm order, negative
  batch-norm scales, overlapping max-pools (MTT_vgg's (1, 4) / (2, 2) and a 'same' one), an
  even kernel, a strided conv, a Concatenate and a residual Add, for the three ReLU rules;
* ``method="gradient"`` against ``tf.GradientTape`` on a small musicnn-shaped model (parallel
  branches, pooling over the whole frequency axis, Conv1D mid-end with residual adds, global
  max/mean pooling, dense layers);
* against the explicit walk tfaural used before (``benchmarks/explicit_walk.py``) on the Choi
  CNN and the SampleCNN family, every layer, to 1e-5 of the peak;
* beyond ReLU: other activations, dilated, depthwise, separable, grouped and transposed convolutions,
  and layers walked by their gradient (layer normalisation, gates, upsampling, ``Lambda``), against
  ``tf.GradientTape`` through the model with each rectifier's gradient replaced by the method's rule
  (``tf.custom_gradient``; unreplaced for ``gradient``);
* a ``keras.applications`` backbone called as a layer, against the same weights built into the graph;
* clear errors for the layers it cannot walk through (a subclassed nested model, ``channels_first``).
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.explicit_walk import DeconvNet as ExplicitWalk
from tfaural import deconv, spectral
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn, musicnn_tagger
from tfaural.models.samplecnn import mel_frame_cnn, raw_frame_cnn, samplecnn_model

# ------------------------------------------------------------------ NumPy reference


def _padding(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """TensorFlow's output size rule: (output length, padding before)."""
    if padding == "same":
        out = -(-n // s)
        return out, max((out - 1) * s + k - n, 0) // 2
    return (n - k) // s + 1, 0


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, strides: tuple[int, int], padding: str) -> np.ndarray:
    """2D cross-correlation ``x`` [H, W, C] * ``w`` [kh, kw, C, O] by loops over outputs."""
    (oh, ph), (ow, pw) = (_padding(n, k, s, padding) for n, k, s in zip(x.shape[:2], w.shape[:2], strides))
    out = np.zeros((oh, ow, w.shape[-1]))
    for i, j in np.ndindex(oh, ow):
        for di, dj in np.ndindex(*w.shape[:2]):
            r, c = i * strides[0] + di - ph, j * strides[1] + dj - pw
            if 0 <= r < x.shape[0] and 0 <= c < x.shape[1]:
                out[i, j] += x[r, c] @ w[di, dj]
    return out + b


def np_conv_adjoint(g: np.ndarray, w: np.ndarray, shape: tuple[int, int], strides: tuple[int, int],
                    padding: str) -> np.ndarray:
    """The transpose of np_conv (no bias): every output scattered back through the kernel."""
    ph = _padding(shape[0], w.shape[0], strides[0], padding)[1]
    pw = _padding(shape[1], w.shape[1], strides[1], padding)[1]
    x = np.zeros((*shape, w.shape[2]))
    for i, j in np.ndindex(*g.shape[:2]):
        for di, dj in np.ndindex(*w.shape[:2]):
            r, c = i * strides[0] + di - ph, j * strides[1] + dj - pw
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                x[r, c] += w[di, dj] @ g[i, j]
    return x


def np_max_pool(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int], padding: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling; switches as absolute input positions [oh, ow, C, 2] of each window's first maximum."""
    (oh, ph), (ow, pw) = (_padding(n, k, s, padding) for n, k, s in zip(x.shape[:2], size, strides))
    pooled, where = np.zeros((oh, ow, x.shape[-1])), np.zeros((oh, ow, x.shape[-1], 2), np.int64)
    for i, j, ch in np.ndindex(oh, ow, x.shape[-1]):
        best = -np.inf
        for di, dj in np.ndindex(*size):
            r, c = i * strides[0] + di - ph, j * strides[1] + dj - pw
            if 0 <= r < x.shape[0] and 0 <= c < x.shape[1] and x[r, c, ch] > best:
                best, where[i, j, ch] = x[r, c, ch], (r, c)
        pooled[i, j, ch] = best
    return pooled, where


def np_unpool(g: np.ndarray, where: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*shape, g.shape[-1]))
    for i, j, ch in np.ndindex(*g.shape):
        r, c = where[i, j, ch]
        out[r, c, ch] += g[i, j, ch]
    return out


def np_relu_back(g: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    if method == "deconvnet":
        return np.maximum(g, 0)
    if method == "guided":
        return np.maximum(g, 0) * (y > 0)
    return g * (y > 0)


def odd_model(rng: np.random.Generator, *, first_maps: int = 4) -> keras.Model:
    """ReLU -> BN with negative scales, overlapping pools, an even kernel, concat, residual add, strided conv."""
    x = keras.Input((12, 22, 1), name="spectrogram")
    h = keras.layers.Conv2D(first_maps, 3, padding="same", activation="relu", name="conv1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.MaxPooling2D((1, 4), strides=(2, 2), name="pool1")(h)  # 12 x 22 -> 6 x 10
    a = keras.layers.ReLU(name="relu_a")(keras.layers.Conv2D(3, (3, 1), padding="same", name="conv_a")(h))
    b = keras.layers.Conv2D(2, (2, 2), padding="same", activation="relu", name="conv_b")(h)
    c = keras.layers.Concatenate(name="concat")([a, b])
    d = keras.layers.BatchNormalization(name="bn2")(keras.layers.Conv2D(5, 3, padding="same", name="conv2")(c))
    e = keras.layers.ReLU(name="relu2")(keras.layers.Add(name="add")([d, c]))
    e = keras.layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name="pool2")(e)  # -> 3 x 5
    e = keras.layers.Dropout(0.5, name="dropout")(e)
    f = keras.layers.ReLU(name="relu3")(keras.layers.Conv2D(3, (2, 3), strides=(1, 2), name="conv3")(e))  # 2 x 2
    out = keras.layers.Dense(2, name="output")(keras.layers.Flatten(name="flatten")(f))
    model = keras.Model(x, out, name="odd")
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            n = weights[0].shape[0]
            gamma = rng.uniform(0.5, 1.5, n) * np.where(np.arange(n) % 2, -1.0, 1.0)  # every other scale < 0
            layer.set_weights([gamma, rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)])
        elif weights:
            layer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in weights])
    return model


def np_odd_deconv(model: keras.Model, x: np.ndarray, seed: str, feature: int, method: str) -> np.ndarray:
    """The deconvnet of ``odd_model`` written out for one input [12, frames] and one feature (any frames the
    conv layers take; 22 for the output layer)."""
    def weights(name: str) -> list[np.ndarray]:
        return [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]

    def bn(name: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gamma, beta, mean, var = weights(name)
        scale = gamma / np.sqrt(var + model.get_layer(name).epsilon)
        return (v - mean) * scale + beta, scale

    t: dict[str, np.ndarray] = {"input": x[..., None].astype(np.float64)}
    t["conv1"] = np.maximum(np_conv(t["input"], *weights("conv1"), (1, 1), "same"), 0)
    t["bn1"], scale1 = bn("bn1", t["conv1"])
    t["pool1"], where1 = np_max_pool(t["bn1"], (1, 4), (2, 2), "valid")
    t["conv_a"] = np_conv(t["pool1"], *weights("conv_a"), (1, 1), "same")
    t["relu_a"] = np.maximum(t["conv_a"], 0)
    t["conv_b"] = np.maximum(np_conv(t["pool1"], *weights("conv_b"), (1, 1), "same"), 0)
    t["concat"] = np.concatenate([t["relu_a"], t["conv_b"]], axis=-1)
    t["conv2"] = np_conv(t["concat"], *weights("conv2"), (1, 1), "same")
    t["bn2"], scale2 = bn("bn2", t["conv2"])
    t["add"] = t["bn2"] + t["concat"]
    t["relu2"] = np.maximum(t["add"], 0)
    t["pool2"], where2 = np_max_pool(t["relu2"], (3, 3), (2, 2), "same")
    t["conv3"] = np_conv(t["pool2"], *weights("conv3"), (1, 2), "valid")
    t["relu3"] = np.maximum(t["conv3"], 0)
    w_out, b_out = weights("output")
    if seed == "output":  # (the dense layer takes 12 x 22 inputs only; the conv layers any size)
        t["output"] = t["relu3"].reshape(-1) @ w_out + b_out

    g = {seed: np.zeros_like(t[seed])}
    g[seed][..., feature] = t[seed][..., feature]

    def add(name: str, value: np.ndarray) -> None:
        g[name] = g.get(name, 0) + value

    if "output" in g:
        add("relu3", (w_out @ g["output"]).reshape(t["relu3"].shape))
    if "relu3" in g:
        add("pool2", np_conv_adjoint(np_relu_back(g["relu3"], t["relu3"], method), weights("conv3")[0],
                                     t["pool2"].shape[:2], (1, 2), "valid"))
    if "pool2" in g:
        add("relu2", np_unpool(g["pool2"], where2, t["relu2"].shape[:2]))
    if "relu2" in g:
        add("add", np_relu_back(g["relu2"], t["relu2"], method))
    if "add" in g:
        add("bn2", g["add"])
        add("concat", g["add"])
    if "bn2" in g:
        add("concat", np_conv_adjoint(g["bn2"] * scale2, weights("conv2")[0], t["concat"].shape[:2], (1, 1), "same"))
    if "concat" in g:
        add("relu_a", g["concat"][..., :3])
        add("conv_b", g["concat"][..., 3:])
    if "relu_a" in g:
        add("pool1", np_conv_adjoint(np_relu_back(g["relu_a"], t["relu_a"], method), weights("conv_a")[0],
                                     t["pool1"].shape[:2], (1, 1), "same"))
    if "conv_b" in g:
        add("pool1", np_conv_adjoint(np_relu_back(g["conv_b"], t["conv_b"], method), weights("conv_b")[0],
                                     t["pool1"].shape[:2], (1, 1), "same"))
    back = np_unpool(g["pool1"], where1, t["bn1"].shape[:2]) * scale1
    back = np_conv_adjoint(np_relu_back(back, t["conv1"], method), weights("conv1")[0], x.shape, (1, 1), "same")
    return back[..., 0]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize(("first_maps", "chunk_elements"), [(4, None), (40, None), (40, 1)])
@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_odd_layout_model_matches_the_numpy_walk(rng: np.random.Generator, method: str, first_maps: int,
                                                 chunk_elements: int | None) -> None:
    """With 40 first-layer maps, its 3 x 3 adjoint meets the unpooled signal (MTT_vgg's (1, 4) pool with
    strides (2, 2), a pending batch-norm scale): with the switches folded into its weights (they fit the
    default chunk budget), or (a budget of one element) as per-offset products summed phase by phase."""
    model = odd_model(rng, first_maps=first_maps)
    assert deconv._few_taps(deconv._adjoint_kernel(model.get_layer("conv1"), 2)) == (first_maps >= 36)
    x = np.abs(rng.standard_normal((2, 12, 22))).astype(np.float32)
    net = deconv.DeconvNet(model, method=method)
    switches: dict = {}
    net._record_switches(net._walk_to("relu3"), net._graph.forward(tf.constant(x[..., None]),
                                                                     [net._graph.step("relu3").output]),
                         switches, chunk_elements=chunk_elements)
    folded = {net._graph.consumers[tensor][0].layer.name: bool(record.folded) for tensor, record in switches.items()}
    assert folded == {"pool1": first_maps >= 36 and chunk_elements is None, "pool2": False}
    assert net.layer_names[net.levels[0]] == "pool1" and net.layer_names[net.levels[-1]] == "relu3"
    # conv2's block goes on through the residual add to relu2 and pool2 (dropout ends it)
    assert set(net.layer_names.values()) == {"pool1", "relu_a", "conv_b", "pool2", "relu3"}
    assert net.input_layer is None and net.n_features("concat") == 5
    seeds = [*net.levels, "concat", "add", "pool2", "output"]
    for seed in seeds:
        name = net.layer_name(seed)
        width = net.n_features(seed)
        features = [width - 1, 0] if width > 1 else [0]
        out = net(x, layer=seed, features=features, chunk_elements=chunk_elements).numpy()
        assert out.shape == (2, len(features), 12, 22)
        for b in range(2):
            for k, feature in enumerate(features):
                expected = np_odd_deconv(model, x[b], name, feature, method)
                scale = max(np.abs(expected).max(), 1e-12)
                np.testing.assert_allclose(out[b, k], expected, rtol=0, atol=1e-5 * scale, err_msg=f"{name}[{feature}]")
        assert np.abs(out).max() > 0, name  # not a vacuous comparison


def test_the_three_methods_differ_only_by_the_relu_rule(rng: np.random.Generator) -> None:
    model = odd_model(rng)
    x = np.abs(rng.standard_normal((1, 12, 22))).astype(np.float32)
    maps = {m: deconv.deconvolve(model, x, layer="pool2", method=m).numpy() for m in deconv.METHODS}
    assert not np.allclose(maps["deconvnet"], maps["guided"]) and not np.allclose(maps["guided"], maps["gradient"])
    with pytest.raises(ParameterError, match="method='saliency' is invalid"):
        deconv.DeconvNet(model, method="saliency")


def test_unknown_sizes_under_tf_function_and_no_python_ops(rng: np.random.Generator) -> None:
    model = odd_model(rng)
    net = deconv.DeconvNet(model)

    @tf.function(input_signature=[tf.TensorSpec([None, 12, None], tf.float32), tf.TensorSpec([None], tf.int32)],
                 autograph=False)
    def run(x: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        return net(x, layer="add", features=features)

    graph = run.get_concrete_function().graph
    assert not {op.type for op in graph.get_operations()} & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    for frames in (22, 31):  # the conv part takes any length
        x = np.abs(rng.standard_normal((2, 12, frames))).astype(np.float32)
        np.testing.assert_allclose(run(x, tf.constant([4, 1])).numpy(),
                                   net(x, layer="add", features=[4, 1]).numpy(), rtol=1e-5, atol=1e-6)


def test_folding_the_first_layer_is_decided_in_graph_for_unknown_sizes(rng: np.random.Generator) -> None:
    """With the input's size unknown while tracing, whether the first layer's weights are folded with the
    switches is decided per call: both ways give the NumPy walk's maps (a budget that fits 8 x 6 x 10 x 40
    x 4 weights for 12 x 22 inputs folds them; one for 12 x 60 inputs does not)."""
    model = odd_model(rng, first_maps=40)
    net = deconv.DeconvNet(model)
    walk = net._walk_to("relu3")
    chunk = 2 * 2 * 6 * 10 * 40 * len(deconv._folded_keys((1, 4), (2, 2), (3, 3), [[1, 1], [1, 1]]))
    spec = [tf.TensorSpec([None, 12, None], tf.float32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=spec, autograph=False)
    def run(x: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        return net(x, layer="relu3", features=features, chunk_elements=chunk)

    @tf.function(input_signature=spec[:1], autograph=False)
    def folded_size(x: tf.Tensor) -> tf.Tensor:
        switches: dict = {}
        values = net._graph.forward(net._model_input(x), [walk.seed.output])
        net._record_switches(walk, values, switches, chunk_elements=chunk)
        (record,) = [r for r in switches.values() if r.folded]
        return tf.size(record.folded[0])

    assert any(op.type in ("If", "StatelessIf") for op in folded_size.get_concrete_function().graph.get_operations())
    for frames, folds in ((22, True), (60, False)):
        x = np.abs(rng.standard_normal((2, 12, frames))).astype(np.float32)
        assert (int(folded_size(x)) > 0) == folds
        out = run(x, tf.constant([2, 0])).numpy()
        assert out.shape == (2, 2, 12, frames)
        for b in range(2):
            for k, feature in enumerate([2, 0]):
                expected = np_odd_deconv(model, x[b], "relu3", feature, "deconvnet")
                # float32 against float64 through three layers of 40 maps: feature 2's maps (largest 2.1) are
                # sums that cancel to 1/100 of feature 0's, and were 1.4e-5 of their largest value off on an AMD
                # EPYC (oneDNN's AVX-512 kernels; 60 frames, not folded); a wrong fold or offset is off by O(1)
                np.testing.assert_allclose(out[b, k], expected, rtol=0, atol=5e-5 * np.abs(expected).max(),
                                           err_msg=f"{frames} frames, item {b}, feature {feature}")


def _small_musicnn(rng: np.random.Generator, *, frontend_scale: float = 0.05) -> keras.Model:
    model = musicnn_tagger(architecture="musicnn", n_outputs=3, n_mels=16, n_frames=30,
                           frontend_scale=frontend_scale, midend_filters=4, backend_units=6)
    return _randomise_weights(model, rng, scale=0.3)


def _randomise_weights(model: keras.Model, rng: np.random.Generator, *, scale: float) -> keras.Model:
    """Batch norms with scales of both signs, PReLU slopes in [0.05, 0.5], other weights N(0, scale²)."""
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):  # with or without scale (gamma) and centre (beta)
            draws = {"gamma": lambda n: rng.uniform(-1.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.2, n),
                     "moving_mean": lambda n: rng.normal(0, 0.2, n),
                     "moving_variance": lambda n: rng.uniform(0.5, 2, n)}
            layer.set_weights([draws[w.path.rsplit("/", 1)[-1]](w.shape[0]) for w in layer.weights])
        elif isinstance(layer, keras.layers.PReLU):
            layer.set_weights([rng.uniform(0.05, 0.5, w.shape) for w in weights])
        elif weights:
            layer.set_weights([rng.standard_normal(w.shape) * scale for w in weights])
    return model


@pytest.mark.parametrize("frontend_scale", [0.05, 0.5])
def test_gradient_method_is_the_true_gradient_on_a_musicnn_shaped_model(rng: np.random.Generator,
                                                                        frontend_scale: float) -> None:
    """0.05: 6 timbral maps, their adjoints (6 x 7 and 11 x 7 taps) go as convolutions; 0.5: 64 maps, as
    products and shifted sums (deconv._product_taps) in one and two groups of kernel rows."""
    model = _small_musicnn(rng, frontend_scale=frontend_scale)
    kernels = [deconv._adjoint_kernel(model.get_layer(f"timbral{i}_conv"), 2) for i in (1, 2)]
    assert [deconv._product_taps(k) for k in kernels] == [frontend_scale == 0.5] * 2
    net = deconv.DeconvNet(model, method="gradient")
    assert net.input_layer == "log_mel"  # the walk ends in the log-compressed mel domain
    assert set(net.layer_names.values()) == {"timbral1_pool", "timbral2_pool", "temporal1_pool", "temporal2_pool",
                                             "temporal3_pool", "midend1_bn", "midend2_add", "midend3_add"}  # residual
    mel = tf.constant(rng.uniform(0, 1e-3, (2, 16, 30, 1)).astype(np.float32))
    c = model.get_layer("log_mel").c
    d_log_mel = c / ((1 + c * mel) * np.log(10.0))  # log10(1 + c m) is elementwise: chain rule back to log-mel
    seeds = [*net.levels, "midend2_add", "pooled", "logits"]
    probe = keras.Model(model.inputs, [model.get_layer(net.layer_name(seed)).output for seed in seeds])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(mel)
        maps = probe(mel, training=False)
    for seed, h in zip(seeds, maps):
        width = net.n_features(seed)
        features = [0, width - 1] if width > 1 else [0]
        out = net(mel, layer=seed, features=features).numpy()
        assert out.shape == (2, len(features), 16, 30)
        for k, feature in enumerate(features):
            seed_map = tf.stop_gradient(h * tf.one_hot(feature, width))  # the feature's own values, that channel
            expected = (tape.gradient(h, mel, output_gradients=seed_map) / d_log_mel)[..., 0].numpy()
            scale = max(float(np.abs(expected).max()), 1e-12)
            np.testing.assert_allclose(out[:, k], expected, rtol=0, atol=2e-5 * scale, err_msg=f"{seed}[{feature}]")
    for method in ("deconvnet", "guided"):  # the other rules walk the same graph
        out = deconv.deconvolve(model, mel, layer="midend3_add", features=[0, 3], method=method).numpy()
        assert out.shape == (2, 2, 16, 30) and np.isfinite(out).all() and np.abs(out).max() > 0


def test_seeding_a_sigmoid_output_uses_its_logits(rng: np.random.Generator) -> None:
    model = _small_musicnn(rng)
    mel = tf.constant(rng.uniform(0, 1e-3, (1, 16, 30, 1)).astype(np.float32))
    net = deconv.DeconvNet(model)
    out, activation = net(mel, layer="output", features=[2], return_activation=True)
    logits = keras.Model(model.inputs, model.get_layer("logits").output)(mel, training=False)
    np.testing.assert_allclose(activation.numpy(), logits.numpy()[:, [2]], rtol=1e-5)
    np.testing.assert_allclose(out.numpy(), net(mel, layer="logits", features=[2]).numpy(), rtol=1e-6)


# ------------------------------------------------------------------ activations beyond ReLU


def _many_activations(rng: np.random.Generator) -> keras.Model:
    """A chain of conv blocks with the activations audio CNNs use besides ReLU, as layers and inside convs."""
    x = keras.Input((16, 20, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(x)
    h = keras.layers.ELU(name="elu1")(h)  # Choi et al. 2016's tagger: conv, batch norm, ELU, max-pool
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="gelu", name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.LeakyReLU(negative_slope=0.2, name="leaky2")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="tanh", name="conv3")(h)
    h = keras.layers.Conv2D(6, 2, padding="same", name="conv4")(h)
    h = keras.layers.Activation("swish", name="swish4")(h)
    h = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool4")(h)  # overlapping windows
    h = keras.layers.PReLU(shared_axes=[1, 2], name="prelu4")(h)
    h = keras.layers.Conv2D(5, 2, padding="same", activation="softplus", name="conv5")(h)
    h = keras.layers.ReLU(max_value=2.0, name="relu5")(h)
    y = keras.layers.Dense(3, activation="sigmoid", name="output")(keras.layers.GlobalAveragePooling2D()(h))
    return _randomise_weights(keras.Model(x, y), rng, scale=0.4)


#: Convolutions with a rectifier of their own (the reference walks each activation by the method's rule).
_RECTIFYING_CONVS = ("conv2", "conv5", "causal1", "causal2", "dw4", "sep5", "dw1", "sep3", "grouped4")
_CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)


def _with_rule(fn: Any, method: str, rectifier: bool) -> Any:
    """``fn`` whose gradient is the walk's rule for ``method`` (what every activation of the reference does)."""

    @tf.custom_gradient
    def f(z: tf.Tensor) -> Any:
        def rule(g: tf.Tensor, variables: Any = None) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(z)
                out = fn(z)
            derivative = tape.gradient(out, z)
            if method == "gradient" or not rectifier:
                back = g * derivative
            else:
                back = tf.nn.relu(g) * derivative if method == "guided" else tf.nn.relu(g)
            return (back, [tf.zeros_like(v) for v in variables]) if variables else back  # PReLU's slopes

        return fn(z), rule

    return f


def _without_activation(layer: keras.layers.Layer, h: tf.Tensor) -> tf.Tensor:
    """``layer`` (a convolution or dense layer) on ``h`` before its activation: Keras's own call of a twin."""
    twin = type(layer).from_config({**layer.get_config(), "activation": "linear"})
    twin.build(h.shape)
    twin.set_weights(layer.get_weights())
    return twin(h)


def _reference_maps(model: keras.Model, x: tf.Tensor, method: str) -> dict[str, tf.Tensor]:
    """Every layer's forward output (``<conv>_pre``: a convolution's pre-activation, which a tanh layer is
    seeded with), computed layer by layer with each activation's gradient replaced by the rule of ``method``."""
    maps: dict[str, tf.Tensor] = {}
    h = x
    for layer in model.layers[1:]:
        if isinstance(layer, _CONV_LAYERS):
            z = _without_activation(layer, h)
            name = layer.activation.__name__
            maps[f"{layer.name}_pre"] = z
            h = z if name == "linear" else _with_rule(layer.activation, method, layer.name in _RECTIFYING_CONVS)(z)
        elif isinstance(layer, (keras.layers.ELU, keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ReLU,
                                keras.layers.Activation)):
            h = _with_rule(functools.partial(layer, training=False), method, True)(h)  # all rectifiers here
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling1D)):
            break
        else:
            h = layer(h, training=False)
        maps[layer.name] = h
    return maps


def _check_against_the_reference(model: keras.Model, x: np.ndarray, method: str, seeds: list[int | str],
                                 pre_activation: dict[int | str, str]) -> deconv.DeconvNet:
    """Every feature of every seed against :func:`_reference_maps`' gradients (``pre_activation``: the maps
    of seeds whose own activation is not a rectifier, seeded before it)."""
    net = deconv.DeconvNet(model, method=method)
    inputs = tf.constant(x[..., np.newaxis])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        maps = _reference_maps(model, inputs, method)
    for seed in seeds:
        h = maps[pre_activation.get(seed, net.layer_name(seed))]
        width = int(h.shape[-1])
        out = net(x, layer=seed).numpy()  # every feature (some may be all zero: a rectified map)
        assert out.shape == (x.shape[0], width, *x.shape[1:])
        expected = np.stack([tape.gradient(h, inputs, output_gradients=tf.stop_gradient(h * tf.one_hot(f, width)))
                             [..., 0].numpy() for f in range(width)], axis=1)
        scale = float(np.abs(expected).max())
        assert scale > 0
        np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * scale, err_msg=f"{method}: {seed}")
    return net


@pytest.mark.parametrize("method", deconv.METHODS)
def test_activations_beyond_relu_walk_as_autodiff_with_the_methods_rule(rng: np.random.Generator,
                                                                         method: str) -> None:
    """ELU, GELU, leaky and parametric ReLU, swish, softplus, a bounded ReLU and tanh, as layers and inside
    convolutions, under max-pools (overlapping ones too) and batch normalisation. The reference is
    ``tf.GradientTape`` through the model, layer by layer, with each activation's gradient replaced by the
    method's rule: at tanh the derivative in every method; at every rectifier, for ``gradient`` the
    derivative (so the plain gradient of the model), for ``guided`` that times the ReLU of the signal, for
    ``deconvnet`` the ReLU of the signal."""
    model = _many_activations(rng)
    x = rng.uniform(0, 1, (2, 16, 20)).astype(np.float32)
    net = _check_against_the_reference(model, x, method, [1, 2, 3, 4, 5, "bn2", "conv2", "swish4"],
                                       {3: "conv3_pre"})
    assert net.layer_names == {1: "pool1", 2: "leaky2", 3: "conv3", 4: "prelu4", 5: "relu5"}
    # as an export's signatures call it: in a graph, sizes unknown (the derivatives are taken in the graph)
    traced = tf.function(lambda v: net(v, layer=4, features=[1, 4]),
                         input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    eager = net(x, layer=4, features=[1, 4]).numpy()
    np.testing.assert_allclose(traced(x).numpy(), eager, rtol=0, atol=1e-6 * float(np.abs(eager).max()))
    if method == "gradient":  # the true gradient of the whole model, its own activations unreplaced
        inputs = tf.constant(x[..., np.newaxis])
        with tf.GradientTape() as whole:
            whole.watch(inputs)
            top = keras.Model(model.inputs, model.get_layer("relu5").output)(inputs, training=False)
        expected = whole.gradient(top, inputs, output_gradients=tf.stop_gradient(top * tf.one_hot(2, 5)))
        np.testing.assert_allclose(net(x, layer="relu5", features=[2]).numpy()[:, 0], expected[..., 0].numpy(),
                                   rtol=0, atol=2e-5 * float(np.abs(expected).max()))


def _dilated_waveform_model(rng: np.random.Generator) -> keras.Model:
    """A temporal-convolution stack on a waveform: causal and "same" dilated convolutions (a WaveNet/TCN
    front), then a depthwise and a separable convolution."""
    x = keras.Input((96, 1))
    h = keras.layers.Conv1D(6, 3, padding="causal", activation="elu", name="causal1")(x)
    h = keras.layers.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="gelu", name="causal2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.ELU(name="elu2")(h)
    h = keras.layers.Conv1D(6, 3, padding="same", dilation_rate=4, name="same3")(h)
    h = keras.layers.ReLU(name="relu3")(h)
    h = keras.layers.MaxPooling1D(2, name="pool3")(h)
    h = keras.layers.DepthwiseConv1D(3, padding="same", depth_multiplier=2, activation="relu", name="dw4")(h)
    h = keras.layers.SeparableConv1D(6, 3, padding="same", dilation_rate=2, activation="swish", name="sep5")(h)
    h = keras.layers.Conv1D(5, 2, dilation_rate=3, activation="tanh", name="valid6")(h)
    y = keras.layers.Dense(3, activation="sigmoid")(keras.layers.GlobalMaxPooling1D()(h))
    return _randomise_weights(keras.Model(x, y), rng, scale=0.4)


@pytest.mark.parametrize("method", deconv.METHODS)
def test_dilated_causal_depthwise_and_separable_1d_convolutions_walk_as_autodiff(rng: np.random.Generator,
                                                                                 method: str) -> None:
    """The transposed convolution of a dilated one (causal, "same" and "valid"), and the adjoints of depthwise
    and separable ones, against the reference above."""
    model = _dilated_waveform_model(rng)
    x = rng.standard_normal((2, 96)).astype(np.float32)
    net = _check_against_the_reference(model, x, method, [1, 2, 3, 4, 5, "causal2", "same3", "dw4"],
                                       {5: "valid6_pre"})
    assert net.layer_names == {1: "causal1", 2: "elu2", 3: "pool3", 4: "sep5", 5: "valid6"}


def _mobilenet_like(rng: np.random.Generator) -> keras.Model:
    """YAMNet's layout (MobileNet v1 on a log-mel patch: a strided conv, then depthwise + pointwise blocks with
    batch norms without scale or centre, and ReLU), then a separable, a grouped and a transposed convolution."""
    x = keras.Input((24, 16, 1))

    def bn_relu(h: Any, name: str) -> Any:
        h = keras.layers.BatchNormalization(center=False, scale=False, name=f"{name}_bn")(h)
        return keras.layers.ReLU(name=f"{name}_relu")(h)

    h = bn_relu(keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv0")(x), "conv0")
    h = bn_relu(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1")(h), "dw1")
    h = bn_relu(keras.layers.Conv2D(12, 1, use_bias=False, name="pw1")(h), "pw1")
    h = bn_relu(keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw2")(h), "dw2")
    h = bn_relu(keras.layers.Conv2D(12, 1, use_bias=False, name="pw2")(h), "pw2")
    h = keras.layers.SeparableConv2D(10, 3, padding="same", depth_multiplier=2, activation="relu", name="sep3")(h)
    h = keras.layers.Conv2D(10, 3, padding="same", groups=2, activation="elu", name="grouped4")(h)
    h = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="up5")(h)
    h = keras.layers.ReLU(name="up5_relu")(h)
    y = keras.layers.Dense(3, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))
    return _randomise_weights(keras.Model(x, y), rng, scale=0.4)


@pytest.mark.parametrize("method", deconv.METHODS)
def test_mobilenet_blocks_grouped_and_transposed_convolutions_walk_as_autodiff(rng: np.random.Generator,
                                                                               method: str) -> None:
    """Depthwise (strided too), separable, grouped and transposed 2D convolutions, against the reference above;
    each level is a conv block (a depthwise convolution is half of one)."""
    model = _mobilenet_like(rng)
    x = rng.uniform(0, 1, (2, 24, 16)).astype(np.float32)
    net = _check_against_the_reference(model, x, method, [1, 2, 3, 4, 5, "dw1_relu", "dw2_bn", "up5_relu"], {})
    assert net.layer_names == {1: "conv0_relu", 2: "pw1_relu", 3: "pw2_relu", 4: "sep3", 5: "grouped4"}


def _gated_model(rng: np.random.Generator) -> keras.Model:
    """Layers with no deconvnet rule of their own: layer normalisation, a squeeze-and-excitation gate (a product
    with a branch of its own input), upsampling, a ``Lambda``, softmax and a Python function as activations."""
    x = keras.Input((12, 16, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = keras.layers.LayerNormalization(name="norm1")(h)
    gate = keras.layers.GlobalAveragePooling2D(name="squeeze")(h)
    gate = keras.layers.Dense(3, activation="relu", name="excite1")(gate)
    gate = keras.layers.Dense(6, activation="sigmoid", name="excite2")(gate)
    h = keras.layers.Multiply(name="gated")([h, keras.layers.Reshape((1, 1, 6), name="gate")(gate)])
    h = keras.layers.UpSampling2D((1, 2), name="up")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Lambda(lambda t: t * tf.sigmoid(2 * t), name="own_swish")(h)
    h = keras.layers.Conv2D(5, 3, padding="same", activation=lambda t: t * tf.abs(t), name="conv2")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv3")(h)
    h = keras.layers.Activation("softmax", name="softmax3")(h)
    h = keras.layers.Conv2D(4, 1, activation="relu", name="conv4")(h)
    y = keras.layers.Dense(2, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))
    return _randomise_weights(keras.Model(x, y), rng, scale=0.5)


def _gated_reference(model: keras.Model, x: tf.Tensor, method: str) -> dict[str, tf.Tensor]:
    """The model's forward pass written out, its three ReLUs with the gradient of the method's rule (the only
    rectifiers: every other layer keeps its own gradient)."""
    layer = model.get_layer
    relu = _with_rule(tf.nn.relu, method, True)

    def linear(name: str, h: tf.Tensor) -> tf.Tensor:
        return _without_activation(layer(name), h)

    maps = {"conv1": relu(linear("conv1", x))}
    maps["norm1"] = layer("norm1")(maps["conv1"])
    gate = layer("excite2")(relu(linear("excite1", layer("squeeze")(maps["norm1"]))))
    maps["gated"] = layer("gated")([maps["norm1"], layer("gate")(gate)])
    maps["pool1"] = layer("pool1")(layer("up")(maps["gated"]))
    maps["own_swish"] = layer("own_swish")(maps["pool1"])
    maps["conv3"] = layer("conv3")(layer("conv2")(maps["own_swish"]))
    maps["conv4"] = relu(linear("conv4", layer("softmax3")(maps["conv3"])))
    return maps


@pytest.mark.parametrize("method", deconv.METHODS)
def test_layers_without_a_rule_of_their_own_walk_by_their_gradient(rng: np.random.Generator, method: str) -> None:
    """Every method walks them by their exact vector-Jacobian product, so ``gradient`` is the gradient of the
    model (``tf.GradientTape`` through it unchanged) and the other two differ from it only at the ReLUs (the
    forward pass written out with their rules, :func:`_gated_reference`)."""
    model = _gated_model(rng)
    net = deconv.DeconvNet(model, method=method)
    assert net.layer_names == {1: "conv1", 2: "conv2", 3: "conv3", 4: "conv4"}
    x = rng.uniform(0, 1, (2, 12, 16)).astype(np.float32)
    inputs = tf.constant(x[..., np.newaxis])
    seeds = ("norm1", "gated", "pool1", "own_swish", "conv3", "conv4")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        if method == "gradient":
            probe = keras.Model(model.inputs, [model.get_layer(n).output for n in seeds])
            maps = dict(zip(seeds, probe(inputs, training=False)))
        else:
            maps = _gated_reference(model, inputs, method)
    for seed in seeds:  # (conv2's and softmax3's own activations are walked from conv3 and conv4)
        h = maps[seed]
        width = int(h.shape[-1])
        out = net(x, layer=seed).numpy()
        expected = np.stack([tape.gradient(h, inputs, output_gradients=tf.stop_gradient(h * tf.one_hot(f, width)))
                             [..., 0].numpy() for f in range(width)], axis=1)
        scale = float(np.abs(expected).max())
        assert scale > 0
        np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * scale, err_msg=f"{method}: {seed}")
    traced = tf.function(lambda v: net(v, layer="conv4", features=[0, 3]),
                         input_signature=[tf.TensorSpec([None, 12, 16], tf.float32)])
    eager = net(x, layer="conv4", features=[0, 3]).numpy()  # a graph may order the sums differently
    np.testing.assert_allclose(traced(x).numpy(), eager, rtol=0, atol=2e-5 * float(np.abs(eager).max()))


def test_convolutions_on_a_pooled_summary_are_no_levels(rng: np.random.Generator) -> None:
    """A squeeze-and-excitation gate made of 1x1 convolutions on a global average (1 x 1 maps) is no conv block:
    the levels are the convolutions over the input's time-frequency plane; the gate's layers can still be named."""
    x = keras.Input((12, 16, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    s = keras.layers.Conv2D(2, 1, activation="relu", name="excite1")(s)
    s = keras.layers.Conv2D(6, 1, activation="sigmoid", name="excite2")(s)
    h = keras.layers.Multiply()([h, s])
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    model = _randomise_weights(keras.Model(x, keras.layers.GlobalMaxPooling2D()(h)), rng, scale=0.5)
    net = deconv.DeconvNet(model)
    assert net.layer_names == {1: "conv1", 2: "conv2"}
    out = net(rng.uniform(0, 1, (1, 12, 16)).astype(np.float32), layer="excite1").numpy()
    assert out.shape == (1, 2, 12, 16) and np.isfinite(out).all()


def _tiny_transformer(rng: np.random.Generator, *, patch_conv: bool) -> keras.Model:
    """Log-mel ``[frames, 16, 1]`` -> (a 4x4 patch convolution, or a dense embedding of each frame) -> two
    pre-norm transformer blocks (attention, GELU MLP, residual sums) -> mean -> 3 sigmoid tags."""
    x = keras.Input((None, 16, 1))
    if patch_conv:
        h = keras.layers.Reshape((-1, 8))(keras.layers.Conv2D(8, 4, strides=4, name="patch_embed")(x))
    else:
        h = keras.layers.Dense(8, name="frame_embed")(keras.layers.Reshape((-1, 16))(x))
    for i in range(2):
        a = keras.layers.LayerNormalization(name=f"ln{i}a")(h)
        h = keras.layers.Add(name=f"res{i}a")([h, keras.layers.MultiHeadAttention(2, 4, name=f"mha{i}")(a, a)])
        m = keras.layers.LayerNormalization(name=f"ln{i}b")(h)
        m = keras.layers.Dense(16, activation="gelu", name=f"mlp{i}")(m)
        h = keras.layers.Add(name=f"res{i}b")([h, keras.layers.Dense(8, name=f"mlp{i}_out")(m)])
    out = keras.layers.Dense(3, activation="sigmoid", name="tags")(keras.layers.GlobalAveragePooling1D()(h))
    return _randomise_weights(keras.Model(x, out, name="tiny_transformer"), rng, scale=0.5)


def test_named_layers_are_levels_after_the_conv_blocks_and_walk_as_autodiff(rng: np.random.Generator) -> None:
    """A transformer's blocks mark no convolution: ``extra_levels`` numbers them after the conv levels (the patch
    embedding is level 1), and ``gradient`` through attention, layer norms and GELU is ``tf.GradientTape``'s. A
    model without any convolution has levels only so; a wrong name is refused by name."""
    model = _tiny_transformer(rng, patch_conv=True)
    net = deconv.DeconvNet(model, method="gradient", extra_levels=("res0b", "res1b"))
    assert net.layer_names == {1: "patch_embed", 2: "res0b", 3: "res1b"} and net.levels == (1, 2, 3)
    assert net.n_features(3) == 8
    x = tf.constant(rng.uniform(0, 1, (2, 24, 16, 1)).astype(np.float32))
    probe = keras.Model(model.inputs, model.get_layer("res1b").output)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = probe(x, training=False)
    expected = tape.gradient(h, x, output_gradients=tf.stop_gradient(h * tf.one_hot(5, 8)))[..., 0].numpy()
    out = net(x, layer=3, features=[5]).numpy()[:, 0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * float(np.abs(expected).max()))
    np.testing.assert_array_equal(out, net(x, layer="res1b", features=[5]).numpy()[:, 0])
    for bad, message in ((("nowhere",), "has no layer of that name"), (("patch_embed",), "already is level 1")):
        with pytest.raises(ParameterError, match=message):
            deconv.DeconvNet(model, extra_levels=bad)
    no_conv = _tiny_transformer(rng, patch_conv=False)
    with pytest.raises(ModelError, match="--extra-levels"):
        deconv.DeconvNet(no_conv)
    assert deconv.DeconvNet(no_conv, extra_levels=("res1b",)).layer_names == {1: "res1b"}


def test_a_residual_block_is_one_level_heard_at_its_output(rng: np.random.Generator) -> None:
    """A ResNet's levels: each block's inner conv, then the block's output after the residual sum (its last conv
    and its shortcut's conv are one level there); a layer used twice ends a block."""
    x = keras.Input((16, 20, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
    for b in (1, 2):
        r = keras.layers.ReLU(name=f"b{b}_relu1")(keras.layers.BatchNormalization(name=f"b{b}_bn1")(
            keras.layers.Conv2D(6, 3, padding="same", name=f"b{b}_conv1")(h)))
        r = keras.layers.BatchNormalization(name=f"b{b}_bn2")(keras.layers.Conv2D(6, 3, padding="same",
                                                                                 name=f"b{b}_conv2")(r))
        shortcut = keras.layers.BatchNormalization(name="b1_short_bn")(
            keras.layers.Conv2D(6, 1, name="b1_short")(h)) if b == 1 else h  # then an identity shortcut
        h = keras.layers.ReLU(name=f"b{b}_out")(keras.layers.Add(name=f"b{b}_add")([r, shortcut]))
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    model = _randomise_weights(keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalMaxPooling2D()(h))), rng,
                               scale=0.5)
    net = deconv.DeconvNet(model)
    assert net.layer_names == {1: "stem", 2: "b1_relu1", 3: "b1_out", 4: "b2_relu1", 5: "pool"}
    maps = net(rng.uniform(0, 1, (1, 16, 20)).astype(np.float32), layer=3, features=[0, 5]).numpy()
    assert maps.shape == (1, 2, 16, 20) and np.abs(maps).max() > 0


def test_a_dropout_before_the_residual_sum_does_not_end_the_block(rng: np.random.Generator) -> None:
    """EfficientNet's blocks drop out before the sum: the block is still heard at its output (``add``)."""
    levels = {}
    for drop in (None, "Dropout", "SpatialDropout2D"):
        x = keras.Input((16, 16, 1))
        stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
        h = keras.layers.BatchNormalization(name="proj_bn")(keras.layers.Conv2D(4, 1, name="proj")(stem))
        if drop is not None:
            h = getattr(keras.layers, drop)(0.2, name="drop")(h)
            h = keras.layers.GaussianNoise(0.1, name="noise")(h)
        h = keras.layers.Add(name="add")([h, stem])
        model = _randomise_weights(keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))),
                                   rng, scale=0.5)
        levels[drop] = deconv.DeconvNet(model).layer_names
        assert np.abs(deconv.DeconvNet(model)(rng.uniform(0, 1, (1, 16, 16)).astype(np.float32), layer=2,
                                              features=[1]).numpy()).max() > 0
    assert levels == {drop: {1: "stem", 2: "add"} for drop in levels}


def _on_a_backbone(nested: bool) -> keras.Model:
    """A log-mel patch -> a 1x1 conv to 3 channels -> ``keras.applications.MobileNetV2`` (random weights, width
    0.35) -> 4 tags, with the backbone called as one layer (transfer learning's way) or built into the graph."""
    x = keras.Input((32, 48, 1))
    h = keras.layers.Conv2D(3, 1, name="to_rgb")(x)
    if nested:
        h = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 48, 3), alpha=0.35,
                                           name="backbone")(h)
    else:
        h = keras.applications.MobileNetV2(weights=None, include_top=False, input_tensor=h, alpha=0.35).output
    return keras.Model(x, keras.layers.Dense(4, name="tags")(keras.layers.GlobalAveragePooling2D()(h)))


def test_a_nested_backbone_is_walked_as_if_built_in(rng: np.random.Generator) -> None:
    """A pretrained image backbone on spectrograms, as many audio taggers are made: its layers (ReLU6, depthwise
    convolutions, residual adds, padding) are inlined, so the nested model deconvolves exactly as the same
    weights built into one graph, and its gradient is ``tf.GradientTape``'s."""
    nested, flat = _on_a_backbone(True), _randomise_weights(_on_a_backbone(False), rng, scale=0.3)
    weights = {w.path: w for w in flat.weights}
    for w in nested.weights:  # the backbone's weights are named "backbone/<layer>/<weight>" in the nested model
        w.assign(weights[w.path.removeprefix("backbone/")])
    x = rng.uniform(0, 1, (2, 32, 48)).astype(np.float32)
    seeds = ["block_3_project_BN", "block_6_expand_relu", "block_12_add", "out_relu"]
    for method in deconv.METHODS:
        ours, reference = deconv.DeconvNet(nested, method=method), deconv.DeconvNet(flat, method=method)
        assert ours.layer_names == reference.layer_names  # a level per Conv2D (depthwise ones are half blocks)
        assert len(ours.levels) == sum(isinstance(layer, keras.layers.Conv2D) for layer in flat.layers) == 36
        for seed in seeds:
            got, want = ours(x, layer=seed, features=[0, 7]).numpy(), reference(x, layer=seed, features=[0, 7]).numpy()
            assert np.abs(want).max() > 0
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=f"{method} {seed}")
    inputs = tf.constant(x[..., np.newaxis])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        top = keras.Model(flat.inputs, flat.get_layer("out_relu").output)(inputs, training=False)
    expected = tape.gradient(top, inputs, output_gradients=tf.stop_gradient(top * tf.one_hot(5, top.shape[-1])))
    got = deconv.deconvolve(nested, x, layer="backbone", features=[5], method="gradient").numpy()[:, 0]
    np.testing.assert_allclose(got, expected[..., 0].numpy(), rtol=0, atol=2e-5 * float(np.abs(expected).max()))
    with pytest.raises(ModelError, match="called more than once"):
        twice = keras.Sequential([keras.layers.Conv2D(2, 1)], name="twice")
        x2 = keras.Input((8, 8, 1))
        deconv.DeconvNet(keras.Model(x2, keras.layers.Add()([twice(x2), twice(x2)])))


def test_a_mixed_precision_model_is_walked_in_float32(rng: np.random.Generator) -> None:
    """A model trained with ``mixed_float16`` (as on GPUs) computes in float16 and keeps float32 weights: the
    walk takes its float16 values as float32 and goes back in float32. Its gradient is the model's own
    (``tf.GradientTape`` through the float16 model) to float16's precision."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x = keras.Input((16, 20, 1))
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
        h = keras.layers.BatchNormalization(name="bn1")(h)
        h = keras.layers.MaxPooling2D(2, name="pool1")(h)
        h = keras.layers.LayerNormalization(name="norm1")(h)  # walked by its gradient, in float16
        h = keras.layers.Conv2D(3, 3, padding="same", activation="elu", name="conv2")(h)
        model = keras.Model(x, keras.layers.Dense(2, dtype="float32")(keras.layers.GlobalMaxPooling2D()(h)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = _randomise_weights(model, rng, scale=0.5)
    inputs = tf.constant(rng.uniform(0, 1, (2, 16, 20, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        h = keras.Model(model.inputs, model.get_layer("conv2").output)(inputs, training=False)
    assert h.dtype == tf.float16
    expected = tape.gradient(h, inputs, output_gradients=tf.stop_gradient(h * tf.one_hot(1, 3, dtype=h.dtype)))
    for method in deconv.METHODS:
        out = deconv.deconvolve(model, inputs[..., 0], layer="conv2", features=[1], method=method)
        assert out.dtype == tf.float32 and np.isfinite(out.numpy()).all()
        if method == "gradient":
            np.testing.assert_allclose(out.numpy()[:, 0], expected[..., 0].numpy(), rtol=0,
                                       atol=1e-2 * float(np.abs(expected).max()))


def _randomise_batch_norms(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(-2, 2, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2, n)])
    return model


@pytest.mark.parametrize("name", ["choi", "choi_log", "samplecnn", "raw_frame", "mel_frame"])
def test_equals_the_explicit_walk_on_tfaurals_models_every_layer(rng: np.random.Generator, name: str) -> None:
    models = {
        "choi": lambda: (choi_cnn(n_outputs=3, n_filters=16), np.abs(rng.standard_normal((1, 257, 173)))),
        "choi_log": lambda: (choi_cnn(n_outputs=3, n_freq=129, n_frames=90, n_fft=256, input_scaling="log",
                                      n_filters=8), np.abs(rng.standard_normal((2, 129, 90)))),
        "samplecnn": lambda: (samplecnn_model(filter_sizes=(3, 3, 2, 3, 4), n_outputs=4, channels=(8, 16, 8, 8),
                                        front_filters=8, top_filters=8), rng.standard_normal((2, 216))),
        "raw_frame": lambda: (raw_frame_cnn(window=27, hop=9, n_samples=243, n_outputs=3, channels=(8, 8, 8),
                                            front_filters=8, top_filters=8), rng.standard_normal((1, 243))),
        "mel_frame": lambda: (mel_frame_cnn(window=81, hop=27, n_samples=729, n_outputs=3, channels=(8, 8, 8),
                                            n_mels=16, n_fft=128, top_filters=8), rng.standard_normal((1, 729))),
    }
    model, x = models[name]()
    _randomise_batch_norms(model, rng)
    x = x.astype(np.float32)
    general, explicit = deconv.DeconvNet(model), ExplicitWalk(model)
    assert general.levels == explicit.levels
    for layer in general.levels:
        ours, theirs = general(x, layer=layer).numpy(), explicit(x, layer=layer).numpy()
        assert ours.shape == theirs.shape
        peak = np.abs(theirs).max()
        assert peak > 0
        assert np.abs(ours - theirs).max() <= 1e-5 * peak, (layer, np.abs(ours - theirs).max() / peak)


def _with_layer(layer: keras.layers.Layer) -> keras.Model:
    x = keras.Input((16, 20, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    h = layer(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    return keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(h)))


class _Subclassed(keras.Model):
    """A model of the user's own class called as a layer: no graph of layers to walk."""

    def __init__(self) -> None:
        super().__init__(name="odd_nested")
        self.conv = keras.layers.Conv2D(4, 1)

    def call(self, x: Any) -> Any:
        return self.conv(x)


@pytest.mark.parametrize("layer,why", [
    (_Subclassed(), "nested model that is not functional"),
    (keras.layers.AveragePooling2D(1, data_format="channels_first", name="odd_first"), "channels_first"),
])
def test_an_unsupported_layer_is_a_model_error_naming_it(layer: keras.layers.Layer, why: str) -> None:
    model = _with_layer(layer)
    net = deconv.DeconvNet(model)
    x = np.ones((1, 16, 20), np.float32)
    with pytest.raises(ModelError, match=f"{layer.name}.*{why}|{why}.*{layer.name}"):
        net(x, layer="pool2")
    with pytest.raises(ModelError, match=layer.name):
        net.n_features(net.levels[-1])
    assert net(x, layer="conv1").shape == (1, 4, 16, 20)  # below the layer the walk has nothing to object to


def test_layer_and_input_layer_errors(rng: np.random.Generator) -> None:
    model = odd_model(rng)
    with pytest.raises(ParameterError, match="layer='nope' is invalid: the model has no layer of that name"):
        deconv.deconvolve(model, np.ones((1, 12, 22), np.float32), layer="nope")
    with pytest.raises(ParameterError, match=r"layer=9 is invalid for model 'odd': expected one of \[1, 2, 3, 4, 5\]"):
        deconv.deconvolve(model, np.ones((1, 12, 22), np.float32), layer=9)
    with pytest.raises(ModelError, match="does not depend on the input domain"):
        deconv.DeconvNet(model, input_layer="conv_b")(np.ones((1, 12, 22), np.float32), layer="relu_a")
    inner = deconv.DeconvNet(model, input_layer="pool1")  # the walk may end at any layer's output
    out = inner(np.ones((1, 12, 22), np.float32), layer="relu3", features=[0])
    assert out.shape == (1, 1, 6, 10, 4)  # [batch, k, *pool1's output]


def test_front_end_compression_is_the_domain_for_a_spectral_layout() -> None:
    model = choi_cnn(n_outputs=3, n_freq=33, n_frames=21, n_fft=64, hop_length=32, n_layers=2, n_filters=4,
                     fc_units=(4,), input_scaling="log")
    net = deconv.DeconvNet(model)
    assert net.input_layer == "input_scaling"
    x = np.abs(np.random.default_rng(1).standard_normal((1, 33, 21))).astype(np.float32)
    scaled = spectral.log_compress(x, model.tfaural_config.log_c).numpy()
    whole = net(x, layer=2).numpy()
    # The same walk with the compression left out of the model: its input is then the domain.
    inputs = keras.Input((33, None, 1))
    h = inputs
    for name in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2"):
        h = model.get_layer(name)(h)
    bare = keras.Model(inputs, h)
    np.testing.assert_allclose(whole, deconv.deconvolve(bare, scaled, layer="pool2").numpy(), rtol=1e-5, atol=1e-7)


def test_chunked_layers_under_tf_function_equal_one_pass() -> None:
    """Several layers, features in several chunks (in-graph loops) inside one tf.function: the switches a
    loop computes stay in it (each chunk walks with its own cache), and the maps equal one pass."""
    keras.utils.set_random_seed(4)
    model = musicnn_tagger(architecture="vgg", n_outputs=3, n_filters=8)
    net = deconv.DeconvNet(model)
    mel = tf.constant(np.random.default_rng(0).uniform(0, 1, (1, 96, 187, 1)).astype(np.float32))
    whole = net.deconvolve_layers(mel, layers=[2, 3], features=list(range(8)), chunk_elements=0)
    chunked = tf.function(lambda m: net.deconvolve_layers(m, layers=[2, 3], features=tf.range(8),
                                                          chunk_elements=96 * 187 * 8 * 3))(mel)
    for layer in (2, 3):
        reference = whole[layer].numpy()
        np.testing.assert_allclose(chunked[layer].numpy(), reference, atol=1e-5 * np.abs(reference).max())


def test_chunked_mel_auralisation_of_several_layers_under_tf_function() -> None:
    """The exports' path: MelAuraliser.layers with tensor features, features in chunks, in one tf.function."""
    from tfaural.auralise import MelAuraliser

    keras.utils.set_random_seed(5)
    model = musicnn_tagger(architecture="vgg", n_outputs=3, n_filters=8)
    t = np.arange(47616) / 16000.0
    waveform = tf.constant((0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)))[None]
                           .astype(np.float32))
    whole = MelAuraliser(model, chunk_elements=0).layers(waveform, layers=[4, 5], features=list(range(8)))
    chunked = tf.function(lambda y: {k: v.audio for k, v in MelAuraliser(model, chunk_elements=96 * 187 * 8 * 3).layers(
        y, layers=[4, 5], features=tf.range(8), keep_deconvolved=False).items()})(waveform)  # 3 per chunk
    for layer in (4, 5):
        np.testing.assert_allclose(chunked[layer].numpy(), whole[layer].audio.numpy(), atol=1e-4)


@pytest.mark.parametrize("method", ["deconvnet", "gradient"])
def test_a_walk_is_traced_once_and_passed_only_the_tensors_it_reads(method: str) -> None:
    """In graphs each layer's walk is one function, traced once for every graph that walks the layer (an
    export's deconvolve and auralise signatures), and a call passes it only the forward tensors its rules
    read -- the max-pool inputs (the unpooling needs their sizes) and, for the gradient, the ReLU outputs
    (musicnn's vgg applies ReLU before batch normalisation: different tensors) -- with empty stand-ins for
    the others, which the feature-chunk loop would otherwise keep alive."""
    keras.utils.set_random_seed(6)
    model = musicnn_tagger(architecture="vgg", n_outputs=3, n_filters=8)
    net = deconv.DeconvNet(model, method=method)
    mel = np.random.default_rng(1).uniform(0, 1, (1, 96, 64, 1)).astype(np.float32)
    spec = tf.TensorSpec([None, 96, None, 1], tf.float32)
    functions = [tf.function(lambda m: net(m, layer=3, features=tf.range(4), chunk_elements=96 * 64 * 8 * 2),
                             autograph=False) for _ in range(2)]
    graphs = [f.get_concrete_function(spec).graph for f in functions]
    assert len(net._walk_functions) == 1  # traced once
    ((name, _), (walk_function, read)), = net._walk_functions.items()
    for graph in graphs:
        assert walk_function.name.decode() in {f.signature.name for f in graph.as_graph_def().library.function}
    walk = net._walks[name]
    keys = sorted({t for step in walk.steps for t in (*step.inputs, step.output)})
    expected = {step.inputs[0] for step in walk.steps if isinstance(step.layer, keras.layers.MaxPooling2D)}
    if method == "gradient":
        expected |= {step.output for step in walk.steps if isinstance(step.layer, keras.layers.ReLU)}
    assert {key for key, used in zip(keys, read) if used} == expected
    assert 0 < len(expected) < len(keys)
    reference = net(mel, layer=3, features=list(range(4))).numpy()  # eager: the walk inline
    np.testing.assert_allclose(functions[1](tf.constant(mel)).numpy(), reference, atol=1e-5 * np.abs(reference).max())
