"""tfaural.linalg.matmul: NumPy's broadcasting semantics, without the oneDNN rank-mismatch heap corruption."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfaural import linalg

CASES = [
    ((2, 1, 160, 9), (1, 9, 6), False, False),  # the deconvnet's one-channel adjoint (crashed TF 2.21's oneDNN)
    ((13, 1, 3, 4), (4, 16), False, False),  # tensorflow/tensorflow#117700's reproducer
    ((96, 257), (2, 3, 257, 40), False, False),  # a mel pseudo-inverse applied to [batch, k, mels, frames]
    ((2, 3, 40, 257), (96, 257), False, True),
    ((257, 96), (2, 3, 257, 40), True, False),
    ((5, 7), (7, 3), False, False),
    ((4, 5, 7), (4, 7, 3), False, False),
]


@pytest.mark.parametrize(("shape_a", "shape_b", "transpose_a", "transpose_b"), CASES)
def test_matches_numpy_matmul(shape_a: tuple[int, ...], shape_b: tuple[int, ...], transpose_a: bool,
                              transpose_b: bool) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    ref = np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a, np.swapaxes(b, -1, -2) if transpose_b else b)
    out = linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)  # float32 sums of up to 257 products


def test_unknown_shapes_inside_a_tf_function() -> None:
    spec = tf.TensorSpec([None, None, None, None], tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec([None, None, None], tf.float32)])
    def product(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return linalg.matmul(a, b)

    a, b = np.ones((2, 1, 4, 3), np.float32), np.full((1, 3, 5), 2.0, np.float32)
    np.testing.assert_array_equal(product(a, b).numpy(), np.full((2, 1, 4, 5), 6.0, np.float32))


_LOOP = """
import tensorflow as tf
from tfaural import linalg
product = tf.function(linalg.matmul)
for _ in range(200):
    linalg.matmul(tf.random.normal([13, 1, 3, 4]), tf.random.normal([4, 16]))
    linalg.matmul(tf.random.normal([2, 1, 160, 9]), tf.random.normal([1, 9, 6]))
    product(tf.random.normal([2, 1, 160, 9]), tf.random.normal([1, 9, 6]))
print("survived")
"""


def test_broadcast_products_do_not_corrupt_the_heap() -> None:
    """Plain tf.matmul on these shapes crashes TF 2.21 with oneDNN on (an Intel Xeon with AVX-512/AMX): 8 of 8 runs."""
    done = subprocess.run([sys.executable, "-c", _LOOP], capture_output=True, text=True, timeout=600,
                          env={"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]
