"""The pickle inside a model file: joblib's containers opened as a stream of pickle bytes.

Guarantees: ``open_pickle_stream(stream, limit)`` returns the decompressed pickle of a joblib
container (zlib, gzip, bz2, lzma, xz) or the stream itself for a plain pickle; reading more than
``limit`` decompressed bytes raises :class:`ContainerError` (a decompression bomb is refused, not
followed); lz4 and joblib's pre-0.10 format are refused with a reason. The upload check and the
model server read through this one function, so both see the very same bytes. Pure standard
library, no file or network access of its own.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import IO, Any

CHUNK = 1024 * 1024


class ContainerError(Exception):
    """The container cannot be opened (or decompresses past the limit)."""


class _ZlibReader(io.RawIOBase):
    """A bare zlib stream (joblib's default compressor) read as a file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._buffer:
            if self._inflate.eof:
                return 0
            data = self._raw.read(CHUNK)
            if not data:
                self._buffer = self._inflate.flush()
                if not self._buffer:
                    return 0
                break
            self._buffer = self._inflate.decompress(data, CHUNK)
            while not self._buffer and self._inflate.unconsumed_tail:
                self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, CHUNK)
        n = min(len(buf), len(self._buffer))
        buf[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        if not self._buffer and self._inflate.unconsumed_tail:
            self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, CHUNK)
        return n


class _Capped(io.RawIOBase):
    """Refuses to read past ``limit`` bytes."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._inner.read(len(buf))
        if len(data) > self._left:
            raise ContainerError("the model file decompresses to more than the size limit allows")
        self._left -= len(data)
        buf[: len(data)] = data
        return len(data)


def open_pickle_stream(stream: IO[bytes], limit: int) -> IO[bytes]:
    """The pickle inside a joblib container (or the file itself when it is a plain pickle)."""
    stream.seek(0)
    head = stream.read(8)
    stream.seek(0)
    inner: IO[bytes]
    if head.startswith(b"\x1f\x8b"):
        inner = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    elif head.startswith(b"BZh"):
        inner = bz2.BZ2File(stream, mode="rb")  # type: ignore[assignment]
    elif head.startswith((b"\xfd7zXZ", b"]\x00\x00")):
        inner = lzma.LZMAFile(stream, mode="rb")  # type: ignore[assignment]  # noqa: SIM115
    elif head.startswith(b"ZF"):
        raise ContainerError("the file is in joblib's legacy (before 0.10) format; save it again with a current joblib")
    elif head.startswith(b"\x04\x22\x4d\x18"):
        raise ContainerError("lz4-compressed joblib files are not supported; save with compress=3 (zlib) "
                             "or no compression")
    elif head[:1] == b"x":
        inner = io.BufferedReader(_ZlibReader(stream), CHUNK)
    else:
        return stream
    return io.BufferedReader(_Capped(inner, limit), CHUNK)
