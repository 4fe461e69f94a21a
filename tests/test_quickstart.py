"""The README's main command end to end, on a tiny catalogue: render, TFRecords, train,
evaluate, export, auralise (with the report) and tag."""

from __future__ import annotations

import json
import pathlib

import pytest
import soundfile as sf

import quickstart
from tfaural.cli import is_startup_noise

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end(tmp_path: pathlib.Path, capfd: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFAURAL_QUIET", raising=False)  # run_quickstart sets it for its processes; undone after
    monkeypatch.delenv("TFAURAL_VERBOSE", raising=False)
    # This process's own device discovery (its "failed call to cuInit" line without a GPU) happens at its first
    # TensorFlow op, which an earlier test of the same worker may or may not have run: done and discarded here,
    # so that what is checked below is what the stages' processes print.
    import tensorflow as tf

    tf.config.list_physical_devices()
    capfd.readouterr()
    summary = quickstart.run_quickstart(str(tmp_path / "demo"), tracks_per_style=3, seconds=4.5, epochs=1,
                                        auralise_tracks=1)
    # What the stages' processes printed (model processes, python -m children and their logs) holds no
    # TensorFlow start-up lines (this test's own process imported TensorFlow before, unfiltered).
    printed = capfd.readouterr().err.splitlines() + [
        line for log in (tmp_path / "demo" / "logs").glob("*.log") for line in log.read_text().splitlines()]
    assert printed and not [line for line in printed if is_startup_noise(line)]
    assert pathlib.Path(summary["export"], "saved_model.pb").exists()
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_tracks"] == 3
    report = pathlib.Path(summary["report"])
    pages = "".join(p.read_text() for p in report.parent.rglob("*.html"))
    assert report.exists() and "Feature 1-0" in pages and "failed" not in json.loads(
        (pathlib.Path(summary["auralised"]) / "manifest.jsonl").read_text().splitlines()[0])["status"]
    wavs = sorted(pathlib.Path(summary["auralised"]).rglob("layer5/feature*.wav"))
    assert len(wavs) == 64
    info = sf.info(wavs[0])
    assert info.samplerate == 11025 and info.frames == 4 * 11025
    figures = json.loads((pathlib.Path(summary["figures"]) / "figures.json").read_text())
    assert figures["figures"] == ["first-layer-weights.png"] + [f"deconvolution-layer{n}.png" for n in range(1, 6)]
    assert all(len(chosen) == 4 for chosen in figures["features"].values())
    tags = pathlib.Path(summary["tags"]).read_text().splitlines()
    assert len(tags) == 1 + 9  # header + every catalogue track
    # musicnn's pretrained MTT_vgg tagged the same catalogue; its top tags sit beside the demo model's
    pretrained = pathlib.Path(summary["pretrained_tags"]).read_text().splitlines()
    assert len(pretrained) == 1 + 9 and "piano" in pretrained[0].split(",")
    comparison = pathlib.Path(summary["comparison"]).read_text().splitlines()
    assert comparison[0] == "track_id,style,demo_model,mtt_vgg_top5" and len(comparison) == 1 + 9
    assert all(len(row.split(",")[3].split(";")) == 5 for row in comparison[1:])
    # It only tags with MTT_vgg: its export holds the tagging signatures alone, verified.
    mtt_vgg = sorted((tmp_path / "demo" / "exports" / "mtt_vgg").glob("[0-9]*"))
    assert len(mtt_vgg) == 1 and set(json.loads((mtt_vgg[0] / "assets" / "metadata.json").read_text())[
        "signatures"]) == {"serving_default", "serving_wav", "features"}
    assert json.loads((mtt_vgg[0] / "assets.extra" / "tfaural_verification.json").read_text())["ok"]
    heard = summary["mtt_vgg_top_tags_per_style"]
    assert sorted(heard) == ["ballad", "dance", "hiphop"] and all(len(top) == 5 for top in heard.values())
    saved = json.loads((tmp_path / "demo" / "quickstart.json").read_text())
    assert saved["export"] == summary["export"]
    # A second run finds everything done and only re-runs the idempotent Beam stages.
    again = quickstart.run_quickstart(str(tmp_path / "demo"), tracks_per_style=3, seconds=4.5, epochs=1,
                                      auralise_tracks=1)
    assert again["export"] == summary["export"] and again["timings_seconds"]["train the Choi CNN"] == 0.0
    assert again["timings_seconds"]["export MTT_vgg's tagging signatures (and verify them in a fresh process)"] == 0.0
