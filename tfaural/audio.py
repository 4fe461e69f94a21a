"""Audio decoding, mixing, resampling, segmentation and writing.

Decoding goes through soundfile (libsndfile: WAV in 8/16/24/32-bit integer and
float, FLAC, OGG/Vorbis/Opus, AIFF and more); a file whose format libsndfile
does not recognise goes to FFmpeg through PyAV (:mod:`tfaural.ffmpeg_audio`: MP4/M4A
with AAC or Apple Lossless, WebM/Matroska, WMA, AC-3, WavPack, ...), and so does MPEG
audio (MP3, MP2), which libsndfile opens but decodes wrongly after a seek, as soundfile
makes it do after every read. A file that holds less
audio than it declares, which libsndfile would read to what remains, is truncated
(:mod:`tfaural.completeness`); an MP3 whose length no header declares is read to its end
(libsndfile would stop at its estimate). Resampling goes
through soxr at librosa's default quality (``soxr_hq``). Every failure is raised as an
:class:`~tfaural.errors.AudioError` subclass naming the source and the problem;
no soundfile, PyAV or soxr exception escapes.

Conventions: waveforms are float32 NumPy arrays ``[samples]`` (mono) or
``[channels, samples]`` (``mono=False``), in [-1, 1] for integer formats;
sample rates are keyword-only and in Hz.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar, Union

import numpy as np
import soundfile as sf
import soxr

from tfaural import completeness, ffmpeg_audio, files
from tfaural.config import PAD_MODES
from tfaural.errors import (
    AudioDecodeError,
    EmptyAudioError,
    InvalidAudioError,
    ParameterError,
    describe_error,
    describe_source,
)

__all__ = [
    "AudioSource",
    "AudioInfo",
    "info",
    "load",
    "iter_blocks",
    "to_mono",
    "resample",
    "segment",
    "n_segments",
    "write",
    "encode",
    "too_short",
    "silent",
    "is_silent",
    "RESAMPLE_QUALITY",
    "SILENCE_PEAK",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""A path, the encoded bytes of a file, or a binary file object."""

RESAMPLE_QUALITY = "HQ"
"""soxr quality preset; ``"HQ"`` is what ``librosa.resample(res_type="soxr_hq")`` uses."""

SILENCE_PEAK = 2.0**-20
"""Audio whose peak is at or below this is silent: 2^-20, −120 dBFS, 24 dB under one step of 16-bit
audio (digital silence, or a float file's noise below one 16-bit step). It is nothing to hear or tag: the
jobs fail such a track (or auralise's excerpt) with :func:`silent`, and the exports' auralisation
returns every feature of such an input as silent (:data:`tfaural.auralise.INPUT_SILENCE_PEAK`)."""

# Subtypes written by default per container, so that files open everywhere.
_DEFAULT_SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}
# libsndfile's error codes for a format it does not recognise (1), for a codec it does not decode in a
# container it knows (4, e.g. Apple Lossless in CAF), and what it says of a file named .mp3 that its MP3 decoder
# cannot read (7, "File does not exist or is not a regular file", of a file that does: e.g. an M4A named .mp3).
# Such files go to FFmpeg (tfaural.ffmpeg_audio).
_SF_ERR_UNRECOGNISED = 1
_SF_ERR_MISNAMED = 7
# And its "unknown error in flac decoder" (161): FLAC in Ogg, which this libsndfile does not decode (FFmpeg does),
# or a corrupt FLAC file (which FFmpeg then calls probably corrupt or truncated).
_SF_ERR_FLAC = 161
_SF_ERRS_FOR_FFMPEG = frozenset({_SF_ERR_UNRECOGNISED, 4, _SF_ERR_MISNAMED, _SF_ERR_FLAC})
_OPENING = re.compile(r"^Error opening (?:'.*?'|<[^>]*>): ")
# What libsndfile logs of a PCM container whose audio chunk declares more bytes than the file holds (WAV's
# "data", AIFF's "SSND", AU's "Data Size"; RF64's "ds64" frame count). It reads what is there, silently.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND|Data Size)\s*: (\d+) \(should be (\d+)\)", re.MULTILINE)
_SHORT_DS64 = re.compile(r"Calculated frame count (\d+) does not match value from 'ds64' chunk of (\d+)")
# Sony Wave64 logs its "data" chunk's size (a 24-byte GUID and size, then the audio) but no "(should be)" when
# the file is shorter, and its outer "riff" size, which some writers get wrong in whole files too. The audio's
# length follows from the chunk's size, the block size and (for ADPCM and GSM) the frames each block codes.
_W64_DATA = re.compile(r"^data : (\d+)$", re.MULTILINE)
_W64_BLOCK = re.compile(r"^\s*Block Align\s*: (\d+)$", re.MULTILINE)
_W64_BLOCK_FRAMES = re.compile(r"^\s*Samples/Block\s*: (\d+)$", re.MULTILINE)
_W64_CHUNK_HEAD = 24
_W64_PLACEHOLDER_BYTES = 1 << 62  # FFmpeg writes INT64_MAX when it cannot seek back
# Sizes that writers which cannot seek back put in a header for "unknown" (0xFFFFFFFF from FFmpeg and in AU,
# 0x7FFFFFFF from arecord, 0x7FFFF000 from SoX): not a promise of so much audio.
_PLACEHOLDER_BYTES = 0x7FF00000
# Largest float that PCM_16 stores without clipping (32767 / 32768).
_PEAK_TARGET = 32767.0 / 32768.0
#: Most samples (all channels) :func:`iter_blocks` asks the decoder for at once: 1 MiB of float32, whatever
#: the file's rate, channels or ``block_seconds`` (a 30-s read of 8-channel 192-kHz audio would be 176 MiB).
_READ_SAMPLES = 1 << 18


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    Attributes:
        sample_rate: Native sample rate in Hz.
        channels: Number of channels.
        frames: Number of samples per channel (approximate for some MP3 files, and the
            container's estimate for the formats FFmpeg reads, MP4 excepted).
        format: Container, e.g. ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ``"MP4"``.
        subtype: Sample encoding, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ``"AAC"``.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def _check_rate(sample_rate: int | None, name: str = "sample_rate") -> None:
    if sample_rate is None:
        return
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ParameterError(f"{name}={sample_rate!r} is invalid: expected a positive integer number of Hz or None")


@contextlib.contextmanager
def _open(source: AudioSource) -> Iterator[sf.SoundFile | _Wrapped | ffmpeg_audio.FFmpegAudioFile]:
    """Opens ``source`` with soundfile (FFmpeg where libsndfile cannot, or cannot read all of it: :func:`_vet`);
    every failure, a truncated file included, becomes an AudioError."""
    name = describe_source(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        _check_path(path, name)
        handle: Any = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError(name, "empty input (0 bytes)")
        handle = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        if _peek(_remaining_bytes, source) == 0:
            raise AudioDecodeError(name, "empty file (0 bytes)")
        handle = source
    else:
        raise ParameterError(
            f"cannot read audio from a {type(source).__name__}: expected a path, bytes or a binary file object"
        )
    try:
        snd: Any = sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        snd = _open_with_ffmpeg(handle, name, err)
    else:
        snd = _vet(snd, handle, name)
    try:
        if snd.samplerate <= 0:
            raise AudioDecodeError(name, f"header declares an invalid sample rate {snd.samplerate}")
        yield snd
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as err:
        reason = f"decoding failed, the file may be truncated or corrupt ({describe_error(err)})"
        raise AudioDecodeError(name, reason) from None
    finally:
        snd.close()


def _remaining_bytes(handle: Any) -> int:
    """Bytes from a file object's position to its end, position kept (through :func:`_peek`: a handle that
    cannot seek gives ``None``)."""
    position = handle.tell()
    end = handle.seek(0, io.SEEK_END)
    handle.seek(position)
    return int(end) - int(position)


def _open_with_ffmpeg(handle: Any, name: str, err: Exception) -> ffmpeg_audio.FFmpegAudioFile:
    """Opens through FFmpeg a source whose format or codec libsndfile does not know (MP4/M4A, WebM, WMA, FLAC in
    Ogg, ...).

    Raises:
        AudioDecodeError: With libsndfile's reason, and FFmpeg's if FFmpeg was tried; or an Ogg file whose
            last page is cut short or does not end the stream (truncated). (A DSD file is held to its header's
            length, so a read that ends short of it raises truncated.)
    """
    if _peek(completeness.is_apple_double, handle):  # '._song.mp3' beside song.mp3: say what it is
        raise AudioDecodeError(name, "a macOS resource fork (an AppleDouble '._' file, which macOS writes beside "
                                     "each file it copies to a disk that cannot keep its metadata), not audio")
    # libsndfile names the file again ("Error opening 'x.m4a': Format not recognised."); the error names it once.
    # Its code 7 blames the file's existence, which _check_path has already established.
    said = _OPENING.sub("", describe_error(err))
    if isinstance(err, sf.LibsndfileError) and err.code in (_SF_ERR_UNRECOGNISED, _SF_ERR_MISNAMED):
        # one reason for both: which of the two libsndfile gives depends on whether it saw a name ending .mp3
        # (a path) or not (a stream, e.g. a gs:// file)
        said = "libsndfile finds no audio it can decode in it"
    reason = f"not a readable audio file ({said})"
    if not (isinstance(err, sf.LibsndfileError) and err.code in _SF_ERRS_FOR_FFMPEG):
        raise AudioDecodeError(name, reason) from None
    try:
        snd = ffmpeg_audio.open_or_none(handle, name=name)
    except ffmpeg_audio.NotAudioError as ffmpeg_err:  # neither decoder takes it: both say why
        raise AudioDecodeError(name, f"{reason}; {ffmpeg_err.reason}") from None
    except AudioDecodeError as ffmpeg_err:  # an audio container FFmpeg reads, with a problem of its own
        raise AudioDecodeError(name, ffmpeg_err.reason) from None
    if snd is None:
        raise AudioDecodeError(name, reason) from None
    try:
        if snd.format == "OGG":  # FLAC in Ogg: FFmpeg would read a cut file to what remains, as libsndfile would
            _check_ogg_complete(handle, name)
        elif snd.format in ("DSF", "IFF") and snd.subtype == "DSD":  # FFmpeg would read a cut DSF to what remains
            declared = _peek(completeness.dsd_declared_frames, handle)
            if declared:
                snd.hold_to(declared)
    except BaseException:
        snd.close()
        raise
    return snd


def _check_ogg_complete(handle: Any, name: str) -> None:
    """Raises an AudioDecodeError if the Ogg file's last page is cut short or does not end the stream."""
    truncation = _peek(completeness.ogg_truncation, handle)
    if truncation is not None:
        raise AudioDecodeError(name, f"truncated: {truncation}")


def _peek(read: Callable[[Any], _T], handle: Any) -> _T | None:
    """``read(handle)`` (:mod:`tfaural.completeness`), or ``None`` if the handle cannot be read so (a file object
    that cannot seek: what the decoder reads is then all there is)."""
    try:
        return read(handle)
    except (OSError, ValueError, AttributeError):
        return None


def _vet(snd: sf.SoundFile, handle: Any, name: str) -> sf.SoundFile | _Wrapped | ffmpeg_audio.FFmpegAudioFile:
    """What reads all of a file libsndfile opened, or why nothing can (:mod:`tfaural.completeness`).

    Returns:
        ``snd`` itself; ``snd`` read forward only (:class:`_ForwardOnly`); or, for MPEG audio, FFmpeg's reader
        (:func:`_mp3_reader`).

    Raises:
        AudioDecodeError: The file is truncated: it holds less audio than its header declares (a PCM
            container), or its last Ogg page is cut short or does not end the stream. ``snd`` is closed.
    """
    try:
        _check_pcm_complete(snd, name)
        if snd.format == "OGG":
            _check_ogg_complete(handle, name)
        if not snd.seekable():
            return _ForwardOnly(snd, name)
        if snd.format != "MP3":
            return snd
        return _mp3_reader(snd, handle, name)
    except BaseException:
        snd.close()
        raise


def _mp3_reader(snd: sf.SoundFile, handle: Any, name: str) -> sf.SoundFile | _Wrapped | ffmpeg_audio.FFmpegAudioFile:
    """FFmpeg's reader of an MPEG audio file libsndfile opened (seekably), held to the length its header declares.

    libsndfile decodes an MP3 correctly only in one read from where it was opened or last sought: soundfile
    seeks after every read (to where the read ended), and libsndfile's MP3 seek restarts libmpg123 at a frame
    boundary without the bit reservoir the next frames draw on. In some files those frames come out wrong
    (a LAME file through FFmpeg, ``tests/test_audio_truncation.py``), and libmpg123 prints "part2_3_length (..)
    too large for available bit count" for each, without the file's name. FFmpeg decodes the same samples as
    libsndfile's read of the whole file (within the test's 1e-5) in any pieces, and seeks by decoding from the
    start.

    Returns:
        FFmpeg's reader, held to the length an MP3's Xing, Info or VBRI header declares as libsndfile reads it
        (encoder delay and padding dropped), so that a file cut short of it is truncated; read to its end where
        no header declares one (libsndfile would stop at its estimate from the first frame). Should FFmpeg
        not read an MP3 with such a header, libsndfile held to that length (:class:`_DeclaredLength`).
    """
    declared = _peek(completeness.mp3_declared_frames, handle) is not None
    try:
        reader = ffmpeg_audio.open_or_none(handle, name=name, mp3=True)
    except AudioDecodeError:
        if not declared:
            raise
        logger.debug("%s: FFmpeg cannot read this MP3; libsndfile decodes it", name)
        reader = None
    if reader is None:
        return _DeclaredLength(snd, name) if declared else snd
    if declared:
        reader.hold_to(int(snd.frames))
    snd.close()
    return reader


def _check_pcm_complete(snd: sf.SoundFile, name: str) -> None:
    """Raises an AudioDecodeError if libsndfile's log says the file holds less than its header declares."""
    log = snd.extra_info
    short = _SHORT_CHUNK.search(log)
    ds64 = _SHORT_DS64.search(log)
    if ds64:  # frames, not bytes: (held, declared)
        held, declared = int(ds64.group(1)), int(ds64.group(2))
    elif snd.format == "W64":
        declared_or_none = _w64_declared_frames(log)
        if declared_or_none is None:
            return
        held, declared = int(snd.frames), declared_or_none
    elif short and int(short.group(1)) < _PLACEHOLDER_BYTES:  # bytes: (declared, held)
        declared_bytes, held_bytes = int(short.group(1)), int(short.group(2))
        held = int(snd.frames)
        declared = held * declared_bytes // held_bytes if held_bytes > 0 else held + declared_bytes
    else:
        return
    rate = snd.samplerate
    if declared - held > ffmpeg_audio.truncation_slack(rate):
        raise AudioDecodeError(name, f"truncated: its header declares {declared / rate:.2f} s of audio, the file "
                                     f"holds {held / rate:.2f} s")


def _w64_declared_frames(log: str) -> int | None:
    """The frames a Wave64 file's "data" chunk declares (ADPCM, GSM: at least), from libsndfile's log; ``None``
    if it does not say, or says a placeholder (libsndfile logs INT64_MAX, FFmpeg's, as negative)."""
    data, block = _W64_DATA.search(log), _W64_BLOCK.search(log)
    if not data or not block or int(block.group(1)) <= 0:
        return None
    size = int(data.group(1))
    if size < _W64_CHUNK_HEAD or size >= _W64_PLACEHOLDER_BYTES:
        return None
    blocks = (size - _W64_CHUNK_HEAD) // int(block.group(1))
    block_frames = _W64_BLOCK_FRAMES.search(log)
    if not block_frames:  # PCM, float, A-law, u-law: a block is one frame
        return blocks
    return (blocks - 1) * int(block_frames.group(1))  # at least: the last block may code fewer frames


class _Wrapped:
    """A libsndfile reader behind the part of its interface :mod:`tfaural.audio` uses, for the readers below
    to change how it reads."""

    frames_exact = True

    def __init__(self, snd: sf.SoundFile, name: str) -> None:
        self._snd = snd
        self._name = name
        self.samplerate = int(snd.samplerate)
        self.channels = int(snd.channels)
        self.frames = int(snd.frames)
        self.format = str(snd.format)
        self.subtype = str(snd.subtype)

    def seek(self, frame: int) -> int:
        return int(self._snd.seek(frame))

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True,
             out: np.ndarray | None = None) -> np.ndarray:
        data: np.ndarray = self._snd.read(frames=frames, dtype=dtype, always_2d=always_2d, out=out)
        return data

    def close(self) -> None:
        self._snd.close()


class _DeclaredLength(_Wrapped):
    """A libsndfile reader held to the exact length its file's header declares (an MP3's Xing, Info or
    VBRI frame count): a read that ends short of it raises, as :class:`~tfaural.ffmpeg_audio.FFmpegAudioFile`
    does in MP4. (libsndfile decodes a truncated MP3 to what remains, silently.)"""

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True,
             out: np.ndarray | None = None) -> np.ndarray:
        start = int(self._snd.tell())
        data = super().read(frames, dtype, always_2d, out)
        end = start + len(data)
        if end < (self.frames if frames < 0 else min(start + frames, self.frames)):  # the stream ended early
            ffmpeg_audio.check_whole(self._name, ends=end, declared=self.frames, sample_rate=self.samplerate)
        return data


class _ForwardOnly(_Wrapped):
    """A file libsndfile can only read forward: GSM 6.10 (WAV, AIFF, W64), G.721/G.723 (WAV, AU) and NMS
    ADPCM (WAV). soundfile neither seeks in it nor reads "to the end" (``frames=-1``); this reader seeks by
    decoding what precedes the target and reads to the end in pieces, at most 1 MiB of samples at a time."""

    def __init__(self, snd: sf.SoundFile, name: str) -> None:
        super().__init__(snd, name)
        self._position = 0  # soundfile cannot tell() in such a file either

    def seek(self, frame: int) -> int:
        if frame < self._position:
            raise ValueError(f"cannot seek back to frame {frame} in a file that reads only forward")
        while self._position < frame and len(self.read(min(frame - self._position, _read_frames(self.channels)))):
            pass  # decoded and dropped
        return self._position

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True,
             out: np.ndarray | None = None) -> np.ndarray:
        if frames >= 0:
            data = super().read(frames, dtype, always_2d, out)
            self._position += len(data)
            return data
        parts = []
        while len(part := self.read(_read_frames(self.channels), dtype, True)):
            parts.append(part)
        data = np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)
        return data[:, 0] if not always_2d and self.channels == 1 else data  # soundfile's shapes


def _read_frames(channels: int) -> int:
    """Frames of ``channels`` channels in one read of at most :data:`_READ_SAMPLES` samples."""
    return max(1, _READ_SAMPLES // channels)


def _check_path(path: str, name: str) -> None:
    """Raises an AudioDecodeError saying why ``path`` cannot be an audio file, if it cannot."""
    try:
        status = os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            if err.errno == errno.ELOOP:
                raise AudioDecodeError(name, "symbolic link loop (too many levels of symbolic links)") from None
            raise AudioDecodeError(name, f"broken symbolic link: its target {os.readlink(path)!r} does not "
                                         "exist") from None
        if err.errno == errno.ENOENT:
            raise AudioDecodeError(name, "file not found") from None
        raise AudioDecodeError(name, f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioDecodeError(name, "is a directory, expected an audio file")
    if not stat.S_ISREG(status.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(status.st_mode) else "a socket" if stat.S_ISSOCK(
            status.st_mode) else "a device" if stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode) else (
            "not a regular file")
        raise AudioDecodeError(name, f"is {kind}, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(name, "cannot be read (permission denied)")
    if status.st_size == 0:
        raise AudioDecodeError(name, "empty file (0 bytes)")


def info(source: AudioSource) -> AudioInfo:
    """Reads a file's header without decoding its samples.

    Args:
        source: A path, the file's bytes, or a binary file object.

    Returns:
        The :class:`AudioInfo` of the file.

    Raises:
        AudioDecodeError: If the file is missing, empty or not audio.
    """
    with _open(source) as snd:
        return AudioInfo(
            sample_rate=int(snd.samplerate),
            channels=int(snd.channels),
            frames=int(snd.frames),
            format=str(snd.format),
            subtype=str(snd.subtype),
        )


def to_mono(y: np.ndarray) -> np.ndarray:
    """Averages channels: ``[channels, samples]`` → ``[samples]`` (1-D input is returned as is)."""
    y = np.asarray(y, dtype=np.float32)
    return y if y.ndim == 1 else y.mean(axis=0, dtype=np.float32)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resamples with soxr at librosa's default quality.

    Args:
        y: float32 ``[samples]`` or ``[channels, samples]``.
        orig_sr: Sample rate of ``y`` in Hz.
        target_sr: Wanted sample rate in Hz.

    Returns:
        float32 array with the same leading shape and
        ``ceil(samples * target_sr / orig_sr)`` samples.
    """
    _check_rate(orig_sr, "orig_sr")
    _check_rate(target_sr, "target_sr")
    y = np.asarray(y, dtype=np.float32)
    if orig_sr == target_sr:
        return y
    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
    out = soxr.resample(y.T, orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _validate_samples(y: np.ndarray, name: str) -> None:
    if y.shape[-1] == 0:
        raise EmptyAudioError(name, "no audio samples (zero-length audio)")
    if not np.isfinite(y).all():
        bad = int(np.size(y) - np.isfinite(y).sum())
        raise InvalidAudioError(name, f"{bad} sample(s) are NaN or Inf")


def load(
    source: AudioSource,
    *,
    sample_rate: int | None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
    min_samples: int = 1,
    require_sound: bool = False,
) -> tuple[np.ndarray, int]:
    """Decodes audio, mixes it down and resamples it.

    Args:
        source: A path, the encoded bytes of a file, or a binary file object.
        sample_rate: Target rate in Hz (keyword-only); ``None`` keeps the native rate.
        mono: Average all channels into one.
        offset: Start reading this many seconds into the file.
        duration: Read at most this many seconds (``None``: to the end).
        min_samples: Fewest samples (after resampling) the caller can use; fewer
            raises :class:`EmptyAudioError` ("too short").
        require_sound: Raise :class:`InvalidAudioError` for silence (a peak at or below
            :data:`SILENCE_PEAK`; :func:`silent`).

    Returns:
        ``(y, sr)``: float32 ``[samples]`` (or ``[channels, samples]`` when
        ``mono=False``), values in [-1, 1) for integer formats, and its rate in Hz.

    Raises:
        AudioDecodeError: Missing, empty, non-audio, corrupt or truncated input.
        EmptyAudioError: No samples, or fewer than ``min_samples``.
        InvalidAudioError: NaN/Inf samples, or silence with ``require_sound``.
        ParameterError: A non-positive ``sample_rate``, negative offset or duration.
    """
    _check_rate(sample_rate)
    if offset < 0 or (duration is not None and duration <= 0):
        raise ParameterError(f"offset={offset!r}, duration={duration!r}: expected offset >= 0 and duration > 0")
    name = describe_source(source)
    with _open(source) as snd:
        native_sr = int(snd.samplerate)
        start = int(round(offset * native_sr))
        if start:
            if snd.frames and start >= snd.frames and getattr(snd, "frames_exact", True):
                length = snd.frames / native_sr
                raise EmptyAudioError(name, f"offset {offset} s is past the end of the audio ({length:.3f} s)")
            snd.seek(start)
        frames = -1 if duration is None else int(round(duration * native_sr))
        data = snd.read(frames=frames, dtype="float32", always_2d=True)  # [samples, channels]
    y = np.ascontiguousarray(data.T)  # [channels, samples]
    _validate_samples(y, name)
    if y.size and float(np.max(np.abs(y))) > 1.0:  # the file's own samples, not a resampler's overshoot
        logger.warning("%s: float samples exceed [-1, 1] (peak %.3f); left unscaled", name, float(np.max(np.abs(y))))
    if mono:
        y = to_mono(y)
    if sample_rate is not None and sample_rate != native_sr:
        y = resample(y, orig_sr=native_sr, target_sr=sample_rate)
    sr = native_sr if sample_rate is None else sample_rate
    if y.shape[-1] < min_samples:
        raise too_short(name, samples=y.shape[-1], sample_rate=sr, needed=min_samples)
    peak = float(np.max(np.abs(y)))
    if require_sound and is_silent(peak):
        raise silent(name, peak=peak)
    return y, sr


def too_short(source: AudioSource, *, samples: int, sample_rate: int, needed: int, why: str = "") -> EmptyAudioError:
    """The error of audio with fewer samples than the caller needs: "too short: 100 samples (0.050 s) at
    2000 Hz, need at least 243 (why)" (what :func:`load` raises, and the jobs that decode block by block)."""
    return EmptyAudioError(describe_source(source), f"too short: {samples} samples ({samples / sample_rate:.3f} s) at "
                                                    f"{sample_rate} Hz, need at least {needed}"
                                                    + (f" ({why})" if why else ""))


def is_silent(peak: float) -> bool:
    """Whether audio of this peak (absolute, full scale 1) is silence: at most :data:`SILENCE_PEAK`."""
    return peak <= SILENCE_PEAK


def silent(source: AudioSource, *, peak: float, what: str = "the audio", hint: str = "") -> InvalidAudioError:
    """The error of audio with nothing in it: "the audio is digital silence (every sample is 0)", or "…
    is silent (peak -131.2 dBFS; at most -120 dBFS is silence)" (what :func:`load` raises with
    ``require_sound``, and the jobs that decode block by block).

    Args:
        source: The file.
        peak: The audio's largest absolute sample.
        what: What was silent ("the audio", "the excerpt 0 s – 4 s").
        hint: What the user can do, appended after "; ".
    """
    if peak == 0:
        reason = f"{what} is digital silence (every sample is 0)"
    else:
        reason = (f"{what} is silent (peak {20 * np.log10(peak):.1f} dBFS; at most "
                  f"{20 * np.log10(SILENCE_PEAK):.0f} dBFS is silence)")
    return InvalidAudioError(describe_source(source), reason + (f"; {hint}" if hint else ""))


def iter_blocks(
    source: AudioSource,
    *,
    sample_rate: int | None,
    block_seconds: float = 60.0,
    mono: bool = True,
) -> Iterator[np.ndarray]:
    """Decodes a long file block by block, without holding it all in memory.

    Resampling is streamed (``soxr.ResampleStream``), so the concatenated blocks
    equal :func:`load`'s output up to the resampler's edge handling. The decoder is
    read at most 2^18 samples (1 MiB of float32, all channels) at a time, so memory
    beyond the blocks themselves does not grow with the file's rate, channels or
    ``block_seconds``.

    Args:
        source: A path, bytes or a binary file object.
        sample_rate: Target rate in Hz; ``None`` keeps the native rate.
        block_seconds: Length of every block but the last, in seconds at the output rate.
        mono: Average channels.

    Yields:
        float32 ``[samples]`` (or ``[channels, samples]``) blocks of exactly
        ``round(block_seconds * rate)`` samples, the last one shorter.

    Raises:
        The errors of :func:`load` (an empty file raises before anything is yielded).
    """
    _check_rate(sample_rate)
    if block_seconds <= 0:
        raise ParameterError(f"block_seconds={block_seconds!r} is invalid: expected a positive number of seconds")
    name = describe_source(source)
    with _open(source) as snd:
        native_sr = int(snd.samplerate)
        out_sr = native_sr if sample_rate is None else sample_rate
        block_len = max(1, int(round(block_seconds * out_sr)))
        read_len = max(1, min(int(round(block_seconds * native_sr)), _read_frames(int(snd.channels))))
        channels = 1 if mono else int(snd.channels)
        stream = (
            soxr.ResampleStream(native_sr, out_sr, channels, dtype="float32", quality=RESAMPLE_QUALITY)
            if out_sr != native_sr
            else None
        )
        pending: list[np.ndarray] = []
        pending_len = 0
        total = 0
        # what read(frames=-1) reads, as load() does (FFmpeg's estimate may be short: read to the end there)
        remaining = int(snd.frames) if getattr(snd, "frames_exact", True) else sys.maxsize
        buffer = np.empty((min(read_len, max(remaining, 1)), int(snd.channels)), np.float32)  # reused per block
        while remaining > 0:
            want = min(read_len, remaining)
            raw = snd.read(frames=want, dtype="float32", always_2d=True, out=buffer[:want])  # a view of buffer
            if not len(raw):
                break
            remaining -= len(raw)
            if mono:  # the channels' mean, summed in channel order as ndarray.mean(axis=0) of [channels, samples]
                mixed = raw[:, 0].copy()
                with np.errstate(invalid="ignore"):  # Inf - Inf: the NaN is reported just below
                    for c in range(1, raw.shape[1]):
                        mixed += raw[:, c]
                if raw.shape[1] > 1:
                    mixed /= np.float32(raw.shape[1])
                if not np.isfinite(mixed).all():  # a NaN or Inf in any channel reaches the mean
                    _validate_samples(raw.T, name)
                chunk = mixed[np.newaxis]
            else:
                chunk = np.array(raw.T, order="C")  # a copy: raw is the reused buffer
                _validate_samples(chunk, name)
            if stream is not None:
                chunk = np.ascontiguousarray(stream.resample_chunk(chunk.T, last=False).T, dtype=np.float32)
            pending.append(chunk)
            pending_len += chunk.shape[-1]
            while pending_len >= block_len:
                joined = np.concatenate(pending, axis=-1)
                block, rest = joined[:, :block_len], joined[:, block_len:]
                total += block_len
                yield block[0] if mono else block
                pending, pending_len = [rest], rest.shape[-1]
        if stream is not None:
            tail = stream.resample_chunk(np.zeros((0, channels), np.float32), last=True)
            pending.append(np.ascontiguousarray(tail.T, dtype=np.float32))
        joined = np.concatenate(pending, axis=-1) if pending else np.zeros((channels, 0), np.float32)
        if joined.shape[-1]:
            total += joined.shape[-1]
            yield joined[0] if mono else joined
        if total == 0:
            raise EmptyAudioError(name, "no audio samples (zero-length audio)")


def n_segments(n_samples: int, *, length: int, hop: int | None = None, pad: str = "none") -> int:
    """Number of segments :func:`segment` returns for ``n_samples`` samples (before ``max_segments``)."""
    step = length if hop is None else hop
    if pad == "none":
        return 0 if n_samples < length else 1 + (n_samples - length) // step
    return max(1, -(-max(n_samples - length, 0) // step) + 1)


def segment(
    y: np.ndarray,
    *,
    length: int,
    hop: int | None = None,
    pad: str = "none",
    max_segments: int | None = None,
    source: Any = "<array>",
) -> np.ndarray:
    """Cuts a waveform into fixed-length segments along its last axis.

    The SampleCNN recipe is ``segment(y, length=59049, max_segments=10)`` on a
    29.1 s clip at 22,050 Hz (10 contiguous segments); the Choi recipe cuts 4 s
    clips at 11,025 Hz (``length=44100``).

    Args:
        y: float32 ``[..., samples]``.
        length: Segment length in samples.
        hop: Hop between segment starts in samples (``None``: ``length``, contiguous).
        pad: ``"none"`` drops a last partial segment (a clip shorter than ``length``
            raises), ``"constant"`` zero-pads it, ``"wrap"`` fills it by repeating the clip.
        max_segments: Keep at most the first this many segments.
        source: Name of the audio, used in error messages.

    Returns:
        float32 ``[..., n_segments, length]`` (a copy).

    Raises:
        ParameterError: Invalid ``length``, ``hop``, ``pad`` or ``max_segments``.
        EmptyAudioError: With ``pad="none"``, a clip shorter than one segment.
    """
    if not isinstance(length, (int, np.integer)) or length <= 0:
        raise ParameterError(f"length={length!r} is invalid: expected a positive number of samples")
    if hop is not None and (not isinstance(hop, (int, np.integer)) or hop <= 0):
        raise ParameterError(f"hop={hop!r} is invalid: expected None or a positive number of samples")
    if pad not in PAD_MODES:
        raise ParameterError(f"pad={pad!r} is invalid: expected one of {PAD_MODES}")
    if max_segments is not None and max_segments <= 0:
        raise ParameterError(f"max_segments={max_segments!r} is invalid: expected None or a positive integer")
    y = np.asarray(y, dtype=np.float32)
    n = y.shape[-1]
    if n == 0:
        raise EmptyAudioError(describe_source(source), "no audio samples (zero-length audio)")
    step = length if hop is None else hop
    count = n_segments(n, length=length, hop=hop, pad=pad)
    if count == 0:
        raise EmptyAudioError(
            describe_source(source), f"too short: {n} samples, need at least one segment of {length} samples"
        )
    if max_segments is not None:
        count = min(count, max_segments)
    needed = (count - 1) * step + length
    if needed > n:
        widths = [(0, 0)] * (y.ndim - 1) + [(0, needed - n)]
        y = np.pad(y, widths, mode="wrap" if pad == "wrap" else "constant")
    windows = np.lib.stride_tricks.sliding_window_view(y[..., :needed], length, axis=-1)[..., ::step, :]
    return np.array(windows[..., :count, :], dtype=np.float32)


def write(
    destination: str | os.PathLike[str] | IO[bytes],
    y: np.ndarray,
    *,
    sample_rate: int,
    subtype: str | None = None,
    format: str | None = None,
    normalize: bool = False,
) -> None:
    """Writes a waveform; never silently clips.

    Paths are written atomically (to a temporary file in the same folder, then
    renamed), so a crash never leaves a half-written file under the final name.

    Args:
        destination: Output path (format from its extension) or a binary file object
            (then ``format`` is required).
        y: float32 ``[samples]`` or ``[channels, samples]``.
        sample_rate: Sample rate in Hz (keyword-only).
        subtype: soundfile subtype (default: PCM_16 for WAV/FLAC, Vorbis for OGG).
        format: soundfile container name (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``).
        normalize: Scale so that the peak is just below full scale. Silence stays
            silence (no division by zero).

    Raises:
        InvalidAudioError: NaN/Inf samples, or a peak above 1.0 without ``normalize``.
        ParameterError: Bad shape, rate, format or subtype.
    """
    _check_rate(sample_rate)
    name = describe_source(destination)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim not in (1, 2):
        raise ParameterError(
            f"{name}: cannot write an array of shape {y.shape}: expected [samples] or [channels, samples]"
        )
    if not np.isfinite(y).all():
        raise InvalidAudioError(name, "refusing to write NaN or Inf samples")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if normalize and peak > 0:
        y = y * np.float32(_PEAK_TARGET / peak)
    elif peak > 1.0:
        raise InvalidAudioError(
            name, f"peak amplitude {peak:.4f} exceeds 1.0 and would clip; pass normalize=True or scale the signal"
        )
    data = y if y.ndim == 1 else y.T
    if isinstance(destination, (str, os.PathLike)):
        _write_path(os.fspath(destination), data, sample_rate=sample_rate, subtype=subtype, format=format)
        return
    if format is None:
        raise ParameterError(f"{name}: format= is required when writing to a file object")
    fmt = format.upper()
    try:
        _write_frames(destination, data, sample_rate=sample_rate, subtype=subtype or _DEFAULT_SUBTYPES.get(fmt),
                      format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ParameterError(f"{name}: cannot write {fmt}/{subtype}: {describe_error(err)}") from None


#: Most frames handed to libsndfile in one write: libvorbis allocates its analysis buffer for all the
#: frames of a call on the stack, and a long write in one call overflows it (the process dies of a
#: segmentation fault: libsndfile issue 1095, python-soundfile issues 233, 396, 426; tests/test_audio.py).
_WRITE_FRAMES = 1 << 16


def _write_frames(destination: str | IO[bytes], data: np.ndarray, *, sample_rate: int, subtype: str | None,
                  format: str) -> None:
    """Writes ``data`` (``[frames]`` or ``[frames, channels]``) through libsndfile, :data:`_WRITE_FRAMES` at a time."""
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(destination, "w", sample_rate, channels, subtype=subtype, format=format) as handle:
        for start in range(0, len(data), _WRITE_FRAMES):
            handle.write(data[start:start + _WRITE_FRAMES])


def encode(y: np.ndarray, *, sample_rate: int, format: str = "wav", normalize: bool = False) -> bytes:
    """Encodes a waveform as a file in memory (16-bit for WAV and FLAC), as :func:`write` writes it.

    Args:
        y: float32 ``[samples]`` or ``[channels, samples]``.
        sample_rate: Sample rate in Hz (keyword-only).
        format: A container :func:`write` knows: ``"wav"``, ``"flac"``, ...
        normalize: Scale the peak to just below full scale (silence stays silence).

    Returns:
        The file's bytes.

    Raises:
        InvalidAudioError: NaN/Inf samples, or a peak above 1.0 without ``normalize``.
    """
    buffer = io.BytesIO()
    write(buffer, y, sample_rate=sample_rate, format=format.upper(), normalize=normalize)
    return buffer.getvalue()


def _write_path(path: str, data: np.ndarray, *, sample_rate: int, subtype: str | None, format: str | None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1].lstrip(".").upper()
    fmt = (format or {"OGA": "OGG", "": "WAV"}.get(ext, ext)).upper()
    if fmt not in sf.available_formats():
        raise ParameterError(f"{path}: unknown audio format {fmt!r}; expected one of {sorted(_DEFAULT_SUBTYPES)}")
    try:
        with files.atomic_path(path) as tmp:
            _write_frames(tmp, data, sample_rate=sample_rate, subtype=subtype or _DEFAULT_SUBTYPES.get(fmt),
                          format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ParameterError(f"{path}: cannot write {fmt}/{subtype}: {describe_error(err)}") from None
