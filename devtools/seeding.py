"""Write many stored appointments fast, as the app would have left them (tests, benchmarks).

Why not through the reconciler: a few thousand records through Graph and the queue take
minutes; the list only needs what the reconciler commits. Each record's desired and applied
rows go in one transaction (one partition), its index rows 100 per transaction per index
partition, exactly the rows `AppointmentStore.commit_applied` would have written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared import listing
from shared.documents import AppointmentDocument, version_key
from shared.records import AppliedState
from shared.storage import (
    DESIRED,
    AppointmentStore,
    StorageUnavailable,
    _applied_to_entity,
    _table_call,
    parallel,
)


def seed(table: TableClient, records: Sequence[tuple[AppointmentDocument, AppliedState]]) -> None:
    """Store each (newest document, applied state) pair with its index rows."""
    index_rows: list[tuple[listing.Key, str]] = []
    transactions: list[list[Any]] = []
    for document, state in records:
        external_id = document.external_appointment_id
        keys = listing.rows_for(listing.facts_of(external_id, state, document))
        index_rows.extend((key, external_id) for key in keys)
        desired = {
            "PartitionKey": external_id,
            "RowKey": DESIRED,
            "Version": version_key(document.version),
            "Document": json.dumps(document.to_json(), ensure_ascii=False),
            "CorrelationId": "seeded",
        }
        applied = _applied_to_entity(external_id, replace(state, indexed=tuple(sorted(keys))))
        transactions.append(
            [
                ("upsert", desired, {"mode": UpdateMode.REPLACE}),
                ("upsert", applied, {"mode": UpdateMode.REPLACE}),
            ]
        )

    def submit(operations: list[Any]) -> None:
        for attempt in range(3):  # a loaded Azurite drops a connection now and then
            try:
                _table_call(table, lambda: table.submit_transaction(operations))
                return
            except StorageUnavailable:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    parallel(submit, transactions)
    AppointmentStore(table).index.put_many(index_rows)
