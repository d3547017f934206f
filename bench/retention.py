"""Retention: records pseudonymized per second by one pass, on Azurite.

Records are seeded as the reconciler commits them (devtools/seeding.py), each with two clients
(names, e-mail addresses, phone numbers), all ended long enough ago to be due. One pass
(shared/retention_run.py, the code the daily timer function runs) walks the list index by start
time and pseudonymizes them: a load, an ETag-guarded applied-row write and a desired-row read
and write per record. A second pass over the same table is timed too: it must write nothing
(idempotent), which costs one load per record it revisits (here, none: the cursor is past them).
Azurite answers every query by scanning its whole table, so on Azure Tables (partition-indexed)
the per-record cost does not grow with the table as it does here.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import ALEX, Stack, clear_app_caches, ensure_storage, table
from shared.documents import AppointmentDocument, parse_document, version_key
from shared.records import AppliedState

DAYS = 30
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _record(tag: str, i: int) -> tuple[AppointmentDocument, AppliedState]:
    start = BASE + timedelta(minutes=7 * i)
    parsed = parse_document(
        {
            "externalAppointmentId": f"br-{tag}-{i:06d}",
            "lastModifiedDateTime": "2025-12-01T00:00:00Z",
            "organizer": ALEX,
            "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": "Consultation",
            "appointmentClients": [
                {
                    "displayName": f"Client {tag} {i}",
                    "emailAddress": f"client.{tag}.{i}@example.com",
                    "smsCapablePhoneNumber": f"+1206555{i % 10000:04d}",
                },
                {"displayName": f"Guest {tag} {i}", "emailAddress": f"guest.{i}@example.org"},
            ],
        }
    )
    assert isinstance(parsed, AppointmentDocument), parsed
    state = AppliedState(
        status="scheduled",
        version=version_key(parsed.version),
        document=parsed,
        organizer_id=ALEX,
        meeting_id=f"meeting-{i}",
        finished_versions=1,
    )
    return parsed, state


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    from azure.data.tables import TableClient

    from devtools.seeding import seed
    from shared.retention_run import RetentionRun
    from shared.settings import TABLE_NAME
    from shared.storage import AppointmentStore

    count = 200 if quick else 5_000
    ensure_storage(stack.connection_string)
    clear_app_caches()
    tag = uuid.uuid4().hex[:6]
    client = TableClient.from_connection_string(stack.connection_string, TABLE_NAME)
    records = [_record(tag, i) for i in range(count)]
    began = time.perf_counter()
    seed(client, records)
    seeded = time.perf_counter() - began
    last_end = max(d.end for d, _ in records if d.end is not None)
    now = (last_end + timedelta(days=DAYS, hours=1)).timestamp()
    store = AppointmentStore(client)

    began = time.perf_counter()
    first = RetentionRun(store, DAYS, clock=lambda: now, max_records=count + 10).run()
    purge_s = time.perf_counter() - began
    assert first.purged == count, first
    assert first.finished, first
    began = time.perf_counter()
    second = RetentionRun(store, DAYS, clock=lambda: now).run()
    again_s = time.perf_counter() - began
    assert second.purged == 0, second
    assert second.finished, second
    sample = store.load(records[0][0].external_appointment_id)
    assert sample.applied is not None
    assert sample.applied.document is not None
    assert [c.display_name for c in sample.applied.document.appointment_clients] == [
        "client 1",
        "client 2",
    ]
    return {
        "records": count,
        "seed_s": round(seeded, 1),
        "purge": {
            "seconds": round(purge_s, 2),
            "records_per_s": round(count / purge_s, 1) if purge_s else 0.0,
            "report": first.to_json(),
        },
        "second_pass": {"seconds": round(again_s, 2), "report": second.to_json()},
        "days": DAYS,
    }


def report(results: dict[str, Any]) -> str:
    purge, second = results["purge"], results["second_pass"]
    return table(
        "Retention: one pass over due records",
        ["records", "pass s", "records/s", "second pass s", "second pass writes"],
        [
            (
                results["records"],
                purge["seconds"],
                purge["records_per_s"],
                second["seconds"],
                second["report"]["purged"],
            )
        ],
    )
