"""tfaural.formats: the one reader/writer of the files packages share, checked against the files' JSON."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tfaural.errors import DataError, ModelError
from tfaural.formats import (
    FAILED,
    OK,
    ExportMetadata,
    FeatureRecord,
    JobRecord,
    ManifestRow,
    TrackRecord,
    export_metadata_text,
    manifest_text,
    parse_export_metadata,
    parse_job_record,
    parse_manifest,
    parse_track_record,
    read_export_metadata,
    resolve_export_dir,
)

REPO = pathlib.Path(__file__).resolve().parent.parent

METADATA = {
    "format_version": 2, "family": "choi", "sample_rate": 12000, "segment_length": 24000, "segment_hop": 12000,
    "labels": ["rock", "jazz"], "task": "multi-label", "top_k": 2, "stft": {"n_fft": 512, "hop_length": 256},
    "mel": None, "input_scaling": {"mode": "log", "log_c": 10.0}, "max_seconds": 60.0, "max_samples": 720000,
    "max_deconv_seconds": 8.0, "max_deconv_samples": 96000, "max_request_seconds": 120.0,
    "max_deconv_feature_seconds": 960.0, "max_deconv_feature_samples": 11520000, "deconv_chunk_elements": 1000,
    "deconvolvable_layers": [1, 2], "features_per_layer": {"1": 32, "2": 64}, "layer_names": {"1": "pool1"},
    "feature_levels": [{"name": "level1", "layer": "pool1", "channels": 32}],
    "signatures": {"serving_default": {"inputs": {"waveform": {"dtype": "float32", "shape": ["batch", "samples"]}},
                                       "outputs": {}},
                   "deconvolve": {"inputs": {"waveform": {"dtype": "float32", "shape": ["batch", "samples"]},
                                             "layer": {"dtype": "int32", "shape": []}}}},
    "signature_savedmodels": {"serving_default": "assets.extra/signatures/serving_default"},
    "model_config": {"kind": "choi"}, "run_id": "r1", "run_created": "2026-01-01T00:00:00+00:00",
    "run_extra": {"pretrained": {"name": "MTT_vgg"}}, "exported": "2026-01-02T00:00:00+00:00",
    "tfaural_version": "0.1", "tensorflow_version": "2.21.0",
}


def test_export_metadata_reads_typed_and_writes_the_exports_text(tmp_path: pathlib.Path) -> None:
    (tmp_path / "assets").mkdir()
    text = export_metadata_text(METADATA)
    assert text == json.dumps(METADATA, indent=2, sort_keys=True) + "\n"  # what the export always wrote
    (tmp_path / "assets" / "metadata.json").write_text(text)
    meta = read_export_metadata(tmp_path)
    assert (meta.family, meta.sample_rate, meta.segment_length, meta.segment_hop) == ("choi", 12000, 24000, 12000)
    assert meta.labels == ("rock", "jazz") and meta.top_k == 2 and meta.segment_seconds == 2.0
    assert meta.deconvolvable_layers == (1, 2) and meta.features_per_layer == {1: 32, 2: 64}
    assert meta.layer_names == {1: "pool1"} and meta.pretrained == "MTT_vgg"
    assert meta.max_deconv_feature_samples == 11520000 and meta.max_seconds == 60.0
    assert meta.input_names("deconvolve") == ("layer", "waveform") and meta.input_names("nothing") is None
    assert meta.batched_inputs("deconvolve") == frozenset({"waveform"})
    assert meta.signature_savedmodels["serving_default"].endswith("serving_default")
    assert meta.data == METADATA and meta.path == str(tmp_path / "assets" / "metadata.json")
    with pytest.raises(ModelError, match=r"has no signature 'auralise'; it has \['deconvolve', 'serving_default'\]"):
        meta.signature("auralise", export_dir=str(tmp_path))
    # any filesystem: the caller's reader gets the URI
    seen: list[str] = []
    remote = read_export_metadata("gs://bucket/exports/1/", read_bytes=lambda p: seen.append(p) or text.encode())
    assert seen == ["gs://bucket/exports/1/assets/metadata.json"] and remote.sample_rate == 12000


@pytest.mark.parametrize("content, message", [
    (None, r"is not a tfaural SavedModel export: assets/metadata\.json is missing \(pass the version directory"),
    ("{broken", "metadata.json: not valid JSON"),
    ("[1, 2]", r"not a tfaural metadata file \(no sample_rate\)"),
    ('{"sample_rate": 0}', "sample_rate is 0, not a positive integer"),
    ('{"sample_rate": 16000, "segment_length": "long"}', "segment_length is 'long', not a non-negative integer"),
    ('{"sample_rate": 16000, "labels": "rock"}', "labels is not a list of names"),
    ('{"sample_rate": 16000, "features_per_layer": {"one": 3}}', "the deconvolvable layers are not integers"),
    ('{"sample_rate": 16000, "max_seconds": -1}', "max_seconds is -1, not a non-negative number of seconds"),
    ('{"sample_rate": 16000, "stft": {"n_fft": 512, "hop_length": 128, "win_length": 256}}',
     r"stft\.win_length is 256, but tfaural's STFT window is always n_fft=512 samples long"),
    ('{"sample_rate": 16000, "stft": {"n_fft": 256, "hop_length": 128, "win_length": 257, "center": false}}',
     r"stft\.win_length is 257: expected frames of 2 to n_fft=256 samples \(tf.signal.stft's frame_length\)"),
])
def test_a_bad_export_metadata_is_one_model_error_naming_the_file(
    tmp_path: pathlib.Path, content: str | None, message: str,
) -> None:
    if content is not None:
        (tmp_path / "assets").mkdir()
        (tmp_path / "assets" / "metadata.json").write_text(content)
    with pytest.raises(ModelError, match=message) as caught:
        read_export_metadata(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_an_export_base_folder_stands_for_its_newest_version(tmp_path: pathlib.Path) -> None:
    """As TF Serving picks a model base path's version: the largest number holding an export, not the last name."""
    base = tmp_path / "exports" / "choi"
    for version in ("1", "2", "10"):
        (base / version / "assets").mkdir(parents=True)
        (base / version / "assets" / "metadata.json").write_text("{}")
    (base / "11").mkdir()  # a version being written (no metadata yet) is not picked
    (base / "tmp-3" / "assets").mkdir(parents=True)
    (base / "tmp-3" / "assets" / "metadata.json").write_text("{}")
    assert resolve_export_dir(base) == str(base / "10") == resolve_export_dir(str(base) + "/")
    assert resolve_export_dir(base / "2") == str(base / "2")  # a version directory is itself
    assert resolve_export_dir(base / "11") == str(base / "11")  # nothing to pick: the reader says what is missing
    assert resolve_export_dir(tmp_path / "missing") == str(tmp_path / "missing")
    with pytest.raises(ModelError, match=r"11' is not a tfaural SavedModel export"):
        read_export_metadata(resolve_export_dir(base / "11"))
    # any filesystem, through its own exists/children (a URI is joined with '/')
    files = {"gs://b/m/1/assets/metadata.json", "gs://b/m/3/assets/metadata.json"}
    assert resolve_export_dir("gs://b/m", exists=files.__contains__, children=lambda folder: ["1/", "3/", "x/"]) == (
        "gs://b/m/3")


def test_an_export_metadata_the_writer_would_not_read_is_refused_before_writing() -> None:
    with pytest.raises(ModelError, match="being written"):
        export_metadata_text({"family": "choi"})
    assert parse_export_metadata('{"sample_rate": 8000}', path="m.json").segment_hop == 0  # format 1: lenient


@pytest.mark.parametrize("win_length", [None, 512])
def test_an_export_metadata_stft_window_of_n_fft_reads(win_length: int | None) -> None:
    stft = {"n_fft": 512, "hop_length": 256, "win_length": win_length, "window": "hann", "center": True}
    meta = parse_export_metadata(json.dumps({**METADATA, "stft": stft}), path="m.json")
    assert meta.stft == stft


def test_manifest_rows_round_trip_in_the_jobs_layout() -> None:
    rows = [ManifestRow("/m/a.flac", "a", "a", OK, outputs=("tags.jsonl", "tracks/a.json")),
            ManifestRow("/m/b.wav", "b", "b", OK, outputs=("tags.jsonl",), reused=True),
            ManifestRow("/m/ü.wav", "ü", "ü", FAILED, error="too short: 12 samples", error_type="EmptyAudioError",
                        stage="decode"),
            # JSON keeps these raw, and str.splitlines() would split a line at them
            ManifestRow("/m/line\u2028sep\x85nel.wav", "odd", "odd", OK, outputs=("tags.jsonl",))]
    text = manifest_text(rows)
    lines = text.split("\n")
    assert len(lines) == 5 and "\u2028" in lines[3]
    assert json.loads(lines[0]) == {"path": "/m/a.flac", "track_id": "a", "name": "a", "status": "ok",
                                    "outputs": ["tags.jsonl", "tracks/a.json"]}
    assert json.loads(lines[1])["reused"] is True and "reused" not in json.loads(lines[0])
    assert json.loads(lines[2]) == {"path": "/m/ü.wav", "track_id": "ü", "name": "ü", "status": "failed",
                                    "error": "too short: 12 samples", "error_type": "EmptyAudioError",
                                    "stage": "decode"}
    assert "ü" in lines[2]  # UTF-8 kept, not \u-escaped
    assert parse_manifest(text + "\n", path="manifest.jsonl") == rows
    assert rows[2].describe_failure() == "EmptyAudioError (decode): too short: 12 samples"
    with pytest.raises(DataError, match=r"manifest\.jsonl, line 2: not valid JSON"):
        parse_manifest(lines[0] + "\nnot json\n", path="manifest.jsonl")
    with pytest.raises(DataError, match=r"line 1: not a manifest row"):
        parse_manifest('{"track_id": "a"}\n', path="manifest.jsonl")


def test_job_record_keeps_every_entry_and_extra_ones() -> None:
    record = JobRecord(job="auralise", created="2026-01-01T00:00:00+00:00", tfaural_version="0.1", input="a/*",
                       manifest=None, model_dir="/e/1", model={"model_dir": "/e/1", "run_id": "r"},
                       metadata=METADATA, settings={"layers": [1]}, extra={"layers": [1], "mode": "phase"})
    text = record.to_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["manifest"] is None and data["mode"] == "phase" and data["metadata"] == METADATA
    assert parse_job_record(text, path="job.json") == record
    assert record.export_metadata() == ExportMetadata.from_dict(METADATA, path="job.json (metadata)")
    minimal = parse_job_record('{"job": "tag"}', path="job.json")
    assert (minimal.job, minimal.created, minimal.metadata, minimal.export_metadata()) == ("tag", None, None, None)
    with pytest.raises(DataError, match=r"job\.json: not a job record"):
        parse_job_record('{"settings": {}}', path="job.json")
    with pytest.raises(DataError, match="settings is list, not an object"):
        parse_job_record('{"job": "tag", "settings": []}', path="job.json")


def test_track_record_round_trips_the_auralise_layout() -> None:
    record = TrackRecord(
        track_id="rock/a", path="/m/rock/a.flac", sample_rate=12000, offset_seconds=0.0, clip_seconds=4.0,
        original="original.wav", original_spectrogram=None,
        layers={1: (FeatureRecord(0, "layer1/feature0.wav", None, 2.5, 0.3, False),
                    FeatureRecord(1, "layer1/feature1.wav", None, None, 0.0, True))},
        checksums={"original.wav": "ab" * 32, "layer1/feature0.wav": "cd" * 32, "layer1/feature1.wav": "ef" * 32},
    )
    data = json.loads(record.to_text())
    assert data["layers"] == {"1": [
        {"feature": 0, "file": "layer1/feature0.wav", "spectrogram": None, "activation": 2.5, "peak": 0.3,
         "silent": False},
        {"feature": 1, "file": "layer1/feature1.wav", "spectrogram": None, "activation": None, "peak": 0.0,
         "silent": True}]}
    assert "tags" not in data and "attribution" not in data
    assert record.files() == ["original.wav", "layer1/feature0.wav", "layer1/feature1.wav"]
    assert parse_track_record(record.to_text(), path="track.json") == record
    tagged = TrackRecord(**{**record.__dict__, "tags": (("rock", 0.9),), "attribution": {"rock": {1: ((0, 0.5),)}}})
    data = json.loads(tagged.to_text())
    assert data["tags"] == [{"label": "rock", "score": 0.9}]
    assert data["attribution"] == {"rock": {"1": [{"feature": 0, "contribution": 0.5}]}}
    assert parse_track_record(tagged.to_text(), path="track.json") == tagged
    with pytest.raises(DataError, match=r"track\.json: layer 'one' is malformed"):
        parse_track_record('{"layers": {"one": []}}', path="track.json")
    with pytest.raises(DataError, match="'tags' or 'attribution' is malformed"):
        parse_track_record('{"tags": [{"label": "x"}]}', path="track.json")
    with pytest.raises(DataError, match="'checksums' must map file names"):
        parse_track_record('{"checksums": {"a.wav": 3}}', path="track.json")


def test_formats_never_imports_tensorflow_or_beam() -> None:
    code = ("import sys, tfaural.formats\n"
            "bad = [m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
