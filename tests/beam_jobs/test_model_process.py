"""The model process of local runs (beam_jobs.model_process) and one-signature loading, on real exports.

The job-level test runs ``python -m beam_jobs.tag`` with a ``sitecustomize`` that records, for every
Python process of the run, whether it imported TensorFlow: only the model process may.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from jobs_testing import REPO, SAMPLECNN_SEGMENT, SAMPLECNN_SR, decode, import_records, recording_env, signature

from beam_jobs import model_process
from beam_jobs.inference import InferenceFailure, SignatureModelHandler, resolve_model_dir
from beam_jobs.model_process import (
    DeferredSignature,
    LoadedSignature,
    ModelProcess,
    RemoteSignature,
    SignatureCallError,
    load_signature,
    prestart,
    take_prestarted,
)
from beam_jobs.scratch import PREFIX
from tfaural.errors import ModelError, ParameterError


@pytest.fixture(scope="module")
def served(samplecnn_export: str) -> ModelProcess:
    with ModelProcess(samplecnn_export, "serving_default", threads=1) as process:
        yield process


def test_served_signature_equals_the_in_process_one_and_reports_bad_examples(
    served: ModelProcess, samplecnn_export: str, rng: np.random.Generator,
) -> None:
    remote = RemoteSignature(served.address)
    assert remote.input_names == ("waveform",)
    batch = (0.3 * rng.standard_normal((2, 3 * SAMPLECNN_SEGMENT))).astype(np.float32)
    got = remote.call({"waveform": batch}, ("scores",))
    assert set(got) == {"scores"}
    want = signature(samplecnn_export, "serving_default")(waveform=tf.constant(batch))["scores"].numpy()
    np.testing.assert_allclose(got["scores"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(SignatureCallError) as caught:  # shorter than one segment: the in-graph check's message
        remote.call({"waveform": np.zeros((1, 10), np.float32)})
    assert caught.value.example_error and caught.value.error == "InvalidArgumentError"
    assert f"need at least {SAMPLECNN_SEGMENT}" in caught.value.reason
    again = remote.call({"waveform": batch[:1]})  # the process keeps serving
    np.testing.assert_allclose(again["scores"], want[:1], rtol=1e-5, atol=1e-6)


def test_one_round_trip_calls_each_example_alone_and_a_bad_one_fails_alone(
    served: ModelProcess, samplecnn_export: str, rng: np.random.Generator,
) -> None:
    """``call_each`` (what the jobs' ``one_example_per_call`` sends): per example its outputs or its error."""
    waveforms = [(0.3 * rng.standard_normal(n * SAMPLECNN_SEGMENT)).astype(np.float32) for n in (2, 3)]
    remote = RemoteSignature(served.address)
    answers = remote.call_each([{"waveform": waveforms[0][np.newaxis]}, {"waveform": np.zeros((1, 10), np.float32)},
                                {"waveform": waveforms[1][np.newaxis]}], ("scores",))
    assert len(answers) == 3
    bad = answers[1]
    assert isinstance(bad, SignatureCallError) and bad.example_error
    assert f"need at least {SAMPLECNN_SEGMENT}" in bad.reason
    serving = signature(samplecnn_export, "serving_default")
    for answer, y in zip((answers[0], answers[2]), waveforms):
        assert isinstance(answer, dict) and set(answer) == {"scores"}
        want = serving(waveform=tf.constant(y[np.newaxis]))["scores"].numpy()
        np.testing.assert_allclose(answer["scores"], want, rtol=1e-5, atol=1e-6)

    # the jobs' handler, through the model process, never loads the model in this process
    handler = SignatureModelHandler(samplecnn_export, signature="serving_default", outputs=["scores"],
                                    one_example_per_call=True, model_server=served.address)
    model = handler.load_model()
    assert isinstance(model, RemoteSignature) and model.spec() == (frozenset({"waveform"}), ("waveform",))
    results = list(handler.run_inference([{"waveform": waveforms[0]}, {"waveform": np.zeros(10, np.float32)},
                                          {"waveform": waveforms[1]}], model))
    assert isinstance(results[1].inference, InferenceFailure)
    assert f"need at least {SAMPLECNN_SEGMENT}" in results[1].inference.reason
    for result, answer in zip((results[0], results[2]), (answers[0], answers[2])):
        assert isinstance(answer, dict)
        np.testing.assert_array_equal(result.inference["scores"], answer["scores"][0])  # same process, same call


def test_deferred_signatures_load_one_at_a_time_and_each_once() -> None:
    """A worker's threads reach their first examples together (one per bundle; auralise's two handlers), and two
    threads importing TensorFlow at once can stop on Python's module locks: CI saw ``_DeadlockError: deadlock
    detected by _ModuleLock('tensorflow.python.lib.io')`` fail every track of a run. One load at a time, then."""
    running = most = loads = 0
    count = threading.Lock()

    def load() -> LoadedSignature:
        nonlocal running, most, loads
        with count:
            running, loads = running + 1, loads + 1
            most = max(most, running)
        time.sleep(0.1)
        with count:
            running -= 1
        return LoadedSignature(None, None, frozenset({"waveform"}), ("waveform",))

    signatures = [DeferredSignature(load, export_dir=f"export{i}") for i in range(4)]
    start = threading.Barrier(8)
    specs: list[Any] = []

    def first_use(deferred: DeferredSignature) -> None:
        start.wait()
        specs.append(deferred.spec())

    threads = [threading.Thread(target=first_use, args=(deferred,)) for deferred in signatures * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (most, loads) == (1, 4) and specs == [(frozenset({"waveform"}), ("waveform",))] * 8


def test_one_signature_savedmodel_is_what_the_jobs_load(samplecnn_export: str) -> None:
    metadata = json.loads((pathlib.Path(samplecnn_export) / "assets" / "metadata.json").read_text())
    assert metadata["signature_savedmodels"] == {name: f"assets.extra/signatures/{name}"
                                                 for name in ("serving_default", "features")}
    loaded, function = load_signature(samplecnn_export, "features")
    assert sorted(loaded.signatures) == ["features"]  # nothing else was loaded
    y = decode(_wav(samplecnn_export), SAMPLECNN_SR)[np.newaxis, : 4 * SAMPLECNN_SEGMENT]
    full = signature(samplecnn_export, "features")(waveform=tf.constant(y))
    own = function(waveform=tf.constant(y))
    for name, value in full.items():
        np.testing.assert_allclose(own[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)
    deconvolve = load_signature(samplecnn_export, "deconvolve")[0]  # no SavedModel of its own: the export
    assert "deconvolve" in deconvolve.signatures and "serving_default" in deconvolve.signatures


def _wav(export_dir: str) -> pathlib.Path:
    """A 1-s chirp at the model's rate, written beside the export (once)."""
    import soundfile as sf

    path = pathlib.Path(export_dir).parent / "probe.wav"
    if not path.exists():
        t = np.arange(SAMPLECNN_SR) / SAMPLECNN_SR
        sf.write(path, 0.5 * np.sin(2 * np.pi * (100 + 300 * t) * t), SAMPLECNN_SR)
    return path


def test_a_model_that_does_not_load_is_a_model_error_and_the_process_ends_with_its_launcher(
    tmp_path: pathlib.Path,
) -> None:
    broken = tmp_path / "broken"
    (broken / "assets").mkdir(parents=True)
    (broken / "assets" / "metadata.json").write_text('{"sample_rate": 2000, "segment_length": 243}')
    launcher = (
        "import sys, time\n"
        "from beam_jobs.model_process import ModelProcess, RemoteSignature\n"
        "from tfaural.errors import ModelError\n"
        f"process = ModelProcess({str(broken)!r}, 'serving_default')\n"
        "print(process.process.pid, process.address.socket, flush=True)\n"
        "try:\n"
        "    RemoteSignature(process.address)\n"
        "except ModelError as err:\n"
        "    print(err, flush=True)\n"
        "import os; os._exit(3)  # dies without closing the model process\n"
    )
    done = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                                       "")])})
    assert done.returncode == 3, done.stderr[-2000:]
    pid_line, message = done.stdout.splitlines()[:2]
    assert "cannot load the SavedModel" in message and str(broken) in message
    pid, socket = int(pid_line.split()[0]), pid_line.split()[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.1)
    assert not _running(pid)  # its standard input closed with the launcher: it ended ...
    assert not os.path.exists(os.path.dirname(socket))  # ... and removed its socket's folder


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_closed_model_process_is_reported_not_awaited(samplecnn_export: str) -> None:
    process = ModelProcess(samplecnn_export, "serving_default", threads=1)
    folder = pathlib.Path(process.address.socket).parent
    assert folder.name.startswith(f"{PREFIX}{os.getpid()}-")  # what the next run removes if this one is killed
    assert folder.stat().st_mode & 0o777 == 0o700
    process.close()
    assert process.process.poll() is not None and not folder.exists()
    start = time.monotonic()
    with pytest.raises(ModelError, match="exited before it was ready"):
        RemoteSignature(process.address)
    assert time.monotonic() - start < 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts the threads in /proc")
def test_a_quiet_model_process_runs_with_the_threads_it_was_given(
    samplecnn_export: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quiet command line's model process imports TensorFlow inside the start-up filter, which initialises
    the runtime: its ``--threads`` used to be ignored there (TensorFlow's default of one per core)."""
    from tfaural.cli import QUIET_ENV

    monkeypatch.setenv(QUIET_ENV, "1")
    with ModelProcess(samplecnn_export, "serving_default", threads=3) as process:
        RemoteSignature(process.address).call({"waveform": np.zeros((1, SAMPLECNN_SEGMENT), np.float32)})
        names = _thread_names(process.process.pid)
    assert names.count("tf_Compute") == 3  # TensorFlow's inter-op pool


def _thread_names(pid: int) -> list[str]:
    """The names of a process's threads (those that end while being listed are left out)."""
    names = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:
            continue
    return names


def test_a_temporary_folder_too_deep_for_a_socket_path_gets_an_abstract_socket(
    samplecnn_export: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket path longer than sun_path allows used to fail every call with 'AF_UNIX path too long'."""
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with ModelProcess(samplecnn_export, "serving_default", threads=1) as process:
        assert process.address.socket.startswith("\0tfaural-model-")
        y = np.zeros((1, SAMPLECNN_SEGMENT), np.float32)
        got = RemoteSignature(process.address).call({"waveform": y})["scores"]
        want = signature(samplecnn_export, "serving_default")(waveform=tf.constant(y))["scores"].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert list(deep.iterdir()) == []  # nothing was left in the temporary folder


def test_prestarted_process_is_adopted_only_by_the_job_it_serves(samplecnn_export: str,
                                                                 tmp_path: pathlib.Path) -> None:
    for argv in (["--help", f"--model={samplecnn_export}"], [f"--model={samplecnn_export}", "--runner=DataflowRunner"],
                 [f"--model={tmp_path}"], ["--input=x"]):  # help, another runner, not an export, no model
        prestart(argv, signature="serving_default")
        assert model_process._PRESTARTED is None, argv
    prestart(["--input=music/*", "--model", samplecnn_export + "/"], signature="serving_default")
    first = model_process._PRESTARTED
    assert first is not None
    assert take_prestarted(samplecnn_export, "features") is None  # another signature: closed, not adopted
    assert first.process.poll() is not None and model_process._PRESTARTED is None
    prestart([f"--model={samplecnn_export}", "--precision=BFloat16"], signature="serving_default")
    other = model_process._PRESTARTED
    assert other is not None and other.precision == "bfloat16"
    assert take_prestarted(samplecnn_export, "serving_default") is None  # the job runs float32: not adopted
    assert other.process.poll() is not None
    base = os.path.dirname(samplecnn_export)  # an export base folder stands for its newest version, as in the job
    assert resolve_model_dir(base) == samplecnn_export == resolve_model_dir(samplecnn_export + "/")
    prestart([f"--model={base}"], signature="serving_default")
    adopted = take_prestarted(resolve_model_dir(base), "serving_default")
    try:
        assert adopted is not None and adopted.serves(samplecnn_export, "serving_default")
        assert not adopted.serves(samplecnn_export, "serving_default", precision="bfloat16")
    finally:
        if adopted is not None:
            adopted.close()


def test_bfloat16_turns_on_the_onednn_rewrite_in_the_loading_process_only(samplecnn_export: str) -> None:
    """``load_savedmodel(precision="bfloat16")`` sets Grappler's process-wide option (in a fresh process: it
    would stay set in this one); float32 leaves it off; another value is a ParameterError."""
    code = ("import sys, tensorflow as tf\n"
            "from beam_jobs.model_process import load_savedmodel\n"
            "load_savedmodel(sys.argv[1], export_dir=sys.argv[1], precision=sys.argv[2])\n"
            "print(bool(tf.config.optimizer.get_experimental_options().get("
            "'auto_mixed_precision_onednn_bfloat16')))\n")
    for precision, expected in (("float32", "False"), ("bfloat16", "True")):
        done = subprocess.run([sys.executable, "-c", code, samplecnn_export, precision], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == expected, precision
    with pytest.raises(ParameterError, match="precision 'float16' is invalid"):
        model_process.load_savedmodel(samplecnn_export, export_dir=samplecnn_export, precision="float16")


@pytest.mark.slow
@pytest.mark.parametrize("flags, tracks, workers", [
    (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], 3, 2),
    ([], 1, 0),  # the default for one track: the launcher decodes itself
    ([], 3, 0),  # the default for several: the launcher decodes in threads (multi_threading)
])
def test_only_the_model_process_imports_tensorflow(
    samplecnn_export: str, tmp_path: pathlib.Path, flags: list[str], tracks: int, workers: int,
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    env = recording_env(tmp_path / "recorded")
    rng = np.random.default_rng(5)
    import soundfile as sf

    for index in range(tracks):
        sf.write(audio / f"t{index}.wav", (0.3 * rng.standard_normal(int(1.1 * 44100))).astype(np.float32), 44100)
    done = subprocess.run([sys.executable, "-m", "beam_jobs.tag", f"--input={audio}/*", f"--model={samplecnn_export}",
                           f"--output={tmp_path / 'tags'}", *flags], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tag: {tracks} of {tracks} track(s) ok" in done.stderr
    started, seen = import_records(tmp_path / "recorded")
    launcher = [r for r in seen if "beam_jobs.tag" in r["argv"]]
    beam_workers = [r for r in seen if "apache_beam.runners.worker.sdk_worker_main" in r["argv"]]
    assert len(launcher) == 1 and len(beam_workers) == workers, [r["argv"] for r in seen]
    assert not any(r["tensorflow"] for r in launcher + beam_workers)
    # one model process, started by python -m before Beam was imported and adopted by the job
    assert sum("beam_jobs.model_process" in r["argv"] for r in started) == 1, [r["argv"] for r in started]
    # ... and the model did run, elsewhere: the scores are the signature's
    serving = signature(samplecnn_export, "serving_default")
    for line in (tmp_path / "tags" / "tags.jsonl").read_text().splitlines():
        record = json.loads(line)
        y = decode(pathlib.Path(record["path"]), SAMPLECNN_SR)
        used = SAMPLECNN_SEGMENT * (len(y) // SAMPLECNN_SEGMENT)
        want = serving(waveform=tf.constant(y[np.newaxis, :used]))["scores"].numpy()[0]
        np.testing.assert_allclose(list(record["scores"].values()), want, rtol=1e-5, atol=1e-6)
