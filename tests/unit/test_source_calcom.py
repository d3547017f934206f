"""Kind `calcom` (SPEC.md "Sources", "Kind calcom"), pure: no storage, no network."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from shared.documents import FieldError, parse_document, parse_rfc3339
from shared.sources import calcom
from shared.sources.base import (
    Accepted,
    AuthenticationError,
    InvalidBody,
    Outcome,
    Parsed,
    SourceConfig,
    UnsupportedMediaType,
)
from shared.sources.calcom import KIND
from shared.sources.jsonbody import PHONE_WARNING
from tests.unit.sources_support import (
    FUZZ,
    JSON_HEADERS,
    broken_bodies,
    check_refused_cleanly,
    encode,
    error_paths,
    fixture,
    located_errors,
    valid_documents,
)

NOW = 1_772_463_846
SECRET = "calcom-webhook-secret"
CONFIG = SourceConfig(name="bookings", kind="calcom", secrets=(SECRET,))


def created() -> dict[str, Any]:
    return fixture("calcom", "booking-created")


def rescheduled() -> dict[str, Any]:
    return fixture("calcom", "booking-rescheduled")


def cancelled() -> dict[str, Any]:
    return fixture("calcom", "booking-cancelled")


def parse(value: object, config: SourceConfig = CONFIG, content_type: str | None = None) -> Parsed:
    headers = JSON_HEADERS if content_type is None else {"content-type": content_type}
    body = value if isinstance(value, bytes) else encode(value)
    return KIND.parse(headers, body, config)


def documents(value: object, config: SourceConfig = CONFIG) -> list[dict[str, Any]]:
    parsed = parse(value, config)
    valid_documents(parsed)
    return [c.document for c in parsed.candidates]


def only(value: object, config: SourceConfig = CONFIG) -> dict[str, Any]:
    (document,) = documents(value, config)
    return document


def invalid(value: object) -> InvalidBody:
    with pytest.raises(InvalidBody) as caught:
        parse(value)
    return caught.value


# --- authentication ------------------------------------------------------------------------------


def _sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _authenticate(
    header: str | None, body: bytes = b"{}", secrets: tuple[str, ...] = (SECRET,)
) -> None:
    headers = {} if header is None else {"x-cal-signature-256": header}
    # No timestamp: `now` and the tolerance change nothing.
    KIND.authenticate(headers, body, secrets, now=NOW, tolerance_seconds=0)


def test_a_good_signature_passes() -> None:
    body = encode(created())
    _authenticate(_sign(SECRET, body), body)
    assert calcom.signature(SECRET, body) == _sign(SECRET, body)


def test_uppercase_hex_and_surrounding_spaces_pass() -> None:
    _authenticate(f" {_sign(SECRET, b'{}').upper()} ")


def test_a_wrong_secret_fails() -> None:
    with pytest.raises(AuthenticationError, match=r"^signature does not match$"):
        _authenticate(_sign("another", b"{}"))


def test_a_tampered_body_fails() -> None:
    with pytest.raises(AuthenticationError, match="does not match"):
        _authenticate(_sign(SECRET, b"{}"), b'{"x":1}')


def test_a_replayed_delivery_still_passes() -> None:
    # Cal.com signs no time stamp: a replay is a duplicate document, which changes nothing.
    body = encode(created())
    KIND.authenticate(
        {"x-cal-signature-256": _sign(SECRET, body)},
        body,
        (SECRET,),
        now=NOW + 10**8,
        tolerance_seconds=300,
    )


@pytest.mark.parametrize("signer", ["old", "current", "next"])
def test_any_rotated_secret_passes(signer: str) -> None:
    _authenticate(_sign(signer, b"{}"), secrets=("old", "current", "next"))


def test_no_secret_matches_nothing() -> None:
    with pytest.raises(AuthenticationError):
        _authenticate(_sign(SECRET, b"{}"), secrets=())


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_fails(header: str | None) -> None:
    with pytest.raises(AuthenticationError, match=r"^missing X-Cal-Signature-256 header$"):
        _authenticate(header)


@pytest.mark.parametrize(
    "header",
    [
        "no-secret-provided",
        "sha256=" + "ab" * 32,
        "ab" * 31,
        "ab" * 33,
        "zz" * 32,
        "t=1,v1=" + "ab" * 32,
        "\u0660" * 64,  # Arabic-Indic zeros: digits, but not hex
    ],
)
def test_a_malformed_header_fails(header: str) -> None:
    with pytest.raises(AuthenticationError, match="malformed X-Cal-Signature-256"):
        _authenticate(header)


def test_every_secret_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("shared.sources.calcom.hmac.compare_digest", counting)
    _authenticate(_sign("a", b"{}"), secrets=("a", "b", "c"))
    assert len(calls) == 3
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


# --- content type and JSON -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_unsupported(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with pytest.raises(UnsupportedMediaType):
        KIND.parse(headers, encode(created()), CONFIG)


def test_a_charset_parameter_is_fine() -> None:
    parsed = parse(created(), content_type="application/json; charset=UTF-8")
    assert len(parsed.candidates) == 1


@pytest.mark.parametrize("body", [b"", b"{", b"\x80", b'{"createdAt": Infinity}', b"[]", b'"x"'])
def test_unreadable_bodies_are_invalid_at_the_root(body: bytes) -> None:
    assert error_paths(invalid(body)) == [""]


# --- triggers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trigger", ["PING", "BOOKING_REQUESTED", "MEETING_ENDED", "BOOKING_PAID", "booking_created"]
)
def test_other_triggers_are_acknowledged_and_change_nothing(trigger: str) -> None:
    assert parse({"triggerEvent": trigger, "payload": None}) == Parsed(ignored=trigger)


def test_an_ignored_trigger_is_answered_202_with_its_name() -> None:
    reply = KIND.respond(Outcome("ignored", ignored="PING"), JSON_HEADERS, now=NOW)
    assert (reply.status, json.loads(reply.body)) == (202, {"ignored": "PING"})


@pytest.mark.parametrize("trigger", [None, 1, {"name": "BOOKING_CREATED"}])
def test_the_trigger_must_be_a_string(trigger: object) -> None:
    body = created()
    body["triggerEvent"] = trigger
    assert error_paths(invalid(body)) == ["/triggerEvent"]


@pytest.mark.parametrize("payload", [None, "x", []])
def test_the_payload_must_be_an_object(payload: object) -> None:
    body = created()
    body["payload"] = payload
    assert error_paths(invalid(body)) == ["/payload"]


# --- a booking -----------------------------------------------------------------------------------


def test_a_created_booking_is_one_scheduled_appointment() -> None:
    assert only(created()) == {
        "externalAppointmentId": "bookings:bk-1001",
        "lastModifiedDateTime": "2026-03-02T15:04:05.000Z",
        "status": "scheduled",
        "source": "bookings",
        "sourceAppointmentId": "bk-1001",
        "organizer": "dr.rivera@example.org",
        "startDateTime": "2026-03-10T16:00:00Z",
        "endDateTime": "2026-03-10T16:30:00Z",
        "subject": "Follow-up consultation between Dr. Morgan Rivera and Avery Quinn",
        "timeZone": "America/New_York",
        "settings": {
            "sendSmsNotifications": False,
            "sendSmsReminder": False,
            "sendEmailNotifications": False,
        },
        "appointmentClients": [
            {
                "displayName": "Avery Quinn",
                "emailAddress": "avery.quinn@example.org",
                "smsCapablePhoneNumber": "+12065550142",
            },
            {
                "displayName": "Sam Lee",
                "emailAddress": "sam.lee@example.org",
                "smsCapablePhoneNumber": "+13125550187",
            },
        ],
    }


def test_the_id_is_percent_encoded() -> None:
    body = created()
    body["payload"]["uid"] = "a/b#c"
    document = only(body)
    assert document["externalAppointmentId"] == "bookings:a%2Fb%23c"
    assert document["sourceAppointmentId"] == "a/b#c"


@pytest.mark.parametrize("uid", [None, "", "  ", 5])
def test_the_uid_is_required(uid: object) -> None:
    body = created()
    body["payload"]["uid"] = uid
    assert error_paths(invalid(body)) == ["/payload/uid"]


def test_the_version_is_the_deliverys_created_at() -> None:
    body = created()
    body["payload"]["updatedAt"] = "2030-01-01T00:00:00Z"  # not Cal.com's field: ignored
    assert only(body)["lastModifiedDateTime"] == "2026-03-02T15:04:05.000Z"


def test_a_missing_version_is_invalid_at_created_at() -> None:
    body = created()
    del body["createdAt"]
    assert error_paths(invalid(body)) == ["/createdAt"]


def test_an_unreadable_version_is_located_at_created_at() -> None:
    body = created()
    body["createdAt"] = "March 2nd"
    assert [p for p, _ in located_errors(parse(body).candidates[0])] == ["/createdAt"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-03-10T16:00:00Z", "2026-03-10T16:30:00Z"),
        ("2026-03-10T16:00:00.000Z", "2026-03-10T16:30:00.000Z"),
        ("2026-03-10T11:00:00-05:00", "2026-03-10T11:30:00-05:00"),
        ("2026-03-10T16:00:00+00:00", "2026-03-10T16:30:00+00:00"),
    ],
)
def test_cal_com_times_with_offsets_are_kept(start: str, end: str) -> None:
    body = created()
    body["payload"].update(startTime=start, endTime=end)
    document = only(body)
    assert (document["startDateTime"], document["endDateTime"]) == (start, end)


def test_times_without_offset_are_read_in_the_sources_zone() -> None:
    body = created()
    body["createdAt"] = "2026-03-02T10:04:05.123"
    body["payload"].update(startTime="2026-03-10T11:00:00", endTime="2026-03-10 11:30:00.250")
    config = SourceConfig(name="bookings", kind="calcom", time_zone="America/New_York")
    document = only(body, config)
    # Daylight time in New York from March 8, 2026; standard time on March 2.
    assert document["startDateTime"] == "2026-03-10T11:00:00-04:00"
    assert document["endDateTime"] == "2026-03-10T11:30:00.250000-04:00"
    assert parse_rfc3339(document["lastModifiedDateTime"]) == datetime(
        2026, 3, 2, 15, 4, 5, 123000, tzinfo=UTC
    )


def test_the_sources_subject_overrides_the_title() -> None:
    config = SourceConfig(name="bookings", kind="calcom", subject="Telehealth visit")
    assert only(created(), config)["subject"] == "Telehealth visit"


def test_a_long_title_is_cut_to_255() -> None:
    body = created()
    body["payload"]["title"] = "t" * 1000
    assert only(body)["subject"] == "t" * 255


def test_without_the_organizers_zone_the_sources_zone() -> None:
    body = created()
    del body["payload"]["organizer"]["timeZone"]
    config = SourceConfig(name="bookings", kind="calcom", time_zone="Europe/Berlin")
    assert only(body, config)["timeZone"] == "Europe/Berlin"


def test_sms_follows_the_sources_setting() -> None:
    config = SourceConfig(name="bookings", kind="calcom", send_sms=True)
    assert only(created(), config)["settings"] == {
        "sendSmsNotifications": True,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }


def test_the_sms_reminder_follows_the_sources_setting() -> None:
    config = SourceConfig(name="bookings", kind="calcom", send_sms=True, send_sms_reminder=True)
    assert only(created(), config)["settings"]["sendSmsReminder"] is True


# --- clients -------------------------------------------------------------------------------------


def test_an_attendees_own_number_comes_first() -> None:
    body = created()
    body["payload"]["attendees"][0]["phoneNumber"] = "+1 (206) 555-0199"
    client = only(body)["appointmentClients"][0]
    assert client["smsCapablePhoneNumber"] == "+12065550199"


def test_the_booking_forms_number_is_the_first_attendees_only() -> None:
    body = created()
    body["payload"]["attendees"][1]["phoneNumber"] = None
    clients = only(body)["appointmentClients"]
    assert clients[0]["smsCapablePhoneNumber"] == "+12065550142"
    assert "smsCapablePhoneNumber" not in clients[1]


def test_a_booking_form_without_a_phone_answer_gives_no_number() -> None:
    body = created()
    del body["payload"]["responses"]["attendeePhoneNumber"]["value"]
    assert "smsCapablePhoneNumber" not in only(body)["appointmentClients"][0]
    assert "warnings" not in only(body)


def test_numbers_without_plus_are_read_in_the_sources_region() -> None:
    body = created()
    body["payload"]["attendees"][1]["phoneNumber"] = "07700 900123"
    config = SourceConfig(name="bookings", kind="calcom", phone_region="GB")
    assert only(body, config)["appointmentClients"][1]["smsCapablePhoneNumber"] == "+447700900123"


def test_an_unreadable_number_is_left_out_with_a_warning_without_digits() -> None:
    body = created()
    body["payload"]["attendees"][1]["phoneNumber"] = "555-0187"
    parsed = parse(body)
    (document,) = [c.document for c in parsed.candidates]
    valid_documents(parsed)
    assert "smsCapablePhoneNumber" not in document["appointmentClients"][1]
    assert document["appointmentClients"][0]["smsCapablePhoneNumber"] == "+12065550142"
    assert document["warnings"] == [PHONE_WARNING]
    assert not any(c.isdigit() for w in document["warnings"] for c in w)


def test_first_and_last_names_stand_in_for_a_missing_name() -> None:
    body = created()
    body["payload"]["attendees"][0]["name"] = ""
    parsed = parse(body)
    assert parsed.candidates[0].document["appointmentClients"][0]["displayName"] == "Avery Quinn"
    located = parsed.candidates[0].locate("/appointmentClients/0/displayName")
    assert located == "/payload/attendees/0/firstName"


def test_no_attendees_is_no_clients() -> None:
    body = created()
    body["payload"]["attendees"] = []
    assert "appointmentClients" not in only(body)


# --- cancellation and reschedule -----------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["BOOKING_CANCELLED", "BOOKING_REJECTED"])
def test_a_cancelled_or_rejected_booking_is_cancelled(trigger: str) -> None:
    body = cancelled()
    body["triggerEvent"] = trigger
    assert only(body) == {
        "externalAppointmentId": "bookings:bk-1001",
        "lastModifiedDateTime": "2026-03-06T08:00:00.000Z",
        "status": "cancelled",
        "source": "bookings",
        "sourceAppointmentId": "bk-1001",
    }


def test_a_cancellation_is_not_refused_for_the_bookings_other_fields() -> None:
    body = cancelled()
    body["payload"].update(startTime=5, organizer="someone", attendees={})
    assert only(body)["status"] == "cancelled"


def test_a_reschedule_cancels_the_old_booking_and_schedules_the_new() -> None:
    old, new = documents(rescheduled())
    assert old == {
        "externalAppointmentId": "bookings:bk-1001",
        "lastModifiedDateTime": "2026-03-05T11:00:00.000Z",
        "status": "cancelled",
        "source": "bookings",
        "sourceAppointmentId": "bk-1001",
    }
    assert new["externalAppointmentId"] == "bookings:bk-1002"
    assert new["status"] == "scheduled"
    assert new["lastModifiedDateTime"] == "2026-03-05T11:00:00.000Z"
    assert (new["startDateTime"], new["endDateTime"]) == (
        "2026-03-12T14:00:00Z",
        "2026-03-12T14:30:00Z",
    )
    assert len(new["appointmentClients"]) == 2


@pytest.mark.parametrize("previous", [..., None, "", 1001])
def test_a_reschedule_without_the_old_uid_is_invalid(previous: object) -> None:
    body = rescheduled()
    if previous is ...:
        del body["payload"]["rescheduleUid"]
    else:
        body["payload"]["rescheduleUid"] = previous
    assert error_paths(invalid(body)) == ["/payload/rescheduleUid"]


def test_the_old_booking_is_located_at_reschedule_uid() -> None:
    old, new = parse(rescheduled()).candidates
    assert old.locate("/externalAppointmentId") == "/payload/rescheduleUid"
    assert new.locate("/externalAppointmentId") == "/payload/uid"


def test_an_invalid_new_booking_is_reported_for_the_pipeline_to_refuse_both() -> None:
    body = rescheduled()
    body["payload"]["endTime"] = body["payload"]["startTime"]
    old, new = parse(body).candidates
    assert not isinstance(parse_document(old.document), list)
    assert located_errors(new) == [("/payload/endTime", "must be after startDateTime")]


# --- error pointers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "pointer"),
    [
        (("startTime",), 1, "/payload/startTime"),
        (("endTime",), [], "/payload/endTime"),
        (("title",), {}, "/payload/title"),
        (("organizer",), "dr.rivera@example.org", "/payload/organizer"),
        (("organizer", "email"), 7, "/payload/organizer/email"),
        (("organizer", "timeZone"), -300, "/payload/organizer/timeZone"),
        (("attendees",), {"name": "x"}, "/payload/attendees"),
        (("attendees", 1), "Sam Lee", "/payload/attendees/1"),
        (("attendees", 1, "name"), 1, "/payload/attendees/1/name"),
        (("attendees", 1, "email"), True, "/payload/attendees/1/email"),
        (("attendees", 1, "phoneNumber"), 3125550187, "/payload/attendees/1/phoneNumber"),
        (("responses",), [], "/payload/responses"),
        (("responses", "attendeePhoneNumber"), "x", "/payload/responses/attendeePhoneNumber"),
        (
            ("responses", "attendeePhoneNumber", "value"),
            {"number": "1"},
            "/payload/responses/attendeePhoneNumber/value",
        ),
    ],
)
def test_wrong_types_are_invalid_at_their_pointer(
    path: tuple[str | int, ...], value: object, pointer: str
) -> None:
    body = created()
    owner: Any = body["payload"]
    for key in path[:-1]:
        owner = owner[key]
    owner[path[-1]] = value
    assert error_paths(invalid(body)) == [pointer]


def test_a_null_attendee_is_invalid() -> None:
    body = created()
    body["payload"]["attendees"][0] = None
    assert error_paths(invalid(body)) == ["/payload/attendees/0"]


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"startTime": "soon"}, "/payload/startTime"),
        ({"endTime": "2026-03-10T15:00:00Z"}, "/payload/endTime"),
        ({"endTime": None}, "/payload/endTime"),
        ({"organizer": None}, "/payload/organizer/email"),
        ({"attendees": [{"name": "A", "email": "nope"}]}, "/payload/attendees/0/email"),
        ({"attendees": [{"email": "a@example.org"}]}, "/payload/attendees/0/firstName"),
        ({"attendees": [{"name": "A"}] * 21}, "/payload/attendees"),
    ],
)
def test_invalid_values_are_located_in_the_body(change: dict[str, Any], pointer: str) -> None:
    body = created()
    body["payload"].update(change)
    assert [p for p, _ in located_errors(parse(body).candidates[0])] == [pointer]


def test_locations_name_attendee_fields_by_index() -> None:
    candidate = parse(created()).candidates[0]
    assert candidate.locate("/appointmentClients/1/emailAddress") == "/payload/attendees/1/email"
    assert candidate.locate("/appointmentClients/1/displayName") == "/payload/attendees/1/name"
    assert (
        candidate.locate("/appointmentClients/0/smsCapablePhoneNumber")
        == "/payload/responses/attendeePhoneNumber/value"
    )
    assert candidate.locate("/status") == "/triggerEvent"
    assert candidate.locate("/subject") == "/payload/title"
    assert candidate.locate("/timeZone") == "/payload/organizer/timeZone"
    assert candidate.locate("/externalAppointmentUrl") == "/payload"


# --- respond -------------------------------------------------------------------------------------


def test_accepted_is_answered_202_with_both_documents_of_a_reschedule() -> None:
    accepted = (
        Accepted("bookings:bk-1001", "2026-03-05T11:00:00.000Z"),
        Accepted("bookings:bk-1002", "2026-03-05T11:00:00.000Z"),
    )
    reply = KIND.respond(Outcome("accepted", accepted=accepted), JSON_HEADERS, now=NOW)
    assert reply.status == 202
    assert [a["externalAppointmentId"] for a in json.loads(reply.body)["accepted"]] == [
        "bookings:bk-1001",
        "bookings:bk-1002",
    ]


def test_refused_is_a_problem_with_the_delivery_pointers() -> None:
    errors = (FieldError("/payload/endTime", "must be after startDateTime"),)
    reply = KIND.respond(Outcome("refused", detail="x", errors=errors), JSON_HEADERS, now=NOW)
    assert reply.status == 400
    assert json.loads(reply.body)["errors"] == [
        {"path": "/payload/endTime", "message": "must be after startDateTime"}
    ]


def test_unavailable_is_a_503() -> None:
    assert KIND.respond(Outcome("unavailable"), JSON_HEADERS, now=NOW).status == 503


def test_the_kind_is_named_calcom() -> None:
    assert KIND.name == "calcom"


# --- fuzz ----------------------------------------------------------------------------------------

_FIXTURES = [created(), rescheduled(), cancelled()]


@FUZZ
@given(body=broken_bodies(_FIXTURES))
def test_broken_bodies_are_refused_cleanly(body: bytes) -> None:
    check_refused_cleanly(KIND, body, CONFIG)
