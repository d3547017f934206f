"""Drain the event queue through the registered queue function, with the host's semantics.

The Functions host is not available here; this follows its documented queue behaviour closely
enough for tests: a failed message becomes visible again after a pause and, once it has been
dequeued maxDequeueCount times, moves to `<queue>-poison`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from shared.settings import queue_semantics


def drain(
    queue: QueueClient,
    poison: QueueClient,
    function: Callable[[func.QueueMessage], None],
    *,
    deadline_seconds: float = 60.0,
    retry_visibility: int = 1,
) -> dict[str, int]:
    """Run every message (and every message it enqueues) until the queue stays empty."""
    semantics = queue_semantics()
    counts = {"processed": 0, "failed": 0, "poisoned": 0}
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        batch = list(queue.receive_messages(messages_per_page=16, visibility_timeout=30))
        if not batch:
            if queue.get_queue_properties().approximate_message_count == 0:
                return counts
            time.sleep(0.2)  # deferred messages still invisible
            continue
        for message in batch:
            body = message.content.encode("utf-8")
            try:
                function(
                    QueueMessage(
                        id=message.id,
                        body=body,
                        dequeue_count=message.dequeue_count,
                        pop_receipt=message.pop_receipt,
                    )
                )
            except Exception:  # the host catches everything a function raises
                counts["failed"] += 1
                if (message.dequeue_count or 0) >= semantics.max_dequeue_count:
                    poison.send_message(message.content)
                    queue.delete_message(message)
                    counts["poisoned"] += 1
                else:
                    queue.update_message(message, visibility_timeout=retry_visibility)
                continue
            queue.delete_message(message)
            counts["processed"] += 1
    raise TimeoutError(f"queue not drained in {deadline_seconds} s: {counts}")


def reconcile_all(queue: QueueClient, poison: QueueClient) -> None:
    """Drain the event queue through the app's queue function; nothing may end in poison."""
    from shared.queue_functions import reconcile_appointment_event

    outcome = drain(queue, poison, reconcile_appointment_event)
    assert outcome["poisoned"] == 0, outcome


def fresh_queue(connection_string: str, name: str) -> QueueClient:
    """The named queue, created, or emptied when an earlier test left it behind."""
    client = QueueClient.from_connection_string(connection_string, name)
    try:
        client.create_queue()
    except ResourceExistsError:
        client.clear_messages()
    return client
