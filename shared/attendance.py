"""Attendance after an appointment: Graph's attendance reports, read and summarized.

Pure: no Azure or Graph SDK import and no I/O. The gateway (shared/graph.py) fetches the JSON and
hands it to :func:`parse_reports_page` / :func:`parse_records`; the Graph emulator's tests use the
same parser, so what the emulator serves and what production reads cannot drift apart.

Graph's shapes (v1.0 meetingAttendanceReport, attendanceRecord, attendanceInterval):

* a report per session, made when the session ends: ``{"id", "totalParticipantCount",
  "meetingStartDateTime", "meetingEndDateTime", "attendanceRecords": []}`` (the list call leaves
  ``attendanceRecords`` empty; the records come from ``.../attendanceRecords``);
* a record per person: ``{"emailAddress", "role", "totalAttendanceInSeconds", "identity": {"id",
  "displayName", "tenantId"}, "attendanceIntervals": [{"joinDateTime", "leaveDateTime",
  "durationInSeconds"}]}``. "When data is lacking", Graph sets ``joinDateTime`` or
  ``leaveDateTime`` to null and ``durationInSeconds`` to 0.

Decisions the SPEC leaves open, taken here once:

* **A record means the person was there, whatever its seconds.** Graph lists only people who were
  in the meeting, and a 0 is what it writes when it lacks the times, not a measured absence. So a
  0-second record counts for the outcome; its seconds add 0.
* **An interval without a join time is dropped**: it carries no time and, per Graph, 0 seconds.
  The record's ``totalAttendanceInSeconds`` is kept as Graph gives it (when it is missing, the sum
  of the intervals stands in).
* **The organizer side** is every record whose identity is the organizer's object id (whatever
  its role: a policy can list the organizer as an Attendee) or whose role is ``Organizer``. Every
  other record is a client (SPEC).
* **One client, several records** (several sessions, a rejoin from another device): merged by
  identity id, else by display name (an anonymous browser joiner has no id; two anonymous guests
  who typed the same name become one), else into one unnamed entry.
* **Reports without records** (everyone opted out of the attendance report, a tenant policy) say
  nobody is known to have joined: ``nobodyJoined``, with ``reports`` telling it from "no report".

Client data: a client's display name is what the client typed or their directory name, so the
summary carries it (SPEC) but never their e-mail, and nothing here logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from shared.documents import parse_rfc3339

Outcome = Literal["completed", "clientNoShow", "organizerNoShow", "nobodyJoined"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
ORGANIZER_ROLE = "Organizer"
# Graph's roles; anything else is kept as given (an evolvable set), so a new role is a client.
ROLES: frozenset[str] = frozenset({"None", "Attendee", "Presenter", ORGANIZER_ROLE})
# The list call answers at most this many reports, the newest (Graph docs, "List
# meetingAttendanceReports").
MAX_REPORTS = 50


class AttendanceParseError(ValueError):
    """Graph's JSON is not the documented shape.

    The message names the field and the expected type only, never the value: values are client
    names and addresses, and the message may end up in a log or on the record.
    """


# --------------------------------------------------------------------------- Graph's resources


@dataclass(frozen=True)
class AttendanceInterval:
    """One stretch between joining and leaving. ``leave`` is None when Graph lacked it."""

    join: datetime
    leave: datetime | None
    seconds: int


@dataclass(frozen=True)
class AttendanceRecord:
    """One person in one report (session)."""

    role: str
    identity_id: str | None
    display_name: str | None
    email: str | None
    total_seconds: int
    intervals: tuple[AttendanceInterval, ...]


@dataclass(frozen=True)
class AttendanceReport:
    """One session's report: ``start`` and ``end`` are the meeting's, in UTC."""

    id: str
    start: datetime | None
    end: datetime | None
    records: tuple[AttendanceRecord, ...]


# --------------------------------------------------------------------------- parsing


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AttendanceParseError(f"{where} must be a JSON object")
    return value


def _optional_text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string or null; a blank string is treated as absent (Graph writes "" for some guests)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AttendanceParseError(f"{where}.{key} must be a string or null")
    return value.strip() or None


def _optional_int(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    # bool is an int in Python; JSON true is not an Int32.
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttendanceParseError(f"{where}.{key} must be an integer or null")
    if value < 0:
        raise AttendanceParseError(f"{where}.{key} must not be negative")
    return value


def _optional_moment(data: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AttendanceParseError(f"{where}.{key} must be a date-time string or null")
    try:
        return parse_rfc3339(value).astimezone(UTC)
    except ValueError:
        raise AttendanceParseError(f"{where}.{key} must be an RFC 3339 date-time") from None


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AttendanceParseError(f"{where} must be an array or null")
    return value


def parse_interval(data: Any, where: str = "attendanceInterval") -> AttendanceInterval | None:
    """One attendanceInterval; None for one without a join time (Graph lacked the data)."""
    interval = _object(data, where)
    join = _optional_moment(interval, "joinDateTime", where)
    leave = _optional_moment(interval, "leaveDateTime", where)
    seconds = _optional_int(interval, "durationInSeconds", where)
    if join is None:
        return None
    if seconds is None:
        seconds = int((leave - join).total_seconds()) if leave is not None and leave > join else 0
    return AttendanceInterval(join, leave, seconds)


def parse_record(data: Any, where: str = "attendanceRecord") -> AttendanceRecord:
    """One attendanceRecord. Missing optional fields are absent; wrong types are refused."""
    record = _object(data, where)
    role = record.get("role")
    if role is None:
        role = "None"
    elif not isinstance(role, str):
        raise AttendanceParseError(f"{where}.role must be a string")
    identity_data = record.get("identity")
    identity: Mapping[str, Any] = (
        {} if identity_data is None else _object(identity_data, f"{where}.identity")
    )
    intervals: list[AttendanceInterval] = []
    for index, item in enumerate(
        _array(record.get("attendanceIntervals"), f"{where}.attendanceIntervals")
    ):
        interval = parse_interval(item, f"{where}.attendanceIntervals[{index}]")
        if interval is not None:
            intervals.append(interval)
    total = _optional_int(record, "totalAttendanceInSeconds", where)
    if total is None:
        total = sum(i.seconds for i in intervals)
    return AttendanceRecord(
        role=role,
        identity_id=_optional_text(identity, "id", f"{where}.identity"),
        display_name=_optional_text(identity, "displayName", f"{where}.identity"),
        email=_optional_text(record, "emailAddress", where),
        total_seconds=total,
        intervals=tuple(sorted(intervals, key=lambda i: i.join)),
    )


def parse_records(data: Any, where: str = "attendanceRecords") -> tuple[AttendanceRecord, ...]:
    """A page of ``GET .../attendanceRecords`` (``{"value": [...]}``) or a bare JSON array (an
    expanded report's ``attendanceRecords``)."""
    items = data if isinstance(data, list) else _collection(data, where)
    return tuple(parse_record(item, f"{where}[{index}]") for index, item in enumerate(items))


def parse_report(data: Any, where: str = "meetingAttendanceReport") -> AttendanceReport:
    """One meetingAttendanceReport; its records when expanded (the list call leaves them empty)."""
    report = _object(data, where)
    report_id = report.get("id")
    if not isinstance(report_id, str) or not report_id.strip():
        raise AttendanceParseError(f"{where}.id must be a non-empty string")
    records = parse_records(
        _array(report.get("attendanceRecords"), f"{where}.attendanceRecords"),
        f"{where}.attendanceRecords",
    )
    return AttendanceReport(
        id=report_id,
        start=_optional_moment(report, "meetingStartDateTime", where),
        end=_optional_moment(report, "meetingEndDateTime", where),
        records=records,
    )


def parse_reports_page(data: Any, where: str = "attendanceReports") -> list[AttendanceReport]:
    """A page of ``GET .../attendanceReports``."""
    items = _collection(data, where)
    return [parse_report(item, f"{where}[{index}]") for index, item in enumerate(items)]


def _collection(data: Any, where: str) -> list[Any]:
    page = _object(data, where)
    if "value" not in page:
        raise AttendanceParseError(f"{where} must have a value array")
    items = page["value"]
    if not isinstance(items, list):
        raise AttendanceParseError(f"{where}.value must be an array")
    return items


def next_link(data: Any, where: str = "page") -> str | None:
    """A collection page's ``@odata.nextLink``: the absolute URL of the next page, or None."""
    page = _object(data, where)
    link = page.get("@odata.nextLink")
    if link is None:
        return None
    if not isinstance(link, str) or not link.startswith(("https://", "http://")):
        raise AttendanceParseError(f"{where}.@odata.nextLink must be an absolute URL")
    return link


# --------------------------------------------------------------------------- the summary


def _utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; fractions only when there are any (as Graph writes them)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ClientAttendance:
    """One client over every report: earliest join, latest known leave, summed seconds."""

    display_name: str | None
    join: datetime | None
    leave: datetime | None
    seconds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "displayName": self.display_name,
            "joinDateTime": None if self.join is None else _utc_text(self.join),
            "leaveDateTime": None if self.leave is None else _utc_text(self.leave),
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> ClientAttendance:
        client = _object(data, "attendance.clients[]")
        where = "attendance.clients[]"
        _exact_keys(client, {"displayName", "joinDateTime", "leaveDateTime", "seconds"}, where)
        seconds = _optional_int(client, "seconds", where)
        if seconds is None:
            raise AttendanceParseError(f"{where}.seconds must be an integer")
        return cls(
            display_name=_optional_text(client, "displayName", where),
            join=_optional_moment(client, "joinDateTime", where),
            leave=_optional_moment(client, "leaveDateTime", where),
            seconds=seconds,
        )


@dataclass(frozen=True)
class Attendance:
    """The record's ``attendance`` (SPEC "After the appointment: attendance")."""

    outcome: Outcome
    organizer_seconds: int
    clients: tuple[ClientAttendance, ...]
    reports: int
    checked: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "organizerSeconds": self.organizer_seconds,
            "clients": [c.to_json() for c in self.clients],
            "reports": self.reports,
            "checkedDateTime": _utc_text(self.checked),
        }

    @classmethod
    def from_json(cls, data: Any) -> Attendance:
        where = "attendance"
        value = _object(data, where)
        _exact_keys(
            value, {"outcome", "organizerSeconds", "clients", "reports", "checkedDateTime"}, where
        )
        outcome = value["outcome"]
        if outcome not in OUTCOMES:
            raise AttendanceParseError(f"{where}.outcome must be one of {sorted(OUTCOMES)}")
        organizer_seconds = _optional_int(value, "organizerSeconds", where)
        reports = _optional_int(value, "reports", where)
        checked = _optional_moment(value, "checkedDateTime", where)
        if organizer_seconds is None or reports is None or checked is None:
            raise AttendanceParseError(
                f"{where}: organizerSeconds, reports and checkedDateTime are required"
            )
        clients = value["clients"]
        if not isinstance(clients, list):
            raise AttendanceParseError(f"{where}.clients must be an array")
        return cls(
            outcome=outcome,
            organizer_seconds=organizer_seconds,
            clients=tuple(ClientAttendance.from_json(c) for c in clients),
            reports=reports,
            checked=checked,
        )


def _exact_keys(data: Mapping[str, Any], keys: set[str], where: str) -> None:
    if set(data) != keys:
        raise AttendanceParseError(f"{where} must have exactly the keys {sorted(keys)}")


def is_organizer(record: AttendanceRecord, organizer_id: str) -> bool:
    """The organizer's own record: by object id whatever the role, or by role Organizer."""
    if record.identity_id is not None and record.identity_id.lower() == organizer_id.lower():
        return True
    return record.role == ORGANIZER_ROLE


def _client_key(record: AttendanceRecord) -> tuple[str, str]:
    if record.identity_id is not None:
        return ("id", record.identity_id.lower())
    if record.display_name is not None:
        return ("name", record.display_name)
    return ("unnamed", "")


@dataclass
class _Merged:
    display_name: str | None
    first_join: datetime | None
    join: datetime | None
    leave: datetime | None
    seconds: int


def summarize(
    reports: Sequence[AttendanceReport], organizer_id: str, checked: datetime
) -> Attendance:
    """SPEC's summary of every report of one meeting (in any order)."""
    checked = _utc(checked, "checked")
    organizer_seconds = 0
    organizer_joined = False
    merged: dict[tuple[str, str], _Merged] = {}
    for report in reports:
        for record in report.records:
            if is_organizer(record, organizer_id):
                organizer_joined = True
                organizer_seconds += record.total_seconds
                continue
            joins = [i.join for i in record.intervals]
            leaves = [i.leave for i in record.intervals if i.leave is not None]
            join = min(joins, default=None)
            leave = max(leaves, default=None)
            key = _client_key(record)
            entry = merged.get(key)
            if entry is None:
                merged[key] = _Merged(record.display_name, join, join, leave, record.total_seconds)
                continue
            entry.seconds += record.total_seconds
            if join is not None and (entry.join is None or join < entry.join):
                entry.join = join
            if leave is not None and (entry.leave is None or leave > entry.leave):
                entry.leave = leave
            # The name from the earliest record that has one, so the order of reports is moot.
            if record.display_name is not None and (
                entry.display_name is None
                or (join is not None and (entry.first_join is None or join < entry.first_join))
            ):
                entry.display_name = record.display_name
                entry.first_join = join
    clients = tuple(
        sorted(
            (ClientAttendance(m.display_name, m.join, m.leave, m.seconds) for m in merged.values()),
            key=lambda c: (c.join is None, c.join or checked, c.display_name or "", c.seconds),
        )
    )
    outcome: Outcome
    if organizer_joined and clients:
        outcome = "completed"
    elif organizer_joined:
        outcome = "clientNoShow"
    elif clients:
        outcome = "organizerNoShow"
    else:
        outcome = "nobodyJoined"
    return Attendance(outcome, organizer_seconds, clients, len(reports), checked)
