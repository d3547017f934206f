"""The attendance check after each appointment: the `appointment-attendance` queue's worker.

Pure logic with its adapters injected (store, queues, Graph, clock): no Azure SDK import, so
tests drive it with fakes or with Azurite alike. SPEC "After the appointment: attendance".

How a check is scheduled, and why this way:

* **One queue message per meeting and end.** When the reconciler commits a version that leaves
  a live meeting with a meeting id or an end it did not have before (a new booking, a
  reschedule that moved the end, a new organizer's meeting), it sends an
  :class:`AttendanceMessage` naming that meeting and end, hidden until ``end +
  ATTENDANCE_DELAY_MINUTES``. It is sent *before* the commit (like a callback's message), so a
  crash between the two cannot lose the check; a message whose commit never landed finds
  another meeting or end on the record and is dropped. A queue message survives restarts and
  scale-out, and needs no timer scanning the table.
* **No Graph call (nor storage read) before it is due.** Azure Queue hides a message for at
  most 7 days; a message woken before its ``due`` re-sends itself hidden for the rest (at most
  7 days at a time) and completes. The queue's messages never expire (time-to-live -1, see
  EventQueue.attendance_from_settings), so an appointment months out keeps its check.
* **Checked against the record when due.** The message is dropped when the record moved on:
  erased, cancelled, a different meeting, or a different end (the reschedule sent a message of
  its own). A failed newer version keeps the last good meeting (SPEC), so its check stands.
* **Never twice at once, never sent twice.** Before reading Graph the worker takes a short
  claim on a small row of its own (ETag-guarded); a worker that finds a live claim re-hides its
  message until the claim ends. The result and the callback it owes are written in one
  ETag-guarded write of the applied row (the callback outbox of shared/callbacks.py), and a
  message that finds attendance already on the record is a no-op: one Graph check and one
  ``appointment.attendance`` callback per meeting and end, however often the message comes.

What a check does with each answer:

* reports found: summarize (shared/attendance.py) and write;
* no report and still inside ``ATTENDANCE_WINDOW_HOURS`` after the end: look again after
  ``ATTENDANCE_RETRY_MINUTES`` (the last look falls on the window's end); past it: write
  ``nobodyJoined`` with ``reports: 0``;
* transient Graph trouble (429, 5xx, timeouts): look again after Retry-After or the retry
  interval, within the window; past it, give up with a warning and write nothing, since an
  outage is not evidence that nobody joined;
* a refusal (403: OnlineMeetingArtifact.Read.All or the access policy missing; 404
  meetingNotFound: the meeting was deleted outside the app, and its reports with it): write
  nothing and log the code once, so an operator sees it; guessing ``nobodyJoined`` would tell
  the scheduling system something nobody knows.

Logs carry the appointment id, the outcome and counts, never a client's name, e-mail or phone.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Final, Protocol

from shared import retention
from shared.attendance import AttendanceReport, summarize
from shared.callbacks import COMMIT_GRACE_SECONDS, message_for, owe
from shared.graph import PermanentGraphError, TransientGraphError
from shared.records import AppliedState, AttendanceClaim, StoredAppointment

if TYPE_CHECKING:
    from datetime import datetime

    from shared.documents import AppointmentDocument

log = logging.getLogger(__name__)

# Azure Queue's longest visibility timeout: no single hide may be longer.
MAX_HIDE_SECONDS: Final = 7 * 24 * 3600
# How long a claim holds: the Graph reads (one list, one records call per report, each within
# the Graph helper's 10 s budget of waiting) and the write fit well inside.
CLAIM_SECONDS: Final = 120.0
# How soon to look again when another worker holds the claim's row or the commit has not
# landed yet.
BUSY_SECONDS: Final = 5
# The reconciler's lease on the applied row is usually released within a second: wait for it
# (in steps) this long before handing the message back.
LEASE_WAIT_SECONDS: Final = 10.0
LEASE_POLL_SECONDS: Final = 0.5
WRITE_ROUNDS: Final = 8


class CheckResult(Enum):
    HIDDEN = "hidden"  # woken before it was due: hidden again
    WAITING = "waiting"  # its commit has not landed yet: looked at again shortly
    DROPPED = "dropped"  # the record moved on (cancelled, erased, another meeting or end)
    DUPLICATE = "duplicate"  # this meeting and end were checked already
    BUSY = "busy"  # another worker holds the check: looked at again once its claim ends
    RETRYING = "retrying"  # no report yet (or Graph unavailable): looked at again later
    RECORDED = "recorded"  # attendance written (and its callback owed)
    REFUSED = "refused"  # Graph refused (403, 404): nothing written, logged
    GAVE_UP = "gave-up"  # Graph unavailable through the window: nothing written, logged
    MALFORMED = "malformed"


@dataclass(frozen=True)
class AttendanceMessage:
    """The `appointment-attendance` queue message: check this meeting after this end."""

    appointment_id: str
    meeting_id: str
    end: float  # unix seconds: the endDateTime the check is for
    due: float  # unix seconds: not to be looked at before
    enqueued: float  # unix seconds when the reconciler sent it (the commit grace period)
    version: str  # the applied version whose commit sent it (documents.version_key)
    attempt: int = 0  # looks at Graph so far that found no report

    def to_message(self) -> str:
        return json.dumps(
            {
                "appointmentId": self.appointment_id,
                "meetingId": self.meeting_id,
                "end": self.end,
                "due": self.due,
                "enqueued": self.enqueued,
                "version": self.version,
                "attempt": self.attempt,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_message(cls, text: str) -> AttendanceMessage:
        """Raises ValueError for anything that is not a message of this app."""
        try:
            value = json.loads(text)
            return cls(
                str(value["appointmentId"]),
                str(value["meetingId"]),
                float(value["end"]),
                float(value["due"]),
                float(value["enqueued"]),
                str(value["version"]),
                int(value.get("attempt", 0)),
            )
        except (TypeError, KeyError, ValueError, AttributeError) as error:
            raise ValueError("not an attendance message") from error


@dataclass(frozen=True)
class CheckKey:
    """What one check is for: the live meeting and the end it is held until."""

    meeting_id: str
    end: float


def _end_of(document: AppointmentDocument | None) -> datetime | None:
    if document is None or document.is_cancelled:
        return None
    return document.end


def check_key(state: AppliedState | None) -> CheckKey | None:
    """The check a state calls for: its live meeting and end; None when it has no meeting to
    check (pending, cancelled, erased, or a first version that failed).

    Live: `scheduled`, or `failed` with the last good version's meeting still in place (SPEC:
    a failed newer version leaves the meeting fields of the last good one; that meeting is
    still held).
    """
    if state is None or state.meeting_id is None or state.organizer_id is None:
        return None
    if state.status not in ("scheduled", "failed"):
        return None
    end = _end_of(state.document)
    if end is None:
        return None
    return CheckKey(state.meeting_id, end.timestamp())


def first_message(
    appointment_id: str, key: CheckKey, version: str, delay_seconds: float, now: float
) -> AttendanceMessage:
    """The message the commit of `version` sends for a new meeting or end: due
    `delay_seconds` after the end."""
    return AttendanceMessage(
        appointment_id, key.meeting_id, key.end, key.end + delay_seconds, now, version
    )


def hide_for(due: float, now: float) -> int:
    """Whole seconds to hide a message due at `due` (at least 1, at most 7 days)."""
    return max(1, min(MAX_HIDE_SECONDS, math.ceil(due - now)))


class Store(Protocol):
    """The table adapter (shared.storage.AppointmentStore) as the check uses it."""

    def load(self, external_id: str) -> StoredAppointment: ...

    def commit_applied(
        self,
        external_id: str,
        state: AppliedState,
        etag: str | None,
        *,
        shown: AppointmentDocument | None = None,
    ) -> str: ...

    def save_attendance_claim(
        self, external_id: str, claim: AttendanceClaim, etag: str | None
    ) -> str: ...


class Queue(Protocol):
    """A queue adapter (shared.storage.EventQueue)."""

    def send(self, text: str, *, visibility_timeout: int | None = None) -> None: ...

    def send_to_poison(self, text: str) -> None: ...


class Graph(Protocol):
    """The Graph helper (shared.graph.GraphGateway) as the check uses it."""

    def attendance_reports(self, user_id: str, meeting_id: str) -> list[AttendanceReport]: ...


@dataclass(frozen=True)
class Timing:
    """ATTENDANCE_DELAY_MINUTES, ATTENDANCE_RETRY_MINUTES, ATTENDANCE_WINDOW_HOURS in seconds."""

    delay: float = 600.0
    retry: float = 900.0
    window: float = 86400.0


class AttendanceCheck:
    """One `appointment-attendance` message in; at most one Graph check per meeting and end."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        graph: Callable[[], Graph],
        timing: Timing,
        *,
        is_conflict: Callable[[Exception], bool],
        callback_queue: Queue | None = None,
        has_callbacks: Callable[[str | None], bool] = lambda source: False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_hide_seconds: int = MAX_HIDE_SECONDS,
    ) -> None:
        """`is_conflict(error)` tells the store's ETag conflict (shared.storage's
        ConcurrencyConflict) from other failures, so this module imports no Azure SDK.
        `has_callbacks(source)` says whether a document's source has a callback URL.
        `max_hide_seconds` is Azure's 7 days; tests shorten it to watch a message re-hide."""
        self._store = store
        self._queue = queue
        self._graph = graph
        self._timing = timing
        self._is_conflict = is_conflict
        self._callback_queue = callback_queue
        self._has_callbacks = has_callbacks
        self._clock = clock
        self._sleep = sleep
        self._max_hide = max_hide_seconds

    def handle(self, text: str) -> CheckResult:
        try:
            message = AttendanceMessage.from_message(text)
        except ValueError:
            log.error("malformed attendance message moved to the poison queue")
            self._queue.send_to_poison(text)
            return CheckResult.MALFORMED
        result = self._check(message)
        log.info("attendance check of appointment %s: %s", message.appointment_id, result.value)
        return result

    # ------------------------------------------------------------------ steps

    def _again(self, message: AttendanceMessage, due: float, now: float) -> None:
        """Send the message again, hidden until `due` (at most max_hide at a time)."""
        seconds = max(1, min(self._max_hide, math.ceil(due - now)))
        self._queue.send(replace(message, due=due).to_message(), visibility_timeout=seconds)

    def _check(self, message: AttendanceMessage) -> CheckResult:
        now = self._clock()
        if now < message.due:
            # Woken early (a hide is capped at 7 days): no storage read, no Graph call.
            self._again(message, message.due, now)
            return CheckResult.HIDDEN
        stored = self._store.load(message.appointment_id)
        moved = self._moved_on(message, stored)
        if moved is not None:
            if moved is CheckResult.WAITING:
                self._again(message, now + BUSY_SECONDS, now)
            return moved
        applied = stored.applied
        assert applied is not None
        assert applied.organizer_id is not None
        claim = stored.attendance_claim
        if claim is not None and claim.until > now:
            # Looked at again soon, not at the claim's end: a check usually ends in a second,
            # and the next look then finds it done (DUPLICATE) without calling Graph.
            self._again(message, min(claim.until, now + BUSY_SECONDS), now)
            return CheckResult.BUSY
        mine = AttendanceClaim(uuid.uuid4().hex, now + CLAIM_SECONDS)
        try:
            claim_etag = self._store.save_attendance_claim(
                message.appointment_id, mine, stored.attendance_claim_etag
            )
        except Exception as error:
            if not self._is_conflict(error):
                raise
            self._again(message, now + BUSY_SECONDS, now)
            return CheckResult.BUSY
        try:
            return self._read_and_write(message, applied.organizer_id, claim_etag)
        except Exception:
            self._release(message.appointment_id, claim_etag)
            raise

    def _moved_on(
        self, message: AttendanceMessage, stored: StoredAppointment
    ) -> CheckResult | None:
        """Why this message no longer applies (None: it does)."""
        if stored.erased:
            return CheckResult.DROPPED
        applied = stored.applied
        if check_key(applied) != CheckKey(message.meeting_id, message.end):
            version = applied.version if applied is not None else None
            landed = version is not None and version >= message.version
            if not landed and self._clock() - message.enqueued < COMMIT_GRACE_SECONDS:
                return CheckResult.WAITING  # sent ahead of a commit that may still land
            # Its version was committed and moved on since (or never will be): a newer
            # meeting or end was sent a message of its own by its commit.
            return CheckResult.DROPPED
        assert stored.applied is not None
        if stored.applied.attendance is not None:
            return CheckResult.DUPLICATE
        return None

    def _release(self, appointment_id: str, etag: str) -> None:
        """Give the claim up early (best effort: it ends by itself anyway)."""
        try:
            self._store.save_attendance_claim(appointment_id, AttendanceClaim("", 0.0), etag)
        except Exception as error:
            if not self._is_conflict(error):
                log.warning("attendance claim of %s not released; it expires", appointment_id)

    def _read_and_write(
        self, message: AttendanceMessage, organizer_id: str, claim_etag: str
    ) -> CheckResult:
        window_end = message.end + self._timing.window
        try:
            reports = self._graph().attendance_reports(organizer_id, message.meeting_id)
        except PermanentGraphError as error:
            self._release(message.appointment_id, claim_etag)
            log.warning(
                "attendance of appointment %s not read: Graph refused (%s); nothing recorded",
                message.appointment_id,
                error.code,
            )
            return CheckResult.REFUSED
        except TransientGraphError as error:
            self._release(message.appointment_id, claim_etag)
            now = self._clock()
            if now >= window_end:
                log.warning(
                    "attendance of appointment %s not read: %s through the window; "
                    "nothing recorded",
                    message.appointment_id,
                    error.summary,
                )
                return CheckResult.GAVE_UP
            wait = max(error.retry_after or 0.0, self._timing.retry)
            self._again(message, min(now + wait, window_end), now)
            return CheckResult.RETRYING
        now = self._clock()
        if not reports and now < window_end:
            self._release(message.appointment_id, claim_etag)
            later = replace(message, attempt=message.attempt + 1)
            self._again(later, min(now + self._timing.retry, window_end), now)
            return CheckResult.RETRYING
        result = self._write(message, organizer_id, reports, now)
        self._release(message.appointment_id, claim_etag)
        return result

    def _write(
        self,
        message: AttendanceMessage,
        organizer_id: str,
        reports: Sequence[AttendanceReport],
        now: float,
    ) -> CheckResult:
        """The summary and the callback it owes, in one ETag-guarded write of the applied row.

        Waits out a reconciler's lease rather than writing under it (that would make the
        reconciler's own commit fail and redo its round of Graph calls).
        """
        from datetime import UTC, datetime

        summary = summarize(reports, organizer_id, datetime.fromtimestamp(now, UTC))
        waited = 0.0
        for _ in range(WRITE_ROUNDS):
            stored = self._store.load(message.appointment_id)
            moved = self._moved_on(message, stored)
            if moved is not None:
                # Rescheduled, cancelled or erased while Graph was read: this result is moot.
                return CheckResult.DROPPED if moved is CheckResult.WAITING else moved
            applied = stored.applied
            assert applied is not None
            if applied.lease_owner and applied.lease_until > self._clock():
                if waited >= LEASE_WAIT_SECONDS:
                    break
                self._sleep(LEASE_POLL_SECONDS)
                waited += LEASE_POLL_SECONDS
                continue
            if retention.NOTE in applied.warnings:
                # Read after the retention pass had pseudonymized the record (a short
                # RETENTION_DAYS against a long window): its clients get no names back.
                summary = retention.pseudonymize_attendance(summary)
            after = replace(applied, attendance=summary)
            document = applied.document
            source = document.source if document is not None else None
            if self._callback_queue is not None and self._has_callbacks(source):
                after = owe(after, "appointment.attendance", self._clock())
                assert after.callback is not None
                # Sent before the commit, like the reconciler's: once the commit lands, its
                # message exists; one whose commit lost is dropped by the delivery function.
                self._callback_queue.send(
                    message_for(message.appointment_id, after.callback).to_message()
                )
            shown = stored.desired.document if stored.desired is not None else None
            try:
                self._store.commit_applied(
                    message.appointment_id, after, stored.applied_etag, shown=shown
                )
            except Exception as error:
                if not self._is_conflict(error):
                    raise
                continue
            log.info(
                "attendance of appointment %s: %s (%d reports, %d clients)",
                message.appointment_id,
                summary.outcome,
                summary.reports,
                len(summary.clients),
            )
            return CheckResult.RECORDED
        # Still contended: look again shortly (this costs one more Graph read, never a second
        # record: the next look finds the record as it is then).
        self._again(message, self._clock() + BUSY_SECONDS, self._clock())
        return CheckResult.BUSY
