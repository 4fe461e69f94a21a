"""One-signature SavedModels inside an export, for processes that call a single signature.

An export's ``saved_model.pb`` holds every signature; loading it restores every function
of the library, deconvolution and auralisation included (for a 3^9-SampleCNN the graph is
~6 MB and ``tf.saved_model.load`` takes 7-12 s, against ~1 s for its scoring function alone).
A job that tags or extracts features never calls those. So the exporter also writes, for the
signatures the batch jobs call (:data:`JOB_SIGNATURES`), a SavedModel holding only that
signature and the variables it reads::

    EXPORT_BASE/<N>/assets.extra/signatures/serving_default/   saved_model.pb, variables/
    EXPORT_BASE/<N>/assets.extra/signatures/features/

``metadata.json`` lists them (``signature_savedmodels``: signature -> directory relative to the
version directory). Each is the same concrete function as the export's own signature (same
graph, same weights; ``python -m export.verify`` calls both on the warm-up inputs and compares
them with the reference), and it is a complete SavedModel: ``tf.saved_model.load`` or TF Serving
can load it on its own. TF Serving itself serves the version directory and ignores
``assets.extra``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["SIGNATURES_DIR", "JOB_SIGNATURES", "signature_savedmodel_paths", "write_signature_savedmodels"]

#: Folder of the one-signature SavedModels, relative to the version directory.
SIGNATURES_DIR = "assets.extra/signatures"
#: The signatures the batch jobs call alone (tag, extract_features).
JOB_SIGNATURES = ("serving_default", "features")


def signature_savedmodel_paths(signatures: Sequence[str]) -> dict[str, str]:
    """``{signature: relative directory}`` for those of ``signatures`` that get a SavedModel of their own."""
    return {name: f"{SIGNATURES_DIR}/{name}" for name in JOB_SIGNATURES if name in signatures}


def write_signature_savedmodels(module: Any, directory: str, paths: dict[str, str]) -> None:
    """Saves each signature of ``paths`` as a SavedModel of its own under ``directory``.

    Args:
        module: The :class:`~export.module.ServingModule` that was exported.
        directory: The version directory being written.
        paths: ``{signature: relative directory}`` (:func:`signature_savedmodel_paths`).
    """
    import tensorflow as tf

    for name, relative in paths.items():
        holder = tf.Module(name="tfaural_signature")
        holder.model_variables = list(module.model_variables)  # what the function reads, saved once
        tf.saved_model.save(holder, os.path.join(directory, relative),
                            signatures={name: module.function(name).get_concrete_function()})
