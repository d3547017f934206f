"""A concurrent stand-in for the Functions host's queue trigger, for the reliability suites.

It follows the host's documented queue semantics (host.json `extensions.queues`), with several
workers at once: each receives messages with a visibility timeout, runs the function, deletes
the message on success; on an exception it makes the message visible again after a short retry
pause and, once the message has been dequeued maxDequeueCount times, moves it to the poison
queue. Everything is bounded by a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import azure.functions as func
from azure.core.exceptions import AzureError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from shared.settings import queue_semantics


@dataclass
class HostCounts:
    received: int = 0
    processed: int = 0
    failed: int = 0
    poisoned: int = 0
    receipts_lost: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "processed": self.processed,
            "failed": self.failed,
            "poisoned": self.poisoned,
            "receipts_lost": self.receipts_lost,
        }


class ConcurrentHost:
    """`workers` threads draining one queue through one queue-triggered function."""

    def __init__(
        self,
        connection_string: str,
        queue_name: str,
        poison_name: str,
        function: Callable[[func.QueueMessage], None],
        *,
        workers: int = 3,
        visibility_timeout: int = 30,
        retry_visibility: int = 1,
    ) -> None:
        self._connection_string = connection_string
        self._queue_name = queue_name
        self._poison_name = poison_name
        self._function = function
        self._workers = workers
        self._visibility_timeout = visibility_timeout
        self._retry_visibility = retry_visibility
        self._max_dequeue = queue_semantics().max_dequeue_count
        self._stop = threading.Event()
        self.counts = HostCounts()

    def _client(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self._connection_string, name)

    def _worker(self) -> None:
        queue, poison = self._client(self._queue_name), self._client(self._poison_name)
        while not self._stop.is_set():
            try:
                batch = list(
                    queue.receive_messages(
                        messages_per_page=4,
                        max_messages=4,
                        visibility_timeout=self._visibility_timeout,
                    )
                )
            except AzureError as error:
                self.counts.errors.append(f"receive: {error!r}")
                time.sleep(0.2)
                continue
            if not batch:
                time.sleep(0.1)
                continue
            for message in batch:
                self._process(queue, poison, message)

    def _process(self, queue: QueueClient, poison: QueueClient, message: object) -> None:
        from azure.storage.queue import QueueMessage as StorageMessage

        assert isinstance(message, StorageMessage)
        self.counts.add("received")
        body = str(message.content).encode("utf-8")
        try:
            self._function(
                QueueMessage(
                    id=message.id,
                    body=body,
                    dequeue_count=message.dequeue_count,
                    pop_receipt=message.pop_receipt,
                )
            )
        except Exception:  # the host catches everything a function raises
            self.counts.add("failed")
            try:
                if (message.dequeue_count or 0) >= self._max_dequeue:
                    poison.send_message(message.content)
                    queue.delete_message(message)
                    self.counts.add("poisoned")
                else:
                    queue.update_message(message, visibility_timeout=self._retry_visibility)
            except AzureError:
                self.counts.add("receipts_lost")
            return
        try:
            queue.delete_message(message)
        except AzureError:
            # The visibility timeout ran out during the call: another worker may have it now.
            self.counts.add("receipts_lost")
            return
        self.counts.add("processed")

    def run(
        self,
        *,
        deadline_seconds: float,
        feeding_done: threading.Event | None = None,
    ) -> HostCounts:
        """Work until feeding is done and the queue stays empty; TimeoutError at the deadline."""
        threads = [
            threading.Thread(target=self._worker, name=f"host-worker-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for thread in threads:
            thread.start()
        queue = self._client(self._queue_name)
        deadline = time.monotonic() + deadline_seconds
        empty_polls = 0
        try:
            while time.monotonic() < deadline:
                time.sleep(0.25)
                if feeding_done is not None and not feeding_done.is_set():
                    continue
                # The approximate count includes invisible (in-flight, deferred) messages.
                if queue.get_queue_properties().approximate_message_count == 0:
                    empty_polls += 1
                    if empty_polls >= 3:
                        return self.counts
                else:
                    empty_polls = 0
            raise TimeoutError(
                f"queue not drained in {deadline_seconds} s: {self.counts.as_dict()}"
            )
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=60)
