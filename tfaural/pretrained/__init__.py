"""Published pretrained models imported as ordinary tfaural runs (``model.keras`` + ``run.json``).

``python -m tfaural.pretrained musicnn/MTT_vgg --output runs/mtt_vgg`` writes a run
directory that every tfaural tool accepts: ``python -m export``, the Beam jobs,
``tfaural.training.evaluate`` and ``tfaural.training.train --init-from`` (fine-tuning). See
:mod:`tfaural.pretrained.musicnn` for how the weights are read and checked against the
publisher's own graph, and :mod:`tfaural.pretrained.coverage` for the patch hop.
"""

from __future__ import annotations

from tfaural.pretrained.catalogue import available, import_run, resolve

__all__ = ["available", "import_run", "resolve"]
