"""Adapters for Azure Storage: the `appointments` table and the `appointment-events` queue.

Every call is bounded (short timeouts, few retries) so a dead account turns into a quick 503
at the intake rather than a hung request. Queue and table are created on first use when
missing, so a fresh Azurite or storage account needs no set-up step.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient

from shared import listing, retention
from shared import parts as assembly
from shared.attendance import Attendance
from shared.callbacks import OwedCallback, Progress
from shared.directory import Entry
from shared.documents import (
    AppointmentDocument,
    FieldError,
    parse_document,
    parse_rfc3339,
    version_key,
)
from shared.health import RECENT, Refusal, Tally, refusal_key
from shared.records import (
    AppliedState,
    AttendanceClaim,
    DesiredVersion,
    ErrorInfo,
    Intent,
    RetryInfo,
    StoredAppointment,
)
from shared.settings import (
    ATTENDANCE_POISON_QUEUE_NAME,
    ATTENDANCE_QUEUE_NAME,
    CALLBACK_POISON_QUEUE_NAME,
    CALLBACK_QUEUE_NAME,
    DIRECTORY_TABLE_NAME,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    TABLE_NAME,
    StorageSettings,
)
from shared.sources.base import Part

log = logging.getLogger(__name__)
T = TypeVar("T")

DESIRED = "desired"
APPLIED = "applied"
CALLBACK = "callback"
ATTENDANCE_CLAIM = "attendance"
ORGANIZER = "organizer"
# Retention (shared/retention_run.py): its resume cursor, and the records to look at again
# (RowKey `~{base64url id}`: never `desired`/`applied`, whatever the id).
RETENTION_CURSOR = ("retention~cursor", "cursor")
RETENTION_RECHECK = "retention~recheck"
# Delivery ids (HL7 MSH-10) kept per appointment to recognise a repeat: enough for any
# interface engine's resend window, small enough for one table property.
KEPT_DELIVERY_IDS = 32
# How long erasure's walk of a poison queue hides each message it looks at (EventQueue
# .forget_poisoned): longer than the walk, short enough that an operator barely notices.
POISON_SCAN_HIDE_SECONDS = 30
# Bounded so that a storage outage is a fast 503 (SPEC: within 10 s). One call at its worst:
# two attempts of (connect 2 s + read 2.5 s) with a 0.2 s pause between them, about 9.2 s.
CONNECT_SECONDS = 2.0
READ_SECONDS = 2.5
RETRY_PAUSE_SECONDS = 0.2
CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": CONNECT_SECONDS,
    "read_timeout": READ_SECONDS,
    "retry_total": 1,
    "retry_backoff_factor": RETRY_PAUSE_SECONDS,
    "retry_backoff_max": RETRY_PAUSE_SECONDS,
}


def _client_options(kind: type[QueueServiceClient | TableServiceClient]) -> dict[str, Any]:
    """The queue SDK ignores azure-core's backoff options and, unless given a policy of its
    own, pauses 15 s (±3) before its retry: a queue hiccup would hold a webhook that long."""
    if kind is not QueueServiceClient:
        return CLIENT_OPTIONS
    pause = LinearRetry(
        backoff=RETRY_PAUSE_SECONDS,  # type: ignore[arg-type]  # typed int; a float works
        random_jitter_range=0,
        retry_total=1,
    )
    return CLIENT_OPTIONS | {"retry_policy": pause}


class StorageUnavailable(Exception):
    """Storage could not be reached, timed out, throttled or failed: retry later."""


class ConcurrencyConflict(Exception):
    """Another writer changed the entity since it was read (ETag mismatch)."""


class SaveOutcome(Enum):
    CREATED = "created"
    NEWER = "newer"
    DUPLICATE = "duplicate"
    STALE = "stale"


def _credential(settings: StorageSettings) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if (settings.credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.client_id)
    return DefaultAzureCredential()


S = TypeVar("S", QueueServiceClient, TableServiceClient)


def _service(kind: type[S], settings: StorageSettings, service_uri: str | None) -> S:
    """A service client from the connection string, or from its URI and an identity."""
    options = _client_options(kind)
    if settings.connection_string:
        return kind.from_connection_string(settings.connection_string, **options)
    if service_uri:
        return kind(service_uri, credential=_credential(settings), **options)
    raise StorageUnavailable("AzureWebJobsStorage is not configured")


class StorageRejected(Exception):
    """Storage refused the call for good (an HTTP 4xx such as PropertyValueTooLarge): the same
    call gets the same answer, so telling the caller to retry would have it retry forever."""

    def __init__(self, error_code: str) -> None:
        super().__init__(error_code)
        self.error_code = error_code


# 4xx answers a retry can cure: a timeout, throttling, and auth or identity trouble (a rotated
# key, a role assignment still propagating) that an operator fixes without the caller.
_RETRYABLE_4XX = frozenset({401, 403, 408, 429})


def _rejection(error: AzureError) -> StorageRejected | None:
    """The permanent refusal `error` is, or None when storage may well take the call later."""
    if not isinstance(error, HttpResponseError):
        return None  # no answer at all: connection trouble or a timeout
    status = error.status_code
    if status is None or not 400 <= status < 500 or status in _RETRYABLE_4XX:
        return None
    # The queue SDK parses the code; the table SDK often leaves it to the header.
    headers = getattr(error.response, "headers", None) or {}
    code = headers.get("x-ms-error-code") or getattr(error, "error_code", None)
    code = str(getattr(code, "value", code) or "")  # the SDKs' error-code enums
    # It is shown to the sender: only a plain token, never text the service echoed back.
    safe = code.isascii() and code.isalnum() and len(code) <= 64
    return StorageRejected(code if safe else f"HTTP {status}")


def _guard(call: Callable[[], T]) -> T:
    """Run a storage call; what may pass with time is StorageUnavailable, a refusal for good
    StorageRejected. ETag, exists and not-found answers pass through for the caller to judge."""
    try:
        return call()
    except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
        raise
    except AzureError as error:
        rejected = _rejection(error)
        if rejected is not None:
            raise rejected from error
        raise StorageUnavailable(type(error).__name__) from error


def _is_missing(error: ResourceNotFoundError, code: str) -> bool:
    return getattr(error, "error_code", None) == code or code in str(error)


def _table_call(table: TableClient, call: Callable[[], T]) -> T:
    """Run a table call, creating the table once if it is missing.

    A transaction (a directory save) on a missing table fails as a whole with a TableNotFound
    refusal rather than a not-found error: the table is created for it too, or the first
    PUT /api/organizers of a new deployment would answer 500.
    """
    try:
        return _guard(call)
    except ResourceNotFoundError as error:
        if not _is_missing(error, "TableNotFound"):
            raise
    except StorageRejected as error:
        if error.error_code != "TableNotFound":
            raise
    with contextlib.suppress(ResourceExistsError):
        _guard(table.create_table)
    return _guard(call)


class EventQueue:
    """A queue and its poison queue as plain-text JSON messages: `appointment-events` for the
    reconciler, `appointment-callbacks` for callback delivery."""

    def __init__(
        self, queue: QueueClient, poison: QueueClient, *, time_to_live: int | None = None
    ) -> None:
        """`time_to_live` (seconds; -1: never) for the queue's messages; None: Azure's
        default of 7 days."""
        self._queue = queue
        self._poison = poison
        self._time_to_live = time_to_live

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> EventQueue:
        service = _service(QueueServiceClient, settings, settings.queue_service_uri)
        return cls(
            service.get_queue_client(QUEUE_NAME), service.get_queue_client(POISON_QUEUE_NAME)
        )

    @staticmethod
    def _send(
        queue: QueueClient,
        text: str,
        visibility_timeout: int | None,
        time_to_live: int | None = None,
    ) -> None:
        def send() -> None:
            queue.send_message(
                text, visibility_timeout=visibility_timeout, time_to_live=time_to_live
            )

        try:
            _guard(send)
        except ResourceNotFoundError as error:
            if not _is_missing(error, "QueueNotFound"):
                raise StorageUnavailable("queue call failed") from error
            with contextlib.suppress(ResourceExistsError):
                _guard(queue.create_queue)
            _guard(send)

    @classmethod
    def callbacks_from_settings(cls, settings: StorageSettings) -> EventQueue:
        service = _service(QueueServiceClient, settings, settings.queue_service_uri)
        return cls(
            service.get_queue_client(CALLBACK_QUEUE_NAME),
            service.get_queue_client(CALLBACK_POISON_QUEUE_NAME),
        )

    @classmethod
    def attendance_from_settings(cls, settings: StorageSettings) -> EventQueue:
        """`appointment-attendance`: its messages never expire, since one waits (re-hiding
        itself at most 7 days at a time) until its appointment has ended, however far out.
        Azure's default time-to-live of 7 days would drop a message hidden for 7 days."""
        service = _service(QueueServiceClient, settings, settings.queue_service_uri)
        return cls(
            service.get_queue_client(ATTENDANCE_QUEUE_NAME),
            service.get_queue_client(ATTENDANCE_POISON_QUEUE_NAME),
            time_to_live=-1,
        )

    def send(self, text: str, *, visibility_timeout: int | None = None) -> None:
        """Enqueue one message; it is durable once this returns."""
        self._send(self._queue, text, visibility_timeout, self._time_to_live)

    def send_to_poison(self, text: str) -> None:
        """Park a message the reconciler must not retry, where an operator will see it."""
        self._send(self._poison, text, None)

    def forget_poisoned(
        self, belongs: Callable[[str, datetime | None], bool], *, limit: int = 5000
    ) -> int:
        """Delete the parked messages `belongs(text, parked at)` picks; how many it deleted.

        A queue has no query: this receives the poison queue in pages, each message hidden
        for POISON_SCAN_HIDE_SECONDS so the walk does not meet it twice, and deletes the ones
        that belong; the rest reappear unchanged (apart from their dequeue count, which nothing
        reads there). At most `limit` messages are examined, so a flooded poison queue costs
        a bounded call. Nothing is lost when it fails midway: it is only ever a delete.
        """

        def scan() -> int:
            deleted = 0
            pages = self._poison.receive_messages(
                messages_per_page=32, visibility_timeout=POISON_SCAN_HIDE_SECONDS
            )
            for seen, message in enumerate(pages, start=1):
                if belongs(str(message.content), message.inserted_on):
                    with contextlib.suppress(ResourceNotFoundError):  # gone already
                        self._poison.delete_message(message)
                    deleted += 1
                if seen >= limit:
                    break
            return deleted

        try:
            return _guard(scan)
        except ResourceNotFoundError:
            return 0  # no poison queue yet: nothing was ever parked


class CombinedInvalid(Exception):
    """The parts received so far combine into a document that breaks the contract."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("combined document is invalid")
        self.errors = errors


@dataclass(frozen=True)
class Saved:
    """What a delivery did to the desired row, and the document now stored for it."""

    outcome: SaveOutcome
    document: AppointmentDocument


def _entity_to_desired(entity: dict[str, Any]) -> DesiredVersion | None:
    if entity.get("Erased"):
        return None  # a tombstone: its versions stay, its document is gone
    parsed = parse_document(json.loads(entity["Document"]))
    if isinstance(parsed, list):
        log.error("stored document failed validation; ignoring it")
        return None
    return DesiredVersion(parsed, entity["Version"], entity.get("CorrelationId", ""))


def _document_or_none(text: str | None) -> AppointmentDocument | None:
    if not text:
        return None
    parsed = parse_document(json.loads(text))
    return None if isinstance(parsed, list) else parsed


def _entity_to_applied(entity: dict[str, Any]) -> AppliedState:
    error = None
    if entity.get("ErrorCode"):
        error = ErrorInfo(entity["ErrorCode"], entity.get("ErrorMessage", ""))
    return AppliedState(
        status=entity.get("Status", "pending"),
        version=entity.get("Version") or None,
        document=_document_or_none(entity.get("Document")),
        organizer_id=entity.get("OrganizerId") or None,
        meeting_id=entity.get("MeetingId") or None,
        join_web_url=entity.get("JoinWebUrl") or None,
        client_join_web_url=entity.get("ClientJoinWebUrl") or None,
        external_meeting_id=entity.get("ExternalMeetingId") or None,
        generation=int(entity.get("Generation", 0)),
        warnings=tuple(json.loads(entity.get("Warnings") or "[]")),
        error=error,
        failed_version=entity.get("FailedVersion") or None,
        intents=tuple(Intent(o, int(g)) for o, g in json.loads(entity.get("Intents") or "[]")),
        notified=entity.get("Notified") or None,
        retry=_retry_from_json(entity.get("Retry")),
        callback=_callback_from_json(entity.get("Callback")),
        attendance=(
            Attendance.from_json(json.loads(entity["Attendance"]))
            if entity.get("Attendance")
            else None
        ),
        finished_versions=int(entity.get("FinishedVersions", 0)),
        lease_owner=entity.get("LeaseOwner") or None,
        lease_until=float(entity.get("LeaseUntil", 0.0)),
        indexed=tuple((str(pk), str(rk)) for pk, rk in json.loads(entity.get("Indexed") or "[]")),
    )


def _retry_from_json(text: str | None) -> RetryInfo | None:
    if not text:
        return None
    value = json.loads(text)
    return RetryInfo(
        str(value["version"]),
        float(value["since"]),
        int(value["attempts"]),
        str(value["lastError"]),
        float(value["nextAttempt"]),
    )


def _callback_from_json(text: str | None) -> OwedCallback | None:
    return OwedCallback.from_json(json.loads(text)) if text else None


def _entity_to_progress(entity: Mapping[str, Any]) -> Progress:
    code = entity.get("LastStatusCode")
    last = entity.get("LastAttempt")
    return Progress(
        id=str(entity["CallbackId"]),
        status=entity.get("Status", "pending"),
        attempts=int(entity.get("Attempts", 0)),
        last_attempt=float(last) if last is not None and last != "" else None,
        last_status_code=int(code) if code is not None and code != "" else None,
    )


def _retry_to_json(retry: RetryInfo | None) -> str:
    if retry is None:
        return ""
    return json.dumps(
        {
            "version": retry.version,
            "since": retry.since,
            "attempts": retry.attempts,
            "lastError": retry.last_error,
            "nextAttempt": retry.next_attempt,
        }
    )


def _applied_to_entity(external_id: str, state: AppliedState) -> dict[str, Any]:
    return {
        "PartitionKey": external_id,
        "RowKey": APPLIED,
        "Status": state.status,
        "Version": state.version or "",
        "Document": json.dumps(state.document.to_json()) if state.document else "",
        "OrganizerId": state.organizer_id or "",
        "MeetingId": state.meeting_id or "",
        "JoinWebUrl": state.join_web_url or "",
        "ClientJoinWebUrl": state.client_join_web_url or "",
        "ExternalMeetingId": state.external_meeting_id or "",
        "Generation": state.generation,
        "Warnings": json.dumps(list(state.warnings)),
        "ErrorCode": state.error.code if state.error else "",
        "ErrorMessage": state.error.message if state.error else "",
        "FailedVersion": state.failed_version or "",
        "Intents": json.dumps([[i.organizer_id, i.generation] for i in state.intents]),
        "Notified": state.notified or "",
        "Retry": _retry_to_json(state.retry),
        "Callback": json.dumps(state.callback.to_json()) if state.callback else "",
        "Attendance": (
            json.dumps(state.attendance.to_json(), ensure_ascii=False) if state.attendance else ""
        ),
        "FinishedVersions": state.finished_versions,
        "LeaseOwner": state.lease_owner or "",
        "LeaseUntil": float(state.lease_until),
        "Indexed": json.dumps([list(key) for key in state.indexed], separators=(",", ":")),
    }


def _recheck_key(external_id: str) -> str:
    encoded = base64.urlsafe_b64encode(external_id.encode("utf-8")).decode("ascii")
    return "~" + encoded.rstrip("=")


def organizer_key(user_principal_name: str) -> str:
    """The cache row's key: hashed, since a guest's UPN holds `#`, which a key cannot."""
    digest = hashlib.sha256(user_principal_name.lower().encode("utf-8")).hexdigest()
    return f"upn:{digest}"


class AppointmentStore:
    """The `appointments` table: desired document, applied state and the organizer cache.

    Per appointment (PartitionKey = externalAppointmentId) the row `desired` holds the newest
    document received and the row `applied` what the reconciler made true in Graph. Organizer
    ids resolved from UPNs live under PartitionKey `upn:<sha256 of the lowercased UPN>`,
    row `organizer`.
    """

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self.index = AppointmentIndex(table, self.load)

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> AppointmentStore:
        service = _service(TableServiceClient, settings, settings.table_service_uri)
        return cls(service.get_table_client(TABLE_NAME))

    def _call(self, call: Callable[[], T]) -> T:
        return _table_call(self._table, call)

    def _get(self, partition: str, row: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any]:
            entity = self._table.get_entity(partition, row)
            return dict(entity) | {"__etag": entity.metadata["etag"]}

        try:
            return self._call(read)
        except ResourceNotFoundError:
            return None

    def save_desired(self, document: AppointmentDocument, correlation_id: str) -> SaveOutcome:
        """Keep the document if it is the newest received; the first of equal versions wins."""
        version = version_key(document.version)
        entity = {
            "PartitionKey": document.external_appointment_id,
            "RowKey": DESIRED,
            "Version": version,
            "Document": json.dumps(document.to_json(), ensure_ascii=False),
            "CorrelationId": correlation_id,
        }
        while True:
            try:
                self._call(lambda: self._table.create_entity(entity))
                return SaveOutcome.CREATED
            except ResourceExistsError:
                pass
            current = self._get(document.external_appointment_id, DESIRED)
            if current is None:
                continue
            if version == current["Version"]:
                return SaveOutcome.DUPLICATE
            if version < current["Version"]:
                return SaveOutcome.STALE
            if current.get("Purged"):
                self.note_recheck(document.external_appointment_id)
            try:
                self._write_over(document.external_appointment_id, entity, current["__etag"])
                return SaveOutcome.NEWER
            except ConcurrencyConflict:
                continue

    def save_delivery(
        self,
        document: AppointmentDocument,
        correlation_id: str,
        *,
        delivery_id: str | None = None,
        source_version: str | None = None,
        part: Part | None = None,
        enqueue: Callable[[AppointmentDocument], None] | None = None,
        probably_new: bool = False,
    ) -> Saved:
        """Keep a delivery that needs what is stored to decide its document.

        - `delivery_id` (HL7 MSH-10): a repeat is a duplicate; a new id with the stored
          source version (equal MSH-7) is applied after it, one microsecond later.
        - `part` (a Calendly invitee): merged with the stored parts; the document is theirs
          combined (shared/parts.py).
        `enqueue` is called with the document about to be written, before each write, so that
        no row is ever written that no message will apply. `probably_new` tries a create
        first, saving a read when the appointment is new (a booking, not a change).
        """
        incoming = version_key(parse_rfc3339(source_version or document.last_modified_date_time))
        current: dict[str, Any] | None = None
        first = probably_new
        while True:
            if not first:
                current = self._get(document.external_appointment_id, DESIRED)
            first = False
            decided = self._decide(document, incoming, delivery_id, part, current)
            if isinstance(decided, Saved):
                return decided
            final, entity = decided
            entity["CorrelationId"] = correlation_id
            if current is not None and current.get("Purged"):
                self.note_recheck(document.external_appointment_id)
            if enqueue is not None:
                enqueue(final)
            etag = None if current is None else current["__etag"]
            try:
                self._write_over(document.external_appointment_id, entity, etag)
            except ConcurrencyConflict:
                continue
            return Saved(SaveOutcome.CREATED if current is None else SaveOutcome.NEWER, final)

    @staticmethod
    def _decide(
        document: AppointmentDocument,
        incoming: str,
        delivery_id: str | None,
        part: Part | None,
        current: dict[str, Any] | None,
    ) -> Saved | tuple[AppointmentDocument, dict[str, Any]]:
        """What to write for a delivery given the stored row, or the Saved answer if nothing."""
        if current is not None and current.get("Erased"):
            # An erased appointment: a delivery of the erased version or an older one changes
            # nothing; a newer one is a new booking, built on nothing that was erased.
            erased_source = current.get("SourceVersion") or current["Version"]
            if incoming <= erased_source:
                return Saved(SaveOutcome.STALE, document)
            current = {"__etag": current["__etag"], "Version": current["Version"]}
        stored_ids: list[str] = json.loads(current.get("DeliveryIds") or "[]") if current else []
        stored_parts = {
            p.key: p
            for p in map(
                assembly.from_json, json.loads(current.get("Parts") or "[]") if current else []
            )
        }
        stored_doc = _entity_to_desired(current) if current else None
        stored_version = current["Version"] if current else None
        stored_source = (current.get("SourceVersion") or stored_version) if current else None

        def unchanged(outcome: SaveOutcome) -> Saved:
            return Saved(outcome, stored_doc.document if stored_doc else document)

        if delivery_id is not None and delivery_id in stored_ids:
            return unchanged(SaveOutcome.DUPLICATE)
        merged = stored_parts
        if part is not None:
            merged = assembly.merge(stored_parts, part)
            if merged == stored_parts:
                return unchanged(SaveOutcome.DUPLICATE)
            version = assembly.next_version(merged.values(), stored_version)
            parsed = parse_document(assembly.combine(merged.values(), version))
            if isinstance(parsed, list):
                raise CombinedInvalid(parsed)
            final, source = parsed, version
        else:
            if stored_source is not None and incoming < stored_source:
                return unchanged(SaveOutcome.STALE)
            if stored_source is not None and incoming == stored_source and delivery_id is None:
                return unchanged(SaveOutcome.DUPLICATE)
            final, source = document, incoming
            if stored_version is not None and version_key(document.version) <= stored_version:
                # Equal source versions, a new delivery: applied in the order received.
                later = version_key(parse_rfc3339(stored_version) + assembly.ONE_TICK)
                final = document.model_copy(update={"last_modified_date_time": later})
        ids = [*stored_ids, delivery_id][-KEPT_DELIVERY_IDS:] if delivery_id else stored_ids
        entity = {
            "PartitionKey": document.external_appointment_id,
            "RowKey": DESIRED,
            "Version": version_key(final.version),
            "SourceVersion": source,
            "Document": json.dumps(final.to_json(), ensure_ascii=False),
            "DeliveryIds": json.dumps(ids),
            "Parts": (
                json.dumps(
                    [assembly.to_json(p) for p in assembly.compact(merged).values()],
                    separators=(",", ":"),
                )
                if part is not None
                else (current.get("Parts", "") if current else "")
            ),
        }
        return final, entity

    def load(self, external_id: str) -> StoredAppointment:
        """Both rows of one appointment in a single partition query."""
        rows: dict[str, dict[str, Any]] = {}

        def query() -> None:
            for entity in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": external_id}
            ):
                rows[entity["RowKey"]] = dict(entity) | {"__etag": entity.metadata["etag"]}

        self._call(query)
        desired = _entity_to_desired(rows[DESIRED]) if DESIRED in rows else None
        applied = rows.get(APPLIED)
        progress = rows.get(CALLBACK)
        claim = rows.get(ATTENDANCE_CLAIM)
        return StoredAppointment(
            erased=bool(rows.get(DESIRED, {}).get("Erased")),
            desired=desired,
            applied=_entity_to_applied(applied) if applied else None,
            applied_etag=applied["__etag"] if applied else None,
            callback_progress=_entity_to_progress(progress) if progress else None,
            callback_etag=progress["__etag"] if progress else None,
            attendance_claim=(
                AttendanceClaim(str(claim.get("Owner", "")), float(claim.get("Until", 0.0)))
                if claim
                else None
            ),
            attendance_claim_etag=claim["__etag"] if claim else None,
        )

    def erase(self, external_id: str, now: float) -> bool:
        """Replace the desired row with a tombstone; False when nothing is stored for the id.

        The tombstone keeps only versions and delivery ids (no client data), so a late delivery
        of the erased version or an older one is stale and changes nothing, while a newer one is
        a new booking. Idempotent: erasing a tombstone again writes the same tombstone.
        """
        while True:
            stored = self.load(external_id)
            desired_row = self._get(external_id, DESIRED)
            applied = stored.applied
            versions = [
                v
                for v in (
                    desired_row["Version"] if desired_row else None,
                    applied.version if applied else None,
                    applied.failed_version if applied else None,
                )
                if v
            ]
            if not versions:
                return False
            entity = {
                "PartitionKey": external_id,
                "RowKey": DESIRED,
                "Version": max(versions),
                "SourceVersion": (desired_row or {}).get("SourceVersion") or max(versions),
                "DeliveryIds": (desired_row or {}).get("DeliveryIds") or "[]",
                "Document": "",
                "Parts": "",
                "Erased": now,
            }
            etag = None if desired_row is None else desired_row["__etag"]
            try:
                self._write_over(external_id, entity, etag)
            except ConcurrencyConflict:
                continue
            return True

    def save_attendance_claim(
        self, external_id: str, claim: AttendanceClaim, etag: str | None
    ) -> str:
        """Take (or release, `until` 0) the appointment's attendance claim over the row as it
        was read (`etag`; None: there was none). ConcurrencyConflict when another worker wrote
        it first: that worker holds the check. Its own row, so a check never contends with the
        reconciler for the applied row until it writes its result."""
        entity: dict[str, Any] = {
            "PartitionKey": external_id,
            "RowKey": ATTENDANCE_CLAIM,
            "Owner": claim.owner,
            "Until": float(claim.until),
        }
        return self._write_over(external_id, entity, etag)

    def forget_side_rows(self, external_id: str) -> None:
        """Delete the callback progress, attendance claim and retention recheck rows
        (erasure): gone once this returns. None holds client data; erasure leaves nothing of
        the appointment but its tombstone and the scrubbed applied row."""
        for row_key in (CALLBACK, ATTENDANCE_CLAIM):
            with contextlib.suppress(ResourceNotFoundError):
                self._call(lambda: self._table.delete_entity(external_id, row_key))  # noqa: B023
        self.forget_recheck(external_id)

    def purge_desired(
        self, external_id: str, version: str, values: Sequence[str], now: float
    ) -> bool | None:
        """Pseudonymize the stored document (and parts) of `version` (retention).

        True: written; False: nothing to change (a tombstone, no row, or already pseudonymized);
        None: the row is not `version` any more, or another writer got there first: load the
        record again and decide again. Written over the row as read (ETag), with a `Purged`
        marker: a newer delivery replacing such a row notes the record for a recheck.
        """
        row = self._get(external_id, DESIRED)
        if row is None or row.get("Erased"):
            return False
        if row["Version"] != version:
            return None
        stored_parts = [assembly.from_json(p) for p in json.loads(row.get("Parts") or "[]")]
        desired = _entity_to_desired(row)
        everything = tuple(
            dict.fromkeys(
                (
                    *values,
                    *retention.private_values([desired.document] if desired else [], stored_parts),
                )
            )
        )
        entity = {k: v for k, v in row.items() if not k.startswith("__")}
        if desired is not None:
            document = retention.pseudonymize_document(desired.document, everything)
            entity["Document"] = json.dumps(document.to_json(), ensure_ascii=False)
        if stored_parts:
            parts = retention.pseudonymize_parts(stored_parts, everything)
            entity["Parts"] = json.dumps(
                [assembly.to_json(p) for p in parts], separators=(",", ":")
            )
        if entity.get("Document") == row.get("Document") and entity.get("Parts") == row.get(
            "Parts"
        ):
            return False
        entity["Purged"] = float(now)
        etag = row["__etag"]
        try:
            self._write_over(external_id, entity, etag)
        except ConcurrencyConflict:
            return None
        return True

    def note_recheck(self, external_id: str) -> None:
        """Have the next retention run look at this record again (idempotent)."""
        entity = {
            "PartitionKey": RETENTION_RECHECK,
            "RowKey": _recheck_key(external_id),
            "IndexOf": external_id,
        }
        self._call(lambda: self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))

    def rechecks(self, limit: int) -> list[str]:
        """Up to `limit` records noted for a retention recheck, in id order."""

        def query() -> list[str]:
            rows = self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": RETENTION_RECHECK}, select=["IndexOf"]
            )
            return [str(row["IndexOf"]) for row in itertools.islice(rows, limit)]

        return self._call(query)

    def forget_recheck(self, external_id: str) -> None:
        key = _recheck_key(external_id)
        with contextlib.suppress(ResourceNotFoundError):
            self._call(lambda: self._table.delete_entity(RETENTION_RECHECK, key))

    def retention_cursor(self) -> dict[str, str]:
        """Where the last retention run stopped (empty: it never ran)."""
        row = self._get(*RETENTION_CURSOR)
        if row is None:
            return {}
        return {k: str(v) for k, v in row.items() if k in ("Main", "Cancelled") and v}

    def forget_retention_cursor(self) -> None:
        """The next retention run walks the whole index again (idempotent)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._call(lambda: self._table.delete_entity(*RETENTION_CURSOR))

    def save_retention_cursor(self, cursor: Mapping[str, str]) -> None:
        partition, row = RETENTION_CURSOR
        entity = {"PartitionKey": partition, "RowKey": row, **cursor}
        self._call(lambda: self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))

    def save_callback_progress(
        self, external_id: str, progress: Progress, etag: str | None
    ) -> None:
        """How delivery of the latest callback went: its own row, never the applied one, so
        the delivery function and the reconciler never conflict.

        Written only over the row as it was read (`etag`; None: there was none), so an attempt
        that was overtaken by a newer callback's delivery cannot overwrite that one's progress:
        ConcurrencyConflict, and the caller looks again.
        """
        entity: dict[str, Any] = {
            "PartitionKey": external_id,
            "RowKey": CALLBACK,
            "CallbackId": progress.id,
            "Status": progress.status,
            "Attempts": progress.attempts,
            "LastAttempt": progress.last_attempt if progress.last_attempt is not None else "",
            "LastStatusCode": (
                progress.last_status_code if progress.last_status_code is not None else ""
            ),
        }
        self._write_over(external_id, entity, etag)

    def commit_applied(
        self,
        external_id: str,
        state: AppliedState,
        etag: str | None,
        *,
        shown: AppointmentDocument | None = None,
    ) -> str:
        """Write the applied state if nobody else did since `etag` (None: it must not exist).

        Keeps the list index in line (shared/listing.py): index rows the new state implies and
        the old did not are written first (intent first: a crash leaves a stale row, which
        reads skip, never a record missing from the list), the commit records them in the
        row, and rows that no longer apply are deleted after it, best effort. `shown` is the
        desired document, which the record shows while nothing is applied. A commit that holds
        a lease is a step of one reconciliation and leaves the index alone; the commit that
        releases it brings the index in line. Returns the new ETag, so a lease taken with one
        commit can be released by the next.
        """
        before = frozenset(state.indexed)
        after = before
        if not state.lease_owner:
            facts = listing.facts_of(external_id, state, shown)
            # No document to show (an erased record): listed nowhere, so its rows go.
            after = listing.rows_for(facts) if facts is not None else frozenset()
        self.index.put(after - before, external_id)
        if after != before:
            state = replace(state, indexed=tuple(sorted(after)))
        written = self._write_over(external_id, _applied_to_entity(external_id, state), etag)
        self.index.drop(before - after)
        return written

    def _write_over(
        self,
        external_id: str,
        entity: dict[str, Any],
        etag: str | None,
        mode: UpdateMode = UpdateMode.REPLACE,
    ) -> str:
        """Create `entity` (etag None) or replace it (or merge it into it) as it was read; its
        new ETag.

        ConcurrencyConflict when another writer got there first.
        """
        try:
            if etag is None:
                written = self._call(lambda: self._table.create_entity(entity))
            else:
                written = self._call(
                    lambda: self._table.update_entity(
                        entity,
                        mode=mode,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
            raise ConcurrencyConflict(external_id) from error
        return str(written["etag"])

    def page(self, wanted: listing.Filter, after: str | None, limit: int) -> Page:
        """One page of the records `wanted` selects, in startDateTime order (see
        AppointmentIndex.page)."""
        return self.index.page(wanted, after, limit)

    def reindex(self) -> int:
        """Index every applied row (those written before the index existed have none).

        A one-off scan of the table (devtools `reindex`); returns how many records it indexed.
        Rows it finds already indexed are written again, which changes nothing. Rows it adds
        may lie behind retention's cursor (records that started long ago), so the cursor is
        forgotten: the next retention run walks the index from its start.
        """

        def scan() -> list[dict[str, Any]]:
            rows = self._table.query_entities("RowKey eq @rk", parameters={"rk": APPLIED})
            return [dict(row) | {"__etag": row.metadata["etag"]} for row in rows]

        count = 0
        for row in self._call(scan):
            external_id = str(row["PartitionKey"])
            state = _entity_to_applied(row)
            shown = None
            if state.document is None:
                desired = self._get(external_id, DESIRED)
                shown = _entity_to_desired(desired).document if desired else None  # type: ignore[union-attr]
            facts = listing.facts_of(external_id, state, shown)
            if facts is None:
                continue
            keys = listing.rows_for(facts)
            self.index.put_many([(key, external_id) for key in keys])
            patch = {
                "PartitionKey": external_id,
                "RowKey": APPLIED,
                "Indexed": json.dumps([list(k) for k in sorted(keys | set(state.indexed))]),
            }
            # A commit since the scan wrote its own rows: nothing to add to it.
            with contextlib.suppress(ConcurrencyConflict):
                self._write_over(external_id, patch, row["__etag"], UpdateMode.MERGE)
            count += 1
        self.forget_retention_cursor()
        return count

    def cached_organizer_id(self, user_principal_name: str) -> str | None:
        entity = self._get(organizer_key(user_principal_name), ORGANIZER)
        return None if entity is None else str(entity["ObjectId"])

    def cache_organizer_id(self, user_principal_name: str, object_id: str) -> None:
        entity = {
            "PartitionKey": organizer_key(user_principal_name),
            "RowKey": ORGANIZER,
            "ObjectId": object_id,
        }
        self._call(lambda: self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))


# Index reads load records and index writes go to several partitions: a few at a time, so a
# page of 100 costs about 100 / WORKERS round trips of wall time, and an index change about one.
INDEX_WORKERS = 8
# Index rows younger than this may be the intent of a commit still in flight: never deleted.
STALE_GRACE_SECONDS = 300.0
# A read examines at most this many index rows; past it the page ends early with a
# continuation, so a filter that the index narrows badly still answers in bounded time.
MAX_EXAMINED = 2000


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(INDEX_WORKERS, thread_name_prefix="appointment-index")


def parallel(call: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """`call` over `items` on a small shared pool, results in order; the first error raises."""
    if len(items) <= 1:
        return [call(item) for item in items]
    return list(_pool().map(call, items))


@dataclass(frozen=True)
class Page:
    """Records in startDateTime order, and the RowKey to continue after (None: the end)."""

    records: list[tuple[str, StoredAppointment]]
    after: str | None


class AppointmentIndex:
    """The list index rows in the `appointments` table (layout: shared/listing.py).

    Writes are unconditional upserts and deletes: the applied row's ETag-guarded commit is what
    decides, and a read checks every row against the record (`page`), so a row written for a
    commit that then lost its race is harmless and is deleted by the next read that meets it.
    """

    def __init__(self, table: TableClient, load: Callable[[str], StoredAppointment]) -> None:
        self._table = table
        self._load = load

    def _call(self, call: Callable[[], T]) -> T:
        return _table_call(self._table, call)

    def put(self, keys: frozenset[listing.Key] | set[listing.Key], external_id: str) -> None:
        """Upsert index rows pointing at `external_id` (in parallel: one round trip of wall
        time for the usual one to three)."""

        def upsert(key: listing.Key) -> None:
            entity = {"PartitionKey": key[0], "RowKey": key[1], "IndexOf": external_id}
            self._call(lambda: self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))

        parallel(upsert, sorted(keys))

    def put_many(self, rows: Sequence[tuple[listing.Key, str]]) -> None:
        """Upsert many index rows, 100 per transaction within each partition (seeding,
        reindex)."""
        by_partition: dict[str, list[tuple[str, str]]] = {}
        for (partition, row), external_id in rows:
            by_partition.setdefault(partition, []).append((row, external_id))
        batches: list[tuple[str, list[tuple[str, str]]]] = [
            (partition, group[start : start + 100])
            for partition, group in by_partition.items()
            for start in range(0, len(group), 100)
        ]

        def submit(batch: tuple[str, list[tuple[str, str]]]) -> None:
            partition, group = batch
            operations: list[Any] = [
                (
                    "upsert",
                    {"PartitionKey": partition, "RowKey": row, "IndexOf": external_id},
                    {"mode": UpdateMode.REPLACE},
                )
                for row, external_id in group
            ]
            for attempt in range(3):  # idempotent upserts: a bulk run rides out a hiccup
                try:
                    self._call(lambda: self._table.submit_transaction(operations))
                    return
                except StorageUnavailable:
                    if attempt == 2:
                        raise
                    time.sleep(1.0)

        parallel(submit, batches)

    def drop(self, keys: frozenset[listing.Key] | set[listing.Key]) -> None:
        """Delete index rows, best effort: a row left behind is skipped by reads and deleted
        by the next one that meets it."""

        def delete(key: listing.Key) -> None:
            try:
                self._call(lambda: self._table.delete_entity(key[0], key[1]))
            except ResourceNotFoundError:
                pass
            except (StorageUnavailable, StorageRejected) as error:
                log.warning("could not delete a stale list index row: %s", error)

        parallel(delete, sorted(keys))

    def _chunk(
        self, partitions: Sequence[str], lower: str, upper: str, after: str | None, count: int
    ) -> list[dict[str, Any]]:
        """The next `count` index rows after `after` across `partitions`, in RowKey order."""
        if after is not None and after >= lower:
            condition, bound = "RowKey gt @lo", after
        else:
            condition, bound = "RowKey ge @lo", lower

        def read(partition: str) -> list[dict[str, Any]]:
            def query() -> list[dict[str, Any]]:
                rows = self._table.query_entities(
                    f"PartitionKey eq @pk and {condition} and RowKey lt @hi",
                    parameters={"pk": partition, "lo": bound, "hi": upper},
                    results_per_page=min(count, 1000),
                )
                return [
                    dict(row) | {"__timestamp": row.metadata.get("timestamp")}
                    for row in itertools.islice(rows, count)
                ]

            return self._call(query)

        merged = [row for rows in parallel(read, list(partitions)) for row in rows]
        merged.sort(key=lambda row: str(row["RowKey"]))
        return merged[:count]

    def page(self, wanted: listing.Filter, after: str | None, limit: int) -> Page:
        """Up to `limit` records `wanted` selects, in startDateTime order.

        Reads index rows in chunks the size of what the page still needs (plus one, to know
        whether more follow), loads each candidate's record in parallel and keeps it only if
        the record itself implies that row and matches the whole filter: the answer is the
        records' truth whatever state the index is in. Rows that neither the record implies
        nor its last commit wrote are stale and deleted (once past the grace period in which
        they may be a commit's intent). Cost: the page plus the stale rows met, at most
        MAX_EXAMINED rows; past that the page ends early, with a continuation.
        """
        lower, upper = wanted.row_bounds()
        partitions = wanted.partitions()
        found: list[tuple[str, StoredAppointment]] = []
        stale: set[listing.Key] = set()
        cursor = after
        examined = 0
        try:
            while True:
                need = limit - len(found)
                chunk = self._chunk(partitions, lower, upper, cursor, need + 1)
                candidates = chunk[:need]
                ids = [self._pointed(row) for row in candidates]
                loaded = parallel(
                    lambda external_id: None if external_id is None else self._load(external_id),
                    ids,
                )
                for row, external_id, stored in zip(candidates, ids, loaded, strict=True):
                    cursor = str(row["RowKey"])
                    examined += 1
                    if external_id is None or stored is None:
                        continue  # not an index row: an appointment whose id looks like one
                    facts = listing.stored_facts(external_id, stored)
                    key = (str(row["PartitionKey"]), cursor)
                    if key in listing.rows_for(facts):
                        if facts is not None and wanted.matches(facts):
                            found.append((external_id, stored))
                    elif self._deletable(row, key, stored):
                        stale.add(key)
                if len(found) == limit:
                    return Page(found, cursor if len(chunk) > need else None)
                if len(chunk) <= need:
                    return Page(found, None)
                if examined >= MAX_EXAMINED:
                    return Page(found, cursor)
        finally:
            if stale:
                self.drop(stale)

    def walk(
        self, partitions: Sequence[str], lower: str, upper: str, after: str | None, count: int
    ) -> list[tuple[str, str | None]]:
        """The next `count` index rows `lower <= RowKey < upper` after `after` across
        `partitions`, in RowKey order: (RowKey, the id it points at or None). Retention walks
        ended appointments by start time with it, without scanning the table."""
        rows = self._chunk(partitions, lower, upper, after, count)
        return [(str(row["RowKey"]), self._pointed(row)) for row in rows]

    @staticmethod
    def _pointed(row: Mapping[str, Any]) -> str | None:
        """The id an index row points at, or None for a row that is not an index row."""
        try:
            external_id = listing.id_of(str(row["RowKey"]))
        except ValueError:
            return None
        return external_id if row.get("IndexOf") == external_id else None

    @staticmethod
    def _deletable(row: Mapping[str, Any], key: listing.Key, stored: StoredAppointment) -> bool:
        if stored.applied is not None and key in stored.applied.indexed:
            return False  # its writer still counts it: the next commit deletes or reuses it
        written = row.get("__timestamp")
        if not isinstance(written, datetime):
            return False
        return (datetime.now(UTC) - written).total_seconds() > STALE_GRACE_SECONDS


def _identifier_key(identifier: str) -> str:
    """A row key for any identifier: hashed, since a key cannot hold `/ \\ # ?` or controls."""
    return hashlib.sha256(identifier.lower().encode("utf-8")).hexdigest()


def _waiting_partition(source: str, identifier: str) -> str:
    return f"waiting~{source}~{_identifier_key(identifier)}"


class OrganizerTable:
    """The `organizers` table: directory entries and the appointments waiting on one.

    Entries: PartitionKey = source, RowKey = sha256 of the lower-cased identifier (so one
    source's entries page by a single partition query). Waiting appointments: PartitionKey
    `waiting~{source}~{hash}`, RowKey = externalAppointmentId.
    """

    PAGE = 100

    def __init__(self, table: TableClient) -> None:
        self._table = table

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> OrganizerTable:
        service = _service(TableServiceClient, settings, settings.table_service_uri)
        return cls(service.get_table_client(DIRECTORY_TABLE_NAME))

    def _call(self, call: Callable[[], T]) -> T:
        return _table_call(self._table, call)

    @staticmethod
    def _entry(entity: Mapping[str, Any]) -> Entry:
        return Entry(
            str(entity["PartitionKey"]),
            str(entity["Identifier"]),
            str(entity["User"]),
            str(entity.get("UpdatedDateTime", "")),
        )

    def get(self, source: str, identifier: str) -> Entry | None:
        try:
            entity = self._call(lambda: self._table.get_entity(source, _identifier_key(identifier)))
        except ResourceNotFoundError:
            return None
        return self._entry(entity)

    def save(self, entries: Sequence[Entry], updated: str) -> None:
        """Upsert every entry, up to 100 per transaction (one partition per transaction)."""
        by_source: dict[str, list[Entry]] = {}
        for entry in entries:
            by_source.setdefault(entry.source, []).append(entry)
        for source, group in by_source.items():
            for start in range(0, len(group), 100):
                operations: list[Any] = [
                    (
                        "upsert",
                        {
                            "PartitionKey": source,
                            "RowKey": _identifier_key(e.identifier),
                            "Identifier": e.identifier,
                            "User": e.user,
                            "UpdatedDateTime": updated,
                        },
                        {"mode": UpdateMode.REPLACE},
                    )
                    for e in group[start : start + 100]
                ]

                def submit(ops: list[Any] = operations) -> None:
                    self._table.submit_transaction(ops)

                self._call(submit)

    def delete(self, source: str, identifier: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._call(lambda: self._table.delete_entity(source, _identifier_key(identifier)))

    def page(self, source: str, token: str | None) -> tuple[list[Entry], str | None]:
        """One page of a source's entries and the token of the next page (None: the last)."""
        continuation = json.loads(base64.urlsafe_b64decode(token)) if token else None

        def query() -> tuple[list[Entry], str | None]:
            pages = self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": source}, results_per_page=self.PAGE
            ).by_page(continuation_token=continuation)
            page = [self._entry(e) for e in next(pages, [])]
            following = pages.continuation_token  # type: ignore[attr-defined]
            if not following:
                return page, None
            encoded = base64.urlsafe_b64encode(json.dumps(following).encode()).decode()
            return page, encoded

        return self._call(query)

    def note_waiting(self, source: str, identifier: str, external_id: str) -> None:
        entity = {"PartitionKey": _waiting_partition(source, identifier), "RowKey": external_id}
        self._call(lambda: self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))

    def waiting(self, source: str, identifier: str) -> list[str]:
        partition = _waiting_partition(source, identifier)

        def query() -> list[str]:
            rows = self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
            )
            return [str(row["RowKey"]) for row in rows]

        return self._call(query)

    def forget_waiting(self, source: str, identifier: str, external_id: str) -> None:
        partition = _waiting_partition(source, identifier)
        with contextlib.suppress(ResourceNotFoundError):
            self._call(lambda: self._table.delete_entity(partition, external_id))


class SourceHealthTable:
    """The `sourcehealth` table: each source's delivery counts and newest refusals.

    PartitionKey = source name. Counters are sharded, `count~0` … `count~7`: a write merges
    its delta into a random shard, guarded by the ETag and retried on another shard when a
    concurrent writer got there first, so bursts from many instances rarely collide and no
    increment is lost. A read sums the shards (one partition range query). Refusals are rows
    `refusal~{inverted µs}~{random}`: the newest are a range query's first rows; after every
    TRIM_EVERY refusals written, this process deletes those past health.RECENT (at most
    TRIM_MAX per pass, so a trim stays bounded).
    """

    SHARDS = 8
    ATTEMPTS = 4
    TRIM_EVERY = 25
    TRIM_MAX = 200

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._since_trim: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> SourceHealthTable:
        from shared.health import TABLE_NAME as HEALTH_TABLE_NAME

        service = _service(TableServiceClient, settings, settings.table_service_uri)
        return cls(service.get_table_client(HEALTH_TABLE_NAME))

    def _call(self, call: Callable[[], T]) -> T:
        return _table_call(self._table, call)

    def _range(self, source: str, prefix: str, **options: Any) -> Any:
        return self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": source, "lo": f"{prefix}~", "hi": f"{prefix}~~"},
            **options,
        )

    def write(self, source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
        """Add a delta to the counters and store its refusals (health.HealthRecorder's writer)."""
        if not tally.empty:
            self._merge(source, tally, secrets.randbelow(self.SHARDS))
        if refusals:
            operations: list[Any] = [
                (
                    "create",
                    {
                        "PartitionKey": source,
                        "RowKey": refusal_key(r.at, secrets.token_hex(4)),
                        "ReceivedAt": float(r.at),
                        "Reason": r.reason,
                    },
                )
                for r in refusals[-RECENT:]
            ]
            self._call(lambda: self._table.submit_transaction(operations))
            written = self._since_trim.get(source, 0) + len(operations)
            self._since_trim[source] = written
            if written >= self.TRIM_EVERY:
                self._since_trim[source] = 0
                self.trim(source)

    def _merge(self, source: str, tally: Tally, shard: int) -> None:
        for attempt in range(self.ATTEMPTS):
            key = f"count~{(shard + attempt) % self.SHARDS}"
            try:
                self._merge_into(source, key, tally)
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another writer took this shard meanwhile: try the next one
            return
        raise StorageUnavailable("source health counters stayed contended")

    def _merge_into(self, source: str, key: str, tally: Tally) -> None:
        """Add `tally` to one shard row, creating it; ETag or create conflicts raise."""
        try:
            entity = self._call(lambda: self._table.get_entity(source, key))
        except ResourceNotFoundError:
            entity = None
        current = _tally_of(entity) if entity is not None else Tally()
        current.add(tally)
        row = {
            "PartitionKey": source,
            "RowKey": key,
            "Accepted": current.accepted,
            "Ignored": current.ignored,
            "Refused": current.refused,
            "Last": float(current.last or 0.0),
        }
        if entity is None:
            self._call(lambda: self._table.create_entity(row))
            return
        etag = entity.metadata["etag"]
        self._call(
            lambda: self._table.update_entity(
                row,
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        )

    def read(self, source: str) -> tuple[Tally, list[Refusal]]:
        """The summed counters and the newest health.RECENT refusals, newest first."""

        def query() -> tuple[Tally, list[Refusal]]:
            tally = Tally()
            for entity in self._range(source, "count"):
                tally.add(_tally_of(entity))
            pages = self._range(
                source, "refusal", results_per_page=RECENT, select=["ReceivedAt", "Reason"]
            ).by_page()
            newest = [
                Refusal(float(_number(e.get("ReceivedAt"))), str(e.get("Reason", "")))
                for e in next(pages, [])
            ]
            return tally, newest[:RECENT]

        return self._call(query)

    def trim(self, source: str) -> int:
        """Delete refusals past the newest health.RECENT (at most TRIM_MAX); how many went."""

        def old_keys() -> list[str]:
            keys: list[str] = []
            for index, entity in enumerate(self._range(source, "refusal", select=["RowKey"])):
                if index >= RECENT:
                    keys.append(str(entity["RowKey"]))
                if len(keys) >= self.TRIM_MAX:
                    break
            return keys

        keys = self._call(old_keys)
        for start in range(0, len(keys), 100):
            operations: list[Any] = [
                ("delete", {"PartitionKey": source, "RowKey": k}) for k in keys[start : start + 100]
            ]

            def submit(ops: list[Any] = operations) -> None:
                self._table.submit_transaction(ops)

            self._call(submit)
        return len(keys)


def _number(value: object) -> float:
    """A table number as Python: the SDK hands Int64 back wrapped in an EntityProperty."""
    raw = getattr(value, "value", value)
    return float(raw) if isinstance(raw, int | float | str) else 0.0


def _tally_of(entity: Mapping[str, Any]) -> Tally:
    last = _number(entity.get("Last"))
    return Tally(
        accepted=int(_number(entity.get("Accepted"))),
        ignored=int(_number(entity.get("Ignored"))),
        refused=int(_number(entity.get("Refused"))),
        last=last or None,
    )
