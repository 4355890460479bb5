"""baresip 1.0 as the legacy SIP phone: plays a tone, records what it hears, controlled over ctrl_tcp.

What baresip 1.0 offers, found by running it:
- ctrl_tcp speaks JSON netstrings; commands are the menu's and contact module's long names (`dial`,
  `hangup`, `listcalls`, `reginfo`, `contact_next`, `message`...). Events (CALL_ESTABLISHED, ...) go
  to the most recently connected client only, so the harness keeps exactly one connection.
- There is no command to send a MESSAGE to an arbitrary URI: the contact module's `message` sends to
  the *current contact*, so the targets must be listed in the `contacts` file before start, and
  `send_message` steps through them with `contact_next`.
- A received MESSAGE raises no ctrl_tcp event; the menu prints `<peer>: "<text>"` through the UI
  modules, so `stdio` is loaded (fed by a pipe that stays open and silent) and the log is parsed.
- `sip_listen 127.0.0.1:P` also opens TLS on P+1.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

from .artifacts import Artifacts
from .procs import HarnessError, Proc, free_port, wait_for, wait_tcp, wait_udp_bound
from .tone import ToneResult, analyse_samples, write_tone_wav

__all__ = ["Baresip", "CtrlTcp"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RECEIVED_MESSAGE = re.compile(r'^\r?(?P<peer><?sips?:[^\s"]+>?): "(?P<text>.*)"\s*$')


class CtrlTcp:
    """Client of baresip's ctrl_tcp module: JSON netstrings, one outstanding command at a time."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)
        self._log = log_path.open("a", encoding="utf-8")
        self._cond = threading.Condition()
        self._responses: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._closed = False
        self._lock = threading.Lock()
        self._token = 0
        self._reader = threading.Thread(target=self._read_loop, name=f"ctrl_tcp:{port}", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    head, sep, rest = buf.partition(b":")
                    if not sep or not head.isdigit():
                        break
                    size = int(head)
                    if len(rest) < size + 1:
                        break
                    self._dispatch(json.loads(rest[:size]))
                    buf = rest[size + 1 :]
        except (OSError, ValueError) as exc:
            self._log.write(f"ctrl_tcp reader stopped: {exc!r}\n")
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} <- {json.dumps(msg)}\n")
        self._log.flush()
        with self._cond:
            if msg.get("response"):
                self._responses.append(msg)
            else:
                self.events.append(msg)
            self._cond.notify_all()

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Run one command; returns its text output, raises if baresip reports failure."""
        with self._lock:
            self._token += 1
            token = f"t{self._token}"
            msg: dict[str, Any] = {"command": command, "token": token}
            if params is not None:
                msg["params"] = params
            data = json.dumps(msg).encode()
            self._log.write(f"{time.strftime('%H:%M:%S')} -> {json.dumps(msg)}\n")
            self.sock.sendall(b"%d:%s," % (len(data), data))
            deadline = time.monotonic() + timeout
            with self._cond:
                while True:
                    for i, r in enumerate(self._responses):
                        if r.get("token") == token:
                            del self._responses[i]
                            if not r.get("ok", False):
                                raise HarnessError(f"baresip {command} {params!r} failed: {r.get('data')}")
                            return _ANSI.sub("", str(r.get("data", "")))
                    left = deadline - time.monotonic()
                    if self._closed or left <= 0:
                        raise HarnessError(f"no answer from baresip to {command} {params!r}")
                    self._cond.wait(left)

    def wait_event(self, type_: str, timeout: float, *, start: int = 0, **match: str) -> tuple[int, dict[str, Any]]:
        """First event at index >= `start` with that type (and fields equal to `match`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.events)):
                    ev = self.events[i]
                    if ev.get("type") == type_ and all(str(ev.get(k)) == v for k, v in match.items()):
                        return i, ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    seen = [e.get("type") for e in self.events[start:]]
                    raise HarnessError(f"no baresip event {type_} {match or ''} within {timeout:g}s; saw {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2)
        self._log.close()


class Baresip:
    """One baresip user agent with its own config directory under the test's artifacts.

    `registrar` is the outbound proxy, e.g. `sip:127.0.0.1:5060;transport=udp` (kamailio.udp_uri);
    with `register=False` it still sends everything there but does not REGISTER.
    """

    def __init__(
        self,
        artifacts: Artifacts,
        name: str,
        *,
        user: str,
        domain: str,
        registrar: str,
        password: str | None = None,
        register: bool = True,
        tone_hz: float = 440.0,
        contacts: list[str] | tuple[str, ...] = (),
        transport: str = "udp",
        answermode: str = "auto",
        audio_codecs: str = "PCMU/8000/1",
        video_codecs: str | None = None,
        extra_account_params: str = "",
        extra_config: str = "",
        sip_trace: bool = True,
        binary: str = "baresip",
        host: str = "127.0.0.1",
    ) -> None:
        self.artifacts = artifacts
        # SIP and RTP address; "::1" runs it IPv6 only (baresip -6)
        self.host = host
        self.uri_host = f"[{host}]" if ":" in host else host
        self.name = name
        self.user = user
        self.domain = domain
        self.registrar = registrar
        self.password = password
        self.register = register
        self.tone_hz = tone_hz
        self.contacts = list(contacts)
        self.transport = transport
        self.answermode = answermode
        self.audio_codecs = audio_codecs
        # None: audio only (no video module loaded, baresip offers no m=video)
        self.video_codecs = video_codecs
        self.extra_account_params = extra_account_params
        self.extra_config = extra_config
        self.sip_trace = sip_trace
        self.binary = shutil.which(binary) or binary
        self.confdir = artifacts.subdir(name)
        # baresip's sndfile cuts file paths at 128 bytes and then writes files without ".wav": record
        # under a short directory and link it from the artifacts (a CI clone may live anywhere)
        self.recdir = Path(tempfile.mkdtemp(prefix=f"rtc2sip-{name[:12]}-"))
        link = self.confdir / "recordings"
        if link.is_symlink() or link.exists():
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
        link.symlink_to(self.recdir)
        self.log_path = self.confdir / "baresip.log"
        self.sip_port = free_port(2)  # TLS takes the next one
        self.ctrl_port = free_port()
        self.rtp_port = free_port(20)
        self.proc: Proc | None = None
        self.ctrl: CtrlTcp | None = None
        self._events_start = 0

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact_uri(self) -> str:
        """Where it can be reached directly, bypassing any proxy."""
        return f"sip:{self.user}@{self.uri_host}:{self.sip_port};transport={self.transport}"

    def _write_config(self) -> None:
        # aufile plays the WAV at its own rate: the first codec's (G.722 carries 16 kHz audio)
        rate = 16000 if self.audio_codecs.upper().startswith("G722") else 8000
        tone = write_tone_wav(self.confdir / "tone.wav", self.tone_hz, rate=rate, seconds=60)
        modules = ["g711", "g722", "aufile", "aubridge", "sndfile"]
        video: list[str] = []
        if self.video_codecs is not None:
            # fakevideo is the camera; vidbridge's display needs no screen (frames go to a vidbridge
            # source nobody opens); snapshot writes PNGs of what was decoded (snapshot_recv).
            modules += ["avcodec", "vp8", "fakevideo", "vidbridge", "snapshot"]
            video = [
                "video_source fakevideo,nil",
                "video_display vidbridge,sink",
                "video_size 320x240",
                "video_bitrate 500000",
                "video_fps 15",
                "avcodec_h264enc libx264",
                "avcodec_h264dec h264",
            ]
        lines = [
            "poll_method epoll",
            f"sip_listen {self.uri_host}:{self.sip_port}",
            "call_local_timeout 120",
            "call_max_calls 4",
            "audio_player aubridge,sink",
            f"audio_source aufile,{tone}",
            "audio_alert aubridge,alert",
            f"rtp_ports {self.rtp_port}-{self.rtp_port + 19}",
            "rtcp_mux no",
            "jitter_buffer_delay 5-10",
            f"net_interface {self.host}",
            f"module_path {_module_path()}",
            *(f"module {m}.so" for m in modules),
            "module stdio.so",
            "module_tmp account.so",
            "module_app contact.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {self.recdir}",
            *video,
            self.extra_config,
        ]
        (self.confdir / "config").write_text("\n".join(lines) + "\n")
        params = [
            f'outbound="{self.registrar}"',
            f"answermode={self.answermode}",
            f"audio_codecs={self.audio_codecs}",
            *([f"video_codecs={self.video_codecs}"] if self.video_codecs is not None else []),
            f"regint={3600 if self.register else 0}",
        ]
        if self.password is not None:
            params.append(f"auth_pass={self.password}")
        if self.extra_account_params:
            params.append(self.extra_account_params.lstrip(";"))
        account = f"<sip:{self.user}@{self.domain};transport={self.transport}>;" + ";".join(params)
        (self.confdir / "accounts").write_text(account + "\n")
        contacts = [f'"c{i}" <{uri}>' for i, uri in enumerate(self.contacts)]
        (self.confdir / "contacts").write_text("\n".join(contacts) + "\n")
        (self.confdir / "current_contact").unlink(missing_ok=True)

    def start(self, timeout: float = 15.0) -> Baresip:
        self._write_config()
        self.artifacts.add_log(self.name, self.log_path)
        argv = [self.binary, "-f", str(self.confdir), *(["-s"] if self.sip_trace else [])]
        if ":" in self.host:
            argv.append("-6")
        if self.video_codecs is not None:
            argv.append("-v")  # the codecs' debug lines: avcodec's decoder stats, keyframe requests
        self.proc = Proc(self.name, argv, self.log_path)
        # stdio (loaded to print received MESSAGEs) reads keystrokes from stdin: give it a pipe that
        # stays open and silent, so nothing is ever typed at it.
        self.proc.start(stdin=subprocess.PIPE)
        alive = self.proc.check_alive
        with self.proc.explain_failure():
            wait_udp_bound(self.sip_port, timeout, alive)
            wait_tcp("127.0.0.1", self.ctrl_port, timeout, alive)
            self.ctrl = CtrlTcp(self.ctrl_port, self.confdir / "ctrl.log")
            if self.register:
                self.wait_registered(timeout)
        return self

    def stop(self) -> None:
        if self.ctrl is not None:
            self.ctrl.close()
            self.ctrl = None
        if self.proc is not None:
            self.proc.stop()
            if self.proc.popen is not None and self.proc.popen.stdin is not None:
                self.proc.popen.stdin.close()

    def _ctrl(self) -> CtrlTcp:
        if self.ctrl is None:
            raise HarnessError(f"{self.name} is not running")
        return self.ctrl

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        return self._ctrl().command(command, params, timeout)

    def registration_state(self) -> str:
        """The state `reginfo` shows for this account: "OK", "ERR", or something transient."""
        for line in self.command("reginfo").splitlines():
            fields = line.replace(">", " ").split()
            if self.aor in fields:
                after = fields[fields.index(self.aor) + 1 :]
                return after[0] if after else ""
        return ""

    def registered(self) -> bool:
        state = self.registration_state()
        if state == "ERR":
            # A refused REGISTER is not retried before long: fail now rather than at the timeout.
            raise HarnessError(f"{self.name}: registration of {self.aor} via {self.registrar} failed (reginfo: ERR)")
        return state == "OK"

    def wait_registered(self, timeout: float = 10.0) -> None:
        assert self.proc is not None
        wait_for(self.registered, timeout, f"{self.name} to register", interval=0.2, alive=self.proc.check_alive)

    # Calls.
    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hangup(self) -> None:
        self.command("hangup")

    def accept(self) -> None:
        self.command("accept")

    def listcalls(self) -> str:
        return self.command("listcalls")

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._ctrl().events)

    def mark_events(self) -> None:
        """Later `wait_event` calls ignore the events seen so far (one call after another)."""
        self._events_start = len(self._ctrl().events)

    def wait_event(self, type_: str, timeout: float = 10.0, **match: str) -> dict[str, Any]:
        """Wait for a ctrl_tcp event such as CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED."""
        return self._ctrl().wait_event(type_, timeout, start=self._events_start, **match)[1]

    # Instant messages.
    def send_message(self, uri: str, text: str) -> None:
        """Send a SIP MESSAGE to `uri`, which must be one of the `contacts` given at construction."""
        if uri not in self.contacts:
            raise HarnessError(
                f"{uri} is not in {self.name}'s contacts {self.contacts}: baresip 1.0 can only "
                "message a contact listed before it starts"
            )
        for _ in range(len(self.contacts) + 1):
            current = self.command("contact_next")
            if f"<{uri}>" in current:
                break
        else:
            raise HarnessError(f"could not make {uri} the current contact of {self.name}")
        self.command("message", text)

    def received_messages(self) -> list[tuple[str, str]]:
        """(peer URI, text) of every MESSAGE received so far, oldest first; single-line texts only."""
        out = []
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            m = _RECEIVED_MESSAGE.match(_ANSI.sub("", line))
            if m:
                out.append((m["peer"].strip("<>"), m["text"]))
        return out

    def wait_message(self, text: str, timeout: float = 10.0) -> tuple[str, str]:
        def find() -> tuple[str, str] | None:
            return next((m for m in self.received_messages() if m[1] == text), None)

        found = wait_for(find, timeout, f"{self.name} to receive MESSAGE {text!r}")
        assert isinstance(found, tuple)
        return found

    # Video.
    def snapshots(self) -> list[Path]:
        return sorted(self.recdir.glob("*.png"), key=lambda p: p.stat().st_mtime)

    def wait_snapshot(self, timeout: float = 15.0) -> Path:
        """A PNG of the next video frame baresip decodes (the snapshot module's ``snapshot_recv``):
        written only from a decoded frame, so its existence proves decoding."""
        before = set(self.snapshots())
        self.command("snapshot_recv", str(self.recdir / f"recv-{len(before) + 1}.png"))

        def written() -> Path | None:
            new = [p for p in self.snapshots() if p not in before and p.stat().st_size > 0]
            return new[-1] if new else None

        found = wait_for(written, timeout, f"{self.name} to decode a video frame (snapshot_recv)", interval=0.2)
        assert isinstance(found, Path)
        return found

    def log_text(self) -> str:
        return _ANSI.sub("", self.log_path.read_text(encoding="utf-8", errors="replace"))

    def decoder_keyframes(self) -> list[int]:
        """Keyframes decoded by each H.264 decoder that has ended (avcodec logs it on close)."""
        return [int(m.group(1)) for m in re.finditer(r"avcodec: decoder stats \(keyframes:(\d+)", self.log_text())]

    # Audio.
    def recordings(self) -> list[Path]:
        """What baresip heard, one `*-dec.wav` per call, oldest first."""
        return sorted(self.recdir.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)

    def recorded_tone(self, path: Path | None = None) -> ToneResult:
        """Dominant frequency and level of the latest (or given) recording.

        Call it once the call has ended (CALL_CLOSED): sndfile buffers while the call is up, and fills
        in the WAV header only when it closes the file.
        """
        if path is None:
            recs = self.recordings()
            if not recs:
                raise HarnessError(f"{self.name} recorded nothing in {self.recdir}")
            path = recs[-1]
        recording = path
        # CALL_CLOSED may arrive a moment before sndfile has flushed and finalised the file.
        with contextlib.suppress(HarnessError):
            wait_for(lambda: _wav_finalised(recording), 5.0, f"{recording} to be closed", interval=0.1)
        samples, rate = _read_growing_wav(path)
        return analyse_samples(samples, rate, fmax=3800)


def _module_path() -> Path:
    """Where the distribution put baresip's modules (it has no compiled-in default that works)."""
    candidates = [Path("/usr/lib/baresip/modules"), Path("/usr/local/lib/baresip/modules")]
    candidates += sorted(Path("/usr/lib").glob("*/baresip/modules"))
    for c in candidates:
        if (c / "g711.so").exists():
            return c
    raise HarnessError(f"baresip modules not found in {[str(c) for c in candidates]}")


def _wav_finalised(path: Path) -> bool:
    """Whether the RIFF size in the header accounts for the whole file (written when it is closed)."""
    data = path.read_bytes()
    return len(data) > 44 and data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 == len(data)


def _read_growing_wav(path: Path) -> tuple[list[float], int]:
    """16-bit mono samples of a WAV that may still be written (header sizes not yet filled in)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    except (EOFError, wave.Error):
        return [], 8000  # not even a header yet
    if width != 2 or channels != 1:
        raise HarnessError(f"{path}: expected 16-bit mono, got {8 * width}-bit x{channels}")
    data = path.read_bytes()
    i = data.find(b"data")
    pcm = data[i + 8 :] if i >= 0 else b""
    pcm = pcm[: len(pcm) // 2 * 2]
    values = memoryview(pcm).cast("h")
    return [v / 32768.0 for v in values], rate
