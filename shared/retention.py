"""Retention (SPEC "Operations"): when a record's client data goes, and what stays. Pure.

RETENTION_DAYS after an appointment's end (or its cancellation, if that came first) its clients'
names, e-mail addresses and phone numbers are erased from the record and the stored documents:
names become `client 1`, `client 2` … (their position in the document), addresses and numbers
go. Ids, times, status, organizer, Graph's meeting ids and attendance counts stay, and so does
the Teams meeting (its subject carries no client data by design).

Pseudonymizing is a function of the state alone and a fixed point: applied twice it changes
nothing, so a run can tell "already done" by comparing, without a marker, and re-running is
free of writes. Free text the app stored beside the clients (warnings, an error's message, the
subject) has the clients' known values replaced and anything shaped like an e-mail address or
an E.164 number removed, in case a service echoed one.

The runner (shared/retention_run.py) finds the candidates and writes; this module decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from shared.attendance import Attendance
from shared.documents import AppointmentClient, AppointmentDocument, parse_rfc3339
from shared.events import EraseEvent, MalformedMessage, parse_message
from shared.records import AppliedState, ErrorInfo
from shared.sources.base import Part

DEFAULT_DAYS = 30
MAX_DAYS = 36_500  # a hundred years: anything larger is a typo, not a policy
ERASED = "[erased]"
# Added to the record's warnings once its clients are pseudonymized: GET shows it happened.
NOTE = (
    "appointmentClients: names, e-mail addresses and phone numbers were erased after the "
    "retention period (RETENTION_DAYS)"
)
_PSEUDONYM = re.compile(r"client [1-9][0-9]{0,2}", re.ASCII)
_ADDRESS_CHAR = r"[^@\s\"'<>()\[\],;:]"
_EMAIL_IN_TEXT = re.compile(f"{_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}+\\.{_ADDRESS_CHAR}+")
_PHONE_IN_TEXT = re.compile(r"\+[1-9]\d{6,14}(?!\d)", re.ASCII)
# A name shorter than this is not searched for in free text: it would match inside words.
_MIN_NAME = 3
_TEXT_MAX = 255  # Text255: the document's warnings and subject


def pseudonym(index: int) -> str:
    """The name a client at `index` (0-based) gets: `client 1`, `client 2` …"""
    return f"client {index + 1}"


def finished_at(document: AppointmentDocument) -> datetime | None:
    """When retention starts counting for this version: its end, or its cancellation (the
    version's lastModifiedDateTime) when that came first. None: a document with neither an
    end nor a cancellation (it never becomes due)."""
    moments: list[datetime] = []
    end = document.end or document.start
    if end is not None:
        moments.append(end)
    if document.is_cancelled:
        moments.append(parse_rfc3339(document.last_modified_date_time))
    return min(moments) if moments else None


def due_at(documents: Iterable[AppointmentDocument], days: int) -> datetime | None:
    """When the record holding these documents (applied and desired) is due; None: never.

    Every document must be finished: a pending newer version that moves the appointment later
    keeps it until that later end. `days` 0 keeps everything.
    """
    if days <= 0:
        return None
    moments: list[datetime] = []
    for document in documents:
        moment = finished_at(document)
        if moment is None:
            return None
        moments.append(moment)
    if not moments:
        return None
    return max(moments) + timedelta(days=days)


def is_due(documents: Sequence[AppointmentDocument], days: int, now: datetime) -> bool:
    due = due_at(documents, days)
    return due is not None and now >= due


def behind_the_walk(document: AppointmentDocument, days: int, now: datetime) -> bool:
    """Whether the daily walk may already be past this version's place in the index.

    The walk (shared/retention_run.py) goes through the index in start order, only up to
    `now - days`, and keeps a cursor, so its cursor never passes a start later than that.
    A version that starts at or before `now - days` (an import of old appointments, a change
    that moves one far back) may land behind the cursor, where no walk would find it: the
    reconciler notes such a record for the next run's recheck instead. Every other version
    starts after any cursor, so the walk reaches it; noting it would be a wasted write.
    """
    start = document.start
    return days > 0 and start is not None and start <= now - timedelta(days=days)


def parked_message_is_due(text: str, parked: datetime | None, days: int, now: datetime) -> bool:
    """Whether retention deletes this message parked in `appointment-events-poison`.

    A parked message holds a whole document, clients and all, until the queue expires it
    (Azure's default: 7 days, longer than a short RETENTION_DAYS). A replay uses the stored
    document, which retention pseudonymizes, never the parked copy, so the copy goes once the
    appointment it carries is due. A message that is not a valid appointment (parked because
    it was malformed) goes once it has been parked `days` days. An erase message holds no
    client data and stays for the operator to see.
    """
    if days <= 0:
        return False
    try:
        event = parse_message(text)
    except MalformedMessage:
        return parked is not None and parked <= now - timedelta(days=days)
    if isinstance(event, EraseEvent):
        return False
    return is_due([event.document], days, now)


def private_values(
    documents: Iterable[AppointmentDocument], parts: Iterable[Part] = ()
) -> tuple[str, ...]:
    """Every client name, address and number these documents and parts hold (longest first,
    so a name inside an address is not replaced before the address)."""
    values: set[str] = set()
    for document in documents:
        for client in document.appointment_clients:
            values.update(_client_values(client.model_dump(by_alias=True)))
    for part in parts:
        if part.client is not None:
            values.update(_client_values(part.client))
    values -= {"", *(_pseudonyms())}
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


def _pseudonyms() -> Iterable[str]:
    return (pseudonym(i) for i in range(32))


def _client_values(client: dict[str, Any]) -> list[str]:
    found = []
    for key in ("displayName", "emailAddress", "smsCapablePhoneNumber"):
        value = client.get(key)
        if isinstance(value, str) and value.strip():
            found.append(value)
    return found


def scrub_text(text: str, values: Sequence[str], keep: Sequence[str] = ()) -> str:
    """`text` without the clients' `values` and without anything shaped like an e-mail
    address or an E.164 number, except the `keep` ones (the organizer's UPN)."""
    kept = {k.lower() for k in keep if k}
    result = text
    for value in values:
        if value.lower() in kept or (len(value) < _MIN_NAME and "@" not in value):
            continue
        pattern = re.compile(r"(?<!\w)" + re.escape(value) + r"(?!\w)", re.IGNORECASE)
        result = pattern.sub(ERASED, result)

    def redact(match: re.Match[str]) -> str:
        return match.group(0) if match.group(0).lower() in kept else ERASED

    result = _EMAIL_IN_TEXT.sub(redact, result)
    return _PHONE_IN_TEXT.sub(redact, result)


def _scrub_texts(
    texts: Iterable[str], values: Sequence[str], keep: Sequence[str], limit: int | None = None
) -> list[str]:
    out = []
    for text in texts:
        scrubbed = scrub_text(text, values, keep)
        out.append(scrubbed[:limit] if limit is not None else scrubbed)
    return out


def _keep(document: AppointmentDocument | None) -> tuple[str, ...]:
    return (document.organizer,) if document is not None and document.organizer else ()


def pseudonymize_document(
    document: AppointmentDocument, values: Sequence[str] = ()
) -> AppointmentDocument:
    """The document with its clients as `client N` and no address or number, its warnings
    and subject scrubbed. Ids, times, status, organizer, settings stay."""
    values = tuple(values) or private_values([document])
    keep = _keep(document)
    update: dict[str, Any] = {}
    if "appointment_clients" in document.model_fields_set:
        clients = [
            AppointmentClient.model_validate({"displayName": pseudonym(i)})
            for i in range(len(document.appointment_clients))
        ]
        if clients != document.appointment_clients:
            update["appointment_clients"] = clients
    if document.warnings:
        warnings = _scrub_texts(document.warnings, values, keep, _TEXT_MAX)
        if warnings != document.warnings:
            update["warnings"] = warnings
    if document.subject is not None:
        subject = scrub_text(document.subject, values, keep)[:_TEXT_MAX]
        if subject != document.subject:
            update["subject"] = subject
    return document.model_copy(update=update) if update else document


def is_pseudonymized(document: AppointmentDocument) -> bool:
    """True when the document holds no client name, address or number (cheap: no free text)."""
    return all(
        client.email_address is None
        and client.sms_capable_phone_number is None
        and client.display_name == pseudonym(index)
        for index, client in enumerate(document.appointment_clients)
    )


def pseudonymize_state(state: AppliedState, values: Sequence[str]) -> AppliedState:
    """The applied state with its document and attendance pseudonymized, its warnings and
    error message scrubbed and NOTE among its warnings. Everything else (ids, meeting, lease,
    callback owed, counters, index keys) stays as it is."""
    document = state.document
    keep = _keep(document)
    if document is not None:
        document = pseudonymize_document(document, values)
    warnings = tuple(_scrub_texts(state.warnings, values, keep))
    if NOTE not in warnings:
        warnings = (*warnings, NOTE)
    error = state.error
    if error is not None:
        error = ErrorInfo(error.code, scrub_text(error.message, values, keep))
    attendance = state.attendance
    if attendance is not None:
        attendance = pseudonymize_attendance(attendance)
    return replace(state, document=document, warnings=warnings, error=error, attendance=attendance)


def pseudonymize_parts(parts: Sequence[Part], values: Sequence[str]) -> list[Part]:
    """Stored parts (Calendly invitees) with their clients pseudonymized as `combine` orders
    them (booked parts by key), so the combined document and the parts agree."""
    booked = sorted(p.key for p in parts if p.client is not None)
    position = {key: index for index, key in enumerate(booked)}
    keep: tuple[str, ...] = ()
    result = []
    for part in parts:
        organizer = part.base.get("organizer")
        keep = (organizer,) if isinstance(organizer, str) else ()
        client = part.client
        if client is not None:
            client = {"displayName": pseudonym(position[part.key])}
        base = dict(part.base)
        warnings = base.get("warnings")
        if isinstance(warnings, list):
            base["warnings"] = [
                scrub_text(w, values, keep)[:_TEXT_MAX] if isinstance(w, str) else w
                for w in warnings
            ]
        subject = base.get("subject")
        if isinstance(subject, str):
            base["subject"] = scrub_text(subject, values, keep)[:_TEXT_MAX]
        result.append(Part(part.key, part.version, client, base))
    return result


def pseudonymize_attendance(attendance: Attendance) -> Attendance:
    """The attendance summary with each client's displayName as `client N` (its position in
    the summary); outcome, seconds, join and leave times, report count stay."""
    clients = tuple(
        replace(client, display_name=pseudonym(index))
        for index, client in enumerate(attendance.clients)
    )
    return replace(attendance, clients=clients)
