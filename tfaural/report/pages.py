"""The report's HTML pages, from Jinja2 templates (``templates/*.html``, autoescaped).

:class:`Site` turns an :class:`~tfaural.report.reading.AuraliseOutput` into the values each page
shows (texts, relative URLs, numbers formatted for reading); the templates decide the markup,
and Jinja2 escapes every value (track ids, paths, titles, JSON) unless it is a rendered macro.
Links are relative and URL-quoted, so the report works from ``file://`` and from any static host.
Never imports TensorFlow.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import os
import pathlib
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from tfaural import files
from tfaural._version import __version__
from tfaural.formats import finite_or_none
from tfaural.report.reading import AuraliseOutput, CorrelationResults, FeatureOutput, TrackOutput
from tfaural.report.thumbnails import ORIGINAL_GROUP, ThumbnailSettings

__all__ = ["BROWSER_MIN_SAMPLE_RATE", "TAG_FEATURES_SHOWN", "Site"]

logger = logging.getLogger("tfaural.report")

BROWSER_MIN_SAMPLE_RATE = 3000  # Chromium's media pipeline rejects audio sampled below this (in Hz)
#: Features listed per tag and layer on a track page.
TAG_FEATURES_SHOWN = 5
ACTIVATION = "activation"
PEAK = "peak"
_MEASURE_NOTE = {
    ACTIVATION: "Activation is the feature map's strongest response to this excerpt.",
    PEAK: "The export records no activations: peak is the auralisation's amplitude before it was normalised to "
          "0.9, a measure of how much of the excerpt the feature passes.",
}


# ============================================================================ formatting


def _url(target: str, page_dir: str) -> str:
    """A relative, URL-quoted link from a page in ``page_dir`` to the file ``target``."""
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:  # another drive (Windows): only an absolute URL can reach it
        return pathlib.Path(target).as_uri()
    return urllib.parse.quote(pathlib.PurePath(relative).as_posix(), safe="/")


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


def _short(value: float) -> str:
    """At most three decimals, no trailing zeros: 5.99383 -> "5.994", 2.0 -> "2"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{_short(value)} s"


def _audio_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}.get(ext, "")


def _page_numbers(current: int, total: int, window: int = 3) -> list[int | None]:
    """Page numbers to link (``None`` is a gap): the first, the last and ``window`` either side of ``current``."""
    shown = sorted({1, total, *range(max(1, current - window), min(total, current + window) + 1)})
    numbers: list[int | None] = []
    for number in shown:
        if numbers and number - (numbers[-1] or 0) > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0–3, 7"``."""
    numbers = sorted({int(v) for v in values})
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def _describe_features(value: Any) -> str:
    """The job's ``features``: ``{layer: [indices]}``, a list, or ``None``/``"all"``."""
    try:
        if isinstance(value, Mapping):
            described = {str(layer): _ranges(indices) for layer, indices in value.items()}
            if len(set(described.values())) == 1 and len(described) > 1:
                return f"{next(iter(described.values()))} in every layer"
            return "; ".join(f"layer {layer}: {text}" for layer, text in described.items())
        if isinstance(value, (list, tuple)):
            return _ranges(value)
    except (TypeError, ValueError):
        return json.dumps(value, default=str)
    return str(value if value not in (None, "") else "all")


def _describe_list(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) for v in values) if values else "—"
    return str(values if values not in (None, "") else "all")


def _describe_stft(stft: Mapping[str, Any], sample_rate: Any) -> str:
    parts = []
    first = ("n_fft", "hop_length", "win_length")
    for key, value in sorted(stft.items(), key=lambda kv: (first.index(kv[0]) if kv[0] in first else 3, kv[0])):
        if value is None:
            continue
        text = f"{key} {value}"
        if key in first and isinstance(value, int) and isinstance(sample_rate, int):
            text += f" ({1000.0 * value / sample_rate:.1f} ms)"
        parts.append(text)
    return ", ".join(parts)


def _describe_scaling(scaling: Any) -> str:
    if isinstance(scaling, Mapping):
        mode = scaling.get("mode")
        if mode == "log":
            return f"log(1 + C·|X|), C = {scaling.get('log_c')}"
        if mode == "linear":
            return "linear STFT magnitude"
        return json.dumps(dict(scaling), sort_keys=True)
    return str(scaling)


def _compact(value: Any, limit: int = 240) -> str | None:
    """A one-line rendering of a scalar or a small container, ``None`` if it is too long."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else None


def _summary_facts(summary: Any) -> list[tuple[str, str]]:
    """The short entries of the correlation ``summary.json`` (the table is shown separately)."""
    if not isinstance(summary, Mapping):
        return []
    rows = []
    for key, value in sorted(summary.items()):
        if key in ("table", "signal_ids"):
            continue
        if isinstance(value, Mapping) and "count" in value and key == "zero_features":
            value = {"count": value["count"], "by_layer": value.get("by_layer")}
        text = _compact(value)
        if text is not None:
            rows.append((key.replace("_", " ").capitalize(), text))
    return rows


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _measure(items: Sequence[FeatureOutput]) -> str:
    """How features are ranked: by activation when the job recorded any, else by peak."""
    return ACTIVATION if any(item.activation is not None for item in items) else PEAK


def _strength(item: FeatureOutput, measure: str) -> float | None:
    return item.activation if measure == ACTIVATION else item.peak


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tfaural.report", "templates"),  # package data: see setup.py
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(number=_number, seconds=_seconds, short=_short, pretty_json=_pretty_json)
    return environment


# ============================================================================ the site


class Site:
    """Writes the pages of one report (see :mod:`tfaural.report` for the layout).

    Args:
        output: The auralisation output.
        report_dir: Absolute path of the report folder.
        title: The report's title.
        thumbs: ``{audio path: thumbnail path}`` (:func:`~tfaural.report.thumbnails.render_thumbnails`).
        scales: ``{group: [vmin, vmax]}`` of the thumbnails in dBFS.
        correlation: Correlation results to show (copied to ``report_dir/correlation``), or ``None``.
        tracks_per_page: Tracks per page of the track list and of each feature page.
        thumbnail: The thumbnails' settings (their size is the box every spectrogram is shown in).
    """

    def __init__(
        self,
        output: AuraliseOutput,
        report_dir: str,
        *,
        title: str,
        thumbs: Mapping[str, str],
        scales: Mapping[str, Sequence[float]],
        correlation: CorrelationResults | None,
        tracks_per_page: int,
        thumbnail: ThumbnailSettings,
    ) -> None:
        self.output = output
        self.dir = report_dir
        self.title = title
        self.thumbs = thumbs
        self.scales = scales
        self.correlation = correlation
        self.per_page = tracks_per_page
        self.thumbnail = thumbnail
        self.layers = output.layers()
        self.features = {layer: output.features(layer) for layer in self.layers}
        self.n_track_pages = max(1, math.ceil(len(output.tracks) / tracks_per_page))
        self.created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rates: set[Any] = {t.sample_rate for t in output.tracks if t.sample_rate}
        rates = rates or {output.metadata.sample_rate if output.metadata is not None else None}
        low = sorted(r for r in rates if isinstance(r, (int, float)) and r < BROWSER_MIN_SAMPLE_RATE)
        self.low_rate = low[0] if low else None
        if low:
            logger.warning("audio at %s Hz: Chromium-based browsers cannot play audio sampled below %d Hz",
                           low[0], BROWSER_MIN_SAMPLE_RATE)
        self.written: set[str] = set()

    # ------------------------------------------------------------------ paths

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def track_page(self, track: TrackOutput) -> str:
        return self.path("tracks", f"{track.folder}.html")

    def feature_page(self, layer: int, feature: int, page: int = 1) -> str:
        suffix = "" if page == 1 else f"-page{page}"
        return self.path("features", f"layer{layer}-feature{feature}{suffix}.html")

    def track_list_page(self, page: int) -> str:
        return self.path("index.html" if page == 1 else f"tracks-{page}.html")

    def scale_text(self, group: str) -> str:
        scale = self.scales.get(group)
        if not scale:
            return ""
        return f"colour scale {scale[0]:g} to {scale[1]:g} dBFS"

    # ------------------------------------------------------------------ values the templates show

    def image(self, audio: str | None, job_png: str | None, page_dir: str, alt: str, *,
              small: bool = False) -> dict[str, Any]:
        """An ``<img>`` of an audio file's spectrogram: the job's PNG if it wrote one, else the thumbnail."""
        external = bool(job_png)
        path = job_png or (self.thumbs.get(audio) if audio else None)
        classes = " ".join(c for c in ("thumb", "external" if external else "", "thumb-small" if small else "") if c)
        return {"src": _url(path, page_dir) if path else None, "alt": alt, "classes": classes,
                "width": self.thumbnail.width, "height": self.thumbnail.height, "external": external}

    @staticmethod
    def player(path: str | None, page_dir: str, label: str) -> dict[str, Any]:
        """An ``<audio>`` player (with a download link inside)."""
        return {"src": _url(path, page_dir) if path else None, "type": _audio_type(path) if path else "",
                "label": label}

    @staticmethod
    def pager(current: int, total: int, href: Any) -> list[dict[str, Any]]:
        """Pagination links (empty for one page); ``href(n)`` is the URL of page ``n``."""
        if total <= 1:
            return []
        items: list[dict[str, Any]] = []
        if current > 1:
            items.append({"kind": "prev", "href": href(current - 1)})
        for number in _page_numbers(current, total):
            if number is None:
                items.append({"kind": "gap"})
            else:
                items.append({"kind": "current" if number == current else "page", "number": number,
                              "href": href(number)})
        if current < total:
            items.append({"kind": "next", "href": href(current + 1)})
        return items

    # ------------------------------------------------------------------ document

    def write(self, path: str, template: str, *, page_title: str,
              crumbs: Sequence[tuple[str, str | None]] = (), **values: Any) -> None:
        """Renders ``template`` into ``path`` (atomically) with the values every page needs."""
        page_dir = os.path.dirname(path)
        root = _url(self.dir, page_dir)
        root = "" if root == "." else root + "/"
        nav = [("Model", "index.html#model"), ("Tracks", "index.html#tracks")]
        if self.output.failed:
            nav.append(("Failed", "index.html#failed"))
        if self.correlation:
            nav.append(("Correlations", "index.html#correlations"))
        nav.append(("Features", "index.html#features"))
        document = _environment().get_template(template).render(
            version=__version__, root=root, nav=nav, title=self.title, crumbs=crumbs,
            page_title=page_title if page_title == self.title else f"{page_title} · {self.title}",
            created=self.created, source_name=os.path.basename(self.output.directory),
            low_rate=self.low_rate, min_rate=BROWSER_MIN_SAMPLE_RATE, layer_names=self.output.layer_names, **values,
        )
        files.write_text(path, document)
        self.written.add(os.path.abspath(path))

    # ------------------------------------------------------------------ index and track lists

    def model_card(self) -> dict[str, Any] | None:
        meta = self.output.metadata
        if meta is None:
            return None
        versions = [f"tfaural {meta.tfaural_version}" if meta.tfaural_version else "",
                    f"TensorFlow {meta.tensorflow_version}" if meta.tensorflow_version else ""]
        return {
            "family": meta.family, "run_id": meta.run_id, "run_created": meta.run_created, "task": meta.task,
            "sample_rate": meta.sample_rate,
            "stft": _describe_stft(meta.stft, meta.sample_rate) if meta.stft is not None else None,
            "scaling": _describe_scaling(meta.input_scaling) if meta.input_scaling is not None else None,
            "segment": f"{meta.segment_seconds:.3g} s" if meta.segment_seconds else None,
            "labels": list(meta.labels or ()),
            "features_per_layer": ", ".join(f"{k}: {v}" for k, v in (meta.features_per_layer or {}).items()),
            "versions": ", ".join(v for v in versions if v),
            "model_config": meta.model_config, "run_extra": meta.run_extra,
        }

    def model_file(self) -> dict[str, str] | None:
        """``{"path", "name"}`` of the Keras model file ``python -m tfaural.listen`` auralised (``None``: an export)."""
        model = (self.output.job.model if self.output.job is not None else None) or {}
        path = model.get("model_file")
        return {"path": str(path), "name": str(model.get("name") or "")} if path else None

    def settings_rows(self) -> list[dict[str, Any]]:
        """``{label, text, code}`` rows of the auralisation settings in ``job.json``."""
        job = self.output.job.to_dict() if self.output.job is not None else {}
        labels = {
            "job": "Job", "model_dir": "Model export", "mode": "Auralisation mode", "layers": "Layers",
            "features": "Features", "offset_seconds": "Excerpt offset", "clip_seconds": "Excerpt length",
            "format": "Audio format", "created": "Created", "spectrograms": "Spectrograms by the job",
            "input": "Input files", "manifest": "Input manifest", "tfaural_version": "tfaural version",
        }
        skip = {"metadata", "settings"}  # the model card; "settings" repeats the keys below
        if "model_dir" in job:
            skip.add("model")  # its identity: the directory (shown), run id (model card), export time
        rows: list[dict[str, Any]] = []
        for key, value in sorted(job.items(), key=lambda kv: (list(labels).index(kv[0]) if kv[0] in labels
                                                              else len(labels), kv[0])):
            if key in skip or value is None:
                continue
            label = labels.get(key, "Model export" if key == "model" else key.replace("_", " ").capitalize())
            code = False
            if key == "layers":
                text = _describe_list(value)
            elif key == "features":
                text = _describe_features(value)
            elif key in ("offset_seconds", "clip_seconds"):
                text = _seconds(finite_or_none(value))
            elif isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, (Mapping, list)):
                text, code = json.dumps(value, sort_keys=True, default=str), True
            else:
                text = str(value)
            rows.append({"label": label, "text": text, "code": code})
        rows.append({"label": "Tracks", "text": f"{len(self.output.tracks)} auralised, {len(self.output.failed)} "
                                                "failed", "code": False})
        return rows

    def track_list(self, page: int, page_dir: str) -> dict[str, Any]:
        tracks = self.output.tracks[(page - 1) * self.per_page : page * self.per_page]
        first = (page - 1) * self.per_page + 1
        rows = [{
            "track_id": track.track_id, "name": track.track_id.casefold(),
            "href": _url(self.track_page(track), page_dir),
            "image": self.image(track.original, track.original_spectrogram, page_dir,
                                f"Spectrogram of the original excerpt of {track.track_id}", small=True),
            "player": self.player(track.original, page_dir, f"Original excerpt of {track.track_id}"),
            "n_features": sum(len(items) for items in track.layers.values()), "source": track.source,
        } for track in tracks]
        return {
            "rows": rows,
            "summary": f"Tracks {first}–{first + len(tracks) - 1} of {len(self.output.tracks)}",
            "pager": self.pager(page, self.n_track_pages, lambda n: _url(self.track_list_page(n), page_dir)),
        }

    def correlation_section(self) -> dict[str, Any] | None:
        results = self.correlation
        if results is None:
            return None
        rows = []
        for row in results.rows:
            cells = []
            for column in results.columns:
                value = row.get(column, "")
                number = finite_or_none(value)
                if column in ("layer", "attribute"):
                    cells.append({"text": value, "num": False})
                elif number is not None and column in ("mean", "std"):
                    cells.append({"text": f"{number:.3f}", "num": True})
                else:
                    cells.append({"text": value, "num": True})
            rows.append(cells)
        return {
            "figure": _url(self.path("correlation", "figure10.png"), self.dir) if results.figure else None,
            "columns": [{"name": c, "num": c not in ("layer", "attribute")} for c in results.columns],
            "rows": rows,
            "csv": _url(self.path("correlation", "correlations.csv"), self.dir),
            "summary": results.summary,
            "facts": _summary_facts(results.summary),
        }

    def feature_index(self) -> list[dict[str, Any]]:
        return [{
            "layer": layer,
            "features": [{"feature": f, "href": _url(self.feature_page(layer, f), self.dir)}
                         for f in self.features[layer]],
        } for layer in self.layers]

    def write_index(self) -> None:
        meta = self.output.metadata
        model = " ".join(str(v) for v in ((meta.family, meta.run_id) if meta is not None else ()) if v)
        layers = f"layers {self.layers[0]}–{self.layers[-1]}" if self.layers else "no layers"
        lede = (
            f"Listen to what {('the ' + model + ' model') if model else 'the model'} has learnt: "
            f"{len(self.output.tracks)} tracks, {layers}, "
            f"{sum(len(f) for f in self.features.values())} features. Each feature is deconvolved back to a "
            "spectrogram and auralised with the phase of the original excerpt (Choi et al. 2015)."
        )
        self.write(
            self.track_list_page(1), "index.html", page_title=self.title, lede=lede, model=self.model_card(),
            model_file=self.model_file(), settings=self.settings_rows(), listing=self.track_list(1, self.dir),
            failed=self.output.failed, correlation=self.correlation_section(), feature_index=self.feature_index(),
            layers=self.layers,
        )
        for page in range(2, self.n_track_pages + 1):
            path = self.track_list_page(page)
            crumbs = [("Overview", "index.html"), (f"Tracks, page {page}", None)]
            self.write(path, "tracks.html", page_title=f"Tracks, page {page}", crumbs=crumbs, page=page,
                       n_pages=self.n_track_pages, listing=self.track_list(page, os.path.dirname(path)))

    # ------------------------------------------------------------------ one track

    def feature_card(self, track: TrackOutput, item: FeatureOutput, position: int, *, measure: str,
                     strongest: float | None, page_dir: str) -> dict[str, Any]:
        value = _strength(item, measure)
        return {
            "item": item, "name": item.name, "position": position, "measure": measure,
            "strength": "" if value is None else f"{value:.6g}",
            "meter": None if value is None or not strongest else {
                "max": f"{strongest:.6g}", "value": f"{max(value, 0.0):.6g}", "text": _number(value),
            },
            "image": self.image(item.audio, item.spectrogram, page_dir,
                                f"Deconvolved spectrogram of feature {item.name} for {track.track_id}"),
            "player": self.player(item.audio, page_dir, f"Feature {item.name} of {track.track_id}"),
            "compare": _url(self.feature_page(item.layer, item.feature), page_dir),
        }

    def tag_blocks(self, track: TrackOutput, page_dir: str) -> list[dict[str, Any]]:
        """Per tag of the excerpt, the features of each layer that contribute most (``--tags``)."""
        blocks = []
        for label, _ in track.tags:
            layers = []
            for layer, contributors in (track.attribution.get(label) or {}).items():
                items = []
                for feature, contribution in contributors[:TAG_FEATURES_SHOWN]:
                    found = track.feature(layer, feature)
                    name = f"{layer}-{feature}"
                    items.append({
                        "name": name, "contribution": _number(contribution), "found": found is not None,
                        "silent": bool(found and found.silent), "href": f"#layer{layer}-feature{feature}",
                        "player": self.player(found.audio, page_dir, f"Feature {name} of {track.track_id}")
                        if found is not None else None,
                    })
                layers.append({"layer": layer, "contributors": items})
            blocks.append({"label": label, "layers": layers})
        return blocks

    def write_track(self, index: int) -> None:
        track = self.output.tracks[index]
        path = self.track_page(track)
        page_dir = os.path.dirname(path)
        image = self.image(track.original, track.original_spectrogram, page_dir,
                           f"Spectrogram of the original excerpt of {track.track_id}")
        rate = track.sample_rate or (self.output.metadata.sample_rate if self.output.metadata is not None else None)
        duration = track.clip_seconds
        caption = "Spectrogram of the original excerpt (time →, frequency ↑"
        caption += f", 0–{rate / 2:g} Hz" if isinstance(rate, (int, float)) else ""
        scale = self.scale_text(ORIGINAL_GROUP)
        caption += f"; {scale})" if not image["external"] and scale else ")"
        excerpt = ""
        if track.offset_seconds is not None or duration is not None:
            start = track.offset_seconds or 0.0
            padded = track.padded_seconds if duration is not None else 0.0
            end = f"{_short(start + duration - padded)} s" if duration is not None else "the end"
            excerpt = f"excerpt {_short(start)} s – {end}"
            if padded and duration is not None:  # --pad-short: the model heard the excerpt and silence after it
                excerpt += (f" and {_short(padded)} s of silence (zero-padded to the {_short(duration)} s the "
                            "model needs)")
        facts = " · ".join(x for x in (f"source {track.source}" if track.source else "", excerpt,
                                         f"{rate} Hz" if rate else "") if x)
        tracks = self.output.tracks
        neighbours = {
            "prev": {"href": _url(self.track_page(tracks[index - 1]), page_dir), "text": tracks[index - 1].track_id}
            if index > 0 else None,
            "next": {"href": _url(self.track_page(tracks[index + 1]), page_dir), "text": tracks[index + 1].track_id}
            if index + 1 < len(tracks) else None,
        }
        sections = []
        measures = set()
        for layer, items in track.layers.items():
            measure = _measure(items)
            measures.add(measure)
            values = [v for v in (_strength(i, measure) for i in items) if v is not None]
            strongest = max(values) if values and max(values) > 0 else None
            sections.append({
                "layer": layer, "scale": self.scale_text(f"layer{layer}"),
                "cards": [self.feature_card(track, item, pos, measure=measure, strongest=strongest, page_dir=page_dir)
                          for pos, item in enumerate(items)],
            })
        page_measure = ACTIVATION if ACTIVATION in measures else PEAK
        crumbs = [("Overview", _url(self.path("index.html"), page_dir)),
                  ("Tracks", _url(self.path("index.html"), page_dir) + "#tracks"), (track.track_id, None)]
        self.write(
            path, "track.html", page_title=f"Track {track.track_id}", crumbs=crumbs, track=track, facts=facts,
            neighbours=neighbours, image=image, caption=caption,
            player=self.player(track.original, page_dir, f"Original excerpt of {track.track_id}"),
            measure_note=_MEASURE_NOTE[page_measure], page_measure=page_measure,
            tags=[(label, _number(score, 2)) for label, score in track.tags],
            tag_blocks=self.tag_blocks(track, page_dir), filter_layers=list(track.layers), sections=sections,
        )

    # ------------------------------------------------------------------ one feature across tracks

    def write_feature(self, layer: int, feature: int) -> None:
        tracks = self.output.tracks
        n_pages = max(1, math.ceil(len(tracks) / self.per_page))
        features = self.features[layer]
        position = features.index(feature)
        measure = _measure([i for t in tracks for i in [t.feature(layer, feature)] if i is not None])
        for page in range(1, n_pages + 1):
            path = self.feature_page(layer, feature, page)
            page_dir = os.path.dirname(path)
            rows = []
            for pos, track in enumerate(tracks[(page - 1) * self.per_page : page * self.per_page]):
                item = track.feature(layer, feature)
                value = None if item is None else _strength(item, measure)
                rows.append({
                    "track_id": track.track_id, "name": track.track_id.casefold(), "position": pos,
                    "href": _url(self.track_page(track), page_dir) + f"#layer{layer}-feature{feature}",
                    "original": self.image(track.original, track.original_spectrogram, page_dir,
                                           f"Spectrogram of the original excerpt of {track.track_id}"),
                    "original_player": self.player(track.original, page_dir, f"Original excerpt of {track.track_id}"),
                    "image": None if item is None else self.image(
                        item.audio, item.spectrogram, page_dir,
                        f"Deconvolved spectrogram of feature {item.name} for {track.track_id}"),
                    "player": None if item is None else self.player(
                        item.audio, page_dir, f"Feature {item.name} of {track.track_id}"),
                    "note": "" if item is None
                    else f"{measure} {_number(value)}" + (" · silent" if item.silent else ""),
                    "strength": "" if value is None else f"{value:.6g}",
                })
            neighbours = {
                "prev": {"href": _url(self.feature_page(layer, features[position - 1]), page_dir),
                         "text": f"Feature {layer}-{features[position - 1]}"} if position > 0 else None,
                "next": {"href": _url(self.feature_page(layer, features[position + 1]), page_dir),
                         "text": f"Feature {layer}-{features[position + 1]}"} if position + 1 < len(features) else None,
            }

            def page_url(number: int, directory: str = page_dir) -> str:
                return _url(self.feature_page(layer, feature, number), directory)

            count = f"{len(tracks)} tracks" + (f", page {page} of {n_pages}" if n_pages > 1 else "")
            crumbs = [("Overview", _url(self.path("index.html"), page_dir)),
                      ("Features", _url(self.path("index.html"), page_dir) + "#features"),
                      (f"Feature {layer}-{feature}", None)]
            self.write(
                path, "feature.html", page_title=f"Feature {layer}-{feature}", crumbs=crumbs, layer=layer,
                feature=feature, count=count, scale=self.scale_text(f"layer{layer}"), neighbours=neighbours,
                rows=rows, measure=measure, pager=self.pager(page, n_pages, page_url),
            )

    # ------------------------------------------------------------------ everything

    def write_all(self, progress: bool) -> None:
        """Writes every page, then deletes the pages of an earlier run that this one did not write."""
        from tqdm.auto import tqdm

        self.write_index()
        n_pages = len(self.output.tracks) + sum(len(f) for f in self.features.values())
        with tqdm(total=n_pages, desc="writing pages", unit="page", disable=not progress) as bar:
            for index in range(len(self.output.tracks)):
                self.write_track(index)
                bar.update(1)
            for layer in self.layers:
                for feature in self.features[layer]:
                    self.write_feature(layer, feature)
                    bar.update(1)
        self.remove_stale_pages()

    def remove_stale_pages(self) -> None:
        """Deletes pages of an earlier run that this run did not write (removed tracks, fewer pages)."""
        candidates = [os.path.join(self.dir, name) for name in os.listdir(self.dir)
                      if name.startswith("tracks-") and name.endswith(".html")]
        for folder in ("tracks", "features"):
            folder_path = self.path(folder)
            if os.path.isdir(folder_path):
                candidates += [os.path.join(folder_path, n) for n in os.listdir(folder_path) if n.endswith(".html")]
        for path in candidates:
            if os.path.abspath(path) not in self.written:
                os.unlink(path)
