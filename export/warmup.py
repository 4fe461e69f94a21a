"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays this TFRecord file of ``PredictionLog`` protos when it loads a
version, before the version serves traffic, so that every signature is traced,
optimised and allocated once. The exporter writes one ``PredictLog`` request per
signature, built from :func:`warmup_inputs`; the same inputs drive
:mod:`export.verify`, so the warm-up file is also the verification input.

Inputs (deterministic, batch 1):

* ``waveform``: :func:`warmup_signal`, a 440 Hz sine plus a 100 Hz-to-Nyquist/4 chirp and
  white noise 46 dB below them, peak at most 0.6, with 10 ms fades; exactly one model
  segment long, and for ``deconvolve`` and ``auralise`` exactly ``min_deconv_samples`` long
  (the shortest clip they take: so verification checks the deepest layer's walk at its
  edge);
* ``wav``: the same signal as a 16-bit PCM mono WAV file at the model's rate;
* ``layer``: the deepest deconvolvable layer (every conv block runs);
* ``features``: ``[0, 1]`` (k = 2);
* ``mode``: ``"phase"``.

TF Serving ignores ``model_spec.name`` in warm-up records (the servable being
loaded is implied); the requests name the signature only.
"""

from __future__ import annotations

import io
import os
import wave
from typing import Any

import numpy as np

from export.metadata import SIGNATURE_INPUTS
from tfaural.errors import ExportError

__all__ = [
    "WARMUP_FILE",
    "warmup_signal",
    "wav_bytes",
    "warmup_inputs",
    "warmup_requests",
    "write_warmup_file",
    "read_warmup_file",
]

#: Path of the warm-up file inside an export version directory (TF Serving's fixed name).
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_signal(n_samples: int, *, sample_rate: int) -> np.ndarray:
    """The deterministic warm-up waveform.

    Args:
        n_samples: Length in samples.
        sample_rate: Sample rate in Hz.

    Returns:
        float32 ``[n_samples]`` in [-0.6, 0.6].
    """
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    duration = max(n_samples / sample_rate, 1e-9)
    f0, f1 = 100.0, sample_rate / 4.0
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    # White noise 46 dB below the tones (clipped at 5 sigma: the peak stays at most 0.6) leaves no bin of the
    # spectrogram at a compression's floor: a dB front end's top_db floor would make plateaus, whose max-pool
    # switches differ with round-off between runtimes, so the deconvolution could not be compared.
    noise = 0.003 * np.clip(np.random.default_rng(0).standard_normal(n_samples), -5.0, 5.0)
    y = 0.97 * (0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * chirp) + noise
    n_fade = min(int(0.01 * sample_rate), n_samples // 2)
    if n_fade:
        ramp = np.linspace(0.0, 1.0, n_fade)
        y[:n_fade] *= ramp
        y[n_samples - n_fade :] *= ramp[::-1]
    return y.astype(np.float32)


def wav_bytes(y: np.ndarray, *, sample_rate: int) -> bytes:
    """Encodes a waveform as a 16-bit PCM WAV file (the format ``serving_wav`` decodes).

    Args:
        y: float ``[samples]`` (mono) or ``[samples, channels]`` in [-1, 1]; clipped.
        sample_rate: Sample rate in Hz written to the header.

    Returns:
        The file's bytes.
    """
    data = np.asarray(y, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, np.newaxis]
    pcm = np.clip(np.round(data * 32768.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(pcm.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()


def warmup_inputs(metadata: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The warm-up (and verification) inputs of every signature of an export.

    Args:
        metadata: The export's metadata (``assets/metadata.json``).

    Returns:
        ``{signature: {input name: array}}``; strings are numpy object arrays of bytes.
    """
    sample_rate = int(metadata["sample_rate"])
    y = warmup_signal(int(metadata["segment_length"]), sample_rate=sample_rate)
    shortest = int(metadata.get("min_deconv_samples") or metadata["segment_length"])
    short = warmup_signal(shortest, sample_rate=sample_rate)[np.newaxis, :]
    layers = metadata["deconvolvable_layers"]
    layer = int(layers[-1]) if layers else 0
    width = int(metadata["features_per_layer"][str(layer)]) if layers else 1
    values: dict[str, np.ndarray] = {
        "waveform": y[np.newaxis, :],
        "wav": np.array([wav_bytes(y, sample_rate=sample_rate)], dtype=object),
        "layer": np.array(layer, dtype=np.int32),
        "features": np.arange(min(2, width), dtype=np.int32),
        "mode": np.array(b"phase", dtype=object),
        "top_tags": np.array(max(1, min(2, len(metadata.get("labels") or ()))), dtype=np.int32),
    }
    return {
        name: {spec.name: short if spec.name == "waveform" and name in ("deconvolve", "auralise")
               else values[spec.name] for spec in SIGNATURE_INPUTS[name]}
        for name in metadata["signatures"]
    }


def warmup_requests(inputs: dict[str, dict[str, np.ndarray]]) -> list[Any]:
    """One ``PredictionLog`` (with a ``predict_log.request``) per signature.

    Raises:
        ExportError: If ``tensorflow-serving-api`` is not installed.
    """
    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        raise ExportError(
            "writing TF Serving warm-up requests needs tensorflow-serving-api: pip install 'tfaural[serving]'"
        ) from None
    from export.client import grpc_predict_request

    logs = []
    for name, named in inputs.items():
        request = grpc_predict_request(name, named, model_name="")
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(export_dir: str, inputs: dict[str, dict[str, np.ndarray]]) -> str:
    """Writes ``EXPORT_DIR/assets.extra/tf_serving_warmup_requests``.

    Args:
        export_dir: The (temporary) version directory.
        inputs: :func:`warmup_inputs` output.

    Returns:
        The file's path.
    """
    import tensorflow as tf

    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(inputs):
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(export_dir: str) -> list[Any]:
    """Parses the warm-up file of a version directory into ``PredictionLog`` protos.

    Raises:
        ExportError: If the file is missing or a record is not a ``PredictionLog``.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        raise ExportError(f"{export_dir!r} has no warm-up file {WARMUP_FILE}")
    logs = []
    for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except DecodeError as err:
            raise ExportError(f"{path}: record {index} is not a PredictionLog ({err})") from None
        logs.append(log)
    return logs
