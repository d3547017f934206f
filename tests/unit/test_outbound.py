"""Signed callbacks' pure half (SPEC.md "Back to the scheduling system: signed callbacks").

The URL and secret rules, and the Standard Webhooks signature: checked against a hand-made
HMAC (the format SPEC states) and against `standardwebhooks.Webhook(secret).verify`, the code a
receiver runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from shared.outbound import (
    CallbackClient,
    CallbackSecretError,
    DeliveryAttempt,
    check_callback_url,
    is_valid_secret,
    new_secret,
    sign,
)
from tests.unit.factories import FAST

KEY_1 = bytes(range(32))
KEY_2 = b"another key of twenty-four bytes or more"
SECRET_1 = "whsec_" + base64.b64encode(KEY_1).decode()
SECRET_2 = "whsec_" + base64.b64encode(KEY_2).decode()
MESSAGE_ID = "msg_2f6c1a9e0b7d4c3a8e5f"
BODY = b'{"type":"appointment.scheduled","timestamp":"2026-12-01T09:00:00Z","data":{}}'


def _headers(signature: str, timestamp: int, message_id: str = MESSAGE_ID) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def _hand_signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- check_callback_url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://scheduling.example.com/hooks/teams",
        "https://scheduling.example.com:8443/hooks?token=abc",
        "HTTPS://Scheduling.Example.com/",
        "https://203.0.113.7/cb",
        "https://[2001:db8::1]/cb",
        "http://localhost:7072/callbacks",
        "http://127.0.0.1:7072/callbacks",
        "http://[::1]:7072/callbacks",
        "http://LOCALHOST/cb",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert check_callback_url(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "a URL is required"),
        ("http://scheduling.example.com/cb", "must use https (plain http only to localhost"),
        ("http://10.0.0.5/cb", "must use https"),
        ("http://127.0.0.2/cb", "must use https"),
        ("http://localhost.example.com/cb", "must use https"),
        ("ftp://scheduling.example.com/cb", "must use https"),
        ("scheduling.example.com/cb", "must use https"),
        ("https://user:pass@scheduling.example.com/cb", "credentials"),
        ("https://token@scheduling.example.com/cb", "credentials"),
        ("https:///cb", "needs a host"),
        ("https://:443/cb", "needs a host"),
        ("https://scheduling.example.com/cb#frag", "fragment"),
        ("https://scheduling.example.com/cb#", "fragment"),
        ("https://scheduling.example.com:99999/cb", "malformed"),
        ("https://scheduling.example.com:port/cb", "malformed"),
        ("https://[::1/cb", "malformed"),
        ("https://scheduling.example.com/c b", "whitespace"),
        ("https://scheduling.example.com/cb\r\nX: y", "control characters"),
    ],
)
def test_refused_urls_say_why(url: str, reason: str) -> None:
    found = check_callback_url(url)
    assert found is not None
    assert reason in found


def test_a_reason_never_repeats_the_url() -> None:
    found = check_callback_url("http://scheduling.example.com/cb?token=s3cr3t-query")
    assert found is not None
    assert "s3cr3t" not in found
    assert "scheduling.example.com" not in found


# --- is_valid_secret -----------------------------------------------------------------------------


def _whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(bytes(size)).decode()


@pytest.mark.parametrize(
    "secret",
    [
        _whsec(24),
        _whsec(32),
        _whsec(64),
        _whsec(32).rstrip("="),  # unpadded, as some senders print them
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the Standard Webhooks example: 24 bytes
        SECRET_1,
        SECRET_2,
        new_secret(),
    ],
)
def test_valid_secrets(secret: str) -> None:
    assert is_valid_secret(secret)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "whsec_",
        _whsec(23),  # too short to be a key
        _whsec(65),  # longer than Standard Webhooks' range
        base64.b64encode(bytes(32)).decode(),  # no prefix
        "WHSEC_" + base64.b64encode(bytes(32)).decode(),
        "whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # URL-safe alphabet
        "whsec_" + base64.b64encode(bytes(32)).decode() + " ",
        " " + _whsec(32),
        "whsec_" + "A" * 41,  # 41 characters cannot be base64
        "whsec_" + "A" * 40 + "===",
        "whsec_AAAA=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # padding in the middle
        "whsec_!!!!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "a plain password of some length",
    ],
)
def test_invalid_secrets(secret: str) -> None:
    assert not is_valid_secret(secret)


def test_the_library_decodes_a_valid_secret_to_the_same_key() -> None:
    """What is_valid_secret accepts, Webhook keys with the bytes we decoded (padded or not)."""
    now = int(time.time())
    for secret, key in [(SECRET_1, KEY_1), (SECRET_1.rstrip("="), KEY_1), (SECRET_2, KEY_2)]:
        assert sign([secret], MESSAGE_ID, now, BODY) == _hand_signature(key, MESSAGE_ID, now, BODY)


# --- sign ----------------------------------------------------------------------------------------


def test_sign_is_one_v1_base64_hmac_per_secret_space_separated() -> None:
    now = 1_764_579_600
    header = sign([SECRET_1, SECRET_2], MESSAGE_ID, now, BODY)
    assert header == " ".join(
        [
            _hand_signature(KEY_1, MESSAGE_ID, now, BODY),
            _hand_signature(KEY_2, MESSAGE_ID, now, BODY),
        ]
    )
    first, second = header.split(" ")
    assert first.startswith("v1,")
    assert len(base64.b64decode(first.removeprefix("v1,"), validate=True)) == 32
    assert second.startswith("v1,")


def test_the_standard_webhooks_library_verifies_it_with_each_secret() -> None:
    now = int(time.time())
    header = sign([SECRET_1, SECRET_2], MESSAGE_ID, now, BODY)
    for secret in (SECRET_1, SECRET_2):
        assert Webhook(secret).verify(BODY, _headers(header, now)) == {
            "type": "appointment.scheduled",
            "timestamp": "2026-12-01T09:00:00Z",
            "data": {},
        }


def test_the_library_accepts_header_names_in_any_case() -> None:
    now = int(time.time())
    header = sign([SECRET_1], MESSAGE_ID, now, BODY)
    headers = {
        "Webhook-Id": MESSAGE_ID,
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": header,
    }
    Webhook(SECRET_1).verify(BODY, headers, json_parse=False)


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": BODY.replace(b"scheduled", b"cancelled")},
        {"body": BODY + b" "},
        {"message_id": "msg_other"},
        {"timestamp_shift": 1},
    ],
)
def test_the_library_rejects_anything_changed(tamper: dict[str, object]) -> None:
    now = int(time.time())
    header = sign([SECRET_1, SECRET_2], MESSAGE_ID, now, BODY)
    body = tamper.get("body", BODY)
    message_id = tamper.get("message_id", MESSAGE_ID)
    shift = tamper.get("timestamp_shift", 0)
    assert isinstance(body, bytes)
    assert isinstance(message_id, str)
    assert isinstance(shift, int)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_1).verify(body, _headers(header, now + shift, message_id))


def test_a_secret_that_did_not_sign_is_rejected() -> None:
    now = int(time.time())
    header = sign([SECRET_1], MESSAGE_ID, now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, _headers(header, now))


def test_a_stale_timestamp_is_rejected_by_the_library() -> None:
    """Receivers allow five minutes: each retry must be signed with its own attempt's time."""
    then = int(time.time()) - 600
    header = sign([SECRET_1], MESSAGE_ID, then, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET_1).verify(BODY, _headers(header, then))


@FAST
@given(
    text=st.text(max_size=300),
    message_id=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
    ),
)
def test_any_utf8_body_and_id_verify(text: str, message_id: str) -> None:
    now = int(time.time())
    body = text.encode("utf-8")
    header = sign([SECRET_1, SECRET_2], message_id, now, body)
    Webhook(SECRET_2).verify(body, _headers(header, now, message_id), json_parse=False)


@pytest.mark.parametrize(
    "secrets",
    [[], ["s3cret"], [SECRET_1, "whsec_short"], [_whsec(16)]],
)
def test_sign_refuses_unusable_secrets_without_naming_them(secrets: list[str]) -> None:
    with pytest.raises(CallbackSecretError) as raised:
        sign(secrets, MESSAGE_ID, 1, BODY)
    for secret in secrets:
        assert secret not in str(raised.value)


def test_sign_wants_a_sequence_of_secrets_not_one_string() -> None:
    with pytest.raises(TypeError):
        sign(SECRET_1, MESSAGE_ID, 1, BODY)


@pytest.mark.parametrize("message_id", ["", "has space", "line\nbreak", "é", "x" * 257])
def test_sign_refuses_an_id_that_cannot_be_a_header(message_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        sign([SECRET_1], message_id, 1, BODY)


def test_sign_refuses_a_negative_timestamp_and_a_non_utf8_body() -> None:
    with pytest.raises(ValueError, match="unix seconds"):
        sign([SECRET_1], MESSAGE_ID, -1, BODY)
    with pytest.raises(ValueError, match="UTF-8"):
        sign([SECRET_1], MESSAGE_ID, 1, b"\xff\xfe")


# --- DeliveryAttempt and refusals (nothing sent) -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "delivered", "gone"),
    [
        (200, True, False),
        (204, True, False),
        (299, True, False),
        (302, False, False),
        (410, False, True),
        (404, False, False),
        (500, False, False),
        (None, False, False),
    ],
)
def test_delivered_is_2xx_and_gone_is_410(status: int | None, delivered: bool, gone: bool) -> None:
    attempt = DeliveryAttempt(status, None if delivered else "x", 0.1)
    assert attempt.delivered is delivered
    assert attempt.gone is gone


def test_post_refuses_a_bad_url_or_secret_without_sending() -> None:
    client = CallbackClient(timeout=1.0)
    try:
        by_url = client.post("http://scheduling.example.com/cb", MESSAGE_ID, 1, BODY, [SECRET_1])
        by_secret = client.post("https://scheduling.example.com/cb", MESSAGE_ID, 1, BODY, ["x"])
        assert client._loop is None  # nothing was even started
    finally:
        client.close()
    assert by_url.refused
    assert by_url.status_code is None
    assert by_url.error is not None
    assert by_url.error.startswith("URL refused: the URL must use https")
    assert by_secret.refused
    assert by_secret.error is not None
    assert by_secret.error.startswith("secret refused:")


def test_a_closed_client_refuses_to_post() -> None:
    client = CallbackClient()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.post("https://scheduling.example.com/cb", MESSAGE_ID, 1, BODY, [SECRET_1])


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CallbackClient(timeout=0)
