"""``python -m tfaural.listen``: hear what any Keras audio CNN has learnt, on your own audio files.

Usage::

    python -m tfaural.listen --model my_tagger.keras --output heard song.flac "other song.mp3" \\
        [--layers all|1-3] [--features top4|all|0-7,12] [--offset-seconds 30] [--clip-seconds 5] \\
        [--method deconvnet|guided|gradient] [--mode phase|mask] [--report] [--overwrite] \\
        [--sample-rate 16000 --n-fft 512 --hop-length 256 --n-mels 96 --power 2 \\
         --compression db|db-max|log10-1p:C|ln-1p:C|ln-offset:EPS|log10-offset:EPS|linear \\
         --top-db 80 --amin A --input-layer NAME --layout auto|mels_frames|frames_mels \\
         --fmin 0 --fmax F --htk --mel-norm slaney|none | --linear-frequency \\
         --no-center --frame-length N --n-mfcc N] \\
        [--trust-lambda] [--extra-levels block1_out,block2_out]

What the model takes is read from the file where the file says it; the front-end options say the rest:

* a model tfaural built (a training run's ``model.keras``, an imported musicnn tagger): everything;
* a model with a ``keras.layers.MelSpectrogram`` of its own: everything, read from that layer;
* a model with a ``keras.layers.STFTSpectrogram`` of its own (``magnitude`` or ``log`` mode, its
  DFT kernels untrained): ``--sample-rate``, the rest read from that layer and heard through its
  own frames (:class:`tfaural.auralise.KerasFrames`);
* a model on the mono waveform ``[samples(, 1)]``: ``--sample-rate``; its deconvolution is the sound (a
  stereo input ``[samples, 2]`` is refused: make a model of it that takes mono);
* a model on a mel (or STFT) spectrogram: ``--sample-rate``, ``--n-fft``, ``--hop-length``,
  ``--n-mels`` (or ``--linear-frequency``), ``--power`` and the mel bands (librosa's by default;
  ``--htk --mel-norm none --fmin 125 --fmax 7500`` for YAMNet's), and how it was compressed:
  ``--compression`` as your own preprocessing did it (``db`` for ``librosa.power_to_db``, ``db-max``
  for ``ref=np.max``, ``ln-offset:0.001`` for YAMNet's ``ln(m + 0.001)``, ...), or ``--input-layer``
  naming the model's own compression layer (then ``--compression`` says what it computes); frames
  as ``tf.signal.stft`` makes them (not centred) with ``--no-center`` (and ``--frame-length``, its
  ``frame_length``, where shorter than the FFT), MFCCs of it with ``--n-mfcc``; see
  :class:`tfaural.auralise.MelAuraliser`, which does the work.

A model with ``Lambda`` layers holds Python code, which Keras loads only when told to trust the
file: ``--trust-lambda``.

For each file, the excerpt ``[offset, offset + clip)`` is decoded (every format
:mod:`tfaural.audio` reads), mixed to mono and resampled to the model's rate; the chosen
features of each chosen layer are deconvolved and turned into sound, peak-normalised to 0.9,
``--features-per-call`` features at a time (fewer for long clips), and a clip whose deconvolution
would hold more than ``--max-memory-gib`` is refused with the longest that fits: memory stays
bounded however many features and however long a clip are asked for. A model built for one input
length hears clips of that length: a longer excerpt is cut, a shorter one (at least 0.5 s) zero-padded, and
its ``track.json`` says by how much (``padded_seconds``).
``--features topN`` takes the N features of each layer with the largest mean activation over the
files, found in a first pass that decodes each file once more. A file that cannot be used
(missing, corrupt, empty, silent, too short) is listed as failed in ``manifest.jsonl`` with the
reason, and the other files go on; the exit status is 0 when the run finished (2: bad options
or model).

The output folder has ``beam_jobs.auralise``'s layout, so ``python -m tfaural.report`` (or
``--report``) makes its HTML listening report::

    job.json                         the model file, settings, layers and features
    manifest.jsonl                   every file exactly once: ok with its outputs, or failed with the reason
    <name>/original.wav              the excerpt, at the model's rate
    <name>/layer<L>/feature<K>.wav   the auralised feature
    <name>/track.json                written last: every file with its SHA-256, activations, peaks
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfaural import __version__, files
from tfaural.cli import (
    EXTRA_LEVELS_HELP,
    HelpFormatter,
    add_front_end_flags,
    add_selection_flags,
    add_verbose_flag,
    check_output_folder,
    choose_features,
    front_end_from_args,
    layer_names,
    parse_index_list,
    positive_int,
)
from tfaural.config import DEFAULT_CLIP_SECONDS, FrontEndConfig
from tfaural.errors import DataError, ModelError, ParameterError, TfauralError, failure_reason
from tfaural.formats import (
    FAILED,
    JOB_FILE,
    MANIFEST_FILE,
    OK,
    TRACK_FILE,
    FeatureRecord,
    JobRecord,
    ManifestRow,
    TrackRecord,
    parse_manifest,
)

__all__ = ["FrontEnd", "load_model", "auraliser_for_model", "listen", "main"]

#: Default of ``--max-memory-gib``: what one feature's auralisation of a clip may hold
#: (:func:`tfaural.auralise.walk_bytes`).
DEFAULT_MAX_MEMORY_GIB = 4.0
#: Most output samples one call holds (``features × clip samples``, 256 MiB of float32): longer clips are
#: auralised fewer features at a time.
MAX_CALL_SAMPLES = 2**26
ORIGINAL = "original.wav"

#: What a model takes where its file does not say it: the front-end options (:class:`tfaural.config.FrontEndConfig`).
FrontEnd = FrontEndConfig


def load_model(path: str, *, trust_lambda: bool = False) -> Any:
    """Loads a ``.keras`` (or ``.h5``) model file, or the model of a run folder.

    A run folder's model comes with its run's config (:func:`tfaural.training.run.load_run`), so an imported
    Keras model (``python -m tfaural.pretrained keras``) needs no front-end options. A file's ``Lambda``
    layers load with ``trust_lambda`` (:func:`tfaural.models.keras_files.load_model_file`).

    Raises:
        ModelError: Naming the file: missing, unreadable, a SavedModel export, or holding ``Lambda`` code
            without ``trust_lambda``.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "run.json")):  # a training run, or an imported model
            from tfaural.training.run import load_run

            return load_run(path)[0]
        if os.path.isfile(os.path.join(path, "model.keras")):
            path = os.path.join(path, "model.keras")
        elif os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ModelError(f"--model {path}: is a SavedModel export; auralise an export with python -m "
                             f"beam_jobs.auralise --model {path} --input 'FILES' --output DIR")
    if not os.path.isfile(path):
        raise ModelError(f"--model {path}: no such file (expected a .keras model file or a training run's folder)")
    from tfaural.models.keras_files import load_model_file

    return load_model_file(path, trust_lambda=trust_lambda)


def auraliser_for_model(model: Any, front: FrontEndConfig, *, method: str = "deconvnet",
                        chunk_elements: int | None = None, extra_levels: Sequence[str] = ()) -> tuple[Any, int]:
    """The auraliser of ``model`` and the sample rate of its input (:func:`tfaural.auralise.auraliser_for_front_end`).

    Raises:
        ModelError: If the model is none of the kinds that function takes, or cannot be deconvolved.
        ParameterError: For missing, conflicting or invalid front-end options.
    """
    from tfaural.auralise import auraliser_for_front_end

    auraliser = auraliser_for_front_end(model, front, method=method, chunk_elements=chunk_elements,
                                        extra_levels=extra_levels)
    assert auraliser.sample_rate is not None
    return auraliser, int(auraliser.sample_rate)


def _write(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` atomically (:mod:`tfaural.files`); returns its SHA-256 (hex)."""
    files.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _wav(y: np.ndarray, sample_rate: int) -> bytes:
    from tfaural import audio

    return audio.encode(np.asarray(y, np.float32), sample_rate=sample_rate,
                        normalize=bool(np.max(np.abs(y), initial=0.0) > 1.0))


@dataclasses.dataclass(frozen=True)
class _Settings:
    layers: tuple[int, ...]
    features: str
    offset: float
    seconds: float
    samples: int | None  # the one length the model takes, if it is built for one
    shortest: int  # the fewest samples of an excerpt (a shorter track fails)
    mode: str
    per_call: int


def _clip(path: str, *, sample_rate: int, settings: _Settings) -> tuple[np.ndarray, int]:
    """The excerpt of ``path``, mono at ``sample_rate``: ``([samples], padding)``, zero-padded with ``padding``
    samples to a fixed-size model's length."""
    from tfaural import audio

    length = int(round(settings.seconds * sample_rate))
    y, _ = audio.load(path, sample_rate=sample_rate, offset=settings.offset, duration=settings.seconds,
                      min_samples=max(settings.shortest, min(length, sample_rate // 2)), require_sound=True)
    padding = 0
    if settings.samples is not None:
        padding = max(0, settings.samples - y.size)
        y = np.pad(y[: settings.samples], (0, padding))
    return y.astype(np.float32), padding


REPORT_FOLDER = "report"


def _track_folders(output: str) -> list[str]:
    """The folders in ``output`` that hold a ``track.json``."""
    if not os.path.isdir(output):
        return []
    return sorted(name for name in os.listdir(output) if os.path.isfile(os.path.join(output, name, TRACK_FILE)))


def _earlier_run(output: str) -> list[str]:
    """What of an earlier run ``output`` holds: its job.json, manifest.jsonl, report, track folders."""
    if not os.path.isdir(output):
        return []
    found = [name for name in (JOB_FILE, MANIFEST_FILE, REPORT_FOLDER) if os.path.exists(os.path.join(output, name))]
    return found + _track_folders(output)


def _remove_earlier_run(output: str) -> None:
    """Removes an earlier run's results (see :func:`listen`'s ``overwrite``); nothing else in ``output``."""
    import shutil

    if not os.path.isdir(output):
        return
    names = set(_track_folders(output))
    manifest = os.path.join(output, MANIFEST_FILE)
    if os.path.isfile(manifest):  # a damaged manifest: the track folders found above are what is removed
        with contextlib.suppress(DataError, UnicodeDecodeError), open(manifest, encoding="utf-8") as handle:
            names |= {row.name for row in parse_manifest(handle.read(), path=manifest) if row.name}
    for name in sorted(names | {REPORT_FOLDER}):
        folder = os.path.join(output, name)
        if os.path.isdir(folder) and os.path.dirname(os.path.abspath(folder)) == os.path.abspath(output):
            shutil.rmtree(folder)
    for name in (JOB_FILE, MANIFEST_FILE):
        if os.path.isfile(os.path.join(output, name)):
            os.remove(os.path.join(output, name))


def _inference_errors() -> tuple[type[BaseException], ...]:
    """What the model may raise on one file's clip that fails that file only (not the run)."""
    import tensorflow as tf

    return (TfauralError, ValueError, ArithmeticError, tf.errors.OpError)


def _failed(path: str, track_id: str, name: str, err: BaseException, stage: str) -> ManifestRow:
    return ManifestRow(path, track_id, name, FAILED, error=failure_reason(err), error_type=type(err).__name__,
                       stage=stage)


def listen(
    model_path: str,
    audio_paths: Sequence[str],
    output: str,
    *,
    front: FrontEndConfig | None = None,
    layers: str = "all",
    features: str = "top4",
    offset: float = 0.0,
    seconds: float | None = None,
    method: str = "deconvnet",
    mode: str = "phase",
    features_per_call: int = 16,
    trust_lambda: bool = False,
    report: bool = False,
    overwrite: bool = False,
    max_memory_gib: float = DEFAULT_MAX_MEMORY_GIB,
    progress: bool = True,
    extra_levels: Sequence[str] = (),
) -> dict[str, Any]:
    """Auralises features of a Keras model file on audio files (see the module docstring).

    Args:
        model_path: The ``.keras`` file.
        audio_paths: The audio files (each listed in the manifest exactly once; repeats are refused).
        output: The output folder (created if needed).
        front: What the model takes, where the file does not say it (``None``: nothing said).
        layers: ``all``, or levels such as ``1-3`` or ``2,5``.
        extra_levels: Layers to hear as levels after the conv blocks (``--extra-levels``; a transformer
            block's output, say): levels ``N + 1``, ... in this order.
        features: ``topN``, ``all``, or indices such as ``0-7,12``.
        offset: Start of each excerpt in seconds.
        seconds: Length of each excerpt (``None``: the model's input length, if fixed, else 4 s).
        method: ``deconvnet``, ``guided`` or ``gradient``.
        mode: ``phase`` or ``mask``.
        features_per_call: Features deconvolved at a time (fewer for long clips: at most
            :data:`MAX_CALL_SAMPLES` output samples per call).
        trust_lambda: Load ``Lambda`` layers' code.
        report: Write the HTML listening report into ``output/report``.
        overwrite: Replace an earlier run's results in ``output`` (without it, they are an error): its
            ``job.json``, ``manifest.jsonl``, report and the track folders its manifest names.
        max_memory_gib: Refuse clips whose deconvolution of one feature would hold more
            (:func:`tfaural.auralise.walk_bytes`).
        progress: Show progress bars.

    Returns:
        ``{"ok": n, "failed": n, "output": folder, "layers": {layer: features}, "report": index.html or None,
        "failures": ["path: ErrorType (stage): reason", ...]}``.

    Raises:
        ParameterError, ModelError: Bad options or model, before any file is decoded.
    """
    from tqdm.auto import tqdm

    from tfaural.auralise import MODES, checked_clip_samples, fixed_input_samples, walk_bytes
    from tfaural.data.catalogue import default_track_ids, output_names
    from tfaural.deconv import METHODS

    check_output_folder(output)
    earlier = _earlier_run(output)
    if earlier and not overwrite:
        raise ParameterError(f"--output {output} holds an earlier run's results ({', '.join(earlier[:3])}): pass "
                             "--overwrite to replace them, or choose another folder")
    if not (isinstance(max_memory_gib, (int, float)) and math.isfinite(max_memory_gib) and max_memory_gib > 0):
        raise ParameterError(f"--max-memory-gib {max_memory_gib!r} is invalid: expected a positive number")
    if not (isinstance(features_per_call, int) and features_per_call >= 1):
        raise ParameterError(f"--features-per-call {features_per_call!r} is invalid: expected a positive integer")
    if not audio_paths:
        raise ParameterError("no audio files given: name one or more after the options")
    if len(set(audio_paths)) != len(audio_paths):
        repeated = sorted({p for p in audio_paths if audio_paths.count(p) > 1})
        raise ParameterError(f"audio files named more than once: {', '.join(repeated)}")
    if method not in METHODS:
        raise ParameterError(f"--method {method!r} is invalid: expected one of {METHODS}")
    if mode not in MODES:
        raise ParameterError(f"--mode {mode!r} is invalid: expected one of {MODES}")
    if not (math.isfinite(offset) and offset >= 0):
        raise ParameterError(f"--offset-seconds {offset!r} is invalid: expected seconds >= 0")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ParameterError(f"--clip-seconds {seconds!r} is invalid: expected a positive number of seconds")
    front = front if front is not None else FrontEndConfig()
    model = load_model(model_path, trust_lambda=trust_lambda)
    auraliser, sample_rate = auraliser_for_model(model, front, method=method, extra_levels=extra_levels)
    net = auraliser.net
    levels = list(parse_index_list(layers, flag="--layers", valid=net.levels))
    widths = {level: net.n_features(level) for level in levels}
    for level in levels:
        choose_features(features, n_maps=widths[level], layer=level)  # its syntax and range, before any decoding
    samples = fixed_input_samples(auraliser)
    if seconds is None:
        seconds = samples / sample_rate if samples is not None else DEFAULT_CLIP_SECONDS
    clip_samples = samples if samples is not None else int(round(seconds * sample_rate))
    shortest = 1  # a fixed-size model's excerpt is zero-padded to its length
    if samples is None:  # the shortest excerpt whose maps at the deepest chosen layer are not empty
        shortest = checked_clip_samples(auraliser, levels, samples=clip_samples, sample_rate=sample_rate)
    needed = walk_bytes(auraliser, clip_samples)
    if needed > max_memory_gib * 2**30:
        longest = clip_samples * max_memory_gib * 2**30 / needed / sample_rate
        raise ParameterError(
            f"--clip-seconds {seconds:g}: one feature's deconvolution of a clip this long holds about "
            f"{needed / 2**30:.1f} GiB (--max-memory-gib {max_memory_gib:g}); clips up to {longest:.0f} s fit, "
            "or raise --max-memory-gib if the machine has the memory"
        )
    features_per_call = max(1, min(features_per_call, MAX_CALL_SAMPLES // max(clip_samples, 1)))
    settings = _Settings(tuple(levels), features, float(offset), float(seconds), samples, shortest, mode,
                         features_per_call)
    ids = default_track_ids(list(audio_paths))
    names = output_names(ids, reserved=[JOB_FILE, MANIFEST_FILE, REPORT_FOLDER])
    _remove_earlier_run(output)
    os.makedirs(output, exist_ok=True)

    chosen: dict[int, list[int]] = {}
    errors: dict[str, tuple[BaseException, str]] = {}
    if features.strip().lower().startswith("top"):  # the first pass: each layer's activations on every file
        maxima: dict[int, list[np.ndarray]] = {level: [] for level in levels}
        for path in tqdm(audio_paths, desc="choosing features", unit="file", disable=not progress):
            try:
                clip, _ = _clip(path, sample_rate=sample_rate, settings=settings)
            except TfauralError as err:
                errors[path] = (err, "decode")
                continue
            try:
                per_layer = net.activations(auraliser.model_input(clip[None]), layers=levels)
            except _inference_errors() as err:
                errors[path] = (err, "inference")
                continue
            for level in levels:
                maxima[level].append(np.asarray(per_layer[level])[0])
        for level in levels:
            mean = np.stack(maxima[level]).mean(axis=0).tolist() if maxima[level] else None
            chosen[level] = sorted(choose_features(features, n_maps=widths[level], layer=level, mean_activation=mean))
    else:
        chosen = {level: choose_features(features, n_maps=widths[level], layer=level) for level in levels}

    rows: list[ManifestRow] = []
    for path, track_id, name in tqdm(list(zip(audio_paths, ids, names)), desc="auralising", unit="file",
                                     disable=not progress):
        if path in errors:
            rows.append(_failed(path, track_id, name, *errors[path]))
            continue
        rows.append(_listen_to(path, track_id, name, auraliser, output, sample_rate=sample_rate, settings=settings,
                               chosen=chosen))

    model_file = os.path.abspath(model_path)
    record = JobRecord(
        job="auralise", created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        tfaural_version=__version__, input=None, manifest=None, model_dir=None,
        model={"model_file": model_file, "name": model.name}, metadata=None,
        settings={"model_file": model_file, "method": method, "mode": mode, "sample_rate": sample_rate,
                  "front_end": dataclasses.asdict(front),
                  **({"extra_levels": list(extra_levels)} if extra_levels else {})},
        extra={"layers": levels, "layer_names": {str(level): net.layer_names[level] for level in levels},
               "features": {str(k): v for k, v in chosen.items()}, "mode": mode,
               "clip_seconds": settings.seconds, "offset_seconds": settings.offset, "format": "wav",
               "spectrograms": False},
    )
    _write(os.path.join(output, JOB_FILE), record.to_text().encode("utf-8"))
    _write(os.path.join(output, MANIFEST_FILE),
                      "".join(row.to_line() for row in rows).encode("utf-8"))
    index = None
    if report:
        from tfaural.report.site import write_report

        index = write_report(output, progress=progress)
    return {"ok": sum(r.status == OK for r in rows), "failed": sum(r.status == FAILED for r in rows),
            "output": output, "layers": {str(k): v for k, v in chosen.items()}, "report": index,
            "failures": [f"{r.path}: {r.describe_failure()}" for r in rows if r.status == FAILED]}


def _listen_to(path: str, track_id: str, name: str, auraliser: Any, output: str, *, sample_rate: int,
               settings: _Settings, chosen: dict[int, list[int]]) -> ManifestRow:
    """Auralises one file; its manifest row (failed with the reason, or ok with every file written)."""

    try:
        clip, padding = _clip(path, sample_rate=sample_rate, settings=settings)
    except TfauralError as err:
        return _failed(path, track_id, name, err, "decode")
    folder = os.path.join(output, name)
    results: dict[int, list[tuple[int, np.ndarray, float, float | None, bool]]] = {}
    try:
        for level in settings.layers:
            results[level] = []
            wanted = chosen[level]
            for start in range(0, len(wanted), settings.per_call):
                group = wanted[start : start + settings.per_call]
                heard = auraliser(clip[None], layer=level, features=group, mode=settings.mode,
                                  keep_deconvolved=False)
                audio_k = heard.audio.numpy()[0]
                activation = None if heard.activation is None else heard.activation.numpy()[0]
                for k, feature in enumerate(group):
                    results[level].append((feature, audio_k[k], float(heard.peak.numpy()[0, k]),
                                           None if activation is None else float(activation[k]),
                                           bool(heard.silent.numpy()[0, k])))
    except _inference_errors() as err:
        return _failed(path, track_id, name, err, "inference")
    try:
        checksums = {ORIGINAL: _write(os.path.join(folder, ORIGINAL), _wav(clip, sample_rate))}
        layers: dict[int, tuple[FeatureRecord, ...]] = {}
        for level, items in results.items():
            entries = []
            for feature, y, peak, activation_value, silent in items:
                relative = f"layer{level}/feature{feature}.wav"
                checksums[relative] = _write(os.path.join(folder, relative), _wav(y, sample_rate))
                entries.append(FeatureRecord(feature=feature, file=relative, activation=activation_value, peak=peak,
                                             silent=silent))
            layers[level] = tuple(entries)
        track = TrackRecord(track_id=track_id, path=path, sample_rate=sample_rate, offset_seconds=settings.offset,
                            clip_seconds=len(clip) / sample_rate, original=ORIGINAL, original_spectrogram=None,
                            layers=layers, checksums=checksums, padded_seconds=padding / sample_rate)
        _write(os.path.join(folder, TRACK_FILE), track.to_text().encode("utf-8"))
    except (OSError, TfauralError) as err:
        return _failed(path, track_id, name, err, "write")
    outputs = [f"{name}/{file}" for file in sorted(checksums)] + [f"{name}/{TRACK_FILE}"]
    return ManifestRow(path, track_id, name, OK, outputs=tuple(outputs))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: the run finished, 2: bad options or model)."""
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.listen",
        description="Hear what any Keras audio CNN has learnt: deconvolve the features of its layers on your audio "
        "files and turn them into sound (Choi et al. 2015). Writes beam_jobs.auralise's output layout, which "
        "python -m tfaural.report turns into an HTML listening report (or pass --report).",
        epilog="Front-end options are needed only where the model file does not say what it takes (see "
        "python -m pydoc tfaural.listen).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("audio", nargs="+", metavar="FILE", help="audio files (any format tfaural.audio reads)")
    parser.add_argument("--model", required=True, help="the Keras model file (.keras), or a training run's folder")
    parser.add_argument("--output", required=True, help="folder for the auralisations")
    add_selection_flags(parser, layers_help="levels (conv blocks, then --extra-levels): all, 1-3, 2,5",
                        clip_help="excerpt length (default: the model's input length if it has one, else 4 s; at "
                                  "least what the deepest chosen layer needs, which the error names)")
    parser.add_argument("--method", default="deconvnet", choices=("deconvnet", "guided", "gradient"),
                        help="the deconvolution's rule at activations")
    parser.add_argument("--mode", default="phase", choices=("phase", "mask"),
                        help="the deconvolved magnitude with the excerpt's phase, or as a soft mask")
    parser.add_argument("--features-per-call", type=positive_int, default=16,
                        help="features deconvolved at a time (bounds memory)")
    parser.add_argument("--report", action="store_true", help="write the HTML listening report into OUTPUT/report")
    parser.add_argument("--max-memory-gib", type=float, default=DEFAULT_MAX_MEMORY_GIB,
                        help="refuse clips whose deconvolution of one feature would hold more (GiB)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's results in OUTPUT (its job.json, manifest, report, tracks)")
    parser.add_argument("--trust-lambda", action="store_true",
                        help="load a model with Lambda layers (Python code in the file: only files you trust)")
    parser.add_argument("--extra-levels", type=layer_names, default=(), metavar="LAYERS", help=EXTRA_LEVELS_HELP)
    add_front_end_flags(parser)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        settings = front_end_from_args(args)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = listen(
            args.model, args.audio, args.output, front=settings, layers=args.layers, features=args.features,
            offset=args.offset_seconds, seconds=args.clip_seconds, method=args.method, mode=args.mode,
            features_per_call=args.features_per_call, trust_lambda=args.trust_lambda, report=args.report,
            overwrite=args.overwrite, max_memory_gib=args.max_memory_gib, extra_levels=args.extra_levels,
        )
    except (ParameterError, ModelError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = summary["ok"] + summary["failed"]
    print(f"listen: {summary['ok']} of {total} file(s) ok" + (f", {summary['failed']} failed" if summary["failed"]
                                                            else "") + f"; results in {summary['output']}")
    for line in summary["failures"]:
        print(f"  failed: {line}", file=sys.stderr)
    for layer, chosen in summary["layers"].items():
        print(f"  layer {layer}: features {chosen}")
    if summary["report"]:
        print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
