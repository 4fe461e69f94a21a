"""Command-line options of the Beam jobs, as ``PipelineOptions`` subclasses.

Beam builds one argument parser from *every* direct subclass of
``PipelineOptions`` that has been imported, so a flag may be defined only once
across all jobs (a second ``--output`` raises ``argparse.ArgumentError`` as soon
as both jobs are imported in one process). Therefore:

* flags that several jobs use (``--manifest``, ``--output``, ``--sample-rate``,
  ``--overwrite``) live in :class:`CatalogueJobOptions`; those of the jobs that
  run an exported model (``--input``, ``--model``, ``--format``, ``--batch-size``,
  ``--skip-existing``) in :class:`InferenceJobOptions`;
* each job has its own class with flags no other job defines, and flags that some
  jobs share have a class of their own (:class:`ChunkOptions`, :class:`ShortTrackOptions`);
* no flag is ``required=True`` (that would break every other pipeline in the
  process); jobs check their required flags themselves with :func:`require`.

Flags accept both spellings, ``--sample-rate`` and ``--sample_rate``.
:func:`parse_job_args` gives each job a ``--help`` that lists its own flags.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
    _BeamArgumentParser,
)

from tfaural.cli import parse_index_list
from tfaural.config import DEFAULT_CLIP_SECONDS, PAD_MODES
from tfaural.errors import ParameterError
from tfaural.signals import CHORD_TYPES, DEFAULT_KEYS, DEFAULT_TIMBRES

__all__ = [
    "ConsoleOptions",
    "CatalogueJobOptions",
    "MakeTFRecordsOptions",
    "InferenceJobOptions",
    "AuraliseOptions",
    "LayerOptions",
    "ExtractFeaturesOptions",
    "TagOptions",
    "ChunkOptions",
    "ShortTrackOptions",
    "CorrelationOptions",
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_CLIP_SECONDS",
    "DEFAULT_FEATURES_PER_CALL",
    "DEFAULT_SIGNAL_SECONDS",
    "parse_job_args",
    "stray_arguments",
    "unknown_flags",
    "JOB_OPTION_CLASSES",
    "RUNNERS_PASSING_UNKNOWN_FLAGS",
    "require",
    "parse_index_list",
    "apply_runner_defaults",
    "check_runner",
    "is_dask_runner",
]

logger = logging.getLogger(__name__)

DEFAULT_FEATURES_PER_CALL = 16
"""``--features-per-call`` of ``auralise`` when the export's per-call budget allows it."""
DEFAULT_SIGNAL_SECONDS = DEFAULT_CLIP_SECONDS
"""``--signal-seconds`` of ``correlation`` when the export needs no more (the paper's 4-s signals)."""
DEFAULT_CHUNK_SECONDS = 30.0
"""``--chunk-seconds``: 11 segments of the 3^9-SampleCNN, one chunk per 29.1-s clip of the papers."""
DASK_PARTITIONS = 64
"""The Dask runner's partitions when the user chooses none (at most one per input; see
:func:`apply_runner_defaults`)."""

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


class ConsoleOptions(PipelineOptions):
    """``--verbose``, which every job takes (:func:`parse_job_args` adds it to each job's flags)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "verbose", action="store_true", default=False,
              help="Also show TensorFlow's C++ start-up messages (model process, workers) and Beam's own logging.")


class CatalogueJobOptions(PipelineOptions):
    """Flags shared by the jobs that read a catalogue manifest and write a result folder."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "manifest", default=None, metavar="PATH",
              help="Catalogue manifest (.csv, .tsv or .jsonl) listing the audio files: columns path, track_id "
                   "(optional), labels (tags separated by ';'), split (train/validation/test, optional). Local "
                   "path or URI; relative audio paths are relative to the manifest's folder. Required by "
                   "make_tfrecords; the inference jobs take --input or --manifest (labels not needed).")
        _flag(parser, "output", default=None, metavar="FOLDER",
              help="Output folder (local path or URI such as gs://bucket/datasets/mtat). Required.")
        _flag(parser, "sample_rate", type=int, default=None, metavar="HZ",
              help="Sample rate in Hz the audio is resampled to (e.g. 22050 for SampleCNN, 11025 for the Choi CNN). "
                   "The inference jobs use the model's rate (metadata.json); if given, it must be that rate.")
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


class InferenceJobOptions(PipelineOptions):
    """Flags shared by the jobs that run an exported model over a catalogue (auralise, extract_features, tag)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "input", default=None, metavar="GLOB",
              help="Audio files to process, as a glob (local or URI; quote it): 'music/*.flac', "
                   "'gs://bucket/audio/**/*.wav' ('**/' is any number of folders, none included), "
                   "'music/**/*.{mp3,flac,m4a}' (braces are alternatives). WAV, FLAC, "
                   "MP3, OGG, AIFF, and through FFmpeg M4A/MP4 (AAC, ALAC), WebM/MKA (Opus), WMA, AC-3, WavPack, "
                   "... Track ids are the paths relative to the glob's fixed prefix, without extension. Give "
                   "--input or --manifest.")
        _flag(parser, "model", default=None, metavar="EXPORT_DIR",
              help="A version directory of a tfaural SavedModel export (EXPORT_BASE/<N>, written by "
                   "`python -m export`), or EXPORT_BASE itself for its newest version (as TF Serving picks); "
                   "local or URI. Required.")
        _flag(parser, "format", default=None, metavar="FORMAT",
              help="Output format: auralise wav|flac (default wav); extract_features tfrecord|parquet|npz "
                   "(default tfrecord). The tag job always writes tags.jsonl and tags.csv.")
        _flag(parser, "batch_size", type=int, default=None, metavar="N",
              help="Largest batch RunInference forms (default: 8 for tag and extract_features, 1 for auralise, "
                   "whose deconvolutions need ~1 GB per 64 features of a 4-s clip). The examples of a batch "
                   "travel together, but the model is called on each alone, so results do not depend on it: "
                   "reruns are byte-identical.")
        _flag(parser, "precision", default=None, metavar="float32|bfloat16",
              help="tag and extract_features: 'bfloat16' computes the model's convolutions and products in "
                   "bfloat16 (TensorFlow's oneDNN bfloat16 graph rewrite of the float32 export; no new export). "
                   "Faster on some CPUs with AVX512_BF16 or AMX only (benchmarks/bf16.py measures yours); scores "
                   "move by up to ~1e-2 (docs/beam.md, 'bfloat16'). Default float32.")
        _flag(parser, "skip_existing", action="store_true", default=False,
              help="Resume an earlier run in --output with the same settings: tracks whose results are complete "
                   "and valid (they parse, have the expected contents and shapes, the files they list are there "
                   "with their recorded checksums) are not recomputed (they are still listed in manifest.jsonl); "
                   "anything else is recomputed, with the reason in the log.")


class LayerOptions(PipelineOptions):
    """``--layers`` of the jobs that deconvolve (``auralise``, ``correlation``): one flag, one syntax.

    Beam builds one argument parser from every ``PipelineOptions`` subclass in the process, so a
    flag two jobs share must live in one class of its own.
    """

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "layers", default="all", metavar="SPEC",
              help="Conv layers (levels) to deconvolve: 'all', a list '1,5', a range '1-5' or both '1-3,5' "
                   "(the export's deconvolvable_layers). Default: all.")


class AuraliseOptions(PipelineOptions):
    """Flags of ``python -m beam_jobs.auralise``."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "features", default="all", metavar="SPEC",
              help="Feature maps of each layer: 'all' or indices such as '0-7,12' (each must exist in every "
                   "chosen layer). Default: all.")
        _flag(parser, "clip_seconds", type=float, default=None, metavar="SECONDS",
              help="Length of the excerpt that is auralised (only it is decoded): at least the export's "
                   "min_deconv_seconds (what its deepest layer needs), and one model segment for --tags. "
                   f"Default: {DEFAULT_CLIP_SECONDS:g} (the paper's clips), or what the export needs if that is "
                   "longer (one segment with --tags).")
        _flag(parser, "offset_seconds", type=float, default=0.0, metavar="SECONDS",
              help="Where the excerpt starts in each file. Default: 0.")
        _flag(parser, "mode", choices=("phase", "mask"), default="phase",
              help="'phase': deconvolved magnitude with the original phase (the paper); 'mask': the deconvolution "
                   "as a soft mask on the original STFT. Default: phase.")
        _flag(parser, "spectrograms", action="store_true", default=False,
              help="Also write PNG spectrograms (magma, dB, one colour scale per layer of a track).")
        _flag(parser, "features_per_call", type=int, default=None, metavar="K",
              help="Feature maps deconvolved per signature call (memory grows with K). Default: "
                   f"{DEFAULT_FEATURES_PER_CALL}, or fewer if the export deconvolves less per call.")
        _flag(parser, "tags", type=int, default=3, metavar="N",
              help="Explain each excerpt's N best tags: record their scores and, per layer, the features that "
                   "contribute most to each (the export's attribute signature: activation x gradient of the "
                   "tag's score); the listening report lists them next to the features' audio. 0: off. "
                   "Default: 3 (capped at the export's number of labels and 10; off for exports made before "
                   "the attribute signature).")
        _flag(parser, "report", action="store_true", default=False,
              help="When the run has finished, also write the HTML listening report (tfaural.report) into "
                   "OUTPUT/report/ (local --output only; otherwise run python -m tfaural.report on a copy).")


class ExtractFeaturesOptions(PipelineOptions):
    """Flags of ``python -m beam_jobs.extract_features``."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "per_segment", action="store_true", default=False,
              help="Also store the features of every model segment of each track (segment_features).")
        _flag(parser, "tracks_per_shard", type=int, default=500, metavar="N",
              help="Tracks per output shard (features-SSSSS-of-NNNNN.<ext>). Default: 500.")


class TagOptions(PipelineOptions):
    """Flags of ``python -m beam_jobs.tag``."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "top_k", type=int, default=None, metavar="K",
              help="Number of best labels listed per track (default: the export's top_k).")


class ChunkOptions(PipelineOptions):
    """Flags of the jobs that analyse whole tracks in chunks (``tag``, ``extract_features``): ``--chunk-seconds``,
    ``--cover-end``."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "chunk_seconds", type=float, default=DEFAULT_CHUNK_SECONDS, metavar="SECONDS",
              help="Whole tracks of any length are analysed: decoded block by block and sent to the model in "
                   "chunks of whole model segments at most this long, and at most this much audio per model "
                   "call; the chunks' results are combined exactly. The model's memory grows with it (~26 MiB "
                   "per 2.7-s segment for the 3^9-SampleCNN). At most the export's max_seconds. "
                   f"Default: {DEFAULT_CHUNK_SECONDS:g}.")
        _flag(parser, "cover_end", action="store_true", default=False,
              help="Hear each track to its last sample: when the model's whole segments end before the track "
                   "does, also analyse the segment that ends at the track's end (its last segment length of "
                   "audio, overlapping the segment before it), as one more segment of the track's mean and its "
                   "last row with --per-segment; 'seconds' is then the track's length. Default: off, the "
                   "trailing partial segment is not heard, as in the export's signatures and musicnn (up to one "
                   "segment of each track: e.g. the last 2 s of a 12-s track with 10-s segments).")


class ShortTrackOptions(PipelineOptions):
    """``--pad-short``, of the jobs that read tracks (``tag``, ``extract_features``, ``auralise``)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "pad_short", action="store_true", default=False,
              help="Zero-pad a track shorter than the model needs (one model segment; for auralise the "
                   "export's shortest excerpt) to that length, as the preprocessing of Choi et al.'s taggers "
                   "did, instead of listing it as failed ('too short'). Its result says how much is padding "
                   "(padded_seconds). An empty or undecodable file still fails.")


class CorrelationOptions(PipelineOptions):
    """Flags of ``python -m beam_jobs.correlation`` (``--model``, ``--output`` and ``--batch-size`` are shared)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        _flag(parser, "signals", default=None, metavar="FOLDER",
              help="Local cache folder of rendered model signals: read if this grid was rendered there before at "
                   "the model's sample rate, written otherwise. Default: render without caching.")
        _flag(parser, "soundfont", default=None, metavar="PATH",
              help="General MIDI .sf2 soundfont (default: $TFAURAL_SOUNDFONT, then the Debian FluidR3_GM.sf2).")
        _flag(parser, "timbres", default=",".join(DEFAULT_TIMBRES), metavar="LIST",
              help="Comma-separated timbres: names such as sine (additive), piano, strings, acoustic_guitar, "
                   "saxophone, electric_guitar, electric_piano, or program<N> for any General MIDI program "
                   "(0-based). Default: the paper's seven.")
        _flag(parser, "chords", default=",".join(CHORD_TYPES), metavar="LIST",
              help="Comma-separated chord types: intervals, major, minor, sus4, dominant7, major7, minor7, "
                   "diminished, or name=0,4,7 semitone lists (separate several with ';' then). Default: all eight.")
        _flag(parser, "keys", default=",".join(DEFAULT_KEYS), metavar="LIST",
              help="Comma-separated keys (root notes) such as Eb2,Bb2,A3,G4 (the default, the paper's four).")
        _flag(parser, "signal_seconds", type=float, default=None, metavar="SECONDS",
              help="Length of every model signal: at least the export's min_deconv_seconds, at most its "
                   f"max_deconv_seconds. Default: {DEFAULT_SIGNAL_SECONDS:g}, or what the export needs if that is "
                   "longer.")
        _flag(parser, "chord_positions", type=int, default=6, metavar="N",
              help="Voicings (inversions, then an octave up) played one after another in each signal. Default: 6.")


def parse_job_args(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    option_classes: Sequence[type[PipelineOptions]],
    hidden: Sequence[str] = (),
) -> PipelineOptions:
    """Parses a job's command line: its own flags (with ``--help``) and Beam's.

    Beam itself discards what it cannot parse with a warning, and takes the last of a
    repeated flag; here each of these is an error before the job does anything:

    * words no flag takes (:func:`stray_arguments`), e.g. the files of an unquoted glob
      that the shell expanded;
    * a flag of another job (``make_tfrecords --input``), or one of the job's option classes that it does not
      take (``hidden``): Beam would parse it and the job ignore it;
    * ``--input`` or ``--manifest`` given twice with different values (``--input a --input b``
      would tag only ``b``; other flags keep argparse's rule, the last wins);
    * an unknown ``--flag`` that looks like one of the job's (``--pad-shrot``), or, on the
      runners that would drop it (the local ones: the DirectRunner and Dask), any
      unknown ``--flag`` (:func:`unknown_flags`). Dataflow, Prism, Flink, Spark and the
      portable runner pass unknown flags on to the runner, so there they are allowed.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).
        prog: Program name shown in the usage line.
        description: What the job does, for ``--help`` (printed as written).
        option_classes: The job's option classes.
        hidden: Flags (their ``dest``) of those classes the job does not take: left out of ``--help``,
            and an error if given.

    Returns:
        ``PipelineOptions`` holding every flag; read them with ``view_as``.

    Raises:
        SystemExit: On ``--help`` or a malformed job flag (argparse prints why).
        ParameterError: On stray words, a repeated job flag or an unknown flag, as above, or a --runner Beam
            does not know.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=_BEAM_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    classes: list[type[PipelineOptions]] = [*option_classes, ConsoleOptions]
    for option_class in classes:
        option_class._add_argparse_args(parser)
    for action in parser._actions:
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
    args = list(argv) if argv is not None else sys.argv[1:]
    parser.parse_known_args(args)  # --help and type errors; Beam flags pass through
    stray = stray_arguments(args)
    if stray:
        shown = ", ".join(repr(word) for word in stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        raise ParameterError(
            f"{len(stray)} unexpected argument(s) {shown}: every value must follow its --flag. If the shell expanded "
            "a glob (an unquoted --input dir/*.wav passes every file as an argument), quote it: --input 'dir/*.wav'")
    _check_repeated(parser, args)
    foreign = argparse.ArgumentParser(add_help=False)  # the other jobs' flags
    for option_class in JOB_OPTION_CLASSES:
        if option_class not in classes:
            option_class._add_argparse_args(foreign)
    for action in [*parser._actions, *foreign._actions]:
        given = [word.partition("=")[0] for word in args if word.partition("=")[0] in action.option_strings]
        if given and (action.dest in hidden or action in foreign._actions):
            raise ParameterError(f"{given[0]}: this job has no {action.option_strings[0]} ({prog} --help lists its "
                                 "flags)")
    options = PipelineOptions(args)
    check_runner(options)  # also imports the runner's module: its own options (Dask's) are then known
    unknown = unknown_flags(args)
    if unknown:
        own = [o for action in parser._actions for o in action.option_strings if o.startswith("--") and o != "--help"]
        for flag in unknown:
            close = difflib.get_close_matches(flag, own, n=1, cutoff=0.75)
            if close:
                raise ParameterError(f"unknown flag {flag}: did you mean {close[0]}? ({prog} --help lists the "
                                     "job's flags)")
        runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
        if not any(runner.lower().endswith(name.lower()) for name in RUNNERS_PASSING_UNKNOWN_FLAGS):
            raise ParameterError(f"unknown flag(s) {', '.join(unknown)}: neither this job's ({prog} --help) nor "
                                 f"Apache Beam's, and the {runner} would ignore them")
    return options


JOB_OPTION_CLASSES: tuple[type[PipelineOptions], ...] = (
    ConsoleOptions, CatalogueJobOptions, MakeTFRecordsOptions, InferenceJobOptions, LayerOptions, AuraliseOptions,
    ExtractFeaturesOptions, TagOptions, ChunkOptions, ShortTrackOptions, CorrelationOptions)
"""Every job's option classes: a flag of one that a job does not list is another job's."""

RUNNERS_PASSING_UNKNOWN_FLAGS = ("DataflowRunner", "PrismRunner", "FlinkRunner", "SparkRunner", "PortableRunner")
"""Runners to which Beam passes flags it does not know (their own options); with the others they are lost."""


ONCE_ONLY = ("input", "manifest")
"""Flags (``dest``) that may not be repeated with another value: the files of all but the last would be lost
silently. Other flags keep argparse's rule (the last wins), which scripts use to override a default."""


def _check_repeated(parser: argparse.ArgumentParser, args: Sequence[str]) -> None:
    """Raises ParameterError if a :data:`ONCE_ONLY` flag is given twice with different values."""
    by_option = {o: a for a in parser._actions for o in a.option_strings if a.dest in ONCE_ONLY}
    values: dict[str, list[tuple[str, str]]] = {}
    words = list(args)
    for index, word in enumerate(words):
        if word == "--":
            break
        name, has_value, value = word.partition("=")
        action = by_option.get(name)
        if action is None:
            continue
        if not has_value:
            if index + 1 >= len(words):
                continue
            value = words[index + 1]
        values.setdefault(action.dest, []).append((name, value))
    for given in values.values():
        if len({value for _, value in given}) > 1:
            flag = given[0][0]
            shown = " and ".join(f"{name} {value!r}" for name, value in given)
            raise ParameterError(f"{flag} is given {len(given)} times, {shown}: the job would use only the last; "
                                 "give it once (one glob can hold alternatives, 'music/{rock,jazz}/**/*.flac', or "
                                 "list the files in a --manifest)")


def unknown_flags(args: Sequence[str]) -> list[str]:
    """The ``--flags`` of a command line that neither the jobs nor Apache Beam define (without their values).

    Args:
        args: The command-line arguments (without the program name).

    Returns:
        The unknown flags' names, in order (``--pad-shrot`` of ``--pad-shrot`` or ``--pad-shrot=1``).
    """
    _, unknown = _beam_parser().parse_known_args(list(args))
    flags = []
    for word in unknown:
        if word == "--":
            break
        if word.startswith("--"):
            flags.append(word.partition("=")[0])
    return flags


def _beam_parser() -> _BeamArgumentParser:
    """A parser of the flags of every ``PipelineOptions`` subclass imported so far, as Beam builds it."""
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    classes: dict[str, type[PipelineOptions]] = {}
    for option_class in PipelineOptions.__subclasses__():
        classes.setdefault(str(option_class), option_class)
    for option_class in classes.values():
        option_class._add_argparse_args(parser)
    return parser


def stray_arguments(args: Sequence[str]) -> list[str]:
    """The words of a command line that no flag takes (Beam would discard them as "unparseable args").

    The words are parsed as Beam parses them: with the flags of every ``PipelineOptions``
    subclass imported so far; an unknown ``--flag`` takes the next word as its value unless
    that word starts with ``-`` or the flag has ``=value`` (Beam keeps such flags for the
    runner). What is left (e.g. ``b.wav c.wav`` of ``--input a.wav b.wav c.wav``, which a shell
    makes of ``--input *.wav``) are stray words.

    Args:
        args: The command-line arguments (without the program name).

    Returns:
        The stray words, in order.
    """
    _, unknown = _beam_parser().parse_known_args(list(args))
    stray: list[str] = []
    index = 0
    while index < len(unknown):
        word = unknown[index]
        if word == "--":
            stray.extend(unknown[index + 1 :])
            break
        if not word.startswith("--"):  # a value without its flag, or "-b.wav": Beam drops single-dash words too
            stray.append(word)
            index += 1
        elif (word.startswith("--") and "=" not in word and index + 1 < len(unknown)
              and not unknown[index + 1].startswith("-")):
            index += 2  # an unknown --flag and its value, which Beam passes to the runner
        else:
            index += 1
    return stray


def require(value: Any, flag: str, expected: str) -> Any:
    """Returns ``value``, or raises ParameterError naming ``flag`` if it is unset."""
    if value is None or value == "":
        raise ParameterError(f"{flag} is required: expected {expected}")
    return value


def check_runner(options: PipelineOptions) -> None:
    """Resolves ``--runner`` now, so that a misspelt runner is a one-line error before the job does anything.

    Raises:
        ParameterError: Naming the runner and what Beam said about it.
    """
    from apache_beam.runners.runner import create_runner

    runner = options.view_as(StandardOptions).runner
    if not isinstance(runner, str):
        return
    try:
        create_runner(runner)
    except (ValueError, ImportError, AttributeError) as err:
        raise ParameterError(f"--runner {runner}: {' '.join(str(err).split())} (the Dask runner is "
                             "apache_beam.runners.dask.dask_runner.DaskRunner)") from None


def is_dask_runner(options: PipelineOptions) -> bool:
    """True if the pipeline runs on Beam's Dask runner."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner is not None else ""
    return name.rsplit(".", 1)[-1] == "DaskRunner"


def apply_runner_defaults(options: PipelineOptions, *, num_items: int,
                          local_mode: str = "multi_processing") -> list[str]:
    """Fills in the runner settings the user did not choose; returns what was decided, for the log.

    * No ``--runner``: the DirectRunner in multi-processing mode with one worker
      process per core (``--direct_num_workers`` = ``os.cpu_count()``), so a local
      run uses the whole machine, but no more worker processes than items: a track
      is decoded by one worker, and an idle worker would only hold memory (the model's
      TensorFlow uses every core wherever it runs). With ``local_mode="in_memory"`` (a
      job whose work is all TensorFlow's, e.g. correlation): one process, one worker.
      An explicit ``--direct_running_mode`` or ``--direct_num_workers`` is kept.
    * The Dask runner without ``--dask_npartitions``/``--dask_partition_size``: one
      partition per item up to :data:`DASK_PARTITIONS` (Beam's default of 128 items per partition would
      run a small catalogue on one Dask worker; Reshuffle is a no-op there).

    Args:
        options: The job's options (modified in place).
        num_items: Number of input elements (tracks).

    Returns:
        Human-readable notes of the defaults applied.
    """
    notes: list[str] = []
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
        direct = options.view_as(DirectOptions)
        if not _given(options, "direct_running_mode"):
            direct.direct_running_mode = local_mode
        if not _given(options, "direct_num_workers"):
            direct.direct_num_workers = (1 if direct.direct_running_mode == "in_memory"
                                         else max(1, min(os.cpu_count() or 1, num_items)))
        notes.append(f"runner: DirectRunner, {direct.direct_running_mode}, {direct.direct_num_workers} worker(s)")
        if not _given(options, "sdk_harness_log_level_overrides"):
            # Every local worker process would print two start-up warnings meant for remote
            # workers: "No semi_persistent_directory found" and "Discarding unparseable args"
            # (the job's own flags, which the worker does not need).
            options.view_as(WorkerOptions).sdk_harness_log_level_overrides = {
                "__main__": "ERROR",  # the worker runs as python -m apache_beam.runners.worker.sdk_worker_main
                "apache_beam.runners.worker.sdk_worker_main": "ERROR",
                "apache_beam.options.pipeline_options": "ERROR",
            }
    elif is_dask_runner(options):
        from apache_beam.runners.dask.dask_runner import DaskOptions

        if not _given(options, "dask_npartitions") and not _given(options, "dask_partition_size"):
            partitions = max(1, min(num_items, DASK_PARTITIONS))
            options.view_as(DaskOptions).npartitions = partitions
            notes.append(f"Dask runner: {partitions} partition(s)")
    return notes


def _given(options: PipelineOptions, flag: str) -> bool:
    """True if ``--flag`` was on the command line (even with its default value)."""
    flags = getattr(options, "_flags", None) or []
    return any(f == f"--{flag}" or f.startswith(f"--{flag}=") for f in flags)
