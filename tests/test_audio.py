"""tfaural.audio on real files of many formats, rates and bit depths, and on broken ones."""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Callable

import librosa
import numpy as np
import pytest
import soundfile as sf
from signal_makers import sine

from tfaural import audio
from tfaural.errors import (
    AudioDecodeError,
    AudioError,
    EmptyAudioError,
    InvalidAudioError,
    ParameterError,
    TfauralError,
)

SR = 22050
WriteAudio = Callable[..., pathlib.Path]


def _peak_freq(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


# Lossless formats: (subtype, extension, max abs error against the float signal).
LOSSLESS = [
    ("PCM_U8", "wav", 1 / 128),
    ("PCM_16", "wav", 1 / 32768),
    ("PCM_24", "wav", 1 / 2**23),
    ("PCM_32", "wav", 1 / 2**31),
    ("FLOAT", "wav", 0.0),
    ("DOUBLE", "wav", 1e-7),
    ("PCM_16", "flac", 1 / 32768),
    ("PCM_24", "flac", 1 / 2**23),
]


@pytest.mark.parametrize("subtype,ext,tol", LOSSLESS)
def test_lossless_formats_decode_exactly(write_audio: WriteAudio, subtype: str, ext: str, tol: float) -> None:
    y = sine(440, 0.5, sample_rate=SR)
    path = write_audio(f"tone_{subtype}.{ext}", y, sample_rate=SR, subtype=subtype)
    loaded, sr = audio.load(path, sample_rate=None)
    assert sr == SR and loaded.dtype == np.float32 and loaded.shape == y.shape
    assert np.max(np.abs(loaded - y)) <= tol + 1e-7
    assert np.max(np.abs(loaded)) <= 1.0


@pytest.mark.parametrize("ext,subtype", [("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_lossy_formats_keep_pitch_and_level(write_audio: WriteAudio, ext: str, subtype: str) -> None:
    y = sine(1000, 1.0, sample_rate=44100, amplitude=0.5)
    path = write_audio(f"tone.{ext}", y, sample_rate=44100, subtype=subtype)
    loaded, sr = audio.load(path, sample_rate=SR)
    assert sr == SR
    assert abs(len(loaded) - SR) <= 0.1 * SR  # MP3 adds encoder delay/padding
    assert abs(_peak_freq(loaded, SR) - 1000) < 5
    rms = float(np.sqrt(np.mean(loaded[SR // 10 : -SR // 10] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("native_sr", [8000, 44100, 96000])
def test_resampling_matches_librosa_soxr_hq(write_audio: WriteAudio, native_sr: int) -> None:
    y = sine(440, 1.0, sample_rate=native_sr)
    path = write_audio(f"tone_{native_sr}.wav", y, sample_rate=native_sr, subtype="FLOAT")
    loaded, sr = audio.load(path, sample_rate=SR)
    ref = librosa.resample(y, orig_sr=native_sr, target_sr=SR, res_type="soxr_hq")
    assert sr == SR and loaded.shape == ref.shape == (int(np.ceil(len(y) * SR / native_sr)),)
    np.testing.assert_allclose(loaded, ref, atol=1e-5)
    assert abs(_peak_freq(loaded, SR) - 440) < 2


def test_stereo_is_mixed_down_or_kept(write_audio: WriteAudio) -> None:
    left, right = sine(440, 0.5, sample_rate=SR), sine(660, 0.5, sample_rate=SR, amplitude=0.25)
    path = write_audio("stereo.wav", np.stack([left, right]), sample_rate=SR, subtype="FLOAT")
    mono, _ = audio.load(path, sample_rate=SR)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    both, _ = audio.load(path, sample_rate=SR, mono=False)
    assert both.shape == (2, len(left))
    np.testing.assert_allclose(both[1], right, atol=1e-7)


def test_bytes_and_file_objects_decode_like_paths(write_audio: WriteAudio) -> None:
    path = write_audio("tone.flac", sine(440, 0.3, sample_rate=SR), sample_rate=SR, subtype="PCM_16")
    from_path, _ = audio.load(path, sample_rate=SR)
    data = path.read_bytes()
    from_bytes, _ = audio.load(data, sample_rate=SR)
    with open(path, "rb") as handle:
        from_file, _ = audio.load(handle, sample_rate=SR)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_file)


def test_offset_and_duration(write_audio: WriteAudio) -> None:
    y = np.linspace(-0.5, 0.5, SR * 2, dtype=np.float32)
    path = write_audio("ramp.wav", y, sample_rate=SR, subtype="FLOAT")
    part, _ = audio.load(path, sample_rate=None, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(part, y[SR // 2 : SR // 2 + SR // 4])
    with pytest.raises(EmptyAudioError, match="past the end"):
        audio.load(path, sample_rate=None, offset=5.0)


# ---------------------------------------------------------------- broken inputs


def _zero_length_wav(path: pathlib.Path) -> None:
    sf.write(path, np.zeros(0, np.float32), SR, subtype="PCM_16")


def _truncated_flac(path: pathlib.Path) -> None:
    """A FLAC file cut in the middle of its frames."""
    full = io.BytesIO()
    sf.write(full, sine(440, 2.0, sample_rate=SR), SR, format="FLAC")
    path.write_bytes(full.getvalue()[:200])


BROKEN: list[tuple[str, Callable[[pathlib.Path], None], type[AudioError] | None, str]] = [
    ("empty.wav", lambda p: p.write_bytes(b""), AudioDecodeError, "empty file"),
    ("zero_length.wav", _zero_length_wav, EmptyAudioError, "zero-length"),
    ("noise.mp3", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), AudioDecodeError, "not a readable"),
    ("notes.wav", lambda p: p.write_text("this is not audio\n" * 20), AudioDecodeError, "not a readable"),
    ("truncated.flac", _truncated_flac, None, ""),  # some AudioError
]


@pytest.mark.parametrize("name,make,error,match", BROKEN)
def test_broken_files_raise_named_errors(
    tmp_path: pathlib.Path, name: str, make: Callable[[pathlib.Path], None], error: type | None, match: str
) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(TfauralError) as info:
        audio.load(path, sample_rate=SR)
    err = info.value
    assert isinstance(err, AudioError), f"{type(err).__name__}: {err}"
    if error is not None:
        assert isinstance(err, error)
    assert str(path) in str(err) and err.source == str(path)
    assert match in str(err)


@pytest.mark.parametrize("name,make,error,match", BROKEN)
def test_broken_files_read_through_a_file_object_give_the_same_error(
    tmp_path: pathlib.Path, name: str, make: Callable[[pathlib.Path], None], error: type | None, match: str
) -> None:
    """A file object (what the Beam jobs read a gs:// file through) fails as its path does, named by its name."""
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as from_path:
        audio.load(path, sample_rate=SR)
    handle = io.BytesIO(path.read_bytes())
    handle.name = f"gs://bucket/{name}"
    with pytest.raises(AudioError) as from_handle:
        audio.load(handle, sample_rate=SR)
    assert type(from_handle.value) is type(from_path.value)
    assert from_handle.value.source == f"gs://bucket/{name}" and from_handle.value.reason == from_path.value.reason


def test_missing_file_and_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(AudioDecodeError, match="file not found"):
        audio.load(tmp_path / "nope.wav", sample_rate=SR)
    with pytest.raises(AudioDecodeError, match="directory"):
        audio.load(tmp_path, sample_rate=SR)


def test_nan_and_inf_samples_are_rejected(write_audio: WriteAudio) -> None:
    y = sine(440, 0.1, sample_rate=SR)
    y[10] = np.nan
    y[20] = np.inf
    path = write_audio("nan.wav", y, sample_rate=SR, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="2 sample"):
        audio.load(path, sample_rate=SR)


def test_silence_and_too_short(write_audio: WriteAudio) -> None:
    silent = write_audio("silent.wav", np.zeros(SR, np.float32), sample_rate=SR)
    y, _ = audio.load(silent, sample_rate=SR)  # silence is valid audio by default
    assert not y.any()
    with pytest.raises(InvalidAudioError, match=r"silent\.wav: the audio is digital silence \(every sample is 0\)$"):
        audio.load(silent, sample_rate=SR, require_sound=True)
    # one threshold, SILENCE_PEAK = 2^-20 (-120 dBFS), the exports' INPUT_SILENCE_PEAK: a float file's
    # -140 dBFS noise is silence, its peak named; 2^-19 (-114.4 dBFS) is sound
    t = np.arange(SR, dtype=np.float32)
    hiss = write_audio("hiss.wav", 1e-7 * np.sign(np.sin(t)), sample_rate=SR, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match=r"is silent \(peak -140\.0 dBFS; at most -120 dBFS is silence\)$"):
        audio.load(hiss, sample_rate=None, require_sound=True)
    quiet = write_audio("quiet.wav", 2.0**-19 * np.sign(np.sin(t)), sample_rate=SR, subtype="FLOAT")
    assert np.max(np.abs(audio.load(quiet, sample_rate=None, require_sound=True)[0])) == 2.0**-19
    assert audio.is_silent(audio.SILENCE_PEAK) and not audio.is_silent(np.nextafter(audio.SILENCE_PEAK, 1.0))
    assert str(audio.silent("x.flac", peak=0.0, what="the excerpt 1 s – 2 s", hint="try another")) == (
        "x.flac: the excerpt 1 s – 2 s is digital silence (every sample is 0); try another")
    short = write_audio("short.wav", sine(440, 0.01, sample_rate=SR), sample_rate=SR)
    with pytest.raises(EmptyAudioError, match="too short"):
        audio.load(short, sample_rate=SR, min_samples=1000)


@pytest.mark.parametrize("rate", [0, -1, 22050.5, True])
def test_bad_sample_rate_is_a_parameter_error(write_audio: WriteAudio, rate: object) -> None:
    path = write_audio("x.wav", sine(440, 0.1, sample_rate=SR), sample_rate=SR)
    with pytest.raises(ParameterError, match="sample_rate="):
        audio.load(path, sample_rate=rate)  # type: ignore[arg-type]


def test_errors_survive_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(AudioDecodeError("a/b.wav", "corrupt")))
    assert isinstance(err, AudioDecodeError) and err.source == "a/b.wav" and str(err) == "a/b.wav: corrupt"


# ---------------------------------------------------------------- long files


@pytest.mark.parametrize("native_sr,target_sr", [(SR, SR), (44100, SR), (8000, 11025)])
def test_iter_blocks_concatenates_to_load(write_audio: WriteAudio, native_sr: int, target_sr: int) -> None:
    rng = np.random.default_rng(3)
    y = (0.3 * rng.standard_normal(native_sr * 5)).astype(np.float32)
    path = write_audio("long.wav", y, sample_rate=native_sr, subtype="FLOAT")
    blocks = list(audio.iter_blocks(path, sample_rate=target_sr, block_seconds=1.3))
    whole, _ = audio.load(path, sample_rate=target_sr)
    block_len = int(round(1.3 * target_sr))
    assert all(len(b) == block_len for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block_len
    joined = np.concatenate(blocks)
    assert abs(len(joined) - len(whole)) <= 1
    n = min(len(joined), len(whole))
    # Streaming and one-shot soxr differ only in the last few samples' filter tails.
    np.testing.assert_allclose(joined[: n - 64], whole[: n - 64], atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_iter_blocks_mixes_channels_exactly_as_numpy_mean(write_audio: WriteAudio, channels: int) -> None:
    # iter_blocks mixes down from the decoder's [frames, channels] buffer; the reference is NumPy's
    # mean over the channels of the whole file (float32), which blocks at the native rate must equal bitwise.
    rng = np.random.default_rng(channels)
    y = (0.3 * rng.standard_normal((channels, SR * 3))).astype(np.float32)
    path = write_audio("multi.wav", y, sample_rate=SR, subtype="FLOAT")
    joined = np.concatenate(list(audio.iter_blocks(path, sample_rate=None, block_seconds=0.7)))
    np.testing.assert_array_equal(joined, y.mean(axis=0, dtype=np.float32))
    stereo = np.concatenate(list(audio.iter_blocks(path, sample_rate=None, block_seconds=0.7, mono=False)), axis=-1)
    np.testing.assert_array_equal(stereo, y)


def test_iter_blocks_memory_does_not_grow_with_the_files_rate_and_channels(write_audio: WriteAudio) -> None:
    # 6 s of 6-channel 192-kHz audio as one 6-s block: a read of the whole block at the native rate would
    # hold 26 MiB of float32. tracemalloc sees NumPy's buffers; the yielded 16-kHz mono block is 0.4 MiB.
    import tracemalloc

    rate, channels, seconds = 192_000, 6, 6
    native_read_mib = seconds * rate * channels * 4 / 2**20
    bound_mib = 6.0
    assert native_read_mib > 4 * bound_mib  # the premise: reading a block at once would break the bound
    t = np.arange(rate * seconds) / rate
    y = np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * 110 * (c + 1) * t) for c in range(channels)]).astype(np.float32)
    path = write_audio("hires.wav", y, sample_rate=rate, subtype="PCM_16")
    del y, t
    tracemalloc.start()
    try:
        blocks = list(audio.iter_blocks(path, sample_rate=16000, block_seconds=seconds))
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak_mib < bound_mib, f"iter_blocks peaked at {peak_mib:.1f} MiB"
    whole, _ = audio.load(path, sample_rate=16000)
    joined = np.concatenate(blocks)
    assert [len(b) for b in blocks] == [16000 * seconds]
    np.testing.assert_allclose(joined[:-64], whole[:-64], atol=1e-4)  # as test_iter_blocks_concatenates_to_load


@pytest.mark.parametrize("format, subtype, min_snr_db", [
    ("WAV", "GSM610", 20.0), ("AIFF", "GSM610", 20.0), ("W64", "GSM610", 20.0), ("AU", "G721_32", 30.0),
    ("AU", "G723_24", 25.0), ("WAV", "G721_32", 30.0), ("WAV", "NMS_ADPCM_16", 20.0),
])
def test_codecs_libsndfile_reads_only_forward_load_whole_and_from_an_offset(
        write_audio: WriteAudio, format: str, subtype: str, min_snr_db: float) -> None:
    # Telephony codecs: libsndfile can neither seek in them nor say "to the end" to soundfile (which
    # refused: "frames must be specified for non-seekable files"). The reference is the signal written;
    # the SNRs measured were 24.8-35.1 dB.
    rate = 8000
    t = np.arange(3 * rate) / rate
    y = (0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t)).astype(np.float32)
    path = write_audio(f"phone.{format.lower()}", y, sample_rate=rate, subtype=subtype)
    with sf.SoundFile(str(path)) as snd:
        assert not snd.seekable()  # the premise
    whole, _ = audio.load(path, sample_rate=None)
    assert len(y) <= len(whole) < len(y) + 400  # GSM 6.10 codes whole 320-sample blocks
    n = len(y)
    assert int(np.argmax(np.correlate(whole[:n], y, "full"))) - (n - 1) == 0  # no delay
    assert 10 * np.log10(np.sum(y**2) / np.sum((whole[:n] - y) ** 2)) > min_snr_db
    np.testing.assert_array_equal(np.concatenate(list(audio.iter_blocks(path, sample_rate=None, block_seconds=0.7))),
                                  whole)
    excerpt, _ = audio.load(path, sample_rate=None, offset=1.0, duration=0.5)
    np.testing.assert_array_equal(excerpt, whole[rate: rate + rate // 2])


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the error alone: no NumPy warning about Inf - Inf first
@pytest.mark.parametrize("mono", [True, False])
def test_iter_blocks_rejects_nan_and_inf_in_any_channel(write_audio: WriteAudio, mono: bool) -> None:
    y = np.stack([sine(440, 1.0, sample_rate=SR), sine(220, 1.0, sample_rate=SR)])
    y[1, 100] = np.nan
    y[1, 200] = np.inf
    y[0, 200] = -np.inf  # with the +inf beside it, a NaN in the mix; the message counts the file's samples
    path = write_audio("nan_stereo.wav", y, sample_rate=SR, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="3 sample"):
        list(audio.iter_blocks(path, sample_rate=8000, block_seconds=0.25, mono=mono))


def test_iter_blocks_on_empty_audio(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "zero.wav"
    _zero_length_wav(path)
    with pytest.raises(EmptyAudioError):
        list(audio.iter_blocks(path, sample_rate=SR))


# ---------------------------------------------------------------- segment / write


@pytest.mark.parametrize("hop", [None, 1000])
def test_segment_matches_numpy_slicing(hop: int | None) -> None:
    y = np.arange(10_500, dtype=np.float32)
    out = audio.segment(y, length=3000, hop=hop)
    step = hop or 3000
    expected = np.stack([y[i : i + 3000] for i in range(0, len(y) - 3000 + 1, step)])
    np.testing.assert_array_equal(out, expected)


def test_segment_samplecnn_recipe() -> None:
    clip = np.ones(int(29.1 * 22050), np.float32)
    assert audio.segment(clip, length=59049, max_segments=10).shape == (10, 59049)


def test_segment_padding_modes() -> None:
    y = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(audio.segment(y, length=4, pad="constant"), [[1, 2, 3, 4], [5, 0, 0, 0]])
    np.testing.assert_array_equal(audio.segment(y, length=4, pad="wrap"), [[1, 2, 3, 4], [5, 1, 2, 3]])
    np.testing.assert_array_equal(audio.segment(y, length=8, pad="constant"), [[1, 2, 3, 4, 5, 0, 0, 0]])
    with pytest.raises(EmptyAudioError, match="too short: 5 samples"):
        audio.segment(y, length=8, pad="none", source="clip.wav")
    with pytest.raises(ParameterError, match="pad='edge'"):
        audio.segment(y, length=2, pad="edge")


def test_write_round_trip_and_never_clips(tmp_path: pathlib.Path) -> None:
    y = sine(440, 0.2, sample_rate=SR)
    out = tmp_path / "sub" / "out.wav"
    audio.write(out, y, sample_rate=SR)
    back, sr = audio.load(out, sample_rate=None)
    assert sr == SR
    np.testing.assert_allclose(back, y, atol=1 / 32768 + 1e-7)
    assert [p.name for p in out.parent.iterdir()] == ["out.wav"]  # no temporary left behind

    with pytest.raises(InvalidAudioError, match="would clip"):
        audio.write(tmp_path / "loud.wav", 3 * y, sample_rate=SR)
    assert not (tmp_path / "loud.wav").exists()
    audio.write(tmp_path / "loud.flac", 3 * y, sample_rate=SR, normalize=True)
    loud, _ = audio.load(tmp_path / "loud.flac", sample_rate=None)
    assert 0.99 < np.max(np.abs(loud)) <= 1.0

    audio.write(tmp_path / "silence.wav", np.zeros(100, np.float32), sample_rate=SR, normalize=True)
    silence, _ = audio.load(tmp_path / "silence.wav", sample_rate=None)
    assert not silence.any()
    with pytest.raises(InvalidAudioError, match="NaN"):
        audio.write(tmp_path / "nan.wav", np.full(10, np.nan, np.float32), sample_rate=SR)


def test_write_to_file_object_needs_format() -> None:
    y = sine(440, 0.1, sample_rate=SR)
    buf = io.BytesIO()
    audio.write(buf, y, sample_rate=SR, format="flac")
    assert audio.info(buf.getvalue()).format == "FLAC"
    with pytest.raises(ParameterError, match="format="):
        audio.write(io.BytesIO(), y, sample_rate=SR)


def test_a_long_ogg_vorbis_is_written_whole(tmp_path: pathlib.Path) -> None:
    """libvorbis puts all the frames of one libsndfile write on the stack: two minutes of stereo 48-kHz audio in
    one call killed the process (a segmentation fault). Written in pieces, to a path and
    to a file object, in a child process (a crash fails this test, not the test run); decoded back: the same length,
    and the same signal within Vorbis' error."""
    import subprocess
    import sys

    script = """
import io, sys
import numpy as np
from tfaural import audio
rate = 48000
t = np.arange(120 * rate) / rate
y = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t)))
     + 0.05 * np.random.default_rng(1).standard_normal(t.size)).astype(np.float32)
y = np.stack([y, 0.7 * y])
audio.write(sys.argv[1], y, sample_rate=rate)
buffer = io.BytesIO()
audio.write(buffer, y[:, : 90 * rate], sample_rate=rate, format="ogg")
open(sys.argv[1] + ".bytes", "wb").write(buffer.getvalue())
np.save(sys.argv[1] + ".npy", y[:, 60 * rate: 61 * rate])
"""
    path = tmp_path / "long.ogg"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    decoded, rate = audio.load(path, sample_rate=None, mono=False)
    assert rate == 48000 and decoded.shape == (2, 120 * rate)
    source = np.load(str(path) + ".npy")
    second = decoded[:, 60 * rate: 61 * rate]
    # SNR in dB: Vorbis keeps little of the white noise; a shifted or broken second is near 0
    assert 20 * np.log10(np.linalg.norm(source) / np.linalg.norm(second - source)) > 12
    assert audio.info((tmp_path / "long.ogg.bytes").read_bytes()).frames == 90 * rate


def test_info_reports_header(write_audio: WriteAudio) -> None:
    path = write_audio("stereo24.wav", np.zeros((2, 8000), np.float32), sample_rate=8000, subtype="PCM_24")
    meta = audio.info(path)
    assert (meta.sample_rate, meta.channels, meta.frames, meta.subtype) == (8000, 2, 8000, "PCM_24")
    assert meta.duration == pytest.approx(1.0)
    missing = path.with_suffix(".flac")
    with pytest.raises(AudioDecodeError, match="file not found") as err:
        audio.info(missing)
    assert os.fspath(missing) in str(err.value)


def test_write_gives_files_the_umask_mode(tmp_path: pathlib.Path) -> None:
    """Files are created as open() creates them (0666 minus the umask), not 0600 like tempfile.mkstemp."""
    previous = os.umask(0o022)
    try:
        audio.write(tmp_path / "a.wav", sine(440, 0.1, sample_rate=8000), sample_rate=8000)
        os.umask(0o007)
        audio.write(tmp_path / "sub" / "b.flac", sine(440, 0.1, sample_rate=8000), sample_rate=8000)
    finally:
        os.umask(previous)
    assert (tmp_path / "a.wav").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "sub" / "b.flac").stat().st_mode & 0o777 == 0o660
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.wav", "b.flac", "sub"]  # no temporary files left


def test_links_pipes_and_unreadable_entries_say_what_they_are(tmp_path: pathlib.Path) -> None:
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "loop1.wav").symlink_to(tmp_path / "loop2.wav")
    (tmp_path / "loop2.wav").symlink_to(tmp_path / "loop1.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    cases = {"dangling.wav": f"broken symbolic link: its target {str(tmp_path / 'gone.wav')!r} does not exist",
             "loop1.wav": "symbolic link loop", "pipe.wav": "is a named pipe (FIFO), not an audio file"}
    for name, reason in cases.items():
        with pytest.raises(AudioDecodeError) as caught:
            audio.load(tmp_path / name, sample_rate=None)
        assert caught.value.source == str(tmp_path / name) and reason in caught.value.reason
    if os.geteuid() != 0:  # root reads any file; everyone else is told why not
        locked = tmp_path / "locked.wav"
        sf.write(locked, sine(440, 0.1, sample_rate=8000), 8000)
        locked.chmod(0)
        with pytest.raises(AudioDecodeError, match="permission denied"):
            audio.load(locked, sample_rate=None)


def _apple_double(finder_info: bytes = b"WAVEhook" + bytes(24)) -> bytes:
    """An AppleDouble file as macOS writes it beside a copied file (RFC 1740): header, one Finder Info entry."""
    header = b"\x00\x05\x16\x07" + b"\x00\x02\x00\x00" + b"Mac OS X        " + (1).to_bytes(2, "big")
    entry = (9).to_bytes(4, "big") + (26 + 12).to_bytes(4, "big") + len(finder_info).to_bytes(4, "big")
    return header + entry + finder_info


def test_a_macos_resource_fork_says_what_it_is(tmp_path: pathlib.Path) -> None:
    """``._song.wav`` beside ``song.wav`` on a catalogue copied from a Mac: not audio, and told as such."""
    fork = tmp_path / "._song.wav"
    fork.write_bytes(_apple_double())
    for source in (fork, fork.read_bytes(), io.BytesIO(fork.read_bytes())):
        with pytest.raises(AudioDecodeError, match=r"a macOS resource fork \(an AppleDouble '\._' file") as caught:
            audio.load(source, sample_rate=None)
        assert "not audio" in caught.value.reason and (source != fork or caught.value.source == str(fork))
    other = tmp_path / "other.wav"
    other.write_bytes(b"\x00\x05\x16\x00" + _apple_double()[4:])  # AppleSingle's number: not a fork beside a file
    with pytest.raises(AudioDecodeError, match="not a readable audio file"):
        audio.load(other, sample_rate=None)


def test_only_a_files_own_samples_beyond_full_scale_are_warned_of(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A float file with samples beyond [-1, 1] is named in a warning; a 16-bit file at full scale whose resampling
    overshoots it (Gibbs ringing of a square wave) is not: the overshoot is the resampler's, not the file's."""
    square = np.sign(np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32) * (32767 / 32768)
    sf.write(tmp_path / "square.wav", square, SR, subtype="PCM_16")
    sf.write(tmp_path / "loud.wav", 2 * square, SR, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="tfaural.audio"):
        y, _ = audio.load(tmp_path / "square.wav", sample_rate=16000)
        assert np.max(np.abs(y)) > 1.0  # the resampler's overshoot is there, and left as it is
        assert "exceed" not in caplog.text
        audio.load(tmp_path / "loud.wav", sample_rate=16000)
    assert f"{tmp_path / 'loud.wav'}: float samples exceed [-1, 1] (peak 2.000); left unscaled" in caplog.text
