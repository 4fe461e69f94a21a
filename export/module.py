"""The ``tf.Module`` whose ``tf.function`` s become the SavedModel's signatures.

:class:`ServingModule` holds the trained Keras model (so its variables are
tracked and saved) and one ``tf.function`` per signature, each with an explicit
``input_signature`` taken from :data:`export.metadata.SIGNATURE_INPUTS`. Every
function contains only core TensorFlow ops (the STFT of :mod:`tfaural.spectral`,
the deconvolution of :mod:`tfaural.deconv`, ``tf.audio.decode_wav``), so TF
Serving, the Beam jobs and any TensorFlow program can run them without tfaural.

Decisions (documented in ``docs/serving.md`` too):

* **Segmentation.** Inputs are cut in-graph into whole segments of the run's
  segment length (``info.segment.length``) with the run's segment hop (the
  length by default: contiguous, non-overlapping), as the papers do; a trailing
  partial segment is dropped, and an input shorter than one segment is an error.
  The segments of all batch items run through the model together, in chunks of
  at most ``max_batch_segments`` (an in-graph loop, so memory stays bounded for
  long inputs; one chunk for typical requests). Song-level scores are the mean
  of the segment predictions.
* **Features.** The last three conv layers (Choi: ``pool3..pool5``; SampleCNN:
  ``pool<N-1>``, ``pool<N>``, ``relu_1x1``) are computed on the same segments
  and each is max- and mean-pooled over all positions (frequency and time) of all
  segments of an input — the SampleCNN paper's protocol, applied to both families.
* **Deconvolution / auralisation** take the whole input (not segmented): the
  conv part is size-agnostic, so a clip needs only ``min_deconv_samples``: the
  fewest whose maps at the deepest exported layer are not empty
  (:func:`tfaural.auralise.shortest_clip_samples`; a model built for one input
  length needs that length), often far less than a segment. A model built for one
  input length whose layers up to the deepest level take no longer clip (weights
  per frame: :func:`tfaural.auralise.longest_clip_samples`) also caps
  ``max_deconv_samples`` at the longest clip that gives that length. ``layer`` picks a branch of an n-way ``Case`` op
  (:func:`_switch_case`), left as a functional op so a call prepares only the
  branch it runs; ``features`` are validated against that layer's width and must
  not repeat.
* **Attribution** (``attribute``): the clip's best labels (scores as ``serving_default``)
  and, per label, each feature of ``layer``'s contribution ``sum(A * dS/dA)`` over its map,
  averaged over segments. One forward pass returns every exported level's maps and the
  scores, and one backward pass gives the gradients at every level (so the graph holds the
  model's forward and backward passes once, not once per level: a deep model's export traced
  them once per level before); ``layer`` then picks that level's contributions. Each (label,
  segment) pair is a row of the batch, so the gradients of all labels come from one backward
  pass per chunk of ``max_batch_segments`` rows.
* **Budgets** (:mod:`export.budget`, stated in ``metadata.json``): besides each
  input's length, a call's ``batch × samples`` (``max_request_samples`` for the
  scoring and feature signatures, ``max_deconv_samples`` for the deconvolution
  ones) and ``features × batch × samples`` (``max_deconv_feature_samples``) are
  capped, and the deconvolution walks the features in chunks of at most
  ``deconv_chunk_elements`` (an in-graph loop), so the largest allowed request has
  a known peak memory. The auralisation of a chunk is finished inside the loop.
* **Validation.** Rank, length, finiteness, budgets, ``layer``, ``features``,
  ``mode`` and the WAV sample rate are checked in-graph before anything else runs;
  a bad input fails with ``InvalidArgumentError`` whose message names the input and
  says what was expected (inputs are exported with unknown rank for that reason).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_switch_case

from export.budget import WorkBudget, budget_for
from export.metadata import MAX_TOP_TAGS, SIGNATURE_INPUTS, TOP_K, family_of, resolve_signatures, signature_names
from tfaural import spectral
from tfaural.auralise import (
    Auraliser,
    MelAuraliser,
    auraliser_for,
    deconv_net_for,
    longest_clip_samples,
    shortest_clip_samples,
    walk_bytes,
)
from tfaural.config import ChoiConfig, KerasConfig, MusicnnConfig, SampleCNNConfig
from tfaural.deconv import DeconvNet
from tfaural.errors import ExportError
from tfaural.models import config_from_model
from tfaural.models.aggregation import feature_layer_names
from tfaural.models.layers import pool_segment_maps
from tfaural.training.run import RunInfo

__all__ = ["ServingModule", "DEFAULT_MAX_SECONDS"]

DEFAULT_MAX_SECONDS = 600.0


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Plain-Python settings of a module (kept off the tracked tf.Module attributes)."""

    family: str
    sample_rate: int
    segment_length: int
    segment_hop: int
    max_samples: int
    max_deconv_seconds: float
    max_deconv_samples: int
    min_deconv_samples: int
    max_batch_segments: int
    max_request_samples: int
    max_deconv_feature_samples: int
    budget: WorkBudget
    stft: dict[str, Any] | None
    mel: dict[str, Any] | None
    top_k: int
    levels: tuple[int, ...]
    features_per_layer: dict[int, int]
    layer_names: dict[int, str]
    feature_layers: tuple[str, ...]
    feature_channels: tuple[int, ...]
    #: Why ``max_deconv_samples`` is what it is, for the message of a longer clip ("": the budget).
    max_deconv_why: str = ""


class _Untracked:
    """A plain holder: objects inside are invisible to TensorFlow's object tracking."""

    def __init__(self, items: dict[Any, Any]) -> None:
        self.items = items


def _seconds(samples: int, sample_rate: int) -> str:
    return f"{samples / sample_rate:.4g} s at {sample_rate} Hz"


def _switch_case(index: tf.Tensor, branches: Sequence[Callable[[], Any]]) -> Any:
    """``tf.switch_case(index, branches)`` whose ``Case`` op stays a functional op.

    ``tf.switch_case`` marks its ``Case`` op ``_lower_using_switch_merge``, so TensorFlow's
    runtime rewrites it into ``Switch``/``Merge`` ops with every branch inlined, and the first
    call of a signature optimises and prepares the walk of every layer although it runs one. Left
    as a ``Case`` op, each branch is its own function, prepared the first time it is taken (and
    cached): a fresh process's first ``auralise`` call of a 3^9-SampleCNN export took 3.7 s instead
    of 10.0 s on a 2-core Xeon, and its peak was 63 MiB lower (``benchmarks/memory.py --auralise``;
    ``docs/serving.md``).
    ``Case`` is a core op, so TF Serving and any TensorFlow program run it as before. The
    attribute can only be chosen through TensorFlow's own helper behind ``tf.switch_case``
    (the same code path, with ``lower_using_switch_merge=False``), hence the private import.

    Args:
        index: int32 scalar, the branch to run (``0 <= index < len(branches)``).
        branches: Callables with no arguments, returning the same structure of tensors.

    Returns:
        The chosen branch's outputs.
    """
    return control_flow_switch_case._indexed_case_helper(  # private: see the docstring
        list(branches), None, index, "switch_case", lower_using_switch_merge=False
    )


def _served_dtype(dtype: Any) -> tf.DType:
    """The dtype a signature serves a Keras output of ``dtype`` in: float32 for float16 and bfloat16 (a
    mixed-precision model computes in them; its maps and scores are served, and walked back, in float32)."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _assert(condition: tf.Tensor, template: str, *values: tf.Tensor) -> tf.Operation:
    """An in-graph check whose InvalidArgumentError message is ``template`` filled with ``values``."""
    message = tf.strings.format(template, values) if values else tf.constant(template)
    return tf.debugging.Assert(condition, [message], summarize=32)


def _after(checks: Sequence[tf.Operation], value: tf.Tensor) -> tf.Tensor:
    """``value``, available only once ``checks`` have passed."""
    with tf.control_dependencies(checks):
        return tf.identity(value)


def _checked_rank(value: tf.Tensor, *, name: str, rank: int, expected: str) -> tf.Tensor:
    """Checks an input's rank in-graph (``InvalidArgumentError`` naming it); returns it with static rank."""
    ok = _assert(tf.equal(tf.rank(value), rank), f"{name} must be {expected}; got shape {{}}", tf.shape(value))
    with tf.control_dependencies([ok]):
        # A reshape, not tf.ensure_shape: grappler would use EnsureShape's static rank to fold the check away.
        return tf.reshape(value, [] if rank == 0 else [-1])


def _printable(text: tf.Tensor, limit: int = 40) -> tf.Tensor:
    """The first ``limit`` bytes of a string as valid UTF-8 (invalid bytes become U+FFFD) for a message."""
    return tf.strings.unicode_transcode(
        tf.strings.substr(text, 0, limit), input_encoding="UTF-8", output_encoding="UTF-8", errors="replace"
    )


class ServingModule(tf.Module):
    """The exported object: the Keras model plus one ``tf.function`` per signature.

    Args:
        model: A trained Choi CNN or SampleCNN-family model (``tfaural.models``).
        info: The run description (labels, sample rate, segment, STFT).
        max_seconds: Longest input (seconds) of ``serving_default``, ``serving_wav`` and ``features``.
        max_deconv_seconds: Longest input (seconds, batch x length) of ``deconvolve`` and ``auralise``
            (``None``: the budget's ``max_deconv_seconds``).
        max_batch_segments: Most segments run through the model at once (memory bound; ``None``: the budget's,
            :attr:`export.budget.WorkBudget.max_batch_segments`).
        top_k: Width of the ``labels`` output (capped at the number of labels).
        budget: Per-call budgets (:mod:`export.budget`; ``None``: the family's).
        signatures: The signatures to export (``None``: every one of the family; ``"tagging"``
            or a list of names: :func:`export.metadata.resolve_signatures`). The others are
            never traced.

    Raises:
        ExportError: If the model and the run description disagree (sample rate,
            segment length, STFT, number of labels), a limit is invalid or a signature unknown.
    """

    def __init__(
        self,
        model: keras.Model,
        info: RunInfo,
        *,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_deconv_seconds: float | None = None,
        max_batch_segments: int | None = None,
        top_k: int = TOP_K,
        budget: WorkBudget | None = None,
        signatures: str | Sequence[str] | None = None,
    ) -> None:
        super().__init__(name="tfaural_serving")
        config = config_from_model(model)
        family = family_of(config)
        self._signature_names = resolve_signatures(family, signatures)
        # The Keras objects are held untracked and the tf.Variables their layers read are tracked
        # directly (as keras.export.ExportArchive does): tracked Keras 3 variables are saved as
        # separate copies that the signatures never read, so TF Serving's loader (and
        # tf.compat.v1.saved_model.load) would restore the copies and fail with "Could not find
        # variable" (keras-team/keras#19274). Each value is saved once.
        self._keras = _Untracked({"model": model})
        self.model_variables = [variable.value for variable in model.variables]
        self._config = config
        self._net = deconv_net_for(model) if "deconvolve" in signature_names(family) else None
        if budget is None:
            budget = budget_for(family, architecture=getattr(config, "architecture", None))
            if budget.max_request_seconds < max_seconds:  # a call may then hold one input of the longest length
                budget = dataclasses.replace(budget, max_request_seconds=max_seconds)
        elif budget.max_request_seconds < max_seconds:
            raise ExportError(
                f"the request budget, {budget.max_request_seconds:g} s (--max-request-seconds), is below the longest "
                f"input, {max_seconds:g} s (--max-seconds): a call holding one input of that length would be "
                "refused; raise --max-request-seconds or lower --max-seconds")
        front = None
        if isinstance(config, KerasConfig):  # what makes the model's input (and hears it) is its front end's
            front = auraliser_for(model, chunk_elements=budget.deconv_chunk_elements, net=self._net)
            if max_deconv_seconds is None:
                max_deconv_seconds = _keras_deconv_seconds(front, budget, info)
        self._settings = _settings(
            model, info, config, family, self._net, max_seconds=max_seconds,
            max_deconv_seconds=budget.max_deconv_seconds if max_deconv_seconds is None else max_deconv_seconds,
            max_batch_segments=budget.max_batch_segments if max_batch_segments is None else max_batch_segments,
            top_k=top_k, budget=budget,
        )
        chunk = self._settings.budget.deconv_chunk_elements
        self._auraliser = (
            # The module's deconvolution network: each layer's walk is traced once, as one function that
            # deconvolve and auralise both call, passed only the forward tensors it reads (DeconvNet.
            # _walk_function): one copy of the walks in the export's graph.
            _Untracked({"auraliser": front if front is not None else
                        auraliser_for(model, chunk_elements=chunk, net=self._net)})
            if "auralise" in signature_names(family) or front is not None else None
        )
        frames = getattr(front, "keras_frames", None)
        if frames is not None:  # a keras.layers.STFTSpectrogram's frames are not tfaural's centred ones
            self._settings = dataclasses.replace(self._settings, stft=frames.describe())
        if isinstance(config, KerasConfig) and isinstance(front, MelAuraliser):  # what the import resolved
            self._settings = dataclasses.replace(self._settings, mel=_keras_mel_metadata(config, front))
        if self._auraliser is not None and self._settings.levels:
            shortest = shortest_clip_samples(self._auraliser.items["auraliser"], self._settings.levels,
                                             guess=self._settings.segment_length)
            self._settings = dataclasses.replace(
                self._settings, min_deconv_samples=min(shortest, self._settings.segment_length))
            longest = longest_clip_samples(self._auraliser.items["auraliser"], self._settings.levels)
            if longest is not None and longest < self._settings.max_deconv_samples:  # the model's own limit
                rate = self._settings.sample_rate
                self._settings = dataclasses.replace(
                    self._settings, max_deconv_samples=longest, max_deconv_seconds=longest / rate,
                    max_deconv_why=f"the model is built for one input length and its layers up to layer "
                                   f"{max(self._settings.levels)} take no longer clip")
        if front is None:
            self._keras.items["features"] = keras.Model(
                model.inputs[0], [model.get_layer(name).output for name in self._settings.feature_layers],
                name="serving_features",
            )
        # One model returning (every level's maps..., the scores) from one pass, for the gradients of ``attribute``
        # (weights shared with self.model; untracked: nothing saved twice). An imported Keras model's layers may
        # sit inside a nested model (a keras.applications backbone), out of get_layer's reach: its maps come from
        # the deconvolution network's flattened graph instead.
        self._attribution_model = _Untracked({} if front is not None or not self._settings.levels else {
            "model": keras.Model(model.inputs[0], [*(model.get_layer(self._settings.layer_names[level]).output
                                                     for level in self._settings.levels), model.outputs[0]],
                                 name="attribution")
        })
        self._labels = np.asarray(info.labels, dtype=object)
        implementations: dict[str, Callable[..., dict[str, tf.Tensor]]] = {
            "serving_default": self._serving_default, "serving_wav": self._serving_wav, "features": self._features,
            "deconvolve": self._deconvolve, "auralise": self._auralise, "attribute": self._attribute,
        }
        # Held outside the tracked attributes: the SavedModel gets them as signatures only. Tracked
        # tf.functions would also be saved as object-graph functions, which tf.saved_model.save
        # traces a second time (in its save context) -- doubling the export time for nothing.
        self._functions = _Untracked(
            {name: self._function(implementations[name], name) for name in self._signature_names}
        )

    # ----------------------------------------------------------------- public helpers

    @property
    def model(self) -> keras.Model:
        """The exported Keras model."""
        return self._keras.items["model"]

    def _feature_maps(self, x: tf.Tensor) -> list[tf.Tensor]:
        """The feature layers' maps of the model's input ``x``."""
        if "features" in self._keras.items:
            return list(self._keras.items["features"](x, training=False))
        assert self._net is not None
        return self._net.layer_outputs(x, self._settings.feature_layers)

    @property
    def _feature_outputs(self) -> list[Any]:
        """The feature layers' symbolic outputs (shapes and dtypes)."""
        if "features" in self._keras.items:
            return list(self._keras.items["features"].outputs)
        assert self._net is not None
        return [self._net.symbolic_output(name) for name in self._settings.feature_layers]

    @property
    def settings(self) -> _Settings:
        """Sample rate, segment, limits, layers (plain Python values)."""
        return self._settings

    @property
    def model_config(self) -> Any:
        """The model's tfaural config (:data:`tfaural.config.MODEL_CONFIGS`)."""
        return self._config

    @property
    def deconvolved_shape(self) -> tuple[int | None, ...]:
        """Shape of the deconvolved maps of one input and feature (``deconvolve``'s ``[batch, k, ...]`` after ``k``)."""
        assert self._net is not None
        return self._net.output_shape

    @property
    def signature_names(self) -> tuple[str, ...]:
        """The signatures this module exports."""
        return self._signature_names

    def function(self, name: str) -> Any:
        """The ``tf.function`` of signature ``name`` (with its ``input_signature``)."""
        return self._functions.items[name]

    def signatures(self) -> dict[str, Any]:
        """``{name: concrete function}`` for ``tf.saved_model.save(..., signatures=...)``."""
        return {name: self.function(name).get_concrete_function() for name in self.signature_names}

    def call(self, name: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Runs signature ``name`` in-process (the Keras path) and returns numpy outputs."""
        function = self.function(name).get_concrete_function()
        tensors = {
            spec.name: tf.constant(inputs[spec.name], dtype=spec.dtype if spec.dtype != "string" else tf.string)
            for spec in SIGNATURE_INPUTS[name]
        }
        return {key: value.numpy() for key, value in function(**tensors).items()}

    def _function(self, fn: Callable[..., dict[str, tf.Tensor]], name: str) -> Any:
        specs = [
            tf.TensorSpec(
                None if spec.graph_shape is None else list(spec.graph_shape),
                tf.string if spec.dtype == "string" else tf.as_dtype(spec.dtype),
                name=spec.name,
            )
            for spec in SIGNATURE_INPUTS[name]
        ]
        return tf.function(fn, input_signature=specs, autograph=False)

    # ----------------------------------------------------------------- validation

    def _checked_waveform(self, waveform: tf.Tensor, *, max_samples: int, max_total: int, calls: str,
                          min_samples: int | None = None, max_why: str = "") -> tf.Tensor:
        """Checks rank, length (at least ``min_samples``, by default one segment; at most ``max_samples``),
        ``batch × samples <= max_total`` and finiteness; returns it with static rank 2."""
        s = self._settings
        if min_samples is None or min_samples >= s.segment_length:
            least, why = s.segment_length, "one model segment"
        else:
            least, why = min_samples, "the shortest clip whose maps at the deepest exported layer are not empty"
        rank = tf.rank(waveform)
        rank_ok = _assert(
            tf.equal(rank, 2), "waveform must be float32 [batch, samples]; got rank {} with shape {}",
            rank, tf.shape(waveform),
        )
        with tf.control_dependencies([rank_ok]):
            n = tf.shape(waveform)[-1]
            checks = [
                _assert(
                    n >= least,
                    f"waveform has {{}} samples; need at least {least} ({_seconds(least, s.sample_rate)}, {why})",
                    n,
                ),
                _assert(
                    n <= max_samples,
                    f"waveform has {{}} samples; this export accepts at most {max_samples} "
                    f"({_seconds(max_samples, s.sample_rate)}{', ' + max_why if max_why else ''}); "
                    + ("send a shorter clip" if max_why else "split the audio into shorter requests"),
                    n,
                ),
            ]
        with tf.control_dependencies(checks):
            batch = tf.shape(waveform)[0]
            total = tf.cast(batch, tf.int64) * tf.cast(n, tf.int64)
            total_ok = _assert(
                total <= max_total,
                f"waveform holds {{}} clips x {{}} samples = {{}} samples; {calls} take at most {max_total} samples "
                f"per call in all ({_seconds(max_total, s.sample_rate)}, batch x samples): send fewer or shorter clips "
                "per call",
                batch, n, total,
            )
        with tf.control_dependencies([total_ok]):
            finite = _assert(
                tf.reduce_all(tf.math.is_finite(waveform)), "waveform contains NaN or Inf samples"
            )
        with tf.control_dependencies([finite]):
            # A reshape, not tf.ensure_shape: grappler would use EnsureShape's static rank to
            # fold the rank check above away before it can fail.
            return tf.reshape(waveform, tf.stack([-1, tf.shape(waveform)[-1]]))

    def _checked_lengths(self, lengths: tf.Tensor, *, max_samples: int, what: str) -> tf.Operation:
        s = self._settings
        guarded = tf.concat([lengths, [s.segment_length]], axis=0)  # a valid length: never empty
        shortest = tf.cast(tf.argmin(guarded), tf.int32)
        longest = tf.cast(tf.argmax(guarded), tf.int32)
        return tf.group(
            _assert(
                tf.reduce_min(guarded) >= s.segment_length,
                f"{what}[{{}}] has {{}} samples; need at least {s.segment_length} "
                f"({_seconds(s.segment_length, s.sample_rate)}, one model segment)",
                shortest, tf.gather(guarded, shortest),
            ),
            _assert(
                tf.reduce_max(guarded) <= max_samples,
                f"{what}[{{}}] has {{}} samples; this export accepts at most {max_samples} "
                f"({_seconds(max_samples, s.sample_rate)}); split the audio into shorter requests",
                longest, tf.gather(guarded, longest),
            ),
        )

    def _checked_layer_features(
        self, layer: tf.Tensor, features: tf.Tensor, waveform: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Checks ``layer`` and ``features`` (rank, range, repeats, budget); returns ``(branch_index, features)``.

        Args:
            layer: The ``layer`` input (any rank until checked).
            features: The ``features`` input (any rank until checked).
            waveform: The checked ``[batch, samples]`` waveform (for the budget).
        """
        s = self._settings
        lo, hi = s.levels[0], s.levels[-1]
        layer = _checked_rank(
            layer, name="layer", rank=0, expected=f"an int32 scalar (shape []), one of {list(s.levels)}"
        )
        features = _checked_rank(
            features, name="features", rank=1, expected="a 1-D int32 list of feature-map indices (shape [k])"
        )
        layer_ok = _assert(
            tf.logical_and(layer >= lo, layer <= hi), f"layer must be one of {list(s.levels)}; got {{}}", layer
        )
        with tf.control_dependencies([layer_ok]):
            index = tf.identity(layer - lo)
            widths = tf.constant([s.features_per_layer[level] for level in s.levels], tf.int32)
            n_maps = tf.gather(widths, index)
            features_ok = _assert(
                tf.logical_and(
                    tf.size(features) > 0,
                    tf.reduce_all(tf.logical_and(features >= 0, features < n_maps)),
                ),
                "features must be a non-empty list of feature-map indices in [0, {}) for layer {}; got {}",
                n_maps, layer, features,
            )
        with tf.control_dependencies([features_ok]):
            k = tf.size(features)
            unique_ok = _assert(
                tf.equal(tf.size(tf.unique(features).y), k),
                "features must not repeat (ask for each feature once); got {}", features,
            )
        with tf.control_dependencies([unique_ok]):
            batch, n = tf.shape(waveform)[0], tf.shape(waveform)[1]
            work = tf.cast(k, tf.int64) * tf.cast(batch, tf.int64) * tf.cast(n, tf.int64)
            limit = s.max_deconv_feature_samples
            example = max(1, limit // s.max_deconv_samples)
            budget_ok = _assert(
                work <= limit,
                f"{{}} features x {{}} clips x {{}} samples = {{}} feature-samples; this export deconvolves at most "
                f"{limit} per call ({limit / s.sample_rate:.6g} feature-seconds at {s.sample_rate} Hz, e.g. {example} "
                f"features of a {s.max_deconv_samples / s.sample_rate:.4g}-s clip): ask for fewer features per call",
                k, batch, n, work,
            )
        return _after([budget_ok], index), _after([budget_ok], features)

    # ----------------------------------------------------------------- model plumbing

    def _model_input(self, segments: tf.Tensor) -> tf.Tensor:
        """``[n, segment_length]`` waveforms -> the Keras model's input."""
        s = self._settings
        config = self._config
        if isinstance(config, KerasConfig):
            assert self._auraliser is not None
            x = self._auraliser.items["auraliser"].model_input(segments)
            return tf.ensure_shape(x, [None, *self.model.inputs[0].shape[1:]])
        if s.stft is None:
            return segments[..., tf.newaxis]
        if isinstance(config, MusicnnConfig):
            assert s.mel is not None
            mel = spectral.melspectrogram(
                segments, sample_rate=s.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                n_mels=config.n_mels, power=s.mel["power"],
            )
            return tf.ensure_shape(mel, [None, config.n_mels, config.n_frames])[..., tf.newaxis]
        assert isinstance(config, ChoiConfig)
        magnitude = self._magnitude(segments)
        return tf.ensure_shape(magnitude, [None, config.n_freq, config.n_frames])[..., tf.newaxis]

    def _magnitude(self, waveform: tf.Tensor) -> tf.Tensor:
        return tf.abs(self._stft(waveform))

    def _stft(self, waveform: tf.Tensor) -> tf.Tensor:
        stft = self._settings.stft
        assert stft is not None
        return spectral.stft(waveform, n_fft=stft["n_fft"], hop_length=stft["hop_length"])

    def _segments(self, waveform: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Cuts ``[b, n]`` into whole segments.

        Returns:
            ``(flat [b * s, length], mask bool [b, s], counts int32 [b])``: item ``i``
            has ``counts[i]`` valid segments (fewer than ``s`` when its own length,
            before zero padding to the batch's longest, was shorter).
        """
        s = self._settings
        frames = tf.signal.frame(waveform, s.segment_length, s.segment_hop, axis=-1)  # [b, s, length]
        counts = (lengths - s.segment_length) // s.segment_hop + 1
        mask = tf.sequence_mask(counts, tf.shape(frames)[1])
        return tf.reshape(frames, [-1, s.segment_length]), mask, counts

    def _run_chunked(
        self, fn: Callable[[tf.Tensor], Sequence[tf.Tensor]], flat: tf.Tensor, outputs: Sequence[Any]
    ) -> list[tf.Tensor]:
        """Applies ``fn`` to ``[n, length]`` segments in at most ``max_batch_segments`` at a time.

        The ``n`` segments are split into ``c = ceil(n / max)`` equal chunks of
        ``ceil(n / c)`` (zero-padded by fewer than ``c`` segments), run one chunk
        after the other in an in-graph loop, and concatenated back to ``n``.

        Args:
            fn: Maps ``[m, length]`` segments to tensors ``[m, ...]``.
            flat: ``[n, length]`` segments.
            outputs: The Keras symbolic outputs ``fn`` returns (for their shapes and dtypes; a half-precision
                one, of a mixed-precision model, is served in float32 as the deconvolution network gives its
                maps: :func:`_served_dtype`).
        """
        (chunks,) = _padded_chunks([flat], self._settings.max_batch_segments)
        signature = [tf.TensorSpec([None, *output.shape[1:]], _served_dtype(output.dtype)) for output in outputs]

        def run(chunk: tf.Tensor) -> list[tf.Tensor]:
            return [tf.cast(result, spec.dtype) for result, spec in zip(fn(chunk), signature)]

        results = tf.map_fn(run, chunks, fn_output_signature=signature, parallel_iterations=1)
        n = tf.shape(flat)[0]
        return [tf.reshape(r, tf.concat([[-1], tf.shape(r)[2:]], 0))[:n] for r in results]

    def _scores(self, waveform: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        flat, mask, counts = self._segments(waveform, lengths)
        (predictions,) = self._run_chunked(
            lambda x: [self.model(self._model_input(x), training=False)], flat, self.model.outputs
        )
        batch = tf.shape(mask)[0]
        predictions = tf.reshape(predictions, [batch, tf.shape(mask)[1], predictions.shape[-1]])
        weights = tf.cast(mask, predictions.dtype)[..., tf.newaxis]
        scores = tf.reduce_sum(predictions * weights, axis=1) / tf.cast(counts, predictions.dtype)[:, tf.newaxis]
        top = tf.math.top_k(scores, k=self._settings.top_k)
        labels = tf.gather(tf.constant(self._labels, tf.string), top.indices)
        return {"scores": scores, "labels": labels}

    # ----------------------------------------------------------------- signatures

    def _checked_request(self, waveform: tf.Tensor) -> tf.Tensor:
        s = self._settings
        return self._checked_waveform(
            waveform, max_samples=s.max_samples, max_total=s.max_request_samples,
            calls="serving_default, serving_wav and features",
        )

    def _serving_default(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        waveform = self._checked_request(waveform)
        lengths = tf.fill([tf.shape(waveform)[0]], tf.shape(waveform)[1])
        return self._scores(waveform, lengths)

    def _serving_wav(self, wav: tf.Tensor) -> dict[str, tf.Tensor]:
        s = self._settings
        rank = tf.rank(wav)
        rank_ok = _assert(
            tf.equal(rank, 1), "wav must be a 1-D string tensor [batch] of WAV file bytes; got rank {} with shape {}",
            rank, tf.shape(wav),
        )
        with tf.control_dependencies([rank_ok]):
            wav = tf.reshape(wav, [-1])

        def decode(item: tf.Tensor) -> tf.Tensor:
            audio, rate = tf.audio.decode_wav(item)  # float32 [samples, channels] in [-1, 1]
            rate_ok = _assert(
                tf.equal(rate, s.sample_rate),
                f"a WAV has sample rate {{}} Hz; this model expects {s.sample_rate} Hz (resample before sending)",
                rate,
            )
            with tf.control_dependencies([rate_ok]):
                return tf.reduce_mean(audio, axis=1)  # mono mix-down

        decoded = tf.map_fn(
            decode, wav, fn_output_signature=tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0)
        )
        lengths = tf.cast(decoded.row_lengths(), tf.int32)
        with tf.control_dependencies([self._checked_lengths(lengths, max_samples=s.max_samples, what="wav")]):
            batch = tf.shape(lengths)[0]
            longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
            total = tf.cast(batch, tf.int64) * tf.cast(longest, tf.int64)
            total_ok = _assert(
                total <= s.max_request_samples,
                f"wav holds {{}} files of up to {{}} samples = {{}} samples (batch x longest); serving_default, "
                f"serving_wav and features take at most {s.max_request_samples} samples per call in all "
                f"({_seconds(s.max_request_samples, s.sample_rate)}): send fewer or shorter files per call",
                batch, longest, total,
            )
        with tf.control_dependencies([total_ok]):
            waveform = tf.identity(decoded.to_tensor())
        return self._scores(waveform, lengths)

    def _features(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        waveform = self._checked_request(waveform)
        lengths = tf.fill([tf.shape(waveform)[0]], tf.shape(waveform)[1])
        flat, mask, _ = self._segments(waveform, lengths)
        maps = self._run_chunked(
            lambda x: self._feature_maps(self._model_input(x)), flat, self._feature_outputs
        )
        batch, n_segments = tf.shape(mask)[0], tf.shape(mask)[1]
        outputs: dict[str, tf.Tensor] = {}
        pooled = []
        for index, feature_map in enumerate(maps, start=1):
            channels = int(feature_map.shape[-1])
            per_item = tf.reshape(feature_map, [batch, n_segments, -1, channels])  # [b, s, positions, c]
            maximum, mean = pool_segment_maps(per_item, mask)  # padded segments left out
            outputs[f"level{index}_max"] = maximum
            outputs[f"level{index}_mean"] = mean
            pooled += [maximum, mean]
        outputs["features"] = tf.concat(pooled, axis=-1)
        return outputs

    def _checked_deconv_inputs(
        self, waveform: tf.Tensor, layer: tf.Tensor, features: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Validates the inputs of ``deconvolve``/``auralise``: ``(waveform, branch_index, features)``."""
        s = self._settings
        waveform = self._checked_waveform(
            waveform, max_samples=s.max_deconv_samples, max_total=s.max_deconv_samples,
            calls="deconvolve and auralise", min_samples=s.min_deconv_samples, max_why=s.max_deconv_why,
        )
        not_empty = _assert(tf.shape(waveform)[0] > 0, "waveform holds no clip (batch size 0); send at least one")
        waveform = _after([not_empty], waveform)
        index, features = self._checked_layer_features(layer, features, waveform)
        return waveform, index, features

    def _deconvolve(self, waveform: tf.Tensor, layer: tf.Tensor, features: tf.Tensor) -> dict[str, tf.Tensor]:
        s = self._settings
        waveform, index, features = self._checked_deconv_inputs(waveform, layer, features)
        assert self._net is not None
        x = spectrogram = None
        if isinstance(self._config, KerasConfig):  # an imported Keras model: its front end makes its input
            assert self._auraliser is not None
            front = self._auraliser.items["auraliser"]
            x = front.model_input(waveform)
            if isinstance(front, MelAuraliser):
                spectrogram = front.mel_input(waveform)[1]
        elif s.mel is not None:  # the imported log-mel taggers: the deconvolution ends in log-mel
            auraliser = self._auraliser.items["auraliser"] if self._auraliser is not None else None
            assert isinstance(auraliser, MelAuraliser)
            spectrogram = auraliser.mel_input(waveform)[1]
            x = spectrogram[..., tf.newaxis]
        elif s.stft is not None:
            x = spectrogram = self._magnitude(waveform)
        else:
            x = waveform
        branches = [
            functools.partial(self._net, x, layer=level, features=features, return_activation=True,
                              chunk_elements=s.budget.deconv_chunk_elements)
            for level in s.levels
        ]
        deconvolved, activation = _switch_case(index, branches)
        outputs = {"deconvolved": deconvolved, "activation": activation}
        if spectrogram is not None:
            outputs["spectrogram"] = spectrogram
        return outputs

    def _auralise(
        self, waveform: tf.Tensor, layer: tf.Tensor, features: tf.Tensor, mode: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        mode = _checked_rank(mode, name="mode", rank=0, expected="a string scalar (shape []): phase or mask")
        mode_ok = tf.debugging.Assert(  # no quotes: the Assert op would print them backslash-escaped
            tf.logical_or(tf.equal(mode, "phase"), tf.equal(mode, "mask")),
            [tf.strings.join(["mode must be phase or mask; got ", _printable(mode)])],
        )
        waveform, index, features = self._checked_deconv_inputs(_after([mode_ok], waveform), layer, features)
        assert self._auraliser is not None
        auraliser: Auraliser = self._auraliser.items["auraliser"]
        # The model's input, the STFT and the per-chunk reconstruction are the same for every layer: made
        # (and traced) once, outside the switch, not in each branch.
        prepared = auraliser.prepare(waveform, mode=mode, keep_deconvolved=False)

        def branch(level: int) -> tuple[tf.Tensor, ...]:
            result = auraliser.auralise_prepared(prepared, layer=level, features=features)
            return result.audio, result.silent, result.peak, result.activation

        branches = [functools.partial(branch, level) for level in self._settings.levels]
        audio, silent, peak, activation = _switch_case(index, branches)
        return {"audio": audio, "silent": silent, "peak": peak, "activation": activation}


    def _attribute(self, waveform: tf.Tensor, layer: tf.Tensor, top_tags: tf.Tensor) -> dict[str, tf.Tensor]:
        s = self._settings
        n_labels = len(self._labels)
        most = min(MAX_TOP_TAGS, n_labels)
        waveform = self._checked_waveform(
            waveform, max_samples=s.max_deconv_samples, max_total=s.max_deconv_samples, calls="attribute",
        )
        top_tags = _checked_rank(top_tags, name="top_tags", rank=0, expected=f"an int32 scalar in [1, {most}]")
        layer = _checked_rank(
            layer, name="layer", rank=0, expected=f"an int32 scalar (shape []), one of {list(s.levels)}"
        )
        batch, n = tf.shape(waveform)[0], tf.shape(waveform)[1]
        work = tf.cast(top_tags, tf.int64) * tf.cast(batch, tf.int64) * tf.cast(n, tf.int64)
        checks = [
            _assert(tf.logical_and(layer >= s.levels[0], layer <= s.levels[-1]),
                    f"layer must be one of {list(s.levels)}; got {{}}", layer),
            _assert(tf.logical_and(top_tags >= 1, top_tags <= most),
                    f"top_tags must be in [1, {most}]; got {{}}", top_tags),
            _assert(batch > 0, "waveform holds no clip (batch size 0); send at least one"),
            _assert(work <= s.max_deconv_feature_samples,
                    f"{{}} labels x {{}} clips x {{}} samples = {{}}; attribute takes at most "
                    f"{s.max_deconv_feature_samples} per call: ask for fewer labels or send shorter clips",
                    top_tags, batch, n, work),
        ]
        waveform = _after(checks, waveform)
        index = _after(checks, layer - s.levels[0])
        lengths = tf.fill([batch], n)
        scores = self._scores(waveform, lengths)["scores"]  # [b, labels]
        top = tf.math.top_k(scores, k=_after(checks, top_tags))
        tags = top.indices  # [b, t]
        flat, mask, counts = self._segments(waveform, lengths)  # [b * s, length], [b, s], [b]
        n_segments = tf.shape(mask)[1]
        t = tf.shape(tags)[1]
        # One row per (tag, clip, segment): the segments of clip i, once for each of its t labels.
        rows = tf.reshape(tf.tile(tf.reshape(flat, [1, batch, n_segments, -1]), [t, 1, 1, 1]),
                          [-1, s.segment_length])
        row_tags = tf.reshape(tf.tile(tf.transpose(tags)[:, :, tf.newaxis], [1, 1, n_segments]), [-1])

        widths = [s.features_per_layer[level] for level in s.levels]

        def maps_and_scores(inputs: tf.Tensor) -> list[tf.Tensor]:
            """Every level's maps, then the scores, from one forward pass."""
            model = self._attribution_model.items.get("model")
            if model is not None:
                return list(model(inputs, training=False))
            assert self._net is not None
            return self._net.layer_outputs(inputs, [s.layer_names[level] for level in s.levels],
                                           with_model_output=True)

        def row_contributions(x: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            """``[m, C]`` of every level: ``sum(A * dS/dA)`` over each map, from one backward pass."""
            with tf.GradientTape() as tape:
                *maps, predictions = maps_and_scores(self._model_input(x))
                chosen = tf.reduce_sum(predictions * tf.one_hot(labels, n_labels, dtype=predictions.dtype))
            gradients = tape.gradient(chosen, maps)
            return tuple(tf.reduce_sum(g * a, axis=list(range(1, len(a.shape) - 1))) if len(a.shape) > 2 else g * a
                         for g, a in zip(gradients, maps))

        m = tf.shape(rows)[0]
        padded_rows, padded_tags = _padded_chunks([rows, row_tags], s.max_batch_segments)
        per_level = tf.map_fn(lambda pair: row_contributions(pair[0], pair[1]), (padded_rows, padded_tags),
                              fn_output_signature=tuple(tf.TensorSpec([None, c], tf.float32) for c in widths),
                              parallel_iterations=1)
        weights = tf.cast(mask, tf.float32)[tf.newaxis, :, :, tf.newaxis]

        def averaged(per_row: tf.Tensor, channels: int) -> tf.Tensor:
            """``[b, t, C]``: a level's contributions, averaged over each clip's segments."""
            per_row = tf.reshape(tf.reshape(per_row, [-1, channels])[:m], [t, batch, n_segments, channels])
            mean = tf.reduce_sum(per_row * weights, axis=2) / tf.cast(counts, tf.float32)[tf.newaxis, :, tf.newaxis]
            return tf.transpose(mean, [1, 0, 2])

        by_level = [averaged(per_row, channels) for per_row, channels in zip(per_level, widths)]
        contributions = _switch_case(index, [functools.partial(tf.identity, value) for value in by_level])
        labels = tf.gather(tf.constant(self._labels, tf.string), tags)
        return {"scores": scores, "tags": tags, "labels": labels, "contributions": contributions}


def _padded_chunks(tensors: Sequence[tf.Tensor], limit: int) -> list[tf.Tensor]:
    """Splits ``[n, ...]`` tensors into ``c = ceil(n / limit)`` equal chunks along their first axis.

    Each chunk holds ``ceil(n / c)`` rows (at most ``limit``): the tensors are zero-padded by fewer
    than ``c`` rows, for ``tf.map_fn`` to run one chunk after the other.

    Args:
        tensors: Tensors ``[n, ...]`` with the same ``n``.
        limit: Most rows in one chunk.

    Returns:
        One ``[c, ceil(n / c), ...]`` tensor per input; row ``i`` of the input is row ``i`` of their
        flattening ``[c * ceil(n / c), ...]``.
    """
    n = tf.shape(tensors[0])[0]
    n_chunks = tf.maximum(1, (n + limit - 1) // limit)
    size = tf.maximum(1, (n + n_chunks - 1) // n_chunks)
    chunked = []
    for tensor in tensors:
        rest = [tf.shape(tensor)[i] if d is None else d for i, d in enumerate(tensor.shape[1:], 1)]
        padding = [[0, n_chunks * size - n]] + [[0, 0]] * len(rest)
        chunked.append(tf.reshape(tf.pad(tensor, padding), [n_chunks, size, *rest]))
    return chunked


def _settings(
    model: keras.Model,
    info: RunInfo,
    config: Any,
    family: str,
    net: DeconvNet | None,
    *,
    max_seconds: float,
    max_deconv_seconds: float,
    max_batch_segments: int,
    top_k: int,
    budget: WorkBudget,
) -> _Settings:
    """Cross-checks the model against the run description and collects the module's settings."""
    sample_rate = info.audio.sample_rate
    if getattr(config, "sample_rate", sample_rate) != sample_rate:
        raise ExportError(
            f"the model was built for {config.sample_rate} Hz but run.json says {sample_rate} Hz; "
            "fix run.json (audio.sample_rate)"
        )
    n_outputs = int(model.outputs[0].shape[-1])
    if n_outputs != len(info.labels):
        raise ExportError(f"the model has {n_outputs} outputs but run.json lists {len(info.labels)} labels")
    if any("\n" in label or not label for label in info.labels):
        raise ExportError(f"label names must be non-empty single lines; got {list(info.labels)}")
    length = info.segment.length
    stft: dict[str, Any] | None = None
    mel: dict[str, Any] | None = None
    if isinstance(config, (ChoiConfig, MusicnnConfig, KerasConfig)):
        if info.stft != config.stft:
            described = "none" if info.stft is None else f"n_fft={info.stft.n_fft}, hop_length={info.stft.hop_length}"
            raise ExportError(
                f"run.json's STFT ({described}, from its model config) differs from "
                f"the model's (n_fft={config.n_fft}, hop_length={config.hop_length})"
            )
        if not isinstance(config, KerasConfig):
            # metadata.json keeps "win_length": null (the window is n_fft samples) for its readers
            stft = {"n_fft": config.n_fft, "hop_length": config.hop_length, "win_length": None,
                    "window": "hann", "center": True}
    if isinstance(config, MusicnnConfig):
        mel = {"n_mels": config.n_mels, "fmin": 0.0, "fmax": None, "power": 2.0, "norm": "slaney",
               "scale": "slaney"}
        frames = spectral.n_frames(length, n_fft=config.n_fft, hop_length=config.hop_length)
        if frames != config.n_frames:
            raise ExportError(
                f"a segment of {length} samples gives {frames} STFT frames but the model takes {config.n_frames}; "
                f"fix run.json (segment.length = {config.segment_length})"
            )
    elif isinstance(config, ChoiConfig):
        frames = spectral.n_frames(length, n_fft=config.n_fft, hop_length=config.hop_length)
        if frames != config.n_frames:
            raise ExportError(
                f"a segment of {length} samples gives {frames} STFT frames but the model takes {config.n_frames}; "
                f"fix run.json (segment.length)"
            )
    elif isinstance(config, KerasConfig):
        if length != config.segment_length:
            raise ExportError(f"run.json's segment length {length} differs from its model config's "
                              f"segment_length {config.segment_length}")
        if config.takes != "waveform":  # its mel block is what its auraliser resolved (ServingModule)
            stft = {"n_fft": config.n_fft, "hop_length": config.hop_length, "win_length": None, "window": "hann",
                    "center": True}
    else:
        assert isinstance(config, SampleCNNConfig)
        if length != config.input_length:
            raise ExportError(
                f"run.json's segment length {length} differs from the model's input length {config.input_length}"
            )
    # the library's one choice, for every family; an imported Keras model's, made at its import
    feature_layers = config.feature_layers if isinstance(config, KerasConfig) else feature_layer_names(config)
    max_samples = int(round(max_seconds * sample_rate))
    max_deconv_samples = int(round(max_deconv_seconds * sample_rate))
    for name, samples, seconds in (
        ("max_seconds", max_samples, max_seconds), ("max_deconv_seconds", max_deconv_samples, max_deconv_seconds),
        ("max_request_seconds", int(round(budget.max_request_seconds * sample_rate)), budget.max_request_seconds),
        ("max_deconv_feature_seconds", int(round(budget.max_deconv_feature_seconds * sample_rate)),
         budget.max_deconv_feature_seconds),
    ):
        if samples < length:
            raise ExportError(
                f"{name}={seconds:g} is shorter than one model segment ({_seconds(length, sample_rate)})"
            )
    if not (isinstance(max_batch_segments, int) and max_batch_segments >= 1):
        raise ExportError(f"max_batch_segments={max_batch_segments!r} is invalid: expected a positive integer")
    levels = tuple(net.levels) if net is not None else ()
    if isinstance(config, KerasConfig) and config.levels is not None and levels:  # the import's choice
        first, last = config.levels
        if last > levels[-1]:
            raise ExportError(f"run.json's model config asks for levels {first}-{last}, but the model has "
                              f"{levels[-1]}")
        levels = tuple(level for level in levels if first <= level <= last)
    if levels and list(levels) != list(range(levels[0], levels[-1] + 1)):
        raise ExportError(f"deconvolvable layers {levels} are not consecutive")
    return _Settings(
        family=family,
        sample_rate=sample_rate,
        segment_length=length,
        segment_hop=info.segment.step,
        max_samples=max_samples,
        max_deconv_seconds=float(max_deconv_seconds),
        max_deconv_samples=max_deconv_samples,
        min_deconv_samples=length,  # until the module knows its auraliser (ServingModule.__init__)
        max_batch_segments=max_batch_segments,
        max_request_samples=int(round(budget.max_request_seconds * sample_rate)),
        max_deconv_feature_samples=int(round(budget.max_deconv_feature_seconds * sample_rate)),
        budget=budget,
        stft=stft,
        mel=mel,
        top_k=max(1, min(top_k, len(info.labels))),
        levels=levels,
        features_per_layer={level: net.n_features(level) for level in levels} if net is not None else {},
        layer_names={level: net.layer_names[level] for level in levels} if net is not None else {},
        feature_layers=feature_layers,
        feature_channels=tuple(int((net.symbolic_output(name) if isinstance(config, KerasConfig) and net is not None
                                    else model.get_layer(name).output).shape[-1]) for name in feature_layers),
    )


def _keras_mel_metadata(config: KerasConfig, front: MelAuraliser) -> dict[str, Any]:
    """``metadata.json``'s ``mel`` of an imported spectrogram model: what it takes, as its auraliser resolved it
    (:meth:`~tfaural.auralise.MelAuraliser.describe`), and where its bands come from: only the settings that
    apply (a model with its own ``keras.layers.MelSpectrogram`` has no ``mel_norm`` or ``htk`` flags)."""
    mel: dict[str, Any] = {"takes": config.takes, "input_layer": config.front_end.input_layer, **front.describe()}
    layer = front.net.front_end
    if isinstance(layer, keras.layers.MelSpectrogram):
        top = layer.max_freq if layer.max_freq is not None else layer.sampling_rate / 2
        mel.update(filterbank=f"the model's keras.layers.MelSpectrogram {layer.name!r}", fmin=float(layer.min_freq),
                   fmax=float(top))
    elif isinstance(layer, keras.layers.STFTSpectrogram):
        mel.update(filterbank=f"none: the bins of the model's keras.layers.STFTSpectrogram {layer.name!r}")
    else:
        given = config.front_end
        if given.linear_frequency:
            mel.update(filterbank="none: the STFT's bins", linear_frequency=True)
        else:
            mel.update(filterbank="mel", linear_frequency=False, fmin=given.fmin, fmax=given.fmax, htk=given.htk,
                       mel_norm=given.mel_norm)
        mel.update(framing="centred" if given.center else "tf.signal.stft")  # the stft block has the window
    return mel


#: What one feature's auralisation of the longest ``auralise`` clip of an imported Keras model may hold
#: (:func:`tfaural.auralise.walk_bytes`): its ``max_deconv_seconds`` is capped to fit.
KERAS_WALK_BYTES = 2**30


def _keras_deconv_seconds(front: Auraliser, budget: WorkBudget, info: RunInfo) -> float:
    """The longest ``deconvolve``/``auralise`` clip of an imported Keras model: the budget's, or shorter where one
    feature's walk would hold more than :data:`KERAS_WALK_BYTES` (at least one segment, in whole seconds)."""
    rate, length = info.audio.sample_rate, info.segment.length
    per_second = max(walk_bytes(front, rate), 1)
    seconds = min(float(budget.max_deconv_seconds), max(1.0, float(KERAS_WALK_BYTES // per_second)))
    return max(seconds, length / rate)
