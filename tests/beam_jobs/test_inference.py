"""SignatureModelHandler and the shared pieces of the inference jobs, on real (tiny) SavedModel exports.

This module also provides what the job tests share (they import it): one export per model
family per test session and a generated catalogue of good, broken and oddly named files.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import pathlib
import pickle
import shutil
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from jobs_testing import (
    CHOI_SR,
    SAMPLECNN_SEGMENT,
    broken_copy,
    discard,
    read_manifest_rows,
    signature,
    traced_peak,
    write_catalogue,
)

from beam_jobs import accounting, scratch, tag
from beam_jobs import failures as job_failures
from beam_jobs import tracks as job_tracks
from beam_jobs.inference import (
    InferenceFailure,
    SignatureModelHandler,
    read_metadata,
    tf_error_reason,
)
from beam_jobs.tracks import TrackInput, TrackResult
from tfaural.errors import ModelError, ParameterError

# ---------------------------------------------------------------------------
# Tests of the handler
# ---------------------------------------------------------------------------


def test_handler_batches_groups_and_isolates_a_bad_example(samplecnn_export: str, rng: np.random.Generator) -> None:
    handler = SignatureModelHandler(samplecnn_export, signature="serving_default", max_batch_size=8)
    model = handler.load_model()
    assert model.spec()[0] == frozenset({"waveform"})
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (486, 729, 486, 10, 486)]
    results = list(handler.run_inference([{"waveform": w} for w in waves], model))
    assert [r.example["waveform"].shape for r in results] == [w.shape for w in waves]
    bad = results[3].inference
    assert isinstance(bad, InferenceFailure) and bad.error == "InvalidArgumentError"
    assert "waveform has 10 samples; need at least 243" in bad.reason
    reference = signature(samplecnn_export, "serving_default")
    for wave, result in zip(waves, results):
        if len(wave) < SAMPLECNN_SEGMENT:
            continue
        expected = reference(waveform=tf.constant(wave[np.newaxis]))["scores"].numpy()[0]
        np.testing.assert_allclose(result.inference["scores"], expected, rtol=1e-5, atol=1e-6)
        assert result.inference["labels"].shape == (4,)


def test_handler_loads_the_model_at_its_first_example_and_a_failed_load_fails_each_example(
    samplecnn_export: str, tmp_path: pathlib.Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RunInference sets the model up before any example arrives; a worker that gets none must not load it. A load
    that fails is tried once, and every example fails with it instead of the batch escaping as an exception."""
    import beam_jobs.inference as inference_module

    loads: list[str] = []
    load = inference_module.load_savedmodel

    def counted(path: str, **kwargs: Any) -> Any:
        loads.append(path)
        return load(path, **kwargs)

    monkeypatch.setattr(inference_module, "load_savedmodel", counted)
    export = tmp_path / "export" / "1"  # a path of its own: not in the process-wide cache yet
    shutil.copytree(samplecnn_export, export)
    handler = SignatureModelHandler(str(export), signature="serving_default", one_example_per_call=True)
    model = handler.load_model()
    assert loads == []
    wave = rng.uniform(-0.5, 0.5, 2 * SAMPLECNN_SEGMENT).astype(np.float32)
    (result,) = handler.run_inference([{"waveform": wave}], model)
    expected = signature(samplecnn_export, "serving_default")(waveform=tf.constant(wave[np.newaxis]))["scores"]
    np.testing.assert_allclose(result.inference["scores"], expected.numpy()[0], rtol=1e-5, atol=1e-6)
    handler.run_inference([{"waveform": wave}], model)
    assert len(loads) == 1

    broken = broken_copy(samplecnn_export, tmp_path)
    handler = SignatureModelHandler(str(broken), signature="serving_default", one_example_per_call=True)
    model = handler.load_model()
    for _ in range(2):
        results = list(handler.run_inference([{"waveform": wave}, {"waveform": wave[:SAMPLECNN_SEGMENT]}], model))
        assert [type(r.inference) for r in results] == [InferenceFailure, InferenceFailure]
        assert {r.inference.error for r in results} == {"ModelLoadError"}
        assert results[0].inference.reason.startswith(f"the model {str(broken)!r} could not be loaded: cannot "
                                                      "load the SavedModel")
    assert len(loads) == 2  # the broken export's one attempt


def test_handler_passes_unbatched_inputs_from_examples_and_constants(choi_export: str,
                                                                     rng: np.random.Generator) -> None:
    wave = rng.uniform(-0.5, 0.5, 1500).astype(np.float32)
    handler = SignatureModelHandler(choi_export, signature="auralise", constant_inputs={"mode": "phase"},
                                    outputs=["audio", "silent"])
    model = handler.load_model()
    assert model.spec()[0] == frozenset({"waveform"})
    examples = [{"waveform": wave, "layer": np.int32(layer), "features": np.array(feats, np.int32)}
                for layer, feats in ((1, [0, 2]), (2, [1]), (1, [0, 2]), (9, [0]))]
    results = list(handler.run_inference(examples, model))
    assert sorted(results[0].inference) == ["audio", "silent"]
    assert results[0].inference["audio"].shape == (2, 1500) and results[1].inference["audio"].shape == (1, 1500)
    np.testing.assert_array_equal(results[0].inference["audio"], results[2].inference["audio"])
    assert isinstance(results[3].inference, InferenceFailure)
    assert results[3].inference.reason == "layer must be one of [1, 2, 3, 4, 5]; got 9"
    expected = signature(choi_export, "auralise")(waveform=tf.constant(wave[np.newaxis]), layer=tf.constant(2),
                                                 features=tf.constant([1]), mode=tf.constant("phase"))
    np.testing.assert_allclose(results[1].inference["audio"], expected["audio"].numpy()[0], atol=1e-6)


class _Exploding(SignatureModelHandler):
    """Fails the whole batch (not an example error) when it holds the waveform of length 300."""

    def run_inference(self, batch: Any, model: Any, inference_args: Any = None) -> Any:
        if any(len(example["waveform"]) == 300 for example in batch):
            raise RuntimeError("the accelerator caught fire")
        return super().run_inference(batch, model, inference_args)


def test_infer_turns_failed_batches_into_failed_tracks(samplecnn_export: str) -> None:
    tracks = [TrackInput(f"/music/{i}.wav", f"t{i}", f"t{i}") for i in range(3)]
    lengths = {"t0": 243, "t1": 300, "t2": 10}
    handler = _Exploding(samplecnn_export, signature="serving_default", max_batch_size=1)
    with test_pipeline.TestPipeline() as pipeline:
        examples = pipeline | beam.Create(
            [(t, {"waveform": np.full(lengths[t.track_id], 0.1, np.float32)}) for t in tracks])
        predicted, failures = job_failures.infer(examples, "Infer", handler)
        kinds = predicted | "Kinds" >> beam.Map(
            lambda e: (e[0].track_id, "failure" if isinstance(e[1].inference, InferenceFailure) else "scores"))
        assert_that(kinds, equal_to([("t0", "scores"), ("t2", "failure")]), label="Predictions")
        described = failures | beam.Map(lambda r: (r.track_id, r.status, r.stage, r.error_type, "fire" in r.error))
        assert_that(described, equal_to([("t1", "failed", "inference", "RuntimeError", True)]), label="Failures")


def test_metadata_errors(tmp_path: pathlib.Path, choi_export: str) -> None:
    with pytest.raises(ModelError, match="not a tfaural SavedModel export"):
        read_metadata(str(tmp_path))
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "metadata.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_metadata(str(tmp_path))
    meta = read_metadata(choi_export)
    assert meta.sample_rate == CHOI_SR
    assert meta.signature("auralise", export_dir=choi_export)["inputs"]["mode"]["dtype"] == "string"
    with pytest.raises(ModelError, match="has no signature 'transcribe'"):
        meta.signature("transcribe", export_dir=choi_export)


def test_tf_error_reason_keeps_the_check_message() -> None:
    err = tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nassertion failed: [layer must be one of [1, 2]; got 9]\n\t "
                    "[[{{node Assert}}]] [Op:__inference_x]")
    assert tf_error_reason(err) == "layer must be one of [1, 2]; got 9"
    assert tf_error_reason(ValueError("plain\nmessage")) == "plain message"


# ---------------------------------------------------------------------------
# Shared pieces: names, listing, accounting
# ---------------------------------------------------------------------------


def test_output_names_are_single_safe_components_and_unique() -> None:
    ids = ["a/b", "a__b", "Song", "song", "x" * 200, "manifest.jsonl", "plain"]
    names = job_tracks.output_names(ids, reserved=["manifest.jsonl"])
    assert names[-1] == "plain"
    assert len({n.casefold() for n in names}) == len(names)
    assert all("/" not in n and len(n) <= job_tracks.MAX_NAME_LENGTH for n in names)
    assert names[0].startswith("a__b-") and names[1].startswith("a__b-")
    assert names[5].startswith("manifest.jsonl-")
    assert job_tracks.output_names(list(reversed(ids)), reserved=["manifest.jsonl"]) == list(reversed(names))
    # the limit is in bytes: 50 CJK characters take 150 bytes of UTF-8 and fit, 51 are cut with a hash
    fits, cut = job_tracks.output_names(["歌" * 50, "歌" * 51])
    assert fits == "歌" * 50 and cut == "歌" * 47 + "-" + cut.rsplit("-", 1)[1]
    assert len(cut.encode()) <= job_tracks.MAX_NAME_LENGTH


def test_list_tracks_from_a_glob_and_a_manifest(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "music"
    entries = write_catalogue(root)
    tracks = job_tracks.list_tracks(input_glob=f"{root}/**", manifest=None)
    assert sorted(os.path.relpath(t.path, root) for t in tracks) == sorted(e.relative for e in entries)
    ids = {os.path.relpath(t.path, root): t.track_id for t in tracks}
    assert ids["rock/Song One.wav"] == "rock/Song_One" and ids["jazz/ünïcødé trâck.ogg"] == "jazz/ünïcødé_trâck"
    assert ids["pop/a.wav"].startswith("pop/a-") and ids["pop/a.flac"].startswith("pop/a-")
    assert ids["..dots..wav"] == "_.dots."
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,track_id\nmusic/rock/Song One.wav,mine/one\nmissing.wav,\n")
    listed = job_tracks.list_tracks(input_glob=None, manifest=str(manifest))
    assert [(t.track_id, t.name) for t in listed] == [("mine/one", "mine__one"), ("missing", "missing")]
    with pytest.raises(ParameterError, match="matched no files"):
        job_tracks.list_tracks(input_glob=f"{root}/*.nothing", manifest=None)
    with pytest.raises(ParameterError, match="exactly one"):
        job_tracks.list_tracks(input_glob=f"{root}/*", manifest=str(manifest))


def test_account_for_tracks_lists_every_input_once(tmp_path: pathlib.Path) -> None:
    tracks = [TrackInput(f"/m/{i}.wav", f"t{i}", f"t{i}") for i in range(4)]
    results = [
        TrackResult(tracks[0], "ok", outputs=("x",)),
        TrackResult(tracks[1], "failed", stage="decode", error_type="AudioDecodeError", error="bad"),
        TrackResult(tracks[1], "ok", outputs=("y",)),  # a retry that succeeded wins
        TrackResult(tracks[2], "failed", stage="inference", error_type="E", error="boom"),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        listed = pipeline | "Tracks" >> beam.Create(tracks)
        found = pipeline | "Results" >> beam.Create(results)
        _ = (listed, found) | accounting.AccountForTracks(str(tmp_path))
    rows = read_manifest_rows(tmp_path)
    assert [(r["track_id"], r["status"]) for r in rows] == [("t0", "ok"), ("t1", "ok"), ("t2", "failed"),
                                                            ("t3", "failed")]
    assert rows[1]["outputs"] == ["y"] and rows[3]["error_type"] == "LostResult"
    summary = accounting.summarize(str(tmp_path))
    assert (summary.ok, summary.failed, summary.total) == (2, 2, 4)
    assert summary.failures == {"inference: E": 1, "pipeline: LostResult": 1}
    assert "2 of 4 track(s) ok" in summary.describe("job") and "more failed" not in summary.describe("job")
    many = accounting.Summary(output="o", ok=0, failed=8, reused=0, failures={"decode: E": 8},
                              examples=tuple((f"/m/{i}.wav", "bad") for i in range(5)), first_errors={})
    assert many.describe("job").splitlines()[-1] == ('  ... and 3 more failed track(s): their rows in manifest.jsonl '
                                                     'have "status": "failed"')


def test_list_inputs_through_files(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracks and catalogue tracks (labels, no split) with names JSON keeps raw (U+2028, U+0085, emoji) reach
    the pipeline unchanged through files of ``.inputs/``; a short list goes inline, writing nothing; no inputs
    is an error."""
    from tfaural.data.catalogue import Track

    odd = ["line\u2028separator", "next\x85line", "quote\"and\\slash", "🎵 note", "new\nline"]
    tracks = [TrackInput(f"/m/{name}.wav", f"t{i}", f"t{i}") for i, name in enumerate(odd)]
    catalogue = [Track(f"gs://b/{name}.flac", f"c{i}", labels=("rock", "jazz")[: i % 3], split=None)
                 for i, name in enumerate(odd)]
    inline = beam.Pipeline()
    _ = inline | "List" >> job_tracks.ListInputs(tracks, folder=str(tmp_path / "inline"))
    assert "List/Inline" in {t.unique_name for t in inline.to_runner_api().components.transforms.values()}
    assert not (tmp_path / "inline").exists()
    discard(inline)

    monkeypatch.setattr(job_tracks, "INLINE_INPUTS_BYTES", 0)
    monkeypatch.setattr(job_tracks, "INPUT_FILES_AT_LEAST", 2)
    with test_pipeline.TestPipeline() as pipeline:
        for items in (tracks, catalogue):
            kind = type(items[0]).__name__
            listed = pipeline | kind >> job_tracks.ListInputs(items, folder=str(tmp_path / kind))
            assert_that(listed, equal_to(items), label=f"Check{kind}")
    assert sorted(os.listdir(tmp_path / "Track")) == ["inputs-00000.jsonl", "inputs-00001.jsonl"]
    with pytest.raises(ParameterError, match="no inputs"):
        job_tracks.ListInputs([], folder=str(tmp_path))


def _results(n: int, seed: int = 0) -> Iterator[TrackResult]:
    """``n`` results in a shuffled order, made as they are read; a third of them failed, the others with data."""
    for i in np.random.default_rng(seed).permutation(n).tolist():
        track = TrackInput(f"/music/artist {i % 97}/track {i:07d}.flac", f"t{i:07d}", f"t{i:07d}")
        if i % 3:
            yield TrackResult(track, "ok", outputs=(f"tracks/t{i:07d}.json",), data=np.full(50, i, np.float32))
        else:
            yield TrackResult(track, "failed", stage="decode", error_type="AudioDecodeError", error=f"not audio ({i})")


@pytest.mark.parametrize("in_memory", [1000, 7])
def test_sorted_results_come_back_in_order_every_time(in_memory: int) -> None:
    """In memory, or sorted in runs of ``in_memory`` spilled to disk and merged: the order of ``sorted``,
    the same results (data included), as often as asked; the spilled runs are deleted at the end."""
    results = list(_results(100))
    expected = sorted(results, key=lambda r: r.track_id)
    with accounting.SortedResults(iter(results), in_memory=in_memory) as got:
        assert len(got) == 100 and got.spilled_runs == (0 if in_memory > 100 else 15)
        folder = got._folder
        # Named as the job's run folders: a killed job's spill is removed with them (beam_jobs.scratch).
        assert folder is None or os.path.basename(folder).startswith(f"{scratch.PREFIX}{os.getpid()}-results-")
        for _ in range(2):
            merged = list(got)
            assert [r.track_id for r in merged] == [r.track_id for r in expected]
            assert [dataclasses.replace(r, data=None) for r in merged] == [dataclasses.replace(r, data=None)
                                                                            for r in expected]
            for r, want in zip(merged, expected):
                np.testing.assert_array_equal(r.data, want.data)
    assert folder is None or not os.path.exists(folder)


def test_the_final_stage_holds_a_bounded_number_of_results(tmp_path: pathlib.Path) -> None:
    """20,000 results through the manifest writer with tag's tables as ``finalise``: at most 1,000 in memory at
    a time, so its peak stays a fraction of what the results take (the old final stage sorted them all in
    memory); the manifest and the tables list every result once, in track-id order."""
    n, in_memory = 20_000, 1_000
    labels = [f"label{k}" for k in range(4)]

    def results() -> Iterator[TrackResult]:  # made as they are read, as a runner's grouping hands them over
        for result in _results(n, seed=1):
            if result.status == "ok":
                scores = tag.TagScores(np.full(4, 0.25, np.float32), seconds=30.0)
                result = dataclasses.replace(result, data=scores)
            yield result

    finalise = functools.partial(tag.write_tag_tables, output=str(tmp_path), labels=labels, top_k=2)
    writer = accounting._WriteManifest(str(tmp_path), finalise, in_memory)
    (counts,), peak = traced_peak(lambda: list(writer.process(("manifest", results()))))
    held = sum(len(pickle.dumps(r)) for r in itertools.islice(results(), in_memory))  # a run's pickled size
    assert counts == {"ok": n - -(-n // 3), "failed": -(-n // 3)}
    assert peak < 12 * held, (peak, held)  # the results are 20 runs' worth, and larger in memory than pickled
    rows = read_manifest_rows(tmp_path)
    assert [r["track_id"] for r in rows] == [f"t{i:07d}" for i in range(n)]
    tagged = (tmp_path / "tags.jsonl").read_text().splitlines()
    assert [json.loads(line)["track_id"] for line in tagged] == [f"t{i:07d}" for i in range(n) if i % 3]
    summary = accounting.summarize(str(tmp_path))
    assert (summary.ok, summary.failed) == (counts["ok"], counts["failed"]) and len(summary.examples) == 5
