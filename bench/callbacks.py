"""Callbacks and notifications: callback latency, throughput beside a dead receiver, Graph calls.

Three measurements, one Azurite:

1. **Graph calls per notification** (exact, asserted). Appointments with three clients, two of
   them with an e-mail address, all three with US mobile numbers, `sendEmailNotifications`,
   `sendSmsNotifications` and `sendSmsReminder` on and `MAIL_SENDER` set, go through four
   versions each: new, time changed, subject only changed, cancelled. Counted at the emulator
   per version: `sendMail` must be exactly one per client with an address (2) for the first,
   the reschedule and the cancellation and 0 for the subject-only change; `sendReminderSms`
   exactly 1 for each version whose time changed (new, reschedule) and 0 otherwise. A
   mismatch raises: the benchmark fails rather than print a wrong figure.

2. **Reconcile throughput with callbacks**, the throughput benchmark's workload (new scheduled
   appointments, one message each, the Graph emulator in its own process adding 200 ms to every
   call) in three modes: callbacks off; on, to a receiver that never answers (`hang`); on, to
   one that answers 200 at once. The app runs as one Functions app does: both queue functions
   the app registers (`reconcile_appointment_event` and `deliver_callback`, found in
   `function_app`'s own index as `devtools/local_host.py` finds them) are driven by the local
   host's queue listeners (host.json's batchSize, newBatchThreshold and polling back-off), and
   every invocation of either runs on **one** thread pool of `PYTHON_THREADPOOL_THREAD_COUNT`
   threads (infra/app/api.bicep), as the Python worker runs every synchronous function of the
   app on one pool. Runs are interleaved off, hang, answer, hang, off so drift in the shared
   machine and in Azurite's growing table hits off and hang alike; off and hang runs are long
   (600 messages, several of the callback's 15 s timeouts) so the threads a dead receiver holds
   reach their steady level. Target: with a hanging receiver at least 0.95x of the throughput
   with callbacks off.

3. **Callback latency**, in the answering runs (under full reconcile load) and in a light-load
   run: appointments posted one by one through the HTTP intake (`receive_appointments`, 202) at
   `LIGHT_RATE` per second, the host polling both queues. Three clocks, all `time.time()` on
   this machine, the receiver's being its arrival:
   - *decided*: the owed callback's `created` (the reconciler's clock when it wrote the callback
     into the change, just before it enqueues the callback message and commits the row;
     `store().load(id).applied.callback.created`);
   - *committed*: when `AppointmentStore.commit_applied` of that commit returned, observed in
     process by wrapping the store's method (the row is durable from then on);
   - *accepted* (light load only): when the intake's 202 came back.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.storage.queue import QueueClient

from bench import workload
from bench.common import (
    ALEX,
    Stack,
    clear_app_caches,
    ensure_storage,
    percentile,
    table,
)
from bench.intake import signed_request
from bench.reconcile import function_message, message_text
from bench.throughput import LATENCY, RemoteGraph, configured_threads, remote_graph
from devtools.callback_receiver import CallbackReceiver
from devtools.local_host import (
    HOST_JSON,
    QueueFunction,
    _function_timeout_seconds,
    _Invoker,
    _QueueListener,
    describe,
    index,
    load_function_app,
)
from shared.settings import (
    CALLBACK_POISON_QUEUE_NAME,
    CALLBACK_QUEUE_NAME,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    queue_semantics,
)

SEED = 20261210
TARGET_RATIO = 0.95
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RECONCILE = "reconcile_appointment_event"
DELIVER = "deliver_callback"
ORDER = ("off", "hang", "answer", "hang", "off")
LIGHT_RATE = 4.0  # intake posts per second in the light-load latency run
SOURCE = "appointments"  # the default source: SOURCES__appointments__CALLBACKURL / …SECRETS
CALLBACK_URL = f"SOURCES__{SOURCE}__CALLBACKURL"
CALLBACK_SECRETS = f"SOURCES__{SOURCE}__CALLBACKSECRETS"
CALLBACK_SETTINGS = (CALLBACK_URL, CALLBACK_SECRETS, "CALLBACK_RETRY_SCHEDULE")


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "p95_ms": round(percentile(seconds, 95) * 1000, 1),
        "p99_ms": round(percentile(seconds, 99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1) if seconds else float("nan"),
    }


def _callbacks_to(url: str | None) -> None:
    """Point the default source's callbacks at `url` (None: no callbacks), reload settings."""
    for name in CALLBACK_SETTINGS:
        os.environ.pop(name, None)
    if url is not None:
        os.environ[CALLBACK_URL] = url
        os.environ[CALLBACK_SECRETS] = WHSEC
    clear_app_caches()


# --------------------------------------------------------------------------- the app's host


class _WorkerPool(ThreadPoolExecutor):
    """The Python worker's one pool for every synchronous invocation of the app.

    The local host gives each queue listener a pool of its own; here all listeners share this
    one, so a callback held by a dead receiver takes a thread a reconciliation could have had.
    A listener's own `shutdown` is ignored: the pool outlives them and `close` ends it.
    """

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None

    def close(self) -> None:
        super().shutdown(wait=True, cancel_futures=True)


@dataclass
class _Observed:
    """What the wrapped functions and store saw during one run."""

    expected: int
    reconciled: int = 0
    reconcile_errors: list[str] = field(default_factory=list)
    delivered_in_flight: int = 0
    delivery_peak: int = 0
    deliveries: int = 0
    delivery_seconds: list[float] = field(default_factory=list)
    committed: dict[str, float] = field(default_factory=dict)
    first_attempts: list[float] = field(default_factory=list)  # when each first try succeeded
    last_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)


def app_queue_functions() -> list[QueueFunction]:
    """Every queue function of the app, as the local host discovers them."""
    _, queues = describe(index(load_function_app()))
    names = {q.name for q in queues}
    if not {RECONCILE, DELIVER} <= names:
        raise RuntimeError(f"function_app registers queue functions {sorted(names)}")
    return queues


@contextmanager
def app_host(observed: _Observed, threads: int, connection: str) -> Iterator[list[str]]:
    """Both queue functions polled with the host's semantics, run on one worker pool."""
    from shared import runtime

    store = runtime.store()
    commit = store.commit_applied

    def committing(external_id: str, state: Any, etag: str | None, **kwargs: Any) -> str:
        etag_after = commit(external_id, state, etag, **kwargs)
        if state.callback is not None:
            at = time.time()
            with observed.lock:
                observed.committed.setdefault(state.callback.id, at)
        return etag_after

    store.commit_applied = committing  # type: ignore[method-assign]

    def reconcile(handler: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(msg: Any) -> None:
            try:
                handler(msg=msg)
            except Exception as error:
                with observed.lock:
                    observed.reconcile_errors.append(repr(error))
                raise
            with observed.lock:
                observed.reconciled += 1
                if (msg.dequeue_count or 1) == 1:
                    observed.first_attempts.append(time.perf_counter())
                if observed.reconciled >= observed.expected and not observed.done.is_set():
                    observed.last_done = time.perf_counter()
                    observed.done.set()

        return wrapped

    def deliver(handler: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(msg: Any) -> None:
            started = time.perf_counter()
            with observed.lock:
                observed.delivered_in_flight += 1
                observed.delivery_peak = max(observed.delivery_peak, observed.delivered_in_flight)
            try:
                handler(msg=msg)
            finally:
                with observed.lock:
                    observed.delivered_in_flight -= 1
                    observed.deliveries += 1
                    observed.delivery_seconds.append(time.perf_counter() - started)

        return wrapped

    wrappers = {RECONCILE: reconcile, DELIVER: deliver}
    functions = [
        replace(f, handler=wrappers[f.name](f.handler)) if f.name in wrappers else f
        for f in app_queue_functions()
    ]
    semantics = queue_semantics()
    invoke = _Invoker()
    pool = _WorkerPool(max_workers=threads, thread_name_prefix="worker")
    listeners = []
    for function in functions:
        listener = _QueueListener(
            function, connection, semantics, invoke, _function_timeout_seconds(HOST_JSON)
        )
        listener._pool = pool  # the worker's pool, not one per function
        listeners.append(listener)
    for listener in listeners:
        listener.start()
    try:
        yield [f.name for f in functions]
    finally:
        for listener in listeners:  # stop polling first; running invocations finish below
            listener._stop.set()
            with listener._changed:
                listener._changed.notify_all()
        for listener in listeners:
            listener._thread.join(timeout=10)
        pool.close()
        for listener in listeners:
            listener.stop(5)
        invoke.close()
        store.commit_applied = commit  # type: ignore[method-assign]


def _clear_queues(connection_string: str) -> None:
    for name in (QUEUE_NAME, POISON_QUEUE_NAME, CALLBACK_QUEUE_NAME, CALLBACK_POISON_QUEUE_NAME):
        QueueClient.from_connection_string(connection_string, name).clear_messages()


def _depth(connection_string: str, name: str) -> int:
    queue = QueueClient.from_connection_string(connection_string, name)
    return queue.get_queue_properties().approximate_message_count or 0


def _owed(external_ids: list[str]) -> dict[str, tuple[str, float]]:
    """Each appointment's owed callback: (webhook-id, created) from its applied row."""
    from shared import runtime

    owed: dict[str, tuple[str, float]] = {}
    for external_id in external_ids:
        applied = runtime.store().load(external_id).applied
        if applied is not None and applied.callback is not None:
            owed[external_id] = (applied.callback.id, applied.callback.created)
    return owed


def _latencies(
    receiver: CallbackReceiver,
    external_ids: list[str],
    committed: dict[str, float],
    accepted: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Receipt minus decided / committed / accepted, first arrival of each owed callback."""
    owed = _owed(external_ids)
    wanted = {callback_id: external_id for external_id, (callback_id, _) in owed.items()}
    first: dict[str, float] = {}
    verified = 0
    for received in receiver.received:
        callback_id = received.headers.get("webhook-id", "")
        if callback_id in wanted and callback_id not in first:
            first[callback_id] = received.arrived
            verified += received.verified
    decided, commit_gap, intake = [], [], []
    for callback_id, arrived in first.items():
        external_id = wanted[callback_id]
        decided.append(arrived - owed[external_id][1])
        if callback_id in committed:
            commit_gap.append(arrived - committed[callback_id])
        if accepted is not None and external_id in accepted:
            intake.append(arrived - accepted[external_id])
    result: dict[str, Any] = {
        "owed": len(owed),
        "received": len(first),
        "verified": verified,
        "decided_to_receipt": _summary(decided),
        "commit_to_receipt": _summary(commit_gap),
    }
    if accepted is not None:
        result["accepted_to_receipt"] = _summary(intake)
    return result


# --------------------------------------------------------------------------- 1. Graph calls


def _notified(external_id: str, start: datetime) -> dict[str, Any]:
    end = start + timedelta(minutes=30)
    return {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ALEX,
        "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": "Consultation",
        "timeZone": "America/New_York",
        "appointmentClients": [
            {
                "displayName": "Client One",
                "emailAddress": "one@example.com",
                "smsCapablePhoneNumber": "+12065550101",
            },
            {
                "displayName": "Client Two",
                "emailAddress": "two@example.com",
                "smsCapablePhoneNumber": "+12065550102",
            },
            {"displayName": "Client Three", "smsCapablePhoneNumber": "+12065550103"},
        ],
        "settings": {
            "sendSmsNotifications": True,
            "sendSmsReminder": True,
            "sendEmailNotifications": True,
        },
    }


# (version, what changes, sendMail expected, sendReminderSms expected)
NOTIFICATION_STEPS = (
    ("new", 2, 1),
    ("time changed", 2, 1),
    ("subject only", 0, 0),
    ("cancelled", 2, 0),
)


def notification_calls(stack: Stack, appointments: int) -> dict[str, Any]:
    """Deliver each version, count the emulator's calls per version; raise unless exact."""
    from shared.queue_functions import reconcile_appointment_event

    graph = stack.graph
    graph.latency = 0.0
    os.environ["MAIL_SENDER"] = ALEX
    _callbacks_to(None)
    rows: dict[str, dict[str, Any]] = {
        step: {"step": step, "versions": 0, "sendMail": 0, "sendReminderSms": 0, "other": {}}
        for step, _, _ in NOTIFICATION_STEPS
    }
    mismatches: list[str] = []
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=48)
        for n in range(appointments):
            external_id = f"nt-{uuid.uuid4().hex[:10]}-{n}"
            first = _notified(external_id, start)
            moved = datetime.fromisoformat(first["startDateTime"]) + timedelta(days=1)
            versions = [
                first,
                {
                    **_notified(external_id, moved),
                    "lastModifiedDateTime": "2026-11-20T10:01:00Z",
                },
                {
                    **_notified(external_id, moved),
                    "lastModifiedDateTime": "2026-11-20T10:02:00Z",
                    "subject": "Consultation (renamed)",
                },
                {
                    "externalAppointmentId": external_id,
                    "lastModifiedDateTime": "2026-11-20T10:03:00Z",
                    "status": "cancelled",
                    "settings": first["settings"],
                },
            ]
            for (step, mails, reminders), version in zip(NOTIFICATION_STEPS, versions, strict=True):
                graph.reset_calls()
                mailed_before = len(graph.mail_sent())
                reconcile_appointment_event(function_message(message_text(version, "nt")))
                counts = {k: v for k, v in graph.call_counts().items() if k != "token" and v}
                to = sorted(m.to_address for m in graph.mail_sent()[mailed_before:])
                row = rows[step]
                row["versions"] += 1
                row["sendMail"] += counts.get("sendMail", 0)
                row["sendReminderSms"] += counts.get("sendReminderSms", 0)
                for name, count in counts.items():
                    if name not in ("sendMail", "sendReminderSms"):
                        row["other"][name] = row["other"].get(name, 0) + count
                expected_to = ["one@example.com", "two@example.com"] if mails else []
                got = (counts.get("sendMail", 0), counts.get("sendReminderSms", 0), to)
                if got != (mails, reminders, expected_to):
                    mismatches.append(
                        f"{external_id} {step}: sendMail {got[0]} (want {mails}), "
                        f"sendReminderSms {got[1]} (want {reminders}), to {to}"
                    )
    finally:
        os.environ.pop("MAIL_SENDER", None)
        clear_app_caches()
    if mismatches:
        raise AssertionError("Graph calls per notification not exact:\n" + "\n".join(mismatches))
    table_rows = []
    for step, mails, reminders in NOTIFICATION_STEPS:
        row = rows[step]
        versions = row["versions"]
        row["sendMail_per_version"] = row["sendMail"] / versions
        row["sendReminderSms_per_version"] = row["sendReminderSms"] / versions
        row["expected_sendMail_per_version"] = mails
        row["expected_sendReminderSms_per_version"] = reminders
        table_rows.append(row)
    return {
        "appointments": appointments,
        "clients": 3,
        "clients_with_email": 2,
        "steps": table_rows,
        "exact": True,
    }


# --------------------------------------------------------------------------- 2. throughput


def _host_run(
    stack: Stack, graph: RemoteGraph, mode: str, count: int, threads: int, label: str
) -> dict[str, Any]:
    """`count` new appointments through the app's host, callbacks as `mode` says."""
    connection = stack.connection_string
    _clear_queues(connection)
    receiver = CallbackReceiver(secrets=[WHSEC], default_status=200)
    receiver.start()
    try:
        if mode == "hang":
            receiver.hang(True)
        _callbacks_to(None if mode == "off" else receiver.url)
        appointments = workload.build(count, SEED, f"cb-{label}-{uuid.uuid4().hex[:8]}")
        queue = QueueClient.from_connection_string(connection, QUEUE_NAME)
        for appointment in appointments:
            queue.send_message(message_text(appointment.versions[0], f"bench-{label}"))
        observed = _Observed(expected=count)
        graph.reset_calls()
        graph.set_latency(LATENCY)
        cpu = time.process_time()
        try:
            started = time.perf_counter()
            with app_host(observed, threads, connection) as functions:
                # Sampled: how many worker threads the delivery function held, on average.
                samples: list[int] = []
                deadline = time.monotonic() + max(120.0, count * 1.0)
                while not observed.done.wait(timeout=0.1):
                    samples.append(observed.delivered_in_flight)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{observed.reconciled} of {count} reconciled in time")
                wall = observed.last_done - started
                # A message that failed (storage or Graph timing out on a loaded machine) comes
                # back after host.json's 30 s visibilityTimeout and would turn the wall time into
                # that pause: the rate counts the messages done at their first attempt, over
                # the time the last of them took.
                firsts = len(observed.first_attempts)
                first_wall = max(observed.first_attempts) - started if firsts else wall
                held = observed.delivered_in_flight
                arrived = len(receiver.received)  # before the receiver lets go of any
                invoked = observed.deliveries + held
                if mode == "answer":  # every owed callback in before the host stops
                    receiver.wait_for(count, timeout=60)
                receiver.hang(False)  # let held requests go, so the host can stop
        finally:
            graph.set_latency(0.0)
        cpu = time.process_time() - cpu
        external_ids = [a.external_id for a in appointments]
        calls = {k: v for k, v in graph.call_counts().items() if k != "token" and v}
        result: dict[str, Any] = {
            "mode": mode,
            "messages": count,
            "threads": threads,
            "queue_functions": functions,
            "messages_per_s": round(firsts / first_wall, 2),
            "first_attempt_messages": firsts,
            "first_attempt_wall_s": round(first_wall, 3),
            "messages_per_s_all_attempts": round(count / wall, 2),
            "wall_s": round(wall, 3),
            "cpu_ms_per_message": round(cpu / count * 1000, 1),
            "graph_calls_per_message": round(sum(calls.values()) / count, 4),
            "errors": len(observed.reconcile_errors),
            "error_samples": observed.reconcile_errors[:5],
            "poison": _depth(connection, POISON_QUEUE_NAME),
            "callbacks_received": arrived,
            "delivery_invocations": invoked,
            "delivery_seconds_p50": round(percentile(observed.delivery_seconds, 50), 3),
            "delivery_peak_in_flight": observed.delivery_peak,
            "deliveries_held_at_end": held,
            "delivery_threads_mean": round(sum(samples) / len(samples), 1) if samples else 0.0,
        }
        if mode == "answer":
            result["latency"] = _latencies(receiver, external_ids, observed.committed)
        return result
    finally:
        receiver.stop()
        _callbacks_to(None)


# --------------------------------------------------------------------------- 3. light load


def _light_run(stack: Stack, graph: RemoteGraph, count: int, threads: int) -> dict[str, Any]:
    """Appointments posted one by one through the intake; callbacks answered at once."""
    from shared.http_api import receive_appointments

    _clear_queues(stack.connection_string)
    with CallbackReceiver(secrets=[WHSEC], default_status=200) as receiver:
        _callbacks_to(receiver.url)
        appointments = workload.build(count, SEED + 2, f"cb-light-{uuid.uuid4().hex[:8]}")
        accepted: dict[str, float] = {}
        observed = _Observed(expected=count)
        graph.set_latency(LATENCY)
        try:
            with app_host(observed, threads, stack.connection_string):
                began = time.monotonic()
                for n, appointment in enumerate(appointments):
                    pause = began + n / LIGHT_RATE - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    body = json.dumps(appointment.versions[0]).encode("utf-8")
                    response = receive_appointments(signed_request(body))
                    if response.status_code != 202:
                        raise RuntimeError(f"intake answered {response.status_code}")
                    accepted[appointment.external_id] = time.time()
                receiver.wait_for(count, timeout=60 + count)
        finally:
            graph.set_latency(0.0)
        result = _latencies(
            receiver, [a.external_id for a in appointments], observed.committed, accepted
        )
        result["appointments"] = count
        result["rate_per_s"] = LIGHT_RATE
        result["types"] = sorted({r.type or "?" for r in receiver.received})
        _callbacks_to(None)
        return result


# --------------------------------------------------------------------------- the benchmark


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    ensure_storage(stack.connection_string)
    semantics = queue_semantics()
    threads = configured_threads()
    notifications = notification_calls(stack, 2 if quick else 20)
    count = 12 if quick else 240
    # Off and hang runs last several 15 s callback timeouts, so the threads a dead receiver
    # holds reach their steady level (up to batchSize + newBatchThreshold) within the run.
    long = 12 if quick else 600
    light = 6 if quick else 60
    with remote_graph() as graph:
        _host_run(stack, graph, "answer", 4, threads, "warm")  # token, clients, pools
        runs = [
            {
                "order": n,
                **_host_run(
                    stack, graph, mode, count if mode == "answer" else long, threads, f"{mode}{n}"
                ),
            }
            for n, mode in enumerate(ORDER)
        ]
        light_load = _light_run(stack, graph, light, threads)

    def rate(mode: str) -> float:
        chosen = [r for r in runs if r["mode"] == mode]
        messages: int = sum(r["first_attempt_messages"] for r in chosen)
        wall: float = sum(r["first_attempt_wall_s"] for r in chosen)
        return messages / wall

    off, hang, answer = rate("off"), rate("hang"), rate("answer")
    answered = [r for r in runs if r["mode"] == "answer"]
    clean = all(r["errors"] == 0 and r["poison"] == 0 for r in runs)
    return {
        "graph_latency_ms": LATENCY * 1000,
        "threads": threads,
        "batch_size": semantics.batch_size,
        "new_batch_threshold": semantics.new_batch_threshold,
        "max_polling_interval_s": semantics.max_polling_interval_seconds,
        "queue_functions": runs[0]["queue_functions"],
        "order": list(ORDER),
        "runs": runs,
        "throughput": {
            "off_per_s": round(off, 2),
            "hang_per_s": round(hang, 2),
            "answer_per_s": round(answer, 2),
            "hang_ratio": round(hang / off, 3),
            "answer_ratio": round(answer / off, 3),
        },
        "latency": {"light_load": light_load, "under_load": [r["latency"] for r in answered]},
        "notifications": notifications,
        "target": {
            "hang_ratio_at_least": TARGET_RATIO,
            "hang_ratio": round(hang / off, 3),
            "met": hang / off >= TARGET_RATIO,
            "notifications_exact": notifications["exact"],
            "zero_errors": clean,
            "every_callback_received": all(
                r["latency"]["received"] == r["messages"] for r in answered
            )
            and light_load["received"] == light_load["appointments"],
            "every_callback_verified": all(
                r["latency"]["verified"] == r["latency"]["received"] for r in answered
            )
            and light_load["verified"] == light_load["received"],
        },
    }


def report(results: dict[str, Any]) -> str:
    notes = results["notifications"]
    text = [
        table(
            f"Graph calls per version: {notes['appointments']} appointments, "
            f"{notes['clients']} clients ({notes['clients_with_email']} with e-mail), "
            "SMS, reminder and e-mail on (exact, asserted)",
            ["version", "versions", "sendMail / version", "sendReminderSms / version", "other"],
            [
                [
                    s["step"],
                    s["versions"],
                    f"{s['sendMail_per_version']:g} (want {s['expected_sendMail_per_version']})",
                    f"{s['sendReminderSms_per_version']:g} "
                    f"(want {s['expected_sendReminderSms_per_version']})",
                    ", ".join(f"{k} {v}" for k, v in sorted(s["other"].items())),
                ]
                for s in notes["steps"]
            ],
        )
    ]
    text.append(
        table(
            f"Reconcile throughput, {results['threads']} worker threads shared by "
            f"{' and '.join(results['queue_functions'])}, "
            f"{results['graph_latency_ms']:.0f} ms per Graph call",
            [
                "run",
                "callbacks",
                "messages",
                "msg/s",
                "CPU ms/msg",
                "callbacks in",
                "deliveries",
                "peak delivering",
                "mean delivering",
                "errors",
            ],
            [
                [
                    r["order"],
                    r["mode"],
                    r["messages"],
                    r["messages_per_s"],
                    r["cpu_ms_per_message"],
                    r["callbacks_received"],
                    r["delivery_invocations"],
                    r["delivery_peak_in_flight"],
                    r["delivery_threads_mean"],
                    r["errors"],
                ]
                for r in results["runs"]
            ],
        )
    )
    tp = results["throughput"]
    target = results["target"]
    text.append(
        f"off {tp['off_per_s']} msg/s, hanging receiver {tp['hang_per_s']} msg/s "
        f"({tp['hang_ratio']:.3f}x; target >= {target['hang_ratio_at_least']}x: "
        f"{'met' if target['met'] else 'NOT met'}), answering receiver {tp['answer_per_s']} "
        f"msg/s ({tp['answer_ratio']:.3f}x)"
    )
    rows = []
    light = results["latency"]["light_load"]
    for name, key in (
        ("intake 202 -> receipt", "accepted_to_receipt"),
        ("decided (callback.created) -> receipt", "decided_to_receipt"),
        ("commit returned -> receipt", "commit_to_receipt"),
    ):
        value = light[key]
        rows.append([f"light load: {name}", value["count"], value["p50_ms"], value["p95_ms"]])
    for n, loaded in enumerate(results["latency"]["under_load"]):
        for name, key in (
            ("decided -> receipt", "decided_to_receipt"),
            ("commit -> receipt", "commit_to_receipt"),
        ):
            value = loaded[key]
            rows.append(
                [f"under load {n + 1}: {name}", value["count"], value["p50_ms"], value["p95_ms"]]
            )
    text.append(table("Callback latency", ["measure", "n", "p50 ms", "p95 ms"], rows))
    return "\n\n".join(text)
