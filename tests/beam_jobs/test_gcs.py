"""The jobs on Google Cloud Storage: manifests, audio and outputs as ``gs://`` URIs.

Each job runs twice on the in-process DirectRunner over the same generated catalogue: once on
a local GCS server (gcp-storage-emulator, reached through Beam's own ``gs://`` filesystem) and
once on local files. Apart from the input paths they name, the two must write the same results
(the auralisation job's listening report included).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import pathlib
import posixpath
import re
import urllib.parse
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from jobs_testing import Entry, write_catalogue

from beam_jobs import accounting, auralise, extract_features, make_tfrecords, tag
from beam_jobs import io as beam_io
from beam_jobs import tracks as job_tracks
from tfaural import files, report
from tfaural.data.tfrecord import TrackRecord, decode_example
from tfaural.errors import ParameterError


def _upload(root: pathlib.Path, folder: str) -> None:
    """Copies every file below ``root`` to ``folder`` (a URI), keeping relative paths."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        beam_io.write_bytes(f"{folder}/{path.relative_to(root).as_posix()}", path.read_bytes())


def _manifest_text(entries: list[Entry], *, labelled: bool = False) -> str:
    """A CSV manifest of ``entries`` with paths relative to its own folder (splits and labels if ``labelled``)."""
    if not labelled:
        return "path\n" + "".join(f'"{e.relative}"\n' for e in entries)
    rows = [f'"{e.relative}",{"rock" if i % 2 else "jazz"},{"train" if i % 3 else "validation"}'
            for i, e in enumerate(entries)]
    return "path,labels,split\n" + "\n".join(rows) + "\n"


def _rows(text: str, *, drop: str = "path") -> list[dict[str, Any]]:
    """The JSON lines of ``text`` without the field ``drop``."""
    return [{k: v for k, v in json.loads(line).items() if k != drop} for line in text.splitlines()]


def _records(path: str, scratch: pathlib.Path) -> list[TrackRecord]:
    """The records of the TFRecord file ``path`` (local or a URI), parsed."""
    scratch.write_bytes(beam_io.read_bytes(path))
    return [decode_example(record.numpy()) for record in tf.data.TFRecordDataset(str(scratch))]


def _listing(folder: str) -> list[str]:
    """The files below ``folder`` (local or a URI), relative to it."""
    pattern = f"{folder}/**" if not beam_io.is_local(folder) else str(pathlib.Path(folder) / "**")
    return sorted(path[len(folder) + 1:] for path in beam_io.list_files(pattern))


@pytest.fixture()
def catalogue(tmp_path: pathlib.Path, gcs_bucket: str) -> tuple[pathlib.Path, str, list[Entry]]:
    """The generated catalogue (good, broken and oddly named files) on local disk and in the bucket."""
    root = tmp_path / "audio"
    entries = write_catalogue(root)
    _upload(root, f"{gcs_bucket}/audio")
    return root, f"{gcs_bucket}/audio", entries


@pytest.mark.slow
def test_tag_reads_a_manifest_and_audio_from_gcs_and_writes_the_same_tags_there(
    catalogue: tuple[pathlib.Path, str, list[Entry]], gcs_bucket: str, samplecnn_export: str,
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On GCS the final stage also sorts the results as a large catalogue's are (runs of 4 spilled to disk
    and merged: :class:`beam_jobs.accounting.SortedResults`); the local run holds them all in memory."""
    root, remote, entries = catalogue
    (root / "manifest.csv").write_text(_manifest_text(entries))
    beam_io.write_text(f"{remote}/manifest.csv", _manifest_text(entries))
    flags = [f"--model={samplecnn_export}", "--top-k=2", "--runner=DirectRunner"]
    with monkeypatch.context() as patch:
        patch.setattr(accounting, "RESULTS_IN_MEMORY", 4)
        tag.run([f"--manifest={remote}/manifest.csv", f"--output={gcs_bucket}/tags", *flags])
    tag.run([f"--manifest={root / 'manifest.csv'}", f"--output={tmp_path / 'tags'}", *flags])

    got, want = f"{gcs_bucket}/tags", str(tmp_path / "tags")
    assert _listing(got) == _listing(want)
    rows = [json.loads(line) for line in beam_io.read_text(f"{got}/manifest.jsonl").splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(f"{remote}/{e.relative}" for e in entries)
    assert sum(r["status"] == "ok" for r in rows) == sum(e.error is None for e in entries) > 0
    for name in ("manifest.jsonl", "tags.jsonl"):
        assert _rows(beam_io.read_text(f"{got}/{name}")) == _rows(beam_io.read_text(f"{want}/{name}")), name
    tables = [list(csv.DictReader(io.StringIO(beam_io.read_text(f"{folder}/tags.csv")))) for folder in (got, want)]
    assert len(tables[0]) == len(tables[1]) > 0
    for remote_row, local_row in zip(*tables, strict=True):
        assert remote_row.pop("path").startswith(f"{remote}/") and local_row.pop("path").startswith(str(root))
        assert remote_row == local_row
    for name in _listing(want):
        if name.startswith("tracks/"):
            record = json.loads(beam_io.read_text(f"{got}/{name}"))
            path = record.pop("path")
            assert path.startswith(f"{remote}/") and record.pop("source") == beam_io.source_stamp(path) is not None
            assert record == {k: v for k, v in json.loads(beam_io.read_text(f"{want}/{name}")).items()
                              if k not in ("path", "source")}


@pytest.mark.slow
def test_extract_features_writes_shards_to_gcs_and_reuses_them(
    catalogue: tuple[pathlib.Path, str, list[Entry]], gcs_bucket: str, samplecnn_export: str,
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Per-segment features in an npz shard on GCS: the same arrays as on local disk; a rerun with
    --skip-existing verifies and reuses every track, rewriting the shard to the same bytes; the job's
    scratch folders (``.features/``; ``.inputs/``, through which the tracks travel here as a large
    catalogue's do) are gone."""
    root, remote, entries = catalogue
    flags = [f"--model={samplecnn_export}", "--per-segment", "--format=npz", "--runner=DirectRunner"]
    got, want = f"{gcs_bucket}/features", str(tmp_path / "features")
    with monkeypatch.context() as patch:
        patch.setattr(job_tracks, "INLINE_INPUTS_BYTES", 0)
        patch.setattr(job_tracks, "INPUTS_PER_FILE", 4)
        patch.setattr(job_tracks, "INPUT_FILES_AT_LEAST", 1)
        with caplog.at_level(logging.INFO, logger="beam_jobs.tracks"):
            extract_features.run([f"--input={remote}/**", f"--output={got}", *flags])
    assert f"{len(entries)} inputs travel through 4 file(s) in {got}/.inputs" in caplog.text
    extract_features.run([f"--input={root}/**", f"--output={want}", *flags])

    assert _listing(got) == _listing(want)
    assert not any(name.startswith(".") for name in _listing(got))
    assert _rows(beam_io.read_text(f"{got}/manifest.jsonl")) == _rows(beam_io.read_text(f"{want}/manifest.jsonl"))
    shard = "features-00000-of-00001.npz"
    with np.load(io.BytesIO(beam_io.read_bytes(f"{got}/{shard}"))) as remote_shard, \
            np.load(f"{want}/{shard}") as local_shard:
        assert sorted(remote_shard.files) == sorted(local_shard.files)
        for member in local_shard.files:
            if member != "path":
                np.testing.assert_array_equal(remote_shard[member], local_shard[member], err_msg=member)
        assert all(str(p).startswith(f"{remote}/") for p in remote_shard["path"])

    before = {name: beam_io.read_bytes(f"{got}/{name}") for name in _listing(got)}
    extract_features.run([f"--input={remote}/**", f"--output={got}", "--skip-existing", *flags])
    rows = [json.loads(line) for line in beam_io.read_text(f"{got}/manifest.jsonl").splitlines()]
    assert all(r.get("reused") for r in rows if r["status"] == "ok") and len(rows) == len(entries)
    after = {name: beam_io.read_bytes(f"{got}/{name}") for name in _listing(got)}
    assert sorted(after) == sorted(before)
    assert [name for name in before if before[name] != after[name]] == ["job.json", "manifest.jsonl"]


@pytest.mark.slow
def test_make_tfrecords_reads_its_manifest_from_gcs_and_writes_the_same_shards_there(
    catalogue: tuple[pathlib.Path, str, list[Entry]], gcs_bucket: str, tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The manifest is read through Beam's filesystems (as the audio is), not TensorFlow's; the tracks travel
    through ``.inputs/`` as a large catalogue's do, which is gone after the run (as ``.parts/`` is)."""
    root, remote, entries = catalogue
    (root / "manifest.csv").write_text(_manifest_text(entries, labelled=True))
    beam_io.write_text(f"{remote}/manifest.csv", _manifest_text(entries, labelled=True))
    got, want = f"{gcs_bucket}/records", str(tmp_path / "records")
    with monkeypatch.context() as patch:
        patch.setattr(job_tracks, "INLINE_INPUTS_BYTES", 0)  # one file per track (INPUT_FILES_AT_LEAST)
        make_tfrecords.run([f"--manifest={remote}/manifest.csv", f"--output={got}", "--sample-rate=8000",
                            "--runner=DirectRunner"], save_main_session=False)
    make_tfrecords.run([f"--manifest={root / 'manifest.csv'}", f"--output={want}", "--sample-rate=8000",
                        "--runner=DirectRunner"], save_main_session=False)

    assert _listing(got) == _listing(want)
    assert not any(name.startswith(".") for name in _listing(got))
    for name in _listing(want):
        if name.endswith(".tfrecord"):
            records = [_records(f"{folder}/{name}", tmp_path / "copy.tfrecord") for folder in (got, want)]
            assert len(records[0]) == len(records[1]) > 0
            for remote_record, local_record in zip(*records, strict=True):
                assert remote_record.source_path.startswith(f"{remote}/")
                for field in dataclasses.fields(TrackRecord):
                    if field.name != "source_path":
                        np.testing.assert_array_equal(getattr(remote_record, field.name),
                                                      getattr(local_record, field.name), err_msg=field.name)
    assert _rows(beam_io.read_text(f"{got}/failures.jsonl")) == _rows(beam_io.read_text(f"{want}/failures.jsonl"))
    dataset = json.loads(beam_io.read_text(f"{got}/dataset.json"))
    assert sum(split["manifest_tracks"] for split in dataset["splits"].values()) == len(entries)


#: A date and time in a report page (when the job ran, when the page was written).
_WHEN = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?(\.\d+)?(\+\d\d:\d\d|Z| UTC)?")


def _links(page: str) -> list[str]:
    """The local links of an HTML page (href and src values that are not anchors, URLs or data)."""
    values = re.findall(r'(?:href|src)="([^"]*)"', page)
    return [v for v in values if v and not v.startswith(("#", "http:", "https:", "data:", "mailto:"))]


@pytest.mark.slow
def test_auralise_writes_its_output_and_listening_report_into_gcs(
    catalogue: tuple[pathlib.Path, str, list[Entry]], gcs_bucket: str, choi_export: str, tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--report`` with a ``gs://`` output: the report is written inside the output on the bucket, the same
    pages and thumbnails as a local run's, and every link of every page resolves to a file there. Writing it
    again (``python -m tfaural.report URI``) reuses every thumbnail (the staged copies keep the bucket's
    modification times), deletes the pages the new report no longer has and uploads only what changed: here,
    at most the pages, whose footers say when they were written."""
    root, remote, entries = catalogue
    flags = [f"--model={choi_export}", "--layers=1,3", "--features=0-1", "--offset-seconds=0.25",
             "--clip-seconds=0.75", "--report", "--runner=DirectRunner"]
    got, want = f"{gcs_bucket}/auralised", str(tmp_path / "auralised")
    auralise.run([f"--input={remote}/**", f"--output={got}", *flags])
    auralise.run([f"--input={root}/**", f"--output={want}", *flags])

    names = _listing(got)
    assert names == _listing(want)
    pages = [name for name in names if name.endswith(".html")]
    assert "report/index.html" in pages and any(name.startswith("report/features/") for name in pages)
    thumbs = [name for name in names if name.startswith("report/thumbs/") and name.endswith(".png")]
    assert len(thumbs) == sum(e.error is None for e in entries) * (1 + 2 * 2)  # the original and 2 x 2 features
    for name in pages:
        text = beam_io.read_text(f"{got}/{name}")
        local = (tmp_path / "auralised" / name).read_text()
        # the same page, written at another time, naming the inputs on the bucket where the local one names files
        assert _WHEN.sub("-", text.replace(remote, str(root))) == _WHEN.sub("-", local), name
        for link in _links(text):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), urllib.parse.unquote(link)))
            assert target.split("#")[0] in names, (name, link)
    for name in thumbs:
        assert beam_io.read_bytes(f"{got}/{name}") == (tmp_path / "auralised" / name).read_bytes(), name
    from google.cloud import storage  # (it reaches the local server through STORAGE_EMULATOR_HOST too)

    bucket = storage.Client.create_anonymous_client().bucket(gcs_bucket.removeprefix("gs://"))
    uploaded = {name: bucket.get_blob(f"auralised/{name}").content_type
                for name in ("report/index.html", "report/assets/style.css", thumbs[0])}
    assert uploaded == {"report/index.html": "text/html", "report/assets/style.css": "text/css",
                        thumbs[0]: "image/png"}  # a browser shows them from the bucket instead of downloading them
    heard = next(name for name in names if name.endswith("/layer3/feature1.wav"))  # the job's own files too
    record = heard.split("/")[0] + "/track.json"
    written = {name: bucket.get_blob(f"auralised/{name}").content_type for name in (heard, record, "manifest.jsonl")}
    assert written == {heard: files.media_type(heard), record: "application/json",
                       "manifest.jsonl": files.media_type("manifest.jsonl")}
    assert files.media_type(heard).startswith("audio/")

    stale = f"{got}/report/tracks/removed-track.html"
    beam_io.write_text(stale, "<p>a track of an earlier run</p>")
    with caplog.at_level(logging.INFO, logger="tfaural.report"):
        assert report.main([got, "--quiet"]) == 0
    assert "thumbnails: 0 decoded, 0 drawn" in caplog.text
    published = re.search(r"report published: (\S+) \((\d+) file\(s\) uploaded, (\d+) removed\)", caplog.text)
    # nothing changed but the stale page: no thumbnail, asset or cache uploaded again, at most the pages (their
    # footers say when they were written, to the minute)
    assert published and published.group(1) == f"{got}/report/index.html" and published.group(3) == "1"
    assert int(published.group(2)) in (0, len(pages))
    assert _listing(got) == names and not beam_io.exists(stale)

    # a "folder" object, as the Cloud console makes them, is not a file to copy (the local server drops
    # connections asked for names with ".." in them: tests/test_report.py checks that those are not copied)
    folder = next(name for name in names if name.endswith("/track.json")).split("/")[0]
    bucket.blob(f"auralised/{folder}/").upload_from_string(b"")
    bucket.blob("auralised/notes/").upload_from_string(b"")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tfaural.report"):
        assert report.main([got, "--quiet"]) == 0
    assert re.search(rf"\(({len(pages)}|0) file\(s\) uploaded, 0 removed\)", caplog.text)

    # --correlation on the bucket too: its table is copied into the report, which shows it
    table = "layer,attribute,mean,std,n_pairs,n_undefined\n1,chord,0.650000,0.010000,40,0\n"
    beam_io.write_text(f"{gcs_bucket}/correlation/correlations.csv", table)
    assert report.main([got, "--quiet", "--correlation", f"{gcs_bucket}/correlation"]) == 0
    assert beam_io.read_text(f"{got}/report/correlation/correlations.csv") == table
    assert '<td>1</td><td>chord</td><td class="num">0.650</td>' in beam_io.read_text(f"{got}/report/index.html")

    with pytest.raises(ParameterError, match="is written inside it"):
        report.write_report(got, tmp_path / "here")
    assert report.main([got, "--output", f"{gcs_bucket}/elsewhere"]) == 2
    with pytest.raises(ParameterError, match="does not exist or holds no files"):
        report.write_report(f"{gcs_bucket}/nothing-here")
    monkeypatch.setattr(report.remote, "_SPARE_BYTES", 1 << 60)  # as if the output did not fit on this disk
    with pytest.raises(ParameterError, match="set TMPDIR to a folder with room"):
        report.write_report(got)
