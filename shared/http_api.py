"""HTTP functions: webhook intake, status record, list, replay, health. Thin adapters only.

This module and what it imports must never import the Graph SDK: the webhook path's cold
start would pay over a second for it (a test guards this).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any
from urllib.parse import quote

import azure.functions as func

from shared import listing, runtime, settings
from shared.callback_delivery import ResendRefused, resend
from shared.directory import parse_entries
from shared.documents import AppointmentDocument, FieldError, parse_document, utc_text
from shared.events import AppointmentEvent, EraseEvent
from shared.health import HealthRecorder, Refusal, Tally, view
from shared.intake import Intake, Reply, refused
from shared.problems import Problem, validation_problem
from shared.records import StoredAppointment, status_view
from shared.settings import Settings, SettingsError, StorageSettings
from shared.sources.base import DEFAULT_SOURCE, KINDS
from shared.storage import SourceHealthTable, StorageRejected, StorageUnavailable, parallel

log = logging.getLogger(__name__)
blueprint = func.Blueprint()

_CORRELATION = re.compile(r"[A-Za-z0-9._:-]{1,64}")
CORRELATION_HEADER = "X-Correlation-Id"
# For the routes that only read or replay; the intake's own 503 speaks of its documents.
STORAGE_DOWN = Problem(503, "Storage is unavailable; retry later.", headers={"Retry-After": "10"})


def correlation_id(request: func.HttpRequest) -> str:
    """The caller's correlation id when it is a safe token, else a fresh one."""
    supplied = request.headers.get(CORRELATION_HEADER, "")
    return supplied if _CORRELATION.fullmatch(supplied) else uuid.uuid4().hex


def _respond(reply: Reply, correlation: str) -> func.HttpResponse:
    headers = {**reply.headers, CORRELATION_HEADER: correlation}
    return func.HttpResponse(body=reply.body, status_code=reply.status, headers=headers)


def _json_body(request: func.HttpRequest) -> Any:
    """The body as JSON, or the 400 Problem that says it is not JSON (a Problem is never a
    JSON value, so callers tell the two apart with isinstance)."""
    try:
        return json.loads(request.get_body().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return validation_problem("The body is not valid JSON.", [FieldError("", "not JSON")])


def _misconfigured(error: SettingsError, what: str, correlation: str) -> func.HttpResponse:
    """503 problem for an app setting the app cannot run with, not an unhandled 500.

    Only the setting's name reaches the caller; the log adds the rule it breaks, never its value.
    """
    log.error("app setting refused: %s (correlation %s)", error, correlation)
    problem = Problem(503, f"The {what} is misconfigured: {error.setting}.")
    return _respond(Reply.problem(problem), correlation)


def _not_found(correlation: str) -> func.HttpResponse:
    problem = Problem(404, "No appointment with this externalAppointmentId is known.")
    return _respond(Reply.problem(problem), correlation)


def _route_id(request: func.HttpRequest) -> str | None:
    """The route's externalAppointmentId, or None when it could never be a valid one."""
    value = str(request.route_params.get("externalAppointmentId", ""))
    probe = {"externalAppointmentId": value, "lastModifiedDateTime": "2000-01-01T00:00:00Z"}
    if isinstance(parse_document(probe | {"status": "cancelled"}), list):
        return None
    return value


def _load(request: func.HttpRequest, correlation: str) -> StoredAppointment | func.HttpResponse:
    """The stored appointment named by the route, or the 404/503 answer to send instead.

    An id that could never be valid is simply not found: nothing about it is echoed back.
    """
    value = _route_id(request)
    if value is None:
        return _not_found(correlation)
    try:
        stored = runtime.store().load(value)
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except StorageUnavailable:
        return _respond(Reply.problem(STORAGE_DOWN), correlation)
    except StorageRejected as error:
        log.error("storage refused a read: %s (correlation %s)", error.error_code, correlation)
        problem = Problem(500, f"Storage refused the request: {error.error_code}.")
        return _respond(Reply.problem(problem), correlation)
    if stored.erased or (stored.desired is None and stored.applied is None):
        return _not_found(correlation)
    return stored


def _intake(req: func.HttpRequest, source: str) -> func.HttpResponse:
    """Hand one delivery to the intake pipeline, for the source its route names."""
    correlation = correlation_id(req)
    try:
        current = settings.current()
    except SettingsError as error:
        return _misconfigured(error, "webhook endpoint", correlation)
    headers = {key.lower(): value for key, value in req.headers.items()}
    intake = Intake(current, runtime.store, runtime.queue, health=source_health())
    return _respond(intake.handle(headers, req.get_body(), correlation, source), correlation)


@cache
def _health_table(storage: StorageSettings) -> SourceHealthTable:
    """One table client per storage account the settings name (tests switch accounts)."""
    return SourceHealthTable.from_settings(storage)


def _write_health(source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
    _health_table(settings.current().storage).write(source, tally, refusals)


@cache
def source_health() -> HealthRecorder:
    """One recorder (and its one writer thread) per process; tests `flush()` it."""
    return HealthRecorder(_write_health)


@blueprint.function_name("receive_appointments")
@blueprint.route(
    route="webhooks/appointments", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
def receive_appointments(req: func.HttpRequest) -> func.HttpResponse:
    """Intake of appointment documents from the scheduling system."""
    return _intake(req, DEFAULT_SOURCE)


@blueprint.function_name("receive_source")
@blueprint.route(route="webhooks/{source}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def receive_source(req: func.HttpRequest) -> func.HttpResponse:
    """Intake of a named source's deliveries in its own format (HL7 v2, Calendly, Cal.com)."""
    return _intake(req, req.route_params.get("source", ""))


@blueprint.function_name("list_appointments")
@blueprint.route(route="appointments", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_appointments(req: func.HttpRequest) -> func.HttpResponse:
    """Status records by status, source, organizer, errorCode and start window, in
    startDateTime order, a page at a time through the list index (shared/listing.py).

    Its own route (`appointments`, no segment after it), so `appointments/{id}` still serves
    every id. A page may hold fewer than $top records and still carry a nextLink: a read
    examines a bounded number of index rows, so its cost never grows with the table.
    """
    correlation = correlation_id(req)
    query = listing.parse_list_query(dict(req.params))
    if isinstance(query, list):
        problem = validation_problem("The query parameters are invalid.", query)
        return _respond(Reply.problem(problem), correlation)
    try:
        page = runtime.store().page(query.filter, query.after, query.top)
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    body: dict[str, object] = {"value": [status_view(stored) for _, stored in page.records]}
    if page.after is not None:
        base = req.url.split("?", 1)[0]
        following = [query.filter.query_text(), f"$top={query.top}"]
        following.append(f"$skiptoken={listing.encode_token(page.after)}")
        body["@odata.nextLink"] = f"{base}?{'&'.join(p for p in following if p)}"
    return _respond(Reply.json(200, body), correlation)


@blueprint.function_name("reconcile_appointments")
@blueprint.route(
    route="appointments/reconcile", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
def reconcile_appointments(req: func.HttpRequest) -> func.HttpResponse:
    """Bulk replay: enqueue a replay of every record the filter selects, at most 1000 a call.

    Found through the list index, like the list. A replayed record may still match the filter
    until its reconciliation commits, so the way on is the returned `$skiptoken` (sent back in
    the body), not the same call again. Two path segments, so it never meets
    `appointments/{id}/reconcile`; being POST, it never meets `GET appointments/{id}` either.
    """
    correlation = correlation_id(req)
    value = _json_body(req)
    if isinstance(value, Problem):
        return _respond(Reply.problem(value), correlation)
    query = listing.parse_replay_body(value)
    if isinstance(query, list):
        problem = validation_problem("The request body has invalid fields.", query)
        return _respond(Reply.problem(problem), correlation)
    try:
        page = runtime.store().page(query.filter, query.after, listing.MAX_REPLAY)
        documents = [s.desired.document for _, s in page.records if s.desired is not None]
        events_queue = runtime.queue()

        def send(document: AppointmentDocument) -> None:
            event = AppointmentEvent(document, correlation, replay=True)
            events_queue.send(event.to_message())

        parallel(send, documents)
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    log.info("bulk replay enqueued %d (correlation %s)", len(documents), correlation)
    accepted = [
        {
            "externalAppointmentId": d.external_appointment_id,
            "lastModifiedDateTime": d.last_modified_date_time,
        }
        for d in documents
    ]
    body: dict[str, object] = {"accepted": accepted}
    if page.after is not None:
        body["$skiptoken"] = listing.encode_token(page.after)
    return _respond(Reply.json(202, body), correlation)


@blueprint.function_name("get_appointment")
@blueprint.route(
    route="appointments/{externalAppointmentId}",
    methods=["GET"],
    auth_level=func.AuthLevel.FUNCTION,
)
def get_appointment(req: func.HttpRequest) -> func.HttpResponse:
    """The status record of one appointment."""
    correlation = correlation_id(req)
    stored = _load(req, correlation)
    if isinstance(stored, func.HttpResponse):
        return stored
    return _respond(Reply.json(200, status_view(stored)), correlation)


@blueprint.function_name("reconcile_appointment")
@blueprint.route(
    route="appointments/{externalAppointmentId}/reconcile",
    methods=["POST"],
    auth_level=func.AuthLevel.FUNCTION,
)
def reconcile_appointment(req: func.HttpRequest) -> func.HttpResponse:
    """Re-enqueue the newest stored document, e.g. after granting a missing access policy."""
    correlation = correlation_id(req)
    stored = _load(req, correlation)
    if isinstance(stored, func.HttpResponse):
        return stored
    if stored.desired is None:
        return _not_found(correlation)
    document = stored.desired.document
    try:
        runtime.queue().send(AppointmentEvent(document, correlation, replay=True).to_message())
    except StorageUnavailable:
        return _respond(Reply.problem(STORAGE_DOWN), correlation)
    except StorageRejected as error:
        log.error("storage refused a replay: %s (correlation %s)", error.error_code, correlation)
        return _respond(Reply.problem(refused(error)), correlation)
    log.info(
        "replay enqueued for %s (correlation %s)", document.external_appointment_id, correlation
    )
    accepted = {
        "externalAppointmentId": document.external_appointment_id,
        "lastModifiedDateTime": document.last_modified_date_time,
    }
    return _respond(Reply.json(202, {"accepted": [accepted]}), correlation)


@blueprint.function_name("erase_appointment")
@blueprint.route(
    route="appointments/{externalAppointmentId}",
    methods=["DELETE"],
    auth_level=func.AuthLevel.FUNCTION,
)
def erase_appointment(req: func.HttpRequest) -> func.HttpResponse:
    """Erase an appointment: its meeting deleted quietly, every stored trace of its clients gone.

    The tombstone is written first (from then on GET is 404 and a late delivery of this version
    or an older one changes nothing), then the reconciler is asked to delete the meeting and
    scrub the applied row. Both steps are idempotent: a failed call can simply be repeated.
    """
    correlation = correlation_id(req)
    external_id = _route_id(req)
    if external_id is None:
        return _not_found(correlation)
    try:
        if not runtime.store().erase(external_id, time.time()):
            return _not_found(correlation)
        runtime.queue().send(EraseEvent(external_id, correlation).to_message())
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    log.info("erasure requested for %s (correlation %s)", external_id, correlation)
    return _respond(
        Reply.json(202, {"accepted": [{"externalAppointmentId": external_id}]}), correlation
    )


@blueprint.function_name("resend_callback")
@blueprint.route(
    route="appointments/{externalAppointmentId}/callback",
    methods=["POST"],
    auth_level=func.AuthLevel.FUNCTION,
)
def resend_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Send the current record to the source's callback URL again, as a new callback."""
    correlation = correlation_id(req)
    stored = _load(req, correlation)
    if isinstance(stored, func.HttpResponse):
        return stored
    shown = (stored.applied.document if stored.applied else None) or (
        stored.desired.document if stored.desired else None
    )
    if shown is None:
        return _not_found(correlation)
    source = shown.source or DEFAULT_SOURCE
    try:
        current = settings.current()
    except SettingsError as error:
        return _misconfigured(error, "callback setup", correlation)
    broken = current.source_errors.get(source.lower())
    if broken is not None:
        return _misconfigured(broken, "callback setup", correlation)
    if current.callback_target(source) is None:
        detail = (
            f"Source {source} has no callback URL: set SOURCES__{source}__CALLBACKURL and "
            "__CALLBACKSECRETS."
        )
        return _respond(Reply.problem(Problem(409, detail)), correlation)
    external_id = shown.external_appointment_id
    try:
        owed = resend(runtime.store(), runtime.callback_queue(), external_id)
    except ResendRefused as refusal:
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else {}
        problem = Problem(refusal.status, refusal.detail, headers=headers)
        return _respond(Reply.problem(problem), correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    log.info("callback %s owed again for %s (correlation %s)", owed.id, external_id, correlation)
    accepted = {"externalAppointmentId": external_id, "type": owed.type, "webhookId": owed.id}
    return _respond(Reply.json(202, {"accepted": [accepted]}), correlation)


@blueprint.function_name("health")
@blueprint.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: the worker is up and has loaded the app. No I/O, no secrets."""
    return _respond(Reply.json(200, {"status": "ok"}), correlation_id(req))


def _query_problem(detail: str, name: str, message: str, correlation: str) -> func.HttpResponse:
    problem = validation_problem(detail, [FieldError(name, message)])
    return _respond(Reply.problem(problem), correlation)


def _storage_trouble(error: Exception, correlation: str) -> func.HttpResponse:
    if isinstance(error, StorageRejected):
        log.error("storage refused a request: %s (correlation %s)", error.error_code, correlation)
        problem = Problem(500, f"Storage refused the request: {error.error_code}.")
        return _respond(Reply.problem(problem), correlation)
    return _respond(Reply.problem(STORAGE_DOWN), correlation)


def _replay(external_id: str, correlation: str) -> None:
    """Enqueue the newest stored document of an appointment again (it waited on an entry)."""
    stored = runtime.store().load(external_id)
    if stored.desired is not None:
        event = AppointmentEvent(stored.desired.document, correlation, replay=True)
        runtime.queue().send(event.to_message())


@blueprint.function_name("save_organizers")
@blueprint.route(route="organizers", methods=["PUT"], auth_level=func.AuthLevel.FUNCTION)
def save_organizers(req: func.HttpRequest) -> func.HttpResponse:
    """Map sources' organizer identifiers to Teams users; replays what waited on them."""
    correlation = correlation_id(req)
    value = _json_body(req)
    if isinstance(value, Problem):
        return _respond(Reply.problem(value), correlation)
    entries = parse_entries(value)
    if entries and isinstance(entries[0], FieldError):
        errors = [e for e in entries if isinstance(e, FieldError)]
        problem = validation_problem("The request body has invalid fields.", errors)
        return _respond(Reply.problem(problem), correlation)
    valid = [e for e in entries if not isinstance(e, FieldError)]
    try:
        replayed = runtime.directory().save(
            valid, utc_text(time.time()), lambda external_id: _replay(external_id, correlation)
        )
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    log.info(
        "organizer directory: %d entries saved, %d appointments replayed (correlation %s)",
        len(valid),
        replayed,
        correlation,
    )
    return _respond(Reply.json(200, {"saved": len(valid)}), correlation)


def _source_param(req: func.HttpRequest) -> str | None:
    source = req.params.get("source", "").lower()
    return source if re.fullmatch(r"[a-z0-9]{1,32}", source) else None


@blueprint.function_name("list_organizers")
@blueprint.route(route="organizers", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_organizers(req: func.HttpRequest) -> func.HttpResponse:
    """A source's directory entries, 100 per page, or the one entry for an identifier."""
    correlation = correlation_id(req)
    source = _source_param(req)
    if source is None:
        return _query_problem(
            "The query parameter source is required.", "source", "1 to 32 of a-z0-9", correlation
        )
    identifier = req.params.get("identifier")
    token = req.params.get("$skiptoken") or None
    try:
        directory = runtime.directory()
        if identifier is not None:
            entry = directory.table.get(source, identifier)
            return _respond(
                Reply.json(200, {"value": [entry.to_json()] if entry else []}), correlation
            )
        try:
            entries, following = directory.table.page(source, token)
        except ValueError:
            return _query_problem(
                "The $skiptoken is not one this API gave.", "$skiptoken", "invalid", correlation
            )
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    body: dict[str, object] = {"value": [e.to_json() for e in entries]}
    if following is not None:
        base = req.url.split("?", 1)[0]
        body["@odata.nextLink"] = f"{base}?source={source}&$skiptoken={quote(following)}"
    return _respond(Reply.json(200, body), correlation)


@blueprint.function_name("delete_organizer")
@blueprint.route(route="organizers", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
def delete_organizer(req: func.HttpRequest) -> func.HttpResponse:
    """Remove one entry; its identifier resolves by the GUID/e-mail rule from then on."""
    correlation = correlation_id(req)
    source = _source_param(req)
    identifier = req.params.get("identifier")
    if source is None or not identifier:
        return _query_problem(
            "The query parameters source and identifier are required.",
            "source" if source is None else "identifier",
            "is required",
            correlation,
        )
    try:
        runtime.directory().delete(source, identifier)
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    return func.HttpResponse(status_code=204, headers={CORRELATION_HEADER: correlation})


def _configured_kind(current: Settings, source: str) -> tuple[bool, str | None]:
    """Whether `source` is configured, and its kind.

    A source whose settings are wrong is configured too: its health shows the deliveries it
    turned away (503, counted as refused), which is what the person on call needs to see. Its
    kind is the KIND it names when that is a known one, else null.
    """
    config = current.source_config(source)
    if config is not None:
        return True, config.kind
    if source not in current.source_errors:
        return False, None
    wanted = f"SOURCES__{source}__KIND".lower()
    named = next((v for k, v in os.environ.items() if k.lower() == wanted), "")
    kind = named.strip().lower()
    return True, kind if kind in KINDS else None


@blueprint.function_name("get_source_health")
@blueprint.route(route="sources/{source}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_source_health(req: func.HttpRequest) -> func.HttpResponse:
    """A source's delivery counts and newest refusals (SPEC "Operations": source health)."""
    correlation = correlation_id(req)
    try:
        current = settings.current()
    except SettingsError as error:
        return _misconfigured(error, "app", correlation)
    source = req.route_params.get("source", "").lower()
    configured, kind = _configured_kind(current, source)
    if not configured:
        problem = Problem(404, "No source with this name is configured.")
        return _respond(Reply.problem(problem), correlation)
    try:
        tally, refusals = _health_table(current.storage).read(source)
    except (StorageUnavailable, StorageRejected) as error:
        return _storage_trouble(error, correlation)
    return _respond(Reply.json(200, view(source, kind, tally, refusals)), correlation)
