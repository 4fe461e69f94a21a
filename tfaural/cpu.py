"""The CPU's features, and which of TensorFlow's CPU kernels tfaural's processes run: oneDNN's.

TensorFlow's Linux x86 build has two sets of CPU kernels for convolutions and matrix products: its own
(Eigen) and oneDNN's, chosen once per process when its runtime starts. ``TF_ENABLE_ONEDNN_OPTS``
decides if it is set; otherwise TensorFlow turns oneDNN on only for CPUs with one of
:data:`ONEDNN_DEFAULT_FLAGS` (``DefaultOneDnnPolicy`` in ``tensorflow/core/util/port.cc``) -- so
off on AVX2 CPUs without AVX-512 VNNI/BF16 (e.g. AMD EPYC Zen 2/3, Intel Xeon before Cascade Lake).

On such a CPU (a 2-core AMD EPYC with AVX2 and FMA, no AVX-512) oneDNN's kernels were as fast or faster
for every model tfaural runs, side by side (``benchmarks/onednn.py``, ``benchmarks/RESULTS_amd_avx2_2026-12-03.md``:
float32 matrix products 1.6x, the musicnn exports' log-mel front end 1.4x, the Choi CNN's auralisation of
every feature 1.2x, the ``MTT_vgg`` and SampleCNN models 1.1x, the ``MTT_musicnn`` model 1.0x), once the
musicnn models' temporal filters were no longer ``Conv2D`` layers, which oneDNN ran at 0.56x TensorFlow's
speed there (:class:`tfaural.models.layers.RowConv2D`, 2.9x and 3.7x faster than ``Conv2D`` with each,
still 0.72x with oneDNN's, which the whole model absorbs). So a tfaural command line (and every process it
starts: Beam workers, model processes, which inherit its environment) sets ``TF_ENABLE_ONEDNN_OPTS=1``
on an x86 Linux CPU with AVX2 and FMA, without AVX-512, where TensorFlow leaves oneDNN off (:func:`prefer_onednn`,
called by :func:`tfaural.cli.command_line_startup`). A value the user set wins (``TF_ENABLE_ONEDNN_OPTS=0``
turns it off, e.g. to compare). A program that imports tfaural keeps TensorFlow's default unless it
calls :func:`prefer_onednn` before importing TensorFlow.

:func:`prefer_onednn` also sets :data:`CHOSEN_VARIABLE`, so that every process started from there on
can tell tfaural's choice from the user's (:func:`onednn_chosen_by_tfaural`) and start another tool with
TensorFlow's default kernels, as that tool's users run it (:func:`peer_environment`).

This module imports nothing of TensorFlow.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

__all__ = [
    "ONEDNN_VARIABLE",
    "ONEDNN_DEFAULT_FLAGS",
    "cpu_flags",
    "cpu_model",
    "notable_flags",
    "cpu_bfloat16_flags",
    "onednn_default_on",
    "onednn_preferred",
    "prefer_onednn",
    "CHOSEN_VARIABLE",
    "onednn_chosen_by_tfaural",
    "peer_environment",
    "onednn_state",
]

#: The environment variable TensorFlow reads when its runtime starts: ``1``/``true`` oneDNN on, ``0`` off.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
#: The CPU features for which TensorFlow's Linux x86 build turns oneDNN on by default
#: (``DefaultOneDnnPolicy`` in tensorflow/core/util/port.cc): AVX512_VNNI, AVX512_BF16, AVX_VNNI, AMX.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
#: Set to ``1`` beside :data:`ONEDNN_VARIABLE` when :func:`prefer_onednn` set that (tfaural's choice, not the
#: user's); processes inherit both.
CHOSEN_VARIABLE = "TFAURAL_ONEDNN_CHOSEN"
#: The CPU features of the CPUs on which tfaural measured oneDNN faster where TensorFlow leaves it off.
_ONEDNN_MEASURED_FASTER = ("avx2", "fma")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The ``flags`` of the first processor in ``cpuinfo`` (Linux); ``None`` where there are none."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The ``model name`` of the first processor in ``cpuinfo`` (Linux); else ``platform.processor()`` or
    ``"unknown"``."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def notable_flags(flags: frozenset[str]) -> list[str]:
    """The flags that decide TensorFlow's CPU kernels here (AVX2, FMA, AVX-512, VNNI, BF16, AMX), sorted."""
    return sorted(f for f in flags if f in ("avx2", "fma", "avx512f") or f in ONEDNN_DEFAULT_FLAGS
                  or f.startswith("amx"))


def onednn_default_on(flags: frozenset[str]) -> bool:
    """True if TensorFlow's Linux x86 build turns oneDNN on by default on a CPU with ``flags``."""
    return any(flag in flags for flag in ONEDNN_DEFAULT_FLAGS)


def cpu_bfloat16_flags() -> list[str] | None:
    """This machine's CPU flags for bfloat16 arithmetic (``avx512_bf16``, ``amx_*``), sorted; ``None`` if
    unknown (no ``/proc/cpuinfo``)."""
    flags = cpu_flags()
    if flags is None:
        return None
    return sorted(f for f in flags if f == "avx512_bf16" or f.startswith("amx"))


def onednn_preferred(flags: frozenset[str] | None, *, system: str, machine: str) -> bool:
    """True where tfaural turns oneDNN on and TensorFlow's default would not: Linux on x86-64, a CPU with
    AVX2 and FMA, without AVX-512 (the kind measured) and none of :data:`ONEDNN_DEFAULT_FLAGS`.

    Args:
        flags: The CPU's flags (:func:`cpu_flags`); ``None`` if unknown.
        system: ``platform.system()``.
        machine: ``platform.machine()``.
    """
    if flags is None or system != "Linux" or machine.lower() not in ("x86_64", "amd64"):
        return False
    if onednn_default_on(flags):
        return False  # TensorFlow's default is on already
    if "avx512f" in flags:
        return False  # AVX-512 without VNNI (Skylake-SP): not measured, TensorFlow's default
    return all(flag in flags for flag in _ONEDNN_MEASURED_FASTER)


def prefer_onednn() -> bool:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` (and :data:`CHOSEN_VARIABLE`) in this process's environment where
    :func:`onednn_preferred`, unless ``TF_ENABLE_ONEDNN_OPTS`` is set already (the user's choice wins; so
    does an earlier call's, here or in a parent process).

    Effective if called before TensorFlow's runtime starts in this process; the processes started from
    here on inherit it either way.

    Returns:
        True if this call set it.
    """
    if ONEDNN_VARIABLE in os.environ:
        return False
    os.environ.pop(CHOSEN_VARIABLE, None)  # a stale marker without the setting it marked
    if not onednn_preferred(cpu_flags(), system=platform.system(), machine=platform.machine()):
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    os.environ[CHOSEN_VARIABLE] = "1"
    return True


def onednn_chosen_by_tfaural(environ: Mapping[str, str] | None = None) -> bool:
    """True if ``TF_ENABLE_ONEDNN_OPTS=1`` in ``environ`` (default: this process's) is tfaural's choice
    (:func:`prefer_onednn`, here or in a parent process), not the user's."""
    env = os.environ if environ is None else environ
    return env.get(CHOSEN_VARIABLE) == "1" and env.get(ONEDNN_VARIABLE) == "1"


def peer_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) for another tool's command: without tfaural's choice of
    kernels, so that it runs TensorFlow's default as its users run it; a setting the user made is kept."""
    env = dict(os.environ if environ is None else environ)
    if onednn_chosen_by_tfaural(env):
        env.pop(ONEDNN_VARIABLE)
    env.pop(CHOSEN_VARIABLE, None)
    return env


def onednn_state(environ: Mapping[str, str] | None = None) -> str:
    """Whether TensorFlow's oneDNN kernels are on in a TensorFlow runtime started now in this process (or in a
    process with the environment ``environ``), and why, in words (e.g. for a benchmark report)."""
    env = os.environ if environ is None else environ
    setting = env.get(ONEDNN_VARIABLE)
    if setting is not None:
        on = setting.strip().lower() in ("1", "true")
        chosen = ", tfaural's choice on this CPU" if onednn_chosen_by_tfaural(env) else ""
        return f"{'on' if on else 'off'} ({ONEDNN_VARIABLE}={setting}{chosen})"
    flags = cpu_flags()
    if flags is None or platform.system() != "Linux":
        return "TensorFlow's default for this platform"
    if onednn_default_on(flags):
        found = [flag.upper() for flag in ONEDNN_DEFAULT_FLAGS if flag in flags]
        return f"on (TensorFlow's default on a CPU with {', '.join(found)})"
    return "off (TensorFlow's default on a CPU without AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX)"

