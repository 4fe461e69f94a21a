"""``--skip-existing`` reuses only results that check out; anything damaged is recomputed, and the log says why.

Truncated ``tracks/*.json`` (tag), ``tracks/*.npz`` (extract_features) and ``track.json``
(auralise), and missing or garbage feature files beside a valid ``track.json``, used to make a
track fail forever (``JSONDecodeError``, ``BadZipFile``) or be listed with files that are not
there. Each rerun must give back exactly the first run's outputs.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf
from jobs_testing import CHOI_SR, SAMPLECNN_SR, read_manifest_rows
from signal_makers import chirp, clicks, sine

from beam_jobs import auralise, extract_features, tag


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("skip-music")
    sf.write(root / "a.wav", sine(330, 2.0, sample_rate=8000), 8000)
    sf.write(root / "b.flac", chirp(150, 900, 2.0, sample_rate=CHOI_SR), CHOI_SR)
    sf.write(root / "c.wav", clicks(2.0, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    sf.write(root / "d.wav", chirp(900, 200, 2.0, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    return root


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("job.json", "manifest.jsonl")}


def _without_reused(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "reused"} for r in rows]


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_tag_recomputes_truncated_and_foreign_records(
    music: pathlib.Path, samplecnn_export: str, tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = tmp_path / "tags"
    argv = [f"--input={music}/*", f"--model={samplecnn_export}", f"--output={output}", "--runner=DirectRunner"]
    tag.run(argv)
    first, rows = _files(output), read_manifest_rows(output)
    _truncate(output / "tracks" / "a.json")
    (output / "tracks" / "b.json").write_bytes((output / "tracks" / "c.json").read_bytes())  # another track's
    record = json.loads((output / "tracks" / "d.json").read_text())
    record["scores"]["piano"] = "high"
    (output / "tracks" / "d.json").write_text(json.dumps(record))
    caplog.clear()
    tag.run([*argv, "--skip-existing"])
    again = read_manifest_rows(output)
    assert _without_reused(again) == rows and [r["track_id"] for r in again if r.get("reused")] == ["c"]
    assert _files(output) == first
    for name in ("a", "b", "d"):
        assert f"--skip-existing: recomputing {name}: " in caplog.text
    assert "not JSON" in caplog.text and "holds the tags of 'c'" in caplog.text and "finite number" in caplog.text


@pytest.mark.slow
def test_extract_features_recomputes_a_truncated_part(
    music: pathlib.Path, samplecnn_export: str, tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = tmp_path / "features"
    argv = [f"--input={music}/*", f"--model={samplecnn_export}", f"--output={output}", "--format=npz",
            "--runner=DirectRunner"]
    extract_features.run(argv)
    first, rows = _files(output), read_manifest_rows(output)
    _truncate(output / "tracks" / "b.npz")
    with np.load(output / "tracks" / "c.npz") as data:
        arrays = dict(data)
    np.savez(output / "tracks" / "c.npz", **{**arrays, "features": arrays["features"][:3]})
    caplog.clear()
    extract_features.run([*argv, "--skip-existing"])
    again = read_manifest_rows(output)
    assert _without_reused(again) == rows and [r["track_id"] for r in again if r.get("reused")] == ["a", "d"]
    assert _files(output) == first  # the shard too
    assert "recomputing b: " in caplog.text and "BadZipFile" in caplog.text
    assert "recomputing c: " in caplog.text and "shape (3,)" in caplog.text


@pytest.mark.slow
def test_auralise_recomputes_damaged_tracks_and_the_report_is_written(
    music: pathlib.Path, choi_export: str, tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = tmp_path / "auralised"
    argv = [f"--input={music}/*", f"--model={choi_export}", f"--output={output}", "--layers=1,2",
            "--features=0-1", "--clip-seconds=1", "--spectrograms", "--runner=DirectRunner"]
    auralise.run(argv)
    first, rows = _files(output), read_manifest_rows(output)
    _truncate(output / "a" / "track.json")
    (output / "b" / "layer2" / "feature1.wav").unlink()
    (output / "c" / "layer1" / "feature0.wav").write_bytes(b"RIFF garbage, not audio")
    (output / "d" / "layer1" / "feature1.png").write_bytes((output / "d" / "layer1" / "feature0.png").read_bytes())
    caplog.clear()
    assert auralise.main([*argv, "--skip-existing", "--report"]) == 0
    again = read_manifest_rows(output)
    assert _without_reused(again) == rows and not [r for r in again if r.get("reused")]
    assert {k: v for k, v in _files(output).items() if not k.startswith("report/")} == first
    assert "recomputing a: " in caplog.text and "not valid JSON" in caplog.text
    assert "b/layer2/feature1.wav, listed in" in caplog.text and "is missing" in caplog.text
    assert "c/layer1/feature0.wav is not the file the run wrote" in caplog.text
    assert "d/layer1/feature1.png is not the file the run wrote" in caplog.text
    assert (output / "report" / "index.html").is_file()
    shutil.rmtree(output / "report")
    assert auralise.main([*argv, "--skip-existing", "--report"]) == 0  # now everything is reused
    assert all(r.get("reused") for r in read_manifest_rows(output))
    assert (output / "report" / "index.html").is_file()


def _drop_source(job: str, output: pathlib.Path) -> None:
    """Makes track b's result look like one of a run before sources were recorded."""
    if job == "tag":
        record = json.loads((output / "tracks" / "b.json").read_text())
        (output / "tracks" / "b.json").write_text(json.dumps({k: v for k, v in record.items() if k != "source"}))
    elif job == "extract_features":
        with np.load(output / "tracks" / "b.npz") as data:
            arrays = {k: v for k, v in data.items() if k != "source"}
        np.savez(output / "tracks" / "b.npz", **arrays)
    else:
        record = json.loads((output / "b" / "track.json").read_text())
        (output / "b" / "track.json").write_text(json.dumps({k: v for k, v in record.items() if k != "source"}))


@pytest.mark.slow
@pytest.mark.parametrize("job", ["tag", "extract_features", "auralise"])
def test_a_track_whose_file_changed_since_is_recomputed(
    job: str, samplecnn_export: str, choi_export: str, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A result is kept only if its file has the size and modification time it had when the result was made; the
    result of a file gone from the catalogue is kept with a warning, and deleted by ``--overwrite``."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", sine(330, 1.5, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    sf.write(music / "b.wav", chirp(150, 900, 1.5, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    sf.write(music / "c.wav", chirp(900, 200, 1.5, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    sf.write(music / "gone.wav", sine(500, 1.5, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)
    output = tmp_path / job
    argv = [f"--input={music}/*", f"--output={output}", "--runner=DirectRunner"]
    if job == "auralise":
        run, argv = auralise.run, [*argv, f"--model={choi_export}", "--layers=1", "--features=0", "--clip-seconds=1"]
        result = lambda: (output / "a" / "layer1" / "feature0.wav").read_bytes()  # noqa: E731
        gone = output / "gone"
    elif job == "tag":
        run, argv = tag.run, [*argv, f"--model={samplecnn_export}"]
        result = lambda: json.loads((output / "tracks" / "a.json").read_text())["scores"]  # noqa: E731
        gone = output / "tracks" / "gone.json"
    else:
        run, argv = extract_features.run, [*argv, f"--model={samplecnn_export}", "--format=npz"]
        result = lambda: np.load(output / "tracks" / "a.npz")["features"].tolist()  # noqa: E731
        gone = output / "tracks" / "gone.npz"
    run(argv)
    before = result()
    assert gone.exists()
    sf.write(music / "a.wav", clicks(1.5, sample_rate=SAMPLECNN_SR), SAMPLECNN_SR)  # same size, other music
    (music / "gone.wav").unlink()
    _drop_source(job, output)
    caplog.clear()
    run([*argv, "--skip-existing"])
    rows = read_manifest_rows(output)
    assert [r["track_id"] for r in rows if r.get("reused")] == ["c"] and all(r["status"] == "ok" for r in rows)
    assert f"recomputing a: {output}" in caplog.text and f"was made from {music}/a.wav as it was then (" in caplog.text
    assert "recomputing b: " in caplog.text and "records no size and time of" in caplog.text
    assert result() != before, "the changed file's result is made again, from its new content"
    assert gone.exists() and f"holds the results of 1 track(s) that are not in this run's input ({gone}" in caplog.text
    assert (output / "c").exists() if job == "auralise" else True
    with caplog.at_level(logging.INFO, logger="beam_jobs"):
        run([*argv, "--overwrite"])
    assert not gone.exists() and "deleted the results of 1 track(s) of the earlier run" in caplog.text
    assert [r["track_id"] for r in read_manifest_rows(output)] == ["a", "b", "c"]
    assert result() and ((output / "c" / "track.json").exists() if job == "auralise" else True)
