"""The CPU kernels of a benchmark's own TensorFlow work: those tfaural's command lines run.

Imported for its effect, before TensorFlow (``import _kernels``, which sorts first among a script's
third-party imports): :func:`tfaural.cpu.prefer_onednn` sets ``TF_ENABLE_ONEDNN_OPTS=1`` where
tfaural's command lines do (an x86 CPU with AVX2 and FMA on which TensorFlow leaves oneDNN off; a value
the user set wins), so that what a benchmark times in its own process (the library's deconvolution, a
model alone, ...) runs the kernels that ``beam_jobs``, ``export`` and ``tfaural`` run on the same CPU,
whether the script runs on its own or under ``python -m benchmarks``. Another tool's command gets
TensorFlow's default back (``_jobs.run_command(..., peer=True)``).
"""

from tfaural.cpu import prefer_onednn

prefer_onednn()
