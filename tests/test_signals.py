"""tfaural.signals: real FluidSynth rendering with the Debian GM soundfont, and additive sines."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfaural import signals
from tfaural.errors import ParameterError, SoundfontError
from tfaural.signals import Note, Part

SR = 11025


def _spectrum_peak(y: np.ndarray, sr: int, fmin: float = 20.0) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    spec[freqs < fmin] = 0
    return float(freqs[np.argmax(spec)])


@pytest.mark.parametrize("name,number", [("Eb2", 39), ("Bb2", 46), ("A3", 57), ("G4", 67), ("C4", 60), ("F#4", 66)])
def test_note_numbers(name: str, number: int) -> None:
    assert signals.note_number(name) == number
    assert signals.note_number(signals.note_name(number)) == number


def test_bad_note_name() -> None:
    with pytest.raises(ParameterError, match="'H2'"):
        signals.note_number("H2")


def test_additive_sine_has_the_right_pitch() -> None:
    part = Part(signals.SINE, (Note(69, 0.0, 1.0),))  # A4
    y = signals.render([part], sample_rate=SR, duration=1.0)
    assert y.dtype == np.float32 and y.shape == (SR,)
    assert abs(_spectrum_peak(y, SR) - 440.0) < 1.5
    assert np.max(np.abs(y)) == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("timbre", ["piano", "strings", "saxophone", "acoustic_guitar"])
def test_fluidsynth_note_has_its_fundamental(timbre: str) -> None:
    part = Part(signals.GM_PROGRAMS[timbre], (Note(57, 0.0, 1.5),))  # A3 = 220 Hz
    y = signals.render([part], sample_rate=SR, duration=2.0)
    assert np.sqrt(np.mean(y**2)) > 0.02  # audible
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    band = (freqs > 200) & (freqs < 240)
    assert abs(freqs[band][np.argmax(spec[band])] - 220.0) < 3
    # Silence after the release: the render starts and ends on a clean synth.
    assert np.max(np.abs(y[-SR // 10 :])) < 0.2 * np.max(np.abs(y))


def test_rendering_is_deterministic_across_processes() -> None:
    code = (
        "import hashlib, numpy as np; from tfaural import signals; "
        "g = signals.SignalGrid(timbres=('piano','electric_guitar'), chords=('minor7',), keys=('Bb2',)); "
        "s = signals.model_signals(g, sample_rate=11025); "
        "print(hashlib.sha1(np.stack([x.audio for x in s]).tobytes()).hexdigest())"
    )
    # The last line: pyfluidsynth may print where it found libfluidsynth first.
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
               .stdout.strip().splitlines()[-1] + "\n" for _ in range(2)}
    grid = signals.SignalGrid(timbres=("piano", "electric_guitar"), chords=("minor7",), keys=("Bb2",))
    here = signals.model_signals(grid, sample_rate=SR)
    digests.add(hashlib.sha1(np.stack([x.audio for x in here]).tobytes()).hexdigest() + "\n")
    assert len(digests) == 1


def test_chord_positions_cycle_inversions() -> None:
    notes = signals.chord_positions("major", root=60, positions=4, duration=4.0)
    by_start: dict[float, list[int]] = {}
    for n in notes:
        by_start.setdefault(n.start, []).append(n.pitch)
    assert [sorted(v) for v in by_start.values()] == [[60, 64, 67], [64, 67, 72], [67, 72, 76], [72, 76, 79]]
    intervals = signals.chord_positions("intervals", root=60, positions=6, duration=3.0)
    assert len(intervals) == 12 and {n.pitch for n in intervals} >= {60, 63, 64, 65, 67, 69, 72}


def test_default_grid_is_the_papers() -> None:
    grid = signals.SignalGrid()
    assert len(grid) == 7 * 8 * 4 == 224
    assert grid.keys == ("Eb2", "Bb2", "A3", "G4")


def test_model_signals_attributes_and_cache(tmp_path: pathlib.Path) -> None:
    grid = signals.SignalGrid(timbres=("sine", "piano"), chords=("major", "diminished"), keys=("Eb2", "G4"),
                              drums=("8-beat",))
    first = signals.model_signals(grid, sample_rate=SR, cache_dir=tmp_path)
    assert len(first) == len(grid) == 9
    assert first[0].attributes() == {"instrument": "sine", "chord": "major", "key": "Eb2"}
    assert {s.signal_id for s in first} >= {"sine-major-Eb2", "piano-diminished-G4", "drums-8-beat"}
    for s in first:
        assert s.audio.shape == (4 * SR,) and np.isfinite(s.audio).all() and np.abs(s.audio).max() > 0.1
    # Sine in G4 is an octave-and-more above Eb2: the lowest strong partial moves with the key.
    low = next(s for s in first if s.signal_id == "sine-major-Eb2").audio[: SR // 2]
    high = next(s for s in first if s.signal_id == "sine-major-G4").audio[: SR // 2]
    assert _spectrum_peak(high, SR) > 2 * _spectrum_peak(low, SR)
    cached = list(tmp_path.glob("signals-*.npz"))
    assert len(cached) == 1
    again = signals.model_signals(grid, sample_rate=SR, cache_dir=tmp_path)
    for a, b in zip(first, again):
        assert a.signal_id == b.signal_id
        np.testing.assert_array_equal(a.audio, b.audio)


def test_a_cache_that_is_not_the_grids_is_rendered_again(tmp_path: pathlib.Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A cache is verified before it is reused: a truncated file, changed audio, another grid's signals or a
    cache without a checksum are rendered again (with a warning naming the file) and replaced."""
    import logging

    grid = signals.SignalGrid(timbres=("sine",), chords=("major", "minor"), keys=("A3",), duration=1.0)
    first = signals.model_signals(grid, sample_rate=SR, cache_dir=tmp_path)
    (path,) = tmp_path.glob("signals-*.npz")
    good = path.read_bytes()

    def reread(damage: bytes | dict[str, object], problem: str) -> None:
        if isinstance(damage, bytes):
            path.write_bytes(damage)
        else:
            np.savez(path, **damage)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tfaural.signals"):
            again = signals.model_signals(grid, sample_rate=SR, cache_dir=tmp_path)
        assert [r.getMessage() for r in caplog.records] == [
            f"{path}: signal cache not used, {problem}; rendering the signals again"]
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a.audio, b.audio)
        assert signals._read_cache(str(path), grid, sample_rate=SR) is not None  # replaced by the rendering

    with np.load(path) as cached:
        parts = {name: cached[name] for name in cached.files}
    reread(good[: len(good) // 2], "unreadable (BadZipFile: File is not a zip file)")
    louder = parts["audio"].copy()
    louder[1, 100] += 0.25
    reread({**parts, "audio": louder}, "its audio does not match its SHA-256 (changed since it was written)")
    reread({**parts, "audio": parts["audio"][:, :-1]},
           f"its audio is float32 [2, {SR - 1}], expected float32 [2, {SR}]")
    meta = json.loads(str(parts["meta"]))
    reread({**parts, "meta": json.dumps(meta[::-1])}, "its signals are not the grid's")
    reread({"audio": parts["audio"], "meta": parts["meta"]}, "it has no checksum (written by an earlier tfaural)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfaural.signals"):
        signals.model_signals(grid, sample_rate=SR, cache_dir=tmp_path)  # a good cache: used, silently
    assert not caplog.records


def test_drum_pattern_onsets_fall_on_the_grid() -> None:
    part = signals.drum_pattern("4-beat", tempo=120, duration=2.0)
    starts = sorted({n.start for n in part.notes})
    np.testing.assert_allclose(starts, [0.0, 0.5, 1.0, 1.5])
    y = signals.render([part], sample_rate=SR, duration=2.0)
    for beat in starts:
        hit = int(beat * SR)
        after = np.abs(y[hit : hit + SR // 20]).max()
        assert after > 0.5 * np.abs(y).max()
        if hit:  # the hit is an onset: louder than the 30 ms before it
            assert after > 2 * np.abs(y[hit - int(0.03 * SR) : hit]).max()


def test_missing_soundfont_says_how_to_install(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SoundfontError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        signals.find_soundfont(tmp_path / "missing.sf2")
    # Sines need no soundfont at all.
    grid = signals.SignalGrid(timbres=("sine",), chords=("major",), keys=("A3",))
    assert len(signals.model_signals(grid, sample_rate=SR, soundfont=tmp_path / "missing.sf2")) == 1


def test_bad_grid_values() -> None:
    with pytest.raises(ParameterError, match="unknown timbre 'kazoo'"):
        signals.SignalGrid(timbres=("kazoo",))
    with pytest.raises(ParameterError, match="unknown chord type 'mystery'"):
        signals.SignalGrid(chords=("mystery",))
    custom = signals.SignalGrid(timbres=("program40",), chords=("power=0,7,12",), keys=("A3",))
    assert len(custom) == 1
