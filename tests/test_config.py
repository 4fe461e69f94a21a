"""tfaural.config: validation on construction and JSON round trips."""

from __future__ import annotations

import dataclasses

import pytest

from tfaural.config import (
    AggregationConfig,
    AudioConfig,
    ChoiConfig,
    MusicnnConfig,
    SampleCNNConfig,
    SegmentConfig,
    STFTConfig,
    describe_differences,
    stft_config_of,
)
from tfaural.errors import ConfigError, TfauralError


@pytest.mark.parametrize(
    "config",
    [
        AudioConfig(),
        AudioConfig(sample_rate=11025, mono=False),
        STFTConfig(),
        STFTConfig(n_fft=729, hop_length=243),
        SegmentConfig(),
        SegmentConfig(length=44100, hop=22050, n_segments=10, pad="constant"),
    ],
)
def test_json_round_trip(config: AudioConfig | STFTConfig | SegmentConfig) -> None:
    text = config.to_json()
    again = type(config).from_json(text)
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STFTConfig().n_fft = 1024  # type: ignore[misc]


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: AudioConfig(sample_rate=0), "sample_rate=0"),
        (lambda: AudioConfig(sample_rate=-8000), "sample_rate=-8000"),
        (lambda: STFTConfig(n_fft=1), "n_fft=1"),
        (lambda: STFTConfig(n_fft=512, hop_length=1024), "hop_length=1024"),
        (lambda: STFTConfig.from_dict({"n_fft": 512, "win_length": 2048}), "win_length=2048"),
        (lambda: STFTConfig.from_dict({"n_fft": 512, "hop_length": 128, "win_length": 256}), "win_length=256"),
        (lambda: STFTConfig(window="hamming"), "window='hamming'"),
        (lambda: SegmentConfig(length=0), "length=0"),
        (lambda: SegmentConfig(pad="reflect"), "pad='reflect'"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(factory, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        factory()


def test_from_json_errors_are_tfaural_errors() -> None:
    with pytest.raises(TfauralError, match="unknown field"):
        STFTConfig.from_dict({"n_fft": 512, "hop": 3})
    with pytest.raises(TfauralError, match="not valid JSON"):
        STFTConfig.from_json("{n_fft: 512")
    with pytest.raises(ConfigError, match="hop_length=0"):
        STFTConfig.from_json('{"n_fft": 512, "hop_length": 0}')


def test_stft_json_of_earlier_versions_is_read() -> None:
    """Earlier versions wrote a ``win_length``; ``null`` and ``n_fft`` (the window always used) still read."""
    for win_length in (None, 512):
        old = {"n_fft": 512, "hop_length": 128, "win_length": win_length, "window": "hann"}
        assert STFTConfig.from_dict(old) == STFTConfig(n_fft=512, hop_length=128)
    assert "win_length" not in STFTConfig().to_dict()


def test_the_model_config_is_the_one_source_of_the_stft() -> None:
    choi = ChoiConfig(n_outputs=2, n_freq=513, n_fft=1024, hop_length=128)
    assert stft_config_of(choi) == choi.stft == STFTConfig(n_fft=1024, hop_length=128)
    musicnn = MusicnnConfig(n_fft=1024, hop_length=512)
    assert stft_config_of(musicnn) == STFTConfig(n_fft=1024, hop_length=512)
    mel_frame = SampleCNNConfig(family="mel-frame", filter_sizes=(3, 3), window=729, hop=729)
    for waveform_model in (SampleCNNConfig(), mel_frame, AggregationConfig(extractors=(SampleCNNConfig(),))):
        assert stft_config_of(waveform_model) is None
    # A model config with a hop longer than its window builds (model-structure tests use such sizes), but
    # it has no valid STFT: whatever needs one (training, evaluation, export) gets the error.
    for model in (ChoiConfig(n_outputs=2, hop_length=1024), MusicnnConfig(hop_length=1024)):
        with pytest.raises(ConfigError, match=r"hop_length=1024 is invalid: expected an integer in \[1, n_fft=512\]"):
            _ = model.stft


def test_derived_sizes() -> None:
    stft = STFTConfig(n_fft=512, hop_length=256)
    assert stft.n_freq == 257
    assert stft.n_frames(44100) == 173
    assert SegmentConfig(length=59049).step == 59049


def test_differences_name_each_changed_leaf_by_its_dotted_path() -> None:
    was = {"job": "tag", "settings": {"top_k": 5, "hop": None, "layers": [1, 2]}, "epochs": 3}
    now = {"job": "tag", "settings": {"top_k": 3, "hop": 0.5, "layers": [1, 2]}, "epochs": 9}
    assert describe_differences(was, now, ignore=("epochs",)) == "settings.hop none, now 0.5; settings.top_k 5, now 3"
    assert describe_differences(was, was) == ""
    assert describe_differences({"a": "x" * 200}, {"a": 1}) == f'a "{"x" * 76}..., now 1'
    assert describe_differences({"a": {"b": 1}}, {}) == 'a {"b": 1}, now none'
