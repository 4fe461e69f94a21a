"""The CPU kernels of a benchmark's own TensorFlow work: those tfaural's command lines run.

Imported for its effect, before TensorFlow (``import _kernels``, which sorts first among a script's
third-party imports): :func:`tfaural.cpu.prefer_onednn` sets ``TF_ENABLE_ONEDNN_OPTS=1`` where
tfaural's command lines do (an x86 CPU with AVX2 and FMA on which TensorFlow leaves oneDNN off; a value
the user set wins), so that what a benchmark times in its own process (the library's deconvolution, a
model alone, ...) runs the kernels that ``beam_jobs``, ``export`` and ``tfaural`` run on the same CPU,
whether the script runs on its own or under ``python -m benchmarks``. Another tool's command gets
TensorFlow's default back (``_jobs.run_command(..., peer=True)``).

It also makes the script's first TensorFlow import skip Keras's optional imports (scikit-learn and matplotlib,
:func:`tfaural.cli.skip_keras_optional_imports`) as the command lines' does: the script imports them as usual
where it uses them, and each benchmark process starts about 2.5 s of CPU sooner.
"""

from tfaural.cli import skip_keras_optional_imports
from tfaural.cpu import prefer_onednn

prefer_onednn()
skip_keras_optional_imports()
