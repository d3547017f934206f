"""The appointment's stored state and the status record callers read back. Pure.

Two things are kept per appointment: the newest document received (desired state, written by
the intake) and what has been applied in Graph (written by the reconciler). Keeping them apart
means the intake never contends with the reconciler for the same row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from shared.attendance import Attendance
from shared.callbacks import OwedCallback, Progress
from shared.callbacks import view as callback_view
from shared.documents import AppointmentDocument, utc_text
from shared.sources.base import DEFAULT_SOURCE

Status = Literal["pending", "scheduled", "cancelled", "failed"]


@dataclass(frozen=True)
class ErrorInfo:
    """What Graph refused, in words a user can act on."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class RetryInfo:
    """A version waiting out transient Graph trouble, within the retry window.

    `since` (the first failed attempt) fixes the window's end; every later attempt of the same
    version counts against it, hand-backs for Retry-After included.
    """

    version: str  # documents.version_key of the version that is waiting
    since: float  # unix seconds
    attempts: int
    last_error: str  # the service and status, e.g. "Microsoft Graph 503": never client data
    next_attempt: float  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "since": utc_text(self.since),
            "attempts": self.attempts,
            "lastError": self.last_error,
            "nextAttemptDateTime": utc_text(self.next_attempt),
        }


@dataclass(frozen=True)
class DesiredVersion:
    """The newest document received for an appointment."""

    document: AppointmentDocument
    version: str  # documents.version_key of lastModifiedDateTime
    correlation_id: str = ""


@dataclass(frozen=True)
class Intent:
    """A meeting about to be created (organizer, generation), recorded before the call.

    If the attempt dies after Graph created it, the next attempt finds the intent and recovers
    the meeting through createOrGet's idempotency, then adopts or deletes it: never an orphan.
    """

    organizer_id: str
    generation: int


@dataclass(frozen=True)
class AppliedState:
    """What Graph holds for the appointment, and the last document applied to it.

    The meeting fields always describe the meeting that exists in Graph (so nothing is ever
    orphaned, even when a later step of a version failed); `document` is the last version
    applied in full.
    """

    status: Status = "pending"
    version: str | None = None
    document: AppointmentDocument | None = None
    organizer_id: str | None = None
    meeting_id: str | None = None
    join_web_url: str | None = None
    client_join_web_url: str | None = None
    external_meeting_id: str | None = None
    # The next unused generation: a new meeting's externalId is derived from it, and it only
    # grows, so an externalId is never reused after its meeting was deleted.
    generation: int = 0
    warnings: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    failed_version: str | None = None
    intents: tuple[Intent, ...] = ()
    # "<kind>@<version>" of the SMS already sent for a version not yet applied in full, so a
    # retry of that version does not text the clients twice.
    notified: str | None = None
    # Set while a version waits out transient failures; gone once it is applied or failed.
    retry: RetryInfo | None = None
    # The latest callback owed to the sender (SPEC "signed callbacks"), written in the same
    # commit as the change that owes it: the durable outbox (see shared/callbacks.py).
    callback: OwedCallback | None = None
    # Who joined the meeting (SPEC "After the appointment: attendance"), written by the
    # attendance check (shared/attendance_check.py) for the current meeting and end; the
    # reconciler clears it when a version moves the meeting or its end (a new check follows).
    attendance: Attendance | None = None
    # Versions finished so far (applied or failed): the next version's invite SEQUENCE is this
    # + 1, so it grows with every version, and a retry of one version keeps its number.
    finished_versions: int = 0
    # A lease (owner, expiry as unix seconds) keeps one worker at a time on an appointment.
    lease_owner: str | None = None
    lease_until: float = 0.0
    # The list index rows (PartitionKey, RowKey) this applied row's last commit points at
    # (shared/listing.py): the next commit writes only what changes and deletes what no longer
    # applies. Carried through `replace`, so every writer keeps it without knowing of it.
    indexed: tuple[tuple[str, str], ...] = ()

    def without_meeting(self) -> AppliedState:
        """The state once its meeting has been deleted (its organizer goes with it)."""
        return replace(
            self,
            organizer_id=None,
            meeting_id=None,
            join_web_url=None,
            client_join_web_url=None,
            external_meeting_id=None,
        )


@dataclass(frozen=True)
class AttendanceClaim:
    """One attendance check in progress (its own small row, never the applied one).

    Taken with an ETag-guarded write before the Graph calls, so two deliveries of a check
    message (the queue delivers at least once) never read Graph for one meeting at once.
    """

    owner: str
    until: float  # unix seconds; a claim past this is free to take


@dataclass(frozen=True)
class StoredAppointment:
    desired: DesiredVersion | None
    applied: AppliedState | None
    applied_etag: str | None = None
    callback_progress: Progress | None = None
    callback_etag: str | None = None
    attendance_claim: AttendanceClaim | None = None
    attendance_claim_etag: str | None = None
    # Erased on request (DELETE /api/appointments/{id}): the desired row is a tombstone.
    erased: bool = False


def _clients(document: AppointmentDocument) -> list[dict[str, Any]]:
    return [c.model_dump(by_alias=True, exclude_none=True) for c in document.appointment_clients]


def status_view(stored: StoredAppointment) -> dict[str, Any]:
    """The status record: the retired virtualAppointment shape plus what a caller needs."""
    applied = stored.applied or AppliedState()
    desired = stored.desired
    shown = applied.document or (desired.document if desired else None)
    pending = (
        desired is not None
        and (applied.version is None or desired.version > applied.version)
        and desired.version != applied.failed_version
    )
    view: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.virtualAppointment",
        "id": applied.meeting_id,
        "externalAppointmentId": shown.external_appointment_id if shown else None,
        "externalAppointmentUrl": shown.external_appointment_url if shown else None,
        "appointmentClients": _clients(shown) if shown else [],
        "appointmentClientJoinWebUrl": applied.client_join_web_url,
        "settings": shown.settings.model_dump(by_alias=True) if shown else None,
        "status": applied.status,
        "organizer": shown.organizer if shown else None,
        "organizerId": applied.organizer_id,
        "joinWebUrl": applied.join_web_url,
        "subject": shown.effective_subject if shown else None,
        "startDateTime": shown.start_date_time if shown else None,
        "endDateTime": shown.end_date_time if shown else None,
        "timeZone": shown.effective_time_zone if shown else None,
        "lastModifiedDateTime": (
            applied.document.last_modified_date_time if applied.document else None
        ),
        "pending": pending,
        "warnings": [*(shown.warnings if shown else []), *applied.warnings],
        "source": (shown.source or DEFAULT_SOURCE) if shown else None,
        "sourceAppointmentId": (
            (shown.source_appointment_id or shown.external_appointment_id) if shown else None
        ),
    }
    if applied.error is not None:
        view["error"] = applied.error.to_json()
    if applied.attendance is not None:
        view["attendance"] = applied.attendance.to_json()
    callback = callback_view(applied.callback, stored.callback_progress)
    if callback is not None:
        view["callback"] = callback
    if pending and desired and applied.retry and desired.version == applied.retry.version:
        view["retry"] = applied.retry.to_json()
    return view
