#!/usr/bin/env python3
"""Bridged G.711 calls per core: rtc2sip's media plane against rtpengine (userspace), same run.

Not a test: it prints figures. Each call has a browser leg (ICE, DTLS-SRTP, rtcp-mux) and a legacy leg
(plain RTP/AVP), 172-byte PCMU packets every 20 ms each way, i.e. 100 packets/s through the relay.
For each gateway in turn it steps the number of concurrent calls up and, per step, measures over a
fixed window:

- loss per direction (packets sent in the window that never arrived, send time in the payload);
- one-way latency through the relay, p50 and p99 (send to receive, generator to generator);
- the relay's CPU time per relayed packet, summed over all its threads from /proc/PID/task/*/schedstat
  (the figure least disturbed by a noisy machine), and its share of the core;
- its resident memory per call: (RSS now - RSS idle) / calls;
- the generator's own CPU share, so that a step where the generator and not the relay ran out of
  core is visible.

A gateway "carries" a step when both directions lose under --max-loss (0.5 %) and every call was set
up; its capacity is the highest step it carried. Stepping stops after --fail-steps failed steps in a
row. The ratio printed at the end is rtc2sip's capacity over rtpengine's.

The relay runs pinned to one core (``taskset -c 1``): rtc2sip as a child process that owns a
MediaPlane, driven by a JSON-over-UDP control server of a few lines (below, ``--worker``), so what is
measured is the media path, not SIP; rtpengine 10.5 in userspace mode (``--table=-1``) with one worker
thread, driven by its NG protocol. The generator (bench/loadgen.py) runs pinned to the other core.
Its media loop is C by default (bench/loadgen_c, built with gcc at start; ``--generator python`` for
the all-Python one, which is also the fallback when the build fails): the Python loop costs about as
much per packet as the relays and saturates its core at ~700 calls.

    python bench/relay.py                                  # the three gateways, default steps
    python bench/relay.py --steps 200,400,800 --seconds 10 --gateways rtc2sip
    python bench/relay.py --generator python               # the all-Python generator
    python bench/relay.py --gateways rtc2sip --workers 1   # rtc2sip's plane in a media worker process

Needs rtpengine (Debian rtpengine-daemon) and util-linux's taskset; everything runs on 127.0.0.1 and
every process it starts is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN_US = 10  # loadgen histogram bins
NOFILE = 65536


# -- the rtc2sip side: a MediaPlane behind a JSON control socket ---------------------------------------


async def run_worker(control_port: int, port_range: tuple[int, int], coder: bool = False, workers: int = 0) -> None:
    """One MediaPlane in this process; requests {"id", "op": offer|answer|delete, ...} over UDP.
    ``coder``: ``enable-media-coder`` on, with a CoderPool as rtc2sip.app builds it and no limit on
    transcoded calls (``[limits] max_transcoded_calls = 0``), for bench/coder.py. ``workers`` >= 1:
    the plane in that many media worker processes (``[media] workers``, rtc2sip.media.remote), the
    children of this one, whose CPU and memory the bench counts with this process's."""
    import dataclasses

    from rtc2sip.config import Settings
    from rtc2sip.media.certificate import Certificate
    from rtc2sip.media.plane import MediaPlane
    from rtc2sip.sdp import SessionDescription

    settings = Settings()
    pool = None
    if coder:
        from rtc2sip.coder import CoderPool

        settings = dataclasses.replace(settings, webrtc2sip=dataclasses.replace(settings.webrtc2sip,
                                                                                enable_media_coder=True))
        pool = CoderPool(1_000_000)
    plane: Any
    if workers:
        from rtc2sip.media.remote import RemotePlane

        plane = RemotePlane(settings, Certificate.generate(), workers=workers, host="127.0.0.1", port_range=port_range,
                            coder_limit=1_000_000 if coder else 0)
        await plane.start()
    else:
        plane = MediaPlane(settings, Certificate.generate(), host="127.0.0.1", port_range=port_range, coder=pool)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            task = loop.create_task(self.handle(json.loads(data), addr))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def handle(self, request: dict[str, Any], addr: tuple[str, int]) -> None:
            reply: dict[str, Any] = {"id": request["id"], "ok": True}
            try:
                op = request["op"]
                if op == "offer":
                    session, legacy = await plane.offer_from_webrtc(
                        request["call_id"], SessionDescription.parse(request["sdp"]))
                    reply |= {"session": session, "sdp": str(legacy)}
                elif op == "answer":
                    answer = await plane.answer_from_legacy(request["session"],
                                                            SessionDescription.parse(request["sdp"]))
                    reply["sdp"] = str(answer)
                elif op == "delete":
                    await plane.delete(request["session"])
                elif op == "stats":
                    reply["sessions"] = len(plane.sessions)
                    if isinstance(plane, MediaPlane):  # the shared socket's and the fast path's counters
                        reply["socket"] = plane.webrtc_socket_stats()
                elif op == "memory":  # by hand, with PYTHONTRACEMALLOC=N in the bench's environment
                    import tracemalloc

                    top = tracemalloc.take_snapshot().statistics(request.get("key", "lineno"))[:30]
                    reply["top"] = [f"{s.size / 1024:.0f} KiB in {s.count}: {s.traceback}" for s in top]
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception as exc:
                reply = {"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.transport.sendto(json.dumps(reply).encode(), addr)

    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", control_port))
    def finish() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, finish)
    def stdin_readable() -> None:
        if not sys.stdin.read(1):  # EOF: the bench is done
            finish()

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    print("ready", flush=True)
    await done
    transport.close()
    await plane.close()
    if pool is not None:
        await pool.shutdown()


# -- processes and /proc -----------------------------------------------------------------------------------


NICE = -10  # set by --nice
PR_SET_PDEATHSIG = 1


def _prepare_child() -> None:
    """Run in each child before exec.

    - Three sockets per call in rtc2sip, four in rtpengine: the soft fd limit goes up to the hard one.
    - The child dies with the bench (PR_SET_PDEATHSIG), whatever kills the bench.
    - Its own session, hence its own scheduler autogroup, with a higher weight (``--nice``): with
      autogroups a task's nice value only counts inside its session, so on a shared machine the
      other sessions' programs would otherwise take the measured cores as often as the bench does.
      The same weight for relay and generator of both gateways; root only, ignored otherwise.
    """
    import ctypes

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(NICE))
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError:
        pass


def cpu_ns(pid: int) -> tuple[int, int]:
    """On-CPU and runnable-but-waiting time of every thread of ``pid`` (schedstat, ns: finer than
    utime/stime ticks; the wait shows how much other programs of a shared machine took the core)."""
    run = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listdir and open
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


def _cpu(pids: list[int]) -> tuple[int, int]:
    pairs = [cpu_ns(p) for p in pids]
    return sum(r for r, _ in pairs), sum(w for _, w in pairs)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (rtc2sip's media worker processes), from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return out


def tree_cpu_ns(pid: int) -> tuple[int, int]:
    """:func:`cpu_ns` summed over the process tree (a media worker that died takes its share along)."""
    run = wait = 0
    for p in process_tree(pid):
        try:
            r, w = cpu_ns(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        run += r
        wait += w
    return run, wait


def tree_rss_kb(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            total += rss_kb(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    name = ""
    protocol = ""  # how the generator drives it (bench/loadgen.py --gateway)
    loadgen_cmd: tuple[str, ...] = (str(HERE / "loadgen.py"),)  # bench/coder.py runs its own generator

    def __init__(self, core: int) -> None:
        self.core = core
        self.control_port = _free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Rtc2sipGateway(Gateway):
    name = protocol = "rtc2sip"
    port_range = (20000, 29999)
    worker_args: tuple[str, ...] = ()  # ("--coder",): the Media Coder on (bench/coder.py)
    fast_path = "auto"  # [media] fast_path through RTC2SIP_FAST_PATH: the compiled relay when built

    def start(self) -> None:
        cmd = ["taskset", "-c", str(self.core), sys.executable, str(Path(__file__).resolve()), "--worker",
               "--control-port", str(self.control_port), "--port-range", f"{self.port_range[0]}-{self.port_range[1]}",
               *self.worker_args]
        env = dict(os.environ, RTC2SIP_FAST_PATH=self.fast_path)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_prepare_child,
                                     env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"rtc2sip worker did not start: {line!r}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # EOF: the worker closes its plane and exits
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop()


class Rtc2sipPythonGateway(Rtc2sipGateway):
    """rtc2sip with ``[media] fast_path = "off"``: Python relays every packet."""

    name = "rtc2sip-python"
    fast_path = "off"


class RtpengineGateway(Gateway):
    name = protocol = "rtpengine"
    port_range = (10000, 19999)

    def start(self) -> None:
        exe = shutil.which("rtpengine")
        if exe is None:
            raise RuntimeError("rtpengine not found (Debian: rtpengine-daemon)")
        cmd = ["taskset", "-c", str(self.core), exe, "--config-file=none", "--foreground", "--log-stderr",
               "--log-level=4", "--table=-1", "--interface=127.0.0.1",
               f"--listen-ng=127.0.0.1:{self.control_port}", f"--port-min={self.port_range[0]}",
               f"--port-max={self.port_range[1]}", "--num-threads=1", "--media-num-threads=1",
               "--timeout=60", "--delete-delay=0"]
        self.log = open(os.environ.get("RTPENGINE_LOG", "/tmp/bench-rtpengine.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_prepare_child)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            for _ in range(50):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rtpengine exited ({self.proc.returncode}), see {self.log.name}")
                s.sendto(b"0 d7:command4:pinge", ("127.0.0.1", self.control_port))
                try:
                    if b"pong" in s.recv(1000):
                        return
                except TimeoutError:
                    pass
        raise RuntimeError(f"rtpengine did not answer ping, see {self.log.name}")


def build_c_generator() -> str | None:
    """Builds bench/loadgen_c (gcc, libsrtp2 headers, libcrypto) and checks it with its selftest
    (SRTP, STUN and counting against pylibsrtp and aioice); None when it works, else why not (the
    bench then falls back to the Python generator)."""
    script = HERE / "loadgen_c" / "build.sh"
    try:
        done = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{script} did not run: {exc}"
    if done.returncode != 0:
        return f"{script} failed: {(done.stderr or done.stdout).strip()[-500:]}"
    try:
        done = subprocess.run([sys.executable, str(HERE / "loadgen_c" / "selftest.py")], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "bench/loadgen_c/selftest.py did not finish in 60 s"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"bench/loadgen_c/selftest.py failed: {last[0]}"
    return None


class Loadgen:
    def __init__(self, gateway: Gateway, core: str, concurrency: int, generator: str = "python") -> None:
        cmd = ["taskset", "-c", str(core), sys.executable, *gateway.loadgen_cmd, "--gateway", gateway.protocol,
               "--control", f"127.0.0.1:{gateway.control_port}", "--concurrency", str(concurrency)]
        if generator != "python" and gateway.loadgen_cmd == Gateway.loadgen_cmd:  # bench/coder.py's: Python
            cmd += ["--generator", generator]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_prepare_child)
        if not self.read().get("ready"):
            raise RuntimeError("load generator did not start")

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "stop"})
                self.read()
                self.proc.wait(15)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def all_do(loadgens: list[Loadgen], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for lg, command in zip(loadgens, commands, strict=True):
        lg.send(command)
    return [lg.read() for lg in loadgens]


# -- measurement ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    calls: int
    failed_setups: int
    loss_b2p: float
    loss_p2b: float
    p50_ms: float
    p99_ms: float
    us_per_packet: float
    relay_cpu: float
    loadgen_cpu: float
    loadgen_us_per_packet: float
    rss_mb: float
    kb_per_call: float
    packets: int
    late_slots: int
    notes: list[str] = field(default_factory=list)
    # RSS per call once every call of the step is older than --settle (rtc2sip frees a call's DTLS
    # connection 20 s after its handshake): what a call holds for the rest of its life; NaN: not measured.
    kb_per_call_settled: float = float("nan")

    def carried(self, max_loss: float) -> bool:
        return self.failed_setups == 0 and max(self.loss_b2p, self.loss_p2b) < max_loss


def percentile(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    need = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= need:
            return (b + 0.5) * BIN_US / 1000
    return float("nan")


def run_gateway(gateway: Gateway, args: argparse.Namespace) -> list[Step]:
    steps: list[Step] = []
    loadgens: list[Loadgen] = []
    try:
        gateway.start()
        time.sleep(1.0)
        base_rss = tree_rss_kb(gateway.pid)
        generator = getattr(args, "generator", "python")  # bench/coder.py's args have none
        loadgens = [Loadgen(gateway, args.loadgen_core, args.concurrency, generator)
                    for _ in range(args.loadgens)]
        lg_pids = [lg.proc.pid for lg in loadgens]
        failed_before = 0
        misses = 0
        tree = process_tree(gateway.pid)
        extra = f", {len(tree) - 1} media worker processes counted with it" if len(tree) > 1 else ""
        print(f"\n## {gateway.name} (pid {gateway.pid}, core {args.relay_core}; idle RSS {base_rss / 1024:.1f} MB"
              f"{extra})")
        print("| calls | loss b→p % | loss p→b % | p50 ms | p99 ms | µs/pkt | relay CPU % | gen CPU % "
              "| gen µs/pkt | RSS MB | KB/call | KB/call settled | carried |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
        for calls in args.steps:
            share = [calls // len(loadgens) + (1 if i < calls % len(loadgens) else 0) for i in range(len(loadgens))]
            grown = all_do(loadgens, [{"cmd": "grow", "calls": n} for n in share])
            failed = sum(g["failed"] for g in grown)
            new_failures = failed - failed_before
            failed_before = failed
            established = sum(g["calls"] for g in grown)
            grown_at = time.monotonic()
            errors = [e for g in grown for e in g["errors"]]
            time.sleep(args.warmup)
            start = time.monotonic_ns() + 1_000_000_000  # the command must arrive first
            end = start + int(args.seconds * 1e9)
            all_do(loadgens, [{"cmd": "window", "start_ns": start, "end_ns": end}] * len(loadgens))
            time.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
            (cpu0, wait0), (lg0, lgw0), t0 = tree_cpu_ns(gateway.pid), _cpu(lg_pids), time.monotonic_ns()
            time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
            (cpu1, wait1), (lg1, lgw1), t1 = tree_cpu_ns(gateway.pid), _cpu(lg_pids), time.monotonic_ns()
            rss = tree_rss_kb(gateway.pid)
            time.sleep(args.grace)
            reports = all_do(loadgens, [{"cmd": "report"}] * len(loadgens))
            sent = {d: sum(r[d]["sent"] for r in reports) for d in ("b2p", "p2b")}
            received = {d: sum(r[d]["received"] for r in reports) for d in ("b2p", "p2b")}
            hist: dict[int, int] = {}
            for r in reports:
                for d in ("b2p", "p2b"):
                    for b, n in r[d]["hist"].items():
                        hist[int(b)] = hist.get(int(b), 0) + n
            packets = sent["b2p"] + sent["p2b"]
            loss = {d: 100.0 * (1 - received[d] / sent[d]) if sent[d] else 100.0 for d in sent}
            step = Step(
                calls=established, failed_setups=new_failures, loss_b2p=loss["b2p"], loss_p2b=loss["p2b"],
                p50_ms=percentile(hist, 0.50), p99_ms=percentile(hist, 0.99),
                us_per_packet=(cpu1 - cpu0) / 1000 / packets if packets else float("nan"),
                relay_cpu=100.0 * (cpu1 - cpu0) / (t1 - t0), loadgen_cpu=100.0 * (lg1 - lg0) / (t1 - t0),
                # per relayed packet, as the relay's: the generator sends it and receives it
                loadgen_us_per_packet=(lg1 - lg0) / 1000 / packets if packets else float("nan"),
                rss_mb=rss / 1024, kb_per_call=(rss - base_rss) / established if established else float("nan"),
                packets=packets, late_slots=sum(r["late_slots"] for r in reports),
            )
            settle = getattr(args, "settle", 0.0)  # bench/coder.py's arguments have none
            if settle > 0 and established:
                time.sleep(max(0.0, grown_at + settle - time.monotonic()))
                step.kb_per_call_settled = (tree_rss_kb(gateway.pid) - base_rss) / established
            if new_failures:
                step.notes.append(f"{new_failures} setups failed: {errors[:2]}")
            waits = (100.0 * (wait1 - wait0) / (t1 - t0), 100.0 * (lgw1 - lgw0) / (t1 - t0))
            if max(waits) > 5:
                step.notes.append(f"waited for CPU: relay {waits[0]:.0f} %, generator {waits[1]:.0f} %")
            if step.late_slots:
                late_ms = max(r["max_late_ms"] for r in reports)
                step.notes.append(f"generator late {step.late_slots}x, up to {late_ms:.0f} ms")
            if step.loadgen_cpu > 90:
                step.notes.append("generator near saturation")
            send_errors = sum(r["send_errors"] for r in reports)
            if send_errors:
                step.notes.append(f"{send_errors} generator send errors")
            consent_errors = sum(r.get("consent", {}).get("error", 0) for r in reports)  # C generator only
            if consent_errors:
                step.notes.append(f"{consent_errors} consent checks refused")
            dropped = sum(r.get("forward_dropped", 0) for r in reports)
            if dropped:
                step.notes.append(f"{dropped} datagrams for Python's setup dropped by the C loop")
            steps.append(step)
            ok = step.carried(args.max_loss)
            print(f"| {step.calls} | {step.loss_b2p:.3f} | {step.loss_p2b:.3f} | {step.p50_ms:.2f} | "
                  f"{step.p99_ms:.2f} | {step.us_per_packet:.1f} | {step.relay_cpu:.0f} | {step.loadgen_cpu:.0f} | "
                  f"{step.loadgen_us_per_packet:.1f} | "
                  f"{step.rss_mb:.0f} | {step.kb_per_call:.0f} | {_settled(step)} | "
                  f"{'yes' if ok else 'no'} |"
                  + (f" {'; '.join(step.notes)}" if step.notes else ""), flush=True)
            misses = 0 if ok else misses + 1
            if (misses >= args.fail_steps or max(step.loss_b2p, step.loss_p2b) > 20 or established < calls * 0.9
                    or (not ok and step.loadgen_cpu > 95)):
                break
    finally:
        for lg in loadgens:
            lg.stop()
        gateway.stop()
        log = getattr(gateway, "log", None)
        if log is not None:
            log.close()
    return steps


def _settled(step: Step) -> str:
    value = step.kb_per_call_settled
    return "-" if value != value else f"{value:.0f}"  # NaN: not measured (--settle 0, bench/coder.py)


def capacity(steps: list[Step], max_loss: float) -> Step | None:
    carried = [s for s in steps if s.carried(max_loss)]
    return max(carried, key=lambda s: s.calls) if carried else None


def main() -> None:
    global NICE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800,900,1000,1200",
                        type=lambda s: [int(x) for x in s.split(",")], help="concurrent calls per step")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds between setup and window")
    parser.add_argument("--grace", type=float, default=1.0, help="seconds after the window for late packets")
    parser.add_argument("--settle", type=float, default=25.0,
                        help="read RSS again this long after the step's calls were set up (0: not)")
    parser.add_argument("--gateways", default="rtc2sip,rtc2sip-python,rtpengine",
                        help="rtc2sip (fast path auto), rtc2sip-python (fast path off), rtpengine")
    parser.add_argument("--relay-core", type=int, default=1)
    parser.add_argument("--loadgen-core", default="0", help="taskset CPU list of the generators, e.g. 0 or 0,2,3")
    parser.add_argument("--loadgens", type=int, default=1, help="generator processes (all on --loadgen-core)")
    parser.add_argument("--concurrency", type=int, default=20, help="call setups in flight per generator")
    parser.add_argument("--generator", choices=("c", "python"), default="c",
                        help="media loop of the generator: c (bench/loadgen_c, built at start; Python if the "
                        "build fails) or python")
    parser.add_argument("--nice", type=int, default=NICE, help="nice value of relay and generators (root)")
    parser.add_argument("--max-loss", type=float, default=0.5, help="percent, per direction")
    parser.add_argument("--fail-steps", type=int, default=2, help="stop after this many failed steps in a row")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-range", help=argparse.SUPPRESS)
    parser.add_argument("--coder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0,
                        help="rtc2sip's [media] workers: the plane in N worker processes (pinned with it to "
                             "--relay-core; CPU and RSS summed over the process tree)")
    args = parser.parse_args()
    NICE = args.nice

    if args.worker:
        import uvloop  # as rtc2sip's CLI runs it

        low, high = (int(x) for x in args.port_range.split("-"))
        uvloop.run(run_worker(args.control_port, (low, high), args.coder, args.workers))
        return

    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed to pin the processes")
    print(f"# bench/relay.py: {' '.join(sys.argv[1:]) or '(defaults)'}")
    if args.generator == "c":
        why = build_c_generator()
        if why is not None:
            print(f"C generator unavailable, falling back to the Python one: {why}")
            args.generator = "python"
    print(f"steps {args.steps}, {args.seconds:g} s window, {args.warmup:g} s warm-up, loss limit "
          f"{args.max_loss:g} % per direction; relay on core {args.relay_core}, generator on core "
          f"{args.loadgen_core} ({args.generator} media loop); {os.cpu_count()} CPUs; nice {args.nice}; "
          f"load average before: {Path('/proc/loadavg').read_text().split()[0]}")
    kinds = {"rtc2sip": Rtc2sipGateway, "rtc2sip-python": Rtc2sipPythonGateway, "rtpengine": RtpengineGateway}
    results: dict[str, list[Step]] = {}
    for name in args.gateways.split(","):
        gateway = kinds[name](args.relay_core)
        if isinstance(gateway, Rtc2sipGateway) and args.workers:
            gateway.worker_args = (*gateway.worker_args, "--workers", str(args.workers))
        results[name] = run_gateway(gateway, args)

    print("\n## summary")
    best: dict[str, Step | None] = {}
    per_core: dict[str, float] = {}
    for name, steps in results.items():
        best[name] = step = capacity(steps, args.max_loss)
        busiest = max(steps, key=lambda s: s.relay_cpu) if steps else None
        if busiest is not None and busiest.us_per_packet == busiest.us_per_packet:  # not NaN
            # PERFORMANCE.md's yardstick: calls per core at 100 % CPU from the cost per packet under load.
            per_core[name] = 1e6 / (busiest.us_per_packet * 100)
        if step is None:
            print(f"- {name}: carried no step")
            continue
        after = next((s for s in steps if s.calls > step.calls), None)
        bound = ""
        # The Python generator costs about what the relay does per packet: above the relay's share it
        # was the limit. The C one costs less, and a relay that breaks (rtpengine stops reading a port
        # whose queue overflowed 5 times) falls below it without the generator being the limit.
        if after is not None and (after.loadgen_cpu > 90
                                  or (args.generator == "python" and after.loadgen_cpu > after.relay_cpu)):
            bound = " (the generator, not the relay, ran out of core first: a lower bound)"
        print(f"- {name}: {step.calls} calls with < {args.max_loss:g} % loss{bound}; p99 {step.p99_ms:.2f} ms, "
              f"{step.us_per_packet:.1f} µs CPU/packet, {step.kb_per_call:.0f} KB/call "
              f"({_settled(step)} settled), relay CPU "
              f"{step.relay_cpu:.0f} %")
        if busiest is not None and name in per_core:
            print(f"  at {busiest.calls} calls ({busiest.relay_cpu:.0f} % of its core): {busiest.us_per_packet:.1f} "
                  f"µs/packet, i.e. ~{per_core[name]:.0f} calls per core at 100 % CPU")
    a, b = best.get("rtc2sip"), best.get("rtpengine")
    if a is not None and b is not None:
        print(f"- ratio rtc2sip / rtpengine, calls carried with < {args.max_loss:g} % loss: {a.calls / b.calls:.2f}x")
    if "rtc2sip" in per_core and "rtpengine" in per_core:
        print(f"- ratio rtc2sip / rtpengine, calls per core from CPU per packet: "
              f"{per_core['rtc2sip'] / per_core['rtpengine']:.2f}x (target: 1.5x)")


if __name__ == "__main__":
    main()
