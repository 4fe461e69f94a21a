"""TensorFlow's runtime without its public API: what the model process needs to load and call a SavedModel.

``import tensorflow`` runs ``tensorflow/__init__.py``, which builds the whole public API (every
``tf.*`` namespace: tf.data, tf.distribute, feature columns, autograph, ...) and imports Keras's
optimizers, with Keras, scikit-learn and SciPy: 4.6-5.2 s on a 2-core Zen 4, all of it on the model
process's start-up path (nothing can run before it). Loading a SavedModel and calling its signatures
needs far less: the C++ runtime (``tensorflow.python.pywrap_tensorflow``, which loads the kernels and
filesystems), TF2 behaviour, and the modules ``tf.saved_model.load`` and an eager call import
themselves: 1.7-1.9 s (``benchmarks/startup.py``'s components, ``benchmarks/RESULTS.md``).

:func:`import_runtime` imports exactly that. It makes ``tensorflow`` a package whose public API is
built on first use: the first access to any attribute it does not have yet (``tf.constant``,
``tf.__version__``, ...) runs the real ``tensorflow/__init__.py`` in it, so any code in the process
that does ``import tensorflow as tf`` still gets the whole of TensorFlow, at the usual cost, when it
uses it. Where the real ``__init__`` would load more than the runtime (first-party kernel libraries
or a pluggable device's ``tensorflow-plugins``, e.g. a GPU plugin), :func:`import_runtime` imports
TensorFlow as usual instead (with Keras hidden while it does, see :class:`_HideKeras`).

A quiet command line (:func:`tfaural.cli.quiet_command_line_startup`) filters TensorFlow's C++ start-up
lines out of the first ``import tensorflow`` with a finder that wraps whichever loader provides the module:
:func:`import_runtime` puts its own finder behind it, so the runtime's import is filtered the same way.

The functions below (:func:`constant`, :func:`errors`, :func:`load`, :func:`gfile_read`,
:func:`gfile_exists`, :func:`set_threads`, :func:`enable_bfloat16_rewrite`) are what the model
process and the Beam workers call, from TensorFlow's own modules (``tensorflow.python.*``, the modules
the public names are exported from); they work whether TensorFlow was imported whole or not.
TensorFlow is pinned (``requirements``), and ``tests/beam_jobs/test_tf_runtime.py`` checks these
names, and that a model loaded through the runtime gives the same outputs as through ``import tensorflow``.

This module imports nothing of TensorFlow at module level.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import site
import sys
import threading
import types
from typing import Any

__all__ = [
    "import_runtime",
    "import_tensorflow_without_keras",
    "api_built",
    "constant",
    "errors",
    "load",
    "gfile_read",
    "gfile_exists",
    "set_threads",
    "THREAD_VARIABLES",
    "enable_bfloat16_rewrite",
]

logger = logging.getLogger(__name__)


class _HideKeras:
    """A ``sys.meta_path`` finder under which ``keras`` is an empty package and its submodules are missing.

    ``import tensorflow`` eagerly imports ``keras.src.optimizers`` (to register Keras optimizers
    for SavedModels that hold them) and, with it, all of Keras, scikit-learn and SciPy. An export
    holds no Keras objects (only ``tf.Variable`` s and functions), so where the model process must
    import TensorFlow whole it does so with Keras hidden -- TensorFlow catches the ``ImportError``,
    as it does where Keras is not installed -- and then removes this finder, so that a later
    ``import keras`` works as usual. ``keras`` itself gets a spec (with its real location) because
    TensorFlow asks for its folder without importing it.
    """

    class _EmptyPackage(importlib.abc.Loader):
        def create_module(self, spec: Any) -> None:
            return None

        def exec_module(self, module: Any) -> None:
            module.__path__ = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name == "keras":
            real = importlib.machinery.PathFinder.find_spec(name)
            return importlib.machinery.ModuleSpec(name, self._EmptyPackage(), origin=real.origin if real else None,
                                                  is_package=True)
        if name.startswith("keras."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while TensorFlow is imported)", name=name)
        return None


def import_tensorflow_without_keras() -> Any:
    """``import tensorflow`` (whole) with Keras hidden (see :class:`_HideKeras`); returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    finder = _HideKeras()
    sys.meta_path.insert(0, finder)
    try:
        import tensorflow as tf
    finally:
        sys.meta_path.remove(finder)
        hidden = getattr(sys.modules.get("keras"), "__spec__", None)
        if hidden is not None and isinstance(hidden.loader, _HideKeras._EmptyPackage):
            del sys.modules["keras"]  # the empty stand-in: a later import finds the real package
    return tf


#: Dunder names of TensorFlow's public API; other dunders (what libraries probe modules for, e.g.
#: ``__wrapped__``) do not build it.
_API_DUNDERS = frozenset({"__all__", "__version__", "__git_version__", "__compiler_version__", "__cxx11_abi_flag__",
                          "__cxx_version__", "__monolithic_build__", "__internal__", "__operators__"})


class _TensorFlowPackage(types.ModuleType):
    """``tensorflow`` with the runtime imported and the public API built on first use."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("_tfaural_api")
        probe = name.startswith("__") and name.endswith("__") and name not in _API_DUNDERS
        building_here = state is not None and state["lock"].locked() and state["owner"] == threading.get_ident()
        if state is None or state["built"] or probe or building_here:
            raise AttributeError(f"module 'tensorflow' has no attribute {name!r}")
        with state["lock"]:
            if not state["built"]:
                state["owner"] = threading.get_ident()
                logger.debug("building TensorFlow's public API (first use of tensorflow.%s)", name)
                with open(self.__file__, encoding="utf-8") as handle:  # type: ignore[arg-type]
                    source = handle.read()
                exec(compile(source, self.__file__, "exec"), self.__dict__)  # type: ignore[arg-type]
                state["built"] = True
        return getattr(self, name)


class _RuntimeLoader(importlib.abc.Loader):
    """Creates ``tensorflow`` as a :class:`_TensorFlowPackage` and imports only its runtime (the
    first lines of ``tensorflow/__init__.py``: the C++ runtime and TF2 behaviour)."""

    def __init__(self, real: importlib.machinery.ModuleSpec) -> None:
        self.real = real

    def create_module(self, spec: Any) -> types.ModuleType:
        return _TensorFlowPackage(spec.name)

    def exec_module(self, module: Any) -> None:
        module.__file__ = self.real.origin
        module.__path__ = list(self.real.submodule_search_locations or [])
        module._tfaural_api = {"built": False, "lock": threading.Lock(), "owner": None}
        os.environ.setdefault("ENABLE_RUNTIME_UPTIME_TELEMETRY", "1")
        importlib.import_module("tensorflow.python.pywrap_tensorflow")  # the C++ runtime: kernels, filesystems
        os.environ["TF2_BEHAVIOR"] = "1"
        importlib.import_module("tensorflow.python.tf2").enable()


class _RuntimeFinder:
    def __init__(self, real: importlib.machinery.ModuleSpec) -> None:
        self.real = real

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        return importlib.machinery.ModuleSpec(name, _RuntimeLoader(self.real), origin=self.real.origin,
                                              is_package=True)


def _loads_more_than_the_runtime(real: importlib.machinery.ModuleSpec) -> str | None:
    """Why ``tensorflow/__init__.py`` would load libraries beyond the runtime here, or ``None``."""
    folder = os.path.dirname(real.origin or "")
    if os.path.exists(os.path.join(folder, "core", "kernels")):
        return "first-party kernel libraries (tensorflow/core/kernels)"
    if os.environ.get("TF_PLUGGABLE_DEVICE_LIBRARY_PATH"):
        return "TF_PLUGGABLE_DEVICE_LIBRARY_PATH"
    places = [p for p in sys.path if "site-packages" in p]
    with contextlib.suppress(AttributeError):  # a virtualenv's old site module
        places += [*site.getsitepackages(), site.getusersitepackages()]
    for place in dict.fromkeys(places):
        if os.path.exists(os.path.join(place, "tensorflow-plugins")):
            return f"pluggable devices ({os.path.join(place, 'tensorflow-plugins')})"
    return None


def import_runtime() -> Any:
    """Imports TensorFlow's runtime, its public API deferred to first use (see the module docstring).

    Returns:
        The ``tensorflow`` module. If TensorFlow is already imported, or its ``__init__`` would load
        kernel or device libraries here, this is the usual whole import (Keras hidden while it runs).
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    real = importlib.machinery.PathFinder.find_spec("tensorflow")
    if real is None or real.origin is None:
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    reason = _loads_more_than_the_runtime(real)
    if reason:
        logger.info("importing the whole of TensorFlow: its __init__ loads %s", reason)
        return import_tensorflow_without_keras()
    finder = _RuntimeFinder(real)
    # Just before the path finder, where `import tensorflow` would find the real package: finders ahead of it
    # (a quiet command line's start-up filter, tfaural.cli) wrap this loader as they wrap the usual one.
    places = [i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder]
    sys.meta_path.insert(places[0] if places else 0, finder)
    try:
        import tensorflow
    finally:
        sys.meta_path.remove(finder)
    return tensorflow


def api_built() -> bool:
    """Whether TensorFlow's public API is imported in this process (``False`` before any import, and
    after :func:`import_runtime` until something uses ``tf.*``)."""
    module = sys.modules.get("tensorflow")
    if module is None:
        return False
    state = module.__dict__.get("_tfaural_api")
    return state is None or bool(state["built"])


# --------------------------------------------------------------------------- what the model process calls


def constant(value: Any) -> Any:
    """``tf.constant(value)``."""
    from tensorflow.python.framework import constant_op

    return constant_op.constant(value)


def errors() -> Any:
    """``tf.errors`` (the module its exception classes are exported from)."""
    from tensorflow.python.framework import errors as tf_errors

    return tf_errors


def load(path: str) -> Any:
    """``tf.saved_model.load(path)``."""
    from tensorflow.python.saved_model import load as saved_model_load

    return saved_model_load.load(path)


def gfile_read(path: str) -> bytes:
    """The bytes of a file, with ``tf.io.gfile.GFile`` (any filesystem TensorFlow reads, e.g. ``gs://``).

    Raises:
        FileNotFoundError: If there is no such file.
        OSError: If it cannot be read.
    """
    from tensorflow.python.platform import gfile

    tf_errors = errors()
    try:
        with gfile.GFile(path, "rb") as handle:
            return handle.read()  # type: ignore[no-any-return]
    except tf_errors.NotFoundError:
        raise FileNotFoundError(path) from None
    except tf_errors.OpError as err:
        raise OSError(f"{path}: {err.message}") from None


def gfile_exists(path: str) -> bool:
    """``tf.io.gfile.exists(path)``."""
    from tensorflow.python.lib.io import file_io

    return bool(file_io.file_exists_v2(path))


THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
"""The environment variables TensorFlow reads its intra- and inter-op thread counts from when its runtime
initialises (where ``tf.config.threading`` left them unset)."""


def set_threads(threads: int) -> bool:
    """TensorFlow's intra- and inter-op thread counts of this process, both ``threads``.

    Sets :data:`THREAD_VARIABLES` first, then ``tf.config.threading``'s setters. The variables are what
    makes it hold in a quiet process (:func:`tfaural.cli.quiet_tensorflow_startup`, every process a
    command line starts): there the first import of TensorFlow discovers the devices and traces a
    function inside the start-up filter, which initialises the runtime before ``tf.config.threading``
    could be called (its setters then raise), and the runtime takes its counts from the variables.
    Call it before anything in the process uses TensorFlow; the processes started from here inherit
    the variables.

    Returns:
        True if the runtime runs (or will run) with these counts; False if it was already initialised
        with others (e.g. TensorFlow was used earlier in a notebook): they then stay as they are.
    """
    value = str(threads)
    preset = all(os.environ.get(name) == value for name in THREAD_VARIABLES)
    imported = "tensorflow" in sys.modules
    if not imported:
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, value))
    from tensorflow.python.framework import config

    try:
        config.set_intra_op_parallelism_threads(threads)
        config.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised: from the variables (just set, or set before), or not
        return preset or not imported
    return True


def enable_bfloat16_rewrite() -> None:
    """Grappler's ``auto_mixed_precision_onednn_bfloat16`` rewrite for every function this process runs
    from now on (``tf.config.optimizer.set_experimental_options``)."""
    from tensorflow.python.framework import config

    config.set_optimizer_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
