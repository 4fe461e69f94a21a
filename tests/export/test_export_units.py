"""Unit tests of export's parts: clients' request bodies, verification helpers, warm-up inputs, module checks."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

# Submodule imports only (see test_export_e2e.py: tests/export/ shadows the package name).
from export import client, exporter, metadata, verify, warmup
from export.module import ServingModule
from tfaural import spectral
from tfaural.config import AudioConfig, SegmentConfig, STFTConfig
from tfaural.errors import ExportError, ModelError, ParameterError
from tfaural.formats import read_export_metadata
from tfaural.models import choi_cnn, config_from_model, mel_frame_cnn, raw_frame_cnn
from tfaural.models.aggregation import multi_scale_features
from tfaural.models.samplecnn import samplecnn_model
from tfaural.training.run import INFO_FILE, RunInfo, read_run_info

RATE = 2000

# --------------------------------------------------------------------------- clients


def test_rest_url() -> None:
    assert client.rest_url("localhost:8501", "choi") == "http://localhost:8501/v1/models/choi:predict"
    assert (
        client.rest_url("https://serving.example/", "tags", version=3)
        == "https://serving.example/v1/models/tags/versions/3:predict"
    )


def test_row_payload_has_one_instance_per_batch_item() -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3) / 10
    payload = client.rest_predict_payload("serving_default", {"waveform": x})
    rows = x.astype(np.float32).tolist()  # float32, as the signature takes it
    assert payload == {"signature_name": "serving_default", "instances": [{"waveform": rows[0]}, {"waveform": rows[1]}]}
    assert json.loads(json.dumps(payload)) == payload


def test_wav_bytes_are_base64_objects_in_both_formats() -> None:
    files = [b"RIFF\x00\x00first", b"RIFF\x00second\x00"]
    rows = client.rest_predict_payload("serving_wav", {"wav": files}, format="row")
    assert [base64.b64decode(r["wav"]["b64"]) for r in rows["instances"]] == files
    columns = client.rest_predict_payload("serving_wav", {"wav": files}, format="columnar")
    assert [base64.b64decode(v["b64"]) for v in columns["inputs"]["wav"]] == files


def test_deconvolve_and_auralise_need_the_columnar_format() -> None:
    inputs = {"waveform": np.zeros((1, 8)), "layer": 2, "features": [0, 3]}
    assert {"deconvolve", "auralise", "attribute"} == client.COLUMNAR_ONLY
    for signature, extra in (("deconvolve", {}), ("auralise", {"mode": "phase"})):
        with pytest.raises(ParameterError, match=rf"{signature}.*unbatched inputs.*use format='columnar'"):
            client.rest_predict_payload(signature, {**inputs, **extra}, format="row")
        body = client.rest_predict_payload(signature, {**inputs, **extra}, format="columnar")
        assert body["inputs"]["layer"] == 2 and body["inputs"]["features"] == [0, 3]
    assert client.rest_predict_payload("auralise", {**inputs, "mode": "mask"}, format="columnar")["inputs"][
        "mode"
    ] == {"b64": base64.b64encode(b"mask").decode()}


def test_inputs_are_checked_before_sending() -> None:
    with pytest.raises(ParameterError, match="signature='tagging' is unknown"):
        client.rest_predict_payload("tagging", {"waveform": np.zeros((1, 4))})
    with pytest.raises(ParameterError, match=r"missing \['features'\], unexpected \['feature'\]"):
        client.grpc_predict_request("deconvolve", {"waveform": np.zeros((1, 4)), "layer": 1, "feature": [0]},
                                    model_name="m")
    with pytest.raises(ParameterError, match=r"must have shape \[batch, samples\] \(rank 2\); got shape \[4\]"):
        client.rest_predict_payload("features", {"waveform": np.zeros(4)})
    with pytest.raises(ParameterError, match="format='rows' is invalid"):
        client.rest_predict_payload("features", {"waveform": np.zeros((1, 4))}, format="rows")


def test_grpc_request_dtypes_and_shapes() -> None:
    request = client.grpc_predict_request(
        "auralise", {"waveform": np.ones((2, 5)), "layer": 3, "features": [4, 1], "mode": "phase"},
        model_name="choi", version=7,
    )
    assert (request.model_spec.name, request.model_spec.signature_name, request.model_spec.version.value) == (
        "choi", "auralise", 7
    )
    arrays = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert arrays["waveform"].dtype == np.float32 and arrays["waveform"].shape == (2, 5)
    assert arrays["layer"].dtype == np.int32 and arrays["layer"].shape == () and arrays["layer"] == 3
    assert arrays["features"].dtype == np.int32 and arrays["features"].tolist() == [4, 1]
    assert arrays["mode"].shape == () and arrays["mode"] == b"phase"
    assert request.inputs["mode"].dtype == tf.string.as_datatype_enum


def test_decode_rest_responses() -> None:
    rows = {"predictions": [{"scores": [0.5, 0.25], "labels": ["rock", "jazz"]},
                            {"scores": [0.1, 0.9], "labels": ["jazz", "rock"]}]}
    out = client.decode_rest_response(json.dumps(rows))
    np.testing.assert_array_equal(out["scores"], [[0.5, 0.25], [0.1, 0.9]])
    assert out["labels"].tolist() == [[b"rock", b"jazz"], [b"jazz", b"rock"]]
    columns = client.decode_rest_response({"outputs": {"silent": [[True, False]], "peak": [[0.5, 0.0]]}})
    assert columns["silent"].dtype == bool and columns["silent"].tolist() == [[True, False]]
    assert client.decode_rest_response({"outputs": [[1.0, 2.0]]})["output"].shape == (1, 2)
    with pytest.raises(client.ServingError, match="need at least 44100"):
        client.decode_rest_response('{"error": "assertion failed: [waveform has 3 samples; need at least 44100]"}')


# --------------------------------------------------------------------------- verification helpers


def test_compare_tolerances() -> None:
    ref = np.array([1000.0, 1.0, 0.0], np.float32)
    assert verify.compare(ref * (1 + 5e-6), ref)["ok"]
    assert not verify.compare(ref * (1 + 5e-5), ref)["ok"]
    near_zero = ref.copy()
    near_zero[2] = 1000.0 * 5e-6  # judged on the output's scale (1000), not its own (0)
    assert verify.compare(near_zero, ref)["ok"]
    near_zero[2] = 1000.0 * 5e-5
    result = verify.compare(near_zero, ref)
    assert not result["ok"] and result["max_abs_error"] == pytest.approx(0.05) and result["scale"] == 1000.0
    assert not verify.compare(np.array([np.nan, 1.0, 0.0]), ref)["ok"]
    assert verify.compare(ref[:2], ref)["problem"].startswith("shape [2] != reference [3]")
    assert verify.compare(np.array([b"a", b"b"], object), np.array([b"a", b"b"], object))["ok"]
    assert not verify.compare(np.array([True, False]), np.array([True, True]))["ok"]


def test_reference_round_trip_keeps_bytes_exactly(tmp_path: pathlib.Path) -> None:
    wav = np.array([b"RIFF\x00\x00", b"\x00tail\x00\x00"], dtype=object)
    data = {
        "serving_wav": {"inputs": {"wav": wav}, "outputs": {"labels": np.array([[b"a", b"bc"]], dtype=object)}},
        "auralise": {"inputs": {"mode": np.array(b"phase", dtype=object), "layer": np.array(3, np.int32)},
                     "outputs": {"audio": np.ones((1, 2, 3), np.float32)}},
    }
    path = str(tmp_path / "ref.npz")
    verify.save_reference(path, data)
    back = verify.load_reference(path)
    assert back["serving_wav"]["inputs"]["wav"].tolist() == wav.tolist()
    assert back["serving_wav"]["outputs"]["labels"].shape == (1, 2)
    assert back["auralise"]["inputs"]["mode"].shape == () and back["auralise"]["inputs"]["mode"].item() == b"phase"
    assert back["auralise"]["inputs"]["layer"].dtype == np.int32
    np.testing.assert_array_equal(back["auralise"]["outputs"]["audio"], np.ones((1, 2, 3)))
    with np.load(path, allow_pickle=False) as npz:  # no pickled objects inside
        assert all(npz[key].dtype != object for key in npz.files)


def test_parse_saved_model_cli_listing() -> None:
    text = """MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:

signature_def['deconvolve']:
  The given SavedModel SignatureDef contains the following input(s):
    inputs['features'] tensor_info:
        dtype: DT_INT32
        shape: (-1)
        name: deconvolve_features:0
    inputs['waveform'] tensor_info:
        dtype: DT_FLOAT
        shape: unknown_rank
        name: deconvolve_waveform:0
  The given SavedModel SignatureDef contains the following output(s):
    outputs['deconvolved'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, -1, 33, -1)
        name: StatefulPartitionedCall_1:0
  Method name is: tensorflow/serving/predict

Concrete Functions:
  Function Name: 'deconvolve'
"""
    assert verify.parse_saved_model_cli(text) == {
        "deconvolve": {"inputs": {"features": "int32", "waveform": "float32"}, "outputs": {"deconvolved": "float32"}}
    }


def test_versions(tmp_path: pathlib.Path) -> None:
    assert exporter.next_version(tmp_path / "absent") == 1
    for name in ("1", "3", ".tmp-abc", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert exporter.existing_versions(tmp_path) == [1, 3] and exporter.next_version(tmp_path) == 4


def test_read_metadata_of_a_non_export(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError, match=r"is not a tfaural SavedModel export: assets/metadata\.json is missing"):
        read_export_metadata(tmp_path)


def test_op_check_rejects_python_functions(tmp_path: pathlib.Path) -> None:
    class WithPyFunc(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return tf.numpy_function(lambda a: a * 2, [x], tf.float32)

    module = WithPyFunc()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.__call__.get_concrete_function()})
    with pytest.raises(ExportError, match=r"forbidden op (EagerPyFunc|PyFunc)"):
        verify.check_ops(str(tmp_path))


def test_public_api_is_lazy_and_client_needs_no_tensorflow() -> None:
    code = (  # a user's view: the real package, from the repository root
        "import sys, export, export.client\n"
        "print(export.WorkBudget.__module__, export.client.rest_url('h:1', 'm'))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)\n"
    )
    root = pathlib.Path(exporter.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["export.budget", "http://h:1/v1/models/m:predict"]
    # Every public name resolves (TensorFlow is loaded in this process anyway).
    spec = importlib.util.spec_from_file_location("export_public_api", root / "export" / "__init__.py")
    assert spec is not None and spec.loader is not None
    api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api)
    assert api.export_run is exporter.export_run and api.export_model is exporter.export_model
    assert api.verify_export is verify.verify_export and api.ServingModule is ServingModule
    assert all(callable(getattr(api, name)) for name in api.__all__)


# --------------------------------------------------------------------------- warm-up inputs


def test_wav_bytes_decode_with_core_tensorflow() -> None:
    y = warmup.warmup_signal(3000, sample_rate=RATE)
    assert y.dtype == np.float32 and 0.5 < np.abs(y).max() <= 0.6
    np.testing.assert_array_equal(y, warmup.warmup_signal(3000, sample_rate=RATE))
    audio, rate = tf.audio.decode_wav(warmup.wav_bytes(y, sample_rate=RATE))
    assert int(rate) == RATE and audio.shape == (3000, 1)
    np.testing.assert_allclose(audio.numpy()[:, 0], y, atol=1 / 32768)
    stereo, _ = tf.audio.decode_wav(warmup.wav_bytes(np.stack([y, -y], axis=1), sample_rate=RATE))
    assert stereo.shape == (3000, 2)
    np.testing.assert_array_equal(stereo.numpy()[:, 1], -stereo.numpy()[:, 0])


def test_warmup_inputs_cover_every_signature() -> None:
    meta = {
        "sample_rate": RATE, "segment_length": 54, "deconvolvable_layers": [0, 1, 2],
        "features_per_layer": {"0": 8, "1": 8, "2": 1},
        "signatures": {name: {} for name in metadata.signature_names("mel-frame")},
    }
    inputs = warmup.warmup_inputs(meta)
    assert set(inputs) == {"serving_default", "serving_wav", "features", "deconvolve", "attribute"}
    assert inputs["attribute"]["top_tags"] == 1  # no labels in this metadata: one
    assert inputs["serving_default"]["waveform"].shape == (1, 54)
    assert inputs["deconvolve"]["layer"] == 2 and inputs["deconvolve"]["features"].tolist() == [0]
    logs = warmup.warmup_requests(inputs)
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(inputs)


def test_signature_sets_resolve_in_canonical_order() -> None:
    every = metadata.signature_names("choi")
    assert metadata.resolve_signatures("choi") == metadata.resolve_signatures("choi", "all") == every
    assert metadata.resolve_signatures("samplecnn", "tagging") == ("serving_default", "serving_wav", "features")
    assert metadata.resolve_signatures("choi", " deconvolve, serving_default ") == ("serving_default", "deconvolve")
    assert metadata.resolve_signatures("musicnn", ["features", "serving_default"]) == ("serving_default", "features")
    assert metadata.resolve_signatures("mel-frame", "tagging") == ("serving_default", "serving_wav", "features")
    with pytest.raises(ExportError, match=r"signatures \['auralise'\] do not exist for a mel-frame model"):
        metadata.resolve_signatures("mel-frame", "serving_default,auralise")
    with pytest.raises(ExportError, match=r"\['tagger'\] do not exist .* expected all, tagging or"):
        metadata.resolve_signatures("choi", "tagger")
    with pytest.raises(ExportError, match="leaves out serving_default"):
        metadata.resolve_signatures("choi", "features")
    with pytest.raises(ExportError, match="names no signature"):
        metadata.resolve_signatures("choi", " , ")


# --------------------------------------------------------------------------- the serving module in-process


def _choi() -> tuple[object, RunInfo]:
    model = choi_cnn(n_outputs=2, n_freq=33, n_frames=33, n_fft=64, hop_length=32, n_filters=4, fc_units=(4,),
                     sample_rate=RATE)
    info = RunInfo(model=config_from_model(model), labels=("x", "y"), task="single-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=1024))
    return model, info


def test_deconvolve_and_auralise_share_one_network() -> None:
    from tfaural.auralise import Auraliser
    from tfaural.deconv import DeconvNet

    model, info = _choi()
    module = ServingModule(model, info, signatures="serving_default,deconvolve,auralise")
    graphs = [module.function(name).get_concrete_function().graph for name in ("deconvolve", "auralise")]
    assert module._auraliser.items["auraliser"].net is module._net  # one network for both signatures
    # each layer's walk traced once, called by both signatures (which pass it only what it reads:
    # tests/deconv/test_deconvnet.py::test_a_walk_is_traced_once_and_passed_only_the_tensors_it_reads)
    walks = module._net._walk_functions
    assert sorted(name for name, _ in walks) == sorted(module._net.layer_names.values())
    for graph in graphs:
        library = {f.signature.name for f in graph.as_graph_def().library.function}
        assert {function.name.decode() for function, _ in walks.values()} <= library
    # auralise reconstructs every layer's audio (inverse STFT) with one function, traced once: its per-layer
    # branches call it, so the library holds exactly one function that calls tfaural.spectral's IRFFT
    auralise = graphs[1].as_graph_def().library.function
    assert [f.signature.name for f in auralise if any(n.op == "IRFFT" for n in f.node_def)] == [
        f.signature.name for f in auralise if f.signature.name.startswith("__inference_finish_spectral")]
    assert len([f for f in auralise if f.signature.name.startswith("__inference_finish_spectral")]) == 1
    assert not [f for f in graphs[0].as_graph_def().library.function if any(n.op == "IRFFT" for n in f.node_def)]
    other, _ = _choi()
    with pytest.raises(ParameterError, match="net deconvolves model"):
        Auraliser(model, net=DeconvNet(other))


def test_module_rejects_inconsistent_runs() -> None:
    model, info = _choi()
    with pytest.raises(ExportError, match="gives 34 STFT frames but the model takes 33"):
        ServingModule(model, dataclasses.replace(info, segment=SegmentConfig(length=1056)))
    with pytest.raises(ExportError, match=r"built for 2000 Hz but run\.json says 4000 Hz"):
        ServingModule(model, dataclasses.replace(info, audio=AudioConfig(sample_rate=4000)))
    with pytest.raises(ExportError, match="differs from the model's"):
        ServingModule(model, dataclasses.replace(info, model=info.model.replace(hop_length=16)))
    with pytest.raises(ExportError, match=r"max_deconv_seconds=0\.2 is shorter than one model segment"):
        ServingModule(model, info, max_deconv_seconds=0.2)
    sample = samplecnn_model(filter_sizes=(3, 3, 2, 3), n_outputs=2, channels=(4, 4, 4), front_filters=4, top_filters=4,
                       sample_rate=RATE)
    aggregation = multi_scale_features([sample])
    with pytest.raises(ExportError, match="cannot export a --transfer features run"):
        metadata.family_of(config_from_model(aggregation))


def test_the_exports_stft_is_the_model_configs(tmp_path: pathlib.Path) -> None:
    """The STFT settings of a run and of its export come from the model config only, also from an older run.json."""
    model = choi_cnn(n_outputs=2, n_freq=33, n_frames=65, n_fft=64, hop_length=16, n_filters=4, fc_units=(4,),
                     sample_rate=RATE)
    info = RunInfo(model=config_from_model(model), labels=("x", "y"), task="single-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=1024))
    assert info.stft == STFTConfig(n_fft=64, hop_length=16)
    expected = {"n_fft": 64, "hop_length": 16, "win_length": None, "window": "hann", "center": True}
    module, meta = exporter.build_module(model, info)
    assert meta["stft"] == expected and module.settings.stft == expected
    old = {**info.to_dict(), "stft": {"n_fft": 64, "hop_length": 16, "win_length": None, "window": "hann"}}
    (tmp_path / INFO_FILE).write_text(json.dumps(old), encoding="utf-8")
    _, old_meta = exporter.build_module(model, read_run_info(tmp_path))
    assert old_meta["stft"] == expected and old_meta["model_config"] == meta["model_config"]


def test_chunked_segments_match_one_batch() -> None:
    model, info = _choi()
    x = np.random.default_rng(3).standard_normal((2, 5 * 1024 + 100)).astype(np.float32) * 0.2
    whole_module = ServingModule(model, info)
    whole = whole_module.call("serving_default", {"waveform": x})
    chunked_module = ServingModule(model, info, max_batch_segments=3)  # 10 segments -> 4 chunks of 3 (2 padding)
    chunked = chunked_module.call("serving_default", {"waveform": x})
    np.testing.assert_allclose(chunked["scores"], whole["scores"], rtol=1e-5, atol=1e-7)
    features = chunked_module.call("features", {"waveform": x})["features"]
    np.testing.assert_allclose(features, whole_module.call("features", {"waveform": x})["features"], rtol=1e-5,
                               atol=1e-7)
    magnitude = np.abs(spectral.stft(x[:, : 5 * 1024].reshape(10, 1024), n_fft=64, hop_length=32).numpy())
    expected = model(magnitude[..., np.newaxis], training=False).numpy().reshape(2, 5, 2).mean(1)
    np.testing.assert_allclose(chunked["scores"], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["mel-frame", "raw-frame"])
def test_frame_level_baselines(family: str) -> None:
    kwargs = dict(window=32, hop=16, n_samples=16 * 27, n_outputs=3, sample_rate=RATE, channels=(4, 4, 4),
                  top_filters=4)
    model = mel_frame_cnn(n_fft=32, n_mels=8, **kwargs) if family == "mel-frame" else raw_frame_cnn(
        front_filters=4, **kwargs)
    info = RunInfo(model=config_from_model(model), labels=("a", "b", "c"), task="multi-label",
                   audio=AudioConfig(sample_rate=RATE), segment=SegmentConfig(length=16 * 27))
    module = ServingModule(model, info)
    expected_names = {"serving_default", "serving_wav", "features", "deconvolve", "attribute"}
    assert set(module.signature_names) == (expected_names if family == "mel-frame" else expected_names | {"auralise"})
    x = np.random.default_rng(4).standard_normal((1, 3 * 432)).astype(np.float32) * 0.3
    scores = module.call("serving_default", {"waveform": x})["scores"]
    expected = model(x.reshape(3, 432, 1), training=False).numpy().mean(0, keepdims=True)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    deconvolved = module.call("deconvolve", {"waveform": x, "layer": np.int32(1), "features": np.array([0, 1],
                                                                                                         np.int32)})
    shape = deconvolved["deconvolved"].shape
    assert shape == ((1, 2, 8, 3 * 27) if family == "mel-frame" else (1, 2, 3 * 432))


# --------------------------------------------------------------------------- leftovers of killed exports (issue 17)


def test_stale_folders_are_those_of_exports_that_are_gone(tmp_path: pathlib.Path) -> None:
    import os
    import time

    from export import cleanup

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    host = cleanup.owner_tag().rsplit("-", 1)[0]
    names = {
        "mine": cleanup.staging_name(),  # this process: alive
        "dead": f".tmp-{host}-{dead.pid}-0123abcd",
        "legacy_old": ".tmp-0123456789abcdef0123456789abcdef",  # the unowned form of earlier versions
        "foreign_recent": ".tmp-otherhost-1-0123abcd",
        "foreign_old": ".tmp-otherhost-2-0123abcd",
    }
    for name in names.values():
        (tmp_path / name / "variables").mkdir(parents=True)
    day_ago = time.time() - 2 * 24 * 3600
    for key in ("legacy_old", "foreign_old"):
        os.utime(tmp_path / names[key], (day_ago, day_ago))
    (tmp_path / "1").mkdir()  # a published version is never touched
    removed = cleanup.remove_stale(str(tmp_path), cleanup.STAGING_PREFIX)
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[k] for k in ("dead", "legacy_old",
                                                                                      "foreign_old"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["1", names["mine"], names["foreign_recent"]])
    assert cleanup.temp_prefix("verify") == f"tfaural-verify-{cleanup.owner_tag()}-"


@pytest.mark.parametrize("stop", ["SIGTERM", "KeyboardInterrupt"])
def test_a_stopped_export_removes_its_folders_whatever_bytecode_the_signal_interrupted(
        stop: str, tmp_path: pathlib.Path) -> None:
    """A signal that lands between the making of a folder and the set-up of its removal (inside
    ``tempfile.TemporaryDirectory``'s constructor: the CI failure of ``test_killed_exports_leave_no_litter_behind``)
    still leaves nothing of the stopped export; the folders of other exports stay."""
    import os

    from export import cleanup

    base, temp = tmp_path / "exports", tmp_path / "tmp"
    temp.mkdir()
    others = [temp / f"tfaural-verify-{cleanup.owner_tag()}-live", base / f".tmp-{cleanup.owner_tag()}-live"]
    for folder in others:  # this test's process is another export, still running
        folder.mkdir(parents=True)
    stopping = "os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)" if stop == "SIGTERM" else \
        "raise KeyboardInterrupt"
    code = f"""
import os, signal, sys, tempfile, time
import export.__main__ as command
from export import cleanup

def stopped_in_the_window(args):
    os.makedirs(os.path.join(args.output, cleanup.staging_name()))
    for kind in cleanup.TEMP_KINDS:  # made, and their removal not set up yet
        tempfile.mkdtemp(prefix=cleanup.temp_prefix(kind))
    {stopping}

command._export = stopped_in_the_window
sys.exit(command.main(["--run", "runs/none", "--output", sys.argv[1]]))
"""
    done = subprocess.run([sys.executable, "-c", code, str(base)], cwd=pathlib.Path(__file__).parents[2],
                          env={**os.environ, "TMPDIR": str(temp)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == (128 + 15 if stop == "SIGTERM" else 130), done.stderr[-2000:]
    assert sorted(p.name for p in temp.iterdir()) == [others[0].name]
    assert sorted(p.name for p in base.iterdir()) == [others[1].name]


def test_budgets_are_validated_and_written_to_the_metadata() -> None:
    from export.budget import FAMILY_BUDGETS, WorkBudget, budget_for

    assert budget_for("choi") == FAMILY_BUDGETS["choi"] and budget_for("a-new-family") == WorkBudget()
    # musicnn's own architecture walks in smaller chunks than its vgg tagger (docs/serving.md: memory)
    assert budget_for("musicnn", architecture="vgg") == FAMILY_BUDGETS["musicnn"] == budget_for("musicnn")
    # (one feature per chunk even for one 3-s patch: two per chunk peaked over 2 GiB with oneDNN on an AVX2 CPU)
    assert budget_for("musicnn", architecture="musicnn").deconv_chunk_elements == 4 * 2**20
    # ... and on 9-s clips (64 features): 12-s ones peaked over 2 GiB with oneDNN's kernels on an AVX2 CPU
    own = budget_for("musicnn", architecture="musicnn")
    assert (own.max_deconv_seconds, own.max_deconv_feature_seconds) == (9.0, 576.0)
    # The SampleCNN family: 15-s clips, 32 features of them, one feature per chunk at 15 s (benchmarks/memory.py)
    for family in ("samplecnn", "raw-frame", "mel-frame"):
        assert budget_for(family) == WorkBudget(max_deconv_seconds=15.0, max_deconv_feature_seconds=480.0,
                                                deconv_chunk_elements=16 * 2**20, max_batch_segments=8)
    assert budget_for("choi", architecture="musicnn") == FAMILY_BUDGETS["choi"]
    from tfaural.models.musicnn import musicnn_tagger

    for architecture, chunk in (("musicnn", 4 * 2**20), ("vgg", 32 * 2**20)):  # what an export of each writes
        tagger = musicnn_tagger(architecture=architecture, n_outputs=2, **(
            {"frontend_scale": 0.05, "midend_filters": 4, "backend_units": 4} if architecture == "musicnn"
            else {"n_filters": 4}))
        config = config_from_model(tagger)
        tagger_info = RunInfo(model=config, labels=("a", "b"), task="multi-label",
                              audio=AudioConfig(sample_rate=config.sample_rate),
                              segment=SegmentConfig(length=config.segment_length))
        assert ServingModule(tagger, tagger_info).settings.budget.deconv_chunk_elements == chunk
    assert budget_for("samplecnn", max_request_seconds=60, max_deconv_feature_seconds=None).max_request_seconds == 60
    for bad in ({"max_request_seconds": 0}, {"max_deconv_feature_seconds": -1.0}, {"deconv_chunk_elements": 0},
                {"max_deconv_seconds": float("nan")}, {"max_batch_segments": 0}):
        with pytest.raises(ExportError, match=f"{next(iter(bad))}=.* is invalid"):
            WorkBudget(**bad)  # type: ignore[arg-type]
    model, info = _choi()
    with pytest.raises(ExportError, match=r"max_deconv_feature_seconds=0\.1 is shorter than one model segment"):
        ServingModule(model, info, budget=WorkBudget(max_deconv_feature_seconds=0.1))
    # A request budget below the longest input would refuse a call of one such input: an error if chosen, raised
    # to the longest input if it is the family's default.
    with pytest.raises(ExportError, match=r"the request budget, 20 s \(--max-request-seconds\), is below the "
                                          r"longest input, 600 s \(--max-seconds\)"):
        ServingModule(model, info, budget=WorkBudget(max_request_seconds=20.0))
    assert ServingModule(model, info, max_seconds=1800.0).settings.budget.max_request_seconds == 1800.0
    # The family's chunk of segments per step (benchmarks/memory.py --auralise --serving-only), or the one given.
    assert ServingModule(model, info).settings.max_batch_segments == FAMILY_BUDGETS["choi"].max_batch_segments == 32
    assert ServingModule(model, info, max_batch_segments=5).settings.max_batch_segments == 5
    _, meta = exporter.build_module(model, info, max_seconds=20.0, max_deconv_seconds=3.0,
                                    budget=WorkBudget(max_request_seconds=20.0, max_deconv_feature_seconds=12.0,
                                                      deconv_chunk_elements=1000))
    assert (meta["max_request_seconds"], meta["max_request_samples"]) == (20.0, 20 * RATE)
    assert (meta["max_deconv_feature_seconds"], meta["max_deconv_feature_samples"]) == (12.0, 12 * RATE)
    assert meta["max_deconv_samples"] == 3 * RATE and meta["deconv_chunk_elements"] == 1000
    assert meta["silence_relative"] == 2.0**-24 and meta["input_silence_peak"] == 2.0**-20
    # Without an explicit clip limit the family's own applies (the Choi CNN: 20 s, from benchmarks/memory.py
    # --auralise), and an explicit one overrides it.
    _, meta = exporter.build_module(model, info)
    assert meta["max_deconv_seconds"] == FAMILY_BUDGETS["choi"].max_deconv_seconds == 20.0
    assert meta["max_deconv_samples"] == 20 * RATE
    _, meta = exporter.build_module(model, info, budget=WorkBudget(max_deconv_seconds=5.0))
    assert meta["max_deconv_samples"] == 5 * RATE
    assert "k x batch x samples at most max_deconv_feature_samples" in (
        meta["signatures"]["deconvolve"]["inputs"]["features"]["description"])


def test_a_transfer_features_run_is_refused_with_what_to_export_instead() -> None:
    from export.metadata import family_of
    from tfaural.config import AggregationConfig, SampleCNNConfig

    config = AggregationConfig(extractors=(SampleCNNConfig(),), n_outputs=3)
    with pytest.raises(ExportError, match=r"cannot export a --transfer features run .* export the runs it builds on "
                                          r"\(--init-from\) instead"):
        family_of(config)
