#!/usr/bin/env python3
"""The long fuzz run of issue 13 item 2 (docs/FUZZING.md).

    python scripts/fuzz.py --inputs 1000000 [--target NAME ...] [--seed 0] [--time-limit 1.0]
    python scripts/fuzz.py --replay fuzz-crashes/sdp-crash-0123456789abcdef.bin

Runs each target (all by default, one after the other) over the seeded mutator's inputs and prints
per target: inputs, exec/s, crashes, hangs, the slowest input's time. Every crashing or hanging input
is saved under --crash-dir for --replay, which runs one saved input and shows its traceback. Exit
status 1 when anything crashed or hung.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is fuzz.py too: its own directory must not shadow the tests/fuzz package
sys.path[:] = [str(ROOT / "tests"), str(ROOT / "src")] + [
    p for p in sys.path if Path(p or ".").resolve() != ROOT / "scripts"
]

from fuzz.runner import run_target  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402

# What the gateway logs about bad input is not the fuzzer's business: a million warnings would
# dominate the run's time. Not in tests/fuzz: pytest's other tests read those logs.
logging.getLogger("rtc2sip").setLevel(logging.CRITICAL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1000000)")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="only this target (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="the mutator's seed: the same seed, the same inputs")
    ap.add_argument("--time-limit", type=float, default=1.0, help="seconds an input may take before it is a hang")
    ap.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"), help="where failing inputs are saved")
    ap.add_argument("--replay", type=Path, help="run one saved input (its target is in its file name)")
    args = ap.parse_args()

    if args.replay is not None:
        name = args.replay.name.split("-", 1)[0] if args.replay.name.split("-", 1)[0] in TARGETS else None
        name = next((t for t in sorted(TARGETS, key=len, reverse=True) if args.replay.name.startswith(t + "-")), name)
        if name is None:
            ap.error(f"cannot tell the target from {args.replay.name!r}")
        t0 = time.perf_counter()
        try:
            TARGETS[name].run(args.replay.read_bytes())
        except Exception:
            traceback.print_exc()
            return 1
        print(f"{name}: no exception ({time.perf_counter() - t0:.3f} s)")
        return 0

    names = args.target or list(TARGETS)
    print(f"# python scripts/fuzz.py --inputs {args.inputs} --seed {args.seed} --time-limit {args.time_limit}"
          + "".join(f" --target {n}" for n in args.target or ()), flush=True)
    print("| target | inputs | seconds | exec/s | crashes | hangs | slowest input (ms) |", flush=True)
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
    failed = False
    # SIGTERM (a timeout, a CI cancel) stops like Ctrl-C: the current target's figures so far are printed
    signal.signal(signal.SIGTERM, _interrupt)
    for name in names:
        r = run_target(name, args.inputs, seed=args.seed, time_limit=args.time_limit, crash_dir=args.crash_dir,
                       progress=True)
        note = " (interrupted)" if r.interrupted else ""
        print(f"| {name}{note} | {r.inputs} | {r.seconds:.0f} | {r.rate:.0f} | {r.crash_count} | {len(r.hangs)} | "
              f"{r.slowest * 1000:.1f} |", flush=True)
        if r.interrupted:
            failed = True
        for crash in r.crashes.values():
            failed = True
            print(f"\n{name}: {crash.count} x {crash.kind}: {crash.message}\n{crash.trace}", file=sys.stderr)
        if r.hangs:
            failed = True
            print(f"{name}: {len(r.hangs)} hangs saved in {args.crash_dir}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
