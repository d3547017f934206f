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


def refused(status: int, operation: str, code: str, message: str) -> PermanentGraphError:
    """classify() on the SDK's own ODataError, as msgraph-sdk raises it for a Graph error body."""
    from msgraph.generated.models.o_data_errors.main_error import MainError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    error = ODataError(error=MainError(code=code, message=message))
    error.response_status_code = status
    error.response_headers = {}
    mapped = classify(operation, error)
    assert isinstance(mapped, PermanentGraphError)
    return mapped


def test_older_missing_policy_text_is_the_access_policy() -> None:
    app, user = "5e29463d-71da-4fe0-8e69-999b57db23b0", "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e03"
    message = f"App {app} is not authorized to Create meeting on behalf of user {user}"
    error = refused(403, "createOrGet", "Unauthorized", message)
    assert error.code == "accessPolicyMissing"
    assert "access policy" in error.message


def test_current_missing_policy_text_is_the_access_policy() -> None:
    message = "No Application Access Policy found for this app."
    assert refused(403, "createOrGet", "Forbidden", message).code == "accessPolicyMissing"


def test_a_named_missing_permission_is_the_app_role() -> None:
    message = "Missing application permission OnlineMeetings.ReadWrite.All"
    error = refused(403, "createOrGet", "Forbidden", message)
    assert error.code == "appRoleMissing"
    assert "OnlineMeetings.ReadWrite.All" in error.message
    assert "access policy" not in error.message


def test_a_403_that_cannot_be_told_apart_names_both_causes() -> None:
    error = refused(403, "updateMeeting", "Forbidden", "Forbidden")
    assert error.code == "appRoleMissing"
    assert "OnlineMeetings.ReadWrite.All" in error.message
    assert "Teams application access policy" in error.message


def test_the_upn_lookup_needs_only_user_read_basic() -> None:
    error = refused(403, "getUser", "Authorization_RequestDenied", "Insufficient privileges")
    assert "User.ReadBasic.All" in error.message
    assert "access policy" not in error.message  # no policy governs directory reads


def test_organizer_not_found_does_not_claim_the_user_is_missing() -> None:
    error = refused(404, "createOrGet", "NotFound", "not found")
    assert error.code == "organizerNotFound"
    assert "not found" in error.message
    assert "not enabled for Teams" in error.message


# --------------------------------------------------------------------------- sendMail


def test_mail_403_names_mail_send_and_the_exchange_scope() -> None:
    error = refused(403, "sendMail", "ErrorAccessDenied", "Access is denied.")
    assert error.code == "mailSendDenied"
    assert "Mail.Send" in error.message
    assert "RBAC" in error.message
    assert "MAIL_SENDER" in error.message
    assert "Teams application access policy" not in error.message


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "ErrorInvalidUser"), (404, "MailboxNotEnabledForRESTAPI"), (400, "ErrorInvalidUser")],
)
def test_mail_to_a_missing_sender_mailbox(status: int, code: str) -> None:
    error = refused(status, "sendMail", code, "The requested user 'x@contoso.com' is invalid.")
    assert error.code == "mailSenderNotFound"
    assert "MAIL_SENDER" in error.message
    assert "x@contoso.com" not in error.message


def test_a_refused_mail_never_repeats_graphs_text_which_names_the_recipient() -> None:
    text = "At least one recipient isn't valid: ada@example.com"
    error = refused(400, "sendMail", "ErrorInvalidRecipients", text)
    assert error.code == "invalidRequest"
    assert error.status == 400
    assert "ErrorInvalidRecipients" in error.message
    assert "ada@example.com" not in error.message


@pytest.mark.parametrize("status", [429, 500, 503, 504, 401])
def test_mail_throttling_outages_and_401_are_transient(status: int) -> None:
    error = classify("sendMail", APIError("busy", status, {"Retry-After": "3"}))
    assert isinstance(error, TransientGraphError)
    assert error.status == status
