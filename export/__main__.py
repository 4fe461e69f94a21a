"""``python -m export``: turn a training run into a versioned SavedModel for TF Serving and the Beam jobs.

Example:
    python -m export --run runs/choi --output exports/choi            # writes exports/choi/1 (then 2, ...)
    python -m export --run runs/choi --output exports/choi --version 7 --max-seconds 300
    python -m export --run runs/choi --output exports/choi-tagger --signatures tagging
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence

from export.cleanup import remove_own
from tfaural.cli import add_verbose_flag, positive_int
from tfaural.errors import TfauralError

DESCRIPTION = """\
Export a tfaural training run (RUN_DIR/model.keras + RUN_DIR/run.json) as a SavedModel in
TF Serving's versioned layout: EXPORT_BASE/<N>/ with saved_model.pb, variables/,
assets/labels.txt, assets/metadata.json and assets.extra/tf_serving_warmup_requests.

Signatures: serving_default (waveform -> scores, labels), serving_wav (WAV bytes -> same),
features (waveform -> multi-level transfer features), deconvolve and auralise
(waveform, layer, features[, mode]), attribute (waveform, layer, top_tags); --signatures tagging
keeps the first three alone. The version is written to a temporary directory,
verified in a fresh TensorFlow-only process and only then renamed into place;
an existing version is never overwritten.

Serve it with:  docker run -p 8500:8500 -p 8501:8501 \\
  -v "$PWD/EXPORT_BASE:/models/NAME" -e MODEL_NAME=NAME tensorflow/serving
(see docs/serving.md)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m export", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="training run directory (model.keras, run.json)"
    )
    parser.add_argument(
        "--output", required=True, metavar="EXPORT_BASE",
        help="the model's base directory; the export goes to EXPORT_BASE/<version>/",
    )
    parser.add_argument(
        "--version", type=positive_int, default=None, metavar="N",
        help="version number (default: one more than the highest existing version, 1 for a new base); "
        "fails if EXPORT_BASE/N exists",
    )
    parser.add_argument(
        "--max-seconds", type=_positive_float, default=600.0, metavar="S",
        help="longest input of serving_default, serving_wav and features, in seconds; longer requests fail "
        "with InvalidArgument (protects server memory; default: %(default)s)",
    )
    parser.add_argument(
        "--max-deconv-seconds", type=_positive_float, default=None, metavar="S",
        help="longest input of one deconvolve or auralise call, in seconds of audio in all (batch x length; "
        "default: the model family's budget in export/budget.py: 20 for the Choi CNN, 15 for the SampleCNN family "
        "and musicnn's vgg taggers, 9 for musicnn's own architecture)",
    )
    parser.add_argument(
        "--max-request-seconds", type=_positive_float, default=None, metavar="S",
        help="most audio one serving_default, serving_wav or features call may hold, batch x length in seconds; "
        "at least --max-seconds (default: the model family's budget, 1200, or --max-seconds if longer)",
    )
    parser.add_argument(
        "--max-deconv-feature-seconds", type=_positive_float, default=None, metavar="S",
        help="most work one deconvolve or auralise call may ask for: features x batch x length in seconds "
        "(default: the model family's budget in export/budget.py, e.g. 1280 = 64 features of a 20-s clip); the "
        "deconvolution runs in chunks of features so that the largest such call has a measured peak memory "
        "(docs/serving.md)",
    )
    parser.add_argument(
        "--max-batch-segments", type=positive_int, default=None, metavar="N",
        help="most model segments run through the network at once; longer inputs loop in-graph "
        "(bounds memory; default: the model family's budget in export/budget.py)",
    )
    parser.add_argument(
        "--signatures", default="all", metavar="SET",
        help="the signatures to export: all (default), tagging (serving_default, serving_wav and features alone: "
        "no deconvolution graphs, for a TF Serving tagger or the tag / extract_features jobs; a smaller export, "
        "written and loaded faster) or a comma-separated list of names, which must include serving_default",
    )
    parser.add_argument(
        "--no-verify", action="store_true",
        help="skip the verification in a fresh process (not recommended: the export is then unproven)",
    )
    parser.add_argument("--quiet", action="store_true", help="only print the version directory")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def _exit_on_signal(signum: int, frame: object) -> None:
    """Turns SIGTERM/SIGHUP into an exception, so the exporter removes its temporary folders."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the version directory; exit 2 with ``error: ...`` on a TfauralError.

    SIGTERM and SIGHUP end the export like an error (exit 128 + signal number), so its
    temporary folders are removed (see :mod:`export.cleanup`); whatever way it ends, no folder of
    this process is left (:func:`export.cleanup.remove_own`).
    """
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("export").setLevel(logging.WARNING if args.quiet else logging.INFO)  # our progress only
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, _exit_on_signal)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        return _export(args)
    except KeyboardInterrupt:  # the temporary folders are removed on the way out (export.cleanup)
        print("\ninterrupted: nothing was exported (a finished version is never left half-written)", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        # What a signal left between making a folder and setting up its removal (export.cleanup.remove_own).
        remove_own(os.path.abspath(args.output))


def _export(args: argparse.Namespace) -> int:
    from export.budget import budget_for
    from export.exporter import export_run
    from export.metadata import family_of
    from tfaural.training.run import read_run_info

    try:
        budget = None
        if args.max_request_seconds is not None or args.max_deconv_feature_seconds is not None:
            config = read_run_info(args.run).model
            budget = budget_for(
                family_of(config), architecture=getattr(config, "architecture", None),
                max_request_seconds=args.max_request_seconds,
                max_deconv_feature_seconds=args.max_deconv_feature_seconds,
            )
            if args.max_request_seconds is None and budget.max_request_seconds < args.max_seconds:
                budget = dataclasses.replace(budget, max_request_seconds=args.max_seconds)  # as by default
        target = export_run(
            args.run, args.output, version=args.version, max_seconds=args.max_seconds,
            max_deconv_seconds=args.max_deconv_seconds, max_batch_segments=args.max_batch_segments,
            budget=budget, verify=not args.no_verify, signatures=args.signatures,
        )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
