"""Which input frames and bands of a patch can reach a model's output at all.

Max-pooling with ``padding="valid"`` floors: a pool whose window does not fit drops
the trailing rows and columns of its input, and everything that only feeds them never
reaches the output. musicnn's vgg models, for example, read 187 frames x 96 mel bands
but their outputs depend only on the first 145 frames and the lowest 78 bands of a
patch. Tagging with non-overlapping patches would then ignore 22 % of every track; the
importer therefore sets the hop between patches to the number of leading frames that
*can* reach the output (:attr:`Coverage.covering_hop`), so the reachable parts of
consecutive patches tile the track.

:func:`input_coverage` measures it empirically: the union, over random inputs and
random output weightings, of the input positions where the gradient of the output is
non-zero. A position outside every receptive field has an exactly zero gradient; a
position inside one is non-zero for almost every random input (the tests check it
against receptive-field arithmetic written independently).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Coverage", "input_coverage"]


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The input positions of one patch that reach the output.

    Attributes:
        frames: bool ``[n_frames]``: frame ``t`` reaches the output.
        bands: bool ``[n_bands]``: band ``f`` reaches the output.
    """

    frames: np.ndarray
    bands: np.ndarray

    @property
    def leading_frames(self) -> int:
        """Length of the run of reachable frames at the start of a patch (0 if frame 0 is blind)."""
        blind = np.flatnonzero(~self.frames)
        return int(self.frames.size if blind.size == 0 else blind[0])

    @property
    def covering_hop(self) -> int:
        """The largest hop (frames) whose patches leave no frame of a track unread (before the last patch).

        Patch ``k`` starts at ``k * hop`` and reads frames ``[k * hop, k * hop + leading_frames)``,
        so consecutive reachable parts touch when ``hop <= leading_frames``.
        """
        return max(1, self.leading_frames)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``run.json``: counts and the blind ranges."""
        return {
            "patch_frames": int(self.frames.size),
            "reachable_frames": int(self.frames.sum()),
            "blind_frames": _ranges(~self.frames),
            "patch_bands": int(self.bands.size),
            "reachable_bands": int(self.bands.sum()),
            "blind_bands": _ranges(~self.bands),
            "covering_hop_frames": self.covering_hop,
        }


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """``[[start, stop), ...]`` runs of True values."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def input_coverage(model: Any, *, n_probes: int = 8, seed: int = 0) -> Coverage:
    """Measures which frames and bands of a spectrogram model's input reach its output.

    Args:
        model: A Keras model with input ``[batch, bands, frames, 1]`` (non-negative
            spectrogram) and a ``logits`` layer (or any single output).
        n_probes: Random inputs (each with its own random weighting of the outputs).
        seed: Seed of the random inputs.

    Returns:
        The :class:`Coverage` of one input patch.
    """
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    names = {layer.name for layer in model.layers}
    target = keras.Model(model.inputs, model.get_layer("logits").output) if "logits" in names else model
    x = tf.Variable(rng.exponential(1e-3, size=(n_probes, *shape)).astype(np.float32))
    weights = tf.constant(rng.standard_normal((n_probes, int(target.outputs[0].shape[-1]))).astype(np.float32))
    with tf.GradientTape() as tape:
        out = target(x, training=False)
        total = tf.reduce_sum(out * weights)
    grad = np.abs(tape.gradient(total, x).numpy()).reshape(n_probes, shape[0], shape[1])
    reached = (grad > 0).any(axis=0)  # [bands, frames]
    return Coverage(frames=reached.any(axis=0), bands=reached.any(axis=1))
