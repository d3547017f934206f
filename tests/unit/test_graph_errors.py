"""How Graph failures map to what the reconciler does (classify), with the SDK's own error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from kiota_abstractions.api_error import APIError

from shared.graph import PermanentGraphError, TransientGraphError, classify


def throttled(retry_after: str) -> TransientGraphError:
    error = classify("createOrGet", APIError("throttled", 429, {"Retry-After": retry_after}))
    assert isinstance(error, TransientGraphError)
    return error


def test_retry_after_in_seconds() -> None:
    assert throttled("45").retry_after == 45.0


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    seconds = throttled(format_datetime(when, usegmt=True)).retry_after
    assert seconds is not None
    assert 100 < seconds <= 120


def test_retry_after_in_the_past_or_unreadable() -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert throttled(past).retry_after == 0.0
    assert throttled("soon").retry_after is None


@pytest.mark.parametrize(
    ("status", "operation", "code"),
    [
        (404, "createOrGet", "organizerNotFound"),
        (404, "getUser", "organizerNotFound"),
        (404, "updateMeeting", "meetingNotFound"),
        (403, "getJoinWebUrl", "appRoleMissing"),
        (400, "createOrGet", "invalidRequest"),
    ],
)
def test_permanent_refusals_carry_a_code_a_user_can_act_on(
    status: int, operation: str, code: str
) -> None:
    error = classify(operation, APIError("refused", status, {}))
    assert isinstance(error, PermanentGraphError)
    assert error.code == code
    assert error.message
