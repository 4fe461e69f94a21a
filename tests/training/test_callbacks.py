"""The papers' schedule and the resumable checkpoint as Keras callbacks, on a tiny model."""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

import keras
import numpy as np
import pytest

from tfaural.errors import ModelError, ParameterError
from tfaural.training.callbacks import HistoryCSV, PlateauSchedule, ResumableCheckpoint


def _tiny_model(learning_rate: float = 0.01) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True), "mse")
    return model


def _mark_weights(model: keras.Model, value: float) -> None:
    """Sets every weight to ``value``: stands for what an epoch of training made of them."""
    model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])


def _drive(schedule: PlateauSchedule, model: keras.Model, val_losses: list[float]) -> list[dict[str, Any]]:
    """Runs the schedule's epoch ends on a scripted sequence of validation losses.

    Before epoch ``e`` ends, the weights are set to ``e``, so reloaded weights name their epoch.
    Returns the logs each epoch ended with, up to the epoch that stopped training.
    """
    schedule.set_model(model)
    model.stop_training = False
    schedule.on_train_begin()
    seen = []
    for epoch, loss in enumerate(val_losses):
        rate_trained_with = float(model.optimizer.learning_rate.numpy())
        _mark_weights(model, epoch)
        logs: dict[str, Any] = {"loss": 1.0, "val_loss": loss}
        schedule.on_epoch_end(epoch, logs)
        weights_after = float(model.get_weights()[0].flat[0])
        seen.append({**logs, "optimizer_rate": rate_trained_with, "weights_after": weights_after})
        if model.stop_training:
            break
    return seen


def test_divides_by_five_after_three_flat_epochs_and_reloads_the_best_weights() -> None:
    model = _tiny_model()
    schedule = PlateauSchedule(learning_rate=0.01)  # the papers' recipe: 1/5, patience 3, four decays
    # Improves at epochs 0, 1 (best: epoch 1), then three epochs without an improvement > 1e-4.
    seen = _drive(schedule, model, [1.0, 0.5, 0.6, 0.49995, 0.7, 0.45])
    assert [row["improved"] for row in seen] == [1, 1, 0, 0, 0, 1]
    np.testing.assert_allclose([row["learning_rate"] for row in seen], [0.01] * 5 + [0.002], rtol=1e-12)
    np.testing.assert_allclose([row["optimizer_rate"] for row in seen], [0.01] * 5 + [0.002], rtol=1e-6)
    # At the decay (end of epoch 4) the weights of epoch 1, the best, are back in the model.
    assert [row["weights_after"] for row in seen] == [0, 1, 2, 3, 1, 5]
    assert (schedule.decays, schedule.wait, schedule.best_epoch, schedule.best) == (1, 0, 5, 0.45)
    assert not schedule.stopped and not model.stop_training


def test_stops_at_the_first_plateau_after_the_fourth_decay() -> None:
    model = _tiny_model()
    schedule = PlateauSchedule(learning_rate=0.01)
    # One improvement, then nothing: decays after epochs 3, 6, 9, 12; the plateau ending at epoch 15 stops.
    seen = _drive(schedule, model, [1.0] + [2.0] * 30)
    assert len(seen) == 16 and schedule.stopped and model.stop_training
    expected = [0.01] * 4 + [0.002] * 3 + [0.0004] * 3 + [0.00008] * 3 + [0.000016] * 3
    np.testing.assert_allclose([row["learning_rate"] for row in seen], expected, rtol=1e-12)
    assert schedule.learning_rate == pytest.approx(1.6e-5, rel=1e-12) and schedule.decays == 4
    # Every decay reloaded epoch 0's weights; the stop leaves the last epoch's weights alone.
    assert [row["weights_after"] for row in seen if row["improved"] == 0][2::3] == [0, 0, 0, 0, 15]


def test_in_fit_the_schedule_sets_the_optimizer_and_ends_training() -> None:
    model = _tiny_model()
    scripted = iter([1.0, 2.0, 2.0, 2.0])  # patience 1, one decay: decay after epoch 1, stop after epoch 2

    class ScriptedValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            assert logs is not None
            logs["val_loss"] = next(scripted)

    rates: list[float] = []

    class RecordRate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            rates.append(float(self.model.optimizer.learning_rate.numpy()))

    schedule = PlateauSchedule(learning_rate=0.05, patience=1, max_decays=1)
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    history = model.fit(x, y, batch_size=4, epochs=20, verbose=0,
                        callbacks=[RecordRate(), ScriptedValidation(), schedule])
    assert len(history.history["loss"]) == 3 and schedule.stopped
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.01], rtol=1e-6)


def test_bad_settings_and_a_missing_or_broken_validation_loss_are_clear_errors() -> None:
    with pytest.raises(ParameterError, match=r"factor=1\.5"):
        PlateauSchedule(learning_rate=0.01, factor=1.5)
    with pytest.raises(ParameterError, match="patience=0"):
        PlateauSchedule(learning_rate=0.01, patience=0)
    model = _tiny_model()
    schedule = PlateauSchedule(learning_rate=0.01)
    schedule.set_model(model)
    with pytest.raises(ModelError, match="pass validation_data"):
        schedule.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ModelError, match="validation loss became nan at epoch 3"):
        schedule.on_epoch_end(2, {"val_loss": float("nan")})


class _KilledError(Exception):
    pass


def _kill(code: int) -> None:
    raise _KilledError(code)


def test_resume_trains_only_the_steps_left_in_the_interrupted_epoch(tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = np.zeros((16, 2), np.float32)
    steps: list[tuple[int, int]] = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            steps.append((self.epoch, batch))

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

    def run(exit_after: int | None) -> tuple[keras.Model, PlateauSchedule, ResumableCheckpoint]:
        model = _tiny_model()
        schedule = PlateauSchedule(learning_rate=0.01, patience=1)
        checkpoint = ResumableCheckpoint(str(tmp_path / "checkpoints"), schedule, epochs=3, steps_per_epoch=4,
                                         every=1, run_id="abc", exit_after_steps=exit_after, exit=_kill)
        if checkpoint.exists():
            checkpoint.restore(model, best_weights=None)
        model.fit(x, y, batch_size=2, validation_data=(x, y), epochs=3, steps_per_epoch=4, verbose=0,
                  initial_epoch=checkpoint.epoch, shuffle=False,
                  callbacks=[schedule, HistoryCSV(str(tmp_path / "history.csv")), CountSteps(), checkpoint])
        return model, schedule, checkpoint

    with pytest.raises(_KilledError):
        run(exit_after=6)  # one epoch and two steps of the second
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["global_step"], state["finished"]) == (1, 2, 6, "")
    assert state["best_epoch"] == 0 and state["run_id"] == "abc"
    steps.clear()
    model, _, _ = run(exit_after=None)
    assert steps == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]  # 2 steps finish epoch 2, then 4
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["global_step"], state["finished"]) == (3, 0, 12, "epochs")
    assert int(model.optimizer.iterations.numpy()) == 12  # the optimizer's state came back with the weights
    with open(tmp_path / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "learning_rate", "loss", "val_loss", "improved"]


def test_a_resumed_epochs_metrics_cover_all_its_steps(tmp_path: pathlib.Path) -> None:
    """Killed after two of an epoch's four steps and resumed, the epoch's loss and metrics are those of the run
    that was not killed: the first two steps' sums and counts come back from the checkpoint (without them, they
    would be the last two steps' only). Every batch is the same, so both runs do the same arithmetic."""
    x = np.tile(np.array([[0.5, -1.0, 2.0]], np.float32), (8, 1))
    y = np.tile(np.array([[1.0, -1.0]], np.float32), (8, 1))

    def run(folder: str, exit_after: int | None) -> list[dict[str, str]]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
        model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
        schedule = PlateauSchedule(learning_rate=0.05, patience=1)
        checkpoint = ResumableCheckpoint(str(tmp_path / folder / "checkpoints"), schedule, epochs=2,
                                         steps_per_epoch=4, every=1, exit_after_steps=exit_after, exit=_kill)
        if checkpoint.exists():
            checkpoint.restore(model, best_weights=None)
        model.fit(x, y, batch_size=2, validation_data=(x, y), epochs=2, steps_per_epoch=4, verbose=0,
                  initial_epoch=checkpoint.epoch, shuffle=False,
                  callbacks=[schedule, HistoryCSV(str(tmp_path / folder / "history.csv")), checkpoint])
        with open(tmp_path / folder / "history.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    straight = run("straight", exit_after=None)
    with pytest.raises(_KilledError):
        run("killed", exit_after=6)  # epoch 2, after its second step
    resumed = run("killed", exit_after=None)
    assert len(straight) == len(resumed) == 2
    for key in ("loss", "mae", "val_loss", "val_mae"):
        assert [float(r[key]) for r in resumed] == pytest.approx([float(r[key]) for r in straight], rel=1e-6), key
    assert float(straight[1]["loss"]) != pytest.approx(float(straight[1]["val_loss"]), rel=1e-3)  # the steps differ
