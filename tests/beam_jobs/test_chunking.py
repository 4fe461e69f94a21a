"""Whole tracks in chunks (beam_jobs.chunking): exact recombination, tracks longer than the export's limit,
files that become undecodable halfway (a FLAC, an MP3 cut short of its frame count), and an MP3 whose length
is nowhere in the file.

The jobs run on the in-process DirectRunner with ``--chunk-seconds 3`` (24 segments of the 3^5-SampleCNN
test export at 2000 Hz per chunk), so that short files span several chunks with a ragged last one. Their
results are compared with the signatures called directly: once on the whole decoded track, and, for a
track longer than the export accepts in one call, on every segment alone (an independent reference for
the pooling: max and mean over all segments).
"""

from __future__ import annotations

import io
import itertools
import json
import pathlib
from typing import Any

import ffmpeg_files
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import SAMPLECNN_SEGMENT, SAMPLECNN_SR, decode, discard, read_manifest_rows, signature
from signal_makers import chirp, sine

from beam_jobs import chunking, extract_features, tag
from beam_jobs.chunking import CHUNK, SEGMENTS, ChunkPlan, PartKey, TrackEnd
from beam_jobs.inference import InferenceFailure
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural import audio
from tfaural.errors import AudioDecodeError, ParameterError
from tfaural.formats import FAILED

CHUNK_SECONDS = 3.0
CHUNK_SEGMENTS = 1 + (int(CHUNK_SECONDS * SAMPLECNN_SR) - SAMPLECNN_SEGMENT) // SAMPLECNN_SEGMENT  # 24
SEVERAL = "several chunks.flac"  # 20 s: 164 segments = 6 chunks of 24 and one of 20
LONG = "longer than max_seconds.wav"  # 605 s at the model's rate; the export accepts 600 s per call
TRUNCATED = "truncated.flac"  # 30 s, cut after 60 % of its bytes
TRUNCATED_MP3 = "cut.mp3"  # 30 s, cut after 60 % of its bytes: libsndfile decodes the rest without a word
NO_LENGTH_HEADER = "no length header.mp3"  # 12 s of VBR MP3 without the frame holding its Xing tag
LONG_SECONDS = 605.0


def _music(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo ``[2, samples]``: a chord, a chirp and noise."""
    n = int(round(seconds * rate))
    left = sine(220, seconds, sample_rate=rate, amplitude=0.3) + chirp(100, 900, seconds, sample_rate=rate,
                                                                        amplitude=0.2)
    right = sine(330, seconds, sample_rate=rate, amplitude=0.3) + 0.05 * rng.standard_normal(n).astype(np.float32)
    return np.stack([left[:n], right[:n]]).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("chunk-catalogue")
    rng = np.random.default_rng(10)
    sf.write(root / SEVERAL, _music(20.0, 44100, rng).T, 44100, subtype="PCM_16")
    long = 0.4 * np.sin(2 * np.pi * 3.0 * np.arange(int(LONG_SECONDS * SAMPLECNN_SR)) / SAMPLECNN_SR)
    long += 0.05 * rng.standard_normal(long.shape)
    sf.write(root / LONG, long.astype(np.float32), SAMPLECNN_SR, subtype="PCM_16")
    whole = root / "whole.flac"
    sf.write(whole, _music(30.0, 8000, rng).T, 8000, subtype="PCM_16")
    data = whole.read_bytes()
    (root / TRUNCATED).write_bytes(data[: int(len(data) * 0.6)])
    whole.unlink()
    mp3 = io.BytesIO()
    sf.write(mp3, _music(30.0, 8000, rng).T, 8000, format="MP3")
    (root / TRUNCATED_MP3).write_bytes(mp3.getvalue()[: int(len(mp3.getvalue()) * 0.6)])
    (root / NO_LENGTH_HEADER).write_bytes(_without_length_header(_music(12.0, 44100, rng)))
    return root


def _without_length_header(y: np.ndarray) -> bytes:
    """A variable-bit-rate MP3 of ``y`` (44.1 kHz) without its first frame, the one holding the Xing tag: its
    length is nowhere in the file (libsndfile guesses it from the first frame's size, here at under half)."""
    y = y.copy()
    y[:, :44100] += 0.3 * np.random.default_rng(4).standard_normal((2, 44100)).astype(np.float32)  # a loud start
    buffer = io.BytesIO()
    sf.write(buffer, y.T, 44100, format="MP3")
    return ffmpeg_files.without_xing_frame(buffer.getvalue())


def _argv(root: pathlib.Path, export: str, output: pathlib.Path) -> list[str]:
    return [f"--input={root}/*", f"--model={export}", f"--output={output}", f"--chunk-seconds={CHUNK_SECONDS}",
            "--runner=DirectRunner"]


@pytest.fixture(scope="module")
def features_output(catalogue: pathlib.Path, samplecnn_export: str,
                    tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    output = tmp_path_factory.mktemp("chunk-features")
    extract_features.run([*_argv(catalogue, samplecnn_export, output), "--format=parquet", "--per-segment",
                          "--batch-size=32"])
    return output


@pytest.fixture(scope="module")
def tags_output(catalogue: pathlib.Path, samplecnn_export: str,
                tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    output = tmp_path_factory.mktemp("chunk-tags")
    tag.run(_argv(catalogue, samplecnn_export, output))
    return output


def _rows(output: pathlib.Path) -> dict[str, dict[str, Any]]:
    return {pathlib.Path(r["path"]).name: r for r in read_manifest_rows(output)}


def _feature_records(output: pathlib.Path) -> dict[str, dict[str, Any]]:
    spec = json.loads((output / "job.json").read_text())
    tables = [pq.read_table(output / name).to_pylist() for name in spec["shards"]]
    return {pathlib.Path(r["path"]).name: r for table in tables for r in table}


def _segments(path: pathlib.Path) -> np.ndarray:
    """``[n, segment]``: every whole segment of the decoded track."""
    return audio.segment(decode(path, SAMPLECNN_SR), length=SAMPLECNN_SEGMENT)


@pytest.mark.slow
def test_chunked_features_equal_one_signature_call_on_the_whole_track(
    catalogue: pathlib.Path, features_output: pathlib.Path, samplecnn_export: str,
) -> None:
    spec = json.loads((features_output / "job.json").read_text())
    assert (spec["chunk_segments"], spec["settings"]["max_samples"]) == (CHUNK_SEGMENTS, None)
    record = _feature_records(features_output)[SEVERAL]
    segments = _segments(catalogue / SEVERAL)
    assert len(segments) == 164 and len(segments) % CHUNK_SEGMENTS == 20  # several chunks, the last one ragged
    features = signature(samplecnn_export, "features")
    whole = features(waveform=tf.constant(segments.reshape(1, -1)))["features"].numpy()[0]
    np.testing.assert_allclose(record["features"], whole, rtol=1e-5, atol=1e-6)
    alone = features(waveform=tf.constant(segments))["features"].numpy()
    np.testing.assert_allclose(record["segment_features"], alone, rtol=1e-5, atol=1e-6)
    assert record["num_segments"] == 164
    assert record["seconds"] == pytest.approx(164 * SAMPLECNN_SEGMENT / SAMPLECNN_SR)


@pytest.mark.slow
def test_chunked_tags_equal_one_signature_call_on_the_whole_track(
    catalogue: pathlib.Path, tags_output: pathlib.Path, samplecnn_export: str,
) -> None:
    records = {pathlib.Path(r["path"]).name: r
               for r in map(json.loads, (tags_output / "tags.jsonl").read_text().splitlines())}
    segments = _segments(catalogue / SEVERAL)
    expected = signature(samplecnn_export, "serving_default")(
        waveform=tf.constant(segments.reshape(1, -1)))["scores"].numpy()[0]
    record = records[SEVERAL]
    np.testing.assert_allclose(list(record["scores"].values()), expected, rtol=1e-5, atol=1e-6)
    assert record["seconds"] == pytest.approx(164 * SAMPLECNN_SEGMENT / SAMPLECNN_SR)


@pytest.mark.slow
def test_a_track_longer_than_the_exports_limit_is_analysed_whole(
    catalogue: pathlib.Path, features_output: pathlib.Path, tags_output: pathlib.Path,
    samplecnn_export: str,
) -> None:
    max_samples = json.loads((features_output / "job.json").read_text())["metadata"]["max_samples"]
    segments = _segments(catalogue / LONG)
    n = int(LONG_SECONDS * SAMPLECNN_SR) // SAMPLECNN_SEGMENT
    assert len(segments) == n and n * SAMPLECNN_SEGMENT > max_samples  # one call could not take it
    seconds = n * SAMPLECNN_SEGMENT / SAMPLECNN_SR

    # Reference: every segment alone, then max / mean over all of them (each level's positions per segment
    # are equal, so the mean over segments of per-segment means is the mean over all positions).
    alone = signature(samplecnn_export, "features")(waveform=tf.constant(segments))["features"].numpy()
    layout = json.loads((features_output / "job.json").read_text())["feature_layout"]
    expected = np.empty(alone.shape[1], np.float64)
    for entry in layout:
        columns = slice(entry["offset"], entry["offset"] + entry["size"])
        pooled = alone[:, columns].max(axis=0) if entry["name"].endswith("_max") else alone[:, columns].mean(
            axis=0, dtype=np.float64)
        expected[columns] = pooled
    record = _feature_records(features_output)[LONG]
    assert record["num_segments"] == n and record["seconds"] == pytest.approx(seconds)
    np.testing.assert_allclose(record["features"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record["segment_features"], alone, rtol=1e-5, atol=1e-6)

    scores = signature(samplecnn_export, "serving_default")(waveform=tf.constant(segments))["scores"].numpy()
    tagged = {pathlib.Path(r["path"]).name: r
              for r in map(json.loads, (tags_output / "tags.jsonl").read_text().splitlines())}[LONG]
    np.testing.assert_allclose(list(tagged["scores"].values()), scores.mean(axis=0, dtype=np.float64),
                               rtol=1e-5, atol=1e-6)
    assert tagged["seconds"] == pytest.approx(seconds)


@pytest.mark.slow
@pytest.mark.parametrize("name, said", [(TRUNCATED, "decoding failed, the file may be truncated or corrupt"),
                                        (TRUNCATED_MP3, "truncated: its audio ends at ")])
def test_a_file_undecodable_halfway_fails_whole_and_writes_nothing(
    catalogue: pathlib.Path, features_output: pathlib.Path, tags_output: pathlib.Path, name: str, said: str,
) -> None:
    """A FLAC whose decoder loses sync, and an MP3 whose decoding ends short of its header's frame count."""
    stem = pathlib.Path(name).stem
    track = TrackInput(str(catalogue / name), stem, stem)
    plan = ChunkPlan(sample_rate=SAMPLECNN_SR, segment_length=SAMPLECNN_SEGMENT, segment_hop=SAMPLECNN_SEGMENT,
                     max_segments=CHUNK_SEGMENTS)
    decoded = chunking.decode_chunks(track, plan)
    sent = list(itertools.islice(decoded, 2))
    assert len(sent) == 2  # chunks leave before the decoder reaches the damage...
    with pytest.raises(AudioDecodeError, match=said):
        list(decoded)  # ...and then it fails
    for output, part in ((features_output, f"tracks/{stem}.npz"), (tags_output, f"tracks/{stem}.json")):
        row = _rows(output)[name]
        assert (row["status"], row["stage"], row["error_type"]) == ("failed", "decode", "AudioDecodeError"), row
        assert said in row["error"]
        assert not (output / part).exists()
        assert {r["status"] for n, r in _rows(output).items() if n not in (TRUNCATED, TRUNCATED_MP3)} == {"ok"}
    assert name not in _feature_records(features_output)
    assert name not in (tags_output / "tags.jsonl").read_text()


@pytest.mark.slow
def test_an_mp3_without_a_length_header_is_analysed_to_its_end(
    catalogue: pathlib.Path, features_output: pathlib.Path, tags_output: pathlib.Path,
) -> None:
    assert sf.info(str(catalogue / NO_LENGTH_HEADER)).frames < 0.5 * 12 * 44100  # libsndfile's guess
    tagged = {pathlib.Path(r["path"]).name: r
              for r in map(json.loads, (tags_output / "tags.jsonl").read_text().splitlines())}[NO_LENGTH_HEADER]
    whole = (12 * SAMPLECNN_SR // SAMPLECNN_SEGMENT) * SAMPLECNN_SEGMENT / SAMPLECNN_SR  # whole segments in 12 s
    assert whole <= tagged["seconds"] <= whole + 2 * SAMPLECNN_SEGMENT / SAMPLECNN_SR
    assert _feature_records(features_output)[NO_LENGTH_HEADER]["seconds"] == tagged["seconds"]


def _part(track: TrackInput, kind: str, index: int, n: int, value: float) -> tuple[PartKey, dict[str, np.ndarray]]:
    return PartKey(track, kind, index, n), {"scores": np.full(2, value, np.float32)}


def test_collect_parts_combines_only_complete_tracks() -> None:
    track = TrackInput("/m/a.wav", "a", "a")
    end = TrackEnd(track, num_chunks=2, num_segments=5, seconds=1.0)
    chunks = [_part(track, CHUNK, 1, 1, 4.0), _part(track, CHUNK, 0, 4, 1.0)]
    parts = chunking.collect_parts([*chunks, end])
    assert isinstance(parts, chunking.TrackParts)
    assert [k.index for k, _ in parts.chunks] == [0, 1]
    np.testing.assert_allclose(chunking.weighted_mean(parts.chunk_outputs("scores"), parts.chunk_weights),
                               [1.6, 1.6], rtol=1e-7)  # (4 * 1 + 1 * 4) / 5
    assert chunking.collect_parts(chunks) is None  # decoding stopped early: the decode stage reports it
    missing = chunking.collect_parts([chunks[0], end])
    assert isinstance(missing, TrackResult) and missing.error_type == "IncompletePrediction"
    no_segments = chunking.collect_parts([*chunks, end], per_segment=True)
    assert isinstance(no_segments, TrackResult) and "0 of 5 segments" in str(no_segments.error)
    # the segments of each chunk come back as batches [n, ...], in any order
    batches = [(PartKey(track, SEGMENTS, 4, 1), {"scores": np.full((1, 2), 4.0, np.float32)}),
               (PartKey(track, SEGMENTS, 0, 4), {"scores": np.repeat(np.arange(4, dtype=np.float32)[:, None], 2, 1)})]
    with_segments = chunking.collect_parts([*chunks, end, *batches], per_segment=True)
    assert isinstance(with_segments, chunking.TrackParts)
    assert [k.index for k, _ in with_segments.segments] == [0, 4]
    np.testing.assert_array_equal(np.concatenate([o["scores"][:, 0] for _, o in with_segments.segments]), np.arange(5))
    gap = chunking.collect_parts([*chunks, end, batches[0]], per_segment=True)  # segments 0-3 missing
    assert isinstance(gap, TrackResult) and "1 of 5 segments" in str(gap.error)
    twice = chunking.collect_parts([*chunks, end, *batches, batches[0]], per_segment=True)
    assert isinstance(twice, TrackResult) and twice.error_type == "IncompletePrediction"
    bad = chunking.collect_parts([chunks[0], (chunks[1][0], InferenceFailure("InvalidArgumentError", "NaN")), end])
    assert isinstance(bad, TrackResult) and (bad.status, bad.stage, bad.error) == (FAILED, "inference", "NaN")


def test_combine_pooled_takes_max_of_maxima_and_weighted_mean_of_means(rng: np.random.Generator) -> None:
    per_segment = rng.standard_normal((11, 6)).astype(np.float32)  # 11 segments, columns: 3 maxima, 3 means
    is_max = np.array([True] * 3 + [False] * 3)
    bounds = [0, 4, 8, 11]  # chunks of 4, 4 and 3 segments
    chunk_values = np.stack([np.where(is_max, per_segment[a:b].max(0), per_segment[a:b].mean(0))
                             for a, b in itertools.pairwise(bounds)])
    combined = chunking.combine_pooled(chunk_values, np.diff(bounds), is_max=is_max)
    np.testing.assert_array_equal(combined[:3], per_segment[:, :3].max(0))
    np.testing.assert_allclose(combined[3:], per_segment[:, 3:].mean(0), rtol=1e-6)


@pytest.mark.parametrize("length,hop", [(243, 243), (243, 100), (100, 243)])
@pytest.mark.parametrize("block", [1, 97, 10_000])
@pytest.mark.parametrize("cover_end", [False, True])
def test_chunks_hold_exactly_the_segments_of_the_whole_waveform(
    length: int, hop: int, block: int, cover_end: bool, rng: np.random.Generator,
) -> None:
    """With ``cover_end`` (``--cover-end``), the segment ending at the track's end follows the whole ones
    (5003 samples leave some after the last whole segment in every geometry here)."""
    y = rng.standard_normal(5003).astype(np.float32)
    plan = ChunkPlan(sample_rate=1000, segment_length=length, segment_hop=hop, max_segments=7, cover_end=cover_end)
    chunks = list(chunking.chunk_blocks((y[i : i + block] for i in range(0, len(y), block)), plan))
    expected = audio.segment(y, length=length, hop=hop)
    if cover_end:
        *chunks, last = chunks
        np.testing.assert_array_equal(last.waveform, y[-length:])
        assert (last.index, last.first_segment, last.num_segments, last.start, last.end) == (
            len(chunks), len(expected), 1, len(y) - length, len(y))
        # a track that whole segments cover exactly gets nothing more
        exact = y[: plan.covered_samples(12)]
        assert [c.end for c in chunking.chunk_blocks([exact], plan)] == [plan.covered_samples(7), len(exact)]
    assert [c.start for c in chunks] == [c.first_segment * hop for c in chunks]
    assert [c.num_segments for c in chunks[:-1]] == [7] * (len(chunks) - 1) and 1 <= chunks[-1].num_segments <= 7
    assert [c.first_segment for c in chunks] == list(range(0, len(expected), 7))
    got = np.concatenate([audio.segment(c.waveform, length=length, hop=hop) for c in chunks])
    np.testing.assert_array_equal(got, expected)
    assert all(len(c.waveform) == plan.covered_samples(c.num_segments) for c in chunks)
    assert list(chunking.chunk_blocks([y[: length - 1]], plan)) == []


def test_chunk_plan_from_seconds() -> None:
    plan = ChunkPlan.from_seconds(3.0, sample_rate=2000, segment_length=243, segment_hop=243, max_samples=12000)
    assert (plan.max_segments, plan.chunk_samples) == (24, 24 * 243)
    assert ChunkPlan.from_seconds(0.01, sample_rate=2000, segment_length=243, segment_hop=243,
                                  max_samples=12000).max_segments == 1
    with pytest.raises(ParameterError, match="longer than the export accepts"):
        ChunkPlan.from_seconds(7.0, sample_rate=2000, segment_length=243, segment_hop=243, max_samples=12000)
    with pytest.raises(ParameterError, match="--chunk-seconds 0"):
        ChunkPlan.from_seconds(0.0, sample_rate=2000, segment_length=243, segment_hop=243, max_samples=12000)
    assert plan.max_segment_batch == 24  # a chunk's segments
    assert ChunkPlan.from_seconds(3.0, sample_rate=2000, segment_length=243, segment_hop=243, max_samples=12000,
                                  max_request_samples=5 * 243 + 1).max_segment_batch == 5
    assert ChunkPlan.from_seconds(3.0, sample_rate=2000, segment_length=243, segment_hop=243, max_samples=12000,
                                  max_request_samples=100).max_segment_batch == 1


def test_handler_splits_batches_into_calls_of_at_most_max_samples_per_call(
    samplecnn_export: str, rng: np.random.Generator,
) -> None:
    from beam_jobs.inference import SignatureModelHandler

    handler = SignatureModelHandler(samplecnn_export, signature="features", max_samples_per_call=5 * SAMPLECNN_SEGMENT)
    model = handler.load_model()
    sizes: list[int] = []
    call = model.call

    def spy(inputs: dict[str, Any], outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        sizes.append(int(np.size(inputs["waveform"])))
        return call(inputs, outputs)

    model.call = spy  # type: ignore[method-assign]
    waves = [rng.uniform(-0.5, 0.5, n * SAMPLECNN_SEGMENT).astype(np.float32) for n in (2, 2, 2, 2, 2, 7, 1)]
    results = list(handler.run_inference([{"waveform": w} for w in waves], model))
    # equal shapes are grouped: five 2-segment examples -> calls of 2 + 2 + 1 examples; the 7-segment one alone
    assert sorted(sizes) == sorted([4 * SAMPLECNN_SEGMENT, 4 * SAMPLECNN_SEGMENT, 2 * SAMPLECNN_SEGMENT,
                                    7 * SAMPLECNN_SEGMENT, SAMPLECNN_SEGMENT])
    reference = signature(samplecnn_export, "features")
    for wave, result in zip(waves, results):
        expected = reference(waveform=tf.constant(wave[np.newaxis]))["features"].numpy()[0]
        np.testing.assert_allclose(result.inference["features"], expected, rtol=1e-5, atol=1e-6)


def test_an_example_that_is_a_batch_of_its_own_is_one_call_with_its_outputs_whole(
    samplecnn_export: str, rng: np.random.Generator,
) -> None:
    """``--per-segment`` sends a chunk's segments as one example ``[n, segment_length]``: one call, whose
    ``features`` are the ``n`` segments each pooled alone, as the signature gives them for that batch."""
    from beam_jobs.inference import SignatureModelHandler

    handler = SignatureModelHandler(samplecnn_export, signature="features", one_example_per_call=True,
                                    example_ranks={"waveform": 1})
    model = handler.load_model()
    shapes: list[tuple[int, ...]] = []
    call_each = model.call_each

    def spy(inputs: list[dict[str, Any]], outputs: tuple[str, ...] | None = None) -> list[Any]:
        shapes.extend(np.shape(i["waveform"]) for i in inputs)
        return call_each(inputs, outputs)

    model.call_each = spy  # type: ignore[method-assign]
    batch = rng.uniform(-0.5, 0.5, (5, SAMPLECNN_SEGMENT)).astype(np.float32)
    chunk = rng.uniform(-0.5, 0.5, 3 * SAMPLECNN_SEGMENT).astype(np.float32)
    results = list(handler.run_inference([{"waveform": batch}, {"waveform": chunk}], model))
    assert shapes == [(5, SAMPLECNN_SEGMENT), (1, 3 * SAMPLECNN_SEGMENT)]
    reference = signature(samplecnn_export, "features")
    np.testing.assert_array_equal(results[0].inference["features"],
                                  reference(waveform=tf.constant(batch))["features"].numpy())
    np.testing.assert_array_equal(results[1].inference["features"],
                                  reference(waveform=tf.constant(chunk[np.newaxis]))["features"].numpy()[0])
    with pytest.raises(Exception, match="example_ranks needs one_example_per_call"):
        SignatureModelHandler(samplecnn_export, signature="features", example_ranks={"waveform": 1})


@pytest.mark.parametrize("hop,request_segments,batches", [(243, None, [7, 7, 6]), (100, 3, [3, 3, 3, 1] * 2)])
def test_per_segment_examples_are_each_chunks_segments_in_batches_the_export_accepts(
    tmp_path: pathlib.Path, rng: np.random.Generator, hop: int, request_segments: int | None, batches: list[int],
) -> None:
    """Every segment of the track exactly once, in order, in batches of at most ``max_request_samples``."""
    y = rng.uniform(-0.5, 0.5, 243 + 19 * hop + 50).astype(np.float32)  # 20 whole segments and some more
    sf.write(tmp_path / "t.wav", y, 1000, subtype="FLOAT")
    plan = ChunkPlan(sample_rate=1000, segment_length=243, segment_hop=hop, max_segments=7 if hop == 243 else 10,
                     max_request_samples=None if request_segments is None else request_segments * 243 + 242)
    examples = list(chunking.stream_examples(TrackInput(str(tmp_path / "t.wav"), "t", "t"), plan, per_segment=True))
    segments = [(k, e["waveform"]) for k, e in examples[:-1] if k.kind == SEGMENTS]
    assert [k.num_segments for k, _ in segments] == batches
    assert [k.index for k, _ in segments] == np.cumsum([0, *batches[:-1]]).tolist()
    assert all(w.shape == (k.num_segments, 243) and w.dtype == np.float32 for k, w in segments)
    np.testing.assert_array_equal(np.concatenate([w for _, w in segments]), audio.segment(y, length=243, hop=hop))
    assert isinstance(examples[-1], TrackEnd) and examples[-1].num_segments == 20


def test_the_transforms_over_several_collections_apply_without_beams_type_hint_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """``GroupTrackParts`` and ``AccountForTracks`` take tuples of PCollections: Beam warned on every job run.

    Their ``expand`` annotations are for mypy; Beam read them as input type hints it cannot use and
    logged "This input type hint will be ignored" four times per job, into every user's console.
    """
    import apache_beam as beam

    from beam_jobs.accounting import AccountForTracks

    with caplog.at_level("WARNING"):
        pipeline = beam.Pipeline()
        ones = pipeline | "A" >> beam.Create([1]).with_output_types(Any)
        _ = (ones, ones, ones) | "Parts" >> chunking.GroupTrackParts()
        _ = (ones, ones) | "Account" >> AccountForTracks(str(tmp_path))
    assert "type hint" not in caplog.text
    assert {"Parts", "Account"} <= {t.full_label for t in pipeline.transforms_stack[0].parts}
    discard(pipeline)
