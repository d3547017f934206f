"""Every field rule of the appointment document (SPEC.md "Appointment document"), pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import available_timezones

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.documents import (
    DEFAULT_SUBJECT,
    AppointmentDocument,
    FieldError,
    json_pointer,
    parse_document,
    parse_rfc3339,
    version_key,
)
from tests.unit.factories import (
    FAST,
    ORGANIZER_GUID,
    ORGANIZER_UPN,
    aware_datetimes,
    cancelled,
    doc,
    errors_of,
    paths_of,
    valid,
    valid_documents,
)

ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))
REQUIRED_WHEN_SCHEDULED = "is required when the appointment is scheduled"
MUST_BE_STRING = "must be a string"


# --- externalAppointmentId -----------------------------------------------------------------------


def test_external_id_of_200_characters_is_accepted() -> None:
    document = valid(doc(externalAppointmentId="x" * 200))
    assert document.external_appointment_id == "x" * 200


def test_external_id_of_201_characters_is_rejected() -> None:
    assert paths_of(doc(externalAppointmentId="x" * 201)) == ["/externalAppointmentId"]


def test_external_id_of_one_character_is_accepted_and_empty_is_rejected() -> None:
    assert valid(doc(externalAppointmentId="x")).external_appointment_id == "x"
    assert paths_of(doc(externalAppointmentId="")) == ["/externalAppointmentId"]


def test_external_id_is_required() -> None:
    assert errors_of(doc(externalAppointmentId=...)) == [("/externalAppointmentId", "is required")]


@pytest.mark.parametrize("character", ["/", "\\", "#", "?"])
def test_external_id_rejects_route_and_table_key_characters(character: str) -> None:
    assert errors_of(doc(externalAppointmentId=f"a{character}b")) == [
        ("/externalAppointmentId", "must not contain '/', '\\', '#' or '?'")
    ]


@pytest.mark.parametrize("character", ["\x00", "\t", "\n", "\x1f", "\x7f", "\x85", "\x9f"])
def test_external_id_rejects_control_characters(character: str) -> None:
    assert errors_of(doc(externalAppointmentId=f"a{character}b")) == [
        ("/externalAppointmentId", "must not contain control characters")
    ]


@pytest.mark.parametrize("value", ["a b", "Ünïcödé-預約", "a\xa0b", "a.b-c_d~e:f@g", "%2F"])
def test_external_id_accepts_other_printable_characters(value: str) -> None:
    assert valid(doc(externalAppointmentId=value)).external_appointment_id == value


@pytest.mark.parametrize("value", [".", ".."])
def test_external_id_that_is_a_dot_segment_is_rejected(value: str) -> None:
    # GET /api/appointments/.. is normalised away by clients and proxies: never readable.
    assert errors_of(doc(externalAppointmentId=value)) == [
        (
            "/externalAppointmentId",
            "must not be '.' or '..': a URL cannot carry them as a path segment",
        )
    ]


@pytest.mark.parametrize("value", ["...", ".a", "a.", "..a", "a..b"])
def test_external_id_with_dots_that_is_no_dot_segment_is_accepted(value: str) -> None:
    assert valid(doc(externalAppointmentId=value)).external_appointment_id == value


# --- lastModifiedDateTime / RFC 3339 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20t10:00:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00+00:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00-00:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        (
            "2026-11-20T15:30:00+05:30",
            datetime(2026, 11, 20, 15, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (
            "2026-11-20T02:00:00-08:00",
            datetime(2026, 11, 20, 2, tzinfo=timezone(timedelta(hours=-8))),
        ),
        ("2026-11-20T10:00:00.5Z", datetime(2026, 11, 20, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-20T10:00:00.123456Z", datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-20T10:00:00.1234567Z", datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-20T10:00:00.123456789Z", datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-02-29T10:00:00Z", datetime(2024, 2, 29, 10, tzinfo=UTC)),
    ],
)
def test_rfc3339_forms_are_parsed_to_the_instant(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()
    document = valid(doc(lastModifiedDateTime=text))
    assert document.version == expected
    assert document.last_modified_date_time == text  # stored as sent


def test_nine_fraction_digits_keep_microseconds_and_drop_the_rest() -> None:
    assert parse_rfc3339("2026-11-20T10:00:00.999999999Z").microsecond == 999999


SHAPE_MESSAGE = "must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T09:00:00Z"


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T10:00:00",  # naive
        "2026-11-20T10:00:00.5",  # naive with fraction
        "2026-11-20",  # date only
        "2026-11-20 10:00:00Z",  # space separator
        "20261120T100000Z",  # basic format
        "2026-11-20T10:00Z",  # no seconds
        "2026-11-20T10:00:00.Z",  # empty fraction
        "2026-11-20T10:00:00.1234567890Z",  # 10 fraction digits
        "2026-11-20T10:00:00+0530",  # offset without colon
        "2026-11-20T10:00:00+05",  # offset without minutes
        "2026-11-20T10:00:00 Z",
        " 2026-11-20T10:00:00Z",
        "",
    ],
)
def test_non_rfc3339_shapes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)
    assert errors_of(doc(lastModifiedDateTime=text)) == [("/lastModifiedDateTime", SHAPE_MESSAGE)]


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T10:00:00Z",  # Feb 30
        "2025-02-29T10:00:00Z",  # not a leap year
        "2026-13-01T10:00:00Z",
        "2026-00-10T10:00:00Z",
        "2026-11-31T10:00:00Z",
        "2026-11-20T24:00:00Z",
        "2026-11-20T10:60:00Z",
        "2026-11-20T10:00:60Z",
        "2026-11-20T10:00:00+24:00",
    ],
)
def test_impossible_dates_are_rejected_as_invalid_date_times(text: str) -> None:
    with pytest.raises(ValueError, match="is not a valid date-time"):
        parse_rfc3339(text)
    [(path, message)] = errors_of(doc(lastModifiedDateTime=text))
    assert path == "/lastModifiedDateTime"
    assert message.startswith("is not a valid date-time")


@pytest.mark.parametrize("value", [1763632800, 1763632800.5, True, None, [], {}])
def test_last_modified_must_be_a_string(value: object) -> None:
    [(path, message)] = errors_of(doc(lastModifiedDateTime=value))
    assert path == "/lastModifiedDateTime"
    assert message == MUST_BE_STRING


def test_last_modified_is_required_even_when_cancelled() -> None:
    assert errors_of(cancelled(lastModifiedDateTime=...)) == [
        ("/lastModifiedDateTime", "is required")
    ]


# --- status --------------------------------------------------------------------------------------


def test_status_defaults_to_scheduled() -> None:
    document = valid(doc())
    assert document.status == "scheduled"
    assert document.is_cancelled is False


@pytest.mark.parametrize("value", ["Scheduled", "CANCELLED", "canceled", "tentative", "", 1, None])
def test_status_is_scheduled_or_cancelled_only(value: object) -> None:
    assert errors_of(doc(status=value)) == [
        ("/status", "must be one of 'scheduled' or 'cancelled'")
    ]


# --- organizer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "organizer",
    [
        ORGANIZER_GUID,
        ORGANIZER_GUID.upper(),
        "00000000-0000-0000-0000-000000000000",
        ORGANIZER_UPN,
        "first.last@contoso.onmicrosoft.com",
        "x@y",
    ],
)
def test_organizer_is_a_guid_or_a_upn(organizer: str) -> None:
    assert valid(doc(organizer=organizer)).organizer == organizer


@pytest.mark.parametrize(
    "organizer",
    [
        "11111111-1111-4111-8111-11111111111",  # one digit short
        "11111111111141118111111111111111",  # no dashes
        "{11111111-1111-4111-8111-111111111111}",
        "gggggggg-1111-4111-8111-111111111111",
        "dr.grey",
        "@contoso.com",
        "dr.grey@",
        "a@b@c",
        "dr grey@contoso.com",
        "x" * 65 + "@contoso.com",
        "",
    ],
)
def test_organizer_that_is_neither_guid_nor_upn_is_rejected(organizer: str) -> None:
    assert errors_of(doc(organizer=organizer)) == [
        ("/organizer", "must be an Entra object id (GUID) or a user principal name")
    ]


@pytest.mark.parametrize("organizer", [..., None])
def test_organizer_is_required_when_scheduled(organizer: object) -> None:
    assert errors_of(doc(organizer=organizer)) == [("/organizer", REQUIRED_WHEN_SCHEDULED)]


def test_organizer_must_be_a_string() -> None:
    assert errors_of(doc(organizer=42)) == [("/organizer", MUST_BE_STRING)]


def test_invalid_organizer_is_rejected_even_on_a_cancellation() -> None:
    assert paths_of(cancelled(organizer="nobody")) == ["/organizer"]


# --- startDateTime / endDateTime ------------------------------------------------------------------


def test_exactly_24_hours_is_accepted() -> None:
    document = valid(doc(startDateTime="2026-12-01T09:00:00Z", endDateTime="2026-12-02T09:00:00Z"))
    assert document.end is not None
    assert document.start is not None
    assert document.end - document.start == timedelta(hours=24)


def test_24_hours_and_one_second_is_rejected_at_the_end() -> None:
    assert errors_of(
        doc(startDateTime="2026-12-01T09:00:00Z", endDateTime="2026-12-02T09:00:01Z")
    ) == [("/endDateTime", "must be at most 24 hours after startDateTime")]


def test_24_hours_and_one_microsecond_is_rejected() -> None:
    assert paths_of(
        doc(startDateTime="2026-12-01T09:00:00Z", endDateTime="2026-12-02T09:00:00.000001Z")
    ) == ["/endDateTime"]


def test_duration_is_measured_between_instants_across_offsets() -> None:
    # 09:00+05:30 is 03:30Z; exactly 24 h later is 03:30Z the next day.
    valid(doc(startDateTime="2026-12-01T09:00:00+05:30", endDateTime="2026-12-02T03:30:00Z"))
    assert paths_of(
        doc(startDateTime="2026-12-01T09:00:00+05:30", endDateTime="2026-12-02T03:30:01Z")
    ) == ["/endDateTime"]


def test_end_with_earlier_wall_clock_but_later_instant_is_accepted() -> None:
    # 10:00+02:00 is 08:00Z, so an end at 09:00Z is an hour later.
    document = valid(
        doc(startDateTime="2026-12-01T10:00:00+02:00", endDateTime="2026-12-01T09:00:00Z")
    )
    assert document.end is not None
    assert document.start is not None
    assert document.end - document.start == timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-12-01T09:00:00Z", "2026-12-01T09:00:00Z"),  # end == start
        ("2026-12-01T09:00:00Z", "2026-12-01T10:00:00+01:00"),  # same instant, other offset
        ("2026-12-01T09:00:00Z", "2026-12-01T08:59:59Z"),
        ("2026-12-01T09:00:00.000001Z", "2026-12-01T09:00:00Z"),
    ],
)
def test_end_not_after_start_is_rejected_at_the_end(start: str, end: str) -> None:
    assert errors_of(doc(startDateTime=start, endDateTime=end)) == [
        ("/endDateTime", "must be after startDateTime")
    ]


def test_one_microsecond_appointment_is_accepted() -> None:
    valid(doc(startDateTime="2026-12-01T09:00:00Z", endDateTime="2026-12-01T09:00:00.000001Z"))


@pytest.mark.parametrize("field", ["startDateTime", "endDateTime"])
@pytest.mark.parametrize("value", [..., None])
def test_times_are_required_when_scheduled(field: str, value: object) -> None:
    assert errors_of(doc(**{field: value})) == [(f"/{field}", REQUIRED_WHEN_SCHEDULED)]


@pytest.mark.parametrize("field", ["startDateTime", "endDateTime"])
def test_naive_times_are_rejected(field: str) -> None:
    assert errors_of(doc(**{field: "2026-12-01T09:00:00"})) == [(f"/{field}", SHAPE_MESSAGE)]


@pytest.mark.parametrize("field", ["startDateTime", "endDateTime"])
def test_times_must_be_strings(field: str) -> None:
    assert errors_of(doc(**{field: 1764579600})) == [(f"/{field}", MUST_BE_STRING)]


def test_invalid_start_reports_only_the_start() -> None:
    assert paths_of(doc(startDateTime="2026-02-30T09:00:00Z")) == ["/startDateTime"]


def test_cancelled_document_needs_no_organizer_and_no_times() -> None:
    document = valid(cancelled())
    assert document.is_cancelled
    assert document.organizer is None
    assert document.start is None
    assert document.end is None


def test_cancelled_document_may_still_carry_times() -> None:
    document = valid(doc(status="cancelled"))
    assert document.is_cancelled
    assert document.start == datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_missing_status_organizer_and_times_each_get_their_own_error() -> None:
    assert paths_of(
        {"externalAppointmentId": "a", "lastModifiedDateTime": "2026-11-20T10:00:00Z"}
    ) == ["/organizer", "/startDateTime", "/endDateTime"]


# --- subject -------------------------------------------------------------------------------------


def test_subject_defaults() -> None:
    document = valid(doc())
    assert document.subject is None
    assert document.effective_subject == DEFAULT_SUBJECT == "Virtual appointment"
    assert "subject" not in document.to_json()


def test_subject_of_255_characters_is_accepted() -> None:
    document = valid(doc(subject="s" * 255))
    assert document.effective_subject == "s" * 255


def test_subject_of_256_characters_is_rejected() -> None:
    assert paths_of(doc(subject="s" * 256)) == ["/subject"]


def test_subject_counts_characters_not_bytes() -> None:
    assert valid(doc(subject="é" * 255)).subject == "é" * 255


@pytest.mark.parametrize("value", [42, True, ["a"]])
def test_subject_must_be_a_string(value: object) -> None:
    assert errors_of(doc(subject=value)) == [("/subject", MUST_BE_STRING)]


def test_subject_rejects_control_characters() -> None:
    assert errors_of(doc(subject="a\x00b")) == [("/subject", "must not contain control characters")]


# --- timeZone ------------------------------------------------------------------------------------


def test_time_zone_defaults_to_utc() -> None:
    document = valid(doc())
    assert document.time_zone is None
    assert document.effective_time_zone == "UTC"


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Asia/Kolkata", "UTC"])
def test_iana_time_zones_are_accepted(zone: str) -> None:
    assert valid(doc(timeZone=zone)).effective_time_zone == zone


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Eastern Standard Time", "", "../etc/passwd", "/etc/localtime"]
)
def test_unknown_time_zones_are_rejected(zone: str) -> None:
    assert errors_of(doc(timeZone=zone)) == [
        ("/timeZone", "must be an IANA time zone name, e.g. America/New_York")
    ]


def test_time_zone_must_be_a_string() -> None:
    assert errors_of(doc(timeZone=0)) == [("/timeZone", MUST_BE_STRING)]


@pytest.mark.parametrize("zone", ["America", "Etc", "Europe"])
def test_time_zone_naming_a_tzdata_directory_is_a_field_error(zone: str) -> None:
    assert errors_of(doc(timeZone=zone)) == [
        ("/timeZone", "must be an IANA time zone name, e.g. America/New_York")
    ]


@pytest.mark.parametrize(
    "zone",
    # Files ZoneInfo loads from a system tz folder that name no zone (or not by an IANA name).
    ["localtime", "Factory", "posixrules", "posix/America/New_York", "right/UTC"],
)
def test_time_zone_files_that_are_not_iana_names_are_rejected(zone: str) -> None:
    assert errors_of(doc(timeZone=zone)) == [
        ("/timeZone", "must be an IANA time zone name, e.g. America/New_York")
    ]


def test_every_listed_iana_zone_is_accepted() -> None:
    zones = sorted(available_timezones() - {"localtime", "Factory", "posixrules"})
    assert len(zones) > 400  # the tzdata package (a dependency) lists them all
    refused = [zone for zone in zones if isinstance(parse_document(doc(timeZone=zone)), list)]
    assert refused == []


# --- externalAppointmentUrl ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://ehr.example/appointments/1", "https://ehr.example", "https://10.0.0.1:8443/x?y=1"],
)
def test_https_urls_are_accepted(url: str) -> None:
    assert valid(doc(externalAppointmentUrl=url)).external_appointment_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://ehr.example/appointments/1",
        "ftp://ehr.example/",
        "javascript:alert(1)",
        "https://",
        "https:///path-only",
        "/relative/path",
        "ehr.example/appointments/1",
        "",
    ],
)
def test_non_https_urls_are_rejected(url: str) -> None:
    assert errors_of(doc(externalAppointmentUrl=url)) == [
        ("/externalAppointmentUrl", "must be an https URL")
    ]


def test_url_with_control_characters_is_rejected() -> None:
    assert errors_of(doc(externalAppointmentUrl="https://ehr.example/\n")) == [
        ("/externalAppointmentUrl", "must not contain control characters")
    ]


# --- appointmentClients --------------------------------------------------------------------------


def _client(index: int, **overrides: Any) -> dict[str, Any]:
    client: dict[str, Any] = {"displayName": f"Client {index}"}
    client.update(overrides)
    return client


def test_twenty_clients_are_accepted() -> None:
    document = valid(doc(appointmentClients=[_client(i) for i in range(20)]))
    assert [c.display_name for c in document.appointment_clients] == [
        f"Client {i}" for i in range(20)
    ]


def test_twenty_one_clients_are_rejected() -> None:
    assert paths_of(doc(appointmentClients=[_client(i) for i in range(21)])) == [
        "/appointmentClients"
    ]


def test_clients_default_to_none() -> None:
    assert valid(doc()).appointment_clients == []


@pytest.mark.parametrize("phone", ["+12065550100", "+442071838750", "+1234567", "+123456789012345"])
def test_e164_numbers_are_accepted(phone: str) -> None:
    document = valid(doc(appointmentClients=[_client(0, smsCapablePhoneNumber=phone)]))
    assert document.appointment_clients[0].sms_capable_phone_number == phone


@pytest.mark.parametrize(
    "phone",
    [
        "2065550100",  # no plus
        "+02065550100",  # leading zero country code
        "+1 206 555 0100",
        "+1-206-555-0100",
        "+123456",  # six digits
        "+1234567890123456",  # sixteen digits
        "+1206555010a",
        "",
    ],
)
def test_non_e164_numbers_point_at_the_client_field(phone: str) -> None:
    body = doc(appointmentClients=[_client(0), _client(1), _client(2, smsCapablePhoneNumber=phone)])
    assert paths_of(body) == ["/appointmentClients/2/smsCapablePhoneNumber"]


def test_phone_number_must_be_a_string() -> None:
    body = doc(appointmentClients=[_client(0, smsCapablePhoneNumber=12065550100)])
    assert errors_of(body) == [("/appointmentClients/0/smsCapablePhoneNumber", MUST_BE_STRING)]


def test_client_display_name_is_required() -> None:
    assert errors_of(doc(appointmentClients=[{"emailAddress": "a@b.example"}])) == [
        ("/appointmentClients/0/displayName", "is required")
    ]


def test_client_email_must_be_an_email_address() -> None:
    assert errors_of(doc(appointmentClients=[_client(0, emailAddress="not-an-email")])) == [
        ("/appointmentClients/0/emailAddress", "must be an e-mail address")
    ]


@pytest.mark.parametrize(
    "email",
    [
        "a\x1b[31m@x.co",  # a terminal escape: the regex alone took it
        "jordan\x00@example.com",
        "jordan@exa\x7fmple.com",
        "jordan@example.com\x85",
        "jo\x9fdan@example.com",
        "jo\tdan@example.com",
    ],
)
def test_client_email_rejects_control_characters(email: str) -> None:
    body = doc(appointmentClients=[_client(0), _client(1, emailAddress=email)])
    assert errors_of(body) == [
        ("/appointmentClients/1/emailAddress", "must not contain control characters")
    ]


def test_client_must_be_an_object_and_clients_an_array() -> None:
    assert paths_of(doc(appointmentClients=["Jordan"])) == ["/appointmentClients/0"]
    assert paths_of(doc(appointmentClients={"displayName": "x"})) == ["/appointmentClients"]


def test_unknown_client_fields_are_ignored() -> None:
    document = valid(doc(appointmentClients=[_client(0, shoeSize=44)]))
    assert document.appointment_clients[0].model_dump(by_alias=True) == {
        "displayName": "Client 0",
        "emailAddress": None,
        "smsCapablePhoneNumber": None,
    }


# --- settings ------------------------------------------------------------------------------------


def test_settings_default_to_browser_join_and_no_sms() -> None:
    document = valid(doc())
    assert document.settings.allow_client_to_join_using_browser is True
    assert document.settings.send_sms_notifications is False
    partial = valid(doc(settings={"sendSmsNotifications": True}))
    assert partial.settings.allow_client_to_join_using_browser is True
    assert partial.settings.send_sms_notifications is True


@pytest.mark.parametrize("value", ["true", "false", 1, 0, None])
@pytest.mark.parametrize("field", ["allowClientToJoinUsingBrowser", "sendSmsNotifications"])
def test_settings_must_be_json_booleans(field: str, value: object) -> None:
    assert errors_of(doc(settings={field: value})) == [(f"/settings/{field}", "must be a boolean")]


def test_settings_must_be_an_object() -> None:
    assert paths_of(doc(settings=None)) == ["/settings"]
    assert paths_of(doc(settings=[True])) == ["/settings"]


# --- whole document ------------------------------------------------------------------------------


def test_unknown_fields_are_ignored_and_not_kept() -> None:
    document = valid(doc(patientRecord={"ssn": "123"}, extra=[1, 2]))
    assert "patientRecord" not in document.to_json()
    assert "extra" not in document.to_json()


@pytest.mark.parametrize("value", [None, [], "document", 42, True])
def test_non_object_document_is_one_error_at_its_pointer(value: object) -> None:
    assert parse_document(value) == [
        FieldError("", "must be a JSON object (an appointment document)")
    ]
    assert parse_document(value, (3, "data")) == [
        FieldError("/3/data", "must be a JSON object (an appointment document)")
    ]


def test_every_error_is_reported_in_field_order_under_the_prefix() -> None:
    body = doc(
        externalAppointmentId="a/b",
        lastModifiedDateTime="yesterday",
        organizer="nobody",
        endDateTime="2026-12-01T08:00:00Z",
        subject="s" * 256,
        appointmentClients=[_client(0, smsCapablePhoneNumber="555")],
    )
    parsed = parse_document(body, (2, "data"))
    assert isinstance(parsed, list)
    assert [error.path for error in parsed] == [
        "/2/data/externalAppointmentId",
        "/2/data/lastModifiedDateTime",
        "/2/data/organizer",
        "/2/data/endDateTime",
        "/2/data/subject",
        "/2/data/appointmentClients/0/smsCapablePhoneNumber",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("externalAppointmentId", 123),
        ("organizer", 5),
        ("subject", 5.5),
        ("timeZone", False),
        ("externalAppointmentUrl", 1),
    ],
)
def test_numbers_and_bools_where_strings_are_expected(field: str, value: object) -> None:
    assert errors_of(doc(**{field: value})) == [(f"/{field}", MUST_BE_STRING)]


def test_to_json_keeps_the_given_fields_and_drops_unknown_ones() -> None:
    document = valid(doc(ignored=True))
    assert document.to_json() == doc()
    assert document.to_json() == {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ORGANIZER_GUID,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
    }


def test_to_json_of_a_cancellation_has_no_meeting_fields() -> None:
    assert valid(cancelled()).to_json() == {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-21T10:00:00Z",
        "status": "cancelled",
    }


def test_to_json_keeps_omitted_apart_from_given_defaults() -> None:
    given_defaults = valid(
        doc(
            status="scheduled",
            appointmentClients=[],
            settings={"sendSmsNotifications": False},
        )
    )
    assert given_defaults.to_json()["appointmentClients"] == []
    assert given_defaults.to_json()["settings"] == {"sendSmsNotifications": False}
    assert given_defaults.to_json()["status"] == "scheduled"
    omitted = valid(doc()).to_json()
    assert "appointmentClients" not in omitted
    assert "settings" not in omitted
    assert "status" not in omitted
    # Either way the parsed values are the same.
    assert valid(given_defaults.to_json()).settings == valid(omitted).settings


def test_to_json_of_clients_keeps_their_given_fields() -> None:
    document = valid(doc(appointmentClients=[{"displayName": "x", "shoeSize": 44}]))
    assert document.to_json()["appointmentClients"] == [{"displayName": "x"}]


@FAST
@given(valid_documents)
def test_valid_documents_round_trip_through_to_json(body: dict[str, Any]) -> None:
    document = valid(body)
    canonical = document.to_json()
    again = parse_document(canonical)
    assert isinstance(again, AppointmentDocument)
    assert again == document
    assert again.to_json() == canonical
    assert "somethingUnknown" not in canonical


# --- JSON Pointer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "pointer"),
    [
        ((), ""),
        (("",), "/"),
        (("a/b",), "/a~1b"),
        (("m~n",), "/m~0n"),
        (("~1",), "/~01"),
        (("/~",), "/~1~0"),
        ((2, "data", "endDateTime"), "/2/data/endDateTime"),
        (
            ("appointmentClients", 0, "smsCapablePhoneNumber"),
            "/appointmentClients/0/smsCapablePhoneNumber",
        ),
    ],
)
def test_json_pointer_escapes_per_rfc_6901(parts: tuple[int | str, ...], pointer: str) -> None:
    assert json_pointer(parts) == pointer


def _unescape(pointer: str) -> list[str]:
    assert pointer == "" or pointer.startswith("/")
    return (
        [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []
    )


@FAST
@given(st.lists(st.text(alphabet="ab~/01", max_size=6) | st.integers(0, 200), max_size=5))
def test_json_pointer_decodes_back_to_its_parts(parts: list[int | str]) -> None:
    assert _unescape(json_pointer(tuple(parts))) == [str(p) for p in parts]


# --- version_key ---------------------------------------------------------------------------------


def test_version_key_is_fixed_width_utc() -> None:
    assert version_key(parse_rfc3339("2026-12-01T09:00:00+05:30")) == "2026-12-01T03:30:00.000000Z"
    assert version_key(parse_rfc3339("2026-12-01T03:30:00Z")) == "2026-12-01T03:30:00.000000Z"
    assert version_key(parse_rfc3339("2026-12-01T03:30:00.123456789z")) == (
        "2026-12-01T03:30:00.123456Z"
    )


def test_version_key_orders_across_offsets_unlike_the_raw_text() -> None:
    earlier = "2026-12-01T10:00:00+05:30"  # 04:30Z
    later = "2026-12-01T05:00:00Z"
    assert earlier > later  # the text alone would order them wrongly
    assert version_key(parse_rfc3339(earlier)) < version_key(parse_rfc3339(later))


@FAST
@given(aware_datetimes, aware_datetimes)
def test_version_key_orders_like_the_instants(a: datetime, b: datetime) -> None:
    key_a, key_b = version_key(a), version_key(b)
    assert len(key_a) == len(key_b) == 27
    assert (key_a < key_b) == (a < b)
    assert (key_a == key_b) == (a == b)


@FAST
@given(aware_datetimes)
def test_version_key_equal_for_the_same_instant_in_any_offset(a: datetime) -> None:
    assert version_key(a) == version_key(a.astimezone(UTC))
    assert version_key(a) == version_key(a.astimezone(timezone(timedelta(hours=-9, minutes=-30))))


@pytest.mark.parametrize(
    "text", ["0999-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "9999-01-01T00:00:00Z"]
)
def test_years_outside_1900_to_9998_are_refused(text: str) -> None:
    # Outside this range a version key would lose its fixed width or overflow in UTC.
    assert paths_of(doc(lastModifiedDateTime=text)) == ["/lastModifiedDateTime"]


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_every_accepted_version_has_a_version_key(text: str) -> None:
    parsed = parse_document(doc(lastModifiedDateTime=text))
    if isinstance(parsed, AppointmentDocument):
        assert len(version_key(parsed.version)) == 27


# --- strict formats: no trailing newline, ASCII digits only, no control characters ---------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (doc(lastModifiedDateTime="2026-11-20T10:00:00Z\n"), "/lastModifiedDateTime"),
        (doc(startDateTime="2026-12-01T09:00:00Z\n"), "/startDateTime"),
        (doc(endDateTime="2026-12-01T09:30:00Z\n"), "/endDateTime"),
        (doc(organizer=ORGANIZER_GUID + "\n"), "/organizer"),
        (doc(organizer=ORGANIZER_UPN + "\n"), "/organizer"),
        (
            doc(appointmentClients=[{"displayName": "x", "emailAddress": "a@b.example\n"}]),
            "/appointmentClients/0/emailAddress",
        ),
        (
            doc(
                appointmentClients=[{"displayName": "x", "smsCapablePhoneNumber": "+12065550100\n"}]
            ),
            "/appointmentClients/0/smsCapablePhoneNumber",
        ),
    ],
)
def test_trailing_newline_is_rejected(body: dict[str, Any], path: str) -> None:
    assert paths_of(body) == [path]


def test_e164_takes_ascii_digits_only() -> None:
    phone = "+1" + "2065550100".translate(ARABIC_INDIC)
    assert phone[1:].isdigit()
    assert not phone[2:].isascii()
    body = doc(appointmentClients=[{"displayName": "x", "smsCapablePhoneNumber": phone}])
    assert paths_of(body) == ["/appointmentClients/0/smsCapablePhoneNumber"]


@pytest.mark.parametrize("organizer", ["dr\x00grey@contoso.com", "dr\x7fgrey@contoso.com"])
def test_organizer_rejects_control_characters(organizer: str) -> None:
    assert paths_of(doc(organizer=organizer)) == ["/organizer"]


def test_snake_case_field_names_are_unknown_fields() -> None:
    body = doc(externalAppointmentId=..., external_appointment_id="appt-1")
    assert errors_of(body) == [("/externalAppointmentId", "is required")]
