"""Kind `calendly` (SPEC.md "Sources", "Kind calendly"), pure: no storage, no network."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import parts, signatures
from shared.documents import FieldError, parse_document, parse_rfc3339
from shared.sources import calendly
from shared.sources.base import (
    Accepted,
    AuthenticationError,
    InvalidBody,
    Outcome,
    Parsed,
    Part,
    SourceConfig,
    UnsupportedMediaType,
)
from shared.sources.calendly import KIND
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
SECRET = "calendly-signing-key"
TOLERANCE = 300
CONFIG = SourceConfig(name="clinic", kind="calendly", secrets=(SECRET,))
EVENT_URI = "https://api.calendly.com/scheduled_events/EVT-7C2D-0001"
INVITEE_URI = f"{EVENT_URI}/invitees/INV-0001"


def created() -> dict[str, Any]:
    return fixture("calendly", "invitee-created")


def canceled() -> dict[str, Any]:
    return fixture("calendly", "invitee-canceled")


def parse(value: object, config: SourceConfig = CONFIG, content_type: str | None = None) -> Parsed:
    headers = JSON_HEADERS if content_type is None else {"content-type": content_type}
    body = value if isinstance(value, bytes) else encode(value)
    return KIND.parse(headers, body, config)


def only(parsed: Parsed) -> dict[str, Any]:
    valid_documents(parsed)
    assert len(parsed.candidates) == 1
    return parsed.candidates[0].document


def invalid(value: object, config: SourceConfig = CONFIG) -> InvalidBody:
    with pytest.raises(InvalidBody) as caught:
        parse(value, config)
    return caught.value


# --- authentication ------------------------------------------------------------------------------


def _authenticate(
    header: str | None,
    body: bytes = b"{}",
    *,
    secrets: tuple[str, ...] = (SECRET,),
    now: float = NOW,
) -> None:
    headers = {} if header is None else {"calendly-webhook-signature": header}
    KIND.authenticate(headers, body, secrets, now=now, tolerance_seconds=TOLERANCE)


def test_a_good_signature_passes() -> None:
    body = encode(created())
    expected = signatures.compute(SECRET, NOW, body)
    _authenticate(f"t={NOW},v1={expected}", body)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"invitee.created"}'
    digest = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    _authenticate(f"t={NOW},v1={digest}", body)


def test_a_wrong_secret_fails() -> None:
    with pytest.raises(AuthenticationError, match="does not match"):
        _authenticate(signatures.sign("another", NOW, b"{}"))


def test_a_tampered_body_fails() -> None:
    with pytest.raises(AuthenticationError, match="does not match"):
        _authenticate(signatures.sign(SECRET, NOW, b"{}"), b"{ }")


@pytest.mark.parametrize("skew", [-TOLERANCE - 1, TOLERANCE + 1])
def test_a_stale_or_future_timestamp_fails(skew: int) -> None:
    with pytest.raises(AuthenticationError, match="outside the tolerance"):
        _authenticate(signatures.sign(SECRET, NOW + skew, b"{}"))


@pytest.mark.parametrize("skew", [-TOLERANCE, TOLERANCE])
def test_the_tolerance_edge_passes(skew: int) -> None:
    _authenticate(signatures.sign(SECRET, NOW + skew, b"{}"))


@pytest.mark.parametrize("signer", ["old", "current", "next"])
def test_any_rotated_secret_passes(signer: str) -> None:
    _authenticate(signatures.sign(signer, NOW, b"{}"), secrets=("old", "current", "next"))


def test_no_secret_matches_nothing() -> None:
    with pytest.raises(AuthenticationError):
        _authenticate(signatures.sign(SECRET, NOW, b"{}"), secrets=())


def test_a_missing_header_names_calendlys_header() -> None:
    with pytest.raises(AuthenticationError, match=r"^missing Calendly-Webhook-Signature header$"):
        _authenticate(None)


def test_the_native_header_is_not_calendlys() -> None:
    headers = {"x-signature": signatures.sign(SECRET, NOW, b"{}")}
    with pytest.raises(AuthenticationError, match="missing Calendly-Webhook-Signature"):
        KIND.authenticate(headers, b"{}", (SECRET,), now=NOW, tolerance_seconds=TOLERANCE)


@pytest.mark.parametrize(
    "header",
    ["garbage", f"t={NOW}", "v1=" + "ab" * 32, f"t=soon,v1={'ab' * 32}", f"t={NOW},v1=xyz", ""],
)
def test_a_malformed_header_fails(header: str) -> None:
    with pytest.raises(AuthenticationError, match="Calendly-Webhook-Signature"):
        _authenticate(header)


def test_authentication_errors_challenge_for_a_signature() -> None:
    with pytest.raises(AuthenticationError) as caught:
        _authenticate(None)
    assert caught.value.challenge == "Signature"


# --- content type and JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/cloudevents+json", "application/xml"]
)
def test_other_content_types_are_unsupported(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with pytest.raises(UnsupportedMediaType):
        KIND.parse(headers, encode(created()), CONFIG)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json ;x=y"]
)
def test_json_with_parameters_is_fine(content_type: str) -> None:
    assert only(parse(created(), content_type=content_type))["status"] == "scheduled"


@pytest.mark.parametrize(
    "body", [b"{", b"", b"\xff\xfe", b'{"event": NaN}', b"[1] x", b"\xef\xbb\xbf{}"]
)
def test_unreadable_json_is_invalid_at_the_root(body: bytes) -> None:
    assert error_paths(invalid(body)) == [""]


@pytest.mark.parametrize("value", [[], "invitee.created", 1, None])
def test_a_body_that_is_not_an_object_is_invalid(value: object) -> None:
    assert error_paths(invalid(value)) == [""]


# --- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event", ["routing_form_submission.created", "invitee_no_show.created", "Invitee.Created", ""]
)
def test_other_events_are_acknowledged_and_change_nothing(event: str) -> None:
    body = {"event": event, "created_at": "2026-03-02T15:04:06Z", "payload": "anything"}
    assert parse(body) == Parsed(ignored=event)


def test_an_ignored_event_is_answered_202_with_its_name() -> None:
    reply = KIND.respond(Outcome("ignored", ignored="invitee_no_show.created"), {}, now=NOW)
    assert reply.status == 202
    assert json.loads(reply.body) == {"ignored": "invitee_no_show.created"}


@pytest.mark.parametrize("event", [None, 3, ["invitee.created"]])
def test_the_event_must_be_a_string(event: object) -> None:
    body = created()
    body["event"] = event
    assert error_paths(invalid(body)) == ["/event"]


@pytest.mark.parametrize("payload", [None, [], "x"])
def test_the_payload_must_be_an_object(payload: object) -> None:
    body = created()
    body["payload"] = payload
    assert error_paths(invalid(body)) == ["/payload"]


def test_the_older_shape_without_scheduled_event_names_it() -> None:
    error = invalid(fixture("calendly", "invitee-created-legacy"))
    assert error_paths(error) == ["/payload/scheduled_event"]
    assert "older" in error.errors[0].message


def test_a_null_scheduled_event_is_missing_too() -> None:
    body = created()
    body["payload"]["scheduled_event"] = None
    assert error_paths(invalid(body)) == ["/payload/scheduled_event"]


# --- id ------------------------------------------------------------------------------------------


def test_the_id_is_the_last_path_segment_of_the_event_uri() -> None:
    document = only(parse(created()))
    assert document["sourceAppointmentId"] == "EVT-7C2D-0001"
    assert document["externalAppointmentId"] == "clinic:EVT-7C2D-0001"
    assert document["source"] == "clinic"


def test_invitees_of_one_event_share_its_appointment() -> None:
    other = created()
    other["payload"]["uri"] = f"{EVENT_URI}/invitees/INV-0002"
    first, second = only(parse(created())), only(parse(other))
    assert first["externalAppointmentId"] == second["externalAppointmentId"]


@pytest.mark.parametrize(
    ("uri", "source_id", "external"),
    [
        (f"{EVENT_URI}/", "EVT-7C2D-0001", "clinic:EVT-7C2D-0001"),
        (f"{EVENT_URI}?x=1#top", "EVT-7C2D-0001", "clinic:EVT-7C2D-0001"),
        ("https://api.calendly.com/scheduled_events/a%b", "a%b", "clinic:a%25b"),
        ("EVT-PLAIN", "EVT-PLAIN", "clinic:EVT-PLAIN"),
    ],
)
def test_the_id_is_read_from_the_uri_path_and_encoded(
    uri: str, source_id: str, external: str
) -> None:
    body = created()
    body["payload"]["scheduled_event"]["uri"] = uri
    document = only(parse(body))
    assert (document["sourceAppointmentId"], document["externalAppointmentId"]) == (
        source_id,
        external,
    )


@pytest.mark.parametrize("uri", ["https://api.calendly.com", "https://api.calendly.com/", "", "/"])
def test_a_uri_without_an_id_is_invalid(uri: str) -> None:
    body = created()
    body["payload"]["scheduled_event"]["uri"] = uri
    assert error_paths(invalid(body)) == ["/payload/scheduled_event/uri"]


@pytest.mark.parametrize("field", ["uri"])
def test_the_event_uri_is_required(field: str) -> None:
    body = created()
    del body["payload"]["scheduled_event"][field]
    assert error_paths(invalid(body)) == ["/payload/scheduled_event/uri"]


@pytest.mark.parametrize("uri", [None, "", 7])
def test_the_invitee_uri_is_required(uri: object) -> None:
    body = created()
    body["payload"]["uri"] = uri
    assert error_paths(invalid(body)) == ["/payload/uri"]


# --- version -------------------------------------------------------------------------------------


def _version_of(body: dict[str, Any], config: SourceConfig = CONFIG) -> tuple[str, str, str]:
    parsed = parse(body, config)
    candidate = parsed.candidates[0]
    assert candidate.part is not None
    return (
        candidate.document["lastModifiedDateTime"],
        candidate.part.version,
        candidate.locate("/lastModifiedDateTime"),
    )


def test_the_version_is_the_invitees_updated_at() -> None:
    assert _version_of(created()) == (
        "2026-03-02T15:04:05.234567Z",
        "2026-03-02T15:04:05.234567Z",
        "/payload/updated_at",
    )


def test_without_updated_at_the_invitees_created_at() -> None:
    body = created()
    body["payload"]["updated_at"] = None
    assert _version_of(body)[::2] == ("2026-03-02T15:04:05.123456Z", "/payload/created_at")


def test_without_either_the_deliverys_created_at() -> None:
    body = created()
    del body["payload"]["updated_at"]
    del body["payload"]["created_at"]
    assert _version_of(body)[::2] == ("2026-03-02T15:04:06.000000Z", "/created_at")


def test_without_any_version_the_delivery_is_invalid() -> None:
    body = created()
    for owner in (body, body["payload"]):
        owner.pop("created_at")
    del body["payload"]["updated_at"]
    assert error_paths(invalid(body)) == ["/payload/updated_at"]


def test_an_unreadable_version_is_invalid_at_its_field() -> None:
    body = created()
    body["payload"]["updated_at"] = "yesterday"
    assert error_paths(invalid(body)) == ["/payload/updated_at"]


def test_a_version_without_offset_is_read_in_the_sources_zone() -> None:
    body = created()
    body["payload"]["updated_at"] = "2026-03-02T09:04:05.5"
    config = SourceConfig(name="clinic", kind="calendly", time_zone="America/Chicago")
    version = _version_of(body, config)[0]
    assert parse_rfc3339(version) == datetime(2026, 3, 2, 15, 4, 5, 500000, tzinfo=UTC)


# --- organizer, times, subject, time zone, settings ----------------------------------------------


def test_the_organizer_is_the_first_hosts_email() -> None:
    body = created()
    memberships = body["payload"]["scheduled_event"]["event_memberships"]
    memberships.append({"user_email": "second.host@example.org"})
    assert only(parse(body))["organizer"] == "dr.rivera@example.org"


def test_times_subject_and_zone_come_from_the_event_and_invitee() -> None:
    document = only(parse(created()))
    assert document["startDateTime"] == "2026-03-10T16:00:00.000000Z"
    assert document["endDateTime"] == "2026-03-10T16:30:00.000000Z"
    assert document["subject"] == "Follow-up consultation"
    assert document["timeZone"] == "America/Chicago"
    assert document["settings"] == {
        "sendSmsNotifications": False,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }
    assert "warnings" not in document


def test_times_without_offset_are_read_in_the_sources_zone() -> None:
    body = created()
    body["payload"]["scheduled_event"]["start_time"] = "2026-07-01T09:00:00"
    body["payload"]["scheduled_event"]["end_time"] = "2026-07-01T09:30:00"
    config = SourceConfig(name="clinic", kind="calendly", time_zone="Europe/Paris")
    document = only(parse(body, config))
    assert document["startDateTime"] == "2026-07-01T09:00:00+02:00"
    assert document["endDateTime"] == "2026-07-01T09:30:00+02:00"


def test_sms_follows_the_sources_setting() -> None:
    config = SourceConfig(name="clinic", kind="calendly", send_sms=True)
    assert only(parse(created(), config))["settings"] == {
        "sendSmsNotifications": True,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }


def test_the_sms_reminder_follows_the_sources_setting() -> None:
    config = SourceConfig(name="clinic", kind="calendly", send_sms=True, send_sms_reminder=True)
    assert only(parse(created(), config))["settings"]["sendSmsReminder"] is True


def test_the_sources_subject_overrides_the_event_name() -> None:
    config = SourceConfig(name="clinic", kind="calendly", subject="Telehealth visit")
    assert only(parse(created(), config))["subject"] == "Telehealth visit"


def test_a_long_event_name_is_cut_to_255_and_control_characters_folded() -> None:
    body = created()
    body["payload"]["scheduled_event"]["name"] = " Consult\n\tplan " + "x" * 400
    subject = only(parse(body))["subject"]
    assert subject.startswith("Consult plan x")
    assert len(subject) == 255


def test_a_blank_event_name_leaves_the_default_subject() -> None:
    body = created()
    body["payload"]["scheduled_event"]["name"] = "  "
    assert "subject" not in only(parse(body))


def test_without_the_invitees_zone_the_sources_zone() -> None:
    body = created()
    body["payload"]["timezone"] = None
    config = SourceConfig(name="clinic", kind="calendly", time_zone="Europe/London")
    assert only(parse(body, config))["timeZone"] == "Europe/London"


# --- clients -------------------------------------------------------------------------------------


def test_the_invitee_is_the_client_with_an_e164_number() -> None:
    parsed = parse(created())
    document = only(parsed)
    client = {
        "displayName": "Avery Quinn",
        "emailAddress": "avery.quinn@example.org",
        "smsCapablePhoneNumber": "+12065550142",
    }
    assert document["appointmentClients"] == [client]
    part = parsed.candidates[0].part
    assert part is not None
    assert part.client == client
    assert part.key == INVITEE_URI


def test_a_number_without_plus_is_read_in_the_sources_region() -> None:
    body = created()
    body["payload"]["text_reminder_number"] = "020 7946 0958"
    config = SourceConfig(name="clinic", kind="calendly", phone_region="GB")
    client = only(parse(body, config))["appointmentClients"][0]
    assert client["smsCapablePhoneNumber"] == "+442079460958"


@pytest.mark.parametrize("number", ["555-01", "call me", "+1 555", "0" * 80])
def test_an_unreadable_number_is_left_out_with_a_warning_without_digits(number: str) -> None:
    body = created()
    body["payload"]["text_reminder_number"] = number
    parsed = parse(body)
    document = only(parsed)
    assert "smsCapablePhoneNumber" not in document["appointmentClients"][0]
    assert document["warnings"] == [PHONE_WARNING]
    assert not any(c.isdigit() for c in PHONE_WARNING)
    assert parsed.candidates[0].locate("/warnings/0") == "/payload/text_reminder_number"


@pytest.mark.parametrize("number", [None, "", "  "])
def test_no_number_is_no_warning(number: str | None) -> None:
    body = created()
    body["payload"]["text_reminder_number"] = number
    document = only(parse(body))
    assert "smsCapablePhoneNumber" not in document["appointmentClients"][0]
    assert "warnings" not in document


def test_without_a_name_the_first_and_last_names() -> None:
    body = created()
    body["payload"].update(name=None, first_name="Avery", last_name="Quinn")
    parsed = parse(body)
    assert only(parsed)["appointmentClients"][0]["displayName"] == "Avery Quinn"
    assert parsed.candidates[0].locate("/appointmentClients/0/displayName") == "/payload/first_name"


def test_without_an_email_the_client_has_none() -> None:
    body = created()
    body["payload"]["email"] = None
    assert "emailAddress" not in only(parse(body))["appointmentClients"][0]


# --- cancellation --------------------------------------------------------------------------------


def test_a_canceled_invitee_is_a_part_without_client() -> None:
    parsed = parse(canceled())
    document = only(parsed)
    part = parsed.candidates[0].part
    assert part is not None
    assert part.client is None
    assert part.key == INVITEE_URI
    assert document["status"] == "cancelled"
    assert "appointmentClients" not in document
    assert document["lastModifiedDateTime"] == "2026-03-04T09:00:00.600000Z"


def test_a_canceled_part_still_describes_the_event() -> None:
    part = parse(canceled()).candidates[0].part
    assert part is not None
    assert part.base["organizer"] == "dr.rivera@example.org"
    assert part.base["startDateTime"] == "2026-03-10T16:00:00.000000Z"
    assert "status" not in part.base
    assert "appointmentClients" not in part.base
    assert "lastModifiedDateTime" not in part.base


def test_a_cancellation_without_a_host_is_still_valid() -> None:
    body = canceled()
    body["payload"]["scheduled_event"]["event_memberships"] = []
    assert only(parse(body))["status"] == "cancelled"


def test_the_document_is_the_combination_of_its_one_part() -> None:
    for body in (created(), canceled()):
        candidate = parse(body).candidates[0]
        assert candidate.part is not None
        assert candidate.document == parts.combine([candidate.part], candidate.part.version)
        assert candidate.delivery_id is None


def test_created_then_canceled_merge_to_a_cancelled_appointment() -> None:
    merged: dict[str, Part] = {}
    for body in (created(), canceled()):
        part = parse(body).candidates[0].part
        assert part is not None
        merged = parts.merge(merged, part)
    document = parts.combine(merged.values(), parts.next_version(merged.values(), None))
    assert document["status"] == "cancelled"
    assert parse_document(document)


# --- error pointers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "pointer"),
    [
        (("scheduled_event", "start_time"), 1_767_000_000, "/payload/scheduled_event/start_time"),
        (("scheduled_event", "end_time"), {}, "/payload/scheduled_event/end_time"),
        (("scheduled_event", "name"), ["x"], "/payload/scheduled_event/name"),
        (
            ("scheduled_event", "event_memberships"),
            {},
            "/payload/scheduled_event/event_memberships",
        ),
        (
            ("scheduled_event", "event_memberships", 0),
            "host",
            "/payload/scheduled_event/event_memberships/0",
        ),
        (
            ("scheduled_event", "event_memberships", 0, "user_email"),
            False,
            "/payload/scheduled_event/event_memberships/0/user_email",
        ),
        (("name",), 5, "/payload/name"),
        (("email",), ["a@example.org"], "/payload/email"),
        (("text_reminder_number",), 2065550142, "/payload/text_reminder_number"),
        (("timezone",), 0, "/payload/timezone"),
        (("updated_at",), 1, "/payload/updated_at"),
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
    error = invalid(body)
    assert error_paths(error) == [pointer]
    assert error.errors[0].message.startswith("must be")


def test_every_wrong_type_is_reported_at_once() -> None:
    body = created()
    body["payload"]["name"] = 1
    body["payload"]["scheduled_event"]["start_time"] = 2
    assert set(error_paths(invalid(body))) == {
        "/payload/name",
        "/payload/scheduled_event/start_time",
    }


@pytest.mark.parametrize(
    ("change", "document_path", "pointer"),
    [
        (("start_time", "2026-03-10"), "/startDateTime", "/payload/scheduled_event/start_time"),
        (("end_time", "2026-03-10T15:00:00Z"), "/endDateTime", "/payload/scheduled_event/end_time"),
        (("end_time", None), "/endDateTime", "/payload/scheduled_event/end_time"),
        (
            ("event_memberships", []),
            "/organizer",
            "/payload/scheduled_event/event_memberships/0/user_email",
        ),
    ],
)
def test_invalid_values_are_located_in_the_event(
    change: tuple[str, object], document_path: str, pointer: str
) -> None:
    body = created()
    body["payload"]["scheduled_event"][change[0]] = change[1]
    candidate = parse(body).candidates[0]
    errors = located_errors(candidate)
    assert [p for p, _ in errors] == [pointer]
    assert candidate.locate(document_path) == pointer


@pytest.mark.parametrize(
    ("field", "value", "pointer"),
    [
        ("name", None, "/payload/first_name"),
        ("email", "not an address", "/payload/email"),
        ("timezone", "Mars/Olympus", "/payload/timezone"),
    ],
)
def test_invalid_invitee_values_are_located_in_the_payload(
    field: str, value: object, pointer: str
) -> None:
    body = created()
    body["payload"][field] = value
    assert [p for p, _ in located_errors(parse(body).candidates[0])] == [pointer]


def test_unmapped_document_paths_fall_back_to_the_payload() -> None:
    candidate = parse(created()).candidates[0]
    assert candidate.locate("/externalAppointmentUrl") == "/payload"
    assert candidate.locate("/appointmentClients/0") == "/payload"
    assert candidate.locate("/status") == "/event"
    assert candidate.locate("/subject") == "/payload/scheduled_event/name"


# --- respond -------------------------------------------------------------------------------------


def test_accepted_is_answered_202_with_the_documents() -> None:
    outcome = Outcome("accepted", accepted=(Accepted("clinic:EVT-1", "2026-03-02T15:04:05Z"),))
    reply = KIND.respond(outcome, JSON_HEADERS, now=NOW)
    assert reply.status == 202
    assert json.loads(reply.body) == {
        "accepted": [
            {
                "externalAppointmentId": "clinic:EVT-1",
                "lastModifiedDateTime": "2026-03-02T15:04:05Z",
            }
        ]
    }


def test_refused_is_a_problem_with_the_delivery_pointers() -> None:
    errors = (FieldError("/payload/scheduled_event/end_time", "must be after startDateTime"),)
    outcome = Outcome("refused", detail="Invalid.", errors=errors)
    reply = KIND.respond(outcome, JSON_HEADERS, now=NOW)
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "application/problem+json"
    body = json.loads(reply.body)
    assert body["errors"] == [
        {"path": "/payload/scheduled_event/end_time", "message": "must be after startDateTime"}
    ]


def test_unavailable_is_a_503() -> None:
    assert KIND.respond(Outcome("unavailable"), JSON_HEADERS, now=NOW).status == 503


def test_the_kind_is_named_calendly() -> None:
    assert KIND.name == "calendly"
    assert calendly.KIND is KIND


# --- any order, any duplication ------------------------------------------------------------------

BASE_TIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_NUMBERS = ["+1 206 555 0100", "(312) 555-0187", "call me", None]


def _delivery(invitee: int, minute: int, booked: bool) -> dict[str, Any]:
    body = copy.deepcopy(created() if booked else canceled())
    payload = body["payload"]
    payload["uri"] = f"{EVENT_URI}/invitees/INV-{invitee}"
    payload["name"] = f"Client {invitee}"
    payload["email"] = f"client{invitee}@example.org"
    payload["text_reminder_number"] = _NUMBERS[invitee % len(_NUMBERS)]
    payload["updated_at"] = (BASE_TIME + timedelta(minutes=minute)).isoformat()
    # A later delivery may correct the event: the newest one's fields win.
    payload["scheduled_event"]["name"] = f"Consultation v{minute}"
    return body


def _fold(bodies: list[bytes]) -> tuple[dict[str, Any], str]:
    merged: dict[str, Part] = {}
    stored: str | None = None
    document: dict[str, Any] = {}
    for body in bodies:
        part = KIND.parse(JSON_HEADERS, body, CONFIG).candidates[0].part
        assert part is not None
        merged = parts.merge(merged, part)
        stored = parts.next_version(merged.values(), stored)
        document = parts.combine(merged.values(), stored)
    assert stored is not None
    return document, stored


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_any_order_and_duplication_of_deliveries_gives_the_same_appointment(
    data: st.DataObject,
) -> None:
    invitees = data.draw(st.integers(min_value=1, max_value=4))
    steps = [
        (invitee, minute, booked)
        for invitee in range(invitees)
        for minute, booked in data.draw(
            st.lists(
                st.tuples(st.integers(min_value=0, max_value=20), st.booleans()),
                min_size=1,
                max_size=4,
            )
        )
    ]
    bodies = {step: encode(_delivery(*step)) for step in steps}
    in_order = [bodies[s] for s in sorted(set(steps))]
    extra = data.draw(st.lists(st.sampled_from(steps), max_size=6))
    shuffled = data.draw(st.permutations(steps + extra))

    expected, _ = _fold(in_order)
    document, version = _fold([bodies[s] for s in shuffled])

    assert {k: v for k, v in document.items() if k != "lastModifiedDateTime"} == {
        k: v for k, v in expected.items() if k != "lastModifiedDateTime"
    }
    newest = max(BASE_TIME + timedelta(minutes=minute) for _, minute, _ in steps)
    assert parse_rfc3339(version) >= newest
    assert not isinstance(parse_document(document), list)

    # The clients are the invitees whose newest delivery is a booking (a tie: cancelled).
    newest_of: dict[int, tuple[int, bool]] = {}  # invitee: (minute, cancelled)
    for invitee, minute, booked in steps:
        newest_of[invitee] = max(newest_of.get(invitee, (-1, False)), (minute, not booked))
    booked_now = sorted(i for i, (_, cancelled) in newest_of.items() if not cancelled)
    names = [c["displayName"] for c in document.get("appointmentClients", [])]
    assert names == [f"Client {i}" for i in booked_now]
    assert document["status"] == ("scheduled" if booked_now else "cancelled")
    newest_minute = max(minute for _, minute, _ in steps)
    assert document["subject"] == f"Consultation v{newest_minute}"


# --- fuzz ----------------------------------------------------------------------------------------

_FIXTURES = [created(), canceled(), fixture("calendly", "invitee-created-legacy")]


@FUZZ
@given(body=broken_bodies(_FIXTURES))
def test_broken_bodies_are_refused_cleanly(body: bytes) -> None:
    check_refused_cleanly(KIND, body, CONFIG)
