"""What a file's own bytes say about whether it holds all of its audio, where its decoder does not check
(and, for a file no decoder takes, whether it is macOS's resource fork rather than audio:
:func:`is_apple_double`).

libsndfile reads a cut file to what remains, silently, in two formats whose length is not in a
header it holds the file to (and FFmpeg, which :mod:`tfaural.audio` asks for FLAC in Ogg, does too);
so does FFmpeg in a third (DSD, below):

- **MP3** is a bare sequence of MPEG audio frames; nothing in the format says how many there
  are. Encoders therefore write one silent first frame that carries a header stating the count:
  LAME's ``Xing`` (variable bit rate) or ``Info`` (constant bit rate) tag, or Fraunhofer's
  ``VBRI`` tag. libsndfile takes its length from that count when there is one (so a shorter
  decode means a truncated file) and otherwise *estimates* it from the file's size and the first
  frame's bit rate, which is right only at a constant bit rate: for a variable-bit-rate file
  without the header it may declare a fraction of the file, and it stops reading there.
  :func:`mp3_declared_frames` finds the count; :mod:`tfaural.audio` reads an MP3 without one
  through FFmpeg, which decodes to the end of the stream.
- **Ogg** (Vorbis, Opus) ends with a page flagged end-of-stream. libsndfile takes the length from
  the last complete page and drops a partial one (Vorbis pages hold up to seconds of audio; a
  file cut in its second page reads as no audio at all). :func:`ogg_truncation` says whether
  the file's last page is whole and ends the stream.

The MP3 layout (ISO/IEC 11172-3 and 13818-3 for the frame header and side information; LAME's
and Fraunhofer's documentation for the tags):

- an optional ID3v2 tag: ``"ID3"``, version (2 bytes), flags (1), size (4 bytes of 7 bits),
  and a 10-byte footer if flag bit 4 is set;
- the first frame: a 4-byte header (11 sync bits, version, layer, CRC, bit rate, sample rate,
  padding, channel mode), a 2-byte CRC when the protection bit is 0, the Layer III side
  information (17 or 32 bytes in MPEG-1, 9 or 17 in MPEG-2 and 2.5, mono or not), then
  ``"Xing"`` or ``"Info"``, 4 bytes of flags, and the frame count if flag bit 0 is set;
- or, 32 bytes after the frame header whatever the mode, ``"VBRI"``, version, delay, quality
  (2 bytes each), the stream's bytes (4) and its frame count (4).

**DSD** (one-bit audio) comes in Sony's DSF and Philips' DSDIFF. FFmpeg, which :mod:`tfaural.audio`
asks for both, reads a cut DSF file to what remains and takes its length from the data's size (whole
4,096-byte blocks) rather than from its header's sample count; :func:`dsd_declared_frames` reads the
count (DSF: the ``"fmt "`` chunk's 64-bit sample count per channel at byte 64, after the 28-byte ``"DSD "``
chunk and 36 bytes of ``"fmt "``, little-endian; DSDIFF: the size of the ``"DSD "`` sound chunk inside the
``"FRM8"`` form, one byte per channel in turn, and the channel count of ``"PROP"``'s ``"CHNL"`` chunk;
64-bit big-endian sizes, chunks padded to even lengths).

The Ogg page header (RFC 3533): ``"OggS"``, version 0, header type (bit 2: end of stream),
granule position (8 bytes), serial number (4), page sequence number (4), CRC (4), the number
of segments (1) and their lengths (1 byte each); the page's data follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, TypeVar

__all__ = ["dsd_declared_frames", "is_apple_double", "mp3_declared_frames", "ogg_truncation"]

_T = TypeVar("_T")

# How far past the ID3v2 tag an MP3's first frame is looked for (encoders write it at once;
# some tools leave padding or junk before it).
_MP3_SEARCH_BYTES = 64 * 1024
_VBRI_OFFSET = 4 + 32
# Bytes of the first frame that hold either tag: header, CRC, side information, Xing tag and count
# (4 + 2 + 32 + 12), or header, VBRI's 32 bytes and its tag up to the count (4 + 32 + 18).
_FRAME_HEAD_BYTES = _VBRI_OFFSET + 18

# A DSDIFF file's property chunks come before its sound; a few kB, unless a long comment precedes them.
_DSD_HEAD_BYTES = 64 * 1024

_APPLE_DOUBLE = b"\x00\x05\x16\x07"  # AppleDouble's magic number (RFC 1740)

_OGG_CAPTURE = b"OggS\x00"
_OGG_HEADER_BYTES = 27
_OGG_EOS = 0x04
# The largest Ogg page: its header, 255 segment lengths and 255 segments of 255 bytes.
_OGG_MAX_PAGE = _OGG_HEADER_BYTES + 255 + 255 * 255


def mp3_declared_frames(file: str | os.PathLike[str] | IO[bytes]) -> int | None:
    """The number of MPEG frames an MP3's Xing, Info or VBRI header declares.

    Args:
        file: A path, or a seekable binary file object (read from its start and left where it was).

    Returns:
        The declared number of frames (each 1,152 samples in MPEG-1 Layer III, 576 in
        MPEG-2 and 2.5), or ``None`` if the first frame carries no such header, or a count of 0,
        or no MPEG Layer III frame is found where one should start.

    Raises:
        OSError: If the file cannot be read or a file object cannot seek.
    """
    return _reading(file, _mp3_declared_frames)


def ogg_truncation(file: str | os.PathLike[str] | IO[bytes]) -> str | None:
    """Why an Ogg file is truncated, if it is: its last page is cut short or does not end the stream.

    Bytes after a whole end-of-stream page (a tag some tool appended) are not a truncation.

    Args:
        file: A path, or a seekable binary file object (left where it was).

    Returns:
        The reason (e.g. ``"its last Ogg page is cut short (2,345 of its 4,123 bytes)"``), or
        ``None`` for a file whose last page is whole and flagged end-of-stream.

    Raises:
        OSError: If the file cannot be read or a file object cannot seek.
    """
    return _reading(file, _ogg_truncation)


def dsd_declared_frames(file: str | os.PathLike[str] | IO[bytes]) -> int | None:
    """The length a DSF or DSDIFF file's header declares, in FFmpeg's PCM frames (8 one-bit samples each).

    Args:
        file: A path, or a seekable binary file object (left where it was).

    Returns:
        Frames per channel at an eighth of the DSD rate (352.8 kHz for DSD64), or ``None`` if the file is
        neither, its audio is not one-bit DSD (DSDIFF's DST compression), or its header does not say.

    Raises:
        OSError: If the file cannot be read or a file object cannot seek.
    """
    return _reading(file, _dsd_declared_frames)


def is_apple_double(file: str | os.PathLike[str] | IO[bytes]) -> bool:
    """Whether the file is an AppleDouble file: no audio at all, but the resource fork that macOS writes as
    ``._song.mp3`` beside each file it copies to a disk that cannot keep its metadata (RFC 1740).

    Args:
        file: A path, or a seekable binary file object (read from its start, left where it was).

    Raises:
        OSError: If the file cannot be read or a file object cannot seek.
    """
    return _reading(file, _is_apple_double)


def _reading(file: str | os.PathLike[str] | IO[bytes], read: Callable[[IO[bytes]], _T]) -> _T:
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return read(handle)
    position = file.tell()
    try:
        return read(file)
    finally:
        file.seek(position)


def _is_apple_double(handle: IO[bytes]) -> bool:
    handle.seek(0)
    return handle.read(4) == _APPLE_DOUBLE


def _mp3_declared_frames(handle: IO[bytes]) -> int | None:
    handle.seek(0)
    head = handle.read(10)
    start = 0
    if len(head) == 10 and head[:3] == b"ID3":
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    handle.seek(start)
    window = handle.read(4096)  # the first frame nearly always starts here: read on only if it does not
    found = _first_layer3_frame(window)
    if found is None and len(window) == 4096:
        window += handle.read(_MP3_SEARCH_BYTES + _FRAME_HEAD_BYTES - len(window))
        found = _first_layer3_frame(window)
    return None if found is None else _mp3_count(*found)


def _first_layer3_frame(window: bytes) -> tuple[bytes, int] | None:
    """The first valid MPEG Layer III frame in ``window`` (the bytes that hold its tags), and where in them a
    Xing/Info tag would start."""
    offset = window.find(b"\xff", 0, _MP3_SEARCH_BYTES)
    while offset >= 0:
        frame = window[offset:offset + _FRAME_HEAD_BYTES]
        info_offset = _layer3_info_offset(frame)
        if len(frame) == _FRAME_HEAD_BYTES and info_offset is not None:
            return frame, info_offset
        offset = window.find(b"\xff", offset + 1, _MP3_SEARCH_BYTES)
    return None


def _layer3_info_offset(frame: bytes) -> int | None:
    """Where a Xing/Info tag would start in ``frame`` if it begins with a valid Layer III header."""
    if len(frame) < 4:
        return None
    header = int.from_bytes(frame[:4], "big")
    if header >> 21 != 0x7FF:
        return None
    version = header >> 19 & 3  # 0: MPEG-2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
    layer = header >> 17 & 3  # 1: Layer III
    bitrate = header >> 12 & 0xF
    sample_rate = header >> 10 & 3
    if version == 1 or layer != 1 or bitrate in (0, 0xF) or sample_rate == 3:
        return None
    mono = header >> 6 & 3 == 3
    crc = 0 if header >> 16 & 1 else 2
    side_info = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    return 4 + crc + side_info


def _mp3_count(frame: bytes, info_offset: int) -> int | None:
    """The frame count of the Xing/Info tag at ``info_offset`` or of a VBRI tag, if either is there."""
    tag = frame[info_offset:info_offset + 12]
    if len(tag) == 12 and tag[:4] in (b"Xing", b"Info"):
        flags = int.from_bytes(tag[4:8], "big")
        return (int.from_bytes(tag[8:12], "big") or None) if flags & 1 else None
    vbri = frame[_VBRI_OFFSET:_VBRI_OFFSET + 18]
    if len(vbri) == 18 and vbri[:4] == b"VBRI":
        return int.from_bytes(vbri[14:18], "big") or None
    return None


def _ogg_truncation(handle: IO[bytes]) -> str | None:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    for window in (16 * 1024, 2 * _OGG_MAX_PAGE):  # pages are a few kB: the last one is nearly always in 16 kB
        start = max(0, size - window)
        handle.seek(start)
        tail = handle.read(size - start)
        at = tail.rfind(_OGG_CAPTURE)
        if at >= 0 or start == 0:
            break
    if at < 0:  # no page in the last 130 kB: nothing to judge by (libsndfile found its pages)
        return None
    page = tail[at:]
    if len(page) < _OGG_HEADER_BYTES or len(page) < _OGG_HEADER_BYTES + page[26]:
        return f"its last Ogg page is cut short in its header ({len(page):,} bytes)"
    length = _OGG_HEADER_BYTES + page[26] + sum(page[_OGG_HEADER_BYTES:_OGG_HEADER_BYTES + page[26]])
    if len(page) < length:
        return f"its last Ogg page is cut short ({len(page):,} of its {length:,} bytes)"
    after = page[length:]
    if after and _OGG_CAPTURE.startswith(after):
        return f"its last Ogg page is cut short ({len(after)} bytes of its header)"
    if not page[5] & _OGG_EOS and not after:
        return "its last Ogg page does not end the stream (it lacks the end-of-stream flag)"
    # A whole end-of-stream page, whatever follows it (a tag some tool appended); or bytes after a page that
    # does not end the stream, which are no page: too odd to judge, the decoder's reading stands.
    return None


def _dsd_declared_frames(handle: IO[bytes]) -> int | None:
    handle.seek(0)
    head = handle.read(_DSD_HEAD_BYTES)
    if head[:4] == b"DSD " and head[28:32] == b"fmt " and len(head) >= 72:
        bits = int.from_bytes(head[60:64], "little")
        return int.from_bytes(head[64:72], "little") // 8 if bits == 1 else None
    if head[:4] != b"FRM8" or head[12:16] != b"DSD ":
        return None
    channels = None
    at = 16
    while at + 12 <= len(head):
        kind, size = head[at:at + 4], int.from_bytes(head[at + 4:at + 12], "big")
        body = head[at + 12:at + 12 + size]
        if kind == b"PROP" and body[:4] == b"SND ":
            channels = _dsdiff_channels(body[4:])
        elif kind == b"DSD ":
            return size // channels if channels else None
        elif kind == b"DST ":
            return None
        at += 12 + size + size % 2
    return None


def _dsdiff_channels(chunks: bytes) -> int | None:
    at = 0
    while at + 14 <= len(chunks):
        kind, size = chunks[at:at + 4], int.from_bytes(chunks[at + 4:at + 12], "big")
        if kind == b"CHNL":
            return int.from_bytes(chunks[at + 12:at + 14], "big") or None
        at += 12 + size + size % 2
    return None
