"""Attendance: Graph calls per appointment for the attendance check, and none before the end.

Appointments are booked through the registered queue function (`reconcile_appointment_event`),
which sends each one's `appointment-attendance` message; the check runs through the registered
`check_attendance` function on real queue messages (Azurite), against the Graph emulator's
scripted sessions (devtools/graph_emulator.py run_session). ATTENDANCE_DELAY_MINUTES is 0 and
the near appointments end a few seconds after booking, so the whole run takes seconds.

The mix, one kind per appointment in turn (minimum Graph calls: one reports list per check,
plus one records read per report):

* completed (organizer and a client), clientNoShow (organizer only), organizerNoShow (a client
  only), an anonymous browser joiner with the organizer: one report each, 2 calls;
* two sessions (organizer and client, twice): two reports, 3 calls;
* nobodyJoined: ended before the window (ATTENDANCE_WINDOW_HOURS) ran out, no report: 1 call;
* far-future appointments (30 days out): their messages stay hidden (7 days at a time), 0 calls.

Early wakes: for every near appointment a copy of its message is made visible at once, as an
at-least-once queue may hand one over early (or a 7-day hide ends before the appointment
does); the check must answer it without a Graph call. Every attendance call is attributed to
the `check_attendance` invocation that made it, and that invocation's start is compared with the
meeting's end: "before the end" counts calls whose invocation began before the end (target 0).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from bench.common import ALEX, Stack, clear_app_caches, ensure_storage, percentile, table
from bench.reconcile import message_text
from devtools.graph_emulator import SessionParticipant

KINDS = ("completed", "clientNoShow", "organizerNoShow", "anonymous", "twoSessions", "nobody")
OUTCOME = {
    "completed": "completed",
    "clientNoShow": "clientNoShow",
    "organizerNoShow": "organizerNoShow",
    "anonymous": "completed",
    "twoSessions": "completed",
    "nobody": "nobodyJoined",
}
MINIMUM_CALLS = {
    "completed": 2,
    "clientNoShow": 2,
    "organizerNoShow": 2,
    "anonymous": 2,
    "twoSessions": 3,
    "nobody": 1,
    "far": 0,
}
SETTINGS = {
    "ATTENDANCE_DELAY_MINUTES": "0",
    "ATTENDANCE_RETRY_MINUTES": "0.05",
    "ATTENDANCE_WINDOW_HOURS": "0.01",  # 36 s: the nobody kind, ended 10 minutes ago, is past it
}
ATTENDANCE_OPERATIONS = ("attendanceReports", "attendanceRecords")


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _document(external_id: str, end: datetime) -> dict[str, Any]:
    return {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ALEX,
        "startDateTime": _text(end - timedelta(minutes=30)),
        "endDateTime": _text(end),
        "subject": "Consultation",
        "appointmentClients": [{"displayName": "Bench Client", "emailAddress": "c@example.com"}],
    }


def _sessions(kind: str) -> list[list[SessionParticipant]]:
    now = datetime.now(UTC)
    span = (now - timedelta(minutes=30), now - timedelta(minutes=2))
    organizer = SessionParticipant.organizer(span)
    client = SessionParticipant.attendee("Bench Client", "c@example.com", span)
    if kind == "completed":
        return [[organizer, client]]
    if kind == "clientNoShow":
        return [[organizer]]
    if kind == "organizerNoShow":
        return [[client]]
    if kind == "anonymous":
        return [[organizer, SessionParticipant.anonymous("Guest (browser)", span)]]
    if kind == "twoSessions":
        return [[organizer, client], [organizer, client]]
    return []


def _queue(connection_string: str, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(connection_string, name)
    try:
        client.create_queue()
    except Exception:
        client.clear_messages()
    return client


def _message(text: str, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(
        id=uuid.uuid4().hex, body=text.encode("utf-8"), dequeue_count=dequeue_count, pop_receipt="r"
    )


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    from shared import runtime
    from shared.attendance_check import CheckKey, first_message
    from shared.queue_functions import check_attendance, reconcile_appointment_event
    from shared.settings import ATTENDANCE_POISON_QUEUE_NAME, ATTENDANCE_QUEUE_NAME

    near_count = len(KINDS) if quick else 10 * len(KINDS)
    far_count = 1 if quick else 10
    os.environ.update(SETTINGS)
    clear_app_caches()
    ensure_storage(stack.connection_string)
    queue = _queue(stack.connection_string, ATTENDANCE_QUEUE_NAME)
    _queue(stack.connection_string, ATTENDANCE_POISON_QUEUE_NAME)
    graph = stack.graph
    tag = uuid.uuid4().hex[:8]

    # Booking: the near appointments end `lead` seconds from now, past the time booking takes
    # (about 0.5-1 s per appointment here), so that the early copies arrive before the end.
    lead = 12.0 if quick else 90.0
    # Whole seconds, as the documents carry them: the meeting's end is the document's.
    booked_at = datetime.now(UTC).replace(microsecond=0)
    plan: dict[str, tuple[str, datetime]] = {}
    for i in range(near_count):
        kind = KINDS[i % len(KINDS)]
        ends = booked_at - timedelta(minutes=10) if kind == "nobody" else booked_at
        plan[f"ba-{tag}-{i:04d}"] = (
            kind,
            ends + timedelta(seconds=0 if kind == "nobody" else lead),
        )
    for i in range(far_count):
        plan[f"ba-{tag}-far-{i:03d}"] = ("far", booked_at + timedelta(days=30))
    for external_id, (_, end) in plan.items():
        reconcile_appointment_event(_message(message_text(_document(external_id, end), "bench")))
    booking_s = (datetime.now(UTC) - booked_at).total_seconds()
    meetings: dict[str, str] = {}
    for external_id, (kind, _) in plan.items():
        stored = runtime.store().load(external_id)
        assert stored.applied is not None
        assert stored.applied.meeting_id is not None
        meetings[external_id] = stored.applied.meeting_id
        for people in _sessions(kind):
            graph.run_session(stored.applied.meeting_id, people)
        if kind not in ("far", "nobody"):
            # An early copy of its message, visible at once.
            end_ts = plan[external_id][1].timestamp()
            early = first_message(
                external_id,
                CheckKey(stored.applied.meeting_id, end_ts),
                stored.applied.version or "",
                0.0,
                time.time(),
            )
            queue.send_message(early.to_message(), time_to_live=-1)
    graph.reset_calls()

    by_meeting = {meeting: external_id for external_id, meeting in meetings.items()}
    calls: dict[str, int] = dict.fromkeys(plan, 0)
    before_end = 0
    early_wakes = 0
    invocations = 0
    due = [eid for eid, (kind, _) in plan.items() if kind != "far"]
    deadline = time.monotonic() + (60 if quick else 240)
    started = time.perf_counter()
    while time.monotonic() < deadline:
        if all("attendance" in _record(eid) for eid in due):
            break
        batch = list(queue.receive_messages(messages_per_page=32, visibility_timeout=30))
        if not batch:
            time.sleep(0.2)
            continue
        for message in batch:
            seen = len(graph.calls())
            began = time.time()
            check_attendance(_message(message.content, message.dequeue_count or 1))
            queue.delete_message(message)
            invocations += 1
            new = [c for c in graph.calls()[seen:] if c.operation in ATTENDANCE_OPERATIONS]
            if not new and began < _end_of(message.content):
                early_wakes += 1
            for call in new:
                external_id = by_meeting.get(call.meeting_id or "", "")
                if external_id:
                    calls[external_id] += 1
                    if began < plan[external_id][1].timestamp():
                        before_end += 1
    wall = time.perf_counter() - started

    outcomes: dict[str, dict[str, int]] = {}
    wrong: list[str] = []
    lag: list[float] = []
    per_kind: dict[str, dict[str, int]] = {}
    for external_id, (kind, end) in plan.items():
        record = _record(external_id)
        got = record.get("attendance")
        entry = per_kind.setdefault(kind, {"appointments": 0, "calls": 0, "minimum": 0})
        entry["appointments"] += 1
        entry["calls"] += calls[external_id]
        entry["minimum"] += MINIMUM_CALLS[kind]
        if kind == "far":
            if got is not None:
                wrong.append(external_id)
            continue
        outcome = got["outcome"] if got else "missing"
        outcomes.setdefault(kind, {}).setdefault(outcome, 0)
        outcomes[kind][outcome] += 1
        if outcome != OUTCOME[kind]:
            wrong.append(external_id)
        if got and kind != "nobody":
            checked = datetime.fromisoformat(got["checkedDateTime"].replace("Z", "+00:00"))
            lag.append((checked - end).total_seconds())
    actual = sum(calls.values())
    minimum = sum(MINIMUM_CALLS[kind] for kind, _ in plan.values())
    far_calls = sum(calls[eid] for eid, (kind, _) in plan.items() if kind == "far")
    return {
        "benchmark": "attendance",
        "appointments": {"near": near_count, "far": far_count},
        "booking_s": round(booking_s, 2),
        "lead_s": lead,
        "settings": SETTINGS,
        "graph_calls": {
            "actual": actual,
            "minimum": minimum,
            "per_appointment": round(actual / max(1, near_count), 2),
            "by_kind": per_kind,
        },
        "before_end": before_end,
        "early_wakes": early_wakes,
        "far_future_calls": far_calls,
        "invocations": invocations,
        "outcomes": outcomes,
        "wall_s": round(wall, 2),
        "end_to_check_s": {
            "p50": round(percentile(lag, 50), 2) if lag else None,
            "p95": round(percentile(lag, 95), 2) if lag else None,
        },
        "target": {
            "minimum_calls": actual == minimum,
            "none_before_end": before_end == 0,
            "early_wakes_cost_nothing": early_wakes >= 1,
            "outcomes_right": not wrong,
        },
    }


def _record(external_id: str) -> dict[str, Any]:
    from shared import runtime
    from shared.records import status_view

    return status_view(runtime.store().load(external_id))


def _end_of(text: str) -> float:
    from shared.attendance_check import AttendanceMessage

    return AttendanceMessage.from_message(text).end


def report(results: dict[str, Any]) -> str:
    calls = results["graph_calls"]
    rows = [
        [kind, entry["appointments"], entry["minimum"], entry["calls"]]
        for kind, entry in calls["by_kind"].items()
    ]
    rows.append(["total", sum(r[1] for r in rows), calls["minimum"], calls["actual"]])
    text = table(
        f"Attendance: {results['appointments']['near']} ended, "
        f"{results['appointments']['far']} 30 days out",
        ["kind", "appointments", "minimum Graph calls", "actual"],
        rows,
    )
    lag = results["end_to_check_s"]
    summary = [
        ["Graph calls per ended appointment", calls["per_appointment"]],
        ["calls made before the meeting's end", results["before_end"]],
        ["early wakes answered without Graph", results["early_wakes"]],
        ["calls for appointments 30 days out", results["far_future_calls"]],
        ["end to check p50 / p95 s", f"{lag['p50']} / {lag['p95']}"],
        ["check_attendance invocations", results["invocations"]],
        ["targets met", all(results["target"].values())],
    ]
    return text + "\n\n" + table("Attendance summary", ["measure", "value"], summary)
