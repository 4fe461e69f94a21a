"""Symbolic music rendered to audio: FluidSynth with a General MIDI soundfont, and pure sines.

This module is the one renderer of tfaural. The demo catalogue
(:mod:`tfaural.datasets.demo`) and the model signals of the correlation analysis
(Choi et al. 2015, §4.2: one instrument playing one chord type in several
positions at one key) are both made with it, so the timbres a demo model was
trained on are the timbres it is probed with.

Rendering is deterministic: reverb and chorus are off, every render starts from
silence on fresh channels, and note times are placed with sample accuracy.

Example:
    >>> part = Part(program=0, notes=chord_positions("major", root=60, positions=6, duration=4.0))
    >>> y = render([part], sample_rate=11025, duration=4.0)   # float32 [44100]
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tfaural import files
from tfaural.errors import ParameterError, SoundfontError

__all__ = [
    "Note",
    "Part",
    "SINE",
    "DRUM_CHANNEL",
    "GM_PROGRAMS",
    "DRUM_NOTES",
    "CHORD_TYPES",
    "DEFAULT_KEYS",
    "DEFAULT_TIMBRES",
    "find_soundfont",
    "note_number",
    "note_name",
    "render",
    "chord_positions",
    "drum_pattern",
    "ModelSignal",
    "SignalGrid",
    "model_signals",
]

logger = logging.getLogger(__name__)

SINE = -1
"""Pseudo GM program meaning "pure sine by additive synthesis" (no soundfont needed)."""

DRUM_CHANNEL = 9
"""MIDI channel 10 (0-based 9) plays the GM percussion kit."""

#: General MIDI programs (0-based) of the timbres tfaural uses by name.
GM_PROGRAMS: dict[str, int] = {
    "sine": SINE,
    "piano": 0,
    "electric_piano": 4,
    "organ": 16,
    "acoustic_guitar": 24,
    "electric_guitar": 27,
    "bass": 33,
    "strings": 48,
    "trumpet": 56,
    "saxophone": 65,
    "flute": 73,
    "synth_lead": 80,
    "synth_pad": 88,
}

#: GM percussion key numbers.
DRUM_NOTES: dict[str, int] = {
    "kick": 36,
    "snare": 38,
    "clap": 39,
    "closed_hat": 42,
    "open_hat": 46,
    "crash": 49,
    "ride": 51,
    "low_tom": 45,
    "high_tom": 50,
}

#: Chord types of the paper's §4.2 as semitone intervals above the root.
#: "intervals" is a sequence of two-note intervals (one per position, see :func:`chord_positions`).
CHORD_TYPES: dict[str, tuple[int, ...]] = {
    "intervals": (0, 7),
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "sus4": (0, 5, 7),
    "dominant7": (0, 4, 7, 10),
    "major7": (0, 4, 7, 11),
    "minor7": (0, 3, 7, 10),
    "diminished": (0, 3, 6),
}
_INTERVAL_SEQUENCE = (3, 4, 5, 7, 9, 12)  # minor 3rd, major 3rd, 4th, 5th, major 6th, octave

#: The paper's keys (Eb2, Bb2, A3, G4).
DEFAULT_KEYS: tuple[str, ...] = ("Eb2", "Bb2", "A3", "G4")
#: The paper's 7 timbres (pure sine + six GM instruments).
DEFAULT_TIMBRES: tuple[str, ...] = (
    "sine",
    "strings",
    "acoustic_guitar",
    "saxophone",
    "piano",
    "electric_guitar",
    "electric_piano",
)

#: Sample rates FluidSynth accepts (``synth.sample-rate``); other rates are rendered at a supported one and resampled.
_FLUID_MIN_RATE, _FLUID_MAX_RATE = 8000, 96000

_SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
)
_INSTALL_HINT = (
    "install FluidSynth and the General MIDI soundfont with `sudo apt-get install fluidsynth fluid-soundfont-gm` "
    "(Debian/Ubuntu), or pass soundfont=PATH / set TFAURAL_SOUNDFONT to any GM .sf2 file"
)


@dataclasses.dataclass(frozen=True)
class Note:
    """One note.

    Attributes:
        pitch: MIDI note number (60 = C4).
        start: Onset in seconds.
        end: Release in seconds (> start).
        velocity: MIDI velocity 1-127.
    """

    pitch: int
    start: float
    end: float
    velocity: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ParameterError(f"Note.pitch={self.pitch!r} is invalid: expected a MIDI number in [0, 127]")
        if not 0 <= self.start < self.end:
            raise ParameterError(f"Note start={self.start!r}, end={self.end!r}: expected 0 <= start < end")
        if not 1 <= self.velocity <= 127:
            raise ParameterError(f"Note.velocity={self.velocity!r} is invalid: expected 1-127")


@dataclasses.dataclass(frozen=True)
class Part:
    """The notes of one instrument.

    Attributes:
        program: 0-based GM program, or :data:`SINE` for additive pure sines.
        notes: The notes.
        is_drum: Play on the GM percussion channel (``program`` is then ignored).
        gain: Linear gain applied to this part.
    """

    program: int
    notes: tuple[Note, ...]
    is_drum: bool = False
    gain: float = 1.0


_NOTE_OFFSETS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def note_number(name: str) -> int:
    """MIDI number of a note name such as ``"Eb2"``, ``"A3"``, ``"F#4"`` (C4 = 60).

    Raises:
        ParameterError: For a malformed name.
    """
    text = name.strip().replace("♭", "b").replace("♯", "#")
    if len(text) < 2 or text[0].upper() not in _NOTE_OFFSETS:
        raise ParameterError(f"note name {name!r} is invalid: expected e.g. 'Eb2', 'A3', 'F#4'")
    offset = _NOTE_OFFSETS[text[0].upper()]
    rest = text[1:]
    while rest and rest[0] in "b#":
        offset += -1 if rest[0] == "b" else 1
        rest = rest[1:]
    try:
        octave = int(rest)
    except ValueError:
        raise ParameterError(f"note name {name!r} is invalid: expected e.g. 'Eb2', 'A3', 'F#4'") from None
    number = 12 * (octave + 1) + offset
    if not 0 <= number <= 127:
        raise ParameterError(f"note name {name!r} is outside the MIDI range")
    return number


def note_name(number: int) -> str:
    """Note name of a MIDI number with flats, e.g. ``39 -> "Eb2"``."""
    names = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
    return f"{names[number % 12]}{number // 12 - 1}"


def find_soundfont(path: str | os.PathLike[str] | None = None) -> str:
    """Locates a General MIDI soundfont.

    Args:
        path: An explicit ``.sf2`` file; otherwise ``$TFAURAL_SOUNDFONT``, then the
            Debian locations of ``fluid-soundfont-gm``.

    Returns:
        The path of a readable soundfont.

    Raises:
        SoundfontError: If none is found, with the command that installs one.
    """
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise SoundfontError(f"soundfont {path!r} does not exist; {_INSTALL_HINT}")
        return path
    env = os.environ.get("TFAURAL_SOUNDFONT")
    if env:
        if not os.path.isfile(env):
            raise SoundfontError(f"TFAURAL_SOUNDFONT={env!r} does not exist; {_INSTALL_HINT}")
        return env
    for candidate in _SOUNDFONT_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    raise SoundfontError(f"no General MIDI soundfont found in {list(_SOUNDFONT_CANDIDATES)}; {_INSTALL_HINT}")


class _FluidSynth:
    """A loaded GM soundfont and a renderer that plays each request on a fresh synthesizer.

    A FluidSynth synthesizer keeps state between renders (voice pool, channel
    history) that makes the same notes come out slightly differently depending on
    what was played before. Loading the 148 MB soundfont takes ~0.2 s, so it is
    loaded once into a "library" synth and shared (``fluid_synth_add_sfont``) with a
    new synthesizer per render (~2 ms): every render is then bit-for-bit repeatable.
    """

    def __init__(self, soundfont: str, sample_rate: int) -> None:
        try:
            import fluidsynth
        except (ImportError, OSError) as err:  # OSError: libfluidsynth missing
            raise SoundfontError(f"FluidSynth is not available ({err}); {_INSTALL_HINT}") from None
        self.fluidsynth = fluidsynth
        lib = fluidsynth._fl
        _declare(lib.fluid_set_log_function, ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p])
        for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG: no chatter on stderr
            lib.fluid_set_log_function(level, None, None)
        self._get_sfont = _declare(lib.fluid_synth_get_sfont_by_id, ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int])
        self._add_sfont = _declare(lib.fluid_synth_add_sfont, ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p])
        self._remove_sfont = _declare(lib.fluid_synth_remove_sfont, ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p])
        # pyfluidsynth only wraps fluid_synth_write_s16, which dithers with a running random
        # table; the float writer does not dither.
        self._write_float = _declare(
            lib.fluid_synth_write_float,
            ctypes.c_int,
            [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int] * 2,
        )
        self.sample_rate = sample_rate
        self.library = self._new_synth()
        sfid = self.library.sfload(soundfont)
        if sfid < 0:
            raise SoundfontError(f"FluidSynth could not load soundfont {soundfont!r}; {_INSTALL_HINT}")
        self.sfont = self._get_sfont(self.library.synth, sfid)
        self.lock = threading.Lock()

    def _new_synth(self) -> Any:
        return self.fluidsynth.Synth(
            gain=0.4,
            samplerate=float(self.sample_rate),
            channels=16,
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1},
        )

    def render(self, parts: Sequence[Part], n_samples: int) -> np.ndarray:
        events: list[tuple[int, int, int, int, int]] = []  # (sample, order, channel, pitch, velocity)
        melodic = [p for p in parts if not p.is_drum and p.program != SINE]
        if len(melodic) > 15:
            raise ParameterError(f"at most 15 melodic parts can be rendered at once, got {len(melodic)}")
        channels: list[tuple[int, Part]] = []
        next_channel = 0
        for part in parts:
            if part.program == SINE and not part.is_drum:
                continue
            if part.is_drum:
                channel = DRUM_CHANNEL
            else:
                channel = next_channel if next_channel < DRUM_CHANNEL else next_channel + 1
                next_channel += 1
            channels.append((channel, part))
            velocity_scale = float(np.clip(part.gain, 0.0, 1.0))
            for note in part.notes:
                velocity = max(1, min(127, int(round(note.velocity * velocity_scale))))
                events.append((int(round(note.start * self.sample_rate)), 1, channel, note.pitch, velocity))
                events.append((int(round(note.end * self.sample_rate)), 0, channel, note.pitch, 0))
        events.sort()
        with self.lock:
            synth = self._new_synth()
            sfid = self._add_sfont(synth.synth, self.sfont)
            try:
                for channel, part in channels:
                    if part.is_drum:
                        synth.program_select(channel, sfid, 128, 0)
                    else:
                        synth.program_select(channel, sfid, 0, part.program)
                chunks: list[np.ndarray] = []
                position = 0
                for sample, _, channel, pitch, velocity in events:
                    sample = min(sample, n_samples)
                    if sample > position:
                        chunks.append(self._samples(synth, sample - position))
                        position = sample
                    if velocity:
                        synth.noteon(channel, pitch, velocity)
                    else:
                        synth.noteoff(channel, pitch)
                if position < n_samples:
                    chunks.append(self._samples(synth, n_samples - position))
            finally:
                self._remove_sfont(synth.synth, self.sfont)  # the library synth owns the soundfont
                synth.delete()
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def _samples(self, synth: Any, n: int) -> np.ndarray:
        stereo = np.zeros((n, 2), np.float32)
        pointer = stereo.ctypes.data
        self._write_float(synth.synth, n, pointer, 0, 2, pointer, 1, 2)
        return stereo.mean(axis=1)


def _fluid_rate(sample_rate: int) -> int:
    """The rate FluidSynth renders at for ``sample_rate`` (it rejects rates outside 8-96 kHz)."""
    if sample_rate < _FLUID_MIN_RATE:
        return sample_rate * -(-_FLUID_MIN_RATE // sample_rate)  # smallest multiple >= 8 kHz
    return min(sample_rate, _FLUID_MAX_RATE)


def _declare(function: Any, restype: Any, argtypes: list[Any]) -> Any:
    function.restype = restype
    function.argtypes = argtypes
    return function


@functools.lru_cache(maxsize=4)
def _synth(soundfont: str, sample_rate: int) -> _FluidSynth:
    return _FluidSynth(soundfont, sample_rate)


def _additive(notes: Iterable[Note], n_samples: int, sample_rate: int) -> np.ndarray:
    """Pure sines (one partial per note) with 10 ms attack/release ramps."""
    out = np.zeros(n_samples, np.float64)
    ramp = max(1, int(0.01 * sample_rate))
    for note in notes:
        start = int(round(note.start * sample_rate))
        stop = min(n_samples, int(round(note.end * sample_rate)))
        if stop <= start:
            continue
        freq = 440.0 * 2 ** ((note.pitch - 69) / 12)
        if freq >= sample_rate / 2:
            continue
        t = np.arange(stop - start) / sample_rate
        env = np.ones(stop - start)
        k = min(ramp, (stop - start) // 2)
        if k:
            env[:k] = np.linspace(0, 1, k)
            env[-k:] = np.linspace(1, 0, k)
        out[start:stop] += (note.velocity / 127) * 0.25 * env * np.sin(2 * np.pi * freq * t)
    return out.astype(np.float32)


def render(
    parts: Sequence[Part],
    *,
    sample_rate: int,
    duration: float,
    soundfont: str | os.PathLike[str] | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Renders parts to a mono waveform.

    Args:
        parts: The instruments and their notes. :data:`SINE` parts are synthesised
            additively; all others with FluidSynth and the GM soundfont.
        sample_rate: Output rate in Hz (keyword-only).
        duration: Output length in seconds.
        soundfont: GM ``.sf2`` file (``None``: :func:`find_soundfont`).
        normalize: Scale to a peak of 0.9 (silence stays silence).

    Returns:
        float32 ``[round(duration * sample_rate)]`` in [-1, 1].

    Raises:
        SoundfontError: If a soundfont part is requested and FluidSynth or the
            soundfont is missing.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate!r} is invalid: expected a positive integer number of Hz")
    if duration <= 0:
        raise ParameterError(f"duration={duration!r} is invalid: expected a positive number of seconds")
    n_samples = int(round(duration * sample_rate))
    y = np.zeros(n_samples, np.float32)
    sine_parts = [p for p in parts if p.program == SINE and not p.is_drum]
    for part in sine_parts:
        y += part.gain * _additive(part.notes, n_samples, sample_rate)
    if len(sine_parts) < len(parts):
        rate = _fluid_rate(sample_rate)
        synth = _synth(find_soundfont(soundfont), rate)
        rendered = synth.render(parts, int(round(duration * rate)))
        if rate != sample_rate:
            from tfaural.audio import resample  # soxr, deterministic

            rendered = resample(rendered, orig_sr=rate, target_sr=sample_rate)
        y[: len(rendered)] += rendered[:n_samples]
    peak = float(np.max(np.abs(y))) if n_samples else 0.0
    if normalize and peak > 0:
        y *= np.float32(0.9 / peak)
    elif peak > 1:
        y /= np.float32(peak)
    return y


def chord_positions(
    chord: str | Sequence[int],
    *,
    root: int,
    positions: int = 6,
    duration: float = 4.0,
    velocity: int = 100,
    legato: float = 0.95,
) -> tuple[Note, ...]:
    """One chord type played in ``positions`` successive voicings (the paper's Figure 9).

    Positions cycle through the inversions of the chord, then repeat them an
    octave higher: root position, 1st inversion, 2nd inversion, ... For the
    ``"intervals"`` type each position is a different two-note interval above
    the root (minor 3rd, major 3rd, 4th, 5th, major 6th, octave).

    Args:
        chord: A name from :data:`CHORD_TYPES` or semitone intervals above the root.
        root: MIDI number of the key's root.
        positions: Number of successive voicings.
        duration: Total length in seconds; positions share it equally.
        velocity: MIDI velocity.
        legato: Fraction of each slot the notes sound.

    Returns:
        The notes, ordered by onset.
    """
    if positions < 1:
        raise ParameterError(f"positions={positions!r} is invalid: expected a positive integer")
    slot = duration / positions
    notes: list[Note] = []
    for index in range(positions):
        if chord == "intervals":
            pitches = [root, root + _INTERVAL_SEQUENCE[index % len(_INTERVAL_SEQUENCE)]]
        else:
            intervals = CHORD_TYPES[chord] if isinstance(chord, str) else tuple(chord)
            if isinstance(chord, str) and chord not in CHORD_TYPES:
                raise ParameterError(f"unknown chord type {chord!r}; expected one of {sorted(CHORD_TYPES)}")
            inversion = index % len(intervals)
            octave = 12 * (index // len(intervals))
            pitches = [root + octave + i + (12 if k < inversion else 0) for k, i in enumerate(intervals)]
        start = index * slot
        for pitch in pitches:
            if 0 <= pitch <= 127:
                notes.append(Note(pitch=pitch, start=start, end=start + legato * slot, velocity=velocity))
    return tuple(notes)


#: Drum patterns: per 16th-note step of one bar, which drums hit.
_DRUM_PATTERNS: dict[str, dict[str, tuple[int, ...]]] = {
    "4-beat": {"kick": (0, 8), "snare": (4, 12), "closed_hat": (0, 4, 8, 12)},
    "8-beat": {"kick": (0, 6, 8), "snare": (4, 12), "closed_hat": (0, 2, 4, 6, 8, 10, 12, 14)},
    "16-beat": {"kick": (0, 7, 10), "snare": (4, 12), "closed_hat": tuple(range(16))},
    "four-on-the-floor": {"kick": (0, 4, 8, 12), "clap": (4, 12), "open_hat": (2, 6, 10, 14)},
    "boom-bap": {"kick": (0, 3, 10), "snare": (4, 12), "closed_hat": (0, 2, 4, 6, 8, 10, 12, 14)},
    "fill": {"snare": (0, 2, 4, 6), "high_tom": (8, 10), "low_tom": (12, 14), "crash": (0,)},
}


def drum_pattern(name: str, *, tempo: float, duration: float, velocity: int = 100) -> Part:
    """A GM drum part repeating a one-bar pattern.

    Args:
        name: One of ``"4-beat"``, ``"8-beat"``, ``"16-beat"``, ``"four-on-the-floor"``,
            ``"boom-bap"``, ``"fill"``.
        tempo: Beats per minute.
        duration: Length in seconds.
        velocity: MIDI velocity.

    Returns:
        A drum :class:`Part`.
    """
    if name not in _DRUM_PATTERNS:
        raise ParameterError(f"unknown drum pattern {name!r}; expected one of {sorted(_DRUM_PATTERNS)}")
    step = 60.0 / tempo / 4
    notes = []
    n_steps = int(duration / step)
    pattern = _DRUM_PATTERNS[name]
    for index in range(n_steps):
        for drum, steps in pattern.items():
            if index % 16 in steps:
                start = index * step
                notes.append(Note(DRUM_NOTES[drum], start, min(duration, start + step), velocity))
    return Part(program=0, notes=tuple(sorted(notes, key=lambda n: (n.start, n.pitch))), is_drum=True)


# ---------------------------------------------------------------------------------------------
# Model signals of the correlation analysis (Choi et al. 2015, §4.2)


@dataclasses.dataclass(frozen=True)
class ModelSignal:
    """One model signal and its attributes.

    Attributes:
        timbre: Timbre name (a key of :data:`GM_PROGRAMS`, or ``"program<N>"``).
        chord: Chord type name.
        key: Key (root) note name, e.g. ``"Eb2"``.
        signal_id: ``"<timbre>-<chord>-<key>"``, safe as a file name.
        audio: float32 ``[samples]``.
        sample_rate: Sample rate in Hz.
    """

    timbre: str
    chord: str
    key: str
    signal_id: str
    audio: np.ndarray
    sample_rate: int

    def attributes(self) -> dict[str, str]:
        """``{"instrument": ..., "chord": ..., "key": ...}``."""
        return {"instrument": self.timbre, "chord": self.chord, "key": self.key}


@dataclasses.dataclass(frozen=True)
class SignalGrid:
    """The grid of model signals: timbres × chord types × keys.

    Attributes:
        timbres: Timbre names (keys of :data:`GM_PROGRAMS`) or ``"program<N>"`` for any GM program.
        chords: Chord type names (keys of :data:`CHORD_TYPES`) or ``"name=0,4,7"`` interval lists.
        keys: Root note names.
        duration: Seconds per signal.
        positions: Voicings per signal.
        drums: Optional drum pattern names added as extra "timbres" ``drums:<pattern>``.
        tempo: Tempo of the drum patterns in BPM.
    """

    timbres: tuple[str, ...] = DEFAULT_TIMBRES
    chords: tuple[str, ...] = tuple(CHORD_TYPES)
    keys: tuple[str, ...] = DEFAULT_KEYS
    duration: float = 4.0
    positions: int = 6
    drums: tuple[str, ...] = ()
    tempo: float = 120.0

    def __post_init__(self) -> None:
        for timbre in self.timbres:
            _program(timbre)
        for chord in self.chords:
            _chord(chord)
        for key in self.keys:
            note_number(key)
        for name in self.drums:
            if name not in _DRUM_PATTERNS:
                raise ParameterError(f"unknown drum pattern {name!r}; expected one of {sorted(_DRUM_PATTERNS)}")
        if len(set(self.timbres)) != len(self.timbres) or len(set(self.chords)) != len(self.chords):
            raise ParameterError("SignalGrid: timbres and chords must not repeat")

    def __len__(self) -> int:
        return len(self.timbres) * len(self.chords) * len(self.keys) + len(self.drums)

    def cache_key(self, sample_rate: int, soundfont: str | None) -> str:
        """A digest of everything that changes the rendered audio."""
        fingerprint: dict[str, Any] = dataclasses.asdict(self)
        fingerprint["sample_rate"] = sample_rate
        if _fluid_rate(sample_rate) != sample_rate:  # rendered at another rate and resampled
            fingerprint["render_rate"] = _fluid_rate(sample_rate)
        if soundfont:
            stat = os.stat(soundfont)
            fingerprint["soundfont"] = [os.path.abspath(soundfont), stat.st_size, int(stat.st_mtime)]
        fingerprint["version"] = 1
        return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def _program(timbre: str) -> int:
    if timbre in GM_PROGRAMS:
        return GM_PROGRAMS[timbre]
    if timbre.startswith("program") and timbre[7:].isdigit() and 0 <= int(timbre[7:]) <= 127:
        return int(timbre[7:])
    raise ParameterError(f"unknown timbre {timbre!r}; expected one of {sorted(GM_PROGRAMS)} or 'program<0-127>'")


def _chord(chord: str) -> tuple[str, tuple[int, ...] | str]:
    if chord in CHORD_TYPES:
        return chord, chord if chord == "intervals" else CHORD_TYPES[chord]
    if "=" in chord:
        name, _, spec = chord.partition("=")
        try:
            intervals = tuple(int(v) for v in spec.split(","))
        except ValueError:
            raise ParameterError(f"chord {chord!r} is invalid: expected 'name=0,4,7'") from None
        return name, intervals
    raise ParameterError(f"unknown chord type {chord!r}; expected one of {sorted(CHORD_TYPES)} or 'name=0,4,7'")


def model_signals(
    grid: SignalGrid | None = None,
    *,
    sample_rate: int,
    soundfont: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[ModelSignal]:
    """Renders (or reads from the cache) the model signals of the correlation analysis.

    The default grid is the paper's: 7 timbres × 8 chord types × 4 keys = 224
    signals of 4 s, each one instrument playing one chord type in 6 positions.

    Args:
        grid: What to render (``None``: the default :class:`SignalGrid`).
        sample_rate: Output rate in Hz (the model's rate; keyword-only).
        soundfont: GM soundfont (``None``: :func:`find_soundfont`); not needed for sines only.
        cache_dir: Folder for ``<digest>.npz`` caches of rendered grids (``None``: no cache). A cache is
            verified before it is used (:func:`_read_cache`: the grid's signal ids in order, float32 audio of
            the grid's length, finite, the SHA-256 of the audio it was written with); one that fails is
            rendered again and replaced, with a warning naming it and what was wrong.

    Returns:
        The signals, ordered timbre-major, then chord, then key; drum patterns last.

    Raises:
        ParameterError: If ``cache_dir`` is a URI (the cache is a local folder).
    """
    if cache_dir is not None and "://" in os.fspath(cache_dir):
        raise ParameterError(f"cache_dir {os.fspath(cache_dir)!r}: the signal cache is a local folder, not a URI")
    grid = grid or SignalGrid()
    needs_soundfont = any(_program(t) != SINE for t in grid.timbres) or bool(grid.drums)
    sf2 = find_soundfont(soundfont) if needs_soundfont else None
    cache_path = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        cache_path = os.path.join(cache_dir, f"signals-{grid.cache_key(sample_rate, sf2)}.npz")
        if os.path.exists(cache_path):
            reused = _read_cache(cache_path, grid, sample_rate=sample_rate)
            if reused is not None:
                return reused
    signals: list[ModelSignal] = []
    for timbre in grid.timbres:
        program = _program(timbre)
        for chord in grid.chords:
            chord_name, intervals = _chord(chord)
            for key in grid.keys:
                notes = chord_positions(
                    intervals, root=note_number(key), positions=grid.positions, duration=grid.duration
                )
                y = render([Part(program, notes)], sample_rate=sample_rate, duration=grid.duration, soundfont=sf2)
                signal_id = _signal_id(timbre, chord_name, key)
                signals.append(ModelSignal(timbre, chord_name, key, signal_id, y, sample_rate))
    for name in grid.drums:
        part = drum_pattern(name, tempo=grid.tempo, duration=grid.duration)
        y = render([part], sample_rate=sample_rate, duration=grid.duration, soundfont=sf2)
        signals.append(ModelSignal(f"drums:{name}", "none", "none", _drums_id(name), y, sample_rate))
    if cache_path is not None:
        meta = [dataclasses.asdict(s) | {"audio": None, "sample_rate": None} for s in signals]
        audio = np.stack([s.audio for s in signals]).astype(np.float32)
        with files.atomic_path(cache_path, suffix=".npz") as tmp:
            np.savez(tmp, audio=audio, meta=json.dumps(meta), sha256=hashlib.sha256(audio.tobytes()).hexdigest())
    return signals


def _signal_id(timbre: str, chord_name: str, key: str) -> str:
    return f"{timbre}-{chord_name}-{key}"


def _drums_id(name: str) -> str:
    return f"drums-{name}"


def _signal_ids(grid: SignalGrid) -> list[str]:
    """The ids of the grid's signals, in :func:`model_signals`' order (without rendering them)."""
    ids = [_signal_id(timbre, _chord(chord)[0], key) for timbre in grid.timbres for chord in grid.chords
           for key in grid.keys]
    return ids + [_drums_id(name) for name in grid.drums]


def _read_cache(path: str, grid: SignalGrid, *, sample_rate: int) -> list[ModelSignal] | None:
    """The signals of a cache file if it holds exactly the grid's (``None`` otherwise, with a warning).

    Checks: it reads as the ``.npz`` :func:`model_signals` writes; its signal ids are the grid's, in order; its
    audio is float32 ``[signals, round(duration * sample_rate)]``, finite, and has the SHA-256 recorded with it.
    """
    try:
        with np.load(path, allow_pickle=False) as cached:
            meta = json.loads(str(cached["meta"]))
            audio = cached["audio"]  # read once: every cached[...] access reads the whole array again
            recorded = str(cached["sha256"]) if "sha256" in cached.files else None
        ids = [str(m["signal_id"]) for m in meta]
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:  # truncated, foreign
        problem = f"unreadable ({type(err).__name__}: {err})"
    else:
        expected = (len(_signal_ids(grid)), int(round(grid.duration * sample_rate)))
        if ids != _signal_ids(grid):
            problem = "its signals are not the grid's"
        elif audio.dtype != np.float32 or audio.shape != expected:
            problem = f"its audio is {audio.dtype} {list(audio.shape)}, expected float32 {list(expected)}"
        elif recorded is None:
            problem = "it has no checksum (written by an earlier tfaural)"
        elif hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest() != recorded:
            problem = "its audio does not match its SHA-256 (changed since it was written)"
        elif not np.isfinite(audio).all():
            problem = "its audio holds NaN or Inf"
        else:
            return [ModelSignal(m["timbre"], m["chord"], m["key"], m["signal_id"], audio[i], sample_rate)
                    for i, m in enumerate(meta)]
    logger.warning("%s: signal cache not used, %s; rendering the signals again", path, problem)
    return None
