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
- the media path is impaired: with ``--jitter-ms`` above 0 (the default, 20) the gateway runs in a
  network namespace of its own, reached at 10.77.0.1 only through a delay line (tests/e2e/harness/
  impair.py: TUN devices and a userspace router, since this kernel has no sch_netem and nftables cannot
  delay), which drops ``--loss`` % of the UDP datagrams both ways (SIP over UDP spared unless
  ``--sip-loss``: the loss is the media path's) and holds every packet ``--delay-ms`` +- ``--jitter-ms``
  (uniform, never negative; packets of a flow may overtake one another as with netem, unless
  ``--keep-order``); the browsers and baresip stay here, on 10.77.0.2. The summary gives the line's own
  counters: packets forwarded and dropped, and the delay really added, each way. With ``--jitter-ms 0``
  the old way: ``--loss`` % of the datagrams sent to the gateway's media ports dropped by nftables (on
  input: the sender sees nothing, as on a real network), no delay, everything on loopback;
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
from harness.impair import DelayLine, ImpairedLink, Impairment  # noqa: E402
from harness.loss import LossyPorts  # noqa: E402
from harness.procs import HarnessError  # noqa: E402

MEDIA_PORTS = (30000, 31999)
# the delay line's two ends (harness.impair): the gateway alone in its namespace, the peers here
GATEWAY_ADDR, CLIENTS_ADDR = "10.77.0.1", "10.77.0.2"

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


def line_brief(link: ImpairedLink | None) -> str:
    """The delay line's drops so far, for the sample lines."""
    if link is None:
        return ""
    s = link.summary()
    return "".join(f" | {d} {s[d]['dropped']}/{s[d]['udp']} UDP dropped, +{s[d]['added_delay']['mean_ms']} ms"
                   for d in ("a->b", "b->a"))


def delay_line_lines(line: dict[str, Any]) -> str:
    """The delay line's counters, one line each way."""
    out = []
    for direction, what in (("a->b", "to the gateway"), ("b->a", "from the gateway")):
        c = line[direction]
        d = c["added_delay"]
        out.append(f"delay line {what}: {c['forwarded']} forwarded, {c['dropped']} dropped of {c['lossy']} lossy UDP "
                   f"({c['loss_percent_applied']} %), added delay mean {d['mean_ms']} ms stdev {d['stdev_ms']} "
                   f"p50 {d['p50_ms']} p99 {d['p99_ms']} min {d['min_ms']} max {d['max_ms']} ms")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--browsers", type=int, default=5, help="browsers, each with its own baresip (default 5)")
    ap.add_argument("--video-share", type=float, default=0.2, help="share of the browsers whose calls carry video")
    ap.add_argument("--reinvite-share", type=float, default=0.3)
    ap.add_argument("--drop-share", type=float, default=0.1)
    ap.add_argument("--loss", type=int, default=5, help="%% of the media datagrams dropped")
    ap.add_argument("--jitter-ms", type=float, default=20.0,
                    help="jitter of the delay line (default 20); 0: no delay line, loss by nftables on loopback")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="the delay line's base delay, each way (default 20)")
    ap.add_argument("--keep-order", action="store_true", help="the delay line keeps each flow in order")
    ap.add_argument("--sip-loss", action="store_true", help="the delay line's loss hits SIP over UDP too")
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
    impaired = args.jitter_ms > 0
    media_toml = f'[media]\nrtp_ports = "{MEDIA_PORTS[0]}-{MEDIA_PORTS[1]}"\n'
    gw_env = {"RTC2SIP_TRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else None
    link: ImpairedLink | None = None
    if impaired:
        # beyond loopback, "auth = auto" would turn digest on (the phones have no passwords), and
        # every phone and browser comes from the one address 10.77.0.2: no per-source rate limit
        gw = Gateway(artifacts, host=GATEWAY_ADDR, gateway_options={"auth": "off"},
                     extra_toml=media_toml + "\n[limits]\nrate_per_source = 0.0\n", env=gw_env)
        line = DelayLine(Impairment(loss_percent=float(args.loss), delay_ms=args.delay_ms, jitter_ms=args.jitter_ms,
                                    keep_order=args.keep_order,
                                    lossless_ports=frozenset() if args.sip_loss else frozenset({gw.sip_port})),
                         seed=args.seed)
        link = ImpairedLink(line, a_addr=CLIENTS_ADDR, b_addr=GATEWAY_ADDR).start()
        gw.netns = link.netns
    else:
        gw = Gateway(artifacts, extra_toml=media_toml, env=gw_env)
    try:
        gw.start()
    except BaseException:
        if link is not None:
            link.stop()
        raise
    assert gw.proc is not None and gw.proc.pid is not None
    pid = gw.proc.pid
    driver = BrowserDriver(artifacts)
    phones: list[Baresip] = []
    browsers: list[Browser] = []
    n_video = round(args.browsers * args.video_share)
    try:
        driver.start()  # in the try: a driver that does not start must still stop the gateway and the line
        for i in range(args.browsers):
            phone = Baresip(artifacts, f"bob{i}", user=f"bob{i}", domain=gw.domain, registrar=gw.udp_uri,
                            tone_hz=440.0, sip_trace=False, host=CLIENTS_ADDR if impaired else "127.0.0.1").start()
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
        loss = LossyPorts(media_ports, args.loss, hook="input") if args.loss and not impaired else None
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
                      f"sessions {samples[-1].state.get('media_sessions')}{line_brief(link)}", flush=True)
                if args.tracemalloc:
                    print("   ", last_memory_line(gw), flush=True)
            if time.monotonic() > deadline + 120:
                break
        nft_dropped = loss.dropped() if loss is not None else None
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
            "jitter": (f"delay line: {args.delay_ms:g} ms +- {args.jitter_ms:g} ms each way (uniform"
                       f"{', flows kept in order' if args.keep_order else ', reordering allowed'})" if impaired
                       else "none (--jitter-ms 0): loss by nftables on loopback, no delay"),
            **({"delay_line": link.summary()} if link is not None else {"nft_dropped": nft_dropped}),
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
        if link is not None:
            print(delay_line_lines(summary["delay_line"]), flush=True)
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
        if link is not None:
            link.stop()


if __name__ == "__main__":
    sys.exit(main())
