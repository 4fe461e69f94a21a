"""tfaural.correlation: pairwise correlations of deconvolved features by attribute (Choi et al. 2015, §4.2).

Model signals are rendered for real (additive sines and FluidSynth with the GM soundfont) on a
reduced grid (2 timbres × 2 chords × 2 keys, 2 s) and analysed with a tiny Choi CNN. Correlations
are checked against ``numpy.corrcoef`` on the float64 maps (an independent reference); the
numerics of the normalised dot products against ``numpy.corrcoef`` to 1e-6 (float32 storage).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
from matplotlib import image as mpimg

from tfaural import correlation, signals
from tfaural.correlation import ATTRIBUTES, ConstantMap
from tfaural.errors import ModelError, ParameterError
from tfaural.models import choi_cnn
from tfaural.models.samplecnn import samplecnn_model

SR = 4000  # below FluidSynth's 8 kHz minimum: rendered at 8 kHz and resampled
SECONDS = 2.0
GRID = signals.SignalGrid(timbres=("sine", "piano"), chords=("major", "minor"), keys=("A3", "G4"), duration=SECONDS)
#: Correlations of float32-stored unit vectors against float64 numpy.corrcoef.
TOL = 1e-6


def tiny_choi() -> keras.Model:
    keras.utils.set_random_seed(3)
    return choi_cnn(n_outputs=3, n_freq=33, n_frames=33, n_fft=64, hop_length=32, n_filters=4, fc_units=(8,),
                    sample_rate=SR)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_choi()


@pytest.fixture(scope="module")
def grid_signals(tmp_path_factory: pytest.TempPathFactory) -> list[signals.ModelSignal]:
    return signals.model_signals(GRID, sample_rate=SR, cache_dir=tmp_path_factory.mktemp("signals"))


@pytest.fixture(scope="module")
def result(model: keras.Model, grid_signals: list[signals.ModelSignal]) -> correlation.CorrelationResult:
    return correlation.analyse(model, grid_signals, progress=False)


@pytest.fixture(scope="module")
def maps(model: keras.Model, grid_signals: list[signals.ModelSignal]) -> dict[int, np.ndarray]:
    return correlation.deconvolve_signals(model, grid_signals)


def _reference_table(
    maps: dict[int, np.ndarray], attrs: Sequence[dict[str, str]]
) -> dict[tuple[int, str], tuple[list[float], int, int, dict[int, list[float]]]]:
    """(layer, attribute) -> (values, n_pairs, n_undefined, per-feature values) with numpy.corrcoef, by brute force."""
    out = {}
    for layer, m in maps.items():
        n, k = m.shape[:2]
        flat = m.reshape(n, k, -1).astype(np.float64)
        for attribute in ATTRIBUTES:
            others = [a for a in ATTRIBUTES if a != attribute]
            values: list[float] = []
            per_feature: dict[int, list[float]] = {f: [] for f in range(k)}
            n_pairs = n_undefined = 0
            for i in range(n):
                for j in range(i + 1, n):
                    if attrs[i][attribute] == attrs[j][attribute]:
                        continue
                    if any(attrs[i][o] != attrs[j][o] for o in others):
                        continue
                    n_pairs += 1
                    for f in range(k):
                        a, b = flat[i, f], flat[j, f]
                        if np.ptp(a) == 0 or np.ptp(b) == 0:
                            n_undefined += 1
                            continue
                        r = float(np.corrcoef(a, b)[0, 1])
                        values.append(r)
                        per_feature[f].append(r)
            out[(layer, attribute)] = (values, n_pairs, n_undefined, per_feature)
    return out


# ---------------------------------------------------------------------------------------------- grid


def test_model_signals_carry_their_attributes(grid_signals: list[signals.ModelSignal]) -> None:
    assert len(grid_signals) == 8
    assert {s.signal_id for s in grid_signals} == {
        f"{t}-{c}-{k}" for t in GRID.timbres for c in GRID.chords for k in GRID.keys
    }
    for s in grid_signals:
        assert s.attributes() == {"instrument": s.timbre, "chord": s.chord, "key": s.key}
        assert s.audio.shape == (int(SECONDS * SR),) and s.sample_rate == SR
        assert np.sqrt(np.mean(s.audio**2)) > 0.02


def test_low_sample_rates_are_rendered_at_a_fluidsynth_rate_and_resampled() -> None:
    part = signals.Part(signals.GM_PROGRAMS["piano"], (signals.Note(57, 0.0, 1.5),))  # A3 = 220 Hz
    for sr in (2048, SR):
        y = signals.render([part], sample_rate=sr, duration=2.0)
        assert y.shape == (2 * sr,)
        spec = np.abs(np.fft.rfft(y))
        freqs = np.fft.rfftfreq(len(y), 1 / sr)
        band = (freqs > 180) & (freqs < 260)
        assert abs(freqs[band][np.argmax(spec[band])] - 220.0) < 1.0  # right pitch, so right rate
        assert np.max(np.abs(y[-sr // 10 :])) < 0.2 * np.max(np.abs(y))  # and released in time


def test_pairs_differ_in_exactly_one_attribute() -> None:
    attrs = [{"instrument": i, "chord": c, "key": k}
             for i in ("sine", "piano", "sax") for c in ("major", "minor") for k in ("Eb2", "Bb2", "A3", "G4")]
    attrs.append({"instrument": "drums:4-beat", "chord": "none", "key": "none"})  # not in the grid
    attrs.append(dict(attrs[0]))  # a duplicate: identical attributes are not a pair
    pairs = {a: correlation.attribute_pairs(attrs, a) for a in ATTRIBUTES}
    # keys: 6 pairs per (instrument, chord); chords: 1 per (instrument, key); instruments: 3 per (chord, key)
    # keys: 6 pairs in each of the 6 (instrument, chord) groups, + the duplicate of signal 0 with the 3 other keys;
    # chords: 1 in each of the 12 (instrument, key) groups, + the duplicate with the other chord;
    # instruments: 3 in each of the 8 (chord, key) groups, + the duplicate with the 2 other instruments.
    assert len(pairs["key"]) == 6 * 6 + 3
    assert len(pairs["chord"]) == 12 + 1
    assert len(pairs["instrument"]) == 3 * 8 + 2
    for attribute, found in pairs.items():
        for i, j in found:
            assert i < j
            assert attrs[i][attribute] != attrs[j][attribute]
            assert all(attrs[i][o] == attrs[j][o] for o in ATTRIBUTES if o != attribute)
            assert 24 not in (i, j)  # the drum pattern
    assert (0, 25) not in pairs["key"]


def test_unknown_attribute_is_rejected() -> None:
    with pytest.raises(ParameterError, match="'tempo'"):
        correlation.attribute_groups([{"key": "A3"}], "tempo")


# ---------------------------------------------------------------------------------------------- numerics


def test_normalised_dot_products_equal_numpy_corrcoef(rng: np.random.Generator) -> None:
    maps = rng.standard_normal((5, 3, 7, 11)).astype(np.float32) * np.array([1, 1e-4, 1e4], np.float32)[:, None, None]
    maps[1] += 5.0  # an offset: Pearson is invariant to it
    maps[2, 1] = 0.0  # all-zero map
    maps[3, 2] = 7.5  # constant non-zero map
    z, constant = correlation.normalise_maps(maps)
    assert z.dtype == np.float32 and z.shape == (5, 3, 77)
    assert constant.tolist() == [[False] * 3, [False] * 3, [False, True, False], [False, False, True], [False] * 3]
    corr, defined = correlation.group_correlations(z, constant)
    assert corr.shape == defined.shape == (3, 5, 5) and np.all(np.isfinite(corr))
    flat = maps.reshape(5, 3, -1).astype(np.float64)
    for f in range(3):
        for i in range(5):
            for j in range(5):
                if constant[i, f] or constant[j, f]:
                    assert not defined[f, i, j] and corr[f, i, j] == 0.0
                else:
                    assert defined[f, i, j]
                    assert corr[f, i, j] == pytest.approx(np.corrcoef(flat[i, f], flat[j, f])[0, 1], abs=TOL)
    assert np.allclose(corr, np.swapaxes(corr, 1, 2), atol=1e-12)  # symmetric in the pair order


def test_moments_merge_like_numpy(rng: np.random.Generator) -> None:
    x = rng.standard_normal(101)
    merged = correlation.Moments()
    for part in np.array_split(x, 7):
        merged = merged.merge(correlation.Moments.of(part, n_pairs=1))
    assert merged.n == 101 and merged.n_pairs == 7
    assert merged.mean == pytest.approx(x.mean(), abs=1e-14)
    assert merged.std == pytest.approx(x.std(), abs=1e-14)
    assert correlation.Moments().std is None and correlation.Moments().mean_or_none is None


# ---------------------------------------------------------------------------------------------- the analysis


def test_table_matches_a_numpy_corrcoef_reference(
    result: correlation.CorrelationResult, maps: dict[int, np.ndarray], grid_signals: list[signals.ModelSignal]
) -> None:
    reference = _reference_table(maps, [s.attributes() for s in grid_signals])
    assert [(r.layer, r.attribute) for r in result.table] == [(L, a) for L in (1, 2, 3, 4, 5) for a in ATTRIBUTES]
    for row in result.table:
        values, n_pairs, n_undefined, per_feature = reference[(row.layer, row.attribute)]
        assert row.n_pairs == n_pairs == 4  # 2 × 2 groups of one pair each
        assert row.n_undefined == n_undefined
        assert row.mean == pytest.approx(np.mean(values), abs=TOL)
        assert row.std == pytest.approx(np.std(values), abs=TOL)
        for frow in (r for r in result.per_feature if (r.layer, r.attribute) == (row.layer, row.attribute)):
            expected = per_feature[frow.feature]
            assert frow.n_pairs == 4 and frow.n_undefined == 4 - len(expected)
            if expected:
                assert frow.mean == pytest.approx(np.mean(expected), abs=TOL)
                assert frow.std == pytest.approx(np.std(expected), abs=TOL)
            else:
                assert frow.mean is None and frow.std is None
    assert len(result.per_feature) == 5 * 4 * 3
    # Zero maps are reported exactly where the reference found constant maps.
    flat_constant = {(L, f, grid_signals[i].signal_id)
                     for L, m in maps.items() for i in range(m.shape[0]) for f in range(m.shape[1])
                     if np.ptp(m[i, f]) == 0}
    assert {(c.layer, c.feature, c.signal_id) for c in result.zero_features} == flat_constant
    assert set(result.timings) == {"deconvolution", "correlation"}


def test_deconvolution_uses_the_models_stft(model: keras.Model, grid_signals: list[signals.ModelSignal],
                                            maps: dict[int, np.ndarray]) -> None:
    from tfaural import spectral
    from tfaural.deconv import deconvolve

    x = spectral.magnitude(grid_signals[3].audio[None], n_fft=64, hop_length=32)
    expected = deconvolve(model, x, layer=4).numpy()[0]
    assert maps[4].shape == (8, 4, 33, int(SECONDS * SR) // 32 + 1)
    np.testing.assert_allclose(maps[4][3], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_identical_signals_correlate_at_one(model: keras.Model, grid_signals: list[signals.ModelSignal]) -> None:
    original = grid_signals[5]
    twin = dataclasses.replace(original, key="X9", signal_id=original.signal_id + "-twin")
    result = correlation.analyse(model, [original, twin], progress=False)
    row = result.row(1, "key")
    assert row.n_pairs == 1
    for layer in (1, 2, 3, 4, 5):
        key = result.row(layer, "key")
        assert key.mean == pytest.approx(1.0, abs=TOL) and key.std == pytest.approx(0.0, abs=TOL)
        assert result.row(layer, "chord").n_pairs == 0 and result.row(layer, "chord").mean is None
    pc = next(p for p in result.correlations if (p.layer, p.attribute) == (3, "key"))
    assert pc.pairs == ((original.signal_id, twin.signal_id),)
    np.testing.assert_allclose(pc.values[pc.defined], 1.0, atol=TOL)


def test_table_is_symmetric_in_the_pair_order(
    model: keras.Model, grid_signals: list[signals.ModelSignal], result: correlation.CorrelationResult
) -> None:
    reverse = correlation.analyse(model, grid_signals[::-1], progress=False)
    for a, b in zip(result.table, reverse.table):
        assert (a.layer, a.attribute, a.n_pairs, a.n_undefined) == (b.layer, b.attribute, b.n_pairs, b.n_undefined)
        assert a.mean == pytest.approx(b.mean, abs=1e-12) and a.std == pytest.approx(b.std, abs=1e-12)
    forward = {(p.layer, p.attribute): dict(zip(p.pairs, p.values.tolist())) for p in result.correlations}
    for p in reverse.correlations:
        for (x, y), values in zip(p.pairs, p.values.tolist()):
            np.testing.assert_allclose(values, forward[(p.layer, p.attribute)][(y, x)], atol=1e-12)


class _FakeDeconvolver:
    """Known maps without a model: seeded noise per waveform, feature 0 all zero for ``zero_for``; layer 2 all zero."""

    levels = (1, 2)
    sample_rate = SR

    def __init__(self, zero_for: Sequence[np.ndarray]) -> None:
        self._zero_for = [np.asarray(y) for y in zero_for]

    def n_features(self, layer: int) -> int:
        return 3

    def __call__(self, waveforms: np.ndarray, *, layer: int) -> np.ndarray:
        out = np.zeros((len(waveforms), 3, 4, 5), np.float32)
        if layer == 2:
            return out
        for b, y in enumerate(waveforms):
            out[b] = np.random.default_rng(abs(hash(y.tobytes())) % 2**32).standard_normal((3, 4, 5))
            if any(np.array_equal(y, other) for other in self._zero_for):
                out[b, 0] = 0.0
        return out


def test_constant_maps_are_reported_not_nan(grid_signals: list[signals.ModelSignal], tmp_path: pathlib.Path) -> None:
    fake = _FakeDeconvolver([s.audio for s in grid_signals if s.timbre == "piano"])
    result = correlation.analyse(fake, grid_signals, progress=False)
    pianos = [s.signal_id for s in grid_signals if s.timbre == "piano"]
    layer1_zero = [c for c in result.zero_features if c.layer == 1]
    assert layer1_zero == [ConstantMap(1, 0, sid) for sid in pianos]
    assert len([c for c in result.zero_features if c.layer == 2]) == 8 * 3
    for row in result.table:
        assert row.mean is None or math.isfinite(row.mean)
        assert row.std is None or math.isfinite(row.std)
    # Layer 1: the 2 piano key pairs and 2 piano chord pairs lose feature 0; all 4 instrument pairs do.
    assert [result.row(1, a).n_undefined for a in ATTRIBUTES] == [2, 2, 4]
    assert all(result.row(1, a).mean is not None for a in ATTRIBUTES)
    # Layer 2: nothing is defined.
    for a in ATTRIBUTES:
        row = result.row(2, a)
        assert (row.mean, row.std, row.n_pairs, row.n_undefined) == (None, None, 4, 12)
    summary = result.summary()
    assert summary["zero_features"]["count"] == 4 + 24
    assert {"layer": 2, "feature": 1, "n_signals": 8, "signals": "all"} in summary["zero_features"]["features"]
    paths = correlation.save(result, tmp_path / "out", summary={"grid": "test"})
    text = pathlib.Path(paths["correlations.csv"]).read_text()
    assert "nan" not in text.lower() and "2,key,,,4,12" in text
    loaded = json.loads(pathlib.Path(paths["summary.json"]).read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert loaded["table"][3]["mean"] is None and loaded["grid"] == "test"


def test_outputs_round_trip_and_the_figure_is_drawn(result: correlation.CorrelationResult,
                                                     tmp_path: pathlib.Path) -> None:
    paths = correlation.save(result, tmp_path, summary={"model": {"family": "choi"}})
    assert sorted(pathlib.Path(p).name for p in paths.values()) == sorted(
        ["correlations.csv", "per_feature.parquet", "summary.json", "figure10.png"])
    assert correlation.read_table_csv(pathlib.Path(paths["correlations.csv"]).read_text()) == result.table
    table = pq.read_table(paths["per_feature.parquet"])
    assert table.column_names == list(correlation.FEATURE_COLUMNS)
    rows = table.to_pylist()
    assert [correlation.FeatureRow(**r) for r in rows] == list(result.per_feature)
    summary = json.loads(pathlib.Path(paths["summary.json"]).read_text())
    assert summary["n_signals"] == 8 and summary["model"] == {"family": "choi"}
    assert [correlation.TableRow(**r) for r in summary["table"]] == list(result.table)
    pixels = mpimg.imread(paths["figure10.png"])
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels[..., :3].std() > 0.05  # not blank
    # Each attribute is drawn in its own colour: the default cycle's blue, orange and green all appear.
    rgb = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert np.any(np.all(np.abs(rgb - colour) < 8, axis=1)), colour


def test_samplecnn_waveform_maps_are_correlated(grid_signals: list[signals.ModelSignal]) -> None:
    keras.utils.set_random_seed(5)
    model = samplecnn_model(filter_sizes=(3, 3, 3), n_outputs=2, channels=(4, 4), front_filters=4, top_filters=4,
                      sample_rate=SR)
    subset = [s for s in grid_signals if s.timbre == "sine"]
    result = correlation.analyse(model, subset, progress=False)
    maps = correlation.deconvolve_signals(model, subset)
    layer = max(maps)
    assert maps[layer].ndim == 3 and maps[layer].shape[-1] == int(SECONDS * SR)  # [n, k, samples]
    reference = _reference_table(maps, [s.attributes() for s in subset])
    for row in result.table:
        values, n_pairs, n_undefined, _ = reference[(row.layer, row.attribute)]
        assert (row.n_pairs, row.n_undefined) == (n_pairs, n_undefined)
        if values:
            assert row.mean == pytest.approx(np.mean(values), abs=TOL)
    assert result.row(layer, "instrument").n_pairs == 0  # one timbre: no instrument pairs


def test_musicnn_maps_are_log_mel_deconvolutions_of_librosa_mel_power(tmp_path: pathlib.Path) -> None:
    """A log-mel tagger (musicnn family) is fed mel power, not the waveform, and its maps are log-mel."""
    import librosa

    from tfaural.deconv import deconvolve
    from tfaural.models import musicnn_tagger

    keras.utils.set_random_seed(7)
    model = musicnn_tagger(architecture="vgg", n_outputs=3, n_mels=64, n_frames=96, n_filters=8)
    config = model.tfaural_config
    grid = signals.SignalGrid(timbres=("sine",), chords=("major", "minor"), keys=("A3", "G4"), duration=2.0)
    subset = signals.model_signals(grid, sample_rate=config.sample_rate, cache_dir=tmp_path)
    maps = correlation.deconvolve_signals(model, subset, layers=[2, 5])
    frames = int(2.0 * config.sample_rate) // config.hop_length + 1
    assert maps[5].shape == (4, 8, 64, frames)  # [n, k, n_mels, frames]: the log-mel domain
    mel = librosa.feature.melspectrogram(y=subset[1].audio.astype(np.float64), sr=config.sample_rate,
                                         n_fft=config.n_fft, hop_length=config.hop_length, n_mels=64, power=2.0)
    expected = deconvolve(model, mel[np.newaxis, ..., np.newaxis].astype(np.float32), layer=2).numpy()[0]
    expected = expected.reshape(maps[2][1].shape)
    # librosa's float64 mel vs tfaural's float32 one: equal to ~1e-5, except where a max-pool's switch
    # flips between two near-equal inputs (observed: 0.1% of the values), so allow 1% of them to differ.
    close = np.isclose(maps[2][1], expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert close.mean() > 0.99
    for actual, wanted in zip(maps[2][1], expected):
        assert np.corrcoef(actual.ravel(), wanted.ravel())[0, 1] > 0.99
    result = correlation.analyse(model, subset, layers=[2, 5], progress=False)
    reference = _reference_table(maps, [s.attributes() for s in subset])
    for row in result.table:
        values, n_pairs, n_undefined, _ = reference[(row.layer, row.attribute)]
        assert (row.n_pairs, row.n_undefined) == (n_pairs, n_undefined)
        if values:
            assert row.mean == pytest.approx(np.mean(values), abs=TOL)
    assert result.row(5, "key").n_pairs == 2 and result.row(5, "chord").n_pairs == 2


def test_invalid_inputs_are_rejected(model: keras.Model, grid_signals: list[signals.ModelSignal]) -> None:
    wrong_rate = [dataclasses.replace(s, sample_rate=8000) for s in grid_signals]
    with pytest.raises(ParameterError, match="8000 Hz but the model expects 4000 Hz"):
        correlation.analyse(model, wrong_rate, progress=False)
    short = [grid_signals[0], dataclasses.replace(grid_signals[1], audio=grid_signals[1].audio[:-10])]
    with pytest.raises(ParameterError, match="different lengths"):
        correlation.analyse(model, short, progress=False)
    with pytest.raises(ParameterError, match="layer=9"):
        correlation.analyse(model, grid_signals, layers=[9], progress=False)
    with pytest.raises(ParameterError, match="only 1 signal"):
        correlation.analyse(model, grid_signals[:1], progress=False)
    with pytest.raises(ModelError, match="cannot deconvolve"):
        correlation.analyse(object(), grid_signals, progress=False)
