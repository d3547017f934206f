"""The webhook intake end to end on real Azurite, through the registered HTTP function."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import available_timezones

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from devtools.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, free_port
from shared import runtime, settings, signatures
from shared.http_api import get_appointment, health, receive_appointments, reconcile_appointment
from shared.intake import Intake
from shared.settings import QUEUE_NAME, TABLE_NAME
from shared.storage import EventQueue, StorageRejected, StorageUnavailable, _guard
from tests.support import SECRET, document, encode, get_request, new_id, signed_request

CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


def cloud_event(data: Any, **overrides: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": new_id(), "source": "/ehr/test", "type": "appt.changed"}
    event["data"] = data
    event.update(overrides)
    return event


def post(body: bytes, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = receive_appointments(signed_request(body, **kwargs))
    payload = json.loads(response.get_body()) if response.get_body() else {}
    return response.status_code, payload, dict(response.headers)


def queued(queue: QueueClient) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]


def status_of(external_id: str) -> tuple[int, dict[str, Any]]:
    response = get_appointment(
        get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    )
    return response.status_code, json.loads(response.get_body())


# --- 202 -----------------------------------------------------------------------------------


def test_json_document_is_stored_and_enqueued_before_202(event_queue: QueueClient) -> None:
    doc = document()
    status, body, headers = post(encode(doc), headers={"X-Correlation-Id": "corr-123"})

    assert status == 202
    assert body == {
        "accepted": [
            {
                "externalAppointmentId": doc["externalAppointmentId"],
                "lastModifiedDateTime": doc["lastModifiedDateTime"],
            }
        ]
    }
    assert headers["X-Correlation-Id"] == "corr-123"
    [message] = queued(event_queue)
    assert message["externalAppointmentId"] == doc["externalAppointmentId"]
    assert message["correlationId"] == "corr-123"
    assert message["document"]["appointmentClients"] == doc["appointmentClients"]
    code, record = status_of(doc["externalAppointmentId"])
    assert code == 200
    assert record["status"] == "pending"
    assert record["pending"] is True
    assert record["@odata.type"] == "#microsoft.graph.virtualAppointment"


def test_unknown_fields_are_ignored_and_not_stored(event_queue: QueueClient) -> None:
    doc = document(internalNote="do not keep", settings={"x": 1})
    status, _, _ = post(encode(doc))
    assert status == 202
    [message] = queued(event_queue)
    assert "internalNote" not in message["document"]
    assert message["document"]["settings"] == {}  # unknown settings dropped, defaults implied


def test_charset_parameter_is_accepted(event_queue: QueueClient) -> None:
    status, _, _ = post(encode(document()), content_type="application/json; charset=utf-8")
    assert status == 202


def test_cloudevent_structured_mode(event_queue: QueueClient) -> None:
    doc = document()
    status, body, _ = post(encode(cloud_event(doc)), content_type=CE)
    assert status == 202
    assert body["accepted"][0]["externalAppointmentId"] == doc["externalAppointmentId"]
    assert len(queued(event_queue)) == 1


def test_cloudevent_with_json_datacontenttype(event_queue: QueueClient) -> None:
    event = cloud_event(document(), datacontenttype="application/json; charset=utf-8")
    status, _, _ = post(encode(event), content_type=CE)
    assert status == 202


def test_cloudevent_batch_accepts_every_document(event_queue: QueueClient) -> None:
    docs = [document() for _ in range(3)]
    status, body, _ = post(encode([cloud_event(d) for d in docs]), content_type=CE_BATCH)
    assert status == 202
    assert [a["externalAppointmentId"] for a in body["accepted"]] == [
        d["externalAppointmentId"] for d in docs
    ]
    assert len(queued(event_queue)) == 3


def test_stale_and_duplicate_versions_are_accepted_but_newest_is_kept(
    event_queue: QueueClient,
) -> None:
    newest = document(lastModifiedDateTime="2026-11-20T10:00:00Z", subject="newest")
    external_id = newest["externalAppointmentId"]
    older = dict(newest, lastModifiedDateTime="2026-11-20T09:00:00Z", subject="older")
    same_instant = dict(newest, lastModifiedDateTime="2026-11-20T11:00:00+01:00", subject="dup")
    for body in (newest, older, same_instant):
        assert post(encode(body))[0] == 202

    _, record = status_of(external_id)
    assert record["subject"] == "newest"
    assert len(queued(event_queue)) == 3  # the reconciler decides; nothing accepted is dropped


# --- 400 -----------------------------------------------------------------------------------


def test_batch_is_all_or_nothing(event_queue: QueueClient) -> None:
    good = document()
    bad = document(endDateTime="2026-12-01T08:00:00Z")
    status, body, headers = post(
        encode([cloud_event(good), cloud_event(bad)]), content_type=CE_BATCH
    )
    assert status == 400
    assert headers["Content-Type"] == "application/problem+json"
    assert body["errors"] == [
        {"path": "/1/data/endDateTime", "message": "must be after startDateTime"}
    ]
    assert queued(event_queue) == []
    assert status_of(good["externalAppointmentId"])[0] == 404


@pytest.mark.parametrize(
    ("body", "content_type", "path"),
    [
        (b"{not json", "application/json", ""),
        (b"\xff\xfe", "application/json", ""),
        (b"[1, 2]", "application/json", ""),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", ""),
        (encode([]), CE_BATCH, ""),
        (encode([{"specversion": "1.0"}] * 101), CE_BATCH, ""),
        (
            encode({"specversion": "0.3", "id": "1", "source": "s", "type": "t", "data": {}}),
            CE,
            "/specversion",
        ),
        (encode({"specversion": "1.0", "source": "s", "type": "t", "data": {}}), CE, "/id"),
        (encode({"specversion": "1.0", "id": "1", "type": "t", "data": {}}), CE, "/source"),
        (encode({"specversion": "1.0", "id": "1", "source": "s", "data": {}}), CE, "/type"),
        (encode({"specversion": "1.0", "id": "1", "source": "s", "type": "t"}), CE, "/data"),
        (
            encode(
                {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "e30="}
            ),
            CE,
            "/data_base64",
        ),
        (
            encode(
                {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "s",
                    "type": "t",
                    "datacontenttype": "application/xml",
                    "data": {},
                }
            ),
            CE,
            "/datacontenttype",
        ),
        (encode(["not an event"]), CE_BATCH, "/0"),
        (encode(document(extra=0)).replace(b'"extra": 0', b'"extra": NaN'), "application/json", ""),
        (b'{"n": -Infinity}', CE, ""),
    ],
)
def test_malformed_bodies_and_envelopes_are_400(
    event_queue: QueueClient, body: bytes, content_type: str, path: str
) -> None:
    status, problem, _ = post(body, content_type=content_type)
    assert status == 400
    assert problem["status"] == 400
    assert path in [error["path"] for error in problem["errors"]]
    assert queued(event_queue) == []


LONG = "x" * 256


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"externalAppointmentId": ""}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a" * 201}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a/b"}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a?b"}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a#b"}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a\\b"}, "/externalAppointmentId"),
        ({"externalAppointmentId": "a\nb"}, "/externalAppointmentId"),
        ({"externalAppointmentId": 42}, "/externalAppointmentId"),
        ({"externalAppointmentId": "."}, "/externalAppointmentId"),
        ({"externalAppointmentId": ".."}, "/externalAppointmentId"),
        ({"lastModifiedDateTime": "2026-11-20T10:00:00"}, "/lastModifiedDateTime"),
        ({"lastModifiedDateTime": "yesterday"}, "/lastModifiedDateTime"),
        ({"status": "deleted"}, "/status"),
        ({"organizer": None}, "/organizer"),
        ({"organizer": "not a user"}, "/organizer"),
        ({"startDateTime": None}, "/startDateTime"),
        ({"startDateTime": "2026-12-01"}, "/startDateTime"),
        ({"endDateTime": None}, "/endDateTime"),
        ({"endDateTime": "2026-12-01T09:00:00Z"}, "/endDateTime"),
        ({"endDateTime": "2026-12-02T09:00:01Z"}, "/endDateTime"),
        ({"subject": LONG}, "/subject"),
        ({"timeZone": "Mars/Olympus"}, "/timeZone"),
        ({"timeZone": "localtime"}, "/timeZone"),
        ({"externalAppointmentUrl": "http://ehr.example.com/a/1"}, "/externalAppointmentUrl"),
        ({"externalAppointmentUrl": "not a url"}, "/externalAppointmentUrl"),
        ({"appointmentClients": [{"displayName": "A"}] * 21}, "/appointmentClients"),
        ({"appointmentClients": [{"emailAddress": "a@b.co"}]}, "/appointmentClients/0/displayName"),
        (
            {"appointmentClients": [{"displayName": "A", "emailAddress": "nope"}]},
            "/appointmentClients/0/emailAddress",
        ),
        (
            {"appointmentClients": [{"displayName": "A", "emailAddress": "a\x1b[31m@x.co"}]},
            "/appointmentClients/0/emailAddress",
        ),
        (
            {"appointmentClients": [{"displayName": "A", "smsCapablePhoneNumber": "2065550100"}]},
            "/appointmentClients/0/smsCapablePhoneNumber",
        ),
        (
            {"settings": {"allowClientToJoinUsingBrowser": "yes"}},
            "/settings/allowClientToJoinUsingBrowser",
        ),
        ({"settings": {"sendSmsNotifications": 1}}, "/settings/sendSmsNotifications"),
    ],
)
def test_every_field_rule_points_at_its_field(
    event_queue: QueueClient, overrides: dict[str, Any], path: str
) -> None:
    status, problem, _ = post(encode(document(**overrides)))
    assert status == 400
    assert problem["type"].endswith("validation")
    assert [error["path"] for error in problem["errors"]] == [path]
    assert queued(event_queue) == []


def test_exactly_24_hours_and_cancellation_without_times_are_valid(
    event_queue: QueueClient,
) -> None:
    day = document(startDateTime="2026-12-01T09:00:00+02:00", endDateTime="2026-12-02T07:00:00Z")
    cancelled = {
        "externalAppointmentId": new_id(),
        "lastModifiedDateTime": "2026-11-20T10:00:00.123456789+05:30",
        "status": "cancelled",
    }
    assert post(encode(day))[0] == 202
    assert post(encode(cancelled))[0] == 202


# Four UTF-8 bytes and two UTF-16 units. No character a rule allows is wider once stored:
# with control characters refused, JSON (ensure_ascii=False) writes every other character as
# itself or, for '"' and '\\', as two characters.
WIDE = "\U0001f600"
TABLE_PROPERTY_UTF16_UNITS = 32 * 1024  # Azure Table: a string property holds 64 KiB of UTF-16
QUEUE_MESSAGE_BYTES = 64 * 1024  # Azure Queue: a message holds 64 KiB


def largest_document() -> dict[str, Any]:
    """Every string at its longest, in the widest characters its rule allows; 20 clients."""
    zone = max(available_timezones() - {"localtime", "Factory", "posixrules"}, key=len)
    moment = ".123456789+05:30"
    return {
        "externalAppointmentId": WIDE * 200,
        "lastModifiedDateTime": "2026-11-20T10:00:00" + moment,
        "status": "scheduled",
        "organizer": WIDE * 64 + "@" + WIDE * 255,  # a UPN: 64 before the @, 255 after
        "startDateTime": "2026-12-01T09:00:00" + moment,
        "endDateTime": "2026-12-01T09:30:00" + moment,
        "subject": WIDE * 255,
        "timeZone": zone,
        "externalAppointmentUrl": "https://x.example/" + WIDE * (2048 - 18),
        "appointmentClients": [
            {
                "displayName": WIDE * 256,
                "emailAddress": WIDE * 64 + "@" + WIDE * 187 + ".x",  # 254 characters
                "smsCapablePhoneNumber": "+123456789012345",
            }
        ]
        * 20,
        "settings": {
            "allowClientToJoinUsingBrowser": True,
            "sendSmsNotifications": True,
            "sendSmsReminder": True,
            "sendEmailNotifications": True,
        },
    }


def test_largest_valid_document_is_accepted_and_reads_back(
    azurite: Azurite, event_queue: QueueClient
) -> None:
    doc = largest_document()
    external_id = doc["externalAppointmentId"]
    assert len(doc["appointmentClients"][0]["emailAddress"]) == 254

    status, body, _ = post(encode(doc))
    assert status == 202, body

    code, record = status_of(external_id)
    assert code == 200
    assert record["pending"] is True
    shown = {name: record[name] for name in doc if name not in ("lastModifiedDateTime", "status")}
    assert shown == {name: doc[name] for name in shown}

    # How close the stored and queued forms come to the service limits (Azurite enforces both).
    table = TableClient.from_connection_string(azurite.connection_string, TABLE_NAME)
    stored = table.get_entity(external_id, "desired")["Document"]
    units = len(stored.encode("utf-16-le")) // 2
    [message] = [m.content for m in event_queue.peek_messages(max_messages=32)]
    size = len(message.encode("utf-8"))
    assert units <= TABLE_PROPERTY_UTF16_UNITS, f"stored document: {units} UTF-16 units"
    assert size <= QUEUE_MESSAGE_BYTES, f"queue message: {size} bytes"


# --- 401 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"signature": ""}, "missing"),
        ({"signature": "garbage"}, "malformed"),
        ({"signature": "t=abc,v1=" + "0" * 64}, "malformed"),
        ({"signature": "t=1700000000"}, "malformed"),
        ({"signature": "v1=" + "0" * 64}, "malformed"),
        ({"skew": -305}, "tolerance"),
        ({"skew": +305}, "tolerance"),
        ({"secret": "some-other-secret"}, "does not match"),
    ],
)
def test_bad_signatures_are_401(
    event_queue: QueueClient, kwargs: dict[str, Any], reason: str
) -> None:
    if "skew" in kwargs:
        kwargs = {"timestamp": int(time.time()) + kwargs.pop("skew")}
    status, problem, _ = post(encode(document()), **kwargs)
    assert status == 401
    assert reason in problem["detail"]
    assert "errors" not in problem
    assert queued(event_queue) == []


def test_tampered_body_is_401(event_queue: QueueClient) -> None:
    body = encode(document())
    header = signatures.sign(SECRET, int(time.time()), body)
    status, _, _ = post(body.replace(b"Follow-up", b"Follow-on"), signature=header)
    assert status == 401


def test_any_configured_secret_and_any_v1_entry_may_match(
    event_queue: QueueClient, reconfigure: Any
) -> None:
    reconfigure(WEBHOOK_SECRETS=f"old-secret, {SECRET}")
    body = encode(document())
    now = int(time.time())
    wrong = signatures.compute("unrelated", now, body)
    right = signatures.compute("old-secret", now, body)
    assert post(body, signature=f"t={now},v1={wrong},v1={right}")[0] == 202
    assert post(encode(document()))[0] == 202  # the second secret still works


def test_unauthenticated_caller_learns_nothing_about_the_payload(event_queue: QueueClient) -> None:
    status, problem, _ = post(b"{not json", content_type="text/plain", secret="wrong")
    assert status == 401
    assert "errors" not in problem


# --- 413, 415, 503 -------------------------------------------------------------------------


def test_oversized_body_is_413_before_the_signature(
    event_queue: QueueClient, reconfigure: Any
) -> None:
    reconfigure(MAX_BODY_BYTES="2048")
    body = encode(document(subject="x" * 200, appointmentClients=[{"displayName": "x" * 250}] * 8))
    assert len(body) > 2048
    assert post(body, secret="wrong")[0] == 413
    assert queued(event_queue) == []


def test_other_content_types_are_415(event_queue: QueueClient) -> None:
    for content_type in ("text/plain", "application/xml", "multipart/form-data", ""):
        status, problem, _ = post(encode(document()), content_type=content_type)
        assert status == 415, content_type
        assert problem["status"] == 415


def test_no_secret_configured_fails_closed(event_queue: QueueClient, reconfigure: Any) -> None:
    reconfigure(WEBHOOK_SECRETS=" , ")
    status, problem, _ = post(encode(document()))
    assert status == 503
    assert "secret" in problem["detail"]
    assert queued(event_queue) == []


def test_storage_not_configured_is_503(reconfigure: Any) -> None:
    reconfigure(AzureWebJobsStorage="")
    status, _, headers = post(encode(document()))
    assert status == 503
    assert headers["Retry-After"]


def test_storage_outage_is_503_and_nothing_is_half_written(reconfigure: Any) -> None:
    storage = Azurite(ports=(free_port(), free_port(), free_port()))
    try:
        storage.start()
        reconfigure(AzureWebJobsStorage=storage.connection_string)
        doc = document()
        assert post(encode(document()))[0] == 202  # queue and table now exist
        storage.stop()

        started = time.monotonic()
        status, _, _ = post(encode(doc))
        assert status == 503
        assert time.monotonic() - started < 10  # SPEC: a dead account gives a quick 503

        storage.start()
        assert status_of(doc["externalAppointmentId"])[0] == 404
        queue = QueueClient.from_connection_string(storage.connection_string, "appointment-events")
        ids = [json.loads(m.content)["externalAppointmentId"] for m in queue.peek_messages(32)]
        assert doc["externalAppointmentId"] not in ids
    finally:
        storage.close()


def dead_endpoint(azurite: Azurite, service: str) -> str:
    """The live Azurite's connection string with one service moved to a port nobody serves."""
    port = {"queue": azurite.queue_port, "table": azurite.table_port}[service]
    return azurite.connection_string.replace(f":{port}/", f":{free_port()}/")


def test_queue_outage_is_503_and_no_desired_row_is_written(
    azurite: Azurite, reconfigure: Any
) -> None:
    reconfigure(AzureWebJobsStorage=dead_endpoint(azurite, "queue"))
    doc = document()
    status, problem, headers = post(encode(doc))

    assert status == 503
    assert headers["Retry-After"]
    assert "retry the whole request" in problem["detail"]
    # The table is up: had the row been written first, the record would be stuck at pending.
    assert status_of(doc["externalAppointmentId"])[0] == 404


def test_table_outage_after_enqueue_is_503_and_a_retry_is_accepted(
    azurite: Azurite, event_queue: QueueClient, reconfigure: Any
) -> None:
    doc = document()
    body = encode(doc)
    reconfigure(AzureWebJobsStorage=dead_endpoint(azurite, "table"))
    assert post(body)[0] == 503
    # The message went first and carries the whole document: the reconciler stores it.
    [message] = queued(event_queue)
    assert message["document"]["externalAppointmentId"] == doc["externalAppointmentId"]

    reconfigure(AzureWebJobsStorage=azurite.connection_string)
    assert post(body)[0] == 202  # the whole request again, as the 503 says
    assert status_of(doc["externalAppointmentId"])[0] == 200
    assert len(queued(event_queue)) == 2  # the same version twice: the reconciler skips one


def test_storage_refusal_is_500_problem_and_nothing_is_recorded(
    azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    # No valid document is large enough for Azurite to refuse it (see the largest-document
    # test), so the refusal comes from a queue whose name Azurite refuses: a real 400.
    refusing = QueueClient.from_connection_string(azurite.connection_string, "Not_A_Queue")
    intake = Intake(settings.current(), runtime.store, lambda: EventQueue(refusing, refusing))
    doc = document()
    request = signed_request(encode(doc))
    headers = {key.lower(): value for key, value in request.headers.items()}
    caplog.set_level(logging.INFO, logger="shared.intake")

    reply = intake.handle(headers, request.get_body(), "corr-refused")

    assert reply.status == 500
    assert reply.headers["Content-Type"] == "application/problem+json"
    problem = json.loads(reply.body)
    assert problem["detail"] == "Storage refused the document: InvalidResourceName."
    assert "InvalidResourceName" in caplog.text
    assert "corr-refused" in caplog.text
    assert status_of(doc["externalAppointmentId"])[0] == 404


def storage_calls(azurite: Azurite) -> dict[str, Callable[[], object]]:
    """Real calls to Azurite, each named by what it answers (an error code or the trouble)."""
    connection = azurite.connection_string
    table = TableClient.from_connection_string(connection, "guardprobe")
    with contextlib.suppress(ResourceExistsError):
        table.create_table()
    queue = QueueClient.from_connection_string(connection, QUEUE_NAME)
    wrong_key = connection.replace(ACCOUNT_KEY, "A" + ACCOUNT_KEY[1:])
    entity = {"PartitionKey": "p", "RowKey": "r"}
    return {
        "PropertyValueTooLarge": lambda: table.upsert_entity(
            entity | {"Big": "x" * (TABLE_PROPERTY_UTF16_UNITS + 1)}
        ),
        "InvalidInput": lambda: table.upsert_entity(entity | {"PartitionKey": "p" * 1025}),
        "RequestBodyTooLarge": lambda: queue.send_message("x" * (QUEUE_MESSAGE_BYTES + 1)),
        "InvalidResourceName": lambda: QueueClient.from_connection_string(
            connection, "Not_A_Queue"
        ).send_message("x"),
        "wrong key (table)": lambda: TableClient.from_connection_string(
            wrong_key, table.table_name
        ).upsert_entity(entity),
        "wrong key (queue)": lambda: QueueClient.from_connection_string(
            wrong_key, QUEUE_NAME
        ).send_message("x"),
        "nothing listens": lambda: TableClient.from_connection_string(
            dead_endpoint(azurite, "table"), table.table_name, retry_total=0
        ).upsert_entity(entity),
    }


@pytest.mark.parametrize(
    "code", ["PropertyValueTooLarge", "InvalidInput", "RequestBodyTooLarge", "InvalidResourceName"]
)
def test_permanent_storage_refusals_are_rejected_not_unavailable(
    azurite: Azurite, event_queue: QueueClient, code: str
) -> None:
    # event_queue: the app's queue exists, so an oversized message is refused for its size.
    with pytest.raises(StorageRejected) as caught:
        _guard(storage_calls(azurite)[code])
    assert caught.value.error_code == code


@pytest.mark.parametrize("trouble", ["wrong key (table)", "wrong key (queue)", "nothing listens"])
def test_auth_and_connection_trouble_is_unavailable(azurite: Azurite, trouble: str) -> None:
    # A rotated key or a role assignment still propagating is fixed without the sender.
    with pytest.raises(StorageUnavailable):
        _guard(storage_calls(azurite)[trouble])


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the server's status and error code, as the services do."""

    server: _StatusServer

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = {"lang": "en-US", "value": "refused"}
        body = json.dumps({"odata.error": {"code": self.server.code, "message": message}}).encode()
        self.send_response(self.server.status)
        self.send_header("x-ms-error-code", self.server.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StatusServer(ThreadingHTTPServer):
    status = 503
    code = "ServerBusy"


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    """A local HTTP server standing in for a storage account in trouble: Azurite cannot be made
    to answer 408, 429 or 5xx, and those are what the real service sends under load."""
    server = _StatusServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "rejected"),
    [
        (408, "OperationTimedOut", False),
        (429, "TooManyRequests", False),
        (500, "InternalError", False),
        (503, "ServerBusy", False),
        (401, "NoAuthenticationInformation", False),
        (403, "AuthorizationPermissionMismatch", False),
        (400, "InvalidInput", True),
        (413, "RequestBodyTooLarge", True),
        (400, "not a <token>", True),
    ],
)
def test_storage_answers_map_by_status(
    status_server: _StatusServer, status: int, code: str, rejected: bool
) -> None:
    status_server.status, status_server.code = status, code
    port = status_server.server_address[1]
    table = TableClient(
        f"http://127.0.0.1:{port}/{ACCOUNT}",
        "appointments",
        credential=AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
        retry_total=0,
    )

    def call() -> object:
        return table.upsert_entity({"PartitionKey": "p", "RowKey": "r"})

    with pytest.raises(StorageRejected if rejected else StorageUnavailable) as caught:
        _guard(call)
    if isinstance(caught.value, StorageRejected):
        # A code that is no plain token is not echoed to the sender.
        assert caught.value.error_code == (code if code.isalnum() else f"HTTP {status}")


# --- settings and logs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"), [("WEBHOOK_TOLERANCE_SECONDS", "5m"), ("MAX_BODY_BYTES", "10")]
)
def test_bad_numeric_setting_is_a_503_problem_that_names_it(
    reconfigure: Any, caplog: pytest.LogCaptureFixture, setting: str, value: str
) -> None:
    reconfigure(**{setting: value})
    caplog.set_level(logging.INFO)
    status, problem, headers = post(encode(document()), headers={"X-Correlation-Id": "corr-cfg"})

    assert status == 503
    assert headers["Content-Type"] == "application/problem+json"
    assert problem["detail"] == f"The webhook endpoint is misconfigured: {setting}."
    [line] = [r.getMessage() for r in caplog.records if setting in r.getMessage()]
    assert "corr-cfg" in line
    assert SECRET not in caplog.text

    external_id = new_id()
    response = get_appointment(
        get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    )
    assert response.status_code == 503
    assert json.loads(response.get_body())["detail"] == f"The app is misconfigured: {setting}."


def _oversized() -> bytes:
    return encode(document(subject="x" * 200, appointmentClients=[{"displayName": "x" * 250}] * 8))


@pytest.mark.parametrize(
    ("body", "kwargs", "settings_", "status"),
    [
        (encode(document(endDateTime="bad")), {}, {}, 400),
        (_oversized(), {}, {"MAX_BODY_BYTES": "2048"}, 413),
        (encode(document()), {"content_type": "text/plain"}, {}, 415),
        (encode(document()), {}, {"WEBHOOK_SECRETS": ""}, 503),
    ],
)
def test_refusals_are_logged_with_the_correlation_id(
    event_queue: QueueClient,
    reconfigure: Any,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    kwargs: dict[str, Any],
    settings_: dict[str, str],
    status: int,
) -> None:
    reconfigure(**settings_)
    caplog.set_level(logging.INFO, logger="shared.intake")
    headers = {"X-Correlation-Id": "corr-logged"}
    assert post(body, headers=headers, **kwargs)[0] == status
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.intake"]
    assert len(lines) == 1
    assert "corr-logged" in lines[0]
    assert "Jordan" not in lines[0]


# --- status, replay, health ----------------------------------------------------------------


def test_status_of_unknown_or_impossible_id_is_404() -> None:
    for external_id in (new_id(), "bad?id", ""):
        response = get_appointment(
            get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
        )
        assert response.status_code == 404
        problem = json.loads(response.get_body())
        assert problem["status"] == 404
        assert external_id == "" or external_id not in problem["detail"]


def test_replay_enqueues_the_newest_stored_document(event_queue: QueueClient) -> None:
    doc = document()
    external_id = doc["externalAppointmentId"]
    post(encode(doc))
    event_queue.clear_messages()
    request = get_request(
        f"appointments/{external_id}/reconcile", {"externalAppointmentId": external_id}
    )
    response = reconcile_appointment(request)
    assert response.status_code == 202
    [message] = queued(event_queue)
    assert message["replay"] is True
    assert message["document"]["lastModifiedDateTime"] == doc["lastModifiedDateTime"]

    unknown = new_id()
    missing = reconcile_appointment(
        get_request(f"appointments/{unknown}/reconcile", {"externalAppointmentId": unknown})
    )
    assert missing.status_code == 404


def test_health_is_ok_without_io(reconfigure: Any) -> None:
    reconfigure(AzureWebJobsStorage="", WEBHOOK_SECRETS="")
    response = health(get_request("health"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "ok"}


def test_logs_never_carry_client_details(
    event_queue: QueueClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = document()
    post(encode(doc))
    post(encode(document(endDateTime="bad")))
    client = doc["appointmentClients"][0]
    for secret_value in (
        client["displayName"],
        client["emailAddress"],
        client["smsCapablePhoneNumber"],
        SECRET,
    ):
        assert secret_value not in caplog.text
    assert doc["externalAppointmentId"] in caplog.text


def test_unresolved_key_vault_reference_is_no_secret(
    event_queue: QueueClient, reconfigure: Any
) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/webhook-secrets/)"
    reconfigure(WEBHOOK_SECRETS=reference)
    status, _, _ = post(encode(document()), secret=reference)
    assert status == 503
    assert queued(event_queue) == []


def test_a_correlation_id_with_a_trailing_newline_is_replaced_not_echoed(
    event_queue: QueueClient,
) -> None:
    # `$` matches before a final newline: echoing "corr\n" would break the response header.
    _, _, headers = post(encode(document()), headers={"X-Correlation-Id": "corr\n"})
    assert headers["X-Correlation-Id"] != "corr\n"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Correlation-Id"])
