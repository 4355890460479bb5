"""Chromium + JsSIP (or SIP.js) phones, driven from Python through tests/e2e/js/driver.mjs (playwright-core).

One `BrowserDriver` (a node process) hosts any number of `Browser` phones; each phone is its own
Chromium process, because the fake microphone (`--use-file-for-fake-audio-capture`) is per process
and each side of a call must play its own tone.

A phone's page runs JsSIP 3.13 (`stack="jssip"`, js/page/app.js) or SIP.js 0.21 (`stack="sipjs"`,
js/page/sipjs_app.js); both expose the same `window.rtc` and the same events, so `Browser` drives
either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from .artifacts import Artifacts
from .procs import HarnessError, Proc, wait_for
from .tone import write_tone_wav

__all__ = ["JS_DIR", "Browser", "BrowserDriver", "Stack", "js_ready", "non_loopback_interfaces"]

Stack = Literal["jssip", "sipjs"]
# the bundle each stack's page loads (package.json's build script makes them)
BUNDLES: dict[Stack, str] = {"jssip": "jssip.js", "sipjs": "sipjs.js"}

JS_DIR = Path(__file__).resolve().parents[1] / "js"
MIN_NODE_MAJOR = 20  # playwright-core 1.65
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def js_ready(js_dir: Path = JS_DIR, stack: Stack = "jssip") -> str | None:
    """Why the browser side cannot run (None when it can): scripts/test.sh installs and bundles it."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return f"cannot tell the version of {node} ({version!r})"
    if major < MIN_NODE_MAJOR:
        return f"node {version} is too old for playwright-core (needs >= {MIN_NODE_MAJOR})"
    if not (js_dir / "node_modules" / "playwright-core").is_dir():
        return f"playwright-core is not installed in {js_dir} (run scripts/test.sh, or npm ci there)"
    bundle = BUNDLES[stack]
    if not (js_dir / "dist" / bundle).is_file():
        return f"{js_dir}/dist/{bundle} is missing (run scripts/test.sh, or npm run build there)"
    chromium = os.environ.get("RTC2SIP_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return f"{chromium} is missing (apt-get install chromium)"
    return None


def non_loopback_interfaces() -> list[str]:
    """Network interfaces other than lo that are up, in this process's network namespace.

    Chromium prefers them over loopback for ICE, so a browser test is only trustworthy where this is
    empty (scripts/test.sh runs pytest in such a namespace). Asked of the kernel (if_nameindex and
    SIOCGIFFLAGS): /sys/class/net still lists the host's interfaces inside `unshare --net`.
    """
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                ifreq = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack("16sH", name.encode()[:15], 0))
            except OSError:
                continue
            flags = struct.unpack("16sH", ifreq[:18])[1]
            if flags & _IFF_UP:
                out.append(name)
    return out


class BrowserDriver:
    """The node driver process; `open()` gives phones. Lines in, lines out, answered by id."""

    def __init__(self, artifacts: Artifacts, *, js_dir: Path = JS_DIR, node: str = "node") -> None:
        self.artifacts = artifacts
        self.js_dir = js_dir
        self.node = shutil.which(node) or node
        self.dir = artifacts.subdir("browsers")
        self.proc = Proc("browser-driver", [self.node, js_dir / "driver.mjs"], self.dir / "driver.log", cwd=js_dir)
        self.url: str | None = None
        self.browsers: dict[str, Browser] = {}
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._eof = False
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="rtc2sip-chromium-"))

    def start(self, timeout: float = 20.0) -> BrowserDriver:
        self.artifacts.add_log("browser driver", self.proc.log_path)
        self.proc.start(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        threading.Thread(target=self._read_loop, name="browser-driver", daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(e.get("event") == "ready" for e in self._events):
                fatal = next((e for e in self._events if e.get("event") == "fatal"), None)
                left = deadline - time.monotonic()
                if fatal or self._eof or left <= 0:
                    raise HarnessError(f"browser driver did not start: {fatal}\n{self.proc.tail()}")
                self._cond.wait(left)
            ready = next(e for e in self._events if e.get("event") == "ready")
        self.url = str(ready["url"])
        return self

    def _read_loop(self) -> None:
        assert self.proc.popen is not None and self.proc.popen.stdout is not None
        for raw in self.proc.popen.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if "id" in msg:
                    self._replies[int(msg["id"])] = msg
                else:
                    self._events.append(msg)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def request(self, cmd: str, timeout: float = 15.0, **fields: Any) -> Any:
        """Send one command and wait for its answer; raises HarnessError with the driver's error."""
        proc = self.proc.popen
        if proc is None or proc.stdin is None or not self.proc.running:
            raise HarnessError(f"browser driver is not running\n{self.proc.tail()}")
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        line = json.dumps({"id": ident, "cmd": cmd, **fields}) + "\n"
        with self._write_lock:
            proc.stdin.write(line.encode())
            proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if self._eof:
                    raise HarnessError(f"browser driver exited during {cmd}\n{self.proc.tail()}")
                if left <= 0:
                    raise HarnessError(f"browser driver: no answer to {cmd} {fields.get('fn', '')} in {timeout:g}s")
                self._cond.wait(left)
            reply = self._replies.pop(ident)
        if not reply.get("ok"):
            raise HarnessError(f"browser {fields.get('page', '')} {cmd} {fields.get('fn', '')}: {reply.get('error')}")
        return reply.get("result")

    def open(self, name: str, *, tone_hz: float | None = 1000.0, extra_args: list[str] | None = None,
             stack: Stack = "jssip") -> Browser:
        """A new Chromium with one phone page on `stack`; it plays a sine at `tone_hz` as its
        microphone (None: Chromium's default beep)."""
        if name in self.browsers:
            raise HarnessError(f"browser {name} already open")
        reason = js_ready(self.js_dir, stack)
        if reason:
            raise HarnessError(reason)
        wav = None
        if tone_hz is not None:
            wav = write_tone_wav(self.dir / f"{name}-tone-{tone_hz:g}Hz.wav", tone_hz, rate=48000, seconds=10)
        log = self.dir / f"{name}-console.log"
        self.artifacts.add_log(f"browser {name}", log)
        info = self.request(
            "open",
            timeout=45,
            page=name,
            stack=stack,
            toneWav=str(wav) if wav else None,
            userDataDir=str(self._tmp / name),
            logPath=str(log),
            extraArgs=extra_args or [],
        )
        browser = Browser(self, name, tone_hz, info, stack)
        self.browsers[name] = browser
        return browser

    def stop(self) -> None:
        if self.proc.running:
            with contextlib.suppress(HarnessError, OSError):
                self.request("shutdown", timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self.proc.popen is not None
                self.proc.popen.wait(10)
        self.proc.stop()
        if self.proc.popen is not None:
            for stream in (self.proc.popen.stdin, self.proc.popen.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class Browser:
    """One phone: a Chromium page running JsSIP (tests/e2e/js/page/app.js) or SIP.js
    (page/sipjs_app.js), as `stack` says."""

    def __init__(self, driver: BrowserDriver, name: str, tone_hz: float | None, info: Mapping[str, Any],
                 stack: Stack = "jssip") -> None:
        self.driver = driver
        self.name = name
        self.stack = stack
        self.tone_hz = tone_hz
        self.info = dict(info)
        self._cursor = 0

    def rtc(self, fn: str, *args: Any, timeout: float = 15.0) -> Any:
        """Call window.rtc[fn](*args) in the page and return its (JSON) result."""
        return self.driver.request("call", timeout=timeout, page=self.name, fn=fn, args=list(args))

    def eval(self, expr: str, timeout: float = 15.0) -> Any:
        return self.driver.request("eval", timeout=timeout, page=self.name, expr=expr)

    def register(
        self,
        ws_url: str,
        uri: str,
        password: str | None = None,
        contact_params: Mapping[str, str | bool] | None = None,
        *,
        register: bool = True,
        auto_answer: bool = False,
        codecs: list[str] | None = None,
        timeout: float = 15.0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Connect to `ws_url` and REGISTER `uri`; returns once registered (or connected, with
        register=False). `codecs` restricts the SDP of every call of this phone (e.g. ["PCMU"]);
        `extra` goes to the page as is (displayName, authorizationUser, registerHeaders, contactUri
        (the Contact of every request, even once the registrar gave a GRUU), acceptRefer (follow a
        REFER received in a call: the new call becomes the current one), ...)."""
        opts: dict[str, Any] = {
            "wsUrl": ws_url,
            "uri": uri,
            "password": password,
            "contactParams": dict(contact_params) if contact_params else None,
            "register": register,
            "autoAnswer": auto_answer,
            "codecs": codecs,
            **extra,
        }
        result = self.rtc("register", opts, timeout=timeout)
        assert isinstance(result, dict)
        return result

    def unregister(self) -> None:
        self.rtc("unregister")

    def call(
        self,
        target_uri: str,
        *,
        codecs: list[str] | None = None,
        extra_headers: list[str] | None = None,
        pc_config: Mapping[str, Any] | None = None,
        early_media: bool = False,
    ) -> dict[str, Any]:
        """Start a call (returns at once): follow it with wait_event("confirmed") / ("failed").
        `early_media`: SIP.js's Inviter option `earlyMedia` (JsSIP always plays a 183's SDP)."""
        opts: dict[str, Any] = {"extraHeaders": extra_headers or [], "earlyMedia": early_media}
        if codecs is not None:
            opts["codecs"] = codecs
        if pc_config is not None:
            opts["pcConfig"] = dict(pc_config)
        result = self.rtc("call", target_uri, opts)
        assert isinstance(result, dict)
        return result

    def answer(self, *, codecs: list[str] | None = None, extra_headers: list[str] | None = None) -> None:
        opts: dict[str, Any] = {"extraHeaders": extra_headers or []}
        if codecs is not None:
            opts["codecs"] = codecs
        self.rtc("answer", opts)

    def hangup(self, status_code: int | None = None) -> bool:
        return bool(self.rtc("hangup", {"statusCode": status_code} if status_code else {}))

    def send_dtmf(self, tones: str, transport_type: str = "RFC2833", **options: Any) -> None:
        """DTMF in the current call: RFC 4733 events in the audio stream ("RFC2833"; SIP.js: its SDH's
        sendDtmf, RTCDTMFSender) or SIP INFO application/dtmf-relay ("INFO"; SIP.js: one INFO per
        digit, the body of its SessionManager.sendDTMF); `options` go as is (duration, interToneGap
        in ms)."""
        self.rtc("sendDTMF", tones, {"transportType": transport_type, **options})

    def hold(self, use_update: bool = False, timeout: float = 15.0) -> None:
        """Put the current call on hold (sendonly offer); returns once the peer answered."""
        self.rtc("hold", {"useUpdate": use_update}, timeout=timeout)

    def unhold(self, use_update: bool = False, timeout: float = 15.0) -> None:
        self.rtc("unhold", {"useUpdate": use_update}, timeout=timeout)

    def refer(self, target_uri: str) -> None:
        """Blind transfer of the current call's peer to `target_uri` (REFER); follow it with
        wait_event("referRequestSucceeded") / ("referAccepted")."""
        self.rtc("refer", target_uri)

    def send_message(
        self, uri: str, text: str, content_type: str = "text/plain", timeout: float = 15.0
    ) -> dict[str, Any]:
        """Send a SIP MESSAGE; returns {"ok": bool, "status": final status or None, "cause"?}."""
        result = self.rtc("sendMessage", uri, text, {"contentType": content_type}, timeout=timeout)
        assert isinstance(result, dict)
        return result

    def messages(self) -> list[dict[str, Any]]:
        """MESSAGEs received: [{"from", "to", "body", "contentType", "t"}]."""
        result = self.rtc("messages")
        assert isinstance(result, list)
        return result

    def wait_message(self, body: str, timeout: float = 10.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages() if m.get("body") == body), None)

        found = wait_for(find, timeout, f"browser {self.name} to receive MESSAGE {body!r}", interval=0.1)
        assert isinstance(found, dict)
        return found

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Everything the page saw: registered, incoming, progress, accepted, confirmed, ended, failed,
        track, sdp (with the SDP text), message, iceconnectionstate, connectionstate, ..."""
        result = self.rtc("events", since)
        assert isinstance(result, list)
        return result

    def mark_events(self) -> None:
        """Later wait_event calls ignore the events seen so far (one call after another)."""
        self._cursor += len(self.events(self._cursor))

    def wait_event(self, type_: str, timeout: float = 15.0, tolerate: tuple[str, ...] = (),
                   **match: Any) -> dict[str, Any]:
        """First event since the mark with that type and fields. Raises early if the call failed or
        ended while waiting for something else (no point waiting out the timeout), unless that
        event type is in ``tolerate`` (another call of the page may end meanwhile: a transfer)."""
        terminal = {"failed", "ended", "registrationFailed"} - {type_} - set(tolerate)

        def find() -> dict[str, Any] | None:
            for ev in self.events(self._cursor):
                if ev.get("type") == type_ and all(ev.get(k) == v for k, v in match.items()):
                    return ev
                if ev.get("type") in terminal:
                    raise HarnessError(f"browser {self.name}: got {ev} while waiting for {type_}")
            return None

        found = wait_for(find, timeout, f"browser {self.name} event {type_} {match or ''}", interval=0.1)
        assert isinstance(found, dict)
        return found

    def stats(self) -> dict[str, Any] | None:
        """getStats() of the current call: inbound (packetsReceived, bytesReceived, totalAudioEnergy,
        codec...), outbound (packetsSent...), transport (dtlsState...), selectedPair (local/remote
        address, port, candidateType), connectionState. None before the call has a peer connection."""
        result = self.rtc("stats")
        assert result is None or isinstance(result, dict)
        return result

    def tone(self, samples: int = 5) -> dict[str, Any]:
        """What the far end plays: {"frequency" Hz, "levelDb" of that bin, "rms" of the waveform}."""
        result = self.rtc("tone", {"samples": samples})
        assert isinstance(result, dict)
        return result

    def wait_media(self, timeout: float = 15.0, min_packets: int = 50) -> dict[str, Any]:
        """Stats once at least `min_packets` audio packets with energy have arrived and some were sent."""

        def ready() -> dict[str, Any] | None:
            s = self.stats()
            inbound = (s or {}).get("inbound") or {}
            outbound = (s or {}).get("outbound") or {}
            if (
                inbound.get("packetsReceived", 0) >= min_packets
                and inbound.get("totalAudioEnergy", 0) > 0
                and outbound.get("packetsSent", 0) > 0
            ):
                return s
            return None

        found = wait_for(ready, timeout, f"browser {self.name}: {min_packets} audio packets in and out", interval=0.25)
        assert isinstance(found, dict)
        return found

    def wait_tone(self, frequency: float, tolerance: float = 25.0, timeout: float = 15.0) -> dict[str, Any]:
        """The far end's tone, once it is `frequency` +- `tolerance` Hz."""
        last: dict[str, Any] = {}

        def heard() -> dict[str, Any] | None:
            nonlocal last
            last = self.tone()
            return last if abs(float(last.get("frequency", 0)) - frequency) <= tolerance else None

        try:
            found = wait_for(heard, timeout, f"browser {self.name} to hear {frequency:g} Hz", interval=0.2)
        except HarnessError as exc:
            raise HarnessError(f"{exc}; last heard {last}") from None
        assert isinstance(found, dict)
        return found

    def poll(self, predicate: Callable[[Browser], object], timeout: float, what: str) -> object:
        return wait_for(lambda: predicate(self), timeout, f"browser {self.name}: {what}", interval=0.2)

    def close(self) -> None:
        self.driver.request("close", page=self.name)
        self.driver.browsers.pop(self.name, None)
