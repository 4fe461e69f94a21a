"""Silent input is bad input: the jobs fail it by name, as ``tfaural.listen`` does, and carry on.

A track (or, for ``auralise``, the excerpt) whose peak is at most 2^-20 (−120 dBFS,
``tfaural.audio.SILENCE_PEAK``) has nothing to tag, pool or hear: the model's answer would be its biases'
(scores that look like any other), and ``auralise`` would write one silent file per feature. ``tag`` and
``extract_features`` know only at a track's end that it was silent, after its chunks went to the model;
those chunks are discarded with the track, as for a file that is corrupt halfway. A track with sound only
in its last second is not silent. The jobs run on the in-process DirectRunner with the tiny
3^5-SampleCNN export (2000 Hz, segments of 243 samples).
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from jobs_testing import SAMPLECNN_SR, decode, read_manifest_rows, signature
from signal_makers import chirp

from beam_jobs import auralise, chunking, extract_features, tag
from beam_jobs.chunking import ChunkPlan
from beam_jobs.tracks import TrackInput
from tfaural.errors import InvalidAudioError

RATE = 8000
MUSIC = "music.flac"  # 3 s of a chirp
SILENCE = "silence.wav"  # 3 s of zeros: 24 segments, six chunks of 0.5 s
HISS = "hiss.wav"  # float noise at -140 dBFS
LATE = "late.wav"  # 2.5 s of zeros, then 0.5 s of a chirp
BLIP = "blip.wav"  # 0.05 s of zeros: too short, and silent with --pad-short

DIGITAL = "the audio is digital silence (every sample is 0)"
HISSED = r"the audio is silent \(peak -14\d\.\d dBFS; at most -120 dBFS is silence\)"  # -140 dBFS, resampled


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("silent-catalogue")
    sf.write(root / MUSIC, chirp(200, 900, 3.0, sample_rate=RATE), RATE, subtype="PCM_16")
    sf.write(root / SILENCE, np.zeros(3 * RATE, np.float32), RATE, subtype="PCM_16")
    sf.write(root / HISS, 1e-7 * np.sign(np.sin(np.arange(3 * RATE, dtype=np.float32))), RATE, subtype="FLOAT")
    late = np.concatenate([np.zeros(int(2.5 * RATE), np.float32), chirp(300, 600, 0.5, sample_rate=RATE)])
    sf.write(root / LATE, late, RATE, subtype="PCM_16")
    sf.write(root / BLIP, np.zeros(400, np.float32), RATE, subtype="PCM_16")
    return root


def _rows(output: pathlib.Path) -> dict[str, dict]:
    return {pathlib.Path(r["path"]).name: r for r in read_manifest_rows(output)}


def test_decoding_knows_silence_at_the_end_after_the_chunks(catalogue: pathlib.Path) -> None:
    plan = ChunkPlan(sample_rate=SAMPLECNN_SR, segment_length=243, segment_hop=243, max_segments=4)
    chunks = []
    with pytest.raises(InvalidAudioError, match=r"silence\.wav: the audio is digital silence"):
        for chunk in chunking.decode_chunks(TrackInput(str(catalogue / SILENCE), "s", "s"), plan):
            chunks.append(chunk)
    assert len(chunks) == 6 and not any(np.any(c.waveform) for c in chunks)  # 24 segments, 4 per chunk
    late = list(chunking.decode_chunks(TrackInput(str(catalogue / LATE), "l", "l"), plan))
    assert sum(c.num_segments for c in late) == 24 and np.any(late[-1].waveform)
    # the stage's output: the chunks, then a failure and no TrackEnd (collect_parts drops the chunks)
    *parts, last = chunking.stream_examples(TrackInput(str(catalogue / HISS), "h", "h"), plan)
    assert len(parts) == 6 and last.status == "failed" and last.error_type == "InvalidAudioError"
    assert re.fullmatch(HISSED, last.error)


def test_tag_and_extract_features_fail_silent_tracks_and_keep_the_rest(
    catalogue: pathlib.Path, samplecnn_export: str, tmp_path: pathlib.Path
) -> None:
    argv = [f"--input={catalogue}/*", f"--model={samplecnn_export}", "--runner=DirectRunner", "--chunk-seconds=0.5",
            "--pad-short"]
    tag.run([*argv, f"--output={tmp_path / 'tags'}"])
    rows = _rows(tmp_path / "tags")
    assert {name: row["status"] for name, row in rows.items()} == {
        MUSIC: "ok", LATE: "ok", SILENCE: "failed", HISS: "failed", BLIP: "failed"}
    assert {name: (rows[name]["error_type"], rows[name]["stage"], rows[name]["error"]) for name in (SILENCE, BLIP)} == {
        name: ("InvalidAudioError", "decode", DIGITAL) for name in (SILENCE, BLIP)}  # not padded: nothing to pad
    assert re.fullmatch(HISSED, rows[HISS]["error"])
    records = {pathlib.Path(r["path"]).name: r
               for r in map(json.loads, (tmp_path / "tags" / "tags.jsonl").read_text().splitlines())}
    assert set(records) == {MUSIC, LATE}
    serving = signature(samplecnn_export, "serving_default")
    y = decode(catalogue / LATE, SAMPLECNN_SR)
    expected = serving(waveform=tf.constant(y[np.newaxis]))["scores"].numpy()[0]
    np.testing.assert_allclose(list(records[LATE]["scores"].values()), expected, rtol=1e-5, atol=1e-6)
    assert len((tmp_path / "tags" / "tags.csv").read_text().splitlines()) == 3

    extract_features.run([*argv, f"--output={tmp_path / 'features'}", "--format=npz"])
    rows = _rows(tmp_path / "features")
    assert [rows[name]["status"] for name in (MUSIC, LATE, SILENCE, HISS, BLIP)] == ["ok", "ok"] + ["failed"] * 3
    assert rows[SILENCE]["error"] == DIGITAL
    assert sorted(p.name for p in (tmp_path / "features" / "tracks").iterdir()) == sorted(
        f"{rows[name]['name']}.npz" for name in (MUSIC, LATE))


def test_auralise_fails_a_silent_excerpt_and_says_where_to_look(
    catalogue: pathlib.Path, samplecnn_export: str, tmp_path: pathlib.Path
) -> None:
    argv = [f"--input={catalogue}/*", f"--model={samplecnn_export}", "--runner=DirectRunner", "--layers=1",
            "--features=0-1", "--tags=0", "--clip-seconds=1"]
    auralise.run([*argv, f"--output={tmp_path / 'start'}"])
    rows = _rows(tmp_path / "start")
    assert {name: row["status"] for name, row in rows.items()} == {
        MUSIC: "ok", LATE: "failed", SILENCE: "failed", HISS: "failed", BLIP: "failed"}
    assert rows[LATE]["error"] == ("the excerpt 0 s – 1 s is digital silence (every sample is 0); nothing to hear "
                                   "(--offset-seconds picks another part)")
    assert rows[HISS]["error"].startswith("the excerpt 0 s – 1 s is silent (peak -14")
    assert not (tmp_path / "start" / rows[LATE]["name"]).exists()

    auralise.run([*argv, f"--output={tmp_path / 'later'}", "--offset-seconds=2"])
    rows = _rows(tmp_path / "later")
    assert rows[LATE]["status"] == "ok" and rows[SILENCE]["status"] == "failed"
    info = json.loads((tmp_path / "later" / rows[LATE]["name"] / "track.json").read_text())
    assert info["offset_seconds"] == 2.0 and not all(f["silent"] for f in info["layers"]["1"])
