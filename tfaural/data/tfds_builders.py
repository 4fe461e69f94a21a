"""TensorFlow Datasets builders for catalogue manifests, MagnaTagATune and GTZAN.

Importing this module registers three builders (nothing is ever downloaded; the
audio is read from ``manual_dir``):

``tfaural_catalogue``
    Any catalogue manifest (:mod:`tfaural.data.catalogue`). The manifest reaches
    the builder through its config, :meth:`CatalogueConfig.from_manifest`, which
    also fixes the label vocabulary; a relative manifest path is looked up in
    ``manual_dir``.
``tfaural_magnatagatune``
    ``manual_dir`` holds ``annotations_final.csv`` and the mp3 folders ``0`` ...
    ``f`` (directly or under ``mp3/``). Top-50 tags (:data:`MTAT_TOP50_TAGS`),
    splits by folder as in the SampleCNN recipe.
``tfaural_gtzan``
    ``manual_dir`` holds the genre folders (directly, or under ``genres/`` or
    ``genres_original/``) and optionally the artist-filtered split lists
    ``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt``.

Every example is ``{"audio": int16 [samples], "track_id": str, <labels>}``: mono
audio resampled to the config's rate and quantised like the TFRecords
(:func:`tfaural.data.tfrecord.quantize`); labels are ``"labels"`` (a sequence of
class labels) for catalogues and MagnaTagATune, ``"label"`` (one genre) for
GTZAN. Tracks without a split go to the ``"unsplit"`` split. Files that cannot
be decoded (or, for ``tfaural_catalogue``, do not exist) are skipped with a
warning and listed in ``info.metadata["failures"]`` (in Beam mode only logged and
counted in the ``tfaural_tfds/tracks_failed`` counter); use ``python -m beam_jobs.make_tfrecords``
for a failures file. The MagnaTagATune and GTZAN builders refuse to start if files
of the dataset are missing (an incomplete download).

Example::

    import tensorflow_datasets as tfds
    from tfaural.data.tfds_builders import CatalogueConfig

    config = CatalogueConfig.from_manifest("/data/mine/manifest.csv", sample_rate=22050)
    ds = tfds.load("tfaural_catalogue", split="train", data_dir="/data/tfds", builder_kwargs={"config": config},
                   download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(
                       manual_dir="/data/mine")})

For large catalogues build with Beam: pass ``builder_kwargs={"config": config,
"use_beam": True}`` and a ``beam_runner`` or ``beam_options`` in the
``DownloadConfig``.

From the command line (:mod:`tfaural.data.build_tfds`, which calls :func:`prepare`; training then
reads the dataset by name, ``python -m tfaural.training.train --data tfaural_catalogue/demo --tfds-data-dir
demo/tfds``)::

    python -m tfaural.data.build_tfds tfaural_catalogue --manifest demo/catalogue/manifest.csv \
        --config demo --sample-rate 11025 --data-dir demo/tfds
    python -m tfaural.data.build_tfds tfaural_gtzan --config 22050hz --manual-dir /data/gtzan --data-dir /data/tfds
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfaural import audio
from tfaural.data.catalogue import (
    GTZAN_GENRES,
    MTAT_TOP50_TAGS,
    Catalogue,
    Track,
    is_uri,
    read_gtzan,
    read_magnatagatune,
    read_manifest,
)
from tfaural.data.tfrecord import ClipCounter, quantize
from tfaural.errors import AudioDecodeError, DataError, ParameterError, TfauralError, failure_reason

__all__ = [
    "UNSPLIT",
    "Int16Audio",
    "AudioBuilderConfig",
    "CatalogueConfig",
    "TfauralCatalogue",
    "TfauralMagnatagatune",
    "TfauralGtzan",
    "BUILDERS",
    "prepare",
]

logger = logging.getLogger(__name__)

UNSPLIT = "unsplit"
"""TFDS split of tracks that have no split in the manifest."""

_VERSION = tfds.core.Version("1.0.0")
_CITATION_SAMPLECNN = """@article{lee2018samplecnn,
  title={SampleCNN: End-to-End Deep Convolutional Neural Networks Using Very Small Filters for Music Classification},
  author={Lee, Jongpil and Park, Jiyoung and Kim, Keunhyoung Luke and Nam, Juhan},
  journal={Applied Sciences}, volume={8}, number={1}, pages={150}, year={2018}}"""


@dataclasses.dataclass(eq=False)
class AudioBuilderConfig(tfds.core.BuilderConfig):
    """A builder config with the sample rate the audio is resampled to.

    Attributes:
        sample_rate: Target sample rate in Hz.
    """

    sample_rate: int = 22050


@dataclasses.dataclass(eq=False)
class CatalogueConfig(AudioBuilderConfig):
    """Config of ``tfaural_catalogue``: which manifest, at which rate, with which labels.

    Attributes:
        manifest: The manifest path (absolute, a URI, or relative to ``manual_dir``).
        label_names: Label vocabulary in class-index order (``None``: read from the
            manifest, which must then be absolute or a URI).
    """

    manifest: str = ""
    label_names: tuple[str, ...] | None = None

    @classmethod
    def from_manifest(
        cls,
        manifest: str | os.PathLike[str],
        *,
        sample_rate: int,
        name: str | None = None,
        label_names: Sequence[str] | None = None,
        description: str | None = None,
    ) -> CatalogueConfig:
        """Builds a config from a manifest, reading its label vocabulary.

        Args:
            manifest: The manifest file.
            sample_rate: Target sample rate in Hz.
            name: Config name (default: the manifest's folder and file name and the
                rate, e.g. ``"mine_manifest_22050hz"``); the prepared data lives in
                ``<data_dir>/tfaural_catalogue/<name>/``.
            label_names: Explicit vocabulary (default: sorted labels of the manifest).
            description: Free text for the dataset info.

        Raises:
            DataError: If the manifest cannot be read or is invalid.
        """
        manifest = os.fspath(manifest)
        catalogue = read_manifest(manifest, label_names=label_names, check_files=False)
        if name is None:
            folder = os.path.basename(os.path.dirname(os.path.abspath(manifest))) if not is_uri(manifest) else ""
            stem = os.path.splitext(os.path.basename(manifest))[0]
            name = re.sub(r"[^a-z0-9_]+", "_", f"{folder}_{stem}_{sample_rate}hz".lower()).strip("_")
        return cls(name=name, version=_VERSION, manifest=manifest, sample_rate=sample_rate,
                   label_names=catalogue.label_names, description=description or f"Catalogue {manifest}")


class Int16Audio(tfds.features.Audio):
    """``tfds.features.Audio`` that stores int16 arrays as raw bytes.

    ``Audio(dtype=np.int16, encoding=Encoding.BYTES)`` skips its encoding for
    NumPy arrays (tensorflow-datasets 4.9.10) and then fails to serialise them;
    this subclass encodes arrays like ``tfds.features.Tensor`` does: 2 bytes per
    sample instead of an int64 varint list.
    """

    def encode_example(self, audio_or_path_or_fobj: Any) -> Any:
        if isinstance(audio_or_path_or_fobj, (np.ndarray, list)):
            return tfds.features.Tensor.encode_example(self, np.asarray(audio_or_path_or_fobj, np.int16))
        return super().encode_example(audio_or_path_or_fobj)


def _audio_source(path: str) -> Any:
    if not is_uri(path):
        return path
    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            buffer = io.BytesIO(handle.read())
    except (tf.errors.OpError, OSError) as err:
        raise AudioDecodeError(path, f"cannot read the file ({type(err).__name__}: {err})") from None
    buffer.name = path
    return buffer


def _decode(track: Track, *, sample_rate: int) -> np.ndarray:
    """The track as int16 ``[samples]`` at ``sample_rate`` (raises AudioError, also for a silent track)."""
    y, _ = audio.load(_audio_source(track.path), sample_rate=sample_rate, mono=True, require_sound=True)
    clipping = ClipCounter()
    clipping.count(y)
    clipping.check(track.path)  # as make_tfrecords: not records of mostly clipped audio
    return quantize(y)


def _example(track: Track, *, sample_rate: int, single_label: bool) -> tuple[str, dict[str, Any]]:
    example: dict[str, Any] = {"audio": _decode(track, sample_rate=sample_rate), "track_id": track.track_id}
    if single_label:
        example["label"] = track.labels[0]
    else:
        example["labels"] = list(track.labels)
    return track.track_id, example


def _example_or_nothing(track: Track, *, sample_rate: int, single_label: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Beam-mode generation: skips (and counts) tracks whose audio cannot be decoded."""
    try:
        yield _example(track, sample_rate=sample_rate, single_label=single_label)
    except TfauralError as err:
        import apache_beam as beam

        logger.warning("skipping %s: %s", track.path, err)
        beam.metrics.Metrics.counter("tfaural_tfds", "tracks_failed").inc()


class _AudioCatalogueBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
    """Shared machinery: a catalogue from ``manual_dir``, one example per decodable track."""

    VERSION = _VERSION
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release (tfaural schema v1: int16 mono audio)."}
    SINGLE_LABEL = False

    def __init__(self, *, use_beam: bool = False, **kwargs: Any) -> None:
        """Creates the builder.

        Args:
            use_beam: Generate the examples with Apache Beam, for large catalogues (pass a
                ``beam_runner`` or ``beam_options`` in the ``DownloadConfig``).
            **kwargs: Arguments of ``tfds.core.DatasetBuilder`` (``data_dir``, ``config``, ``version``).
        """
        self._use_beam = use_beam
        self._failures: list[dict[str, str]] = []
        super().__init__(**kwargs)

    @property
    def sample_rate(self) -> int:
        """Target sample rate in Hz of the current config."""
        config = self.builder_config
        if not isinstance(config, AudioBuilderConfig):
            raise DataError(f"{self.name}: needs an AudioBuilderConfig with a sample_rate, got {config!r}")
        return config.sample_rate

    def _label_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _catalogue(self, manual_dir: str) -> Catalogue:
        raise NotImplementedError

    def _features(self) -> tfds.features.FeaturesDict:
        features: dict[str, Any] = {
            "audio": Int16Audio(shape=(None,), dtype=np.int16, sample_rate=self.sample_rate,
                                encoding=tfds.features.Encoding.BYTES,
                                doc="Mono PCM, int16 = round(clip(y, -1, 1) * 32767)."),
            "track_id": tfds.features.Text(doc="The catalogue's track id."),
        }
        if self.SINGLE_LABEL:
            features["label"] = tfds.features.ClassLabel(names=list(self._label_names()))
        else:
            features["labels"] = tfds.features.Sequence(tfds.features.ClassLabel(names=list(self._label_names())))
        return tfds.features.FeaturesDict(features)

    def _dataset_info(self, *, description: str, homepage: str = "", citation: str = "") -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=description,
            features=self._features(),
            supervised_keys=("audio", "label") if self.SINGLE_LABEL else None,
            homepage=homepage or None,
            citation=citation or None,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        catalogue = self._catalogue(os.fspath(dl_manager.manual_dir))
        by_split: dict[str, list[Track]] = collections.defaultdict(list)
        for track in catalogue:
            by_split[track.split or UNSPLIT].append(track)
        if not self._use_beam:  # Beam workers cannot report back here: they log and count instead
            self.info.metadata["failures"] = self._failures
        return {split: self._generate_examples(tracks) for split, tracks in by_split.items()}

    def _generate_examples(self, tracks: list[Track]) -> Any:  # type: ignore[override]
        rate, single = self.sample_rate, self.SINGLE_LABEL
        if self._use_beam:
            import apache_beam as beam

            return beam.Create(tracks) | beam.FlatMap(_example_or_nothing, sample_rate=rate, single_label=single)
        return self._generate_locally(tracks, sample_rate=rate, single_label=single)

    def _generate_locally(
        self, tracks: list[Track], *, sample_rate: int, single_label: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for track in tracks:
            try:
                yield _example(track, sample_rate=sample_rate, single_label=single_label)
            except TfauralError as err:
                logger.warning("skipping %s: %s", track.path, err)
                self._failures.append({"path": track.path, "track_id": track.track_id,
                                       "error": type(err).__name__, "reason": failure_reason(err)})


class TfauralCatalogue(_AudioCatalogueBuilder):
    """Any catalogue manifest as a TFDS dataset (config: :class:`CatalogueConfig`)."""

    name = "tfaural_catalogue"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the audio files (and the manifest, if its path in the config is relative) in manual_dir. "
        "Relative audio paths in the manifest are relative to the manifest's folder."
    )

    def _config(self) -> CatalogueConfig:
        config = self.builder_config
        if not isinstance(config, CatalogueConfig) or not config.manifest:
            raise DataError("tfaural_catalogue needs a config naming the manifest: pass builder_kwargs={'config': "
                            "CatalogueConfig.from_manifest(path, sample_rate=...)} (or config=... to tfds.builder)")
        return config

    def _label_names(self) -> tuple[str, ...]:
        config = self._config()
        if config.label_names is not None:
            return tuple(config.label_names)
        if not (os.path.isabs(config.manifest) or is_uri(config.manifest)):
            raise DataError(f"tfaural_catalogue: manifest {config.manifest!r} is relative, so its labels cannot be "
                            "read before manual_dir is known; use CatalogueConfig.from_manifest or give label_names")
        return read_manifest(config.manifest, check_files=False).label_names

    def _info(self) -> tfds.core.DatasetInfo:
        return self._dataset_info(description=self._config().description or "A tfaural catalogue manifest.")

    def _catalogue(self, manual_dir: str) -> Catalogue:
        config = self._config()
        manifest = config.manifest
        if not (os.path.isabs(manifest) or is_uri(manifest)):
            manifest = os.path.join(manual_dir, manifest)
        # Missing files are failures (as in make_tfrecords), not a reason to refuse the whole catalogue.
        return read_manifest(manifest, label_names=self._label_names(), check_files=False)


class TfauralMagnatagatune(_AudioCatalogueBuilder):
    """MagnaTagATune, top-50 tags, split by mp3 folder (0-b train, c validation, d-f test)."""

    name = "tfaural_magnatagatune"
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        AudioBuilderConfig(name="22050hz", version=_VERSION, sample_rate=22050,
                           description="Resampled to 22,050 Hz (SampleCNN)."),
        AudioBuilderConfig(name="16000hz", version=_VERSION, sample_rate=16000,
                           description="The native 16 kHz of the mp3 files."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download MagnaTagATune (https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset): "
        "annotations_final.csv and mp3.zip.001-003 (cat them into one zip and unzip). Put "
        "annotations_final.csv and the folders 0 ... f (directly or under mp3/) in manual_dir."
    )

    def _label_names(self) -> tuple[str, ...]:
        return MTAT_TOP50_TAGS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._dataset_info(
            description="MagnaTagATune clips with the 50 most frequent tags; clips with none of them are left out.",
            homepage="https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset",
            citation=_CITATION_SAMPLECNN,
        )

    def _catalogue(self, manual_dir: str) -> Catalogue:
        annotations = os.path.join(manual_dir, "annotations_final.csv")
        audio_root = os.path.join(manual_dir, "mp3") if os.path.isdir(os.path.join(manual_dir, "mp3")) else manual_dir
        return read_magnatagatune(annotations, audio_root, tags=MTAT_TOP50_TAGS, check_files=True)


class TfauralGtzan(_AudioCatalogueBuilder):
    """GTZAN genres, with the artist-filtered split when its list files are in ``manual_dir``."""

    name = "tfaural_gtzan"
    SINGLE_LABEL = True
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        AudioBuilderConfig(name="22050hz", version=_VERSION, sample_rate=22050,
                           description="The native 22,050 Hz (SampleCNN)."),
        AudioBuilderConfig(name="11025hz", version=_VERSION, sample_rate=11025,
                           description="Resampled to 11,025 Hz (the Choi et al. CNN)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put GTZAN's ten genre folders (blues/ ... rock/) in manual_dir, directly or under genres/ or "
        "genres_original/. For the artist-filtered split add train_filtered.txt, valid_filtered.txt and "
        "test_filtered.txt (https://github.com/coreyker/dnn-mgr/tree/master/gtzan); without them every "
        "file goes to the 'unsplit' split."
    )
    SPLIT_FILES: ClassVar[dict[str, str]] = {
        "train": "train_filtered.txt", "validation": "valid_filtered.txt", "test": "test_filtered.txt",
    }

    def _label_names(self) -> tuple[str, ...]:
        return GTZAN_GENRES

    def _info(self) -> tfds.core.DatasetInfo:
        return self._dataset_info(
            description="GTZAN music genre collection: 1,000 30 s clips in 10 genres.",
            homepage="http://marsyas.info/index.html",
            citation=_CITATION_SAMPLECNN,
        )

    def _catalogue(self, manual_dir: str) -> Catalogue:
        root = manual_dir
        for sub in ("genres", "genres_original"):
            if os.path.isdir(os.path.join(manual_dir, sub)):
                root = os.path.join(manual_dir, sub)
        lists = {split: os.path.join(manual_dir, name) for split, name in self.SPLIT_FILES.items()}
        present = {split: path for split, path in lists.items() if os.path.isfile(path)}
        if present and len(present) != len(lists):
            missing = sorted(set(self.SPLIT_FILES.values()) - {os.path.basename(p) for p in present.values()})
            raise DataError(f"{manual_dir}: has some split lists but not {missing}; give all three or none")
        return read_gtzan(root, split_files=present or None, check_files=True)


BUILDERS = ("tfaural_catalogue", "tfaural_gtzan", "tfaural_magnatagatune")
"""Names of the builders of this module."""


def prepare(
    dataset: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    config: str | None = None,
    manifest: str | None = None,
    sample_rate: int | None = None,
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
    """Prepares one of this module's datasets in a TFDS data directory (reads local files, downloads nothing).

    Args:
        dataset: One of :data:`BUILDERS`.
        data_dir: TFDS data directory (``None``: TFDS's default).
        manual_dir: Folder with the audio (default for ``tfaural_catalogue``: the manifest's folder).
        config: Config name: the catalogue's name for ``tfaural_catalogue`` (default: derived from the
            manifest), ``22050hz``/``11025hz`` (GTZAN) or ``22050hz``/``16000hz`` (MagnaTagATune).
        manifest: ``tfaural_catalogue`` only: the catalogue manifest.
        sample_rate: ``tfaural_catalogue`` only: target sample rate in Hz (default 22,050).
        overwrite: Generate again even if the dataset is already prepared (e.g. after the manifest changed).

    Returns:
        The prepared builder (``builder.info`` lists the splits).

    Raises:
        ParameterError: On arguments that do not fit the dataset.
        DataError: If the catalogue cannot be read.
    """
    if dataset not in BUILDERS:
        raise ParameterError(f"dataset {dataset!r} is not one of {list(BUILDERS)}")
    builder_config: str | CatalogueConfig | None = config
    if dataset == "tfaural_catalogue":
        if not manifest:
            raise ParameterError("tfaural_catalogue needs --manifest (the catalogue manifest, CSV or JSONL)")
        local = not is_uri(manifest)
        path = os.path.abspath(manifest) if local else manifest
        builder_config = CatalogueConfig.from_manifest(path, sample_rate=sample_rate or 22050, name=config)
        if manual_dir is None:
            manual_dir = os.path.dirname(path) if local else manifest.rsplit("/", 1)[0]
    else:
        if manifest or sample_rate:
            raise ParameterError(f"{dataset}: --manifest and --sample-rate are for tfaural_catalogue; the config "
                                 "fixes the rate (--config 22050hz, ...)")
        if not manual_dir:
            raise ParameterError(f"{dataset} needs --manual-dir, the folder with the dataset's audio")
    builder = tfds.builder(dataset, config=builder_config, data_dir=data_dir)
    mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite else None
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False, **({"download_mode": mode} if mode else {})))
    return builder

