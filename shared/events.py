"""The queue message between intake and reconciler. Pure.

It carries the whole document, so the queue alone is enough to rebuild desired state: if the
table write after an enqueue failed, the reconciler stores the document itself. The host reads
it as plain UTF-8 JSON (host.json `messageEncoding: none`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.documents import AppointmentDocument, parse_document


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
        return cls(parsed, correlation_id[:64], max(0, deferrals), replay)
