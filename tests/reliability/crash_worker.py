"""A worker process for the crash test: take one message off the queue and run the function.

The parent SIGKILLs it while it holds the message (mid-invocation), so the message is neither
deleted nor released: it reappears only when its visibility timeout runs out, as after a real
worker crash. Usage: `python -m tests.reliability.crash_worker <visibility seconds>`.
"""

from __future__ import annotations

import json
import os
import sys
import time

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from shared.settings import QUEUE_NAME, STORAGE_SETTING


def main() -> None:
    visibility = int(sys.argv[1])
    queue = QueueClient.from_connection_string(os.environ[STORAGE_SETTING], QUEUE_NAME)
    from shared.queue_functions import reconcile_appointment_event

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = list(queue.receive_messages(max_messages=1, visibility_timeout=visibility))
        if batch:
            message = batch[0]
            print(json.dumps({"received": message.id}), flush=True)
            reconcile_appointment_event(
                QueueMessage(
                    id=message.id,
                    body=str(message.content).encode("utf-8"),
                    dequeue_count=message.dequeue_count,
                    pop_receipt=message.pop_receipt,
                )
            )
            queue.delete_message(message)
            print(json.dumps({"done": message.id}), flush=True)
            return
        time.sleep(0.1)
    sys.exit("no message to take")


if __name__ == "__main__":
    main()
