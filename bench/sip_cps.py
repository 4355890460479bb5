#!/usr/bin/env python3
"""INVITE calls per second through rtc2sip and through Kamailio (one worker), same sipp scenario, same run.

Not a test: it prints figures. For each proxy it runs sipp's built-in ``uac`` scenario (INVITE, 100,
180, 200, ACK, BYE, 200) against a sipp ``uas`` behind the proxy, stepping the offered rate up, and
reports per step the calls that completed, the failures, the p99 response time of the INVITE and the
proxy's CPU time per call (read from /proc, the figure least disturbed by a noisy machine). The
"carried" rate of a proxy is the highest step it completed with no failed call and under 1 % of
retransmissions.

    python bench/sip_cps.py                      # default steps
    python bench/sip_cps.py --rates 500,1000,2000 --seconds 5

Needs sipp (Debian sip-tester) and kamailio; runs everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
children=1
tcp_children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    # sipp's built-in uac ignores Record-Route: in-dialog requests without Route go by their
    # Request-URI, as rtc2sip routes them, so both proxies do the same work per call
    if (has_totag()) {{
        loose_route();
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} else {{ forward(); }} exit; }}
        t_relay(); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    if (is_method("INVITE")) {{ record_route(); }}
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""

RTC2SIP_TOML = """[gateway]
data_dir = "{data}"
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {port}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_tree(pid: int) -> float:
    """CPU of a process and its children (kamailio forks its workers)."""
    total = 0.0
    try:
        total += cpu_seconds(pid)
    except OSError:
        return 0.0
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += cpu_tree(int(child))
    except OSError:
        pass
    return total


def wait_udp(port: int, timeout: float = 10.0) -> None:
    """Until something answers OPTIONS on the port."""
    msg = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        probe = msg.replace("127.0.0.1:9;", f"127.0.0.1:{s.getsockname()[1]};")
        while time.monotonic() < end:
            s.sendto(probe.encode(), ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except OSError:
                continue
    raise RuntimeError(f"nothing answers on udp {port}")


@dataclass
class Step:
    rate: int
    calls: int
    ok: int
    failed: int
    retrans: int
    wall: float
    cpu: float
    p99_ms: float

    @property
    def cps(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu / self.ok * 1e6 if self.ok else float("nan")

    def clean(self) -> bool:
        return self.failed == 0 and self.ok == self.calls and self.retrans <= self.calls * 0.01


def run_step(proxy_port: int, proxy_pid: int, uas_port: int, rate: int, seconds: float, work: Path) -> Step:
    calls = int(rate * seconds)
    for f in work.glob("uac*"):
        f.unlink()
    cpu0 = cpu_tree(proxy_pid)
    t0 = time.monotonic()
    cmd = [
        "sipp", "-sn", "uac", f"127.0.0.1:{uas_port}", "-rsa", f"127.0.0.1:{proxy_port}", "-i", "127.0.0.1",
        "-p", str(free_port()), "-m", str(calls), "-r", str(rate), "-l", str(max(rate * 4, 100)),
        "-timeout", str(int(seconds * 4 + 30)), "-timeout_error", "-trace_rtt", "-rtt_freq", "1",
        "-max_socket", "1000", "-nostdin",
    ]
    p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=seconds * 4 + 60, check=False)
    wall = time.monotonic() - t0
    cpu = cpu_tree(proxy_pid) - cpu0
    out = p.stdout

    def stat(name: str) -> int:
        m = re.findall(rf"{name}\s*\|\s*(\d+)\s*\|\s*(\d+)", out)
        return int(m[-1][1]) if m else 0

    ok, failed = stat("Successful call"), stat("Failed call")
    retrans = sum(int(x) for x in re.findall(r"^\s*\S+\s+-+>?\s+\S+\s+\d+\s+(\d+)", out, re.M)) if out else 0
    rtts: list[float] = []
    for f in work.glob("uac*_rtt.csv"):
        for line in f.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    pass
    p99 = statistics.quantiles(rtts, n=100)[98] if len(rtts) >= 100 else (max(rtts) if rtts else float("nan"))
    return Step(rate, calls, ok, failed, retrans, wall, cpu, p99)


def start_rtc2sip(port: int, work: Path) -> subprocess.Popen[bytes]:
    opts = work / "rtc2sip.toml"
    opts.write_text(RTC2SIP_TOML.format(data=work / "data", port=port))
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(work / "rtc2sip.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "rtc2sip", "--options", str(opts)], stdout=log, stderr=log,
                            env=env, start_new_session=True)


def start_kamailio(port: int, work: Path) -> subprocess.Popen[bytes]:
    cfg = work / "kamailio.cfg"
    text = KAMAILIO_CFG.format(port=port)
    mods = [Path("/usr/lib/x86_64-linux-gnu/kamailio/modules"), Path("/usr/lib/kamailio/modules")]
    for m in mods:
        if (m / "tm.so").exists():
            text = text.replace("/usr/lib/x86_64-linux-gnu/kamailio/modules/", f"{m}/")
    cfg.write_text(text)
    run = work / "kam"
    run.mkdir(exist_ok=True)
    log = open(work / "kamailio.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "1024", "-M", "32", "-Y", str(run),
                             "-w", str(run)], stdout=log, stderr=log, start_new_session=True)


def stop(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def bench(name: str, starter: object, rates: list[int], seconds: float, work: Path) -> list[Step]:
    d = work / name
    d.mkdir()
    uas_port, port = free_port(), free_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
                            "-max_socket", "1000"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    proc = starter(port, d)  # type: ignore[operator]
    steps: list[Step] = []
    try:
        wait_udp(port)
        for rate in rates:
            s = run_step(port, proc.pid, uas_port, rate, seconds, d)
            steps.append(s)
            print(f"  {name:8} offered {rate:5}/s: {s.ok:6}/{s.calls} ok, {s.failed} failed, {s.retrans} retrans, "
                  f"{s.cps:7.0f} calls/s, p99 {s.p99_ms:7.1f} ms, {s.cpu_us_per_call:6.0f} µs CPU/call", flush=True)
            if s.failed > s.calls * 0.05:
                break  # past saturation: higher steps only take longer
            time.sleep(1.0)
    finally:
        stop(proc)
        stop(uas)
    return steps


def carried(steps: list[Step]) -> Step | None:
    good = [s for s in steps if s.clean()]
    return max(good, key=lambda s: s.cps) if good else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="250,500,1000,1500,2000,2500,3000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", choices=("rtc2sip", "kamailio"))
    args = ap.parse_args()
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install sip-tester kamailio)", file=sys.stderr)
            return 2
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="sip_cps-") as tmp:
        work = Path(tmp)
        if args.only != "kamailio":
            results["rtc2sip"] = bench("rtc2sip", start_rtc2sip, rates, args.seconds, work)
        if args.only != "rtc2sip":
            results["kamailio"] = bench("kamailio", start_kamailio, rates, args.seconds, work)
    print()
    best = {k: carried(v) for k, v in results.items()}
    for k, s in best.items():
        if s is None:
            print(f"{k:8}: no clean step")
        else:
            print(f"{k:8}: carried {s.cps:6.0f} calls/s (offered {s.rate}/s), p99 INVITE response {s.p99_ms:.1f} ms, "
                  f"{s.cpu_us_per_call:.0f} µs CPU/call")
    r, k = best.get("rtc2sip"), best.get("kamailio")
    if r and k:
        print(f"ratio rtc2sip/kamailio: {r.cps / k.cps:.2f} (calls/s carried), "
              f"{k.cpu_us_per_call / r.cpu_us_per_call:.2f} (CPU efficiency per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
