"""Throughput: reconciliations per second on one instance, driven the way the host drives them.

New scheduled appointments, one message each, sit on the real queue in Azurite; the Graph
emulator adds `LATENCY` (200 ms) to every Graph call. A host-like driver delivers them to the
registered queue function (`reconcile_appointment_event`): on its own thread it receives
host.json's `batchSize` messages, hands each to a thread pool of `PYTHON_THREADPOOL_THREAD_COUNT`
threads (the Python worker's pool, which a synchronous function occupies for its whole run),
and receives the next batch once the messages in flight fall to `newBatchThreshold`; it deletes
each message after the function returns, as the host does. So at most batchSize +
newBatchThreshold messages are in flight, and fewer if the pool is smaller.

Two thread counts: the one the Bicep sets, and Python's default `min(32, CPUs + 4)`, which is
what the worker gets without the setting. The target is `batchSize / (Graph calls per message x
latency)` (the calls counted at the emulator), and the run should reach at least 0.8x of it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as stdlib_queue
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from bench import workload
from bench.common import ROOT, Stack, clear_app_caches, ensure_storage, latency_summary, table
from bench.reconcile import function_message, message_text
from devtools.graph_emulator import GraphEmulator
from shared.settings import POISON_QUEUE_NAME, QUEUE_NAME, queue_semantics

LATENCY = 0.200
SEED = 20261203
TARGET_RATIO = 0.8
API_BICEP = ROOT / "infra" / "app" / "api.bicep"


class RemoteGraph:
    """The Graph emulator in its own process, so its CPU does not take the app's GIL.

    In Azure, Graph runs elsewhere; in process, the emulator's request threads would compete
    with the worker's threads for one interpreter lock and cap the throughput measured here.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _ask(self, command: str, argument: Any = None) -> Any:
        self._connection.send((command, argument))
        return self._connection.recv()

    def set_latency(self, seconds: float) -> None:
        self._ask("latency", seconds)

    def reset_calls(self) -> None:
        self._ask("reset_calls")

    def call_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._ask("call_counts")
        return counts

    def meeting_count(self) -> int:
        count: int = self._ask("meeting_count")
        return count


def _serve_graph(connection: Connection) -> None:
    """The child process: one seeded emulator, driven by commands on the pipe."""
    with GraphEmulator() as graph:
        graph.seed_default_users()
        connection.send(graph.environment())
        while True:
            command, argument = connection.recv()
            if command == "stop":
                connection.send(None)
                return
            if command == "latency":
                graph.latency = float(argument)
                connection.send(None)
            elif command == "reset_calls":
                graph.reset_calls()
                connection.send(None)
            elif command == "call_counts":
                connection.send(graph.call_counts())
            elif command == "meeting_count":
                connection.send(len(graph.meetings()))
            else:
                connection.send(ValueError(f"unknown command {command!r}"))


@contextmanager
def remote_graph() -> Iterator[RemoteGraph]:
    """Start the emulator process and point the app's settings at it for the block."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_graph, args=(child,), name="graph-emulator")
    process.start()
    saved = dict(os.environ)
    try:
        if not parent.poll(60):
            raise TimeoutError("the Graph emulator process did not start in 60 s")
        os.environ.update(parent.recv())
        clear_app_caches()
        yield RemoteGraph(parent)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        clear_app_caches()
        try:
            parent.send(("stop", None))
            parent.poll(10)
        finally:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


def configured_threads() -> int:
    """PYTHON_THREADPOOL_THREAD_COUNT as infra/app/api.bicep sets it."""
    found = re.search(r"PYTHON_THREADPOOL_THREAD_COUNT:\s*'(\d+)'", API_BICEP.read_text())
    if found is None:
        raise ValueError(f"PYTHON_THREADPOOL_THREAD_COUNT not set in {API_BICEP}")
    return int(found.group(1))


def default_threads() -> int:
    """The Python worker's pool without the setting: ThreadPoolExecutor's default size."""
    return min(32, (os.cpu_count() or 1) + 4)


def drive(
    queue: QueueClient,
    function: Any,
    *,
    threads: int,
    batch_size: int,
    new_batch_threshold: int,
    expected: int,
    deadline_seconds: float,
) -> dict[str, Any]:
    """Deliver `expected` messages with the host's fetch rule; return timings and the peak."""
    completions: stdlib_queue.Queue[tuple[StorageMessage, float, BaseException | None]] = (
        stdlib_queue.Queue()
    )
    latencies: list[float] = []
    errors: list[str] = []
    in_flight = 0
    peak = 0
    done = 0
    receives = 0

    def invoke(message: StorageMessage) -> None:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            function(
                QueueMessage(
                    id=message.id,
                    body=message.content.encode("utf-8"),
                    dequeue_count=message.dequeue_count,
                    pop_receipt=message.pop_receipt,
                )
            )
        except Exception as error:  # the host catches everything a function raises
            failure = error
        completions.put((message, time.perf_counter() - started, failure))

    def settle(item: tuple[StorageMessage, float, BaseException | None]) -> None:
        nonlocal in_flight, done
        message, elapsed, failure = item
        in_flight -= 1
        done += 1
        latencies.append(elapsed)
        if failure is not None:
            errors.append(repr(failure))
        # The host deletes on its own threads; a failure is counted, not retried, in a benchmark.
        deletes.append(deleter.submit(queue.delete_message, message))

    deletes: list[Any] = []
    started = time.perf_counter()
    deadline = time.monotonic() + deadline_seconds
    with (
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker") as pool,
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="host-delete") as deleter,
    ):
        while done < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {expected} messages in {deadline_seconds} s")
            fetched = 0
            if in_flight <= new_batch_threshold and done + in_flight < expected:
                batch = list(
                    queue.receive_messages(
                        messages_per_page=batch_size, max_messages=batch_size, visibility_timeout=60
                    )
                )
                receives += 1
                for message in batch:
                    pool.submit(invoke, message)
                fetched = len(batch)
                in_flight += fetched
                peak = max(peak, in_flight)
            if fetched and in_flight <= new_batch_threshold:
                continue  # below the threshold the host fetches again at once
            # One completion at a time, so the fetch rule is checked after each, as the host does.
            try:
                settle(completions.get(timeout=30 if in_flight else 0.05))
            except stdlib_queue.Empty:
                continue
        for future in deletes:
            future.result()
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "latencies": latencies,
        "errors": errors,
        "peak_in_flight": peak,
        "receives": receives,
    }


def _one(
    stack: Stack,
    graph: RemoteGraph,
    count: int,
    threads: int,
    label: str,
    *,
    latency: float = LATENCY,
) -> dict[str, Any]:
    from shared.queue_functions import reconcile_appointment_event

    semantics = queue_semantics()
    queue = QueueClient.from_connection_string(stack.connection_string, QUEUE_NAME)
    poison = QueueClient.from_connection_string(stack.connection_string, POISON_QUEUE_NAME)
    appointments = workload.build(count, SEED, f"tp-{label}-{uuid.uuid4().hex[:8]}")
    for appointment in appointments:
        appointment.deliveries = appointment.versions[:1]  # a new scheduled appointment
        queue.send_message(message_text(appointment.deliveries[0], f"bench-{label}"))

    graph.reset_calls()
    live_before = graph.meeting_count()
    graph.set_latency(latency)
    cpu = time.process_time()
    try:
        run = drive(
            queue,
            reconcile_appointment_event,
            threads=threads,
            batch_size=semantics.batch_size,
            new_batch_threshold=semantics.new_batch_threshold,
            expected=count,
            deadline_seconds=max(60.0, count * 1.0),
        )
    finally:
        graph.set_latency(0.0)
    cpu = time.process_time() - cpu
    calls = {k: v for k, v in graph.call_counts().items() if k != "token" and v}
    total_calls = sum(calls.values())
    per_message = total_calls / count
    target = semantics.batch_size / (per_message * LATENCY)
    measured = count / run["wall"]
    return {
        "threads": threads,
        "messages": count,
        "graph_calls": dict(sorted(calls.items())),
        "graph_calls_per_message": round(per_message, 4),
        "messages_per_s": round(measured, 2),
        "cpu_ms_per_message": round(cpu / count * 1000, 1),
        "target_per_s": round(target, 2),
        "ratio": round(measured / target, 3),
        "meets_target": measured >= TARGET_RATIO * target,
        "peak_in_flight": run["peak_in_flight"],
        "receives": run["receives"],
        "latency": latency_summary(run["latencies"], run["wall"]),
        "errors": len(run["errors"]),
        "error_samples": run["errors"][:5],
        "queue_left": queue.get_queue_properties().approximate_message_count,
        "poison": poison.get_queue_properties().approximate_message_count,
        "live_meetings": graph.meeting_count() - live_before,
    }


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    from shared.queue_functions import reconcile_appointment_event

    semantics = queue_semantics()
    configured = configured_threads()
    default = default_threads()
    ensure_storage(stack.connection_string)
    # Enough messages for many refills of the batch at the configured count.
    count = 32 if quick else 960
    default_count = 12 if quick else 240
    ceiling_count = 8 if quick else 240
    with remote_graph() as graph:
        # Warm-up outside the measurement: token, Graph client, storage pools.
        for appointment in workload.build(4, SEED + 1, f"tp-warm-{uuid.uuid4().hex[:8]}"):
            reconcile_appointment_event(
                function_message(message_text(appointment.versions[0], "warm"))
            )
        runs = [
            {
                "setting": "Bicep (PYTHON_THREADPOOL_THREAD_COUNT)",
                **_one(stack, graph, count, configured, "set"),
            },
            {
                "setting": "Python default min(32, CPUs + 4)",
                **_one(stack, graph, default_count, default, "def"),
            },
        ]
        # What this machine can do at all: one thread, no Graph latency (CPU and storage only).
        ceiling = _one(stack, graph, ceiling_count, 1, "cpu", latency=0.0)
    configured_run = runs[0]
    return {
        "graph_latency_ms": LATENCY * 1000,
        "batch_size": semantics.batch_size,
        "new_batch_threshold": semantics.new_batch_threshold,
        "max_in_flight": semantics.batch_size + semantics.new_batch_threshold,
        "configured_threads": configured,
        "default_threads": default,
        "target_ratio": TARGET_RATIO,
        "runs": runs,
        "no_latency_one_thread": {
            "messages_per_s": ceiling["messages_per_s"],
            "cpu_ms_per_message": ceiling["cpu_ms_per_message"],
            "latency": ceiling["latency"],
        },
        "target": {
            "formula": "batchSize / (Graph calls per message x latency)",
            "per_s": configured_run["target_per_s"],
            "measured_per_s": configured_run["messages_per_s"],
            "ratio": configured_run["ratio"],
            "met": configured_run["meets_target"],
            "zero_errors": all(
                r["errors"] == 0 and r["queue_left"] == 0 and r["poison"] == 0 for r in runs
            ),
            "converged": all(r["live_meetings"] == r["messages"] for r in runs),
        },
    }


def report(results: dict[str, Any]) -> str:
    rows = [
        [
            r["setting"],
            r["threads"],
            r["messages"],
            r["graph_calls_per_message"],
            r["peak_in_flight"],
            r["messages_per_s"],
            r["target_per_s"],
            f"{r['ratio']:.3f}x",
            f"{r['latency']['p50_ms']:.0f} / {r['latency']['p99_ms']:.0f}",
            r["cpu_ms_per_message"],
            r["errors"],
        ]
        for r in results["runs"]
    ]
    text = table(
        f"Throughput: new appointments, {results['graph_latency_ms']:.0f} ms per Graph call, "
        f"batchSize {results['batch_size']}, newBatchThreshold {results['new_batch_threshold']} "
        f"(target >= {results['target_ratio']}x of batchSize / (calls x latency))",
        [
            "thread pool",
            "threads",
            "messages",
            "calls/msg",
            "peak in flight",
            "msg/s",
            "target msg/s",
            "ratio",
            "p50 / p99 ms",
            "CPU ms/msg",
            "errors",
        ],
        rows,
    )
    ceiling = results["no_latency_one_thread"]
    return (
        text + f"\n\nOne thread, no Graph latency: {ceiling['messages_per_s']} msg/s, "
        f"{ceiling['cpu_ms_per_message']} ms of this process's CPU per message "
        f"(the machine's ceiling for one worker process: about "
        f"{1000 / ceiling['cpu_ms_per_message']:.0f} msg/s on one core)"
    )
