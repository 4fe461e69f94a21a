"""``python -m tfaural.pretrained``: import a published tagger, or any Keras audio CNN, as a tfaural run directory."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from tfaural.cli import EXTRA_LEVELS_HELP, add_front_end_flags, add_verbose_flag, front_end_from_args, layer_names
from tfaural.errors import TfauralError

EPILOG = """examples:
  python -m tfaural.pretrained --list
  python -m tfaural.pretrained musicnn/MTT_vgg --output runs/mtt_vgg
  python -m export --run runs/mtt_vgg --output exports/mtt_vgg
  python -m beam_jobs.tag --input 'music/**/*.mp3' --model exports/mtt_vgg/1 --output tags

The weights come from musicnn's PyPI wheel (ISC licence), installed without its outdated
dependency pins:  pip install --no-deps musicnn==0.1.0

any Keras audio CNN (a .keras or .h5 file), told what its file does not say:
  python -m tfaural.pretrained my_tagger.keras --output runs/mine --labels tags.txt \
      --sample-rate 16000 --n-fft 512 --hop-length 256 --n-mels 96 --compression db-max
  python -m tfaural.pretrained keras_mel_tagger.keras --output runs/km --sample-rate 16000 --segment-seconds 3
A model with its own keras.layers.MelSpectrogram or keras.layers.STFTSpectrogram, or one on the
waveform, needs only --sample-rate (and --segment-seconds if it takes inputs of any length).
"""

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _list() -> int:
    from tfaural.pretrained import musicnn
    from tfaural.pretrained.catalogue import available

    try:
        package = musicnn._package_dir()
    except TfauralError as err:
        package = None
        print(f"note: {err}\n")
    for model in available():
        print(f"{model.key:22s} {model.architecture:8s} {model.dataset}")
        if package is None:
            continue
        folder = os.path.join(package, model.name)
        scores = musicnn.read_published_scores(folder)
        if scores:
            print(f"{'':22s} published ROC-AUC {scores.get('roc_auc', float('nan')):.3f}, "
                  f"PR-AUC {scores.get('pr_auc', float('nan')):.3f}")
        try:
            labels = musicnn.read_labels(model, package)
        except TfauralError as err:
            print(f"{'':22s} {err}")
            continue
        print(f"{'':22s} {len(labels)} tags: {', '.join(labels)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.pretrained",
        description="Import a published pretrained tagger (musicnn's MagnaTagATune / Million Song Dataset "
        "models) as an ordinary tfaural run directory (model.keras + run.json) that export, the Beam jobs, "
        "evaluate and train --init-from accept. The import is checked against the publisher's own graph.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", nargs="?", help="model to import: a published tagger, e.g. musicnn/MTT_vgg (see "
                        "--list), or a Keras model file (.keras, .h5)")
    parser.add_argument("--list", action="store_true", help="list the importable models with tags and published AUCs")
    parser.add_argument("--output", help="run directory to write")
    parser.add_argument("--hop-frames", type=int, default=None,
                        help="hop between 187-frame tagging patches (default: the largest hop that leaves no "
                        "frame unread: 161 for the vgg models, whose last 26 frames per patch cannot reach the "
                        "output; 187 for musicnn)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="read the checkpoint from this folder instead of the installed musicnn wheel")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the publisher's own graph to check the import (a few seconds)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --output")
    keras_group = parser.add_argument_group("a Keras model file")
    keras_group.add_argument("--labels", help="label names: a file with one per line, or a comma-separated list "
                             "(default: output0, output1, ...)")
    keras_group.add_argument("--segment-seconds", type=float,
                             help="length of one model input, for a model that takes any length (its training patch)")
    keras_group.add_argument("--hop-seconds", type=float,
                             help="hop between a clip's segments when tagging (default: the segment length)")
    keras_group.add_argument("--task", choices=("multi-label", "single-label"),
                             help="default: single-label for a softmax output layer (or --scores softmax), else "
                             "multi-label")
    keras_group.add_argument("--scores", choices=("as-is", "softmax", "sigmoid"), default=None,
                             help="for a model whose last layer gives logits (no activation): serve their softmax "
                             "(one label per clip) or sigmoid (independent tags); default: as they are")
    keras_group.add_argument("--feature-layers", help="comma-separated layers the features signature pools "
                             "(default: the top three deconvolvable levels)")
    keras_group.add_argument("--levels", help="range of levels the export deconvolves and auralises, e.g. 1-12 "
                             "(default: all; each is traced into the export, so a deep model exports faster with "
                             "fewer)")
    keras_group.add_argument("--trust-lambda", action="store_true",
                             help="load a model with Lambda layers (Python code in the file: only files you trust)")
    keras_group.add_argument("--extra-levels", type=layer_names, default=None, metavar="LAYERS",
                             help=EXTRA_LEVELS_HELP)
    add_front_end_flags(parser)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.model and (args.model.lower().endswith(KERAS_SUFFIXES) or os.path.isfile(args.model)):
        if not args.output:
            parser.error("give --output, the run directory to write")
        published_only = [flag for flag, given in (("--hop-frames", args.hop_frames is not None),
                                                   ("--checkpoint-dir", args.checkpoint_dir is not None),
                                                   ("--no-verify", not args.verify), ("--list", args.list)) if given]
        if published_only:
            parser.error(f"{', '.join(published_only)}: for a published tagger only (a Keras file's import checks "
                         "its own reload; --hop-seconds sets its tagging hop)")
        return _import_keras(args)
    keras_only = [flag for flag, value in (("--labels", args.labels), ("--segment-seconds", args.segment_seconds),
                                           ("--hop-seconds", args.hop_seconds), ("--task", args.task),
                                           ("--scores", args.scores),
                                           ("--feature-layers", args.feature_layers), ("--levels", args.levels),
                                           ("--extra-levels", args.extra_levels))
                  if value is not None] + (["--trust-lambda"] if args.trust_lambda else [])
    try:
        keras_only += front_end_from_args(args).given()
    except TfauralError as err:
        parser.error(str(err))
    if keras_only:
        parser.error(f"{', '.join(keras_only)}: for a Keras model file only (a published tagger's import says "
                     "what it takes)")
    if args.list:
        return _list()
    if not args.model or not args.output:
        parser.error("give a MODEL and --output (or --list)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from tfaural.pretrained.catalogue import import_run

        _, info = import_run(args.model, args.output, hop_frames=args.hop_frames, checkpoint_dir=args.checkpoint_dir,
                             verify=args.verify, overwrite=args.overwrite)
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pretrained, coverage = info.extra["pretrained"], info.extra["coverage"]
    print(f"imported {pretrained['name']} ({pretrained['dataset']}) into {args.output}")
    if "parity_with_original_graph" in pretrained:
        worst = max(pretrained["parity_with_original_graph"].values())
        print(f"  matches musicnn's own graph to {worst:.2g} (taggram and embeddings)")
    print(f"  {len(info.labels)} tags; patches of {coverage['patch_frames']} frames "
          f"({info.segment.length / info.audio.sample_rate:.2f} s at {info.audio.sample_rate} Hz), hop "
          f"{info.extra['front_end']['hop_frames']} frames; {coverage['reachable_frames']} frames and "
          f"{coverage['reachable_bands']} of {coverage['patch_bands']} mel bands reach the output")
    return 0


def _import_keras(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from tfaural.pretrained.keras_model import import_keras_model

        layers = None if args.feature_layers is None else [n.strip() for n in args.feature_layers.split(",")]
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", UserWarning)
            _, info = import_keras_model(
                args.model, args.output, front=front_end_from_args(args), labels=args.labels, task=args.task,
                scores=args.scores or "as-is",
                segment_seconds=args.segment_seconds, hop_seconds=args.hop_seconds, feature_layers=layers,
                levels=args.levels, trust_lambda=args.trust_lambda, overwrite=args.overwrite,
                extra_levels=args.extra_levels or (),
            )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config, imported = info.model, info.extra["imported"]
    rate = info.audio.sample_rate
    served = {"softmax": ", softmax scores", "sigmoid": ", sigmoid scores"}.get(imported.get("scores", ""), "")
    print(f"imported {args.model} into {args.output}: {imported['model_name']!r}, takes "
          f"{getattr(config, 'takes', '?')}, {len(info.labels)} outputs ({info.task}{served}), segments of "
          f"{info.segment.length} samples ({info.segment.length / rate:.3g} s at {rate} Hz)")
    span = getattr(config, "levels", None)
    named = [f"{k}={v}" for k, v in sorted(imported["levels"].items(), key=lambda item: int(item[0]))]
    shown = named if len(named) <= 8 else [*named[:4], "...", *named[-3:]]
    print(f"  {len(named)} levels: {', '.join(shown)}"
          + (f"; the export deconvolves {span[0]}-{span[1]}" if span else ""))
    clips = imported.get("clips") or {}
    shortest, longest = clips.get("shortest_samples"), clips.get("longest_samples")
    if shortest:
        print(f"  clips to listen to: {shortest / rate:.4g}" + (
            f"-{longest / rate:.4g} s (its layers take only its own length)" if longest is not None else
            " s or longer"))
    for note in notes:
        if issubclass(note.category, UserWarning):
            print(f"note: {note.message}", file=sys.stderr)
    print(f"  the saved run reproduces the file's outputs to {imported['reproduction_max_abs_difference']:.2g}")
    print(f"next: python -m export --run {args.output} --output exports/NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
