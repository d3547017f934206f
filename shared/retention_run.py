"""One retention pass over the `appointments` table: find due records, pseudonymize them.

The timer function (shared/timer_functions.py) runs it daily; `python -m devtools.retention`
runs it by hand. What is due and what it becomes is decided in shared/retention.py (pure);
this module finds candidates, writes, and remembers where it stopped.

Finding candidates without scanning the table: the list index (shared/listing.py) keeps every
record under `index~status~{status}` with RowKey `{start}~{id}`, in start order. An appointment
is at most 24 hours long and its end follows its start, so every record due by its end
(end + days <= now) starts before `now - days`: one ordered walk of the four status partitions
up to that bound finds them all, and a cursor (the last RowKey handled) lets the next run go on
from there, so each record is visited about once, not once a day. Four kinds of record need
more than that walk:

* cancelled ahead of their start: due `days` after the cancellation, maybe long before their
  start. The `index~status~cancelled` rows from the bound on (recent and future cancelled
  appointments, a set that does not grow with history) are walked again, sweep after sweep;
* found by the walk but not due yet (an end just past the bound, a pending newer version that
  moved it later) or leased by a reconciliation at that moment: noted in a small recheck
  partition that every run reads first, and forgotten once done;
* a newer version delivered after the purge (a late resend the app takes as a change): the
  intake writes over a desired row that carries the `Purged` marker and notes the record for a
  recheck the same way, so the next run pseudonymizes it again;
* a version that starts at or before `now - days` when it is applied (an import of old
  appointments): its index row may lie behind the cursor, so the reconciler notes the record
  for a recheck before its commit (retention.behind_the_walk). `reindex` forgets the cursor.

Last, messages parked in `appointment-events-poison` carry whole documents and live 7 days
there, longer than a short RETENTION_DAYS: a run deletes those whose appointment is due
(retention.parked_message_is_due; EventQueue.forget_poisoned bounds the messages read).

Bounded: at most `max_records` records and `max_seconds` per run (checked between chunks of
`chunk` records, which are visited WORKERS at a time); the rest waits for the next run.
Idempotent: a record already pseudonymized compares equal to its pseudonymized self and is not
written; a run over a finished table writes nothing. Safe beside the reconciler: the
applied row is written over its ETag (a reconciliation that read before loses its commit and
plans again from the pseudonymized record) and a live lease is never written over (the record
is noted and retried next run).

Logs counts and ids only: never a client's name, address or number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from shared import listing, retention
from shared.documents import version_key
from shared.storage import AppointmentStore, ConcurrencyConflict, EventQueue

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS = 20_000
# Below host.json's functionTimeout (5 minutes), with room for the last record and the cursor.
DEFAULT_MAX_SECONDS = 240.0
CHUNK = 100
# Records visited at once: a visit is four round trips (load, applied write, desired read and
# write), so a few in flight keep a pass from waiting on one at a time. Its own pool: the
# store's shared one runs index writes, which a visit's commit may start.
WORKERS = 8
ATTEMPTS = 4
STATUS_PARTITIONS = tuple(listing.status_partition(s) for s in listing.STATUSES)
CANCELLED_PARTITION = (listing.status_partition("cancelled"),)
UPPER = "~~~"  # past every RowKey, the no-start `~~{id}` ones included


class Outcome(Enum):
    PURGED = "purged"  # something was written
    CLEAN = "clean"  # nothing to erase: done already, erased, or no document
    NOT_DUE = "notDue"
    BUSY = "busy"  # a live lease, or other writers kept winning: next run


@dataclass
class Report:
    """What one run did (counts only: safe to log and to print)."""

    days: int
    examined: int = 0
    purged: int = 0
    clean: int = 0
    not_due: int = 0
    busy: int = 0
    parked: int = 0  # parked messages of due appointments deleted
    # Every candidate was reached; False: a bound stopped the run, the next one goes on.
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pass:
    """What one run carries through its phases."""

    now: float
    report: Report
    room: Callable[[], bool]
    cursor: dict[str, str]
    pool: ThreadPoolExecutor
    max_records: int

    def left(self) -> int:
        return max(0, self.max_records - self.report.examined)


class RetentionRun:
    """One bounded pass; `clock` (unix seconds) is injectable so tests can travel in time."""

    def __init__(
        self,
        store: AppointmentStore,
        days: int,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        chunk: int = CHUNK,
        queue: EventQueue | None = None,
    ) -> None:
        """`queue`: the `appointment-events` queue, whose parked messages are cleared too
        (None: not)."""
        self._store = store
        self._queue = queue
        self._days = days
        self._clock = clock
        self._timer = timer
        self._max_records = max_records
        self._max_seconds = max_seconds
        self._chunk = max(1, chunk)
        self._saved: dict[str, str] | None = None

    def run(self, *, from_start: bool = False) -> Report:
        """One pass: rechecks, the walk by start time, recent cancellations, parked messages.

        `from_start` forgets the cursor and walks the whole index again (by hand, to rule
        the cursor out; imports need it no more: see behind_the_walk)."""
        report = Report(self._days)
        if self._days <= 0:
            report.finished = True
            log.info("retention: RETENTION_DAYS is 0, nothing is erased")
            return report
        now = self._clock()
        began = self._timer()
        cutoff = version_key(datetime.fromtimestamp(now, UTC) - timedelta(days=self._days))

        def room() -> bool:
            return report.examined < self._max_records and self._timer() - began < self._max_seconds

        cursor = {} if from_start else self._store.retention_cursor()
        self._saved = None if from_start else dict(cursor)
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="retention")
        run = _Pass(now, report, room, cursor, pool, self._max_records)
        try:
            done = (
                self._rechecks(run)
                and self._walk(run, "Main", STATUS_PARTITIONS, "", cutoff, recheck=True)
                and self._walk(run, "Cancelled", CANCELLED_PARTITION, cutoff, UPPER, recheck=False)
            )
            if done:
                cursor.pop("Cancelled", None)  # the next run sweeps the cancellations again
                self._clear_parked(run)
            report.finished = done
        finally:
            pool.shutdown(wait=True)
            self._save(cursor)
            log.info(
                "retention: %s examined, %s pseudonymized, %s already clean, %s not due, "
                "%s busy, %s parked messages deleted; %s",
                report.examined,
                report.purged,
                report.clean,
                report.not_due,
                report.busy,
                report.parked,
                "finished" if report.finished else "the next run goes on",
            )
        return report

    def _save(self, cursor: dict[str, str]) -> None:
        """Write the cursor if it moved since it was read or last written (so a run that
        finds nothing to do writes nothing)."""
        if cursor != self._saved:
            self._store.save_retention_cursor(cursor)
            self._saved = dict(cursor)

    def _clear_parked(self, run: _Pass) -> None:
        """Delete the parked messages whose appointment is due (bounded by forget_poisoned's
        own limit rather than by the run's record count: it reads messages, not records)."""
        if self._queue is None:
            return
        moment = datetime.fromtimestamp(run.now, UTC)
        run.report.parked = self._queue.forget_poisoned(
            lambda text, parked: retention.parked_message_is_due(text, parked, self._days, moment)
        )

    def _rechecks(self, run: _Pass) -> bool:
        ids = self._store.rechecks(self._max_records)
        while ids:
            if not run.room():
                return False
            batch, ids = ids[: min(self._chunk, run.left())], ids[self._chunk :]
            for external_id, outcome in zip(batch, self._visit(batch, run), strict=True):
                if outcome in (Outcome.PURGED, Outcome.CLEAN):
                    self._store.forget_recheck(external_id)
        return True

    def _walk(
        self,
        run: _Pass,
        name: str,
        partitions: tuple[str, ...],
        lower: str,
        upper: str,
        *,
        recheck: bool,
    ) -> bool:
        """Visit index rows after cursor[name] in RowKey order; True when the end was reached.

        A chunk's records are visited in parallel; the cursor then moves past the chunk (and is
        saved), so a crash repeats at most one chunk. `recheck`: records not done are noted for
        the next run (a busy one always is)."""
        cursor = run.cursor
        while True:
            if not run.room():
                return False
            rows = self._store.index.walk(partitions, lower, upper, cursor.get(name), self._chunk)
            taken = rows[: run.left()]
            ids = [external_id for _, external_id in taken if external_id is not None]
            for external_id, outcome in zip(ids, self._visit(ids, run), strict=True):
                if outcome is Outcome.BUSY or (recheck and outcome is Outcome.NOT_DUE):
                    self._store.note_recheck(external_id)
            if taken:
                cursor[name] = taken[-1][0]
            if len(taken) < len(rows):
                return False
            if len(rows) < self._chunk:
                return True
            self._save(cursor)

    def _visit(self, ids: list[str], run: _Pass) -> list[Outcome]:
        """Apply retention to `ids` (WORKERS at a time) and count the outcomes."""
        outcomes = list(run.pool.map(lambda external_id: self.apply(external_id, run.now), ids))
        report = run.report
        for outcome in outcomes:
            report.examined += 1
            if outcome is Outcome.PURGED:
                report.purged += 1
            elif outcome is Outcome.CLEAN:
                report.clean += 1
            elif outcome is Outcome.NOT_DUE:
                report.not_due += 1
            else:
                report.busy += 1
        return outcomes

    def apply(self, external_id: str, now: float) -> Outcome:
        """Pseudonymize one record if it is due; what happened."""
        moment = datetime.fromtimestamp(now, UTC)
        for _ in range(ATTEMPTS):
            stored = self._store.load(external_id)
            applied, desired = stored.applied, stored.desired
            if stored.erased and desired is None:
                return Outcome.CLEAN
            documents = [
                d
                for d in (
                    applied.document if applied else None,
                    desired.document if desired else None,
                )
                if d is not None
            ]
            if not documents:
                return Outcome.CLEAN
            if not retention.is_due(documents, self._days, moment):
                return Outcome.NOT_DUE
            if applied is not None and applied.lease_owner and applied.lease_until > now:
                return Outcome.BUSY
            values = retention.private_values(documents)
            wrote = False
            if applied is not None:
                purged = retention.pseudonymize_state(applied, values)
                if purged != applied:
                    shown = (
                        retention.pseudonymize_document(desired.document, values)
                        if desired
                        else None
                    )
                    try:
                        self._store.commit_applied(
                            external_id, purged, stored.applied_etag, shown=shown
                        )
                    except ConcurrencyConflict:
                        continue  # a reconciliation moved on: look again
                    wrote = True
            if desired is not None and (
                retention.pseudonymize_document(desired.document, values) != desired.document
            ):
                written = self._store.purge_desired(external_id, desired.version, values, now)
                if written is None:
                    continue  # a newer version arrived meanwhile: decide again
                wrote = wrote or written
            return Outcome.PURGED if wrote else Outcome.CLEAN
        return Outcome.BUSY
