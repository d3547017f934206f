"""Black box: webhooks in over HTTP, Teams meetings (emulated) out, status read back.

Everything goes through the running local stack on 127.0.0.1: the signed intake, the queue
trigger driven from Azurite, the reconciler and the Graph emulator. Assertions use only the HTTP
answers, the status records and the emulator's state.
"""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from devtools.local_host import describe, index, load_function_app, timers
from shared.settings import QUEUE_NAME, STORAGE_SETTING
from tests.e2e.conftest import (
    RunningStack,
    emulator_state,
    meetings,
    post_signed,
    settled,
    status_of,
    wait_for,
)
from tests.support import document, new_id

ALEX = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"
ALEX_UPN = "alex.wilber@contoso.onmicrosoft.com"
MEGAN = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e02"
NO_POLICY_UPN = "no.policy@contoso.onmicrosoft.com"


def instant(value: str) -> datetime:
    """An RFC 3339 / Graph timestamp as an aware datetime (Graph writes 7 fractional digits)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def meeting_by_id(graph_admin: httpx.Client, meeting_id: str) -> dict[str, Any]:
    [meeting] = [m for m in meetings(graph_admin, live=False) if m["id"] == meeting_id]
    return meeting


@pytest.fixture(scope="module", autouse=True)
def seeded(graph_admin: httpx.Client) -> None:
    """`make run` seeds the default organizers, one of them without an access policy."""
    users = {user["id"]: user for user in emulator_state(graph_admin)["users"]}
    assert {ALEX, MEGAN} <= set(users)
    assert any(not user["access_policy"] for user in users.values())


def book(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    doc = document(organizer=ALEX_UPN, **fields)
    response = post_signed(client, doc)
    assert response.status_code == 202, response.text
    return doc


# --- the host serves what the app declares --------------------------------------------------


def test_local_host_serves_every_function_of_the_app_index(
    stack: RunningStack, client: httpx.Client
) -> None:
    """Every function of function_app's own index is served: HTTP ones answer, queue ones poll."""
    independent = index(load_function_app(fresh=True))
    http, queues = describe(independent)
    assert {"receive_appointments", "get_appointment", "reconcile_appointment", "health"} <= {
        f.name for f in http
    }
    assert (QUEUE_NAME, STORAGE_SETTING) in [(q.queue_name, q.connection) for q in queues]
    # Timer functions are listed, not scheduled: a pass runs by hand (devtools.retention).
    assert [name for name, _ in timers(independent)] == ["apply_retention"]
    assert len(http) + len(queues) + len(timers(independent)) == len(independent)

    banner = stack.output()
    for indexed in independent:
        assert f"  {indexed.get_function_name()}: " in banner
    for queue in queues:
        assert f"queueTrigger on {queue.queue_name!r}" in banner
    for function in http:
        path = re.sub(r"\{[^}]*\}", new_id(), function.route)
        method = sorted(function.methods or {"GET"})[0]
        response = client.request(method, f"/api/{path}")
        # The app stamps every answer with a correlation id; the router's 404 has none.
        assert "x-correlation-id" in response.headers, (function.name, response.status_code)

    assert client.get("/api/health").json() == {"status": "ok"}
    assert client.get("/api/no/such/route").status_code == 404
    assert client.get("/api/webhooks/appointments").status_code == 404  # POST only


# --- lifecycle -------------------------------------------------------------------------------


def test_book_creates_a_meeting_with_a_client_link(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    doc = book(client, subject=f"Booking {uuid.uuid4().hex[:8]}")

    record = wait_for(client, doc["externalAppointmentId"], settled("scheduled"))

    assert record["organizerId"] == ALEX
    assert record["joinWebUrl"].startswith("https://")
    assert record["appointmentClientJoinWebUrl"].startswith("https://")
    assert record["lastModifiedDateTime"] == doc["lastModifiedDateTime"]
    assert "error" not in record or record["error"] is None
    meeting = meeting_by_id(graph_admin, record["id"])
    assert meeting["user_id"] == ALEX
    assert not meeting["deleted"]
    assert meeting["subject"] == doc["subject"]
    assert meeting["join_web_url"] == record["joinWebUrl"]


def test_reschedule_moves_the_same_meeting(client: httpx.Client, graph_admin: httpx.Client) -> None:
    doc = book(client)
    first = wait_for(client, doc["externalAppointmentId"], settled("scheduled"))

    moved = dict(
        doc,
        lastModifiedDateTime="2026-11-21T08:00:00Z",
        startDateTime="2026-12-02T15:00:00Z",
        endDateTime="2026-12-02T16:00:00Z",
    )
    assert post_signed(client, moved).status_code == 202
    record = wait_for(
        client,
        doc["externalAppointmentId"],
        lambda r: (
            settled("scheduled")(r) and r["lastModifiedDateTime"] == moved["lastModifiedDateTime"]
        ),
    )

    assert record["id"] == first["id"]
    assert instant(record["startDateTime"]) == instant(moved["startDateTime"])
    meeting = meeting_by_id(graph_admin, record["id"])
    assert instant(meeting["start"]) == instant(moved["startDateTime"])
    assert instant(meeting["end"]) == instant(moved["endDateTime"])
    assert not meeting["deleted"]


def test_cancel_deletes_the_meeting(client: httpx.Client, graph_admin: httpx.Client) -> None:
    doc = book(client)
    scheduled = wait_for(client, doc["externalAppointmentId"], settled("scheduled"))

    cancel = dict(doc, status="cancelled", lastModifiedDateTime="2026-11-22T08:00:00Z")
    assert post_signed(client, cancel).status_code == 202
    wait_for(client, doc["externalAppointmentId"], settled("cancelled"))

    assert meeting_by_id(graph_admin, scheduled["id"])["deleted"] is True


def test_organizer_change_moves_the_meeting_and_leaves_no_orphan(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    doc = book(client)
    before = wait_for(client, doc["externalAppointmentId"], settled("scheduled"))

    moved = dict(doc, organizer=MEGAN, lastModifiedDateTime="2026-11-23T08:00:00Z")
    assert post_signed(client, moved).status_code == 202
    after = wait_for(
        client,
        doc["externalAppointmentId"],
        lambda r: settled("scheduled")(r) and r["organizerId"] == MEGAN,
    )

    assert after["id"] != before["id"]
    assert meeting_by_id(graph_admin, before["id"])["deleted"] is True
    new_meeting = meeting_by_id(graph_admin, after["id"])
    assert new_meeting["user_id"] == MEGAN
    assert not new_meeting["deleted"]


# --- refusals and failures -----------------------------------------------------------------


def test_bad_signature_is_401_and_nothing_is_stored(client: httpx.Client) -> None:
    doc = document(organizer=ALEX_UPN)

    response = post_signed(client, doc, secret="not-the-configured-secret")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Signature"
    assert status_of(client, doc["externalAppointmentId"]).status_code == 404


def test_organizer_without_access_policy_fails_with_a_clear_error(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    doc = document(organizer=NO_POLICY_UPN, subject=f"No policy {uuid.uuid4().hex[:8]}")
    assert post_signed(client, doc).status_code == 202

    record = wait_for(client, doc["externalAppointmentId"], settled("failed"))

    assert record["error"]["code"]
    assert "policy" in record["error"]["message"].lower()
    assert record["joinWebUrl"] is None
    assert not [m for m in meetings(graph_admin) if m["subject"] == doc["subject"]]


# --- load ------------------------------------------------------------------------------------


def test_burst_of_200_webhooks_all_end_scheduled_with_exactly_200_meetings(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    tag = f"burst-{uuid.uuid4().hex[:8]}"
    docs = [
        document(
            organizer=ALEX if i % 2 else MEGAN,
            subject=f"{tag} #{i}",
            externalAppointmentId=f"{tag}-{i:03d}",
        )
        for i in range(200)
    ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda d: post_signed(client, d).status_code, docs))

    assert statuses == [202] * 200
    records = [
        wait_for(client, d["externalAppointmentId"], settled("scheduled"), timeout=90) for d in docs
    ]
    live = [m for m in meetings(graph_admin) if m["subject"].startswith(f"{tag} ")]
    assert len(live) == 200
    assert {m["id"] for m in live} == {r["id"] for r in records}
