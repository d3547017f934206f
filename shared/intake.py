"""The webhook intake: authenticate, parse, validate, enqueue and store, in the contract's order.

Framework-free (no azure.functions, no Graph SDK): the HTTP function adapts requests to it.
Checks run so that an unauthenticated caller learns nothing about the payload: size (413),
signature (401), content type (415), JSON and envelope (400), documents (400).

Each document is enqueued before its desired row is written: the message carries the whole
document and the reconciler stores it again, so a failure between the two leaves no row that
no message will ever apply (a status record stuck at `pending`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shared import signatures
from shared.envelopes import InvalidBody, UnsupportedMediaType, parse_body
from shared.events import AppointmentEvent
from shared.problems import MEDIA_TYPE, Problem, validation_problem
from shared.settings import Settings
from shared.storage import AppointmentStore, EventQueue, StorageRejected, StorageUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, independent of the hosting framework."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def problem(cls, problem: Problem, instance: str | None = None) -> Reply:
        return cls(
            problem.status,
            problem.to_bytes(instance),
            {"Content-Type": MEDIA_TYPE, **problem.headers},
        )

    @classmethod
    def json(cls, status: int, value: object) -> Reply:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json"})


# Part of a batch may be recorded before storage fails; a retry of the whole request is safe:
# the store keeps the first of equal versions and the reconciler skips duplicates.
UNAVAILABLE = Problem(
    503,
    "Storage is unavailable; retry the whole request "
    "(documents already recorded are recognised as duplicates).",
    headers={"Retry-After": "10"},
)


def refused(error: StorageRejected) -> Problem:
    """500, not 503: storage answered the same request with a refusal that retries cannot cure."""
    return Problem(500, f"Storage refused the document: {error.error_code}.")


class Intake:
    """POST /api/webhooks/appointments."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], AppointmentStore],
        queue: Callable[[], EventQueue],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._clock = clock

    def handle(self, headers: Mapping[str, str], body: bytes, correlation_id: str) -> Reply:
        settings = self._settings
        if not settings.webhook_secrets:
            log.error(
                "WEBHOOK_SECRETS is not configured: refusing webhooks (correlation %s)",
                correlation_id,
            )
            detail = "The webhook endpoint is not configured (no signing secret)."
            return Reply.problem(Problem(503, detail))
        declared = headers.get("content-length", "")
        if len(body) > settings.max_body_bytes or (
            declared.isdigit() and int(declared) > settings.max_body_bytes
        ):
            log.info(
                "webhook refused: body over %d bytes (correlation %s)",
                settings.max_body_bytes,
                correlation_id,
            )
            detail = f"The body is larger than {settings.max_body_bytes} bytes."
            return Reply.problem(Problem(413, detail))
        try:
            signatures.verify(
                headers.get(signatures.HEADER.lower()),
                body,
                settings.webhook_secrets,
                now=self._clock(),
                tolerance_seconds=settings.webhook_tolerance_seconds,
            )
        except signatures.SignatureError as error:
            log.warning("webhook refused: %s (correlation %s)", error, correlation_id)
            return Reply.problem(
                Problem(401, str(error), headers={"WWW-Authenticate": "Signature"})
            )
        try:
            entries = parse_body(headers.get("content-type"), body)
        except UnsupportedMediaType as error:
            # Only the bare media type (no parameters), quoted and cut short: not client data.
            kind = str(error)[:100]
            log.info("webhook refused: Content-Type %r (correlation %s)", kind, correlation_id)
            detail = f"Content-Type {error} is not supported; use application/json, "
            detail += "application/cloudevents+json or application/cloudevents-batch+json."
            return Reply.problem(Problem(415, detail))
        except InvalidBody as invalid:
            log.info(
                "webhook rejected: %d invalid fields (correlation %s)",
                len(invalid.errors),
                correlation_id,
            )
            return Reply.problem(validation_problem(invalid.detail, invalid.errors))

        accepted = []
        try:
            store, queue = self._store(), self._queue()
            for entry in entries:
                document = entry.document
                queue.send(AppointmentEvent(document, correlation_id).to_message())
                outcome = store.save_desired(document, correlation_id)
                log.info(
                    "accepted appointment %s version %s (%s, correlation %s)",
                    document.external_appointment_id,
                    document.last_modified_date_time,
                    outcome.value,
                    correlation_id,
                )
                accepted.append(
                    {
                        "externalAppointmentId": document.external_appointment_id,
                        "lastModifiedDateTime": document.last_modified_date_time,
                    }
                )
        except StorageUnavailable as error:
            log.error("storage unavailable at intake: %s (correlation %s)", error, correlation_id)
            return Reply.problem(UNAVAILABLE)
        except StorageRejected as error:
            log.error(
                "storage refused a document at intake: %s (correlation %s)",
                error.error_code,
                correlation_id,
            )
            return Reply.problem(refused(error))
        return Reply.json(202, {"accepted": accepted})
