"""Erasure on request: DELETE /api/appointments/{id} on Azurite and the Graph emulator.

After it, nothing of the clients is left in any table entity or queue message, the meeting is
gone without a text or an e-mail, a late delivery of the erased version (or an older one)
changes nothing, and a newer version is a new booking.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import storage
from shared.documents import parse_document
from shared.events import AppointmentEvent
from shared.http_api import erase_appointment, get_appointment, receive_appointments
from shared.settings import POISON_QUEUE_NAME
from tests.integration.queue_host import reconcile_all
from tests.support import ALEX, ALEX_UPN, document, encode, get_request, new_id, signed_request


class Client:
    """A client whose name, address and number appear nowhere but in this test's bookings."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"Erin Erasable {tag}"
        self.email = f"erin.{tag}@example.com"
        self.phone = f"+1206555{int(tag, 16) % 10000:04d}"

    @property
    def private(self) -> tuple[str, ...]:
        return (self.name, self.email, self.phone)

    def booking(self, **overrides: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "organizer": ALEX,
            "appointmentClients": [
                {
                    "displayName": self.name,
                    "emailAddress": self.email,
                    "smsCapablePhoneNumber": self.phone,
                }
            ],
            "settings": {"sendSmsNotifications": True, "sendEmailNotifications": True},
        }
        return document(**(fields | overrides))


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


@pytest.fixture
def notifying(reconfigure: Callable[..., None], emulator: GraphEmulator) -> None:
    reconfigure(MAIL_SENDER=ALEX_UPN)


def post(body: dict[str, Any]) -> int:
    return int(receive_appointments(signed_request(encode(body))).status_code)


def delete(external_id: str) -> func.HttpResponse:
    response: func.HttpResponse = erase_appointment(
        func.HttpRequest(
            method="DELETE",
            url=f"http://localhost:7071/api/appointments/{external_id}",
            headers={},
            body=b"",
            route_params={"externalAppointmentId": external_id},
        )
    )
    return response


def status(external_id: str) -> int:
    request = get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    return int(get_appointment(request).status_code)


def traces(azurite: Azurite, client: Client) -> list[str]:
    """Every table entity and every queue message of the account that names the client."""
    found: list[str] = []
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    for table in tables.list_tables():
        for entity in tables.get_table_client(table.name).list_entities():
            text = json.dumps(dict(entity), default=str, ensure_ascii=False)
            if any(p in text for p in client.private):
                found.append(f"table {table.name}: {entity['PartitionKey']}/{entity['RowKey']}")
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    for queue in queues.list_queues():
        for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
            if any(p in message.content for p in client.private):
                found.append(f"queue {queue.name}")
    return found


def left_of(azurite: Azurite, external_id: str) -> list[str]:
    """The rows left anywhere that name the appointment: its own partition's, and list index
    rows (their RowKey ends with the base64url id)."""
    table = TableServiceClient.from_connection_string(azurite.connection_string)
    rows = list(table.get_table_client("appointments").list_entities())
    tag = base64.urlsafe_b64encode(external_id.encode()).decode().rstrip("=")
    own = [r["RowKey"] for r in rows if r["PartitionKey"] == external_id]
    indexed = [r["RowKey"] for r in rows if str(r["RowKey"]).endswith(tag)]
    return sorted(own + indexed)


def test_erasure_leaves_no_trace_and_sends_nothing(
    notifying: None,
    event_queue: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
    azurite: Azurite,
) -> None:
    client = Client()
    body = client.booking()
    external_id = body["externalAppointmentId"]
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    assert len(emulator.meetings()) == 1
    texts, mails = len(emulator.sms_sent()), len(emulator.mail_sent())
    assert traces(azurite, client)  # the check can see the client while it is stored
    assert len(left_of(azurite, external_id)) > 2  # and the index rows

    response = delete(external_id)
    assert response.status_code == 202
    assert status(external_id) == 404  # at once, before the meeting is gone
    reconcile_all(event_queue, poison)
    assert emulator.meetings() == []
    assert (len(emulator.sms_sent()), len(emulator.mail_sent())) == (texts, mails)
    emulator.reset_calls()
    assert traces(azurite, client) == []
    assert left_of(azurite, external_id) == ["applied", "desired"]

    # A late delivery of the erased version, or an older one, changes nothing.
    for late in (body, body | {"lastModifiedDateTime": "2026-11-20T09:00:00Z"}):
        assert post(late) == 202
        reconcile_all(event_queue, poison)
    assert status(external_id) == 404
    assert emulator.call_counts().get("createOrGet", 0) == 0
    assert traces(azurite, client) == []
    assert delete(external_id).status_code == 202  # erasing again is harmless
    reconcile_all(event_queue, poison)

    # A newer version is a new booking, with a new meeting.
    newer = body | {"lastModifiedDateTime": "2026-11-21T10:00:00Z"}
    assert post(newer) == 202
    reconcile_all(event_queue, poison)
    assert status(external_id) == 200
    assert len(emulator.meetings()) == 1


def test_unknown_or_impossible_ids_are_not_found(event_queue: QueueClient) -> None:
    assert delete(new_id()).status_code == 404
    assert delete("x" * 201).status_code == 404


def test_an_erased_failed_appointment_has_no_meeting_to_delete(
    event_queue: QueueClient, poison: QueueClient, emulator: GraphEmulator, azurite: Azurite
) -> None:
    from tests.support import NO_POLICY

    client = Client()
    body = client.booking(organizer=NO_POLICY)
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    assert delete(body["externalAppointmentId"]).status_code == 202
    reconcile_all(event_queue, poison)
    assert status(body["externalAppointmentId"]) == 404
    assert traces(azurite, client) == []


def test_an_erased_old_appointment_leaves_no_retention_recheck_behind(
    event_queue: QueueClient, poison: QueueClient, emulator: GraphEmulator, azurite: Azurite
) -> None:
    """An appointment that ended long ago is noted for retention's recheck when it arrives
    (shared/retention.py, behind_the_walk); erasing it takes the note too."""
    from shared import runtime

    client = Client()
    body = client.booking(startDateTime="2025-01-10T09:00:00Z", endDateTime="2025-01-10T09:30:00Z")
    external_id = body["externalAppointmentId"]
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    assert external_id in runtime.store().rechecks(10_000)
    assert delete(external_id).status_code == 202
    reconcile_all(event_queue, poison)
    assert traces(azurite, client) == []
    assert left_of(azurite, external_id) == ["applied", "desired"]
    assert external_id not in runtime.store().rechecks(10_000)


def test_erasure_clears_the_appointments_parked_messages_and_leaves_the_rest(
    event_queue: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message parked in appointment-events-poison holds the whole document: erasure finds
    it (also one parked because its document was invalid) and leaves other appointments'."""
    client, other = Client(), Client()
    body, kept = client.booking(), other.booking()
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    parsed = parse_document(body)
    assert not isinstance(parsed, list)
    poison.send_message(AppointmentEvent(parsed, "parked").to_message())
    broken = {"correlationId": "parked", "document": body | {"endDateTime": "never"}}
    poison.send_message(json.dumps(broken))
    poison.send_message(json.dumps({"document": kept, "correlationId": "other"}))
    poison.send_message("not json at all")
    assert len(traces(azurite, client)) > 1
    monkeypatch.setattr(storage, "POISON_SCAN_HIDE_SECONDS", 1)

    assert delete(body["externalAppointmentId"]).status_code == 202
    reconcile_all(event_queue, poison)

    assert traces(azurite, client) == []
    time.sleep(1.5)  # the messages the walk looked at and kept are visible again
    left = sorted(m.content for m in poison.peek_messages(max_messages=32))
    assert len(left) == 2
    assert left[0] == "not json at all"
    assert other.email in left[1]
