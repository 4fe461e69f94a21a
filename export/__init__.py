"""SavedModel export: the contract between training, TF Serving and the Beam jobs.

A training run (``model.keras`` + ``run.json``) becomes ``EXPORT_BASE/<N>/``, a
versioned SavedModel with the signatures ``serving_default``, ``serving_wav``,
``features``, ``deconvolve``, ``auralise`` (not for the mel-frame model) and ``attribute``,
``assets/labels.txt``, ``assets/metadata.json`` and TF Serving warm-up requests.
Its graph holds only core TensorFlow ops, so TF Serving, the Beam jobs and any
TensorFlow program use it without tfaural installed. See ``docs/serving.md``.

Example:
    >>> import export
    >>> version_dir = export.export_run("runs/choi", "exports/choi")   # exports/choi/1
    >>> from tfaural.formats import read_export_metadata
    >>> read_export_metadata(version_dir).labels

Command line: ``python -m export --run RUN_DIR --output EXPORT_BASE`` and
``python -m export.verify EXPORT_DIR``.

The heavy parts (TensorFlow, Keras) are imported on first use, so
``import export.client`` stays light for client programs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tfaural.cli import command_line_startup

command_line_startup()  # python -m export...: oneDNN where faster, no TensorFlow start-up lines (unless --verbose)

if TYPE_CHECKING:
    from export.budget import WorkBudget
    from export.exporter import build_module, existing_versions, export_model, export_run, next_version
    from export.module import ServingModule
    from export.verify import check_ops, verify_export

__all__ = [
    "export_run",
    "export_model",
    "build_module",
    "existing_versions",
    "next_version",
    "verify_export",
    "check_ops",
    "ServingModule",
    "WorkBudget",
]

_LOCATIONS = {
    "export_run": "export.exporter",
    "export_model": "export.exporter",
    "build_module": "export.exporter",
    "existing_versions": "export.exporter",
    "next_version": "export.exporter",
    "verify_export": "export.verify",
    "check_ops": "export.verify",
    "ServingModule": "export.module",
    "WorkBudget": "export.budget",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
