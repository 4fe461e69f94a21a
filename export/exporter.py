"""Training run -> versioned SavedModel: ``EXPORT_BASE/<N>/``, TF Serving's layout.

:func:`export_run` (and :func:`export_model` for an in-memory model) writes::

    EXPORT_BASE/<N>/saved_model.pb, variables/      the ServingModule and its signatures
    EXPORT_BASE/<N>/assets/labels.txt                label names, one per line, in output order
    EXPORT_BASE/<N>/assets/metadata.json             everything a consumer needs (export.metadata)
    EXPORT_BASE/<N>/assets.extra/tf_serving_warmup_requests   one PredictionLog per signature
    EXPORT_BASE/<N>/assets.extra/tfaural_reference.npz        warm-up inputs + Keras outputs (export.verify)
    EXPORT_BASE/<N>/assets.extra/tfaural_verification.json    the verification report (when verified)
    EXPORT_BASE/<N>/assets.extra/signatures/<name>/           serving_default and features alone, for the
                                                              jobs (export.signature_models)

Versioning: ``N`` is the next free integer (``1`` for an empty base) unless
given; an existing version is never overwritten. Everything is written into
``EXPORT_BASE/.tmp-<uuid>/`` (TF Serving ignores non-numeric directories),
verified there (:func:`export.verify.verify_export`), and only then renamed to
``EXPORT_BASE/<N>``; on any failure the temporary directory is deleted and
:class:`~tfaural.errors.ExportError` is raised, so a crash or a failed check
never leaves a half-written version. The temporary folders are named after their
owner process (:mod:`export.cleanup`), and each export first removes those of
exports that were killed (``SIGKILL`` leaves no chance to clean up).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from export.budget import WorkBudget
from export.cleanup import STAGING_PREFIX, remove_stale, remove_stale_temp_dirs, staging_name, temp_prefix
from export.metadata import build_metadata, write_metadata_files
from export.module import (
    DEFAULT_MAX_SECONDS,
    ServingModule,
)
from export.signature_models import signature_savedmodel_paths, write_signature_savedmodels
from export.verify import REFERENCE_FILE, Processes, save_reference, verify_export
from export.warmup import warmup_inputs, write_warmup_file
from tfaural.config import ChoiConfig, KerasConfig, MusicnnConfig
from tfaural.errors import ExportError
from tfaural.training.run import RunInfo, load_run

__all__ = ["export_run", "export_model", "build_module", "existing_versions", "next_version", "VERIFICATION_FILE"]

#: The verification report written into a verified export.
VERIFICATION_FILE = os.path.join("assets.extra", "tfaural_verification.json")

logger = logging.getLogger(__name__)


def existing_versions(export_base: str | os.PathLike[str]) -> list[int]:
    """The integer version directories under ``export_base``, ascending."""
    base = os.fspath(export_base)
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base) if name.isdigit() and os.path.isdir(os.path.join(base, name)))


def next_version(export_base: str | os.PathLike[str]) -> int:
    """One more than the highest existing version (1 for a new base)."""
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def build_module(
    model: keras.Model,
    info: RunInfo,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_deconv_seconds: float | None = None,
    max_batch_segments: int | None = None,
    budget: WorkBudget | None = None,
    signatures: str | Sequence[str] | None = None,
) -> tuple[ServingModule, dict[str, Any]]:
    """Builds the serving module and its metadata (nothing is written).

    Args:
        model: A trained Choi CNN or SampleCNN-family model.
        info: Its run description.
        max_seconds: Longest input of the scoring and feature signatures.
        max_deconv_seconds: Longest input (batch x length) of ``deconvolve``/``auralise`` (``None``: the
            budget's).
        max_batch_segments: Most segments run through the model at once (``None``: the family's budget's).
        budget: Per-call budgets (``None``: the family's, :data:`export.budget.FAMILY_BUDGETS`).
        signatures: The signatures to export (``None``: all; ``"tagging"``: the scoring and feature
            signatures alone; or a list: :func:`export.metadata.resolve_signatures`).

    Returns:
        ``(module, metadata)``.
    """
    module = ServingModule(
        model, info, max_seconds=max_seconds, max_deconv_seconds=max_deconv_seconds,
        max_batch_segments=max_batch_segments, budget=budget, signatures=signatures,
    )
    settings = module.settings
    config = module.model_config
    input_scaling = None
    deconv_shape: list[Any] = ["batch", "k", "samples"]
    if isinstance(config, ChoiConfig):
        input_scaling = {"mode": config.input_scaling, "log_c": config.log_c}
        deconv_shape = ["batch", "k", "freq", "frames"]
    elif settings.family == "mel-frame":
        deconv_shape = ["batch", "k", "mels", "frames"]
    elif isinstance(config, MusicnnConfig):
        input_scaling = {"mode": "log10", "log_c": config.log_c}
        deconv_shape = ["batch", "k", "mels", "frames"]
    elif isinstance(config, KerasConfig):
        # the model's input domain (or its front end's output), as the deconvolution network has it
        deconv_shape = ["batch", "k", *("frames" if d is None else int(d) for d in module.deconvolved_shape)]
        if config.front_end.compression is not None:
            input_scaling = {"mode": config.front_end.compression}
    feature_levels = [
        {"name": f"level{i}", "layer": name, "channels": channels}
        for i, (name, channels) in enumerate(zip(settings.feature_layers, settings.feature_channels), start=1)
    ]
    metadata = build_metadata(
        info,
        family=settings.family,
        stft=settings.stft,
        input_scaling=input_scaling,
        mel=settings.mel,
        max_seconds=max_seconds,
        max_deconv_seconds=settings.max_deconv_seconds,
        min_deconv_samples=settings.min_deconv_samples,
        budget=settings.budget,
        deconvolvable_layers=settings.levels,
        features_per_layer=settings.features_per_layer,
        feature_levels=feature_levels,
        top_k=settings.top_k,
        deconv_shape=deconv_shape,
        signatures=module.signature_names,
    )
    metadata["max_batch_segments"] = settings.max_batch_segments
    metadata["layer_names"] = {str(level): name for level, name in settings.layer_names.items()}
    metadata["signature_savedmodels"] = signature_savedmodel_paths(module.signature_names)
    return module, metadata


def _reference(module: ServingModule, metadata: dict[str, Any]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Warm-up inputs and the in-process (Keras) outputs of every signature."""
    inputs = warmup_inputs(metadata)
    return {name: {"inputs": named, "outputs": module.call(name, named)} for name, named in inputs.items()}


def _write(module: ServingModule, metadata: dict[str, Any], directory: str) -> dict[str, Any]:
    """Writes the complete version into ``directory`` (which must not exist); returns the reference."""
    reference = _reference(module, metadata)
    with tempfile.TemporaryDirectory(prefix=temp_prefix("assets")) as staging:
        labels_path, metadata_path = write_metadata_files(staging, metadata)
        # Tracked assets: copied into assets/ by the save and reachable from the loaded object.
        module.labels_file = tf.saved_model.Asset(labels_path)
        module.metadata_file = tf.saved_model.Asset(metadata_path)
        tf.saved_model.save(module, directory, signatures=module.signatures())
    write_signature_savedmodels(module, directory, metadata["signature_savedmodels"])
    write_warmup_file(directory, {name: parts["inputs"] for name, parts in reference.items()})
    save_reference(os.path.join(directory, REFERENCE_FILE), reference)
    return reference


def export_model(
    model: keras.Model,
    info: RunInfo,
    export_base: str | os.PathLike[str],
    *,
    version: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_deconv_seconds: float | None = None,
    max_batch_segments: int | None = None,
    budget: WorkBudget | None = None,
    verify: bool = True,
    signatures: str | Sequence[str] | None = None,
) -> str:
    """Exports an in-memory model as ``EXPORT_BASE/<version>/`` (see the module docstring).

    Args:
        model: A trained Choi CNN or SampleCNN-family model.
        info: Its run description (labels, audio, segment, STFT, run id).
        export_base: The model's base directory (TF Serving's ``MODEL_BASE_PATH/<name>``).
        version: Version number (``None``: the next free one). Must not exist.
        max_seconds: Longest input of ``serving_default``/``serving_wav``/``features`` (protects server memory).
        max_deconv_seconds: Longest input of ``deconvolve``/``auralise`` (``None``: the budget's).
        max_batch_segments: Most segments run through the model at once (``None``: the family's budget's).
        budget: Per-call budgets (``None``: the family's, :mod:`export.budget`).
        verify: Run :func:`export.verify.verify_export` before publishing the version.
        signatures: The signatures to export (``None``: all; ``"tagging"``: ``serving_default``,
            ``serving_wav`` and ``features`` alone -- no deconvolution graphs, a smaller export that is
            written and loaded faster; or a list: :func:`export.metadata.resolve_signatures`).

    Returns:
        The version directory's path.

    Raises:
        ExportError: If the model cannot be exported, the version exists, or verification fails.
    """
    base = os.path.abspath(os.fspath(export_base))
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ExportError(f"version={version!r} is invalid: expected a positive integer")
    if version is not None and os.path.exists(os.path.join(base, str(version))):
        raise ExportError(f"{os.path.join(base, str(version))} already exists; versions are never overwritten")
    module, metadata = build_module(
        model, info, max_seconds=max_seconds, max_deconv_seconds=max_deconv_seconds,
        max_batch_segments=max_batch_segments, budget=budget, signatures=signatures,
    )
    remove_stale(base, STAGING_PREFIX)
    remove_stale_temp_dirs()
    staging = os.path.join(base, staging_name())
    # The verification's fresh processes import TensorFlow while this one traces the signatures (Processes).
    with Processes() if verify else contextlib.nullcontext() as processes:
        try:
            os.makedirs(base, exist_ok=True)
            logger.info("writing the SavedModel into %s", staging)
            reference = _write(module, metadata, staging)
            if processes is not None:
                logger.info("verifying %s in fresh processes", staging)
                report = verify_export(staging, reference=reference, processes=processes)
                with open(os.path.join(staging, VERIFICATION_FILE), "w", encoding="utf-8") as handle:
                    json.dump(report, handle, indent=2, sort_keys=True)
            number = version if version is not None else next_version(base)
            target = os.path.join(base, str(number))
            if os.path.exists(target):
                raise ExportError(f"{target} already exists; versions are never overwritten")
            os.rename(staging, target)  # atomic on one filesystem: TF Serving sees all of it or nothing
        except BaseException as err:  # also KeyboardInterrupt: never leave the temporary directory behind
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, ExportError) or not isinstance(err, Exception):
                raise
            raise ExportError(f"export to {base} failed: {type(err).__name__}: {err}") from err
    logger.info("exported version %d to %s", number, target)
    return target


def export_run(
    run_dir: str | os.PathLike[str],
    export_base: str | os.PathLike[str],
    *,
    version: int | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_deconv_seconds: float | None = None,
    max_batch_segments: int | None = None,
    budget: WorkBudget | None = None,
    verify: bool = True,
    signatures: str | Sequence[str] | None = None,
) -> str:
    """Exports a training run directory (``model.keras`` + ``run.json``); see :func:`export_model`.

    Raises:
        ModelError: If the run directory is not a complete tfaural run.
        ExportError: As :func:`export_model`.
    """
    model, info = load_run(run_dir)
    return export_model(
        model, info, export_base, version=version, max_seconds=max_seconds,
        max_deconv_seconds=max_deconv_seconds, max_batch_segments=max_batch_segments, budget=budget, verify=verify,
        signatures=signatures,
    )
