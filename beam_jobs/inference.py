"""RunInference on an exported tfaural SavedModel, one named signature at a time.

Beam's stock TensorFlow model handlers cannot serve a multi-signature SavedModel
under Keras 3 (they call ``keras.models.load_model``). :class:`SignatureModelHandler`
loads the export with ``tf.saved_model.load`` once per worker process (shared
between the threads of a process), at the first example that needs it, and calls
one signature by name on batches that RunInference forms with ``min_batch_size`` /
``max_batch_size``. A model that does not load fails each example with
``ModelLoadError`` (an :class:`InferenceFailure`), so that every track is still accounted for.

Examples are dicts of NumPy arrays keyed by the signature's input names, one
element per example (``{"waveform": float32 [samples]}``). Inputs without a batch
axis (``layer``, ``features``, ``mode`` of ``deconvolve`` / ``auralise``) come from
``constant_inputs`` or from the examples themselves. A batch is split into groups
whose batched inputs have equal shapes and whose unbatched inputs are equal, and
each group is one signature call; waveforms of different lengths are never padded
(that would change song-level averages).

A bad example does not take its batch down: when a group's call fails, its
examples are retried one by one and an example that fails alone gets an
:class:`InferenceFailure` as its ``PredictionResult.inference`` (the in-graph
validation message, e.g. "waveform has 10 samples; need at least 59049"). Anything
else that escapes (a crashed call, an out-of-memory error) goes to RunInference's
``with_exception_handling`` dead letters.

Usage::

    handler = SignatureModelHandler(export_dir, signature="serving_default", max_batch_size=8)
    keyed = KeyedModelHandler(handler)
    results, errors = keyed_examples | RunInference(keyed).with_exception_handling()
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_jobs.model_process import (
    DeferredSignature,
    LoadedSignature,
    ModelServerAddress,
    RemoteSignature,
    SignatureCallError,
    apply_threads,
    load_savedmodel,
    signature_function,
    signature_savedmodel,
    tf_error_reason,
)
from tfaural.errors import ModelError, ModelLoadError
from tfaural.formats import EXPORT_METADATA_FILE, ExportMetadata, read_export_metadata, resolve_export_dir

__all__ = [
    "SignatureModelHandler",
    "InferenceFailure",
    "LoadedSignature",
    "SignatureCallError",
    "read_metadata",
    "resolve_model_dir",
    "tf_error_reason",
]

logger = logging.getLogger(__name__)


def _restore_memory_metrics() -> None:
    """Gives RunInference its ``resource`` module back.

    Beam (2.77, 2.78) imports ``resource`` and its torch-based ``ModelManager`` in one ``try``
    block, so without torch ``resource`` is ``None`` and RunInference logs "Resource
    module is not available" on every batch instead of measuring memory.
    """
    from apache_beam.ml.inference import base

    if getattr(base, "resource", False) is None:
        try:
            import resource
        except ImportError:  # Windows: Beam's message is right there
            return
        base.resource = resource  # type: ignore[attr-defined]


_restore_memory_metrics()

_BATCHED_BY_NAME = frozenset({"waveform", "wav"})


def resolve_model_dir(path: str) -> str:
    """``--model``'s export version directory: ``path``, or the newest version in an export base folder
    (:func:`tfaural.formats.resolve_export_dir`, on any Beam filesystem); logged when it is not ``path``."""
    from apache_beam.io.filesystems import FileSystems

    from beam_jobs import io as beam_io

    def children(folder: str) -> list[str]:  # the versions holding metadata.json (one match, not a listing)
        try:
            found = FileSystems.match([f"{beam_io.escape(folder)}/*/{EXPORT_METADATA_FILE}"])[0].metadata_list
        except Exception:  # BeamIOError, or a filesystem client's own error: no versions then
            return []
        return [m.path.rstrip("/").split("/")[-3] for m in found]

    resolved = resolve_export_dir(path, exists=FileSystems.exists, children=children)
    if resolved != path.rstrip("/"):
        logger.info("--model %s is an export base folder: using its newest version, %s", path, resolved)
    return resolved


def read_metadata(export_dir: str) -> ExportMetadata:
    """Reads an export's ``assets/metadata.json`` from any Beam filesystem (local path or URI).

    Raises:
        ModelError: If the directory is not a tfaural export or the file is not valid JSON.
    """
    from apache_beam.io.filesystems import FileSystems

    def read(path: str) -> bytes:
        if not FileSystems.exists(path):
            raise FileNotFoundError(path)
        with FileSystems.open(path) as handle:
            return handle.read()  # type: ignore[no-any-return]

    return read_export_metadata(export_dir, read_bytes=read)


@dataclasses.dataclass(frozen=True)
class InferenceFailure:
    """The inference of one example failed; takes the place of its outputs.

    Attributes:
        error: The error type, e.g. ``"InvalidArgumentError"``.
        reason: What was wrong (for in-graph checks, the check's message).
    """

    error: str
    reason: str


#: What a handler's calls go to: a signature loaded here (at once, or at its first call), or a model process.
CallableSignature = LoadedSignature | DeferredSignature | RemoteSignature

#: (SavedModel path (the export or one signature's own), precision) -> loaded object. Read and written only by
#: :meth:`SignatureModelHandler._load_in_process`, which runs under ``DeferredSignature``'s process-wide lock.
_CACHE: dict[tuple[str, str], Any] = {}


def _dask_worker_threads() -> int | None:
    """TensorFlow threads for a Dask worker process: the worker's own thread count.

    TensorFlow's default is one intra-op and one inter-op thread per core in every
    process, and it ignores the ``OMP_NUM_THREADS=1`` that Dask's nanny sets, so
    several worker processes on one machine would each start a thread per core.
    Following Dask's rule (library threads = the worker's threads) the model gets
    as many threads as the worker runs tasks. ``TF_NUM_INTRAOP_THREADS`` in the
    worker's environment still wins.

    Returns:
        The worker's thread count, or ``None`` outside a Dask worker (or when the
        environment chooses).
    """
    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not installed, or not running in a Dask task
        return None
    threads = getattr(getattr(worker, "state", None), "nthreads", None) or getattr(worker, "nthreads", None)
    return int(threads) if threads else None


class SignatureModelHandler(ModelHandler[dict[str, Any], PredictionResult, "DeferredSignature | RemoteSignature"]):
    """Calls one signature of a tfaural SavedModel on batches of examples.

    Args:
        export_dir: The export version directory (``EXPORT_BASE/<N>``), local or remote.
        signature: Signature name (``serving_default``, ``features``, ``deconvolve``, ``auralise``).
        constant_inputs: Unbatched inputs passed unchanged to every call
            (e.g. ``{"layer": np.int32(3), "features": np.arange(64, dtype=np.int32)}``).
            Examples may carry unbatched inputs too; theirs take precedence.
        min_batch_size: Smallest batch RunInference forms.
        max_batch_size: Largest batch RunInference forms (memory: deconvolution of 64
            features of a 4-s clip needs ~1 GB, so keep it small for those signatures).
        outputs: Output names to keep (``None``: all).
        isolate_failures: Retry the examples of a failing call one by one, so that one
            bad example yields an :class:`InferenceFailure` instead of failing its batch.
        intra_op_threads: TensorFlow intra-op threads of each worker process (``None``:
            TensorFlow's default, one per core, except in a Dask worker, which gets its
            own thread count). With several worker processes on one machine,
            ``cores // processes`` avoids oversubscription.
        share_across_processes: Load the model once per machine, in a process of its own
            that the worker processes call (Beam's ``share_model_across_processes``): one
            model load instead of one per worker, and TensorFlow uses every core in it
            while the workers decode. The calls carry NumPy arrays.
        max_samples_per_call: Most values of the batched inputs (e.g. waveform samples) in one
            signature call; a batch holding more is split over several calls (each with at
            least one example). The model's memory grows with the audio it processes at once
            (~26 MiB per 3^9-SampleCNN segment in ``features``), and a signature loops over at
            most its export's ``max_batch_segments`` per step, so this bounds the peak.
            ``None``: one call per batch.
        one_example_per_call: Call the signature on every example alone, never on a batch of
            several: an example's outputs then do not depend on which other examples
            RunInference happened to batch it with (TensorFlow's kernels may sum in another
            order for another batch size, which changes float32 results in the last bits), so
            that reruns are byte-identical. The examples of a batch still travel to a shared
            model in one round trip. The jobs use it.
        model_server: Call the signature in this model process (:mod:`beam_jobs.model_process`)
            instead of loading the model here: the process running the handler never imports
            TensorFlow. ``share_across_processes`` is then ignored.
        precision: ``"float32"``, or ``"bfloat16"``: the process that loads the model computes it in
            bfloat16 (:func:`beam_jobs.model_process.load_savedmodel`; a process-wide option). The
            model process of ``model_server`` is started with its own precision.
        example_ranks: With ``one_example_per_call``: the rank of one example's batched inputs (e.g.
            ``{"waveform": 1}``). An example whose input has one axis more is a batch of its own
            (``[n, samples]``): it is sent as it is, in one call, and its outputs come back whole
            (``[n, ...]``), e.g. the ``n`` segments of a chunk, each pooled alone, in one call instead of ``n``.
    """

    def __init__(
        self,
        export_dir: str,
        *,
        signature: str = "serving_default",
        constant_inputs: dict[str, Any] | None = None,
        min_batch_size: int = 1,
        max_batch_size: int = 8,
        outputs: Sequence[str] | None = None,
        isolate_failures: bool = True,
        intra_op_threads: int | None = None,
        share_across_processes: bool = False,
        max_samples_per_call: int | None = None,
        one_example_per_call: bool = False,
        model_server: ModelServerAddress | None = None,
        precision: str = "float32",
        example_ranks: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if example_ranks and not one_example_per_call:
            raise ModelError("example_ranks needs one_example_per_call: a batch of examples is one call")
        if not (1 <= min_batch_size <= max_batch_size):
            raise ModelError(f"min_batch_size={min_batch_size}, max_batch_size={max_batch_size}: expected "
                             "1 <= min_batch_size <= max_batch_size")
        if max_samples_per_call is not None and max_samples_per_call < 1:
            raise ModelError(f"max_samples_per_call={max_samples_per_call}: expected a positive integer or None")
        self.export_dir = export_dir
        self.signature = signature
        self.constant_inputs = dict(constant_inputs or {})
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size
        self.outputs = tuple(outputs) if outputs is not None else None
        self.isolate_failures = isolate_failures
        self.intra_op_threads = intra_op_threads
        self.share_across_processes = share_across_processes
        self.max_samples_per_call = max_samples_per_call
        self.one_example_per_call = one_example_per_call
        self.model_server = model_server
        self.precision = precision
        self.example_ranks = dict(example_ranks or {})

    # ----------------------------------------------------------------- loading

    def load_model(self) -> DeferredSignature | RemoteSignature:
        """The signature, loaded once per process at its first call, or the model process that serves it.

        RunInference calls this before the first example arrives; the export is read only when an
        example needs it (:class:`~beam_jobs.model_process.DeferredSignature`), so a worker whose tracks
        were all kept from an earlier run (``--skip-existing``) never imports TensorFlow. Only the
        signature's own SavedModel is loaded when the export has one
        (:func:`beam_jobs.model_process.signature_savedmodel`); the other signatures (e.g.
        ``auralise`` and ``attribute``) come from the whole export. The loaded SavedModel is kept
        in a process-wide cache: runners that set up and tear down the inference DoFn for every
        bundle (Beam's Dask runner does, per partition) would otherwise load it again each time,
        and jobs that call several signatures of the whole export load it once.
        """
        try:  # read once: the input names and which of them are batched
            metadata: ExportMetadata | None = read_metadata(self.export_dir)
        except ModelError:
            metadata = None  # loading reports what is wrong with the export
        if self.model_server is not None:  # connects on the first call: decoding need not wait for the model
            remote = RemoteSignature(self.model_server,
                                     input_names=metadata.input_names(self.signature) if metadata else None)
            remote.batched = self._batched_inputs(metadata, remote.input_names)
            return remote
        threads = self.intra_op_threads or _dask_worker_threads()  # here: in the Dask task that sets it up
        return DeferredSignature(lambda: self._load_in_process(metadata, threads), export_dir=self.export_dir)

    def _load_in_process(self, metadata: ExportMetadata | None, threads: int | None) -> LoadedSignature:
        apply_threads(threads)  # before reading the export, which imports TensorFlow
        path = signature_savedmodel(self.export_dir, self.signature)
        key = (path, self.precision)  # the signatures without a SavedModel of their own share one load of the export
        if key not in _CACHE:  # (no lock of its own: DeferredSignature loads one signature at a time per process)
            _CACHE[key] = load_savedmodel(path, export_dir=self.export_dir, threads=threads, precision=self.precision)
        loaded = _CACHE[key]
        function = signature_function(loaded, self.signature, export_dir=self.export_dir)
        input_names = tuple(function.structured_input_signature[1])
        return LoadedSignature(loaded, function, self._batched_inputs(metadata, input_names), input_names)

    def _batched_inputs(self, metadata: ExportMetadata | None, input_names: Sequence[str]) -> frozenset[str]:
        """Inputs with a batch axis, from ``metadata.json`` (fallback: ``waveform`` and ``wav``)."""
        batched = metadata.batched_inputs(self.signature) if metadata is not None else None
        return batched if batched is not None else frozenset(name for name in input_names if name in _BATCHED_BY_NAME)

    # ----------------------------------------------------------------- inference

    def run_inference(
        self,
        batch: Sequence[dict[str, Any]],
        model: CallableSignature,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Runs the signature on ``batch``, one call per group of compatible examples.

        Returns:
            One ``PredictionResult`` per example, in order; ``inference`` is a dict of
            NumPy arrays (this example's row of every output) or an :class:`InferenceFailure`
            (``ModelLoadError`` for every example when the model could not be loaded).
        """
        try:
            return self._run_inference(batch, model, inference_args)
        except ModelLoadError as err:  # the examples' tracks fail with it; the job then stops with it
            failure = InferenceFailure(type(err).__name__, str(err))
            return [PredictionResult(example, failure) for example in batch]

    def _run_inference(
        self,
        batch: Sequence[dict[str, Any]],
        model: CallableSignature,
        inference_args: dict[str, Any] | None,
    ) -> list[PredictionResult]:
        constants = {**self.constant_inputs, **(inference_args or {})}
        batched, input_names = model.spec()
        if self.one_example_per_call:
            answers = self._call_each(batch, model, constants, batched, input_names)
            return [PredictionResult(example, answer) for example, answer in zip(batch, answers)]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, example in enumerate(batch):
            groups.setdefault(self._group_key(example, batched), []).append(index)
        results: list[PredictionResult | None] = [None] * len(batch)
        for group in groups.values():
            for indices in self._split_calls(group, batch, batched):
                examples = [batch[i] for i in indices]
                calls = self._call_group(examples, model, constants, batched, input_names)
                for index, inference in zip(indices, calls):
                    results[index] = PredictionResult(batch[index], inference)
        return [r for r in results if r is not None]

    def _split_calls(
        self, indices: list[int], batch: Sequence[dict[str, Any]], batched: frozenset[str]
    ) -> list[list[int]]:
        """Splits a group of examples into calls of at most ``max_samples_per_call`` batched values."""
        if self.max_samples_per_call is None:
            return [indices]
        calls: list[list[int]] = []
        current: list[int] = []
        size = 0
        for index in indices:
            values = sum(int(np.size(value)) for name, value in batch[index].items() if name in batched)
            if current and size + values > self.max_samples_per_call:
                calls.append(current)
                current, size = [], 0
            current.append(index)
            size += values
        if current:
            calls.append(current)
        return calls

    def _group_key(self, example: dict[str, Any], batched: frozenset[str]) -> tuple[Any, ...]:
        key: list[Any] = []
        for name in sorted(example):
            value = example[name]
            if name in batched:
                key.append((name, np.shape(value)))
            else:
                array = np.asarray(value)
                key.append((name, array.dtype.str, array.shape, array.tobytes()))
        return tuple(key)

    def _call_group(
        self, examples: list[dict[str, Any]], model: CallableSignature, constants: dict[str, Any],
        batched: frozenset[str], input_names: tuple[str, ...],
    ) -> list[dict[str, np.ndarray] | InferenceFailure]:
        try:
            return self._call(examples, model, constants, batched, input_names)
        except SignatureCallError as err:
            if not err.example_error or not self.isolate_failures:
                raise
            if len(examples) == 1:
                logger.warning("%s: an example failed: %s", self.signature, err.reason)
                return [InferenceFailure(err.error, err.reason)]
        return [item for example in examples
                for item in self._call_group([example], model, constants, batched, input_names)]

    def _call_each(
        self, examples: Sequence[dict[str, Any]], model: CallableSignature, constants: dict[str, Any],
        batched: frozenset[str], input_names: tuple[str, ...],
    ) -> list[dict[str, np.ndarray] | InferenceFailure]:
        """One signature call per example (``one_example_per_call``), all sent in one round trip."""
        answers: list[dict[str, np.ndarray] | InferenceFailure | None] = [None] * len(examples)
        calls: list[int] = []
        inputs: list[dict[str, Any]] = []
        whole = [self._is_batch(example) for example in examples]
        for index, example in enumerate(examples):
            try:
                inputs.append(self._inputs([example], constants, batched, input_names, stack=not whole[index]))
                calls.append(index)
            except SignatureCallError as err:
                answers[index] = self._failure(err)
        for index, result in zip(calls, model.call_each(inputs, self.outputs)):
            answers[index] = self._failure(result) if isinstance(result, SignatureCallError) else {
                k: (v if whole[index] else v[0]) for k, v in result.items()}
        return [answer for answer in answers if answer is not None]

    def _is_batch(self, example: dict[str, Any]) -> bool:
        """Whether ``example`` is a batch of its own (an input with one axis more than ``example_ranks`` says)."""
        return any(name in example and np.ndim(example[name]) == rank + 1 for name, rank in self.example_ranks.items())

    def _failure(self, err: SignatureCallError) -> InferenceFailure:
        """The :class:`InferenceFailure` of an example whose call failed (re-raises errors not caused by it)."""
        if not err.example_error or not self.isolate_failures:
            raise err
        logger.warning("%s: an example failed: %s", self.signature, err.reason)
        return InferenceFailure(err.error, err.reason)

    def _inputs(
        self, examples: list[dict[str, Any]], constants: dict[str, Any], batched: frozenset[str],
        input_names: tuple[str, ...], *, stack: bool = True,
    ) -> dict[str, Any]:
        """The inputs of one call on ``examples``, in call order: batched inputs stacked, or with ``stack=False``
        those of the one example that is a batch of its own, as they are."""
        first = examples[0]
        inputs: dict[str, Any] = {name: np.asarray(value) for name, value in constants.items()}
        for name, value in first.items():
            if name in batched:
                inputs[name] = (np.stack([np.asarray(example[name]) for example in examples]) if stack
                                else np.asarray(value))
            else:
                inputs[name] = np.asarray(value)
        missing = [name for name in input_names if name not in inputs]
        if missing:
            raise SignatureCallError("ValueError", f"signature {self.signature!r} needs the inputs {missing}; "
                                     f"examples have {sorted(first)} and constant inputs {sorted(constants)}", True)
        return {name: inputs[name] for name in input_names}

    def _call(
        self, examples: list[dict[str, Any]], model: CallableSignature, constants: dict[str, Any],
        batched: frozenset[str], input_names: tuple[str, ...],
    ) -> list[dict[str, np.ndarray] | InferenceFailure]:
        arrays = model.call(self._inputs(examples, constants, batched, input_names), self.outputs)
        return [{k: v[row] for k, v in arrays.items()} for row in range(len(examples))]

    # ----------------------------------------------------------------- RunInference plumbing

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": self.min_batch_size, "max_batch_size": self.max_batch_size}

    def get_num_bytes(self, batch: Sequence[dict[str, Any]]) -> int:
        return int(sum(np.asarray(v).nbytes for example in batch for v in example.values()))

    def get_metrics_namespace(self) -> str:
        return f"tfaural_{self.signature}"

    def share_model_across_processes(self) -> bool:
        return self.share_across_processes and self.model_server is None
