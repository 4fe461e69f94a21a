"""The library's command lines with unusable output folders and wrong inputs: one line naming the path, exit 2.

Tests run as root, and root may write into a folder whose mode is read-only, so an unwritable
place is made the way that fails for everyone: a path below a regular file. (A read-only file
system also fails ``os.access``, which :func:`tfaural.cli.check_output_folder` asks.)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest

from tfaural import report, visualise
from tfaural.cli import check_output_folder, is_startup_noise
from tfaural.errors import ParameterError
from tfaural.training import evaluate, train


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _auralise_output(root: pathlib.Path) -> pathlib.Path:
    """The smallest auralisation output: a job.json of beam_jobs.auralise and a manifest with one failed track."""
    root.mkdir()
    (root / "job.json").write_text(json.dumps({"job": "auralise", "metadata": {"sample_rate": 8000}}))
    (root / "manifest.jsonl").write_text(json.dumps({"path": "a.wav", "track_id": "a", "name": "a", "status":
                                                     "failed", "error": "bad", "error_type": "AudioDecodeError",
                                                     "stage": "decode"}) + "\n")
    return root


CLIS: dict[str, Callable[[pathlib.Path, pathlib.Path], list[str]]] = {
    # (tmp_path, output) -> argv; the other arguments are as a user would give them (the output is checked first)
    "train": lambda tmp, out: ["--model", "samplecnn", "--data", str(tmp / "dataset"), "--output", str(out)],
    "report": lambda tmp, out: [str(_auralise_output(tmp / "auralised")), "--output", str(out), "-q"],
    "visualise": lambda tmp, out: ["--run", str(tmp / "run"), "--output", str(out)],
}
MAINS: dict[str, Callable[[list[str]], int]] = {"train": train.main, "report": report.main,
                                                "visualise": visualise.main}


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_output_that_is_a_file_or_below_one(cli: str, where: str, tmp_path: pathlib.Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me\n")
    output = blocker if where == "file" else blocker / "out"
    assert MAINS[cli](CLIS[cli](tmp_path, output)) == 2
    err = _one_line(capsys)
    assert f"--output {output}" in err and "is a file" in err
    assert blocker.read_text() == "keep me\n"


def test_evaluate_checks_that_it_can_write_into_the_run(tmp_path: pathlib.Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "taken.txt"
    blocker.write_text("x")
    assert evaluate.main(["--run", str(blocker / "run")]) == 2
    assert f"--run {blocker / 'run'}" in _one_line(capsys)


def test_check_output_folder(tmp_path: pathlib.Path) -> None:
    assert check_output_folder(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert check_output_folder("gs://bucket/out", remote=True) == "gs://bucket/out"
    # a tool that writes with the local filesystem would make a folder named 'gs:' in the working directory
    with pytest.raises(ParameterError, match=r"--signals gs://bucket/cache: expected a local folder"):
        check_output_folder("gs://bucket/cache", flag="--signals")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ParameterError, match="broken symbolic link"):
        check_output_folder(tmp_path / "dangling")
    (tmp_path / "x").write_text("")
    with pytest.raises(ParameterError, match=r"--where .*/x: is a file, not a folder"):
        check_output_folder(str(tmp_path / "x"), flag="--where")
    if os.geteuid() != 0:  # root writes into read-only folders; everyone else must be stopped
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(ParameterError, match="not writable"):
            check_output_folder(locked / "out")


def test_train_names_the_data_folder_it_was_given(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert train.main(["--model", "samplecnn", "--data", str(missing), "--output", str(tmp_path / "run")]) == 2
    err = _one_line(capsys)
    assert f"{missing}: no such dataset folder" in err
    assert str(tmp_path / "dataset.json") not in err  # not the parent's dataset.json


def test_report_refuses_the_output_of_another_job(tmp_path: pathlib.Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tags = tmp_path / "tags"
    (tags / "tracks").mkdir(parents=True)
    rows = [{"path": f"/music/{i}.wav", "track_id": str(i), "name": str(i), "status": "ok",
             "outputs": ["tags.jsonl", "tags.csv", f"tracks/{i}.json"]} for i in range(3)]
    (tags / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tags / "tags.jsonl").write_text("")
    (tags / "job.json").write_text(json.dumps({"job": "tag", "settings": {"top_k": 2}}))
    assert report.main([str(tags), "-q"]) == 2
    err = _one_line(capsys)
    assert f"{tags} is the output of beam_jobs.tag, not an auralisation output" in err
    assert not (tags / "report").exists()
    (tags / "job.json").unlink()  # without job.json the manifest still tells
    assert report.main([str(tags), "-q"]) == 2
    assert "lists no track.json" in _one_line(capsys)
    assert not (tags / "report").exists()


_PROMPT_EXIT = """
import atexit, sys, threading
from tfaural.cli import exit_promptly
atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))
print("buffered output", end="")  # no newline: still in the buffer when the process ends
if sys.argv[2] == "thread":  # a non-daemon thread still running: the orderly exit waits for it
    threading.Thread(target=lambda: (threading.Event().wait(0.3), print(" thread done", end=""))).start()
exit_promptly(3)
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_exit_promptly_runs_exit_handlers_and_flushes(thread: str, tmp_path: pathlib.Path) -> None:
    """``exit_promptly`` keeps what an orderly exit does: the exit code, atexit handlers, buffered output, threads."""
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", _PROMPT_EXIT, str(marker), thread], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert marker.read_text() == "atexit ran"
    assert done.stdout == "buffered output" + (" thread done" if thread == "thread" else "")


_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796053340.188515    5591 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796053373.530527    5672 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796053340.314800    5591 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
    "E0000 00:00:1796097323.616960   17558 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
]
_KEPT = [
    "E0000 00:00:1796053373.530527    5672 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc:89 : out of memory",
    "INFO beam_jobs.tag: tag: 1 track(s) -> out with export/1",
    "Traceback (most recent call last):",
]


def test_startup_noise_is_told_from_real_messages() -> None:
    assert all(is_startup_noise(line) for line in _NOISE)
    assert not any(is_startup_noise(line) for line in _KEPT)


_FILTERED = """
import os, sys
from tfaural.cli import _filtered_stderr
with _filtered_stderr():
    os.write(2, (sys.argv[1] + "\\n").encode())  # C++ code writes to file descriptor 2, past sys.stderr
    print("from Python", file=sys.stderr)
print("after", file=sys.stderr)
"""


def test_the_filter_replays_every_other_line_in_order() -> None:
    text = "\n".join([_NOISE[0], _KEPT[0], _NOISE[1], _KEPT[1]])
    done = subprocess.run([sys.executable, "-c", _FILTERED, text], capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stderr.splitlines() == [_KEPT[0], _KEPT[1], "from Python", "after"]


@pytest.mark.parametrize("verbose", [False, True])
def test_command_lines_are_quiet_unless_verbose(verbose: bool) -> None:
    """``python -m tfaural.visualise --help`` imports TensorFlow: no start-up lines unless ``--verbose``.

    (This machine has no GPU, so TensorFlow announces the missing CUDA driver on every start; the
    model processes' device discovery is checked end to end in tests/test_quickstart.py.)
    """
    env = {key: value for key, value in os.environ.items() if key not in ("TFAURAL_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-m", "tfaural.visualise", "--help", *(["--verbose"] if verbose else [])],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0 and "usage: python -m tfaural.visualise" in done.stdout, done.stderr[-2000:]
    noise = [line for line in done.stderr.splitlines() if is_startup_noise(line)]
    assert bool(noise) == verbose, done.stderr[-2000:]
    if not verbose:
        assert done.stderr.strip() == "", done.stderr[-2000:]


_LEAN_IMPORT = """
import json, sys
if sys.argv[1] == "sklearn first":
    import sklearn
import tfaural  # a command line's start-up, in a process a quiet command line started (TFAURAL_QUIET=1)
import tensorflow as tf
with_tensorflow = sorted(m for m in ("sklearn", "matplotlib") if m in sys.modules)
import keras
from keras.src.visualization import plot_image_gallery
from keras.src.wrappers import sklearn_wrapper
import matplotlib.pyplot as plt
import sklearn.metrics
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
print(json.dumps({"with_tensorflow": with_tensorflow, "keras_sklearn": sklearn_wrapper.sklearn is not None,
                  "keras_pyplot": plot_image_gallery.plt is not None,
                  "finders": [type(f).__name__ for f in sys.meta_path], "output": model(tf.ones((1, 2))).shape[-1],
                  "later": [sklearn.metrics.accuracy_score([1, 0], [1, 1]), plt.figure().number]}))
"""


@pytest.mark.parametrize("process", ["command line, sklearn first", "library"])
def test_command_lines_import_tensorflow_without_keras_optional_imports(process: str) -> None:
    """A command line's ``import tensorflow`` leaves out what Keras imports only for its scikit-learn wrappers
    and its plots (``tfaural.cli.KERAS_OPTIONAL_IMPORTS``), unless imported already; both import as usual
    afterwards. A program that imports the library gets Keras as it is."""
    env = {key: value for key, value in os.environ.items() if key not in ("TFAURAL_QUIET", "TFAURAL_VERBOSE")}
    if process.startswith("command line"):
        env["TFAURAL_QUIET"] = "1"
    done = subprocess.run([sys.executable, "-c", _LEAN_IMPORT, "sklearn first" if "sklearn" in process else ""],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["output"] == 3 and result["later"] == [0.5, 1]
    assert "_WithoutKerasOptionalImports" not in result["finders"]  # gone once TensorFlow is imported
    if process == "library":
        assert result["with_tensorflow"] == ["matplotlib", "sklearn"] and result["keras_sklearn"]
        assert result["keras_pyplot"]
    else:  # scikit-learn was imported before: Keras uses it; matplotlib was left out, and Keras goes without it
        assert result["with_tensorflow"] == ["sklearn"] and result["keras_sklearn"] and not result["keras_pyplot"]
