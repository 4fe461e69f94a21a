"""``python -m tfaural``: what this machine gives tfaural's command lines, as JSON.

tfaural's and TensorFlow's versions, the CPU (model, cores, the flags that decide TensorFlow's kernels),
TensorFlow's default for oneDNN here, whether tfaural's command lines turn it on here
(:mod:`tfaural.cpu`), whether the TensorFlow runtime this command started runs oneDNN's kernels
(TensorFlow's own check), its thread settings and the GPUs it sees. The first thing to attach to a
report of a speed or numerical difference between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

from tfaural import __version__, cpu


def report() -> dict[str, Any]:
    """The report ``python -m tfaural`` prints (imports TensorFlow's runtime)."""
    flags = cpu.cpu_flags() or frozenset()
    state = cpu.onednn_state()  # before the runtime starts: what it is about to read
    import tensorflow as tf
    from tensorflow.python.framework import config
    from tensorflow.python.util import _pywrap_util_port

    return {
        "tfaural": __version__,
        "tensorflow": tf.version.VERSION,
        "python": platform.python_version(),
        "cpu": cpu.cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu.notable_flags(flags),
        "onednn_tensorflow_default": "on" if cpu.onednn_default_on(flags) else "off",
        "onednn_turned_on_by_tfaural_command_lines": cpu.onednn_preferred(flags, system=platform.system(),
                                                                          machine=platform.machine()),
        "onednn": state,
        "onednn_in_this_process": bool(_pywrap_util_port.IsMklEnabled()),
        "intra_op_threads": config.get_intra_op_parallelism_threads() or "default (one per core)",
        "inter_op_threads": config.get_inter_op_parallelism_threads() or "default",
        "gpus": [device.name for device in config.list_physical_devices("GPU")],
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m tfaural", description=__doc__.splitlines()[0]).parse_args(argv)
    print(json.dumps(report(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
