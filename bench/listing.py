"""List: a page of 100 `failed` records among 1,000 and among 20,000, in the same Azurite.

Through the registered HTTP function (`list_appointments`, `GET /api/appointments?status=failed`).
The records are seeded as the reconciler commits them (devtools/seeding.py), a fifth of them
failed; the 1,000 are measured first, then 19,000 more are added to the same table and the
same page is measured again. Target: the larger table's p50 within 1.5x of the smaller's (the
list reads the index partition's next rows and loads only those records). The storage requests
one page makes are counted too: Azurite answers every query, even a one-partition one, by
scanning the whole table (its LokiJS store filters the table's collection with a function), so
on Azurite its latency grows with the table whatever the app does; the request count is the
app's own cost, and what Azure Tables' partition index serves in time independent of the table.

Also measured: what the index costs a commit. A commit that changes nothing the index keys on
(a lease taken or released) writes no index row; one that changes the status (scheduled to
failed: a status row and an error row written first, the old status row deleted after) is
timed against it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from bench.common import ALEX, MEGAN, Stack, clear_app_caches, ensure_storage, percentile, table
from shared.documents import AppointmentDocument, parse_document
from shared.records import AppliedState, ErrorInfo

TARGET_RATIO = 1.5
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def _document(external_id: str, minute: int) -> AppointmentDocument:
    start = BASE + timedelta(minutes=minute)
    parsed = parse_document(
        {
            "externalAppointmentId": external_id,
            "lastModifiedDateTime": "2029-06-01T00:00:00Z",
            "organizer": ALEX if minute % 2 else MEGAN,
            "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": "Consultation",
        }
    )
    assert not isinstance(parsed, list), parsed
    return parsed


def _records(count: int, offset: int, tag: str) -> list[tuple[AppointmentDocument, AppliedState]]:
    records = []
    for i in range(offset, offset + count):
        # Spread over the calendar, so the larger table's failed records interleave.
        document = _document(f"bl-{tag}-{i:06d}", (i * 7919) % 5_000_000)
        if i % 5 == 0:
            state = AppliedState(status="failed", error=ErrorInfo("accessPolicyMissing", "b"))
        else:
            state = AppliedState(status="scheduled", document=document)
        records.append((document, state))
    return records


def _request(top: int) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET",
        url="http://localhost/api/appointments",
        headers={},
        body=b"",
        params={"status": "failed", "$top": str(top)},
    )


def _requests_per_page(top: int) -> dict[str, int]:
    """Storage requests one page makes: the measure of cost that no emulator distorts."""
    from shared import runtime, storage
    from shared.http_api import list_appointments

    counts = {"record_loads": 0, "index_queries": 0}
    index = runtime.store().index
    load, chunk = index._load, storage.AppointmentIndex._chunk

    def counted_load(external_id: str) -> Any:
        counts["record_loads"] += 1
        return load(external_id)

    def counted_chunk(self: storage.AppointmentIndex, partitions: Any, *args: Any) -> Any:
        counts["index_queries"] += len(partitions)
        return chunk(self, partitions, *args)

    index._load = counted_load
    storage.AppointmentIndex._chunk = counted_chunk  # type: ignore[method-assign, assignment]
    try:
        list_appointments(_request(top))
    finally:
        index._load = load
        storage.AppointmentIndex._chunk = chunk  # type: ignore[method-assign]
    return counts


def _one_load_ms(external_id: str, repeats: int) -> float:
    """p50 of loading one record (one partition query): the storage's own cost per request at
    this table size, which a page pays once per record shown."""
    from shared import runtime

    store = runtime.store()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        store.load(external_id)
        seconds.append(time.perf_counter() - began)
    return round(percentile(seconds, 50) * 1000, 2)


def _measure(top: int, repeats: int, probe: str) -> dict[str, Any]:
    from shared.http_api import list_appointments

    list_appointments(_request(top))  # warm: pools, caches
    requests = _requests_per_page(top)
    one_load = _one_load_ms(probe, repeats)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        response = list_appointments(_request(top))
        seconds.append(time.perf_counter() - began)
        assert response.status_code == 200, response.get_body()
        page = json.loads(response.get_body())["value"]
        assert len(page) == top
        assert all(r["status"] == "failed" for r in page)
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "p95_ms": round(percentile(seconds, 95) * 1000, 1),
        "repeats": repeats,
        "requests_per_page": requests,
        "one_load_p50_ms": one_load,
        # The page's loads one at a time: what the page costs where the storage serves one
        # request at a time (Azurite's table queries are synchronous JavaScript).
        "serial_loads_ms": round(one_load * requests["record_loads"], 1),
    }


def _commit_cost(count: int, tag: str) -> dict[str, Any]:
    """p50 of a commit that leaves the index alone vs one that moves the record."""
    from shared import runtime

    store = runtime.store()
    plain, moving = [], []
    for i in range(count):
        external_id = f"bc-{tag}-{i:04d}"
        document = _document(external_id, i)
        etag = store.commit_applied(
            external_id, AppliedState(status="scheduled", document=document), None
        )
        stored = store.load(external_id)
        assert stored.applied is not None
        began = time.perf_counter()
        etag = store.commit_applied(
            external_id, replace(stored.applied, lease_until=1.0), stored.applied_etag
        )
        plain.append(time.perf_counter() - began)
        failed = replace(stored.applied, status="failed", error=ErrorInfo("graphUnavailable", "b"))
        began = time.perf_counter()
        store.commit_applied(external_id, replace(failed, lease_until=1.0), etag)
        moving.append(time.perf_counter() - began)
    return {
        "unchanged_index_p50_ms": round(percentile(plain, 50) * 1000, 2),
        "status_change_p50_ms": round(percentile(moving, 50) * 1000, 2),
        "extra_round_trips": {
            "unchanged": 0,
            "new_record_first_commit": 3,
            "scheduled_to_failed": 3,
            "failed_to_scheduled": 2,
        },
        "count": count,
    }


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    from azure.data.tables import TableClient

    from devtools.seeding import seed
    from shared.settings import TABLE_NAME

    small, large = (100, 400) if quick else (1_000, 20_000)
    top = 10 if quick else 100
    repeats = 5 if quick else 30
    ensure_storage(stack.connection_string)
    clear_app_caches()
    tag = uuid.uuid4().hex[:6]
    client = TableClient.from_connection_string(stack.connection_string, TABLE_NAME)
    began = time.perf_counter()
    seed(client, _records(small, 0, tag))
    seeded_small = time.perf_counter() - began
    probe = f"bl-{tag}-{1:06d}"  # the same record at both sizes
    at_small = _measure(top, repeats, probe)
    began = time.perf_counter()
    seed(client, _records(large - small, small, tag))
    seeded_large = time.perf_counter() - began
    at_large = _measure(top, repeats, probe)
    ratio = round(at_large["p50_ms"] / at_small["p50_ms"], 3) if at_small["p50_ms"] else 0.0
    small_load, large_load = at_small["one_load_p50_ms"], at_large["one_load_p50_ms"]
    load_ratio = round(large_load / small_load, 3) if small_load else 0.0
    return {
        "page": {"status": "failed", "top": top},
        "runs": {str(small): at_small, str(large): at_large},
        "seed_s": {str(small): round(seeded_small, 1), str(large): round(seeded_large, 1)},
        "ratio": ratio,
        "target": {"max_ratio": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
        # How much one storage request itself slowed down between the sizes (the page makes
        # the same requests at both).
        "one_load_ratio": load_ratio,
        "commit": _commit_cost(10 if quick else 100, tag),
    }


def report(results: dict[str, Any]) -> str:
    rows = [
        (
            f"{size} records",
            r["p50_ms"],
            r["p95_ms"],
            r["requests_per_page"]["index_queries"],
            r["requests_per_page"]["record_loads"],
        )
        for size, r in results["runs"].items()
    ]
    page = results["page"]
    lines = [
        table(
            f"List: a page of {page['top']} {page['status']} records",
            ["table", "p50 ms", "p95 ms", "index queries", "record loads"],
            rows,
        ),
        f"larger / smaller p50: {results['ratio']:.2f}x (target <= {TARGET_RATIO}x: "
        f"{'met' if results['target']['met'] else 'NOT met'})",
        "one record load (the storage's cost per request): "
        + " / ".join(f"{r['one_load_p50_ms']} ms" for r in results["runs"].values())
        + f" ({results['one_load_ratio']:.2f}x); the page's loads one at a time: "
        + " / ".join(f"{r['serial_loads_ms']} ms" for r in results["runs"].values()),
    ]
    commit = results["commit"]
    lines.append(
        f"commit p50: {commit['unchanged_index_p50_ms']} ms leaving the index alone, "
        f"{commit['status_change_p50_ms']} ms moving the record (scheduled to failed)"
    )
    return "\n".join(lines)
