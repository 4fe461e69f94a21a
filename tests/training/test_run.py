"""tfaural.training.run: a run's STFT settings come from its model config only; run.json of earlier versions."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from tfaural.config import (
    AudioConfig,
    ChoiConfig,
    MusicnnConfig,
    SampleCNNConfig,
    SegmentConfig,
    STFTConfig,
    model_config_to_dict,
)
from tfaural.errors import ConfigError
from tfaural.training.run import INFO_FILE, RunInfo, read_run_info

CHOI = ChoiConfig(n_outputs=2, n_freq=513, n_frames=65, n_fft=1024, hop_length=128, sample_rate=8000)


def _choi_run() -> RunInfo:
    return RunInfo(model=CHOI, labels=("a", "b"), task="single-label", audio=AudioConfig(sample_rate=8000),
                   segment=SegmentConfig(length=64 * 128))


def _write(folder: pathlib.Path, data: dict[str, Any]) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFO_FILE).write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_the_stft_of_a_run_is_its_model_configs() -> None:
    info = _choi_run()
    assert info.stft == STFTConfig(n_fft=1024, hop_length=128) == CHOI.stft
    musicnn = MusicnnConfig(n_outputs=2, n_fft=1024, hop_length=512)
    info_musicnn = RunInfo(model=musicnn, labels=("a", "b"), task="multi-label",
                           audio=AudioConfig(sample_rate=16000), segment=SegmentConfig(length=musicnn.segment_length))
    assert info_musicnn.stft == STFTConfig(n_fft=1024, hop_length=512)
    samplecnn = RunInfo(model=SampleCNNConfig(n_outputs=2), labels=("a", "b"), task="multi-label",
                        audio=AudioConfig(), segment=SegmentConfig())
    assert samplecnn.stft is None
    with pytest.raises(TypeError, match="stft"):
        RunInfo(model=CHOI, labels=("a", "b"), task="single-label", audio=AudioConfig(sample_rate=8000),  # type: ignore[call-arg]
                segment=SegmentConfig(length=64 * 128), stft=STFTConfig(n_fft=512, hop_length=256))


def test_run_json_keeps_a_copy_of_the_stft_and_round_trips(tmp_path: pathlib.Path) -> None:
    info = _choi_run()
    data = info.to_dict()
    assert data["stft"] == {"n_fft": 1024, "hop_length": 128, "window": "hann"}
    samplecnn = RunInfo(model=SampleCNNConfig(n_outputs=2), labels=("a", "b"), task="multi-label",
                        audio=AudioConfig(), segment=SegmentConfig())
    assert samplecnn.to_dict()["stft"] is None
    for run in (info, samplecnn):
        assert read_run_info(_write(tmp_path / run.run_id, run.to_dict())) == run


@pytest.mark.parametrize("stft", [
    {"n_fft": 1024, "hop_length": 128, "win_length": None, "window": "hann"},  # what earlier versions wrote
    {"n_fft": 1024, "hop_length": 128, "win_length": 1024, "window": "hann"},  # the same window, spelt out
    None,  # no copy at all
])
def test_run_json_of_earlier_versions_still_reads(tmp_path: pathlib.Path, stft: dict[str, Any] | None) -> None:
    data = {**_choi_run().to_dict(), "stft": stft}
    info = read_run_info(_write(tmp_path, data))
    assert info.stft == STFTConfig(n_fft=1024, hop_length=128)
    assert info.to_dict()["stft"] == {"n_fft": 1024, "hop_length": 128, "window": "hann"}


@pytest.mark.parametrize("model,stft,match", [
    (CHOI, {"n_fft": 1024, "hop_length": 256, "win_length": None, "window": "hann"},
     r"stft is .* but the model config says n_fft=1024, hop_length=128"),
    (CHOI, {"n_fft": 512, "hop_length": 128}, r"stft is .* but the model config says n_fft=1024, hop_length=128"),
    (CHOI, {"n_fft": 1024, "hop_length": 128, "win_length": 512, "window": "hann"},
     r"win_length=512 is not supported: the STFT window is always n_fft=1024 samples long"),
    (SampleCNNConfig(n_outputs=2), {"n_fft": 512, "hop_length": 256},
     r"the 'samplecnn' model takes a waveform, not an STFT"),
])
def test_run_json_whose_stft_disagrees_with_the_model_is_rejected(
    tmp_path: pathlib.Path, model: Any, stft: dict[str, Any], match: str,
) -> None:
    data = {**_choi_run().to_dict(), "model": model_config_to_dict(model), "stft": stft}
    folder = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=match) as caught:
        read_run_info(folder)
    assert str(caught.value).startswith(f"{folder / INFO_FILE}: ")


def test_a_musicnn_run_saved_with_conv2d_temporal_filters_loads_with_row_convolutions(
        tmp_path: pathlib.Path) -> None:
    """Runs imported before RowConv2D hold plain Conv2D temporal filters: load_run rebuilds them, same outputs."""
    import keras
    import numpy as np

    import tfaural.models.musicnn as musicnn
    from tfaural.models.layers import RowConv2D
    from tfaural.training.run import load_run, save_run

    config = MusicnnConfig(architecture="musicnn", n_outputs=3, n_frames=40)
    old = musicnn.build_musicnn(config, row_convolutions=False)  # the builder as it was: Conv2D everywhere
    temporal = [layer for layer in old.layers if layer.name.startswith("temporal") and layer.name.endswith("_conv")]
    assert len(temporal) == 3 and all(type(layer) is keras.layers.Conv2D for layer in temporal)
    rng = np.random.default_rng(0)
    old.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) if w.ndim > 1 else w for w in old.get_weights()])
    save_run(tmp_path, old, RunInfo(model=config, labels=("a", "b", "c"), task="multi-label",
                                    audio=AudioConfig(sample_rate=16000),
                                    segment=SegmentConfig(length=config.segment_length)))

    model, _ = load_run(tmp_path)
    layers = {layer.name: layer for layer in model.layers}
    assert all(type(layers[layer.name]) is RowConv2D for layer in temporal)
    assert type(layers["timbral1_conv"]) is keras.layers.Conv2D  # 38 bands tall: not a row kernel
    mel = rng.gamma(1.0, 0.01, (2, config.n_mels, config.n_frames, 1)).astype(np.float32)
    expected = old.predict(mel, verbose=0)
    np.testing.assert_allclose(model.predict(mel, verbose=0), expected, rtol=1e-4, atol=1e-6)
    assert [w.shape for w in model.get_weights()] == [w.shape for w in old.get_weights()]

    # A run saved by today's builder, and any other family, loads as it was saved.
    save_run(tmp_path / "new", model, RunInfo(model=config, labels=("a", "b", "c"), task="multi-label",
                                              audio=AudioConfig(sample_rate=16000),
                                              segment=SegmentConfig(length=config.segment_length)))
    again, _ = load_run(tmp_path / "new")
    assert musicnn.with_row_convolutions(again) is again
    assert type({layer.name: layer for layer in again.layers}["temporal1_conv"]) is RowConv2D
