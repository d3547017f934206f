"""Storage outage: Azurite stopped mid-run and restarted on the same ports and data folder.

While storage is down the intake answers 503 quickly (the sender retries the whole request).
Everything it answered 202 for, before, during or after the outage, is in the table and on the
queue once storage is back: nothing accepted is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from shared import runtime
from shared.documents import version_key
from shared.events import AppointmentEvent
from shared.http_api import receive_appointments
from shared.settings import QUEUE_NAME
from tests.support import document, encode, signed_request

STORAGE_DEADLINE_SECONDS = 10.0  # SPEC: a dead account gives a quick 503
# Longer than that deadline: every request that starts while storage is down is a quick 503, and
# one caught in flight when it died is bounded by the deadline, so requests start during the outage.
OUTAGE_SECONDS = STORAGE_DEADLINE_SECONDS + 3.0


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    server = Azurite(location=tmp_path / "azurite")
    server.start()
    try:
        yield server
    finally:
        server.close()


def _all_messages(connection_string: str) -> list[AppointmentEvent]:
    queue = QueueClient.from_connection_string(connection_string, QUEUE_NAME)
    events: list[AppointmentEvent] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = list(queue.receive_messages(max_messages=32, visibility_timeout=120))
        if not batch:
            return events
        events += [AppointmentEvent.from_message(str(m.content)) for m in batch]
    raise TimeoutError("could not read the whole queue")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_outage_answers_503_and_loses_nothing_accepted(
    own_azurite: Azurite, reconfigure: Callable[..., None], tmp_path: Path
) -> None:
    reconfigure(AzureWebJobsStorage=own_azurite.connection_string)
    accepted: dict[str, str] = {}
    answers: list[tuple[float, int, float]] = []  # (when, status, seconds)
    stop = threading.Event()
    failures: list[BaseException] = []

    def send(index: int) -> int:
        body = document(
            externalAppointmentId=f"outage-{index:05d}",
            lastModifiedDateTime=f"2026-11-20T10:{index % 60:02d}:{index // 60 % 60:02d}Z",
        )
        started = time.monotonic()
        response = receive_appointments(signed_request(encode(body)))
        elapsed = time.monotonic() - started
        answers.append((started, response.status_code, elapsed))
        if response.status_code == 202:
            accepted[body["externalAppointmentId"]] = body["lastModifiedDateTime"]
        else:
            assert response.headers.get("Content-Type") == "application/problem+json"
        return int(response.status_code)

    def feed() -> None:
        index = 0
        try:
            while not stop.is_set() and index < 5000:
                send(index)
                index += 1
                time.sleep(0.01)
        except BaseException as error:  # surfaced by the main thread
            failures.append(error)

    feeder = threading.Thread(target=feed, name="outage-feeder")
    restarted: Azurite | None = None
    feeder.start()
    try:
        time.sleep(1.5)
        own_azurite.stop()
        down_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        down_answers = [a for a in answers if a[0] > down_at + 0.5]
        restarted = Azurite(
            location=own_azurite.location,
            ports=(own_azurite.blob_port, own_azurite.queue_port, own_azurite.table_port),
        )
        restarted.start()
        up_at = time.monotonic()
        try:
            time.sleep(2.0)
        finally:
            stop.set()
            feeder.join(timeout=60)
        assert not failures, f"the feeder failed: {failures[0]!r}"

        statuses = [status for _, status, _ in answers]
        after = [status for when, status, _ in answers if when > up_at + 1.0]
        summary = {
            "requests": len(answers),
            "accepted": len(accepted),
            "by_status": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "during_outage": {str(s): [a[1] for a in down_answers].count(s) for s in (202, 503)},
            "slowest_503_s": round(max((a[2] for a in answers if a[1] == 503), default=0), 2),
        }
        print(f"\nstorage outage: {json.dumps(summary)}")
        (tmp_path / "storage_faults.json").write_text(json.dumps(summary, indent=2))

        assert set(statuses) <= {202, 503}, summary
        assert down_answers, "no request was made while storage was down"
        assert {status for _, status, _ in down_answers} == {503}, summary
        assert all(seconds < STORAGE_DEADLINE_SECONDS for _, s, seconds in answers if s == 503)
        assert after, f"no request after the restart: {summary}"
        assert set(after) == {202}, f"the intake did not recover: {summary}"

        # Nothing accepted is lost: every 202 is stored and enqueued.
        store = runtime.store()
        missing_rows = []
        for external_id, modified in accepted.items():
            stored = store.load(external_id)
            desired = stored.desired
            if (
                desired is None
                or desired.version != version_key(desired.document.version)
                or desired.document.last_modified_date_time != modified
            ):
                missing_rows.append(external_id)
        queued = {
            e.document.external_appointment_id for e in _all_messages(own_azurite.connection_string)
        }
        missing_messages = sorted(set(accepted) - queued)
        assert not missing_rows, f"{len(missing_rows)} accepted documents not stored"
        assert not missing_messages, (
            f"{len(missing_messages)} accepted documents not on the queue: {missing_messages[:5]}"
        )
    finally:
        stop.set()
        feeder.join(timeout=60)
        if restarted is not None:
            restarted.stop()
