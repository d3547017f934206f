"""The webhook intake: one pipeline for every source, in the contract's order.

Framework-free (no azure.functions, no Graph SDK): the HTTP function adapts requests to it.
Checks run so that an unauthenticated caller learns nothing about the payload: size (413),
authentication (401), content type (415), parse (400), content (400, or an HL7 `AE`). What
differs per sender (how it signs, what its body means, how it wants to be answered) is its
kind's module (shared/sources); everything else is here, once.

Each document is enqueued before its desired row is written: the message carries the whole
document and the reconciler stores it again, so a failure between the two leaves no row that
no message will ever apply (a status record stuck at `pending`).

Every answer to a configured source is also counted for its health (shared/health.py): the
verdict is built here, beside the answer, from the app's own error and never from the body, and
handed to a recorder that writes off the request's path, so it can neither slow nor change
the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from shared import health
from shared.documents import AppointmentDocument, FieldError, parse_document
from shared.events import AppointmentEvent
from shared.health import ACCEPTED, IGNORED, HealthRecorder, Verdict
from shared.problems import Problem, validation_problem
from shared.settings import Settings
from shared.sources import kind as kind_of
from shared.sources.base import (
    DEFAULT_SOURCE,
    UNAVAILABLE,
    Accepted,
    AuthenticationError,
    Candidate,
    InvalidBody,
    Outcome,
    Refused,
    Reply,
    SourceConfig,
    SourceKind,
    UnsupportedMediaType,
)
from shared.storage import (
    AppointmentStore,
    CombinedInvalid,
    EventQueue,
    StorageRejected,
    StorageUnavailable,
)

__all__ = ["UNAVAILABLE", "Intake", "Reply", "refused"]

log = logging.getLogger(__name__)


def refused(error: StorageRejected) -> Problem:
    """500, not 503: storage answered the same request with a refusal that retries cannot cure."""
    return Problem(500, f"Storage refused the document: {error.error_code}.")


class Intake:
    """POST /api/webhooks/{source} (and today's /api/webhooks/appointments)."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], AppointmentStore],
        queue: Callable[[], EventQueue],
        clock: Callable[[], float] = time.time,
        health: HealthRecorder | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._clock = clock
        self._health = health

    def source(self, name: str) -> SourceConfig | Reply:
        """The configured source behind a route, or the 404/503 answer to give instead."""
        key = name.lower()
        error = self._settings.source_errors.get(key)
        config = self._settings.source_config(key) if error is None else None
        if config is not None:
            return config
        if error is not None:
            log.error("source %s is misconfigured: %s", key, error)
            detail = f"The webhook endpoint is misconfigured: {error.setting}."
            return Reply.problem(Problem(503, detail))
        return Reply.problem(Problem(404, "No source with this name is configured."))

    def handle(
        self,
        headers: Mapping[str, str],
        body: bytes,
        correlation_id: str,
        source: str = DEFAULT_SOURCE,
    ) -> Reply:
        """Answer one delivery; `headers` have lower-case names."""
        received = self._clock()
        reply, verdict = self._handle(headers, body, correlation_id, source)
        if verdict is not None and self._health is not None:
            self._health.record(source.lower(), verdict, received)
        return reply

    def _handle(
        self,
        headers: Mapping[str, str],
        body: bytes,
        correlation_id: str,
        source: str,
    ) -> tuple[Reply, Verdict | None]:
        """The answer, and what it counts as for the source's health (None: not counted)."""
        config = self.source(source)
        if isinstance(config, Reply):
            error = self._settings.source_errors.get(source.lower())
            if error is None:
                return config, None  # unknown: no source to count it for
            return config, health.refusal("503", f"misconfigured: {error.setting}")
        kind = kind_of(config.kind)
        admitted = self._admit(config, kind, headers, body, correlation_id)
        if admitted is not None:
            return admitted
        try:
            parsed = kind.parse(headers, body, config)
        except UnsupportedMediaType as error:
            # Only the bare media type (no parameters), quoted and cut short: not client data.
            media = str(error)[:100]
            log.info(
                "webhook refused (%s): Content-Type %r (correlation %s)",
                config.name,
                media,
                correlation_id,
            )
            *others, last = kind.media_types
            choices = f"{', '.join(others)} or {last}" if others else last
            detail = f"Content-Type {error} is not supported; use {choices}."
            # The reason leaves the sender's media type out: it is the sender's value.
            verdict = health.refusal("415", "Content-Type not supported")
            return Reply.problem(Problem(415, detail)), verdict
        except InvalidBody as invalid:
            # Unreadable as the kind's format at all (an HL7 body without MSH): no reply in
            # the sender's format is possible, so every kind answers a 400 problem.
            self._rejected(config, len(invalid.errors), correlation_id)
            reply = Reply.problem(validation_problem(invalid.detail, invalid.errors))
            return reply, health.field_refusal("400", invalid.errors)
        except Refused as refusal_:
            self._rejected(config, len(refusal_.errors), correlation_id)
            outcome = Outcome(
                "refused",
                detail=refusal_.detail,
                errors=tuple(refusal_.errors),
                context=refusal_.context,
            )
            return self._answer(kind, headers, outcome)
        if parsed.ignored is not None:
            log.info(
                "webhook acknowledged (%s): %s changes nothing (correlation %s)",
                config.name,
                parsed.ignored[:64],
                correlation_id,
            )
            outcome = Outcome("ignored", ignored=parsed.ignored, context=parsed.context)
            return self._answer(kind, headers, outcome)

        documents: list[AppointmentDocument] = []
        errors: list[FieldError] = []
        for candidate in parsed.candidates:
            checked = parse_document(candidate.document)
            if isinstance(checked, list):
                errors.extend(FieldError(candidate.locate(e.path), e.message) for e in checked)
            else:
                documents.append(checked)
        if errors:
            # All or nothing: a delivery with one unusable appointment stores none of them.
            self._rejected(config, len(errors), correlation_id)
            detail = "The delivery has invalid fields."
            outcome = Outcome(
                "refused", detail=detail, errors=tuple(errors), context=parsed.context
            )
            return self._answer(kind, headers, outcome)
        try:
            outcome = self._keep(
                config, parsed.candidates, documents, parsed.context, correlation_id
            )
        except StorageRejected as error:
            log.error(
                "storage refused a document at intake: %s (correlation %s)",
                error.error_code,
                correlation_id,
            )
            # error_code is a plain token storage gave (see storage._rejection), not a value.
            verdict = health.refusal("500", f"storage refused: {error.error_code}")
            return Reply.problem(refused(error)), verdict
        return self._answer(kind, headers, outcome)

    def _admit(
        self,
        config: SourceConfig,
        kind: SourceKind,
        headers: Mapping[str, str],
        body: bytes,
        correlation_id: str,
    ) -> tuple[Reply, Verdict] | None:
        """The 503/413/401 answer for a delivery that must not be read, else None."""
        settings = self._settings
        if not config.secrets:
            setting = (
                "WEBHOOK_SECRETS"
                if config.name == DEFAULT_SOURCE
                else f"SOURCES__{config.name}__SECRETS"
            )
            log.error(
                "%s is not configured: refusing webhooks (correlation %s)",
                setting,
                correlation_id,
            )
            detail = "The webhook endpoint is not configured (no signing secret)."
            verdict = health.refusal("503", f"not configured: {setting}")
            return Reply.problem(Problem(503, detail)), verdict
        declared = headers.get("content-length", "")
        if len(body) > settings.max_body_bytes or (
            declared.isdigit() and int(declared) > settings.max_body_bytes
        ):
            log.info(
                "webhook refused (%s): body over %d bytes (correlation %s)",
                config.name,
                settings.max_body_bytes,
                correlation_id,
            )
            detail = f"The body is larger than {settings.max_body_bytes} bytes."
            verdict = health.refusal("413", f"body over {settings.max_body_bytes} bytes")
            return Reply.problem(Problem(413, detail)), verdict
        try:
            kind.authenticate(
                headers,
                body,
                config.secrets,
                now=self._clock(),
                tolerance_seconds=settings.webhook_tolerance_seconds,
            )
        except AuthenticationError as error:
            log.warning(
                "webhook refused (%s): %s (correlation %s)", config.name, error, correlation_id
            )
            reply = Reply.problem(
                Problem(401, str(error), headers={"WWW-Authenticate": error.challenge})
            )
            # The kinds' authentication messages name headers and rules, never what was sent.
            return reply, health.refusal("401", str(error))
        return None

    def _keep(
        self,
        config: SourceConfig,
        candidates: tuple[Candidate, ...],
        documents: list[AppointmentDocument],
        context: object,
        correlation_id: str,
    ) -> Outcome:
        """Enqueue and store every document; the outcome to answer with."""
        accepted: list[Accepted] = []
        try:
            store, queue = self._store(), self._queue()
            for candidate, document in zip(candidates, documents, strict=True):
                if candidate.delivery_id is None and candidate.part is None:
                    queue.send(AppointmentEvent(document, correlation_id).to_message())
                    outcome = store.save_desired(document, correlation_id)
                    kept = document
                else:

                    def enqueue(final: AppointmentDocument, c: Candidate = candidate) -> None:
                        event = AppointmentEvent(
                            final,
                            correlation_id,
                            delivery_id=c.delivery_id,
                            source_version=document.last_modified_date_time,  # noqa: B023
                            part=c.part,
                        )
                        queue.send(event.to_message())

                    saved = store.save_delivery(
                        document,
                        correlation_id,
                        delivery_id=candidate.delivery_id,
                        part=candidate.part,
                        enqueue=enqueue,
                        probably_new=candidate.probably_new,
                    )
                    outcome, kept = saved.outcome, saved.document
                log.info(
                    "accepted appointment %s version %s (%s, source %s, correlation %s)",
                    kept.external_appointment_id,
                    kept.last_modified_date_time,
                    outcome.value,
                    config.name,
                    correlation_id,
                )
                accepted.append(
                    Accepted(kept.external_appointment_id, kept.last_modified_date_time)
                )
        except CombinedInvalid as invalid:
            detail = "The appointment's deliveries together break the contract."
            return Outcome("refused", detail=detail, errors=tuple(invalid.errors), context=context)
        except StorageUnavailable as error:
            log.error("storage unavailable at intake: %s (correlation %s)", error, correlation_id)
            return Outcome("unavailable", context=context)
        return Outcome("accepted", accepted=tuple(accepted), context=context)

    def _answer(
        self, kind: SourceKind, headers: Mapping[str, str], outcome: Outcome
    ) -> tuple[Reply, Verdict | None]:
        reply = kind.respond(outcome, headers, now=self._clock())
        return reply, verdict_of(outcome, reply)

    @staticmethod
    def _rejected(config: SourceConfig, count: int, correlation_id: str) -> None:
        log.info(
            "webhook rejected (%s): %d invalid fields (correlation %s)",
            config.name,
            count,
            correlation_id,
        )


def verdict_of(outcome: Outcome, reply: Reply) -> Verdict | None:
    """What a kind's answer to `outcome` counts as; storage trouble (503, `AR`) not at all.

    A refusal answered with a success status is the sender's application-level rejection (an
    HL7 `AE` in a 200), so its reason is labelled `AE`; otherwise with the HTTP status.
    """
    if outcome.result == "accepted":
        return ACCEPTED
    if outcome.result == "ignored":
        return IGNORED
    if outcome.result == "refused":
        label = "AE" if reply.status < 300 else str(reply.status)
        return health.field_refusal(label, outcome.errors)
    return None
