"""Test helpers: signed requests as a scheduling system would send them, and documents."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from shared import signatures

SECRET = "test-secret-0123456789abcdef"
ORGANIZER_ID = "11111111-1111-4111-8111-111111111111"
# The organizers GraphEmulator.seed_default_users() creates; the last has no access policy.
ALEX = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"
MEGAN = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e02"
NO_POLICY = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e03"
ALEX_UPN = "alex.wilber@contoso.onmicrosoft.com"


def document(**overrides: Any) -> dict[str, Any]:
    """A valid scheduled document with a fresh id; override any field."""
    body: dict[str, Any] = {
        "externalAppointmentId": f"appt-{uuid.uuid4().hex[:12]}",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ORGANIZER_ID,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "Follow-up consultation",
        "timeZone": "America/New_York",
        "appointmentClients": [
            {
                "displayName": "Jordan Patient",
                "emailAddress": "jordan@example.com",
                "smsCapablePhoneNumber": "+12065550100",
            }
        ],
    }
    body.update(overrides)
    return body


def encode(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def signed_request(
    body: bytes,
    *,
    content_type: str = "application/json",
    secret: str = SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
    url: str = "http://localhost:7071/api/webhooks/appointments",
) -> func.HttpRequest:
    """A real azure.functions request, signed the way the contract says senders sign."""
    t = int(time.time()) if timestamp is None else timestamp
    all_headers = {
        "Content-Type": content_type,
        signatures.HEADER: signature if signature is not None else signatures.sign(secret, t, body),
    }
    all_headers.update(headers or {})
    return func.HttpRequest(method="POST", url=url, headers=all_headers, body=body)


def get_request(path: str, route_params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET",
        url=f"http://localhost:7071/api/{path}",
        headers={},
        body=b"",
        route_params=route_params or {},
    )


def new_id() -> str:
    return f"appt-{uuid.uuid4().hex[:12]}"


def queue_message(body: str | bytes, *, dequeue_count: int = 1) -> QueueMessage:
    """A real azure.functions queue message, as the host hands it to the function."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return QueueMessage(
        id=uuid.uuid4().hex, body=raw, dequeue_count=dequeue_count, pop_receipt="receipt"
    )


def source_request(source: str, body: bytes, headers: dict[str, str]) -> func.HttpRequest:
    """A real azure.functions request to POST /api/webhooks/{source}, routed as the host does."""
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/webhooks/{source}",
        headers=headers,
        body=body,
        route_params={"source": source},
    )


def record(external_id: str) -> dict[str, Any]:
    """The status record, read through the real GET function (it must exist)."""
    from shared.http_api import get_appointment

    response = get_appointment(
        get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    )
    assert response.status_code == 200, response.get_body()
    return dict(json.loads(response.get_body()))
