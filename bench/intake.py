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

Named sources, in the same interleaved loop on the same Azurite: the same appointment as an HL7
v2 SIU^S12 (`Authorization: Bearer`, answered with an ACK) and as a Calendly `invitee.created`
(signed `Calendly-Webhook-Signature`), each a new appointment, through `receive_source`. Their
p50 is compared with the native document's (target within 1.15x).
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

from bench.common import (
    ALEX,
    SECRET,
    Stack,
    clear_app_caches,
    ensure_storage,
    latency_summary,
    table,
)
from shared import signatures

TARGET_RATIO = 1.3
SOURCE_TARGET_RATIO = 1.15
URL = "http://localhost:7071/api/webhooks/appointments"
ALEX_UPN = "alex.wilber@contoso.onmicrosoft.com"
# The named sources measured against the native document: route name -> kind.
SOURCES = {"hl7": "hl7v2", "cly": "calendly"}
SOURCE_ROWS = ("hl7_s12", "calendly_created")


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


def hl7_s12(index: int, run: str) -> bytes:
    """The same appointment as `document` as an HL7 v2.5.1 SIU^S12 (times in New York)."""
    key = f"{run}-{index:06d}"
    segments = [
        "MSH|^~\\&|SchedApp|NorthClinic|TeamsBridge|Bridge|20261120050000||SIU^S12^SIU_S12|"
        f"MSG-{key}|P|2.5.1",
        f"SCH|PL-{key}|FL-{key}|||||||30|min|^^^20261201040000^20261201043000"
        + "|" * 14
        + "Booked",
        "TQ1|||||||20261201040000|20261201043000",
        f"PID|1||PAT-{key}||Client^Bench||||||||+12065550100^PRN^CP~^NET^Internet^client@example.com",
        f"AIP|1||{ALEX}^Clinician^Robin",
    ]
    return ("\r".join(segments) + "\r").encode()


def calendly_created(index: int, run: str) -> bytes:
    """The same appointment as `document` as a Calendly invitee.created delivery."""
    key = f"{run}-{index:06d}"
    event = f"https://api.calendly.com/scheduled_events/EVT-{key}"
    body = {
        "created_at": "2026-11-20T10:00:00.000000Z",
        "created_by": "https://api.calendly.com/users/USR-HOST-0001",
        "event": "invitee.created",
        "payload": {
            "created_at": "2026-11-20T10:00:00.000000Z",
            "email": "client@example.com",
            "event": event,
            "name": "Bench Client",
            "rescheduled": False,
            "scheduled_event": {
                "created_at": "2026-11-20T10:00:00.000000Z",
                "end_time": "2026-12-01T09:30:00.000000Z",
                "event_memberships": [
                    {
                        "user": "https://api.calendly.com/users/USR-HOST-0001",
                        "user_email": ALEX_UPN,
                        "user_name": "Alex Wilber",
                    }
                ],
                "name": "Follow-up consultation",
                "start_time": "2026-12-01T09:00:00.000000Z",
                "status": "active",
                "updated_at": "2026-11-20T10:00:00.000000Z",
                "uri": event,
            },
            "status": "active",
            "text_reminder_number": "+1 206-555-0100",
            "timezone": "America/New_York",
            "updated_at": "2026-11-20T10:00:00.000000Z",
            "uri": f"{event}/invitees/INV-{key}",
        },
    }
    return json.dumps(body).encode()


def source_request(source: str, body: bytes) -> func.HttpRequest:
    """A delivery to POST /api/webhooks/{source}, authenticated the way its kind is."""
    if SOURCES[source] == "hl7v2":
        headers = {"Content-Type": "application/hl7-v2", "Authorization": f"Bearer {SECRET}"}
    else:
        header = signatures.sign(SECRET, int(time.time()), body)
        headers = {"Content-Type": "application/json", "Calendly-Webhook-Signature": header}
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/webhooks/{source}",
        headers=headers,
        body=body,
        route_params={"source": source},
    )


def _call_source(source: str, body: bytes) -> None:
    from shared.http_api import receive_source

    response = receive_source(source_request(source, body))
    answer = response.get_body()
    if SOURCES[source] == "hl7v2":
        if response.status_code != 200 or b"MSA|AA|" not in answer:
            raise RuntimeError(f"hl7 intake answered {response.status_code}: {answer!r}")
    elif response.status_code != 202:
        raise RuntimeError(f"{source} intake answered {response.status_code}: {answer!r}")


def configure_sources() -> None:
    """The named sources measured here, in the app's settings (the stack restores the env)."""
    import os

    for name, kind in SOURCES.items():
        os.environ[f"SOURCES__{name}__KIND"] = kind
        os.environ[f"SOURCES__{name}__SECRETS"] = SECRET
        os.environ[f"SOURCES__{name}__TIMEZONE"] = "America/New_York"
    clear_app_caches()


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
    configure_sources()
    ensure_storage(stack.connection_string)
    floors = Floors(stack.connection_string)
    run_id = uuid.uuid4().hex[:8]

    def bodies(tag: str) -> list[bytes]:
        return [json.dumps(document(i, f"{run_id}{tag}")).encode() for i in range(count)]

    # Warm-up: clients, connection pools, lazy imports, the table and queue.
    for index, body in enumerate(bodies("w")[:20]):
        _call_intake(body)
        _call_source("hl7", hl7_s12(index, f"{run_id}w"))
        _call_source("cly", calendly_created(index, f"{run_id}w"))
        floors.queue_send(body)
        floors.table_and_queue(f"warm-{uuid.uuid4().hex}", body)

    # Sequential, interleaved: the floors, the native document, the same appointment from
    # the named sources.
    order = ("queue_send", "table_and_queue", "intake", *SOURCE_ROWS)
    sequential: dict[str, list[float]] = {name: [] for name in order}
    walls = dict.fromkeys(sequential, 0.0)
    for index, body in enumerate(bodies("s")):
        hl7_body = hl7_s12(index, f"{run_id}s")
        calendly_body = calendly_created(index, f"{run_id}s")
        for name in order:
            started = time.perf_counter()
            if name == "queue_send":
                floors.queue_send(body)
            elif name == "table_and_queue":
                floors.table_and_queue(f"s-{run_id}-{index}", body)
            elif name == "hl7_s12":
                _call_source("hl7", hl7_body)
            elif name == "calendly_created":
                _call_source("cly", calendly_body)
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
    native = results["sequential"]["intake"]["p50_ms"]
    sources: dict[str, Any] = {}
    for name in SOURCE_ROWS:
        ratio = round(results["sequential"][name]["p50_ms"] / native, 3)
        sources[name] = {
            "p50_ms": results["sequential"][name]["p50_ms"],
            "native_p50_ms": native,
            "p50_vs_native": ratio,
            "met": ratio <= SOURCE_TARGET_RATIO,
        }
    results["sources"] = {
        "statement": f"p50 within {SOURCE_TARGET_RATIO}x of the native document's (sequential)",
        "target_ratio": SOURCE_TARGET_RATIO,
        **sources,
    }
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for mode in ("sequential", "concurrent"):
        for name in results[mode]:
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
    sources = results["sources"]
    rows = [
        [
            name,
            sources[name]["p50_ms"],
            sources[name]["native_p50_ms"],
            sources[name]["p50_vs_native"],
        ]
        for name in SOURCE_ROWS
    ]
    text += "\n\n" + table(
        "Named sources vs the native document of the same appointment (sequential)",
        ["delivery", "p50 ms", "native p50 ms", "x native"],
        rows,
    )
    verdicts = ", ".join(
        f"{name} {'MET' if sources[name]['met'] else 'NOT MET'}" for name in SOURCE_ROWS
    )
    text += f"\n\nTarget {sources['statement']}: {verdicts}"
    return text
