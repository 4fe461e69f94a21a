"""What the command-line benchmarks share: music-like catalogues, imported musicnn exports, timed job commands."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tfaural.cli import skip_keras_optional_imports
from tfaural.cpu import cpu_model, peer_environment, prefer_onednn

REPO = Path(__file__).resolve().parent.parent
SOURCE_RATE = 44100
FORMATS = ("wav", "flac", "mp3")
#: A folder that the entries of one ``python -m benchmarks --quick`` run share their exports through
#: (set by ``benchmarks/__main__.py``; unset, every entry exports its own models).
EXPORT_CACHE_ENV = "TFAURAL_BENCHMARK_EXPORTS"

# The benchmarks that run tfaural's command lines compare them with work done in their own process (the
# model alone, ...): both with the kernels the command lines choose (oneDNN's where tfaural measured them
# faster, tfaural.cpu), set before the benchmark imports TensorFlow. Another tool (musicnn) runs with
# TensorFlow's defaults, as its users run it (run_command(..., peer=True): tfaural.cpu.peer_environment, which
# tells tfaural's choice, made here or in the parent `python -m benchmarks`, from the user's). Their first
# TensorFlow import skips Keras's optional imports too, as the command lines' does (benchmarks/_kernels.py).
prefer_onednn()
skip_keras_optional_imports()


def music_catalogue(folder: Path, *, tracks: int, seconds: float, formats: tuple[str, ...] = FORMATS,
                    seed: int = 19) -> list[Path]:
    """``tracks`` music-like pieces (chords over drums, :func:`tfaural.pretrained.probes.music_like`), 44.1 kHz
    stereo, cycling through ``formats``; tempo and level vary per track (peak 0.3-0.6).

    The right channel is the left one delayed by 10 ms plus a little noise, so that the two
    channels differ as in a real mix.
    """
    import soundfile as sf

    from tfaural.pretrained.probes import music_like

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    delay = int(0.01 * SOURCE_RATE)
    for index in range(tracks):
        tempo, peak = float(rng.uniform(80, 160)), float(rng.uniform(0.3, 0.6))
        left = music_like(seconds=seconds, sample_rate=SOURCE_RATE, seed=seed * 1000 + index, peak=peak, tempo=tempo)
        right = 0.9 * np.roll(left, delay) + 0.01 * peak * rng.standard_normal(left.size).astype(np.float32)
        stereo = np.stack([left, right], axis=1)
        stereo *= peak / max(float(np.max(np.abs(stereo))), 1e-9)
        fmt = formats[index % len(formats)]
        path = folder / f"track {index:04d}.{fmt}"
        subtype = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III", "ogg": "VORBIS"}[fmt]
        sf.write(path, stereo.astype(np.float32), SOURCE_RATE, subtype=subtype)
        paths.append(path)
    return paths


def shared_export(key: str, build: Callable[[Path], str], base: Path) -> str:
    """The version directory ``build`` exports, shared between the entries of one smoke run.

    Without :data:`EXPORT_CACHE_ENV` in the environment this is ``build(base)``. With it, the
    first entry to ask for ``key`` builds the export while the others wait (a file lock), into a
    temporary folder renamed into place only when ``build`` returned; a later request reuses it
    after checking that its ``metadata.json`` still reads.

    Args:
        key: Names the export (its model and settings); a file name.
        build: Exports into the base folder it is given; returns the version directory.
        base: The export base folder when nothing is shared.
    """
    cache = os.environ.get(EXPORT_CACHE_ENV)
    if not cache:
        return build(base)
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / key
    with open(folder / f"{key}.lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = final / "version.json"
        if record.is_file():
            version_dir = final / json.loads(record.read_text())["version_dir"]
            with contextlib.suppress(OSError, ValueError, KeyError):
                json.loads((version_dir / "assets" / "metadata.json").read_text())["signatures"]
                return str(version_dir)
            shutil.rmtree(final, ignore_errors=True)  # unreadable: built again below
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder))
        version_dir = Path(build(scratch / "export"))
        relative = version_dir.relative_to(scratch)
        (scratch / "version.json").write_text(json.dumps({"version_dir": str(relative)}))
        scratch.rename(final)
        return str(final / relative)


def musicnn_export(name: str, root: Path, *, hop_frames: int | None = None, verify: bool = True,
                   signatures: str = "tagging") -> str:
    """Imports musicnn's ``name`` (e.g. ``MTT_vgg``) and exports it; returns the version directory.

    Shared between the entries of a smoke run (:func:`shared_export`); ``root`` holds it otherwise.
    ``signatures`` (``python -m export --signatures``): ``tagging`` by default, all a tag job calls
    (it loads ``serving_default``'s own SavedModel either way); ``all`` for the whole export.
    """
    from export.exporter import export_run
    from tfaural.pretrained.catalogue import import_run

    label = f"{name}-{hop_frames or 'default'}"

    def build(base: Path) -> str:
        run_dir = base.parent / f"run-{label}"
        import_run(f"musicnn/{name}", run_dir, hop_frames=hop_frames, verify=verify, overwrite=True)
        return export_run(run_dir, base, verify=verify, signatures=signatures)

    return shared_export(f"musicnn-{label}-{'verified' if verify else 'unverified'}-{signatures}", build,
                         root / f"export-{label}-{signatures}")


def job_env(*, peer: bool = False) -> dict[str, str]:
    """The environment of a job command: this checkout first on the path, TensorFlow's C++ logs quiet.

    ``peer``: another tool's command, which gets TensorFlow's default kernels unless the user chose
    (:func:`tfaural.cpu.peer_environment`).
    """
    env = {**(peer_environment() if peer else os.environ), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return env


def run_command(command: list[str], *, timeout: float = 3600, peer: bool = False) -> dict[str, Any]:
    """Runs a command (``peer``: another tool's, see :func:`job_env`), timed from start to exit; raises with its
    output's tail if it fails.

    Returns:
        ``{"seconds": wall, "cpu_seconds": user + system of the command's processes, "stderr": ...}``.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=job_env(peer=peer), timeout=timeout)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({done.returncode}): {done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "stdout": done.stdout, "stderr": done.stderr}


def tag_command(input_glob: str, export_dir: str, output: Path, *extra: str) -> list[str]:
    """``python -m beam_jobs.tag`` as a user types it (default runner: every core)."""
    return [sys.executable, "-m", "beam_jobs.tag", f"--input={input_glob}", f"--model={export_dir}",
            f"--output={output}", "--overwrite", *extra]


def read_tags(output: Path) -> dict[str, dict[str, Any]]:
    """``tags.jsonl`` of a tag run, by file name."""
    import json

    records = [json.loads(line) for line in (output / "tags.jsonl").read_text().splitlines() if line.strip()]
    return {Path(r["path"]).name: r for r in records}


def machine_load() -> dict[str, Any]:
    """The CPU model and the load averages (the machine may be shared)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
