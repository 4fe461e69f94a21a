"""Tests of multi-level multi-scale aggregation and the transfer classifier (Lee et al. 2018, Sec. 4)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfaural.config import AggregationConfig
from tfaural.errors import ModelError, ParameterError
from tfaural.models import (
    aggregation_model,
    choi_cnn,
    config_from_model,
    feature_extractor,
    feature_layer_names,
    mn_filter_sizes,
    multi_scale_features,
    samplecnn_preset,
    transfer_classifier,
)
from tfaural.models.samplecnn import samplecnn_model


def _randomise_bn(model: keras.Model, seed: int) -> None:
    """Non-trivial batch-norm statistics, so that inference-mode BN matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape),
            ])


@pytest.fixture(scope="module")
def models() -> list[keras.Model]:
    """Two tiny SampleCNNs with different input sizes: 2^7 (256 samples) and 3^4 (243 samples)."""
    keras.utils.set_random_seed(3)
    small = [
        samplecnn_model(filter_sizes=mn_filter_sizes(2, 7), channels=(8, 8, 8, 8, 16, 16, 16), top_filters=16,
                        name="m2"),
        samplecnn_model(filter_sizes=mn_filter_sizes(3, 4), channels=(8, 8, 16, 16), top_filters=32, name="m3"),
    ]
    for i, model in enumerate(small):
        _randomise_bn(model, i)
    return small



def _reference_features(models: list[keras.Model], clip: np.ndarray, hop: int | None = None) -> np.ndarray:
    """Per-clip loop reference: segment with NumPy, run each segment alone, pool with NumPy."""
    out = []
    for model in models:
        extractor = feature_extractor(model)
        length = model.inputs[0].shape[1]
        step = hop or length
        padded = np.pad(clip, (0, max(0, length - clip.size)))
        starts = range(0, padded.size - length + 1, step)
        maps = [[m.numpy()[0] for m in extractor(padded[s : s + length][None, :, None])] for s in starts]
        for level in range(3):
            stacked = np.concatenate([segment[level] for segment in maps], axis=0)  # [segments * time, channels]
            out += [stacked.max(axis=0), stacked.mean(axis=0)]
    return np.concatenate(out)


def test_feature_layer_names_are_last_three_hidden_layers() -> None:
    assert feature_layer_names(config_from_model(samplecnn_model())) == ("pool8", "pool9", "relu_1x1")
    assert feature_layer_names(config_from_model(samplecnn_preset(2000))) == ("pool8", "pool9", "relu_1x1")
    # the same choice for the other families (the export's features signature takes it from here)
    assert feature_layer_names(config_from_model(choi_cnn(n_outputs=3))) == ("pool3", "pool4", "pool5")
    shallow = choi_cnn(n_outputs=3, n_freq=33, n_frames=32, n_fft=64, hop_length=32, n_layers=2, n_filters=4)
    assert feature_layer_names(config_from_model(shallow)) == ("pool1", "pool2")
    with pytest.raises(ModelError, match="has no transfer-feature layers"):
        feature_layer_names(AggregationConfig(extractors=(config_from_model(samplecnn_model()),)))


def test_extractor_outputs(models: list[keras.Model]) -> None:
    shapes = [tuple(o.shape) for o in feature_extractor(models[0]).outputs]
    assert shapes == [(None, 2, 16), (None, 1, 16), (None, 1, 16)]
    shapes = [tuple(o.shape) for o in feature_extractor(models[1]).outputs]
    assert shapes == [(None, 3, 16), (None, 1, 16), (None, 1, 32)]


@pytest.mark.parametrize("hop", [None, 100])
def test_features_match_per_segment_reference(
    models: list[keras.Model], rng: np.random.Generator, hop: int | None
) -> None:
    features = multi_scale_features(models, segment_hop=hop)
    assert tuple(features.outputs[0].shape) == (None, 2 * (16 + 16 + 16) + 2 * (16 + 16 + 32))
    clips = rng.uniform(-1, 1, (2, 1300)).astype(np.float32)  # 5 + partial segments of 256, 5 of 243
    ours = features(clips).numpy()
    for clip, row in zip(clips, ours, strict=True):
        np.testing.assert_allclose(row, _reference_features(models, clip, hop), rtol=1e-5, atol=1e-5)


def test_short_clip_is_zero_padded_not_nan(models: list[keras.Model], rng: np.random.Generator) -> None:
    features = multi_scale_features(models)
    clip = rng.uniform(-1, 1, (1, 100)).astype(np.float32)
    ours = features(clip).numpy()
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours[0], _reference_features(models, clip[0]), rtol=1e-5, atol=1e-5)


def test_classifier_layers_and_defaults() -> None:
    classifier = transfer_classifier(n_features=96, n_outputs=10)
    assert [layer.name for layer in classifier.layers] == [
        "features", "fc1", "fc1_dropout", "fc2", "fc2_dropout", "output",
    ]
    assert classifier.get_layer("fc1").units == classifier.get_layer("fc2").units == 4096
    assert classifier.get_layer("fc1_dropout").rate == 0.5
    assert classifier.get_layer("output").get_config()["activation"] == "sigmoid"


def test_aggregation_model_end_to_end(models: list[keras.Model], rng: np.random.Generator) -> None:
    model = aggregation_model(models, n_outputs=5, hidden_units=(32, 16), output_activation="softmax", name="agg")
    assert model.name == "agg"
    assert [layer.name for layer in model.layers] == [
        "waveform", "features", "fc1", "fc1_dropout", "fc2", "fc2_dropout", "output",
    ]
    y = model(rng.uniform(-1, 1, (3, 1000)).astype(np.float32)).numpy()
    assert y.shape == (3, 5)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # Only the classifier trains by default; the models passed in are left untouched.
    assert len(model.trainable_weights) == 6
    assert all(m.trainable and all(layer.trainable for layer in m.layers) for m in models)
    trainable = aggregation_model(models, n_outputs=5, hidden_units=(8,), trainable_extractors=True)
    assert len(trainable.trainable_weights) > 4


def test_copies_hold_the_trained_weights(models: list[keras.Model], rng: np.random.Generator) -> None:
    features = multi_scale_features(models)
    clip = rng.uniform(-1, 1, (1, 600)).astype(np.float32)
    before = features(clip).numpy()
    kernel = models[0].get_layer("conv1").kernel
    original = kernel.numpy()
    kernel.assign(original * 2.0)  # later changes to the caller's model do not leak in
    try:
        np.testing.assert_array_equal(features(clip).numpy(), before)
    finally:
        kernel.assign(original)


def test_save_reload_and_json_identical(models: list[keras.Model], tmp_path: object, rng: np.random.Generator) -> None:
    model = aggregation_model(models, n_outputs=4, hidden_units=(16, 8))
    clips = rng.uniform(-1, 1, (2, 900)).astype(np.float32)
    expected = model(clips).numpy()
    path = f"{tmp_path}/agg.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded(clips).numpy(), expected)
    config = config_from_model(reloaded)
    assert isinstance(config, AggregationConfig) and config == config_from_model(model)
    assert [c.filter_sizes for c in config.extractors] == [(2,) * 8, (3,) * 5]
    assert not reloaded.get_layer("features").trainable
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(clips).numpy(), expected)


def test_exported_graph_has_no_python_and_reloads(
    models: list[keras.Model], tmp_path: object, rng: np.random.Generator
) -> None:
    model = multi_scale_features(models)
    module = tf.Module()
    module.model = model
    module.features = tf.function(
        lambda waveform: model(waveform, training=False), input_signature=[tf.TensorSpec([None, None], tf.float32)]
    )
    graph = module.features.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    for func in graph.as_graph_def().library.function:
        op_types |= {node.op for node in func.node_def}
    assert not op_types & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    path = f"{tmp_path}/saved"
    tf.saved_model.save(module, path)
    loaded = tf.saved_model.load(path)
    for length in (50, 1000):  # unknown length, shorter and longer than a segment
        clips = rng.uniform(-1, 1, (2, length)).astype(np.float32)
        np.testing.assert_allclose(loaded.features(clips).numpy(), model(clips).numpy(), rtol=1e-5, atol=1e-6)


def test_wrong_arguments_raise(models: list[keras.Model]) -> None:
    with pytest.raises(ModelError, match="SampleCNN"):
        multi_scale_features([choi_cnn(n_outputs=2, n_freq=65, n_fft=128, n_frames=40)])
    with pytest.raises(ParameterError):
        multi_scale_features([])
    with pytest.raises(ParameterError, match="hidden_units"):
        aggregation_model(models, n_outputs=3, hidden_units=(0,))
    with pytest.raises(ModelError):
        feature_extractor(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]))


def test_clip_features_layer_config_round_trip(models: list[keras.Model]) -> None:
    layer = multi_scale_features(models, segment_hop=128).get_layer("features")
    clone = type(layer).from_config(layer.get_config())
    assert clone.segment_hop == 128 and clone.segment_lengths == (256, 243)
    assert clone.n_features == layer.n_features == 2 * (16 + 16 + 16) + 2 * (16 + 16 + 32)


def test_pool_segment_maps_matches_numpy_and_leaves_padding_out() -> None:
    from tfaural.models.layers import pool_segment_maps

    rng = np.random.default_rng(4)
    maps = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    maps[1, 2:] = 1e6  # padding of clip 1: must not reach its max or mean
    valid = np.array([[True] * 4, [True, True, False, False], [True, False, False, False]])
    maximum, mean = pool_segment_maps(tf.constant(maps), tf.constant(valid))
    for clip in range(3):
        real = maps[clip, valid[clip]].reshape(-1, 6)
        np.testing.assert_allclose(maximum[clip], real.max(axis=0), rtol=0, atol=0)
        np.testing.assert_allclose(mean[clip], real.mean(axis=0), rtol=1e-6, atol=1e-6)
    everything, average = pool_segment_maps(tf.constant(maps))
    np.testing.assert_allclose(everything, maps.reshape(3, -1, 6).max(axis=1), rtol=0, atol=0)
    np.testing.assert_allclose(average, maps.reshape(3, -1, 6).mean(axis=1), rtol=1e-6, atol=1e-6 * 1e6)
