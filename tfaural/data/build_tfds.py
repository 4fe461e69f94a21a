"""Prepare a tfaural TFDS dataset from local audio: ``python -m tfaural.data.build_tfds``.

A thin CLI over :func:`tfaural.data.tfds_builders.prepare` (kept apart from the
builders so that running it does not register them a second time as ``__main__``)::

    python -m tfaural.data.build_tfds tfaural_catalogue --manifest demo/catalogue/manifest.csv \\
        --config demo --sample-rate 11025 --data-dir demo/tfds
    python -m tfaural.data.build_tfds tfaural_gtzan --config 22050hz --manual-dir /data/gtzan --data-dir /data/tfds

Nothing is downloaded. Train on the result with ``python -m tfaural.training.train --data
tfaural_catalogue/demo --tfds-data-dir demo/tfds ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tfaural.cli import HelpFormatter, add_verbose_flag
from tfaural.data.tfds_builders import BUILDERS, prepare
from tfaural.errors import TfauralError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfaural.data.build_tfds``: prepares a catalogue, GTZAN or MagnaTagATune as a TFDS dataset."""
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.data.build_tfds",
        description="Prepare a tfaural TFDS dataset from local audio (nothing is downloaded). Train on it with "
        "python -m tfaural.training.train --data NAME/CONFIG --tfds-data-dir DATA_DIR.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("dataset", choices=BUILDERS, help="which builder")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (default: TFDS's, $TFDS_DATA_DIR)")
    parser.add_argument("--config", default=None, help="config name: the catalogue's name (tfaural_catalogue) or "
                        "the rate config (22050hz, 11025hz, 16000hz)")
    parser.add_argument("--manifest", default=None, help="tfaural_catalogue: the manifest (CSV or JSONL)")
    parser.add_argument("--sample-rate", type=int, default=None, help="tfaural_catalogue: target rate in Hz "
                        "(default 22050)")
    parser.add_argument("--manual-dir", default=None, help="folder with the audio (default for tfaural_catalogue: "
                        "the manifest's folder)")
    parser.add_argument("--overwrite", action="store_true", help="generate again even if already prepared")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        builder = prepare(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir, config=args.config,
                          manifest=args.manifest, sample_rate=args.sample_rate, overwrite=args.overwrite)
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = builder.info
    counts = ", ".join(f"{name} {split.num_examples}" for name, split in info.splits.items())
    name = info.full_name.rsplit("/", 1)[0]
    data_dir = os.fspath(builder.data_dir)[: -len(info.full_name)].rstrip("/")
    print(f"prepared {info.full_name} in {data_dir} ({counts}); train on it with: python -m tfaural.training.train "
          f"--data {name} --tfds-data-dir {data_dir} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
