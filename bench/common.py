"""What every benchmark shares: the local stack, percentiles, tables, JSON results, the machine.

The stack is the one the tests use: a real Azurite (in memory) and the Graph emulator over real
HTTP on loopback, with the app's settings in the environment, so the benchmarks run the
production code paths (storage SDKs, azure-identity, msgraph-sdk) and nothing else.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "bench-secret-0123456789abcdef"
# Organizers the emulator seeds (object ids: no UPN resolution in the measured path).
ALEX = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"
MEGAN = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e02"


def clear_app_caches() -> None:
    """Forget the app's process-wide settings and clients so the next call reads the env."""
    from shared import runtime, settings

    settings.current.cache_clear()
    runtime.store.cache_clear()
    runtime.queue.cache_clear()
    runtime.graph_gateway.cache_clear()
    runtime.reconciler.cache_clear()
    runtime.directory.cache_clear()
    # The callback client owns an event-loop thread and a connection pool: close it, not just
    # forget it, so that a benchmark that switches callbacks on and off leaks neither.
    if runtime.callback_client.cache_info().currsize:
        runtime.callback_client().close()
    runtime.callback_client.cache_clear()
    runtime.callback_queue.cache_clear()
    runtime.callback_delivery.cache_clear()
    runtime.attendance_queue.cache_clear()
    runtime.attendance_check.cache_clear()


@dataclass
class Stack:
    azurite: Azurite
    graph: GraphEmulator
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def child_environment(self) -> dict[str, str]:
        """The environment of a subprocess that runs the app against this stack."""
        return {**os.environ, **self.environment, "PYTHONPATH": str(ROOT)}


@contextmanager
def stack(latency: float = 0.0) -> Iterator[Stack]:
    """Azurite + the Graph emulator + the app's settings in os.environ, for one run."""
    saved = dict(os.environ)
    with Azurite(in_memory=True) as azurite, GraphEmulator(latency=latency) as graph:
        graph.seed_default_users()
        environment = {
            "AzureWebJobsStorage": azurite.connection_string,
            "WEBHOOK_SECRETS": SECRET,
            **graph.environment(),
        }
        os.environ.update(environment)
        clear_app_caches()
        try:
            yield Stack(azurite, graph, environment)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            clear_app_caches()


def ensure_storage(connection_string: str) -> None:
    """Create the app's queues (events, callbacks, their poison queues) and table, or empty them."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    from shared.settings import (
        CALLBACK_POISON_QUEUE_NAME,
        CALLBACK_QUEUE_NAME,
        POISON_QUEUE_NAME,
        QUEUE_NAME,
        TABLE_NAME,
    )

    for name in (QUEUE_NAME, POISON_QUEUE_NAME, CALLBACK_QUEUE_NAME, CALLBACK_POISON_QUEUE_NAME):
        queue = QueueClient.from_connection_string(connection_string, name)
        try:
            queue.create_queue()
        except ResourceExistsError:
            queue.clear_messages()
    service = TableServiceClient.from_connection_string(connection_string)
    service.create_table_if_not_exists(TABLE_NAME)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float], wall: float) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds and throughput in operations per second."""
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p95_ms": round(percentile(seconds, 95) * 1000, 3),
        "p99_ms": round(percentile(seconds, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 3) if seconds else math.nan,
        "wall_s": round(wall, 3),
        "throughput_per_s": round(len(seconds) / wall, 1) if wall > 0 else math.nan,
    }


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and the standard deviation of the residuals."""
    if len(xs) < 2:
        return 0.0, 0.0
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    residuals = [y - (mean_y + slope * (x - mean_x)) for x, y in zip(xs, ys, strict=True)]
    spread = statistics.pstdev(residuals) if len(residuals) > 1 else 0.0
    return slope, spread


def timed(start: float) -> float:
    return time.perf_counter() - start


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "cpu_model": cpu,
        "memory_total_mb": round(memory_kb / 1024),
        "platform": platform.platform(),
    }


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned except the first."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        first, *rest = values
        parts = [first.ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(list(headers)), rule, *(line(r) for r in text)])


def write_result(name: str, payload: dict[str, Any], directory: Path = RESULTS) -> Path:
    """bench/results/<name>.json (git-ignored), with the machine and the time of the run."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {
        "benchmark": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path
