"""`python -m devtools.retention`: run one retention pass by hand, as the timer would.

Pseudonymizes the clients of appointments more than RETENTION_DAYS past their end or
cancellation (shared/retention_run.py), deletes the parked messages of such appointments,
and prints what it did, counts only. Safe while the app runs (the same ETag-guarded writes as
the daily timer function; a leased record is left for the next run). Uses AzureWebJobsStorage
and RETENTION_DAYS from the environment, else from local.settings.json; `--days` overrides
the setting.

    python -m devtools.retention                  # one bounded pass, from the saved cursor
    python -m devtools.retention --from-start     # forget the cursor: walk every record again
    python -m devtools.retention --days 7 --max-records 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from devtools.reindex import SETTINGS_FILE, connection_string
from shared.retention_run import DEFAULT_MAX_RECORDS, DEFAULT_MAX_SECONDS, RetentionRun
from shared.settings import Settings, SettingsError, StorageSettings
from shared.storage import AppointmentStore, EventQueue


def configured_days() -> int:
    """RETENTION_DAYS as the app reads it (checked the same way), with its default."""
    raw = os.environ.get("RETENTION_DAYS")
    if raw is None and SETTINGS_FILE.exists():
        raw = json.loads(SETTINGS_FILE.read_text()).get("Values", {}).get("RETENTION_DAYS")
    return Settings.from_environ({"RETENTION_DAYS": str(raw or "")}).retention_days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.retention", description=__doc__)
    parser.add_argument("--days", type=int, help="override RETENTION_DAYS for this pass")
    parser.add_argument("--from-start", action="store_true", help="forget the saved cursor")
    parser.add_argument("--max-records", type=int, default=DEFAULT_MAX_RECORDS)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args = parser.parse_args(argv)
    try:
        days = configured_days() if args.days is None else args.days
    except SettingsError as error:
        parser.error(str(error))
    if days < 0:
        parser.error("--days must be at least 0")

    storage = StorageSettings(connection_string=connection_string())
    run = RetentionRun(
        AppointmentStore.from_settings(storage),
        days,
        max_records=args.max_records,
        max_seconds=args.max_seconds,
        queue=EventQueue.from_settings(storage),
    )
    began = time.perf_counter()
    report = run.run(from_start=args.from_start)
    print(json.dumps(report.to_json() | {"seconds": round(time.perf_counter() - began, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
