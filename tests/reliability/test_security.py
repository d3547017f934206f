"""Security properties: replays are refused, logs hold no client data, 404s leak nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import runtime, settings, signatures
from shared.http_api import get_appointment, receive_appointments, reconcile_appointment
from shared.intake import Intake
from shared.queue_functions import reconcile_appointment_event
from shared.settings import POISON_QUEUE_NAME, TABLE_NAME
from tests.integration.queue_host import drain
from tests.support import (
    ALEX,
    MEGAN,
    NO_POLICY,
    SECRET,
    document,
    encode,
    get_request,
    new_id,
    signed_request,
)

# --- replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-301, 301, -3600, 86_400])
def test_signed_request_outside_the_tolerance_is_refused(skew: int) -> None:
    body = encode(document())
    response = receive_appointments(signed_request(body, timestamp=int(time.time()) + skew))
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_captured_request_replayed_after_the_tolerance_is_refused(
    event_queue: QueueClient,
) -> None:
    body = encode(document())
    t = int(time.time())
    headers = {
        "content-type": "application/json",
        "x-signature": signatures.sign(SECRET, t, body),
    }
    current = settings.current()
    tolerance = current.webhook_tolerance_seconds

    def at(moment: float) -> int:
        intake = Intake(current, runtime.store, runtime.queue, clock=lambda: moment)
        return intake.handle(headers, body, "replay-test").status

    assert at(t) == 202  # the original delivery
    assert at(t + tolerance) == 202  # a retry inside the window is fine (idempotent)
    assert at(t + tolerance + 1) == 401  # the same bytes, replayed later
    assert at(t - tolerance - 1) == 401  # or "from the future"


# --- logs -----------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        lines = []
        for record in self.records:
            if record.name.startswith("devtools"):
                continue  # the emulator stands in for Graph: not part of the app's output
            lines.append(self.format(record))
        return "\n".join(lines)


@pytest.fixture
def captured_logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    saved = root.level
    names = ["azure", "msgraph", "kiota_http", "kiota_abstractions", "httpx", "httpcore", "shared"]
    loggers = [logging.getLogger(name) for name in names]
    saved_levels = [logger.level for logger in loggers]
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(saved)
        for logger, level in zip(loggers, saved_levels, strict=True):
            logger.setLevel(level)


CLIENTS = [
    {
        "displayName": "Zephyrine Quillfeather",
        "emailAddress": "zephyrine.quillfeather@patients.example",
        "smsCapablePhoneNumber": "+13125557391",
    },
    {
        "displayName": "Bartholomew Vantablack-Oyelaran",
        "emailAddress": "b.vantablack@clients.example",
        "smsCapablePhoneNumber": "+442079460958",
    },
]
SECRETS_IN_DATA = [
    "Zephyrine",
    "Quillfeather",
    "Bartholomew",
    "Vantablack",
    "Oyelaran",
    "zephyrine.quillfeather",
    "patients.example",
    "b.vantablack",
    "clients.example",
    "3125557391",
    "2079460958",
    "555-7391",
]


@pytest.mark.slow
def test_a_full_run_logs_no_client_name_email_or_phone(
    emulator: GraphEmulator,
    azurite: Azurite,
    event_queue: QueueClient,
    captured_logs: _Capture,
) -> None:
    poison = QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)
    scheduled, moved, refused = new_id(), new_id(), new_id()
    sms = {"sendSmsNotifications": True}
    base = {"appointmentClients": CLIENTS, "settings": sms, "subject": "Check-up"}
    bodies = [
        document(externalAppointmentId=scheduled, organizer=ALEX, **base),
        document(externalAppointmentId=moved, organizer=ALEX, **base),
        document(externalAppointmentId=refused, organizer=NO_POLICY, **base),  # 403: failed
    ]
    for body in bodies:
        assert receive_appointments(signed_request(encode(body))).status_code == 202
    drain(event_queue, poison, reconcile_appointment_event)
    later = [
        document(
            externalAppointmentId=scheduled,
            lastModifiedDateTime="2026-11-20T11:00:00Z",
            organizer=ALEX,
            startDateTime="2026-12-01T10:00:00Z",
            endDateTime="2026-12-01T10:30:00Z",
            **base,
        ),
        document(
            externalAppointmentId=moved,
            lastModifiedDateTime="2026-11-20T11:00:00Z",
            organizer=MEGAN,
            **base,
        ),
    ]
    for body in later:
        assert receive_appointments(signed_request(encode(body))).status_code == 202
    drain(event_queue, poison, reconcile_appointment_event)
    cancel = {
        "externalAppointmentId": scheduled,
        "lastModifiedDateTime": "2026-11-20T12:00:00Z",
        "status": "cancelled",
    }
    assert receive_appointments(signed_request(encode(cancel))).status_code == 202
    # Refused documents carrying client data: invalid e-mail, bad phone, batch error.
    invalid = document(appointmentClients=[{**CLIENTS[0], "emailAddress": "Zephyrine at home"}])
    assert receive_appointments(signed_request(encode(invalid))).status_code == 400
    assert receive_appointments(signed_request(encode(invalid), secret="wrong")).status_code == 401
    drain(event_queue, poison, reconcile_appointment_event)
    for external_id in (scheduled, moved, refused):
        response = get_appointment(
            get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
        )
        assert response.status_code == 200

    # The run did what it should (so the logs cover the SMS, move, cancel and 403 paths).
    types = sorted(s.message_type for s in emulator.sms_sent())
    assert types == ["cancellation", "confirmation", "confirmation", "reschedule", "reschedule"]
    text = captured_logs.text()
    assert len(captured_logs.records) > 20, "too few log records: is capture working?"
    leaks = {needle: _context(text, needle) for needle in SECRETS_IN_DATA if needle in text}
    assert not leaks, f"client data in the logs: {json.dumps(leaks, indent=1)}"


def _context(text: str, needle: str) -> str:
    at = text.index(needle)
    return text[max(0, at - 120) : at + 60]


# --- the status endpoint for unknown ids ----------------------------------------------------

# Where the organizer cache keeps alex.wilber@contoso.onmicrosoft.com in the same table.
UPN_CACHE_PARTITION = "upn:" + hashlib.sha256(b"alex.wilber@contoso.onmicrosoft.com").hexdigest()
UNKNOWN_IDS = [
    "never-seen",
    "x" * 200,
    "x" * 201,
    "ünïcødé-✓-診察",
    "' or PartitionKey ne '",
    "PartitionKey eq 'upn:alex.wilber@contoso.onmicrosoft.com'",
    "upn:alex.wilber@contoso.onmicrosoft.com",
    UPN_CACHE_PARTITION,
    "<script>alert(1)</script>",
    "..",
    "a/b",
    "a\\b",
    "a#b",
    "a?b",
    "tab\there",
    "",
    " ",
    "%00",
]


def _probe(route: str, external_id: str) -> tuple[int, bytes, dict[str, str]]:
    request = get_request(
        f"appointments/{external_id}{route}", {"externalAppointmentId": external_id}
    )
    response = reconcile_appointment(request) if route else get_appointment(request)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "x-correlation-id"}
    return response.status_code, response.get_body(), headers


def _forget(azurite: Azurite, external_ids: list[str]) -> None:
    """Make the ids unknown again: the hostile-input suite, run before this one on the same
    Azurite, may have stored a valid document under one of them (`" "` is a valid id)."""
    table = TableClient.from_connection_string(azurite.connection_string, TABLE_NAME)
    for external_id in external_ids:
        for entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": external_id}):
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])


@pytest.mark.parametrize("route", ["", "/reconcile"])
def test_unknown_ids_get_one_identical_404_that_echoes_nothing(
    emulator: GraphEmulator, azurite: Azurite, route: str
) -> None:
    # The organizer cache lives in the same table (UPN_CACHE_PARTITION): make sure it is there.
    runtime.store().cache_organizer_id("alex.wilber@contoso.onmicrosoft.com", ALEX)
    _forget(azurite, [i for i in UNKNOWN_IDS if i != UPN_CACHE_PARTITION])
    answers = {external_id: _probe(route, external_id) for external_id in UNKNOWN_IDS}
    statuses = {status for status, _, _ in answers.values()}
    bodies = {body for _, body, _ in answers.values()}
    headers = {json.dumps(h, sort_keys=True) for _, _, h in answers.values()}
    assert statuses == {404}
    assert len(bodies) == 1, f"404 bodies differ: {bodies}"
    assert len(headers) == 1, f"404 headers differ: {headers}"
    [body] = bodies
    problem = json.loads(body)
    assert set(problem) == {"type", "title", "status", "detail"}
    for external_id in UNKNOWN_IDS:
        if len(external_id) > 3:
            assert external_id.encode() not in body
            assert external_id not in json.dumps(problem, ensure_ascii=False)
    assert ALEX.encode() not in body
