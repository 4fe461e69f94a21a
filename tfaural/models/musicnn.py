"""The log-mel taggers published with musicnn (Pons & Serra 2019) as Keras 3 models.

musicnn's wheel ships four taggers trained on real music (MagnaTagATune and the
Million Song Dataset) as TF1 checkpoints of ``tf.compat.v1.layers`` graphs, which no
longer build on TensorFlow 2 with Keras 3. These builders make the same networks as
functional Keras models in tfaural's layout, so :mod:`tfaural.pretrained` can load
the published weights into them (transposing kernels where the layout differs).

Layout. musicnn feeds ``[batch, time, mel]`` patches; tfaural spectrograms are
``[batch, freq, frames]`` (see :mod:`tfaural.spectral`), so the input here is
``[batch, n_mels, n_frames, 1]`` *mel power* and every 2D kernel and pooling window
is the original one with its two spatial axes swapped. Convolutions with ``"same"``
padding pad time identically in both layouts, so the outputs are equal.

Both models start with ``mel`` (input) -> ``log_mel`` (:class:`InputScaling`,
``log10(1 + 10000 x)``: musicnn's compression, computed in float32) -> ``input_bn``.

``"vgg"`` layers, by name (``i`` = 1..5)::

    conv<i>      Conv2D 3x3, 128 maps, "same"     relu<i>   ReLU
    bn<i>        BatchNormalization               pool<i>   MaxPooling2D of ``config.pools``
    dropout<i>   Dropout 0.25 (i <= 4)
    flatten, dropout, logits (Dense), output (sigmoid)

With MTT_vgg's pools (pool1 4 frames x 1 band with stride 2 x 2, overlapping in time;
then 2x2, 2x2, 2x2, 4x4) and 96 x 187 inputs the maps after ``pool1 .. pool5`` are
48x92, 24x46, 12x23, 6x11 and 1x2 (freq x frames).

``"musicnn"`` layers::

    timbral1_pad/conv/relu/bn/pool/squeeze   38 bands x 7 frames, 204 maps, max over frequency
    timbral2_pad/conv/relu/bn/pool/squeeze   67 bands x 7 frames, 204 maps
    temporal1..3_conv/relu/bn/pool/squeeze   1 band x 128 / 64 / 32 frames ("same"), 51 maps each
    frontend      Concatenate -> [batch, frames, 561]
    midend1_pad/conv/relu/bn                 Conv1D 7 frames, 64 maps
    midend2_pad/conv/relu/bn, midend2_add    residual
    midend3_pad/conv/relu/bn, midend3_add    residual
    midend        Concatenate(frontend, midend1_bn, midend2_add, midend3_add) -> [batch, frames, 753]
    max_pool, mean_pool                      over time -> [batch, 753] each
    pooled        Concatenate(max_pool, mean_pool) -> [batch, 1506]
    pooled_bn, pooled_dropout, penultimate_dense (200, ReLU), penultimate (BatchNorm),
    penultimate_dropout, logits (Dense), output (sigmoid)

musicnn interleaves the max and mean pools (``[max_0, mean_0, max_1, ...]``) before
flattening; here they are concatenated block-wise and the importer permutes the
weights of ``pooled_bn`` and ``penultimate_dense`` to match.
"""

from __future__ import annotations

from typing import Any

import keras

from tfaural.config import MusicnnConfig
from tfaural.models.layers import ConvBlock, InputScaling, RowConv2D, TfauralModel

__all__ = [
    "INPUT_NAME",
    "musicnn_tagger",
    "build_musicnn",
    "with_row_convolutions",
    "vgg_block_names",
    "feature_layer_names",
]

INPUT_NAME = "mel"


def musicnn_tagger(*, architecture: str = "vgg", n_outputs: int = 50, name: str | None = None,
                   **overrides: Any) -> TfauralModel:
    """Builds a musicnn tagger (freshly initialised; :mod:`tfaural.pretrained` loads the published weights).

    Args:
        architecture: ``"vgg"`` or ``"musicnn"``.
        n_outputs: Output units (50 tags).
        name: Model name (default ``"musicnn_<architecture>"``).
        **overrides: Other :class:`~tfaural.config.MusicnnConfig` fields.

    Returns:
        A model mapping mel power ``[batch, n_mels, n_frames, 1]`` to tag scores ``[batch, n_outputs]``.
    """
    return build_musicnn(MusicnnConfig(architecture=architecture, n_outputs=n_outputs, **overrides), name=name)


def build_musicnn(config: MusicnnConfig, *, name: str | None = None,
                  row_convolutions: bool = True) -> TfauralModel:
    """Builds the network ``config`` describes (see the module docstring for layer names).

    Args:
        config: The architecture.
        name: Model name (default ``"musicnn_<architecture>"``).
        row_convolutions: Build the temporal filters as :class:`RowConv2D` (the default; ``False``: plain
            ``Conv2D``, as runs saved before 2026-12-03 hold them, which ``load_run`` reads this way).
    """
    inputs = keras.Input(shape=(config.n_mels, config.n_frames, 1), name=INPUT_NAME, dtype="float32")
    x = InputScaling(mode="log10", c=config.log_c, name="log_mel")(inputs)
    x = keras.layers.BatchNormalization(name="input_bn")(x)
    if config.architecture == "vgg":
        logits = _vgg_body(x, config)
    else:
        logits = _musicnn_body(x, config, row_conv=RowConv2D if row_convolutions else keras.layers.Conv2D)
    outputs = keras.layers.Activation(config.output_activation, name="output")(logits)
    return TfauralModel(inputs, outputs, tfaural_config=config, name=name or f"musicnn_{config.architecture}")


def with_row_convolutions(model: TfauralModel) -> TfauralModel:
    """The same musicnn model with its temporal filters as :class:`RowConv2D`, if it was saved with ``Conv2D``.

    Runs imported before 2026-12-03 hold the temporal filters as plain ``Conv2D`` layers: the same weights
    and outputs as :class:`RowConv2D`, at several times the cost. This rebuilds such a model with today's
    builder and copies every weight over (the layers, their names and weight shapes are the same); any
    other model is returned as it is. :func:`tfaural.training.run.load_run` calls it, so that an old run
    exports and auralises at today's speed without being imported again.

    Args:
        model: A model built by :func:`build_musicnn` (or any tfaural model: then returned unchanged).

    Returns:
        ``model`` itself, or a new :class:`~tfaural.models.layers.TfauralModel` with the same weights.
    """
    config = getattr(model, "tfaural_config", None)
    if not isinstance(config, MusicnnConfig) or not any(
            type(layer) is keras.layers.Conv2D and _is_row_kernel(layer) for layer in model.layers):
        return model
    rebuilt = build_musicnn(config, name=model.name)
    old = {layer.name: layer for layer in model.layers}
    if set(old) != {layer.name for layer in rebuilt.layers}:
        return model  # not the builder's layout (edited by hand): leave it alone
    for layer in rebuilt.layers:
        weights = old[layer.name].get_weights()
        if [w.shape for w in weights] != [tuple(v.shape) for v in layer.weights]:
            return model
        layer.set_weights(weights)
    return rebuilt


def _is_row_kernel(layer: Any) -> bool:
    shape = tuple(layer.kernel.shape)
    return len(shape) == 4 and shape[0] == 1 and shape[2] == 1


def _vgg_body(x: Any, config: MusicnnConfig) -> Any:
    for block, (f_size, t_size, f_stride, t_stride) in zip(vgg_block_names(), config.pools):
        x = keras.layers.Conv2D(config.n_filters, 3, padding="same", name=block.conv)(x)
        x = keras.layers.ReLU(name=block.relu)(x)
        x = keras.layers.BatchNormalization(name=block.batch_norm)(x)
        x = keras.layers.MaxPooling2D(
            (f_size, t_size), strides=(f_stride, t_stride), padding="valid", name=block.pool
        )(x)
        if block.dropout is not None:
            x = keras.layers.Dropout(0.25, name=block.dropout)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.layers.Dense(config.n_outputs, name="logits")(x)


def _branch(x: Any, name: str, *, filters: int, kernel: tuple[int, int], padding: str, pad_frames: int,
            row_conv: Any) -> Any:
    """Conv -> ReLU -> BatchNorm -> max over the whole frequency axis -> ``[batch, frames, filters]``."""
    if pad_frames:
        x = keras.layers.ZeroPadding2D(((0, 0), (pad_frames, pad_frames)), name=f"{name}_pad")(x)
    conv = row_conv if kernel[0] == 1 else keras.layers.Conv2D  # the temporal filters: see RowConv2D
    x = conv(filters, kernel, padding=padding, name=f"{name}_conv")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.MaxPooling2D((int(x.shape[1]), 1), strides=(int(x.shape[1]), 1), name=f"{name}_pool")(x)
    return keras.layers.Reshape((-1, filters), name=f"{name}_squeeze")(x)


def _musicnn_body(x: Any, config: MusicnnConfig, *, row_conv: Any) -> Any:
    timbral = int(config.frontend_scale * 128)
    temporal = int(config.frontend_scale * 32)
    branches = [
        _branch(x, "timbral1", filters=timbral, kernel=(int(0.4 * config.n_mels), 7), padding="valid", pad_frames=3,
                row_conv=row_conv),
        _branch(x, "timbral2", filters=timbral, kernel=(int(0.7 * config.n_mels), 7), padding="valid", pad_frames=3,
                row_conv=row_conv),
    ]
    for index, frames in enumerate((128, 64, 32), start=1):
        branches.append(
            _branch(x, f"temporal{index}", filters=temporal, kernel=(1, frames), padding="same", pad_frames=0,
                    row_conv=row_conv)
        )
    frontend = keras.layers.Concatenate(axis=-1, name="frontend")(branches)
    levels = [frontend]
    y = frontend
    for index in (1, 2, 3):
        z = keras.layers.ZeroPadding1D(3, name=f"midend{index}_pad")(y)
        z = keras.layers.Conv1D(config.midend_filters, 7, padding="valid", name=f"midend{index}_conv")(z)
        z = keras.layers.ReLU(name=f"midend{index}_relu")(z)
        z = keras.layers.BatchNormalization(name=f"midend{index}_bn")(z)
        y = z if index == 1 else keras.layers.Add(name=f"midend{index}_add")([z, y])
        levels.append(y)
    midend = keras.layers.Concatenate(axis=-1, name="midend")(levels)
    pooled = keras.layers.Concatenate(axis=-1, name="pooled")([
        keras.layers.GlobalMaxPooling1D(name="max_pool")(midend),
        keras.layers.GlobalAveragePooling1D(name="mean_pool")(midend),
    ])
    x = keras.layers.BatchNormalization(name="pooled_bn")(pooled)
    x = keras.layers.Dropout(0.5, name="pooled_dropout")(x)
    x = keras.layers.Dense(config.backend_units, activation="relu", name="penultimate_dense")(x)
    x = keras.layers.BatchNormalization(name="penultimate")(x)
    x = keras.layers.Dropout(0.5, name="penultimate_dropout")(x)
    return keras.layers.Dense(config.n_outputs, name="logits")(x)


def vgg_block_names() -> tuple[ConvBlock, ...]:
    """Layer names of the vgg model's five conv blocks (conv -> ReLU -> BatchNorm -> pool)."""
    return tuple(
        ConvBlock(level=i, conv=f"conv{i}", relu=f"relu{i}", batch_norm=f"bn{i}", pool=f"pool{i}",
                  dropout=f"dropout{i}" if i <= 4 else None)
        for i in range(1, 6)
    )


def feature_layer_names(config: MusicnnConfig) -> tuple[str, ...]:
    """Layers whose max/mean-pooled maps are the transfer features of an export.

    vgg: the last three pools, as for tfaural's other models. musicnn: the embeddings its
    own extractor names: the mid-end (``midend``: pooled over time, these are musicnn's
    ``max_pool`` and ``mean_pool``) and the 200-d ``penultimate`` layer.
    """
    if config.architecture == "vgg":
        return ("pool3", "pool4", "pool5")
    return ("midend", "penultimate")
