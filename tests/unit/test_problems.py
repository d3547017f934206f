"""RFC 9457 problem details, pure."""

from __future__ import annotations

import json

from shared.documents import FieldError
from shared.problems import MEDIA_TYPE, VALIDATION_TYPE, Problem, validation_problem


def test_media_type() -> None:
    assert MEDIA_TYPE == "application/problem+json"


def test_minimal_problem_takes_the_status_phrase_as_title() -> None:
    assert Problem(401, "signature does not match").body() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "signature does not match",
    }
    assert Problem(413, "too big").body()["title"] == "Request Entity Too Large"
    assert Problem(415, "x").body()["title"] == "Unsupported Media Type"
    assert Problem(503, "x").body()["title"] == "Service Unavailable"


def test_instance_and_errors_are_included_when_present() -> None:
    problem = Problem(
        400, "bad", errors=[FieldError("/2/data/endDateTime", "must be after startDateTime")]
    )
    assert problem.body("/api/webhooks/appointments") == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "bad",
        "instance": "/api/webhooks/appointments",
        "errors": [{"path": "/2/data/endDateTime", "message": "must be after startDateTime"}],
    }
    assert "instance" not in problem.body(None)
    assert "instance" not in problem.body("")


def test_validation_problem() -> None:
    errors = [FieldError("/organizer", "is required"), FieldError("", "x")]
    problem = validation_problem("The request body has invalid fields.", errors)
    assert problem.status == 400
    assert problem.type == VALIDATION_TYPE == "urn:virtual-appointments:problem:validation"
    assert problem.title == "Invalid request body"
    assert problem.body()["errors"] == [
        {"path": "/organizer", "message": "is required"},
        {"path": "", "message": "x"},
    ]


def test_to_bytes_is_utf8_json_without_ascii_escapes() -> None:
    raw = Problem(404, "Termin „appt-1“ unbekannt").to_bytes("/api/appointments/appt-1")
    assert "„appt-1“".encode() in raw
    assert json.loads(raw.decode("utf-8")) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Termin „appt-1“ unbekannt",
        "instance": "/api/appointments/appt-1",
    }
