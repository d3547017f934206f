"""Deliver one owed callback: the `appointment-callbacks` queue's worker. Framework-free.

Runs in its own queue-triggered function, never inside the reconciler's Graph path, so a slow
or dead receiver delays nothing but its own callbacks. One message names one callback of one
appointment; the record says whether that callback is still the latest (a newer one
supersedes it: the newer one carries the current record) and how delivery went so far.

Retries are the app's, not the host's: a failed attempt re-sends the message hidden for the
next delay of CALLBACK_RETRY_SCHEDULE (the host's fixed visibility timeout cannot follow a
schedule), and after the last one the message goes to `appointment-callbacks-poison`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Protocol

from shared.callbacks import (
    COMMIT_GRACE_SECONDS,
    COMMIT_POLL_SECONDS,
    CallbackMessage,
    CallbackTarget,
    CallbackType,
    OwedCallback,
    Progress,
    body,
    message_for,
    next_delay,
    owe,
    progress_for,
)
from shared.records import StoredAppointment, status_view
from shared.storage import AppointmentStore, ConcurrencyConflict, EventQueue

log = logging.getLogger(__name__)


class DeliveryResult(Enum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed; sent again for the next delay of the schedule
    DEAD_LETTERED = "dead-lettered"  # the schedule ran out: in the poison queue
    GONE = "gone"  # 410: the receiver wants no more of this callback
    SUPERSEDED = "superseded"  # a newer callback of the appointment exists
    WAITING = "waiting"  # its commit has not landed yet: looked at again shortly
    DROPPED = "dropped"  # already settled, never committed, or callbacks switched off
    MALFORMED = "malformed"


class Attempt(Protocol):
    """What one POST produced (shared.outbound.DeliveryAttempt)."""

    @property
    def status_code(self) -> int | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def delivered(self) -> bool: ...

    @property
    def gone(self) -> bool: ...


class Poster(Protocol):
    def post(
        self, url: str, message_id: str, timestamp: int, body: bytes, secrets: tuple[str, ...]
    ) -> Attempt: ...


class CallbackDelivery:
    """One `appointment-callbacks` message in, at most one POST out."""

    def __init__(
        self,
        store: AppointmentStore,
        queue: EventQueue,
        poster: Callable[[], Poster],
        target: Callable[[str | None], CallbackTarget | None],
        schedule: tuple[int, ...],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`target(source)` is where a source's callbacks go now (None: switched off)."""
        self._store = store
        self._queue = queue
        self._poster = poster
        self._target = target
        self._schedule = schedule
        self._clock = clock

    def handle(self, text: str) -> DeliveryResult:
        try:
            message = CallbackMessage.from_message(text)
        except ValueError:
            log.error("malformed callback message moved to the poison queue")
            self._queue.send_to_poison(text)
            return DeliveryResult.MALFORMED
        stored = self._store.load(message.appointment_id)
        result = self._deliver(message, stored, text)
        log.info(
            "callback %s of appointment %s: %s",
            message.callback_id,
            message.appointment_id,
            result.value,
        )
        return result

    def _save(
        self, message: CallbackMessage, progress: Progress, stored: StoredAppointment
    ) -> bool:
        """Record how this callback's delivery went; False when a newer callback's delivery
        wrote the row meanwhile (that one's progress stands, this one is superseded)."""
        etag = stored.callback_etag
        for _ in range(2):
            try:
                self._store.save_callback_progress(message.appointment_id, progress, etag)
                return True
            except ConcurrencyConflict:
                again = self._store.load(message.appointment_id)
                if (
                    again.callback_progress is not None
                    and again.callback_progress.id != progress.id
                ):
                    return False
                etag = again.callback_etag
        return False

    def _deliver(
        self, message: CallbackMessage, stored: StoredAppointment, text: str
    ) -> DeliveryResult:
        applied = stored.applied
        owed = applied.callback if applied else None
        if owed is None or owed.sequence < message.sequence:
            # Sent ahead of its commit: wait for it a while, then it never happened.
            if self._clock() - message.enqueued < COMMIT_GRACE_SECONDS:
                self._queue.send(text, visibility_timeout=COMMIT_POLL_SECONDS)
                return DeliveryResult.WAITING
            return DeliveryResult.DROPPED
        if owed.sequence > message.sequence or owed.id != message.callback_id:
            return DeliveryResult.SUPERSEDED
        progress = progress_for(owed, stored.callback_progress)
        if progress.status != "pending":
            return DeliveryResult.DROPPED  # a repeat delivery of a settled callback
        assert applied is not None
        source = applied.document.source if applied.document else None
        if source is None and stored.desired is not None:
            source = stored.desired.document.source
        target = self._target(source)
        if target is None:
            self._save(message, replace(progress, status="failed"), stored)
            log.warning("callback %s dropped: its source has no callback URL now", owed.id)
            return DeliveryResult.DROPPED

        now = self._clock()
        payload = body(owed, status_view(stored))
        attempt = self._poster().post(target.url, owed.id, math.floor(now), payload, target.secrets)
        tried = replace(
            progress,
            attempts=progress.attempts + 1,
            last_attempt=now,
            last_status_code=attempt.status_code,
        )
        if attempt.delivered:
            self._save(message, replace(tried, status="delivered"), stored)
            return DeliveryResult.DELIVERED
        why = attempt.error or f"HTTP {attempt.status_code}"
        if attempt.gone:
            self._save(message, replace(tried, status="failed"), stored)
            return DeliveryResult.GONE
        delay = next_delay(self._schedule, tried.attempts)
        if delay is None:
            # The record says failed before the message is parked: an operator looking at the
            # poison queue finds the record already telling the same story.
            if not self._save(message, replace(tried, status="failed"), stored):
                return DeliveryResult.SUPERSEDED
            self._queue.send_to_poison(text)
            log.warning(
                "callback %s failed after %d attempts (last: %s): in appointment-callbacks-poison",
                owed.id,
                tried.attempts,
                why,
            )
            return DeliveryResult.DEAD_LETTERED
        # Sent again before the progress is written: a crash in between costs one extra
        # attempt, never the callback.
        self._queue.send(text, visibility_timeout=delay)
        self._save(message, tried, stored)
        log.info(
            "callback %s attempt %d failed (%s); next in %ds", owed.id, tried.attempts, why, delay
        )
        return DeliveryResult.RETRYING


class ResendRefused(Exception):
    """The current record cannot be sent again now; `status` is the HTTP answer."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


_TYPE_BY_STATUS: dict[str, CallbackType] = {
    "scheduled": "appointment.scheduled",
    "cancelled": "appointment.cancelled",
    "failed": "appointment.failed",
}
RESEND_ROUNDS = 5


def resend(
    store: AppointmentStore,
    queue: EventQueue,
    external_id: str,
    *,
    clock: Callable[[], float] = time.time,
) -> OwedCallback:
    """Owe the sender the current record again (POST /api/appointments/{id}/callback).

    A new callback (a new webhook-id, so a receiver that deduplicates takes it) of the latest
    callback's type, written like the reconciler's: message first, then an ETag-guarded commit.
    The caller checks that the source has callbacks. While a reconciliation holds the lease the
    answer is "try again shortly": writing under it would make that worker redo its round.
    """
    for _ in range(RESEND_ROUNDS):
        stored = store.load(external_id)
        applied = stored.applied
        if applied is None or applied.status == "pending":
            raise ResendRefused(
                409, "Nothing has been applied for this appointment yet; its callback follows."
            )
        now = clock()
        if applied.lease_owner and applied.lease_until > now:
            raise ResendRefused(503, "The appointment is being reconciled; try again.", 2)
        kind = applied.callback.type if applied.callback else _TYPE_BY_STATUS[applied.status]
        after = owe(applied, kind, now)
        assert after.callback is not None
        queue.send(message_for(external_id, after.callback).to_message())
        try:
            shown = stored.desired.document if stored.desired else None
            store.commit_applied(external_id, after, stored.applied_etag, shown=shown)
        except ConcurrencyConflict:
            continue
        return after.callback
    raise ResendRefused(503, "The appointment is changing; try again.", 2)
