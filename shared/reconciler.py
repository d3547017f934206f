"""The reconciler: make Graph match the newest document of one appointment.

Imported on the first queue message only (never by the webhook path): it loads the Graph
helper, and through it the HTTP stack the Graph SDK uses.

Read desired and applied state, plan (pure), take a lease, execute through the Graph helper,
commit with the table's ETag. Framework-free: the queue function adapts messages to it.

Why a lease: the queue delivers at least once and many instances run at once; the lease (an
ETag-guarded write before any Graph call) keeps one worker at a time on an appointment and
records the meeting it is about to create, so that a crash can never orphan a meeting.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import quote

from shared.attendance_check import CheckKey, check_key, first_message, hide_for
from shared.callbacks import callback_type, message_for, owe
from shared.directory import Directory, unmapped_message
from shared.documents import AppointmentDocument, version_key
from shared.events import (
    AppointmentEvent,
    EraseEvent,
    MalformedMessage,
    names_appointment,
    parse_message,
)
from shared.graph import (
    CALL_DEADLINE_SECONDS,
    GraphError,
    GraphGateway,
    PermanentGraphError,
    TransientGraphError,
)
from shared.mail import build_message
from shared.planning import (
    CURRENT,
    NEW,
    CreateOrGetMeeting,
    DeleteMeeting,
    FetchClientJoinUrl,
    MeetingFacts,
    Operation,
    Outcome,
    Plan,
    SendEmail,
    SendReminderSms,
    SendSms,
    UpdateMeeting,
    cleanup,
    fail,
    is_settled,
    plan,
    progress,
    settle,
)
from shared.records import AppliedState, ErrorInfo, RetryInfo
from shared.retention import behind_the_walk
from shared.settings import QueueSemantics
from shared.storage import AppointmentStore, CombinedInvalid, ConcurrencyConflict, EventQueue

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
# Stop starting Graph calls this long before the lease ends, so no call outlives it.
LEASE_MARGIN_SECONDS = CALL_DEADLINE_SECONDS
MAX_ROUNDS = 8
BUSY_RETRY_SECONDS = 2.0
DEFAULT_RETRY_WINDOW_SECONDS = 3600.0


class Result(Enum):
    APPLIED = "applied"
    SETTLED = "settled"  # stale, duplicate, or already failed: nothing to do
    FAILED = "failed"  # Graph refused this version: recorded on the status record
    DEFERRED = "deferred"  # handed back to the queue to run later
    MALFORMED = "malformed"  # not a message of this app: parked in the poison queue


class RetryLater(Exception):
    """Transient trouble: let the queue deliver the message again after its visibility timeout."""


class _Busy(Exception):
    """Another worker holds the appointment's lease."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class _HandBack(_Busy):
    """Graph asked for a longer wait than an invocation should sleep."""


class _Unmapped(Exception):
    """A source's organizer identifier that the directory does not map (organizerUnmapped)."""

    def __init__(self, source: str, identifier: str) -> None:
        super().__init__(source)
        self.source = source
        self.identifier = identifier


@dataclass
class _Attempt:
    """What one round knows: the message, the state it read, the ETag to write against."""

    event: AppointmentEvent
    state: AppliedState
    etag: str | None
    last_attempt: bool
    version: str  # the stored (newest) version this round reconciles
    # A newer version is stored: its own message carries it, this one must not fail it.
    superseded: bool = False
    # The stored desired document: the record shows it (and the list index keys on it)
    # while nothing is applied yet.
    shown: AppointmentDocument | None = None
    plan: Plan | None = None
    outcome: Outcome = field(default_factory=Outcome)


def _guid_or_none(organizer: str) -> str | None:
    return organizer.lower() if "@" not in organizer else None


class Reconciler:
    """One queue message in, Graph and the status record brought in line."""

    def __init__(
        self,
        store: AppointmentStore,
        queue: EventQueue,
        graph: Callable[[], GraphGateway],
        semantics: QueueSemantics,
        *,
        directory: Directory,
        callback_queue: EventQueue | None = None,
        has_callbacks: Callable[[str | None], bool] = lambda source: False,
        mail_sender: str | None = None,
        clock: Callable[[], float] = time.time,
        retry_window_seconds: float = DEFAULT_RETRY_WINDOW_SECONDS,
        attendance_queue: EventQueue | None = None,
        attendance_delay_seconds: float = 600.0,
        retention_days: int = 0,
    ) -> None:
        """`has_callbacks(source)` says whether a document's source (None: the default one)
        has a callback URL; its callbacks are enqueued on `callback_queue`. Attendance checks
        (shared/attendance_check.py) are scheduled on `attendance_queue` (None: none), due
        `attendance_delay_seconds` after each meeting's end. `retention_days`
        (RETENTION_DAYS; 0 keeps everything) decides which changes retention must recheck."""
        self._store = store
        self._queue = queue
        self._callback_queue = callback_queue
        self._has_callbacks = has_callbacks
        self._mail_sender = mail_sender
        self._directory = directory
        self._graph = graph
        self._semantics = semantics
        self._clock = clock
        self._retry_window = retry_window_seconds
        self._attendance_queue = attendance_queue
        self._attendance_delay = attendance_delay_seconds
        self._retention_days = retention_days

    def handle(self, text: str, dequeue_count: int) -> Result:
        """Process one message; raise RetryLater to have the host redeliver it."""
        try:
            message = parse_message(text)
        except MalformedMessage as error:
            log.error("malformed queue message moved to the poison queue: %s", error)
            self._queue.send_to_poison(text)
            return Result.MALFORMED
        if isinstance(message, EraseEvent):
            try:
                return self._erase(message)
            except _Busy as busy:
                self._queue.send(text, visibility_timeout=max(1, math.ceil(busy.seconds)))
                return Result.DEFERRED
        event = message
        document = event.document
        external_id = document.external_appointment_id
        # The intake enqueues the document, then stores it; store it again in case that
        # write is what failed (the queue message is the durable copy).
        if event.needs_stored_state:
            try:
                self._store.save_delivery(
                    document,
                    event.correlation_id,
                    delivery_id=event.delivery_id,
                    source_version=event.source_version,
                    part=event.part,
                )
            except CombinedInvalid:
                # The intake refused this delivery for the same reason: nothing to keep.
                log.error("queued part does not combine into a valid document; skipped")
                return Result.SETTLED
        else:
            self._store.save_desired(document, event.correlation_id)
        # Failed deliveries end at maxDequeueCount; hand-backs use none up, and the retry
        # window (see _transient) bounds them instead.
        last_attempt = dequeue_count >= self._semantics.max_dequeue_count
        try:
            result = self._reconcile(event, last_attempt)
        except _Busy as busy:
            return self._defer(event, busy.seconds)
        log.info(
            "appointment %s version %s: %s (correlation %s)",
            external_id,
            document.last_modified_date_time,
            result.value,
            event.correlation_id,
        )
        return result

    def _defer(self, event: AppointmentEvent, seconds: float) -> Result:
        """Send the event again, invisible for `seconds`; this delivery completes."""
        delay = max(1, math.ceil(seconds))
        later = replace(event, deferrals=event.deferrals + 1)
        self._queue.send(later.to_message(), visibility_timeout=delay)
        log.info(
            "appointment %s deferred %ss (correlation %s)",
            event.document.external_appointment_id,
            delay,
            event.correlation_id,
        )
        return Result.DEFERRED

    def _organizer_id(
        self, document: AppointmentDocument, state: AppliedState, *, fresh: bool
    ) -> str | None:
        """The organizer's object id; `fresh` (a replay) looks a UPN up again, past the cache.

        A named source's identifier goes through the organizer directory first; raises
        _Unmapped when it names nobody.
        """
        if document.is_cancelled or document.organizer is None:
            return None
        last = state.document
        if (
            last is not None
            and last.organizer == document.organizer
            and last.source == document.source
            and state.organizer_id
        ):
            return state.organizer_id
        user = document.organizer
        if document.source is not None:
            mapped = self._directory.resolve(document.source, user, fresh=fresh)
            if mapped is None:
                raise _Unmapped(document.source, user)
            user = mapped
        guid = _guid_or_none(user)
        if guid is not None:
            return guid
        cached = None if fresh else self._store.cached_organizer_id(user)
        if cached is not None:
            return cached
        resolved = self._graph().resolve_user_id(user).lower()
        self._store.cache_organizer_id(user, resolved)
        return resolved

    def _reconcile(self, event: AppointmentEvent, last_attempt: bool) -> Result:
        for _ in range(MAX_ROUNDS):
            result = self._round(event, last_attempt)
            if result is not None:
                return result
        raise RetryLater("too many concurrent changes")

    def _round(self, event: AppointmentEvent, last_attempt: bool) -> Result | None:
        """One read-plan-execute-commit pass; None when another writer won a race."""
        external_id = event.document.external_appointment_id
        stored = self._store.load(external_id)
        if stored.desired is None and stored.erased:
            return Result.SETTLED  # a late message of an erased version: nothing to bring back
        if stored.desired is None:
            raise RetryLater("desired document not readable yet")
        document = stored.desired.document
        state = stored.applied or AppliedState()
        event_version = version_key(event.document.version)
        superseded = event_version < stored.desired.version
        attempt = _Attempt(
            event,
            state,
            stored.applied_etag,
            last_attempt,
            stored.desired.version,
            superseded,
            shown=document,
        )
        replay = event.replay and stored.desired.version == event_version
        settled = is_settled(document, state, replay=replay)
        if settled and not state.intents:
            if replay and state.version == version_key(document.version):
                self._reschedule_attendance(document.external_appointment_id, state)
            return Result.SETTLED
        now = self._clock()
        if state.lease_owner and state.lease_until > now:
            # Leases are usually released within a second; look again soon, not at expiry.
            raise _Busy(min(state.lease_until - now, BUSY_RETRY_SECONDS))
        if settled:
            # Only leftovers of an interrupted attempt remain: delete them, change nothing else.
            return self._apply(attempt, cleanup(state.document or document, state), now)

        try:
            organizer_id = self._organizer_id(document, state, fresh=replay)
        except PermanentGraphError as error:
            empty = Plan(document, (), state.generation)
            failed = fail(state, empty, Outcome(), _error_info(error, external_id))
            return Result.FAILED if self._commit_change(attempt, failed, attempt.etag) else None
        except TransientGraphError as error:
            return self._transient(attempt, error)
        except _Unmapped as unmapped:
            return self._unmapped(attempt, document, unmapped)

        the_plan = plan(
            document,
            state,
            organizer_id,
            global_features=self._graph().global_features,
            now=datetime.fromtimestamp(now, UTC),
            mail_sender=self._mail_sender,
        )
        if not the_plan.operations:
            done = settle(state, the_plan, Outcome())
            return Result.APPLIED if self._commit_change(attempt, done, attempt.etag) else None
        return self._apply(attempt, the_plan, now)

    def _erase(self, event: EraseEvent) -> Result:
        """Delete the live meeting quietly (no SMS, no e-mail) and every client trace.

        The applied row loses its document, warnings and errors in the same write that takes
        the lease, so client data is gone at once even if Graph is down; the meeting ids stay
        until the meeting is deleted, so a retry can still delete it.
        """
        external_id = event.external_id
        for _ in range(MAX_ROUNDS):
            stored = self._store.load(external_id)
            if not stored.erased:
                log.info("appointment %s: erase skipped, booked again since", external_id)
                return Result.SETTLED
            state = stored.applied
            if state is None:
                self._forget_traces(external_id)
                return Result.APPLIED
            now = self._clock()
            if state.lease_owner and state.lease_until > now:
                raise _Busy(min(state.lease_until - now, BUSY_RETRY_SECONDS))
            scrubbed = _scrubbed(state)
            if scrubbed.meeting_id is None and not scrubbed.intents:
                if self._commit(external_id, scrubbed, stored.applied_etag, None) is None:
                    continue
                self._forget_traces(external_id)
                log.info(
                    "appointment %s erased (correlation %s)", external_id, event.correlation_id
                )
                return Result.APPLIED
            lease_until = now + LEASE_SECONDS
            leased = replace(scrubbed, lease_owner=uuid.uuid4().hex, lease_until=lease_until)
            etag = self._commit(external_id, leased, stored.applied_etag, None)
            if etag is None:
                continue
            the_plan = _erasure_plan(external_id, leased)
            outcome = Outcome()
            try:
                self._execute(the_plan, leased, outcome, lease_until - LEASE_MARGIN_SECONDS)
            except TransientGraphError as error:
                kept = replace(
                    progress(leased, the_plan, outcome), lease_owner=None, lease_until=0.0
                )
                self._commit(external_id, kept, etag, None)
                raise RetryLater(str(error)) from error
            except PermanentGraphError as error:
                if error.code != "meetingNotFound":
                    # Nothing more this app can do: the client data is gone; the meeting may
                    # stay in the organizer's calendar. Said once, without client data.
                    log.warning(
                        "appointment %s erased, but its meeting could not be deleted: %s",
                        external_id,
                        error.code,
                    )
            done = replace(
                leased.without_meeting(),
                intents=(),
                generation=max(leased.generation, the_plan.generation),
                lease_owner=None,
                lease_until=0.0,
            )
            if self._commit(external_id, done, etag, None) is None:
                continue
            self._forget_traces(external_id)
            log.info("appointment %s erased (correlation %s)", external_id, event.correlation_id)
            return Result.APPLIED
        raise RetryLater("too many concurrent changes")

    def _forget_traces(self, external_id: str) -> None:
        """What erasure clears besides the record: the callback progress and attendance claim
        rows, and any message of the appointment parked in appointment-events-poison, which
        holds a whole document."""
        self._store.forget_side_rows(external_id)
        removed = self._queue.forget_poisoned(
            lambda text, _parked: names_appointment(text, external_id)
        )
        if removed:
            log.info("appointment %s: %d parked message(s) erased", external_id, removed)

    def _unmapped(
        self, attempt: _Attempt, document: AppointmentDocument, unmapped: _Unmapped
    ) -> Result | None:
        """Fail the version `organizerUnmapped` and note it, so saving the entry replays it."""
        external_id = document.external_appointment_id
        state = attempt.state
        source, identifier = unmapped.source, unmapped.identifier
        table = self._directory.table
        # Noted before the commit: a failure in between retries the message, and a failed
        # version that nobody noted would never be replayed by saving its entry.
        table.note_waiting(source, identifier, external_id)
        error = ErrorInfo("organizerUnmapped", unmapped_message(source, identifier))
        failed = fail(state, Plan(document, (), state.generation), Outcome(), error)
        if self._commit_change(attempt, failed, attempt.etag) is None:
            return None
        # An entry saved between the lookup and the note above found nothing to replay:
        # look once more, past the cache, and replay now if it exists.
        if self._directory.resolve(source, identifier, fresh=True) is not None:
            table.forget_waiting(source, identifier, external_id)
            replay = AppointmentEvent(document, attempt.event.correlation_id, replay=True)
            self._queue.send(replay.to_message())
        log.warning("appointment %s failed: organizerUnmapped", external_id)
        return Result.FAILED

    def _apply(self, attempt: _Attempt, the_plan: Plan, now: float) -> Result | None:
        """Take the lease (recording the intent), run the plan, commit what it did."""
        external_id = attempt.event.document.external_appointment_id
        state = attempt.state
        lease_until = now + LEASE_SECONDS
        intents = state.intents
        if the_plan.intent is not None and the_plan.intent not in intents:
            intents = (*intents, the_plan.intent)
        leased = replace(
            state, lease_owner=uuid.uuid4().hex, lease_until=lease_until, intents=intents
        )
        lease_etag = self._commit(external_id, leased, attempt.etag, attempt.shown)
        if lease_etag is None:
            return None
        attempt = replace(attempt, state=leased, etag=lease_etag, plan=the_plan)

        try:
            self._execute(the_plan, leased, attempt.outcome, lease_until - LEASE_MARGIN_SECONDS)
        except PermanentGraphError as error:
            if error.code == "meetingNotFound" and _touches_current(the_plan):
                # Deleted outside this app (e.g. in Teams): forget it and plan again.
                gone = replace(leased.without_meeting(), lease_owner=None, lease_until=0.0)
                self._commit(external_id, gone, lease_etag, attempt.shown)
                return None
            self._undo_new_meeting(attempt.outcome)
            failed = fail(leased, the_plan, attempt.outcome, _error_info(error, external_id))
            if self._commit_change(attempt, failed, lease_etag) is None:
                return None
            log.warning("appointment %s failed: %s", external_id, error.code)
            return Result.FAILED
        except TransientGraphError as error:
            return self._transient(attempt, error)

        done = settle(leased, the_plan, attempt.outcome)
        if self._commit_change(attempt, done, lease_etag) is None:
            return None  # the lease ran out and another worker moved on: plan again
        return Result.APPLIED

    def _undo_new_meeting(self, outcome: Outcome) -> None:
        """A failed version keeps the last good meeting: delete the one it made beside it.

        Best effort: if the delete fails too, the meeting stays recorded as an intent and the
        next delivery of any version deletes it.
        """
        created = outcome.meetings.get(NEW)
        if created is None or CURRENT not in outcome.meetings or CURRENT in outcome.deleted:
            return
        try:
            self._graph().delete_meeting(created.organizer_id, created.meeting_id)
        except GraphError as error:
            log.warning("could not delete the meeting a failed version created: %s", error)
            return
        outcome.deleted.add(NEW)

    def _commit_change(
        self, attempt: _Attempt, after: AppliedState, etag: str | None
    ) -> str | None:
        """Commit a change, with the callback it owes its sender (if any) in the same write.

        The callback's queue message goes first: once the commit lands its message already
        exists, so no crash can lose it. A message whose commit loses the race finds another
        callback (or none) on the record and is dropped by the delivery function.
        """
        external_id = attempt.event.document.external_appointment_id
        kind = callback_type(attempt.state, after)
        if (
            kind is not None
            and self._callback_queue is not None
            and self._has_callbacks(attempt.event.document.source)
        ):
            after = owe(after, kind, self._clock())
            assert after.callback is not None
            self._callback_queue.send(message_for(external_id, after.callback).to_message())
        after = self._schedule_attendance(external_id, attempt.state, after)
        self._note_for_retention(external_id, attempt.event.document)
        return self._commit(external_id, after, etag, attempt.shown)

    def _note_for_retention(self, external_id: str, document: AppointmentDocument) -> None:
        """A version that starts before retention's walk may have passed (an import of old
        appointments) is noted for the next run's recheck, before the commit that indexes it,
        so no crash leaves it where no run looks. One upsert, only for such versions."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        if behind_the_walk(document, self._retention_days, now):
            self._store.note_recheck(external_id)

    def _schedule_attendance(
        self, external_id: str, before: AppliedState, after: AppliedState
    ) -> AppliedState:
        """A change that gives the appointment a meeting or an end it did not have owes an
        attendance check after that end; its message (hidden until it is due, at most 7 days
        at a time) goes before the commit, like a callback's, so no crash can lose it.

        The attendance on the record describes the meeting and end it was read for: once a
        version moves either (or cancels), it goes, and the new end's check writes it anew.
        """
        key = check_key(after)
        if key == check_key(before):
            return after
        if key is not None and after.version:
            self._send_attendance_check(external_id, key, after.version)
        return replace(after, attendance=None) if after.attendance is not None else after

    def _reschedule_attendance(self, external_id: str, state: AppliedState) -> None:
        """A replay of the applied version schedules its attendance check again when the record
        has none yet: the operator's way back after a check's message was lost (parked in
        appointment-attendance-poison). A check that already ran makes the extra message a
        no-op (shared/attendance_check.py), so this never reads Graph twice for one meeting."""
        key = check_key(state)
        if key is None or state.attendance is not None or state.version is None:
            return
        if self._send_attendance_check(external_id, key, state.version):
            log.info("appointment %s: attendance check scheduled again by a replay", external_id)

    def _send_attendance_check(self, external_id: str, key: CheckKey, version: str) -> bool:
        """Send the check's message, hidden until it is due (at most 7 days at a time);
        False when attendance is off (no queue)."""
        if self._attendance_queue is None:
            return False
        now = self._clock()
        message = first_message(external_id, key, version, self._attendance_delay, now)
        self._attendance_queue.send(
            message.to_message(), visibility_timeout=hide_for(message.due, now)
        )
        return True

    def _commit(
        self,
        external_id: str,
        state: AppliedState,
        etag: str | None,
        shown: AppointmentDocument | None,
    ) -> str | None:
        """The new ETag, or None when another writer got there first."""
        try:
            return self._store.commit_applied(external_id, state, etag, shown=shown)
        except ConcurrencyConflict:
            return None

    def _transient(self, attempt: _Attempt, error: TransientGraphError) -> Result:
        """Release the lease (keeping intents); retry later, or give up once the version has
        used up its deliveries or its retry window (RETRY_WINDOW_MINUTES)."""
        event = attempt.event
        external_id = event.document.external_appointment_id
        state = attempt.state
        if attempt.plan is not None:
            state = progress(state, attempt.plan, attempt.outcome)
        released = replace(state, lease_owner=None, lease_until=0.0)
        now = self._clock()
        earlier = (
            released.retry if released.retry and released.retry.version == attempt.version else None
        )
        since = earlier.since if earlier else now
        window_end = since + self._retry_window
        retry_after = error.retry_after
        # Graph asking for a wait that ends past the window is as final as the window's end.
        window_over = now >= window_end or (
            retry_after is not None and now + retry_after > window_end
        )
        if attempt.superseded and (attempt.last_attempt or window_over):
            # The newest version has a message of its own, with its own retries: only that
            # message may record the newest version as failed.
            self._commit(external_id, released, attempt.etag, attempt.shown)
            log.warning(
                "appointment %s: giving up on a superseded message (correlation %s)",
                external_id,
                event.correlation_id,
            )
            if attempt.last_attempt:
                raise RetryLater(str(error))
            return Result.SETTLED
        if attempt.last_attempt or window_over:
            return self._give_up(attempt, released, error, window_over=window_over)
        delay = (
            retry_after if retry_after is not None else self._semantics.visibility_timeout_seconds
        )
        retry = RetryInfo(
            attempt.version,
            since,
            (earlier.attempts if earlier else 0) + 1,
            error.summary,
            now + delay,
        )
        self._commit(external_id, replace(released, retry=retry), attempt.etag, attempt.shown)
        if retry_after is not None:
            # Graph said when to come back: a hand-back does not use up a delivery, so a spell
            # of throttling shorter than the window does not end in the poison queue.
            raise _HandBack(retry_after)
        raise RetryLater(str(error))

    def _give_up(
        self,
        attempt: _Attempt,
        released: AppliedState,
        error: TransientGraphError,
        *,
        window_over: bool,
    ) -> Result:
        """Record `graphUnavailable` and see that the message ends in the poison queue.

        On its last delivery the host moves it there (RetryLater); a version whose window ran
        out earlier is parked here, and this delivery completes.
        """
        event = attempt.event
        external_id = event.document.external_appointment_id
        minutes = f"{self._retry_window / 60:g}"
        why = (
            f"through the {minutes}-minute retry window"
            if window_over
            else "through every delivery of its message"
        )
        message = (
            f"Microsoft Graph stayed unavailable {why} (last: {error.summary}); the message is "
            "in appointment-events-poison. POST /api/appointments/{id}/reconcile replays it."
        )
        the_plan = attempt.plan or Plan(event.document, (), released.generation)
        unavailable = ErrorInfo("graphUnavailable", _with_route(message, external_id))
        failed = fail(released, the_plan, Outcome(), unavailable)
        self._commit_change(attempt, failed, attempt.etag)
        log.warning(
            "appointment %s failed: graphUnavailable, %s (correlation %s)",
            external_id,
            error.summary,
            event.correlation_id,
        )
        if attempt.last_attempt:
            raise RetryLater(str(error))
        self._queue.send_to_poison(event.to_message())
        return Result.FAILED

    def _execute(
        self, the_plan: Plan, state: AppliedState, outcome: Outcome, deadline: float
    ) -> None:
        graph = self._graph()
        if state.meeting_id is not None:
            outcome.meetings[CURRENT] = MeetingFacts(
                state.organizer_id or "",
                state.meeting_id,
                state.external_meeting_id or "",
                state.join_web_url,
                state.client_join_web_url,
            )

        def in_lease() -> None:
            """Every call starts early enough to end (CALL_DEADLINE_SECONDS) within the lease."""
            if self._clock() > deadline:
                raise TransientGraphError("lease about to expire")

        for op in the_plan.operations:
            in_lease()
            if isinstance(op, CreateOrGetMeeting):
                try:
                    meeting = graph.create_or_get_meeting(
                        op.organizer_id, op.external_id, op.start, op.end, op.subject
                    )
                except PermanentGraphError as error:
                    outcome.refused.add(op.slot)  # Graph made no meeting there
                    if op.slot == NEW:
                        raise
                    log.warning("a leftover meeting could not be recovered: %s", error.code)
                    continue
                outcome.meetings[op.slot] = MeetingFacts(
                    op.organizer_id, meeting.id, op.external_id, meeting.join_web_url
                )
                if op.slot != NEW:
                    continue  # about to be deleted: nothing to bring up to date
                if meeting.differs_from(op.start, op.end, op.subject):
                    # An existing meeting (adopted after an interrupted attempt) from an older
                    # version: bring it up to date.
                    in_lease()
                    graph.update_meeting(op.organizer_id, meeting.id, op.start, op.end, op.subject)
                if meeting.lobby_scope == "everyone":
                    # Anonymous browser clients wait in the lobby under every other scope.
                    in_lease()
                    graph.restrict_lobby(op.organizer_id, meeting.id)
                continue
            if op.slot in outcome.refused:
                continue
            facts = outcome.meetings[op.slot]
            if isinstance(op, FetchClientJoinUrl):
                facts.client_join_web_url = graph.client_join_url(
                    facts.organizer_id, facts.meeting_id
                )
            elif isinstance(op, UpdateMeeting):
                graph.update_meeting(
                    facts.organizer_id, facts.meeting_id, op.start, op.end, op.subject
                )
            elif isinstance(op, DeleteMeeting):
                graph.delete_meeting(facts.organizer_id, facts.meeting_id)
                outcome.deleted.add(op.slot)
            elif isinstance(op, SendSms | SendReminderSms):
                _notify(graph, op, facts, outcome)
            elif isinstance(op, SendEmail):
                assert self._mail_sender is not None  # planned only with a sender
                _email(graph, op, facts, outcome, self._mail_sender)


def _notify(
    graph: GraphGateway, op: SendSms | SendReminderSms, facts: MeetingFacts, outcome: Outcome
) -> None:
    """Text the clients. A text is a notification, not the appointment: a refusal (or Graph
    being unavailable) becomes a warning, and it is recorded as sent so it is never retried."""
    if isinstance(op, SendSms):
        outcome.sms_sent.append(op.kind)
        what = f"SMS {op.kind} not sent"
    else:
        outcome.reminder_sent = True
        what = "SMS reminder not scheduled"
    try:
        if isinstance(op, SendSms):
            graph.send_sms(facts.organizer_id, facts.meeting_id, op.kind, op.attendees)
        else:
            graph.send_reminder_sms(facts.organizer_id, facts.meeting_id, op.attendees)
    except PermanentGraphError as error:
        outcome.warnings.append(f"{what}: {error.message}")
    except GraphError:
        outcome.warnings.append(f"{what}: Microsoft Graph was unavailable")


def _email(
    graph: GraphGateway, op: SendEmail, facts: MeetingFacts, outcome: Outcome, sender: str
) -> None:
    """E-mail one client. Like a text, a notification: a refusal is a warning on the record
    (never the appointment's failure), recorded as sent so that it is never retried."""
    outcome.mail_sent.append(op.client_index)
    link = None
    if op.kind != "cancellation":
        browser = op.document.settings.allow_client_to_join_using_browser
        link = (facts.client_join_web_url if browser else None) or facts.join_web_url
    message = build_message(
        op.document, op.kind, op.client_index, sender=sender, join_url=link, sequence=op.sequence
    )
    what = f"appointmentClients/{op.client_index}: e-mail {op.kind} not sent"
    try:
        graph.send_mail(sender, message)
    except PermanentGraphError as error:
        outcome.warnings.append(f"{what}: {error.message}")
    except GraphError:
        outcome.warnings.append(f"{what}: Microsoft Graph was unavailable")


def _scrubbed(state: AppliedState) -> AppliedState:
    """What may stay of an erased appointment: Graph's ids, generations, counters; no client
    data (document, warnings, error messages, attendance), no owed callback. `indexed` stays
    so that the commit which releases the lease deletes those list index rows."""
    return AppliedState(
        indexed=state.indexed,
        organizer_id=state.organizer_id,
        meeting_id=state.meeting_id,
        join_web_url=state.join_web_url,
        client_join_web_url=state.client_join_web_url,
        external_meeting_id=state.external_meeting_id,
        generation=state.generation,
        intents=state.intents,
        finished_versions=state.finished_versions,
    )


def _erasure_plan(external_id: str, state: AppliedState) -> Plan:
    """Recover and delete every meeting an attempt may have made, then the current one."""
    stand_in = AppointmentDocument.model_validate(
        {
            "externalAppointmentId": external_id,
            "lastModifiedDateTime": "2000-01-01T00:00:00Z",
            "status": "cancelled",
        }
    )
    tidy = cleanup(stand_in, state)
    current: tuple[Operation, ...] = (DeleteMeeting(CURRENT),) if state.meeting_id else ()
    return replace(tidy, operations=(*tidy.operations, *current))


def _with_route(message: str, external_id: str) -> str:
    """A user-facing message with the appointment's own replay route filled in."""
    return message.replace("{id}", quote(external_id, safe=""))


def _error_info(error: PermanentGraphError, external_id: str) -> ErrorInfo:
    return ErrorInfo(error.code, _with_route(error.message, external_id))


def _touches_current(the_plan: Plan) -> bool:
    operations: tuple[Operation, ...] = the_plan.operations
    return any(
        isinstance(op, (UpdateMeeting, FetchClientJoinUrl, SendSms, SendReminderSms))
        and op.slot == CURRENT
        for op in operations
    )
