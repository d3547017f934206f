"""Chaos: shuffled, duplicated webhooks, Graph faults and a worker killed mid-message.

300 appointments with seeded random version histories go through the real intake (signed
webhooks, shuffled, 20% delivered twice) while three worker threads drain the real queue through
the registered queue function with the host's semantics (tests/reliability/host.py). Graph fails
15% of calls with 429/503 after a latency spike. Before the storm, a worker *process* takes the
first message, calls createOrGet and is SIGKILLed before it can record the meeting: its
message comes back after its visibility timeout, and its lease (shared.reconciler.LEASE_SECONDS,
60 s) defers the appointment until it expires, so the test budgets about a minute for it.

After the queue drains, Graph must equal every appointment's newest document: one live meeting
per scheduled appointment with its subject, times (compared in UTC) and organizer, none for a
cancelled one, no orphan; every record scheduled or cancelled and not pending; nothing poisoned.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.callback_receiver import CallbackReceiver
from devtools.graph_emulator import GraphEmulator
from shared import runtime
from shared.http_api import receive_appointments
from shared.queue_functions import deliver_callback, reconcile_appointment_event
from shared.reconciler import LEASE_SECONDS
from shared.settings import (
    CALLBACK_POISON_QUEUE_NAME,
    CALLBACK_QUEUE_NAME,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
)
from tests.reliability.chaos import (
    History,
    convergence_problems,
    history,
    notification_problems,
)
from tests.reliability.host import ConcurrentHost
from tests.support import ALEX, ALEX_UPN, encode, signed_request

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261124
APPOINTMENTS = 300
DUPLICATE_SHARE = 0.20
FAULT_RATE = 0.15
LATENCY_SPIKE = 0.25
WORKERS = 3
CRASH_VISIBILITY = 5
CALLBACK_FAILURE_SHARE = 0.15
CALLBACK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def post(document: dict[str, Any]) -> int:
    return int(receive_appointments(signed_request(encode(document))).status_code)


def kill_a_worker_after_create(
    victim: dict[str, Any], graph: GraphEmulator, environment: dict[str, str]
) -> dict[str, Any]:
    """A worker process takes the victim's message and dies between createOrGet and commit."""
    assert post(victim) == 202
    graph.latency = 1.0  # the window in which the worker holds the message, after createOrGet
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crash_worker", str(CRASH_VISIBILITY)],
        env={**os.environ, **environment},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    killed_at = time.time()
    try:
        deadline = time.monotonic() + 60
        while graph.call_counts().get("createOrGet", 0) < 1:
            assert worker.poll() is None, "the crash worker exited before createOrGet"
            assert time.monotonic() < deadline, "the crash worker never called createOrGet"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        killed_at = time.time()
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=10)
        if worker.stdout is not None:
            worker.stdout.close()
    graph.latency = 0.0
    stored = runtime.store().load(victim["externalAppointmentId"])
    assert stored.applied is not None
    return {
        "killed_after": "createOrGet, before the commit",
        "live_meetings_after_kill": len(graph.meetings()),
        "lease_held_for_s": round(stored.applied.lease_until - killed_at, 1),
        "intents_recorded": len(stored.applied.intents),
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_converges_with_no_duplicate_orphan_or_poison(
    emulator: GraphEmulator,
    azurite: Azurite,
    event_queue: QueueClient,
    app_environment: dict[str, str],
    reconfigure: Callable[..., None],
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    # Callbacks and e-mail on: the receiver refuses a seeded share of attempts with a 500.
    script = [500 if rng.random() < CALLBACK_FAILURE_SHARE else 200 for _ in range(4000)]
    receiver = CallbackReceiver(secrets=[CALLBACK_SECRET], responses=script).start()
    reconfigure(
        SOURCES__appointments__CALLBACKURL=receiver.url,
        SOURCES__appointments__CALLBACKSECRETS=CALLBACK_SECRET,
        CALLBACK_RETRY_SCHEDULE="1,1,1,1,1,1",
        MAIL_SENDER=ALEX_UPN,
    )
    for name in (CALLBACK_QUEUE_NAME, CALLBACK_POISON_QUEUE_NAME):
        callbacks = QueueClient.from_connection_string(azurite.connection_string, name)
        with contextlib.suppress(ResourceExistsError):
            callbacks.create_queue()
        callbacks.clear_messages()
    run = f"chaos-{rng.randrange(10**8):08d}"
    victim = {
        "externalAppointmentId": f"{run}-victim",
        "lastModifiedDateTime": "2026-11-20T09:00:00Z",
        "organizer": ALEX,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "Killed mid-message",
    }
    histories = [history(rng, f"{run}-{index:03d}") for index in range(APPOINTMENTS)]
    histories.append(History(victim["externalAppointmentId"], [victim]))
    deliveries = [d for h in histories[:-1] for d in h.versions]
    deliveries += rng.sample(deliveries, round(len(deliveries) * DUPLICATE_SHARE))
    rng.shuffle(deliveries)

    crash = kill_a_worker_after_create(victim, emulator, app_environment)
    assert crash["live_meetings_after_kill"] == 1
    assert crash["intents_recorded"] == 1

    emulator.set_fault_rate(FAULT_RATE, seed=SEED, latency_spike=LATENCY_SPIKE)
    refused: list[int] = []
    feeding_done = threading.Event()

    def feed() -> None:
        try:
            for document in deliveries:
                status = post(document)
                if status != 202:
                    refused.append(status)
        finally:
            feeding_done.set()

    host = ConcurrentHost(
        azurite.connection_string,
        QUEUE_NAME,
        POISON_QUEUE_NAME,
        reconcile_appointment_event,
        workers=WORKERS,
        visibility_timeout=30,
        retry_visibility=1,
    )
    delivery = ConcurrentHost(
        azurite.connection_string,
        CALLBACK_QUEUE_NAME,
        CALLBACK_POISON_QUEUE_NAME,
        deliver_callback,
        workers=2,
        visibility_timeout=30,
        retry_visibility=1,
    )
    reconciled = threading.Event()
    delivered: dict[str, Any] = {}

    def deliver() -> None:
        try:
            delivered["counts"] = delivery.run(
                deadline_seconds=LEASE_SECONDS + 240, feeding_done=reconciled
            )
        except TimeoutError as error:
            delivered["error"] = str(error)

    started = time.monotonic()
    feeder = threading.Thread(target=feed, name="chaos-feeder")
    deliverer = threading.Thread(target=deliver, name="chaos-callbacks")
    feeder.start()
    deliverer.start()
    try:
        counts = host.run(deadline_seconds=LEASE_SECONDS + 150, feeding_done=feeding_done)
    finally:
        reconciled.set()
        feeder.join(timeout=60)
        emulator.clear_faults()
        deliverer.join(timeout=LEASE_SECONDS + 260)
        receiver.stop()
    drained_s = time.monotonic() - started

    calls = emulator.calls()
    faults = sum(1 for c in calls if c.operation != "token" and c.status in (429, 503))
    graph_calls = sum(1 for c in calls if c.operation != "token")
    poison = QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)
    poisoned = poison.get_queue_properties().approximate_message_count
    outcome = convergence_problems(histories, emulator)
    notified = notification_problems(histories, emulator, receiver.received)
    callback_poison = (
        QueueClient.from_connection_string(azurite.connection_string, CALLBACK_POISON_QUEUE_NAME)
        .get_queue_properties()
        .approximate_message_count
    )
    summary = {
        "seed": SEED,
        "appointments": len(histories),
        "webhooks": len(deliveries) + 1,
        "webhooks_refused": len(refused),
        "workers": WORKERS,
        "fault_rate": FAULT_RATE,
        "graph_calls": graph_calls,
        "graph_faults_injected": faults,
        "crash": crash,
        "host": counts.as_dict(),
        "host_errors": counts.errors[:5],
        "poison_queue": poisoned,
        "drained_in_s": round(drained_s, 1),
        "callback_host": (delivered["counts"].as_dict() if "counts" in delivered else delivered),
        "callback_poison_queue": callback_poison,
        **outcome,
        **notified,
    }
    report = tmp_path / "chaos.json"
    report.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nchaos summary ({report}):\n{json.dumps(summary, indent=2, default=str)}")

    assert not refused, f"intake refused {len(refused)} webhooks: {sorted(set(refused))}"
    assert faults > 0, "no fault was injected: the test would prove nothing"
    assert poisoned == 0, f"poisoned messages: {summary}"
    assert counts.poisoned == 0, f"poisoned messages: {summary}"
    assert not outcome["problems"], "\n".join(outcome["problems"][:20])
    assert outcome["live_meetings"] == outcome["scheduled"], summary
    assert outcome["referenced_meetings"] == outcome["scheduled"], summary
    assert "error" not in delivered, delivered
    assert callback_poison == 0, summary
    assert not notified["notification_problems"], "\n".join(notified["notification_problems"][:20])


@pytest.mark.slow
def test_crash_after_create_then_a_newer_version_reaches_graph(
    emulator: GraphEmulator, event_queue: QueueClient, app_environment: dict[str, str]
) -> None:
    from shared.documents import parse_document
    from shared.events import AppointmentEvent
    from shared.reconciler import Reconciler, Result
    from shared.settings import queue_semantics

    external_id = f"crash-newer-{random.Random(SEED).randrange(10**8):08d}"
    first = {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": "2026-11-20T09:00:00Z",
        "organizer": ALEX,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "First version",
    }
    crash = kill_a_worker_after_create(first, emulator, app_environment)
    assert crash["live_meetings_after_kill"] == 1
    newer = {
        **first,
        "lastModifiedDateTime": "2026-11-20T09:05:00Z",
        "startDateTime": "2026-12-01T11:00:00Z",
        "endDateTime": "2026-12-01T11:45:00Z",
        "subject": "Second version",
    }
    assert post(newer) == 202
    parsed = parse_document(newer)
    assert not isinstance(parsed, list)
    # The redelivery after the lease ran out (clock moved past it instead of waiting 60 s).
    later = Reconciler(
        runtime.store(),
        runtime.queue(),
        runtime.graph_gateway,
        queue_semantics(),
        directory=runtime.directory(),
        clock=lambda: time.time() + LEASE_SECONDS + 1,
    )
    assert later.handle(AppointmentEvent(parsed, "crash-newer").to_message(), 1) is Result.APPLIED

    [meeting] = emulator.meetings()
    state = runtime.store().load(external_id).applied
    assert state is not None
    assert (state.status, state.meeting_id) == ("scheduled", meeting.id)
    assert state.document is not None
    assert state.document.subject == "Second version"  # what the record claims
    assert (meeting.subject, meeting.start, meeting.end) == (
        "Second version",
        "2026-12-01T11:00:00Z",
        "2026-12-01T11:45:00Z",
    ), "Graph kept the first version's meeting"
