"""Command-line options of the Beam jobs, as ``PipelineOptions`` subclasses.

Beam builds one argument parser from *every* direct subclass of
``PipelineOptions`` that has been imported, so a flag may be defined only once
across all jobs (a second ``--output`` raises ``argparse.ArgumentError`` as soon
as both jobs are imported in one process). Therefore:

* flags that several jobs use (``--manifest``, ``--output``, ``--sample-rate``,
  ``--overwrite``) live in :class:`CatalogueJobOptions`;
* each job has its own class with flags no other job defines;
* no flag is ``required=True`` (that would break every other pipeline in the
  process); jobs check their required flags themselves with :func:`require`.

Flags accept both spellings, ``--sample-rate`` and ``--sample_rate``.
:func:`parse_job_args` gives each job a ``--help`` that lists its own flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from tfaural.config import PAD_MODES
from tfaural.errors import ParameterError

__all__ = ["CatalogueJobOptions", "MakeTFRecordsOptions", "parse_job_args", "require"]

_BEAM_EPILOG = (
    "Any other --flag is passed to Apache Beam, e.g. --runner=DirectRunner (the default) "
    "--direct_running_mode=multi_processing --direct_num_workers=4 to use 4 local cores, or "
    "--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py."
)


def _flag(parser: Any, name: str, **kwargs: Any) -> None:
    """Adds ``--a-b`` with the alias ``--a_b`` (dest ``a_b``)."""
    dashed = f"--{name.replace('_', '-')}"
    underscored = f"--{name}"
    names = [dashed] if dashed == underscored else [dashed, underscored]
    parser.add_argument(*names, dest=name, **kwargs)


class CatalogueJobOptions(PipelineOptions):
    """Flags shared by the jobs that read a catalogue manifest and write a result folder."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "manifest", default=None, metavar="PATH",
              help="Catalogue manifest (.csv, .tsv or .jsonl) listing the audio files: columns path, track_id "
                   "(optional), labels (tags separated by ';'), split (train/validation/test, optional). Local "
                   "path or URI; relative audio paths are relative to the manifest's folder. Required.")
        _flag(parser, "output", default=None, metavar="FOLDER",
              help="Output folder (local path or URI such as gs://bucket/datasets/mtat). Required.")
        _flag(parser, "sample_rate", type=int, default=None, metavar="HZ",
              help="Sample rate in Hz the audio is resampled to (e.g. 22050 for SampleCNN, 11025 for the Choi CNN).")
        _flag(parser, "overwrite", action="store_true", default=False,
              help="Replace the results of an earlier run in --output (otherwise the job refuses to start).")


class MakeTFRecordsOptions(PipelineOptions):
    """Flags of ``python -m beam_jobs.make_tfrecords``."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "segment_length", type=int, default=None, metavar="N",
              help="Write one record per N-sample segment (e.g. 59049 for the 3^9 SampleCNN) instead of one "
                   "record per whole track.")
        _flag(parser, "segment_hop", type=int, default=None, metavar="N",
              help="Hop between segment starts in samples (default: --segment-length, contiguous segments).")
        _flag(parser, "max_segments", type=int, default=None, metavar="K",
              help="Keep at most the first K segments of each track (the SampleCNN recipe keeps 10).")
        _flag(parser, "pad", choices=PAD_MODES, default="none",
              help="Last partial segment: 'none' drops it and reports tracks shorter than one segment as failures, "
                   "'constant' zero-pads it, 'wrap' fills it by repeating the track. Default: none.")
        _flag(parser, "min_duration", type=float, default=0.0, metavar="SECONDS",
              help="Report tracks shorter than this (after decoding) as failures. Default: 0 (any non-empty file).")
        _flag(parser, "shards", type=int, default=None, metavar="K",
              help="Shards per split. Default: one per ~200 tracks (about 250 MB of 30 s clips at 22,050 Hz).")


def parse_job_args(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    option_classes: Sequence[type[PipelineOptions]],
) -> PipelineOptions:
    """Parses a job's command line: its own flags (with ``--help``) and Beam's.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).
        prog: Program name shown in the usage line.
        description: What the job does, for ``--help`` (printed as written).
        option_classes: The job's option classes.

    Returns:
        ``PipelineOptions`` holding every flag; read them with ``view_as``.

    Raises:
        SystemExit: On ``--help`` or a malformed job flag (argparse prints why).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=_BEAM_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for option_class in option_classes:
        option_class._add_argparse_args(parser)
    args = list(argv) if argv is not None else None
    parser.parse_known_args(args)  # --help and type errors; Beam flags pass through
    return PipelineOptions(args)


def require(value: Any, flag: str, expected: str) -> Any:
    """Returns ``value``, or raises ParameterError naming ``flag`` if it is unset."""
    if value is None or value == "":
        raise ParameterError(f"{flag} is required: expected {expected}")
    return value
