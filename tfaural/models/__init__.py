"""Keras 3 model builders: the Choi et al. (2015) STFT CNN and the SampleCNN family.

Every builder returns a :class:`~tfaural.models.layers.TfauralModel`: a functional
``keras.Model`` with stable layer names (documented in :mod:`tfaural.models.choi`,
:mod:`tfaural.models.samplecnn` and :mod:`tfaural.models.aggregation`) that carries
the frozen config which fully determines it, also after ``to_json`` or a ``.keras``
save and reload. Builders are named for what they build (``choi_cnn``, ``samplecnn_model``,
``musicnn_tagger``); the modules for the family (``choi``, ``samplecnn``, ``musicnn``).

Example:
    >>> model = samplecnn_preset(2000, n_outputs=10)
    >>> config_from_model(model).input_length
    5184
    >>> build(config_from_model(model)).count_params() == model.count_params()
    True
"""

from __future__ import annotations

import keras

from tfaural.config import AggregationConfig, ChoiConfig, Config, MusicnnConfig, SampleCNNConfig
from tfaural.errors import ModelError
from tfaural.models import choi, musicnn, samplecnn
from tfaural.models.aggregation import (
    aggregation_model,
    build_aggregation,
    feature_extractor,
    feature_layer_names,
    multi_scale_features,
    transfer_classifier,
)
from tfaural.models.choi import build_choi, choi_cnn, paper_effective_sizes, receptive_fields
from tfaural.models.layers import ConvBlock, TfauralModel, config_from_model
from tfaural.models.musicnn import build_musicnn, musicnn_tagger
from tfaural.models.samplecnn import (
    PRESET_INPUT_SIZES,
    SAMPLECNN_PRESETS,
    TABLE2_FRAME_SETTINGS,
    adapt_standardise,
    build_samplecnn,
    count_macs,
    mel_frame_cnn,
    mn_filter_sizes,
    preset_filter_sizes,
    raw_frame_cnn,
    samplecnn_model,
    samplecnn_preset,
)

__all__ = [
    "build",
    "config_from_model",
    "conv_blocks",
    "ConvBlock",
    "TfauralModel",
    "choi_cnn",
    "build_choi",
    "musicnn_tagger",
    "build_musicnn",
    "receptive_fields",
    "paper_effective_sizes",
    "samplecnn_model",
    "samplecnn_preset",
    "preset_filter_sizes",
    "mn_filter_sizes",
    "mel_frame_cnn",
    "raw_frame_cnn",
    "build_samplecnn",
    "adapt_standardise",
    "count_macs",
    "SAMPLECNN_PRESETS",
    "PRESET_INPUT_SIZES",
    "TABLE2_FRAME_SETTINGS",
    "aggregation_model",
    "build_aggregation",
    "feature_extractor",
    "feature_layer_names",
    "multi_scale_features",
    "transfer_classifier",
]


def build(config: Config, *, name: str | None = None) -> TfauralModel:
    """Builds the model a config describes (freshly initialised weights).

    Args:
        config: A :class:`ChoiConfig`, :class:`SampleCNNConfig` or :class:`AggregationConfig`.
        name: Model name (default: the builder's default).

    Raises:
        ModelError: If ``config`` is not a model config.
    """
    if isinstance(config, ChoiConfig):
        return build_choi(config, name=name)
    if isinstance(config, SampleCNNConfig):
        return build_samplecnn(config, name=name)
    if isinstance(config, AggregationConfig):
        return build_aggregation(config, name=name)
    if isinstance(config, MusicnnConfig):
        return build_musicnn(config, name=name)
    raise ModelError(
        f"cannot build a model from {type(config).__name__}; expected a Choi, SampleCNN, musicnn or Aggregation config"
    )


def conv_blocks(model: keras.Model) -> tuple[ConvBlock, ...]:
    """Layer names of every conv block of a Choi or SampleCNN-family model, bottom to top.

    Raises:
        ModelError: If the model has no conv blocks or one of the names is missing.
    """
    config = config_from_model(model)
    if isinstance(config, ChoiConfig):
        blocks = choi.block_names(config.n_layers)
    elif isinstance(config, SampleCNNConfig):
        blocks = samplecnn.block_names(config)
    elif isinstance(config, MusicnnConfig) and config.architecture == "vgg":
        blocks = musicnn.vgg_block_names()
    else:
        raise ModelError(f"model {model.name!r} ({config.kind}) has no conv blocks")
    present = {layer.name for layer in model.layers}
    missing = [n for block in blocks for n in block.names if n not in present]
    if missing:
        raise ModelError(f"model {model.name!r} lacks the layers {missing}")
    return blocks
