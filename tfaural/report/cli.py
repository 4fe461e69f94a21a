"""The command line of the listening report: ``python -m tfaural.report`` (also ``tfaural-report``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tfaural.cli import add_verbose_flag, positive_int
from tfaural.errors import TfauralError
from tfaural.report.site import DEFAULT_TITLE, DEFAULT_TRACKS_PER_PAGE, write_report

__all__ = ["parse_args", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line of ``python -m tfaural.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.report",
        description=(
            "Write the listening report of an auralisation: a static web site (index.html + assets) with, per "
            "track, the original excerpt and a grid of feature cards (spectrogram, audio player, 'Feature L-K', "
            "activation), filters by layer and feature, one page per feature comparing it across all tracks, the "
            "model card and, with --correlation, the correlation figure and table. No network is needed to view "
            "it; it works from file:// and from any static web server."
        ),
        epilog=(
            "Example: python -m beam_jobs.auralise --manifest tracks.csv --model exports/choi/1 --output auralised; "
            "python -m tfaural.report auralised; then open auralised/report/index.html, or run "
            "'python -m http.server -d auralised --bind 127.0.0.1' and visit http://127.0.0.1:8000/report/. "
            "Audio is linked, not copied: keep the report next to the auralisation output. An output on a bucket "
            "(gs://..., any filesystem Beam knows) is copied to a temporary folder here, and its report is uploaded "
            "into it (URI/report), to view from the bucket or from a copy of the whole folder."
        ),
    )
    parser.add_argument("auralise_dir", metavar="AURALISE_OUTPUT_DIR",
                        help="the folder written by beam_jobs.auralise (job.json, manifest.jsonl, <track>/track.json): "
                             "local or a URI (gs://...)")
    parser.add_argument("-o", "--output", metavar="REPORT_DIR", default=None,
                        help="where to write the report (default: AURALISE_OUTPUT_DIR/report; for a URI, a URI "
                             "inside it); rerunning updates it and reuses the thumbnails whose audio has not changed")
    parser.add_argument("--correlation", metavar="DIR", default=None,
                        help="folder of the correlation analysis (correlations.csv, summary.json, figure10.png) "
                             "to include (local or a URI)")
    parser.add_argument("--title", default=None, help=f"title of the report (default: {DEFAULT_TITLE!r})")
    parser.add_argument("--tracks-per-page", type=positive_int, default=DEFAULT_TRACKS_PER_PAGE, metavar="N",
                        help=f"tracks per page of the track list and of each feature page "
                             f"(default: {DEFAULT_TRACKS_PER_PAGE})")
    parser.add_argument("--rebuild-thumbnails", action="store_true",
                        help="redraw every spectrogram thumbnail instead of reusing the cached ones")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: written, 2: bad input)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        index = write_report(
            args.auralise_dir, args.output, correlation=args.correlation, title=args.title,
            tracks_per_page=args.tracks_per_page, rebuild_thumbnails=args.rebuild_thumbnails, progress=not args.quiet,
        )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0
