"""GET /api/appointments and POST /api/appointments/reconcile on Azurite, over the list index.

A few thousand records are seeded as the reconciler would have committed them (one transaction
per record, index rows batched: devtools/seeding.py), all starting in 2090 so that no other
test's records fall in the window every query here names. Their index rows are removed at the
end, so later suites (the schemathesis bulk replays) do not meet them.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from devtools.seeding import seed
from shared import listing, runtime, storage
from shared.documents import AppointmentDocument, parse_document
from shared.http_api import list_appointments, reconcile_appointments
from shared.queue_functions import reconcile_appointment_event
from shared.records import AppliedState, ErrorInfo
from shared.settings import POISON_QUEUE_NAME, TABLE_NAME
from tests.integration.queue_host import drain
from tests.integration.test_reconciler import doc, message
from tests.support import NO_POLICY, new_id, queue_message, record

COUNT = 2500
WINDOW = {"startFrom": "2090-01-01T00:00:00Z", "startTo": "2091-01-01T00:00:00Z"}
BASE = datetime(2090, 1, 1, tzinfo=UTC)
STATUSES = ["scheduled"] * 10 + ["failed"] * 6 + ["cancelled"] * 3 + ["pending"]
CODES = ["accessPolicyMissing", "graphUnavailable"]
SOURCES = ["appointments", "epic", "cal"]


@dataclass(frozen=True)
class Seeded:
    external_id: str
    start: datetime
    status: str
    source: str
    organizer: str
    error_code: str | None

    @property
    def order(self) -> str:
        return listing.row_key(self.start, self.external_id)


def _document(item: Seeded) -> AppointmentDocument:
    body: dict[str, Any] = {
        "externalAppointmentId": item.external_id,
        "lastModifiedDateTime": "2089-06-01T00:00:00Z",
        "organizer": item.organizer,
        "startDateTime": item.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": (item.start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": "Consultation",
    }
    if item.source != "appointments":
        body["source"] = item.source
    parsed = parse_document(body)
    assert not isinstance(parsed, list), parsed
    return parsed


def _state(item: Seeded, document: AppointmentDocument) -> AppliedState:
    error = ErrorInfo(item.error_code, "seeded") if item.error_code else None
    applied = document if item.status in ("scheduled", "cancelled") else None
    return AppliedState(status=item.status, document=applied, error=error)  # type: ignore[arg-type]


def table(azurite: Azurite) -> TableClient:
    return TableClient.from_connection_string(azurite.connection_string, TABLE_NAME)


@pytest.fixture(scope="module")
def seeded(azurite: Azurite) -> Iterator[list[Seeded]]:
    tag = uuid.uuid4().hex[:8]
    organizers = [str(uuid.uuid4()) for _ in range(5)]
    chooser = random.Random(20901)
    minutes = list(range(COUNT))
    chooser.shuffle(minutes)
    items = []
    for i in range(COUNT):
        status = STATUSES[i % len(STATUSES)]
        items.append(
            Seeded(
                f"lst-{tag}-{i:04d}",
                BASE + timedelta(minutes=7 * minutes[i] + (i % 3)),
                status,
                SOURCES[i % 3],
                organizers[i % 5],
                CODES[i % 2] if status == "failed" else None,
            )
        )
    client = table(azurite)
    seed(client, [(d, _state(item, d)) for item in items for d in [_document(item)]])
    yield items
    # Their index rows go (the records alone are invisible to the list and bulk replay).
    partitions = {p for item in items for p, _ in listing.rows_for(_facts(item))}
    lower, upper = listing.Filter(start_from=BASE, start_to=BASE.replace(year=2091)).row_bounds()
    for partition in partitions:
        rows = [
            r["RowKey"]
            for r in client.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": partition, "lo": lower, "hi": upper},
                select=["RowKey"],
            )
        ]
        for at in range(0, len(rows), 100):
            operations: list[Any] = [
                ("delete", {"PartitionKey": partition, "RowKey": r}) for r in rows[at : at + 100]
            ]
            client.submit_transaction(operations)


def _facts(item: Seeded) -> listing.Facts | None:
    document = _document(item)
    return listing.facts_of(item.external_id, _state(item, document), document)


def list_request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET",
        url="http://localhost:7071/api/appointments",
        headers={},
        body=b"",
        params=params,
    )


def get_page(params: dict[str, str]) -> dict[str, Any]:
    response = list_appointments(list_request(params))
    assert response.status_code == 200, response.get_body()
    return dict(json.loads(response.get_body()))


def list_all(params: dict[str, str]) -> tuple[list[str], int]:
    """Every id the list gives, following nextLinks; and the number of pages."""
    ids: list[str] = []
    pages = 0
    current: dict[str, str] | None = {**WINDOW, **params}
    while current is not None:
        body = get_page(current)
        pages += 1
        ids.extend(r["externalAppointmentId"] for r in body["value"])
        link = body.get("@odata.nextLink")
        current = dict(parse_qsl(urlsplit(link).query)) if link else None
        assert pages < 200
    return ids, pages


def expected(items: list[Seeded], **fields: Any) -> list[str]:
    chosen = [i for i in items if all(getattr(i, k) == v for k, v in fields.items())]
    return [i.external_id for i in sorted(chosen, key=lambda i: i.order)]


def test_every_filter_lists_exactly_its_records_in_start_order(seeded: list[Seeded]) -> None:
    organizer = seeded[0].organizer
    cases: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({"status": "failed"}, {"status": "failed"}),
        ({"status": "pending"}, {"status": "pending"}),
        ({"source": "epic"}, {"source": "epic"}),
        ({"organizer": organizer.upper()}, {"organizer": organizer}),
        ({"errorCode": "graphUnavailable"}, {"error_code": "graphUnavailable"}),
        (
            {"status": "cancelled", "source": "cal", "organizer": organizer},
            {"status": "cancelled", "source": "cal", "organizer": organizer},
        ),
        (
            {"status": "failed", "source": "appointments", "errorCode": "accessPolicyMissing"},
            {"status": "failed", "source": "appointments", "error_code": "accessPolicyMissing"},
        ),
    ]
    for params, fields in cases:
        ids, _ = list_all({**params, "$top": "1000"})
        assert ids == expected(seeded, **fields), params
    everything, pages = list_all({"$top": "1000"})
    assert everything == expected(seeded)
    assert pages == 3


def test_the_start_window_is_inclusive_then_exclusive(seeded: list[Seeded]) -> None:
    ordered = sorted(seeded, key=lambda i: i.order)
    low, high = ordered[100].start, ordered[400].start
    params = {
        "startFrom": low.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "startTo": high.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "$top": "1000",
    }
    body = get_page(params)
    ids = [r["externalAppointmentId"] for r in body["value"]]
    assert ids == [i.external_id for i in ordered if low <= i.start < high]
    assert "@odata.nextLink" not in body
    starts = [r["startDateTime"] for r in body["value"]]
    assert starts == sorted(starts)


def test_paging_to_the_end_has_no_duplicates_or_gaps(seeded: list[Seeded]) -> None:
    ids, pages = list_all({"status": "failed", "$top": "97"})
    want = expected(seeded, status="failed")
    assert ids == want
    assert len(set(ids)) == len(ids)
    assert pages == -(-len(want) // 97)
    first = get_page({**WINDOW, "status": "failed"})
    assert len(first["value"]) == 100  # the default $top
    assert first["value"][0]["status"] == "failed"
    assert first["value"][0]["error"]["code"] in CODES


def test_a_status_change_moves_the_record_and_stale_rows_are_skipped_then_deleted(
    seeded: list[Seeded], azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.store()
    item = next(i for i in seeded if i.status == "failed" and i.source == "epic")
    stored = store.load(item.external_id)
    assert stored.applied is not None
    assert stored.desired is not None
    document = stored.desired.document
    fixed = replace(stored.applied, status="scheduled", error=None, document=document)
    store.commit_applied(item.external_id, fixed, stored.applied_etag, shown=document)
    window = {**WINDOW, "source": "epic", "$top": "1000"}
    failed, _ = list_all({**window, "status": "failed"})
    scheduled, _ = list_all({**window, "status": "scheduled"})
    assert item.external_id not in failed
    assert item.external_id in scheduled
    assert len(scheduled) == len(set(scheduled))

    # A crash between the commit and the delete: the old row stays, and is skipped.
    client = table(azurite)
    stale = (listing.status_partition("failed"), item.order)
    client.upsert_entity(
        {"PartitionKey": stale[0], "RowKey": stale[1], "IndexOf": item.external_id}
    )
    failed, _ = list_all({"status": "failed", "$top": "1000"})
    assert item.external_id not in failed
    assert client.get_entity(*stale)  # younger than the grace period: kept
    monkeypatch.setattr(storage, "STALE_GRACE_SECONDS", -1.0)
    failed, _ = list_all({"status": "failed", "$top": "1000"})
    assert item.external_id not in failed
    assert not list(
        client.query_entities(
            "PartitionKey eq @pk and RowKey eq @rk", parameters={"pk": stale[0], "rk": stale[1]}
        )
    )


def test_bad_query_parameters_are_400_problems_naming_them(seeded: list[Seeded]) -> None:
    for params, name in [
        ({"$top": "0"}, "$top"),
        ({"$top": "1001"}, "$top"),
        ({"$top": "x"}, "$top"),
        ({"status": "done"}, "status"),
        ({"startFrom": "2090-01-01"}, "startFrom"),
        ({"$skiptoken": "bm90IGEga2V5"}, "$skiptoken"),
    ]:
        response = list_appointments(list_request(params))
        assert response.status_code == 400, params
        problem = json.loads(response.get_body())
        assert [e["path"] for e in problem["errors"]] == [name]
    body = get_page({**WINDOW, "$top": "1000"})
    assert len(body["value"]) == 1000
    assert "@odata.nextLink" in body
    body = get_page({**WINDOW, "status": "failed", "$top": "1"})
    assert len(body["value"]) == 1
    assert "$top=1&" in body["@odata.nextLink"]


def post_replay(body: object) -> func.HttpResponse:
    response: func.HttpResponse = reconcile_appointments(
        func.HttpRequest(
            method="POST",
            url="http://localhost:7071/api/appointments/reconcile",
            headers={"Content-Type": "application/json"},
            body=json.dumps(body).encode(),
        )
    )
    return response


def test_bulk_replay_refuses_a_body_without_status() -> None:
    response = post_replay({"errorCode": "accessPolicyMissing"})
    assert response.status_code == 400
    assert [e["path"] for e in json.loads(response.get_body())["errors"]] == ["/status"]


def test_bulk_replay_after_granting_the_access_policy_schedules_them_all(
    emulator: GraphEmulator, azurite: Azurite, event_queue: QueueClient
) -> None:
    ids = [new_id() for _ in range(5)]
    for external_id in ids:
        reconcile_appointment_event(
            queue_message(message(doc(external_id, 0, organizer=NO_POLICY)))
        )
        assert record(external_id)["error"]["code"] == "accessPolicyMissing"
    emulator.add_user(NO_POLICY, "no.policy@contoso.onmicrosoft.com", access_policy=True)
    try:
        filter_body = {
            "status": "failed",
            "errorCode": "accessPolicyMissing",
            "organizer": NO_POLICY,
        }
        response = post_replay(filter_body)
        assert response.status_code == 202, response.get_body()
        accepted = json.loads(response.get_body())["accepted"]
        assert set(ids) <= {a["externalAppointmentId"] for a in accepted}
        assert all(a["lastModifiedDateTime"] for a in accepted)
        poison = QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)
        drain(event_queue, poison, reconcile_appointment_event)
        for external_id in ids:
            state = record(external_id)
            assert state["status"] == "scheduled"
            assert "error" not in state
        again = json.loads(post_replay(filter_body).get_body())
        assert not set(ids) & {a["externalAppointmentId"] for a in again["accepted"]}
    finally:
        emulator.add_user(NO_POLICY, "no.policy@contoso.onmicrosoft.com", access_policy=False)
