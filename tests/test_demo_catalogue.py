"""The FluidSynth demo catalogue: manifests, audio and reproducibility."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from tfaural import audio
from tfaural.datasets import demo


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_render_catalogue(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo"
    code = demo.main(["--output", str(out), "--tracks-per-style", "4", "--seconds", "2", "--formats", "wav,flac",
                      "--sample-rate", "16000"])
    assert code == 0
    styles = _rows(out / "manifest.csv")
    tags = _rows(out / "manifest_instruments.csv")
    assert len(styles) == len(tags) == 12
    assert {r["labels"] for r in styles} == set(demo.STYLES)
    assert {r["split"] for r in styles} == {"train", "validation", "test"}
    for style_row, tag_row in zip(styles, tags):
        assert style_row["path"] == tag_row["path"] and style_row["track_id"] == tag_row["track_id"]
        instruments = tag_row["labels"].split(";")
        assert instruments and all(i in (*demo.HARMONIC_INSTRUMENTS, "bass", "drums") for i in instruments)
        assert ("drums" in instruments) == (style_row["labels"] != "ballad")
        y, sr = audio.load(out / style_row["path"], sample_rate=None)
        assert sr == 16000 and len(y) == 32000 and np.sqrt(np.mean(y**2)) > 0.01
    meta = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert len(meta) == 12 and all(60 <= m["tempo"] <= 132 for m in meta)


def test_same_seed_same_catalogue(tmp_path: pathlib.Path) -> None:
    a = demo.render_catalogue(tmp_path / "a", tracks_per_style=3, seconds=1.0, seed=7, progress=False)
    b = demo.render_catalogue(tmp_path / "b", tracks_per_style=3, seconds=1.0, seed=7, progress=False)
    c = demo.render_catalogue(tmp_path / "c", tracks_per_style=3, seconds=1.0, seed=8, progress=False)
    assert a == b and a != c
    for track in a:
        rel = f"audio/{track.style}/{track.track_id}.wav"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
