"""Retention, the pure part: when a record is due, and what pseudonymizing leaves of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared import retention
from shared.attendance import Attendance, ClientAttendance
from shared.records import AppliedState, ErrorInfo
from shared.settings import Settings, SettingsError
from shared.sources.base import Part
from tests.unit.factories import ORGANIZER_UPN, cancelled, doc, valid

CLIENTS = [
    {
        "displayName": "Erin Example",
        "emailAddress": "erin@example.com",
        "smsCapablePhoneNumber": "+12065550100",
    },
    {"displayName": "Sam Sample", "emailAddress": "sam@example.org"},
]
END = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def booked() -> dict[str, object]:
    return doc(
        appointmentClients=CLIENTS,
        subject="Follow-up for Erin Example",
        warnings=["appointmentClients/0: call +12065550100 first"],
    )


def test_due_days_after_the_end_not_before() -> None:
    document = valid(booked())
    assert retention.due_at([document], 30) == END + timedelta(days=30)
    assert not retention.is_due([document], 30, END + timedelta(days=30, seconds=-1))
    assert retention.is_due([document], 30, END + timedelta(days=30))


def test_a_cancellation_counts_from_when_it_came_if_that_is_earlier() -> None:
    early = valid(
        booked() | {"status": "cancelled", "lastModifiedDateTime": "2026-11-02T08:00:00Z"}
    )
    assert retention.due_at([early], 10) == datetime(2026, 11, 12, 8, tzinfo=UTC)
    late = valid(booked() | {"status": "cancelled", "lastModifiedDateTime": "2026-12-20T08:00:00Z"})
    assert retention.due_at([late], 10) == END + timedelta(days=10)
    timeless = valid(cancelled())
    assert retention.due_at([timeless], 1) == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_zero_days_keeps_everything_and_every_document_must_be_finished() -> None:
    document = valid(booked())
    assert retention.due_at([document], 0) is None
    assert not retention.is_due([document], 0, END + timedelta(days=10_000))
    moved = valid(
        booked() | {"endDateTime": "2027-01-01T10:00:00Z", "startDateTime": "2027-01-01T09:00:00Z"}
    )
    assert retention.due_at([document, moved], 1) == datetime(2027, 1, 2, 10, tzinfo=UTC)
    assert retention.due_at([], 30) is None


def test_behind_the_walk_only_when_it_starts_by_now_minus_days() -> None:
    document = valid(booked())  # starts 2026-12-01T09:00Z
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert retention.behind_the_walk(document, 30, start + timedelta(days=30))
    assert retention.behind_the_walk(document, 30, start + timedelta(days=400))
    assert not retention.behind_the_walk(document, 30, start + timedelta(days=30, seconds=-1))
    assert not retention.behind_the_walk(document, 0, start + timedelta(days=400))  # keep
    # No start (a first cancellation): its index row sorts after every start, where the
    # cancellation sweep looks on every run.
    assert not retention.behind_the_walk(valid(cancelled()), 1, start + timedelta(days=400))


def test_pseudonymized_document_keeps_ids_times_status_organizer() -> None:
    document = valid(booked() | {"organizer": ORGANIZER_UPN})
    values = retention.private_values([document])
    result = retention.pseudonymize_document(document, values)
    data = result.to_json()
    assert data["appointmentClients"] == [{"displayName": "client 1"}, {"displayName": "client 2"}]
    for key in ("externalAppointmentId", "lastModifiedDateTime", "startDateTime", "endDateTime"):
        assert data[key] == document.to_json()[key]
    assert result.organizer == ORGANIZER_UPN
    assert result.subject == "Follow-up for [erased]"
    assert result.warnings == ["appointmentClients/0: call [erased] first"]
    text = json.dumps(data)
    for client in CLIENTS:
        for value in client.values():
            assert value not in text
    assert retention.is_pseudonymized(result)
    assert not retention.is_pseudonymized(document)
    # A fixed point: again, it changes nothing.
    assert retention.pseudonymize_document(result) == result


def test_pseudonymized_state_scrubs_free_text_and_says_so() -> None:
    document = valid(booked() | {"organizer": ORGANIZER_UPN})
    state = AppliedState(
        status="failed",
        version="v",
        document=document,
        meeting_id="m-1",
        organizer_id="o-1",
        warnings=("appointmentClients/1: e-mail not sent: sam@example.org refused",),
        error=ErrorInfo("invalidRequest", f"Graph refused Erin Example, {ORGANIZER_UPN}"),
        finished_versions=3,
        lease_owner="x",
        lease_until=5.0,
    )
    purged = retention.pseudonymize_state(state, retention.private_values([document]))
    assert purged.document is not None
    assert retention.is_pseudonymized(purged.document)
    assert purged.warnings == (
        "appointmentClients/1: e-mail not sent: [erased] refused",
        retention.NOTE,
    )
    assert purged.error == ErrorInfo("invalidRequest", f"Graph refused [erased], {ORGANIZER_UPN}")
    kept = ("status", "version", "meeting_id", "organizer_id", "finished_versions", "lease_until")
    assert all(getattr(purged, k) == getattr(state, k) for k in kept)
    assert retention.pseudonymize_state(purged, ()) == purged


def test_parts_are_numbered_as_the_combined_document_orders_them() -> None:
    parts = [
        Part("b", "2026-11-20T10:00:00Z", dict(CLIENTS[0]), {"subject": "Erin Example"}),
        Part("a", "2026-11-20T10:00:00Z", dict(CLIENTS[1]), {"warnings": ["ok"]}),
        Part("c", "2026-11-20T10:00:00Z", None, {}),
    ]
    values = retention.private_values([], parts)
    result = retention.pseudonymize_parts(parts, values)
    assert [p.client for p in result] == [
        {"displayName": "client 2"},
        {"displayName": "client 1"},
        None,
    ]
    assert result[0].base == {"subject": "[erased]"}
    assert result[1].base == {"warnings": ["ok"]}


def test_attendance_keeps_counts_and_times() -> None:
    at = datetime(2026, 12, 1, 9, 1, tzinfo=UTC)
    attendance = Attendance(
        outcome="completed",
        organizer_seconds=1500,
        clients=(
            ClientAttendance("Erin Example", at, at + timedelta(minutes=20), 1200),
            ClientAttendance(None, None, None, 0),
        ),
        reports=1,
        checked=at + timedelta(hours=1),
    )
    result = retention.pseudonymize_attendance(attendance)
    assert [c.display_name for c in result.clients] == ["client 1", "client 2"]
    assert [c.seconds for c in result.clients] == [1200, 0]
    assert result.clients[0].join == at
    assert (result.outcome, result.organizer_seconds, result.reports) == ("completed", 1500, 1)
    assert retention.pseudonymize_attendance(result) == result


def test_short_names_are_not_hunted_in_free_text() -> None:
    assert retention.scrub_text("Al called", ["Al"]) == "Al called"
    assert retention.scrub_text("Alan called alan", ["Alan"]) == "[erased] called [erased]"
    assert retention.scrub_text("Alanis called", ["Alan"]) == "Alanis called"


def test_retention_days_setting() -> None:
    assert Settings.from_environ({}).retention_days == 30
    assert Settings.from_environ({"RETENTION_DAYS": "0"}).retention_days == 0
    assert Settings.from_environ({"RETENTION_DAYS": " 7 "}).retention_days == 7


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("-1", "must be at least 0"),
        ("30d", "must be a whole number"),
        ("1.5", "must be a whole number"),
        ("36501", "must be at most 36500"),
    ],
)
def test_bad_retention_days_is_a_clear_error(raw: str, rule: str) -> None:
    with pytest.raises(SettingsError, match=f"RETENTION_DAYS {rule}") as caught:
        Settings.from_environ({"RETENTION_DAYS": raw})
    assert caught.value.setting == "RETENTION_DAYS"


def test_a_parked_message_is_due_with_its_appointment_and_a_malformed_one_by_its_age() -> None:
    from shared.events import AppointmentEvent, EraseEvent

    message = AppointmentEvent(valid(booked()), "c").to_message()
    due = END + timedelta(days=30)
    assert retention.parked_message_is_due(message, None, 30, due)
    assert not retention.parked_message_is_due(message, None, 30, due - timedelta(seconds=1))
    assert not retention.parked_message_is_due(message, None, 0, due + timedelta(days=999))
    parked = datetime(2026, 12, 2, tzinfo=UTC)
    for malformed in ("not json", '{"document": {"externalAppointmentId": "x"}}'):
        assert retention.parked_message_is_due(malformed, parked, 30, parked + timedelta(days=30))
        assert not retention.parked_message_is_due(malformed, parked, 30, parked + timedelta(29))
        assert not retention.parked_message_is_due(malformed, None, 30, parked + timedelta(999))
    erase = EraseEvent("appt-1", "c").to_message()
    assert not retention.parked_message_is_due(erase, parked, 30, parked + timedelta(days=999))
