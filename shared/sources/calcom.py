"""Kind `calcom`: Cal.com webhooks. Pure.

A Cal.com booking is one appointment, keyed by its `uid`. A reschedule is a new booking with a
new `uid` that replaces the old one (`rescheduleUid`): the old appointment is cancelled and the
new one scheduled, in one delivery that is all or nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shared.documents import json_pointer
from shared.envelopes import JSON
from shared.sources.base import (
    AuthenticationError,
    Candidate,
    Outcome,
    Parsed,
    Reply,
    SourceConfig,
    SourceKind,
    external_id,
    json_reply,
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

HEADER = "X-Cal-Signature-256"
CREATED = "BOOKING_CREATED"
RESCHEDULED = "BOOKING_RESCHEDULED"
CANCELLED = ("BOOKING_CANCELLED", "BOOKING_REJECTED")
INVALID = "The Cal.com delivery has invalid fields."

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_PAYLOAD: Path = ("payload",)
_ORGANIZER: Path = (*_PAYLOAD, "organizer")
_ATTENDEES: Path = (*_PAYLOAD, "attendees")
_BOOKER_PHONE: Path = (*_PAYLOAD, "responses", "attendeePhoneNumber", "value")


def _pointer(path: Path) -> str:
    return json_pointer(path)


def signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body under one secret: the header Cal.com sends."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class CalCom:
    name: str = "calcom"
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
        """`X-Cal-Signature-256: <hex>`. No timestamp: a replay is a duplicate, no change."""
        header = headers.get(HEADER.lower())
        if not header:
            raise AuthenticationError(f"missing {HEADER} header")
        value = header.strip()
        if not _HEX_SHA256.fullmatch(value):
            raise AuthenticationError(f"malformed {HEADER} header: needs a hex HMAC-SHA256")
        received = bytes.fromhex(value)
        matched = False
        # Every secret is compared, with no early exit: timing says nothing about which matched.
        for secret in secrets:
            expected = bytes.fromhex(signature(secret, body))
            matched |= hmac.compare_digest(expected, received)
        if not matched:
            raise AuthenticationError("signature does not match")

    def parse(self, headers: Mapping[str, str], body: bytes, config: SourceConfig) -> Parsed:
        root = load_object(headers, body)
        reader = Reader()
        trigger = reader.text(root, ("triggerEvent",), required=True)
        reader.check(INVALID)
        assert trigger is not None
        if trigger not in (CREATED, RESCHEDULED, *CANCELLED):
            return Parsed(ignored=trigger)
        payload = reader.mapping(root, _PAYLOAD, required=True)
        reader.check(INVALID)
        assert payload is not None
        version = reader.text(root, ("createdAt",), required=True)
        uid = reader.text(payload, (*_PAYLOAD, "uid"), required=True)
        previous = None
        if trigger == RESCHEDULED:
            previous = reader.text(
                payload,
                (*_PAYLOAD, "rescheduleUid"),
                required="is required for BOOKING_RESCHEDULED: it names the booking replaced",
            )
        for path, value in (((*_PAYLOAD, "uid"), uid), ((*_PAYLOAD, "rescheduleUid"), previous)):
            if value is not None:
                reader.require(value.strip() != "", path, "must not be empty")
        scheduled = None
        if trigger in (CREATED, RESCHEDULED):
            scheduled = _scheduled(reader, payload, config)
        reader.check(INVALID)
        assert version is not None
        assert uid is not None
        version = to_rfc3339(version, config.time_zone)

        if trigger in CANCELLED:
            return Parsed(candidates=(_cancelled(config, uid, version, (*_PAYLOAD, "uid")),))
        assert scheduled is not None
        document, locations = scheduled
        document = {
            "externalAppointmentId": external_id(config.name, uid),
            "lastModifiedDateTime": version,
            "status": "scheduled",
            "source": config.name,
            "sourceAppointmentId": uid,
            **document,
        }
        locations.update(_identity_locations((*_PAYLOAD, "uid")))
        booked = Candidate(document=document, locations=locations, fallback="/payload")
        # (No `probably_new`: Cal.com has no delivery id or parts, so it takes the plain path.)
        if previous is None:
            return Parsed(candidates=(booked,))
        replaced = _cancelled(config, previous, version, (*_PAYLOAD, "rescheduleUid"))
        return Parsed(candidates=(replaced, booked))

    def respond(self, outcome: Outcome, headers: Mapping[str, str], *, now: float) -> Reply:
        return json_reply(outcome)


def _identity_locations(id_path: Path) -> dict[str, str]:
    return {
        "/externalAppointmentId": _pointer(id_path),
        "/sourceAppointmentId": _pointer(id_path),
        "/lastModifiedDateTime": "/createdAt",
        "/status": "/triggerEvent",
    }


def _cancelled(config: SourceConfig, uid: str, version: str, id_path: Path) -> Candidate:
    """A cancellation carries only what identifies it: the booking's other fields cannot
    refuse it, and the last clients stay known for a cancellation notice."""
    document = {
        "externalAppointmentId": external_id(config.name, uid),
        "lastModifiedDateTime": version,
        "status": "cancelled",
        "source": config.name,
        "sourceAppointmentId": uid,
    }
    return Candidate(document=document, locations=_identity_locations(id_path), fallback="/payload")


def _scheduled(
    reader: Reader, payload: dict[str, Any], config: SourceConfig
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The booking's fields and where each came from; None when `reader` recorded errors."""
    errors = len(reader.errors)
    organizer = reader.mapping(payload, _ORGANIZER)
    organizer_email = reader.text(organizer, (*_ORGANIZER, "email"))
    time_zone = reader.text(organizer, (*_ORGANIZER, "timeZone"))
    start = reader.text(payload, (*_PAYLOAD, "startTime"))
    end = reader.text(payload, (*_PAYLOAD, "endTime"))
    title = reader.text(payload, (*_PAYLOAD, "title"))
    responses = reader.mapping(payload, (*_PAYLOAD, "responses"))
    booker = reader.mapping(responses, _BOOKER_PHONE[:-1])
    booker_phone = reader.text(booker, _BOOKER_PHONE)
    attendees = reader.array(payload, _ATTENDEES) or []
    read: list[_Attendee] = []
    for index in range(len(attendees)):
        path = (*_ATTENDEES, index)
        attendee = reader.mapping(attendees, path, required=True)
        read.append(
            _Attendee(
                *(reader.text(attendee, (*path, key)) for key in _Attendee.KEYS),
            )
        )
    if len(reader.errors) > errors:
        return None

    locations: dict[str, str] = {
        "/organizer": _pointer((*_ORGANIZER, "email")),
        "/startDateTime": _pointer((*_PAYLOAD, "startTime")),
        "/endDateTime": _pointer((*_PAYLOAD, "endTime")),
        "/timeZone": _pointer((*_ORGANIZER, "timeZone")),
        "/appointmentClients": _pointer(_ATTENDEES),
    }
    document: dict[str, Any] = {
        "timeZone": time_zone or config.time_zone,
        "settings": {
            "sendSmsNotifications": config.send_sms,
            "sendSmsReminder": config.send_sms_reminder,
            "sendEmailNotifications": config.send_email,
        },
    }
    if organizer_email is not None:
        document["organizer"] = organizer_email
    if start is not None:
        document["startDateTime"] = to_rfc3339(start, config.time_zone)
    if end is not None:
        document["endDateTime"] = to_rfc3339(end, config.time_zone)
    meeting_subject = config.subject or subject(title)
    if meeting_subject is not None:
        document["subject"] = meeting_subject
        if not config.subject:
            locations["/subject"] = _pointer((*_PAYLOAD, "title"))

    warnings: list[str] = []
    clients = _clients(read, booker_phone, config, warnings, locations)
    if clients:
        document["appointmentClients"] = clients
    if warnings:
        document["warnings"] = warnings
        locations["/warnings"] = _pointer(_ATTENDEES)
    return document, locations


@dataclass(frozen=True)
class _Attendee:
    KEYS: ClassVar[tuple[str, ...]] = ("name", "firstName", "lastName", "email", "phoneNumber")

    name: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    phone_number: str | None


def _clients(
    attendees: Sequence[_Attendee],
    booker_phone: str | None,
    config: SourceConfig,
    warnings: list[str],
    locations: dict[str, str],
) -> list[dict[str, Any]]:
    """The attendees as appointmentClients, each field's origin added to `locations`."""
    clients: list[dict[str, Any]] = []
    for index, attendee in enumerate(attendees):
        path = (*_ATTENDEES, index)
        here = f"/appointmentClients/{index}"
        locations[here] = _pointer(path)
        client: dict[str, Any] = {}
        display_name = full_name(attendee.name, attendee.first_name, attendee.last_name)
        if display_name is not None:
            client["displayName"] = display_name
        named_by = "name" if full_name(attendee.name, None, None) else "firstName"
        locations[f"{here}/displayName"] = _pointer((*path, named_by))
        if attendee.email is not None and attendee.email.strip():
            client["emailAddress"] = attendee.email.strip()
        locations[f"{here}/emailAddress"] = _pointer((*path, "email"))
        # The booking form's phone answer is the booker's: the first attendee.
        number, number_path = attendee.phone_number, (*path, "phoneNumber")
        if (number is None or not number.strip()) and index == 0:
            number, number_path = booker_phone, _BOOKER_PHONE
        e164 = phone(number, config.phone_region, warnings)
        if e164 is not None:
            client["smsCapablePhoneNumber"] = e164
        locations[f"{here}/smsCapablePhoneNumber"] = _pointer(number_path)
        clients.append(client)
    return clients


KIND: SourceKind = CalCom()
