"""The ``attribute`` signature: each feature's contribution to a clip's best tags, checked by finite differences.

The contribution of feature ``c`` of layer ``L`` to a tag's score is ``sum(A_c * dS/dA_c)``, the derivative of
the score when that feature map is scaled, ``d S(alpha * A_c) / d alpha`` at ``alpha = 1``. For the Choi CNN the
map of ``pool<L>`` (conv -> ReLU -> max-pool) scales with the conv's kernel and bias of channel ``c`` (ReLU and
max-pooling are positively homogeneous), so a central difference of the ``serving_default`` scores with that
channel's weights scaled by ``1 +- eps`` is an independent reference, computed without any gradient.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from export.module import ServingModule
from tfaural.config import AudioConfig, SegmentConfig
from tfaural.models import choi_cnn, config_from_model
from tfaural.training.run import RunInfo

RATE = 11025
SEGMENT = 44100
LABELS = tuple(f"tag{i}" for i in range(6))


@pytest.fixture(scope="module")
def module() -> ServingModule:
    keras.utils.set_random_seed(3)
    model = choi_cnn(n_outputs=len(LABELS), n_filters=8, fc_units=(16,), output_activation="sigmoid")
    info = RunInfo(model=config_from_model(model), labels=LABELS, task="multi-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=SEGMENT))
    return ServingModule(model, info)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) * rng.uniform(0.1, 0.3) for f in rng.uniform(100, 3000, 6))
    return (tones + 0.05 * rng.standard_normal(t.size)).astype(np.float32)[np.newaxis]


@pytest.mark.parametrize("layer", [2, 5])
def test_contributions_equal_finite_differences_of_the_scores(module: ServingModule, layer: int) -> None:
    waveform = _clip(8.0, seed=layer)  # two segments: the contributions are averaged like the scores
    out = module.call("attribute", {"waveform": waveform, "layer": np.int32(layer), "top_tags": np.int32(3)})
    scores = module.call("serving_default", {"waveform": waveform})["scores"][0]
    np.testing.assert_allclose(out["scores"][0], scores, rtol=1e-5, atol=1e-7)
    tags = out["tags"][0]
    assert list(tags) == list(np.argsort(-scores)[:3])
    assert [v.decode() for v in out["labels"][0]] == [LABELS[i] for i in tags]
    contributions = out["contributions"][0]  # [3, 8]
    assert contributions.shape == (3, 8) and np.all(np.isfinite(contributions))

    conv = module.model.get_layer(f"conv{layer}")
    kernel, bias = (v.numpy() for v in conv.weights)
    eps = 1e-3
    reference = np.zeros((3, 8))
    for channel in range(8):
        shifted = []
        for alpha in (1 + eps, 1 - eps):
            k, b = kernel.copy(), bias.copy()
            k[..., channel] *= alpha
            b[channel] *= alpha
            conv.set_weights([k, b])
            shifted.append(module.call("serving_default", {"waveform": waveform})["scores"][0].astype(np.float64))
        conv.set_weights([kernel, bias])
        reference[:, channel] = ((shifted[0] - shifted[1]) / (2 * eps))[tags]
    scale = np.abs(reference).max(axis=1, keepdims=True)
    assert np.all(scale > 0)
    np.testing.assert_allclose(contributions / scale, reference / scale, atol=2e-2)


def test_attribute_checks_its_inputs(module: ServingModule) -> None:
    waveform = _clip(4.0, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="top_tags must be in"):
        module.call("attribute", {"waveform": waveform, "layer": np.int32(1), "top_tags": np.int32(0)})
    with pytest.raises(tf.errors.InvalidArgumentError, match="layer must be one of"):
        module.call("attribute", {"waveform": waveform, "layer": np.int32(9), "top_tags": np.int32(1)})
