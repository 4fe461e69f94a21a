"""Files that hold less audio than they declare (tfaural.audio, tfaural.completeness).

libsndfile reads such files to what remains, silently: a WAV, AIFF, AU, RF64 or Wave64 file cut
short of its data chunk, an MP3 cut short of its Xing/Info frame count, an Ogg file whose last page is cut.
tfaural calls each of them truncated, by name. An MP3 with no frame-count header at all is not
truncated but one whose length libsndfile can only estimate (and stops reading at): it decodes to
its end through FFmpeg. The references are the source signals the files were written from.
"""

from __future__ import annotations

import io
import pathlib
import re
import struct
from collections.abc import Callable

import ffmpeg_files
import numpy as np
import pytest
import soundfile as sf
from signal_makers import chirp, lag, sine

from tfaural import audio, completeness
from tfaural.errors import AudioDecodeError

SR = 44100
SECONDS = 3.0
# Samples per MPEG Layer III frame: MPEG-1, and MPEG-2 / 2.5.
MPEG1_FRAME, MPEG2_FRAME = 1152, 576


def _encode(y: np.ndarray, *, rate: int = SR, **kwargs: object) -> bytes:
    """The bytes of a file soundfile writes of ``y`` (``[samples]`` or ``[channels, samples]``)."""
    buffer = io.BytesIO()
    sf.write(buffer, y.T, rate, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def _int16(y: np.ndarray) -> np.ndarray:
    """``y`` as the 16-bit integers a PCM_16 file of it holds (written as such: no conversion to guess at)."""
    return np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)


def _errors(source: pathlib.Path, *, in_header: bool = True) -> list[str]:
    """What load, iter_blocks and (if the header shows it, ``in_header``) info each raise for ``source``
    (every one must raise)."""
    said = []
    calls: list[Callable[[pathlib.Path], object]] = [
        lambda path: audio.load(path, sample_rate=16000),
        lambda path: list(audio.iter_blocks(path, sample_rate=16000, block_seconds=0.5)),
    ]
    for call in [*calls, audio.info] if in_header else calls:
        with pytest.raises(AudioDecodeError) as info:
            call(source)
        assert info.value.source == str(source)
        said.append(str(info.value))
    return said


# ------------------------------------------------------------------------------------ PCM containers


@pytest.mark.parametrize("format, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "MS_ADPCM"),
                                             ("AIFF", "PCM_24"), ("AU", "PCM_16"), ("RF64", "PCM_16")])
def test_a_pcm_file_cut_short_of_its_data_chunk_is_truncated(tmp_path: pathlib.Path, format: str,
                                                             subtype: str) -> None:
    """Before, libsndfile's reading of what remains came back as the whole track."""
    data = _encode(sine(440, SECONDS, sample_rate=SR), format=format, subtype=subtype)
    path = tmp_path / f"half.{format.lower()}"
    path.write_bytes(data[: len(data) // 2])
    for said in _errors(path):  # MS ADPCM counts whole blocks of 2,036 samples: 2.97 and 1.48 s there
        assert re.fullmatch(rf"{re.escape(str(path))}: truncated: its header declares (2\.9[7-9]|3\.00) s of audio, "
                            r"the file holds 1\.(4[7-9]|50) s", said), said


def test_a_file_short_by_less_than_a_codec_frame_still_loads(tmp_path: pathlib.Path) -> None:
    """Missing 20 ms (some writers round the data chunk's size up) is within the slack: its samples load."""
    y = _int16(sine(440, SECONDS, sample_rate=SR))
    data = _encode(y, format="WAV", subtype="PCM_16")
    path = tmp_path / "nearly.wav"
    path.write_bytes(data[: len(data) - int(0.02 * SR) * 2])
    loaded, _ = audio.load(path, sample_rate=None)
    assert len(loaded) == len(y) - int(0.02 * SR)
    np.testing.assert_array_equal(loaded, y[: len(loaded)] / np.float32(32768))


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000])
def test_a_placeholder_size_from_a_writer_that_could_not_seek_back_is_not_truncation(
        tmp_path: pathlib.Path, size: int) -> None:
    """FFmpeg writing to a pipe leaves 0xFFFFFFFF in RIFF and data, arecord 0x7FFFFFFF, SoX 0x7FFFF000."""
    y = _int16(sine(440, SECONDS, sample_rate=SR))
    data = bytearray(_encode(y, format="WAV", subtype="PCM_16"))
    assert data[36:40] == b"data"
    data[4:8] = struct.pack("<I", size)
    data[40:44] = struct.pack("<I", size)
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(data))
    loaded, _ = audio.load(path, sample_rate=None)
    np.testing.assert_array_equal(loaded, y / np.float32(32768))


@pytest.mark.parametrize("rate, channels, subtype", [
    (44100, 2, "PCM_16"), (48000, 1, "FLOAT"), (8000, 1, "ULAW"),
    (8000, 1, "GSM610"), (22050, 2, "MS_ADPCM"), (44100, 1, "IMA_ADPCM"),  # ADPCM, GSM: blocks of 320-4,084 frames
])
def test_a_wave64_file_is_whole_until_cut(tmp_path: pathlib.Path, rate: int, channels: int, subtype: str) -> None:
    """libsndfile logs a cut Wave64 file's "data" size without "(should be ...)": tfaural counts its frames from
    that size and the block size. A whole file of every kind loads to libsndfile's count (no false alarm)."""
    y = np.stack([sine(440, SECONDS, sample_rate=rate), chirp(200, 2000, SECONDS, sample_rate=rate)])[:channels]
    data = _encode(y, rate=rate, format="W64", subtype=subtype)
    whole = tmp_path / "whole.w64"
    whole.write_bytes(data)
    frames = sf.info(str(whole)).frames
    assert abs(frames - y.shape[1]) < 0.1 * rate  # ADPCM and GSM round up to whole blocks
    assert audio.load(whole, sample_rate=None)[0].shape == (frames,)
    cut = tmp_path / "half.w64"
    cut.write_bytes(data[: len(data) // 2])
    for said in _errors(cut):
        found = re.fullmatch(rf"{re.escape(str(cut))}: truncated: its header declares (\d\.\d\d) s of audio, "
                             r"the file holds (\d\.\d\d) s", said)
        assert found, said
        declared, held = float(found.group(1)), float(found.group(2))
        assert abs(declared - frames / rate) <= 0.1 and 0.4 < held / declared < 0.6, said


def test_ffmpegs_streamed_wav_and_wave64_placeholders_are_not_truncation(tmp_path: pathlib.Path) -> None:
    """FFmpeg writing to a pipe leaves 0xFFFFFFFF as a WAV's sizes and INT64_MAX as a Wave64 file's (which
    libsndfile logs as negative): the files load whole, to the 16-bit samples written."""
    y = np.stack([sine(440, SECONDS, sample_rate=SR), chirp(200, 2000, SECONDS, sample_rate=SR)])
    for kind, offset, size in [("pcm-wav", 4, b"\xff" * 4), ("pcm-w64", 16, b"\xff" * 7 + b"\x7f")]:
        path = ffmpeg_files.write(tmp_path / f"piped{ffmpeg_files.KINDS[kind][2]}", y, sample_rate=SR, kind=kind,
                                  streamed=True)
        data = path.read_bytes()
        at = data.find(b"data") + offset
        assert data[at: at + len(size)] == size  # the premise: the writer left its placeholder
        loaded, _ = audio.load(path, sample_rate=None, mono=False)
        np.testing.assert_array_equal(loaded, _int16(y) / np.float32(32768))


# ------------------------------------------------------------------------------------------------ Ogg


def _ogg(subtype: str) -> tuple[bytes, np.ndarray]:
    rate = 48000 if subtype == "OPUS" else SR
    y = np.stack([sine(440, SECONDS, sample_rate=rate), chirp(200, 2000, SECONDS, sample_rate=rate)])
    return _encode(y, rate=rate, format="OGG", subtype=subtype), y


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
@pytest.mark.parametrize("keep", [0.5, 0.99, 0.999])
def test_an_ogg_file_cut_inside_its_last_page_is_truncated(tmp_path: pathlib.Path, subtype: str,
                                                           keep: float) -> None:
    """libsndfile drops the partial page, which can hold seconds of audio (half of a Vorbis file read as no
    audio at all)."""
    data, _ = _ogg(subtype)
    path = tmp_path / "cut.ogg"
    path.write_bytes(data[: int(len(data) * keep)])
    for said in _errors(path):
        assert said.startswith(f"{path}: truncated: its last Ogg page is cut short (")


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_file_that_stops_between_pages_is_truncated_and_a_tag_after_its_last_page_is_not(
        tmp_path: pathlib.Path, subtype: str) -> None:
    data, y = _ogg(subtype)
    last_page = data.rfind(b"OggS\x00")
    assert data[last_page + 5] & 0x04  # the writer flagged its last page end-of-stream
    cut = tmp_path / "between pages.ogg"
    cut.write_bytes(data[:last_page])
    for said in _errors(cut):
        assert said == f"{cut}: truncated: its last Ogg page does not end the stream (it lacks the end-of-stream flag)"
    cut.write_bytes(data[:last_page + 3])  # inside the next page's "OggS"
    for said in _errors(cut):
        assert said == f"{cut}: truncated: its last Ogg page is cut short (3 bytes of its header)"

    whole = tmp_path / "whole.ogg"
    whole.write_bytes(data)
    tagged = tmp_path / "tagged.ogg"
    reference, _ = audio.load(whole, sample_rate=None, mono=False)
    assert reference.shape == y.shape
    for appended in (b"TAG" + bytes(125), bytes(20_000)):  # an ID3v1 tag; more than the 16 kB looked at first
        tagged.write_bytes(data + appended)
        np.testing.assert_array_equal(audio.load(tagged, sample_rate=None, mono=False)[0], reference)


# ------------------------------------------------------------------------------------------------ MP3


def _music(seconds: float) -> np.ndarray:
    """``[2, samples]``: a sine and a chirp, with a loud noise burst in the first second, so that an MP3
    encoder's bit rate varies: high at the start, low after it."""
    y = np.stack([sine(440, seconds, sample_rate=SR, amplitude=0.4),
                  chirp(200, 2000, seconds, sample_rate=SR, amplitude=0.4)])
    y[:, :SR] += 0.3 * np.random.default_rng(3).standard_normal((2, SR)).astype(np.float32)
    return y


def _snr_db(decoded: np.ndarray, source: np.ndarray, shift: int) -> float:
    """SNR of ``decoded`` shifted back by ``shift`` samples against ``_music``'s ``source``, after its noise burst
    and before its last 4,096 samples."""
    body = slice(SR, source.shape[1] - 4096)
    error = decoded[:, shift:shift + source.shape[1]][:, body] - source[:, body]
    return float(10 * np.log10(np.mean(source[:, body] ** 2) / np.mean(error**2)))


def test_an_mp3_without_a_length_header_decodes_to_its_end(tmp_path: pathlib.Path) -> None:
    """libsndfile estimates a headerless VBR MP3's length from its first frame and stops reading there."""
    y = _music(10.0)
    path = tmp_path / "no header.mp3"
    path.write_bytes(ffmpeg_files.without_xing_frame(_encode(y, format="MP3")))
    assert completeness.mp3_declared_frames(path) is None
    assert sf.info(str(path)).frames < 0.5 * y.shape[1]  # what libsndfile alone would read

    decoded, _ = audio.load(path, sample_rate=None, mono=False)
    # Without the LAME tag nothing says how much encoder delay and padding to drop: the whole stream comes out.
    assert y.shape[1] <= decoded.shape[1] <= y.shape[1] + 3 * MPEG1_FRAME
    shift = lag(decoded, y)
    assert 0 <= shift <= 2 * MPEG1_FRAME
    assert _snr_db(decoded, y, shift) > 25

    info = audio.info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == ("MP3", "MPEG_LAYER_III", SR, 2)
    mono, _ = audio.load(path, sample_rate=16000)
    np.testing.assert_array_equal(audio.load(path.read_bytes(), sample_rate=16000)[0], mono)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(audio.load(handle, sample_rate=16000)[0], mono)
    blocks = np.concatenate(list(audio.iter_blocks(path, sample_rate=16000, block_seconds=1.0)))
    assert len(blocks) == len(mono)
    np.testing.assert_allclose(blocks[1000:-1000], mono[1000:-1000], atol=2e-3)  # soxr's stream vs whole


def test_an_mp3_cut_short_of_its_frame_count_is_truncated(tmp_path: pathlib.Path) -> None:
    y = _music(10.0)
    data = _encode(y, format="MP3")
    whole = tmp_path / "whole.mp3"
    whole.write_bytes(data)
    reference, _ = audio.load(whole, sample_rate=None, mono=False)
    assert reference.shape == y.shape  # the LAME tag's delay and padding are dropped: exactly the source's length
    assert lag(reference, y) == 0

    path = tmp_path / "half.mp3"
    path.write_bytes(data[: len(data) // 2])
    for said in _errors(path, in_header=False):  # info() reads the header, which is whole
        assert said.startswith(f"{path}: truncated: its audio ends at ")
        assert said.endswith(" of the 10.00 s its header declares")
    # An excerpt that lies in what remains is all there: it loads, as in the whole file.
    part, _ = audio.load(path, sample_rate=None, mono=False, offset=1.0, duration=2.0)
    np.testing.assert_allclose(part, reference[:, SR:3 * SR], atol=1e-6)
    with pytest.raises(AudioDecodeError, match="truncated: its audio ends at"):
        audio.load(path, sample_rate=None, offset=8.0, duration=1.0)


@pytest.mark.parametrize("rate, channels, mode", [(44100, 2, None), (44100, 1, "CONSTANT"), (48000, 2, "CONSTANT"),
                                                  (22050, 1, None), (16000, 2, "AVERAGE"), (8000, 1, None)])
def test_mp3_declared_frames_reads_every_mpeg_version_and_channel_mode(rate: int, channels: int,
                                                                       mode: str | None) -> None:
    """MPEG-1 (44.1, 48 kHz), MPEG-2 (22.05, 16 kHz) and MPEG-2.5 (8 kHz), mono and stereo: their tags sit at
    four different offsets. The count covers libsndfile's length (which drops the encoder's delay and padding,
    less than two frames) and exceeds it by less than three frames."""
    y = np.stack([sine(440, SECONDS, sample_rate=rate)] * channels)
    data = _encode(y, rate=rate, format="MP3", bitrate_mode=mode)
    declared = completeness.mp3_declared_frames(io.BytesIO(data))
    samples = declared * (MPEG1_FRAME if rate >= 32000 else MPEG2_FRAME) if declared else 0
    frame = MPEG1_FRAME if rate >= 32000 else MPEG2_FRAME
    assert 0 <= samples - sf.info(io.BytesIO(data)).frames < 3 * frame

    # Behind an ID3v2 tag (here 100 kB, as cover art makes it, with a footer), in a file object left where it was.
    body = bytes(100_000)
    size = bytes((len(body) >> shift) & 0x7F for shift in (21, 14, 7, 0))
    tagged = io.BytesIO(b"ID3\x04\x00\x10" + size + body + b"3DI\x04\x00\x10" + size + data)
    tagged.seek(123)
    assert completeness.mp3_declared_frames(tagged) == declared and tagged.tell() == 123


def test_mp3_declared_frames_reads_a_vbri_tag_and_nothing_else() -> None:
    """Fraunhofer's VBRI tag, 32 bytes after the frame header (no encoder here writes one: built by its layout)."""
    header = bytes.fromhex("fffb9064")  # MPEG-1 Layer III, 128 kb/s, 44.1 kHz, joint stereo, no CRC
    frame = header + bytes(32) + b"VBRI" + struct.pack(">HHHII", 1, 1105, 75, 123_456, 1234) + bytes(300)
    assert completeness.mp3_declared_frames(io.BytesIO(frame)) == 1234
    xing_without_count = header + bytes(32) + b"Xing" + struct.pack(">I", 0b110) + bytes(300)
    assert completeness.mp3_declared_frames(io.BytesIO(xing_without_count)) is None
    assert completeness.mp3_declared_frames(io.BytesIO(header + bytes(400))) is None  # a plain audio frame
    assert completeness.mp3_declared_frames(io.BytesIO(np.random.default_rng(0).bytes(5000))) is None


# ------------------------------------------------------------------------------- another encoder's files


@pytest.mark.parametrize("xing", [True, False])
def test_ffmpegs_lame_mp3_with_and_without_its_xing_frame(tmp_path: pathlib.Path, xing: bool) -> None:
    """LAME through FFmpeg (behind an ID3v2 tag, at a constant 128 kb/s): with its Info frame libsndfile decodes it,
    gapless, and a cut is truncated; with ``write_xing=0`` FFmpeg decodes all of it, delay included."""
    y = _music(10.0)
    path = ffmpeg_files.write(tmp_path / "lame.mp3", y, sample_rate=SR, kind="mp3-lame",
                              options=None if xing else {"write_xing": "0"})
    data = path.read_bytes()
    assert data[:3] == b"ID3"
    assert (completeness.mp3_declared_frames(path) is not None) is xing
    decoded, _ = audio.load(path, sample_rate=None, mono=False)
    shift = lag(decoded, y)
    if xing:
        assert decoded.shape == y.shape and shift == 0
        cut = tmp_path / "cut.mp3"
        cut.write_bytes(data[: int(len(data) * 0.8)])
        for said in _errors(cut, in_header=False):  # 80% of its bytes: 8.0 s of audio (one frame is 0.026 s)
            ends = re.fullmatch(rf"{re.escape(str(cut))}: truncated: its audio ends at (\d+\.\d\d) s of the 10\.00 s "
                                "its header declares", said)
            assert ends and 7.95 <= float(ends[1]) <= 8.05, said
    else:
        assert y.shape[1] <= decoded.shape[1] <= y.shape[1] + 3 * MPEG1_FRAME and 0 <= shift <= 2 * MPEG1_FRAME
    assert _snr_db(decoded, y, shift) > 20


@pytest.mark.parametrize("encoder", ["lame-through-ffmpeg", "libsndfile"])
def test_an_mp3_read_in_pieces_or_from_an_offset_is_its_whole_read(tmp_path: pathlib.Path, encoder: str,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """Every piece of an MP3 is what libmpg123 decodes of it in one read of the whole file (soundfile's ``read``,
    the reference), however the blocks and the offset fall. Through soundfile's reads in pieces libsndfile seeks
    after each read and its MP3 seek restarts libmpg123 without the bit reservoir: in LAME's file the frames after
    each boundary came out off by up to 0.3, and libmpg123 printed an unnamed "part2_3_length ... too large"
    error for each."""
    y = _music(10.0)
    path = tmp_path / "song.mp3"
    if encoder == "libsndfile":
        path.write_bytes(_encode(y, format="MP3"))
    else:
        ffmpeg_files.write(path, y, sample_rate=SR, kind="mp3-lame")
    reference = sf.read(path, dtype="float32", always_2d=True)[0].T  # [2, samples]
    assert reference.shape == y.shape
    capfd.readouterr()

    decoded, _ = audio.load(path, sample_rate=None, mono=False)
    np.testing.assert_allclose(decoded, reference, atol=1e-5)  # FFmpeg's decoder: within 2e-6 of libmpg123's
    for seconds in (0.37, 1.0, 7.0):
        blocks = np.concatenate(list(audio.iter_blocks(path, sample_rate=None, mono=False, block_seconds=seconds)),
                                axis=1)
        np.testing.assert_allclose(blocks, reference, atol=1e-5, err_msg=f"{seconds}-s blocks")
    for start in (SR // 2, 3 * SR + 17, 9 * SR):
        part, _ = audio.load(path, sample_rate=None, mono=False, offset=start / SR, duration=0.5)
        np.testing.assert_allclose(part, reference[:, start:start + SR // 2], atol=1e-5, err_msg=f"at {start}")
    assert "libmpg123" not in capfd.readouterr().err


def test_ffmpegs_ogg_opus_is_whole_until_cut(tmp_path: pathlib.Path) -> None:
    y = np.stack([sine(440, SECONDS, sample_rate=48000), chirp(200, 2000, SECONDS, sample_rate=48000)])
    path = ffmpeg_files.write(tmp_path / "ffmpeg.opus", y, sample_rate=48000, kind="opus-ogg")
    assert completeness.ogg_truncation(path) is None
    decoded, _ = audio.load(path, sample_rate=None, mono=False)
    assert decoded.shape == y.shape and lag(decoded, y) == 0
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    for said in _errors(path):
        assert said.startswith(f"{path}: truncated: its last Ogg page is cut short (")


def test_an_mpeg_layer_ii_file_decodes_to_its_end(tmp_path: pathlib.Path) -> None:
    """Layer II has no Xing tag: libsndfile opens it as MPEG audio of guessed length, FFmpeg reads it whole."""
    y = _music(5.0)
    path = ffmpeg_files.write(tmp_path / "broadcast.mp2", y, sample_rate=SR, kind="mp2")
    info = audio.info(path)
    assert (info.format, info.subtype, info.channels) == ("MP3", "MPEG_LAYER_II", 2)
    decoded, _ = audio.load(path, sample_rate=None, mono=False)
    shift = lag(decoded, y)
    assert y.shape[1] <= decoded.shape[1] <= y.shape[1] + 3 * MPEG1_FRAME and 0 <= shift <= 2 * MPEG1_FRAME
    assert _snr_db(decoded, y, shift) > 20


def test_a_cut_ogg_flac_file_is_truncated_too(tmp_path: pathlib.Path) -> None:
    """FLAC in Ogg is read by FFmpeg (libsndfile does not decode it), which would also read what remains."""
    path = ffmpeg_files.write(tmp_path / "whole.oga", _music(5.0), sample_rate=SR, kind="flac-ogg")
    assert completeness.ogg_truncation(path) is None and audio.info(path).subtype == "FLAC"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    for said in _errors(path):
        assert said.startswith(f"{path}: truncated: its last Ogg page is cut short (")


def test_a_broken_flac_file_sent_to_ffmpeg_by_libsndfiles_flac_error_is_named_by_both(tmp_path: pathlib.Path) -> None:
    """libsndfile's "unknown error in flac decoder" sends a file to FFmpeg (for FLAC in Ogg); a broken FLAC file
    stays an error, with both decoders' reasons."""
    data = bytearray(_encode(sine(440, SECONDS, sample_rate=SR), format="FLAC"))
    data[4:8] = b"\xff\xff\xff\xff"  # the STREAMINFO block's header
    path = tmp_path / "broken.flac"
    path.write_bytes(bytes(data))
    with pytest.raises(sf.LibsndfileError) as raw:
        sf.SoundFile(str(path))
    assert raw.value.code == 161
    with pytest.raises(AudioDecodeError, match=r"broken\.flac: not a readable audio file \(Error : unknown error in "
                                               r"flac decoder\.\); FFmpeg cannot read it either \(Invalid data"):
        audio.load(path, sample_rate=None)
