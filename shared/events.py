"""The queue message between intake and reconciler. Pure.

It carries the whole document, so the queue alone is enough to rebuild desired state: if the
table write after an enqueue failed, the reconciler stores the document itself. The host reads
it as plain UTF-8 JSON (host.json `messageEncoding: none`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared import parts
from shared.documents import AppointmentDocument, parse_document, parse_rfc3339
from shared.sources.base import Part


class MalformedMessage(ValueError):
    """A queue message this app did not write (or cannot read); it goes to the poison queue."""


@dataclass(frozen=True)
class AppointmentEvent:
    document: AppointmentDocument
    correlation_id: str
    # Times this event was handed back to the queue for a long Retry-After (not a failure).
    deferrals: int = 0
    # Set by POST .../reconcile: try again a version that failed permanently before.
    replay: bool = False
    # How the delivery was stored (shared/storage.py `save_delivery`), so the reconciler can
    # store it again exactly: the sender's delivery id and own version, or the party's part.
    delivery_id: str | None = None
    source_version: str | None = None
    part: Part | None = None

    @property
    def needs_stored_state(self) -> bool:
        return self.delivery_id is not None or self.part is not None

    def to_message(self) -> str:
        body: dict[str, Any] = {
            "externalAppointmentId": self.document.external_appointment_id,
            "lastModifiedDateTime": self.document.last_modified_date_time,
            "correlationId": self.correlation_id,
            "document": self.document.to_json(),
        }
        if self.deferrals:
            body["deferrals"] = self.deferrals
        if self.replay:
            body["replay"] = True
        if self.delivery_id is not None:
            body["deliveryId"] = self.delivery_id
        if self.source_version is not None:
            body["sourceVersion"] = self.source_version
        if self.part is not None:
            body["part"] = parts.to_json(self.part)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_message(cls, text: str) -> AppointmentEvent:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise MalformedMessage("not JSON") from None
        if not isinstance(body, dict):
            raise MalformedMessage("not a JSON object")
        parsed = parse_document(body.get("document"))
        if isinstance(parsed, list):
            raise MalformedMessage("document is invalid: " + ", ".join(e.path for e in parsed))
        correlation_id = body.get("correlationId")
        deferrals = body.get("deferrals", 0)
        replay = body.get("replay", False)
        if (
            not isinstance(correlation_id, str)
            or type(deferrals) is not int
            or not isinstance(replay, bool)
        ):
            raise MalformedMessage("correlationId, deferrals or replay has the wrong type")
        delivery_id = body.get("deliveryId")
        source_version = body.get("sourceVersion")
        if not isinstance(delivery_id, str | None) or not isinstance(source_version, str | None):
            raise MalformedMessage("deliveryId or sourceVersion has the wrong type")
        try:
            if source_version is not None:
                parse_rfc3339(source_version)
            raw_part = body.get("part")
            part = None if raw_part is None else parts.from_json(raw_part)
        except (ValueError, KeyError, TypeError):
            raise MalformedMessage("sourceVersion or part is invalid") from None
        return cls(
            parsed,
            correlation_id[:64],
            max(0, deferrals),
            replay,
            delivery_id,
            source_version,
            part,
        )


@dataclass(frozen=True)
class EraseEvent:
    """DELETE /api/appointments/{id}: delete the live meeting quietly and every stored trace.

    Carries the id only: the message itself holds no client data.
    """

    external_id: str
    correlation_id: str

    def to_message(self) -> str:
        return json.dumps(
            {"erase": self.external_id, "correlationId": self.correlation_id},
            separators=(",", ":"),
            ensure_ascii=False,
        )


def parse_message(text: str) -> AppointmentEvent | EraseEvent:
    """Either message of the `appointment-events` queue; MalformedMessage for anything else."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedMessage("not JSON") from None
    if isinstance(body, dict) and "erase" in body:
        external_id, correlation_id = body.get("erase"), body.get("correlationId")
        if not isinstance(external_id, str) or not isinstance(correlation_id, str):
            raise MalformedMessage("erase or correlationId has the wrong type")
        return EraseEvent(external_id, correlation_id[:64])
    return AppointmentEvent.from_message(text)


def names_appointment(text: str, external_id: str) -> bool:
    """Whether an `appointment-events` message (valid or not) is about `external_id`.

    Erasure uses it to clear the poison queue: a parked message holds the whole document, and
    one parked because it was invalid must still be found, so this reads only the id fields
    instead of parsing the message.
    """
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(body, dict):
        return False
    document = body.get("document")
    named = {body.get("externalAppointmentId"), body.get("erase")}
    if isinstance(document, dict):
        named.add(document.get("externalAppointmentId"))
    return external_id in named
