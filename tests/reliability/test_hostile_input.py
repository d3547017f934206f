"""Hostile input: schemathesis from docs/openapi.yaml, hypothesis bodies, fuzzed queue messages.

* schemathesis generates positive and negative cases for every route from the OpenAPI
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

import base64
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
from shared.events import AppointmentEvent, MalformedMessage, parse_message
from shared.http_api import (
    delete_organizer,
    erase_appointment,
    get_appointment,
    get_source_health,
    health,
    list_appointments,
    list_organizers,
    receive_appointments,
    receive_source,
    reconcile_appointment,
    reconcile_appointments,
    resend_callback,
    save_organizers,
)
from shared.queue_functions import reconcile_appointment_event
from shared.reconciler import RetryLater
from shared.settings import POISON_QUEUE_NAME
from shared.sources import calcom
from shared.sources.base import charset
from tests.support import (
    ALEX,
    ALEX_UPN,
    SECRET,
    document,
    encode,
    queue_message,
    signed_request,
    source_request,
)
from tests.unit.factories import DOCUMENT_FIELDS

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SIGNED_SHARE = 9  # of 10 webhook cases carry a valid signature
# Bulk replays enqueue up to 1000 messages each: fewer cases keep the run's queue small.
HTTP_CASES = {
    "POST /api/webhooks/appointments": 1650,
    "POST /api/appointments/reconcile": 60,
    "default": 200,
}
MINIMUM_REQUESTS = 2000


# --- a tiny host: loopback HTTP to the in-process functions ---------------------------------

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def _route(method: str, parts: list[str]) -> tuple[Handler, dict[str, str]] | None:
    if parts[:1] != ["api"]:
        return None
    rest = parts[1:]
    if method == "POST" and rest == ["webhooks", "appointments"]:
        return receive_appointments, {}
    if method == "POST" and len(rest) == 2 and rest[0] == "webhooks":
        return receive_source, {"source": rest[1]}
    if rest == ["organizers"]:
        organizers = {"PUT": save_organizers, "GET": list_organizers, "DELETE": delete_organizer}
        if method in organizers:
            return organizers[method], {}
    if method == "GET" and rest == ["health"]:
        return health, {}
    if method == "GET" and len(rest) == 2 and rest[0] == "sources":
        return get_source_health, {"source": rest[1]}
    if rest == ["appointments"] and method == "GET":
        return list_appointments, {}
    if rest == ["appointments", "reconcile"] and method == "POST":
        return reconcile_appointments, {}
    if len(rest) == 2 and rest[0] == "appointments" and method == "GET":
        return get_appointment, {"externalAppointmentId": rest[1]}
    if len(rest) == 2 and rest[0] == "appointments" and method == "DELETE":
        return erase_appointment, {"externalAppointmentId": rest[1]}
    if (
        method == "POST"
        and len(rest) == 3
        and rest[:1] == ["appointments"]
        and rest[2] == "reconcile"
    ):
        return reconcile_appointment, {"externalAppointmentId": rest[1]}
    if (
        method == "POST"
        and len(rest) == 3
        and rest[:1] == ["appointments"]
        and rest[2] == "callback"
    ):
        return resend_callback, {"externalAppointmentId": rest[1]}
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
    do_PUT = _serve
    do_DELETE = _serve


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
                # A DELETE enqueues an erase event (an id, no document): valid too.
                parse_message(str(message.content))
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


# --- hypothesis: the named sources' routes, in process --------------------------------------
#
# POST /api/webhooks/{source} for each kind, mostly signed the kind's own way so the cases get
# past authentication and reach the parser, the validation and the store; the rest unsigned or
# wrongly signed. The functions are called in-process (faster than loopback, same code path as
# the host past the routing).

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOURCE_SECRET = "hostile-source-secret-0123456789"
SOURCE_CASES = 2000  # per kind, in total over its tests
SOURCES = {"hl7": "hl7v2", "cly": "calendly", "cal": "calcom"}
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json; charset=latin-1",
    "application/json; charset=nonsense",
    "APPLICATION/JSON",
    "application/hl7-v2",
    "application/hl7-v2; charset=iso-8859-1",
    "application/hl7-v2+er7",
    "x-application/hl7-v2+er7",
    "text/plain",
    "text/plain; charset=utf-16",
    "text/plain; charset=ascii",
    "text/plain; charset=",
    "text/xml",
    "multipart/form-data; boundary=x",
    "",
    ";;;",
]


def _has_kind(kind: str) -> bool:
    from shared.sources import REGISTRY

    return kind in REGISTRY


@pytest.fixture
def named_sources(reconfigure: Callable[..., None], event_queue: QueueClient) -> QueueClient:
    values: dict[str, str] = {}
    for name, kind in SOURCES.items():
        if _has_kind(kind):
            values[f"SOURCES__{name}__KIND"] = kind
            values[f"SOURCES__{name}__SECRETS"] = SOURCE_SECRET
    reconfigure(**values)
    return event_queue


def _fixture(kind: str, name: str) -> Any:
    return json.loads((FIXTURES / kind / f"{name}.json").read_bytes())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (the document itself is ())."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any, *, delete: bool) -> Any:
    if not path:
        return new
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = new
    return value


@st.composite
def json_delivery(draw: st.DrawFn, kind: str, names: list[str]) -> tuple[str, bytes]:
    """A Calendly or Cal.com delivery with its shape broken: fields replaced, removed, huge."""
    content_type = draw(st.sampled_from(["application/json"] * 12 + CONTENT_TYPES))
    shape = draw(
        st.sampled_from(["mutated"] * 6 + ["retyped", "nested", "oversized", "raw", "unicode"])
    )
    body = _fixture(kind, draw(st.sampled_from(names)))
    if shape in ("mutated", "retyped"):
        # A fresh appointment now and then, so cases do not all pile onto one appointment.
        if draw(st.booleans()):
            fresh = f"{zlib.crc32(repr(draw(st.integers())).encode()):08x}"
            text = json.dumps(body).replace("EVT-7C2D-0001", f"EVT-{fresh}")
            body = json.loads(text.replace('"uid": "', f'"uid": "{fresh}'))
        paths = _paths(body)
        for _ in range(draw(st.integers(1, 4))):
            path = draw(st.sampled_from(paths))
            if shape == "retyped":
                new: Any = draw(st.sampled_from([None, 0, -1, 1e308, True, "", [], {}, "x" * 5000]))
            else:
                new = draw(json_value)
            body = _replace(body, path, new, delete=draw(st.integers(0, 3)) == 0)
            paths = _paths(body)
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        return content_type, raw
    if shape == "nested":
        depth = draw(st.integers(50, 20_000))
        return content_type, (b'{"payload":' * depth + b"1" + b"}" * depth)
    if shape == "oversized":
        size = draw(st.integers(262_144 - 512, 262_144 + 4096))
        body["payload"]["padding"] = "x" * size
        return content_type, json.dumps(body).encode()[: size + 400]
    if shape == "unicode":
        text = draw(st.text(min_size=1, max_size=300))
        encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-32"]))
        raw_text = json.dumps({"event": text, "triggerEvent": text, "payload": {"name": text}})
        return content_type, raw_text.encode(encoding, "replace")
    return content_type, draw(st.binary(max_size=2000))


HL7_DELIMITERS = "|^~\\&#!$*+/:;@_`'\"<>{}-=.,?%"


@st.composite
def er7_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """An HL7 v2 message: SIU-shaped, with random delimiters, fields, terminators and bytes."""
    content_type = draw(
        st.sampled_from(
            ["application/hl7-v2"] * 10
            + ["application/hl7-v2+er7", "x-application/hl7-v2+er7", "text/plain"]
            + CONTENT_TYPES
        )
    )
    shape = draw(
        st.sampled_from(
            ["er7"] * 5 + ["fixture"] * 4 + ["no-msh", "binary", "oversized", "encoded"]
        )
    )
    if shape == "binary":
        return content_type, draw(st.binary(max_size=2000))
    if shape == "fixture":
        return content_type, draw(er7_fixture())
    delimiters = draw(
        st.one_of(
            st.just("|^~\\&"),
            st.text(alphabet=HL7_DELIMITERS, min_size=0, max_size=6),
        )
    )
    field_sep = delimiters[:1] or "|"
    encoding = delimiters[1:5]
    comp = encoding[:1] or "^"
    rep = encoding[1:2] or "~"

    def value(kind: str = "text") -> str:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            return ""
        if choice == 1:
            return draw(st.text(max_size=60))
        if choice == 2:
            return "x" * draw(st.sampled_from([1000, 20_000, 70_000]))
        if choice == 3:
            return draw(st.sampled_from(INJECTIONS))
        if choice == 4:
            return draw(st.text(alphabet=HL7_DELIMITERS + "\r\n\x0b\x1c", max_size=20))
        return draw(st.sampled_from(FIELD_SAMPLES[kind]))

    trigger = draw(st.sampled_from(["S12", "S13", "S14", "S15", "S17", "S26", "A01", "", "S1"]))
    version = draw(st.sampled_from(["2.5.1", "2.3", "2.8", "2.2", "3.0", "", "2.9"]))
    msh_fields = [
        value(),
        value(),
        value(),
        value(),
        value("time"),
        "",
        f"{draw(st.sampled_from(['SIU', 'ADT', 'ACK', '', 'siu']))}{comp}{trigger}",
        value("id"),
        draw(st.sampled_from(["P", "T", ""])),
        version,
    ]
    segments = [f"MSH{field_sep}{encoding}{field_sep}" + field_sep.join(msh_fields)]
    sch = [
        value("id"),
        value("id"),
        "",
        "",
        "",
        "",
        "",
        "",
        value("number"),
        value("unit"),
        f"{comp}{comp}{comp}{value('time')}{comp}{value('time')}",
        *[""] * 13,
        draw(st.sampled_from(["Booked", "Cancelled", "DC", "", "x"])),
    ]
    optional = {
        "SCH": "SCH" + field_sep + field_sep.join(sch),
        "TQ1": "TQ1" + field_sep * 7 + value("time") + field_sep + value("time"),
        "PID": "PID"
        + field_sep * 5
        + f"{value()}{comp}{value()}"
        + field_sep * 8
        + f"{value('phone')}{comp}{value()}{comp}{value()}"
        + f"{rep}{value()}{comp}NET{comp}Internet{comp}{value()}",
        "AIP": "AIP" + field_sep * 3 + value("id"),
        "AIG": "AIG" + field_sep * 3 + value("id"),
        "PV1": "PV1" + field_sep * 7 + value("id"),
        "ZZZ": "ZZZ" + field_sep + value(),
    }
    chosen = draw(st.lists(st.sampled_from(list(optional)), max_size=8))
    segments += [optional[name] for name in chosen]
    if shape == "no-msh":
        segments = segments[1:] or ["PID|1"]
    if draw(st.integers(0, 5)) == 0:
        segments.insert(0, draw(st.text(max_size=50)))
    terminator = draw(st.sampled_from(["\r", "\n", "\r\n", "\n\r", "\r\r"]))
    text = terminator.join(segments) + draw(st.sampled_from(["", terminator]))
    if draw(st.integers(0, 4)) == 0:
        text = "\x0b" + text + "\x1c\r"
    if shape == "oversized":
        text += terminator + "NTE|1||" + "x" * draw(st.integers(262_144, 262_144 + 4096))
    codec = "utf-8"
    if shape == "encoded":
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32"]))
    return content_type, text.encode(codec, "replace")


HL7_FIXTURES = sorted((FIXTURES / "hl7").glob("*.hl7")) if (FIXTURES / "hl7").is_dir() else []


@st.composite
def er7_fixture(draw: st.DrawFn) -> bytes:
    """A real SIU fixture: a fresh appointment id, maybe other delimiters, a few fields broken."""
    text = draw(st.sampled_from(HL7_FIXTURES)).read_text("utf-8")
    fresh = f"{zlib.crc32(repr(draw(st.integers())).encode()):08x}"
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line]
    for index, line in enumerate(lines):
        if line.startswith("SCH|"):
            fields = line.split("|")
            fields[1:3] = [f"PL-{fresh}", f"FL-{fresh}"]
            lines[index] = "|".join(fields)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        fields = lines[index].split("|")
        at = draw(st.integers(1, max(1, len(fields) - 1)))
        if at < len(fields) and not (index == 0 and at == 1):
            fields[at] = draw(
                st.one_of(st.text(max_size=40), st.sampled_from(["", '""', "^^^", "\\X0D\\"]))
            )
        lines[index] = "|".join(fields)
    message = "\r".join(lines) + "\r"
    if draw(st.integers(0, 3)) == 0:
        # The same message with other (valid, distinct) encoding characters.
        chosen = draw(st.permutations("|^~\\&#"))[:5]
        table = {ord(a): b for a, b in zip("|^~\\&", chosen, strict=True)}
        message = message.translate(table)
    return message.encode("utf-8")


FIELD_SAMPLES = {
    "text": ["APP", "FAC", "Rivera^Morgan", "Quinn^Avery", "x"],
    "time": [
        "20261201090000",
        "20261201090000-0500",
        "202612010900",
        "2026",
        "20261332256161",
        "99999999999999",
        "20261201090000.1234+1400",
        "-0",
        "2026-12-01T09:00:00Z",
    ],
    "id": ["A-1", "MSG0001", "P123^^^EPIC", "dr.rivera@example.org", ALEX, "é/#?%\\"],
    "number": ["30", "0", "-5", "1e9", "99999999999", "NaN", "3.5"],
    "unit": ["min", "m", "s", "hours", "HR", "fortnight", "", "^min"],
    "phone": ["+12065550142", "(206)555-0142", "206", "+999999999999999999", "tel:1", "PRN"],
}


def _hl7_headers(body: bytes, content_type: str, how: int) -> dict[str, str]:
    """Headers of an HL7 delivery: Bearer, X-Signature or Basic (how 0-5), else unsigned/wrong."""
    headers = {"Content-Type": content_type}
    if how in (0, 1, 2):
        headers["Authorization"] = f"Bearer {SOURCE_SECRET}"
    elif how == 3:
        headers[signatures.HEADER] = signatures.sign(SOURCE_SECRET, int(time.time()), body)
    elif how == 4:
        token = base64.b64encode(f"any-user:{SOURCE_SECRET}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif how == 5:
        headers["Authorization"] = "Bearer wrong-secret"
    elif how == 6:
        headers["Authorization"] = "Basic !!!not-base64"
    return headers


def _signed_headers(kind: str, body: bytes, content_type: str, how: int) -> dict[str, str]:
    """The kind's own authentication (how 0-5 valid), else missing or wrong (6-7)."""
    if kind == "hl7v2":
        return _hl7_headers(body, content_type, how)
    headers = {"Content-Type": content_type}
    valid = how < 6
    if kind == "calendly":
        secret = SOURCE_SECRET if valid else "wrong"
        if how != 7:
            headers["Calendly-Webhook-Signature"] = signatures.sign(secret, int(time.time()), body)
    elif how != 7:
        headers["X-Cal-Signature-256"] = calcom.signature(SOURCE_SECRET if valid else "wrong", body)
    return headers


def _ack_code(body: bytes, content_type: str) -> str:
    """MSA-1 of an HL7 ACK (in the request's charset), read with the ACK's own separator."""
    text = body.decode(charset(content_type), "replace").lstrip("\ufeff")
    text = text.strip("\x0b\x1c\r\n")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    assert segments, body[:300]
    assert segments[0].startswith("MSH"), body[:300]
    separator = segments[0][3]
    for segment in segments:
        if segment.startswith("MSA" + separator):
            return segment.split(separator)[1]
    raise AssertionError(f"no MSA segment in the ACK: {body[:300]!r}")


def _check_source_answer(kind: str, response: func.HttpResponse) -> None:
    status = response.status_code
    content = response.headers.get("Content-Type", "")
    if kind == "hl7v2":
        assert status in (200, 400, 401, 413, 415), (status, response.get_body()[:300])
        if status == 200:
            assert _ack_code(response.get_body(), content) in ("AA", "AE"), response.get_body()[
                :300
            ]
            return
    else:
        assert status in (202, 400, 401, 413, 415), (status, response.get_body()[:300])
    assert content in ("application/json", "application/problem+json"), content
    json.loads(response.get_body())


def _fuzz_source(name: str, kind: str, strategy: Any, cases: int) -> dict[int, int]:
    statuses: dict[int, int] = {}

    @settings(
        max_examples=cases,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, how=st.integers(0, 7), correlation=st.text(max_size=80))
    def run(case: tuple[str, bytes], how: int, correlation: str) -> None:
        content_type, body = case
        headers = _signed_headers(kind, body, content_type, how)
        headers["X-Correlation-Id"] = correlation
        response = receive_source(source_request(name, body, headers))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _check_source_answer(kind, response)

    run()
    return statuses


JSON_KINDS = {
    "calendly": ["invitee-created", "invitee-canceled", "invitee-created-legacy"],
    "calcom": ["booking-created", "booking-rescheduled", "booking-cancelled"],
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["hl7v2", "calendly", "calcom"])
def test_hostile_source_deliveries_get_documented_answers(
    kind: str, named_sources: QueueClient
) -> None:
    if not _has_kind(kind):
        pytest.skip(f"kind {kind} is not registered yet")
    name = next(n for n, k in SOURCES.items() if k == kind)
    strategy = er7_message() if kind == "hl7v2" else json_delivery(kind, JSON_KINDS[kind])
    statuses = _fuzz_source(name, kind, strategy, SOURCE_CASES)
    enqueued = _queued_documents_are_valid(named_sources)
    print(f"\n{kind} deliveries: statuses {statuses}, enqueued {enqueued}")
    assert sum(statuses.values()) >= SOURCE_CASES
    assert statuses.get(401, 0) > 100, statuses
    assert statuses.get(400, 0) > 100, statuses
    accepted = statuses.get(200 if kind == "hl7v2" else 202, 0)
    assert accepted > 100, statuses
    assert enqueued > 50, f"too few cases reached the queue: {enqueued}"


# --- hypothesis: the organizer directory's routes -------------------------------------------

entry_value = st.fixed_dictionaries(
    {
        "source": st.one_of(st.sampled_from(["cly", "hl7", "APPOINTMENTS", ""]), json_value),
        "identifier": st.one_of(st.text(max_size=300), st.sampled_from(INJECTIONS), json_value),
        "user": st.one_of(
            st.sampled_from([ALEX_UPN, "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01", "x@y"]),
            json_value,
        ),
    },
    optional={"extra": json_value},
)
query_text = st.one_of(
    st.text(max_size=120),
    st.sampled_from(INJECTIONS),
    st.sampled_from(["cly", "hl7", "CLY", "appointments", "a" * 33, ""]),
)


@st.composite
def organizers_body(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["entry", "entries", "many", "json", "raw"]))
    if shape == "entry":
        return json.dumps(draw(entry_value)).encode()
    if shape == "entries":
        return json.dumps(draw(st.lists(entry_value, max_size=6))).encode()
    if shape == "many":
        entry = {"source": "cly", "identifier": "host", "user": ALEX_UPN}
        return json.dumps([entry] * draw(st.integers(499, 502))).encode()
    if shape == "json":
        return json.dumps(draw(json_value)).encode()
    return draw(st.binary(max_size=500))


def _organizers_request(method: str, params: dict[str, str], body: bytes = b"") -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url="http://localhost:7071/api/organizers",
        headers={"Content-Type": "application/json"},
        params=params,
        body=body,
    )


@pytest.mark.slow
def test_hostile_organizer_requests_never_get_a_5xx(named_sources: QueueClient) -> None:
    statuses: dict[str, dict[int, int]] = {"PUT": {}, "GET": {}, "DELETE": {}}

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        method=st.sampled_from(["PUT", "GET", "DELETE"]),
        body=organizers_body(),
        params=st.dictionaries(
            st.sampled_from(["source", "identifier", "$skiptoken", "other"]),
            query_text,
            max_size=4,
        ),
        token=st.one_of(
            st.none(),
            st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()),
            st.builds(
                lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode(), json_value
            ),
        ),
    )
    def run(method: str, body: bytes, params: dict[str, str], token: str | None) -> None:
        if token is not None:
            params = {**params, "$skiptoken": token}
        if method == "PUT":
            response = save_organizers(_organizers_request("PUT", params, body))
        elif method == "GET":
            response = list_organizers(_organizers_request("GET", params))
        else:
            response = delete_organizer(_organizers_request("DELETE", params))
        seen = statuses[method]
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, params, response.get_body()[:300])
        allowed = {"PUT": (200, 400), "GET": (200, 400), "DELETE": (204, 400)}[method]
        assert response.status_code in allowed, (method, response.status_code)
        if response.status_code != 204:
            json.loads(response.get_body())

    run()
    print(f"\norganizer requests: {statuses}")
    assert all(sum(s.values()) > 50 for s in statuses.values()), statuses
