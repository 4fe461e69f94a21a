"""tfaural.visualise: gradient ascent, sorted filter spectra and the figures."""

from __future__ import annotations

import pathlib

import matplotlib.image
import numpy as np
import pytest

from tfaural import visualise
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn
from tfaural.models.samplecnn import samplecnn_model


def _model() -> object:
    return samplecnn_model(filter_sizes=(3,) * 7, n_outputs=4, channels=(16,) * 6, front_filters=16, top_filters=16,
                     sample_rate=8000)


@pytest.mark.parametrize("layer", [0, 2])
def test_gradient_ascent_increases_the_target_activation(layer: int) -> None:
    est = visualise.gradient_ascent_filters(_model(), layer=layer, steps=30)
    assert est.waveforms.shape == (16, 729)
    alive = est.activation_after > 0
    assert alive.sum() >= 8  # most random filters respond
    assert np.all(est.activation_after[alive] > est.activation_before[alive])
    assert est.activation_after.mean() > 2 * est.activation_before.mean()
    np.testing.assert_allclose(np.sqrt((est.waveforms**2).mean(axis=1)), 1.0, rtol=1e-4)


def test_gradient_ascent_rejects_spectrogram_models_and_bad_layers() -> None:
    with pytest.raises(ModelError, match="raw-waveform"):
        visualise.gradient_ascent_filters(choi_cnn(n_outputs=2), layer=1)
    with pytest.raises(ParameterError, match="layer=42"):
        visualise.gradient_ascent_filters(_model(), layer=42)


def test_layers_beyond_the_estimate_length_are_a_clear_error() -> None:
    # 729 samples: conv0 /3 -> 243, modules /3 /3 /3 /3 -> 3 at layer 5, whose pooling window of 4 does not fit.
    model = samplecnn_model(filter_sizes=(3, 3, 3, 3, 3, 4, 2), n_outputs=2, channels=(8,) * 6, front_filters=8,
                      top_filters=8, sample_rate=8000)
    assert visualise.gradient_ascent_filters(model, layer=5, steps=2).waveforms.shape == (8, 729)
    with pytest.raises(ParameterError, match="too short to reach layer 6"):
        visualise.gradient_ascent_filters(model, layer=6, steps=2)


def test_filter_spectra_sorted_by_peak_frequency() -> None:
    sr = 8000
    t = np.arange(729) / sr
    freqs = [2000.0, 500.0, 3500.0, 1000.0]
    waves = np.stack([np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)
    spectra, bins, order = visualise.filter_spectra(waves, sample_rate=sr)
    assert list(order) == [1, 3, 0, 2]
    peaks = bins[np.argmax(spectra, axis=1)]
    np.testing.assert_allclose(peaks, sorted(freqs), atol=sr / 729)
    np.testing.assert_allclose(spectra.max(axis=1), 1.0)


def test_figures_are_written(tmp_path: pathlib.Path, rng: np.random.Generator) -> None:
    originals = np.abs(rng.standard_normal((2, 33, 40)))
    deconvolved = rng.standard_normal((2, 3, 33, 40))
    grid = visualise.plot_deconvolution_grid(
        originals, deconvolved, tmp_path / "grid.png", track_names=["a", "b"],
        feature_names=["Feature 1-0", "Feature 1-1", "Feature 1-2"], sample_rate=2048, hop_length=32,
    )
    weights = visualise.plot_first_layer_weights(choi_cnn(n_outputs=2), tmp_path / "w.png", features=[9, 27])
    spectra = visualise.filter_spectra(rng.standard_normal((8, 729)), sample_rate=8000)
    layers = visualise.plot_filter_spectra({1: spectra[:2], 2: spectra[:2]}, tmp_path / "spectra.png")
    for path in (grid, weights, layers):
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(ParameterError):
        visualise.plot_deconvolution_grid(originals, deconvolved, tmp_path / "x.png", track_names=["a"],
                                          feature_names=["f"] * 3, sample_rate=2048, hop_length=32)
