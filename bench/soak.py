#!/usr/bin/env python3
"""Soak: rtc2sip under a steady, varied load for a long time, with real peers (issue 13 item 3).

Not a test: it prints a summary (and writes it as JSON). It runs the gateway as the real ``rtc2sip``
command, ``--browsers`` Chromium + JsSIP phones and as many baresip phones (the e2e harness,
tests/e2e/harness), in a private network namespace of its own (it re-executes itself under
``unshare --net`` unless already in one), and loops until ``--minutes`` have passed:

- each browser calls (its own baresip, or with ``--video-share`` of the calls the gateway's echo
  service with audio and video: a browser page that sends VP8), hears media, stays 5-25 s, then hangs
  up; ``--reinvite-share`` of the calls go on hold and come back (re-INVITEs both ways through the
  breaker); ``--drop-share`` of them have their WebSocket closed mid-call, which must end the call at
  the phone at once (the gateway cannot reach the browser: that was its connection) and release it in
  the gateway, after which JsSIP reconnects and registers again;
- ``--loss`` % of the datagrams sent to the gateway's media ports are dropped (nftables, on input: the
  sender sees nothing, as on a real network). Jitter: this
  kernel has no sch_netem, and nftables cannot delay, so none is added (the summary says so);
- every ``--sample`` seconds: the gateway's RSS, open fds, and its own state line (SIGUSR1: media
  sessions, ports, routes, B2BUA tables, asyncio tasks).

At the end, with every call over: nothing may be held (sessions, ports, routes, tables: 0; tasks and
fds back to the idle figure), and the RSS growth from the end of the warm-up (``--warmup`` of the
run) to the end is printed against the 5 % aim. A call that should have been set up and was not, or
that ended on its own, is a lost call.

    python bench/soak.py --minutes 60                    # the issue's hour (about 600 calls)
    python bench/soak.py --minutes 5 --browsers 2        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from harness import Artifacts, Baresip, BrowserDriver, Gateway, wait_for  # noqa: E402
from harness.browser import Browser, non_loopback_interfaces  # noqa: E402
from harness.loss import LossyPorts  # noqa: E402
from harness.procs import HarnessError  # noqa: E402

MEDIA_PORTS = (30000, 31999)

# the page's WebSockets, so that the soak can close one mid-call (as a network drop would)
TRACK_WEBSOCKETS_JS = r"""
(() => {
  if (window.__sockets) return true;
  window.__sockets = [];
  const Native = window.WebSocket;
  function Tracked(url, protocols) { const ws = new Native(url, protocols); window.__sockets.push(ws); return ws; }
  Tracked.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Tracked[k] = Native[k];
  window.WebSocket = Tracked;
  return true;
})()"""

# audio and video on every call of this page (JsSIP's call/answer options)
VIDEO_JS = r"""
(() => {
  const withVideo = (o) => Object.assign({}, o, { mediaConstraints: { audio: true, video: true },
    rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: true } });
  const call = JsSIP.UA.prototype.call;
  JsSIP.UA.prototype.call = function (t, o) { return call.call(this, t, withVideo(o)); };
  return true;
})()"""


@dataclass
class Counts:
    calls: int = 0
    completed: int = 0
    video: int = 0
    reinvites: int = 0
    ws_drops: int = 0
    lost: int = 0
    lost_why: list[str] = field(default_factory=list)


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    state: dict[str, int]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Caller(threading.Thread):
    """One browser's loop of calls until the deadline."""

    def __init__(self, i: int, browser: Browser, phone: Baresip, gw: Gateway, video: bool, args: argparse.Namespace,
                 counts: Counts, lock: threading.Lock, deadline: float) -> None:
        super().__init__(name=f"caller-{i}", daemon=True)
        self.browser, self.phone, self.gw, self.video = browser, phone, gw, video
        self.args, self.counts, self.lock, self.deadline = args, counts, lock, deadline
        self.rng = random.Random(args.seed + i)

    def lost(self, why: str) -> None:
        with self.lock:
            self.counts.lost += 1
            if len(self.counts.lost_why) < 50:
                self.counts.lost_why.append(f"{self.browser.name}: {why[:300]}")

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                self.one_call()
            except (HarnessError, AssertionError) as e:
                self.lost(str(e))
                try:  # leave no call behind before the next one
                    self.browser.hangup()
                except (HarnessError, AssertionError):
                    pass
                time.sleep(2)

    def one_call(self) -> None:
        b, p, rng, a = self.browser, self.phone, self.rng, self.args
        video = self.video
        target = self.gw.aor("echo") if video else self.gw.aor(p.user)
        b.mark_events()
        p.mark_events()
        with self.lock:
            self.counts.calls += 1
            self.counts.video += video
        b.call(target)
        b.wait_event("confirmed", timeout=20)
        b.wait_media(timeout=15, min_packets=50)
        time.sleep(rng.uniform(2, 10))
        if rng.random() < a.reinvite_share:
            b.hold()
            time.sleep(1)
            b.unhold()
            with self.lock:
                self.counts.reinvites += 1
        time.sleep(rng.uniform(3, 15))
        if rng.random() < a.drop_share:
            closed = b.eval("window.__sockets.filter((w) => w.readyState === 1).map((w) => (w.close(), 1)).length")
            assert closed >= 1, "no open WebSocket to close"
            # the gateway ends the call at the phone at once (it cannot signal the browser: that is
            # the connection that went); JsSIP reconnects and registers again, and its page ends the
            # call it still shows (its BYE finds no dialog: 481)
            if not video:
                p.wait_event("CALL_CLOSED", timeout=15)
            b.wait_event("registered", timeout=30)
            b.hangup()
            with self.lock:
                self.counts.ws_drops += 1
                self.counts.completed += 1
            return
        b.hangup()
        if not video:
            p.wait_event("CALL_CLOSED", timeout=15)
        with self.lock:
            self.counts.completed += 1
        time.sleep(rng.uniform(3, 6))  # baresip 1.0 refuses (500) or only rings a call right after one


def reexec_in_namespace() -> None:
    if not non_loopback_interfaces() or os.environ.get("RTC2SIP_SOAK_NS") == "1":
        return
    env = dict(os.environ, RTC2SIP_SOAK_NS="1", RTC2SIP_E2E_STRICT="1")
    argv = [sys.executable, *sys.argv]
    inner = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in argv)
    os.execvpe("unshare", ["unshare", "--net", "--fork", "--kill-child", "sh", "-c", inner], env)


def last_memory_line(gw: Gateway) -> str:
    """The gateway's latest "rtc2sip memory:" line (logged with the state line, RTC2SIP_TRACEMALLOC)."""
    lines = [ln for ln in gw.log_text().splitlines() if "rtc2sip memory:" in ln]
    return lines[-1].split("rtc2sip memory:", 1)[1].strip() if lines else "(no memory line)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--browsers", type=int, default=5, help="browsers, each with its own baresip (default 5)")
    ap.add_argument("--video-share", type=float, default=0.2, help="share of the browsers whose calls carry video")
    ap.add_argument("--reinvite-share", type=float, default=0.3)
    ap.add_argument("--drop-share", type=float, default=0.1)
    ap.add_argument("--loss", type=int, default=5, help="%% of datagrams to the gateway's media ports dropped")
    ap.add_argument("--sample", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=0.1, help="share of the run before the RSS reference")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "soak")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="trace the gateway's allocations (RTC2SIP_TRACEMALLOC): mark at the end of the "
                         "warm-up, log what grew since at every sample (slows the gateway)")
    args = ap.parse_args()
    reexec_in_namespace()

    args.out.mkdir(parents=True, exist_ok=True)
    artifacts = Artifacts(args.out)
    counts, lock = Counts(), threading.Lock()
    samples: list[Sample] = []
    gw = Gateway(artifacts, extra_toml=f'[media]\nrtp_ports = "{MEDIA_PORTS[0]}-{MEDIA_PORTS[1]}"\n',
                 env={"RTC2SIP_TRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else None)
    gw.start()
    assert gw.proc is not None and gw.proc.pid is not None
    pid = gw.proc.pid
    driver = BrowserDriver(artifacts).start()
    phones: list[Baresip] = []
    browsers: list[Browser] = []
    n_video = round(args.browsers * args.video_share)
    try:
        for i in range(args.browsers):
            phone = Baresip(artifacts, f"bob{i}", user=f"bob{i}", domain=gw.domain, registrar=gw.udp_uri,
                            tone_hz=440.0, sip_trace=False).start()
            phone.wait_registered()
            phones.append(phone)
            b = driver.open(f"alice{i}", tone_hz=1000.0)
            assert b.eval(TRACK_WEBSOCKETS_JS) is True
            if i < n_video:
                assert b.eval(VIDEO_JS) is True
            assert b.register(gw.ws_url, gw.aor(f"alice{i}"))["status"] == 200
            browsers.append(b)
        idle = gw.state(10.0)
        idle_fds = fds(pid)
        start = time.monotonic()
        deadline = start + args.minutes * 60
        media_ports = list(range(MEDIA_PORTS[0], MEDIA_PORTS[1] + 1))
        loss = LossyPorts(media_ports, args.loss, hook="input") if args.loss else None
        if loss is not None:
            loss.start()
        callers = [Caller(i, browsers[i], phones[i], gw, i < n_video, args, counts, lock, deadline)
                   for i in range(args.browsers)]
        for c in callers:
            c.start()
        marked = False
        while any(c.is_alive() for c in callers):
            time.sleep(min(args.sample, max(0.5, deadline - time.monotonic() + 1)))
            if args.tracemalloc and not marked and time.monotonic() - start >= args.warmup * args.minutes * 60:
                os.kill(pid, signal.SIGUSR2)
                marked = True
            state = gw.state(60.0 if args.tracemalloc else 10.0)  # the memory report takes seconds
            samples.append(Sample(time.monotonic() - start, rss_kb(pid), fds(pid), state))
            with lock:
                print(f"[{samples[-1].t / 60:5.1f} min] calls {counts.calls} done {counts.completed} "
                      f"lost {counts.lost} rss {samples[-1].rss_kb / 1024:.1f} MB fds {samples[-1].fds} "
                      f"sessions {samples[-1].state.get('media_sessions')}", flush=True)
                if args.tracemalloc:
                    print("   ", last_memory_line(gw), flush=True)
            if time.monotonic() > deadline + 120:
                break
        if loss is not None:
            loss.clear()
        # every call is over: nothing may be held
        def released() -> dict[str, int] | None:
            st = gw.state(10.0)
            held = {k: v for k, v in st.items() if k != "tasks" and v}
            return st if not held else None

        try:
            final = wait_for(released, 60, "the gateway to release every call", interval=1.0)
        except HarnessError:
            final = gw.state(10.0)
        assert isinstance(final, dict)
        final_fds = fds(pid)
        warm = [s for s in samples if s.t >= args.warmup * args.minutes * 60]
        ref = warm[0].rss_kb if warm else (samples[0].rss_kb if samples else rss_kb(pid))
        end_rss = rss_kb(pid)
        summary: dict[str, Any] = {
            "minutes": args.minutes, "browsers": args.browsers, "video_browsers": n_video, "loss_percent": args.loss,
            "jitter": "none: no sch_netem on this kernel and nftables cannot delay",
            **asdict(counts),
            "idle_state": idle, "final_state": final, "idle_fds": idle_fds, "final_fds": final_fds,
            "rss_warm_kb": ref, "rss_end_kb": end_rss,
            "rss_growth_percent": round(100.0 * (end_rss - ref) / ref, 2) if ref else None,
            "held_after": {k: v for k, v in final.items() if k != "tasks" and v},
            "tasks_idle": idle.get("tasks"), "tasks_end": final.get("tasks"),
        }
        if args.tracemalloc:
            summary["memory_end"] = last_memory_line(gw)
        (args.out / "soak.json").write_text(json.dumps({"summary": summary,
                                                        "samples": [asdict(s) for s in samples]}, indent=1))
        print(json.dumps(summary, indent=1))
        ok = (counts.lost == 0 and not summary["held_after"] and final_fds <= idle_fds + 2
              and (summary["rss_growth_percent"] or 0) < 5.0 and final.get("tasks", 0) <= idle.get("tasks", 0) + 2)
        print("soak:", "PASS" if ok else "FAIL", flush=True)
        return 0 if ok else 1
    finally:
        for b in browsers:
            try:
                b.close()
            except (HarnessError, AssertionError):
                pass
        driver.stop()
        for p in phones:
            p.stop()
        gw.stop()


if __name__ == "__main__":
    sys.exit(main())
