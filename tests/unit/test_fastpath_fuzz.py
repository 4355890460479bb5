"""Fuzzing the fast path's core under AddressSanitizer and UBSan (issue 10: at least 1 M packets).

The extension is rebuilt by this test with ``-fsanitize=address,undefined -fno-sanitize-recover``
and ``-DFP_FUZZ`` (which adds ``Engine.fuzz``: the mutation loop in C, so a million packets take
seconds), then loaded in a child Python with libasan preloaded. The corpus is valid browser SRTP
(with odd but authentic plaintext: CSRCs, extensions, padding bits, lengths 12..1400), phone RTP,
RTCP and SRTCP, STUN and DTLS; the fuzzer sends random datagrams and mutations of them (bit flips,
byte sets, truncation, extension) to both legs from several sources, with NACK lookups. Any memory
error or undefined behaviour aborts the child: the test fails on its exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "rtc2sip" / "media" / "fastpath"
PACKETS = 1_050_000

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler (gcc): cannot build the fuzz target")

CHILD = textwrap.dedent(
    """
    import importlib.util, os, random, sys
    spec = importlib.util.spec_from_file_location("_fastpath", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    from pylibsrtp._binding import ffi, lib
    from rtc2sip.media.rtp import RtpPacket, build_rtp
    from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession

    def ctx(s): return int(ffi.cast("uintptr_t", s._ctx))
    rng = random.Random(int(sys.argv[3]))
    key, gkey, sdes = (bytes(rng.getrandbits(8) for _ in range(30)) for _ in range(3))
    keep = []
    def session(k, outbound, **kw):
        s = SrtpSession(AES128_CM_SHA1_80, k, outbound=outbound, **kw); keep.append(s); return s
    browser = session(key, True, allow_repeat_tx=True)
    phone_tx = session(sdes, True, allow_repeat_tx=True)
    e = mod.Engine(4, 4, 8)
    e.set_srtp_functions(int(ffi.cast("uintptr_t", lib.srtp_protect)), int(ffi.cast("uintptr_t", lib.srtp_unprotect)))
    s = e.add_session()
    e.set_session_keys(s, ctx(session(key, False)), ctx(session(gkey, True)))
    e.set_session_remote(s, 5, ("127.0.0.1", 4000))
    st = e.add_stream(s, -1, 1, 2, 0, 0, True, (10, 64))
    e.configure_stream(st, {0: 0, 8: 8, 96: 97}, {0: 0, 8: 8, 97: 96}, 8000, 48000)
    e.set_peer(st, ("127.0.0.1", 3000), False, True)
    for ssrc in (9, 10):
        e.learn_ssrc(s, ssrc, st)

    def odd_rtp(i):
        p = RtpPacket(rng.choice((0, 8, 96, 97, 13)), i & 0xFFFF, rng.getrandbits(32), rng.choice((9, 10, 11)),
                      bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 20, 160, 1200)))),
                      marker=rng.random() < 0.2, csrc=tuple(range(rng.choice((0, 0, 1, 15)))),
                      extension_profile=rng.choice((None, 0xBEDE, 0x1000)),
                      extension=b"\\x10\\x01\\x00\\x00" * rng.randrange(3),
                      padding_size=rng.choice((0, 0, 1, 4)))
        raw = bytearray(p.serialize())
        if rng.random() < 0.2:
            raw[0] |= rng.choice((0x10, 0x20, 0x0F))  # flags that lie about what follows
        return bytes(raw)

    corpus = []
    for i in range(300):
        plain = odd_rtp(i)
        corpus.append(plain)
        for tx in (browser, phone_tx):
            try:
                corpus.append(tx.protect(plain))
            except Exception:  # libsrtp refuses a header that lies about its extension
                pass
    rtcp = bytes.fromhex("81c90007") + (9).to_bytes(4, "big") + bytes(24)
    stun = bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("80220004") + b"test"
    corpus += [rtcp, browser.protect_rtcp(rtcp), stun,
               bytes((22, 254, 253)) + bytes(range(60)), b"", b"\\x80", b"\\x80\\xc8"]
    addrs = [("127.0.0.1", 4000), ("127.0.0.1", 3000), ("127.0.0.1", 3001), ("::1", 4000, 0, 0)]
    n = int(sys.argv[2]) // 3
    totals = {}
    for round_, (mode, sdes_on) in enumerate(((0, False), (1, False), (0, True))):
        e.set_mode(st, mode)
        if sdes_on:
            e.set_legacy_srtp(st, ctx(session(sdes, False)), ctx(session(gkey, True)))
        got = e.fuzz(corpus, addrs, st, 5, n, 1 + round_)
        for k, v in got.items():
            totals[k] = totals.get(k, 0) + v
        e.lookup(st, list(range(0, 65536, 997)))
        e.drain(16)
    e.remove_stream(st); e.remove_session(s)
    print("FUZZED", sum(totals.values()), totals)
    """
)


def test_a_million_mutated_packets_under_asan(tmp_path: Path) -> None:
    so = tmp_path / "_fastpath.so"
    include = sysconfig.get_paths()["include"]
    build = ["gcc", "-DFP_FUZZ", "-O1", "-g", "-std=gnu11", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer", "-fPIC", "-shared", f"-I{include}", str(SOURCE / "_fastpath.c"),
             str(SOURCE / "fp_core.c"), str(SOURCE / "fp_engine.c"), "-o", str(so), "-lm", "-pthread"]  # fmt: skip
    result = subprocess.run(build, capture_output=True, text=True)
    if result.returncode != 0 and "Python.h" in result.stderr:
        pytest.skip("no Python headers: cannot build the fuzz target")
    assert result.returncode == 0, result.stderr
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("gcc has no libasan")
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")  # fmt: skip
    child = subprocess.run([sys.executable, "-c", CHILD, str(so), str(PACKETS), "7"], capture_output=True, text=True,
                           env=env, timeout=300)  # fmt: skip
    assert child.returncode == 0, child.stderr[-4000:]
    line = next(x for x in child.stdout.splitlines() if x.startswith("FUZZED"))
    print(line)
    total = int(line.split()[1])
    assert total >= 1_000_000, line
    assert "send" in line and "'send': 0" not in line, line  # the mutations reached the forwarding path too
