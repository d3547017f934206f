"""The reconciler on real Azurite and the Graph emulator over real HTTP, through the queue function.

Every row of the contract's Graph call-count table is asserted exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import runtime
from shared.documents import parse_document
from shared.events import AppointmentEvent
from shared.http_api import get_appointment, reconcile_appointment
from shared.queue_functions import reconcile_appointment_event
from shared.reconciler import LEASE_SECONDS, Reconciler, Result, RetryLater
from shared.settings import POISON_QUEUE_NAME, TABLE_NAME, queue_semantics
from shared.storage import organizer_key
from tests.conftest import clear_app_caches
from tests.integration.queue_host import drain
from tests.support import ALEX, ALEX_UPN, MEGAN, NO_POLICY, get_request, new_id, queue_message


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


def doc(external_id: str, minute: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": f"2026-11-20T10:{minute:02d}:00Z",
        "organizer": ALEX,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "Consultation",
        "timeZone": "America/Chicago",
        "appointmentClients": [
            {"displayName": "Sam Client", "smsCapablePhoneNumber": "+13125550123"}
        ],
    }
    body.update(fields)
    return body


def message(body: dict[str, Any], *, replay: bool = False) -> str:
    parsed = parse_document(body)
    assert not isinstance(parsed, list), parsed
    return AppointmentEvent(parsed, "corr-test", replay=replay).to_message()


def deliver(body: dict[str, Any], *, dequeue_count: int = 1) -> None:
    reconcile_appointment_event(queue_message(message(body), dequeue_count=dequeue_count))


def record(external_id: str) -> dict[str, Any]:
    response = get_appointment(
        get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    )
    assert response.status_code == 200
    return dict(json.loads(response.get_body()))


def counts(emulator: GraphEmulator) -> dict[str, int]:
    return {k: v for k, v in emulator.call_counts().items() if k != "token" and v}


def live(emulator: GraphEmulator) -> list[Any]:
    return emulator.meetings()


# --- the call-count table ------------------------------------------------------------------


def test_new_scheduled_creates_meeting_and_browser_link(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))

    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1}
    [meeting] = live(emulator)
    assert meeting.user_id == ALEX
    assert meeting.lobby_bypass_scope != "everyone"
    state = record(external_id)
    assert state["status"] == "scheduled"
    assert state["pending"] is False
    assert state["id"] == meeting.id
    assert state["joinWebUrl"] == meeting.join_web_url
    assert state["appointmentClientJoinWebUrl"].startswith("https://visit.teams.microsoft.com/")
    assert state["organizerId"] == ALEX
    assert state["lastModifiedDateTime"] == "2026-11-20T10:00:00Z"
    assert "error" not in state


def test_new_scheduled_with_sms_sends_one_confirmation(emulator: GraphEmulator) -> None:
    deliver(doc(new_id(), 0, settings={"sendSmsNotifications": True}))
    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1, "sendSms": 1}
    [sms] = emulator.sms_sent()
    assert sms.message_type == "confirmation"
    assert sms.phone_numbers == ["+13125550123"]
    assert sms.time_zones == ["Central Standard Time"]


def test_meeting_that_admits_everyone_is_patched_to_keep_clients_in_the_lobby(
    emulator: GraphEmulator,
) -> None:
    emulator.default_lobby_scope = "everyone"
    deliver(doc(new_id(), 0))
    assert counts(emulator) == {"createOrGet": 1, "updateMeeting": 1, "getJoinWebUrl": 1}
    [meeting] = live(emulator)
    assert meeting.lobby_bypass_scope == "organizer"


def test_no_browser_link_when_clients_use_the_teams_link(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, settings={"allowClientToJoinUsingBrowser": False}))
    assert counts(emulator) == {"createOrGet": 1}
    assert record(external_id)["appointmentClientJoinWebUrl"] is None


def test_time_change_is_one_patch_plus_reschedule_sms(emulator: GraphEmulator) -> None:
    external_id = new_id()
    sms = {"sendSmsNotifications": True}
    deliver(doc(external_id, 0, settings=sms))
    emulator.reset_calls()

    deliver(
        doc(
            external_id,
            1,
            settings=sms,
            startDateTime="2026-12-01T11:00:00-05:00",
            endDateTime="2026-12-01T11:45:00-05:00",
        )
    )

    assert counts(emulator) == {"updateMeeting": 1, "sendSms": 1}
    [meeting] = live(emulator)
    assert (meeting.start, meeting.end) == ("2026-12-01T16:00:00Z", "2026-12-01T16:45:00Z")
    assert [s.message_type for s in emulator.sms_sent()] == ["confirmation", "reschedule"]
    state = record(external_id)
    assert state["startDateTime"] == "2026-12-01T11:00:00-05:00"
    # The emulator refuses a PATCH body with @odata.type, as Graph does: the reschedule went
    # through, so the app's body has none.
    assert state["status"] == "scheduled"
    assert "error" not in state
    [patch] = [c for c in emulator.calls() if c.operation == "updateMeeting"]
    assert patch.status == 200


def test_subject_change_is_one_patch_and_no_sms(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, settings={"sendSmsNotifications": True}))
    emulator.reset_calls()
    deliver(doc(external_id, 1, subject="Renamed", settings={"sendSmsNotifications": True}))
    assert counts(emulator) == {"updateMeeting": 1}
    assert live(emulator)[0].subject == "Renamed"


def test_same_instant_in_another_offset_is_not_a_change(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    emulator.reset_calls()
    deliver(
        doc(
            external_id,
            1,
            startDateTime="2026-12-01T10:00:00+01:00",
            endDateTime="2026-12-01T10:30:00+01:00",
        )
    )
    assert counts(emulator) == {}
    assert record(external_id)["lastModifiedDateTime"] == "2026-11-20T10:01:00Z"


def test_organizer_change_moves_the_meeting(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    [old] = live(emulator)
    emulator.reset_calls()

    deliver(doc(external_id, 1, organizer=MEGAN))

    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1, "deleteMeeting": 1}
    [new] = live(emulator)
    assert new.user_id == MEGAN
    assert new.external_id != old.external_id
    state = record(external_id)
    assert (state["id"], state["organizerId"]) == (new.id, MEGAN)


def test_cancellation_texts_before_it_deletes(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, settings={"sendSmsNotifications": True}))
    emulator.reset_calls()

    # A minimal cancellation: clients and settings come from the last applied version.
    deliver(
        {
            "externalAppointmentId": external_id,
            "lastModifiedDateTime": "2026-11-20T10:01:00Z",
            "status": "cancelled",
        }
    )

    assert counts(emulator) == {"sendSms": 1, "deleteMeeting": 1}
    assert [c.operation for c in emulator.calls() if c.operation != "token"] == [
        "sendSms",
        "deleteMeeting",
    ]
    assert emulator.sms_sent()[-1].message_type == "cancellation"
    assert live(emulator) == []
    state = record(external_id)
    assert state["status"] == "cancelled"
    assert state["id"] is None
    assert state["joinWebUrl"] is None


def test_duplicate_and_stale_versions_make_no_graph_call(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 5))
    emulator.reset_calls()

    deliver(doc(external_id, 5, subject="duplicate: the first received wins"))
    deliver(doc(external_id, 4, subject="stale"))

    assert counts(emulator) == {}
    assert record(external_id)["subject"] == "Consultation"


def test_first_document_cancelled_is_recorded_without_graph(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(
        {
            "externalAppointmentId": external_id,
            "lastModifiedDateTime": "2026-11-20T10:00:00Z",
            "status": "cancelled",
        }
    )
    assert counts(emulator) == {}
    state = record(external_id)
    assert state["status"] == "cancelled"
    assert state["id"] is None


def test_cancel_then_reschedule_gets_a_fresh_meeting(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    [first] = live(emulator)
    deliver(
        {
            "externalAppointmentId": external_id,
            "lastModifiedDateTime": "2026-11-20T10:01:00Z",
            "status": "cancelled",
        }
    )
    emulator.reset_calls()

    deliver(doc(external_id, 2))

    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1}
    [second] = live(emulator)
    assert second.id != first.id
    assert second.external_id != first.external_id
    assert record(external_id)["status"] == "scheduled"


# --- organizers ----------------------------------------------------------------------------


def test_upn_organizer_is_resolved_once_and_cached_in_the_table(
    emulator: GraphEmulator, azurite: Azurite
) -> None:
    # Other tests may have cached this UPN in the session's table already: start without it.
    table = TableClient.from_connection_string(azurite.connection_string, TABLE_NAME)
    table.delete_entity(organizer_key(ALEX_UPN), "organizer")
    deliver(doc(new_id(), 0, organizer=ALEX_UPN))
    assert emulator.call_counts().get("getUser") == 1
    deliver(doc(new_id(), 0, organizer=ALEX_UPN.upper()))
    assert emulator.call_counts().get("getUser") == 1
    assert {m.user_id for m in live(emulator)} == {ALEX}


# --- SMS is a notification, not the appointment --------------------------------------------


def test_sms_off_sends_nothing_and_non_us_numbers_are_skipped_with_a_warning(
    emulator: GraphEmulator,
) -> None:
    quiet = new_id()
    deliver(doc(quiet, 0))
    assert emulator.sms_sent() == []

    mixed = new_id()
    clients = [
        {"displayName": "A", "smsCapablePhoneNumber": "+442071838750"},
        {"displayName": "B", "smsCapablePhoneNumber": "+13125550199"},
        {"displayName": "C", "smsCapablePhoneNumber": "+14165550123"},  # Toronto: +1, not US
    ]
    deliver(doc(mixed, 0, appointmentClients=clients, settings={"sendSmsNotifications": True}))
    assert emulator.sms_sent()[-1].phone_numbers == ["+13125550199"]
    state = record(mixed)
    assert state["status"] == "scheduled"
    assert state["warnings"] == [
        "appointmentClients/0: SMS not sent; Microsoft Graph texts United States numbers only",
        "appointmentClients/2: SMS not sent; Microsoft Graph texts United States numbers only",
    ]


def test_sms_refused_by_graph_is_a_warning_not_a_failure(emulator: GraphEmulator) -> None:
    emulator.granted_roles.discard("VirtualAppointmentNotification.Send")
    external_id = new_id()
    deliver(doc(external_id, 0, settings={"sendSmsNotifications": True}))
    state = record(external_id)
    assert state["status"] == "scheduled"
    [warning] = state["warnings"]
    assert "VirtualAppointmentNotification.Send" in warning


# --- permanent errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("organizer", "code"),
    [
        (NO_POLICY, "accessPolicyMissing"),
        ("00000000-0000-4000-8000-000000000000", "organizerNotFound"),
        ("nobody@contoso.onmicrosoft.com", "organizerNotFound"),
    ],
)
def test_permanent_errors_fail_the_version_with_a_clear_error(
    emulator: GraphEmulator, organizer: str, code: str
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=organizer))
    state = record(external_id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == code
    assert state["error"]["message"]
    assert state["pending"] is False
    calls = sum(counts(emulator).values())
    deliver(doc(external_id, 0, organizer=organizer))  # redelivery: not retried forever
    assert sum(counts(emulator).values()) == calls


def test_missing_app_role_fails_but_keeps_the_created_meeting(emulator: GraphEmulator) -> None:
    emulator.granted_roles.discard("VirtualAppointment.ReadWrite.All")
    external_id = new_id()
    deliver(doc(external_id, 0))
    state = record(external_id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "appRoleMissing"
    assert "VirtualAppointment.ReadWrite.All" in state["error"]["message"]
    [meeting] = live(emulator)
    assert state["id"] == meeting.id  # recorded, so never orphaned

    # The operator grants the role and replays: the same meeting gets its browser link.
    emulator.granted_roles.add("VirtualAppointment.ReadWrite.All")
    emulator.reset_calls()
    response = reconcile_appointment(
        get_request(f"appointments/{external_id}/reconcile", {"externalAppointmentId": external_id})
    )
    assert response.status_code == 202
    replay = json.loads(response.get_body())["accepted"][0]
    assert replay["externalAppointmentId"] == external_id
    body = doc(external_id, 0)
    reconcile_appointment_event(queue_message(message(body, replay=True)))
    state = record(external_id)
    assert state["status"] == "scheduled"
    assert live(emulator) == [m for m in live(emulator) if m.id == meeting.id]
    assert state["appointmentClientJoinWebUrl"]


def test_the_older_missing_policy_text_is_reported_as_the_access_policy(
    emulator: GraphEmulator,
) -> None:
    emulator.legacy_policy_error = True  # "App <id> is not authorized to Create meeting ..."
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=NO_POLICY))
    state = record(external_id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "accessPolicyMissing"


def test_replay_after_granting_the_access_policy(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=NO_POLICY))
    assert record(external_id)["error"]["code"] == "accessPolicyMissing"

    emulator.add_user(NO_POLICY, "no.policy@contoso.onmicrosoft.com", access_policy=True)
    try:
        reconcile_appointment_event(
            queue_message(message(doc(external_id, 0, organizer=NO_POLICY), replay=True))
        )
        state = record(external_id)
        assert state["status"] == "scheduled"
        assert "error" not in state
    finally:
        emulator.add_user(NO_POLICY, "no.policy@contoso.onmicrosoft.com", access_policy=False)


def test_meeting_deleted_outside_the_app_is_recreated(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    [first] = live(emulator)
    state = record(external_id)
    runtime.graph_gateway().delete_meeting(ALEX, state["id"])

    deliver(doc(external_id, 1, subject="Moved"))

    [second] = live(emulator)
    assert second.id != first.id
    assert second.subject == "Moved"
    assert record(external_id)["id"] == second.id


# --- transient errors ----------------------------------------------------------------------


def test_short_throttling_is_retried_inside_the_call(emulator: GraphEmulator) -> None:
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=1, count=1)
    emulator.inject_fault(operation="getJoinWebUrl", status=503, count=1)
    external_id = new_id()
    deliver(doc(external_id, 0))
    assert counts(emulator) == {"createOrGet": 2, "getJoinWebUrl": 2}
    assert len(live(emulator)) == 1
    assert record(external_id)["status"] == "scheduled"


def test_long_retry_after_hands_the_message_back_to_the_queue(
    emulator: GraphEmulator, event_queue: QueueClient
) -> None:
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=45, count=1)
    external_id = new_id()
    deliver(doc(external_id, 0))

    assert counts(emulator) == {"createOrGet": 1}
    assert record(external_id)["status"] == "pending"
    assert list(event_queue.peek_messages()) == []  # invisible for the Retry-After
    props = event_queue.get_queue_properties()
    assert props.approximate_message_count == 1


def test_outage_beyond_the_budget_raises_for_the_queue_to_retry(emulator: GraphEmulator) -> None:
    emulator.inject_fault(operation="createOrGet", status=503, count=10)
    with pytest.raises(RetryLater):
        deliver(doc(new_id(), 0))
    assert live(emulator) == []


def test_a_message_that_keeps_failing_ends_in_poison_and_the_record_says_failed(
    emulator: GraphEmulator, event_queue: QueueClient, poison: QueueClient
) -> None:
    # 500 is not retried inside the call, so each delivery fails fast.
    emulator.inject_fault(operation="createOrGet", status=500, count=1000)
    external_id = new_id()
    event_queue.send_message(message(doc(external_id, 0)))

    outcome = drain(event_queue, poison, reconcile_appointment_event, deadline_seconds=120)

    assert outcome["poisoned"] == 1
    assert outcome["failed"] == queue_semantics().max_dequeue_count
    [parked] = list(poison.peek_messages())
    assert json.loads(parked.content)["externalAppointmentId"] == external_id
    state = record(external_id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "graphUnavailable"

    # After the outage, a replay applies the kept document.
    emulator.clear_faults()
    reconcile_appointment(
        get_request(f"appointments/{external_id}/reconcile", {"externalAppointmentId": external_id})
    )
    drain(event_queue, poison, reconcile_appointment_event)
    assert record(external_id)["status"] == "scheduled"
    assert len(live(emulator)) == 1


def test_malformed_queue_messages_are_parked_not_crashing(
    emulator: GraphEmulator, event_queue: QueueClient, poison: QueueClient
) -> None:
    for garbage in (b"\xff\xfe", b"{}", b"[]", b'{"document": {"externalAppointmentId": 1}}'):
        reconcile_appointment_event(queue_message(garbage))
    assert len(list(poison.peek_messages(max_messages=10))) == 4
    assert counts(emulator) == {}


# --- concurrency and crashes ---------------------------------------------------------------


def test_two_workers_on_the_same_appointment_converge(
    emulator: GraphEmulator, event_queue: QueueClient, poison: QueueClient
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emulator.latency = 0.05
    external_id = new_id()
    versions = [doc(external_id, minute, subject=f"v{minute}") for minute in range(6)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda body: _deliver_or_queue(body, event_queue), versions * 2))
    drain(event_queue, poison, reconcile_appointment_event)

    [meeting] = live(emulator)
    assert meeting.subject == "v5"
    state = record(external_id)
    assert (state["status"], state["id"], state["pending"]) == ("scheduled", meeting.id, False)


def _deliver_or_queue(body: dict[str, Any], queue: QueueClient) -> None:
    try:
        deliver(body)
    except RetryLater:
        queue.send_message(message(body))


def test_crash_between_create_and_commit_then_redelivery_makes_no_second_meeting(
    emulator: GraphEmulator, app_environment: dict[str, str]
) -> None:
    external_id = new_id()
    body = doc(external_id, 0)
    emulator.latency = 1.0  # long enough to kill the worker after createOrGet
    script = (
        "import sys; from shared.queue_functions import reconcile_appointment_event as f; "
        "from tests.support import queue_message; "
        "f(queue_message(sys.stdin.read()))"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        env={**os.environ, **app_environment},
        cwd=os.getcwd(),
    )
    assert worker.stdin is not None
    worker.stdin.write(message(body).encode())
    worker.stdin.close()
    deadline = time.monotonic() + 30
    while emulator.call_counts().get("createOrGet", 0) < 1:
        assert time.monotonic() < deadline, "worker never called createOrGet"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    emulator.latency = 0.0
    assert len(live(emulator)) == 1  # created, never recorded as the current meeting

    # Redelivery after the lease expires (visibility timeout < lease, so it may defer first).
    later = Reconciler(
        runtime.store(),
        runtime.queue(),
        runtime.graph_gateway,
        queue_semantics(),
        directory=runtime.directory(),
        clock=lambda: time.time() + LEASE_SECONDS + 1,
    )
    assert later.handle(message(body), 2) is Result.APPLIED

    [meeting] = live(emulator)
    assert emulator.call_counts()["createOrGet"] == 2  # the second found the first meeting
    state = record(external_id)
    assert (state["status"], state["id"]) == ("scheduled", meeting.id)


def test_token_endpoint_is_hit_once_per_process_not_per_message(emulator: GraphEmulator) -> None:
    clear_app_caches()  # a fresh worker process: new credential, new client
    for minute in range(3):
        deliver(doc(new_id(), minute))
    assert emulator.token_requests() == 1
    assert emulator.call_counts()["createOrGet"] == 3


def test_a_retry_after_past_the_window_fails_at_once_and_parks_the_message(
    emulator: GraphEmulator, poison: QueueClient, reconfigure: Callable[..., None]
) -> None:
    reconfigure(RETRY_WINDOW_MINUTES="0.5")
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=45, count=1)
    external_id = new_id()
    text = message(doc(external_id, 0))

    result = runtime.reconciler().handle(text, 1)  # completes: no RetryLater for the host

    assert result is Result.FAILED
    state = record(external_id)
    assert (state["status"], state["error"]["code"]) == ("failed", "graphUnavailable")
    assert "0.5-minute retry window" in state["error"]["message"]
    assert "Microsoft Graph 429" in state["error"]["message"]
    assert "retry" not in state
    [parked] = list(poison.peek_messages())
    assert json.loads(parked.content)["externalAppointmentId"] == external_id


def test_the_record_shows_the_retry_while_a_version_waits_and_drops_it_once_applied(
    emulator: GraphEmulator,
) -> None:
    emulator.inject_fault(operation="createOrGet", status=500, count=2)  # not retried in-call
    external_id = new_id()
    before = time.time()
    with pytest.raises(RetryLater):
        deliver(doc(external_id, 0))
    first = record(external_id)
    assert first["status"] == "pending"
    assert first["pending"] is True
    retry = first["retry"]
    assert (retry["attempts"], retry["lastError"]) == (1, "Microsoft Graph 500")
    since = datetime.fromisoformat(retry["since"]).timestamp()
    assert before - 1 <= since <= time.time()
    next_attempt = datetime.fromisoformat(retry["nextAttemptDateTime"]).timestamp()
    visibility = queue_semantics().visibility_timeout_seconds
    assert next_attempt - since == pytest.approx(visibility, abs=2)

    with pytest.raises(RetryLater):
        deliver(doc(external_id, 0), dequeue_count=2)
    second = record(external_id)["retry"]
    assert (second["attempts"], second["since"]) == (2, retry["since"])

    deliver(doc(external_id, 0), dequeue_count=3)  # Graph is back
    state = record(external_id)
    assert state["status"] == "scheduled"
    assert "retry" not in state


def test_the_window_counts_from_the_first_failed_attempt(
    emulator: GraphEmulator, poison: QueueClient
) -> None:
    emulator.inject_fault(operation="createOrGet", status=500, count=2)
    external_id = new_id()
    text = message(doc(external_id, 0))
    now = time.time()

    def at(offset: float) -> Reconciler:
        return Reconciler(
            runtime.store(),
            runtime.queue(),
            runtime.graph_gateway,
            queue_semantics(),
            directory=runtime.directory(),
            clock=lambda: now + offset,
            retry_window_seconds=600,
        )

    with pytest.raises(RetryLater):
        at(0).handle(text, 1)
    # The second delivery fails past the window's end: the version fails, well before the
    # host's maxDequeueCount, and the message is parked by the reconciler itself.
    assert at(601).handle(text, 2) is Result.FAILED
    state = record(external_id)
    assert (state["status"], state["error"]["code"]) == ("failed", "graphUnavailable")
    assert len(list(poison.peek_messages())) == 1
    assert live(emulator) == []


@pytest.mark.slow
def test_graph_503_with_retry_after_forever_ends_failed_and_poisoned_within_the_window(
    emulator: GraphEmulator,
    event_queue: QueueClient,
    poison: QueueClient,
    reconfigure: Callable[..., None],
) -> None:
    reconfigure(RETRY_WINDOW_MINUTES="1")
    emulator.inject_fault(status=503, retry_after=1, count=1_000_000)
    external_id = new_id()
    event_queue.send_message(message(doc(external_id, 0)))
    started = time.monotonic()

    outcome = drain(event_queue, poison, reconcile_appointment_event, deadline_seconds=240)

    elapsed = time.monotonic() - started
    assert 60 <= elapsed < 120, elapsed  # the window, plus at most one last attempt
    assert outcome["failed"] == 0  # every attempt was a hand-back: no delivery used up
    [parked] = list(poison.peek_messages())
    assert json.loads(parked.content)["externalAppointmentId"] == external_id
    state = record(external_id)
    assert (state["status"], state["error"]["code"]) == ("failed", "graphUnavailable")
    assert "retry" not in state
    assert live(emulator) == []


@pytest.mark.slow
def test_a_throttling_storm_shorter_than_the_window_converges_without_poison(
    emulator: GraphEmulator, event_queue: QueueClient, poison: QueueClient
) -> None:
    # The first delivery absorbs four 429s in the call (three retries of 2 s) and hands back;
    # the second meets the last two and succeeds.
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=2, count=6)
    external_id = new_id()
    event_queue.send_message(message(doc(external_id, 0)))

    outcome = drain(event_queue, poison, reconcile_appointment_event, deadline_seconds=120)

    assert (outcome["failed"], outcome["poisoned"]) == (0, 0)
    assert list(poison.peek_messages()) == []
    state = record(external_id)
    assert state["status"] == "scheduled"
    assert "retry" not in state
    assert len(live(emulator)) == 1


# --- after a failure: nothing stuck, nothing retried, nothing orphaned -----------------------

GHOST = "00000000-0000-4000-8000-000000000000"  # a GUID no user of the tenant has
MOVED_USER = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e71"
GUEST_USER = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e72"


def cancel(external_id: str, minute: int, **fields: Any) -> dict[str, Any]:
    return {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": f"2026-11-20T10:{minute:02d}:00Z",
        "status": "cancelled",
        **fields,
    }


@pytest.mark.parametrize("organizer", [GHOST, NO_POLICY])
def test_a_version_graph_refused_does_not_block_the_next_one(
    emulator: GraphEmulator, organizer: str
) -> None:
    # createOrGet refused: no meeting exists, so nothing may be left to "recover" later.
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=organizer))
    assert record(external_id)["status"] == "failed"

    emulator.reset_calls()
    deliver(doc(external_id, 1, organizer=ALEX))
    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1}
    assert record(external_id)["status"] == "scheduled"

    emulator.reset_calls()
    deliver(cancel(external_id, 2))
    assert counts(emulator) == {"deleteMeeting": 1}
    assert record(external_id)["status"] == "cancelled"
    assert live(emulator) == []


def test_cancelling_a_refused_first_version_needs_no_graph_call(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=NO_POLICY))
    emulator.reset_calls()
    deliver(cancel(external_id, 1))
    assert counts(emulator) == {}
    assert record(external_id)["status"] == "cancelled"


def test_a_refused_organizer_move_keeps_the_old_meeting_in_service(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    [meeting] = live(emulator)
    deliver(doc(external_id, 1, organizer=NO_POLICY))
    failed = record(external_id)
    assert (failed["status"], failed["error"]["code"]) == ("failed", "accessPolicyMissing")
    assert failed["id"] == meeting.id  # the last good meeting's fields stay

    emulator.reset_calls()
    deliver(doc(external_id, 2, subject="Back with Alex"))
    assert counts(emulator) == {"updateMeeting": 1}
    [still] = live(emulator)
    assert (still.id, still.subject) == (meeting.id, "Back with Alex")
    assert record(external_id)["status"] == "scheduled"

    deliver(cancel(external_id, 3))
    assert live(emulator) == []


def test_a_version_that_fails_after_creating_a_meeting_deletes_it_at_once(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    [old] = live(emulator)
    emulator.inject_fault(operation="getJoinWebUrl", status=400, count=1)
    emulator.reset_calls()
    deliver(doc(external_id, 1, organizer=MEGAN))

    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1, "deleteMeeting": 1}
    assert [m.id for m in live(emulator)] == [old.id]  # Megan's meeting did not outlive v1
    state = record(external_id)
    assert (state["status"], state["id"], state["organizerId"]) == ("failed", old.id, ALEX)


def test_duplicates_of_a_failed_version_keep_the_failure_and_retry_nothing(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0))
    # The new meeting's link is refused, and so is the delete that would undo it: Megan's
    # meeting stays recorded as an intent for a later delivery to clean up.
    emulator.inject_fault(operation="getJoinWebUrl", status=400, count=1)
    emulator.inject_fault(operation="deleteMeeting", status=500, count=1)
    deliver(doc(external_id, 1, organizer=MEGAN))
    assert len(live(emulator)) == 2

    emulator.reset_calls()
    deliver(doc(external_id, 1, organizer=MEGAN))  # duplicate: only the leftover goes
    assert counts(emulator) == {"createOrGet": 1, "deleteMeeting": 1}
    assert [m.user_id for m in live(emulator)] == [ALEX]
    state = record(external_id)
    assert (state["status"], state["error"]["code"], state["pending"]) == (
        "failed",
        "invalidRequest",
        False,
    )

    emulator.reset_calls()
    deliver(doc(external_id, 1, organizer=MEGAN))  # and again: the failed version is not retried
    assert counts(emulator) == {}
    assert record(external_id)["status"] == "failed"


def test_a_cancellation_naming_another_organizer_does_not_pin_the_next_meeting(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=ALEX))
    deliver(cancel(external_id, 1, organizer=MEGAN))
    assert record(external_id)["organizerId"] is None  # no meeting, no organizer id
    deliver(doc(external_id, 2, organizer=MEGAN))
    [meeting] = live(emulator)
    assert meeting.user_id == MEGAN
    assert record(external_id)["organizerId"] == MEGAN


def test_a_first_version_handed_back_mid_way_still_sends_its_confirmation(
    emulator: GraphEmulator, event_queue: QueueClient
) -> None:
    emulator.inject_fault(operation="getJoinWebUrl", status=429, retry_after=45, count=1)
    external_id = new_id()
    body = doc(external_id, 0, settings={"sendSmsNotifications": True})
    deliver(body)
    assert record(external_id)["status"] == "pending"

    deliver(body, dequeue_count=1)  # the handed-back message, once visible again
    assert [sms.message_type for sms in emulator.sms_sent()] == ["confirmation"]
    assert len(live(emulator)) == 1
    assert record(external_id)["status"] == "scheduled"


def test_a_retried_cancellation_texts_the_clients_once(emulator: GraphEmulator) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, settings={"sendSmsNotifications": True}))
    emulator.inject_fault(operation="deleteMeeting", status=500, count=1)
    with pytest.raises(RetryLater):
        deliver(cancel(external_id, 1))
    deliver(cancel(external_id, 1), dequeue_count=2)

    assert [sms.message_type for sms in emulator.sms_sent()] == ["confirmation", "cancellation"]
    assert live(emulator) == []
    assert record(external_id)["status"] == "cancelled"


def test_an_older_message_giving_up_does_not_fail_the_newest_version(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    newest = doc(external_id, 1, subject="Newest")
    parsed = parse_document(newest)
    assert not isinstance(parsed, list)
    runtime.store().save_desired(parsed, "corr-test")  # v1 stored; its message still queued
    emulator.inject_fault(operation="createOrGet", status=500, count=1)
    with pytest.raises(RetryLater):
        deliver(doc(external_id, 0), dequeue_count=queue_semantics().max_dequeue_count)
    assert record(external_id)["status"] == "pending"

    deliver(newest)  # v1's own message, Graph healthy again
    state = record(external_id)
    assert (state["status"], state["subject"]) == ("scheduled", "Newest")


def test_throttling_with_a_short_retry_after_is_handed_back_not_counted_as_a_failure(
    emulator: GraphEmulator, event_queue: QueueClient
) -> None:
    # More 429s than the in-call budget absorbs: the message goes back to the queue (a
    # hand-back, which uses up no delivery) instead of failing towards the poison queue.
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=4, count=4)
    external_id = new_id()
    deliver(doc(external_id, 0))
    assert record(external_id)["status"] == "pending"
    assert event_queue.get_queue_properties().approximate_message_count == 1


def test_replay_resolves_a_cached_upn_again(emulator: GraphEmulator) -> None:
    upn = "moved.user@contoso.onmicrosoft.com"
    emulator.add_user(MOVED_USER, upn)
    runtime.store().cache_organizer_id(upn, GHOST)  # stale: the user was re-created
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=upn))
    assert record(external_id)["error"]["code"] == "organizerNotFound"

    reconcile_appointment_event(
        queue_message(message(doc(external_id, 0, organizer=upn), replay=True))
    )
    state = record(external_id)
    assert (state["status"], state["organizerId"]) == ("scheduled", MOVED_USER)
    assert runtime.store().cached_organizer_id(upn) == MOVED_USER


def test_a_guest_upn_is_resolved_and_cached(emulator: GraphEmulator) -> None:
    guest = "pat_fabrikam.com#EXT#@contoso.onmicrosoft.com"  # '#' cannot be in a table key
    emulator.add_user(GUEST_USER, guest)
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=guest))
    assert record(external_id)["status"] == "scheduled"
    assert runtime.store().cached_organizer_id(guest) == GUEST_USER


def test_an_error_message_names_the_appointments_own_replay_route(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, organizer=NO_POLICY))
    message_text = record(external_id)["error"]["message"]
    assert f"POST /api/appointments/{external_id}/reconcile" in message_text
    assert "{id}" not in message_text


# --- the SMS reminder ----------------------------------------------------------------------

REMINDER = {"sendSmsNotifications": True, "sendSmsReminder": True}


def starting_in(hours: float) -> dict[str, str]:
    """Times relative to the real clock: the reminder depends on how far away the start is."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    end = start + timedelta(minutes=30)
    return {"startDateTime": start.isoformat(), "endDateTime": end.isoformat()}


def reminders(emulator: GraphEmulator) -> list[Any]:
    return [s for s in emulator.sms_sent() if s.message_type == "reminder"]


def test_a_reminder_is_scheduled_15_minutes_before_each_new_time(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    first = starting_in(48)
    deliver(doc(external_id, 0, settings=REMINDER, **first))
    assert counts(emulator) == {
        "createOrGet": 1,
        "getJoinWebUrl": 1,
        "sendSms": 1,
        "sendReminderSms": 1,
    }
    emulator.reset_calls()
    deliver(doc(external_id, 1, settings=REMINDER, subject="Renamed", **first))
    assert counts(emulator) == {"updateMeeting": 1}  # the time stayed: no new reminder
    emulator.reset_calls()
    moved = starting_in(72)
    deliver(doc(external_id, 2, settings=REMINDER, **moved))
    assert counts(emulator) == {"updateMeeting": 1, "sendSms": 1, "sendReminderSms": 1}

    assert [s.message_type for s in emulator.sms_sent()] == [
        "confirmation",
        "reminder",
        "reschedule",
        "reminder",
    ]
    due = [r.due_date_time for r in reminders(emulator)]
    lead = timedelta(minutes=15)
    assert due == [
        datetime.fromisoformat(first["startDateTime"]) - lead,
        datetime.fromisoformat(moved["startDateTime"]) - lead,
    ]
    assert all(r.remind_before == "mins15" for r in reminders(emulator))
    assert reminders(emulator)[0].phone_numbers == ["+13125550123"]
    assert reminders(emulator)[0].time_zones == ["Central Standard Time"]
    assert record(external_id)["settings"]["sendSmsReminder"] is True


def test_no_reminder_when_the_start_is_less_than_15_minutes_away(
    emulator: GraphEmulator,
) -> None:
    deliver(doc(new_id(), 0, settings=REMINDER, **starting_in(0.2)))
    assert counts(emulator) == {"createOrGet": 1, "getJoinWebUrl": 1, "sendSms": 1}


def test_one_reminder_when_the_attempt_stops_between_the_sms_and_the_reminder(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    body = doc(external_id, 0, settings=REMINDER, **starting_in(48))
    # Once the confirmation is out, the lease looks spent: the attempt stops before the
    # reminder and is retried.
    interrupted = Reconciler(
        runtime.store(),
        runtime.queue(),
        runtime.graph_gateway,
        queue_semantics(),
        directory=runtime.directory(),
        clock=lambda: time.time() + (LEASE_SECONDS if emulator.sms_sent() else 0.0),
    )
    with pytest.raises(RetryLater):
        interrupted.handle(message(body), 1)
    assert [s.message_type for s in emulator.sms_sent()] == ["confirmation"]

    deliver(body, dequeue_count=2)
    deliver(body, dequeue_count=3)  # a duplicate delivery: settled, nothing sent

    assert [s.message_type for s in emulator.sms_sent()] == ["confirmation", "reminder"]
    assert emulator.call_counts()["sendReminderSms"] == 1
    state = record(external_id)
    assert state["status"] == "scheduled"
    assert state["warnings"] == []


def test_a_version_handed_back_before_its_sms_sends_one_reminder(
    emulator: GraphEmulator,
) -> None:
    external_id = new_id()
    deliver(doc(external_id, 0, settings=REMINDER, **starting_in(48)))
    emulator.inject_fault(operation="updateMeeting", status=429, retry_after=45, count=1)
    moved = doc(external_id, 1, settings=REMINDER, **starting_in(72))
    deliver(moved)
    assert record(external_id)["status"] == "scheduled"
    assert record(external_id)["pending"] is True

    deliver(moved)  # the handed-back message, once visible again
    assert [s.message_type for s in emulator.sms_sent()] == [
        "confirmation",
        "reminder",
        "reschedule",
        "reminder",
    ]


def test_a_refused_reminder_is_a_warning_not_a_failure(emulator: GraphEmulator) -> None:
    emulator.inject_fault(operation="sendReminderSms", status=400, count=1)
    external_id = new_id()
    body = doc(external_id, 0, settings=REMINDER, **starting_in(48))
    deliver(body)
    state = record(external_id)
    assert state["status"] == "scheduled"
    [warning] = state["warnings"]
    assert warning.startswith("SMS reminder not scheduled: Microsoft Graph refused")
    assert [s.message_type for s in emulator.sms_sent()] == ["confirmation"]
    deliver(body, dequeue_count=2)  # never tried again
    assert emulator.call_counts()["sendReminderSms"] == 1


def test_a_reminder_refused_for_a_missing_role_names_the_role(emulator: GraphEmulator) -> None:
    emulator.granted_roles.discard("VirtualAppointmentNotification.Send")
    external_id = new_id()
    deliver(doc(external_id, 0, settings=REMINDER, **starting_in(48)))
    state = record(external_id)
    assert state["status"] == "scheduled"
    sms, reminder = state["warnings"]
    assert sms.startswith("SMS confirmation not sent:")
    assert reminder.startswith("SMS reminder not scheduled:")
    assert "VirtualAppointmentNotification.Send" in reminder
