"""The papers' training recipe as Keras callbacks, and the run directory's training records.

:func:`tfaural.training.train.train` is one ``model.fit`` with these callbacks, in this order:

1. :class:`PlateauSchedule` — the schedule of both papers (Lee et al. 2018, §5.2; Choi et al.
   2015): the learning rate is divided by 5 whenever the validation loss has not improved for 3
   epochs, the best weights are reloaded at each decay, and training stops at the first plateau
   after the fourth decay. It adds ``learning_rate`` (the rate the epoch trained with) and
   ``improved`` (1 or 0) to the epoch's logs for the callbacks after it.
2. :class:`HistoryCSV` — one ``history.csv`` row per epoch.
3. :class:`BestRun` — saves the run (``model.keras`` + ``run.json``) at every improvement.
4. ``keras.callbacks.TensorBoard``.
5. :class:`ResumableCheckpoint` — the training state under ``RUN_DIR/checkpoints`` at the end of
   every epoch and every N steps, so that rerunning an interrupted command continues at the step
   where it stopped.

Why not ``keras.callbacks.BackupAndRestore`` (Keras 3.15): it restores the weights and the epoch
number only. Its metadata records the batch, but ``_load_model`` sets ``model._initial_epoch`` and
nothing else, so an epoch interrupted at step 900 of 1,000 is trained again from step 0 (1,900
steps in that epoch). It also keeps no callback state — the schedule's best loss, patience count,
decays and current rate, the best weights to reload — and it deletes its backup when ``fit``
returns, so a finished run cannot be told from a new one. :class:`ResumableCheckpoint` does all
three: it trains only the interrupted epoch's remaining steps, restores the schedule, and records
that the run finished (rerunning a finished command does nothing).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfaural import files
from tfaural.errors import ModelError, ParameterError
from tfaural.training.run import RunInfo, save_run

__all__ = ["PlateauSchedule", "HistoryCSV", "BestRun", "CheckpointState", "ResumableCheckpoint", "STATE_FILE"]

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
#: The training metrics' state (sums and counts) of the epoch in progress, for a resumed epoch's logs.
METRICS_FILE = "metrics.npz"


class PlateauSchedule(keras.callbacks.Callback):
    """Divide the learning rate on a validation-loss plateau, reload the best weights, stop after N decays.

    At the end of every epoch the monitored loss improves when it is lower than the best so far
    by more than ``min_delta`` (as in ``keras.callbacks.ReduceLROnPlateau``); the weights of
    that epoch are then kept (in memory) as the best. After ``patience`` epochs in a row
    without improvement the learning rate is multiplied by ``factor`` and the best weights are
    reloaded into the model; once ``max_decays`` decays have been made, the next plateau stops
    training (``model.stop_training``) instead. The papers' recipe is the default: factor 1/5,
    patience 3, four decays (the last rate is 1.6e-5 from 0.01).

    The callback owns the learning rate: it assigns ``learning_rate`` to the optimizer when
    training begins and at each decay, and records the rate each epoch trained with in
    ``logs["learning_rate"]``, and whether it improved in ``logs["improved"]``.

    Attributes:
        learning_rate: The current learning rate.
        best: The best monitored value so far (``inf`` before the first epoch).
        best_epoch: 0-based epoch of ``best`` (-1 before the first epoch).
        wait: Epochs since the last improvement (reset at each decay).
        decays: Decays made so far.
        stopped: Whether the schedule has stopped training.
        best_weights: The model's weights (``model.get_weights()``) at ``best_epoch``, or ``None``.
    """

    def __init__(
        self,
        *,
        learning_rate: float,
        factor: float = 0.2,
        patience: int = 3,
        max_decays: int = 4,
        min_delta: float = 1e-4,
        monitor: str = "val_loss",
    ) -> None:
        """Sets the recipe.

        Args:
            learning_rate: Initial learning rate.
            factor: Learning-rate factor at each decay, in (0, 1).
            patience: Epochs without improvement before a decay (>= 1).
            max_decays: Decays before the next plateau stops training (>= 0).
            min_delta: Smallest decrease of the monitored value that counts as an improvement.
            monitor: The epoch log to minimise.

        Raises:
            ParameterError: If a value is out of range.
        """
        super().__init__()
        if not 0 < factor < 1:
            raise ParameterError(f"PlateauSchedule factor={factor!r} is invalid: expected in (0, 1)")
        if patience < 1 or max_decays < 0 or learning_rate <= 0:
            raise ParameterError(
                f"PlateauSchedule patience={patience!r}, max_decays={max_decays!r}, learning_rate={learning_rate!r}: "
                "expected patience >= 1, max_decays >= 0 and learning_rate > 0"
            )
        self.factor = factor
        self.patience = patience
        self.max_decays = max_decays
        self.min_delta = min_delta
        self.monitor = monitor
        self.learning_rate = float(learning_rate)
        self.best = math.inf
        self.best_epoch = -1
        self.wait = 0
        self.decays = 0
        self.stopped = False
        self.best_weights: list[Any] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._assign_learning_rate()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise ModelError(f"PlateauSchedule monitors {self.monitor!r} but the epoch logs have {sorted(logs)}; "
                             "pass validation_data to fit")
        current = float(logs[self.monitor])
        if not math.isfinite(current):
            raise ModelError(f"validation loss became {current} at epoch {epoch + 1}; lower the learning rate")
        improved = current < self.best - self.min_delta
        logs["learning_rate"] = self.learning_rate
        logs["improved"] = int(improved)
        if improved:
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        if self.decays >= self.max_decays:
            self.stopped = True
            self.model.stop_training = True
            logger.info("no improvement for %d epochs after %d decays: training stops", self.patience, self.decays)
            return
        self.decays += 1
        self.wait = 0
        self.learning_rate *= self.factor
        self._assign_learning_rate()
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        logger.info("no improvement for %d epochs: learning rate -> %.3g, best weights reloaded",
                    self.patience, self.learning_rate)

    def _assign_learning_rate(self) -> None:
        self.model.optimizer.learning_rate.assign(self.learning_rate)


class HistoryCSV(keras.callbacks.Callback):
    """Appends one row per epoch to a CSV file (``RUN_DIR/history.csv``).

    Columns: ``epoch`` (1-based), ``learning_rate``, the training metrics, the ``val_`` metrics,
    ``improved``. Place it after :class:`PlateauSchedule`, which adds ``learning_rate`` and
    ``improved`` to the logs.
    """

    def __init__(self, path: str) -> None:
        """Args:
        path: The CSV file (created with a header row, else appended to).
        """
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        learning_rate = logs.pop("learning_rate", None)
        improved = logs.pop("improved", None)
        train_logs = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k: float(v) for k, v in logs.items() if k.startswith("val_")}
        row = {"epoch": epoch + 1, "learning_rate": learning_rate, **train_logs, **val_logs, "improved": improved}
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class BestRun(keras.callbacks.Callback):
    """Saves the run (``model.keras`` + ``run.json``) at every epoch whose logs say ``improved``.

    ``run.json`` gets ``extra["best_epoch"]`` (1-based) and ``extra["best_val_loss"]``.
    """

    def __init__(self, run_dir: str, info: RunInfo, *, monitor: str = "val_loss") -> None:
        """Args:
        run_dir: The run directory.
        info: The run's description, written with each save.
        monitor: The epoch log recorded as ``best_val_loss``.
        """
        super().__init__()
        self.run_dir = run_dir
        self.info = info
        self.monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if not logs.get("improved"):
            return
        extra = {**self.info.extra, "best_epoch": epoch + 1, "best_val_loss": float(logs[self.monitor])}
        save_run(self.run_dir, self.model, dataclasses.replace(self.info, extra=extra))


@dataclasses.dataclass(frozen=True)
class CheckpointState:
    """What ``checkpoints/state.json`` records besides the weights.

    Attributes:
        epoch: Epochs completed (0-based index of the epoch in progress).
        step: Steps completed in the epoch in progress.
        learning_rate: The schedule's current learning rate.
        best_val_loss: The schedule's best validation loss.
        best_epoch: 0-based epoch of ``best_val_loss`` (-1: none yet).
        wait: Epochs since the last improvement.
        decays: Learning-rate decays made.
        global_step: Training steps in all, across resumptions.
        finished: Why training ended (``"schedule"``, ``"epochs"``), ``""`` while it has not.
        run_id: The run's id (kept across resumptions).
    """

    epoch: int = 0
    step: int = 0
    learning_rate: float = 0.01
    best_val_loss: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    decays: int = 0
    global_step: int = 0
    finished: str = ""
    run_id: str = ""


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the training state every epoch and every N steps; resumes at the exact step.

    The checkpoint folder holds the model and optimizer weights (``model.weights.h5``) and a
    :class:`CheckpointState` (``state.json``, which includes the schedule's state). After
    :meth:`restore`, ``fit(initial_epoch=self.epoch, steps_per_epoch=S)`` trains only the
    ``S - step`` steps left in the interrupted epoch: this callback ends that epoch early
    (``model.stop_training`` after its last step, cleared again at the epoch's end unless the
    schedule stopped training), so validation, the schedule and every epoch-end callback run
    as after a whole epoch. Later epochs have ``S`` steps.

    The training metrics of a resumed epoch cover the whole epoch, as without the interruption:
    each save also keeps the metrics' state so far (``metrics.npz``: the loss's sum and count, the
    AUC's confusion counts, the accuracy's sum and count), and the resumed epoch adds it to its
    own after its first step (when Keras has built the metrics). The recipe's metrics all keep
    sums, so the two parts add up exactly.

    Place it last: it saves at the end of an epoch what the callbacks before it (the schedule's
    decay, the reloaded weights) made of it.
    """

    def __init__(
        self,
        folder: str,
        schedule: PlateauSchedule,
        *,
        epochs: int,
        steps_per_epoch: int,
        every: int = 0,
        run_id: str = "",
        exit_after_steps: int | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        """Args:
        folder: The checkpoint folder (``RUN_DIR/checkpoints``).
        schedule: The schedule whose state is saved and restored with the weights.
        epochs: The epochs ``fit`` is asked for (reaching them finishes the run).
        steps_per_epoch: The ``steps_per_epoch`` given to ``fit``.
        every: Steps between mid-epoch checkpoints (0: at epoch ends only).
        run_id: The run's id, kept in the state.
        exit_after_steps: Testing aid: save, then end the process abruptly (``exit(17)``, as a
            kill would) after this many steps of this invocation.
        exit: What ends the process for ``exit_after_steps``.
        """
        super().__init__()
        self.folder = folder
        self.schedule = schedule
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.every = every
        self.run_id = run_id
        self.exit_after_steps = exit_after_steps
        self._exit = exit
        self.epoch = 0
        self.step = 0
        self.global_step = 0
        self.finished = ""
        self._offset = 0
        self._ended_early = False
        self._steps_here = 0
        self._earlier_metrics: list[np.ndarray] | None = None  # of the resumed epoch's steps before the restart

    @property
    def state_path(self) -> str:
        """``FOLDER/state.json``."""
        return os.path.join(self.folder, STATE_FILE)

    def exists(self) -> bool:
        """Whether a checkpoint has been saved."""
        return os.path.isfile(self.state_path)

    def state(self) -> CheckpointState:
        """The state now (the schedule's included)."""
        schedule = self.schedule
        return CheckpointState(
            epoch=self.epoch, step=self.step, learning_rate=schedule.learning_rate, best_val_loss=schedule.best,
            best_epoch=schedule.best_epoch, wait=schedule.wait, decays=schedule.decays,
            global_step=self.global_step, finished=self.finished, run_id=self.run_id,
        )

    def save(self) -> None:
        """Writes the weights (model and optimizer), the metrics' state (``metrics.npz``) and ``state.json``,
        each atomically (``state.json`` last: what it records is on disk)."""
        with files.atomic_path(os.path.join(self.folder, WEIGHTS_FILE), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        with files.atomic_path(os.path.join(self.folder, METRICS_FILE), suffix=".npz") as tmp:
            values = [np.asarray(keras.ops.convert_to_numpy(v)) for v in self.model.metrics_variables]
            arrays: dict[str, Any] = {"step": np.int64(self.step), **{f"m{i:04d}": v for i, v in enumerate(values)}}
            np.savez(tmp, **arrays)
        files.write_text(self.state_path, json.dumps(dataclasses.asdict(self.state()), indent=2))

    def restore(self, model: Any, *, best_weights: list[Any] | None) -> CheckpointState:
        """Loads the checkpoint into ``model`` (weights and optimizer), this callback and the schedule.

        Args:
            model: The compiled model the checkpoint was saved from.
            best_weights: The weights of the best epoch (``get_weights()`` of the saved run), which
                the schedule reloads at its next decay; ``None`` if no epoch has finished.

        Returns:
            The restored state.
        """
        with open(self.state_path, encoding="utf-8") as handle:
            state = CheckpointState(**json.load(handle))
        model.optimizer.build(model.trainable_variables)  # so that load_weights restores its variables too
        model.load_weights(os.path.join(self.folder, WEIGHTS_FILE))
        self.epoch, self.step, self.global_step = state.epoch, state.step, state.global_step
        self.finished, self.run_id = state.finished, state.run_id or self.run_id
        schedule = self.schedule
        schedule.learning_rate, schedule.best, schedule.best_epoch = state.learning_rate, state.best_val_loss, \
            state.best_epoch
        schedule.wait, schedule.decays, schedule.stopped = state.wait, state.decays, state.finished == "schedule"
        schedule.best_weights = best_weights
        self._earlier_metrics = None
        metrics_path = os.path.join(self.folder, METRICS_FILE)
        if state.step and os.path.isfile(metrics_path):
            with np.load(metrics_path) as saved:
                if int(saved["step"]) == state.step:  # saved with this state (not a checkpoint of before)
                    self._earlier_metrics = [saved[key] for key in sorted(k for k in saved.files if k != "step")]
        return state

    def _add_earlier_metrics(self) -> None:
        """Adds the saved metrics' state of the resumed epoch's first steps to this run's (after its first step)."""
        earlier, self._earlier_metrics = self._earlier_metrics, None
        variables = self.model.metrics_variables
        if earlier is None:
            return
        if [tuple(v.shape) for v in variables] != [value.shape for value in earlier]:
            logger.warning("the checkpoint's metrics do not match this model's: the metrics of epoch %d cover its "
                           "last %d steps only", self.epoch + 1, self.steps_per_epoch - self._offset)
            return
        try:
            for variable, value in zip(variables, earlier):
                variable.assign(variable + keras.ops.convert_to_tensor(value, variable.dtype))
        except (ValueError, RuntimeError, NotImplementedError) as err:  # a distribution strategy's replicated sums
            logger.warning("the metrics of epoch %d cover its last %d steps only (their earlier state could not be "
                           "added: %s)", self.epoch + 1, self.steps_per_epoch - self._offset, err)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch
        self._offset = self.step  # > 0 only in an epoch resumed mid-way

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._earlier_metrics is not None:
            self._add_earlier_metrics()
        self.step = self._offset + batch + 1
        self.global_step += 1
        self._steps_here += 1
        if self.every and self.step % self.every == 0 and self.step < self.steps_per_epoch:
            self.save()  # the epoch's last step is saved at the epoch's end
        if self.exit_after_steps is not None and self._steps_here >= self.exit_after_steps:
            self.save()
            logger.warning("--crash-after-steps %d reached: exiting abruptly", self.exit_after_steps)
            logging.shutdown()
            self._exit(17)
        if self._offset and self.step >= self.steps_per_epoch:
            self._ended_early = True
            self.model.stop_training = True  # the resumed epoch has had its steps

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._ended_early:
            self._ended_early = False
            self.model.stop_training = self.schedule.stopped
        self.epoch, self.step = epoch + 1, 0
        if self.schedule.stopped:
            self.finished = "schedule"
        elif self.epoch >= self.epochs:
            self.finished = "epochs"
        self.save()
