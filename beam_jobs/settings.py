"""The flags every inference job has (``--input``/``--manifest``, ``--model``, ``--output``, ...), validated.

:class:`InferenceSettings` is the ``common`` field of each inference job's own frozen
settings; :meth:`InferenceSettings.for_runner` adjusts batching, threading and where the
model runs to the runner the job was given.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_jobs import io as beam_io
from beam_jobs.inference import read_metadata, resolve_model_dir
from beam_jobs.model_process import PRECISIONS, ModelServerAddress
from beam_jobs.options import CatalogueJobOptions, InferenceJobOptions, _given, is_dask_runner, require
from tfaural.cli import check_output_folder
from tfaural.cpu import cpu_bfloat16_flags
from tfaural.errors import ParameterError
from tfaural.formats import ExportMetadata

__all__ = [
    "InferenceSettings",
    "excerpt_seconds",
]

logger = logging.getLogger(__name__)


def excerpt_seconds(metadata: ExportMetadata, *, needed_samples: int, default: float) -> float:
    """The length of a ``deconvolve``/``auralise`` clip a job takes when not told one: ``default``, or what the
    export needs if that is longer (``needed_samples``, rounded up to 0.1 s; at most its ``max_deconv_seconds``).

    Args:
        metadata: The export's ``metadata.json``.
        needed_samples: The fewest samples the job's clips need (e.g. ``min_deconv_samples``).
        default: The job's usual length in seconds.

    Returns:
        Seconds (shorter than ``needed_samples`` only if the export takes no clip that long: the job's own
        check then says so).
    """
    needed = needed_samples / metadata.sample_rate
    seconds = max(float(default), math.ceil(needed * 10 - 1e-6) / 10)
    longest = math.inf if metadata.max_deconv_seconds is None else float(metadata.max_deconv_seconds)
    return seconds if seconds <= longest or needed > longest else longest


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The flags every inference job has, validated.

    Attributes:
        input_glob: ``--input``.
        manifest: ``--manifest``.
        model: ``--model``, the export version directory.
        metadata: The export's ``metadata.json``.
        output: ``--output``, without a trailing ``/``.
        sample_rate: The model's sample rate in Hz.
        batch_size: Largest batch RunInference forms.
        format: The output format (validated by the job).
        skip_existing: ``--skip-existing``.
        overwrite: ``--overwrite``.
        intra_op_threads: TensorFlow threads per worker process (``None``: TensorFlow's default).
        precision: ``--precision``: ``"float32"`` or ``"bfloat16"`` (jobs that allow it).
        prebatched: Hand RunInference ready-made batches of one example instead of letting it
            batch (for runners that drop what ``BatchElements`` emits from ``finish_bundle``).
        share_model: Load the model once per machine in a process of its own that the worker
            processes call, instead of once per worker process.
        model_process: Run the model in a model process that the launcher starts
            (:mod:`beam_jobs.model_process`; local DirectRunner, jobs that support it).
        model_server: The running model process's address (set by :func:`execute`).
    """

    input_glob: str | None
    manifest: str | None
    model: str
    metadata: ExportMetadata
    output: str
    sample_rate: int
    batch_size: int
    format: str | None
    skip_existing: bool
    overwrite: bool
    intra_op_threads: int | None = None
    precision: str = "float32"
    prebatched: bool = False
    share_model: bool = False
    model_process: bool = False
    model_server: ModelServerAddress | None = None

    @classmethod
    def from_options(
        cls,
        options: PipelineOptions,
        *,
        signature: str,
        default_batch_size: int,
        formats: Sequence[str] | None = None,
        precision: bool = False,
    ) -> InferenceSettings:
        """Validates the shared flags and reads the model's metadata.

        Args:
            options: The parsed options.
            signature: The signature the job calls (checked against the export).
            default_batch_size: ``--batch-size`` when not given.
            formats: Allowed ``--format`` values, the first being the default (``None``: none allowed).
            precision: The job takes ``--precision`` (else giving it is an error).

        Raises:
            ParameterError: On a missing or invalid flag, naming it.
            ModelError: If ``--model`` is not a tfaural export with that signature.
        """
        common = options.view_as(CatalogueJobOptions)
        job = options.view_as(InferenceJobOptions)
        if (job.input is None) == (common.manifest is None):
            raise ParameterError("give the audio files either as --input GLOB or as --manifest FILE (exactly one)")
        output = check_output_folder(require(common.output, "--output", "an output folder").rstrip("/") or "/",
                                     remote=True)
        model = resolve_model_dir(require(job.model, "--model", "an export (EXPORT_BASE or EXPORT_BASE/<N>)"))
        metadata = read_metadata(model)
        metadata.signature(signature, export_dir=model)
        rate = metadata.sample_rate
        if common.sample_rate is not None and common.sample_rate != rate:
            raise ParameterError(f"--sample-rate {common.sample_rate} differs from the model's {rate} Hz; leave it out "
                                 "(audio is resampled to the model's rate)")
        batch_size = default_batch_size if job.batch_size is None else job.batch_size
        if batch_size < 1:
            raise ParameterError(f"--batch-size {batch_size} is invalid: expected a positive integer")
        fmt = job.format
        if formats is None and fmt is not None:
            raise ParameterError(f"--format {fmt!r}: this job has no --format")
        if formats is not None:
            fmt = (fmt or formats[0]).lower()
            if fmt not in formats:
                raise ParameterError(f"--format {job.format!r} is invalid: expected one of {'|'.join(formats)}")
        chosen = job.precision
        if chosen is not None and not precision:
            raise ParameterError(f"--precision {chosen!r}: this job has no --precision")
        chosen = (chosen or "float32").lower()
        if chosen not in PRECISIONS:
            raise ParameterError(f"--precision {job.precision!r} is invalid: expected one of {'|'.join(PRECISIONS)}")
        if job.skip_existing and common.overwrite:
            raise ParameterError("--skip-existing and --overwrite contradict each other: choose one")
        return cls(input_glob=job.input, manifest=common.manifest, model=model, metadata=metadata, output=output,
                   sample_rate=rate, batch_size=batch_size, format=fmt, skip_existing=bool(job.skip_existing),
                   overwrite=bool(common.overwrite), precision=chosen)

    def for_runner(self, options: PipelineOptions, *, model_process: bool = False) -> InferenceSettings:
        """Adjusts batching and threading to the runner (call after ``apply_runner_defaults``).

        * Dask: batches of one, handed to RunInference ready-made, because Beam's Dask
          runner drops what ``BatchElements`` emits from ``finish_bundle`` (the last batch
          of every bundle, whatever the batch size).
        * Local multi-processing DirectRunner: the model is loaded once, in a process
          of its own that the worker processes call with NumPy arrays (Beam's
          ``share_model_across_processes``). The workers decode in parallel while
          TensorFlow uses every core for the model; one model load instead of one per
          worker (a 3^9-SampleCNN export takes ~7 s to load, and as much memory again).
        * Local DirectRunner, any mode, when the job supports it (``model_process``) and this
          process has not imported TensorFlow: the model runs in a model process that the
          launcher starts as early as it can (:mod:`beam_jobs.model_process`), so that neither
          the launcher nor the workers import TensorFlow and its start-up overlaps Beam's. With
          a single worker (one track), the launcher decodes itself (``in_memory``, unless the
          mode was chosen): no worker process to start and to stop; with several, it decodes
          in that many threads (``multi_threading``, unless the mode was chosen), which spares
          the worker processes' own imports of Beam (decoding releases the GIL). A process that already
          holds TensorFlow (a notebook, a test) keeps the model in-process as before.
        """
        settings = self
        if is_dask_runner(options):
            logger.info("Dask runner: batches of one example (the runner drops what BatchElements holds back)")
            settings = dataclasses.replace(settings, batch_size=1, prebatched=True)
        runner = options.view_as(StandardOptions).runner
        direct = options.view_as(DirectOptions)
        direct_runner = isinstance(runner, str) and runner.endswith("DirectRunner")
        if direct_runner and self.precision == "bfloat16" and cpu_bfloat16_flags() == []:
            logger.warning("--precision bfloat16: this CPU has neither AVX512_BF16 nor AMX, so bfloat16 is emulated "
                           "and slower than float32 (docs/beam.md, 'bfloat16')")
        if direct_runner and model_process and "tensorflow" not in sys.modules:
            if direct.direct_running_mode == "multi_processing" and not _given(options, "direct_running_mode"):
                workers = direct.direct_num_workers or 1
                # The workers only decode and resample (soundfile, soxr and FFmpeg release the
                # GIL): threads of the launcher do that as fast as processes, without starting
                # worker processes that each import Beam (~2 CPU-s apiece on a 2-core machine).
                direct.direct_running_mode = "in_memory" if workers == 1 else "multi_threading"
                logger.info("the launcher decodes the audio itself (%s)", "in_memory" if workers == 1
                            else f"multi_threading, {workers} threads")
            return dataclasses.replace(settings, model_process=True)
        if (direct_runner and direct.direct_running_mode == "multi_processing"
                and (direct.direct_num_workers or 1) > 1):
            settings = dataclasses.replace(settings, share_model=True)
        return settings

    def model_identity(self) -> dict[str, Any]:
        """What identifies the model of a run (for ``--skip-existing``); its precision when not float32."""
        identity = {"model_dir": self.model, "run_id": self.metadata.run_id, "exported": self.metadata.exported}
        return identity if self.precision == "float32" else {**identity, "precision": self.precision}

    def path(self, *names: str) -> str:
        """A path inside the output folder."""
        return beam_io.join(self.output, *names)

