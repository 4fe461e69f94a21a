"""TensorFlow's runtime without its public API (beam_jobs.tf_runtime), what the model process imports.

A fresh process imports only the runtime, loads the signatures the jobs call from real exports of
both model families and calls them; the outputs must match the same signatures loaded here, in a
process that imported TensorFlow whole, and the public API must not have been built. Then the same
process uses ``tf.*`` and gets the whole of TensorFlow.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from jobs_testing import REPO, signature

from beam_jobs import tf_runtime

_SCRIPT = """
import json, sys
import numpy as np
from beam_jobs import tf_runtime
from beam_jobs.model_process import load_signature
tf = tf_runtime.import_runtime()
jobs = json.loads(sys.argv[1])
outputs = {}
for key, (export_dir, name, waveform) in jobs.items():
    _, function = load_signature(export_dir, name)
    result = function(waveform=tf_runtime.constant(np.load(waveform)))
    outputs.update({f"{key}/{k}": v.numpy() for k, v in result.items()})
np.savez(sys.argv[2], **outputs)
before = {"api_built": tf_runtime.api_built(),
          "api_modules": sorted(m for m in sys.modules if m.startswith("tensorflow._api")),
          "keras": "keras" in sys.modules, "modules": len(sys.modules)}
import tensorflow as tf
after = {"version": tf.__version__, "sum": float(tf.reduce_sum(tf.ones([3]))), "api_built": tf_runtime.api_built(),
         "same_module": tf is sys.modules["tensorflow"]}
print(json.dumps({"before": before, "after": after}))
"""


def test_runtime_loads_and_calls_the_jobs_signatures_like_the_whole_of_tensorflow(
        choi_export: str, samplecnn_export: str, tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    jobs = {}
    for family, export_dir in (("choi", choi_export), ("samplecnn", samplecnn_export)):
        meta = json.loads((pathlib.Path(export_dir) / "assets" / "metadata.json").read_text())
        waveform = (0.3 * rng.standard_normal((2, 3 * int(meta["segment_length"])))).astype(np.float32)
        np.save(tmp_path / f"{family}.npy", waveform)
        for name in ("serving_default", "features"):
            jobs[f"{family}-{name}"] = (export_dir, name, str(tmp_path / f"{family}.npy"))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(jobs), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Only the runtime: none of the public API's namespaces, no Keras, and far fewer modules than
    # `import tensorflow`, which leaves well over 2,000 even with Keras hidden.
    assert report["before"]["api_built"] is False
    assert report["before"]["api_modules"] == []
    assert report["before"]["keras"] is False
    assert report["before"]["modules"] < 1800
    # Then `import tensorflow` in the same process gives the whole API, on the same module object.
    assert report["after"] == {"version": tf.__version__, "sum": 3.0, "api_built": True, "same_module": True}

    got = np.load(tmp_path / "out.npz", allow_pickle=True)  # labels: byte strings, written by the child above
    compared = 0
    for key, (export_dir, name, waveform) in jobs.items():
        expected = signature(export_dir, name)(waveform=tf.constant(np.load(waveform)))
        for output, value in expected.items():
            if value.dtype == tf.string:
                np.testing.assert_array_equal(got[f"{key}/{output}"], value.numpy())
            else:  # the same kernels on the same input: equal up to the thread pools' summation order
                np.testing.assert_allclose(got[f"{key}/{output}"], value.numpy(), rtol=1e-6, atol=1e-7)
            compared += 1
    assert compared >= 4


def test_runtime_helpers_are_tensorflows_own(tmp_path: pathlib.Path) -> None:
    assert tf_runtime.errors().InvalidArgumentError is tf.errors.InvalidArgumentError
    assert tf_runtime.errors().OpError is tf.errors.OpError
    np.testing.assert_array_equal(tf_runtime.constant(np.arange(3.0)).numpy(), np.arange(3.0))
    path = tmp_path / "m.json"
    path.write_bytes(b'{"a": 1}')
    assert tf_runtime.gfile_exists(str(path)) and not tf_runtime.gfile_exists(str(tmp_path / "missing"))
    assert tf_runtime.gfile_read(str(path)) == b'{"a": 1}'
    with pytest.raises(FileNotFoundError):
        tf_runtime.gfile_read(str(tmp_path / "missing.json"))
    assert tf_runtime.api_built()  # this process imported TensorFlow whole
    assert tf_runtime.import_runtime() is tf  # already imported: nothing changes


def test_runtime_import_falls_back_to_the_whole_import_where_the_init_loads_plugins(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.machinery

    real = importlib.machinery.PathFinder.find_spec("tensorflow")
    assert real is not None
    assert tf_runtime._loads_more_than_the_runtime(real) is None  # this installation: the runtime suffices
    monkeypatch.setenv("TF_PLUGGABLE_DEVICE_LIBRARY_PATH", "/opt/device.so")
    assert tf_runtime._loads_more_than_the_runtime(real) == "TF_PLUGGABLE_DEVICE_LIBRARY_PATH"
    monkeypatch.delenv("TF_PLUGGABLE_DEVICE_LIBRARY_PATH")
    plugins = tmp_path / "site-packages" / "tensorflow-plugins"
    plugins.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    assert "tensorflow-plugins" in (tf_runtime._loads_more_than_the_runtime(real) or "")


def test_whole_import_hides_keras_and_keras_still_imports_after() -> None:
    code = (
        "import sys\n"
        "from beam_jobs.tf_runtime import import_tensorflow_without_keras\n"
        "tf = import_tensorflow_without_keras()\n"
        "print(sorted(m for m in ('keras', 'sklearn') if m in sys.modules))\n"
        "print(float(tf.reduce_sum(tf.ones([3]))))\n"
        "import keras\n"
        "print(keras.layers.Dense(2).units)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "3.0", "2"]


_QUIET_SCRIPT = """
import sys
import numpy as np
import beam_jobs  # a quiet command line's processes (TFAURAL_QUIET=1) filter TensorFlow's start-up lines
from beam_jobs import tf_runtime
from beam_jobs.model_process import load_signature
tf_runtime.import_runtime()
_, function = load_signature(sys.argv[1], "serving_default")
function(waveform=tf_runtime.constant(np.zeros((1, 4000), np.float32)))
print("called", file=sys.stderr)
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_runtime_import_keeps_a_quiet_command_lines_output_quiet(samplecnn_export: str, quiet: bool) -> None:
    from tfaural.cli import QUIET_ENV, VERBOSE_ENV, is_startup_noise

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", QUIET_ENV, VERBOSE_ENV)}
    env[QUIET_ENV if quiet else VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", _QUIET_SCRIPT, samplecnn_export], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert "called" in lines
    noise = [line for line in lines if is_startup_noise(line)]
    # Quiet: the runtime import and device discovery ran inside the filter. Verbose (the control): they print.
    assert (noise == []) if quiet else noise, lines


_THREADS_SCRIPT = """
import os, sys
import numpy as np
import beam_jobs  # quiet when TFAURAL_QUIET=1: the first import of TensorFlow initialises its runtime
from beam_jobs import tf_runtime
from beam_jobs.model_process import load_signature
_, function = load_signature(sys.argv[1], "serving_default", threads=int(sys.argv[2]))
function(waveform=tf_runtime.constant(np.zeros((1, 4000), np.float32)))
names = []
for task in os.listdir("/proc/self/task"):
    try:
        names.append(open(f"/proc/self/task/{task}/comm").read().strip())
    except FileNotFoundError:  # a thread that ended while being listed
        pass
print(names.count("tf_Compute"), tf_runtime.set_threads(int(sys.argv[2])), tf_runtime.set_threads(7))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts the threads in /proc")
@pytest.mark.parametrize("quiet", [True, False])
@pytest.mark.parametrize("threads", [1, 3])
def test_thread_counts_hold_in_quiet_and_verbose_processes(samplecnn_export: str, quiet: bool, threads: int) -> None:
    """``load_signature(..., threads=N)`` gives TensorFlow N inter-op threads (its ``tf_Compute`` pool) in a
    process a quiet command line started, whose first import of TensorFlow initialises the runtime before
    ``tf.config.threading`` can be called (until this was fixed the counts were silently TensorFlow's
    default there: one per core); asking again for the same count is true, for another false."""
    from tfaural.cli import QUIET_ENV, VERBOSE_ENV

    env = {k: v for k, v in os.environ.items() if k not in (QUIET_ENV, VERBOSE_ENV, *tf_runtime.THREAD_VARIABLES)}
    env[QUIET_ENV if quiet else VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, samplecnn_export, str(threads)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(threads), "True", "False"], done.stderr[-3000:]
