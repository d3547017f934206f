"""Kind `calendly`: Calendly webhook subscriptions (API v2). Pure.

Calendly sends one delivery per invitee (`invitee.created`, `invitee.canceled`), each carrying
the whole scheduled event. One Calendly event is one appointment, keyed by the last path
segment of `payload.scheduled_event.uri`; each delivery becomes that appointment's Part for
its invitee, and the shared pipeline merges it with the invitees' parts received earlier
(shared/parts.py), so the result does not depend on the order or repetition of deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared import parts
from shared.documents import FieldError, json_pointer, parse_rfc3339
from shared.envelopes import JSON
from shared.sources.base import (
    Candidate,
    InvalidBody,
    Outcome,
    Parsed,
    Part,
    Reply,
    SourceConfig,
    SourceKind,
    external_id,
    json_reply,
    verify_timestamped_signature,
)
from shared.sources.jsonbody import (
    Path,
    Reader,
    full_name,
    load_object,
    phone,
    subject,
    to_rfc3339,
)

HEADER = "Calendly-Webhook-Signature"
CREATED = "invitee.created"
CANCELED = "invitee.canceled"
INVALID = "The Calendly delivery has invalid fields."

# Calendly's older webhook shape names the event by URI only: no time, no host to book with.
_NO_EVENT = (
    "is required: the event's time and host come from it "
    "(Calendly's older webhook shape without scheduled_event cannot be booked)"
)

_PAYLOAD: Path = ("payload",)
_EVENT: Path = (*_PAYLOAD, "scheduled_event")
_HOST: Path = (*_EVENT, "event_memberships", 0)


def _pointer(path: Path) -> str:
    return json_pointer(path)


# Where each document field comes from in the delivery (`/lastModifiedDateTime`, the client's
# `displayName` and `subject` depend on the delivery and are added per delivery).
_LOCATIONS: dict[str, str] = {
    "/externalAppointmentId": _pointer((*_EVENT, "uri")),
    "/sourceAppointmentId": _pointer((*_EVENT, "uri")),
    "/status": "/event",
    "/organizer": _pointer((*_HOST, "user_email")),
    "/startDateTime": _pointer((*_EVENT, "start_time")),
    "/endDateTime": _pointer((*_EVENT, "end_time")),
    "/timeZone": _pointer((*_PAYLOAD, "timezone")),
    "/appointmentClients": "/payload",
    "/appointmentClients/0/emailAddress": _pointer((*_PAYLOAD, "email")),
    "/appointmentClients/0/smsCapablePhoneNumber": _pointer((*_PAYLOAD, "text_reminder_number")),
}


def _event_id(uri: str) -> str | None:
    """The last path segment of the scheduled event's URI, or None when it has none."""
    try:
        path = urlsplit(uri).path
    except ValueError:
        return None
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    return segment or None


class Calendly:
    name: str = "calendly"
    media_types: tuple[str, ...] = (JSON,)

    def authenticate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[str],
        *,
        now: float,
        tolerance_seconds: int,
    ) -> None:
        """`Calendly-Webhook-Signature: t=<unix>,v1=<hex>`: the native scheme, another name."""
        verify_timestamped_signature(
            headers, body, secrets, now=now, tolerance_seconds=tolerance_seconds, header=HEADER
        )

    def parse(self, headers: Mapping[str, str], body: bytes, config: SourceConfig) -> Parsed:
        root = load_object(headers, body)
        reader = Reader()
        event = reader.text(root, ("event",), required=True)
        reader.check(INVALID)
        assert event is not None
        if event not in (CREATED, CANCELED):
            return Parsed(ignored=event)
        payload = reader.mapping(root, _PAYLOAD, required=True)
        reader.check(INVALID)
        assert payload is not None
        read = _read(reader, root, payload)
        reader.require(
            read.invitee_uri.strip() != "" or reader.errors != [],
            (*_PAYLOAD, "uri"),
            "must not be empty: it names the invitee",
        )
        reader.check(INVALID)

        source_id = _event_id(read.event_uri)
        if source_id is None:
            message = "must be a URI whose last path segment is the event's id"
            raise InvalidBody(INVALID, [FieldError(_pointer((*_EVENT, "uri")), message)])
        version_path, version = _version(read.versions, config)
        locations = dict(_LOCATIONS)
        locations["/lastModifiedDateTime"] = _pointer(version_path)
        named_by = "name" if full_name(read.name, None, None) else "first_name"
        locations["/appointmentClients/0/displayName"] = _pointer((*_PAYLOAD, named_by))

        base: dict[str, Any] = {
            "externalAppointmentId": external_id(config.name, source_id),
            "source": config.name,
            "sourceAppointmentId": source_id,
            "timeZone": read.time_zone or config.time_zone,
            "settings": {
                "sendSmsNotifications": config.send_sms,
                "sendSmsReminder": config.send_sms_reminder,
                "sendEmailNotifications": config.send_email,
            },
        }
        if read.organizer is not None:
            base["organizer"] = read.organizer
        if read.start is not None:
            base["startDateTime"] = to_rfc3339(read.start, config.time_zone)
        if read.end is not None:
            base["endDateTime"] = to_rfc3339(read.end, config.time_zone)
        meeting_subject = config.subject or subject(read.title)
        if meeting_subject is not None:
            base["subject"] = meeting_subject
            if not config.subject:
                locations["/subject"] = _pointer((*_EVENT, "name"))

        client: dict[str, Any] | None = None
        if event == CREATED:
            warnings: list[str] = []
            client = _client(read, config, warnings)
            if warnings:
                base["warnings"] = warnings
                locations["/warnings"] = _pointer((*_PAYLOAD, "text_reminder_number"))

        part = Part(key=read.invitee_uri, version=version, client=client, base=base)
        candidate = Candidate(
            document=parts.combine([part], part.version),
            locations=locations,
            fallback="/payload",
            part=part,
            probably_new=event == CREATED,
        )
        return Parsed(candidates=(candidate,))

    def respond(self, outcome: Outcome, headers: Mapping[str, str], *, now: float) -> Reply:
        return json_reply(outcome)


@dataclass(frozen=True)
class _Delivery:
    """What one invitee delivery says, type-checked (None: absent or null)."""

    invitee_uri: str
    event_uri: str
    versions: tuple[tuple[Path, str | None], ...]
    name: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    number: str | None
    time_zone: str | None
    start: str | None
    end: str | None
    title: str | None
    organizer: str | None


def _read(reader: Reader, root: dict[str, Any], payload: dict[str, Any]) -> _Delivery:
    """Every field used, with each wrong type recorded in `reader` (check it before use)."""

    def invitee(key: str, *, required: bool = False) -> str | None:
        return reader.text(payload, (*_PAYLOAD, key), required=required)

    scheduled = reader.mapping(payload, _EVENT, required=_NO_EVENT)

    def event(key: str, *, required: bool = False) -> str | None:
        return reader.text(scheduled, (*_EVENT, key), required=required)

    memberships = reader.array(scheduled, (*_EVENT, "event_memberships"))
    host = reader.mapping(memberships, _HOST)
    return _Delivery(
        invitee_uri=invitee("uri", required=True) or "",
        event_uri=event("uri", required=True) or "",
        versions=(
            ((*_PAYLOAD, "updated_at"), invitee("updated_at")),
            ((*_PAYLOAD, "created_at"), invitee("created_at")),
            (("created_at",), reader.text(root, ("created_at",))),
        ),
        name=invitee("name"),
        first_name=invitee("first_name"),
        last_name=invitee("last_name"),
        email=invitee("email"),
        number=invitee("text_reminder_number"),
        time_zone=invitee("timezone"),
        start=event("start_time"),
        end=event("end_time"),
        title=event("name"),
        organizer=reader.text(host, (*_HOST, "user_email")),
    )


def _client(read: _Delivery, config: SourceConfig, warnings: list[str]) -> dict[str, Any]:
    """The invitee as an appointmentClients entry; an unreadable number is left out."""
    client: dict[str, Any] = {}
    display_name = full_name(read.name, read.first_name, read.last_name)
    if display_name is not None:
        client["displayName"] = display_name
    if read.email is not None and read.email.strip():
        client["emailAddress"] = read.email.strip()
    e164 = phone(read.number, config.phone_region, warnings)
    if e164 is not None:
        client["smsCapablePhoneNumber"] = e164
    return client


def _version(versions: Sequence[tuple[Path, str | None]], config: SourceConfig) -> tuple[Path, str]:
    """The invitee's version: `payload.updated_at`, else `payload.created_at`, else the
    delivery's `created_at`, as RFC 3339 (read in the source's zone without an offset).

    Checked here rather than by the document's validation: parts are ordered by it.
    """
    for path, value in versions:
        if value is None:
            continue
        text = to_rfc3339(value, config.time_zone)
        try:
            parse_rfc3339(text)
        except ValueError as error:
            raise InvalidBody(INVALID, [FieldError(_pointer(path), str(error))]) from None
        return path, text
    message = "is required (or payload.created_at, or created_at): it orders the deliveries"
    raise InvalidBody(INVALID, [FieldError(_pointer(versions[0][0]), message)])


KIND: SourceKind = Calendly()
