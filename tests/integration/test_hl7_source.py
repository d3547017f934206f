"""An HL7 v2 SIU feed through the HTTP function, Azurite, the queue function and the Graph
emulator, answered with ACKs that python-hl7 reads as a sender's interface engine would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import hl7
import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import runtime, settings
from shared.http_api import receive_source, save_organizers
from shared.intake import Intake
from shared.settings import POISON_QUEUE_NAME
from shared.storage import AppointmentStore, StorageUnavailable
from tests.integration.queue_host import reconcile_all
from tests.support import ALEX, ALEX_UPN, record, source_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
SECRET = "epic-secret-0123456789"


@pytest.fixture
def epic(reconfigure: Callable[..., None], event_queue: QueueClient) -> QueueClient:
    reconfigure(
        SOURCES__epic__KIND="hl7v2",
        SOURCES__epic__SECRETS=SECRET,
        SOURCES__epic__TIMEZONE="Europe/Berlin",
    )
    save_organizers(
        func.HttpRequest(
            method="PUT",
            url="http://localhost/api/organizers",
            body=json.dumps({"source": "epic", "identifier": "2201", "user": ALEX_UPN}).encode(),
        )
    )
    return event_queue


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


def message(name: str, appointment: str, control: str, **fields: str) -> bytes:
    """A fixture with its filler id, control id (MSH-10) and optionally MSH-7 replaced."""
    raw = (FIXTURES / name).read_bytes()
    raw = raw.replace(b"FL-8001", appointment.encode()).replace(b"CTL000", control.encode())
    for old, new in fields.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def send(body: bytes, content_type: str = "application/hl7-v2") -> func.HttpResponse:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {SECRET}"}
    answer: func.HttpResponse = receive_source(source_request("epic", body, headers))
    return answer


def ack(response: func.HttpResponse) -> Any:
    return hl7.parse(response.get_body().decode("utf-8"))


def fresh() -> str:
    return f"FL-{uuid.uuid4().hex[:10]}"


def test_an_s12_is_acknowledged_and_becomes_a_meeting(
    epic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    appointment = fresh()
    response = send(message("siu-s12-v28-tq1.hl7", appointment, "C1"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/hl7-v2"
    reply = ack(response)
    assert str(reply.segment("MSA")[1]) == "AA"
    assert str(reply.segment("MSA")[2]) == "C112"
    assert str(reply.segment("MSH")[9]) == "ACK^S12^ACK"
    reconcile_all(epic, poison)
    shown = record(f"epic:{appointment}")
    assert shown["status"] == "scheduled"
    assert shown["organizerId"] == ALEX
    assert shown["subject"] == "Virtual appointment"  # never the NTE or the AIS reason
    assert shown["startDateTime"] == "2026-01-05T09:30:00+01:00"
    assert shown["appointmentClients"][0]["smsCapablePhoneNumber"] == "+12065550103"
    assert (shown["source"], shown["sourceAppointmentId"]) == ("epic", appointment)
    assert [m.subject for m in emulator.meetings()] == ["Virtual appointment"]


def test_an_s15_cancels_and_an_s26_changes_nothing(
    epic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    appointment = fresh()
    send(message("siu-s12-v28-tq1.hl7", appointment, "C1"))
    reconcile_all(epic, poison)
    noshow = send(message("siu-s26-v28-noshow.hl7", appointment, "C2"))
    assert str(ack(noshow).segment("MSA")[1]) == "AA"
    assert epic.get_queue_properties().approximate_message_count == 0
    cancel = send(message("siu-s15-v28-cancelled.hl7", appointment, "C3"))
    assert str(ack(cancel).segment("MSA")[1]) == "AA"
    reconcile_all(epic, poison)
    assert record(f"epic:{appointment}")["status"] == "cancelled"
    assert emulator.meetings() == []


def test_a_repeated_msh10_is_a_duplicate_and_an_equal_msh7_is_applied_in_order(
    epic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    appointment = fresh()
    first = message("siu-s12-v28-tq1.hl7", appointment, "C1")
    assert send(first).status_code == 200
    assert send(first).status_code == 200  # the engine resent it
    reconcile_all(epic, poison)
    assert emulator.call_counts().get("createOrGet") == 1
    # A reschedule stamped with the same MSH-7 as the booking: applied after it.
    moved = message(
        "siu-s13-v28-reschedule.hl7",
        appointment,
        "C9",
        **{"202601021126+0100": "202601011120+0100"},
    )
    assert str(ack(send(moved)).segment("MSA")[1]) == "AA"
    reconcile_all(epic, poison)
    shown = record(f"epic:{appointment}")
    assert shown["startDateTime"] == "2026-01-06T09:30:00+01:00"
    assert shown["lastModifiedDateTime"] > "2026-01-01T10:20:00"
    assert emulator.call_counts().get("updateMeeting") == 1


def test_content_problems_are_ae_acks_naming_the_field(epic: QueueClient) -> None:
    appointment = fresh()
    body = message("siu-s12-v28-tq1.hl7", appointment, "C1")
    lines = [
        line
        for line in body.split(b"\r")
        if not line.startswith(b"TQ1") and not line.startswith(b"SCH")
    ]
    sch = (
        b"SCH|PL-1|"
        + appointment.encode()
        + b"||||Add|CHECKUP|Normal|60|s|^^^^|||||||||||||||Booked|"
    )
    response = send(b"\r".join([lines[0], sch, *lines[1:]]))
    assert response.status_code == 200
    reply = ack(response)
    assert str(reply.segment("MSA")[1]) == "AE"
    assert "SCH-11.4" in str(reply.segment("MSA")[3]) or "TQ1-7" in str(reply.segment("MSA")[3])
    assert reply.segment("ERR") is not None
    assert epic.get_queue_properties().approximate_message_count == 0


def test_a_body_without_msh_is_a_400_problem(epic: QueueClient) -> None:
    response = send(b"PID|1||123\r")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"


def test_wrong_credentials_and_content_types_are_refused(epic: QueueClient) -> None:
    body = message("siu-s12-v28-tq1.hl7", fresh(), "C1")
    headers = {"Content-Type": "application/hl7-v2", "Authorization": "Bearer wrong"}
    assert receive_source(source_request("epic", body, headers)).status_code == 401
    assert send(body, content_type="application/json").status_code == 415


def test_storage_trouble_is_a_503_with_an_ar_ack(epic: QueueClient) -> None:
    class Down(AppointmentStore):
        def __init__(self) -> None:
            pass

        def save_delivery(self, *args: Any, **kwargs: Any) -> Any:
            raise StorageUnavailable("down")

    intake = Intake(settings.current(), Down, runtime.queue, clock=time.time)
    headers = {"content-type": "application/hl7-v2", "authorization": f"Bearer {SECRET}"}
    reply = intake.handle(headers, message("siu-s12-v28-tq1.hl7", fresh(), "C1"), "c", "epic")
    assert reply.status == 503
    assert str(hl7.parse(reply.body.decode()).segment("MSA")[1]) == "AR"


def test_an_unmapped_clinician_waits_for_the_directory(
    epic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    appointment = fresh()
    body = message("siu-s12-v28-tq1.hl7", appointment, "C1", **{"2201^CLINICIAN": "7777^CLINICIAN"})
    assert str(ack(send(body)).segment("MSA")[1]) == "AA"
    reconcile_all(epic, poison)
    assert record(f"epic:{appointment}")["error"]["code"] == "organizerUnmapped"
    save_organizers(
        func.HttpRequest(
            method="PUT",
            url="http://localhost/api/organizers",
            body=json.dumps({"source": "epic", "identifier": "7777", "user": ALEX}).encode(),
        )
    )
    reconcile_all(epic, poison)
    assert record(f"epic:{appointment}")["status"] == "scheduled"
