"""Memory under load: RSS of a worker process that reconciles 2,000 appointments.

The worker is a subprocess (so only the app's memory is measured; Azurite and the emulator run
elsewhere). It delivers the reconcile benchmark's mix through the queue function, one delivery
after another, and samples VmRSS from /proc/self/status after every 250 appointments. Peak RSS
is VmHWM (ru_maxrss is recorded too, but on Linux a child inherits its parent's peak in it
across fork and exec). The slope
of RSS against appointments processed after warm-up (least squares, MB per 1,000) says whether
memory grows with the work done: "flat" (strict) means the growth it predicts over the measured
span is within 2 x the residual spread of the samples around the fit; `under_1mb_over_span`
is the loose reading.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, Stack, ensure_storage, linear_slope, table

WARMUP = 500


def _status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmRSS now, VmHWM peak) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def worker(count: int, every: int, seed: int) -> None:
    """Runs in the child: reconcile `count` appointments, print one JSON line per sample."""
    from azure.functions.queue import QueueMessage

    from bench import workload
    from bench.reconcile import message_text
    from shared.queue_functions import reconcile_appointment_event

    appointments = workload.build(count, seed, f"mem-{uuid.uuid4().hex[:8]}")
    print(json.dumps({"processed": 0, "rss_mb": _rss_mb()}), flush=True)
    errors = 0
    for index, appointment in enumerate(appointments, start=1):
        for document in appointment.deliveries:
            text = message_text(document, "mem")
            message = QueueMessage(
                id=uuid.uuid4().hex, body=text.encode(), dequeue_count=1, pop_receipt="r"
            )
            try:
                reconcile_appointment_event(message)
            except Exception:
                errors += 1
        if index % every == 0 or index == count:
            print(json.dumps({"processed": index, "rss_mb": _rss_mb()}), flush=True)
    gc.collect()
    peak = _status_mb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"done": True, "peak_rss_mb": peak, "ru_maxrss_mb": maxrss, "errors": errors}),
        flush=True,
    )


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    count, every = (100, 25) if quick else (2000, 250)
    warmup = every * 2 if quick else WARMUP
    stack.graph.latency = 0.0
    ensure_storage(stack.connection_string)
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--worker", str(count), str(every), "7"],
        cwd=ROOT,
        env=stack.child_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed: {done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    samples = [line for line in lines if "processed" in line]
    final = next(line for line in lines if line.get("done"))
    measured = [s for s in samples if s["processed"] >= warmup]
    xs = [s["processed"] / 1000 for s in measured]
    ys = [s["rss_mb"] for s in measured]
    slope, spread = linear_slope(xs, ys)
    span = (xs[-1] - xs[0]) if xs else 0.0
    predicted_growth = slope * span
    return {
        "appointments": count,
        "sample_every": every,
        "warmup_appointments": warmup,
        "samples": [
            {"processed": s["processed"], "rss_mb": round(s["rss_mb"], 2)} for s in samples
        ],
        "peak_rss_mb": round(final["peak_rss_mb"], 1),
        "ru_maxrss_mb": round(final["ru_maxrss_mb"], 1),
        "errors": final["errors"],
        "slope_mb_per_1000": round(slope, 3),
        "residual_spread_mb": round(spread, 3),
        "growth_over_span_mb": round(predicted_growth, 3),
        "growth_per_appointment_bytes": round(slope * 1024 * 1024 / 1000),
        # Strict: the fitted growth is no bigger than the noise around the fit.
        "flat": abs(predicted_growth) <= 2 * spread,
        # Loose: under 1 MB over the whole measured span.
        "under_1mb_over_span": abs(predicted_growth) <= 1.0,
    }


def report(results: dict[str, Any]) -> str:
    rows = [[s["processed"], s["rss_mb"]] for s in results["samples"]]
    text = table(
        f"Memory: worker RSS while reconciling {results['appointments']} appointments",
        ["processed", "VmRSS MB"],
        rows,
    )
    text += (
        f"\n\npeak RSS {results['peak_rss_mb']} MB; slope after {results['warmup_appointments']} "
        f"appointments: {results['slope_mb_per_1000']} MB per 1,000 (residual spread "
        f"{results['residual_spread_mb']} MB, growth over the span "
        f"{results['growth_over_span_mb']} MB, "
        f"{results['growth_per_appointment_bytes']} bytes per appointment): "
        f"{'flat within noise' if results['flat'] else 'grows steadily (beyond the noise)'}, "
        f"{'under' if results['under_1mb_over_span'] else 'OVER'} 1 MB over the span; "
        f"errors {results['errors']}"
    )
    return text


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=3, type=int, metavar=("COUNT", "EVERY", "SEED"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)


if __name__ == "__main__":
    _main()
