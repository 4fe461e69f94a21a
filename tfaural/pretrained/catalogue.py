"""The pretrained models tfaural can import, by name, and writing them as run directories."""

from __future__ import annotations

import os
from typing import Any

from tfaural.errors import ModelError
from tfaural.pretrained import musicnn
from tfaural.training.run import INFO_FILE, RunInfo, save_run

__all__ = ["available", "resolve", "import_run"]


def available() -> list[musicnn.PretrainedModel]:
    """Every importable model (``musicnn/MTT_vgg`` ...)."""
    return list(musicnn.MODELS.values())


def resolve(name: str) -> musicnn.PretrainedModel:
    """The model called ``name`` (``musicnn/MTT_vgg``; the bare ``MTT_vgg`` is accepted too).

    Raises:
        ModelError: For an unknown name (with the known ones).
    """
    key = name.strip()
    source, _, model = key.partition("/")
    if not model:
        source, model = musicnn.DISTRIBUTION, key
    if source == musicnn.DISTRIBUTION:
        for candidate in musicnn.MODELS.values():
            if candidate.name.lower() == model.lower():
                return candidate
    known = ", ".join(m.key for m in available())
    raise ModelError(f"unknown pretrained model {name!r}; known: {known} (python -m tfaural.pretrained --list)")


def import_run(
    name: str,
    output: str | os.PathLike[str],
    *,
    hop_frames: int | None = None,
    checkpoint_dir: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
) -> tuple[Any, RunInfo]:
    """Imports model ``name`` into the run directory ``output``.

    Args:
        name: See :func:`resolve`.
        output: The run directory to write (``model.keras`` + ``run.json``).
        hop_frames: Hop between tagging patches in frames (default: the model's covering hop).
        checkpoint_dir: Read the checkpoint from this folder instead of the installed wheel.
        verify: Run the publisher's own graph on generated music-like patches and require the
            imported model to agree (taggram ≤ 1e-5 absolute, embeddings ≤ 1e-5 of their peak);
            the figures go into ``run.json``.
        overwrite: Replace an existing run in ``output``.

    Returns:
        ``(keras_model, run_info)``.

    Raises:
        ModelError: If the model cannot be imported, does not match its original, or
            ``output`` already holds a run (without ``overwrite``).
    """
    model = resolve(name)
    root = os.fspath(output)
    if os.path.exists(os.path.join(root, INFO_FILE)) and not overwrite:
        raise ModelError(f"{root!r} already holds a run ({INFO_FILE}); choose another --output or pass --overwrite")
    keras_model, info = musicnn.import_model(model.name, hop_frames=hop_frames, checkpoint_dir=checkpoint_dir)
    if verify:
        errors = musicnn.verify_import(model.name, keras_model, _probe_patches(), checkpoint_dir=checkpoint_dir)
        worst = max(errors.values())
        if worst > musicnn.PARITY_TOLERANCE:
            raise ModelError(
                f"{model.key}: the imported model differs from musicnn's own graph by {worst:.3g} "
                f"(tolerance {musicnn.PARITY_TOLERANCE:g}): {errors}"
            )
        info.extra["pretrained"]["parity_with_original_graph"] = {k: float(f"{v:.3g}") for k, v in errors.items()}
    save_run(root, keras_model, info)
    return keras_model, info


def _probe_patches() -> Any:
    """Mel power of two generated music-like patches (chords + drums, peak 0.25) for the import check."""
    from tfaural import spectral
    from tfaural.pretrained.probes import music_like

    waveform = music_like(seconds=6.0, sample_rate=16000, seed=0, peak=0.25)
    length = (musicnn.PATCH_FRAMES - 1) * 256
    patches = waveform[: 2 * length].reshape(2, length)
    mel = spectral.melspectrogram(patches, sample_rate=16000, n_fft=512, hop_length=256, n_mels=96)
    return mel.numpy()
