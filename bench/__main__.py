"""`python -m bench [--quick] [--only intake,reconcile,attendance,...] [--results DIR]`.

Each benchmark prints a table and writes `bench/results/<name>.json`. `--quick` uses tiny sizes
(the smoke test runs it); the full run takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    attendance,
    callbacks,
    coldstart,
    directory,
    intake,
    listing,
    memory,
    reconcile,
    retention,
    throughput,
)
from bench.common import RESULTS, Stack, machine, stack, write_result

Runner = Callable[..., dict[str, Any]]
Reporter = Callable[[dict[str, Any]], str]
BENCHMARKS: dict[str, tuple[Runner, Reporter]] = {
    "intake": (intake.run, intake.report),
    "reconcile": (reconcile.run, reconcile.report),
    "directory": (directory.run, directory.report),
    "throughput": (throughput.run, throughput.report),
    "callbacks": (callbacks.run, callbacks.report),
    "coldstart": (coldstart.run, coldstart.report),
    "memory": (memory.run, memory.report),
    "listing": (listing.run, listing.report),
    "attendance": (attendance.run, attendance.report),
    "retention": (retention.run, retention.report),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset of: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    info = machine()
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu_model']}, Python {info['python']}"
        f"{' (quick)' if args.quick else ''}",
        flush=True,
    )
    started = time.perf_counter()
    for name in chosen:
        run, report = BENCHMARKS[name]
        print(f"\n== {name} ==", flush=True)
        began = time.perf_counter()
        # A fresh Azurite per benchmark: Azurite's table queries slow down with the number of
        # entities it holds, so one benchmark's data must not tax the next.
        with stack() as running:
            results = _run(run, running, quick=args.quick)
        results["quick"] = args.quick
        results["duration_s"] = round(time.perf_counter() - began, 1)
        results["command"] = "python -m bench" + (" --quick" if args.quick else "")
        path = write_result(name, results, args.results)
        print(report(results), flush=True)
        print(f"({results['duration_s']} s; {path})", flush=True)
    print(f"\nall done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def _run(run: Runner, running: Stack, *, quick: bool) -> dict[str, Any]:
    return run(running, quick=quick)


if __name__ == "__main__":
    sys.exit(main())
