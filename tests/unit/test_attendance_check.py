"""The attendance check's logic (shared/attendance_check.py) with in-memory adapters and a
controlled clock: when it looks, what it writes, what it leaves alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.attendance import AttendanceInterval, AttendanceRecord, AttendanceReport
from shared.attendance_check import (
    BUSY_SECONDS,
    MAX_HIDE_SECONDS,
    AttendanceCheck,
    AttendanceMessage,
    CheckKey,
    CheckResult,
    Timing,
    check_key,
    first_message,
    hide_for,
)
from shared.callbacks import CallbackMessage
from shared.documents import version_key
from shared.graph import PermanentGraphError, TransientGraphError
from shared.records import AppliedState, AttendanceClaim, DesiredVersion, StoredAppointment
from shared.settings import Settings, SettingsError
from tests.unit.factories import ORGANIZER_GUID, doc, valid

APPOINTMENT = "appt-1"
MEETING = "meeting-1"
END = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()
VERSION = version_key(datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
TIMING = Timing(delay=600.0, retry=900.0, window=86400.0)


class Conflict(Exception):
    pass


class FakeStore:
    """Rows as StoredAppointment fields, each with an ETag that changes on every write."""

    def __init__(self, applied: AppliedState | None, *, erased: bool = False) -> None:
        document = valid(doc())
        self.desired = None if erased else DesiredVersion(document, VERSION)
        self.applied = applied
        self.applied_etag = "a0" if applied else None
        self.claim: AttendanceClaim | None = None
        self.claim_etag: str | None = None
        self.erased = erased
        self.loads = 0
        self.writes = 0

    def load(self, external_id: str) -> StoredAppointment:
        self.loads += 1
        return StoredAppointment(
            self.desired,
            self.applied,
            self.applied_etag,
            attendance_claim=self.claim,
            attendance_claim_etag=self.claim_etag,
            erased=self.erased,
        )

    def commit_applied(
        self, external_id: str, state: AppliedState, etag: str | None, *, shown: object = None
    ) -> str:
        if etag != self.applied_etag:
            raise Conflict(external_id)
        self.writes += 1
        self.applied = state
        self.applied_etag = f"a{self.writes}"
        return self.applied_etag

    def save_attendance_claim(
        self, external_id: str, claim: AttendanceClaim, etag: str | None
    ) -> str:
        if etag != self.claim_etag:
            raise Conflict(external_id)
        self.claim = claim
        self.claim_etag = f"c{claim.owner}{claim.until}"
        return self.claim_etag


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []
        self.poison: list[str] = []

    def send(self, text: str, *, visibility_timeout: int | None = None) -> None:
        self.sent.append((text, visibility_timeout))

    def send_to_poison(self, text: str) -> None:
        self.poison.append(text)

    def take(self) -> tuple[str, int | None]:
        return self.sent.pop(0)


class FakeGraph:
    def __init__(self) -> None:
        self.answers: list[list[AttendanceReport] | Exception] = []
        self.calls = 0

    def attendance_reports(self, user_id: str, meeting_id: str) -> list[AttendanceReport]:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheduled(**changes: object) -> AppliedState:
    state = AppliedState(
        status="scheduled",
        version=VERSION,
        document=valid(doc()),
        organizer_id=ORGANIZER_GUID,
        meeting_id=MEETING,
    )
    return replace(state, **changes)  # type: ignore[arg-type]


def session(*, organizer: bool = True, client: bool = True) -> list[AttendanceReport]:
    join = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    leave = datetime(2026, 12, 1, 9, 25, tzinfo=UTC)
    interval = (AttendanceInterval(join, leave, 1500),)
    records = []
    if organizer:
        records.append(
            AttendanceRecord("Organizer", ORGANIZER_GUID, "Dr Grey", None, 1500, interval)
        )
    if client:
        records.append(AttendanceRecord("Attendee", None, "Jordan", None, 1500, interval))
    return [AttendanceReport("r1", join, leave, tuple(records))]


def message(**changes: object) -> str:
    base = first_message(APPOINTMENT, CheckKey(MEETING, END), VERSION, TIMING.delay, END - 86400)
    return replace(base, **changes).to_message()  # type: ignore[arg-type]


def make(
    store: FakeStore,
    clock: Clock,
    *,
    callbacks: FakeQueue | None = None,
    sleep: Callable[[float], None] = lambda seconds: None,
) -> tuple[AttendanceCheck, FakeQueue, FakeGraph]:
    queue, graph = FakeQueue(), FakeGraph()
    check = AttendanceCheck(
        store,
        queue,
        lambda: graph,
        TIMING,
        is_conflict=lambda error: isinstance(error, Conflict),
        callback_queue=callbacks,
        has_callbacks=lambda source: callbacks is not None,
        clock=clock,
        sleep=sleep,
    )
    return check, queue, graph


# --------------------------------------------------------------------------- when it looks


def test_a_message_woken_early_re_hides_at_most_seven_days_at_a_time_and_reads_nothing() -> None:
    store = FakeStore(scheduled())
    due = END + TIMING.delay
    clock = Clock(due - 30 * 86400)  # booked 30 days ahead
    check, queue, graph = make(store, clock)
    text = message()
    hides: list[int | None] = []
    while True:
        result = check.handle(text)
        if result is not CheckResult.HIDDEN:
            break
        text, seconds = queue.take()
        hides.append(seconds)
        assert seconds is not None
        clock.now += seconds  # the queue wakes it when the hide ends
    assert hides == [MAX_HIDE_SECONDS] * 4 + [2 * 86400]
    assert (store.loads, graph.calls) == (1, 1)  # nothing read before it was due
    assert result is CheckResult.RETRYING  # no report yet, the first look


def test_hide_for_is_at_least_a_second_and_at_most_seven_days() -> None:
    assert hide_for(100.0, 200.0) == 1
    assert hide_for(100.4, 100.0) == 1
    assert hide_for(10 * 86400, 0.0) == MAX_HIDE_SECONDS


def test_no_report_is_looked_at_again_until_the_window_ends_then_nobody_joined() -> None:
    store = FakeStore(scheduled())
    clock = Clock(END + TIMING.delay)
    check, queue, graph = make(store, clock)
    text = message()
    results = []
    while (result := check.handle(text)) is CheckResult.RETRYING:
        results.append(result)
        text, seconds = queue.take()
        assert seconds is not None
        assert seconds <= TIMING.retry
        clock.now = AttendanceMessage.from_message(text).due
    assert result is CheckResult.RECORDED
    assert clock.now == END + TIMING.window  # the last look falls on the window's end
    assert graph.calls == len(results) + 1 == 1 + 96  # 10 min, then every 15 min to 24 h
    assert store.applied is not None
    assert store.applied.attendance is not None
    got = store.applied.attendance.to_json()
    assert (got["outcome"], got["reports"], got["clients"]) == ("nobodyJoined", 0, [])


def test_a_report_found_is_written_with_its_callback_in_one_write() -> None:
    store = FakeStore(scheduled())
    callbacks = FakeQueue()
    check, queue, graph = make(store, Clock(END + 700), callbacks=callbacks)
    graph.answers = [session()]
    assert check.handle(message()) is CheckResult.RECORDED
    assert store.writes == 1
    assert store.applied is not None
    assert store.applied.attendance is not None
    assert store.applied.attendance.outcome == "completed"
    owed = store.applied.callback
    assert owed is not None
    assert owed.type == "appointment.attendance"
    [(text, _)] = callbacks.sent
    assert CallbackMessage.from_message(text).callback_id == owed.id
    assert queue.sent == []
    assert store.claim == AttendanceClaim("", 0.0)  # released
    # A later duplicate: no Graph call, no second write, no second callback.
    assert check.handle(message()) is CheckResult.DUPLICATE
    assert (graph.calls, store.writes, len(callbacks.sent)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("organizer", "client", "outcome"),
    [(True, True, "completed"), (True, False, "clientNoShow"), (False, True, "organizerNoShow")],
)
def test_each_outcome(organizer: bool, client: bool, outcome: str) -> None:
    store = FakeStore(scheduled())
    check, _, graph = make(store, Clock(END + 700))
    graph.answers = [session(organizer=organizer, client=client)]
    assert check.handle(message()) is CheckResult.RECORDED
    assert store.applied is not None
    assert store.applied.attendance is not None
    assert store.applied.attendance.outcome == outcome


# --------------------------------------------------------------------------- what it leaves alone


def test_a_live_claim_re_hides_the_message_briefly_without_a_graph_call() -> None:
    store = FakeStore(scheduled())
    clock = Clock(END + 700)
    store.claim, store.claim_etag = AttendanceClaim("other", clock.now + 100), "c1"
    check, queue, graph = make(store, clock)
    assert check.handle(message()) is CheckResult.BUSY
    [(_, seconds)] = queue.sent
    assert seconds == BUSY_SECONDS
    assert graph.calls == 0


def test_an_expired_claim_is_taken_over() -> None:
    store = FakeStore(scheduled())
    clock = Clock(END + 700)
    store.claim, store.claim_etag = AttendanceClaim("crashed", clock.now - 1), "c1"
    check, _, graph = make(store, clock)
    graph.answers = [session()]
    assert check.handle(message()) is CheckResult.RECORDED


@pytest.mark.parametrize(
    "state",
    [
        scheduled(status="cancelled", meeting_id=None, organizer_id=None),
        scheduled(document=valid(doc(endDateTime="2026-12-01T10:30:00Z"))),  # rescheduled
        scheduled(meeting_id="another-meeting"),  # a new organizer's meeting
    ],
    ids=["cancelled", "rescheduled", "new-meeting"],
)
def test_a_record_that_moved_on_drops_the_message(state: AppliedState) -> None:
    store = FakeStore(state)
    check, queue, graph = make(store, Clock(END + 700))
    assert check.handle(message()) is CheckResult.DROPPED
    assert (graph.calls, store.writes, queue.sent) == (0, 0, [])


def test_an_erased_appointment_drops_the_message() -> None:
    store = FakeStore(AppliedState(meeting_id=MEETING, organizer_id=ORGANIZER_GUID), erased=True)
    check, _, graph = make(store, Clock(END + 700))
    assert check.handle(message()) is CheckResult.DROPPED
    assert graph.calls == 0


def test_a_message_sent_ahead_of_its_commit_waits_for_it_then_gives_it_up() -> None:
    store = FakeStore(None)  # the commit has not landed
    clock = Clock(END + 700)
    check, queue, graph = make(store, clock)
    assert check.handle(message(enqueued=clock.now - 10)) is CheckResult.WAITING
    assert queue.sent[0][1] == BUSY_SECONDS
    assert check.handle(message(enqueued=clock.now - 121)) is CheckResult.DROPPED
    assert graph.calls == 0


def test_a_failed_newer_version_keeps_the_last_good_meetings_check() -> None:
    state = scheduled(status="failed", failed_version="2026-11-21T00:00:00.000000Z")
    assert check_key(state) == CheckKey(MEETING, END)
    store = FakeStore(state)
    check, _, graph = make(store, Clock(END + 700))
    graph.answers = [session()]
    assert check.handle(message()) is CheckResult.RECORDED


def test_a_refusal_writes_nothing_and_frees_the_claim() -> None:
    store = FakeStore(scheduled())
    check, queue, graph = make(store, Clock(END + 700))
    graph.answers = [PermanentGraphError("meetingNotFound", "gone", 404)]
    assert check.handle(message()) is CheckResult.REFUSED
    assert (store.writes, queue.sent) == (0, [])
    assert store.claim == AttendanceClaim("", 0.0)


def test_transient_trouble_is_retried_within_the_window_then_given_up() -> None:
    store = FakeStore(scheduled())
    clock = Clock(END + 700)
    check, queue, graph = make(store, clock)
    graph.answers = [TransientGraphError("503", retry_after=3600.0, status=503)]
    assert check.handle(message()) is CheckResult.RETRYING
    [(_, seconds)] = queue.sent
    assert seconds == 3600  # Retry-After, longer than the retry interval, honoured
    clock.now = END + TIMING.window + 1
    graph.answers = [TransientGraphError("503", status=503)]
    assert check.handle(message()) is CheckResult.GAVE_UP
    assert store.writes == 0


def test_the_write_waits_out_a_reconcilers_lease() -> None:
    clock = Clock(END + 700)
    store = FakeStore(scheduled(lease_owner="reconciler", lease_until=clock.now + 5))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        assert store.applied is not None
        store.applied = replace(store.applied, lease_owner=None, lease_until=0.0)
        store.applied_etag = "released"

    check, _, graph = make(store, clock, sleep=sleep)
    graph.answers = [session()]
    assert check.handle(message()) is CheckResult.RECORDED
    assert slept == [0.5]
    assert store.applied is not None
    assert store.applied.attendance is not None


def test_a_malformed_message_is_parked() -> None:
    check, queue, _ = make(FakeStore(None), Clock(0))
    assert check.handle('{"nope": 1}') is CheckResult.MALFORMED
    assert queue.poison == ['{"nope": 1}']


def test_check_key_needs_a_live_meeting_and_an_end() -> None:
    assert check_key(None) is None
    assert check_key(AppliedState()) is None
    assert check_key(scheduled(status="cancelled")) is None
    assert check_key(scheduled(status="failed", meeting_id=None)) is None
    assert check_key(scheduled()) == CheckKey(MEETING, END)


# --------------------------------------------------------------------------- settings


def test_attendance_settings_default_to_the_spec() -> None:
    settings = Settings.from_environ({})
    assert settings.attendance_enabled is True
    assert (
        settings.attendance_delay_seconds,
        settings.attendance_retry_seconds,
        settings.attendance_window_seconds,
    ) == (600.0, 900.0, 86400.0)


def test_attendance_settings_take_fractions_and_a_zero_delay() -> None:
    settings = Settings.from_environ(
        {
            "ATTENDANCE_DELAY_MINUTES": "0",
            "ATTENDANCE_RETRY_MINUTES": "0.5",
            "ATTENDANCE_WINDOW_HOURS": "48",
            "ATTENDANCE_ENABLED": "false",
        }
    )
    assert settings.attendance_enabled is False
    assert settings.attendance_delay_seconds == 0.0
    assert settings.attendance_retry_seconds == 30.0
    assert settings.attendance_window_seconds == 48 * 3600.0


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ATTENDANCE_RETRY_MINUTES", "0"),
        ("ATTENDANCE_DELAY_MINUTES", "-1"),
        ("ATTENDANCE_WINDOW_HOURS", "soon"),
        ("ATTENDANCE_ENABLED", "maybe"),
    ],
)
def test_bad_attendance_settings_are_settings_errors(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({name: raw})
    assert caught.value.setting == name
