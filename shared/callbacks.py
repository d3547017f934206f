"""Signed callbacks back to the scheduling system: what is owed, when, and what it says. Pure.

The durable outbox is the applied row itself. The reconciler decides here, from the state
before and after a change, which callback (if any) the change owes, and writes it into the
same ETag-guarded commit as the change: a callback exists exactly when its change does. The
queue message `appointment-callbacks` that drives delivery is sent *before* that commit, so a
process that dies right after committing has already enqueued it; a message whose commit
never happened finds no matching callback on the record and is dropped after a grace period.

Delivery progress (attempts, the last status code) lives in a row of its own, so that the
delivery function never contends with the reconciler for the applied row.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from shared.documents import utc_text

if TYPE_CHECKING:
    from shared.records import AppliedState

CallbackType = Literal[
    "appointment.scheduled",
    "appointment.updated",
    "appointment.cancelled",
    "appointment.failed",
    "appointment.attendance",
]
CallbackStatus = Literal["pending", "delivered", "failed"]
CALLBACK_TYPES: Final = (
    "appointment.scheduled",
    "appointment.updated",
    "appointment.cancelled",
    "appointment.failed",
    "appointment.attendance",
)
# SPEC: the delays between attempts, in seconds (seven retries over about 27 hours).
DEFAULT_RETRY_SCHEDULE: Final = (5, 300, 1800, 7200, 18000, 36000, 36000)
# Azure Queue hides a message for at most 7 days: no single delay may be longer.
MAX_RETRY_DELAY_SECONDS: Final = 7 * 24 * 3600
# How long a message may wait for the commit it was sent ahead of (the reconciler's lease is
# 60 s, so a commit that has not landed by then never will).
COMMIT_GRACE_SECONDS: Final = 120.0
# How soon to look again for a commit that has not landed yet.
COMMIT_POLL_SECONDS: Final = 1


@dataclass(frozen=True)
class CallbackTarget:
    """Where one source's callbacks go and the `whsec_` secrets that sign them."""

    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class OwedCallback:
    """The latest callback an appointment owes, stored in its applied row."""

    id: str  # webhook-id: the same on every attempt of this callback
    type: CallbackType
    sequence: int  # grows with every callback of the appointment; a higher one supersedes
    created: float  # unix seconds of the change: the body's `timestamp`

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "sequence": self.sequence,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> OwedCallback:
        kind = str(value["type"])
        if kind not in CALLBACK_TYPES:
            raise ValueError(f"unknown callback type {kind!r}")
        return cls(str(value["id"]), kind, int(value["sequence"]), float(value["created"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Progress:
    """How delivery of one callback went so far (its own table row)."""

    id: str  # the OwedCallback.id it describes
    status: CallbackStatus = "pending"
    attempts: int = 0
    last_attempt: float | None = None
    last_status_code: int | None = None


@dataclass(frozen=True)
class CallbackMessage:
    """The `appointment-callbacks` queue message: which callback of which appointment."""

    appointment_id: str
    callback_id: str
    sequence: int
    enqueued: float  # unix seconds when first sent, for the commit grace period

    def to_message(self) -> str:
        return json.dumps(
            {
                "appointmentId": self.appointment_id,
                "callbackId": self.callback_id,
                "sequence": self.sequence,
                "enqueued": self.enqueued,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_message(cls, text: str) -> CallbackMessage:
        """Raises ValueError for anything that is not a message of this app."""
        try:
            value = json.loads(text)
            return cls(
                str(value["appointmentId"]),
                str(value["callbackId"]),
                int(value["sequence"]),
                float(value["enqueued"]),
            )
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError("not a callback message") from error


def new_callback_id() -> str:
    """A webhook-id: unique per callback, stable across its retries."""
    return f"msg_{uuid.uuid4().hex}"


def _is_live(state: AppliedState) -> bool:
    """Whether the caller last heard of a meeting that exists (scheduled, or failed after)."""
    if state.status == "scheduled":
        return True
    return (
        state.status == "failed"
        and state.document is not None
        and not state.document.is_cancelled
        and state.meeting_id is not None
    )


def callback_type(before: AppliedState, after: AppliedState) -> CallbackType | None:
    """The callback a committed change owes: one for every newer version that was applied or
    failed; none for a stale or duplicate delivery, a retry note or the tidying of leftovers.

    The type says where the version left the appointment: `scheduled` when a meeting exists
    again after none (the first booking, a re-booking after a cancellation), `updated` for any
    later applied version (time, subject, organizer, links or only its clients changed: the
    record says what it is now), `cancelled`, `failed`. So the last callback a receiver got
    always carries the record as it finally is.
    """
    if after.status == "failed":
        if (
            before.status != "failed"
            or before.failed_version != after.failed_version
            or before.error != after.error
        ):
            return "appointment.failed"
        return None
    if after.version is None or after.version == before.version:
        return None  # no newer version applied (leftovers tidied, a lease, a retry note)
    if after.status == "cancelled":
        return "appointment.cancelled"
    if after.status == "scheduled":
        return "appointment.updated" if _is_live(before) else "appointment.scheduled"
    return None


def owe(
    state: AppliedState, kind: CallbackType, now: float, callback_id: str | None = None
) -> AppliedState:
    """`state` with a new latest callback, superseding any earlier one not yet delivered."""
    sequence = state.callback.sequence + 1 if state.callback else 1
    owed = OwedCallback(callback_id or new_callback_id(), kind, sequence, now)
    return replace(state, callback=owed)


def message_for(appointment_id: str, owed: OwedCallback) -> CallbackMessage:
    return CallbackMessage(appointment_id, owed.id, owed.sequence, owed.created)


def progress_for(owed: OwedCallback, stored: Progress | None) -> Progress:
    """The stored progress when it describes this callback, else a fresh one."""
    if stored is not None and stored.id == owed.id:
        return stored
    return Progress(owed.id)


def view(owed: OwedCallback | None, stored: Progress | None) -> dict[str, Any] | None:
    """The record's `callback`: the latest callback and how its delivery went."""
    if owed is None:
        return None
    progress = progress_for(owed, stored)
    return {
        "type": owed.type,
        "status": progress.status,
        "attempts": progress.attempts,
        "lastAttemptDateTime": (
            utc_text(progress.last_attempt) if progress.last_attempt is not None else None
        ),
        "lastStatusCode": progress.last_status_code,
    }


def body(owed: OwedCallback, record: dict[str, Any]) -> bytes:
    """The request body: `{"type", "timestamp", "data"}`, data the status record as GET has it."""
    payload = {"type": owed.type, "timestamp": utc_text(owed.created), "data": record}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def next_delay(schedule: tuple[int, ...], attempts: int) -> int | None:
    """Seconds until the next attempt after `attempts` failed ones; None: dead-letter it."""
    if attempts <= len(schedule):
        return schedule[attempts - 1]
    return None


def parse_schedule(raw: str) -> tuple[int, ...]:
    """CALLBACK_RETRY_SCHEDULE: comma-separated whole seconds, each 1 … 7 days."""
    text = raw.strip()
    if not text:
        return DEFAULT_RETRY_SCHEDULE
    delays: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ValueError("each delay must be a whole number of seconds") from None
        if not 1 <= value <= MAX_RETRY_DELAY_SECONDS:
            raise ValueError("each delay must be 1 to 604800 seconds")
        delays.append(value)
    return tuple(delays)
