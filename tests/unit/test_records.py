"""The status record (SPEC.md "Status record") and the applied state, pure."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.documents import AppointmentDocument, version_key
from shared.records import (
    AppliedState,
    DesiredVersion,
    ErrorInfo,
    Intent,
    RetryInfo,
    StoredAppointment,
    status_view,
)
from tests.unit.factories import ORGANIZER_GUID, cancelled, doc, valid

CLIENTS = [
    {"displayName": "Jordan Patient", "smsCapablePhoneNumber": "+12065550100"},
    {"displayName": "Sam Carer", "emailAddress": "sam@example.com", "ignored": 1},
]
V1 = valid(
    doc(
        lastModifiedDateTime="2026-11-20T10:00:00Z",
        subject="Follow-up",
        timeZone="America/New_York",
        externalAppointmentUrl="https://ehr.example/a/1",
        appointmentClients=CLIENTS,
        settings={"sendSmsNotifications": True},
    )
)
V2 = valid(
    doc(
        lastModifiedDateTime="2026-11-21T10:00:00+02:00",  # 08:00Z, a day later
        startDateTime="2026-12-02T09:00:00Z",
        endDateTime="2026-12-02T10:00:00Z",
        organizer="dr.grey@contoso.com",
    )
)
V3 = valid(doc(lastModifiedDateTime="2026-11-22T10:00:00Z"))
CANCELLED = valid(cancelled())
ERROR = ErrorInfo("Forbidden", "No Teams application access policy grants the app access.")


def desired(document: AppointmentDocument) -> DesiredVersion:
    return DesiredVersion(document, version_key(document.version), "corr-1")


def applied(document: AppointmentDocument, **overrides: Any) -> AppliedState:
    state = AppliedState(
        status="cancelled" if document.is_cancelled else "scheduled",
        version=version_key(document.version),
        document=document,
        organizer_id=None if document.is_cancelled else ORGANIZER_GUID,
        meeting_id=None if document.is_cancelled else "meeting-1",
        join_web_url=None if document.is_cancelled else "https://teams.example/join/1",
        client_join_web_url=None if document.is_cancelled else "https://visit.example/1",
        external_meeting_id=None if document.is_cancelled else "ext-appt-1-0",
    )
    return dataclasses.replace(state, **overrides)


def test_version_keys_of_the_fixtures_are_ordered() -> None:
    assert version_key(V1.version) < version_key(V2.version) < version_key(V3.version)


def test_nothing_applied_yet_is_pending_and_shows_the_desired_document() -> None:
    view = status_view(StoredAppointment(desired(V1), None))
    assert view == {
        "@odata.type": "#microsoft.graph.virtualAppointment",
        "id": None,
        "externalAppointmentId": "appt-1",
        "externalAppointmentUrl": "https://ehr.example/a/1",
        "appointmentClients": [
            {"displayName": "Jordan Patient", "smsCapablePhoneNumber": "+12065550100"},
            {"displayName": "Sam Carer", "emailAddress": "sam@example.com"},
        ],
        "appointmentClientJoinWebUrl": None,
        "settings": {
            "allowClientToJoinUsingBrowser": True,
            "sendSmsNotifications": True,
            "sendSmsReminder": False,
            "sendEmailNotifications": False,
        },
        "status": "pending",
        "organizer": ORGANIZER_GUID,
        "organizerId": None,
        "joinWebUrl": None,
        "subject": "Follow-up",
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "timeZone": "America/New_York",
        "lastModifiedDateTime": None,
        "pending": True,
        "warnings": [],
        "source": "appointments",
        "sourceAppointmentId": "appt-1",
    }


def test_empty_applied_state_is_the_same_as_none() -> None:
    assert status_view(StoredAppointment(desired(V1), AppliedState())) == status_view(
        StoredAppointment(desired(V1), None)
    )


def test_applied_equal_to_desired_is_not_pending() -> None:
    view = status_view(StoredAppointment(desired(V1), applied(V1), "etag-1"))
    assert view["status"] == "scheduled"
    assert view["pending"] is False
    assert view["id"] == "meeting-1"
    assert view["joinWebUrl"] == "https://teams.example/join/1"
    assert view["appointmentClientJoinWebUrl"] == "https://visit.example/1"
    assert view["organizerId"] == ORGANIZER_GUID
    assert view["lastModifiedDateTime"] == "2026-11-20T10:00:00Z"
    assert view["startDateTime"] == "2026-12-01T09:00:00Z"
    assert "error" not in view


def test_defaults_show_when_the_document_omits_them() -> None:
    view = status_view(StoredAppointment(desired(V3), applied(V3)))
    assert view["subject"] == "Virtual appointment"
    assert view["timeZone"] == "UTC"
    assert view["appointmentClients"] == []
    assert view["externalAppointmentUrl"] is None
    assert view["settings"] == {
        "allowClientToJoinUsingBrowser": True,
        "sendSmsNotifications": False,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }


def test_newer_desired_is_pending_and_shows_the_applied_document() -> None:
    view = status_view(StoredAppointment(desired(V2), applied(V1)))
    assert view["pending"] is True
    assert view["status"] == "scheduled"
    assert view["organizer"] == ORGANIZER_GUID  # V1's, not V2's dr.grey
    assert view["startDateTime"] == "2026-12-01T09:00:00Z"
    assert view["endDateTime"] == "2026-12-01T09:30:00Z"
    assert view["subject"] == "Follow-up"
    assert view["lastModifiedDateTime"] == "2026-11-20T10:00:00Z"
    assert view["id"] == "meeting-1"


def test_failed_desired_version_is_not_pending_and_keeps_the_last_good_meeting() -> None:
    state = applied(V1, status="failed", error=ERROR, failed_version=version_key(V2.version))
    view = status_view(StoredAppointment(desired(V2), state))
    assert view["status"] == "failed"
    assert view["pending"] is False
    assert view["error"] == {
        "code": "Forbidden",
        "message": "No Teams application access policy grants the app access.",
    }
    assert view["id"] == "meeting-1"
    assert view["joinWebUrl"] == "https://teams.example/join/1"
    assert view["organizer"] == ORGANIZER_GUID
    assert view["startDateTime"] == "2026-12-01T09:00:00Z"
    assert view["lastModifiedDateTime"] == "2026-11-20T10:00:00Z"


def test_a_version_newer_than_the_failed_one_is_pending_again() -> None:
    state = applied(V1, status="failed", error=ERROR, failed_version=version_key(V2.version))
    view = status_view(StoredAppointment(desired(V3), state))
    assert view["pending"] is True
    assert view["error"] == ERROR.to_json()


def test_first_version_failed_with_nothing_applied() -> None:
    state = AppliedState(status="failed", error=ERROR, failed_version=version_key(V1.version))
    view = status_view(StoredAppointment(desired(V1), state))
    assert view["status"] == "failed"
    assert view["pending"] is False
    assert view["id"] is None
    assert view["lastModifiedDateTime"] is None
    assert view["externalAppointmentId"] == "appt-1"
    assert view["error"] == ERROR.to_json()


def test_first_document_cancelled_and_applied_is_cancelled_without_a_meeting() -> None:
    view = status_view(StoredAppointment(desired(CANCELLED), applied(CANCELLED)))
    assert view["status"] == "cancelled"
    assert view["pending"] is False
    for field in ("id", "joinWebUrl", "appointmentClientJoinWebUrl", "organizerId", "organizer"):
        assert view[field] is None, field
    assert view["startDateTime"] is None
    assert view["endDateTime"] is None
    assert view["externalAppointmentId"] == "appt-1"
    assert view["lastModifiedDateTime"] == "2026-11-21T10:00:00Z"
    assert "error" not in view


def test_warnings_are_listed() -> None:
    state = applied(V1, warnings=("SMS to +442071838750 skipped: only US numbers", "second"))
    view = status_view(StoredAppointment(desired(V1), state))
    assert view["warnings"] == ["SMS to +442071838750 skipped: only US numbers", "second"]
    assert view["status"] == "scheduled"


def test_unknown_appointment_renders_empty() -> None:
    view = status_view(StoredAppointment(None, None))
    assert view["status"] == "pending"
    assert view["pending"] is False
    assert view["externalAppointmentId"] is None
    assert view["appointmentClients"] == []
    assert view["settings"] is None


def test_error_info_to_json() -> None:
    assert ErrorInfo("BadRequest", "bad").to_json() == {"code": "BadRequest", "message": "bad"}


# --- AppliedState.without_meeting -----------------------------------------------------------------
# (The brief named `with_meeting_gone`, which bumped the generation; it became `without_meeting`,
# and the generation is now "the next unused one", advanced by the planner when it creates.)


@pytest.mark.parametrize("generation", [0, 1, 7])
def test_without_meeting_clears_the_meeting_and_its_organizer_and_keeps_the_rest(
    generation: int,
) -> None:
    before = applied(
        V1,
        generation=generation,
        warnings=("w",),
        error=ERROR,
        failed_version=version_key(V2.version),
        intents=(Intent(ORGANIZER_GUID, generation),),
        lease_owner="worker-1",
        lease_until=1_764_579_600.5,
    )
    after = before.without_meeting()
    assert after.organizer_id is None  # a deleted meeting's organizer says nothing of the next
    assert after.meeting_id is None
    assert after.join_web_url is None
    assert after.client_join_web_url is None
    assert after.external_meeting_id is None
    assert after == dataclasses.replace(
        before,
        organizer_id=None,
        meeting_id=None,
        join_web_url=None,
        client_join_web_url=None,
        external_meeting_id=None,
    )
    assert after.generation == generation  # the next unused generation does not move back
    assert after.document is V1
    # The original is untouched (frozen dataclass).
    assert before.meeting_id == "meeting-1"
    assert before.external_meeting_id == "ext-appt-1-0"


def test_without_meeting_is_idempotent() -> None:
    once = applied(V1).without_meeting()
    assert once.without_meeting() == once


def test_status_view_after_the_meeting_is_gone_has_no_links() -> None:
    state = dataclasses.replace(applied(V1).without_meeting(), status="cancelled")
    view = status_view(StoredAppointment(desired(V1), state))
    assert view["id"] is None
    assert view["joinWebUrl"] is None
    assert view["appointmentClientJoinWebUrl"] is None
    assert view["status"] == "cancelled"


def test_new_applied_state_defaults() -> None:
    state = AppliedState()
    assert state.status == "pending"
    assert state.generation == 0
    assert state.intents == ()
    assert state.lease_owner is None
    assert state.lease_until == 0.0


def test_applied_state_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AppliedState().generation = 3  # type: ignore[misc]


def _waiting(version: AppointmentDocument) -> RetryInfo:
    # 2026-11-20T10:00:00Z and 30 s later, as unix seconds.
    return RetryInfo(
        version_key(version.version), 1_795_168_800.0, 3, "Microsoft Graph 503", 1_795_168_830.0
    )


def test_a_waiting_version_shows_its_retry() -> None:
    view = status_view(StoredAppointment(desired(V2), applied(V1, retry=_waiting(V2))))
    assert view["pending"] is True
    assert view["retry"] == {
        "since": "2026-11-20T10:00:00Z",
        "attempts": 3,
        "lastError": "Microsoft Graph 503",
        "nextAttemptDateTime": "2026-11-20T10:00:30Z",
    }


def test_a_retry_for_another_version_is_not_shown() -> None:
    # Left from V2 while V3 is now the newest: V3 has not failed yet.
    view = status_view(StoredAppointment(desired(V3), applied(V1, retry=_waiting(V2))))
    assert "retry" not in view


def test_no_retry_once_nothing_is_pending() -> None:
    view = status_view(StoredAppointment(desired(V1), applied(V1, retry=_waiting(V1))))
    assert view["pending"] is False
    assert "retry" not in view
