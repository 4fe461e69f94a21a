"""Writing a report folder: where it may go, its assets, the correlation files, thumbnails and pages.

Never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from importlib import resources
from typing import Any

from tfaural import files
from tfaural.cli import check_output_folder
from tfaural.data.catalogue import is_uri
from tfaural.errors import ParameterError
from tfaural.report import remote
from tfaural.report.pages import Site
from tfaural.report.reading import (
    CORRELATION_FILES,
    AuraliseOutput,
    CorrelationResults,
    load_auralise_output,
    load_correlation,
)
from tfaural.report.thumbnails import render_thumbnails, thumbnail_settings

__all__ = ["DEFAULT_TRACKS_PER_PAGE", "DEFAULT_TITLE", "write_report"]

logger = logging.getLogger("tfaural.report")

DEFAULT_TRACKS_PER_PAGE = 50
DEFAULT_TITLE = "Listening report"
ASSET_FILES = ("style.css", "report.js")
_RESERVED = ("index.html", "assets", "tracks", "features", "thumbs", "correlation")


def _write_if_changed(path: str, data: bytes) -> None:
    if not os.path.isfile(path) or pathlib.Path(path).read_bytes() != data:
        files.write_bytes(path, data)


def _copy_assets(report_dir: str) -> None:
    folder = resources.files("tfaural.report").joinpath("assets")  # package data: see setup.py
    for name in ASSET_FILES:
        _write_if_changed(os.path.join(report_dir, "assets", name), folder.joinpath(name).read_bytes())


def _copy_correlation(results: CorrelationResults, report_dir: str) -> None:
    target = os.path.join(report_dir, "correlation")
    for name in CORRELATION_FILES:
        source = os.path.join(results.directory, name)
        if os.path.isfile(source) and os.path.abspath(source) != os.path.abspath(os.path.join(target, name)):
            _write_if_changed(os.path.join(target, name), pathlib.Path(source).read_bytes())


def _check_output_location(output: AuraliseOutput, report_dir: str) -> None:
    real = os.path.realpath(report_dir)
    for track in output.tracks:
        track_dir = os.path.realpath(track.directory)
        if real == track_dir or real.startswith(track_dir + os.sep):
            raise ParameterError(
                f"the report folder {report_dir} would be inside the output of track {track.track_id!r} "
                f"({track.directory}); choose another --output"
            )
    if real == os.path.realpath(output.directory):
        clashes = sorted({t.folder for t in output.tracks} & set(_RESERVED))
        if clashes:
            raise ParameterError(
                f"cannot write the report into {report_dir} itself: track folders {clashes} would clash with the "
                "report's own folders; use the default (AURALISE_OUTPUT_DIR/report) or another --output"
            )


def write_report(
    auralise_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    correlation: str | os.PathLike[str] | None = None,
    title: str | None = None,
    tracks_per_page: int = DEFAULT_TRACKS_PER_PAGE,
    rebuild_thumbnails: bool = False,
    progress: bool = True,
) -> str:
    """Writes the listening report of an auralisation job's output (see :mod:`tfaural.report`).

    Args:
        auralise_dir: The folder ``beam_jobs.auralise`` wrote: local, or a URI of any filesystem Beam
            knows (``gs://...``), whose report is then written inside it (:mod:`tfaural.report.remote`).
        output: The report folder (default ``auralise_dir/report``); created if needed,
            rewritten in place on reruns (thumbnails are reused when still valid). For a remote
            ``auralise_dir``, a URI inside it (the pages link to the audio by relative paths).
        correlation: A folder (local or a URI) with the correlation analysis (``correlations.csv``,
            ``summary.json``, ``figure10.png``) to include.
        title: Title of the report (default "Listening report").
        tracks_per_page: Tracks per page of the track list and of each feature page.
        rebuild_thumbnails: Redraw every thumbnail even if the cache says it is current.
        progress: Show tqdm progress bars.

    Returns:
        The path (or URI) of ``index.html``.

    Raises:
        ParameterError: Missing folders, a bad ``tracks_per_page``, or an output location
            that cannot be written (a file, a read-only folder) or would clash with the auralisation output.
        DataError: The folder holds no auralisation output, its JSON is malformed, or a remote file
            cannot be copied.
    """
    if isinstance(tracks_per_page, bool) or not isinstance(tracks_per_page, int) or tracks_per_page < 1:
        raise ParameterError(f"tracks_per_page={tracks_per_page!r} is invalid: expected a positive integer")
    options = {"title": title, "tracks_per_page": tracks_per_page, "rebuild_thumbnails": rebuild_thumbnails,
               "progress": progress}
    if is_uri(os.fspath(auralise_dir)) or (correlation is not None and is_uri(os.fspath(correlation))):
        return _write_remote(os.fspath(auralise_dir), None if output is None else os.fspath(output),
                             None if correlation is None else os.fspath(correlation), **options)
    if output is not None and is_uri(os.fspath(output)):
        raise ParameterError(f"--output {os.fspath(output)!r} is a URI: the report of a local auralisation output "
                             "goes to a local folder (its pages link to the audio by relative paths)")
    results = load_auralise_output(auralise_dir)
    report_dir = os.path.abspath(os.fspath(output) if output is not None else os.path.join(results.directory, "report"))
    check_output_folder(report_dir, flag="--output")
    _check_output_location(results, report_dir)
    correlation_results = load_correlation(correlation) if correlation is not None else None
    os.makedirs(report_dir, exist_ok=True)
    logger.info("writing the report of %d tracks to %s", len(results.tracks), report_dir)
    settings = thumbnail_settings(results.metadata)
    thumbs, scales = render_thumbnails(results, report_dir, settings=settings, force=rebuild_thumbnails,
                                       progress=progress)
    _copy_assets(report_dir)
    if correlation_results is not None:
        _copy_correlation(correlation_results, report_dir)
    site = Site(
        results, report_dir, title=title or DEFAULT_TITLE, thumbs=thumbs, scales=scales,
        correlation=correlation_results, tracks_per_page=tracks_per_page, thumbnail=settings,
    )
    site.write_all(progress)
    index = os.path.join(report_dir, "index.html")
    logger.info("report written: %s", index)
    return index


def _write_remote(auralise_dir: str, output: str | None, correlation: str | None, **options: Any) -> str:
    """:func:`write_report` when the output or the correlation folder is remote: staged, written, published."""
    source = auralise_dir.rstrip("/")
    target = (output or f"{source}/report").rstrip("/")
    relative = remote.inside(target, source) if is_uri(source) and is_uri(target) else None
    if is_uri(source) and not (relative and remote.plain_path(relative)):
        raise ParameterError(
            f"--output {target}: the report of a remote auralisation output is written inside it ({source}/report "
            "by default), since its pages link to the audio by relative paths; to listen on this machine, copy "
            f"the output (e.g. gcloud storage cp -r {source} .) and run python -m tfaural.report on the copy"
        )
    with contextlib.ExitStack() as stack:
        if correlation is not None and is_uri(correlation):
            correlation = stack.enter_context(remote.stage(correlation, what="correlation results",
                                                           progress=options["progress"])).local
        if relative is None:  # only the correlation folder is remote
            return write_report(auralise_dir, output, correlation=correlation, **options)
        staged = stack.enter_context(remote.stage(source, what="auralisation output", progress=options["progress"]))
        write_report(staged.local, os.path.join(staged.local, *relative.split("/")), correlation=correlation,
                     **options)
        uploaded, deleted = remote.publish(staged, relative, progress=options["progress"])
        index = f"{target}/index.html"
        logger.info("report published: %s (%d file(s) uploaded, %d removed)", index, uploaded, deleted)
        return index
