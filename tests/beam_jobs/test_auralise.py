"""beam_jobs.auralise end to end (in-process DirectRunner): the output folder the listening report reads.

The written audio is checked against the SavedModel's auralise signature called directly on the
same decoded excerpt; every input file must appear exactly once in manifest.jsonl.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import (
    CHOI_SR,
    REPO,
    SAMPLECNN_SR,
    Entry,
    broken_copy,
    check_manifest,
    decode,
    import_records,
    read_manifest_rows,
    recording_env,
    signature,
    tiny_model_file,
    write_catalogue,
)
from matplotlib import image as mpimg

from beam_jobs import auralise
from beam_jobs import io as beam_io
from beam_jobs.options import parse_job_args
from tfaural import listen
from tfaural.errors import ParameterError

OFFSET, CLIP = 0.25, 0.75
CLIP_SAMPLES = int(round(CLIP * CHOI_SR))
QUANTISATION = 2.0 / 32768  # 16-bit files


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Entry]]:
    root = tmp_path_factory.mktemp("auralise-catalogue")
    entries = write_catalogue(root)  # bad/short.wav (10 ms) ends before the excerpt starts:
    return root, [dataclasses.replace(e, reason="past the end") if e.relative == "bad/short.wav" else e
                  for e in entries]


def _argv(root: pathlib.Path, export: str, output: pathlib.Path, *extra: str) -> list[str]:
    return [f"--input={root}/**", f"--model={export}", f"--output={output}", "--runner=DirectRunner",
            f"--offset-seconds={OFFSET}", f"--clip-seconds={CLIP}", *extra]


@pytest.fixture(scope="module")
def auralised(catalogue: tuple[pathlib.Path, list[Entry]], choi_export: str,
              tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root, _ = catalogue
    output = tmp_path_factory.mktemp("auralised")
    auralise.run(_argv(root, choi_export, output, "--layers=1,3", "--features=0-2", "--features-per-call=2",
                       "--format=flac", "--spectrograms", "--batch-size=2", "--report"))
    return output


@pytest.mark.slow
def test_layout_and_audio_match_the_signature(
    catalogue: tuple[pathlib.Path, list[Entry]], auralised: pathlib.Path, choi_export: str,
) -> None:
    root, entries = catalogue
    rows = check_manifest(auralised, root, entries)
    job = json.loads((auralised / "job.json").read_text())
    assert (job["layers"], job["features"], job["mode"], job["format"]) == ([1, 3], {"1": [0, 1, 2], "3": [0, 1, 2]},
                                                                            "phase", "flac")
    assert (job["clip_seconds"], job["offset_seconds"], job["spectrograms"]) == (CLIP, OFFSET, True)
    assert job["model_dir"] == choi_export and job["metadata"]["sample_rate"] == CHOI_SR and job["created"]
    aural = signature(choi_export, "auralise")
    attribute = signature(choi_export, "attribute")
    audible = 0
    for entry in (e for e in entries if e.error is None):
        folder = auralised / rows[entry.relative]["name"]
        text = (folder / "track.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        info = json.loads(text)
        assert set(info) == {"track_id", "path", "sample_rate", "offset_seconds", "clip_seconds", "original",
                             "original_spectrogram", "layers", "checksums", "tags", "attribution", "source"}
        assert info["source"] == beam_io.source_stamp(info["path"]) is not None  # what a rerun compares
        listed = [info["original"], info["original_spectrogram"]] + [
            name for features in info["layers"].values() for f in features for name in (f["file"], f["spectrogram"])]
        assert info["checksums"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in listed}
        assert (info["path"], info["sample_rate"], info["offset_seconds"]) == (str(root / entry.relative), CHOI_SR,
                                                                                OFFSET)
        assert info["clip_seconds"] == pytest.approx(CLIP, abs=1 / CHOI_SR)
        excerpt = decode(root / entry.relative, CHOI_SR, offset=OFFSET, duration=CLIP)
        original, rate = sf.read(folder / info["original"], dtype="float32")
        assert rate == CHOI_SR and len(original) == len(excerpt) == CLIP_SAMPLES
        np.testing.assert_allclose(original, excerpt, atol=QUANTISATION)
        assert info["original_spectrogram"] == "original.png"
        assert mpimg.imread(folder / "original.png").shape[:2] == (33, 1 + CLIP_SAMPLES // 32)
        assert sorted(info["layers"]) == ["1", "3"]
        for layer, features in info["layers"].items():
            assert [f["feature"] for f in features] == [0, 1, 2]
            expected = aural(waveform=tf.constant(excerpt[np.newaxis]), layer=tf.constant(int(layer)),
                             features=tf.constant([0, 1, 2]), mode=tf.constant("phase"))
            for k, feature in enumerate(features):
                assert feature["file"] == f"layer{layer}/feature{k}.flac"
                assert feature["spectrogram"] == f"layer{layer}/feature{k}.png"
                assert (folder / feature["spectrogram"]).is_file()
                assert feature["activation"] is None or np.isfinite(feature["activation"])
                y, rate = sf.read(folder / feature["file"], dtype="float32")
                assert rate == CHOI_SR and len(y) == CLIP_SAMPLES
                np.testing.assert_allclose(y, expected["audio"].numpy()[0, k], atol=QUANTISATION)
                assert feature["silent"] == bool(expected["silent"].numpy()[0, k]) == (not np.any(y))
                assert feature["peak"] == pytest.approx(float(expected["peak"].numpy()[0, k]), rel=1e-5)
                if not feature["silent"]:
                    audible += 1
                    assert np.max(np.abs(y)) == pytest.approx(0.9, abs=1e-3)
        # --tags 3 (the default): the excerpt's best tags and each layer's top contributors, as the export says
        n_tags = min(3, len(job["metadata"]["labels"]))
        for layer in ("1", "3"):
            said = attribute(waveform=tf.constant(excerpt[np.newaxis]), layer=tf.constant(int(layer)),
                             top_tags=tf.constant(n_tags))
            labels = [v.decode() for v in said["labels"].numpy()[0]]
            scores = said["scores"].numpy()[0]
            assert info["tags"] == [{"label": name, "score": round(float(scores[i]), 6)}
                                    for name, i in zip(labels, said["tags"].numpy()[0])]
            for name, row in zip(labels, said["contributions"].numpy()[0].astype(np.float64)):
                order = np.argsort(-row, kind="stable")[:8]
                assert [e["feature"] for e in info["attribution"][name][layer]] == order.tolist()
                np.testing.assert_allclose([e["contribution"] for e in info["attribution"][name][layer]],
                                           row[order], atol=1e-6)
    assert audible >= 10, "random-weight features of non-silent music must mostly be audible"
    index = (auralised / "report" / "index.html").read_text()
    assert rows["rock/Song One.wav"]["track_id"] in index and "corrupt.wav" in index


def test_tfaural_listen_on_the_keras_model_hears_what_the_job_heard_from_its_export(
    auralised: pathlib.Path, catalogue: tuple[pathlib.Path, list[Entry]], choi_export: str,
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same model as a .keras file through ``python -m tfaural.listen`` (no export, no Beam) writes the
    same excerpt and the same auralisations as the job did from the SavedModel, to one 16-bit step."""
    root, _ = catalogue
    output = tmp_path_factory.mktemp("listened")
    model = tiny_model_file("choi", str(tmp_path_factory.getbasetemp()))
    songs = [root / "rock" / "song one.flac", root / "jazz" / "take five.mp3"]
    assert listen.main(["--model", model, "--output", str(output), "--layers", "1,3", "--features", "0-2",
                        "--offset-seconds", str(OFFSET), "--clip-seconds", str(CLIP), *map(str, songs)]) == 0
    job_rows = {row["path"]: row for row in read_manifest_rows(auralised)}
    compared = 0
    for song, row in zip(songs, read_manifest_rows(output)):
        job_folder, ours = auralised / job_rows[str(song)]["name"], output / row["name"]
        for relative in ["original", *(f"layer{layer}/feature{k}" for layer in (1, 3) for k in range(3))]:
            theirs, rate = sf.read(job_folder / f"{relative}.{'wav' if relative == 'original' else 'flac'}",
                                   dtype="float32")
            mine, mine_rate = sf.read(ours / f"{relative}.wav", dtype="float32")
            assert rate == mine_rate == CHOI_SR and mine.shape == theirs.shape == (CLIP_SAMPLES,)
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=QUANTISATION, err_msg=f"{song.name} {relative}")
            compared += 1
    assert compared == 14


@pytest.mark.slow
def test_rerun_removes_stale_files_and_resumes(
    catalogue: tuple[pathlib.Path, list[Entry]], auralised: pathlib.Path, choi_export: str,
    tmp_path: pathlib.Path,
) -> None:
    root, _ = catalogue
    output = tmp_path / "again"
    shutil.copytree(auralised, output)
    rows = [r for r in read_manifest_rows(output) if r["status"] == "ok"]
    folder = output / rows[0]["name"]
    auralise.run(_argv(root, choi_export, output, "--layers=1", "--features=0", "--overwrite"))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "layer1/feature0.wav", "original.wav", "track.json"]
    first = read_manifest_rows(output)
    assert [r["outputs"] for r in first if r["name"] == rows[0]["name"]] == [
        [f"{rows[0]['name']}/{name}" for name in ("original.wav", "layer1/feature0.wav", "track.json")]]
    track_json = (folder / "track.json").read_text()

    (output / rows[1]["name"] / "track.json").unlink()  # as if the run had stopped before this track
    auralise.run(_argv(root, choi_export, output, "--layers=1", "--features=0", "--skip-existing"))
    again = read_manifest_rows(output)
    assert [{k: v for k, v in r.items() if k != "reused"} for r in again] == first
    assert [r["name"] for r in again if r.get("reused")] == [r["name"] for r in rows if r["name"] != rows[1]["name"]]
    assert (folder / "track.json").read_text() == track_json


@pytest.mark.slow
def test_a_rerun_that_keeps_every_track_loads_no_model(
    catalogue: tuple[pathlib.Path, list[Entry]], auralised: pathlib.Path, choi_export: str,
    tmp_path: pathlib.Path,
) -> None:
    """``python -m beam_jobs.auralise --skip-existing`` over a finished run: every track is kept (the bad files
    fail again, at decoding), and no process of the run imports TensorFlow, since no example reaches the model."""
    root, entries = catalogue
    output = tmp_path / "again"
    shutil.copytree(auralised, output)
    before = read_manifest_rows(output)
    argv = [flag for flag in _argv(root, choi_export, output, "--layers=1,3", "--features=0-2",
                                   "--features-per-call=2", "--format=flac", "--spectrograms", "--batch-size=2",
                                   "--report", "--skip-existing")
            if flag != "--runner=DirectRunner"]  # the command's own runner: DirectRunner's worker processes
    env = recording_env(tmp_path / "recorded")
    done = subprocess.run([sys.executable, "-m", "beam_jobs.auralise", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    again = read_manifest_rows(output)
    assert [{k: v for k, v in r.items() if k != "reused"} for r in again] == before
    assert [r["status"] == "ok" for r in again] == [bool(r.get("reused")) for r in again]
    assert sum(r["status"] == "ok" for r in again) == sum(e.error is None for e in entries)
    started, ended = import_records(tmp_path / "recorded")
    assert len(started) >= 3 and len(ended) == len(started)  # the launcher and its DirectRunner workers
    assert not [r["argv"] for r in ended if r["tensorflow"]], "no process needed TensorFlow"
    assert (output / "report" / "index.html").is_file()


@pytest.mark.slow
def test_a_model_that_does_not_load_fails_the_tracks_that_need_it_and_stops_the_job(
    catalogue: tuple[pathlib.Path, list[Entry]], choi_export: str, tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workers load the model at their first example; one that does not load fails each track that needs
    it (listed once in the manifest, as every track is) and the job ends with a one-line error (exit 2)."""
    root, entries = catalogue
    broken = broken_copy(choi_export, tmp_path)
    output = tmp_path / "out"
    assert auralise.main(_argv(root, str(broken), output, "--layers=1", "--features=0-1")) == 2
    err = capsys.readouterr().err
    assert f"auralise: error: the model '{broken}' could not be loaded: cannot load the SavedModel" in err, err[-3000:]
    assert f"listed as failed in {output}/manifest.jsonl" in err and "Traceback" not in err, err[-3000:]
    rows = {os.path.relpath(r["path"], root): r for r in read_manifest_rows(output)}
    assert sorted(rows) == sorted(e.relative for e in entries)
    for entry in entries:
        row = rows[entry.relative]
        assert row["status"] == "failed" and (row["error_type"], row["stage"]) == (
            (entry.error, "decode") if entry.error else ("ModelLoadError", "inference")), row
        assert entry.error or str(broken) in row["error"]


@pytest.mark.slow
def test_waveform_models_are_auralised_too(samplecnn_export: str, tmp_path: pathlib.Path,
                                           rng: np.random.Generator) -> None:
    root = tmp_path / "in"
    root.mkdir()
    sf.write(root / "noise.wav", rng.uniform(-0.5, 0.5, 4000).astype(np.float32), 8000)
    output = tmp_path / "out"
    auralise.run([f"--input={root}/*.wav", f"--model={samplecnn_export}", f"--output={output}", "--layers=1-2",
                  "--features=0,3", "--clip-seconds=0.3", "--mode=mask", "--runner=DirectRunner"])
    info = json.loads((output / "noise" / "track.json").read_text())
    assert sorted(info["layers"]) == ["1", "2"]
    for features in info["layers"].values():
        for feature in features:
            y, rate = sf.read(output / "noise" / feature["file"], dtype="float32")
            assert rate == SAMPLECNN_SR and len(y) == int(round(0.3 * SAMPLECNN_SR))
            assert feature["silent"] == (not np.any(y))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--layers=0"], "--layers '0' names \\[0\\], which do not exist: expected values in 1-5"),
        (["--layers=2-1"], "is empty"),
        (["--layers=one"], "expected 'all', a list"),
        (["--features=3-4"], "names \\[4\\].*layer 1 has 4 feature maps"),
        (["--clip-seconds=0.0001"], "deconvolves clips of at least 0.4844 s"),
        (["--clip-seconds=31"], "max_deconv_seconds"),
        (["--offset-seconds=-1"], "--offset-seconds -1"),
        (["--format=mp3"], "expected one of wav\\|flac"),
        (["--features-per-call=0"], "--features-per-call 0"),
        (["--precision=bfloat16"], "this job has no --precision"),
    ],
)
def test_settings_validation(flags: list[str], message: str, choi_export: str,
                             tmp_path: pathlib.Path) -> None:
    argv = [f"--model={choi_export}", f"--output={tmp_path}", "--input=x/*.wav", *flags]
    options = parse_job_args(argv, prog="auralise", description="",
                             option_classes=auralise.JOB.option_classes)
    with pytest.raises(ParameterError, match=message):
        auralise.Settings.from_options(options)


def test_settings_chunks_and_bad_layers_exit_2(choi_export: str, tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = [f"--model={choi_export}", f"--output={tmp_path}", "--input=x/*.wav", "--layers=2,4-5",
            "--features=all", "--features-per-call=3"]
    options = parse_job_args(argv, prog="auralise", description="",
                             option_classes=auralise.JOB.option_classes)
    settings = auralise.Settings.from_options(options)
    assert settings.chunks() == [(2, (0, 1, 2)), (2, (3,)), (4, (0, 1, 2)), (4, (3,)), (5, (0, 1, 2)), (5, (3,))]
    assert settings.stft == (64, 32) and settings.common.batch_size == 1
    assert auralise.main([*argv[:3], "--layers=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("auralise: error: --layers '7'") and "\n" not in err
    assert not os.path.exists(tmp_path / "job.json")


def test_defaults_take_what_the_export_allows(choi_export: str, tmp_path: pathlib.Path) -> None:
    """--features-per-call 16 by default, fewer where the export's per-call budget (1280 feature-seconds for the
    Choi CNN) asks for it, and a given value that does not fit is refused with the most that does; the clip is
    4 s when the export needs less."""

    def settings(*flags: str) -> auralise.Settings:
        options = parse_job_args([f"--model={choi_export}", f"--output={tmp_path}", "--input=x/*.wav", *flags],
                                 prog="auralise", description="",
                                 option_classes=auralise.JOB.option_classes)
        return auralise.Settings.from_options(options)

    assert (settings().features_per_call, settings().clip_seconds) == (16, 4.0)
    assert settings("--clip-seconds=20", "--batch-size=8").features_per_call == 1280 // (8 * 20)
    with pytest.raises(ParameterError, match="use --features-per-call 8 or less"):
        settings("--clip-seconds=20", "--batch-size=8", "--features-per-call=16")
    assert settings("--pad-short").job_settings()["pad_short"] is True and "pad_short" not in settings().job_settings()


def test_spectrogram_db_of_silence_is_finite() -> None:
    db = auralise.spectrogram_db(np.zeros(1000, np.float32), n_fft=64, hop_length=16)
    assert db.shape == (33, 1 + 1000 // 16) and np.all(db == np.float32(-200.0))
    tone = auralise.spectrogram_db(np.sin(2 * np.pi * 256 * np.arange(2048) / 2048).astype(np.float32),
                                   n_fft=64, hop_length=32)
    assert int(np.argmax(tone[:, 10])) == 8  # 256 Hz / (2048 Hz / 64) = bin 8
    png = auralise.render_spectrogram(tone, vmin=-80.0, vmax=0.0)
    assert png.startswith(b"\x89PNG")
