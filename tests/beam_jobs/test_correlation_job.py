"""beam_jobs.correlation on a real Beam runner (in-process DirectRunner) with a real SavedModel export.

A tiny Choi CNN is exported (``export.exporter.export_model``); the job renders the reduced grid
(2 timbres × 2 chords × 2 keys, 2 s, FluidSynth + additive sines), deconvolves every feature of
every layer through the export's ``deconvolve`` signature and the shared RunInference handler,
groups by attribute and writes the four outputs. Its numbers are compared with
:func:`tfaural.correlation.analyse` on the Keras model and the same signals: both normalise
float32 maps in float64, so they differ only by the float32 rounding of two deconvolution graphs
(the SavedModel's and the Keras model's); the stated tolerance is 1e-6 (observed: ~1e-15, the two
graphs give identical maps on one machine).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
from jobs_testing import broken_copy, capture_progress, traced_peak
from matplotlib import image as mpimg

from beam_jobs import correlation as job
from beam_jobs.options import parse_job_args
from export import exporter
from export.budget import WorkBudget
from tfaural import correlation, signals
from tfaural.config import AudioConfig, SegmentConfig
from tfaural.correlation import ATTRIBUTES, FeatureRow, TableRow
from tfaural.errors import ModelError, ParameterError, TfauralError
from tfaural.formats import ExportMetadata, read_export_metadata
from tfaural.models import choi_cnn, config_from_model
from tfaural.training.run import RunInfo

SR = 4000
SECONDS = 2.0
GRID = ["--timbres=sine,piano", "--chords=major,minor", "--keys=A3,G4", f"--signal-seconds={SECONDS}"]
#: What the job calls (``deconvolve``) beside ``serving_default``: the other signatures' graphs are not traced.
CORRELATION_SIGNATURES = "serving_default,deconvolve"
#: Beam (SavedModel graph) vs library (Keras model): float32 deconvolutions of two graphs.
TOL = 1e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, str]:
    keras.utils.set_random_seed(3)
    model = choi_cnn(n_outputs=3, n_freq=33, n_frames=33, n_fft=64, hop_length=32, n_filters=4, fc_units=(8,),
                     sample_rate=SR)
    info = RunInfo(model=config_from_model(model), labels=("ballad", "dance", "hiphop"), task="single-label",
                   audio=AudioConfig(sample_rate=SR), segment=SegmentConfig(length=1024))
    base = tmp_path_factory.mktemp("exports")
    return model, exporter.export_model(model, info, base, verify=False, signatures=CORRELATION_SIGNATURES)


@pytest.fixture(scope="module")
def job_run(exported: tuple[keras.Model, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, object]:
    _, export_dir = exported
    output = tmp_path_factory.mktemp("correlation")
    cache = tmp_path_factory.mktemp("signals")
    result = job.run([f"--model={export_dir}", f"--output={output}", f"--signals={cache}", *GRID,
                      "--runner=DirectRunner"], save_main_session=False)
    return output, result


@pytest.mark.slow
def test_job_equals_the_library(exported: tuple[keras.Model, str], job_run: tuple[pathlib.Path, object]) -> None:
    model, _ = exported
    output, _ = job_run
    grid = signals.SignalGrid(timbres=("sine", "piano"), chords=("major", "minor"), keys=("A3", "G4"),
                              duration=SECONDS)
    library_signals = signals.model_signals(grid, sample_rate=SR)
    library = correlation.analyse(model, library_signals, progress=False)

    table = correlation.read_table_csv((output / "correlations.csv").read_text())
    assert [(r.layer, r.attribute) for r in table] == [(L, a) for L in (1, 2, 3, 4, 5) for a in ATTRIBUTES]
    for beam_row, lib_row in zip(table, library.table):
        assert (beam_row.n_pairs, beam_row.n_undefined) == (lib_row.n_pairs, lib_row.n_undefined)
        assert beam_row.n_pairs == 4
        for a, b in ((beam_row.mean, lib_row.mean), (beam_row.std, lib_row.std)):
            assert (a is None) == (b is None)
            if a is not None:
                assert a == pytest.approx(b, abs=TOL)

    rows = [FeatureRow(**r) for r in pq.read_table(output / "per_feature.parquet").to_pylist()]
    assert [(r.layer, r.feature, r.attribute) for r in rows] == [
        (r.layer, r.feature, r.attribute) for r in library.per_feature]
    for beam_row, lib_row in zip(rows, library.per_feature):
        assert (beam_row.n_pairs, beam_row.n_undefined) == (lib_row.n_pairs, lib_row.n_undefined)
        if lib_row.mean is None:
            assert beam_row.mean is None and beam_row.std is None
        else:
            assert beam_row.mean == pytest.approx(lib_row.mean, abs=TOL)
            assert beam_row.std == pytest.approx(lib_row.std, abs=TOL)

    summary = json.loads((output / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert [TableRow(**r) for r in summary["table"]] == list(table)
    assert summary["grid"]["n_signals"] == 8 and summary["grid"]["sample_rate"] == SR
    assert summary["model"]["family"] == "choi" and summary["model"]["labels"] == ["ballad", "dance", "hiphop"]
    assert set(summary["timings_seconds"]) == {"render_signals", "pipeline", "total"}
    expected_zero = correlation.zero_feature_summary(library.zero_features, n_signals=8)
    assert summary["zero_features"] == expected_zero

    pixels = mpimg.imread(output / "figure10.png")
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05

    with np.load(output / "signals.npz") as analysed:  # what the workers deconvolved
        assert analysed["signal_ids"].tolist() == [s.signal_id for s in library_signals]
        np.testing.assert_array_equal(analysed["audio"], np.stack([s.audio for s in library_signals]))


@pytest.mark.slow
def test_job_counters_and_overwrite(exported: tuple[keras.Model, str], job_run: tuple[pathlib.Path, object]) -> None:
    _, export_dir = exported
    output, result = job_run
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]  # type: ignore[attr-defined]
                if c.key.metric.namespace == "correlation"}
    assert counters["deconvolutions"] == 8 * 5
    # Pair correlations: 4 pairs per attribute, 4 features, 5 layers, 3 attributes.
    assert counters["pair_correlations"] == 4 * 4 * 5 * 3
    with pytest.raises(ParameterError, match="already holds results"):
        job.run([f"--model={export_dir}", f"--output={output}", *GRID, "--runner=DirectRunner"],
                save_main_session=False)


@pytest.mark.slow
def test_features_are_split_to_fit_the_exports_per_call_budget(
    exported: tuple[keras.Model, str], job_run: tuple[pathlib.Path, object], tmp_path: pathlib.Path
) -> None:
    """An export whose budget takes 2 of a layer's 4 features of a 2-s clip per call (as MTT_vgg's takes 128 of
    128 maps up to 15 s, 64 of a 30-s clip): the job and the library ask in chunks and get the same numbers."""
    model, _ = exported
    info = RunInfo(model=config_from_model(model), labels=("ballad", "dance", "hiphop"), task="single-label",
                   audio=AudioConfig(sample_rate=SR), segment=SegmentConfig(length=1024))
    # 5 feature-seconds = 20,000 feature-samples at 4 kHz: 2 features x 8,000 samples fit, 3 do not.
    tight = exporter.export_model(model, info, tmp_path / "exports", max_deconv_seconds=4.0,
                                  budget=WorkBudget(max_deconv_feature_seconds=5.0), verify=False,
                                  signatures=CORRELATION_SIGNATURES)
    metadata = read_export_metadata(tight)
    assert correlation.features_per_call(metadata, n_features=4, samples=int(SECONDS * SR)) == 2
    output = tmp_path / "correlation"
    # Two of the five layers (--layers, in any order): the same numbers as those layers of the whole run.
    result = job.run([f"--model={tight}", f"--output={output}", *GRID, "--layers=3,1", "--runner=DirectRunner"],
                     save_main_session=False)
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]  # type: ignore[attr-defined]
                if c.key.metric.namespace == "correlation"}
    assert counters["deconvolutions"] == 8 * 2 * 2  # 8 signals x 2 layers, two calls per (signal, layer)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["features_per_call"] == {"1": 2, "3": 2} and summary["layers"] == [1, 3]

    whole, _ = job_run  # the same model and grid, every feature of every layer in one call
    chunked = correlation.read_table_csv((output / "correlations.csv").read_text())
    reference = [r for r in correlation.read_table_csv((whole / "correlations.csv").read_text()) if r.layer in (1, 3)]
    assert len(chunked) == 2 * len(ATTRIBUTES)
    assert [(r.layer, r.attribute, r.n_pairs, r.n_undefined) for r in chunked] == [
        (r.layer, r.attribute, r.n_pairs, r.n_undefined) for r in reference]
    for a, b in zip(chunked, reference):
        assert (a.mean is None) == (b.mean is None)
        if a.mean is not None:
            assert a.mean == pytest.approx(b.mean, abs=TOL) and a.std == pytest.approx(b.std, abs=TOL)
    rows = [FeatureRow(**r) for r in pq.read_table(output / "per_feature.parquet").to_pylist()]
    whole_rows = [FeatureRow(**r) for r in pq.read_table(whole / "per_feature.parquet").to_pylist()
                  if r["layer"] in (1, 3)]
    assert [(r.layer, r.feature, r.attribute, r.n_undefined) for r in rows] == [
        (r.layer, r.feature, r.attribute, r.n_undefined) for r in whole_rows]
    for a_row, b_row in zip(rows, whole_rows):
        assert (a_row.mean is None) == (b_row.mean is None)
        if a_row.mean is not None:
            assert a_row.mean == pytest.approx(b_row.mean, abs=TOL)
    whole_zero = json.loads((whole / "summary.json").read_text())["zero_features"]["features"]
    assert [z for z in whole_zero if z["layer"] in (1, 3)] == summary["zero_features"]["features"]

    # The library's export path splits the same way.
    library_signals = signals.model_signals(
        signals.SignalGrid(timbres=("sine", "piano"), chords=("major", "minor"), keys=("A3", "G4"), duration=SECONDS),
        sample_rate=SR)
    maps = correlation.deconvolve_signals(tight, library_signals[:2], layers=[3])
    expected = correlation.deconvolve_signals(model, library_signals[:2], layers=[3])
    np.testing.assert_allclose(maps[3], expected[3], rtol=1e-5, atol=1e-6 * np.abs(expected[3]).max())
    assert correlation.features_per_call(metadata, n_features=4, samples=16000) == 1
    with pytest.raises(ParameterError, match="exceed the export's deconvolution budget of 20000 feature-samples"):
        correlation.features_per_call(metadata, n_features=4, samples=12000, batch=2)
    format1 = ExportMetadata.from_dict({"sample_rate": SR})  # format 1: no budget
    assert correlation.features_per_call(format1, n_features=4, samples=10**9) == 4


def test_settings_and_errors(tmp_path: pathlib.Path) -> None:
    assert job.main(["--output", str(tmp_path)]) == 2  # no --model
    with pytest.raises(ModelError, match="not a tfaural SavedModel export"):
        job.run([f"--model={tmp_path}", f"--output={tmp_path / 'out'}", "--runner=DirectRunner"])
    options = parse_job_args(
        ["--model=m", "--output=o", "--timbres=sine,program40", "--chords=major;power=0,7", "--keys=C4"],
        prog="t", description="", option_classes=job.JOB.option_classes)
    settings = job.Settings.from_options(options)
    assert settings.grid.timbres == ("sine", "program40")
    assert settings.grid.chords == ("major", "power=0,7") and settings.grid.keys == ("C4",)
    assert settings.batch_size == 1 and settings.grid.duration == 4.0
    for bad, message in (("--keys=H2", "'H2'"), ("--timbres=banjo", "'banjo'"), ("--signal-seconds=0", "seconds"),
                         ("--signals=gs://bucket/signals", "--signals gs://bucket/signals: expected a local folder")):
        options = parse_job_args(["--model=m", "--output=o", bad], prog="t", description="",
                                     option_classes=job.JOB.option_classes)
        with pytest.raises(ParameterError, match=message):
            job.Settings.from_options(options)


def test_a_model_that_does_not_load_stops_the_job_with_its_error(exported: tuple[keras.Model, str],
                                                                   tmp_path: pathlib.Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The model loads at the first signal it deconvolves; if it cannot, the job stops (exit 2) with that error,
    not a signal's."""
    broken = broken_copy(exported[1], tmp_path)
    assert job.main([f"--model={broken}", f"--output={tmp_path / 'out'}", "--timbres=sine", "--chords=major",
                     "--keys=A3,G4", f"--signal-seconds={SECONDS}", "--runner=DirectRunner"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"correlation: error: the model '{broken}' could not be loaded: cannot load the "
                           "SavedModel"), last


def test_layers_are_checked_against_the_export(exported: tuple[keras.Model, str]) -> None:
    _, export_dir = exported
    metadata = read_export_metadata(export_dir)

    def settings(*flags: str) -> job.Settings:
        options = parse_job_args([f"--model={export_dir}", "--output=o", *flags], prog="t", description="",
                                 option_classes=job.JOB.option_classes)
        return job.Settings.from_options(options).with_metadata(metadata)

    assert settings().layers == (1, 2, 3, 4, 5)
    assert settings("--layers=5,2,5").layers == (2, 5) and settings("--layers=2-4").layers == (2, 3, 4)
    for bad, message in (("--layers=1,9", r"names \[9\], which do not exist: expected values in 1-5"),
                         ("--layers=0", r"names \[0\]"), ("--layers=pool1", "is invalid: expected 'all'")):
        with pytest.raises(ParameterError, match=message):
            settings(bad)
    assert job.main([f"--model={export_dir}", "--output=o", "--layers=6"]) == 2  # one line, no traceback


def test_without_signal_seconds_the_signals_are_as_long_as_the_export_needs(exported: tuple[keras.Model, str]) -> None:
    """The paper's 4 s unless the export's min_deconv_seconds is longer (then that, rounded up to 0.1 s, but no
    longer than its max_deconv_seconds); a given --signal-seconds is kept as it is."""
    _, export_dir = exported
    data = json.loads((pathlib.Path(export_dir) / "assets" / "metadata.json").read_text())
    rate = data["sample_rate"]

    def duration(*flags: str, **changes: float) -> float:
        metadata = ExportMetadata.from_dict({**data, **changes})
        options = parse_job_args([f"--model={export_dir}", "--output=o", *flags], prog="t", description="",
                                 option_classes=job.JOB.option_classes)
        return job.Settings.from_options(options).with_metadata(metadata).grid.duration

    long = {"segment_length": int(5.03 * rate), "min_deconv_samples": int(5.03 * rate)}  # a 5.03-s patch model's
    assert duration() == 4.0  # this export needs 992 samples
    assert duration(**long) == 5.1
    assert duration(**long, max_deconv_seconds=5.05) == 5.05
    assert duration("--signal-seconds=2", **long) == 2.0  # refused later, by name


def test_signals_shorter_than_the_deconvolution_takes_are_refused(exported: tuple[keras.Model, str],
                                                                  tmp_path: pathlib.Path) -> None:
    """The export's min_deconv_samples: 32 frames (31 hops of 32) for five 2x2 poolings, under its 1024 segment."""
    _, export_dir = exported
    with pytest.raises(ParameterError, match=r"--signal-seconds 0\.1: the signals have 400 samples but the export's "
                                             r"deconvolve signature takes 992-"):
        job.run([f"--model={export_dir}", f"--output={tmp_path}", "--timbres=sine", "--chords=major",
                 "--keys=A3,G4", "--signal-seconds=0.1", "--runner=DirectRunner"], save_main_session=False)


@pytest.mark.slow
def test_runs_as_a_module(exported: tuple[keras.Model, str], tmp_path: pathlib.Path) -> None:
    _, export_dir = exported
    done = subprocess.run(
        [sys.executable, "-m", "beam_jobs.correlation", f"--model={export_dir}", f"--output={tmp_path}",
         "--timbres=sine", "--chords=major", "--keys=A3,G4", f"--signal-seconds={SECONDS}", "--layers=1,4"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Locally in one process by default: the shuffled maps never cross to worker processes.
    assert "correlation: runner: DirectRunner, in_memory, 1 worker(s)" in done.stderr
    table = correlation.read_table_csv((tmp_path / "correlations.csv").read_text())
    assert [(r.attribute, r.n_pairs) for r in table if r.layer == 1] == [("key", 1), ("chord", 0), ("instrument", 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(job.OUTPUT_FILES)
    rows = pq.read_table(tmp_path / "per_feature.parquet").to_pylist()
    assert [r.layer for r in table] == [1, 1, 1, 4, 4, 4]
    assert len(rows) == 2 * 4 * 3 and all(r["mean"] is None for r in rows if r["attribute"] != "key")
    help_text = subprocess.run([sys.executable, "-m", "beam_jobs.correlation", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for flag in ("--model", "--output", "--signals", "--soundfont", "--timbres", "--chords", "--keys", "--layers"):
        assert flag in help_text


@pytest.mark.parametrize("front", ["stft", "stft-uncentred", "mel", "waveform"])
def test_the_maps_bytes_are_what_the_models_input_holds(exported: tuple[keras.Model, str], front: str) -> None:
    """One map per feature, layer and signal, of the model's input representation (librosa's shapes: an
    independent reference). The demo's Choi CNN on the paper's full grid: 11.9 GiB of maps, which the job
    keeps on disk; a disk with less free space (and a 5 % margin) is refused before anything runs."""
    import librosa

    _, export_dir = exported
    data = json.loads((pathlib.Path(export_dir) / "assets" / "metadata.json").read_text())
    samples = 8000
    if front == "waveform":
        data = {**data, "stft": None, "mel": None}
        expected = samples
    elif front == "mel":
        data = {**data, "stft": {**data["stft"], "n_fft": 512, "hop_length": 256}, "mel": {"n_mels": 96}}
        expected = librosa.feature.melspectrogram(y=np.zeros(samples), sr=16000, n_fft=512, hop_length=256,
                                                  n_mels=96).size
    else:
        center = front == "stft"
        data = {**data, "stft": {**data["stft"], "center": center}}
        expected = librosa.stft(np.zeros(samples), n_fft=64, hop_length=32, center=center).size
    metadata = ExportMetadata.from_dict(data)
    assert job.map_elements(metadata, samples) == expected
    assert job.map_bytes(metadata, [1, 2], signals=3, samples=samples) == 3 * 2 * 4 * expected * 4

    demo = ExportMetadata.from_dict({
        **data, "sample_rate": 11025, "stft": {"n_fft": 512, "hop_length": 256, "center": True}, "mel": None,
        "features_per_layer": {str(layer): 64 for layer in range(1, 6)}})
    full = job.map_bytes(demo, None, signals=224, samples=44100)
    assert full == 4 * 224 * 320 * 257 * 173  # 11.9 GiB
    job.check_map_space(full, folder="out", free=13 * job.GIB)
    with pytest.raises(ParameterError, match=r"feature maps take 11\.87 GiB, which the job keeps in out/\.maps while "
                                             r"it runs, and 12\.00 GiB is free there: free some space, choose an "
                                             r"--output on a larger disk, or analyse a smaller grid"):
        job.check_map_space(full, folder="out", free=12 * job.GIB)


def test_a_stored_map_reads_back_and_a_damaged_store_is_named(tmp_path: pathlib.Path) -> None:
    store = job.MapStore(str(tmp_path))
    z = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    refs = store.write(z, layer=2, index=7, start=4)
    assert [(pathlib.Path(r.path).relative_to(tmp_path).as_posix(), r.row, r.size) for r in refs] == [
        (".maps/layer-2/00007-00004.f32", row, 5) for row in range(3)]
    for row, ref in enumerate(refs):
        np.testing.assert_array_equal(job.MapStore.read(ref), z[row])
    path = pathlib.Path(refs[0].path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(TfauralError, match=r"00007-00004\.f32: too short for map 2 \(bytes 40 to 60; 16 of them "
                                           r"there\)"):
        job.MapStore.read(refs[2])
    store.remove()
    assert not (tmp_path / job.MAPS_FOLDER).exists()
    with pytest.raises(TfauralError, match=r"00007-00004\.f32: cannot read the stored feature maps"):
        job.MapStore.read(refs[0])
    store.remove()  # nothing there: nothing to do


@pytest.mark.slow
def test_the_jobs_memory_does_not_grow_with_the_maps(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The grouping carries references, not maps: on a grid whose maps take 0.38 GiB, the job's Python and NumPy
    allocations (tracemalloc: the in-process runner, Beam's coders and buffers, the maps; not TensorFlow's own
    tensors) peak below a quarter of them (a grouping of the maps themselves holds all of them at once). The
    maps are stored in .maps/ in the output folder while the job runs, and deleted afterwards with anything a
    killed run left there. The launcher counts their files: the deconvolutions done (a log line every 0.5 s)."""


    keras.utils.set_random_seed(3)
    model = choi_cnn(n_outputs=3, n_freq=257, n_frames=33, n_fft=512, hop_length=64, n_filters=16, fc_units=(8,),
                     sample_rate=SR)
    info = RunInfo(model=config_from_model(model), labels=("ballad", "dance", "hiphop"), task="single-label",
                   audio=AudioConfig(sample_rate=SR), segment=SegmentConfig(length=64 * 32))
    export_dir = exporter.export_model(model, info, tmp_path / "exports", verify=False,
                                       signatures=CORRELATION_SIGNATURES)
    seconds = 5.0
    grid = ["--timbres=sine,piano", "--chords=major,minor", "--keys=Eb2,Bb2,A3,G4", f"--signal-seconds={seconds}"]
    maps = job.map_bytes(read_export_metadata(export_dir), None, signals=16, samples=int(seconds * SR))
    assert maps == 16 * 5 * 16 * 257 * (1 + int(seconds * SR) // 64) * 4
    output = tmp_path / "out"
    stale = output / job.MAPS_FOLDER / "layer-1" / "00000-00000.f32"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed run")
    progress = capture_progress(monkeypatch, caplog, seconds=0.5)
    _, peak = traced_peak(lambda: job.run([f"--model={export_dir}", f"--output={output}", *grid,
                                           "--runner=DirectRunner"], save_main_session=False))
    assert peak < maps / 4, (peak, maps)
    assert not (output / job.MAPS_FOLDER).exists()
    assert sorted(p.name for p in output.iterdir()) == sorted(job.OUTPUT_FILES)
    table = correlation.read_table_csv((output / "correlations.csv").read_text())
    assert {r.n_pairs for r in table if r.attribute == "key"} == {2 * 2 * 6}  # 4 keys: 6 pairs per group
    lines = progress()
    assert lines and lines[-1].startswith("correlation: 80 of 80 deconvolution(s) written (100%)"), lines


def test_moments_combine_to_the_same_bits_in_any_order() -> None:
    """Beam merges accumulators in an order of its choosing; the statistics must not depend on it."""
    rng = np.random.default_rng(11)
    parts = [correlation.Moments.of(rng.normal(0.3, 1.7, size=int(n)), n_pairs=int(n))
             for n in rng.integers(1, 40, size=60)]
    fn = job.MomentsCombineFn(add_pairs=True)

    def combine(order: np.ndarray, splits: int) -> correlation.Moments:
        chunks = np.array_split(order, splits)
        accumulators = []
        for chunk in chunks:
            accumulator = fn.create_accumulator()
            for index in chunk:
                accumulator = fn.add_input(accumulator, parts[index])
            accumulators.append(accumulator)
        return fn.extract_output(fn.merge_accumulators(accumulators))

    results = {combine(rng.permutation(len(parts)), splits) for splits in (1, 3, 7) for _ in range(4)}
    assert len(results) == 1  # bit for bit
    (result,) = results
    assert result.n == sum(p.n for p in parts) and result.n_pairs == result.n
    naive = correlation.Moments()
    for part in parts:
        naive = naive.merge(part)
    assert result.mean == pytest.approx(naive.mean, rel=1e-12) and result.std == pytest.approx(naive.std, rel=1e-12)


def test_the_figure_title_names_the_model() -> None:
    """A published tagger by its name, an imported Keras file by its file (its labels may be output0, ...), others by
    family and first labels."""
    title = job._title
    musicnn = ExportMetadata.from_dict({"sample_rate": SR, "family": "musicnn", "labels": ["rock", "pop"],
                                        "run_extra": {"pretrained": {"name": "MTT_vgg"}}})
    keras_file = ExportMetadata.from_dict({"sample_rate": SR, "family": "keras", "labels": ["output0", "output1"],
                                           "model_config": {"kind": "keras", "source": "choi2016.keras"}})
    choi = ExportMetadata.from_dict({"sample_rate": SR, "family": "choi", "labels": ["a", "b", "c", "d", "e"]})
    assert "\nMTT_vgg (2 tags); error bars" in title(musicnn)
    assert "\nchoi2016.keras (2 outputs); error bars" in title(keras_file)
    assert "\nchoi model (a, b, c, d); error bars" in title(choi)
