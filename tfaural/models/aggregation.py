"""Multi-level multi-scale feature aggregation and the transfer classifier (Lee et al. 2018, Sec. 4).

Trained SampleCNN-family models (any m^n, any input size) become feature
extractors (the aggregation model holds copies of their weights, so freezing or
fine-tuning it never changes the models passed in): for each, the "last three hidden layers" are the post-ReLU, pooled
outputs of its last two modules (``pool<N-1>``, ``pool<N>``) and the 1x1 conv
(``relu_1x1``). Each extractor is slid over the whole clip (~29 s) in
non-overlapping segments, every level is max- and mean-pooled over all time
steps of all segments, and the results are concatenated across levels and
models (:class:`~tfaural.models.layers.ClipFeatures`, vectorised in-graph: the
segments of all clips run as one batch, with no Python loop over audio).

Models built here, by layer name:

* :func:`multi_scale_features`: ``waveform`` ``[batch, samples]`` -> ``features``
  ``[batch, n_features]``.
* :func:`transfer_classifier`: ``features`` -> ``fc1``, ``fc1_dropout``, ``fc2``,
  ``fc2_dropout`` (Dense + ReLU, 4096 units each by default) -> ``output``.
* :func:`aggregation_model`: both chained (``waveform`` -> ``features`` -> ... -> ``output``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tfaural.config import AggregationConfig, ChoiConfig, Config, MusicnnConfig, SampleCNNConfig
from tfaural.errors import ModelError, ParameterError
from tfaural.models import musicnn
from tfaural.models.layers import ClipFeatures, TfauralModel, config_from_model
from tfaural.models.samplecnn import build_samplecnn

__all__ = [
    "feature_layer_names",
    "feature_extractor",
    "multi_scale_features",
    "transfer_classifier",
    "aggregation_model",
    "build_aggregation",
]


def feature_layer_names(config: Config) -> tuple[str, ...]:
    """The layers whose max- and mean-pooled maps are a model's transfer features, for every family.

    The one choice behind :func:`feature_extractor`, :func:`multi_scale_features` and the export's
    ``features`` signature:

    * SampleCNN family: its last three hidden layers, ``pool<N-1>``, ``pool<N>`` and ``relu_1x1``
      (Lee et al. 2018, Section 4.3);
    * Choi CNN: its last three pools, ``pool<N-2>`` .. ``pool<N>``;
    * imported musicnn taggers: :func:`tfaural.models.musicnn.feature_layer_names`.

    Raises:
        ModelError: For a model too shallow for three levels, or a config with no such layers.
    """
    if isinstance(config, SampleCNNConfig):
        n = config.n_modules
        if n < 2:
            raise ModelError(f"a model with {n} module(s) has no two last modules to take features from")
        return f"pool{n - 1}", f"pool{n}", "relu_1x1"
    if isinstance(config, ChoiConfig):
        n = config.n_layers
        return tuple(f"pool{i}" for i in range(max(1, n - 2), n + 1))
    if isinstance(config, MusicnnConfig):
        return musicnn.feature_layer_names(config)
    raise ModelError(f"a {config.kind!r} model has no transfer-feature layers")


def feature_extractor(model: keras.Model, *, name: str | None = None) -> keras.Model:
    """Sub-model of a trained SampleCNN-family model returning its last three hidden layers.

    The sub-model shares the trained model's layers (and weights).

    Args:
        model: A model built by :mod:`tfaural.models.samplecnn`.
        name: Name of the sub-model.

    Returns:
        A model ``[batch, input_length, 1]`` -> ``[[batch, t1, c1], [batch, t2, c2], [batch, 1, c3]]``.

    Raises:
        ModelError: If ``model`` is not a SampleCNN-family model or lacks a layer.
    """
    config = config_from_model(model)
    if not isinstance(config, SampleCNNConfig):
        raise ModelError(f"model {model.name!r} is a {config.kind!r} model; expected a SampleCNN-family model")
    outputs = []
    for layer_name in feature_layer_names(config):
        try:
            outputs.append(model.get_layer(layer_name).output)
        except ValueError:
            raise ModelError(f"model {model.name!r} has no layer {layer_name!r}") from None
    return keras.Model(model.inputs[0], outputs, name=name or f"{model.name}_features")


def multi_scale_features(
    models: Sequence[keras.Model], *, segment_hop: int | None = None, name: str | None = None
) -> TfauralModel:
    """Clip-level multi-level multi-scale features from trained SampleCNNs.

    Args:
        models: Trained SampleCNN-family models (different input sizes welcome).
        segment_hop: Hop between segments in samples (``None``: non-overlapping).
        name: Model name (default ``"multi_scale_features"``).

    Returns:
        A model ``waveform [batch, samples]`` -> ``features [batch, n_features]`` with
        ``n_features = 2 * sum(channels of the 3 levels of every model)``.
    """
    return _assemble(models, n_outputs=None, segment_hop=segment_hop, name=name or "multi_scale_features")


def aggregation_model(
    models: Sequence[keras.Model],
    *,
    n_outputs: int,
    hidden_units: tuple[int, ...] = (4096, 4096),
    dropout: float = 0.5,
    output_activation: str = "sigmoid",
    segment_hop: int | None = None,
    trainable_extractors: bool = False,
    name: str | None = None,
) -> TfauralModel:
    """Multi-scale features followed by the transfer classifier, end to end.

    Args:
        models: Trained SampleCNN-family models used as (frozen) feature extractors.
        n_outputs: Output units of the classifier.
        hidden_units: Widths of the fully connected layers (two of 4096 in the paper).
        dropout: Dropout after each fully connected layer.
        output_activation: ``"sigmoid"`` (tags), ``"softmax"`` (genres) or ``"linear"``.
        segment_hop: Hop between segments in samples (``None``: non-overlapping).
        trainable_extractors: Whether the extractors' weights are trainable
            (they always run with batch norm in inference mode).
        name: Model name (default ``"aggregation"``).

    Returns:
        A model ``waveform [batch, samples]`` -> ``output [batch, n_outputs]``.
    """
    return _assemble(
        models, n_outputs=n_outputs, hidden_units=tuple(hidden_units), dropout=dropout,
        output_activation=output_activation, segment_hop=segment_hop, trainable_extractors=trainable_extractors,
        name=name or "aggregation",
    )


def transfer_classifier(
    *,
    n_features: int,
    n_outputs: int,
    hidden_units: tuple[int, ...] = (4096, 4096),
    dropout: float = 0.5,
    output_activation: str = "sigmoid",
    name: str | None = None,
) -> keras.Model:
    """The classifier alone, for training on precomputed features.

    Its layers have the same names as in :func:`aggregation_model`, so trained
    weights can be copied layer by layer.

    Args:
        n_features: Length of the input feature vector.
        n_outputs: Output units.
        hidden_units: Widths of the fully connected layers.
        dropout: Dropout after each fully connected layer.
        output_activation: Output activation.
        name: Model name (default ``"transfer_classifier"``).

    Returns:
        A ``keras.Model`` ``features [batch, n_features]`` -> ``output [batch, n_outputs]``.
    """
    if not (isinstance(n_features, int) and n_features > 0):
        raise ParameterError(f"n_features={n_features!r} is invalid: expected a positive integer")
    config = AggregationConfig(  # validates the classifier arguments
        extractors=(SampleCNNConfig(),), n_outputs=n_outputs, hidden_units=tuple(hidden_units), dropout=dropout,
        output_activation=output_activation,
    )
    inputs = keras.Input(shape=(n_features,), name="features")
    return keras.Model(inputs, _classifier(inputs, config), name=name or "transfer_classifier")


def build_aggregation(config: AggregationConfig, *, name: str | None = None) -> TfauralModel:
    """Builds an aggregation model with freshly initialised extractors (e.g. to reload weights)."""
    models = [build_samplecnn(c, name=f"extractor{i}") for i, c in enumerate(config.extractors)]
    default = "aggregation" if config.n_outputs is not None else "multi_scale_features"
    return _assemble_from_config(models, config, name=name or default)


def _assemble(models: Sequence[keras.Model], *, name: str, **settings: Any) -> TfauralModel:
    if not models:
        raise ParameterError("models=[] is invalid: expected at least one trained SampleCNN-family model")
    configs = []
    for model in models:
        config = config_from_model(model)
        if not isinstance(config, SampleCNNConfig):
            raise ModelError(f"model {model.name!r} is a {config.kind!r} model; expected a SampleCNN-family model")
        configs.append(config)
    copies = [_copy(model, config, index) for index, (model, config) in enumerate(zip(models, configs, strict=True))]
    return _assemble_from_config(copies, AggregationConfig(extractors=tuple(configs), **settings), name=name)


def _copy(model: keras.Model, config: SampleCNNConfig, index: int) -> TfauralModel:
    """An independent copy (so freezing it never touches the caller's trained model)."""
    copy = build_samplecnn(config, name=f"extractor{index}")
    copy.set_weights(model.get_weights())
    return copy


def _assemble_from_config(models: Sequence[keras.Model], config: AggregationConfig, *, name: str) -> TfauralModel:
    extractors = [feature_extractor(m, name=f"extractor{i}_features") for i, m in enumerate(models)]
    inputs = keras.Input(shape=(None,), name="waveform", dtype="float32")
    clip_features = ClipFeatures(extractors, segment_hop=config.segment_hop, name="features")
    clip_features.trainable = config.trainable_extractors
    features = clip_features(inputs)
    outputs = features if config.n_outputs is None else _classifier(features, config)
    return TfauralModel(inputs, outputs, tfaural_config=config, name=name)


def _classifier(x: Any, config: AggregationConfig) -> Any:
    for index, units in enumerate(config.hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"fc{index}_dropout")(x)
    return keras.layers.Dense(int(config.n_outputs or 0), activation=config.output_activation, name="output")(x)
