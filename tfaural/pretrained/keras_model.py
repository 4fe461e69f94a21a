"""Any Keras audio CNN imported as a tfaural run: ``python -m tfaural.pretrained my_tagger.keras --output runs/mine``.

The model file holds the architecture and weights; what it does not hold — how a waveform
becomes the model's input (the front end), the length of one input, the label names — is
given at import (the flags of ``python -m tfaural.listen``) and written into ``run.json`` as a
:class:`~tfaural.config.KerasConfig`. From then on the run is like any other: ``python -m
export`` makes a SavedModel with every signature (tagging, features, deconvolution,
auralisation, attribution), and the Beam jobs tag, extract features from and auralise whole
catalogues with it.

The import checks, before anything is written:

* the front end: the model is one :func:`tfaural.auralise.auraliser_for_front_end` can hear
  (a waveform model, one with its own ``keras.layers.MelSpectrogram``, or one on a spectrogram
  made as the flags say), with every missing or conflicting flag named;
* the input length: the model's own when it is built for one (a flattening head); otherwise
  ``segment_seconds`` (the patch it was trained on) is required;
* one forward pass on a segment of noise gives one output vector ``[1, n_outputs]``, with as
  many labels as outputs;
* the outputs: a last layer without an activation gives logits, served as they are unless
  ``scores`` (``--scores softmax|sigmoid``) turns them into probabilities (an ``Activation`` layer
  added to the run's model; the import says so when the flag is missing);

and after writing, that the saved ``model.keras`` reloads (as ``load_run`` will) and gives the
same outputs as the file it came from (``max |Δ|`` recorded in ``run.json``). ``run.json`` also records the
clips its export will deconvolve (``extra.imported.clips``: the shortest, and the longest where its layers take
only the model's own length).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfaural.config import AudioConfig, FrontEndConfig, KerasConfig, SegmentConfig
from tfaural.errors import ModelError, ParameterError, TfauralError
from tfaural.training.run import INFO_FILE, MODEL_FILE, RunInfo, load_run, save_run, write_run_info

__all__ = ["import_keras_model", "read_labels", "FEATURE_LEVELS", "REPRODUCTION_TOLERANCE"]


#: How many of the model's top deconvolvable levels the ``features`` signature pools by default.
FEATURE_LEVELS = 3
#: More levels than this get a warning at import (their export traces each level's walk: see ``--levels``).
MANY_LEVELS = 12
#: Largest difference allowed between the outputs of the saved run and of the file it came from.
REPRODUCTION_TOLERANCE = 1e-5
#: What ``--scores`` makes of a model's outputs: as they are, or probabilities of logits.
SCORES = ("as-is", "softmax", "sigmoid")


#: Activation functions' ``__name__`` -> the probabilities they give (``tf.nn.softmax`` is ``softmax_v2``).
_PROBABILITY_FUNCTIONS = {"softmax": "softmax", "softmax_v2": "softmax", "sigmoid": "sigmoid"}


def _output_layer(model: Any) -> Any:
    """The layer that gives ``model``'s (first) output: the one its output tensor comes from, else its last."""
    history = getattr(model.outputs[0], "_keras_history", None) if getattr(model, "outputs", None) else None
    layer = getattr(history, "operation", None)
    return layer if layer is not None else model.layers[-1]


def _output_activation(model: Any) -> str | None:
    """The name of the output layer's activation: ``"softmax"`` or ``"sigmoid"`` (probabilities), ``"linear"``
    (none: logits), another function's name, or ``None`` if the layer has none.

    A ``keras.layers.Softmax`` over the last axis is ``"softmax"``, as are ``Dense(..., activation="softmax")``,
    ``Activation("softmax")`` and ``Activation(keras.activations.softmax)``; likewise for sigmoid.
    """
    import keras

    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(model.outputs[0].shape)
        return "softmax" if [axis % rank for axis in axes] == [rank - 1] else None
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if name is None:
        return None
    return _PROBABILITY_FUNCTIONS.get(str(name), str(name))


def _with_scores(model: Any, scores: str, *, activation: str | None) -> Any:
    """``model`` with ``scores`` (``softmax`` or ``sigmoid``) applied to its output, by an ``Activation`` layer.

    Raises:
        ParameterError: If its last layer already gives probabilities.
    """
    import keras

    if activation in ("softmax", "sigmoid"):
        raise ParameterError(f"--scores {scores}: model {model.name!r}'s last layer {_output_layer(model).name!r} "
                             f"already applies {activation}: its outputs are probabilities (leave --scores out)")
    taken = {layer.name for layer in model.layers}
    name, i = f"{scores}_scores", 0
    while name in taken:
        i += 1
        name = f"{scores}_scores_{i}"
    return keras.Model(model.inputs, keras.layers.Activation(scores, name=name)(model.outputs[0]), name=model.name)


def read_labels(spec: str | Sequence[str] | None, n_outputs: int) -> tuple[str, ...]:
    """Label names from a file (one per line), a comma-separated list, or ``None`` (``output0``, ``output1``, ...).

    Raises:
        ParameterError: If the count differs from ``n_outputs``, or a name is empty or repeated.
    """
    if spec is None:
        return tuple(f"output{i}" for i in range(n_outputs))
    if isinstance(spec, str):
        if os.path.isfile(spec):
            with open(spec, encoding="utf-8") as handle:
                names = [line.strip() for line in handle if line.strip()]
            where = f"--labels {spec}"
        else:
            names = [part.strip() for part in spec.split(",")]
            where = "--labels"
    else:
        names, where = [str(name).strip() for name in spec], "labels"
    if len(names) != n_outputs:
        raise ParameterError(f"{where}: {len(names)} label name(s) for a model with {n_outputs} outputs; give one "
                             "name per output, in output order (a file with one per line, or a comma-separated list)")
    if any(not name for name in names) or len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ParameterError(f"{where}: label names must be non-empty and distinct"
                             + (f" ({', '.join(repeated)} repeat)" if repeated else ""))
    return tuple(names)


def _takes(auraliser: Any) -> tuple[str, int | None, int | None]:
    """``(takes, n_fft, hop_length)`` of an auraliser of :func:`tfaural.auralise.auraliser_for_front_end`."""
    from tfaural.auralise import MelAuraliser

    if not isinstance(auraliser, MelAuraliser):
        return "waveform", None, None
    takes = "spectrogram"
    if auraliser.takes == "waveform":
        takes = "keras mel" if auraliser.keras_frames is None else "keras stft"
    return takes, auraliser.n_fft, auraliser.hop_length


def _segment_length(auraliser: Any, *, segment_seconds: float | None, sample_rate: int, model_name: str) -> int:
    """Samples of one model input: the model's own, or ``segment_seconds`` in whole frames (centred ones:
    ``(frames - 1) × hop``; ``tf.signal.stft``'s: ``(frames - 1) × hop + frame_length``)."""
    from tfaural.auralise import fixed_input_samples

    fixed = fixed_input_samples(auraliser)
    if fixed is not None:
        if segment_seconds is not None and abs(segment_seconds * sample_rate - fixed) >= 1:
            raise ParameterError(f"--segment-seconds {segment_seconds:g}: model {model_name!r} is built for inputs of "
                                 f"{fixed} samples ({fixed / sample_rate:g} s at {sample_rate} Hz); leave it out")
        return fixed
    if segment_seconds is None:
        raise ParameterError(f"model {model_name!r} takes inputs of any length: pass --segment-seconds, the length "
                             "of the patches it was trained on (a clip is tagged patch by patch, and the scores "
                             "averaged)")
    if not (np.isfinite(segment_seconds) and segment_seconds > 0):
        raise ParameterError(f"--segment-seconds {segment_seconds!r} is invalid: expected a positive number")
    samples = int(round(segment_seconds * sample_rate))
    takes, _, hop = _takes(auraliser)
    if takes == "spectrogram" and auraliser.keras_frames is not None:  # tf.signal.stft's frames: the whole ones
        frames = max(1, 1 + int(round((samples - auraliser.keras_frames.frame_length) / hop)))
        return int(auraliser.clip_samples(frames)[0])
    if hop is not None:  # whole frames: (frames - 1) hops give `frames` centred frames
        samples = max(1, int(round(samples / hop))) * hop
    return samples


def _levels(spec: str | None, available: Sequence[int]) -> tuple[int, int] | None:
    """``(first, last)`` of a ``--levels`` range such as ``1-12`` (``None``: all)."""
    if spec is None:
        return None
    from tfaural.cli import parse_index_list

    chosen = parse_index_list(spec, flag="--levels", valid=list(available))
    if list(chosen) != list(range(chosen[0], chosen[-1] + 1)):
        raise ParameterError(f"--levels {spec}: expected a range of consecutive levels such as 1-8 (the export's "
                             "deconvolve and auralise take one of a range)")
    return chosen[0], chosen[-1]


def _outputs(model: Any, x: Any) -> np.ndarray:
    outputs = model(x, training=False)
    if isinstance(outputs, (list, tuple, dict)):
        raise ModelError(f"model {model.name!r} has {len(outputs)} outputs; a tagger with one output vector "
                         "[batch, n_outputs] can be imported (make a model of the one you want: "
                         "keras.Model(model.inputs, model.outputs[i]))")
    return np.asarray(outputs)


def import_keras_model(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    front: FrontEndConfig,
    labels: str | Sequence[str] | None = None,
    task: str | None = None,
    scores: str = "as-is",
    segment_seconds: float | None = None,
    hop_seconds: float | None = None,
    feature_layers: Sequence[str] | None = None,
    levels: str | None = None,
    trust_lambda: bool = False,
    overwrite: bool = False,
    extra_levels: Sequence[str] = (),
) -> tuple[Any, RunInfo]:
    """Imports a Keras model file as a run directory (module docstring).

    Args:
        model_path: The ``.keras`` (or ``.h5``) file.
        output: The run directory to write (``model.keras`` + ``run.json``).
        front: What the model takes where its file does not say it (``sample_rate`` at least).
        labels: Label names (:func:`read_labels`; ``None``: ``output0``, ``output1``, ...).
        task: ``"multi-label"`` or ``"single-label"`` (``None``: single-label for a softmax output layer or
            ``scores="softmax"``).
        scores: ``"as-is"``, or ``"softmax"``/``"sigmoid"``: the probabilities of a model whose last layer gives
            logits (:data:`SCORES`; the run's model gets an ``Activation`` layer).
        segment_seconds: Length of one model input, for a model that takes any length.
        hop_seconds: Hop between a clip's segments (``None``: the segment length, contiguous).
        feature_layers: Layers the ``features`` signature pools (``None``: the top :data:`FEATURE_LEVELS`
            deconvolvable levels).
        levels: ``"first-last"``: the levels an export deconvolves and auralises (``None``: all; a model of
            more than :data:`MANY_LEVELS` gets a warning: each level's walk is traced into the export).
        trust_lambda: Load (and later reload) ``Lambda`` layers' code.
        overwrite: Replace a run already in ``output``.
        extra_levels: Layers to hear as levels after the conv blocks (``--extra-levels``; levels ``N + 1``, ...).

    Returns:
        ``(keras_model, info)`` as :func:`tfaural.training.run.load_run` returns them.

    Raises:
        ModelError: The file cannot be loaded or used (named).
        ParameterError: Missing, conflicting or invalid settings (named as flags).
    """
    from tfaural.auralise import auraliser_for_front_end, longest_clip_samples, shortest_clip_samples
    from tfaural.models.keras_files import load_model_file

    source, root = os.fspath(model_path), os.fspath(output)
    if os.path.exists(os.path.join(root, INFO_FILE)) and not overwrite:
        raise ModelError(f"{root!r} already holds a run ({INFO_FILE}); choose another --output or pass --overwrite")
    if front.sample_rate is None:
        raise ParameterError("pass the model's --sample-rate (in Hz): every imported model needs it")
    if scores not in SCORES:
        raise ParameterError(f"--scores {scores!r} is invalid: expected one of {', '.join(SCORES)}")
    model = load_model_file(source, trust_lambda=trust_lambda, flag="model")
    if getattr(model, "tfaural_config", None) is not None:
        raise ModelError(f"{source}: model {model.name!r} was built by tfaural and already is a run's model; "
                         "export its run (python -m export --run RUN_DIR) instead of importing it")
    activation = _output_activation(model)
    if scores != "as-is":
        model = _with_scores(model, scores, activation=activation)
    elif activation == "linear":
        warnings.warn(f"model {model.name!r}'s last layer {_output_layer(model).name!r} has no activation: its "
                      "outputs are logits, and the export serves them as they are; --scores softmax (one label per "
                      "clip: a model trained with from_logits=True and a categorical loss) or --scores sigmoid "
                      "(independent tags) serves probabilities", stacklevel=2)
    auraliser = auraliser_for_front_end(model, front, extra_levels=extra_levels)
    takes, n_fft, hop_length = _takes(auraliser)
    sample_rate = int(front.sample_rate)
    if takes != "waveform" and auraliser.sample_rate != sample_rate:
        raise ParameterError(f"--sample-rate {sample_rate}: the model's MelSpectrogram layer has sampling_rate="
                             f"{auraliser.sample_rate}")
    length = _segment_length(auraliser, segment_seconds=segment_seconds, sample_rate=sample_rate,
                             model_name=model.name)
    hop = None
    if hop_seconds is not None:
        if not (np.isfinite(hop_seconds) and hop_seconds > 0):
            raise ParameterError(f"--hop-seconds {hop_seconds!r} is invalid: expected a positive number")
        hop = max(1, int(round(hop_seconds * sample_rate)))
        hop = None if hop == length else hop

    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (1, length)).astype(np.float32)
    x = auraliser.model_input(noise)
    try:
        outputs = _outputs(model, x)
    except ModelError:
        raise
    except Exception as err:  # the model refused the input its front end makes: say what was fed
        raise ModelError(f"model {model.name!r} refused a {length}-sample segment as its front end makes it "
                         f"(shape {tuple(x.shape)}): {type(err).__name__}: {str(err).strip().splitlines()[0]}"
                         ) from None
    if outputs.ndim != 2 or outputs.shape[0] != 1:
        raise ModelError(f"model {model.name!r} gives outputs of shape {outputs.shape[1:]} per input; a tagger gives "
                         "one vector [n_outputs] per input (pool or flatten over time inside the model)")
    n_outputs = int(outputs.shape[1])
    names = read_labels(labels, n_outputs)
    if task is None:
        task = "single-label" if "softmax" in (activation, scores) else "multi-label"
    net = auraliser.net
    if feature_layers is None:
        chosen = tuple(net.layer_names[level] for level in net.levels[-FEATURE_LEVELS:])
    else:
        chosen = tuple(feature_layers)
        unknown = []
        for name in chosen:  # nested models' layers (a keras.applications backbone) count
            try:
                net.symbolic_output(name)
            except TfauralError:
                unknown.append(name)
        if unknown or not chosen:
            raise ParameterError(f"--feature-layers {','.join(chosen)}: model {model.name!r} has no layer(s) "
                                 f"{unknown}; its deconvolvable levels are "
                                 f"{', '.join(net.layer_names[level] for level in net.levels)}")
    span = _levels(levels, net.levels)
    if span is None and len(net.levels) > MANY_LEVELS:
        warnings.warn(f"model {model.name!r} has {len(net.levels)} levels; its export traces the deconvolution of "
                      "each, so its time and memory grow with levels x depth (a deep backbone's can need many GiB); "
                      f"pass --levels 1-{MANY_LEVELS} (or another range) to export fewer", stacklevel=2)
    exported = list(range(span[0], span[1] + 1)) if span else list(net.levels)
    clips = {"shortest_samples": min(shortest_clip_samples(auraliser, exported, guess=length), length),
             "longest_samples": longest_clip_samples(auraliser, exported)}  # what the export will take
    config = KerasConfig(front_end=front, takes=takes, n_fft=n_fft, hop_length=hop_length, n_outputs=n_outputs,
                         segment_length=length, feature_layers=chosen, levels=span, trust_lambda=bool(trust_lambda),
                         source=os.path.basename(source), extra_levels=tuple(extra_levels))
    with open(source, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    info = RunInfo(
        model=config, labels=names, task=task, audio=AudioConfig(sample_rate=sample_rate),
        segment=SegmentConfig(length=length, hop=hop),
        extra={"imported": {"file": os.path.abspath(source), "sha256": digest, "model_name": model.name,
                            "levels": {str(level): net.layer_names[level] for level in net.levels},
                            "clips": clips, "output_activation": activation, "scores": scores}},
    )
    save_run(root, model, info)
    reloaded, info = load_run(root)
    difference = float(np.max(np.abs(_outputs(reloaded, x) - outputs)))
    if not difference <= REPRODUCTION_TOLERANCE:
        for name in (INFO_FILE, MODEL_FILE):  # not a run any tool should take
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(root, name))
        raise ModelError(f"{root}: the saved model gives outputs {difference:.3g} away from {source}'s (tolerance "
                         f"{REPRODUCTION_TOLERANCE:g}); the file does not survive Keras's save and reload")
    info = dataclasses.replace(info, extra={**info.extra, "imported": {
        **info.extra["imported"], "reproduction_max_abs_difference": difference}})
    write_run_info(root, info)
    return reloaded, info

