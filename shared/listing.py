"""The appointment list's index: keys, filters, paging tokens. Pure (no Azure import).

Why an index: `GET /api/appointments` must cost what its page costs, not what the table holds,
and Azure Tables can only range-query within a partition (anything else is a scan). So every
record is pointed at by a few small index rows in the `appointments` table, one per index:

    PartitionKey                       RowKey
    index~status~{status}              {start}~{id}      for every record
    index~source~{source}              {start}~{id}      for every record
    index~organizer~{sha256(org)}      {start}~{id}      when it has an organizer
    index~error~{base64url(code)}      {start}~{id}      when it carries an error

`{start}` is the shown startDateTime as fixed-width UTC (`version_key`; `~` when there is none,
which sorts after every date) so a partition's RowKey order is the list's order, and `{id}` is
the externalAppointmentId in base64url: ids may hold characters a key cannot (`~`, spaces,
non-ASCII are fine, but the RowKey must also split unambiguously). Organizers are hashed like
the organizer cache's UPN keys (a guest UPN holds `#`).

One range query per page: a filter reads the partition of its most selective field (organizer,
then errorCode, then source, then status; with none of them, the four status partitions merged
by RowKey) and checks the other fields against the record itself, which every read loads anyway.
Since all indexes share one RowKey space, the continuation is simply the last RowKey read.

Why reads verify: Azure Table transactions cover one PartitionKey, so these rows cannot be
written in the applied row's transaction. They are written *before* the ETag-guarded commit
(intent first), and rows that stop applying are deleted *after* it, best effort. A row can
therefore be stale (its commit lost the race, a delete failed, a crash came in between): a
read loads the record for every candidate row and keeps it only if the row is one the record
itself implies (`rows_for`). The answer is always the records' truth; a stale row costs one
skipped load and is deleted lazily. See shared/storage.py `AppointmentIndex`.

Writes per commit stay small because the applied row records the rows it points at
(`AppliedState.indexed`): a commit writes only the difference, so lease, release, retry and
callback commits write none, and a commit holding a lease never changes the index (the release
after it does). What is listed: records with an applied row. `pending` records are those whose
first version is leased or waiting out Graph trouble; a delivery the reconciler has not picked
up yet (seconds) is not listed until then. The intake does not write index rows: it would add
a round trip to every webhook for a state that normally lasts a second. Applied rows from before
the index have none until their next commit or a `python -m devtools.reindex`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from shared.documents import AppointmentDocument, FieldError, parse_rfc3339, version_key
from shared.records import AppliedState, Status, StoredAppointment
from shared.sources.base import DEFAULT_SOURCE

PREFIX = "index~"
STATUSES: tuple[str, ...] = get_args(Status)
NO_START = "~"  # after every fixed-width date: records without a start come last
DEFAULT_TOP = 100
MAX_TOP = 1000
# Bulk replay enqueues at most this many records per call; the rest via its $skiptoken.
MAX_REPLAY = 1000
_SOURCE = re.compile(r"[a-z0-9]{1,32}", re.ASCII)
_ERROR_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_START = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z|~", re.ASCII)
_B64 = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
MAX_ORGANIZER = 320


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _unb64(text: str) -> str:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")


def organizer_hash(organizer: str) -> str:
    """Case-insensitive, like Entra compares UPNs."""
    return hashlib.sha256(organizer.lower().encode("utf-8")).hexdigest()


def status_partition(status: str) -> str:
    return f"{PREFIX}status~{status}"


def source_partition(source: str) -> str:
    return f"{PREFIX}source~{source}"


def organizer_partition(organizer: str) -> str:
    return f"{PREFIX}organizer~{organizer_hash(organizer)}"


def error_partition(code: str) -> str:
    return f"{PREFIX}error~{_b64(code)}"


def start_key(start: datetime | None) -> str:
    return NO_START if start is None else version_key(start)


def row_key(start: datetime | None, external_id: str) -> str:
    return f"{start_key(start)}~{_b64(external_id)}"


def id_of(row: str) -> str:
    """The externalAppointmentId a RowKey points at (ValueError for one this module did not
    build)."""
    start, _, encoded = row.rpartition("~")
    if not _START.fullmatch(start) or not _B64.fullmatch(encoded):
        raise ValueError("not an index row key")
    try:
        return _unb64(encoded)
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not an index row key") from None


@dataclass(frozen=True)
class Facts:
    """What the list filters and orders on, as the status record shows it."""

    external_id: str
    status: str
    start: datetime | None
    source: str
    organizer: str | None
    error_code: str | None


def facts_of(
    external_id: str, state: AppliedState, shown: AppointmentDocument | None
) -> Facts | None:
    """The record's facts (`shown`: the desired document, used while nothing is applied, as
    `status_view` does), or None when it shows no document and so is not listed."""
    document = state.document or shown
    if document is None:
        return None
    return Facts(
        external_id,
        state.status,
        document.start,
        document.source or DEFAULT_SOURCE,
        document.organizer,
        state.error.code if state.error else None,
    )


def stored_facts(external_id: str, stored: StoredAppointment) -> Facts | None:
    if stored.applied is None:
        return None  # nothing reconciled yet: not indexed (docs/api.md, "List")
    shown = stored.desired.document if stored.desired else None
    return facts_of(external_id, stored.applied, shown)


Key = tuple[str, str]  # (PartitionKey, RowKey)


def rows_for(facts: Facts | None) -> frozenset[Key]:
    """Every index row a record with these facts is pointed at by."""
    if facts is None:
        return frozenset()
    row = row_key(facts.start, facts.external_id)
    keys = {(status_partition(facts.status), row), (source_partition(facts.source), row)}
    if facts.organizer:
        keys.add((organizer_partition(facts.organizer), row))
    if facts.error_code:
        keys.add((error_partition(facts.error_code), row))
    return frozenset(keys)


@dataclass(frozen=True)
class Filter:
    """A list or bulk-replay filter. `start_from` is inclusive, `start_to` exclusive."""

    status: str | None = None
    source: str | None = None
    organizer: str | None = None
    error_code: str | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None

    def partitions(self) -> tuple[str, ...]:
        """The index partition(s) to range-read: the most selective field's, one query."""
        if self.organizer is not None:
            return (organizer_partition(self.organizer),)
        if self.error_code is not None:
            return (error_partition(self.error_code),)
        if self.source is not None:
            return (source_partition(self.source),)
        if self.status is not None:
            return (status_partition(self.status),)
        return tuple(status_partition(s) for s in STATUSES)

    def row_bounds(self) -> tuple[str, str]:
        """RowKeys `lower <= key < upper` that the start window allows."""
        lower = version_key(self.start_from) if self.start_from else ""
        upper = version_key(self.start_to) if self.start_to else "~~~"  # past "~~{base64}"
        return lower, upper

    def matches(self, facts: Facts) -> bool:
        if self.status is not None and facts.status != self.status:
            return False
        if self.source is not None and facts.source != self.source:
            return False
        if self.organizer is not None and (
            facts.organizer is None or facts.organizer.lower() != self.organizer.lower()
        ):
            return False
        if self.error_code is not None and facts.error_code != self.error_code:
            return False
        if self.start_from is not None and (facts.start is None or facts.start < self.start_from):
            return False
        return self.start_to is None or (facts.start is not None and facts.start < self.start_to)

    def query_text(self) -> str:
        """The filter as query parameters, for `@odata.nextLink`."""
        from urllib.parse import urlencode

        pairs = [
            ("status", self.status),
            ("source", self.source),
            ("organizer", self.organizer),
            ("errorCode", self.error_code),
            ("startFrom", version_key(self.start_from) if self.start_from else None),
            ("startTo", version_key(self.start_to) if self.start_to else None),
        ]
        return urlencode([(k, v) for k, v in pairs if v is not None])


def encode_token(row: str) -> str:
    """Opaque continuation: the last RowKey read, base64url."""
    return _b64(row)


def decode_token(token: str) -> str:
    """The RowKey a token carries; ValueError for a token this API did not give."""
    if not _B64.fullmatch(token):
        raise ValueError("invalid token")
    try:
        row = _unb64(token)
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("invalid token") from None
    id_of(row)
    return row


@dataclass(frozen=True)
class ListQuery:
    filter: Filter
    top: int
    after: str | None  # the RowKey to continue after


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value if value not in (None, "") else None


def _filter_fields(
    get: Mapping[str, Any], names: Mapping[str, str], errors: list[FieldError]
) -> dict[str, Any]:
    """Validate status/source/organizer/errorCode; `names` maps each to its error path."""
    fields: dict[str, Any] = {}
    status = get.get("status")
    if status is not None:
        if status not in STATUSES:
            errors.append(FieldError(names["status"], "must be one of " + "|".join(STATUSES)))
        else:
            fields["status"] = status
    source = get.get("source")
    if source is not None:
        if not isinstance(source, str) or not _SOURCE.fullmatch(source):
            errors.append(FieldError(names["source"], "must be 1 to 32 of a-z0-9"))
        else:
            fields["source"] = source
    organizer = get.get("organizer")
    if organizer is not None:
        if not isinstance(organizer, str) or not 1 <= len(organizer) <= MAX_ORGANIZER:
            errors.append(FieldError(names["organizer"], f"must be 1 to {MAX_ORGANIZER} chars"))
        else:
            fields["organizer"] = organizer
    code = get.get("errorCode")
    if code is not None:
        if not isinstance(code, str) or not _ERROR_CODE.fullmatch(code):
            errors.append(FieldError(names["errorCode"], "must be 1 to 64 of A-Za-z0-9._-"))
        else:
            fields["error_code"] = code
    return fields


def parse_list_query(params: Mapping[str, str]) -> ListQuery | list[FieldError]:
    """The list route's query parameters, or the errors naming each bad one."""
    errors: list[FieldError] = []
    raw = {name: _text(params, name) for name in ("status", "source", "organizer", "errorCode")}
    fields = _filter_fields(
        {k: v for k, v in raw.items() if v is not None}, {n: n for n in raw}, errors
    )
    for name, field in (("startFrom", "start_from"), ("startTo", "start_to")):
        value = _text(params, name)
        if value is None:
            continue
        try:
            fields[field] = parse_rfc3339(value)
        except ValueError as error:
            errors.append(FieldError(name, str(error)))
    top = DEFAULT_TOP
    raw_top = params.get("$top")
    if raw_top is not None:
        if not re.fullmatch(r"[0-9]{1,4}", raw_top, re.ASCII) or not 1 <= int(raw_top) <= MAX_TOP:
            errors.append(FieldError("$top", f"must be an integer from 1 to {MAX_TOP}"))
        else:
            top = int(raw_top)
    after = None
    token = _text(params, "$skiptoken")
    if token is not None:
        try:
            after = decode_token(token)
        except ValueError:
            errors.append(FieldError("$skiptoken", "is not one this API gave"))
    if errors:
        return errors
    return ListQuery(Filter(**fields), top, after)


@dataclass(frozen=True)
class ReplayQuery:
    filter: Filter
    after: str | None


def parse_replay_body(value: Any) -> ReplayQuery | list[FieldError]:
    """The bulk replay's body `{"status", "errorCode"?, "source"?, "organizer"?,
    "$skiptoken"?}`; errors carry JSON Pointers."""
    if not isinstance(value, dict):
        return [FieldError("", "must be a JSON object")]
    errors: list[FieldError] = []
    if "status" not in value:
        errors.append(FieldError("/status", "is required"))
    names = {n: f"/{n}" for n in ("status", "source", "organizer", "errorCode")}
    fields = _filter_fields(value, names, errors)
    after = None
    token = value.get("$skiptoken")
    if token is not None:
        try:
            if not isinstance(token, str):
                raise ValueError("not a string")
            after = decode_token(token)
        except ValueError:
            errors.append(FieldError("/$skiptoken", "is not one this API gave"))
    if errors:
        return errors
    return ReplayQuery(Filter(**fields), after)
