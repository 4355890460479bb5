"""The C library, for the few calls Python's standard library lacks (``recvmmsg``/``sendmmsg``,
``malloc_trim``, ``prctl``): loaded once, with errno kept, shared by the media modules."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["libc"]


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The process's C library, or None where it cannot be loaded (the callers then do without)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
