"""The listening report: a static web site of what the auralisation job wrote.

    python -m tfaural.report AURALISE_OUTPUT_DIR [--output REPORT_DIR] [--correlation DIR] [--title TEXT]

People understand learnt features by *listening while looking*; Choi et al.
(2015) published their auralisations as a web page with players next to
spectrograms. This package turns the output folder of ``beam_jobs.auralise``
(``job.json``, ``manifest.jsonl`` and one folder per track with ``track.json``,
``original.wav`` and ``layer<L>/feature<K>.wav``) into such a page, as plain
files (default ``REPORT_DIR = AURALISE_OUTPUT_DIR/report``)::

    index.html                       model card, auralisation settings, tracks (first page), failed
                                     tracks, correlations (with --correlation), feature index
    tracks-<n>.html                  further pages of the track list
    tracks/<track>.html              one track: the original excerpt, then every layer's feature
                                     cards (spectrogram, player, "Feature L-K", activation, or the
                                     auralisation's peak when the job recorded no activations)
    features/layer<L>-feature<K>.html[, ...-page<n>.html]
                                     one feature across all tracks, next to each original
                                     (the layout of the paper's Figures 3 and 5-8)
    correlation/                     copies of figure10.png, correlations.csv, summary.json
    assets/style.css, report.js      no framework, no network; everything is visible without JavaScript
    thumbs/                          spectrogram thumbnails drawn here + cache.json

Audio files (and the spectrogram PNGs the job wrote with ``--spectrograms``) are not
copied: pages link to them with relative, URL-quoted paths, so the report works
from ``file://`` and from any static host that serves a folder holding both. An output
on a bucket (``gs://...``: a job run on Dataflow) gets its report inside it, the same way
(:mod:`~tfaural.report.remote` copies it here, writes the report, and uploads what changed).
Every spectrogram is shown in the same 2:1 box, the size of the thumbnails.

Modules, one responsibility each (none imports TensorFlow):

- :mod:`~tfaural.report.reading`: the auralisation output and the correlation results
  (through the typed readers of :mod:`tfaural.formats`);
- :mod:`~tfaural.report.thumbnails`: the thumbnails the job did not draw, with the one renderer
  (:mod:`tfaural.spectrogram_images`), and their cache;
- :mod:`~tfaural.report.pages`: the HTML, from the Jinja2 templates in ``templates/`` (autoescaped);
- :mod:`~tfaural.report.site`: :func:`write_report`, which puts a report folder together;
- :mod:`~tfaural.report.remote`: a remote output staged to local disk, and its report published back;
- :mod:`~tfaural.report.cli`: the command line.
"""

from tfaural.report.cli import main
from tfaural.report.reading import (
    AuraliseOutput,
    CorrelationResults,
    FailedTrack,
    FeatureOutput,
    TrackOutput,
    load_auralise_output,
    load_correlation,
)
from tfaural.report.site import DEFAULT_TRACKS_PER_PAGE, write_report
from tfaural.report.thumbnails import (
    CACHE_FILE,
    ThumbnailSettings,
    render_thumbnails,
    spectrogram_image,
    thumbnail_settings,
)

__all__ = [
    "CACHE_FILE",
    "DEFAULT_TRACKS_PER_PAGE",
    "FeatureOutput",
    "TrackOutput",
    "FailedTrack",
    "AuraliseOutput",
    "CorrelationResults",
    "ThumbnailSettings",
    "load_auralise_output",
    "load_correlation",
    "thumbnail_settings",
    "spectrogram_image",
    "render_thumbnails",
    "write_report",
    "main",
]
