"""An imported tagger used by every tool, end to end: CLI import, export + fresh-process verify (every signature,
deconvolve / auralise / attribute included), the Beam tag and auralise jobs over mixed-format catalogues with the
listening report, the Figure 10 correlation analysis, evaluation on shared tags and a fine-tuning step.

One module, so that its jobs share one import and one whole export of ``MTT_vgg`` (``make test`` gives each
module to one worker; its module-scoped fixtures are built once there)."""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from matplotlib import image as mpimg

from beam_jobs import correlation as correlation_job
from beam_jobs import make_tfrecords
from tfaural import correlation, signals
from tfaural.config import MusicnnConfig
from tfaural.correlation import ATTRIBUTES
from tfaural.datasets import demo
from tfaural.pretrained.probes import music_like
from tfaural.training import evaluate
from tfaural.training.run import load_run, read_run_info
from tfaural.training.train import TrainConfig, train

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("pretrained") / "mtt_vgg"
    done = _run("tfaural.pretrained", "musicnn/MTT_vgg", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "matches musicnn's own graph" in done.stdout and "hop 161 frames" in done.stdout
    return out


def test_import_writes_an_ordinary_run(run_dir: pathlib.Path) -> None:
    model, info = load_run(run_dir)
    assert model.get_layer("pool1").pool_size == (1, 4)
    assert isinstance(info.model, MusicnnConfig) and info.model.architecture == "vgg"
    assert info.audio.sample_rate == 16000 and info.task == "multi-label" and len(info.labels) == 50
    assert info.segment.length == 47616 and info.segment.step == 161 * 256
    pretrained = info.extra["pretrained"]
    assert pretrained["published_scores"]["roc_auc"] == pytest.approx(0.9030, abs=1e-4)
    assert pretrained["licence"].startswith("ISC")
    assert max(pretrained["parity_with_original_graph"].values()) <= 1e-5
    assert info.extra["front_end"]["patch_frames"] == 187
    again = _run("tfaural.pretrained", "musicnn/MTT_vgg", "--output", str(run_dir))
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr


def test_list_and_help() -> None:
    listed = _run("tfaural.pretrained", "--list")
    assert listed.returncode == 0
    for name in ("musicnn/MTT_vgg", "musicnn/MSD_vgg", "musicnn/MTT_musicnn", "musicnn/MSD_musicnn"):
        assert name in listed.stdout
    assert "ROC-AUC 0.903" in listed.stdout and "piano" in listed.stdout
    assert "pip install --no-deps musicnn==0.1.0" in _run("tfaural.pretrained", "--help").stdout


@pytest.fixture(scope="module")
def version(run_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The imported tagger exported once by the CLI (fresh-process verification included) for the jobs below."""
    exports = tmp_path_factory.mktemp("exports")
    exported = _run("export", "--run", str(run_dir), "--output", str(exports))
    assert exported.returncode == 0, exported.stderr[-3000:]
    return exports / "1"


def test_export_verify_and_tag_a_mixed_catalogue(run_dir: pathlib.Path, version: pathlib.Path,
                                                 tmp_path: pathlib.Path) -> None:
    metadata = json.loads((version / "assets" / "metadata.json").read_text())
    assert metadata["family"] == "musicnn" and metadata["sample_rate"] == 16000
    assert set(metadata["signatures"]) == {"serving_default", "serving_wav", "features", "deconvolve", "auralise",
                                           "attribute"}
    assert metadata["layer_names"] == {str(i): f"pool{i}" for i in range(1, 6)}
    assert metadata["features_per_layer"] == {str(i): 128 for i in range(1, 6)}
    assert [level["layer"] for level in metadata["feature_levels"]] == ["pool3", "pool4", "pool5"]
    assert metadata["mel"]["n_mels"] == 96 and metadata["input_scaling"] == {"mode": "log10", "log_c": 10000.0}

    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    y = music_like(seconds=14.0, sample_rate=44100, seed=1, peak=0.8)
    sf.write(music / "stereo.wav", np.stack([y, 0.5 * y], axis=1), 44100, subtype="PCM_24")
    sf.write(music / "sub" / "low.flac", music_like(seconds=8.0, sample_rate=22050, seed=2, peak=0.9), 22050)
    sf.write(music / "song.mp3", music_like(seconds=10.0, sample_rate=48000, seed=3, peak=0.5), 48000)
    sf.write(music / "song.ogg", music_like(seconds=6.0, sample_rate=32000, seed=4, peak=0.5), 32000)
    sf.write(music / "short.wav", np.zeros(8000, np.float32) + 0.1, 16000)  # 0.5 s: shorter than one patch
    (music / "broken.flac").write_bytes(b"fLaC-not-really")
    tagged = _run("beam_jobs.tag", "--input", f"{music}/**", "--model", str(version), "--output", str(tmp_path / "t"))
    assert tagged.returncode == 0, tagged.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "t" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(pathlib.Path(r["path"]).name for r in rows) == sorted(
        ["stereo.wav", "low.flac", "song.mp3", "song.ogg", "short.wav", "broken.flac"])  # each input exactly once
    status = {pathlib.Path(r["path"]).name: r["status"] for r in rows}
    assert status == {"stereo.wav": "ok", "low.flac": "ok", "song.mp3": "ok", "song.ogg": "ok",
                      "short.wav": "failed", "broken.flac": "failed"}
    with open(tmp_path / "t" / "tags.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4
    labels = read_run_info(run_dir).labels
    for row in table:
        scores = np.array([float(row[name]) for name in labels])
        assert np.all((scores > 0) & (scores < 1))
        assert row["top_labels"].split(";")[0] == labels[int(np.argmax(scores))]

    features = _run("beam_jobs.extract_features", "--input", f"{music}/**", "--model", str(version), "--output",
                    str(tmp_path / "f"))
    assert features.returncode == 0, features.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "f" / "manifest.jsonl").read_text().splitlines()]
    assert {pathlib.Path(r["path"]).name: r["status"] for r in rows} == status
    vectors = [np.load(p)["features"] for p in sorted((tmp_path / "f" / "tracks").glob("*.npz"))]
    assert len(vectors) == 4 and all(v.shape == (2 * 3 * 128,) and np.all(np.isfinite(v)) for v in vectors)


def test_auralise_job_and_report_with_an_imported_tagger(run_dir: pathlib.Path, version: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "one.flac", music_like(seconds=5.0, sample_rate=22050, seed=5, peak=0.6), 22050)
    sf.write(music / "two.wav", music_like(seconds=4.0, sample_rate=44100, seed=6, peak=0.7), 44100)
    sf.write(music / "silence.wav", np.zeros(16000 * 4, np.float32), 16000)
    (music / "broken.ogg").write_bytes(b"OggS-no")
    out = tmp_path / "aur"
    done = _run("beam_jobs.auralise", "--input", f"{music}/*", "--model", str(version),
                "--output", str(out), "--layers", "1,5", "--features", "0-7", "--clip-seconds", "3", "--tags", "2",
                "--report")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {pathlib.Path(r["path"]).name: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert {name: r["status"] for name, r in rows.items()} == {
        "one.flac": "ok", "two.wav": "ok", "silence.wav": "failed", "broken.ogg": "failed"}
    # nothing to hear: a silent excerpt fails by name, as tfaural.listen refuses it, not 16 silent files
    assert (rows["silence.wav"]["error_type"], rows["silence.wav"]["error"]) == (
        "InvalidAudioError", "the excerpt 0 s – 3 s is digital silence (every sample is 0); nothing to hear "
        "(--offset-seconds picks another part)")
    assert not (out / "silence").exists()
    labels = set(read_run_info(run_dir).labels)
    for name in ("one", "two"):
        info = json.loads((out / name / "track.json").read_text())
        assert set(info["layers"]) == {"1", "5"} and info["sample_rate"] == 16000
        for entries in info["layers"].values():
            assert [e["feature"] for e in entries] == list(range(8))
            assert not all(e["silent"] for e in entries)
            for entry in entries:
                audio, rate = sf.read(out / name / entry["file"])
                assert rate == 16000 and audio.shape == (48000,) and np.all(np.isfinite(audio))
                assert np.max(np.abs(audio)) == pytest.approx(0.0 if entry["silent"] else 0.9, abs=2e-3)
        assert len(info["tags"]) == 2 and {t["label"] for t in info["tags"]} <= labels
        assert info["tags"][0]["score"] >= info["tags"][1]["score"] > 0
        for per_layer in info["attribution"].values():
            for entries in per_layer.values():
                values = [e["contribution"] for e in entries]
                assert len(values) == 8 and values == sorted(values, reverse=True) and values[0] > 0
    page = (out / "report" / "tracks" / "one.html").read_text()
    assert "What the model says" in page and "Features behind" in page
    top = json.loads((out / "one" / "track.json").read_text())["tags"][0]["label"]
    assert f"<strong>{top}</strong>" in page


@pytest.fixture(scope="module")
def instruments(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small demo catalogue labelled by instrument (piano, strings, flute, drums ... ) as 16 kHz TFRecords."""
    root = tmp_path_factory.mktemp("demo16k")
    demo.render_catalogue(root, tracks_per_style=4, seconds=6.0, sample_rate=16000, seed=5, progress=False,
                          split_fractions=(0.25, 0.25))
    out = root / "tfrecords"
    make_tfrecords.run([f"--manifest={root / 'manifest_instruments.csv'}", f"--output={out}", "--sample-rate=16000",
                        "--runner=DirectRunner"])
    return str(out)


def test_evaluate_on_the_tags_a_catalogue_shares(run_dir: pathlib.Path, instruments: str) -> None:
    result = evaluate.evaluate_run(str(run_dir), instruments, split="train", write=False, progress=False)
    shared = set(result["labels_evaluated"])
    assert shared and shared <= {"piano", "strings", "flute", "drums"}
    assert "bass" in result["labels_ignored"] and "guitar" in result["model_labels_unused"]
    assert result["n_tracks"] >= 4 and 0 <= result["roc_auc_macro"] <= 1


def test_fine_tune_from_the_imported_tagger(run_dir: pathlib.Path, instruments: str, tmp_path: pathlib.Path) -> None:
    config = TrainConfig(model="musicnn", epochs=1, steps_per_epoch=1, batch_size=2, checkpoint_every=0,
                         learning_rate=1e-4)
    result = train(instruments, str(tmp_path / "tuned"), config, init_from=str(run_dir), verbose=0)
    assert result.epochs == 1
    tuned, info = load_run(tmp_path / "tuned")
    source, source_info = load_run(run_dir)
    assert isinstance(info.model, MusicnnConfig) and info.model.pools == source_info.model.pools
    assert info.labels != source_info.labels and tuned.get_layer("logits").output.shape[-1] == len(info.labels)
    before, after = source.get_layer("conv3").get_weights()[0], tuned.get_layer("conv3").get_weights()[0]
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.99  # started from the published weights
    no_source = _run("tfaural.training.train", "--model", "musicnn", "--data", instruments,
                     "--output", str(tmp_path / "x"))
    assert no_source.returncode == 2 and "--init-from" in no_source.stderr

# --------------------------------------------------------------------------- the Figure 10 analysis
#
# The Figure 10 analysis (``beam_jobs.correlation``) on the imported musicnn ``MTT_vgg`` tagger.
#
# On the CLI-imported tagger's whole export (``version`` above: a real SavedModel with its ``deconvolve``
# signature), the job renders a reduced grid of model signals at the tagger's 16 kHz (2 timbres × 2 chords ×
# 2 keys, 3 s: FluidSynth piano and additive sines), deconvolves all 128 maps of pool1 and pool5 (``--layers``)
# for each of them down to log-mel ``[96, frames]`` and writes the table. Its numbers are compared with
# :func:`tfaural.correlation.analyse` on the Keras model (an independent path: Keras model and
# ``tfaural.spectral.melspectrogram`` instead of the SavedModel graph). Tolerance 1e-3 on the layer
# means: the two graphs compute the same mel power with different float32 operations, so a few max-pool
# switches among near-equal inputs can flip (observed: see the assertion).

SECONDS = 3.0  # MTT_vgg's patch is 2.976 s
TIMBRES, CHORDS, KEYS = ("sine", "piano"), ("major", "minor"), ("A3", "G4")
#: The first and the last of the five layers (--layers): what the library comparison below checks.
LAYERS = (1, 5)
GRID = [f"--timbres={','.join(TIMBRES)}", f"--chords={','.join(CHORDS)}", f"--keys={','.join(KEYS)}",
        f"--signal-seconds={SECONDS}", f"--layers={','.join(map(str, LAYERS))}"]
#: Beam (SavedModel graph) vs library (Keras model) layer means.
TOL = 1e-3


@pytest.fixture(scope="module")
def job_output(version: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    output = tmp_path_factory.mktemp("correlation")
    correlation_job.run([f"--model={version}", f"--output={output}", *GRID, "--runner=DirectRunner"],
                        save_main_session=False)
    return output


def test_every_chosen_layer_and_attribute_has_finite_correlations(job_output: pathlib.Path) -> None:
    table = correlation.read_table_csv((job_output / "correlations.csv").read_text())
    assert [(r.layer, r.attribute) for r in table] == [(L, a) for L in LAYERS for a in ATTRIBUTES]
    for row in table:
        assert row.n_pairs == 4  # 2 x 2 groups of the other two attributes, one pair each
        assert row.mean is not None and row.std is not None
        assert math.isfinite(row.mean) and -1.0 <= row.mean <= 1.0, row
        assert math.isfinite(row.std) and 0.0 < row.std <= 1.0, row
        # 128 maps x 4 pairs; undefined only where a map is all zero (a feature that does not fire on a
        # signal: up to 3 in 4 of pool5's on these plain chords); every layer keeps a tenth of them defined.
        assert row.n_undefined < 128 * 4 * 0.9, row
    by = {(r.layer, r.attribute): r.mean for r in table}
    # Robust on MTT_vgg (any grid tried): changing the chord moves its log-mel maps less than changing the
    # instrument does, at every layer (measured on the 48-signal grid in docs/correlation.md, too).
    for layer in LAYERS:
        assert by[(layer, "chord")] > by[(layer, "instrument")], layer

    rows = pq.read_table(job_output / "per_feature.parquet").to_pylist()
    assert len(rows) == len(LAYERS) * 128 * 3
    means = np.array([r["mean"] for r in rows if r["mean"] is not None])
    assert means.size > len(rows) // 2 and np.all(np.abs(means) <= 1.0)


def test_summary_records_the_tagger_and_its_mel_front_end(job_output: pathlib.Path) -> None:
    summary = json.loads((job_output / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["grid"]["sample_rate"] == 16000 and summary["grid"]["n_signals"] == 8
    model = summary["model"]
    assert model["family"] == "musicnn" and model["pretrained"] == "musicnn/MTT_vgg"
    assert model["mel"]["n_mels"] == 96 and model["input_scaling"]["mode"] == "log10"
    assert model["layer_names"] == {str(i): f"pool{i}" for i in range(1, 6)}
    assert summary["features_per_call"] == {str(i): 128 for i in LAYERS}  # 128 x 3 s fits the 960 feature-s budget
    assert summary["layers"] == list(LAYERS)
    with np.load(job_output / "signals.npz") as analysed:
        assert analysed["audio"].shape == (8, int(SECONDS * 16000)) and int(analysed["sample_rate"]) == 16000
    pixels = mpimg.imread(job_output / "figure10.png")
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05


def test_job_equals_the_library_on_the_keras_model(run_dir: pathlib.Path, job_output: pathlib.Path) -> None:
    model, _ = load_run(run_dir)  # the CLI import's run: the Keras model of the weights the export holds
    grid = signals.SignalGrid(timbres=TIMBRES, chords=CHORDS, keys=KEYS, duration=SECONDS)
    library = correlation.analyse(model, signals.model_signals(grid, sample_rate=16000), layers=list(LAYERS),
                                  progress=False)
    rows = correlation.read_table_csv((job_output / "correlations.csv").read_text())
    table = {(r.layer, r.attribute): r for r in rows}
    for row in library.table:
        beam_row = table[(row.layer, row.attribute)]
        assert (beam_row.n_pairs, beam_row.n_undefined) == (row.n_pairs, row.n_undefined)
        assert beam_row.mean == pytest.approx(row.mean, abs=TOL)
        assert beam_row.std == pytest.approx(row.std, abs=TOL)
