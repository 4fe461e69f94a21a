"""beam_jobs.tag end to end on a real Beam runner (in-process DirectRunner) over a generated catalogue.

The scores are checked against the SavedModel's serving_default signature called directly on the
same decoded audio; every input file must appear exactly once in manifest.jsonl.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from jobs_testing import (
    REPO,
    SAMPLECNN_SEGMENT,
    SAMPLECNN_SR,
    Entry,
    broken_copy,
    check_manifest,
    decode,
    read_manifest_rows,
    signature,
    traced_peak,
    write_catalogue,
)

from beam_jobs import io as beam_io
from beam_jobs import tag
from beam_jobs import tracks as job_tracks
from beam_jobs.options import parse_job_args
from tfaural.errors import ModelError, ParameterError

LABELS = ["guitar", "piano", "drums", "voice"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Entry]]:
    root = tmp_path_factory.mktemp("tag-catalogue")
    return root, write_catalogue(root)


@pytest.fixture(scope="module")
def tagged(catalogue: tuple[pathlib.Path, list[Entry]], samplecnn_export: str,
           tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root, _ = catalogue
    output = tmp_path_factory.mktemp("tags")
    tag.run([f"--input={root}/**", f"--model={samplecnn_export}", f"--output={output}", "--top-k=2",
             "--runner=DirectRunner"])
    return output


@pytest.mark.slow
def test_every_file_is_accounted_for_and_scores_match_the_signature(
    catalogue: tuple[pathlib.Path, list[Entry]], tagged: pathlib.Path, samplecnn_export: str,
) -> None:
    root, entries = catalogue
    rows = check_manifest(tagged, root, entries)
    records = [json.loads(line) for line in (tagged / "tags.jsonl").read_text().splitlines()]
    good = [e for e in entries if e.error is None]
    assert [r["track_id"] for r in records] == sorted(rows[e.relative]["track_id"] for e in good)
    serving = signature(samplecnn_export, "serving_default")
    by_path = {os.path.relpath(r["path"], root): r for r in records}
    for entry in good:
        record = by_path[entry.relative]
        y = decode(root / entry.relative, SAMPLECNN_SR)
        used = SAMPLECNN_SEGMENT * (len(y) // SAMPLECNN_SEGMENT)
        expected = serving(waveform=tf.constant(y[np.newaxis, :used]))["scores"].numpy()[0]
        np.testing.assert_allclose([record["scores"][label] for label in LABELS], expected, rtol=1e-5, atol=1e-6)
        assert record["seconds"] == pytest.approx(used / SAMPLECNN_SR)
        best = sorted(record["scores"].items(), key=lambda kv: -kv[1])[:2]
        assert [label for label, _ in record["top_k"]] == [label for label, _ in best]
        part = json.loads((tagged / "tracks" / f"{rows[entry.relative]['name']}.json").read_text())
        assert part == {**record, "source": beam_io.source_stamp(str(root / entry.relative))}  # what a rerun checks
    with open(tagged / "tags.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["track_id"] for row in table] == [r["track_id"] for r in records]
    for row, record in zip(table, records):
        assert row["top_labels"] == ";".join(label for label, _ in record["top_k"])
        assert [float(row[label]) for label in LABELS] == pytest.approx(
            [record["scores"][label] for label in LABELS], rel=1e-5)
    job = json.loads((tagged / "job.json").read_text())
    assert job["job"] == "tag" and job["settings"]["top_k"] == 2 and job["metadata"]["labels"] == LABELS


@pytest.mark.slow
def test_rerun_refuses_then_resumes_and_overwrites_identically(
    catalogue: tuple[pathlib.Path, list[Entry]], tagged: pathlib.Path, samplecnn_export: str,
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = catalogue
    output = tmp_path / "again"
    shutil.copytree(tagged, output)
    argv = [f"--input={root}/**", f"--model={samplecnn_export}", f"--output={output}", "--top-k=2",
            "--runner=DirectRunner"]
    assert tag.main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("tag: error: --output") and "--skip-existing" in message and "\n" not in message

    first_rows = read_manifest_rows(tagged)
    first_tags = (tagged / "tags.jsonl").read_bytes()
    ok_names = [r["name"] for r in first_rows if r["status"] == "ok"]
    (output / "tracks" / f"{ok_names[0]}.json").unlink()  # as if the run had stopped before this track
    os.remove(output / "manifest.jsonl")
    tag.run([*argv, "--skip-existing"])
    resumed = read_manifest_rows(output)
    assert [{k: v for k, v in r.items() if k != "reused"} for r in resumed] == first_rows
    assert [r["name"] for r in resumed if r.get("reused")] == ok_names[1:]
    assert (output / "tags.jsonl").read_bytes() == first_tags

    tag.run([*argv, "--overwrite"])
    assert read_manifest_rows(output) == first_rows
    assert (output / "tags.jsonl").read_bytes() == first_tags
    with pytest.raises(ParameterError, match=r"differs: settings.top_k 2, now 3 \(see its job.json\)"):
        tag.run([*argv[:-2], "--top-k=3", "--runner=DirectRunner", "--skip-existing"])


@pytest.mark.slow
def test_bfloat16_precision_tags_in_the_model_process_close_to_float32(
    catalogue: tuple[pathlib.Path, list[Entry]], tagged: pathlib.Path, samplecnn_export: str,
    tmp_path: pathlib.Path,
) -> None:
    """``--precision bfloat16`` from the command line (the model process path): every track as in the
    float32 run, the scores within bfloat16's reach of the float32 ones but not equal to them (the
    rewrite did run), and the precision recorded with the model, so --skip-existing tells the runs apart."""
    root, _ = catalogue
    output = tmp_path / "bf16"
    done = subprocess.run([sys.executable, "-m", "beam_jobs.tag", f"--input={root}/**", f"--model={samplecnn_export}",
                           f"--output={output}", "--top-k=2", "--precision=bfloat16"],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ready in" in done.stderr and ", in bfloat16" in done.stderr  # the model process ran so
    full = {json.loads(line)["track_id"]: json.loads(line) for line in (tagged / "tags.jsonl").read_text().splitlines()}
    half = {json.loads(line)["track_id"]: json.loads(line) for line in (output / "tags.jsonl").read_text().splitlines()}
    assert sorted(half) == sorted(full)
    a = np.array([[full[t]["scores"][label] for label in LABELS] for t in sorted(full)])
    b = np.array([[half[t]["scores"][label] for label in LABELS] for t in sorted(full)])
    np.testing.assert_allclose(b, a, atol=0.02)  # bfloat16 keeps 8 bits of mantissa: ~0.4 % per product
    assert np.abs(b - a).max() > 0
    assert [r["status"] for r in read_manifest_rows(output)] == [r["status"] for r in read_manifest_rows(tagged)]
    job = json.loads((output / "job.json").read_text())
    assert job["model"]["precision"] == "bfloat16"
    assert "precision" not in json.loads((tagged / "job.json").read_text())["model"]


@pytest.mark.parametrize(
    "flags,error,message",
    [
        ([], ParameterError, "either as --input GLOB or as --manifest"),
        (["--input=x/*.wav", "--manifest=m.csv"], ParameterError, "exactly one"),
        (["--input=x/*.wav", "--model=/nonexistent/1"], ModelError, "not a tfaural SavedModel export"),
        (["--input=x/*.wav", "--sample-rate=44100"], ParameterError, "differs from the model's 2000 Hz"),
        (["--input=x/*.wav", "--top-k=9"], ParameterError, "the model has 4 labels"),
        (["--input=x/*.wav", "--format=csv"], ParameterError, "this job has no --format"),
        (["--input=x/*.wav", "--batch-size=0"], ParameterError, "--batch-size 0"),
        (["--input=x/*.wav", "--skip-existing", "--overwrite"], ParameterError, "contradict"),
        (["--input=x/*.wav", "--precision=float16"], ParameterError, "--precision 'float16' is invalid"),
    ],
)
def test_settings_validation(flags: list[str], error: type[Exception], message: str,
                             samplecnn_export: str, tmp_path: pathlib.Path) -> None:
    argv = [f"--model={samplecnn_export}", f"--output={tmp_path}", *flags]
    options = parse_job_args(argv, prog="tag", description="",
                             option_classes=tag.JOB.option_classes)
    with pytest.raises(error, match=message):
        tag.Settings.from_options(options)


def test_missing_input_files_exit_2(samplecnn_export: str, tmp_path: pathlib.Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert tag.main([f"--input={tmp_path}/*.wav", f"--model={samplecnn_export}", f"--output={tmp_path}/o"]) == 2
    assert "matched no files" in capsys.readouterr().err
    assert not (tmp_path / "o" / "job.json").exists()
    # A folder (with files in it) is not a glob of them: the error says which glob to give.
    (tmp_path / "music" / "sub").mkdir(parents=True)
    (tmp_path / "music" / "sub" / "a.wav").write_bytes(b"RIFF")
    for given in (tmp_path / "music", f"{tmp_path / 'music'}/"):
        assert tag.main([f"--input={given}", f"--model={samplecnn_export}", f"--output={tmp_path}/o"]) == 2
        assert f"--input '{given}' is a folder and matches no file; give a glob of its audio files, e.g. --input " \
               f"'{tmp_path / 'music'}/**' (every file below it)" in capsys.readouterr().err


def test_tag_record_orders_ties_by_label() -> None:
    track = tag.TrackInput("/a.wav", "a", "a")
    record = tag.tag_record(track, np.array([0.2, 0.7, 0.7, 0.1], np.float32), labels=LABELS, top_k=3, seconds=1.0)
    assert [label for label, _ in record["top_k"]] == ["piano", "drums", "guitar"]
    assert record["scores"]["voice"] == pytest.approx(0.1)
    assert tag.whole_segments(1000, length=243, hop=243) == 972
    assert tag.whole_segments(100, length=243, hop=243) == 0


def test_the_tables_are_written_a_track_at_a_time(tmp_path: pathlib.Path) -> None:
    """``tags.jsonl`` and ``tags.csv`` of 4,000 tracks with 50 labels: each line is the track's record
    (:func:`tag.tag_record`, what ``tracks/<name>.json`` holds), failed tracks are left out, and writing them
    holds a quarter of ``tags.jsonl`` at most (tracemalloc): never the table, which the job's final stage
    used to build as one string from every track's record."""
    rng = np.random.default_rng(2)
    labels = [f"label {i}" for i in range(50)]
    results = []
    for i in range(4000):
        track = tag.TrackInput(f"/music/ünï {i}.flac", f"t{i:05d}", f"t{i:05d}")
        if i % 1000 == 7:
            results.append(tag.TrackResult(track, "failed", stage="decode", error_type="AudioError", error="bad"))
            continue
        scores = tag.TagScores(rng.random(50).astype(np.float32), 30.0 + i / 7, 0.5 if i % 3 == 0 else 0.0)
        results.append(tag.TrackResult(track, "ok", outputs=("tags.jsonl",), data=scores))
    _, peak = traced_peak(tag.write_tag_tables, results, output=str(tmp_path), labels=labels, top_k=5, padded=True)
    ok = [r for r in results if r.status == "ok"]
    expected = [tag.tag_record(r.track, r.data.scores, labels=labels, top_k=5, seconds=r.data.seconds,
                               padded_seconds=r.data.padded_seconds) for r in ok]
    jsonl = (tmp_path / "tags.jsonl").read_bytes()
    assert jsonl.decode("utf-8").splitlines() == [json.dumps(rec, ensure_ascii=False) for rec in expected]
    with open(tmp_path / "tags.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["track_id", "path", "top_labels", "padded_seconds", *labels] and len(rows) == len(ok) + 1
    for row, rec in zip(rows[1:], expected):
        assert row[:4] == [rec["track_id"], rec["path"], ";".join(label for label, _ in rec["top_k"]),
                           f"{rec.get('padded_seconds', 0.0):g}"]
        np.testing.assert_allclose([float(v) for v in row[4:]], [rec["scores"][label] for label in labels],
                                   rtol=1e-5)
    assert len(jsonl) > 4e6 and peak < len(jsonl) / 4, (peak, len(jsonl))


@pytest.mark.slow
def test_a_model_that_does_not_load_stops_the_job_with_a_setup_error(
    catalogue: tuple[pathlib.Path, list[Entry]], samplecnn_export: str, tmp_path: pathlib.Path,
) -> None:
    """``python -m beam_jobs.tag`` (model process) on an export whose graph does not load: exit 2 naming it,
    after listing every track once in the manifest."""
    root, entries = catalogue
    broken = broken_copy(samplecnn_export, tmp_path)
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pathlib.Path(tag.__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "beam_jobs.tag", f"--input={root}/**", f"--model={broken}",
                           f"--output={output}"], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "tag: error: the model" in done.stderr and "could not be loaded" in done.stderr, done.stderr[-3000:]
    assert str(broken) in done.stderr and "Traceback" not in done.stderr
    rows = read_manifest_rows(output)
    assert sorted(os.path.relpath(r["path"], root) for r in rows) == sorted(e.relative for e in entries)
    assert all(r["status"] == "failed" for r in rows)


@pytest.mark.slow
def test_a_model_that_does_not_load_in_process_is_a_one_line_error(
    catalogue: tuple[pathlib.Path, list[Entry]], samplecnn_export: str, tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where TensorFlow is already imported (a notebook, this test) the model loads in-process (in the workers,
    at their first example): still exit 2 with the same one-line error, after listing every track once.
    The tracks went through files (as a large catalogue's do), which the failed run deletes too."""
    root, entries = catalogue
    broken = broken_copy(samplecnn_export, tmp_path)
    monkeypatch.setattr(job_tracks, "INLINE_INPUTS_BYTES", 0)
    output = tmp_path / "out"
    assert tag.main([f"--input={root}/**", f"--model={broken}", f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert f"tag: error: the model '{broken}' could not be loaded: cannot load the SavedModel" in err, err[-2000:]
    assert f"listed as failed in {output}/manifest.jsonl" in err and "Traceback" not in err, err[-2000:]
    rows = {os.path.relpath(r["path"], root): r for r in read_manifest_rows(output)}
    assert sorted(rows) == sorted(e.relative for e in entries)
    for entry in entries:  # a file that decodes fails where it needs the model; the others where they fail
        row = rows[entry.relative]
        assert row["status"] == "failed" and (row["error_type"], row["stage"]) == (
            (entry.error, "decode") if entry.error else ("ModelLoadError", "inference")), row
    assert (output / "job.json").is_file() and not (output / job_tracks.INPUTS_FOLDER).exists()
