"""Decoding through FFmpeg (PyAV) for the audio containers libsndfile does not read.

libsndfile (soundfile) reads WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF and AU. Much of a real
catalogue is in none of them: iTunes and most shops sell MP4/M4A (AAC or Apple Lossless),
downloads come as WebM or Matroska (Opus, Vorbis), older collections as WMA. :mod:`tfaural.audio`
opens every file with libsndfile first; only a file whose format libsndfile does not recognise, or
whose codec it lacks in a container it knows (Apple Lossless in CAF, FLAC in Ogg), is handed to
:class:`FFmpegAudioFile` (and an MP3 whose length libsndfile could only guess:
:mod:`tfaural.completeness`), which reads it through PyAV (FFmpeg's libraries, bundled in
PyAV's wheels: no system FFmpeg needed) behind the part of ``soundfile.SoundFile``'s interface
that :mod:`tfaural.audio` uses (``samplerate``, ``channels``, ``frames``, ``format``, ``subtype``,
``seek``, ``read``, ``close``).

Only the containers in :data:`CONTAINERS` are read. FFmpeg's probe is lenient (it will take a
few kilobytes of noise for raw MPEG audio); a file libsndfile rejected that FFmpeg sees as
something else stays an error rather than being decoded into garbage.

Samples come out as libsndfile gives them: float32 ``[frames, channels]``, integer codecs scaled
by ``2**-(bits - 1)`` (ALAC's 16-bit samples equal libsndfile's reading of the same PCM in a WAV).
Resampling and mixing stay :mod:`tfaural.audio`'s (soxr), not FFmpeg's.

Positions: in MP4 the header's duration is exact (the edit list's, without the encoder's priming
and padding, which FFmpeg drops or this reader trims), so ``frames`` is exact there; elsewhere it
is the container's estimate and readers read to the end of the stream. ``seek`` in MP4 (and
Matroska, where its timestamps count samples; by default they count milliseconds) jumps to one
second before the target by the container's index and then decodes, dropping samples by their
timestamps (the second primes codecs whose frames overlap, e.g. AAC); elsewhere it decodes from
the start and drops samples up to the target.
"""

from __future__ import annotations

import fractions
import io
import os
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from tfaural.errors import AudioDecodeError, describe_error

__all__ = ["CONTAINERS", "EXTENSIONS", "FFmpegAudioFile", "NotAudioError", "check_whole", "open_or_none",
           "truncation_slack"]

#: FFmpeg demuxer names read here → the ``format`` reported (as soundfile's upper-case names).
CONTAINERS: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4",
    "matroska,webm": "MATROSKA",
    "asf": "ASF",
    "aac": "AAC",
    "ac3": "AC3",
    "eac3": "EAC3",
    "wv": "WAVPACK",
    "ape": "APE",
    "tta": "TTA",
    "caf": "CAF",
    # Codecs libsndfile does not decode in containers it knows: MP3 or AAC in a WAV, FLAC in Ogg, ...
    "wav": "WAV",
    "ogg": "OGG",
    "w64": "W64",
    "aiff": "AIFF",
    "amr": "AMR",
    "dts": "DTS",
    "dsf": "DSF",  # DSD (one-bit) audio: FFmpeg decodes DSD64 to 352.8 kHz PCM
    "iff": "IFF",  # DSDIFF (.dff), DSD's other container (and Amiga IFF sound, which libsndfile reads first)
}
#: File name extensions of those containers (for catalogue scans; decoding goes by content, not name).
EXTENSIONS = (".m4a", ".m4b", ".mp4", ".aac", ".alac", ".webm", ".mka", ".mkv", ".wma", ".asf", ".ac3", ".eac3",
              ".wv", ".ape", ".tta", ".caf", ".amr", ".dts", ".dsf", ".dff")
# FFmpeg demuxers of formats libsndfile reads itself (its failure there means a broken file, not FFmpeg's turn).
_LIBSNDFILE_FORMATS = frozenset({"mp3", "flac"})
# Containers whose index a seek may use (when their time base counts samples: see _index_time_base).
_INDEXED = frozenset({"MP4", "MATROSKA"})
# Containers whose header states the exact number of samples (after priming and padding).
_EXACT_LENGTH = frozenset({"MP4"})
# FFmpeg's MPEG audio decoders → libsndfile's names of what they decode;
_SUBTYPES = {f"mp{layer}{kind}": f"MPEG_LAYER_{'I' * layer}" for layer in (1, 2, 3) for kind in ("", "float")}
# ... and its one-bit decoders (bit order, channel layout) → "DSD".
_SUBTYPES.update({f"dsd_{order}{layout}": "DSD" for order in ("lsbf", "msbf") for layout in ("", "_planar")})
_PREROLL_SECONDS = 1.0  # decoded before a seek target and dropped: primes overlapping codec frames
_SCALES = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63}


class NotAudioError(AudioDecodeError):
    """FFmpeg cannot read the file either, or reads it as something other than an audio container."""


class FFmpegAudioFile:
    """The first audio stream of a container, read like a ``soundfile.SoundFile``.

    Args:
        handle: A local path or a seekable binary file object (at its start).
        name: The source's name, for error messages.
        mp3: Read MPEG audio (MP3) too. libsndfile reads MP3 itself; :mod:`tfaural.audio` asks
            FFmpeg only for an MP3 whose length libsndfile can only estimate
            (:mod:`tfaural.completeness`).

    Attributes:
        samplerate: Sample rate in Hz.
        channels: Number of channels.
        frames: Samples per channel: exact in MP4, the container's estimate (or 0) elsewhere.
        frames_exact: Whether ``frames`` is exact.
        format: Container, one of :data:`CONTAINERS`' values (e.g. ``"MP4"``), or ``"MP3"``.
        subtype: Codec, upper case (e.g. ``"AAC"``, ``"ALAC"``, ``"OPUS"``; MPEG audio as libsndfile names
            it, e.g. ``"MPEG_LAYER_III"``).

    Raises:
        NotAudioError: FFmpeg cannot read it, or reads it as a container not in :data:`CONTAINERS`.
        AudioDecodeError: The container holds no audio stream, or a stream tfaural cannot use.
    """

    def __init__(self, handle: str | IO[bytes], *, name: str, mp3: bool = False) -> None:
        import av

        self._name = name
        try:
            self._container: Any = av.open(handle, mode="r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError, EOFError) as err:
            raise NotAudioError(name, f"FFmpeg cannot read it either ({describe_error(err)})") from None
        try:
            demuxer = str(self._container.format.name)
            containers = {**CONTAINERS, "mp3": "MP3"} if mp3 else CONTAINERS
            # what libsndfile reads but refused (unless asked for): not FFmpeg's to guess at
            if demuxer in _LIBSNDFILE_FORMATS and demuxer not in containers:
                raise NotAudioError(
                    name, f"FFmpeg takes it for {self._container.format.long_name} too, which libsndfile reads but "
                          f"could not decode here: the file is probably corrupt or truncated")
            if demuxer not in containers:
                raise NotAudioError(
                    name, f"FFmpeg takes it for {self._container.format.long_name} ({demuxer}), not an audio "
                          f"container tfaural reads")
            if not self._container.streams.audio:
                kinds = sorted({str(s.type) for s in self._container.streams}) or ["no streams"]
                raise AudioDecodeError(name, f"the {containers[demuxer]} container has no audio stream "
                                             f"({', '.join(kinds)})")
            self._stream = self._container.streams.audio[0]
            context = self._stream.codec_context
            self.samplerate = int(context.sample_rate or 0)
            self.channels = int(context.layout.nb_channels or 0)
            if self.samplerate <= 0 or self.channels <= 0:
                raise AudioDecodeError(name, f"its audio stream declares {self.samplerate} Hz and {self.channels} "
                                             "channel(s)")
            self.format = containers[demuxer]
            self.subtype = _SUBTYPES.get(str(context.name), str(context.name).upper())
            self.frames_exact = self.format in _EXACT_LENGTH and self._stream.duration is not None
            self.frames = self._declared_frames()
        except BaseException:
            self._container.close()
            raise
        self._decoded: Iterator[Any] = self._decode()
        self._pending = np.zeros((self.channels, 0), np.float32)  # decoded, not yet read
        self._position = 0  # index of the next sample read returns
        self._skip_to = 0  # samples before this index are dropped (after a seek)
        self._ended = False

    def _declared_frames(self) -> int:
        stream = self._stream
        if stream.duration is not None and stream.time_base:
            return int(round(stream.duration * stream.time_base * self.samplerate))
        if self._container.duration:  # in microseconds
            return int(round(self._container.duration / 1e6 * self.samplerate))
        return 0

    def _decode(self) -> Iterator[Any]:
        import av

        try:
            yield from self._container.decode(self._stream)
        except (av.FFmpegError, OSError, ValueError, EOFError) as err:
            where = ""
            if self.frames_exact and 0 <= self._position < self.frames:  # how far it got of a known length
                where = (f" at {self._position / self.samplerate:.2f} s of the {self.frames / self.samplerate:.2f} s "
                         "its header declares")
            raise AudioDecodeError(self._name, f"decoding failed{where}, the file may be truncated or corrupt "
                                               f"({describe_error(err)})") from None

    def _samples(self, frame: Any) -> np.ndarray:
        """float32 ``[channels, samples]`` of a decoded frame, integers scaled as libsndfile does."""
        if frame.sample_rate != self.samplerate or frame.layout.nb_channels != self.channels:
            raise AudioDecodeError(self._name, f"the audio changes from {self.samplerate} Hz × {self.channels} to "
                                               f"{frame.sample_rate} Hz × {frame.layout.nb_channels} mid-stream")
        kind = frame.format.name.rstrip("p")
        data = frame.to_ndarray()
        if not frame.format.is_planar:
            data = data.reshape(-1, self.channels).T
        samples = data.astype(np.float32)  # exact for 16- and 24-bit integers; scaled by a power of two: exact
        if kind == "u8":
            samples -= np.float32(128)
        if kind in _SCALES:
            samples *= np.float32(_SCALES[kind])
        return samples

    def _next_block(self) -> np.ndarray | None:
        """The next decoded samples at or after ``_skip_to`` (``None`` at the end of the stream, or of the
        samples an exact header declares: the encoder's padding is dropped)."""
        end = self.frames if self.frames_exact else None
        while True:
            frame = next(self._decoded, None)
            if frame is None or (end is not None and self._position >= end):
                return None
            block = self._samples(frame)
            if self._position < 0:  # after an index seek: place the frame by its timestamp
                if frame.pts is None:
                    raise AudioDecodeError(self._name, "cannot seek: its audio frames carry no timestamps")
                start = self._stream.start_time or 0
                self._position = int(round((frame.pts - start) * frame.time_base * self.samplerate))
                if self._position > self._skip_to:  # the index overshot: decode from the start instead
                    self._restart(start, position=0)
                    continue
            first = self._position
            if end is not None:
                block = block[:, :max(end - first, 0)]
            self._position += block.shape[1]
            if self._position <= self._skip_to:
                continue
            return block[:, max(self._skip_to - first, 0):]

    def hold_to(self, frames: int) -> None:
        """Takes ``frames`` as the stream's exact length, which the file's own header states where FFmpeg does
        not use it (a DSF file's sample count: :mod:`tfaural.completeness`): samples past it are dropped, and
        a stream that ends short of it is truncated."""
        self.frames, self.frames_exact = int(frames), True

    def seek(self, frame: int) -> int:
        """Positions the next ``read`` at sample ``frame``; returns it."""
        frame = max(int(frame), 0)
        pending = self._pending.shape[1]
        if self._position >= 0 and self._position - pending <= frame <= self._position:  # within what is decoded
            self._pending = self._pending[:, frame - (self._position - pending):]
            return frame
        base = self._index_time_base()
        if base is not None and frame > _PREROLL_SECONDS * self.samplerate:
            target = (frame / self.samplerate - _PREROLL_SECONDS) / base
            self._restart(int(target) + (self._stream.start_time or 0), position=-1)
        elif self._position < 0 or frame < self._position:
            self._restart(self._stream.start_time or 0, position=0)
        self._pending = np.zeros((self.channels, 0), np.float32)
        self._skip_to = frame
        return frame

    def _index_time_base(self) -> fractions.Fraction | None:
        """The stream's time base if a seek can go by the container's index: MP4 or Matroska whose timestamps
        count samples (Matroska's count milliseconds by default, which would misplace samples); else ``None``."""
        base = self._stream.time_base
        if self.format in _INDEXED and base and (1 / base) % self.samplerate == 0:
            return base
        return None

    def _restart(self, timestamp: int, *, position: int) -> None:
        import av

        try:
            self._container.seek(timestamp, stream=self._stream, backward=True, any_frame=False)
        except (av.FFmpegError, OSError, ValueError) as err:
            raise AudioDecodeError(self._name, f"cannot seek ({describe_error(err)})") from None
        self._decoded = self._decode()
        self._position = position
        self._ended = False

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True,
             out: np.ndarray | None = None) -> np.ndarray:
        """Reads up to ``frames`` samples per channel (``-1``: to the end).

        Returns:
            float32 ``[frames, channels]`` (a view of ``out`` when given); fewer rows at the end of
            the stream, none after it.
        """
        if dtype != "float32" or not always_2d:
            raise ValueError("FFmpegAudioFile reads float32, 2-D only")
        wanted = None if frames is None or frames < 0 else int(frames)
        parts = [self._pending]
        have = self._pending.shape[1]
        while not self._ended and (wanted is None or have < wanted):
            block = self._next_block()
            if block is None:
                self._ended = True
                break
            parts.append(block)
            have += block.shape[1]
        joined = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        take = have if wanted is None else min(wanted, have)
        self._pending = joined[:, take:]
        if self._ended and self.frames_exact:
            check_whole(self._name, ends=self._position, declared=self.frames, sample_rate=self.samplerate)
        result = joined[:, :take].T
        if out is not None:
            out[:take] = result
            return out[:take]
        return np.ascontiguousarray(result)

    def close(self) -> None:
        self._container.close()


def open_or_none(handle: str | IO[bytes], *, name: str, mp3: bool = False) -> FFmpegAudioFile | None:
    """Opens ``handle`` with FFmpeg (a file object rewound first), or ``None`` for a file object that cannot seek.

    ``mp3`` is :class:`FFmpegAudioFile`'s.
    """
    if not isinstance(handle, (str, os.PathLike)):
        try:
            handle.seek(0)
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
    return FFmpegAudioFile(handle, name=name, mp3=mp3)


def check_whole(name: str, *, ends: int, declared: int, sample_rate: int) -> None:
    """Raises an AudioDecodeError ("truncated") if audio that ``ends`` at that sample falls short of the
    ``declared`` length by more than :func:`truncation_slack`.

    Args:
        name: The source's name, for the error.
        ends: Samples per channel the decoder gave before the stream ended.
        declared: Samples per channel the file's header declares.
        sample_rate: In Hz.
    """
    if ends < declared - truncation_slack(sample_rate):
        raise AudioDecodeError(name, f"truncated: its audio ends at {ends / sample_rate:.2f} s of the "
                                     f"{declared / sample_rate:.2f} s its header declares")


def truncation_slack(sample_rate: int) -> int:
    """Samples a file's audio may end short of its header's length without being called truncated.

    At least a codec frame (AAC's 1,024 and an MP3's 1,152 samples, plus their decoders' delays):
    0.1 s at 44.1 kHz.
    """
    return max(4096, sample_rate // 10)



