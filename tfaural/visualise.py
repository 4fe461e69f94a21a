"""Looking at learnt features: gradient-ascent filter estimates and the papers' figures.

* :func:`gradient_ascent_filters` — Lee et al. (2018) §7.1: start from low-amplitude
  noise of 729 samples and repeatedly add the RMS-normalised gradient of a filter's
  mean activation; every filter of a layer is estimated in one batched run (filters
  are the batch axis).
* :func:`filter_spectra` — magnitude spectra of the estimates, sorted by the
  frequency of their peak (the paper's Figure 3).
* Figures (matplotlib, PNG): :func:`plot_deconvolution_grid` (Choi et al. 2015,
  Figures 3 and 5–8: original and deconvolved spectrograms, features × tracks),
  :func:`plot_first_layer_weights` (Figure 4: learnt 3×3 kernels of layer 1) and
  :func:`plot_filter_spectra` (SampleCNN Figures 3–4).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfaural.cli import HelpFormatter, add_selection_flags, add_verbose_flag, choose_features
from tfaural.config import ChoiConfig, KerasConfig, MusicnnConfig, SampleCNNConfig
from tfaural.errors import ModelError, ParameterError
from tfaural.models import config_from_model, conv_blocks

__all__ = [
    "FilterEstimates",
    "activation_model_layers",
    "layer_activation",
    "gradient_ascent_filters",
    "filter_spectra",
    "plot_deconvolution_grid",
    "plot_first_layer_weights",
    "plot_filter_spectra",
]


@dataclasses.dataclass(frozen=True)
class FilterEstimates:
    """Gradient-ascent estimates of every filter of one layer.

    Attributes:
        layer: Block level of the filters.
        waveforms: float32 ``[n_filters, samples]``, each RMS-normalised to 1.
        activation_before: float32 ``[n_filters]`` mean activation on the initial noise.
        activation_after: float32 ``[n_filters]`` mean activation on the estimate.
        sample_rate: Sample rate in Hz.
    """

    layer: int
    waveforms: np.ndarray
    activation_before: np.ndarray
    activation_after: np.ndarray
    sample_rate: int


def activation_model_layers(model: keras.Model, layer: int) -> list[keras.layers.Layer]:
    """The layers from the model input up to block ``layer``'s ReLU, in order.

    Raises:
        ParameterError: If ``layer`` is not a conv block level of the model.
    """
    blocks = conv_blocks(model)
    levels = [b.level for b in blocks]
    if layer not in levels:
        raise ParameterError(f"layer={layer!r} is invalid for model {model.name!r}: expected one of {levels}")
    names = [lay.name for lay in model.layers]
    target = next(b for b in blocks if b.level == layer).relu
    skip = {b.dropout for b in blocks} | {"dropout"}
    return [model.get_layer(n) for n in names[1 : names.index(target) + 1] if n not in skip]


def layer_activation(layers: Sequence[keras.layers.Layer], x: tf.Tensor) -> tf.Tensor:
    """Applies ``layers`` in inference mode: ``[batch, samples, 1]`` → ``[batch, time, channels]``."""
    for lay in layers:
        x = lay(x, training=False)
    return x


def gradient_ascent_filters(
    model: keras.Model,
    *,
    layer: int,
    n_samples: int = 729,
    steps: int = 100,
    step_size: float = 0.05,
    noise_amplitude: float = 0.01,
    filters: Sequence[int] | None = None,
    seed: int = 0,
) -> FilterEstimates:
    """Estimates what every filter of a SampleCNN layer responds to, by gradient ascent.

    Args:
        model: A waveform model of the SampleCNN family (``samplecnn`` or ``raw-frame``).
        layer: Block level whose filters are estimated.
        n_samples: Length of the estimate in samples (729 in the paper: one frame).
        steps: Gradient-ascent iterations.
        step_size: Update size relative to the initial noise: each step adds
            ``step_size * noise_amplitude * g / rms(g)`` (``g``: gradient of the mean activation).
        noise_amplitude: Standard deviation of the initial Gaussian noise.
        filters: Filter indices (``None``: all filters of the layer).
        seed: Seed of the initial noise.

    Returns:
        :class:`FilterEstimates`.

    Raises:
        ModelError: For spectrogram models (use deconvolution for those).
    """
    config = config_from_model(model)
    if isinstance(config, ChoiConfig) or getattr(config, "family", None) == "mel-frame":
        raise ModelError("gradient-ascent filter estimates need a raw-waveform model (samplecnn or raw-frame)")
    layers = activation_model_layers(model, layer)
    try:
        probe = layer_activation(layers, tf.zeros([1, n_samples, 1]))
    except tf.errors.OpError:  # a pooling window longer than what is left (oneDNN refuses, not 0 length)
        probe = tf.zeros([1, 0, 1])
    n_maps = int(probe.shape[-1])
    if probe.shape[1] == 0:
        raise ParameterError(f"n_samples={n_samples} is too short to reach layer {layer}; use a longer estimate")
    chosen = np.arange(n_maps) if filters is None else np.asarray(filters, dtype=np.int32)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_maps:
        raise ParameterError(f"filters={filters!r} out of range: layer {layer} has {n_maps} filters")
    rng = np.random.default_rng(seed)
    x0 = (noise_amplitude * rng.standard_normal((len(chosen), n_samples, 1))).astype(np.float32)
    selector = tf.one_hot(chosen, n_maps)  # [k, channels]

    @tf.function
    def objective(x: tf.Tensor) -> tf.Tensor:
        act = layer_activation(layers, x)  # [k, time, channels]
        return tf.reduce_sum(tf.reduce_mean(act, axis=1) * selector, axis=-1)  # [k]

    @tf.function
    def ascend(x: tf.Tensor) -> tf.Tensor:
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(objective(x))
            grad = tape.gradient(total, x)
            rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=[1, 2], keepdims=True)) + 1e-12
            x = x + step_size * noise_amplitude * grad / rms
        return x

    before = objective(tf.constant(x0)).numpy()
    x = ascend(tf.constant(x0))
    after = objective(x).numpy()
    waves = x.numpy()[..., 0]
    rms = np.sqrt(np.mean(waves**2, axis=1, keepdims=True))
    waves = waves / np.where(rms > 0, rms, 1.0)
    assert isinstance(config, SampleCNNConfig)
    return FilterEstimates(layer, waves.astype(np.float32), before, after, int(config.sample_rate))


def filter_spectra(estimates: FilterEstimates | np.ndarray, *, sample_rate: int | None = None) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """Magnitude spectra of filter estimates, sorted by the frequency of their peak.

    Args:
        estimates: :class:`FilterEstimates` or float ``[n_filters, samples]``.
        sample_rate: Rate in Hz (taken from the estimates if given there).

    Returns:
        ``(spectra, freqs, order)``: ``spectra`` float32 ``[n_filters, n_freq]`` (each
        row normalised to a peak of 1, rows in sorted order), ``freqs`` ``[n_freq]`` in
        Hz, and ``order`` the filter index of each row.
    """
    if isinstance(estimates, FilterEstimates):
        waves, sample_rate = estimates.waveforms, estimates.sample_rate
    else:
        waves = np.asarray(estimates, np.float32)
    if sample_rate is None:
        raise ParameterError("sample_rate is required when estimates is an array")
    spectra = np.abs(np.fft.rfft(waves * np.hanning(waves.shape[-1]), axis=-1))
    freqs = np.fft.rfftfreq(waves.shape[-1], 1.0 / sample_rate)
    peaks = np.argmax(spectra, axis=-1)
    order = np.argsort(peaks, kind="stable")
    spectra = spectra[order]
    spectra = spectra / np.maximum(spectra.max(axis=-1, keepdims=True), 1e-12)
    return spectra.astype(np.float32), freqs, order


# --------------------------------------------------------------------------------- figures


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _db(magnitude: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(np.abs(magnitude), 1e-6))


def plot_deconvolution_grid(
    originals: np.ndarray,
    deconvolved: np.ndarray,
    path: str | os.PathLike[str],
    *,
    track_names: Sequence[str],
    feature_names: Sequence[str],
    sample_rate: int,
    hop_length: int,
    max_freq: float | None = None,
    dynamic_range_db: float = 70.0,
    mel: bool = False,
) -> str:
    """Original and deconvolved spectrograms, features × tracks (Choi et al., Figures 3, 5–8).

    Args:
        originals: ``[n_tracks, freq, frames]`` linear magnitudes.
        deconvolved: ``[n_tracks, n_features, freq, frames]`` (any sign; shown as magnitude).
        path: Output PNG path.
        track_names: Column titles.
        feature_names: Row titles, e.g. ``"Feature 2-48"``.
        sample_rate: Sample rate in Hz (axis units).
        hop_length: STFT hop in samples (axis units).
        max_freq: Crop the frequency axis (Hz).
        dynamic_range_db: Colour range below each row's maximum.
        mel: The frequency axis holds mel bands (log-mel models), drawn as band numbers.

    Returns:
        The written path.
    """
    plt = _pyplot()
    originals = np.asarray(originals)
    deconvolved = np.asarray(deconvolved)
    n_tracks, _, n_frames = originals.shape
    n_features = deconvolved.shape[1]
    if deconvolved.shape[0] != n_tracks or len(track_names) != n_tracks or len(feature_names) != n_features:
        raise ParameterError("plot_deconvolution_grid: tracks/features do not match the arrays' shapes")
    nyquist = sample_rate / 2 if not mel else float(originals.shape[1])
    top = nyquist if max_freq is None or mel else min(max_freq, nyquist)
    extent = (0, n_frames * hop_length / sample_rate, 0, nyquist)
    unit = "mel band" if mel else "Hz"
    fig, axes = plt.subplots(
        n_features + 1, n_tracks, figsize=(2.6 * n_tracks + 1, 1.9 * (n_features + 1)), squeeze=False
    )
    rows = [("Original", _db(originals))] + [(feature_names[f], _db(deconvolved[:, f])) for f in range(n_features)]
    for r, (title, images) in enumerate(rows):
        vmax = float(images.max())
        for c in range(n_tracks):
            ax = axes[r, c]
            ax.imshow(images[c], origin="lower", aspect="auto", extent=extent, cmap="magma",
                      vmin=vmax - dynamic_range_db, vmax=vmax)
            ax.set_ylim(0, top)
            if r == 0:
                ax.set_title(track_names[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{title}\n{unit}", fontsize=8)
            if r == n_features:
                ax.set_xlabel("s", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    out = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_first_layer_weights(
    model: keras.Model, path: str | os.PathLike[str], *, features: Sequence[int] | None = None
) -> str:
    """The learnt kernels of the first conv layer (Choi et al., Figure 4), one panel per feature.

    Args:
        model: A Choi CNN.
        path: Output PNG path.
        features: Feature indices (``None``: all, in a grid).

    Returns:
        The written path.
    """
    plt = _pyplot()
    first = conv_blocks(model)[0]
    kernel = np.asarray(model.get_layer(first.conv).get_weights()[0])
    if kernel.ndim != 4:
        raise ModelError("plot_first_layer_weights needs a 2D conv model (the Choi CNN)")
    chosen = list(range(kernel.shape[-1])) if features is None else list(features)
    cols = min(8, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    limit = float(np.abs(kernel[..., 0, chosen]).max())
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1, 1.6 * rows), squeeze=False)
    image = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(chosen):
            continue
        f = chosen[i]
        image = ax.imshow(kernel[:, :, 0, f], origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"Feature {first.level}-{f}", fontsize=8)
        for (y, x), value in np.ndenumerate(kernel[:, :, 0, f]):
            ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=6)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.7, label="weight (rows: frequency, columns: time)")
    out = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_filter_spectra(
    spectra_by_layer: dict[int, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str]
) -> str:
    """Sorted filter spectra per layer (Lee et al., Figure 3): x = filter, y = frequency.

    Args:
        spectra_by_layer: ``{layer: (spectra [n_filters, n_freq], freqs [n_freq])}`` as
            returned by :func:`filter_spectra`.
        path: Output PNG path.

    Returns:
        The written path.
    """
    plt = _pyplot()
    layers = sorted(spectra_by_layer)
    fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers) + 1, 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        spectra, freqs = spectra_by_layer[layer]
        ax.imshow(spectra.T, origin="lower", aspect="auto", cmap="viridis",
                  extent=(0, spectra.shape[0], 0, freqs[-1] / 1000))
        ax.set_title(f"Layer {layer}", fontsize=9)
        ax.set_xlabel("filter (sorted)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("kHz", fontsize=8)
    fig.tight_layout()
    out = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- command line

FIGURES_FILE = "figures.json"


def _load_clips(paths: Sequence[str], *, sample_rate: int, offset: float, seconds: float) -> np.ndarray:
    """Excerpts of the files, mono at ``sample_rate``, zero-padded to ``seconds``: ``[n, samples]``."""
    from tfaural import audio

    length = int(round(seconds * sample_rate))
    clips = np.zeros((len(paths), length), np.float32)
    for i, path in enumerate(paths):
        y, _ = audio.load(path, sample_rate=sample_rate, offset=offset, duration=seconds,
                          min_samples=min(length, sample_rate // 2), require_sound=True)
        clips[i, : min(length, y.size)] = y[:length]
    return clips


def _check_figure_arguments(
    model: keras.Model,
    *,
    layers: str,
    features: str,
    offset: float,
    seconds: float | None,
    filter_layers: str | None,
    steps: int,
) -> tuple[list[int], list[int] | None]:
    """Validates every argument of :func:`make_figures` before any work is done.

    Returns:
        ``(deconvolution-grid layers, filter-spectra layers or None for "every reachable one")``.

    Raises:
        ParameterError: Naming the flag and the value.
    """
    from tfaural.cli import parse_index_list

    if isinstance(config_from_model(model), MusicnnConfig):  # the imported taggers: the deconvnet's levels
        from tfaural.deconv import DeconvNet

        net = DeconvNet(model)
        levels = list(net.levels)
        widths = {level: net.n_features(level) for level in levels}
    else:
        blocks = conv_blocks(model)
        levels = [b.level for b in blocks]
        widths = {b.level: int(model.get_layer(b.conv).kernel.shape[-1]) for b in blocks}
    grid_layers = list(parse_index_list(layers, flag="--layers", valid=levels))
    for layer in grid_layers:
        choose_features(features, n_maps=widths[layer], layer=layer)  # syntax and range
    spectra_layers = None
    if filter_layers:
        spectra_layers = list(parse_index_list(filter_layers, flag="--filter-layers", valid=levels))
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ParameterError(f"--steps {steps!r} is invalid: expected a positive number of iterations")
    if not np.isfinite(offset) or offset < 0:
        raise ParameterError(f"--offset-seconds {offset!r} is invalid: expected seconds >= 0")
    if seconds is not None and not (np.isfinite(seconds) and seconds > 0):
        raise ParameterError(f"--clip-seconds {seconds!r} is invalid: expected a positive number of seconds")
    return grid_layers, spectra_layers


def make_figures(
    model: keras.Model,
    output: str,
    *,
    audio_paths: Sequence[str] = (),
    layers: str = "all",
    features: str = "top4",
    offset: float = 0.0,
    seconds: float | None = None,
    filter_layers: str | None = None,
    steps: int = 100,
    progress: bool = True,
) -> dict[str, object]:
    """Draws every figure that fits the model into ``output`` and lists them in ``figures.json``.

    * Choi CNN: the learnt first-layer kernels (Choi et al., Figure 4), and with audio
      files one grid per layer of original vs deconvolved spectrograms (Figures 3, 5–8).
    * SampleCNN family: sorted gradient-ascent filter spectra per layer (Lee et al.,
      Figure 3), and with audio files the same deconvolution grids, drawn from the STFT of
      the deconvolved waveforms (1024-point FFT, hop 256).

    Args:
        model: A trained model of :mod:`tfaural.models`.
        output: Folder for the PNG files.
        audio_paths: Tracks for the deconvolution grids (columns).
        layers: Layers of the deconvolution grids (``all``, ``1-3``, ``2,5``).
        features: Rows per layer: ``topN`` (the N features with the largest mean activation
            on the tracks), ``all`` or a list such as ``0-3,17``.
        offset: Start of each excerpt in seconds.
        seconds: Excerpt length (``None``: 4 s for the Choi CNN, one input segment for SampleCNN).
        filter_layers: Layers of the filter-spectra figure (``None``: every layer a
            729-sample estimate reaches).
        steps: Gradient-ascent iterations per layer.
        progress: Show a progress bar.

    Returns:
        The contents of ``figures.json``: ``figures`` (file names), ``features`` per layer, ``tracks``.

    Raises:
        TfauralError: Unreadable audio (naming the file), invalid layers or features, or a
            model without figures (the mel-frame baseline). Every argument is checked and
            every audio file decoded before the first figure is written.
    """
    from tqdm.auto import tqdm

    from tfaural import spectral
    from tfaural.auralise import MelAuraliser, auraliser_for, checked_clip_samples, to_linear_magnitude
    from tfaural.cli import check_output_folder

    check_output_folder(output)

    config = config_from_model(model)
    is_choi = isinstance(config, ChoiConfig)
    is_mel = isinstance(config, MusicnnConfig)
    if isinstance(config, KerasConfig):
        raise ModelError(f"model {model.name!r} was imported from {config.source or 'a Keras file'}: hear it with "
                         "python -m tfaural.listen --model RUN_DIR (or export it and run beam_jobs.auralise); the "
                         "figures here are drawn for tfaural's own architectures")
    if not is_choi and getattr(config, "family", "") == "mel-frame":
        raise ModelError("the mel-frame baseline has no figures here: its mel front end cannot be auralised and "
                         "gradient ascent needs a raw-waveform model")
    wanted_layers, spectra_layers = _check_figure_arguments(
        model, layers=layers, features=features, offset=offset, seconds=seconds, filter_layers=filter_layers,
        steps=steps,
    )
    clips = auraliser = None
    if audio_paths:
        assert isinstance(config, (ChoiConfig, SampleCNNConfig, MusicnnConfig))
        auraliser = auraliser_for(model)
        default_seconds = config.input_seconds if isinstance(config, SampleCNNConfig) else 4.0
        clip_seconds = seconds if seconds is not None else default_seconds
        if is_choi and wanted_layers:  # any length: the clip must give the deepest grid layer a map
            rate = int(config.sample_rate)
            checked_clip_samples(auraliser, wanted_layers, samples=int(round(clip_seconds * rate)), sample_rate=rate)
        clips = _load_clips(audio_paths, sample_rate=int(config.sample_rate), offset=offset, seconds=clip_seconds)
    os.makedirs(output, exist_ok=True)
    written: list[str] = []
    chosen_features: dict[str, list[int]] = {}
    if is_choi:
        weights = plot_first_layer_weights(model, os.path.join(output, "first-layer-weights.png"))
        written.append(os.path.basename(weights))
    elif is_mel:
        pass  # log-mel taggers: the deconvolution grids only
    else:
        levels = [b.level for b in conv_blocks(model)]
        wanted = spectra_layers if spectra_layers is not None else [lv for lv in levels if lv >= 1]
        spectra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for level in tqdm(wanted, desc="filter estimates", unit="layer", disable=not progress):
            try:
                estimates = gradient_ascent_filters(model, layer=level, steps=steps)
            except ParameterError:
                if filter_layers:
                    raise
                break  # this and every deeper layer are beyond what a 729-sample estimate reaches
            spectrum, freqs, _ = filter_spectra(estimates)
            spectra[level] = (spectrum, freqs)
        if spectra:
            written.append(os.path.basename(plot_filter_spectra(spectra, os.path.join(output, "filter-spectra.png"))))
    if audio_paths:
        assert clips is not None and auraliser is not None
        assert isinstance(config, (ChoiConfig, SampleCNNConfig, MusicnnConfig))
        rate = int(config.sample_rate)
        n_fft, hop = (config.n_fft, config.hop_length) if isinstance(config, (ChoiConfig, MusicnnConfig)) else (1024,
                                                                                                               256)
        names = [os.path.splitext(os.path.basename(p))[0] for p in audio_paths]
        # Which features to draw needs only each map's maximum activation (one forward pass per clip); only
        # those features are then deconvolved.
        activations: dict[int, list[np.ndarray]] = {layer: [] for layer in wanted_layers}
        for clip in clips:
            per_layer = auraliser.net.activations(auraliser.model_input(clip[None]), layers=wanted_layers)
            for layer in wanted_layers:
                activations[layer].append(per_layer[layer].numpy()[0])
        bar = tqdm(total=len(wanted_layers) * len(audio_paths), desc="deconvolving", unit="clip",
                   disable=not progress)
        for layer in wanted_layers:
            chosen = choose_features(features, n_maps=len(activations[layer][0]), layer=layer,
                                     mean_activation=np.stack(activations[layer]).mean(axis=0).tolist())
            chosen_features[str(layer)] = chosen
            maps = []
            for clip in clips:  # one track at a time: bounds memory for long clips and many features
                result = auraliser(clip[None], layer=layer, features=chosen, mode="phase")
                assert result.deconvolved is not None
                if is_mel:  # log-mel -> mel power at the input's level (MelAuraliser), shown as magnitude
                    assert isinstance(auraliser, MelAuraliser)
                    maps.append(np.sqrt(auraliser.mel_power(result.deconvolved, result.spectrogram).numpy())[0])
                elif is_choi:
                    maps.append(to_linear_magnitude(result.deconvolved, config).numpy()[0])  # type: ignore[arg-type]
                else:
                    maps.append(np.abs(spectral.stft(result.deconvolved[0], n_fft=n_fft, hop_length=hop).numpy()))
                bar.update(1)
            if is_mel:
                assert isinstance(auraliser, MelAuraliser)
                originals = np.sqrt(auraliser.mel_input(tf.constant(clips))[1].numpy())
            else:
                originals = np.abs(spectral.stft(clips, n_fft=n_fft, hop_length=hop).numpy())
            deconvolved = np.stack(maps)
            path = plot_deconvolution_grid(
                originals, deconvolved, os.path.join(output, f"deconvolution-layer{layer}.png"),
                track_names=names, feature_names=[f"Feature {layer}-{f}" for f in chosen],
                sample_rate=rate, hop_length=hop, mel=is_mel,
            )
            written.append(os.path.basename(path))
        bar.close()
    summary: dict[str, object] = {"figures": written, "features": chosen_features, "tracks": list(audio_paths)}
    with open(os.path.join(output, FIGURES_FILE), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m tfaural.visualise --run RUN_DIR --output DIR [--audio FILE ...]``."""
    import argparse
    import sys

    from tfaural.errors import TfauralError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.visualise",
        description="Figures of what a trained model has learnt: first-layer kernels and deconvolved "
        "spectrograms (Choi CNN), sorted gradient-ascent filter spectra and deconvolved spectrograms "
        "(SampleCNN family), deconvolved mel spectrograms (imported log-mel taggers, e.g. musicnn/MTT_vgg). "
        "Writes PNG files and figures.json into --output.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--run", required=True, help="training run directory (model.keras + run.json)")
    parser.add_argument("--output", required=True, help="folder for the figures")
    parser.add_argument("--audio", nargs="*", default=[], metavar="FILE",
                        help="tracks for the deconvolution grids (one column each)")
    add_selection_flags(parser, layers_help="layers of the deconvolution grids: all, 1-3, 2,5",
                        clip_help="excerpt length (default: 4 s for the Choi CNN, one input segment for SampleCNN)")
    parser.add_argument("--filter-layers", default=None,
                        help="SampleCNN: layers of the filter-spectra figure (default: all a 729-sample estimate "
                        "reaches)")
    parser.add_argument("--steps", type=int, default=100, help="SampleCNN: gradient-ascent iterations")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        from tfaural.cli import check_output_folder
        from tfaural.training.run import load_run

        check_output_folder(args.output)  # before the model is loaded
        model, _ = load_run(args.run)
        summary = make_figures(
            model, args.output, audio_paths=args.audio, layers=args.layers, features=args.features,
            offset=args.offset_seconds, seconds=args.clip_seconds, filter_layers=args.filter_layers,
            steps=args.steps,
        )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in summary["figures"]:  # type: ignore[attr-defined]
        print(os.path.join(args.output, name))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
