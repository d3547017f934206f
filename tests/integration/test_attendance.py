"""Attendance after the appointment end to end: intake, reconciler, the attendance check and
callback delivery functions on Azurite and the Graph emulator, with real queue messages.

Appointments here end a few minutes before the test runs (or a few seconds after), with
ATTENDANCE_DELAY_MINUTES 0, so a check is due at once and the queues drain in seconds; the
emulator scripts the sessions (run_session) that make Graph's attendance reports.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.callback_receiver import CallbackReceiver
from devtools.graph_emulator import GraphEmulator, SessionParticipant
from shared.http_api import receive_appointments
from shared.queue_functions import check_attendance, deliver_callback
from shared.settings import (
    ATTENDANCE_POISON_QUEUE_NAME,
    ATTENDANCE_QUEUE_NAME,
    CALLBACK_POISON_QUEUE_NAME,
    CALLBACK_QUEUE_NAME,
    POISON_QUEUE_NAME,
)
from tests.integration.queue_host import drain, fresh_queue, reconcile_all
from tests.support import (
    ALEX,
    document,
    encode,
    get_request,
    queue_message,
    record,
    signed_request,
)

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CLIENT_NAME = "Jordan Patient"
CLIENT_EMAIL = "jordan@example.com"
CLIENT_PHONE = "+12065550100"
ATTENDEE_NAME = "Ada Client"
ATTENDEE_EMAIL = "ada@example.com"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ended(minutes_ago: float = 5, length: float = 30, **overrides: Any) -> dict[str, Any]:
    """A document (organizer Alex) whose appointment ended `minutes_ago` minutes ago."""
    end = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return document(
        organizer=ALEX,
        startDateTime=rfc3339(end - timedelta(minutes=length)),
        endDateTime=rfc3339(end),
        **overrides,
    )


@pytest.fixture
def queues(azurite: Azurite, event_queue: QueueClient) -> dict[str, QueueClient]:
    names = {
        "events": event_queue,
        "events-poison": QueueClient.from_connection_string(
            azurite.connection_string, POISON_QUEUE_NAME
        ),
    }
    for key, name in (
        ("attendance", ATTENDANCE_QUEUE_NAME),
        ("attendance-poison", ATTENDANCE_POISON_QUEUE_NAME),
        ("callbacks", CALLBACK_QUEUE_NAME),
        ("callbacks-poison", CALLBACK_POISON_QUEUE_NAME),
    ):
        names[key] = fresh_queue(azurite.connection_string, name)
    return names


@pytest.fixture
def attendance(
    reconfigure: Callable[..., None], queues: dict[str, QueueClient], emulator: GraphEmulator
) -> dict[str, QueueClient]:
    """Checks due at the end, a second between looks, the default 24-hour window."""
    reconfigure(ATTENDANCE_DELAY_MINUTES="0", ATTENDANCE_RETRY_MINUTES="0.02")
    return queues


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver(secrets=[WHSEC]) as server:
        yield server


@pytest.fixture
def with_callbacks(
    reconfigure: Callable[..., None],
    attendance: dict[str, QueueClient],
    receiver: CallbackReceiver,
) -> dict[str, QueueClient]:
    reconfigure(
        ATTENDANCE_DELAY_MINUTES="0",
        ATTENDANCE_RETRY_MINUTES="0.02",
        SOURCES__appointments__CALLBACKURL=receiver.url,
        SOURCES__appointments__CALLBACKSECRETS=WHSEC,
        CALLBACK_RETRY_SCHEDULE="1,1,1",
    )
    return attendance


def post(body: dict[str, Any]) -> None:
    response = receive_appointments(signed_request(encode(body)))
    assert response.status_code == 202, response.get_body()


def book(queues: dict[str, QueueClient], body: dict[str, Any]) -> str:
    """Post and reconcile one document; the meeting id."""
    post(body)
    reconcile_all(queues["events"], queues["events-poison"])
    meeting_id = record(body["externalAppointmentId"])["id"]
    assert meeting_id
    return str(meeting_id)


def check_all(queues: dict[str, QueueClient], deadline: float = 30.0) -> dict[str, int]:
    """Run every attendance message (and each one it re-sends) until none is left."""
    outcome = drain(
        queues["attendance"],
        queues["attendance-poison"],
        check_attendance,
        deadline_seconds=deadline,
    )
    assert outcome["poisoned"] == 0, outcome
    return outcome


def check_visible(queues: dict[str, QueueClient], wait: float = 0.0) -> int:
    """One pass over the attendance messages visible now (or the first ones to become visible
    within `wait` seconds: a message is sent hidden for at least a second), as one poll of the
    host would."""
    deadline = time.monotonic() + wait
    while True:
        batch = list(queues["attendance"].receive_messages(messages_per_page=32))
        if batch or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for message in batch:
        check_attendance(queue_message(message.content, dequeue_count=message.dequeue_count or 1))
        queues["attendance"].delete_message(message)
    return len(batch)


def deliver(queues: dict[str, QueueClient]) -> None:
    drain(queues["callbacks"], queues["callbacks-poison"], deliver_callback, deadline_seconds=30)


def reads(emulator: GraphEmulator) -> tuple[int, int]:
    """Graph's attendance calls so far: (reports lists, records reads)."""
    counts = emulator.call_counts()
    return counts.get("attendanceReports", 0), counts.get("attendanceRecords", 0)


def window(minutes_from: float, minutes_to: float) -> tuple[datetime, datetime]:
    """A (join, leave) pair, minutes relative to now (negative: in the past)."""
    now = datetime.now(UTC)
    return now + timedelta(minutes=minutes_from), now + timedelta(minutes=minutes_to)


def organizer() -> SessionParticipant:
    return SessionParticipant.organizer(window(-35, -6))


def client() -> SessionParticipant:
    return SessionParticipant.attendee(ATTENDEE_NAME, ATTENDEE_EMAIL, window(-33, -7))


# --------------------------------------------------------------------------- outcomes


def test_organizer_and_client_joined_is_completed(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    meeting_id = book(attendance, body)
    emulator.run_session(meeting_id, [organizer(), client()])
    check_all(attendance)
    got = record(body["externalAppointmentId"])["attendance"]
    assert got["outcome"] == "completed"
    assert got["reports"] == 1
    assert got["organizerSeconds"] > 0
    [entry] = got["clients"]
    assert entry["displayName"] == ATTENDEE_NAME
    assert set(entry) == {"displayName", "joinDateTime", "leaveDateTime", "seconds"}
    assert entry["seconds"] > 0
    assert got["checkedDateTime"].endswith("Z")
    assert reads(emulator) == (1, 1)  # one list and one records read per report


def test_organizer_only_is_client_no_show(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    meeting_id = book(attendance, body)
    emulator.run_session(meeting_id, [organizer()])
    check_all(attendance)
    got = record(body["externalAppointmentId"])["attendance"]
    assert (got["outcome"], got["clients"], got["reports"]) == ("clientNoShow", [], 1)


def test_client_only_is_organizer_no_show(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    meeting_id = book(attendance, body)
    emulator.run_session(meeting_id, [client()])
    check_all(attendance)
    got = record(body["externalAppointmentId"])["attendance"]
    assert got["outcome"] == "organizerNoShow"
    assert got["organizerSeconds"] == 0
    assert [c["displayName"] for c in got["clients"]] == [ATTENDEE_NAME]


def test_no_report_through_the_window_is_nobody_joined(
    reconfigure: Callable[..., None], queues: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    # The window (0.0005 h = 1.8 s after an end 5 minutes ago) has passed at the first look.
    reconfigure(ATTENDANCE_DELAY_MINUTES="0", ATTENDANCE_WINDOW_HOURS="0.0005")
    body = ended()
    book(queues, body)
    check_all(queues)
    got = record(body["externalAppointmentId"])["attendance"]
    assert (got["outcome"], got["clients"], got["reports"], got["organizerSeconds"]) == (
        "nobodyJoined",
        [],
        0,
        0,
    )
    assert reads(emulator) == (1, 0)


def test_a_report_that_appears_late_is_found_by_a_later_look(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    external_id = body["externalAppointmentId"]
    meeting_id = book(attendance, body)
    assert check_visible(attendance, wait=5) == 1  # the first look: no report yet
    assert reads(emulator) == (1, 0)
    assert "attendance" not in record(external_id)
    emulator.run_session(meeting_id, [organizer(), client()])
    check_all(attendance)  # the retry, ATTENDANCE_RETRY_MINUTES later
    assert record(external_id)["attendance"]["outcome"] == "completed"
    assert reads(emulator) == (2, 1)


def test_an_anonymous_browser_joiner_is_a_client(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    meeting_id = book(attendance, body)
    guest = SessionParticipant.anonymous("Sam (guest)", window(-30, -8))
    emulator.run_session(meeting_id, [organizer(), guest])
    check_all(attendance)
    got = record(body["externalAppointmentId"])["attendance"]
    assert got["outcome"] == "completed"
    assert [c["displayName"] for c in got["clients"]] == ["Sam (guest)"]


# --------------------------------------------------------------------------- scheduling


def test_a_rescheduled_appointment_is_checked_after_its_new_end_only(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    now = datetime.now(UTC)
    first = document(
        organizer=ALEX,
        startDateTime=rfc3339(now - timedelta(minutes=20)),
        endDateTime=rfc3339(now + timedelta(seconds=3)),
    )
    external_id = first["externalAppointmentId"]
    meeting_id = book(attendance, first)
    moved = first | {
        "lastModifiedDateTime": "2026-11-20T11:00:00Z",
        "endDateTime": rfc3339(now + timedelta(seconds=6)),
    }
    post(moved)
    reconcile_all(attendance["events"], attendance["events-poison"])
    assert record(external_id)["id"] == meeting_id  # the same meeting, patched
    # Two messages, both hidden until their ends: nothing is read before the end.
    assert attendance["attendance"].get_queue_properties().approximate_message_count == 2
    assert check_visible(attendance) == 0
    emulator.run_session(meeting_id, [organizer(), client()])
    check_all(attendance)
    assert time.time() >= datetime.fromisoformat(moved["endDateTime"]).timestamp()
    # The old end's message was dropped without a Graph call; the new end was read once.
    assert reads(emulator) == (1, 1)
    assert record(external_id)["attendance"]["outcome"] == "completed"


def test_a_cancelled_appointment_is_never_checked(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    external_id = body["externalAppointmentId"]
    meeting_id = book(attendance, body)
    emulator.run_session(meeting_id, [organizer(), client()])
    post(
        {
            "externalAppointmentId": external_id,
            "status": "cancelled",
            "lastModifiedDateTime": "2026-11-20T12:00:00Z",
        }
    )
    reconcile_all(attendance["events"], attendance["events-poison"])
    check_all(attendance)
    assert reads(emulator) == (0, 0)
    assert "attendance" not in record(external_id)
    # A first document that is already cancelled schedules nothing at all.
    post(
        {
            "externalAppointmentId": external_id + "-c",
            "status": "cancelled",
            "lastModifiedDateTime": "2026-11-20T12:00:00Z",
        }
    )
    reconcile_all(attendance["events"], attendance["events-poison"])
    assert attendance["attendance"].get_queue_properties().approximate_message_count == 0


def test_an_appointment_weeks_out_waits_hidden_without_a_graph_call(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    start = datetime.now(UTC) + timedelta(days=30)
    body = document(
        organizer=ALEX,
        startDateTime=rfc3339(start),
        endDateTime=rfc3339(start + timedelta(minutes=30)),
    )
    book(attendance, body)
    # Sent hidden for Azure's longest visibility timeout (7 days: longer is refused) and a
    # time-to-live that never ends, so it can re-hide itself until the appointment is over.
    assert attendance["attendance"].get_queue_properties().approximate_message_count == 1
    assert check_visible(attendance) == 0
    assert reads(emulator) == (0, 0)


def test_duplicate_messages_and_concurrent_workers_check_once_and_call_back_once(
    with_callbacks: dict[str, QueueClient], emulator: GraphEmulator, receiver: CallbackReceiver
) -> None:
    queues = with_callbacks
    body = ended()
    external_id = body["externalAppointmentId"]
    meeting_id = book(queues, body)
    deliver(queues)  # appointment.scheduled
    emulator.run_session(meeting_id, [organizer(), client()])
    deadline = time.monotonic() + 5
    while not (batch := list(queues["attendance"].receive_messages())):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    [original] = batch
    queues["attendance"].delete_message(original)
    text = original.content
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            check_attendance(queue_message(text))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check_all(queues)  # the workers that found the check busy look again: a no-op
    check_attendance(queue_message(text))  # a late duplicate: a no-op too
    check_all(queues)
    deliver(queues)
    assert reads(emulator) == (1, 1)
    kinds = [r.type for r in receiver.received if r.answered == 200]
    assert kinds.count("appointment.attendance") == 1
    assert kinds == ["appointment.scheduled", "appointment.attendance"]
    assert record(external_id)["attendance"]["outcome"] == "completed"


def test_the_attendance_callback_carries_the_record_and_verifies(
    with_callbacks: dict[str, QueueClient], emulator: GraphEmulator, receiver: CallbackReceiver
) -> None:
    queues = with_callbacks
    body = ended()
    external_id = body["externalAppointmentId"]
    meeting_id = book(queues, body)
    emulator.run_session(meeting_id, [organizer(), client()])
    check_all(queues)
    deliver(queues)
    [got] = [r for r in receiver.received if r.type == "appointment.attendance"]
    assert got.verified, got.verify_error
    now = record(external_id)
    assert got.data["attendance"] == now["attendance"]
    assert got.data["attendance"]["outcome"] == "completed"
    assert now["callback"]["type"] == "appointment.attendance"
    assert now["callback"]["status"] == "delivered"


def test_without_a_callback_url_attendance_is_recorded_and_nothing_is_sent(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    body = ended()
    meeting_id = book(attendance, body)
    emulator.run_session(meeting_id, [organizer()])
    check_all(attendance)
    assert attendance["callbacks"].get_queue_properties().approximate_message_count == 0
    assert "callback" not in record(body["externalAppointmentId"])


def test_attendance_switched_off_schedules_no_check(
    reconfigure: Callable[..., None], queues: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    reconfigure(ATTENDANCE_ENABLED="false")
    book(queues, ended())
    assert queues["attendance"].get_queue_properties().approximate_message_count == 0


def test_a_refusal_records_nothing_and_logs_only_its_code(
    attendance: dict[str, QueueClient], emulator: GraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    body = ended()
    book(attendance, body)
    emulator.inject_fault(operation="attendanceReports", status=403)
    with caplog.at_level(logging.INFO):
        check_all(attendance)
    assert "attendance" not in record(body["externalAppointmentId"])
    assert "Graph refused (" in caplog.text
    assert reads(emulator) == (1, 0)


def test_no_client_data_in_any_log_line(
    with_callbacks: dict[str, QueueClient],
    emulator: GraphEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queues = with_callbacks
    caplog.set_level(logging.DEBUG)
    body = ended()
    meeting_id = book(queues, body)
    assert record(body["externalAppointmentId"])["appointmentClients"][0]["displayName"] == (
        CLIENT_NAME
    )
    guest = SessionParticipant.anonymous("Sam Guestname", window(-30, -8))
    emulator.run_session(meeting_id, [organizer(), client(), guest])
    check_all(queues)
    deliver(queues)
    assert record(body["externalAppointmentId"])["attendance"]["outcome"] == "completed"
    text = caplog.text + json.dumps([r.getMessage() for r in caplog.records])
    assert "attendance of appointment" in text  # the check did log
    for secret in (
        CLIENT_NAME,
        CLIENT_EMAIL,
        CLIENT_PHONE,
        ATTENDEE_NAME,
        ATTENDEE_EMAIL,
        "Sam Guestname",
    ):
        assert secret not in text


def test_a_replay_schedules_a_lost_check_again_and_a_second_replay_reads_nothing(
    attendance: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    """The check's message was lost (say, parked in appointment-attendance-poison): POST
    .../reconcile of the applied version sends it again; once attendance is on the record a
    replay sends none, so Graph is read once."""
    from shared.http_api import reconcile_appointment

    body = ended()
    external_id = body["externalAppointmentId"]
    meeting_id = book(attendance, body)
    attendance["attendance"].clear_messages()  # the lost message
    emulator.run_session(meeting_id, [organizer(), client()])

    def replay() -> None:
        request = get_request(
            f"appointments/{external_id}/reconcile", {"externalAppointmentId": external_id}
        )
        assert reconcile_appointment(request).status_code == 202
        reconcile_all(attendance["events"], attendance["events-poison"])

    replay()
    check_all(attendance)
    assert record(external_id)["attendance"]["outcome"] == "completed"
    assert reads(emulator) == (1, 1)
    replay()
    assert attendance["attendance"].get_queue_properties().approximate_message_count == 0
    check_all(attendance)
    assert reads(emulator) == (1, 1)
