"""The listening report (tfaural.report) on an auralisation output built from real tfaural audio.

The output is laid out by ``report_testing.make_auralise_output`` exactly as ``beam_jobs.auralise``
writes it (the browser test, test_report_browser.py, uses it too).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
from report_testing import (
    HOP,
    N_FFT,
    N_FILTERS,
    N_LAYERS,
    RATE,
    RUN_ID,
    SECONDS,
    TRACKS,
    auralised,
    make_auralise_output,
    make_correlation,
    parse,
    resolve,
    write_png,
)

from tfaural import audio
from tfaural.errors import DataError, ParameterError
from tfaural.formats import ExportMetadata
from tfaural.report import (
    CACHE_FILE,
    ThumbnailSettings,
    load_auralise_output,
    main,
    remote,
    spectrogram_image,
    thumbnail_settings,
    write_report,
)
from tfaural.report.thumbnails import THUMBNAIL_HEIGHT, THUMBNAIL_WIDTH


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """An auralisation output with its report (default location) and correlation section."""
    root = tmp_path_factory.mktemp("report")
    out = make_auralise_output(root / "auralised")
    write_report(out, correlation=make_correlation(root / "correlation"), title="Tiny <model> report",
                 progress=False)
    return out


# ----------------------------------------------------------------------------------------------- the site


def test_every_link_and_source_resolves(built: pathlib.Path) -> None:
    report = built / "report"
    pages = sorted(report.rglob("*.html"))
    names = {p.relative_to(report).as_posix() for p in pages}
    expected_features = {f"features/layer{layer}-feature{k}.html" for layer in (1, 2, 3) for k in range(N_FILTERS)}
    expected_tracks = {f"tracks/{folder}.html" for _, folder in TRACKS}
    assert names == {"index.html"} | expected_tracks | expected_features
    ids: dict[pathlib.Path, set[str]] = {p: {a["id"] for _, a in parse(p) if a.get("id")} for p in pages}
    checked = 0
    for page in pages:
        for tag, attrs in parse(page):
            url = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
            if not url or url.startswith("data:"):
                continue
            target, fragment = resolve(page, url)
            assert target.is_file(), f"{page.relative_to(report)}: {url!r} -> {target} does not exist"
            assert report.parent in target.parents or target.parent == report.parent
            if fragment and target.suffix == ".html":
                assert fragment in ids[target], f"{page.name}: #{fragment} is not an id in {target.name}"
            checked += 1
    assert checked > 200


def test_track_page_has_original_and_feature_cards(built: pathlib.Path) -> None:
    page = built / "report" / "tracks" / "blues.00001.html"
    tags = parse(page)
    text = page.read_text(encoding="utf-8")
    cards = [a for t, a in tags if t == "li" and "data-filter-item" in a]
    assert len(cards) == N_LAYERS * N_FILTERS
    assert {(a["data-layer"], a["data-feature"]) for a in cards} == {
        (str(layer), str(k)) for layer in (1, 2, 3) for k in range(N_FILTERS)
    }
    for layer in (1, 2, 3):
        for k in range(N_FILTERS):
            assert f"<h3>Feature {layer}-{k}</h3>" in text
    sources = [a["src"] for t, a in tags if t == "source"]
    assert "../../blues.00001/original.wav" in sources
    assert "../../blues.00001/layer2/feature3.wav" in sources
    assert len(sources) == 1 + N_LAYERS * N_FILTERS
    audios = [a for t, a in tags if t == "audio"]
    assert audios and all(a.get("preload") == "none" and a.get("aria-label") for a in audios)
    images = [a for t, a in tags if t == "img"]
    assert len(images) == 1 + N_LAYERS * N_FILTERS
    assert all(a.get("alt") and a.get("loading") == "lazy" for a in images)
    assert "thumbs/blues.00001/layer1/feature0.png" in images[1]["src"]
    # activation shown; the null one shows a dash
    _, _, layers = auralised(len(TRACKS))
    assert f"activation {layers[1][3][0, 0]:.3g}" in text
    card = re.search(r'id="layer2-feature1".*?</li>', text, re.S)
    assert card and "activation —" in card.group(0) and 'data-strength=""' in card.group(0)
    assert '<option value="strength">Activation (strongest first)</option>' in text
    # labelled filter controls (each input is wrapped in a <label> or has one pointing at it)
    labelled_for = {a["for"] for t, a in tags if t == "label" and a.get("for")}
    for match in re.finditer(r"<input ([^>]*)>", text):
        attrs = match.group(1)
        ident = re.search(r'id="([^"]+)"', attrs)
        preceding = text[: match.start()].rsplit("<label", 1)[-1]
        assert (ident and ident.group(1) in labelled_for) or "</label>" not in preceding, attrs
    assert 'aria-live="polite"' in text and 'class="skip-link"' in text and '<main id="main"' in text


def test_feature_page_compares_one_feature_across_tracks(built: pathlib.Path) -> None:
    page = built / "report" / "features" / "layer2-feature3.html"
    text = page.read_text(encoding="utf-8")
    tags = parse(page)
    sources = [a["src"] for t, a in tags if t == "source"]
    quoted = urllib.parse.quote("jazz two ü")
    assert sources == [
        "../../blues.00001/original.wav", "../../blues.00001/layer2/feature3.wav",
        f"../../{quoted}/original.wav", f"../../{quoted}/layer2/feature3.wav",
        "../../rock.00003/original.wav", "../../rock.00003/layer2/feature3.wav",
    ]
    assert "<h1>Feature 2-3 across tracks</h1>" in text
    assert 'href="layer2-feature2.html" rel="prev"' in text
    assert "rel=\"next\"" not in text.split("<ol")[0]  # feature 3 is the last of layer 2


def test_user_strings_are_escaped_and_urls_quoted(built: pathlib.Path) -> None:
    report = built / "report"
    for page in report.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<b>ü</b>" not in text and "<model>" not in text and "broken <4>" not in text
    index = (report / "index.html").read_text(encoding="utf-8")
    assert "jazz &#34;two&#34; &lt;b&gt;ü&lt;/b&gt;" in index
    assert "Tiny &lt;model&gt; report" in index
    assert 'href="tracks/jazz%20two%20%C3%BC.html"' in index
    assert (report / "tracks" / "jazz two ü.html").is_file()


def test_index_model_card_failed_tracks_correlations_and_feature_index(built: pathlib.Path) -> None:
    report = built / "report"
    index = (report / "index.html").read_text(encoding="utf-8")
    model = index.split('id="model"')[1].split("</section>")[0]
    for needle in ("choi", RUN_ID, f"{RATE} Hz", "n_fft 64 (15.6 ms)", "hop_length 32 (7.8 ms)",
                   "linear STFT magnitude", "<li>blues</li>", "<li>jazz</li>", "<li>rock</li>",
                   "Architecture (model_config)"):
        assert needle in model, needle
    settings = index.split('id="settings"')[1].split("</section>")[0]
    assert "/exports/choi/1" in settings and "phase" in settings and "3 auralised, 1 failed" in settings
    assert "<dt>Features</dt><dd>0–3 in every layer</dd>" in settings and "exported" not in settings
    failed = index.split('id="failed"')[1].split("</section>")[0]
    assert "broken.00004" in failed
    assert "AudioDecodeError (decode): audio/broken &lt;4&gt;.wav: not an audio file" in failed
    correlations = index.split('id="correlations"')[1].split("</section>")[0]
    assert 'src="correlation/figure10.png"' in correlations
    assert (report / "correlation" / "figure10.png").read_bytes() == (
        built.parent / "correlation" / "figure10.png").read_bytes()
    assert "<td>2</td><td>chord</td><td class=\"num\">0.650</td>" in correlations
    assert correlations.count("<tr>") == 1 + 9
    facts = correlations.split('<dl class="facts">')[1].split("</dl>")[0]
    assert "<dt>N signals</dt><dd>12</dd>" in facts and "piano" in facts
    assert "<dt>Zero features</dt><dd>{&#34;by_layer&#34;: {&#34;3&#34;: 2}, &#34;count&#34;: 2}</dd>" in facts
    assert "signal-3" not in facts and "signal-3" in correlations  # only in the full JSON
    features = index.split('id="features"')[1]
    for layer in (1, 2, 3):
        for k in range(N_FILTERS):
            assert f'href="features/layer{layer}-feature{k}.html"' in features
    assert index.count("data-filter-item") == len(TRACKS) + N_LAYERS * N_FILTERS


def test_layers_are_headed_by_the_names_the_job_recorded(tmp_path: pathlib.Path, built: pathlib.Path) -> None:
    """The export's ``layer_names`` (Beam job) head each layer beside its number; ``job.json``'s own
    (``tfaural.listen``, e.g. a transformer block heard with ``--extra-levels``) win over them."""
    out = make_auralise_output(tmp_path / "auralised", failed=())
    job = json.loads((out / "job.json").read_text(encoding="utf-8"))
    job["metadata"]["layer_names"] = {"1": "pool1", "2": "pool2", "3": "pool3"}
    (out / "job.json").write_text(json.dumps(job), encoding="utf-8")
    assert load_auralise_output(out).layer_names == {1: "pool1", 2: "pool2", 3: "pool3"}
    report = pathlib.Path(write_report(out, progress=False)).parent
    named = 'Layer 2 <code class="layer-name">pool2</code>'
    track = (report / "tracks" / "rock.00003.html").read_text(encoding="utf-8")
    assert f'<h2 id="layer2-heading">{named} <span' in track
    assert f'<input type="checkbox" name="layer" value="2" checked> {named}</label>' in track
    index = (report / "index.html").read_text(encoding="utf-8")
    assert f'<h3 id="index-layer3">{named.replace("2", "3")} <span' in index
    feature = (report / "features" / "layer2-feature1.html").read_text(encoding="utf-8")
    assert f'<p class="lede">{named}, feature 1:' in feature

    job["layer_names"] = {"3": "res1b <attention>"}
    (out / "job.json").write_text(json.dumps(job), encoding="utf-8")
    report = pathlib.Path(write_report(out, progress=False)).parent
    track = (report / "tracks" / "rock.00003.html").read_text(encoding="utf-8")
    assert '<h2 id="layer3-heading">Layer 3 <code class="layer-name">res1b &lt;attention&gt;</code> <span' in track
    assert '<h2 id="layer1-heading">Layer 1 <span' in track  # no name recorded for it there
    # A job that records no names keeps the plain headings.
    plain = (built / "report" / "tracks" / "rock.00003.html").read_text(encoding="utf-8")
    assert '<h2 id="layer2-heading">Layer 2 <span' in plain and "layer-name" not in plain


def test_features_rank_by_peak_when_no_activation_was_recorded(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised", failed=(), activations=False)
    report = pathlib.Path(write_report(out, progress=False)).parent
    _, _, layers = auralised(len(TRACKS))
    text = (report / "tracks" / "rock.00003.html").read_text(encoding="utf-8")
    cards = text.split('<div id="features">')[1]
    assert "activation" not in cards
    assert '<option value="strength">Peak (strongest first)</option>' in text and "records no activations" in text
    peak = layers[3][2][2, 1]
    card = re.search(r'id="layer3-feature1".*?</li>', text, re.S)
    assert card and f'data-strength="{peak:.6g}"' in card.group(0) and f"peak {peak:.3g}" in card.group(0)
    compare = (report / "features" / "layer3-feature1.html").read_text(encoding="utf-8")
    assert f"peak {peak:.3g}" in compare and f'data-strength="{peak:.6g}"' in compare


# ----------------------------------------------------------------------------------------------- thumbnails


def _mtimes(folder: pathlib.Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*.png")}


def test_thumbnails_share_a_scale_per_layer_and_are_reused(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised", failed=())
    write_report(out, progress=False)
    thumbs = out / "report" / "thumbs"
    cache = json.loads((thumbs / CACHE_FILE).read_text())
    entries = cache["entries"]
    assert len(entries) == len(TRACKS) * (1 + N_LAYERS * N_FILTERS)
    scales: dict[str, set[tuple[float, float]]] = {}
    for key, entry in entries.items():
        group = "original" if key.endswith("original.wav") else key.split("/")[1]
        scales.setdefault(group, set()).add(tuple(entry["scale"]))
    assert set(scales) == {"original", "layer1", "layer2", "layer3"}
    for group, values in scales.items():
        assert len(values) == 1, group
        (low, high), = values
        loudest = max(e["max_db"] for k, e in entries.items() if group in k or (group == "original" and
                                                                                     k.endswith("original.wav")))
        assert high - 80.0 == low and high - 5.0 < loudest <= high and high % 5 == 0
    from PIL import Image

    with Image.open(thumbs / "blues.00001" / "layer1" / "feature0.png") as image:
        assert image.size == (THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT)  # 65 frames x 33 bins resampled to the box

    before = _mtimes(thumbs)
    write_report(out, progress=False)
    assert _mtimes(thumbs) == before  # nothing redrawn

    # the quietest feature of layer 3 goes silent: only its thumbnail is redrawn (the layer's top is unchanged)
    quietest = min((e["max_db"], k) for k, e in entries.items() if "/layer3/" in k)[1]
    audio.write(out / quietest, np.zeros(int(RATE * SECONDS), np.float32), sample_rate=RATE)
    write_report(out, progress=False)
    after = _mtimes(thumbs)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {quietest.replace(".wav", ".png")}

    # a louder-than-ever layer-1 feature raises the layer's scale: every layer-1 thumbnail is redrawn
    top = scales["layer1"].pop()[1]
    t = np.arange(RATE) / RATE
    square = np.sign(np.sin(2 * np.pi * 256 * t + 0.1)).astype(np.float32) * 0.999
    louder = float(spectrogram_image(square[np.newaxis], thumbnail_settings(ExportMetadata.from_dict(
        json.loads((out / "job.json").read_text())["metadata"])))[0].max())
    assert louder > top, "test precondition: the square wave must exceed the layer's colour-scale top"
    audio.write(out / "rock.00003" / "layer1" / "feature2.wav", square, sample_rate=RATE)
    write_report(out, progress=False)
    final = _mtimes(thumbs)
    changed = {k for k in final if final[k] != after[k]}
    assert changed == {f"{folder}/layer1/feature{k}.png" for _, folder in TRACKS for k in range(N_FILTERS)}
    new_cache = json.loads((thumbs / CACHE_FILE).read_text())["entries"]
    assert new_cache["rock.00003/layer1/feature2.wav"]["scale"][1] >= louder


def test_job_spectrograms_are_used_instead_of_rendering(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised", spectrograms=True, failed=())
    write_report(out, progress=False)
    assert not list((out / "report" / "thumbs").rglob("*.png"))
    page = out / "report" / "tracks" / "rock.00003.html"
    images = [a for t, a in parse(page) if t == "img"]
    assert images[0]["src"] == "../../rock.00003/original.png"
    assert images[1]["src"] == "../../rock.00003/layer1/feature0.png" and "external" in (images[1]["class"] or "")


def test_spectrogram_image_matches_librosa() -> None:
    import librosa

    rng = np.random.default_rng(3)
    t = np.arange(3000) / RATE
    y = (0.7 * np.sin(2 * np.pi * 320 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    settings = ThumbnailSettings(n_fft=N_FFT, hop_length=HOP, width=40, height=33)
    image = spectrogram_image(y[np.newaxis], settings)[0]
    # the renderer's edges are reflected (as beam_jobs.auralise has always drawn them); periodic Hann
    power = np.abs(librosa.stft(y.astype(np.float64), n_fft=N_FFT, hop_length=HOP, center=True, window="hann",
                                pad_mode="reflect")) ** 2
    frames = power.shape[1]  # 94 frames, averaged in power over the 2.35 frames each of the 40 columns covers
    span = frames / 40
    columns = []
    for i in range(40):
        start, stop = i * span, (i + 1) * span
        weights = [max(0.0, min(stop, j + 1) - max(start, j)) for j in range(frames)]
        columns.append(power @ np.asarray(weights) / sum(weights))
    expected = 10 * np.log10(np.maximum(np.stack(columns, axis=1) / (N_FFT / 4) ** 2, 1e-30))
    assert image.shape == expected.shape == (33, 40)
    np.testing.assert_allclose(image, np.maximum(expected, -120.0), atol=1e-3)
    # a full-scale sine on a bin centre peaks at 0 dBFS
    sine = np.sin(2 * np.pi * 10 * RATE / N_FFT * t).astype(np.float32)
    peak = spectrogram_image(sine[np.newaxis], settings)[0][:, 2:-2].max(axis=1)
    assert np.argmax(peak) == 10 and abs(peak[10]) < 0.05


def test_thumbnail_png_matches_matplotlib_imsave(tmp_path: pathlib.Path) -> None:
    from matplotlib import image as mpl_image
    from PIL import Image

    from tfaural.report.thumbnails import thumbnail_png

    rng = np.random.default_rng(8)
    image = rng.uniform(-100.0, 5.0, (33, 65)).astype(np.float32)  # also below and above the scale
    settings = ThumbnailSettings(n_fft=N_FFT, hop_length=HOP)
    (tmp_path / "ours.png").write_bytes(thumbnail_png(image, (-80.0, 0.0), settings))
    mpl_image.imsave(tmp_path / "matplotlib.png", image, cmap="magma", vmin=-80.0, vmax=0.0, origin="lower")
    with Image.open(tmp_path / "ours.png") as ours, Image.open(tmp_path / "matplotlib.png") as reference:
        assert ours.mode == "P"
        np.testing.assert_array_equal(np.asarray(ours.convert("RGB")), np.asarray(reference.convert("RGB")))


def test_a_4_s_excerpt_thumbnail_is_landscape_and_fills_its_box(built: pathlib.Path) -> None:
    from importlib import resources

    from PIL import Image

    from tfaural.report.thumbnails import thumbnail_png

    # 4 s at 22,050 Hz with n_fft 512 and hop 512: 173 frames x 257 bins, a portrait image at one pixel each
    settings = thumbnail_settings(ExportMetadata.from_dict({"sample_rate": 22050,
                                                            "stft": {"n_fft": 512, "hop_length": 512}}))
    t = np.arange(4 * 22050) / 22050
    excerpt = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    png = thumbnail_png(spectrogram_image(excerpt[np.newaxis], settings)[0], (-80.0, 0.0), settings)
    with Image.open(io.BytesIO(png)) as picture:
        width, height = picture.size
    assert (width, height) == (THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT) and width > height
    # the box: every aspect ratio and fixed size the stylesheet gives a spectrogram is the thumbnail's
    css = (resources.files("tfaural.report") / "assets" / "style.css").read_text(encoding="utf-8")
    ratios = re.findall(r"aspect-ratio:\s*(\d+)\s*/\s*(\d+)", css)
    sizes = re.findall(r"\.thumb-small \{ width: (\d+)px; height: (\d+)px; \}", css)
    assert ratios and sizes
    assert all(int(w) * height == int(h) * width for w, h in ratios + sizes)
    assert "contain" not in css  # no letterboxing: the job's PNGs are stretched to the same box
    # the pages: every spectrogram <img> declares the box, and the thumbnails drawn have exactly its size
    report = built / "report"
    for page in (report / "index.html", report / "tracks" / "blues.00001.html",
                 report / "features" / "layer1-feature0.html"):
        thumbs = [a for t, a in parse(page) if t == "img" and "thumb" in (a.get("class") or "").split()]
        assert thumbs
        for attrs in thumbs:
            assert (attrs["width"], attrs["height"]) == (str(THUMBNAIL_WIDTH), str(THUMBNAIL_HEIGHT))
            target, _ = resolve(page, attrs["src"] or "")
            with Image.open(target) as drawn:
                assert drawn.size == (THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT)


def test_each_audio_file_is_decoded_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tfaural.report import thumbnails

    calls: list[str] = []
    load = audio.load

    def counting_load(path: str, **kwargs: object) -> object:
        calls.append(os.path.relpath(path, out))
        return load(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audio, "load", counting_load)
    out = make_auralise_output(tmp_path / "auralised", failed=())
    sources = len(TRACKS) * (1 + N_LAYERS * N_FILTERS)
    write_report(out, progress=False)
    assert len(calls) == len(set(calls)) == sources
    in_memory = {p.relative_to(out / "report"): p.read_bytes() for p in (out / "report").rglob("*.png")}
    assert len(in_memory) == sources
    calls.clear()
    write_report(out, progress=False)
    assert calls == []  # all cached
    # with no memory for images between measuring and drawing they wait on disk: still one decode each
    monkeypatch.setattr(thumbnails, "_IMAGE_MEMORY_BYTES", 0)
    write_report(out, tmp_path / "spilled", progress=False)
    assert len(calls) == len(set(calls)) == sources
    spilled = {p.relative_to(tmp_path / "spilled"): p.read_bytes() for p in (tmp_path / "spilled").rglob("*.png")}
    assert spilled == in_memory
    # the job drew them: nothing is decoded
    calls.clear()
    drawn = make_auralise_output(tmp_path / "drawn", failed=(), spectrograms=True)
    write_report(drawn, progress=False)
    assert calls == []


def test_files_are_readable_by_a_web_server_and_low_rates_are_flagged(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised", tracks=TRACKS[:1], failed=())
    track_json = out / TRACKS[0][1] / "track.json"
    track_json.write_text(track_json.read_text().replace(f'"sample_rate": {RATE}', '"sample_rate": 2000'))
    index = pathlib.Path(write_report(out, progress=False))
    umask = os.umask(0)
    os.umask(umask)
    for path in (index, index.parent / "tracks" / f"{TRACKS[0][1]}.html", index.parent / "thumbs" / CACHE_FILE,
                 index.parent / "thumbs" / TRACKS[0][1] / "original.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert "cannot play audio sampled below 3000 Hz" in index.read_text(encoding="utf-8")
    assert not (index.parent / "index.html").read_text().count("cannot play") > 1


def test_thumbnail_settings_follow_the_model() -> None:
    spectral = ExportMetadata.from_dict({"sample_rate": 16000, "stft": {"n_fft": 512, "hop_length": 256}})
    assert thumbnail_settings(spectral) == ThumbnailSettings(512, 256)
    waveform = thumbnail_settings(ExportMetadata.from_dict({"sample_rate": 22050, "stft": None}))
    assert (waveform.n_fft, waveform.hop_length) == (1024, 256)
    assert thumbnail_settings(None) == waveform  # no model card: 22,050 Hz assumed
    with pytest.raises(ParameterError, match="dynamic_range_db"):
        ThumbnailSettings(dynamic_range_db=0)


# ----------------------------------------------------------------------------------------------- pagination


def test_track_list_and_feature_pages_paginate(tmp_path: pathlib.Path) -> None:
    tracks = tuple((f"t{i:02d}", f"t{i:02d}") for i in range(5))
    out = make_auralise_output(tmp_path / "auralised", tracks=tracks, failed=())
    report = pathlib.Path(write_report(out, tmp_path / "site", tracks_per_page=2, progress=False)).parent
    assert sorted(p.name for p in report.glob("*.html")) == ["index.html", "tracks-2.html", "tracks-3.html"]
    listed = [
        [a["href"] for t, a in parse(report / name) if t == "a" and (a.get("href") or "").startswith("tracks/")]
        for name in ("index.html", "tracks-2.html", "tracks-3.html")
    ]
    assert listed == [["tracks/t00.html", "tracks/t01.html"], ["tracks/t02.html", "tracks/t03.html"],
                      ["tracks/t04.html"]]
    index = (report / "index.html").read_text(encoding="utf-8")
    assert 'href="tracks-2.html" rel="next"' in index and '<span aria-current="page">1</span>' in index
    feature_pages = sorted(p.name for p in (report / "features").glob("layer1-feature0*.html"))
    assert feature_pages == ["layer1-feature0-page2.html", "layer1-feature0-page3.html", "layer1-feature0.html"]
    second = (report / "features" / "layer1-feature0-page2.html").read_text(encoding="utf-8")
    assert "t02" in second and "t03" in second and "t01" not in second
    # links from the report (outside the auralisation folder) still reach the audio
    sources = [a["src"] for t, a in parse(report / "tracks" / "t00.html") if t == "source"]
    assert sources[0] == "../../auralised/t00/original.wav"
    # a rerun with bigger pages removes the pages it no longer writes
    write_report(out, tmp_path / "site", tracks_per_page=50, progress=False)
    assert sorted(p.name for p in report.glob("*.html")) == ["index.html"]
    assert not list((report / "features").glob("*-page2.html"))


def test_small_formatters() -> None:
    from tfaural.formats import ManifestRow
    from tfaural.report.pages import _describe_features, _page_numbers, _ranges, _url

    assert _page_numbers(1, 3) == [1, 2, 3]
    assert _page_numbers(10, 20) == [1, None, 7, 8, 9, 10, 11, 12, 13, None, 20]
    assert _ranges([7, 0, 1, 2, 3, 9, 10]) == "0–3, 7, 9–10"
    assert _describe_features({"1": [0, 1], "2": [0, 1, 5]}) == "layer 1: 0–1; layer 2: 0–1, 5"
    assert _describe_features(None) == "all"
    failed = ManifestRow("a.wav", "a", "a", "failed", error="too short", error_type="EmptyAudioError", stage="decode")
    assert failed.describe_failure() == "EmptyAudioError (decode): too short"
    assert ManifestRow("a.wav", "a", "a", "failed").describe_failure() == "status 'failed'"
    assert _url("/a/b c/ü#1.wav", "/a/report/tracks") == "../../b%20c/%C3%BC%231.wav"
    assert _url("/a/x:y.html", "/a") == "x%3Ay.html"  # never read as a URL scheme


# ----------------------------------------------------------------------------------------------- errors and CLI


def test_load_reports_failures_and_rejects_non_outputs(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised")
    # listed as ok but its folder is gone
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"path": "x.wav", "track_id": "ghost", "name": "ghost", "status": "ok",
                                 "outputs": ["ghost/track.json"]}) + "\n")
    loaded = load_auralise_output(out)
    assert [t.track_id for t in loaded.tracks] == ["blues.00001", 'jazz "two" <b>ü</b>', "rock.00003"]
    assert [(f.track_id, f.error.split(":")[0]) for f in loaded.failed] == [
        ("broken.00004", "AudioDecodeError (decode)"), ("ghost", "listed as done but its track.json is missing")
    ]
    assert loaded.layers() == [1, 2, 3] and loaded.features(2) == [0, 1, 2, 3]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not an auralisation output"):
        write_report(empty, progress=False)
    with pytest.raises(ParameterError, match="does not exist"):
        write_report(tmp_path / "missing", progress=False)
    with pytest.raises(ParameterError, match="inside the output of track"):
        write_report(out, out / "rock.00003" / "report", progress=False)
    with pytest.raises(ParameterError, match="tracks_per_page"):
        write_report(out, tracks_per_page=0, progress=False)
    (out / "blues.00001" / "track.json").write_text('{"layers": {"one": []}}', encoding="utf-8")
    with pytest.raises(DataError, match=r"track\.json: layer 'one' is malformed"):
        load_auralise_output(out)


def test_files_outside_the_output_folder_are_reported_not_linked(tmp_path: pathlib.Path) -> None:
    out = make_auralise_output(tmp_path / "auralised", tracks=TRACKS[:2], failed=())
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(out / TRACKS[0][1] / "original.wav", outside / "secret.wav")
    write_png(outside / "secret.png", np.zeros(4096, np.float32))
    path = out / TRACKS[0][1] / "track.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info["original"] = str(outside / "secret.wav")  # an absolute path
    info["layers"]["1"][0]["file"] = "../../private/secret.wav"  # out of the output folder
    info["layers"]["1"][1]["spectrogram"] = "../../private/secret.png"
    path.write_text(json.dumps(info), encoding="utf-8")
    (out / TRACKS[1][1] / "layer2").rename(out / TRACKS[1][1] / "elsewhere")
    (out / TRACKS[1][1] / "layer2").symlink_to(outside)  # a link inside the folder that leads out of it
    shutil.copy(out / TRACKS[0][1] / "original.wav", outside / "feature0.wav")

    loaded = load_auralise_output(out)
    problems = [f.error for f in loaded.failed]
    assert len(problems) == 3 + N_FILTERS  # three in the first track, every feature of layer 2 in the second
    assert all("outside the auralisation output folder: not linked" in p for p in problems)
    assert any(str(outside / "secret.wav") in p for p in problems) and any("../../private/secret.png" in p
                                                                         for p in problems)
    assert any("layer2/feature0.wav" in p for p in problems)
    write_report(out, progress=False)
    report = out / "report"
    for page in report.rglob("*.html"):
        for tag, attrs in parse(page):
            url = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
            if url and not url.startswith("data:"):
                target, _ = resolve(page, url)
                assert outside not in target.parents, f"{page.name} links {url}"
                assert out in pathlib.Path(os.path.realpath(target)).parents, f"{page.name} links {url}"
        assert "secret" not in page.read_text(encoding="utf-8") or page.name == "index.html"
    index = (report / "index.html").read_text(encoding="utf-8")
    assert f"Failed tracks ({3 + N_FILTERS})" in index and "outside the auralisation output folder: not linked" in index


def test_cli(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = make_auralise_output(tmp_path / "auralised", tracks=TRACKS[:1], failed=())
    assert main([str(out), "--output", str(tmp_path / "site"), "--title", "CLI report", "-q"]) == 0
    index = tmp_path / "site" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    assert "<title>CLI report</title>" in index.read_text(encoding="utf-8")
    assert main([str(tmp_path / "nowhere"), "-q"]) == 2
    assert "error: auralisation output" in capsys.readouterr().err
    help_text = subprocess.run([sys.executable, "-m", "tfaural.report", "--help"], capture_output=True, text=True,
                               check=True).stdout
    for flag in ("AURALISE_OUTPUT_DIR", "--output", "--correlation", "--title", "--tracks-per-page"):
        assert flag in help_text


def test_a_local_output_takes_no_uri_output_and_remote_names_are_plain_paths(tmp_path: pathlib.Path) -> None:
    """A local output's report is a local folder (its pages link to the audio by relative paths); of a remote
    output, only names that stay below it are copied (``tests/beam_jobs/test_gcs.py`` writes one on a bucket)."""
    out = make_auralise_output(tmp_path / "auralised", tracks=TRACKS[:1], failed=())
    with pytest.raises(ParameterError, match="the report of a local auralisation output goes to a local folder"):
        write_report(out, "gs://bucket/report")
    for elsewhere in ("gs://b/elsewhere", "gs://b/out/../x", str(tmp_path / "here")):  # refused before any listing
        with pytest.raises(ParameterError, match="the report of a remote auralisation output is written inside it"):
            write_report("gs://b/out", elsewhere)
    assert remote.inside("gs://b/out/report", "gs://b/out/") == "report"
    assert remote.inside("gs://b/out", "gs://b/out") == ""
    assert remote.inside("gs://b/output/report", "gs://b/out") is None
    assert remote.plain_path("a/layer1/feature0.wav") and remote.plain_path("..dots..wav")
    assert not any(map(remote.plain_path, ("a/../../b.wav", "../b", "a//b", "./a", "a/.")))
