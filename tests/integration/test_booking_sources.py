"""Calendly and Cal.com sources through the HTTP function, Azurite, the queue function and the
Graph emulator: what a booking site's deliveries become in Teams."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import signatures
from shared.http_api import receive_source
from shared.settings import POISON_QUEUE_NAME
from shared.sources import calcom
from tests.integration.queue_host import reconcile_all
from tests.support import ALEX, ALEX_UPN, record, source_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SECRET = "booking-secret-0123456789"


@pytest.fixture
def sites(reconfigure: Callable[..., None], event_queue: QueueClient) -> QueueClient:
    reconfigure(
        SOURCES__booking__KIND="calendly",
        SOURCES__booking__SECRETS=SECRET,
        SOURCES__booking__SENDSMS="true",
        SOURCES__cal__KIND="calcom",
        SOURCES__cal__SECRETS=SECRET,
    )
    return event_queue


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


def fixture(kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / kind / f"{name}.json").read_bytes()))


def calendly_post(body: dict[str, Any], secret: str = SECRET) -> func.HttpResponse:
    raw = json.dumps(body).encode()
    header = signatures.sign(secret, int(time.time()), raw)
    headers = {"Content-Type": "application/json", "Calendly-Webhook-Signature": header}
    answer: func.HttpResponse = receive_source(source_request("booking", raw, headers))
    return answer


def calcom_post(body: dict[str, Any], secret: str = SECRET) -> func.HttpResponse:
    raw = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Cal-Signature-256": calcom.signature(secret, raw),
    }
    answer: func.HttpResponse = receive_source(source_request("cal", raw, headers))
    return answer


def invitee(event: str, number: int, updated: str, event_id: str) -> dict[str, Any]:
    """A delivery for invitee `number` of the Calendly event `event_id`, hosted by Alex."""
    body = fixture("calendly", "invitee-created")
    if event == "invitee.canceled":
        body["event"] = "invitee.canceled"
        body["payload"]["status"] = "canceled"
    payload = body["payload"]
    scheduled = payload["scheduled_event"]
    scheduled["uri"] = f"https://api.calendly.com/scheduled_events/{event_id}"
    scheduled["start_time"], scheduled["end_time"] = "2026-12-10T16:00:00Z", "2026-12-10T16:30:00Z"
    scheduled["event_memberships"][0]["user_email"] = ALEX_UPN
    payload["uri"] = f"{scheduled['uri']}/invitees/INV-{number}"
    payload["name"], payload["email"] = f"Invitee {number}", f"invitee{number}@example.org"
    payload["text_reminder_number"] = f"+1 206 555 01{number:02d}"
    payload["updated_at"] = updated
    return body


def test_a_group_event_in_any_order_becomes_one_meeting_with_every_active_invitee(
    sites: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    event_id = f"EVT-{time.time_ns()}"
    deliveries = [
        invitee("invitee.created", 2, "2026-12-01T10:02:00Z", event_id),
        invitee("invitee.canceled", 3, "2026-12-01T10:05:00Z", event_id),
        invitee("invitee.created", 1, "2026-12-01T10:01:00Z", event_id),
        invitee("invitee.created", 3, "2026-12-01T10:03:00Z", event_id),
        invitee("invitee.created", 2, "2026-12-01T10:02:00Z", event_id),  # a repeat
    ]
    for body in deliveries:
        response = calendly_post(body)
        assert response.status_code == 202, response.get_body()
    reconcile_all(sites, poison)
    shown = record(f"booking:{event_id}")
    assert shown["status"] == "scheduled"
    assert [c["displayName"] for c in shown["appointmentClients"]] == ["Invitee 1", "Invitee 2"]
    assert shown["organizerId"] == ALEX
    assert shown["subject"] == "Follow-up consultation"
    assert shown["settings"]["sendSmsNotifications"] is True
    assert len(emulator.meetings()) == 1
    assert emulator.call_counts().get("createOrGet") == 1


def test_every_invitee_canceled_cancels_the_appointment(
    sites: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    event_id = f"EVT-{time.time_ns()}"
    calendly_post(invitee("invitee.created", 1, "2026-12-01T10:01:00Z", event_id))
    reconcile_all(sites, poison)
    assert len(emulator.meetings()) == 1
    calendly_post(invitee("invitee.canceled", 1, "2026-12-01T11:00:00Z", event_id))
    reconcile_all(sites, poison)
    assert record(f"booking:{event_id}")["status"] == "cancelled"
    assert emulator.meetings() == []


def test_calendly_refusals_are_problems_and_other_events_are_acknowledged(
    sites: QueueClient,
) -> None:
    legacy = calendly_post(fixture("calendly", "invitee-created-legacy"))
    assert legacy.status_code == 400
    paths = [e["path"] for e in json.loads(legacy.get_body())["errors"]]
    assert "/payload/scheduled_event" in paths
    other = copy.deepcopy(fixture("calendly", "invitee-created"))
    other["event"] = "routing_form_submission.created"
    answer = calendly_post(other)
    assert (answer.status_code, json.loads(answer.get_body())) == (
        202,
        {"ignored": "routing_form_submission.created"},
    )
    assert calendly_post(fixture("calendly", "invitee-created"), secret="wrong").status_code == 401


def test_a_stale_calendly_signature_is_refused(sites: QueueClient) -> None:
    raw = json.dumps(fixture("calendly", "invitee-created")).encode()
    old = signatures.sign(SECRET, int(time.time()) - 3600, raw)
    headers = {"Content-Type": "application/json", "Calendly-Webhook-Signature": old}
    assert receive_source(source_request("booking", raw, headers)).status_code == 401


def test_a_calcom_reschedule_cancels_the_old_booking_and_schedules_the_new(
    sites: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    created = fixture("calcom", "booking-created")
    created["payload"]["organizer"]["email"] = ALEX_UPN
    old_uid = created["payload"]["uid"] = f"bk-{time.time_ns()}"
    assert calcom_post(created).status_code == 202
    reconcile_all(sites, poison)
    assert record(f"cal:{old_uid}")["status"] == "scheduled"

    moved = fixture("calcom", "booking-rescheduled")
    moved["payload"]["organizer"]["email"] = ALEX_UPN
    moved["payload"]["rescheduleUid"] = old_uid
    new_uid = moved["payload"]["uid"] = f"bk-{time.time_ns()}"
    answer = calcom_post(moved)
    assert answer.status_code == 202
    accepted = [a["externalAppointmentId"] for a in json.loads(answer.get_body())["accepted"]]
    assert accepted == [f"cal:{old_uid}", f"cal:{new_uid}"]
    reconcile_all(sites, poison)
    assert record(f"cal:{old_uid}")["status"] == "cancelled"
    new = record(f"cal:{new_uid}")
    assert new["status"] == "scheduled"
    assert new["timeZone"] == moved["payload"]["organizer"]["timeZone"]
    assert len(emulator.meetings()) == 1


def test_a_replayed_calcom_delivery_changes_nothing(
    sites: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    created = fixture("calcom", "booking-created")
    created["payload"]["organizer"]["email"] = ALEX_UPN
    uid = created["payload"]["uid"] = f"bk-{time.time_ns()}"
    calcom_post(created)
    reconcile_all(sites, poison)
    before = emulator.call_counts()
    assert calcom_post(created).status_code == 202
    reconcile_all(sites, poison)
    assert emulator.call_counts() == before
    assert record(f"cal:{uid}")["status"] == "scheduled"


def test_a_reschedule_with_one_invalid_booking_stores_neither(
    sites: QueueClient, poison: QueueClient
) -> None:
    moved = fixture("calcom", "booking-rescheduled")
    moved["payload"]["endTime"] = moved["payload"]["startTime"]
    answer = calcom_post(moved)
    assert answer.status_code == 400
    assert "/payload/endTime" in [e["path"] for e in json.loads(answer.get_body())["errors"]]
    assert sites.get_queue_properties().approximate_message_count == 0


def test_calcom_signature_is_checked_before_the_body_is_read(sites: QueueClient) -> None:
    headers = {"Content-Type": "application/json", "X-Cal-Signature-256": "00" * 32}
    assert receive_source(source_request("cal", b"{not json", headers)).status_code == 401
