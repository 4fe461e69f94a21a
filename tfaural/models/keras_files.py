"""Reading Keras model files that tfaural did not write: any ``.keras`` / ``.h5`` audio CNN.

A saved ``Lambda`` layer holds Python bytecode, which Keras runs only from a file the
user trusts (``safe_mode=False``). Keras then rebuilds the function with the globals of
its own ``python_utils`` module, so ``lambda m: tf.math.log(1 + m)``, the commonest
in-model compression, fails on reload ("name 'tf' is not defined", or "could not infer
the shape"). :func:`load_model_file` gives such functions ``tf``, ``keras``, ``ops``,
``np`` and ``math`` while a trusted file loads.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import tfaural.models  # noqa: F401  (registers tfaural's layers for a run's model.keras)
from tfaural.errors import ModelError

__all__ = ["load_model_file"]


@contextlib.contextmanager
def _lambda_modules() -> Iterator[None]:
    """While a trusted file loads, its ``Lambda`` functions see ``tf``, ``tensorflow``, ``keras``, ``ops``, ``np``,
    ``numpy`` and ``math`` besides Python's builtins (module docstring)."""
    try:
        from keras.src.utils import python_utils
    except ImportError:  # another Keras layout: load as Keras does
        yield
        return
    original = python_utils.func_load
    modules = {"tf": tf, "tensorflow": tf, "keras": keras, "ops": keras.ops, "np": np, "numpy": np, "math": math,
               "__builtins__": builtins}

    def func_load(code: Any, defaults: Any = None, closure: Any = None, globs: Any = None) -> Any:
        return original(code, defaults=defaults, closure=closure, globs={**modules, **(globs or {})})

    python_utils.func_load = func_load
    try:
        yield
    finally:
        python_utils.func_load = original


def load_model_file(path: str | os.PathLike[str], *, trust_lambda: bool = False, flag: str = "--model") -> Any:
    """Loads a ``.keras`` (or ``.h5``) model file, with tfaural's own layers known.

    Args:
        path: The file.
        trust_lambda: Run ``Lambda`` layers' code (only for files you trust); their functions find
            ``tf``, ``keras``, ``np``, ... (module docstring).
        flag: How messages name the file's option.

    Returns:
        The Keras model (not compiled).

    Raises:
        ModelError: Naming the file: missing, unreadable, or holding ``Lambda`` code without ``trust_lambda``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"{flag} {path}: no such file (expected a .keras model file)")
    try:
        if not trust_lambda:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        with _lambda_modules():
            return keras.models.load_model(path, compile=False, safe_mode=False)
    except Exception as err:  # Keras raises many kinds for files it cannot read
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "lambda" in str(err).lower() and not trust_lambda:
            raise ModelError(f"{flag} {path}: it holds Lambda layers, whose Python code Keras runs only from a "
                             "file you trust: pass --trust-lambda if you do") from None
        raise ModelError(f"{flag} {path}: Keras cannot load it ({type(err).__name__}: {first})") from None
