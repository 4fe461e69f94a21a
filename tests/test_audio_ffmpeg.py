"""Containers libsndfile does not read (MP4/M4A, WebM/Matroska, WMA, AC-3, ADTS AAC, WavPack, TTA), and
Apple Lossless in CAF, which it knows without the codec: decoded through FFmpeg.

References are independent of the decoder: the signal that was encoded (lossless codecs must give
it back exactly, as libsndfile reads the same 16-bit PCM from a WAV), its length and alignment
(cross-correlation of a chirp), its SNR for the lossy codecs, and its frequency.
"""

from __future__ import annotations

import io
import pathlib
import re

import ffmpeg_files
import numpy as np
import pytest
import soundfile as sf
from signal_makers import chirp, lag, sine

from tfaural import audio, completeness
from tfaural.data.catalogue import AUDIO_EXTENSIONS
from tfaural.errors import AudioDecodeError, EmptyAudioError, InvalidAudioError

SR = 44100
SECONDS = 3.0


def _stereo(rate: int = SR, seconds: float = SECONDS) -> np.ndarray:
    """Left: a 440-Hz sine; right: a 200→2000 Hz chirp (a sharp cross-correlation peak). ``[2, samples]``."""
    return np.stack([sine(440, seconds, sample_rate=rate), chirp(200, 2000, seconds, sample_rate=rate, amplitude=0.4)])


def _pcm16(y: np.ndarray) -> np.ndarray:
    """What a 16-bit file of ``y`` holds, as float32 (libsndfile's scaling)."""
    return (np.round(np.clip(y, -1, 1) * 32767) / 32768).astype(np.float32)


def _rate(kind: str) -> int:
    rates = ffmpeg_files.KINDS[kind][3]
    return SR if rates is None or SR in rates else 48000


def _encoded(tmp_path: pathlib.Path, kind: str, *, seconds: float = SECONDS) -> tuple[pathlib.Path, np.ndarray]:
    rate = _rate(kind)
    y = _stereo(rate, seconds)
    return ffmpeg_files.write(tmp_path / f"track-{kind}{ffmpeg_files.KINDS[kind][2]}", y, sample_rate=rate,
                              kind=kind), _pcm16(y)


def _snr_db(decoded: np.ndarray, source: np.ndarray, *, edge: int = 4096) -> float:
    n = min(decoded.shape[-1], source.shape[-1])
    err = decoded[:, edge:n - edge] - source[:, edge:n - edge]
    return float(10 * np.log10(np.mean(source[:, edge:n - edge] ** 2) / np.mean(err**2)))


@pytest.mark.parametrize("kind, container, codec", [("alac-m4a", "MP4", "ALAC"), ("alac-caf", "CAF", "ALAC"),
                                                     ("wavpack", "WAVPACK", "WAVPACK"), ("tta", "TTA", "TTA"),
                                                     ("flac-ogg", "OGG", "FLAC")])
def test_lossless_codecs_give_back_exactly_the_pcm_libsndfile_reads_from_a_wav(
        tmp_path: pathlib.Path, kind: str, container: str, codec: str) -> None:
    """CAF and Ogg are containers libsndfile knows, without Apple Lossless in CAF or FLAC in Ogg (its "unknown
    error in flac decoder"): FFmpeg takes over there too."""
    path, _ = _encoded(tmp_path, kind)
    wav = tmp_path / "same.wav"
    sf.write(wav, np.round(np.clip(_stereo(), -1, 1) * 32767).astype(np.int16).T, SR, subtype="PCM_16")
    info = audio.info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (container, codec, SR, 2)
    assert info.frames == int(SECONDS * SR) or container != "MP4"  # exact in MP4; elsewhere the container's guess
    ours, sr = audio.load(path, sample_rate=None, mono=False)
    theirs, _ = audio.load(wav, sample_rate=None, mono=False)
    assert sr == SR and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    # the whole path after decoding (mix-down, soxr) is the one WAV files take
    np.testing.assert_array_equal(audio.load(path, sample_rate=16000)[0], audio.load(wav, sample_rate=16000)[0])


@pytest.mark.parametrize("kind, min_snr_db", [("aac-m4a", 25.0), ("aac-mp4", 25.0), ("opus-webm", 30.0),
                                              ("opus-mka", 30.0)])
def test_lossy_codecs_in_mp4_and_matroska_come_out_aligned_at_the_source_length(
        tmp_path: pathlib.Path, kind: str, min_snr_db: float) -> None:
    """The encoder's priming is dropped and its padding trimmed: same length, no lag, close to the source."""
    path, source = _encoded(tmp_path, kind)
    decoded, sr = audio.load(path, sample_rate=None, mono=False)
    assert sr == _rate(kind) and decoded.shape == source.shape
    assert lag(decoded, source) == 0
    assert _snr_db(decoded, source) > min_snr_db


@pytest.mark.parametrize("kind", ["wma", "ac3", "eac3", "aac-adts"])
def test_other_containers_decode_the_signal(tmp_path: pathlib.Path, kind: str) -> None:
    """Raw AC-3/ADTS streams keep the codec's delay (no container says how much): length within 5 %, the tone."""
    path, source = _encoded(tmp_path, kind)
    decoded, sr = audio.load(path, sample_rate=None, mono=False)
    assert decoded.shape[0] == 2 and abs(decoded.shape[1] - source.shape[1]) < 0.05 * source.shape[1]
    spectrum = np.abs(np.fft.rfft(decoded[0, 4096:4096 + sr]))  # 1 s: 1-Hz bins
    assert abs(int(np.argmax(spectrum)) - 440) <= 2
    assert 0.3 < np.sqrt(np.mean(decoded[0, 4096:-4096] ** 2)) / np.sqrt(np.mean(source[0] ** 2)) < 3


@pytest.mark.parametrize("kind, atol", [("alac-m4a", 0.0), ("aac-m4a", 1e-4), ("opus-webm", 1e-3),
                                        ("ac3", 0.0), ("aac-adts", 0.0)])
@pytest.mark.parametrize("offset", [0.25, 2.1])
def test_an_excerpt_equals_that_slice_of_the_whole_decode(tmp_path: pathlib.Path, kind: str, atol: float,
                                                          offset: float) -> None:
    """2.1 s seeks by the MP4/Matroska index (one second of pre-roll); raw streams decode from the start."""
    path, _ = _encoded(tmp_path, kind)
    whole, sr = audio.load(path, sample_rate=None, mono=False)
    excerpt, _ = audio.load(path, sample_rate=None, mono=False, offset=offset, duration=0.5)
    start = int(round(offset * sr))
    assert excerpt.shape == (2, int(round(0.5 * sr)))
    np.testing.assert_allclose(excerpt, whole[:, start:start + excerpt.shape[1]], rtol=0, atol=atol)


@pytest.mark.parametrize("kind", ["alac-m4a", "opus-webm", "wma"])
def test_blocks_join_into_the_whole_file(tmp_path: pathlib.Path, kind: str) -> None:
    path, _ = _encoded(tmp_path, kind)
    whole, _ = audio.load(path, sample_rate=None)
    blocks = list(audio.iter_blocks(path, sample_rate=None, block_seconds=0.7))
    assert all(b.shape == (int(round(0.7 * _rate(kind))),) for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_bytes_and_file_objects_read_as_the_path(tmp_path: pathlib.Path) -> None:
    path, _ = _encoded(tmp_path, "aac-m4a")
    expected, _ = audio.load(path, sample_rate=16000)
    np.testing.assert_array_equal(audio.load(path.read_bytes(), sample_rate=16000)[0], expected)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(audio.load(handle, sample_rate=16000)[0], expected)
    np.testing.assert_array_equal(audio.load(io.BytesIO(path.read_bytes()), sample_rate=16000, offset=2.0)[0],
                                  audio.load(path, sample_rate=16000, offset=2.0)[0])


def test_an_offset_past_the_end_of_an_mp4_says_so(tmp_path: pathlib.Path) -> None:
    path, _ = _encoded(tmp_path, "alac-m4a", seconds=1.0)
    with pytest.raises(EmptyAudioError, match=r"offset 2(\.0)? s is past the end of the audio \(1\.000 s\)"):
        audio.load(path, sample_rate=None, offset=2.0)


def test_silence_in_an_m4a_is_still_refused_where_sound_is_required(tmp_path: pathlib.Path) -> None:
    path = ffmpeg_files.write(tmp_path / "quiet.m4a", np.zeros((2, SR), np.float32), sample_rate=SR, kind="alac-m4a")
    with pytest.raises(InvalidAudioError, match=r"quiet\.m4a: the audio is digital silence"):
        audio.load(path, sample_rate=16000, require_sound=True)


def _png(path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    plt.imsave(path, np.random.default_rng(0).random((8, 8)))
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda d: ffmpeg_files.video_only_mp4(d / "clip.mp4"), r"the MP4 container has no audio stream \(video\)"),
    (lambda d: _png(d / "cover.png"), r"FFmpeg takes it for .*png.*, not an audio container tfaural reads"),
    (lambda d: (d / "noise.m4a").write_bytes(np.random.default_rng(1).bytes(40000)) and d / "noise.m4a",
     r"noise\.m4a: not a readable audio file \(libsndfile finds no audio .*FFmpeg cannot read it either"),
    (lambda d: (d / "notes.webm").write_text("not audio\n" * 50) and d / "notes.webm",
     r"not a readable audio file \(libsndfile finds no audio .*\); FFmpeg cannot read it either \(Invalid data"),
])
def test_what_neither_decoder_reads_is_an_audio_decode_error_naming_the_file(
        tmp_path: pathlib.Path, make: object, reason: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(AudioDecodeError, match=reason) as caught:
        audio.load(path, sample_rate=16000)
    assert caught.value.source == str(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_m4a_fails_by_name_rather_than_decoding_part_of_it(tmp_path: pathlib.Path, keep: float) -> None:
    """Index at the front (``faststart``, as streaming sites serve them), the samples cut short."""
    path, _ = _encoded(tmp_path, "aac-m4a")
    front = ffmpeg_files.faststart(path, tmp_path / "front.m4a")
    data = front.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[:int(len(data) * keep)])
    np.testing.assert_array_equal(audio.load(front, sample_rate=None)[0], audio.load(path, sample_rate=None)[0])
    with pytest.raises(AudioDecodeError, match=r"cut\.m4a: (decoding failed at \d+\.\d\d s of the 3\.00 s its header "
                                               r"declares, the file may be truncated|truncated: its audio ends at)"):
        audio.load(cut, sample_rate=None)
    with pytest.raises(AudioDecodeError, match=r"cut\.m4a"):
        list(audio.iter_blocks(cut, sample_rate=16000, block_seconds=1.0))


def test_a_file_named_for_another_format_decodes_by_its_content(tmp_path: pathlib.Path) -> None:
    """libsndfile's MP3 decoder takes a file by its .mp3 name and, failing, blames the file's existence."""
    path, _ = _encoded(tmp_path, "aac-m4a")
    misnamed = tmp_path / "downloaded.mp3"
    misnamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(audio.load(misnamed, sample_rate=16000)[0], audio.load(path, sample_rate=16000)[0])


@pytest.mark.parametrize("content", [b"not audio\n" * 50, bytes(5000), "a cut MP3"])
def test_a_broken_mp3_is_not_said_not_to_exist(tmp_path: pathlib.Path, content: bytes | str) -> None:
    path = tmp_path / "song.mp3"
    if isinstance(content, str):  # the first 300 bytes of a real MP3
        audio.write(path, _stereo()[0], sample_rate=SR)
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=r"song\.mp3: not a readable audio file \(libsndfile finds no audio it "
                                               r"can decode in it\); FFmpeg") as caught:
        audio.load(path, sample_rate=16000)
    assert "does not exist" not in str(caught.value)


def test_catalogue_scans_pick_up_the_containers_ffmpeg_reads() -> None:
    for extension in (".m4a", ".mp4", ".webm", ".wma", ".aac"):
        assert extension in AUDIO_EXTENSIONS


@pytest.mark.parametrize("kind", ["alac-m4a", "opus-webm"])
def test_blocks_keep_memory_bounded_by_the_block_not_the_file(tmp_path: pathlib.Path, kind: str) -> None:
    """60 s of stereo is 21 MB as float32 at 44.1 kHz; reading it in 1-s blocks holds a few blocks at most."""
    import tracemalloc

    rate = _rate(kind)
    long = np.tile(_stereo(rate, 1.0), (1, 60))
    path = ffmpeg_files.write(tmp_path / f"long{ffmpeg_files.KINDS[kind][2]}", long, sample_rate=rate, kind=kind)
    tracemalloc.start()
    try:
        total = sum(block.shape[-1] for block in audio.iter_blocks(path, sample_rate=16000, block_seconds=1.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - 60 * 16000) <= 16
    whole_file = long.size * 4
    assert peak < whole_file / 8, f"peak {peak / 1e6:.1f} MB for a {whole_file / 1e6:.1f}-MB file"


_DSD_WRITERS = {"dsf": (ffmpeg_files.dsf, "DSF"), "dff": (ffmpeg_files.dsdiff, "IFF")}


@pytest.mark.parametrize("container", ["dsf", "dff"])
def test_dsd_decodes_to_the_signal_it_codes(tmp_path: pathlib.Path, container: str) -> None:
    """One-bit DSD64, as audiophile downloads come, in Sony's DSF or Philips' DSDIFF (FFmpeg's "iff"): FFmpeg
    filters it down to 352.8 kHz PCM, and tfaural's soxr takes it from there. The file is coded here by a
    first-order sigma-delta modulator, whose noise the filter leaves more than 20 dB below the signal."""
    rate = ffmpeg_files.DSD_PCM_RATE
    source = _stereo(rate, 1.5)
    write, format_name = _DSD_WRITERS[container]
    path = write(tmp_path / f"hi-res.{container}", source)
    info = audio.info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (format_name, "DSD", rate, 2)
    decoded, sr = audio.load(path, sample_rate=None, mono=False)
    assert sr == rate and decoded.shape == source.shape  # a DSF's last block's padding is not audio
    shift = lag(decoded, source)
    assert 0 <= shift <= 32  # the decoder's filter delay
    assert _snr_db(decoded[:, shift:], source[:, :source.shape[1] - shift]) > 20
    assert len(audio.load(path, sample_rate=16000)[0]) == int(1.5 * 16000)
    excerpt, _ = audio.load(path, sample_rate=None, mono=False, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(excerpt, decoded[:, rate // 2: rate // 2 + rate // 4])
    assert f".{container}" in AUDIO_EXTENSIONS


@pytest.mark.parametrize("container", ["dsf", "dff"])
def test_a_dsd_file_is_held_to_its_headers_length(tmp_path: pathlib.Path, container: str) -> None:
    """FFmpeg takes a DSF file's length from its data's size in whole 4,096-byte blocks and reads a cut one to
    what remains; tfaural takes it from the header's sample count (DSDIFF: the sound chunk's size), so ``info``
    is exact and a cut file is an error, as every cut file is."""
    rate = ffmpeg_files.DSD_PCM_RATE
    source = _stereo(rate, 1.2345)  # not a whole number of blocks
    path = _DSD_WRITERS[container][0](tmp_path / f"whole.{container}", source)
    assert completeness.dsd_declared_frames(path) == source.shape[1]
    assert audio.info(path).frames == source.shape[1]
    data = path.read_bytes()
    cut = tmp_path / f"cut.{container}"
    for keep in (0.5, 0.9):
        cut.write_bytes(data[: int(len(data) * keep)])
        for call in (lambda: audio.load(cut, sample_rate=16000),
                     lambda: list(audio.iter_blocks(cut, sample_rate=16000, block_seconds=0.5))):
            with pytest.raises(AudioDecodeError) as error:
                call()
            assert error.value.source == str(cut)
            assert re.match(  # FFmpeg itself may fail on the cut packet first
                rf"{re.escape(str(cut))}: (truncated: its audio ends at|decoding failed at \d\.\d\d s of the 1\.23 s "
                r"its header declares, the file may be truncated)", str(error.value)), str(error.value)
        assert completeness.dsd_declared_frames(cut) == source.shape[1]  # the header is all there
