"""Client e-mail through the reconciler on Azurite and the Graph emulator's sendMail: one message
per client with an address per notifying version, an invite that parses as RFC 5545 with one
UID and a growing SEQUENCE, and refusals that become warnings, never failures or retries."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import icalendar
import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator, MailRecord
from shared.http_api import receive_appointments
from shared.settings import POISON_QUEUE_NAME
from tests.integration.queue_host import reconcile_all
from tests.support import ALEX, ALEX_UPN, document, encode, record, signed_request

CLIENTS = [
    {"displayName": "Jordan Patient", "emailAddress": "jordan@example.com"},
    {"displayName": "Text Only", "smsCapablePhoneNumber": "+12065550100"},
    {"displayName": "Kim O'Neil <Carer>", "emailAddress": "kim@example.org"},
]
MAIL_ON = {"sendEmailNotifications": True}


@pytest.fixture
def mailing(
    reconfigure: Callable[..., None], event_queue: QueueClient, emulator: GraphEmulator
) -> QueueClient:
    reconfigure(MAIL_SENDER=ALEX_UPN)
    return event_queue


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


def booking(**overrides: Any) -> dict[str, Any]:
    return document(organizer=ALEX, appointmentClients=CLIENTS, settings=MAIL_ON, **overrides)


def send(queue: QueueClient, poison: QueueClient, body: dict[str, Any]) -> None:
    response = receive_appointments(signed_request(encode(body)))
    assert response.status_code == 202, response.get_body()
    reconcile_all(queue, poison)


def calendar_of(mail: MailRecord) -> icalendar.Component:
    [attachment] = mail.attachments
    assert attachment.name == "invite.ics"
    return icalendar.Calendar.from_ical(attachment.content)


def invite(mail: MailRecord) -> icalendar.Component:
    [event] = calendar_of(mail).walk("VEVENT")
    return event


def sent(emulator: GraphEmulator) -> list[tuple[str, str, int]]:
    """(recipient, METHOD, SEQUENCE) of every message sent so far."""
    return [
        (
            mail.to_address,
            str(calendar_of(mail)["METHOD"]),
            int(str(invite(mail)["SEQUENCE"])),
        )
        for mail in emulator.mail_sent()
    ]


def test_each_client_with_an_address_gets_one_message_per_notifying_version(
    mailing: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    body = booking()
    send(mailing, poison, body)
    assert sent(emulator) == [
        ("jordan@example.com", "REQUEST", 1),
        ("kim@example.org", "REQUEST", 1),
    ]
    first = emulator.mail_sent()[0]
    now = record(body["externalAppointmentId"])
    assert html.escape(now["appointmentClientJoinWebUrl"]) in first.html
    assert first.save_to_sent_items is False
    uid = invite(first)["UID"]
    assert str(invite(first)["URL"]) == now["appointmentClientJoinWebUrl"]

    renamed = body | {"lastModifiedDateTime": "2026-11-20T10:30:00Z", "subject": "Check-up"}
    send(mailing, poison, renamed)
    assert len(emulator.mail_sent()) == 2  # a subject alone is no reschedule

    moved = renamed | {
        "lastModifiedDateTime": "2026-11-20T11:00:00Z",
        "startDateTime": "2026-12-01T10:00:00Z",
        "endDateTime": "2026-12-01T10:30:00Z",
    }
    send(mailing, poison, moved)
    send(mailing, poison, moved)  # a duplicate delivery mails nobody
    cancel = {
        "externalAppointmentId": body["externalAppointmentId"],
        "status": "cancelled",
        "lastModifiedDateTime": "2026-11-20T12:00:00Z",
    }
    send(mailing, poison, cancel)
    assert sent(emulator)[2:] == [
        ("jordan@example.com", "REQUEST", 3),
        ("kim@example.org", "REQUEST", 3),
        ("jordan@example.com", "CANCEL", 4),
        ("kim@example.org", "CANCEL", 4),
    ]
    assert {str(invite(m)["UID"]) for m in emulator.mail_sent()} == {str(uid)}
    assert emulator.call_counts()["sendMail"] == 6  # exactly one call per message
    assert record(body["externalAppointmentId"])["warnings"] == []


def test_a_refused_e_mail_is_a_warning_never_a_failure_or_a_retry(
    mailing: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    emulator.granted_roles.discard("Mail.Send")
    body = booking()
    send(mailing, poison, body)
    now = record(body["externalAppointmentId"])
    assert now["status"] == "scheduled"
    notes = [w for w in now["warnings"] if "e-mail confirmation not sent" in w]
    assert [n.split(":")[0] for n in notes] == ["appointmentClients/0", "appointmentClients/2"]
    assert emulator.call_counts()["sendMail"] == 2
    assert emulator.mail_sent() == []


def test_graph_unavailable_for_one_message_skips_it_once(
    mailing: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    emulator.inject_fault(operation="sendMail", status=503, count=20)
    body = booking()
    send(mailing, poison, body)
    now = record(body["externalAppointmentId"])
    assert now["status"] == "scheduled"
    assert any("Microsoft Graph was unavailable" in w for w in now["warnings"])
    # The SDK's own retries are bounded; the reconciler never tries the version again for it.
    calls = emulator.call_counts()["sendMail"]
    emulator.clear_faults()
    send(mailing, poison, body)  # the same version again
    assert emulator.call_counts()["sendMail"] == calls


def test_without_a_sender_nothing_is_sent_and_the_record_says_why(
    reconfigure: Callable[..., None],
    event_queue: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
) -> None:
    reconfigure(MAIL_SENDER="")
    body = booking()
    send(event_queue, poison, body)
    assert emulator.call_counts().get("sendMail", 0) == 0
    assert "e-mail not sent: MAIL_SENDER is not set" in " ".join(
        record(body["externalAppointmentId"])["warnings"]
    )


def test_no_client_name_or_address_reaches_a_log_line(
    mailing: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.granted_roles.discard("Mail.Send")  # the refusal path logs too
    with caplog.at_level(logging.DEBUG):
        send(mailing, poison, booking())
    text = "\n".join(r.getMessage() for r in caplog.records)
    for private in ("jordan@example.com", "kim@example.org", "Jordan Patient", "Kim O'Neil"):
        assert private not in text
