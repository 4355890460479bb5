"""Declares rtc2sip's one optional C extension, the media fast path (rtc2sip.media.fastpath._fastpath).

Everything else about the package is in pyproject.toml. The extension needs only a C compiler and
Python's headers: libsrtp is not linked, its functions are taken at run time from pylibsrtp's own
compiled module (see rtc2sip/media/fastpath/__init__.py for why). When it cannot be built, the
install goes on without it and rtc2sip.media.fastpath.available is False (the Python path relays).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the fast path is optional."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (distutils' CCompilerError and friends)
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # missing Python.h, compiler error
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        print(f"WARNING: rtc2sip's media fast path was not built ({exc}); the Python path relays", file=sys.stderr)


FASTPATH = "src/rtc2sip/media/fastpath/"

setup(
    ext_modules=[
        Extension(
            "rtc2sip.media.fastpath._fastpath",
            sources=[FASTPATH + "_fastpath.c", FASTPATH + "fp_core.c", FASTPATH + "fp_engine.c"],
            depends=[FASTPATH + "fp_core.h", FASTPATH + "fp_engine.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            extra_link_args=["-lm", "-pthread"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
