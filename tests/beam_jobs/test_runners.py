"""The jobs on other runners: Dask (a real local multi-process cluster), the default local runner
(multi-processing DirectRunner through ``python -m``), and Dataflow (pipeline construction and pickling).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import random
import string
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from jobs_testing import Entry, check_manifest, discard, read_manifest_rows, write_catalogue

from beam_jobs import auralise, extract_features, tag
from beam_jobs import io as beam_io
from beam_jobs import tracks as job_tracks
from beam_jobs.options import (
    AuraliseOptions,
    ExtractFeaturesOptions,
    TagOptions,
    apply_runner_defaults,
    parse_job_args,
)
from beam_jobs.tracks import TrackInput, list_tracks

REPO = pathlib.Path(__file__).resolve().parents[2]
DATAFLOW = ["--runner=DataflowRunner", "--project=tfaural-test", "--region=europe-west1",
            "--temp_location=gs://tfaural-test/tmp", f"--setup_file={REPO / 'setup.py'}",
            "--sdk_container_image=europe-docker.pkg.dev/tfaural-test/beam/tfaural-worker:latest"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Entry]]:
    root = tmp_path_factory.mktemp("runner-catalogue")
    return root, write_catalogue(root)


@pytest.fixture(scope="module")
def direct_tags(catalogue: tuple[pathlib.Path, list[Entry]], samplecnn_export: str,
                tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root, _ = catalogue
    output = tmp_path_factory.mktemp("direct")
    tag.run([f"--input={root}/**", f"--model={samplecnn_export}", f"--output={output}", "--runner=DirectRunner"])
    return output


def _same_results(output: pathlib.Path, reference: pathlib.Path) -> None:
    assert read_manifest_rows(output) == read_manifest_rows(reference)
    records = [json.loads(line) for line in (output / "tags.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "tags.jsonl").read_text().splitlines()]
    assert [r["track_id"] for r in records] == [r["track_id"] for r in expected]
    for record, want in zip(records, expected):
        assert record["scores"] == pytest.approx(want["scores"], rel=1e-5, abs=1e-6)
        assert [label for label, _ in record["top_k"]] == [label for label, _ in want["top_k"]]


@pytest.mark.slow
def test_dask_cluster_gives_the_direct_runners_results(
    catalogue: tuple[pathlib.Path, list[Entry]], direct_tags: pathlib.Path, samplecnn_export: str,
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """On a Dask cluster, with the tracks passed as a large catalogue's are (files of .inputs/, here one per
    track: only Create and ParDo, which the Dask runner translates), the same results as the inline
    DirectRunner run."""
    from dask.distributed import LocalCluster

    root, entries = catalogue
    output = tmp_path / "dask"
    monkeypatch.setattr(job_tracks, "INLINE_INPUTS_BYTES", 0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            caplog.at_level(logging.INFO, logger="beam_jobs.tracks"):
        tag.run([f"--input={root}/**", f"--model={samplecnn_export}", f"--output={output}",
                 "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                 f"--dask_client_address={cluster.scheduler_address}"])
    check_manifest(output, root, entries)
    _same_results(output, direct_tags)
    assert f"{len(entries)} inputs travel through {len(entries)} file(s)" in caplog.text
    assert not (output / job_tracks.INPUTS_FOLDER).exists()


@pytest.mark.slow
def test_python_m_uses_every_core_by_default(
    catalogue: tuple[pathlib.Path, list[Entry]], direct_tags: pathlib.Path, samplecnn_export: str,
    tmp_path: pathlib.Path,
) -> None:
    root, _ = catalogue
    output = tmp_path / "local"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "beam_jobs.tag", f"--input={root}/**", f"--model={os.path.dirname(samplecnn_export)}",
         f"--output={output}", "--direct_num_workers=2"],  # the export's base folder: its newest version
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"is an export base folder: using its newest version, {samplecnn_export}" in done.stderr
    assert json.loads((output / "job.json").read_text())["model_dir"] == samplecnn_export
    assert "runner: DirectRunner, multi_processing, 2 worker(s)" in done.stderr
    assert "tag: 9 of 15 track(s) ok, 6 failed" in done.stderr
    _same_results(output, direct_tags)


def test_runner_defaults() -> None:
    options = PipelineOptions([])
    workers = min(os.cpu_count() or 1, 5)
    assert apply_runner_defaults(options, num_items=5) == [
        f"runner: DirectRunner, multi_processing, {workers} worker(s)"]
    direct = options.view_as(DirectOptions)
    assert (options.view_as(StandardOptions).runner, direct.direct_running_mode,
            direct.direct_num_workers) == ("DirectRunner", "multi_processing", workers)
    single = PipelineOptions([])
    assert apply_runner_defaults(single, num_items=1) == ["runner: DirectRunner, multi_processing, 1 worker(s)"]
    one_process = PipelineOptions([])  # a job whose work is TensorFlow's (correlation)
    assert apply_runner_defaults(one_process, num_items=5, local_mode="in_memory") == [
        "runner: DirectRunner, in_memory, 1 worker(s)"]
    two = PipelineOptions(["--direct_num_workers=2"])
    apply_runner_defaults(two, num_items=5, local_mode="in_memory")
    assert (two.view_as(DirectOptions).direct_running_mode, two.view_as(DirectOptions).direct_num_workers) == (
        "in_memory", 2)
    kept = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    apply_runner_defaults(kept, num_items=5)
    assert (kept.view_as(DirectOptions).direct_running_mode, kept.view_as(DirectOptions).direct_num_workers) == (
        "in_memory", 1)
    chosen = PipelineOptions(["--runner=DataflowRunner"])
    assert apply_runner_defaults(chosen, num_items=5) == []
    dask = PipelineOptions(["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"])
    assert apply_runner_defaults(dask, num_items=500) == ["Dask runner: 64 partition(s)"]


@pytest.mark.parametrize("job", ["tag", "extract_features", "auralise"])
def test_pipelines_translate_for_dataflow(
    job: str, catalogue: tuple[pathlib.Path, list[Entry]], samplecnn_export: str, choi_export: str,
) -> None:
    """The DataflowRunner's own translation, up to (not including) submission: --dry_run=True.

    It validates the options, pickles every DoFn, handler and element, packages setup.py
    (workflow.tar.gz) and builds the job for the worker container, all offline.
    """
    root, _ = catalogue
    module, extra, model, options_class = {
        "tag": (tag, ["--top-k=2"], samplecnn_export, TagOptions),
        "extract_features": (extract_features, ["--format=parquet", "--per-segment"], samplecnn_export,
                             ExtractFeaturesOptions),
        "auralise": (auralise, ["--layers=1-2", "--clip-seconds=1", "--spectrograms"], choi_export, AuraliseOptions),
    }[job]
    argv = [f"--input={root}/**", f"--model={model}", "--output=gs://tfaural-test/results", *extra, *DATAFLOW,
            "--dry_run=True"]
    options = parse_job_args(argv, prog=job, description="", option_classes=module.JOB.option_classes)
    assert options_class in module.JOB.option_classes
    settings = module.Settings.from_options(options)
    tracks = list_tracks(input_glob=settings.common.input_glob, manifest=None)
    pipeline = beam.Pipeline(options=options)
    assert isinstance(pipeline.runner, DataflowRunner)
    module.build_pipeline(pipeline, tracks, settings)
    result = pipeline.run()
    assert result.state == "DONE" and result.job is not None
    proto = pipeline.runner.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ListTracks", "SpreadTracks", "Account/WriteManifest"} <= names
    (environment,) = proto.components.environments.values()
    image = beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
    assert image == DATAFLOW[-1].split("=", 1)[1]
    staged = [beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
              for d in environment.dependencies]
    assert "workflow.tar.gz" in staged  # the package built from --setup_file
    restored = beam.Pipeline.from_runner_api(proto, DataflowRunner(), options)  # the pickled DoFns load back
    assert "Account/WriteManifest" in {t.unique_name for t in restored.to_runner_api().components.transforms.values()}
    discard(restored)


def _catalogue_of(n: int) -> list[TrackInput]:
    """``n`` tracks with paths as varied as a real catalogue's (random words: little for zlib to squeeze)."""
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                        for _ in range(k))

    tracks = []
    for i in range(n):
        relative = f"{words(2)}/{words(3)}/{i % 20:02d} {words(4)}"
        track_id = relative.replace(" ", "_")
        tracks.append(TrackInput(f"gs://tfaural-test/audio/{relative}.flac", track_id, track_id.replace("/", "__")))
    return tracks


def test_a_large_catalogue_reaches_dataflow_in_files_not_in_the_pipeline(
    samplecnn_export: str, gcs_bucket: str,
) -> None:
    """20,000 tracks (a fiftieth of the Million Song Dataset): inline, their paths and names make the pipeline
    Dataflow receives over 4 MB (its job graph may not exceed 10 MB); in files of ``.inputs/`` (on the bucket:
    a local GCS server) it stays under 200 kB, and the files hold every track, in order."""
    tracks = _catalogue_of(20_000)
    argv = [f"--manifest={gcs_bucket}/manifest.csv", f"--model={samplecnn_export}", f"--output={gcs_bucket}/tags",
            *DATAFLOW, "--dry_run=True"]
    options = parse_job_args(argv, prog="tag", description="",
                             option_classes=tag.JOB.option_classes)
    settings = tag.Settings.from_options(options)
    pipeline = beam.Pipeline(options=options)
    tag.build_pipeline(pipeline, tracks, settings)
    assert pipeline.run().state == "DONE"
    graph = len(pipeline.runner.proto_pipeline.SerializeToString())  # what Dataflow is sent (staged pipeline.pb)
    assert graph < 200_000, graph
    files = beam_io.list_files(f"{gcs_bucket}/tags/{job_tracks.INPUTS_FOLDER}/*")
    assert len(files) == job_tracks.INPUT_FILES_AT_LEAST  # 64 files of 312-313 tracks: Dask's partitions
    read = job_tracks._ReadInputs(TrackInput)
    parts = [list(read(path)) for path in files]
    assert {len(part) for part in parts} == {312, 313} and [track for part in parts for track in part] == tracks

    inline = beam.Pipeline(options=options)  # the same tracks inside the pipeline
    _ = inline | "ListTracks" >> beam.Create(tracks)
    assert len(inline.to_runner_api().SerializeToString()) > 4_000_000
    discard(inline)
