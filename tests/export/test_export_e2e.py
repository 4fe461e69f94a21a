"""End to end: train a tiny model of each family for a step, export it, verify it, serve it without tfaural.

One export per family (module-scoped, verified in a fresh TensorFlow-only process
by the exporter itself); the tests then check the version layout, metadata,
warm-up file, op list, versioning, every signature against an independent
reference, the in-graph input validation and the client request protos.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import keras
import numpy as np
import psutil
import pytest
import tensorflow as tf

# Submodule imports only: ``tests/export/`` (no __init__.py) shadows the ``export`` package as a
# namespace package when pytest puts ``tests/`` on sys.path; its submodules still resolve to the real ones.
from export import client, exporter, verify
from export.__main__ import main as export_main
from export.budget import WorkBudget
from export.metadata import SIGNATURE_INPUTS
from export.warmup import WARMUP_FILE, read_warmup_file, wav_bytes
from tfaural import spectral
from tfaural.auralise import Auraliser
from tfaural.config import AudioConfig, SegmentConfig
from tfaural.deconv import deconvolve
from tfaural.errors import ExportError, ParameterError
from tfaural.formats import read_export_metadata
from tfaural.models import choi_cnn, config_from_model, multi_scale_features
from tfaural.models.samplecnn import samplecnn_model
from tfaural.training.run import RunInfo, load_run, save_run

# Every test here uses a real, verified export (tens of seconds to build, shared by the module).
pytestmark = pytest.mark.slow

RATE = 2000
MAX_SECONDS = 4.0
MAX_DECONV_SECONDS = 2.0
# Small budgets, so that the tests reach them cheaply: 6 s of audio per scoring call, 6 feature-seconds per
# deconvolution call (3 features of a 2-s clip), and a walk of one feature at a time (many chunks).
BUDGET = WorkBudget(max_request_seconds=6.0, max_deconv_feature_seconds=6.0, deconv_chunk_elements=300)
FAMILIES = ("choi", "samplecnn")
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@dataclasses.dataclass
class Exported:
    family: str
    run_dir: str
    base: str
    version_dir: str
    model: keras.Model
    info: RunInfo
    loaded: Any
    metadata: dict[str, Any]

    def call(self, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
        tensors = {}
        for spec in SIGNATURE_INPUTS[signature]:
            value = inputs[spec.name]
            tensors[spec.name] = tf.constant(value, dtype=tf.string if spec.dtype == "string" else spec.dtype)
        return {k: v.numpy() for k, v in self.loaded.signatures[signature](**tensors).items()}


def _tiny(family: str) -> tuple[keras.Model, RunInfo]:
    if family == "choi":
        model = choi_cnn(
            n_outputs=3, n_freq=33, n_frames=33, n_fft=64, hop_length=32, n_filters=4, fc_units=(8,), sample_rate=RATE
        )
        info = RunInfo(
            model=config_from_model(model), labels=("blues", "jazz", "rock"), task="single-label",
            audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=1024),
        )
    else:
        model = samplecnn_model(
            filter_sizes=(3, 3, 2, 3), n_outputs=4, channels=(8, 8, 8), front_filters=8, top_filters=8,
            sample_rate=RATE,
        )
        info = RunInfo(
            model=config_from_model(model), labels=("guitar", "piano", "voice", "drums"), task="multi-label",
            audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=54),
        )
    return model, info


def _train_one_step(model: keras.Model, family: str) -> None:
    rng = np.random.default_rng(7)
    shape = model.inputs[0].shape[1:]
    x = np.abs(rng.standard_normal((4, *shape))).astype(np.float32)
    n_out = int(model.outputs[0].shape[-1])
    if family == "choi":
        y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, 4)]
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    else:
        y = (rng.random((4, n_out)) > 0.5).astype(np.float32)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """Lazily built exports, one per family, shared by every test of this module."""
    return _ExportCache(tmp_path_factory)


class _ExportCache(dict):  # type: ignore[type-arg]
    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, family: str) -> Exported:
        root = self.factory.mktemp(f"export_{family}")
        model, info = _tiny(family)
        _train_one_step(model, family)
        run_dir = str(root / "run")
        save_run(run_dir, model, info)
        base = str(root / "exports")
        version_dir = exporter.export_run(
            run_dir, base, max_seconds=MAX_SECONDS, max_deconv_seconds=MAX_DECONV_SECONDS, budget=BUDGET
        )
        reloaded, reloaded_info = load_run(run_dir)
        self[family] = Exported(
            family, run_dir, base, version_dir, reloaded, reloaded_info, tf.saved_model.load(version_dir),
            read_export_metadata(version_dir).data,  # the file as written
        )
        return self[family]


@pytest.fixture(params=FAMILIES)
def exported(request: pytest.FixtureRequest, exports: dict[str, Exported]) -> Exported:
    return exports[request.param]


@pytest.fixture
def choi(exports: dict[str, Exported]) -> Exported:
    return exports["choi"]


@pytest.fixture
def sample(exports: dict[str, Exported]) -> Exported:
    return exports["samplecnn"]


def _signal(n: int, *, seed: int, batch: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 600, (batch, 1)) * t)
    return (tone + 0.05 * rng.standard_normal((batch, n))).astype(np.float32)


def _model_input(e: Exported, segments: np.ndarray) -> np.ndarray:
    if e.info.stft is None:
        return segments[..., np.newaxis]
    return np.abs(spectral.stft(segments, n_fft=64, hop_length=32).numpy())[..., np.newaxis]


# --------------------------------------------------------------------------- layout and metadata


def test_version_layout_and_assets(exported: Exported) -> None:
    assert exported.version_dir == os.path.join(os.path.abspath(exported.base), "1")
    names = set(os.listdir(exported.version_dir))
    assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= names
    assert not [n for n in os.listdir(exported.base) if n.startswith(".tmp-")]
    labels = pathlib.Path(exported.version_dir, "assets", "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == list(exported.info.labels)
    meta = exported.metadata
    assert meta["family"] == exported.family
    typed = read_export_metadata(exported.version_dir)  # the one reader's view agrees with the file
    assert (typed.family, typed.sample_rate, typed.labels, typed.segment_hop) == (
        meta["family"], meta["sample_rate"], tuple(meta["labels"]), meta["segment_hop"])
    assert typed.features_per_layer == {int(k): v for k, v in meta["features_per_layer"].items()}
    assert meta["sample_rate"] == RATE and meta["segment_length"] == exported.info.segment.length
    assert meta["segment_seconds"] == pytest.approx(exported.info.segment.length / RATE)
    assert meta["labels"] == list(exported.info.labels) and meta["task"] == exported.info.task
    assert meta["run_id"] == exported.info.run_id and meta["tfaural_version"] == exported.info.tfaural_version
    assert meta["max_seconds"] == MAX_SECONDS and meta["max_samples"] == MAX_SECONDS * RATE
    assert meta["model_config"]["kind"] in ("choi", "samplecnn")
    expected_signatures = {"serving_default", "serving_wav", "features", "deconvolve", "auralise", "attribute"}
    assert set(meta["signatures"]) == expected_signatures
    assert set(exported.loaded.signatures.keys()) == expected_signatures
    if exported.family == "choi":
        assert meta["stft"] == {"n_fft": 64, "hop_length": 32, "win_length": None, "window": "hann", "center": True}
        assert meta["input_scaling"] == {"mode": "linear", "log_c": 10.0}
        assert meta["deconvolvable_layers"] == [1, 2, 3, 4, 5]
        assert [level["layer"] for level in meta["feature_levels"]] == ["pool3", "pool4", "pool5"]
    else:
        assert meta["stft"] is None and meta["input_scaling"] is None
        assert meta["deconvolvable_layers"] == [0, 1, 2, 3, 4]
        assert [level["layer"] for level in meta["feature_levels"]] == ["pool2", "pool3", "relu_1x1"]
    # The loaded object exposes the tracked assets too.
    assert json.loads(pathlib.Path(exported.loaded.metadata_file.asset_path.numpy().decode()).read_text())["labels"]


def test_exporter_verified_in_a_fresh_process_and_saved_model_cli(exported: Exported) -> None:
    report = json.loads(pathlib.Path(exported.version_dir, exporter.VERIFICATION_FILE).read_text())
    assert report["ok"] and not report["problems"]
    assert report["tfaural_importable"] is False and report["modules"] == []
    assert report["keras_imported"] is False  # nor Keras: loaded and called with TensorFlow imported without it
    assert set(report["signatures"]) == set(exported.metadata["signatures"])
    for result in report["signatures"].values():
        assert result["ok"]
        for check in result["outputs"].values():
            assert check["ok"] and check.get("max_rel_error", 0.0) <= verify.RTOL
    # ... also loaded as TF Serving loads it, and the jobs' one-signature SavedModels
    assert set(report["session_signatures"]) == set(exported.metadata["signatures"])
    assert set(report["signature_savedmodels"]) == {"serving_default", "features"}
    assert all(r["ok"] for key in ("session_signatures", "signature_savedmodels") for r in report[key].values())
    listed = report["saved_model_cli"]
    assert set(listed) - {"__saved_model_init_op"} == set(exported.metadata["signatures"])
    assert listed["deconvolve"]["inputs"] == {"waveform": "float32", "layer": "int32", "features": "int32"}
    assert listed["auralise"]["outputs"] == {"audio": "float32", "silent": "bool", "peak": "float32",
                                          "activation": "float32"}
    assert listed["serving_default"]["outputs"] == {"scores": "float32", "labels": "string"}
    assert listed["serving_wav"]["inputs"] == {"wav": "string"}
    # The listing comes from saved_model_cli's main() inside the TF1 session's process: the same as the command's.
    assert listed == verify.saved_model_cli_signatures(exported.version_dir)


def test_saved_model_cli_run_in_process_reports_the_commands_failure(tmp_path: pathlib.Path) -> None:
    """The in-process ``saved_model_cli show --all`` (the verification's) captures the command's failure, and the
    verification turns it into an ExportError naming the directory and the command's reason."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from export import verify; "
            "print(json.dumps(verify._run_saved_model_cli(sys.argv[2])))")
    root = pathlib.Path(verify.__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["returncode"] != 0 and not result["stdout"].strip()
    reason = rf"(?s)saved_model_cli failed on {re.escape(str(tmp_path))}: .*SavedModel file does not exist"
    with pytest.raises(ExportError, match=reason):
        verify._cli_listing(str(tmp_path), result["returncode"], result["stdout"], result["stderr"])


def test_tf_serving_loader_restores_the_variables_the_signatures_read(exported: Exported) -> None:
    """TF Serving's C++ loader (like tf.compat.v1.saved_model.load) restores the variables through the
    MetaGraph's saver; tracked Keras 3 variables would be restored into copies the functions never read
    ("Could not find variable", keras-team/keras#19274)."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], exported.version_dir)
        spec = meta_graph.signature_def["serving_default"]
        reference = verify.load_reference(os.path.join(exported.version_dir, verify.REFERENCE_FILE))
        waveform = reference["serving_default"]["inputs"]["waveform"]
        scores = session.run(spec.outputs["scores"].name, {spec.inputs["waveform"].name: waveform})
    np.testing.assert_allclose(scores, reference["serving_default"]["outputs"]["scores"], rtol=1e-5, atol=1e-6)
    checkpoint = tf.train.load_checkpoint(os.path.join(exported.version_dir, "variables", "variables"))
    saved = [key for key in checkpoint.get_variable_to_shape_map() if key != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(saved) == len(exported.loaded.model_variables)  # each variable saved once, no copies


def test_verification_fails_in_each_of_its_processes_on_outputs_that_differ(choi: Exported) -> None:
    """Both fresh processes (tf.saved_model.load, and the TF1 session as TF Serving loads it) compare every output;
    a reference whose scores are off by 1e-3 fails in each, by name, and the session part alone reports only its
    own calls."""
    reference = verify.load_reference(os.path.join(choi.version_dir, verify.REFERENCE_FILE))
    reference["serving_default"]["outputs"]["scores"] = reference["serving_default"]["outputs"]["scores"] + 1e-3
    with pytest.raises(ExportError) as raised:
        verify.verify_export(choi.version_dir, reference=reference, cli=False)
    message = str(raised.value)
    assert re.search(r"failed: serving_default/scores: max abs error", message)  # tf.saved_model.load's, first
    assert "; TF1 session (as TF Serving loads it) serving_default/scores: max abs error" in message
    assert "; one-signature SavedModel serving_default/scores: max abs error" in message
    assert "serving_wav" not in message
    done = subprocess.run(
        [sys.executable, "-I", verify.__file__, "--child", choi.version_dir,
         os.path.join(choi.version_dir, verify.REFERENCE_FILE), "--part", "session"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    report = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert report["ok"] and "signatures" not in report and "ops" not in report
    assert set(report["session_signatures"]) == set(choi.metadata["signatures"])


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_verification_processes_start_ahead_one_after_another_and_end_with_their_owner(choi: Exported) -> None:
    """``verify.Processes`` starts its fresh processes before the export exists, the next when the last has
    imported TensorFlow (every export of this suite goes through them to its saved_model_cli listing); closed
    before any export came, none is left and they check none; a process whose input closes ends by itself."""
    before = _children()
    with verify.Processes() as started:
        assert len(_children() - before) == 1  # the others start when it is ready
        deadline = time.monotonic() + 300
        while len(_children() - before) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_children() - before) == 2
        with pytest.raises(ValueError, match="cli=False but the processes were started with cli=True"):
            verify.verify_export(choi.version_dir, processes=started, cli=False)
    assert _children() <= before
    with pytest.raises(ExportError, match="check one export, once"):
        started.run(choi.version_dir, os.path.join(choi.version_dir, verify.REFERENCE_FILE), timeout=60)
    waiting = subprocess.Popen([sys.executable, "-I", verify.__file__, "--wait", "session", "--cli"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    out, err = waiting.communicate(timeout=600)  # its input closes at once
    assert waiting.returncode == 0 and out.split() == ["ready"], err[-2000:]


def test_only_core_ops(exported: Exported) -> None:
    ops = verify.check_ops(exported.version_dir)
    assert not verify.FORBIDDEN_OPS & set(ops)
    assert {"DecodeWav", "Case", "Assert"} <= set(ops)  # the in-graph WAV decoding, layer switch and checks


def test_layer_switches_stay_functional_case_ops(exported: Exported) -> None:
    """Each deconvolution signature's layer switch is one ``Case`` op with a branch per layer that
    TensorFlow does not lower into Switch/Merge: a call prepares only the layer it runs."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pathlib.Path(exported.version_dir, "saved_model.pb").read_bytes())
    cases = [node for function in saved.meta_graphs[0].graph_def.library.function
             for node in function.node_def if node.op in ("Case", "StatelessCase")]
    switching = {"deconvolve", "auralise", "attribute"} & set(exported.metadata["signatures"])
    assert len(cases) == len(switching) > 0
    for node in cases:
        assert len(node.attr["branches"].list.func) == len(exported.metadata["deconvolvable_layers"])
        assert "_lower_using_switch_merge" in node.attr and not node.attr["_lower_using_switch_merge"].b


def test_warmup_file_has_one_prediction_log_per_signature(exported: Exported) -> None:
    logs = read_warmup_file(exported.version_dir)
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted(exported.metadata["signatures"]) and len(names) == len(set(names))
    reference = verify.load_reference(os.path.join(exported.version_dir, verify.REFERENCE_FILE))
    for log in logs:
        request = log.predict_log.request
        stored = reference[request.model_spec.signature_name]["inputs"]
        assert set(request.inputs) == set(stored)
        for name, proto in request.inputs.items():
            np.testing.assert_array_equal(tf.make_ndarray(proto), stored[name])
    assert os.path.getsize(os.path.join(exported.version_dir, WARMUP_FILE)) > 0


# --------------------------------------------------------------------------- signatures vs independent references


def test_serving_default_averages_whole_segments(exported: Exported) -> None:
    length = exported.info.segment.length
    x = _signal(3 * length + length // 2, seed=1, batch=2)  # a trailing half segment, dropped
    out = exported.call("serving_default", waveform=x)
    segments = x[:, : 3 * length].reshape(6, length)
    expected = exported.model(_model_input(exported, segments), training=False).numpy().reshape(2, 3, -1).mean(1)
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-5, atol=1e-6)
    top_k = min(5, len(exported.info.labels))
    names = np.array(exported.info.labels)[np.argsort(-expected, axis=1)[:, :top_k]]
    assert out["labels"].shape == (2, top_k)
    assert [[b.decode() for b in row] for row in out["labels"]] == names.tolist()


def test_serving_wav_matches_serving_default_per_file(exported: Exported) -> None:
    length = exported.info.segment.length
    a, b = _signal(2 * length + 7, seed=2)[0], _signal(4 * length, seed=3)[0]
    wavs = np.array([wav_bytes(a, sample_rate=RATE), wav_bytes(b, sample_rate=RATE)], dtype=object)
    out = exported.call("serving_wav", wav=wavs)
    for row, y in enumerate((a, b)):
        quantised = (np.clip(np.round(y * 32768), -32768, 32767) / 32768).astype(np.float32)
        single = exported.call("serving_default", waveform=quantised[np.newaxis])
        np.testing.assert_allclose(out["scores"][row], single["scores"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["labels"][row], single["labels"][0])
    stereo = np.stack([a, a], axis=1)  # multi-channel files are averaged to mono
    out_stereo = exported.call("serving_wav", wav=np.array([wav_bytes(stereo, sample_rate=RATE)], dtype=object))
    np.testing.assert_allclose(out_stereo["scores"][0], out["scores"][0], rtol=1e-5, atol=1e-6)


def test_features_are_pooled_last_three_layers(exported: Exported) -> None:
    length = exported.info.segment.length
    x = _signal(3 * length, seed=4, batch=2)
    out = exported.call("features", waveform=x)
    if exported.family == "samplecnn":  # the aggregation model of tfaural.models is an independent implementation
        expected = multi_scale_features([exported.model])(x).numpy()
    else:
        layers = [level["layer"] for level in exported.metadata["feature_levels"]]
        sub = keras.Model(exported.model.inputs[0], [exported.model.get_layer(n).output for n in layers])
        maps = sub(_model_input(exported, x.reshape(6, length)), training=False)
        pooled = []
        for m in maps:
            per_item = m.numpy().reshape(2, -1, m.shape[-1])
            pooled += [per_item.max(1), per_item.mean(1)]
        expected = np.concatenate(pooled, axis=1)
    np.testing.assert_allclose(out["features"], expected, rtol=1e-5, atol=1e-6)
    assert out["features"].shape == (2, exported.metadata["n_features"])
    width = exported.metadata["feature_levels"][0]["channels"]
    np.testing.assert_array_equal(out["level1_max"], out["features"][:, :width])
    np.testing.assert_array_equal(out["level1_mean"], out["features"][:, width : 2 * width])


def test_deconvolve_every_layer_matches_tfaural_deconv(exported: Exported) -> None:
    x = _signal(2 * exported.info.segment.length + 5, seed=5)
    model_input = np.abs(spectral.stft(x, n_fft=64, hop_length=32).numpy()) if exported.family == "choi" else x
    for layer in exported.metadata["deconvolvable_layers"]:
        features = np.array([exported.metadata["features_per_layer"][str(layer)] - 1, 0], np.int32)
        out = exported.call("deconvolve", waveform=x, layer=np.int32(layer), features=features)
        expected = deconvolve(exported.model, model_input, layer=layer, features=features.tolist()).numpy()
        # float32 sums of many cancelling terms, in an order that the two graphs' kernels (and their thread
        # split under load) choose: 1e-5 of the map's peak failed once in a whole-suite run (8.6e-10 where the
        # peak was 1.7e-5); a wrong layer, feature or switch misses by the order of the peak itself
        scale = np.abs(expected).max()
        np.testing.assert_allclose(out["deconvolved"], expected, rtol=1e-4, atol=1e-4 * scale)
    if exported.family == "choi":
        np.testing.assert_allclose(out["spectrogram"], model_input, rtol=1e-6, atol=1e-6)
        assert out["deconvolved"].shape == (1, 2, 33, model_input.shape[-1])
    else:
        assert "spectrogram" not in out and out["deconvolved"].shape == (1, 2, x.shape[-1])


def test_deconvolution_takes_clips_down_to_the_deepest_layers_shortest(exported: Exported) -> None:
    """The Choi CNN's five 2x2 poolings need 32 STFT frames (31 hops of 32 samples) at layer 5, under its 1024-sample
    segment; the SampleCNN is built for one length, its segment. A clip of exactly ``min_deconv_samples`` deconvolves
    (as tfaural.deconv does in-process); one sample less is refused, naming the shortest; tagging still needs a
    segment; and the warm-up (so verification) calls deconvolve and auralise at that edge."""
    shortest = {"choi": 31 * 32, "samplecnn": exported.info.segment.length}[exported.family]
    assert exported.metadata["min_deconv_samples"] == shortest
    assert read_export_metadata(exported.version_dir).min_deconv_seconds == shortest / RATE
    x = _signal(shortest, seed=9)
    layer = exported.metadata["deconvolvable_layers"][-1]
    out = exported.call("deconvolve", waveform=x, layer=np.int32(layer), features=np.array([0, 3], np.int32))
    model_input = np.abs(spectral.stft(x, n_fft=64, hop_length=32).numpy()) if exported.family == "choi" else x
    expected = deconvolve(exported.model, model_input, layer=layer, features=[0, 3]).numpy()
    np.testing.assert_allclose(out["deconvolved"], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    why = "not empty" if exported.family == "choi" else "one model segment"
    _fails(exported, "auralise", rf"waveform has {shortest - 1} samples; need at least {shortest} \(.*{why}\)",
           waveform=x[:, 1:], layer=np.int32(1), features=np.array([0], np.int32), mode=b"phase")
    if exported.family == "choi":
        _fails(exported, "serving_default", rf"need at least {exported.info.segment.length} \(.*one model segment",
               waveform=x)
        _fails(exported, "attribute", rf"need at least {exported.info.segment.length} \(.*one model segment",
               waveform=x, layer=np.int32(1), top_tags=np.int32(1))
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in read_warmup_file(exported.version_dir)}
    for name in ("deconvolve", "auralise"):
        assert tf.make_ndarray(requests[name].inputs["waveform"]).shape == (1, shortest)
    assert tf.make_ndarray(requests["serving_default"].inputs["waveform"]).shape == (1, exported.info.segment.length)


@pytest.mark.parametrize("mode", ["phase", "mask"])
def test_auralise_matches_auraliser(exported: Exported, mode: str) -> None:
    x = _signal(exported.info.segment.length + 300, seed=6)
    auraliser = Auraliser(exported.model)
    for layer in exported.metadata["deconvolvable_layers"][::2]:
        out = exported.call("auralise", waveform=x, layer=np.int32(layer), features=np.array([1, 2], np.int32),
                            mode=mode.encode())
        expected = auraliser(x, layer=layer, features=[1, 2], mode=mode)
        np.testing.assert_allclose(out["audio"], expected.audio.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out["silent"], expected.silent.numpy())
        np.testing.assert_allclose(out["peak"], expected.peak.numpy(), rtol=1e-4, atol=1e-9)
        assert out["audio"].shape == (1, 2, x.shape[-1])


# --------------------------------------------------------------------------- input validation


def _fails(e: Exported, signature: str, match: str, **inputs: Any) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        e.call(signature, **inputs)


def test_waveform_validation_messages(exported: Exported) -> None:
    length = exported.info.segment.length
    seconds = f"{length / RATE:.4g} s at {RATE} Hz"
    _fails(exported, "serving_default", r"waveform must be float32 \[batch, samples\]; got rank 1 with shape \[",
           waveform=np.zeros(length, np.float32))
    _fails(exported, "features", "got rank 3", waveform=np.zeros((1, length, 1), np.float32))
    _fails(exported, "serving_default", rf"waveform has 10 samples; need at least {length} \({seconds}",
           waveform=np.zeros((2, 10), np.float32))
    too_long = int(MAX_SECONDS * RATE) + 1
    _fails(exported, "features", rf"waveform has {too_long} samples; this export accepts at most {too_long - 1}",
           waveform=np.zeros((1, too_long), np.float32))
    bad = np.zeros((1, length), np.float32)
    bad[0, 3] = np.nan
    _fails(exported, "serving_default", "waveform contains NaN or Inf", waveform=bad)
    n_labels = len(exported.info.labels)
    assert exported.call("serving_default", waveform=np.zeros((0, length), np.float32))["scores"].shape == (0, n_labels)
    assert exported.call("serving_wav", wav=np.zeros(0, dtype=object))["labels"].shape[0] == 0
    _fails(exported, "deconvolve", r"waveform holds no clip \(batch size 0\)",
           waveform=np.zeros((0, length), np.float32), layer=np.int32(1), features=np.array([0], np.int32))
    deconv_long = int(MAX_DECONV_SECONDS * RATE) + 1
    _fails(exported, "deconvolve", f"at most {deconv_long - 1}", waveform=np.zeros((1, deconv_long), np.float32),
           layer=np.int32(1), features=np.array([0], np.int32))


def test_wav_validation_messages(exported: Exported) -> None:
    y = _signal(2 * exported.info.segment.length, seed=8)[0]
    _fails(exported, "serving_wav", f"sample rate 4000 Hz; this model expects {RATE} Hz",
           wav=np.array([wav_bytes(y, sample_rate=4000)], dtype=object))
    _fails(exported, "serving_wav", r"wav\[1\] has 5 samples; need at least",
           wav=np.array([wav_bytes(y, sample_rate=RATE), wav_bytes(y[:5], sample_rate=RATE)], dtype=object))
    _fails(exported, "serving_wav", "wav must be a 1-D string tensor", wav=np.array(wav_bytes(y, sample_rate=RATE),
                                                                                     dtype=object))
    _fails(exported, "serving_wav", "RIFF", wav=np.array([b"this is not a wav file"], dtype=object))


def test_layer_features_and_mode_validation(exported: Exported) -> None:
    x = _signal(exported.info.segment.length, seed=9)
    layers = exported.metadata["deconvolvable_layers"]
    _fails(exported, "deconvolve", rf"layer must be one of {layers}; got 9".replace("[", r"\[").replace("]", r"\]"),
           waveform=x, layer=np.int32(9), features=np.array([0], np.int32))
    width = exported.metadata["features_per_layer"][str(layers[-1])]
    _fails(exported, "deconvolve", rf"in \[0, {width}\) for layer {layers[-1]}; got \[0 {width}\]",
           waveform=x, layer=np.int32(layers[-1]), features=np.array([0, width], np.int32))
    _fails(exported, "deconvolve", "non-empty", waveform=x, layer=np.int32(layers[0]), features=np.zeros(0, np.int32))
    _fails(exported, "auralise", "mode must be phase or mask; got loud", waveform=x, layer=np.int32(layers[0]),
           features=np.array([0], np.int32), mode=b"loud")


# --------------------------------------------------------------------------- budgets and hostile inputs (issue 17)


def test_budgets_are_stated_and_enforced(exported: Exported) -> None:
    meta = exported.metadata
    assert meta["max_request_seconds"] == 6.0 and meta["max_request_samples"] == 6 * RATE
    assert meta["max_deconv_feature_seconds"] == 6.0 and meta["max_deconv_feature_samples"] == 6 * RATE
    assert meta["max_deconv_samples"] == 2 * RATE and meta["deconv_chunk_elements"] == 300
    four = _signal(4 * RATE, seed=20, batch=2)  # 2 clips x 4 s = 8 s > 6 s
    _fails(exported, "serving_default", "waveform holds 2 clips x 8000 samples = 16000 samples; serving_default, "
           r"serving_wav and features take at most 12000 samples per call in all \(6 s at 2000 Hz", waveform=four)
    _fails(exported, "features", "take at most 12000 samples per call", waveform=four)
    wavs = np.array([wav_bytes(row, sample_rate=RATE) for row in four], dtype=object)
    _fails(exported, "serving_wav", r"wav holds 2 files of up to 8000 samples = 16000 samples \(batch x longest\)",
           wav=wavs)
    layer = exported.metadata["deconvolvable_layers"][-1]
    two = _signal(2 * RATE, seed=21, batch=2)
    _fails(exported, "deconvolve", "waveform holds 2 clips x 4000 samples = 8000 samples; deconvolve and auralise "
           "take at most 4000 samples per call in all", waveform=two, layer=np.int32(layer),
           features=np.array([0], np.int32))
    clip = two[:1]
    _fails(exported, "auralise", r"4 features x 1 clips x 4000 samples = 16000 feature-samples; this export "
           r"deconvolves at most 12000 per call \(6 feature-seconds at 2000 Hz, e.g. 3 features of a 2-s clip\): "
           r"ask for fewer features per call", waveform=clip, layer=np.int32(layer),
           features=np.arange(4, dtype=np.int32), mode=b"phase")
    _fails(exported, "deconvolve", r"features must not repeat \(ask for each feature once\); got \[1 0 1\]",
           waveform=clip, layer=np.int32(layer), features=np.array([1, 0, 1], np.int32))
    # The largest allowed call runs, one feature per chunk, and equals the library's single pass.
    features = np.array([3, 0, 2], np.int32)
    out = exported.call("auralise", waveform=clip, layer=np.int32(layer), features=features, mode=b"mask")
    expected = Auraliser(exported.model, chunk_elements=0)(clip, layer=layer, features=features.tolist(), mode="mask")
    np.testing.assert_allclose(out["audio"], expected.audio.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["silent"], expected.silent.numpy())
    model_input = np.abs(spectral.stft(clip, n_fft=64, hop_length=32).numpy()) if exported.family == "choi" else clip
    deconvolved = exported.call("deconvolve", waveform=clip, layer=np.int32(layer), features=features)["deconvolved"]
    reference = deconvolve(exported.model, model_input, layer=layer, features=features.tolist()).numpy()
    np.testing.assert_allclose(deconvolved, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_wrong_rank_and_undecodable_inputs_name_the_input(exported: Exported) -> None:
    x = _signal(exported.info.segment.length, seed=22)
    layers = exported.metadata["deconvolvable_layers"]
    listed = str(layers).replace("[", r"\[").replace("]", r"\]")
    _fails(exported, "deconvolve", rf"layer must be an int32 scalar \(shape \[\]\), one of {listed}; got shape \[1\]",
           waveform=x, layer=np.array([layers[0]], np.int32), features=np.array([0], np.int32))
    _fails(exported, "auralise", r"features must be a 1-D int32 list of feature-map indices \(shape \[k\]\); "
           r"got shape \[1 2\]", waveform=x, layer=np.int32(layers[0]), features=np.array([[0, 1]], np.int32),
           mode=b"phase")
    _fails(exported, "auralise", r"mode must be a string scalar \(shape \[\]\): phase or mask; got shape \[1\]",
           waveform=x, layer=np.int32(layers[0]), features=np.array([0], np.int32), mode=np.array([b"phase"],
                                                                                             dtype=object))
    # Invalid UTF-8 (an InvalidArgumentError, not a UnicodeDecodeError): shown as U+FFFD in the message.
    _fails(exported, "auralise", "mode must be phase or mask; got \ufffd\ufffdphase", waveform=x,
           layer=np.int32(layers[0]), features=np.array([0], np.int32), mode=b"\xff\xfephase")


@pytest.mark.parametrize("mode", ["phase", "mask"])
def test_auralisation_of_digital_silence_is_silence(exported: Exported, mode: str) -> None:
    zeros = np.zeros((1, exported.info.segment.length), np.float32)
    responding = []  # (layer, features) whose deconvolution of silence is not zero: the trained biases respond
    for layer in exported.metadata["deconvolvable_layers"]:
        features = np.arange(exported.metadata["features_per_layer"][str(layer)], dtype=np.int32)
        maps = exported.call("deconvolve", waveform=zeros, layer=np.int32(layer), features=features)["deconvolved"]
        active = np.abs(maps[0]).reshape(len(features), -1).max(axis=1) > 0
        if active.any():
            responding.append((layer, features[active]))
    assert responding
    dither = (np.random.default_rng(23).uniform(-1, 1, zeros.shape) * 5e-7).astype(np.float32)  # under -120 dBFS
    for layer, features in responding:
        for silence in (zeros, dither):
            out = exported.call("auralise", waveform=silence, layer=np.int32(layer), features=features,
                                mode=mode.encode())
            assert out["silent"].all() and not out["audio"].any() and not out["peak"].any(), (layer, features)


def _litter(base: pathlib.Path, temp: pathlib.Path) -> tuple[list[str], list[str]]:
    staging = sorted(p.name for p in base.glob(".tmp-*")) if base.exists() else []
    return staging, sorted(p.name for p in temp.glob("tfaural-*"))


def _start_export(choi: Exported, base: pathlib.Path, temp: pathlib.Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "export", "--run", choi.run_dir, "--output", str(base), "--signatures", "tagging",
         "--quiet"], cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, as a terminal gives it: a test run in the background (a shell's
    ``&``) ignores SIGINT, which its children inherit, and Python then raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_verification(process: subprocess.Popen[str], temp: pathlib.Path, *, besides: Any = ()) -> None:
    """Waits (generously) until the export is verifying: its version and scratch folders exist."""
    deadline = time.monotonic() + 900
    while not {p.name for p in temp.glob("tfaural-verify-*")} - set(besides):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export never reached its verification"
        time.sleep(0.05)


def test_killed_exports_leave_no_litter_behind(choi: Exported, tmp_path: pathlib.Path) -> None:
    base, temp = tmp_path / "exports", tmp_path / "tmp"
    temp.mkdir()
    killed = _start_export(choi, base, temp)
    _wait_for_verification(killed, temp)
    os.killpg(killed.pid, signal.SIGKILL)  # the export and its verification processes: no chance to clean up
    killed.communicate()
    staging, scratch = _litter(base, temp)
    assert len(staging) == 1 and any(name.startswith("tfaural-verify-") for name in scratch)
    # The next export removes the dead one's folders first; stopped with SIGTERM it removes its own.
    stopped = _start_export(choi, base, temp)
    _wait_for_verification(stopped, temp, besides=scratch)
    now_staging, now_scratch = _litter(base, temp)
    assert not set(staging + scratch) & set(now_staging + now_scratch)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate()
    assert stopped.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert _litter(base, temp) == ([], []) and exporter.existing_versions(base) == []
    interrupted = _start_export(choi, base, temp)  # Ctrl-C: the same, with one line instead of a traceback
    _wait_for_verification(interrupted, temp)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate()
    assert interrupted.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted: nothing was exported (a finished version is never left " \
                                           "half-written)"
    assert _litter(base, temp) == ([], []) and exporter.existing_versions(base) == []


# --------------------------------------------------------------------------- clients


def _spec_check(e: Exported, signature: str, request: Any) -> None:
    _, specs = e.loaded.signatures[signature].structured_input_signature
    assert request.model_spec.signature_name == signature
    assert set(request.inputs) == set(specs)
    for name, proto in request.inputs.items():
        spec = specs[name]
        assert tf.dtypes.as_dtype(proto.dtype) == spec.dtype, name
        shape = tf.TensorShape([d.size for d in proto.tensor_shape.dim])
        assert spec.shape.is_compatible_with(shape), (name, spec.shape, shape)


def _client_inputs(e: Exported) -> dict[str, dict[str, Any]]:
    x = _signal(e.info.segment.length + 11, seed=10, batch=2)
    layer = e.metadata["deconvolvable_layers"][1]
    return {
        "serving_default": {"waveform": x},
        "features": {"waveform": x},
        "serving_wav": {"wav": [wav_bytes(row, sample_rate=RATE) for row in x]},
        "deconvolve": {"waveform": x[:1], "layer": layer, "features": [1, 0]},
        "auralise": {"waveform": x[:1], "layer": layer, "features": [0], "mode": "mask"},
    }


def _direct(e: Exported, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = client.prepare_inputs(signature, inputs)
    return e.call(signature, **arrays)


def test_grpc_requests_match_signature_specs_and_run(exported: Exported) -> None:
    for signature, inputs in _client_inputs(exported).items():
        request = client.grpc_predict_request(signature, inputs, model_name="tagger", version=1)
        assert request.model_spec.name == "tagger" and request.model_spec.version.value == 1
        _spec_check(exported, signature, request)
        served = exported.loaded.signatures[signature](
            **{name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
        )
        direct = _direct(exported, signature, inputs)
        for name, value in served.items():
            np.testing.assert_array_equal(value.numpy(), direct[name])


def _decode_rest_request(payload: dict[str, Any], specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """What TF Serving does with a JSON body: b64 objects to bytes, rows stacked, dtypes from the signature."""

    def unwrap(value: Any) -> Any:
        if isinstance(value, dict):
            import base64

            return base64.b64decode(value["b64"])
        return [unwrap(v) for v in value] if isinstance(value, list) else value

    if "instances" in payload:
        columns = {name: [unwrap(row[name]) for row in payload["instances"]] for name in specs}
    else:
        columns = {name: unwrap(value) for name, value in payload["inputs"].items()}
    return {name: tf.constant(columns[name], dtype=specs[name].dtype) for name in specs}


def test_rest_payloads_carry_the_signature_inputs(exported: Exported) -> None:
    for signature, inputs in _client_inputs(exported).items():
        _, specs = exported.loaded.signatures[signature].structured_input_signature
        formats = ["columnar"] if signature in ("deconvolve", "auralise") else ["row", "columnar"]
        for fmt in formats:
            payload = json.loads(json.dumps(client.rest_predict_payload(signature, inputs, format=fmt)))
            assert payload["signature_name"] == signature
            tensors = _decode_rest_request(payload, specs)
            for name, tensor in tensors.items():
                assert specs[name].shape.is_compatible_with(tensor.shape)
            served = {k: v.numpy() for k, v in exported.loaded.signatures[signature](**tensors).items()}
            for name, value in _direct(exported, signature, inputs).items():
                np.testing.assert_array_equal(served[name], value)
    with pytest.raises(ParameterError, match="use format='columnar'"):
        client.rest_predict_payload("deconvolve", _client_inputs(exported)["deconvolve"], format="row")


class _FakeServing:
    """A stand-in for tensorflow_model_server: the loaded SavedModel behind gRPC and REST."""

    def __init__(self, e: Exported) -> None:
        self.e = e

    def run(self, signature: str, tensors: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.e.loaded.signatures[signature](**tensors).items()}

    def predict(self, request: Any, context: Any) -> Any:
        from tensorflow_serving.apis import predict_pb2

        signature = request.model_spec.signature_name or "serving_default"
        outputs = self.run(signature, {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


@pytest.fixture
def fake_servers(exported: Exported) -> Iterator[tuple[str, str]]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    fake = _FakeServing(exported)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: Any, context: Any) -> Any:
            return fake.predict(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = payload.get("signature_name", "serving_default")
            _, specs = exported.loaded.signatures[signature].structured_input_signature
            try:
                outputs = fake.run(signature, _decode_rest_request(payload, specs))
            except tf.errors.InvalidArgumentError as err:
                body, status = {"error": err.message}, 400
            else:
                jsonable = {
                    k: (np.char.decode(v.astype(bytes)).tolist() if v.dtype == object else v.tolist())
                    for k, v in outputs.items()
                }
                if "instances" in payload:
                    n = len(payload["instances"])
                    body = {"predictions": [{k: v[i] for k, v in jsonable.items()} for i in range(n)]}
                else:
                    body = {"outputs": jsonable}
                status = 200
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        server.stop(None)


def test_grpc_and_rest_clients_round_trip(exported: Exported, fake_servers: tuple[str, str]) -> None:
    grpc_target, rest_host = fake_servers
    inputs = _client_inputs(exported)
    with client.GrpcClient(grpc_target, model="m") as grpc_client:
        for signature in ("serving_default", "deconvolve"):
            out = grpc_client.predict(signature, inputs[signature])
            for name, value in _direct(exported, signature, inputs[signature]).items():
                np.testing.assert_array_equal(out[name], value)
    rest = client.RestClient(rest_host, model="m")
    out = rest.predict("serving_default", inputs["serving_default"])
    direct = _direct(exported, "serving_default", inputs["serving_default"])
    np.testing.assert_allclose(out["scores"], direct["scores"], rtol=1e-6)
    np.testing.assert_array_equal(out["labels"], direct["labels"])
    out = rest.predict("auralise", inputs["auralise"])  # columnar chosen automatically
    np.testing.assert_allclose(out["audio"], _direct(exported, "auralise", inputs["auralise"])["audio"], rtol=1e-6)
    with pytest.raises(client.ServingError, match="need at least"):
        rest.predict("serving_default", {"waveform": np.zeros((1, 3), np.float32)})


# --------------------------------------------------------------------------- versioning, failures, CLIs


def test_second_export_is_version_2_and_versions_are_never_overwritten(
    choi: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export_main(["--run", choi.run_dir, "--output", choi.base, "--no-verify", "--quiet",
                        "--signatures=tagging"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(os.path.abspath(choi.base), "2")
    assert exporter.existing_versions(choi.base) == [1, 2] and exporter.next_version(choi.base) == 3
    before = pathlib.Path(choi.version_dir, "saved_model.pb").read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        exporter.export_run(choi.run_dir, choi.base, version=1, verify=False)
    assert export_main(["--run", choi.run_dir, "--output", choi.base, "--version", "2", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and len(err.strip().splitlines()) == 1
    assert pathlib.Path(choi.version_dir, "saved_model.pb").read_bytes() == before
    assert export_main(["--run", str(pathlib.Path(choi.base) / "missing"), "--output", choi.base]) == 2
    assert "is not a tfaural run directory" in capsys.readouterr().err
    assert not [n for n in os.listdir(choi.base) if not n.isdigit()]


def test_tagging_only_export(choi: Exported, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--signatures tagging``: the scoring and feature signatures alone, verified, the same graphs and weights."""
    base = tmp_path / "tagger"
    assert export_main(["--run", choi.run_dir, "--output", str(base), "--signatures", "tagging", "--quiet"]) == 0
    version_dir = capsys.readouterr().out.strip()
    tagging = {"serving_default", "serving_wav", "features"}
    meta = read_export_metadata(version_dir)
    assert set(meta.signatures) == tagging and set(meta.signature_savedmodels) == {"serving_default", "features"}
    report = json.loads(pathlib.Path(version_dir, "assets.extra", "tfaural_verification.json").read_text())
    assert report["ok"] and set(report["signatures"]) == tagging and set(report["session_signatures"]) == tagging
    assert {log.predict_log.request.model_spec.signature_name
            for log in read_warmup_file(version_dir)} == tagging
    loaded = tf.saved_model.load(version_dir)
    assert set(loaded.signatures.keys()) == tagging
    clip = tf.constant(_signal(3 * 1024, seed=3, batch=2))
    np.testing.assert_allclose(loaded.signatures["serving_default"](waveform=clip)["scores"].numpy(),
                               choi.loaded.signatures["serving_default"](waveform=clip)["scores"].numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.signatures["features"](waveform=clip)["features"].numpy(),
                               choi.loaded.signatures["features"](waveform=clip)["features"].numpy(), rtol=0, atol=1e-6)
    # No deconvolution graphs: a fraction of the whole export's graph.
    lean = pathlib.Path(version_dir, "saved_model.pb").stat().st_size
    assert lean < pathlib.Path(choi.version_dir, "saved_model.pb").stat().st_size / 4
    # A job that needs another signature says so before it starts.
    from beam_jobs import auralise

    assert auralise.main([f"--input={tmp_path}/*.wav", f"--model={version_dir}", f"--output={tmp_path / 'heard'}"]) == 2
    err = capsys.readouterr().err
    assert "has no signature 'auralise'" in err and "serving_default" in err and "without --signatures" in err, err
    # Unknown or impossible sets fail before anything is written.
    assert export_main(["--run", choi.run_dir, "--output", str(base), "--signatures", "deconvolve"]) == 2
    assert "leaves out serving_default" in capsys.readouterr().err
    assert exporter.existing_versions(base) == [1]


def test_failed_export_leaves_no_directory(choi: Exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor any of the verification's processes, which started before the export was written."""
    base = pathlib.Path(choi.base).parent / "failing"
    before = _children()

    def crash(staging: str, **kwargs: Any) -> None:
        assert (pathlib.Path(staging) / "saved_model.pb").is_file()  # fully written, then the check fails
        assert isinstance(kwargs["processes"], verify.Processes) and _children() - before
        raise RuntimeError("disk full")

    monkeypatch.setattr(exporter, "verify_export", crash)
    with pytest.raises(ExportError, match="RuntimeError: disk full"):
        exporter.export_run(choi.run_dir, str(base), signatures="tagging")
    assert list(base.iterdir()) == [] and _children() <= before
    with pytest.raises(ExportError, match=r"max_seconds=0\.1 is shorter than one model segment"):
        exporter.export_run(choi.run_dir, str(base), max_seconds=0.1)
    assert list(base.iterdir()) == []


def test_verify_cli(sample: Exported, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The command itself, on a tagging-only export left unverified (the module's whole exports were verified
    # when they were made; verifying one again would only re-run the same checks for a minute).
    version_dir = exporter.export_run(sample.run_dir, str(tmp_path / "exports"), max_seconds=MAX_SECONDS,
                                      signatures="tagging", verify=False)
    assert not pathlib.Path(version_dir, "assets.extra", "tfaural_verification.json").exists()
    assert verify.main([version_dir, "--no-cli"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["tfaural_importable"] is False
    assert set(report["signatures"]) == set(report["session_signatures"]) == {"serving_default", "serving_wav",
                                                                                "features"}
    # --run recomputes the reference with a run's Keras model: an untrained model must not match.
    model, info = _tiny("samplecnn")
    save_run(tmp_path / "untrained", model, info)
    assert verify.main([version_dir, "--run", str(tmp_path / "untrained"), "--no-cli"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: verification of") and "serving_default/scores: max abs error" in err
    assert verify.main([str(tmp_path / "nothing")]) == 2
    assert "is not a tfaural SavedModel export: assets/metadata.json is missing" in capsys.readouterr().err
