"""Reconcile: a realistic mix of deliveries through the queue function, against the emulator.

Every Graph call costs `LATENCY` (30 ms) at the emulator. `WORKERS` threads take appointments
from a shared list and deliver each appointment's messages in order through the registered
queue function (`reconcile_appointment_event`, real `azure.functions.QueueMessage` objects), as
a queue-triggered worker with that many concurrent invocations would. Measured against two
floors: the fewest Graph calls the contract allows for the delivered order (target 1.00x) and
the ideal wall time `total calls x latency / workers`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from bench import workload
from bench.common import Stack, clear_app_caches, ensure_storage, latency_summary, table
from shared.documents import parse_document
from shared.events import AppointmentEvent
from shared.settings import POISON_QUEUE_NAME, QUEUE_NAME

LATENCY = 0.030
WORKERS = 8
SEED = 20261120


def message_text(document: dict[str, Any], correlation: str) -> str:
    parsed = parse_document(document)
    if isinstance(parsed, list):
        raise ValueError(f"invalid benchmark document: {parsed}")
    return AppointmentEvent(parsed, correlation).to_message()


def function_message(text: str) -> QueueMessage:
    return QueueMessage(
        id=uuid.uuid4().hex, body=text.encode("utf-8"), dequeue_count=1, pop_receipt="r"
    )


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    from shared.queue_functions import reconcile_appointment_event

    count = 40 if quick else 2000
    ensure_storage(stack.connection_string)
    clear_app_caches()
    graph = stack.graph
    appointments = workload.build(count, SEED, f"rc-{uuid.uuid4().hex[:8]}")
    messages = [
        [message_text(d, f"bench-{a.external_id}") for d in a.deliveries] for a in appointments
    ]

    # Warm-up outside the measurement: token, Graph client, storage pools.
    graph.latency = 0.0
    warm = workload.build(4, SEED + 1, f"rc-warm-{uuid.uuid4().hex[:8]}")
    for appointment in warm:
        for document in appointment.deliveries:
            reconcile_appointment_event(function_message(message_text(document, "warm")))
    graph.reset_calls()
    live_before = len(graph.meetings())
    graph.latency = LATENCY

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(appointments)))

    def worker() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            for text in messages[index]:
                started = time.perf_counter()
                try:
                    reconcile_appointment_event(function_message(text))
                except Exception as error:  # the host would retry; here it is an error
                    with lock:
                        errors.append(f"{appointments[index].external_id}: {error!r}")
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - started
    graph.latency = 0.0

    actual = Counter({k: v for k, v in graph.call_counts().items() if k != "token" and v})
    expected: Counter[str] = Counter()
    by_category: dict[str, dict[str, int]] = {}
    for appointment in appointments:
        minimum = workload.minimum_calls(appointment)
        expected += minimum
        entry = by_category.setdefault(
            appointment.category, {"appointments": 0, "deliveries": 0, "minimum_calls": 0}
        )
        entry["appointments"] += 1
        entry["deliveries"] += len(appointment.deliveries)
        entry["minimum_calls"] += sum(minimum.values())
    failed = sum(1 for c in graph.calls() if c.operation != "token" and c.status >= 400)
    queue = QueueClient.from_connection_string(stack.connection_string, QUEUE_NAME)
    poison = QueueClient.from_connection_string(stack.connection_string, POISON_QUEUE_NAME)
    left = queue.get_queue_properties().approximate_message_count
    poisoned = poison.get_queue_properties().approximate_message_count
    expected_live = sum(1 for a in appointments if workload.is_scheduled(a.newest))
    live = len(graph.meetings()) - live_before

    total_actual = sum(actual.values())
    total_minimum = sum(expected.values())
    deliveries = sum(len(m) for m in messages)
    ideal = total_minimum * LATENCY / WORKERS
    return {
        "appointments": count,
        "deliveries": deliveries,
        "duplicated_appointments": sum(a.duplicated for a in appointments),
        "out_of_order_appointments": sum(a.out_of_order for a in appointments),
        "workers": WORKERS,
        "graph_latency_ms": LATENCY * 1000,
        "by_category": by_category,
        "graph_calls": {
            "actual": total_actual,
            "minimum": total_minimum,
            "ratio": round(total_actual / total_minimum, 4) if total_minimum else None,
            "actual_by_operation": dict(sorted(actual.items())),
            "minimum_by_operation": dict(sorted(expected.items())),
            "per_delivery_actual": round(total_actual / deliveries, 4),
            "per_delivery_minimum": round(total_minimum / deliveries, 4),
            "failed_calls": failed,
        },
        "wall": {
            "seconds": round(wall, 3),
            "ideal_seconds": round(ideal, 3),
            "ratio": round(wall / ideal, 3) if ideal else None,
            "deliveries_per_s": round(deliveries / wall, 1),
        },
        "delivery_latency": latency_summary(latencies, wall),
        "errors": len(errors),
        "error_samples": errors[:5],
        "queue_left": left,
        "poison": poisoned,
        "live_meetings": live,
        "expected_live_meetings": expected_live,
        "target": {
            "calls_ratio_exactly_1": total_actual == total_minimum,
            "zero_errors": not errors and left == 0 and poisoned == 0,
            "converged": live == expected_live,
        },
    }


def report(results: dict[str, Any]) -> str:
    calls = results["graph_calls"]
    wall = results["wall"]
    rows = [
        [op, calls["minimum_by_operation"].get(op, 0), calls["actual_by_operation"].get(op, 0)]
        for op in sorted(set(calls["minimum_by_operation"]) | set(calls["actual_by_operation"]))
    ]
    rows.append(["total", calls["minimum"], calls["actual"]])
    text = table(
        f"Reconcile: {results['appointments']} appointments, {results['deliveries']} deliveries, "
        f"{results['workers']} workers, {results['graph_latency_ms']:.0f} ms per Graph call",
        ["Graph calls", "minimum", "actual"],
        rows,
    )
    lat = results["delivery_latency"]
    summary = [
        ["calls actual / minimum", calls["ratio"]],
        ["calls per delivery (actual)", calls["per_delivery_actual"]],
        ["wall s", wall["seconds"]],
        ["ideal wall s (calls x latency / workers)", wall["ideal_seconds"]],
        ["wall / ideal", wall["ratio"]],
        ["deliveries per s", wall["deliveries_per_s"]],
        ["delivery p50 / p95 / p99 ms", f"{lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']}"],
        [
            "errors / queue left / poison",
            f"{results['errors']} / {results['queue_left']} / {results['poison']}",
        ],
        [
            "live meetings (expected)",
            f"{results['live_meetings']} ({results['expected_live_meetings']})",
        ],
    ]
    return text + "\n\n" + table("Reconcile summary", ["measure", "value"], summary)
