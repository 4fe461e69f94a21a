"""Small clients for an export served by TF Serving (REST on :8501, gRPC on :8500).

Request builders (no server needed; tested against the SavedModel's input specs):

* :func:`rest_predict_payload` — the JSON body of ``POST /v1/models/<name>:predict``,
  in the **row** format (``{"instances": [{...}, ...]}``, one object per batch item)
  or the **columnar** format (``{"inputs": {...}}``). ``deconvolve`` and ``auralise``
  take the unbatched ``layer`` / ``features`` / ``mode`` inputs, so they need the
  columnar format; asking for rows raises :class:`~tfaural.errors.ParameterError`.
  String inputs (WAV bytes) are sent as ``{"b64": ...}``.
* :func:`rest_url` — the ``:predict`` URL of a model (optionally a version).
* :func:`grpc_predict_request` — a ``tensorflow_serving.apis.predict_pb2.PredictRequest``
  with every input converted by ``tf.make_tensor_proto`` to the signature's dtype.
* :func:`decode_rest_response` — a REST response body as ``{output: numpy array}``.

Thin wrappers that talk to a running server: :class:`RestClient` (``urllib.request``)
and :class:`GrpcClient` (``grpcio`` + ``PredictionServiceStub``).

Example:
    >>> client = RestClient("http://localhost:8501", model="choi")
    >>> out = client.predict("serving_default", {"waveform": clip[np.newaxis]})
    >>> out["labels"][0]
    array([b'rock', b'metal', b'blues'], dtype=object)
    >>> grpc = GrpcClient("localhost:8500", model="choi")
    >>> grpc.predict("deconvolve", {"waveform": clip[np.newaxis], "layer": 3, "features": [0, 5]})["deconvolved"].shape
    (1, 2, 257, 173)
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from export.metadata import COLUMNAR_ONLY, SIGNATURE_INPUTS, InputSpec
from tfaural.errors import ParameterError, TfauralError

__all__ = [
    "FORMATS",
    "prepare_inputs",
    "rest_url",
    "rest_predict_payload",
    "decode_rest_response",
    "grpc_predict_request",
    "RestClient",
    "GrpcClient",
    "ServingError",
]

FORMATS = ("row", "columnar")


class ServingError(TfauralError):
    """The server answered with an error (its message, e.g. an in-graph validation failure, is kept)."""


def _specs(signature: str) -> tuple[InputSpec, ...]:
    try:
        return SIGNATURE_INPUTS[signature]
    except KeyError:
        raise ParameterError(
            f"signature={signature!r} is unknown: expected one of {sorted(SIGNATURE_INPUTS)}"
        ) from None


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ParameterError(f"expected bytes or str for a string input, got {type(value).__name__}")


def prepare_inputs(signature: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Checks input names and ranks and converts each to the signature's dtype.

    Args:
        signature: A signature name (``serving_default``, ``serving_wav``, ``features``,
            ``deconvolve``, ``auralise``).
        inputs: ``{name: array-like}``; float inputs become float32, int inputs int32,
            string inputs numpy object arrays of bytes (``str`` is UTF-8 encoded).

    Returns:
        ``{name: numpy array}`` in the signature's input order.

    Raises:
        ParameterError: Unknown signature, missing or unexpected inputs, or a wrong rank.
    """
    specs = _specs(signature)
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        raise ParameterError(
            f"signature {signature!r} takes inputs {names}; missing {missing}, unexpected {extra}"
        )
    out = {}
    for spec in specs:
        value = inputs[spec.name]
        if spec.dtype == "string":
            raw = np.asarray(value, dtype=object)
            array = np.vectorize(_as_bytes, otypes=[object])(raw) if raw.size else raw
            array = np.asarray(array, dtype=object).reshape(raw.shape)
        else:
            array = np.asarray(value, dtype=spec.dtype)
        if array.ndim != len(spec.shape):
            raise ParameterError(
                f"input {spec.name!r} of {signature!r} must have shape [{', '.join(spec.shape)}] "
                f"(rank {len(spec.shape)}); got shape {list(array.shape)}"
            )
        out[spec.name] = array
    return out


def rest_url(host: str, model: str, *, version: int | None = None) -> str:
    """The REST ``:predict`` URL, e.g. ``http://localhost:8501/v1/models/choi/versions/2:predict``.

    Args:
        host: ``host:port`` or a URL with scheme (``http://`` is assumed when missing).
        model: The model name TF Serving serves (``MODEL_NAME``).
        version: A version number, or ``None`` for the latest.
    """
    base = host if "://" in host else f"http://{host}"
    path = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version is not None else "")
    return base.rstrip("/") + path + ":predict"


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object:
        encoded = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])(array)
        return encoded.tolist() if array.ndim else encoded.item()
    return array.tolist()


def rest_predict_payload(signature: str, inputs: Mapping[str, Any], *, format: str = "row") -> dict[str, Any]:
    """The JSON body of a REST predict request.

    Args:
        signature: The signature to call.
        inputs: ``{name: array-like}`` (see :func:`prepare_inputs`).
        format: ``"row"`` (``instances``: one object per batch item; every input batched)
            or ``"columnar"`` (``inputs``: each tensor whole).

    Returns:
        ``{"signature_name": ..., "instances": [...]}`` or ``{"signature_name": ..., "inputs": {...}}``.

    Raises:
        ParameterError: Row format for ``deconvolve``/``auralise`` (unbatched inputs), or bad inputs.
    """
    if format not in FORMATS:
        raise ParameterError(f"format={format!r} is invalid: expected one of {FORMATS}")
    arrays = prepare_inputs(signature, inputs)
    if format == "columnar":
        return {"signature_name": signature, "inputs": {name: _json_value(a) for name, a in arrays.items()}}
    if signature in COLUMNAR_ONLY:
        raise ParameterError(
            f"signature {signature!r} has unbatched inputs (layer, features, mode) that the REST row format "
            "cannot express; use format='columnar'"
        )
    batch = {len(a) for a in arrays.values()}
    if len(batch) != 1:
        raise ParameterError(f"row format needs every input to have the same batch size; got {sorted(batch)}")
    instances = [
        {name: _json_value(np.asarray(a[i], dtype=a.dtype)) for name, a in arrays.items()} for i in range(batch.pop())
    ]
    return {"signature_name": signature, "instances": instances}


def _from_json(value: Any) -> np.ndarray:
    def unwrap(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [unwrap(x) for x in v]
        return v.encode("utf-8") if isinstance(v, str) else v

    unwrapped = unwrap(value)
    array = np.asarray(unwrapped, dtype=object)
    if array.size and all(isinstance(x, (bool, np.bool_)) for x in array.reshape(-1)):
        return array.astype(bool)
    if array.size and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in array.reshape(-1)):
        return np.asarray(unwrapped, dtype=np.float64)
    return array


def decode_rest_response(body: str | bytes | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Turns a REST predict response into ``{output name: array}``.

    Numbers become float64 arrays (JSON does not keep float32/int32), booleans bool
    arrays, strings object arrays of bytes. A single-output response (TF Serving then
    omits the name) is returned under the key ``"output"``.

    Raises:
        ServingError: If the body is an ``{"error": ...}`` response.
    """
    data = json.loads(body) if isinstance(body, (str, bytes)) else dict(body)
    if "error" in data:
        raise ServingError(f"TF Serving error: {data['error']}")
    if "outputs" in data:
        outputs = data["outputs"]
        if isinstance(outputs, dict):
            return {name: _from_json(value) for name, value in outputs.items()}
        return {"output": _from_json(outputs)}
    if "predictions" in data:
        rows = data["predictions"]
        if rows and isinstance(rows[0], dict):
            return {name: _from_json([row[name] for row in rows]) for name in rows[0]}
        return {"output": _from_json(rows)}
    raise ServingError(f"unexpected response: expected 'outputs' or 'predictions', got keys {sorted(data)}")


def grpc_predict_request(
    signature: str, inputs: Mapping[str, Any], *, model_name: str, version: int | None = None
) -> Any:
    """A gRPC ``PredictRequest`` for ``signature``.

    Args:
        signature: The signature to call.
        inputs: ``{name: array-like}`` (see :func:`prepare_inputs`).
        model_name: The served model's name (``MODEL_NAME``; may be empty in warm-up records).
        version: A version number, or ``None`` for the latest.

    Returns:
        ``tensorflow_serving.apis.predict_pb2.PredictRequest``.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, array in prepare_inputs(signature, inputs).items():
        dtype = tf.string if array.dtype == object else tf.as_dtype(array.dtype)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=dtype, shape=list(array.shape)))
    return request


class RestClient:
    """Calls TF Serving's REST API (``urllib.request``; no extra dependency).

    Args:
        host: ``host:port`` or URL of the REST endpoint (port 8501 by default in the image).
        model: Served model name.
        version: Version to call (``None``: latest).
        timeout: Seconds to wait for a response.
    """

    def __init__(
        self, host: str = "http://localhost:8501", model: str = "tfaural", *, version: int | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.host, self.model, self.version, self.timeout = host, model, version, timeout

    def predict(self, signature: str, inputs: Mapping[str, Any], *, format: str | None = None) -> dict[str, np.ndarray]:
        """Calls ``signature``; ``format`` defaults to row, or columnar where rows are impossible."""
        chosen = format or ("columnar" if signature in COLUMNAR_ONLY else "row")
        payload = json.dumps(rest_predict_payload(signature, inputs, format=chosen)).encode("utf-8")
        request = urllib.request.Request(
            rest_url(self.host, self.model, version=self.version), data=payload,
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return decode_rest_response(response.read())
        except urllib.error.HTTPError as err:
            body = err.read().decode("utf-8", "replace")
            try:
                message = json.loads(body).get("error", body)
            except json.JSONDecodeError:
                message = body
            raise ServingError(f"HTTP {err.code} from {request.full_url}: {message}") from None


class GrpcClient:
    """Calls TF Serving's gRPC ``PredictionService`` (needs ``grpcio`` and ``tensorflow-serving-api``).

    Args:
        target: ``host:port`` of the gRPC endpoint (8500 in the image).
        model: Served model name.
        version: Version to call (``None``: latest).
        timeout: Seconds to wait for a response.
        max_message_mb: Largest message accepted either way (``deconvolve`` outputs are big;
            gRPC's default limit is 4 MB).
    """

    def __init__(
        self, target: str = "localhost:8500", model: str = "tfaural", *, version: int | None = None,
        timeout: float = 120.0, max_message_mb: int = 512,
    ) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        limit = max_message_mb * 1024 * 1024
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model, self.version, self.timeout = model, version, timeout

    def predict(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Calls ``signature`` and returns ``{output name: numpy array}`` (dtypes preserved)."""
        import grpc
        import tensorflow as tf

        request = grpc_predict_request(signature, inputs, model_name=self.model, version=self.version)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingError(f"gRPC {err.code().name}: {err.details()}") from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
