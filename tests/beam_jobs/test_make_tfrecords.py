"""make_tfrecords on a real Beam runner (in-process DirectRunner) over generated audio in many formats.

The shards are read back through the tf.data pipeline and compared with TFDS built from the same
manifest; sample values are checked against NumPy's int16 quantisation of tfaural.audio's decoding.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import pathlib
import subprocess
import sys

import apache_beam as beam
import ffmpeg_files
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.testing import test_pipeline
from jobs_testing import REPO, capture_progress, import_records, peak_after_warm_up, recording_env, traced_peak
from signal_makers import chirp, clicks, sine

from beam_jobs import io as beam_io
from beam_jobs import make_tfrecords
from beam_jobs.options import parse_job_args
from tfaural import audio
from tfaural.config import SegmentConfig
from tfaural.data import pipeline, tfrecord
from tfaural.data.catalogue import Track, read_manifest
from tfaural.errors import AudioDecodeError, EmptyAudioError, ParameterError

SR = 8000
SCHEME = "tfauraltest"


class _PrefixedLocalFileSystem(LocalFileSystem):
    """A Beam filesystem for ``tfauraltest://<local path>`` URIs, standing in for gs:// in tests."""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def open(self, path: str, mime_type: str = "application/octet-stream",
             compression_type: str = CompressionTypes.AUTO) -> io.BufferedReader:
        return super().open(path[len(SCHEME) + 3 :], mime_type, compression_type)


@dataclasses.dataclass(frozen=True)
class Entry:
    path: str  # as written in the manifest
    track_id: str
    labels: tuple[str, ...]
    split: str | None
    error: str | None = None  # expected failure type in segment mode
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Corpus:
    manifest: pathlib.Path
    root: pathlib.Path
    entries: tuple[Entry, ...]

    def good(self) -> list[Entry]:
        return [e for e in self.entries if e.error is None]

    def local(self, entry: Entry) -> str:
        path = entry.path[len(SCHEME) + 3 :] if entry.path.startswith(SCHEME) else str(self.root / entry.path)
        return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("catalogue")

    def write(name: str, y: np.ndarray, sample_rate: int, subtype: str | None = None, fmt: str | None = None) -> str:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y if y.ndim == 1 else y.T, sample_rate, subtype=subtype, format=fmt)
        return name

    stereo = np.stack([sine(330, 0.8, sample_rate=22050), chirp(200, 900, 0.8, sample_rate=22050)])
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 4)
    (root / "bad" / "empty.flac").write_bytes(b"")
    (root / "bad" / "notes.mp3").write_text("these are not the sounds you are looking for\n")
    write("bad/short.wav", sine(440, 50 / SR, sample_rate=SR, fade=0), SR, "PCM_16")
    write("bad/silence.flac", np.zeros(SR, np.float32), SR, "PCM_16")
    # float noise at -140 dBFS: below one 16-bit step, stored as all zeros
    write("bad/hiss.wav", 1e-7 * np.sign(np.sin(np.arange(SR, dtype=np.float32))), SR, "FLOAT")
    write("bad/loud.wav", 8 * sine(300, 0.6, sample_rate=SR, amplitude=1.0), SR, "FLOAT")  # 92% beyond full scale
    overshoot = sine(300, 0.9, sample_rate=SR, amplitude=0.9)
    overshoot[::250] = 1.2  # 0.4% of the samples beyond full scale, as a loud master's decoder gives: clipped
    write("jazz/overshoot.wav", overshoot, SR, "FLOAT")
    uri_file = write("remote/uri.flac", chirp(100, 3000, 0.75, sample_rate=16000), 16000, "PCM_16")
    uri_m4a = "remote/uri.m4a"  # through the Beam filesystem's stream, and FFmpeg
    ffmpeg_files.write(root / uri_m4a, chirp(150, 2500, 0.8, sample_rate=44100), sample_rate=44100, kind="aac-m4a")
    ffmpeg_files.write(root / "rock" / "itunes.m4a", stereo, sample_rate=22050, kind="alac-m4a")
    entries = (
        Entry(write("rock/wav16.wav", sine(440, 1.0, sample_rate=SR), SR, "PCM_16"), "rock/wav16", ("rock",), "train"),
        Entry(write("rock/wav24.wav", chirp(200, 3000, 0.7, sample_rate=44100), 44100, "PCM_24"), "rock/wav24",
              ("rock", "loud"), "train"),
        Entry(write("jazz/float.wav", sine(300, 0.6, sample_rate=22050, amplitude=0.9), 22050, "FLOAT"), "jazz/float",
              ("jazz",), "validation"),
        Entry(write("jazz/track 04.flac", clicks(0.9, sample_rate=16000), 16000, "PCM_16"), "jazz/track_04",
              ("jazz",), "test"),
        Entry(write("pop/vorbis.ogg", sine(660, 1.0, sample_rate=44100), 44100, "VORBIS"), "pop/vorbis", ("pop",),
              "train"),
        Entry(write("pop/mpeg.mp3", sine(550, 1.0, sample_rate=44100), 44100, "MPEG_LAYER_III"), "pop/mpeg",
              ("pop", "loud"), "test"),
        Entry(write("pop/stereo.wav", stereo, 22050, "PCM_16"), "pop/stereo", ("pop",), None),
        Entry(f"{SCHEME}://{root / uri_file}", "remote/uri", ("jazz",), "validation"),
        Entry(f"{SCHEME}://{root / uri_m4a}", "remote/uri_m4a", ("pop",), "train"),
        Entry("rock/itunes.m4a", "rock/itunes", ("rock",), "train"),
        Entry("jazz/overshoot.wav", "jazz/overshoot", ("jazz", "loud"), "train"),
        Entry("bad/loud.wav", "bad/loud", ("rock",), "train", "InvalidAudioError",
              "are beyond full scale (peak 8, +18.1 dBFS), which its 16-bit records would clip"),
        Entry("bad/corrupt.wav", "bad/corrupt", ("rock",), "train", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/empty.flac", "bad/empty", ("jazz",), "test", "AudioDecodeError", "empty file"),
        Entry("bad/notes.mp3", "bad/notes", ("pop",), "train", "AudioDecodeError", "not a readable audio file"),
        Entry("bad/short.wav", "bad/short", ("rock",), "test", "EmptyAudioError", "too short"),
        Entry("bad/silence.flac", "bad/silence", ("jazz",), "train", "InvalidAudioError",
              "the audio is digital silence (every sample is 0)"),
        Entry("bad/hiss.wav", "bad/hiss", ("pop",), "validation", "InvalidAudioError",
              "the audio is silent (peak -140.0 dBFS; at most -120 dBFS is silence)"),
        Entry("bad/missing.ogg", "bad/missing", ("rock",), "validation", "AudioDecodeError", "file not found"),
    )
    manifest = root / "manifest.csv"
    lines = ["path,track_id,labels,split"]
    lines += [f"{e.path},{e.track_id if e.path.startswith(SCHEME) else ''},{';'.join(e.labels)},{e.split or ''}"
              for e in entries]
    manifest.write_text("\n".join(lines) + "\n")
    return Corpus(manifest=manifest, root=root, entries=entries)


def run_job(corpus: Corpus, output: pathlib.Path, *extra: str) -> beam.runners.runner.PipelineResult:
    argv = ["--manifest", str(corpus.manifest), "--output", str(output), "--sample-rate", str(SR),
            "--runner=DirectRunner", *extra]
    return make_tfrecords.run(argv, save_main_session=False)


def read_records(folder: pathlib.Path) -> list[tfrecord.TrackRecord]:
    files = sorted(str(p) for p in folder.glob("*.tfrecord"))
    return [tfrecord.decode_example(r.numpy(), sample_rate=SR) for r in tf.data.TFRecordDataset(files)]


def reference_pcm(corpus: Corpus, entry: Entry) -> np.ndarray:
    """NumPy's int16 quantisation of tfaural.audio's decoding at SR, mono."""
    y, _ = audio.load(corpus.local(entry), sample_rate=SR)
    return np.round(np.clip(y.astype(np.float64), -1, 1) * 32767).astype(np.int16)


def counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))
    return sum(c.committed for c in query["counters"])


@pytest.fixture(scope="module")
def segment_run(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, object]:
    output = tmp_path_factory.mktemp("segments")
    result = run_job(corpus, output, "--segment-length", "1024", "--max-segments", "4", "--shards", "2")
    return output, result


@pytest.mark.slow
def test_segment_shards_hold_every_readable_track_and_failures_hold_the_rest(
    corpus: Corpus, segment_run: tuple[pathlib.Path, beam.runners.runner.PipelineResult]
) -> None:
    output, result = segment_run
    names = sorted(p.name for p in output.iterdir())
    assert names == ["dataset.json", "failures.jsonl"] + [
        f"{split}-0000{i}-of-00002.tfrecord" for split in ("test", "train", "unsplit", "validation") for i in (0, 1)
    ]
    failures = [json.loads(line) for line in (output / "failures.jsonl").read_text().splitlines()]
    expected_failures = {e.track_id: e for e in corpus.entries if e.error}
    assert {f["track_id"] for f in failures} == set(expected_failures)
    for failure in failures:
        entry = expected_failures[failure["track_id"]]
        assert failure["error"] == entry.error
        assert entry.reason in failure["reason"]
        assert failure["path"] == corpus.local(entry) and failure["split"] == entry.split

    info = tfrecord.DatasetInfo.read(str(output))
    assert info.label_names == ("jazz", "loud", "pop", "rock") and info.multi_label
    assert (info.sample_rate, info.segment_length, info.max_segments, info.max_segments_per_track) == (SR, 1024, 4, 4)
    by_split = collections.Counter((e.split or "unsplit", e.error is None) for e in corpus.entries)
    for split, counts in info.splits.items():
        assert counts["tracks"] == by_split[(split, True)] and counts["failed"] == by_split[(split, False)]
        assert counts["manifest_tracks"] == counts["tracks"] + counts["failed"] and counts["shards"] == 2
        assert counts["samples"] == 4 * 1024 * counts["tracks"] and counts["records"] == 4 * counts["tracks"]
    assert info.total("records") == 4 * len(corpus.good())
    assert counter(result, "tracks_written") == len(corpus.good())
    assert counter(result, "tracks_failed") == len(expected_failures)

    records = collections.defaultdict(list)
    for record in read_records(output):
        records[record.track_id].append(record)
    assert set(records) == {e.track_id for e in corpus.good()}
    for entry in corpus.good():
        got = sorted(records[entry.track_id], key=lambda r: r.segment_index)
        assert [r.segment_index for r in got] == [0, 1, 2, 3] and {r.num_segments for r in got} == {4}
        expected = reference_pcm(corpus, entry)[: 4 * 1024].reshape(4, 1024)
        np.testing.assert_array_equal(np.stack([r.audio for r in got]), expected)
        label_names = [name for name, flag in zip(info.label_names, got[0].labels) if flag]
        assert tuple(label_names) == tuple(sorted(entry.labels))
        assert got[0].source_path == corpus.local(entry) or got[0].source_path == entry.path
    # An independent check on a lossless source at the target rate: within one int16 step of the file.
    original = sf.read(corpus.root / "rock" / "wav16.wav", dtype="int16")[0][: 4 * 1024]
    stored = np.concatenate([r.audio for r in sorted(records["rock/wav16"], key=lambda r: r.segment_index)])
    assert np.max(np.abs(stored.astype(int) - original.astype(int))) <= 1


@pytest.mark.slow
def test_segment_shards_feed_the_tf_data_pipelines(corpus: Corpus, segment_run: tuple[pathlib.Path, object]) -> None:
    output, _ = segment_run
    pattern = str(output / "*.tfrecord")
    batches = list(pipeline.make_dataset(pattern, segment_length=1024, batch_size=8, training=False))
    assert sum(x.shape[0] for x, _ in batches) == 4 * len(corpus.good())
    tracks = {t.numpy().decode(): (x.numpy(), y.numpy())
              for t, x, y in pipeline.make_track_dataset(pattern, segment_length=1024, sample_rate=SR)}
    assert set(tracks) == {e.track_id for e in corpus.good()}
    names = tfrecord.DatasetInfo.read(pattern).label_names
    for entry in corpus.good():
        inputs, labels = tracks[entry.track_id]
        assert inputs.shape == (4, 1024, 1)
        expected = reference_pcm(corpus, entry)[: 4 * 1024].reshape(4, 1024, 1) / np.float32(32767)
        np.testing.assert_allclose(inputs, expected, atol=1e-7)
        assert {n for n, flag in zip(names, labels) if flag} == set(entry.labels)
    for inputs, _ in pipeline.make_dataset(str(output / "train-*.tfrecord"), segment_length=512, batch_size=4,
                                           training=True, seed=3):
        assert inputs.shape == (4, 512, 1)


@pytest.mark.slow
def test_no_process_of_the_job_imports_tensorflow(corpus: Corpus, tmp_path: pathlib.Path) -> None:
    """Decoding and writing records needs no TensorFlow (tfaural.data.tfrecord's own Example messages): neither
    the launcher nor a Beam worker imports it (its start-up and ~580 MiB each); TensorFlow reads what they wrote."""
    local = [e for e in corpus.entries if not e.path.startswith(SCHEME)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,track_id,labels,split\n" + "".join(
        f"{corpus.root / e.path},{e.track_id},{';'.join(e.labels)},{e.split or ''}\n" for e in local))
    env = recording_env(tmp_path / "recorded")
    done = subprocess.run([sys.executable, "-m", "beam_jobs.make_tfrecords", f"--manifest={manifest}",
                           f"--output={tmp_path / 'out'}", f"--sample-rate={SR}", "--segment-length=1024",
                           "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    _, seen = import_records(tmp_path / "recorded")
    launcher = [r for r in seen if "beam_jobs.make_tfrecords" in r["argv"]]
    beam_workers = [r for r in seen if "apache_beam.runners.worker.sdk_worker_main" in r["argv"]]
    assert len(launcher) == 1 and len(beam_workers) == 2, [r["argv"] for r in seen]
    assert not any(r["tensorflow"] for r in launcher + beam_workers)
    info = tfrecord.read_dataset_info(str(tmp_path / "out"))
    good = [e for e in local if e.error is None]
    assert info.total("tracks") == len(good) and info.total("failed") == len(local) - len(good)
    ids: dict[str, set[str]] = {}
    for split in info.splits:
        files = sorted(str(p) for p in (tmp_path / "out").glob(f"{split}-*.tfrecord"))
        parsed = tf.data.TFRecordDataset(files).map(lambda r: tfrecord.parse_example(
            r, sample_rate=SR, num_labels=info.num_labels, num_samples=1024))
        ids[split] = {x["track_id"].numpy().decode() for x in parsed}
        for x in parsed.filter(lambda x: x["segment_index"] == 0):  # each track's first segment: its decoded PCM
            entry = next(e for e in good if e.track_id == x["track_id"].numpy().decode())
            first = reference_pcm(corpus, entry)[:1024]
            np.testing.assert_array_equal(x["audio"].numpy()[: first.size], first)
    assert set().union(*ids.values()) == {e.track_id for e in good}
    assert all(e.track_id in ids[e.split] for e in good if e.split)


@pytest.mark.slow
def test_rerun_writes_identical_shards(
    corpus: Corpus, segment_run: tuple[pathlib.Path, object], tmp_path: pathlib.Path
) -> None:
    first, _ = segment_run
    run_job(corpus, tmp_path, "--segment-length", "1024", "--max-segments", "4", "--shards", "2")
    shards = sorted(p.name for p in first.glob("*.tfrecord"))
    assert shards == sorted(p.name for p in tmp_path.glob("*.tfrecord"))
    for name in shards:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name
    serialized = collections.Counter(r.numpy() for r in tf.data.TFRecordDataset([str(tmp_path / n) for n in shards]))
    assert sum(serialized.values()) == 4 * len(corpus.good()) and max(serialized.values()) == 1
    assert (first / "failures.jsonl").read_text() == (tmp_path / "failures.jsonl").read_text()


@pytest.mark.slow
def test_whole_tracks_overwrite_and_tfds_agree(corpus: Corpus, tmp_path: pathlib.Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import tensorflow_datasets as tfds

    from tfaural.data.tfds_builders import CatalogueConfig

    run_job(corpus, tmp_path, "--segment-length", "4096")
    with pytest.raises(ParameterError, match="--overwrite"):
        run_job(corpus, tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="beam_jobs.make_tfrecords"):
        run_job(corpus, tmp_path, "--overwrite", "--min-duration", "0.05")
    n_failed = sum(e.error is not None for e in corpus.entries)
    summary = [r.getMessage() for r in caplog.records if r.name == "beam_jobs.make_tfrecords"]
    at = next(i for i, line in enumerate(summary) if line.startswith("make_tfrecords: wrote "))
    named = [line.strip().split(": ", 1) for line in summary[at + 1:at + 6]]  # five named, with their reasons
    assert f"{n_failed} track(s) failed" in summary[at] and len(named) == 5 and all(len(n) == 2 for n in named)
    assert {path for path, _ in named} < {corpus.local(e) for e in corpus.entries if e.error}
    assert summary[at + 6] == f"  ... and {n_failed - 5} more in {tmp_path / 'failures.jsonl'}"  # and the rest
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == [
        "test-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord", "unsplit-00000-of-00001.tfrecord",
        "validation-00000-of-00001.tfrecord"]
    info = tfrecord.DatasetInfo.read(str(tmp_path))
    assert info.segment_length is None and info.max_segments_per_track == 1
    failures = {json.loads(line)["track_id"]: json.loads(line) for line in
                (tmp_path / "failures.jsonl").read_text().splitlines()}
    assert "too short: 50 samples" in failures["bad/short"]["reason"]  # --min-duration 0.05 s = 400 samples
    assert failures["bad/short"]["reason"].endswith("need at least 400 (--min-duration)")
    records = {r.track_id: r for r in read_records(tmp_path)}
    assert set(records) == {e.track_id for e in corpus.good()}
    assert info.total("samples") == sum(r.audio.size for r in records.values())
    for entry in corpus.good():
        np.testing.assert_array_equal(records[entry.track_id].audio, reference_pcm(corpus, entry))
        assert records[entry.track_id].segment_index == tfrecord.WHOLE_TRACK

    config = CatalogueConfig.from_manifest(corpus.manifest, sample_rate=SR)
    builder = tfds.builder("tfaural_catalogue", data_dir=str(tmp_path / "tfds"), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(corpus.root)))
    examples = {}
    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            examples[example["track_id"].decode()] = (split, example)
    # TFDS has no --min-duration (it keeps the 50-sample file) and reads URIs with tf.io.gfile,
    # which does not know the test scheme: both show up in its failures metadata instead.
    assert set(examples) == set(records) - {"remote/uri", "remote/uri_m4a"} | {"bad/short"}
    assert {f["track_id"] for f in builder.info.metadata["failures"]} == set(failures) - {"bad/short"} | {
        "remote/uri", "remote/uri_m4a"}
    label_feature = builder.info.features["labels"].feature
    for track_id, record in records.items():
        if track_id in examples:
            split, example = examples[track_id]
            np.testing.assert_array_equal(example["audio"], record.audio)
            assert {label_feature.int2str(i) for i in example["labels"]} == {
                n for n, f in zip(info.label_names, record.labels) if f}
            assert split == (corpus_entry(corpus, track_id).split or "unsplit")


def corpus_entry(corpus: Corpus, track_id: str) -> Entry:
    return next(e for e in corpus.entries if e.track_id == track_id)


# ---------------------------------------------------------------------------
# Pieces: options, the shard writer, Beam filesystem audio
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--manifest", "m.csv", "--output", "o"], "--sample-rate is required"),
        (["--output", "o", "--sample-rate", "8000"], "--manifest is required"),
        (["--manifest", "m.csv", "--output", "o", "--sample-rate", "0"], "--sample-rate 0 is invalid"),
        (["--manifest", "m.csv", "--output", "o", "--sample-rate", "8000", "--max-segments", "3"],
         "--max-segments 3 needs --segment-length"),
        (["--manifest", "m.csv", "--output", "o", "--sample_rate", "8000", "--segment-length", "0"],
         "SegmentConfig.length=0"),
        (["--manifest", "m.csv", "--output", "o", "--sample-rate", "8000", "--shards", "0"], "--shards 0"),
    ],
)
def test_settings_validation(argv: list[str], message: str) -> None:
    options = parse_job_args(argv, prog="t", description="t", option_classes=make_tfrecords.JOB.option_classes)
    with pytest.raises(ParameterError, match=message):
        make_tfrecords.Settings.from_options(options)


def test_settings_from_flags() -> None:
    argv = ["--manifest", "m.csv", "--output", "out/", "--sample_rate", "22050", "--segment-length", "59049",
            "--max-segments", "10", "--pad", "constant", "--min-duration", "1.5", "--runner", "DirectRunner"]
    settings = make_tfrecords.Settings.from_options(parse_job_args(argv, prog="t", description="t",
                                                                   option_classes=make_tfrecords.JOB.option_classes))
    assert settings.output == "out" and settings.sample_rate == 22050 and settings.min_samples == 33075
    assert settings.segment is not None and (settings.segment.length, settings.segment.n_segments) == (59049, 10)
    assert settings.segment.pad == "constant" and settings.shards is None and not settings.overwrite


def test_help_and_cli_errors(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit) as info:
        make_tfrecords.run(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--manifest", "--output", "--sample-rate", "--segment-length", "--shards", "--overwrite"):
        assert flag in text
    assert make_tfrecords.main(["--manifest", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o"),
                                "--sample-rate", "8000"]) == 2
    assert "manifest file not found" in capsys.readouterr().err


def test_a_job_whose_pipeline_fails_to_build_leaves_no_temporary_folder(
        corpus: Corpus, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam deletes a pipeline's temporary folder (``beam-pipeline-temp*``) only in ``run()``: a job whose
    ``build`` raises deletes it itself, and the error reaches the caller unchanged."""
    built: list[beam.Pipeline] = []

    def broken(self: make_tfrecords.MakeTFRecordsJob, pipeline: beam.Pipeline, *args: object) -> None:
        built.append(pipeline)
        assert pathlib.Path(pipeline.local_tempdir).is_dir()
        raise ParameterError("a build that fails")

    monkeypatch.setattr(make_tfrecords.MakeTFRecordsJob, "build", broken)
    with pytest.raises(ParameterError, match="a build that fails"):
        run_job(corpus, tmp_path / "out")
    assert len(built) == 1 and not pathlib.Path(built[0].local_tempdir).exists()


def test_shard_index_is_stable() -> None:
    assert [beam_io.shard_index(k, 7) for k in ("a", "rock/x", "ü")] == [
        int.from_bytes(__import__("hashlib").sha1(k.encode()).digest()[:8], "big") % 7 for k in ("a", "rock/x", "ü")]


def test_write_sharded_tfrecords_keeps_keys_together_sorted_and_writes_empty_shards(tmp_path: pathlib.Path) -> None:
    elements = [(f"k{i}", [f"k{i}-{j}".encode() for j in range(i % 3 + 1)]) for i in range(6)]
    with test_pipeline.TestPipeline() as p:
        stats = (p | beam.Create(elements) | beam_io.WriteShardedTFRecords(str(tmp_path / "part"), num_shards=8))
        _ = stats | beam.Map(lambda s: None)
    files = sorted(tmp_path.glob("part-*-of-00008.tfrecord"))
    assert len(files) == 8
    for path in files:
        index = int(path.name.split("-")[1])
        got = [r.numpy().decode() for r in tf.data.TFRecordDataset(str(path))]
        keys = sorted(k for k, _ in elements if beam_io.shard_index(k, 8) == index)
        assert got == [f"{k}-{j}" for k in keys for j in range(int(k[1:]) % 3 + 1)]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_load_audio_through_a_beam_filesystem(tmp_path: pathlib.Path) -> None:
    y = sine(440, 0.25, sample_rate=16000)
    sf.write(tmp_path / "a.flac", y, 16000, subtype="PCM_16")
    uri = f"{SCHEME}://{tmp_path / 'a.flac'}"
    remote, sr = beam_io.load_audio(uri, sample_rate=SR)
    local, _ = audio.load(str(tmp_path / "a.flac"), sample_rate=SR)
    assert sr == SR
    np.testing.assert_array_equal(remote, local)
    with pytest.raises(AudioDecodeError, match=f"{SCHEME}://.*cannot read the file"):
        beam_io.load_audio(f"{SCHEME}://{tmp_path / 'missing.flac'}", sample_rate=SR)
    (tmp_path / "t.wav").write_text("text")
    with pytest.raises(AudioDecodeError, match=f"{SCHEME}://.*t.wav: not a readable audio file"):
        beam_io.load_audio(f"{SCHEME}://{tmp_path / 't.wav'}", sample_rate=SR)


def test_an_m4a_through_a_beam_filesystem_reads_as_the_local_file(tmp_path: pathlib.Path) -> None:
    """FFmpeg reads the filesystem's seekable stream: the whole file, an excerpt, and block by block."""
    local = str(ffmpeg_files.write(tmp_path / "a.m4a", chirp(150, 2500, 3.0, sample_rate=44100), sample_rate=44100,
                                   kind="aac-m4a"))
    uri = f"{SCHEME}://{local}"
    np.testing.assert_array_equal(beam_io.load_audio(uri, sample_rate=SR)[0], audio.load(local, sample_rate=SR)[0])
    np.testing.assert_array_equal(beam_io.load_audio(uri, sample_rate=SR, offset=2.0, duration=0.5)[0],
                                  audio.load(local, sample_rate=SR, offset=2.0, duration=0.5)[0])
    np.testing.assert_array_equal(np.concatenate(list(beam_io.iter_audio_blocks(uri, sample_rate=SR, block_seconds=1))),
                                  np.concatenate(list(audio.iter_blocks(local, sample_rate=SR, block_seconds=1))))


def test_write_text_replaces_atomically(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "x" / "f.json")
    beam_io.write_text(path, "one")
    beam_io.write_text(path, "two")
    assert pathlib.Path(path).read_text() == "two" and len(list((tmp_path / "x").iterdir())) == 1
    assert beam_io.delete_matching([str(tmp_path / "x" / "*.json")]) == [path]


# ---------------------------------------------------------------------------
# Long tracks in bounded memory (issue 17)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pad", ["none", "constant", "wrap"])
def test_segmenter_cuts_what_audio_segment_cuts(pad: str) -> None:
    rng = np.random.default_rng({"none": 1, "constant": 2, "wrap": 3}[pad])
    for _ in range(400):
        n, length = int(rng.integers(1, 300)), int(rng.integers(1, 50))
        hop = None if rng.random() < 0.3 else int(rng.integers(1, 80))
        cap = None if rng.random() < 0.4 else int(rng.integers(1, 10))
        y = rng.integers(-30000, 30000, n).astype(np.int16)
        try:
            expected = audio.segment(y.astype(np.float32), length=length, hop=hop, pad=pad, max_segments=cap)
        except EmptyAudioError:
            expected = None
        cutter = make_tfrecords.Segmenter(length=length, hop=hop, pad=pad, max_segments=cap, source="y")
        pieces, start = [], 0
        while start < n and not cutter.full:
            size = int(rng.integers(1, 40))
            pieces += list(cutter.feed(y[start : start + size]))
            start += size
        try:
            pieces += list(cutter.finish())
        except EmptyAudioError:
            assert expected is None
            continue
        assert expected is not None
        np.testing.assert_array_equal(np.stack(pieces), expected.astype(np.int16))


@pytest.mark.parametrize("segment", [None, SegmentConfig(length=4000)], ids=["whole_track", "all_segments"])
def test_memory_does_not_grow_with_the_track(segment: SegmentConfig | None, tmp_path: pathlib.Path) -> None:
    """Python's peak allocations (NumPy's included) while encoding a 1-min and a 10-min track, into a part file.

    Decoding the track whole used to take 4 bytes per sample (19 MB for 10 minutes at 8 kHz) and the records
    as much again in memory; now a block of 10 s and a record (or a 1-MiB piece of one) at a time.
    """
    peaks, records = {}, {}
    for minutes in (1, 10):
        path = tmp_path / f"{minutes}min.wav"
        n = minutes * 60 * SR
        sf.write(path, (np.sin(np.arange(n) * 0.01) * 0.5).astype(np.float32), SR, subtype="PCM_16")
        track = Track(path=str(path), track_id=f"t{minutes}", labels=("rock",))
        (result, samples), peaks[minutes] = traced_peak(
            make_tfrecords.encode_track, track, labels=np.ones(1, np.float32), sample_rate=SR, segment=segment,
            part_path=str(tmp_path / f"part{minutes}.tfrecord"), spill_bytes=1 << 16)
        assert isinstance(result, beam_io.RecordFile) and samples == n
        records[minutes] = [tfrecord.decode_example(r.numpy(), sample_rate=SR)
                            for r in tf.data.TFRecordDataset(result.path)]
    assert peaks[10] < peaks[1] + (1 << 20), peaks  # flat, not 10x
    assert peaks[10] < 10 * 60 * SR, peaks  # less than the 10-min track's int16 PCM, let alone its float32
    whole = np.concatenate([r.audio for r in records[10]])
    reference = tfrecord.quantize(audio.load(str(tmp_path / "10min.wav"), sample_rate=SR)[0])
    np.testing.assert_array_equal(whole, reference)
    assert [r.segment_index for r in records[10]] == ([-1] if segment is None else list(range(len(records[10]))))


@pytest.mark.slow
def test_records_through_part_files_are_the_same_bytes(
    corpus: Corpus, segment_run: tuple[pathlib.Path, object], tmp_path: pathlib.Path
) -> None:
    """The job's shards (every track's records through its part file) are those of records sent through the
    pipeline in memory (``spill_bytes`` above the largest track's; the transform takes both), byte for byte."""
    first, _ = segment_run
    settings = make_tfrecords.Settings(manifest=str(corpus.manifest), output=str(tmp_path), sample_rate=SR,
                                       segment=SegmentConfig(length=1024, n_segments=4), shards=2,
                                       spill_bytes=1 << 30)
    catalogue = read_manifest(str(corpus.manifest), check_files=False)
    with test_pipeline.TestPipeline() as p:
        make_tfrecords.build_pipeline(p, catalogue, settings)
    assert not (tmp_path / ".parts").exists()  # nothing went through a part file
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


@pytest.mark.slow
def test_the_jobs_memory_does_not_grow_with_the_catalogue(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Records travel through part files, never through the pipeline: on 80 one-minute tracks (76.8 MB of
    records) the job's Python and NumPy allocations (tracemalloc: the in-process runner with Beam's buffers,
    decoding, the records) peak below a quarter of them, where a grouping of the records themselves holds all
    of them at once. Measured after a first, 2-track run, so that the modules a run imports are not counted.
    The launcher counts the tracks encoded (a look every 0.02 s: a part file exists only from its track's encoding
    to its shard's writing, under a second in all here, and a run that no look saw logs no line): the good ones,
    not the corrupt one."""
    def catalogue(folder: pathlib.Path, n: int) -> pathlib.Path:
        folder.mkdir()
        t = np.arange(60 * SR) / SR
        lines = ["path,track_id,labels,split"]
        for i in range(n):
            sf.write(folder / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + i) * t)).astype(np.float32), SR,
                     subtype="PCM_16")
            lines.append(f"t{i}.wav,t{i},rock,{'train' if i % 4 else 'test'}")
        (folder / "bad.wav").write_bytes(b"RIFF, but not a WAV")
        lines.append("bad.wav,bad,rock,train")
        (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
        return folder / "manifest.csv"

    def run(manifest: pathlib.Path) -> pathlib.Path:
        output = manifest.parent / "out"
        make_tfrecords.run([f"--manifest={manifest}", f"--output={output}", f"--sample-rate={SR}",
                            "--runner=DirectRunner"])
        return output

    progress = capture_progress(monkeypatch, caplog, seconds=0.02)
    output, peak = peak_after_warm_up(run, catalogue, tmp_path, 80)
    records = 80 * 60 * SR * 2
    assert peak < records / 4, (peak, records)
    info = json.loads((output / "dataset.json").read_text())
    assert sum(s["tracks"] for s in info["splits"].values()) == 80
    assert sum(1 for _ in tf.data.TFRecordDataset([str(p) for p in output.glob("*.tfrecord")])) == 80
    assert not (output / ".parts").exists()
    lines = progress()
    assert lines and lines[-1].startswith("make_tfrecords: 80 of 81 track(s) written (99%)"), lines
