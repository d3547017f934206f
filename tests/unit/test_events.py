"""The queue message between intake and reconciler, pure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import AppointmentEvent, MalformedMessage
from tests.unit.factories import (
    FAST,
    cancelled,
    doc,
    document_like,
    json_values,
    valid,
    valid_documents,
)

DOCUMENT = valid(doc(subject="Zürich — 預約", extra="dropped"))


def message(**overrides: Any) -> str:
    body: dict[str, Any] = {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "correlationId": "corr-1",
        "document": DOCUMENT.to_json(),
    }
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def test_message_is_compact_utf8_json_with_the_whole_document() -> None:
    text = AppointmentEvent(DOCUMENT, "corr-1").to_message()
    assert json.loads(text) == {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "correlationId": "corr-1",
        "document": DOCUMENT.to_json(),
    }
    assert "Zürich — 預約" in text  # not \u-escaped
    assert ", " not in text
    assert ": " not in text
    assert "extra" not in text


@pytest.mark.parametrize(("deferrals", "replay"), [(0, False), (1, False), (0, True), (5, True)])
def test_round_trip_keeps_replay_and_deferrals(deferrals: int, replay: bool) -> None:
    event = AppointmentEvent(DOCUMENT, "corr-9", deferrals=deferrals, replay=replay)
    text = event.to_message()
    assert AppointmentEvent.from_message(text) == event
    body = json.loads(text)
    assert ("deferrals" in body) == (deferrals != 0)
    assert ("replay" in body) == replay
    if replay:
        assert body["replay"] is True


def test_round_trip_of_a_cancellation() -> None:
    event = AppointmentEvent(valid(cancelled()), "c")
    assert AppointmentEvent.from_message(event.to_message()) == event


@FAST
@given(
    valid_documents,
    st.text(max_size=64),
    st.integers(min_value=0, max_value=1000),
    st.booleans(),
)
def test_round_trip_property(
    body: dict[str, Any], correlation_id: str, deferrals: int, replay: bool
) -> None:
    event = AppointmentEvent(valid(body), correlation_id, deferrals, replay)
    assert AppointmentEvent.from_message(event.to_message()) == event


def test_missing_optional_fields_default() -> None:
    event = AppointmentEvent.from_message(message())
    assert event.deferrals == 0
    assert event.replay is False
    assert event.correlation_id == "corr-1"
    assert event.document == DOCUMENT


def test_long_correlation_id_is_cut_to_64_characters() -> None:
    assert AppointmentEvent.from_message(message(correlationId="c" * 100)).correlation_id == (
        "c" * 64
    )


def test_negative_deferrals_are_clamped_to_zero() -> None:
    assert AppointmentEvent.from_message(message(deferrals=-3)).deferrals == 0


def test_the_document_not_the_envelope_fields_is_authoritative() -> None:
    event = AppointmentEvent.from_message(message(externalAppointmentId="other"))
    assert event.document.external_appointment_id == "appt-1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ('{"n": ' + "9" * 5000 + "}", "not JSON"),
        ("[]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ("null", "not a JSON object"),
        ("{}", "document is invalid: "),
        (message(document=...), "document is invalid: "),
        (message(document=[]), "document is invalid: "),
        (message(document={"status": "cancelled"}), "invalid: /externalAppointmentId, "),
        (message(correlationId=...), "wrong type"),
        (message(correlationId=1), "wrong type"),
        (message(deferrals="1"), "wrong type"),
        (message(deferrals=1.0), "wrong type"),
        (message(deferrals=True), "wrong type"),
        (message(replay="true"), "wrong type"),
        (message(replay=1), "wrong type"),
    ],
)
def test_malformed_messages(text: str, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        AppointmentEvent.from_message(text)
    assert reason in str(caught.value)


def test_malformed_message_is_a_value_error() -> None:
    assert issubclass(MalformedMessage, ValueError)


def _only_malformed(text: str) -> None:
    try:
        event = AppointmentEvent.from_message(text)
    except MalformedMessage:
        return
    assert isinstance(event, AppointmentEvent)
    assert isinstance(event.correlation_id, str)
    assert event.deferrals >= 0


@FAST
@given(st.text(max_size=200))
def test_garbage_text_is_only_ever_malformed(text: str) -> None:
    _only_malformed(text)


messages = st.fixed_dictionaries(
    {},
    optional={
        "correlationId": st.text(max_size=5) | json_values,
        "deferrals": st.integers(-5, 5) | json_values,
        "replay": st.booleans() | json_values,
        "document": valid_documents | document_like | json_values,
    },
)


@FAST
@given(json_values | messages)
def test_garbage_json_is_only_ever_malformed(value: object) -> None:
    _only_malformed(json.dumps(value))


def test_document_with_a_directory_time_zone_is_malformed() -> None:
    document = DOCUMENT.to_json() | {"timeZone": "America"}
    with pytest.raises(MalformedMessage):
        AppointmentEvent.from_message(message(document=document))
