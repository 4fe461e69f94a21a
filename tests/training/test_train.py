"""Training end to end: a real FluidSynth demo catalogue, real TFRecords, every model family."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest

from beam_jobs import make_tfrecords, tf_runtime
from tfaural.config import AggregationConfig, ChoiConfig, SampleCNNConfig
from tfaural.data.tfrecord import read_dataset_info
from tfaural.datasets import demo
from tfaural.errors import ConfigError, DataError
from tfaural.training import evaluate
from tfaural.training.run import load_run, read_run_info
from tfaural.training.train import TrainConfig, TrainResult, _datasets, model_config_for, stream_seed, train
from tfaural.training.train import main as train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 9-track demo catalogue (3 styles) as TFRecords at 11,025, 2,000 and 22,050 Hz."""
    root = tmp_path_factory.mktemp("demo")
    demo.render_catalogue(root, tracks_per_style=3, seconds=4.5, sample_rate=22050, seed=3, progress=False)
    datasets = {}
    for name, rate, manifest in (("choi", 11025, "manifest.csv"), ("sc2000", 2000, "manifest.csv"),
                                 ("sc22050", 22050, "manifest.csv"), ("tags2000", 2000, "manifest_instruments.csv")):
        out = root / f"tfrecords-{name}"
        make_tfrecords.run([f"--manifest={root / manifest}", f"--output={out}", f"--sample-rate={rate}",
                            "--runner=DirectRunner"])
        datasets[name] = str(out)
    return datasets


#: The dataset each model family's one-step run trains on.
FAMILY_DATA = {"choi": "choi", "samplecnn-2000": "sc2000", "mel-frame": "sc22050", "raw-frame": "sc22050"}


@pytest.fixture(scope="module")
def trained(catalogue: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[pathlib.Path, TrainResult]]:
    """``trained(model)``: the family's one-step run with the default settings (:func:`_config`) and its result,
    trained on first use and shared by the tests that only read it (training is most of this module's time)."""
    runs: dict[str, tuple[pathlib.Path, TrainResult]] = {}

    def run(model: str) -> tuple[pathlib.Path, TrainResult]:
        if model not in runs:
            run_dir = tmp_path_factory.mktemp(f"run-{model}") / "run"
            extra = {"window": 729, "hop": 729} if model == "mel-frame" else {}
            runs[model] = run_dir, train(catalogue[FAMILY_DATA[model]], str(run_dir), _config(model, **extra),
                                         verbose=0)
        return runs[model]

    return run


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _config(model: str, **kwargs: object) -> TrainConfig:
    defaults: dict[str, object] = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "checkpoint_every": 0}
    defaults.update(kwargs)
    return TrainConfig(model=model, **defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "model,expected",
    [("choi", ChoiConfig), ("samplecnn-2000", SampleCNNConfig), ("mel-frame", SampleCNNConfig),
     ("raw-frame", SampleCNNConfig)],
)
def test_every_family_trains_a_step_and_writes_a_run(
        trained: Callable[[str], tuple[pathlib.Path, TrainResult]], model: str, expected: type) -> None:
    run_dir, result = trained(model)
    assert result.epochs == 1 and result.stopped == "epochs"
    loaded, info = load_run(run_dir)
    assert isinstance(info.model, expected)
    assert info.labels == ("ballad", "dance", "hiphop") and info.task == "single-label"
    x = np.zeros((1, *loaded.input_shape[1:]), np.float32)
    scores = loaded(x, training=False).numpy()
    np.testing.assert_allclose(scores.sum(), 1.0, rtol=1e-5)  # softmax for single-label genres
    history = _rows(run_dir / "history.csv")
    assert len(history) == 1 and float(history[0]["learning_rate"]) == pytest.approx(0.01)
    assert any((run_dir / "logs").rglob("events.out.tfevents*"))


def test_resume_after_a_kill_continues_mid_epoch(catalogue: dict[str, str], tmp_path: pathlib.Path,
                                                 caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tfaural.training.train", "--model", "samplecnn-2000", "--data",
               catalogue["sc2000"], "--output", str(run_dir), "--epochs", "2", "--steps-per-epoch", "4",
               "--batch-size", "2", "--checkpoint-every", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    crashed = subprocess.run([*command, "--crash-after-steps", "3"], capture_output=True, text=True, env=env)
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["global_step"]) == (0, 3, 3)
    resumed = subprocess.run(command, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and "epoch 1, step 3" in resumed.stderr
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    # 2 epochs x 4 steps in all: the resumed run did the 1 missing step of epoch 1, not 4 again.
    assert (state["epoch"], state["global_step"], state["finished"]) == (2, 8, "epochs")
    rows = _rows(run_dir / "history.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    with caplog.at_level("INFO", logger="tfaural.training.train"):  # a finished run is left alone (in-process)
        assert train_main(command[3:]) == 0
    assert "already finished" in caplog.text
    stopped = tmp_path / "stopped"  # Ctrl-C mid-run: one line saying how to resume, not a traceback
    interrupted = subprocess.Popen([*command, "--output", str(stopped), "--epochs", "50"], stderr=subprocess.PIPE,
                                   text=True, env=env,  # SIGINT as in a terminal, even if the tests run with '&'
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    state = stopped / "checkpoints" / "state.json"
    while not state.exists() or json.loads(state.read_text())["global_step"] < 2:
        assert interrupted.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate()
    assert interrupted.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert f"interrupted: rerun the same command to resume {stopped} from its last checkpoint" in err
    capsys.readouterr()  # another recipe: not resumed, and the message says what differs
    assert train_main([*command[3:-4], "--batch-size", "4", *command[-2:]]) == 2
    assert "another training config (batch_size 2, now 4); rerun it as it was" in capsys.readouterr().err


def test_a_resumed_run_draws_a_stream_of_its_own(catalogue: dict[str, str]) -> None:
    """A resumed run's training batches are not the first batches again (which a fresh process seeded as the
    first run would draw at every resumption), and are the same for every resumption at that step."""
    config = _config("samplecnn-2000", seed=7, deterministic=True)
    info = read_dataset_info(catalogue["sc2000"])
    model_config = model_config_for(config, n_outputs=info.num_labels, multi_label=info.multi_label,
                                    sample_rate=info.sample_rate)

    def first_batch(resumed_at: int) -> np.ndarray:
        train_ds, _, _, _ = _datasets(catalogue["sc2000"], config, model_config, info, resumed_at=resumed_at)
        return next(iter(train_ds))[0].numpy()

    start, resumed = first_batch(0), first_batch(5)
    assert not np.array_equal(start, resumed)
    assert np.array_equal(resumed, first_batch(5))
    assert stream_seed(7, 0) == 7 and len({stream_seed(7, k) for k in range(1, 200)}) == 199
    assert all(0 <= stream_seed(s, k) < 2**31 for s in (0, 7, 2**40) for k in (1, 10**9))


def test_deterministic_runs_of_one_seed_are_bit_identical(catalogue: dict[str, str], tmp_path: pathlib.Path) -> None:
    """--deterministic: the same command twice gives the same history and weights, bit for bit (--seed alone
    starts two runs alike; threads finishing in another order then move them apart)."""
    command = [sys.executable, "-m", "tfaural.training.train", "--model", "samplecnn-2000", "--data",
               catalogue["sc2000"], "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", "--seed", "7",
               "--deterministic"]
    # With TensorFlow's default threads (one per core, not the share tests/conftest.py gives a test worker): the
    # order they finish in is what --deterministic has to make irrelevant.
    env = {**{k: v for k, v in os.environ.items() if k not in tf_runtime.THREAD_VARIABLES}, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in ("a", "b"):
        done = subprocess.run([*command, "--output", str(tmp_path / name)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = [[{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in _rows(tmp_path / n / "history.csv")]
            for n in ("a", "b")]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    weights = [load_run(tmp_path / n)[0].get_weights() for n in ("a", "b")]
    assert all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))


def test_learning_rate_schedule_divides_by_five_then_stops(catalogue: dict[str, str], tmp_path: pathlib.Path) -> None:
    # A learning rate too small to train: most epochs after the first are plateaus. Not all of them: the
    # batch-norm moving statistics still move in training (whatever the learning rate), and after the best
    # weights are reloaded an epoch can improve the validation loss by more than MIN_DELTA. So the recorded
    # history is checked against the papers' rule replayed on its own improvement flags (patience 1: every
    # epoch without improvement divides the rate by 5; the one after the second decay stops the run).
    config = _config("samplecnn-2000", epochs=10, learning_rate=1e-9, patience=1, max_decays=2)
    result = train(catalogue["sc2000"], str(tmp_path / "run"), config, verbose=0)
    rows = _rows(tmp_path / "run" / "history.csv")
    improved = [row["improved"] == "1" for row in rows]
    expected, rate, decays, stopped = [], 1e-9, 0, None
    for flag in improved:
        expected.append(rate)
        if not flag:
            if decays == 2:
                stopped = "schedule"
                break
            decays, rate = decays + 1, rate / 5
    np.testing.assert_allclose([float(row["learning_rate"]) for row in rows], expected)
    assert len(expected) == len(rows) and improved[0] and improved.count(False) == 3
    assert result.stopped == stopped == "schedule" and result.epochs == len(rows)


#: The environment of a process whose TensorFlow runs one op at a time on one thread (float16 steps on a CPU).
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def test_gpu_options_construct_on_cpu(catalogue: dict[str, str], tmp_path: pathlib.Path) -> None:
    """--mixed-precision --distribute mirrored train on a CPU (from the command line, in a process with one
    intra-op thread: see :func:`mixed_precision_steps`); the run's model is float32; --jit compiles the step."""
    done = subprocess.run(
        [sys.executable, "-m", "tfaural.training.train", "--model", "samplecnn-2000", "--data", catalogue["sc2000"],
         "--output", str(tmp_path / "run"), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
         "--checkpoint-every", "0", "--mixed-precision", "--distribute", "mirrored"],
        capture_output=True, text=True, timeout=900, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_rows(tmp_path / "run" / "history.csv")) == 1
    model, info = load_run(tmp_path / "run")
    assert info.extra["train_config"]["distribute"] == "mirrored"
    assert info.extra["train_config"]["mixed_precision"] is True
    assert model.get_layer("conv1").dtype_policy.name == "float32"  # exports are rebuilt in float32
    # XLA: the train step compiles with jit_compile (one step on the smallest model).
    from tfaural.models import build
    from tfaural.training.train import _compile, model_config_for

    jit = _config("samplecnn-2000", jit=True)
    tiny = build(model_config_for(jit, n_outputs=3, multi_label=False, sample_rate=2000))
    _compile(tiny, jit, multi_label=False, learning_rate=0.01)
    assert tiny.jit_compile is True
    x = np.zeros((2, 5184, 1), np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1]]
    assert np.isfinite(tiny.train_on_batch(x, y, return_dict=True)["loss"])


#: The model families (and their sample rates) that take one mixed-precision training step.
MIXED_PRECISION_FAMILIES = (("choi", 11025), ("mel-frame", 2000), ("raw-frame", 2000), ("samplecnn-2000", 2000))

#: Run in a process of its own: one training step per family under ``mixed_float16`` (see the test).
_MIXED_PRECISION_STEPS = """
import json, sys
import numpy as np
from tfaural.cli import skip_keras_optional_imports
skip_keras_optional_imports()
import keras
from tfaural.models import build
from tfaural.training.train import TrainConfig, _compile, _policy, model_config_for

steps = {}
for model, rate, settings in json.loads(sys.argv[1]):
    config = TrainConfig.from_dict(settings)
    with _policy(True):
        net = build(model_config_for(config, n_outputs=3, multi_label=False, sample_rate=rate))
        _compile(net, config, multi_label=False, learning_rate=0.01)
        float16 = any(layer.compute_dtype == "float16" for layer in net.layers)
        x = 0.1 * np.random.default_rng(0).standard_normal((2, *net.input_shape[1:])).astype(np.float32)
        loss = net.train_on_batch(x, np.eye(3, dtype=np.float32)[[0, 1]], return_dict=True)["loss"]
    steps[f"{model}-{rate}"] = {"float16_maps": float16, "loss": float(loss),
                                "policy_after": keras.mixed_precision.global_policy().name}
print(json.dumps(steps))
"""


@pytest.fixture(scope="module")
def mixed_precision_steps() -> dict[str, dict[str, object]]:
    """Each family's one mixed-precision training step, taken in a fresh process with one intra-op thread.

    float16 kernels on a CPU split each op into many small parallel tasks: in this worker, beside the other
    test worker's TensorFlow, one step took 56-64 s (4-7 s alone on the machine); with one thread, 4 s.
    """
    steps = [(model, rate, _config(model, mixed_precision=True, input_scaling="log").to_dict())
             for model, rate in MIXED_PRECISION_FAMILIES]
    done = subprocess.run([sys.executable, "-c", _MIXED_PRECISION_STEPS, json.dumps(steps)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("model", "rate"), MIXED_PRECISION_FAMILIES)
def test_every_family_takes_a_training_step_in_mixed_precision(
        mixed_precision_steps: dict[str, dict[str, object]], model: str, rate: int) -> None:
    """--mixed-precision builds each model under ``mixed_float16`` (its float16 maps: on CPU too, where it is only
    slower): one training step gives a finite loss (the Choi CNN's log scaling failed on its float16 input), and
    the global policy is float32 again afterwards."""
    step = mixed_precision_steps[f"{model}-{rate}"]
    assert step["float16_maps"] is True
    assert np.isfinite(step["loss"]) and step["policy_after"] == "float32"


def test_evaluate_writes_scores_and_a_figure(catalogue: dict[str, str],
                                            trained: Callable[[str], tuple[pathlib.Path, TrainResult]]) -> None:
    run_dir, _ = trained("choi")
    result = evaluate.evaluate_run(str(run_dir), catalogue["choi"], split="test", progress=False)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["n_tracks"] == result["n_tracks"] == 3  # one test track per style
    assert 0.0 <= saved["accuracy"] <= 1.0 and len(saved["confusion_matrix"]) == 3
    assert sum(map(sum, saved["confusion_matrix"])) == 3
    assert (run_dir / "eval-test.png").stat().st_size > 1000
    rows = _rows(run_dir / "predictions-test.csv")
    assert len(rows) == 3 and all(abs(sum(float(r[f"score:{n}"]) for n in ("ballad", "dance", "hiphop")) - 1) < 1e-4
                                  for r in rows)
    with pytest.raises(DataError, match="labels"):
        evaluate.evaluate_run(str(run_dir), catalogue["tags2000"], progress=False)


def test_transfer_by_weights_and_by_features(catalogue: dict[str, str], tmp_path: pathlib.Path,
                                            trained: Callable[[str], tuple[pathlib.Path, TrainResult]]) -> None:
    source, _ = trained("samplecnn-2000")
    target = tmp_path / "finetuned"
    # Multi-label instrument tags: a different output layer, every other layer initialised from the source.
    train(catalogue["tags2000"], str(target), _config("samplecnn-2000"), init_from=str(source), verbose=0)
    src, _ = load_run(source)
    tuned, info = load_run(target)
    assert info.task == "multi-label" and tuned.get_layer("output").get_weights()[0].shape[1] == len(info.labels)
    features = tmp_path / "features"
    code = __import__("tfaural.training.train", fromlist=["main"]).main(
        ["--model", "samplecnn-2000", "--data", catalogue["tags2000"], "--output", str(features), "--transfer",
         "features", "--init-from", str(source), "--hidden-units", "16,16", "--epochs", "3"])
    assert code == 0
    agg, agg_info = load_run(features)
    assert isinstance(agg_info.model, AggregationConfig) and agg_info.extra["transfer"] == "features"
    scores = agg(np.zeros((1, 2000 * 4), np.float32), training=False).numpy()
    assert scores.shape == (1, len(agg_info.labels)) and np.all((scores >= 0) & (scores <= 1))
    del src


def test_bad_inputs_are_clear_errors(catalogue: dict[str, str], tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataError, match=r"expects 22050 Hz audio but the dataset is at 2000 Hz; rebuild the "
                                        r"TFRecords with --sample-rate 22050 or pick samplecnn-2000$"):
        train(catalogue["sc2000"], str(tmp_path / "a"), _config("samplecnn"), verbose=0)
    from tfaural.training.train import model_config_for

    with pytest.raises(DataError, match=r"at 11025 Hz; rebuild the TFRecords with --sample-rate 8000 \(Table 3 has "
                                        r"no preset for 11025 Hz: \[2000, 4000, 8000"):  # a preset that exists
        model_config_for(_config("samplecnn-8000"), n_outputs=3, multi_label=False, sample_rate=11025)
    with pytest.raises(ConfigError, match=r"model='vgg'"):
        TrainConfig(model="vgg")
    with pytest.raises(DataError, match=r"dataset\.json not found"):
        train(str(tmp_path), str(tmp_path / "b"), _config("choi"), verbose=0)
    assert read_run_info  # imported for the API surface
