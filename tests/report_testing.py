"""What the report tests share: an auralisation output laid out as ``beam_jobs.auralise`` writes it.

``make_auralise_output`` writes job.json, manifest.jsonl, <track>/track.json, original.wav and
layer<L>/feature<K>.wav, with audio produced by ``tfaural.auralise.Auraliser`` on a tiny Choi CNN;
``make_correlation`` a correlation output beside it; ``parse`` and ``resolve`` read the pages' links.
Used by test_report.py and test_report_browser.py.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import urllib.parse
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import numpy as np

from tfaural import __version__, audio
from tfaural.report import (
    ThumbnailSettings,
    spectrogram_image,
)

RATE = 4096  # Chromium plays no audio sampled below 3000 Hz
SECONDS = 0.5  # 65 frames of the tiny model (hop 32)
N_FFT = 64
HOP = 32
N_LAYERS = 3
N_FILTERS = 4
LABELS = ("blues", "jazz", "rock")
RUN_ID = "run-tiny-0001"
# (track id, folder): the second has a space and a non-ASCII letter in its folder and markup in its id.
TRACKS: tuple[tuple[str, str], ...] = (
    ("blues.00001", "blues.00001"),
    ('jazz "two" <b>ü</b>', "jazz two ü"),
    ("rock.00003", "rock.00003"),
)
FAILED = ("broken.00004", "audio/broken <4>.wav", "AudioDecodeError", "audio/broken <4>.wav: not an audio file")


# ----------------------------------------------------------------------------------------------- fixtures


@functools.lru_cache(maxsize=4)
def auralised(n_tracks: int) -> tuple[dict[str, Any], np.ndarray, dict[int, tuple[np.ndarray, ...]]]:
    """(metadata, originals [n, samples], {layer: (audio [n, k, samples], silent, peak, activation [n, k])})."""
    import keras

    from tfaural import spectral
    from tfaural.auralise import Auraliser
    from tfaural.config import model_config_to_dict
    from tfaural.models import choi_cnn, config_from_model

    keras.utils.set_random_seed(11)
    model = choi_cnn(
        n_outputs=len(LABELS), n_freq=N_FFT // 2 + 1, n_frames=65, n_fft=N_FFT, hop_length=HOP,
        n_filters=N_FILTERS, n_layers=N_LAYERS, fc_units=(8,), sample_rate=RATE,
    )
    rng = np.random.default_rng(5)
    t = np.arange(int(RATE * SECONDS)) / RATE
    originals = []
    for i in range(n_tracks):
        tone = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (96 + 64 * i, 320 + 32 * i, 700 - 40 * i))
        clicks = np.zeros_like(t)
        clicks[:: 256 + 64 * (i % 3)] = 0.4
        originals.append((tone + clicks + 0.02 * rng.standard_normal(t.shape)).astype(np.float32) * 0.8)
    waveforms = np.stack(originals)
    results = Auraliser(model).layers(waveforms)
    magnitude = np.abs(spectral.stft(waveforms, n_fft=N_FFT, hop_length=HOP).numpy())[..., np.newaxis]
    probe = keras.Model(model.inputs, [model.get_layer(f"relu{layer}").output for layer in results])
    activations = [np.asarray(a).max(axis=(1, 2)) for a in probe([magnitude])]
    layers = {
        layer: (r.audio.numpy(), r.silent.numpy(), r.peak.numpy(), act)
        for (layer, r), act in zip(results.items(), activations)
    }
    metadata = {
        "family": "choi",
        "model_config": model_config_to_dict(config_from_model(model)),
        "sample_rate": RATE,
        "stft": {"n_fft": N_FFT, "hop_length": HOP},
        "input_scaling": {"mode": "linear", "log_c": 10.0},
        "labels": list(LABELS),
        "task": "single-label",
        "run_id": RUN_ID,
        "run_created": "2025-01-01T00:00:00+00:00",
        "tfaural_version": __version__,
        "features_per_layer": {str(layer): N_FILTERS for layer in layers},
    }
    return metadata, waveforms, layers


def write_png(path: pathlib.Path, y: np.ndarray) -> None:
    """A spectrogram PNG as the job writes with --spectrograms (any image will do for the report)."""
    from matplotlib import image as mpl_image

    path.parent.mkdir(parents=True, exist_ok=True)
    mpl_image.imsave(path, spectrogram_image(y[np.newaxis], ThumbnailSettings(n_fft=N_FFT, hop_length=HOP))[0],
                     cmap="viridis", origin="lower")


def make_auralise_output(
    root: pathlib.Path,
    *,
    tracks: Sequence[tuple[str, str]] = TRACKS,
    failed: Sequence[tuple[str, str, str, str]] = (FAILED,),
    spectrograms: bool = False,
    null_activation: tuple[int, int] | None = (2, 1),
    activations: bool = True,
) -> pathlib.Path:
    """Writes an auralisation output folder (the beam_jobs.auralise contract) with real tfaural audio.

    Args:
        root: The folder to create.
        tracks: ``(track_id, folder)`` of each auralised track.
        failed: ``(track_id, path, error_type, error)`` of manifest entries that failed.
        spectrograms: Also write the job's spectrogram PNGs (``--spectrograms``).
        null_activation: ``(layer, feature)`` whose activation is recorded as null.
        activations: Record activations at all (the export may provide none).
    """
    metadata, originals, layers = auralised(len(tracks))
    root.mkdir(parents=True, exist_ok=True)
    manifest = []
    for index, (track_id, folder) in enumerate(tracks):
        track_dir = root / folder
        audio.write(track_dir / "original.wav", originals[index], sample_rate=RATE)
        if spectrograms:
            write_png(track_dir / "original.png", originals[index])
        entry: dict[str, Any] = {
            "track_id": track_id, "path": f"audio/{folder}.wav", "sample_rate": RATE, "offset_seconds": 0.5,
            "clip_seconds": SECONDS, "original": "original.wav",
            "original_spectrogram": "original.png" if spectrograms else None, "layers": {},
        }
        for layer, (waves, silent, peak, activation) in layers.items():
            items = []
            for k in range(waves.shape[1]):
                file = f"layer{layer}/feature{k}.wav"
                audio.write(track_dir / file, waves[index, k], sample_rate=RATE)
                png = f"layer{layer}/feature{k}.png" if spectrograms else None
                if png:
                    write_png(track_dir / png, waves[index, k])
                items.append({
                    "feature": k, "file": file, "spectrogram": png,
                    "activation": None if (layer, k) == null_activation or not activations
                    else float(activation[index, k]),
                    "peak": float(peak[index, k]), "silent": bool(silent[index, k]),
                })
            entry["layers"][str(layer)] = items
        (track_dir / "track.json").write_text(json.dumps(entry, indent=1), encoding="utf-8")
        outputs = sorted(p.relative_to(root).as_posix() for p in track_dir.rglob("*") if p.is_file())
        manifest.append({"path": entry["path"], "track_id": track_id, "name": folder, "status": "ok",
                         "outputs": outputs})
    for track_id, path, error_type, error in failed:
        manifest.append({"path": path, "track_id": track_id, "name": track_id, "status": "failed", "error": error,
                         "error_type": error_type, "stage": "decode"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest), encoding="utf-8")
    features = {str(layer): list(range(N_FILTERS)) for layer in layers}
    settings = {"signature": "auralise", "layers": sorted(layers), "features": features, "mode": "phase",
                "clip_seconds": SECONDS, "offset_seconds": 0.5, "format": "wav", "spectrograms": spectrograms}
    job = {  # as beam_jobs.accounting.write_job_file writes it
        "job": "auralise", "created": "2025-01-02T03:04:05+00:00", "tfaural_version": __version__, "input": None,
        "manifest": "inputs.csv", "model_dir": "/exports/choi/1",
        "model": {"model_dir": "/exports/choi/1", "run_id": RUN_ID, "exported": "2025-01-01T12:00:00+00:00"},
        "metadata": metadata, "settings": settings,
        **{k: settings[k] for k in ("layers", "features", "mode", "clip_seconds", "offset_seconds", "format",
                                    "spectrograms")},
    }
    (root / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    return root


def make_correlation(root: pathlib.Path) -> pathlib.Path:
    """A correlation results folder (correlations.csv, summary.json, figure10.png)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    root.mkdir(parents=True, exist_ok=True)
    rows = ["layer,attribute,mean,std,n_pairs,n_undefined"]
    values = {}
    for layer in range(1, N_LAYERS + 1):
        for j, attribute in enumerate(("key", "chord", "instrument")):
            mean = 0.9 - 0.15 * layer + 0.05 * j
            values[(layer, attribute)] = mean
            rows.append(f"{layer},{attribute},{mean:.6f},{0.01 * layer:.6f},{40 + j},{j}")
    (root / "correlations.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = {
        "n_signals": 12, "signal_ids": [f"signal-{i}" for i in range(12)], "table": [{"layer": 1}],
        "grid": {"timbres": ["sine", "piano"], "chords": ["major", "minor"], "keys": ["C3", "G3", "D4"]},
        "zero_features": {"count": 2, "by_layer": {"3": 2}, "features": [{"layer": 3, "feature": 1}] * 2},
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    figure = Figure(figsize=(4, 3))
    axes = figure.add_subplot()
    for attribute in ("key", "chord", "instrument"):
        axes.plot([1, 2, 3], [values[(layer, attribute)] for layer in (1, 2, 3)], label=attribute)
    axes.legend()
    figure.savefig(root / "figure10.png")
    return root


class _Links(HTMLParser):
    """Collects tags with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(path: pathlib.Path) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def resolve(page: pathlib.Path, url: str) -> tuple[pathlib.Path, str]:
    """The file a relative URL on ``page`` points to, and its fragment."""
    parts = urllib.parse.urlsplit(url)
    assert not parts.scheme and not parts.netloc, f"{page.name}: absolute URL {url!r}"
    target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path))
    return pathlib.Path(os.path.normpath(target)), parts.fragment
