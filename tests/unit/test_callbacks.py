"""Which change owes which callback, and the pieces a callback is made of. Pure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shared.callbacks import (
    DEFAULT_RETRY_SCHEDULE,
    CallbackMessage,
    OwedCallback,
    Progress,
    body,
    callback_type,
    next_delay,
    owe,
    parse_schedule,
    progress_for,
    view,
)
from shared.records import AppliedState, ErrorInfo
from shared.settings import Settings, SettingsError
from tests.unit.factories import cancelled, doc, valid

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example


def scheduled(**fields: object) -> AppliedState:
    return AppliedState(
        status="scheduled",
        version="v1",
        document=valid(doc(**fields)),
        organizer_id="o",
        meeting_id="m1",
        join_web_url="https://join/1",
    )


def test_the_first_scheduled_version_owes_scheduled() -> None:
    assert callback_type(AppliedState(), scheduled()) == "appointment.scheduled"


def test_a_new_meeting_after_a_cancellation_is_scheduled_again() -> None:
    gone = AppliedState(status="cancelled", version="v1", document=valid(cancelled()))
    assert callback_type(gone, replace(scheduled(), version="v2")) == "appointment.scheduled"


def test_every_later_applied_version_is_an_update_whatever_changed() -> None:
    before = scheduled()
    clients = [{"displayName": "Sam", "emailAddress": "sam@example.com"}]
    for after in (
        scheduled(startDateTime="2026-12-01T10:00:00Z", endDateTime="2026-12-01T10:30:00Z"),
        replace(scheduled(subject="Follow-up"), organizer_id="other"),
        replace(before, version="v2", join_web_url="https://join/2"),
        replace(scheduled(appointmentClients=clients), version="v2"),
        replace(before, version="v2"),  # only lastModifiedDateTime: the record still moved on
    ):
        assert callback_type(before, replace(after, version="v2")) == "appointment.updated"


def test_no_newer_version_owes_nothing() -> None:
    before = scheduled()
    assert callback_type(before, before) is None  # leftovers tidied, version unchanged
    assert callback_type(before, replace(before, lease_owner="me", warnings=("w",))) is None
    assert callback_type(AppliedState(), AppliedState(lease_owner="me")) is None


def test_cancellation_and_failure() -> None:
    before = scheduled()
    gone = AppliedState(status="cancelled", version="v2", document=valid(cancelled()))
    assert callback_type(before, gone) == "appointment.cancelled"
    assert callback_type(gone, gone) is None
    assert callback_type(gone, replace(gone, version="v3")) == "appointment.cancelled"
    failed = replace(before, status="failed", failed_version="v2", error=ErrorInfo("x", "m"))
    assert callback_type(before, failed) == "appointment.failed"
    assert callback_type(failed, failed) is None  # the same failure again: nothing new
    again = replace(failed, failed_version="v3")
    assert callback_type(failed, again) == "appointment.failed"
    other = replace(failed, error=ErrorInfo("y", "m"))
    assert callback_type(failed, other) == "appointment.failed"


def test_recovering_from_a_failure_is_an_update_when_the_meeting_lived_on() -> None:
    before = scheduled()
    failed = replace(before, status="failed", failed_version="v2", error=ErrorInfo("x", "m"))
    assert callback_type(failed, replace(before, version="v3")) == "appointment.updated"
    never = AppliedState(status="failed", failed_version="v1", error=ErrorInfo("x", "m"))
    assert callback_type(never, scheduled()) == "appointment.scheduled"


def test_each_owed_callback_supersedes_the_last() -> None:
    first = owe(scheduled(), "appointment.scheduled", 100.0)
    second = owe(first, "appointment.updated", 200.0)
    assert first.callback is not None
    assert second.callback is not None
    assert (first.callback.sequence, second.callback.sequence) == (1, 2)
    assert first.callback.id != second.callback.id
    assert first.callback.id.startswith("msg_")


def test_progress_and_view_describe_the_latest_callback_only() -> None:
    owed = OwedCallback("msg_2", "appointment.updated", 2, 100.0)
    old = Progress("msg_1", "delivered", 1, 50.0, 200)
    assert progress_for(owed, old) == Progress("msg_2")
    assert view(owed, old) == {
        "type": "appointment.updated",
        "status": "pending",
        "attempts": 0,
        "lastAttemptDateTime": None,
        "lastStatusCode": None,
    }
    now = Progress("msg_2", "failed", 3, 0.0, 500)
    assert view(owed, now) == {
        "type": "appointment.updated",
        "status": "failed",
        "attempts": 3,
        "lastAttemptDateTime": "1970-01-01T00:00:00Z",
        "lastStatusCode": 500,
    }
    assert view(None, now) is None


def test_the_body_is_type_timestamp_and_the_record() -> None:
    owed = OwedCallback("msg_1", "appointment.cancelled", 1, 1_800_000_000.0)
    assert json.loads(body(owed, {"status": "cancelled"})) == {
        "type": "appointment.cancelled",
        "timestamp": "2027-01-15T08:00:00Z",
        "data": {"status": "cancelled"},
    }


def test_messages_round_trip_and_anything_else_is_refused() -> None:
    message = CallbackMessage("appt-1", "msg_1", 3, 12.5)
    assert CallbackMessage.from_message(message.to_message()) == message
    for text in ("", "[]", "{}", '{"appointmentId": "a"}', "not json"):
        with pytest.raises(ValueError, match="not a callback message"):
            CallbackMessage.from_message(text)


def test_the_schedule_then_the_poison_queue() -> None:
    assert [next_delay(DEFAULT_RETRY_SCHEDULE, n) for n in range(1, 9)] == [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
        None,
    ]
    assert parse_schedule("") == DEFAULT_RETRY_SCHEDULE
    assert parse_schedule(" 1, 2 ,3") == (1, 2, 3)
    for bad in ("0", "1,,2", "x", "604801", "-5"):
        with pytest.raises(ValueError, match="each delay must be"):
            parse_schedule(bad)


def test_callback_settings_per_source_and_for_the_default_source() -> None:
    current = Settings.from_environ(
        {
            "SOURCES__ehr__KIND": "hl7v2",
            "SOURCES__ehr__CALLBACKURL": "https://ehr.example.com/cb",
            "SOURCES__ehr__CALLBACKSECRETS": f"{SECRET}, {SECRET}",
            "SOURCES__appointments__CALLBACKURL": "http://localhost:7072/",
            "SOURCES__appointments__CALLBACKSECRETS": SECRET,
            "SOURCES__cal__KIND": "calcom",
            "CALLBACK_RETRY_SCHEDULE": "1,2",
        }
    )
    ehr = current.callback_target("EHR")
    assert ehr is not None
    assert ehr.url == "https://ehr.example.com/cb"
    assert ehr.secrets == (SECRET, SECRET)
    default = current.callback_target(None)
    assert default is not None
    assert default.url == "http://localhost:7072/"
    assert current.callback_target("cal") is None
    assert current.callback_target("nowhere") is None
    assert current.callback_retry_schedule == (1, 2)
    assert current.source_errors == {}


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"CALLBACKURL": "http://ehr.example.com/"}, "SOURCES__ehr__CALLBACKURL"),
        ({"CALLBACKURL": "https://ehr.example.com/"}, "SOURCES__ehr__CALLBACKSECRETS"),
        (
            {"CALLBACKURL": "https://e.example/", "CALLBACKSECRETS": "plain-secret"},
            "SOURCES__ehr__CALLBACKSECRETS",
        ),
        (
            {"CALLBACKURL": "https://e.example/", "CALLBACKSECRETS": "@Microsoft.KeyVault(x)"},
            "SOURCES__ehr__CALLBACKSECRETS",
        ),
    ],
)
def test_an_unusable_callback_setting_makes_only_that_source_misconfigured(
    values: dict[str, str], setting: str
) -> None:
    environ = {"SOURCES__ehr__KIND": "hl7v2", "SOURCES__cal__KIND": "calcom"}
    environ |= {f"SOURCES__ehr__{k}": v for k, v in values.items()}
    current = Settings.from_environ(environ)
    assert current.source_errors["ehr"].setting == setting
    assert "cal" in current.sources
    default = Settings.from_environ({f"SOURCES__appointments__{k}": v for k, v in values.items()})
    assert default.source_errors["appointments"].setting == setting.replace("ehr", "appointments")


def test_a_bad_retry_schedule_is_a_settings_error() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({"CALLBACK_RETRY_SCHEDULE": "5,soon"})
    assert raised.value.setting == "CALLBACK_RETRY_SCHEDULE"


def test_mail_sender_is_read_and_trimmed() -> None:
    assert Settings.from_environ({}).mail_sender is None
    assert Settings.from_environ({"MAIL_SENDER": " desk@contoso.com "}).mail_sender == (
        "desk@contoso.com"
    )
