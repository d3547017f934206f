"""Source health: what each source's deliveries came to, for `GET /api/sources/{source}`.

The person on call asks "is Epic still sending, and is what it sends getting in?". Every
delivery to a configured source is counted once, by how it was answered:

* accepted: stored and enqueued (202, an HL7 `AA`), duplicates and stale versions included;
* ignored: acknowledged, no change (an event kind or HL7 trigger the app does not act on);
* refused: answered with a refusal the sender cannot cure by retrying the same bytes (401,
  413, 415, 400, an HL7 `AE`, a 500 storage refusal), and the 503 of a source whose own
  settings are wrong or missing (its deliveries are turned away until an operator acts).

Not counted: an unknown source (404: no source to count it for, and counting would let any
caller create rows), and storage trouble (503 / `AR`): the sender retries, and the retry is
counted when storage is back; the health write would fail then anyway.

A refusal's reason is built from the app's own error, never from the delivery: the status (or
`AE`), the JSON Pointer or HL7 field *path* and the *rule* it breaks, e.g. `400
/payload/scheduled_event/start_time: must be an RFC 3339 date-time ...`. Paths and rules are the
app's fixed vocabulary; the offending value is never part of them (tests feed random values).

Recording is off the webhook's path: `HealthRecorder` hands each outcome to one background
thread that coalesces a burst into one counter merge per source, so a delivery's latency does
not grow, and a health-write failure cannot change the delivery's answer. The price: outcomes
not yet written are lost if the process dies abruptly (LINGER_SECONDS' worth at most).

No storage here: the table (shared/storage.py `SourceHealthTable`) is handed in.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from shared.documents import FieldError

log = logging.getLogger(__name__)

TABLE_NAME = "sourcehealth"
# The refusals the route shows, newest first; the table keeps about this many per source.
RECENT = 50
REASON_MAX = 200
# After a failed write the thread waits this long before trying the outcomes again.
RETRY_PAUSE_SECONDS = 5.0
# The thread lets outcomes gather this long before it writes: a burst becomes one merge per
# source, and the writes stay off the CPU the next deliveries need. What a process that dies
# abruptly loses from the counts is at most this much.
LINGER_SECONDS = 0.5

Result = Literal["accepted", "ignored", "refused"]


@dataclass(frozen=True)
class Verdict:
    """How one delivery was answered, for its source's counters; `reason` only if refused."""

    result: Result
    reason: str = ""


ACCEPTED = Verdict("accepted")
IGNORED = Verdict("ignored")


def _clean(text: str) -> str:
    """One line, bounded: the reason is shown as is and must not break a log or a table cell."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= REASON_MAX else flat[: REASON_MAX - 1] + "…"


def refusal(label: str, rule: str) -> Verdict:
    """A refusal whose reason is `label` (`401`, `AE` ...) and a rule of the app's own."""
    return Verdict("refused", _clean(f"{label} {rule}"))


def field_refusal(label: str, errors: Sequence[FieldError]) -> Verdict:
    """`{label} {path}: {message}` for the first field error, and how many more there are.

    The path is a JSON Pointer into the body or an HL7 field; the message is the rule. Both
    come from the app's validation, which names rules, not values.
    """
    if not errors:
        return refusal(label, "invalid body")
    first = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    place = first.path or "/"
    return refusal(label, f"{place}: {first.message}{more}")


@dataclass
class Tally:
    """Counts of one source (or a delta of them) and its newest counted delivery's time."""

    accepted: int = 0
    ignored: int = 0
    refused: int = 0
    last: float | None = None  # unix seconds

    def count(self, result: Result, at: float) -> None:
        setattr(self, result, getattr(self, result) + 1)
        self.last = at if self.last is None else max(self.last, at)

    def add(self, other: Tally) -> None:
        self.accepted += other.accepted
        self.ignored += other.ignored
        self.refused += other.refused
        if other.last is not None:
            self.last = other.last if self.last is None else max(self.last, other.last)

    @property
    def empty(self) -> bool:
        return not (self.accepted or self.ignored or self.refused)


@dataclass(frozen=True)
class Refusal:
    at: float  # unix seconds, when the delivery was received
    reason: str


def instant(unix_seconds: float) -> str:
    """RFC 3339 UTC to the millisecond: deliveries come faster than once a second."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# Row keys sort ascending, so an inverted microsecond count puts the newest refusal first.
_INVERT_FROM = 10**16 - 1


def refusal_key(at: float, suffix: str) -> str:
    """`refusal~{inverted µs}~{suffix}`: a partition query's first rows are the newest."""
    return f"refusal~{_INVERT_FROM - int(at * 1_000_000):016d}~{suffix}"


def view(
    name: str, kind: str | None, tally: Tally, refusals: Sequence[Refusal]
) -> dict[str, object]:
    """The route's body (SPEC "Operations", source health)."""
    newest = sorted(refusals, key=lambda r: r.at, reverse=True)[:RECENT]
    return {
        "name": name,
        "kind": kind,
        "accepted": tally.accepted,
        "ignored": tally.ignored,
        "refused": tally.refused,
        "lastDeliveryDateTime": instant(tally.last) if tally.last is not None else None,
        "recentRefusals": [{"receivedDateTime": instant(r.at), "reason": r.reason} for r in newest],
    }


Writer = Callable[[str, Tally, Sequence[Refusal]], None]


@dataclass
class _Pending:
    tally: Tally = field(default_factory=Tally)
    refusals: list[Refusal] = field(default_factory=list)

    def merge(self, tally: Tally, refusals: Sequence[Refusal]) -> None:
        self.tally.add(tally)
        # Only the newest RECENT can ever be shown: more would be written only to be trimmed.
        self.refusals = sorted([*self.refusals, *refusals], key=lambda r: r.at)[-RECENT:]


class HealthRecorder:
    """Counts outcomes per source and writes them in the background, coalesced.

    `record` takes a lock, adds to an in-memory delta and wakes the writer thread: no I/O on
    the caller's thread. The thread writes each source's delta with `write` (one merge per
    source however many deliveries arrived meanwhile); a failed write keeps its delta for the
    next attempt, after RETRY_PAUSE_SECONDS. `flush` waits until everything recorded so far
    has been attempted (tests, and process exit).

    `background=False` writes on the caller's thread instead (used to measure what the write
    would cost the webhook); its failures are swallowed all the same.
    """

    def __init__(
        self,
        write: Writer,
        *,
        background: bool = True,
        retry_pause: float = RETRY_PAUSE_SECONDS,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._write = write
        self._background = background
        self._retry_pause = retry_pause
        self._linger = linger
        self._urgent = False  # a flush is waiting: write now
        self._lock = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._recorded = 0  # outcomes recorded so far
        self._attempted = 0  # of those, how many the thread has tried to write
        self._failed = False
        self._thread: threading.Thread | None = None

    def record(self, source: str, verdict: Verdict, at: float | None = None) -> None:
        """Count one delivery of `source`; never raises, never waits on storage."""
        try:
            when = time.time() if at is None else at
            tally = Tally()
            tally.count(verdict.result, when)
            refusals = [Refusal(when, verdict.reason)] if verdict.result == "refused" else []
            if not self._background:
                self._write(source, tally, refusals)
                return
            with self._lock:
                self._pending.setdefault(source, _Pending()).merge(tally, refusals)
                self._recorded += 1
                self._start()
                self._lock.notify_all()
        except Exception:  # a health write must never change the delivery's answer
            log.warning("source health not recorded for %s", source, exc_info=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every outcome recorded so far has been attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._recorded
            self._failed = False  # try again now rather than after the pause
            self._urgent = True
            self._lock.notify_all()
            while self._attempted < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="source-health", daemon=True)
            self._thread.start()
            atexit.register(self.flush, 2.0)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending or self._failed:
                    if self._failed:
                        self._lock.wait(self._retry_pause)
                        self._failed = False
                    else:
                        self._lock.wait()
                gathered = time.monotonic() + self._linger
                while not self._urgent and (left := gathered - time.monotonic()) > 0:
                    self._lock.wait(left)
                self._urgent = False
                batch, self._pending = self._pending, {}
                seen = self._recorded
            failed: dict[str, _Pending] = {}
            for source, pending in batch.items():
                try:
                    self._write(source, pending.tally, pending.refusals)
                except Exception as error:
                    # No value of any delivery is in the error: it names the storage trouble.
                    log.warning("source health write failed for %s: %s", source, error)
                    failed[source] = pending
            with self._lock:
                for source, pending in failed.items():
                    self._pending.setdefault(source, _Pending()).merge(
                        pending.tally, pending.refusals
                    )
                self._failed = bool(failed)
                self._attempted = max(self._attempted, seen)
                self._lock.notify_all()
