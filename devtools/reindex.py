"""`python -m devtools.reindex`: index every stored appointment for the list, once.

Why: the list index (shared/listing.py) is kept by every commit of an applied row, but rows
committed before it existed have no index rows, so the list and bulk replay would not see
them. This scans the `appointments` table once (the only scan the list ever needs) and writes
each record's index rows. Safe while the app runs: index writes are idempotent and reads check
every row against its record. Uses AzureWebJobsStorage from the environment, else from
local.settings.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from shared.settings import TABLE_NAME
from shared.storage import AppointmentStore

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "local.settings.json"


def connection_string() -> str:
    value = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - the host's own name
    if not value and SETTINGS_FILE.exists():
        value = json.loads(SETTINGS_FILE.read_text()).get("Values", {}).get("AzureWebJobsStorage")
    if not value:
        raise SystemExit("set AzureWebJobsStorage (a connection string) or local.settings.json")
    return str(value)


def main() -> int:
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(connection_string(), TABLE_NAME)
    began = time.perf_counter()
    count = AppointmentStore(table).reindex()
    print(f"indexed {count} appointments in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
