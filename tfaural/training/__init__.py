"""Training, evaluation and transfer with the papers' recipes, and the run directory they write.

Modules:

* :mod:`~tfaural.training.train` — ``python -m tfaural.training.train``: one ``model.fit`` with
  the papers' schedule and mid-epoch resume as Keras callbacks.
* :mod:`~tfaural.training.callbacks` — those callbacks: the plateau schedule (divide the
  learning rate by 5 after 3 epochs without improvement, reload the best weights, stop after
  four decays), the resumable checkpoint, the history and best-run writers.
* :mod:`~tfaural.training.evaluate` — ``python -m tfaural.training.evaluate``: song-level scores.
* :mod:`~tfaural.training.metrics` — AUCs, accuracy, confusion matrices (NumPy only).
* :mod:`~tfaural.training.transfer` — feature-based transfer (Lee et al. 2018, §4.2).
* :mod:`~tfaural.training.run` — the run directory (``model.keras`` + ``run.json``) that
  export, jobs and the report read.

Importing the package imports none of them (the run-directory readers stay TensorFlow-light).
"""
