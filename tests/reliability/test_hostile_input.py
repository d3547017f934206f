"""Hostile input: schemathesis from docs/openapi.yaml, hypothesis bodies, fuzzed queue messages.

* schemathesis generates positive and negative cases for all four routes from the OpenAPI
  description and sends them over loopback HTTP to a tiny stdlib server that maps the routes to
  the in-process functions (as the Functions host does). Most webhook cases are signed over
  the exact bytes sent, so they get past the signature and exercise validation; the rest keep
  schemathesis' hostile X-Signature. Every answer must be a documented, non-5xx status whose
  body matches the schema.
* hypothesis sends deeply nested, oversized, unicode-heavy and injection-shaped bodies and
  headers straight to the intake.
* Afterwards every message on the queue must hold a valid document: nothing invalid was
  enqueued.
* hypothesis-generated queue messages go to the queue function: it returns or raises
  RetryLater, never anything else, and what is not a message of this app lands in the poison
  queue.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import signatures
from shared.events import AppointmentEvent, MalformedMessage
from shared.http_api import get_appointment, health, receive_appointments, reconcile_appointment
from shared.queue_functions import reconcile_appointment_event
from shared.reconciler import RetryLater
from shared.settings import POISON_QUEUE_NAME
from tests.support import SECRET, document, encode, queue_message, signed_request
from tests.unit.factories import DOCUMENT_FIELDS

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SIGNED_SHARE = 9  # of 10 webhook cases carry a valid signature
HTTP_CASES = {"POST /api/webhooks/appointments": 1650, "default": 200}
MINIMUM_REQUESTS = 2000


# --- a tiny host: loopback HTTP to the in-process functions ---------------------------------

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def _route(method: str, parts: list[str]) -> tuple[Handler, dict[str, str]] | None:
    if parts[:1] != ["api"]:
        return None
    rest = parts[1:]
    if method == "POST" and rest == ["webhooks", "appointments"]:
        return receive_appointments, {}
    if method == "GET" and rest == ["health"]:
        return health, {}
    if len(rest) == 2 and rest[0] == "appointments" and method == "GET":
        return get_appointment, {"externalAppointmentId": rest[1]}
    if (
        method == "POST"
        and len(rest) == 3
        and rest[:1] == ["appointments"]
        and rest[2] == "reconcile"
    ):
        return reconcile_appointment, {"externalAppointmentId": rest[1]}
    return None


class _Host(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 10 * 1024 * 1024)) if length else b""
        # Route values are URL-decoded, as the Functions host does; an encoded "/" stays inside.
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        found = _route(self.command, parts)
        if found is None:
            payload = json.dumps(
                {
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "No such route.",
                }
            ).encode()
            self._reply(404, {"Content-Type": "application/problem+json"}, payload)
            return
        function, route_params = found
        request = func.HttpRequest(
            method=self.command,
            url=f"http://127.0.0.1{self.path}",
            headers=dict(self.headers.items()),
            params=dict(parse_qsl(url.query, keep_blank_values=True)),
            route_params=route_params,
            body=body,
        )
        try:
            response = function(request)
            status, headers, payload = (
                response.status_code,
                dict(response.headers),
                response.get_body(),
            )
        except Exception as error:  # the host turns a crash into a 500
            status, headers, payload = 500, {"Content-Type": "text/plain"}, repr(error).encode()
        self._reply(status, headers, payload)

    def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve


@pytest.fixture
def local_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _queued_documents_are_valid(queue: QueueClient) -> int:
    """Read every message (invisible for a while) and parse it; return how many there were."""
    seen = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = list(queue.receive_messages(max_messages=32, visibility_timeout=300))
        if not batch:
            return seen
        for message in batch:
            try:
                AppointmentEvent.from_message(str(message.content))
            except MalformedMessage as error:
                raise AssertionError(f"an invalid document was enqueued: {error}") from None
            seen += 1
    raise TimeoutError("could not read the whole queue")


# --- schemathesis ---------------------------------------------------------------------------


def _send(case: Any, base_url: str, session: Any) -> Any:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode("utf-8")
    elif isinstance(kwargs.get("data"), bytes):
        body = kwargs["data"]
    elif kwargs.get("data") is not None:
        body = str(kwargs["data"]).encode("utf-8")
    else:
        body = b""
    has_signature = any(k.lower() == "x-signature" for k in headers)
    if has_signature and zlib.crc32(body) % 10 < SIGNED_SHARE:
        headers = {k: v for k, v in headers.items() if k.lower() != "x-signature"}
        headers[signatures.HEADER] = signatures.sign(SECRET, int(time.time()), body)
    headers["x-functions-key"] = "local-keys-are-not-enforced"
    return session.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=headers,
        data=body,
        timeout=30,
    )


def _fuzz(
    operation: Any,
    base_url: str,
    session: Any,
    checks: list[Any],
    sent: dict[str, int],
    statuses: dict[int, int],
) -> None:
    """Run one operation's schemathesis cases (positive and negative) through the local host."""
    from schemathesis import GenerationMode

    label = operation.label
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @settings(
        max_examples=HTTP_CASES.get(label, HTTP_CASES["default"]),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            response = _send(case, base_url, session)
        except (UnicodeError, ValueError):
            # requests refuses to put some generated header values on the wire at all.
            sent["unsendable"] = sent.get("unsendable", 0) + 1
            return
        sent[label] = sent.get(label, 0) + 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_cases_get_documented_answers_and_never_a_5xx(
    local_host: str, emulator: GraphEmulator, event_queue: QueueClient
) -> None:
    schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis==4.32.5")
    import requests
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_path(OPENAPI)
    session = requests.Session()
    sent: dict[str, int] = {}
    statuses: dict[int, int] = {}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz(operation, local_host, session, checks, sent, statuses)
    total = sum(v for k, v in sent.items() if k != "unsendable")
    enqueued = _queued_documents_are_valid(event_queue)
    print(f"\nschemathesis: sent {sent}, statuses {statuses}, enqueued {enqueued}")
    assert total >= MINIMUM_REQUESTS, sent
    assert statuses.get(202, 0) > 50, f"too few cases got past validation: {statuses}"
    assert statuses.get(400, 0) > 50, f"too few cases exercised validation: {statuses}"


# --- hypothesis: hostile bodies and headers straight to the intake --------------------------

INJECTIONS = [
    "' or PartitionKey ne '",
    "PartitionKey eq 'upn:x' or RowKey ne ''",
    "'; DROP TABLE appointments; --",
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%2e%2e%2f",
    "\u202eevil",
    "a\u0000b",
    "\U0010ffff",
    "$where",
    "__proto__",
]
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.sampled_from(INJECTIONS),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def hostile_body(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["mutated", "nested", "oversized", "unicode", "raw", "batch"]))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
                "text/plain",
                "",
                "application/json; charset=latin-1",
                "APPLICATION/JSON",
            ]
        )
    )
    if kind == "mutated":
        body = document()
        for name in draw(st.lists(st.sampled_from(DOCUMENT_FIELDS), min_size=1, max_size=4)):
            body[name] = draw(json_value)
        return content_type, encode(body)
    if kind == "nested":
        depth = draw(st.integers(50, 50_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        tail = "1" if opener == '{"a":' else ""
        return content_type, (opener * depth + tail + closer * depth).encode()
    if kind == "oversized":
        size = draw(st.integers(262_144 - 64, 262_144 + 4096))
        return content_type, encode(document(subject="x" * size))[: size + 200]
    if kind == "unicode":
        text = draw(st.text(min_size=1, max_size=400))
        body = document(
            externalAppointmentId=text[:200],
            subject=text[:255],
            appointmentClients=[{"displayName": text[:256] or "x"}],
        )
        return content_type, json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if kind == "batch":
        events = draw(st.lists(json_value, min_size=0, max_size=3))
        wrapped = [
            {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": e} for e in events
        ]
        return content_type, encode(wrapped)
    return content_type, draw(st.binary(max_size=2000))


@pytest.mark.slow
def test_hostile_bodies_and_headers_never_crash_the_intake(event_queue: QueueClient) -> None:
    statuses: dict[int, int] = {}

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=hostile_body(),
        signature=st.one_of(
            st.none(),
            st.text(max_size=200),
            st.sampled_from(["t=1,v1=" + "0" * 64, "t=,v1=", ","]),
        ),
        correlation=st.text(max_size=100),
    )
    def run(case: tuple[str, bytes], signature: str | None, correlation: str) -> None:
        content_type, body = case
        headers = {"X-Correlation-Id": correlation}
        if signature is not None and zlib.crc32(body) % 4 == 0:
            request = signed_request(
                body, content_type=content_type, signature=signature, headers=headers
            )
        else:
            request = signed_request(body, content_type=content_type, headers=headers)
        response = receive_appointments(request)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (202, 400, 401, 413, 415), response.get_body()[:300]
        content = response.headers["Content-Type"]
        assert content in ("application/json", "application/problem+json")
        json.loads(response.get_body())

    run()
    enqueued = _queued_documents_are_valid(event_queue)
    print(f"\nhostile bodies: statuses {statuses}, enqueued {enqueued}")
    assert sum(statuses.values()) >= 400
    assert statuses.get(400, 0) > 100, statuses


def test_nothing_invalid_was_enqueued_by_hostile_bodies(event_queue: QueueClient) -> None:
    # Runs the hostile-body test's shapes once more on a cleared queue, then reads it back.
    for content_type, body in [
        ("application/json", b"[" * 100_000 + b"]" * 100_000),
        ("application/json", encode(document(externalAppointmentId="a/b"))),
        ("application/cloudevents-batch+json", encode([{"specversion": "1.0"}] * 101)),
        ("application/json", encode(document(subject="\u0000"))),
    ]:
        response = receive_appointments(signed_request(body, content_type=content_type))
        assert response.status_code in (400, 413)
    assert _queued_documents_are_valid(event_queue) == 0


# --- hypothesis: hand-crafted queue messages ------------------------------------------------


@st.composite
def queue_body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "text", "json", "envelope", "valid-ish"]))
    if kind == "binary":
        return draw(st.binary(max_size=500))
    if kind == "text":
        return draw(st.text(max_size=500)).encode("utf-8", errors="surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_value)).encode()
    if kind == "envelope":
        envelope = {
            "externalAppointmentId": draw(json_value),
            "correlationId": draw(json_value),
            "deferrals": draw(json_value),
            "replay": draw(json_value),
            "document": draw(json_value),
        }
        return json.dumps(envelope).encode()
    body = document(
        organizer=draw(
            st.sampled_from(
                ["6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01", "nobody@contoso.onmicrosoft.com"]
            )
        )
    )
    for name in draw(st.lists(st.sampled_from(DOCUMENT_FIELDS), max_size=2)):
        body[name] = draw(json_value)
    envelope = {"correlationId": "fuzz", "document": body}
    if draw(st.booleans()):
        envelope["deferrals"] = draw(json_value)
    return json.dumps(envelope).encode()


def _is_message_of_this_app(raw: bytes) -> bool:
    try:
        AppointmentEvent.from_message(raw.decode("utf-8", errors="replace"))
    except MalformedMessage:
        return False
    return True


@pytest.mark.slow
def test_fuzzed_queue_messages_never_crash_the_worker(
    emulator: GraphEmulator, azurite: Azurite, event_queue: QueueClient
) -> None:
    poison = QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)
    outcomes = {"returned": 0, "retry_later": 0, "poisoned": 0}

    def poison_count() -> int:
        return int(poison.get_queue_properties().approximate_message_count or 0)

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=queue_body())
    def run(raw: bytes) -> None:
        before = poison_count()
        try:
            reconcile_appointment_event(queue_message(raw))
            outcomes["returned"] += 1
        except RetryLater:
            outcomes["retry_later"] += 1
        after = poison_count()
        if _is_message_of_this_app(raw):
            assert after == before, "a valid message was parked in the poison queue"
        else:
            assert after == before + 1, "a malformed message did not reach the poison queue"
            outcomes["poisoned"] += 1

    run()
    print(f"\nfuzzed queue messages: {outcomes}")
    assert outcomes["poisoned"] > 20, outcomes
