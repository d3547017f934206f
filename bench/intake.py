"""Intake: signed webhooks through the HTTP function against Azurite, and its physical floors.

The HTTP function is called in-process with real `azure.functions.HttpRequest` objects (what
the Python worker hands it). Per accepted document the intake verifies the signature, parses
and validates, writes the table row and sends the queue message. Two floors measured on the
same Azurite, in the same run, with the same bytes:

* `queue send`: a bare `QueueClient.send_message` of the request body;
* `table + queue`: a table insert (`create_entity`, what the intake's first write of a new
  appointment is) of an entity holding the same document, plus that queue send: the I/O the
  intake cannot avoid (the contract stores before it answers 202).

Sequential latencies are measured interleaved (floor, floor, intake for each document) so that
drift of the machine hits all three alike.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.functions as func
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient

from bench.common import ALEX, SECRET, Stack, ensure_storage, latency_summary, table
from shared import signatures

TARGET_RATIO = 1.3
URL = "http://localhost:7071/api/webhooks/appointments"


def document(index: int, run: str) -> dict[str, Any]:
    return {
        "externalAppointmentId": f"bench-{run}-{index:06d}",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ALEX,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "Follow-up consultation",
        "timeZone": "America/New_York",
        "appointmentClients": [
            {
                "displayName": "Bench Client",
                "emailAddress": "client@example.com",
                "smsCapablePhoneNumber": "+12065550100",
            }
        ],
    }


def signed_request(body: bytes) -> func.HttpRequest:
    header = signatures.sign(SECRET, int(time.time()), body)
    return func.HttpRequest(
        method="POST",
        url=URL,
        headers={"Content-Type": "application/json", signatures.HEADER: header},
        body=body,
    )


class Floors:
    """The I/O the intake does, done directly with the SDK clients."""

    def __init__(self, connection_string: str) -> None:
        self.queue = QueueClient.from_connection_string(connection_string, "bench-floor")
        service = TableServiceClient.from_connection_string(connection_string)
        service.create_table_if_not_exists("benchfloor")
        self.table: TableClient = service.get_table_client("benchfloor")
        self.queue.create_queue()

    def queue_send(self, body: bytes) -> None:
        self.queue.send_message(body.decode("utf-8"))

    def table_and_queue(self, key: str, body: bytes) -> None:
        entity = {
            "PartitionKey": key,
            "RowKey": "desired",
            "Version": "2026-11-20T10:00:00.000000Z",
            "Document": body.decode("utf-8"),
            "CorrelationId": uuid.uuid4().hex,
        }
        self.table.create_entity(entity)
        self.queue.send_message(body.decode("utf-8"))


def _call_intake(body: bytes) -> None:
    from shared.http_api import receive_appointments

    response = receive_appointments(signed_request(body))
    if response.status_code != 202:
        raise RuntimeError(f"intake answered {response.status_code}: {response.get_body()!r}")


def _concurrent(
    items: Sequence[bytes], action: Callable[[int, bytes], None], workers: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        started = time.perf_counter()
        action(index, items[index])
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(items))))
    return latencies, time.perf_counter() - started


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    count = 60 if quick else 5000
    workers = 8
    stack.graph.latency = 0.0
    ensure_storage(stack.connection_string)
    floors = Floors(stack.connection_string)
    run_id = uuid.uuid4().hex[:8]

    def bodies(tag: str) -> list[bytes]:
        return [json.dumps(document(i, f"{run_id}{tag}")).encode() for i in range(count)]

    # Warm-up: clients, connection pools, lazy imports, the table and queue.
    for body in bodies("w")[:20]:
        _call_intake(body)
        floors.queue_send(body)
        floors.table_and_queue(f"warm-{uuid.uuid4().hex}", body)

    # Sequential, interleaved.
    sequential: dict[str, list[float]] = {"intake": [], "queue_send": [], "table_and_queue": []}
    walls = dict.fromkeys(sequential, 0.0)
    for index, body in enumerate(bodies("s")):
        for name in ("queue_send", "table_and_queue", "intake"):
            started = time.perf_counter()
            if name == "queue_send":
                floors.queue_send(body)
            elif name == "table_and_queue":
                floors.table_and_queue(f"s-{run_id}-{index}", body)
            else:
                _call_intake(body)
            elapsed = time.perf_counter() - started
            sequential[name].append(elapsed)
            walls[name] += elapsed

    # Concurrent: one kind at a time, `workers` callers.
    concurrent: dict[str, tuple[list[float], float]] = {}
    concurrent["queue_send"] = _concurrent(bodies("q"), lambda _i, b: floors.queue_send(b), workers)
    concurrent["table_and_queue"] = _concurrent(
        bodies("t"), lambda i, b: floors.table_and_queue(f"c-{run_id}-{i}", b), workers
    )
    concurrent["intake"] = _concurrent(bodies("c"), lambda _i, b: _call_intake(b), workers)

    results: dict[str, Any] = {
        "documents": count,
        "workers": workers,
        "body_bytes": len(bodies("x")[0]),
        "sequential": {k: latency_summary(v, walls[k]) for k, v in sequential.items()},
        "concurrent": {k: latency_summary(v, w) for k, (v, w) in concurrent.items()},
    }
    ratios: dict[str, Any] = {}
    for mode in ("sequential", "concurrent"):
        intake = results[mode]["intake"]
        for floor in ("queue_send", "table_and_queue"):
            base = results[mode][floor]
            ratios[f"{mode}_p50_vs_{floor}"] = round(intake["p50_ms"] / base["p50_ms"], 3)
            ratios[f"{mode}_p99_vs_{floor}"] = round(intake["p99_ms"] / base["p99_ms"], 3)
            ratios[f"{mode}_throughput_vs_{floor}"] = round(
                intake["throughput_per_s"] / base["throughput_per_s"], 3
            )
    results["ratios"] = ratios
    results["target"] = {
        "statement": f"intake p50 within {TARGET_RATIO}x of the floor (sequential)",
        "met_vs_table_and_queue": ratios["sequential_p50_vs_table_and_queue"] <= TARGET_RATIO,
        "met_vs_queue_send": ratios["sequential_p50_vs_queue_send"] <= TARGET_RATIO,
    }
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for mode in ("sequential", "concurrent"):
        for name in ("queue_send", "table_and_queue", "intake"):
            r = results[mode][name]
            rows.append(
                [
                    f"{mode} {name}",
                    r["count"],
                    r["p50_ms"],
                    r["p95_ms"],
                    r["p99_ms"],
                    r["throughput_per_s"],
                ]
            )
    title = (
        f"Intake: {results['documents']} signed webhooks, {results['workers']} concurrent "
        "callers in the concurrent rows"
    )
    text = table(title, ["kind", "n", "p50 ms", "p95 ms", "p99 ms", "ops/s"], rows)
    ratio_rows = [[k, v] for k, v in results["ratios"].items()]
    text += "\n\n" + table("Intake / floor", ["ratio", "x"], ratio_rows)
    target = results["target"]
    text += (
        f"\n\nTarget {target['statement']}: "
        f"vs table+queue floor {'MET' if target['met_vs_table_and_queue'] else 'NOT MET'}; "
        f"vs bare queue send {'MET' if target['met_vs_queue_send'] else 'NOT MET'}"
    )
    return text
