"""Signed callbacks over real HTTP on 127.0.0.1: the app's client against the local receiver.

The receiver (devtools/callback_receiver.py) verifies every request with
`standardwebhooks.Webhook(secret).verify`, so "verified" here means a real Standard Webhooks
receiver accepts the callback. Each misbehaviour the client must survive (5xx, 410, redirects,
no answer, an answer that never ends or trickles in) is one scripted answer.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook

from devtools.callback_receiver import (
    CallbackReceiver,
    redirect,
    slow,
    stream_forever,
    trickle,
)
from shared.outbound import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    CallbackClient,
    DeliveryAttempt,
    new_secret,
)

OLD_SECRET = new_secret()
NEW_SECRET = new_secret()
SECRETS = [OLD_SECRET, NEW_SECRET]
QUICK_TIMEOUT = 1.0
# The transport reads the socket in pieces of up to 64 KiB, so the read that reaches the limit
# may carry up to one more piece.
READ_PIECE = 64 * 1024


def _body(external_id: str = "appt-1001", kind: str = "appointment.scheduled") -> bytes:
    return json.dumps(
        {
            "type": kind,
            "timestamp": "2026-12-01T09:00:00Z",
            "data": {"externalAppointmentId": external_id, "status": "scheduled"},
        },
        separators=(",", ":"),
    ).encode()


@pytest.fixture(scope="module")
def client() -> Iterator[CallbackClient]:
    """One client for the module, as the app keeps one per process (its pool is reused)."""
    with CallbackClient() as shared:
        yield shared


@pytest.fixture(scope="module")
def quick_client() -> Iterator[CallbackClient]:
    with CallbackClient(timeout=QUICK_TIMEOUT) as quick:
        yield quick


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver(secrets=[NEW_SECRET]) as started:
        yield started


def _post(
    client: CallbackClient,
    url: str,
    body: bytes | None = None,
    message_id: str = "msg_1",
    secrets: list[str] | None = None,
) -> DeliveryAttempt:
    return client.post(
        url, message_id, int(time.time()), body or _body(), SECRETS if secrets is None else secrets
    )


def test_200_is_delivered_and_verifies_with_the_library(
    client: CallbackClient, receiver: CallbackReceiver
) -> None:
    body = _body()
    now = int(time.time())
    attempt = client.post(receiver.url, "msg_delivered", now, body, SECRETS)

    assert attempt == DeliveryAttempt(200, None, attempt.seconds, attempt.response_bytes)
    assert attempt.delivered
    assert not attempt.gone
    (received,) = receiver.wait_for(1, timeout=2)
    assert received.verified, received.verify_error
    assert received.method == "POST"
    assert received.body == body
    assert received.json["data"]["externalAppointmentId"] == "appt-1001"
    headers = received.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert headers["webhook-id"] == "msg_delivered"
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    # Either secret verifies on its own: a receiver mid-rotation holds only one of them.
    for secret in SECRETS:
        Webhook(secret).verify(received.body, headers)


def test_500_is_not_delivered(client: CallbackClient, receiver: CallbackReceiver) -> None:
    receiver.set_responses([500, 503])
    first = _post(client, receiver.url)
    second = _post(client, receiver.url)
    third = _post(client, receiver.url)

    assert (first.status_code, first.error, first.delivered) == (500, "status 500", False)
    assert (second.status_code, second.error) == (503, "status 503")
    assert third.delivered  # then the default, 200
    assert [r.answered for r in receiver.wait_for(3)] == [500, 503, 200]


def test_410_is_gone(client: CallbackClient, receiver: CallbackReceiver) -> None:
    receiver.set_responses([410])
    attempt = _post(client, receiver.url)
    assert attempt.gone
    assert not attempt.delivered
    assert (attempt.status_code, attempt.error) == (410, "gone (410)")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed(
    client: CallbackClient, receiver: CallbackReceiver, status: int
) -> None:
    with CallbackReceiver(secrets=[NEW_SECRET]) as target:
        receiver.set_responses([redirect(target.url, status)])
        attempt = _post(client, receiver.url)
        time.sleep(0.1)  # a followed redirect would have arrived by now
        assert target.received == []
    assert attempt.status_code == status
    assert attempt.error == f"redirect not followed ({status})"
    assert not attempt.delivered
    assert len(receiver.received) == 1


def test_a_receiver_that_never_answers_times_out_within_the_timeout(
    quick_client: CallbackClient, receiver: CallbackReceiver
) -> None:
    receiver.hang(True)
    attempt = _post(quick_client, receiver.url)
    assert attempt.status_code is None
    assert attempt.error == "timeout"
    assert QUICK_TIMEOUT * 0.9 <= attempt.seconds < QUICK_TIMEOUT + 0.5
    assert len(receiver.received) == 1  # it did arrive; the answer is what never came
    receiver.hang(False)
    assert _post(quick_client, receiver.url).delivered


def test_headers_trickling_in_cannot_stretch_the_deadline(
    quick_client: CallbackClient, receiver: CallbackReceiver
) -> None:
    """Each header line arrives well inside a per-read timeout; the whole answer never does."""
    receiver.set_responses([trickle()])
    attempt = _post(quick_client, receiver.url)
    assert (attempt.status_code, attempt.error) == (None, "timeout")
    assert attempt.seconds < QUICK_TIMEOUT + 0.5


def test_a_slow_answer_inside_the_timeout_is_delivered(
    quick_client: CallbackClient, receiver: CallbackReceiver
) -> None:
    receiver.set_responses([slow(0.3), slow(3.0)])
    assert _post(quick_client, receiver.url).delivered
    too_slow = _post(quick_client, receiver.url)
    assert too_slow.error == "timeout"
    assert too_slow.seconds < QUICK_TIMEOUT + 0.5


def test_an_endless_answer_is_read_only_up_to_the_limit(
    client: CallbackClient, receiver: CallbackReceiver
) -> None:
    receiver.set_responses([stream_forever(200), stream_forever(500)])
    delivered = _post(client, receiver.url)
    failed = _post(client, receiver.url)

    assert delivered.delivered
    assert MAX_RESPONSE_BYTES <= delivered.response_bytes < MAX_RESPONSE_BYTES + READ_PIECE
    assert delivered.seconds < 2
    assert (failed.status_code, failed.error) == (500, "status 500")
    assert failed.response_bytes < MAX_RESPONSE_BYTES + READ_PIECE
    assert _post(client, receiver.url).delivered  # the pool recovered a fresh connection


def test_connection_refused(client: CallbackClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    attempt = _post(client, f"http://127.0.0.1:{port}/callbacks")
    assert (attempt.status_code, attempt.error) == (None, "connection refused")
    assert not attempt.refused  # it was tried
    assert attempt.seconds < 2


def test_a_non_loopback_http_url_is_refused_without_a_request(client: CallbackClient) -> None:
    """127.0.0.2 is loopback on Linux, so a request would reach the receiver: none does."""
    try:
        other = CallbackReceiver(secrets=[NEW_SECRET], host="127.0.0.2").start()
    except OSError:
        pytest.skip("this system cannot bind 127.0.0.2")
    try:
        attempt = _post(client, other.url)
        time.sleep(0.1)
        assert other.received == []
    finally:
        other.stop()
    assert attempt.refused
    assert attempt.status_code is None
    assert attempt.error == (
        "URL refused: the URL must use https (plain http only to localhost, 127.0.0.1 or ::1)"
    )


def test_environment_proxies_are_ignored(
    client: CallbackClient, receiver: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CallbackReceiver() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        with CallbackClient(timeout=QUICK_TIMEOUT) as fresh:  # reads the environment now
            assert _post(fresh, receiver.url).delivered
        assert proxy.received == []
    assert len(receiver.received) == 1


def test_every_thread_shares_one_client(client: CallbackClient, receiver: CallbackReceiver) -> None:
    results: list[DeliveryAttempt] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        attempt = _post(client, receiver.url, _body(f"appt-{index}"), message_id=f"msg_{index}")
        with lock:
            results.append(attempt)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(results) == 12
    assert all(a.delivered for a in results)
    received = receiver.wait_for(12)
    assert all(r.verified for r in received)
    assert {r.headers["webhook-id"] for r in received} == {f"msg_{i}" for i in range(12)}


def test_no_log_line_carries_the_query_string(
    client: CallbackClient, receiver: CallbackReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.set_responses([200, 500])
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "shared.outbound"):
        caplog.set_level(logging.DEBUG, logger=name)
    url = receiver.url + "?token=s3cr3t-query-value"
    assert _post(client, url).delivered
    assert _post(client, url).status_code == 500
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _post(client, f"http://127.0.0.1:{port}/callbacks?token=s3cr3t-query-value")

    assert "HTTP Request: POST" in caplog.text  # httpx's own line is there, without the query
    assert "s3cr3t" not in caplog.text
    assert "token=" not in caplog.text
    assert receiver.received[0].path.endswith("?token=s3cr3t-query-value")  # it was sent


def test_the_receiver_reports_an_unverified_callback(receiver: CallbackReceiver) -> None:
    with CallbackClient(timeout=QUICK_TIMEOUT) as other:
        attempt = other.post(receiver.url, "msg_x", int(time.time()), _body(), [OLD_SECRET])
    assert attempt.delivered  # the receiver's script answers; verifying is for the test to see
    (received,) = receiver.wait_for(1)
    assert not received.verified
    assert received.verify_error == "No matching signature found"


def test_a_stopped_receiver_releases_a_held_request_promptly(
    quick_client: CallbackClient,
) -> None:
    rx = CallbackReceiver(secrets=[NEW_SECRET]).start()
    rx.hang(True)
    outcome: list[DeliveryAttempt] = []
    sender = threading.Thread(target=lambda: outcome.append(_post(quick_client, rx.url)))
    sender.start()
    rx.wait_for(1, timeout=2)
    started = time.monotonic()
    rx.stop()
    assert time.monotonic() - started < 0.5
    sender.join(timeout=2)
    assert outcome
    assert outcome[0].status_code is None
    assert outcome[0].error in ("connection closed without an answer", "connection error")
