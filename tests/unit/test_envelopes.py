"""Request bodies to documents (SPEC.md "Intake"): media types, CloudEvents, batches. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.documents import AppointmentDocument, FieldError
from shared.envelopes import (
    CLOUDEVENT,
    CLOUDEVENT_BATCH,
    JSON,
    MAX_BATCH,
    Entry,
    InvalidBody,
    UnsupportedMediaType,
    media_type,
    parse_body,
)
from tests.unit.factories import (
    FAST,
    doc,
    document_like,
    json_values,
    valid_documents,
)

CONTENT_TYPES = (JSON, CLOUDEVENT, CLOUDEVENT_BATCH)


def event(*data: Any, **overrides: Any) -> dict[str, Any]:
    """A valid CloudEvent carrying `data` (default: a valid document); `...` removes a key."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/ehr/test",
        "type": "appointment.changed",
        "data": data[0] if data else doc(),
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def encode(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def invalid(content_type: str, body: bytes) -> InvalidBody:
    with pytest.raises(InvalidBody) as caught:
        parse_body(content_type, body)
    return caught.value


def errors(content_type: str, body: bytes) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in invalid(content_type, body).errors]


def paths(content_type: str, body: bytes) -> list[str]:
    return [path for path, _ in errors(content_type, body)]


# --- media types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", JSON),
        ("Application/JSON", JSON),
        ("application/json; charset=utf-8", JSON),
        ("  application/json  ;charset=UTF-8; foo=bar", JSON),
        ("application/cloudevents+json; charset=utf-8", CLOUDEVENT),
        ("APPLICATION/CLOUDEVENTS-BATCH+JSON", CLOUDEVENT_BATCH),
        ("text/plain", "text/plain"),
        ("", ""),
        (None, ""),
    ],
)
def test_media_type_drops_parameters_and_case(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/Json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json; charset=utf-8; boundary=x",
    ],
)
def test_charset_and_case_are_accepted(content_type: str) -> None:
    [entry] = parse_body(content_type, encode(doc()))
    assert entry.document.external_appointment_id == "appt-1"


@pytest.mark.parametrize(
    ("content_type", "reported"),
    [
        ("text/plain", "text/plain"),
        ("application/xml", "application/xml"),
        ("application/cloudevents", "application/cloudevents"),
        ("application/json-patch+json", "application/json-patch+json"),
        ("multipart/form-data; boundary=x", "multipart/form-data"),
        ("", "(none)"),
        (None, "(none)"),
    ],
)
def test_other_media_types_are_unsupported(content_type: str | None, reported: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_body(content_type, encode(doc()))
    assert str(caught.value) == reported


def test_media_type_is_checked_before_the_body_is_read() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_body("text/plain", b"\xff\xfe not json")


# --- application/json ----------------------------------------------------------------------------


def test_plain_json_document_is_one_entry_at_the_root() -> None:
    [entry] = parse_body(JSON, encode(doc()))
    assert entry == Entry(entry.document, "", None)
    assert entry.document.to_json()["organizer"] == doc()["organizer"]


def test_plain_json_errors_point_at_the_fields() -> None:
    body = encode(doc(endDateTime="2026-12-01T08:00:00Z", subject=5))
    assert errors(JSON, body) == [
        ("/endDateTime", "must be after startDateTime"),
        ("/subject", "must be a string"),
    ]
    assert invalid(JSON, body).detail == "The request body has invalid fields."


@pytest.mark.parametrize("value", [[doc()], "doc", 1, None, True])
def test_plain_json_must_be_an_object(value: object) -> None:
    assert errors(JSON, encode(value)) == [("", "must be a JSON object (an appointment document)")]


def test_plain_json_takes_a_cloudevent_as_a_document_not_as_an_envelope() -> None:
    assert paths(JSON, encode(event())) == [
        "/externalAppointmentId",
        "/lastModifiedDateTime",
        "/organizer",
        "/startDateTime",
        "/endDateTime",
    ]


# --- malformed bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b"[1,]", b"\xef\xbb\xbf{}", b"{} {}", b"undefined"],
)
def test_malformed_json_is_invalid_body(content_type: str, body: bytes) -> None:
    failure = invalid(content_type, body)
    assert failure.detail == "The body is not valid JSON."
    assert [e.path for e in failure.errors] == [""]
    assert failure.errors[0].message


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        '{"subject": "é"}'.encode("latin-1"),
        json.dumps(doc()).encode("utf-16"),
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
    ],
)
def test_non_utf8_is_invalid_body(content_type: str, body: bytes) -> None:
    failure = invalid(content_type, body)
    assert failure.detail == "The body is not UTF-8."
    assert failure.errors == [FieldError("", "must be UTF-8")]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deep_nesting_is_invalid_body(content_type: str, depth: int) -> None:
    failure = invalid(content_type, b"[" * depth + b"]" * depth)
    assert failure.detail == "The body is nested too deeply."
    assert failure.errors == [FieldError("", "too deep")]


def test_deep_nesting_that_json_accepts_is_handled_in_unknown_fields() -> None:
    nested: object = "leaf"
    for _ in range(300):
        nested = {"n": [nested]}
    [entry] = parse_body(CLOUDEVENT, encode(event(doc(extra=nested), ext=nested)))
    assert "extra" not in entry.document.to_json()


def test_deep_nesting_in_a_field_is_a_field_error() -> None:
    nested: object = 1
    for _ in range(300):
        nested = [nested]
    assert errors(JSON, encode(doc(subject=nested))) == [("/subject", "must be a string")]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_invalid_json(content_type: str, constant: str) -> None:
    # Python's json reads them; RFC 8259 has no such numbers. Hidden in an unknown field they
    # would otherwise pass, since unknown fields are ignored.
    text = json.dumps(doc(extra=0)).replace('"extra": 0', f'"extra": [1, {constant}]')
    body = text.encode("utf-8")
    if content_type != JSON:
        wrapped = json.dumps(event(data="DATA")).replace('"DATA"', text)
        body = (f"[{wrapped}]" if content_type == CLOUDEVENT_BATCH else wrapped).encode("utf-8")
    failure = invalid(content_type, body)
    assert failure.detail == "The body is not valid JSON."
    assert failure.errors == [FieldError("", f"{constant} is not valid JSON: use a number or null")]


def test_integer_beyond_the_digit_limit_is_invalid_body() -> None:
    failure = invalid(JSON, b'{"n": ' + b"9" * 5000 + b"}")
    assert failure.detail == "The body is not valid JSON."


def test_escaped_lone_surrogate_is_a_field_error() -> None:
    body = b'{"externalAppointmentId": "\\ud800", "status": "cancelled", ' + (
        b'"lastModifiedDateTime": "2026-11-20T10:00:00Z"}'
    )
    assert paths(JSON, body) == ["/externalAppointmentId"]


# --- application/cloudevents+json ----------------------------------------------------------------


def test_cloudevent_yields_its_data_document() -> None:
    [entry] = parse_body(CLOUDEVENT, encode(event(id="evt-42")))
    assert entry.pointer == "/data"
    assert entry.event_id == "evt-42"
    assert entry.document.external_appointment_id == "appt-1"


@pytest.mark.parametrize(
    "datacontenttype",
    [..., None, "application/json", "application/json; charset=utf-8", "Application/JSON"],
)
def test_json_data_content_types_are_accepted(datacontenttype: object) -> None:
    [entry] = parse_body(CLOUDEVENT, encode(event(datacontenttype=datacontenttype)))
    assert entry.document.external_appointment_id == "appt-1"


def test_extension_attributes_are_ignored() -> None:
    body = encode(
        event(subject="x", time="2026-11-20T10:00:00Z", traceparent="00-ab", dataschema=1)
    )
    assert len(parse_body(CLOUDEVENT, body)) == 1


NOT_JSON_DATA = "must be application/json or absent"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"specversion": ...}, [("/specversion", "is required")]),
        ({"specversion": "0.3"}, [("/specversion", "must be one of '1.0'")]),
        ({"specversion": 1.0}, [("/specversion", "must be one of '1.0'")]),
        ({"specversion": "1"}, [("/specversion", "must be one of '1.0'")]),
        ({"id": ...}, [("/id", "is required")]),
        ({"id": 7}, [("/id", "must be a string")]),
        ({"source": ...}, [("/source", "is required")]),
        ({"source": None}, [("/source", "must be a string")]),
        ({"type": ...}, [("/type", "is required")]),
        ({"type": ["a"]}, [("/type", "must be a string")]),
        ({"datacontenttype": "text/plain"}, [("/datacontenttype", NOT_JSON_DATA)]),
        ({"datacontenttype": "application/xml"}, [("/datacontenttype", NOT_JSON_DATA)]),
        ({"datacontenttype": CLOUDEVENT}, [("/datacontenttype", NOT_JSON_DATA)]),
        ({"datacontenttype": 1}, [("/datacontenttype", "must be a string")]),
        ({"data": ...}, [("/data", "is required: the appointment document")]),
        ({"data": None}, [("/data", "is required: the appointment document")]),
        (
            {"data": ..., "data_base64": "eyJ9"},
            [
                ("/data_base64", "is not supported: send the document as JSON in data"),
                ("/data", "is required: the appointment document"),
            ],
        ),
        (
            {"data_base64": "eyJ9"},
            [("/data_base64", "is not supported: send the document as JSON in data")],
        ),
    ],
)
def test_cloudevent_attribute_rules(
    overrides: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert errors(CLOUDEVENT, encode(event(**overrides))) == expected
    assert invalid(CLOUDEVENT, encode(event(**overrides))).detail == (
        "The request body has invalid fields."
    )


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_cloudevent_attributes_must_not_be_empty(attribute: str) -> None:
    assert paths(CLOUDEVENT, encode(event(**{attribute: ""}))) == [f"/{attribute}"]


def test_data_base64_null_is_the_same_as_absent() -> None:
    assert len(parse_body(CLOUDEVENT, encode(event(data_base64=None)))) == 1


def test_data_that_is_not_an_object_points_at_data() -> None:
    assert errors(CLOUDEVENT, encode(event(json.dumps(doc())))) == [
        ("/data", "must be a JSON object (an appointment document)")
    ]


def test_invalid_envelope_does_not_report_its_document() -> None:
    assert paths(CLOUDEVENT, encode(event({"subject": 1}, id=...))) == ["/id"]


def test_document_errors_in_a_cloudevent_are_under_data() -> None:
    body = encode(event(doc(endDateTime="2026-12-02T09:00:01Z")))
    assert errors(CLOUDEVENT, body) == [
        ("/data/endDateTime", "must be at most 24 hours after startDateTime")
    ]


@pytest.mark.parametrize("value", [[event()], "event", 1, None])
def test_cloudevent_must_be_an_object(value: object) -> None:
    assert errors(CLOUDEVENT, encode(value)) == [("", "must be a CloudEvent")]


# --- application/cloudevents-batch+json ----------------------------------------------------------

BATCH_MESSAGE = f"must be an array of 1 to {MAX_BATCH} CloudEvents"


def _batch(count: int) -> list[dict[str, Any]]:
    return [event(doc(externalAppointmentId=f"appt-{i}"), id=f"evt-{i}") for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, MAX_BATCH])
def test_batch_of_1_to_100_yields_every_document_in_order(count: int) -> None:
    entries = parse_body(CLOUDEVENT_BATCH, encode(_batch(count)))
    assert [e.document.external_appointment_id for e in entries] == [
        f"appt-{i}" for i in range(count)
    ]
    assert [e.pointer for e in entries] == [f"/{i}/data" for i in range(count)]
    assert [e.event_id for e in entries] == [f"evt-{i}" for i in range(count)]


@pytest.mark.parametrize("value", [[], _batch(MAX_BATCH + 1), event(), "x", None, {}])
def test_batch_outside_1_to_100_or_not_an_array_is_refused(value: object) -> None:
    failure = invalid(CLOUDEVENT_BATCH, encode(value))
    assert failure.detail == "Invalid CloudEvents batch."
    assert failure.errors == [FieldError("", BATCH_MESSAGE)]


def test_batch_error_paths_carry_the_item_index() -> None:
    items = _batch(4)
    items[2]["data"]["endDateTime"] = "2026-12-01T08:00:00Z"
    assert errors(CLOUDEVENT_BATCH, encode(items)) == [
        ("/2/data/endDateTime", "must be after startDateTime")
    ]


def test_batch_is_all_or_nothing_and_errors_are_ordered_by_item() -> None:
    items: list[Any] = _batch(6)
    items[4]["data"]["appointmentClients"] = [{"displayName": "x", "smsCapablePhoneNumber": "1"}]
    items[1] = "not an event"
    del items[3]["id"]
    items[5]["data"] = None
    items[0]["data"]["subject"] = 1
    failure = invalid(CLOUDEVENT_BATCH, encode(items))
    assert [(e.path, e.message) for e in failure.errors] == [
        ("/0/data/subject", "must be a string"),
        ("/1", "must be a CloudEvent"),
        ("/3/id", "is required"),
        (
            "/4/data/appointmentClients/0/smsCapablePhoneNumber",
            "must be an E.164 phone number, e.g. +12065550100",
        ),
        ("/5/data", "is required: the appointment document"),
    ]
    assert failure.detail == "The request body has invalid fields."


def test_a_single_bad_item_rejects_a_full_batch() -> None:
    items = _batch(MAX_BATCH)
    items[-1]["specversion"] = "2.0"
    assert paths(CLOUDEVENT_BATCH, encode(items)) == [f"/{MAX_BATCH - 1}/specversion"]


# --- properties ----------------------------------------------------------------------------------

content_types = st.sampled_from(
    [
        JSON,
        CLOUDEVENT,
        CLOUDEVENT_BATCH,
        "application/json; charset=utf-8",
        "APPLICATION/CLOUDEVENTS-BATCH+JSON;charset=utf-8",
        "text/plain",
    ]
)
events = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3"]) | json_values,
        "id": st.text(max_size=5) | json_values,
        "source": st.just("/s") | json_values,
        "type": st.just("t") | json_values,
        "datacontenttype": st.sampled_from(["application/json", "text/xml"]) | json_values,
        "data_base64": st.none() | json_values,
        "data": valid_documents | document_like | json_values,
    },
)
payloads = (
    json_values
    | valid_documents
    | document_like
    | events
    | st.lists(events | json_values, max_size=4)
)


def _assert_contained(content_type: str, body: bytes) -> None:
    """parse_body only ever returns entries or raises its two documented exceptions."""
    failure: InvalidBody | UnsupportedMediaType | None = None
    entries: list[Entry] = []
    try:
        entries = parse_body(content_type, body)
    except (InvalidBody, UnsupportedMediaType) as caught:
        failure = caught
    if isinstance(failure, UnsupportedMediaType):
        assert media_type(content_type) not in CONTENT_TYPES
        return
    if isinstance(failure, InvalidBody):
        assert failure.errors
        for error in failure.errors:
            assert isinstance(error, FieldError)
            assert error.path == "" or error.path.startswith("/")
            assert isinstance(error.message, str)
            assert error.message
        return
    assert entries
    for entry in entries:
        assert isinstance(entry.document, AppointmentDocument)
        assert entry.pointer in ("", "/data") or entry.pointer.endswith("/data")


@FAST
@given(content_types, st.binary(max_size=300))
def test_parse_body_contains_arbitrary_bytes(content_type: str, body: bytes) -> None:
    _assert_contained(content_type, body)


@FAST
@given(content_types, payloads)
def test_parse_body_contains_arbitrary_json(content_type: str, value: object) -> None:
    _assert_contained(content_type, json.dumps(value).encode("utf-8"))


@FAST
@given(st.lists(valid_documents, min_size=1, max_size=5))
def test_batches_of_valid_documents_yield_them_all(documents: list[dict[str, Any]]) -> None:
    items = [event(d, id=f"e{i}") for i, d in enumerate(documents)]
    entries = parse_body(CLOUDEVENT_BATCH, encode(items))
    assert [e.event_id for e in entries] == [f"e{i}" for i in range(len(documents))]
    assert [e.document.external_appointment_id for e in entries] == [
        d["externalAppointmentId"] for d in documents
    ]
