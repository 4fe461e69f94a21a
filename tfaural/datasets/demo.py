"""A real demo catalogue rendered with FluidSynth and the General MIDI soundfont.

No public music dataset can be downloaded here, so tfaural renders one: short
clips in three styles that mirror the auralisation paper's genres,

* ``ballad`` — slow (60–78 BPM), sustained chords and a legato melody, no drums;
* ``dance`` — fast (120–132 BPM), four-on-the-floor drums, off-beat staccato chords, a bass line;
* ``hiphop`` — mid-tempo (84–96 BPM), boom-bap drums, sparse stabs and a low bass,

each played by GM instruments drawn per clip (piano, acoustic guitar, electric
guitar, strings, saxophone, electric piano, organ, flute, …) in a random key.
Every clip is labelled by style (single label, ``manifest.csv``) and by the
instruments it contains (multi-label tags, ``manifest_instruments.csv``).
The same seed gives the same catalogue, sample for sample.

Run ``python -m tfaural.datasets.demo --output DIR``; the manifests are ready for
``python -m beam_jobs.make_tfrecords --manifest DIR/manifest.csv ...``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence

import numpy as np

from tfaural import audio, signals
from tfaural.cli import add_verbose_flag
from tfaural.errors import ParameterError, TfauralError
from tfaural.signals import Note, Part

__all__ = ["STYLES", "HARMONIC_INSTRUMENTS", "DemoTrack", "make_track", "render_catalogue", "main"]

logger = logging.getLogger(__name__)

STYLES: tuple[str, ...] = ("ballad", "dance", "hiphop")
HARMONIC_INSTRUMENTS: tuple[str, ...] = (
    "piano",
    "acoustic_guitar",
    "electric_guitar",
    "strings",
    "saxophone",
    "electric_piano",
    "organ",
    "flute",
)
_STYLE_TEMPI = {"ballad": (60, 78), "dance": (120, 132), "hiphop": (84, 96)}
_STYLE_DRUMS = {"ballad": None, "dance": "four-on-the-floor", "hiphop": "boom-bap"}
# Instruments typical of each style are drawn more often, but every style can use all of them.
_STYLE_WEIGHTS = {
    "ballad": (4, 3, 1, 4, 1, 2, 1, 2),
    "dance": (2, 1, 2, 1, 1, 3, 3, 1),
    "hiphop": (3, 1, 1, 2, 3, 4, 1, 1),
}
_PROGRESSIONS = ((0, 7, 9, 5), (0, 5, 7, 5), (9, 5, 0, 7), (0, 9, 5, 7), (2, 7, 0, 0))  # semitone roots
_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


@dataclasses.dataclass(frozen=True)
class DemoTrack:
    """One rendered clip's description.

    Attributes:
        track_id: ``<style>_<index>``.
        style: One of :data:`STYLES`.
        instruments: Instrument tags present (harmonic instruments, ``bass``, ``drums``).
        key: Root note name, e.g. ``"Eb3"``.
        tempo: Beats per minute.
        split: ``train``, ``validation`` or ``test``.
    """

    track_id: str
    style: str
    instruments: tuple[str, ...]
    key: str
    tempo: float
    split: str


def _chord_notes(root: int, minor: bool, start: float, end: float, velocity: int) -> list[Note]:
    third = 3 if minor else 4
    return [Note(root + i, start, end, velocity) for i in (0, third, 7)]


def _harmony(style: str, key: int, tempo: float, seconds: float, rng: np.random.Generator) -> list[Note]:
    beat = 60.0 / tempo
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]
    notes: list[Note] = []
    bar = 4 * beat
    n_bars = int(np.ceil(seconds / bar))
    for b in range(n_bars):
        degree = progression[b % len(progression)]
        root = key + degree
        minor = degree in (2, 9)
        t0 = b * bar
        if style == "ballad":
            notes += _chord_notes(root, minor, t0, t0 + bar * 0.98, 70)
        elif style == "dance":
            for k in range(4):  # off-beat stabs
                start = t0 + (k + 0.5) * beat
                notes += _chord_notes(root + 12, minor, start, start + 0.3 * beat, 95)
        else:
            for start in (t0, t0 + 2.5 * beat):
                notes += _chord_notes(root, minor, start, start + 0.6 * beat, 85)
    return [n for n in notes if n.start < seconds]


def _melody(style: str, key: int, tempo: float, seconds: float, rng: np.random.Generator) -> list[Note]:
    beat = 60.0 / tempo
    step = {"ballad": beat, "dance": beat / 2, "hiphop": beat / 2}[style]
    legato = {"ballad": 0.95, "dance": 0.5, "hiphop": 0.4}[style]
    degree = int(rng.integers(7))
    notes: list[Note] = []
    t = 0.0
    while t < seconds:
        if style == "hiphop" and rng.random() < 0.4:  # sparse
            t += step
            continue
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
        pitch = key + 12 + 12 * (degree // 7) + _MAJOR_SCALE[degree % 7]
        notes.append(Note(pitch, t, min(seconds, t + legato * step), int(rng.integers(80, 110))))
        t += step
    return notes


def _bass(style: str, key: int, tempo: float, seconds: float, rng: np.random.Generator) -> list[Note]:
    beat = 60.0 / tempo
    root = key - 12 if key >= 40 else key
    notes = []
    per_beat = 2 if style == "dance" else 1
    t = 0.0
    while t < seconds:
        offset = 7 if rng.random() < 0.25 else 0
        notes.append(Note(root + offset, t, min(seconds, t + 0.8 * beat / per_beat), 100))
        t += beat / per_beat
    return notes


def make_track(
    style: str,
    index: int,
    *,
    seconds: float,
    sample_rate: int,
    seed: int,
    split: str,
    soundfont: str | None = None,
) -> tuple[DemoTrack, np.ndarray]:
    """Renders one demo clip.

    Args:
        style: One of :data:`STYLES`.
        index: Index within the style (part of the id and of the random stream).
        seconds: Clip length in seconds.
        sample_rate: Output rate in Hz.
        seed: Catalogue seed.
        split: Split to record.
        soundfont: GM soundfont (``None``: :func:`tfaural.signals.find_soundfont`).

    Returns:
        ``(track, audio)`` with audio float32 ``[samples]``.
    """
    if style not in STYLES:
        raise ParameterError(f"unknown style {style!r}; expected one of {STYLES}")
    rng = np.random.default_rng([seed, STYLES.index(style), index])
    low, high = _STYLE_TEMPI[style]
    tempo = float(rng.integers(low, high + 1))
    key = int(rng.integers(45, 57))  # A2 .. G#3
    weights = np.array(_STYLE_WEIGHTS[style], float)
    n_instruments = int(rng.integers(1, 3))
    chosen = rng.choice(len(HARMONIC_INSTRUMENTS), size=n_instruments, replace=False, p=weights / weights.sum())
    names = [HARMONIC_INSTRUMENTS[i] for i in chosen]
    parts = [Part(signals.GM_PROGRAMS[names[0]], tuple(_harmony(style, key, tempo, seconds, rng)), gain=0.8)]
    if len(names) > 1:
        parts.append(Part(signals.GM_PROGRAMS[names[1]], tuple(_melody(style, key, tempo, seconds, rng))))
    tags = list(dict.fromkeys(names))
    if style != "ballad" or rng.random() < 0.3:
        parts.append(Part(signals.GM_PROGRAMS["bass"], tuple(_bass(style, key, tempo, seconds, rng)), gain=0.9))
        tags.append("bass")
    drums = _STYLE_DRUMS[style]
    if drums is not None:
        parts.append(signals.drum_pattern(drums, tempo=tempo, duration=seconds))
        tags.append("drums")
    y = signals.render(parts, sample_rate=sample_rate, duration=seconds, soundfont=soundfont)
    track = DemoTrack(
        track_id=f"{style}_{index:03d}",
        style=style,
        instruments=tuple(tags),
        key=signals.note_name(key),
        tempo=tempo,
        split=split,
    )
    return track, y


def _splits(n: int, rng: np.random.Generator, fractions: tuple[float, float]) -> list[str]:
    n_valid = max(1, int(round(fractions[0] * n)))
    n_test = max(1, int(round(fractions[1] * n)))
    labels = ["validation"] * n_valid + ["test"] * n_test + ["train"] * max(0, n - n_valid - n_test)
    rng.shuffle(labels)
    return labels[:n]


def render_catalogue(
    output: str | os.PathLike[str],
    *,
    tracks_per_style: int = 40,
    seconds: float = 8.0,
    sample_rate: int = 22050,
    seed: int = 0,
    soundfont: str | None = None,
    formats: Sequence[str] = ("wav",),
    split_fractions: tuple[float, float] = (0.15, 0.15),
    progress: bool = True,
) -> list[DemoTrack]:
    """Renders the demo catalogue and writes its manifests.

    Writes ``<output>/audio/<style>/<track_id>.<fmt>``, ``manifest.csv`` (labels =
    style), ``manifest_instruments.csv`` (labels = instrument tags) and
    ``tracks.jsonl`` (every attribute).

    Args:
        output: Output folder (created).
        tracks_per_style: Clips per style.
        seconds: Clip length in seconds.
        sample_rate: Rate of the written files in Hz.
        seed: Everything random derives from it.
        soundfont: GM soundfont path (``None``: the system one).
        formats: Audio formats to cycle through (``wav``, ``flac``, ``ogg``, ``mp3``).
        split_fractions: Fractions of each style for validation and test.
        progress: Show a progress bar.

    Returns:
        The rendered tracks.
    """
    if tracks_per_style < 3:
        raise ParameterError(f"tracks_per_style={tracks_per_style} is too small: need >= 3 (train, valid, test)")
    sf2 = signals.find_soundfont(soundfont)
    root = os.fspath(output)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = []
    for style in STYLES:
        for index, split in enumerate(_splits(tracks_per_style, rng, split_fractions)):
            jobs.append((style, index, split))
    from tqdm.auto import tqdm

    tracks: list[DemoTrack] = []
    rows = []
    for n, (style, index, split) in enumerate(tqdm(jobs, desc="rendering demo catalogue", disable=not progress)):
        track, y = make_track(
            style, index, seconds=seconds, sample_rate=sample_rate, seed=seed, split=split, soundfont=sf2
        )
        ext = formats[n % len(formats)]
        rel = os.path.join("audio", style, f"{track.track_id}.{ext}")
        audio.write(os.path.join(root, rel), y, sample_rate=sample_rate)
        tracks.append(track)
        rows.append((rel, track))
    _write_manifest(os.path.join(root, "manifest.csv"), [(rel, t.track_id, [t.style], t.split) for rel, t in rows])
    _write_manifest(
        os.path.join(root, "manifest_instruments.csv"),
        [(rel, t.track_id, list(t.instruments), t.split) for rel, t in rows],
    )
    with open(os.path.join(root, "tracks.jsonl"), "w", encoding="utf-8") as handle:
        for rel, t in rows:
            handle.write(json.dumps({"path": rel, **dataclasses.asdict(t)}) + "\n")
    return tracks


def _write_manifest(path: str, rows: list[tuple[str, str, list[str], str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "track_id", "labels", "split"])
        for rel, track_id, labels, split in rows:
            writer.writerow([rel.replace(os.sep, "/"), track_id, ";".join(labels), split])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m tfaural.datasets.demo``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tfaural.datasets.demo",
        description="Render the tfaural demo catalogue with FluidSynth and the General MIDI soundfont: "
        "clips in three styles (ballad, dance, hiphop) played by GM instruments, with manifests "
        "labelled by style (manifest.csv) and by instrument (manifest_instruments.csv).",
    )
    parser.add_argument("--output", required=True, help="folder to write audio/ and the manifests into")
    parser.add_argument("--tracks-per-style", type=int, default=40, help="clips per style (default: 40)")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length in seconds (default: 8)")
    parser.add_argument(
        "--sample-rate", type=int, default=22050, help="sample rate of the files in Hz (default: 22050)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same catalogue")
    parser.add_argument("--soundfont", default=None, help="GM .sf2 file (default: $TFAURAL_SOUNDFONT or Debian's)")
    parser.add_argument(
        "--formats",
        default="wav",
        help="comma-separated formats cycled over the clips: wav,flac,ogg,mp3 (default: wav)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tracks = render_catalogue(
            args.output,
            tracks_per_style=args.tracks_per_style,
            seconds=args.seconds,
            sample_rate=args.sample_rate,
            seed=args.seed,
            soundfont=args.soundfont,
            formats=tuple(f.strip().lower() for f in args.formats.split(",") if f.strip()),
        )
    except TfauralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(tracks)} clips and {os.path.join(args.output, 'manifest.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
