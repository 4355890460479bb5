"""The media plane between a real Chromium RTCPeerConnection and a plain RTP phone, without SIP.

The browser (fake microphone: a 1000 Hz sine) and the Python phone (PCMU, a 440 Hz sine) exchange
SDP only through MediaPlane, as the B2BUA will. Proof that media crossed, each way: packets counted
at the receiver, audio energy, and the frequency each side hears is the other side's tone.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from harness import Artifacts, Browser
from harness.tone import analyse_samples

from rtc2sip.config import Settings
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.plane import MediaPlane
from rtc2sip.media.rtp import RtpPacket, build_rtp
from rtc2sip.sdp import SessionDescription

BARE_PC_JS = Path(__file__).parent / "js" / "page" / "bare_pc.js"
BROWSER_TONE = 1000.0
PHONE_TONE = 440.0
RATE = 8000
Address = tuple[str, int]


# --- G.711 µ-law (ITU-T G.711; audioop is deprecated) -----------------------------------------------


def _ulaw_decode(byte: int) -> int:
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


ULAW_DECODE = [_ulaw_decode(b) for b in range(256)]


def ulaw_encode(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    while exponent and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


def tone_pcmu(frequency: float, seconds: float = 1.0, amplitude: float = 0.3) -> bytes:
    n = int(RATE * seconds)
    return bytes(ulaw_encode(round(amplitude * 32767 * math.sin(2 * math.pi * frequency * i / RATE))) for i in range(n))


# --- the legacy phone --------------------------------------------------------------------------------


class RtpPhone(asyncio.DatagramProtocol):
    """Plays a PCMU tone every 20 ms (RFC 3551 §4.5.14) toward the gateway; records what it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.received: list[RtpPacket] = []
        self._task: asyncio.Task[None] | None = None
        self._tone = tone_pcmu(PHONE_TONE)

    async def start(self) -> RtpPhone:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) >= 12 and not 191 < data[1] < 224:
            self.received.append(RtpPacket.parse(data))

    def sdp(self, *, offer: bool) -> SessionDescription:
        del offer  # the same body serves as offer and answer: PCMU only
        return SessionDescription.parse(
            f"v=0\r\no=- 42 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        )

    def play(self, dest: Address) -> None:
        self._task = asyncio.get_running_loop().create_task(self._play(dest))

    async def _play(self, dest: Address) -> None:
        assert self.transport is not None
        start = time.monotonic()
        seq = 0
        while True:
            offset = (seq * 160) % len(self._tone)
            self.transport.sendto(build_rtp(0, seq, seq * 160, 0x5EED, self._tone[offset : offset + 160]), dest)
            seq += 1
            await asyncio.sleep(max(0.0, start + seq * 0.02 - time.monotonic()))

    def heard(self) -> tuple[float, float, int]:
        """(dominant Hz, RMS, packets) of the PCMU received."""
        pcm = [ULAW_DECODE[b] / 32768.0 for p in self.received if p.payload_type == 0 for b in p.payload]
        result = analyse_samples(pcm, RATE)
        return result.frequency, result.rms, len(self.received)

    def save(self, path: Path) -> None:
        import wave

        pcm = array.array("h", (ULAW_DECODE[b] for p in self.received for b in p.payload))
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()


# --- helpers -----------------------------------------------------------------------------------------


async def js(browser: Browser, expr: str, timeout: float = 20.0) -> Any:
    """Evaluate in the page without blocking the event loop the media plane runs on."""
    return await asyncio.to_thread(browser.eval, expr, timeout)


async def poll(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fetch()
        if ok(last):
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def gateway_legacy_address(sdp: SessionDescription) -> Address:
    conn = sdp.media[0].connection
    assert conn is not None
    return conn.host, sdp.media[0].port


async def open_bare_browser(make_browser: Callable[..., Browser]) -> Browser:
    browser = await asyncio.to_thread(make_browser, "alice", tone_hz=BROWSER_TONE)
    assert await js(browser, BARE_PC_JS.read_text()) is True
    return browser


async def check_media(browser: Browser, phone: RtpPhone, plane: MediaPlane, session: str, artifacts: Artifacts) -> None:
    """Both directions, at the receivers: packets, energy, and the other side's tone."""
    stats = await poll(lambda: js(browser, "window.bare.stats()"),
                       lambda s: bool(s and s["inbound"] and s["inbound"].get("packetsReceived", 0) >= 100
                                      and s["inbound"].get("totalAudioEnergy", 0) > 0),
                       20, "browser inbound audio")
    tone = await poll(lambda: js(browser, "window.bare.tone(5)"),
                      lambda t: abs(t["frequency"] - PHONE_TONE) < 25, 15, f"browser hearing {PHONE_TONE:g} Hz")
    await poll(lambda: asyncio.sleep(0, len(phone.received)), lambda n: n >= 150, 15, "phone receiving PCMU")
    hz, rms, packets = phone.heard()
    phone.save(artifacts.path("phone-heard.wav"))
    plane_stats: Any = plane.stats(session)
    summary = {"browser": stats, "browser_tone": tone, "phone": {"hz": hz, "rms": rms, "packets": packets},
               "plane": plane_stats}
    artifacts.path("media.json").write_text(json.dumps(summary, indent=2, default=str))
    inbound = stats["inbound"]
    print(f"browser: {inbound['packetsReceived']} packets in, energy {inbound['totalAudioEnergy']:.3f}, hears"
          f" {tone['frequency']:.1f} Hz; phone: {packets} packets, hears {hz:.1f} Hz (rms {rms:.3f})")
    assert stats["inbound"]["codec"] == "audio/PCMU"
    assert stats["transport"]["dtlsState"] == "connected"
    assert abs(hz - BROWSER_TONE) < 10, f"the phone heard {hz} Hz"
    assert rms > 0.01
    assert {p.payload_type for p in phone.received} <= {0, 101}
    assert plane_stats["webrtc"]["packets_in"] > 0 and plane_stats["legacy"]["packets_in"] > 0
    assert plane_stats["failed"] is None


# --- tests -------------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_chromium_offer_to_phone(make_browser: Callable[..., Browser], artifacts: Artifacts) -> None:
    browser = await open_bare_browser(make_browser)
    plane = MediaPlane(Settings(), Certificate.generate(), port_range=(30000, 30999))
    phone = await RtpPhone().start()
    try:
        offer = SessionDescription.parse(await js(browser, "window.bare.offer()"))
        session, legacy_offer = await plane.offer_from_webrtc("e2e-1", offer)
        artifacts.path("legacy-offer.sdp").write_text(str(legacy_offer))
        browser_answer = await plane.answer_from_legacy(session, phone.sdp(offer=False))
        artifacts.path("browser-answer.sdp").write_text(str(browser_answer))
        assert await js(browser, f"window.bare.acceptAnswer({json.dumps(str(browser_answer))})") is True
        phone.play(gateway_legacy_address(legacy_offer))
        await check_media(browser, phone, plane, session, artifacts)
        await plane.delete(session)
        assert plane.ports.in_use == 0
    finally:
        phone.close()
        await plane.close()
        await js(browser, "window.bare.close()")


@pytest.mark.e2e
async def test_phone_offer_to_chromium(make_browser: Callable[..., Browser], artifacts: Artifacts) -> None:
    browser = await open_bare_browser(make_browser)
    plane = MediaPlane(Settings(), Certificate.generate(), port_range=(31000, 31999))
    phone = await RtpPhone().start()
    try:
        session, browser_offer = await plane.offer_from_legacy("e2e-2", phone.sdp(offer=True))
        artifacts.path("browser-offer.sdp").write_text(str(browser_offer))
        answer = SessionDescription.parse(await js(browser, f"window.bare.answer({json.dumps(str(browser_offer))})"))
        assert answer.media[0].setup == "active"  # Chrome's choice: so the gateway is the DTLS server
        legacy_answer = await plane.answer_from_webrtc(session, answer)
        artifacts.path("legacy-answer.sdp").write_text(str(legacy_answer))
        phone.play(gateway_legacy_address(legacy_answer))
        await check_media(browser, phone, plane, session, artifacts)
        await plane.delete(session)
        assert plane.ports.in_use == 0
    finally:
        phone.close()
        await plane.close()
        await js(browser, "window.bare.close()")
