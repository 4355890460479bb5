"""The channel between the gateway and a media worker process (rtc2sip.media.worker), sans-I/O.

A stream socket (a socketpair the worker inherits) carries frames: a 4-byte big-endian length, then a
pickled tuple. Both ends are the same program, so pickle is the codec (nothing else writes to the
socket); frames are bounded by :data:`MAX_FRAME` all the same, so that a bug cannot make one end
allocate without limit. Messages:

- ``("call", id, method, args)`` gateway → worker: one media plane API call;
- ``("ok", id, result)`` / ``("error", id, exception)`` worker → gateway: its outcome; the exception is
  the plane's own (SdpError and NoCommonCodec keep their class, so the B2BUA answers 488 as in-process),
  or a :class:`~rtc2sip.media.plane.MediaPlaneError` with its text when it does not pickle;
- ``("event", name, args)`` worker → gateway: failure, keyframe request, DTMF digit of a remote sink.

SDP crosses as text and is parsed again on the other side (the same text the B2BUA would send).
"""

from __future__ import annotations

import io
import pickle
import struct
from types import MappingProxyType
from typing import Any

__all__ = ["MAX_FRAME", "ChannelError", "FrameDecoder", "decode_exception", "encode_exception", "frame"]

MAX_FRAME = 16 << 20  # a stats snapshot of thousands of sessions fits; a garbage length does not
_LENGTH = struct.Struct("!I")


class ChannelError(Exception):
    """The peer sent something that is not a frame of this protocol (the channel is then closed)."""


def _mapping_proxy(data: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(data)


class _Pickler(pickle.Pickler):
    """Pickles Settings too: their read-only mappings (MappingProxyType) go as plain dicts."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is MappingProxyType:
            return _mapping_proxy, (dict(obj),)
        return NotImplemented


def dumps(message: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    return buf.getvalue()


def frame(message: object) -> bytes:
    """One message, length-prefixed, ready for the socket."""
    body = dumps(message)
    if len(body) > MAX_FRAME:
        raise ChannelError(f"message of {len(body)} bytes over the {MAX_FRAME}-byte frame limit")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Bytes in (:meth:`feed`), messages out: any split of the stream gives the same messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        while len(self._buf) >= 4:
            (size,) = _LENGTH.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ChannelError(f"frame of {size} bytes announced, over the {MAX_FRAME}-byte limit")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                out.append(pickle.loads(body))
            except Exception as exc:
                raise ChannelError(f"undecodable frame: {exc!r}") from exc
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return len(self._buf)


def encode_exception(exc: BaseException) -> object:
    """The exception itself when it survives a round trip through pickle, else its class name and text."""
    try:
        data = dumps(exc)
        pickle.loads(data)
    except Exception:
        return (type(exc).__name__, str(exc))
    return exc


def decode_exception(value: object) -> BaseException:
    if isinstance(value, BaseException):
        return value
    from .plane import MediaPlaneError

    if isinstance(value, tuple) and len(value) == 2:
        return MediaPlaneError(f"{value[0]}: {value[1]}")
    return MediaPlaneError(f"media worker error: {value!r}")
