"""Audio files in the containers libsndfile does not read (M4A, WebM, WMA, ...), encoded by FFmpeg through PyAV.

The tests commit no audio: they encode their own signals here, with the encoders in PyAV's wheel.
"""

from __future__ import annotations

import fractions
import io
import pathlib
import struct
from typing import Any

import av
import numpy as np

#: name → (FFmpeg encoder, muxer, extension, sample rates the encoder takes (None: any)).
KINDS: dict[str, tuple[str, str, str, tuple[int, ...] | None]] = {
    "aac-m4a": ("aac", "ipod", ".m4a", None),
    "alac-m4a": ("alac", "ipod", ".m4a", None),
    "aac-mp4": ("aac", "mp4", ".mp4", None),
    "opus-webm": ("libopus", "webm", ".webm", (48000, 24000, 16000, 12000, 8000)),
    "opus-mka": ("libopus", "matroska", ".mka", (48000, 24000, 16000, 12000, 8000)),
    "wma": ("wmav2", "asf", ".wma", None),
    "ac3": ("ac3", "ac3", ".ac3", (48000, 44100, 32000)),
    "aac-adts": ("aac", "adts", ".aac", None),
    "eac3": ("eac3", "eac3", ".eac3", (48000, 44100, 32000)),
    "wavpack": ("wavpack", "wv", ".wv", None),
    "tta": ("tta", "tta", ".tta", None),
    "alac-caf": ("alac", "caf", ".caf", None),
    # Formats libsndfile reads itself, from another encoder than its own (LAME through FFmpeg writes an ID3v2
    # tag and, unless told ``write_xing=0``, a Xing/Info frame with the LAME tag).
    "mp3-lame": ("libmp3lame", "mp3", ".mp3", None),
    "mp2": ("mp2", "mp2", ".mp2", (48000, 44100, 32000)),
    "opus-ogg": ("libopus", "ogg", ".opus", (48000, 24000, 16000, 12000, 8000)),
    "flac-ogg": ("flac", "ogg", ".oga", None),  # Ogg FLAC: libsndfile knows the container, not this codec in it
    "pcm-wav": ("pcm_s16le", "wav", ".wav", None),
    "pcm-w64": ("pcm_s16le", "w64", ".w64", None),  # Sony Wave64
}


class _Pipe(io.RawIOBase):
    """A write-only stream FFmpeg cannot seek back in (as ``ffmpeg ... pipe:1 > file``)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)


def write(path: pathlib.Path, y: np.ndarray, *, sample_rate: int, kind: str,
          options: dict[str, str] | None = None, streamed: bool = False) -> pathlib.Path:
    """Encodes float32 ``[samples]`` or ``[channels, samples]`` (in [-1, 1]) into ``path``.

    The samples are quantised to 16 bits first, so a lossless codec (ALAC) stores exactly
    ``round(y * 32767) / 32768`` as libsndfile reads a 16-bit WAV of the same signal.
    ``options`` go to the muxer (e.g. ``{"write_xing": "0"}`` for an MP3 without its Xing frame).
    ``streamed``: the muxer writes to a pipe, so it cannot go back to fill in sizes (it leaves its placeholders).
    """
    codec, muxer, _, rates = KINDS[kind]
    if rates is not None and sample_rate not in rates:
        raise ValueError(f"{kind} does not take {sample_rate} Hz")
    data = np.atleast_2d(np.asarray(y, np.float32))
    pcm = np.round(np.clip(data, -1, 1) * 32767).astype(np.int16)  # [channels, samples]
    layout = {1: "mono", 2: "stereo"}[pcm.shape[0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    pipe = _Pipe()
    with av.open(pipe if streamed else str(path), mode="w", format=muxer, options=options or {}) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = layout
        formats = [f.name for f in stream.codec_context.codec.audio_formats or ()]
        stream.format = next((f for f in ("s16p", "s16") if f in formats), formats[0])
        if codec == "wmav2":
            stream.bit_rate = 128000
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=sample_rate)
        step = 4096
        for start in range(0, pcm.shape[1], step):
            chunk = np.ascontiguousarray(pcm[:, start:start + step].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, fractions.Fraction(1, sample_rate)
            for converted in resampler.resample(frame):
                container.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    if streamed:
        path.write_bytes(bytes(pipe.data))
    return path


def video_only_mp4(path: pathlib.Path) -> pathlib.Path:
    """An MP4 holding a few frames of video and no audio stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def faststart(source: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """``source``'s packets remuxed with the MP4 index (``moov``) before the samples, as streaming sites serve them."""
    with av.open(str(source)) as reader, av.open(str(path), mode="w", format="ipod",
                                                 options={"movflags": "faststart"}) as writer:
        audio_in = reader.streams.audio[0]
        audio_out = writer.add_stream_from_template(audio_in)
        for packet in reader.demux(audio_in):
            if packet.dts is not None:
                packet.stream = audio_out
                writer.mux(packet)
    return path


#: The DSD64 rate (64 × 44.1 kHz) and FFmpeg's PCM rate for it (÷ 8).
DSD_RATE = 2_822_400
DSD_PCM_RATE = DSD_RATE // 8


def dsf(path: pathlib.Path, y: np.ndarray) -> pathlib.Path:
    """A DSF file (Sony's DSD Stream File, version 1) of ``y``: float32 ``[channels, samples]`` at
    :data:`DSD_PCM_RATE`, held ×8 and coded into one-bit DSD64 by a first-order sigma-delta modulator.

    No encoder in PyAV writes DSD; the layout is the format's specification: a "DSD " chunk, a "fmt " chunk
    (version 1, raw DSD, the channels, the rate, 1 bit, samples per channel, 4096-byte blocks) and a "data"
    chunk of 4096-byte blocks per channel in turn, least significant bit first.
    """
    data = np.atleast_2d(np.asarray(y, np.float64))
    held = np.repeat(np.clip(data, -1, 1), 8, axis=1)
    bits = np.diff(np.floor(np.cumsum((held + 1) / 2, axis=1)), axis=1, prepend=0).astype(np.uint8)  # density (x+1)/2
    samples = bits.shape[1]
    block = 4096
    packed = np.packbits(bits, axis=1, bitorder="little")
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % block)))
    blocks = packed.reshape(packed.shape[0], -1, block).transpose(1, 0, 2).tobytes()  # block 0 of each channel, ...
    channel_type = {1: 1, 2: 2}[bits.shape[0]]
    fmt = b"fmt " + struct.pack("<QIIIIIIQII", 52, 1, 0, channel_type, bits.shape[0], DSD_RATE, 1, samples, block, 0)
    chunk = b"data" + struct.pack("<Q", 12 + len(blocks)) + blocks
    head = b"DSD " + struct.pack("<QQQ", 28, 28 + len(fmt) + len(chunk), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + fmt + chunk)
    return path


def dsdiff(path: pathlib.Path, y: np.ndarray) -> pathlib.Path:
    """A DSDIFF file (Philips' DSD Interchange File Format 1.5, ``.dff``) of stereo ``y``: float32
    ``[2, samples]`` at :data:`DSD_PCM_RATE`, coded into one-bit DSD64 as :func:`dsf` does.

    The layout is the format's specification: a "FRM8" chunk of form type "DSD " holding "FVER" (1.5),
    "PROP" ("SND ": "FS  " the rate, "CHNL" the channels' IDs, "CMPR" "DSD " not compressed) and a "DSD "
    chunk of one byte per channel in turn, most significant (earliest) bit first; sizes are 64-bit big-endian.
    """
    data = np.atleast_2d(np.asarray(y, np.float64))
    if data.shape[0] != 2:
        raise ValueError("dsdiff writes stereo")
    held = np.repeat(np.clip(data, -1, 1), 8, axis=1)
    bits = np.diff(np.floor(np.cumsum((held + 1) / 2, axis=1)), axis=1, prepend=0).astype(np.uint8)
    samples = bits.shape[1] - bits.shape[1] % 8  # whole bytes
    packed = np.packbits(bits[:, :samples], axis=1, bitorder="big")  # [channels, bytes]
    sound = packed.T.tobytes()  # byte 0 of each channel, byte 1, ...

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack(">Q", len(body)) + body + b"\0" * (len(body) % 2)

    name = b"not compressed"
    prop = b"SND " + chunk(b"FS  ", struct.pack(">I", DSD_RATE)) + chunk(b"CHNL", struct.pack(">H", 2) + b"SLFTSRGT")
    prop += chunk(b"CMPR", b"DSD " + bytes([len(name)]) + name + b"\0" * ((len(name) + 1) % 2))
    form = b"DSD " + chunk(b"FVER", struct.pack(">I", 0x01050000)) + chunk(b"PROP", prop) + chunk(b"DSD ", sound)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chunk(b"FRM8", form))
    return path


def without_xing_frame(data: bytes) -> bytes:
    """An MPEG-1 Layer III file (no ID3v2 tag in front, as libsndfile writes them) without its first frame, the
    one that carries the Xing/Info tag: the length of what remains is nowhere in the file."""
    header = int.from_bytes(data[:4], "big")
    assert header >> 21 == 0x7FF and header >> 19 & 3 == 3 and header >> 17 & 3 == 1, "not MPEG-1 Layer III"
    mono = header >> 6 & 3 == 3
    assert data[21 if mono else 36:(21 if mono else 36) + 4] in (b"Xing", b"Info"), "no Xing/Info frame first"
    kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[header >> 12 & 0xF]
    rate = (44100, 48000, 32000)[header >> 10 & 3]
    size = 144 * kbps * 1000 // rate + (header >> 9 & 1)
    assert data[size] == 0xFF, "the next frame does not start where the first one ends"
    return data[size:]
