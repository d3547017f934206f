"""The appointment document a scheduling system sends: its validation rules and its ordering.

Pure: no Azure import and no I/O, so every rule of the contract is a fast unit test. Validation
is declared with pydantic; its error locations become JSON Pointers for RFC 9457 responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_DURATION = timedelta(hours=24)
MAX_CLIENTS = 20
MAX_WARNINGS = 20
MAX_IDENTIFIER = 256  # a source's organizer identifier
# Set by the app for documents built from a named source's delivery, never by a sender: the
# native route drops them from what it receives (shared/sources/native.py).
SOURCE_FIELDS = ("source", "sourceAppointmentId", "warnings")
_SOURCE_NAME = re.compile(r"[a-z0-9]{1,32}", re.ASCII)
DEFAULT_SUBJECT = "Virtual appointment"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Patterns are matched with fullmatch and re.ASCII: no trailing newline, no non-ASCII digits.
# Characters that cannot travel in a route segment or an Azure Table key.
_KEY_FORBIDDEN = re.compile(r"[/\\#?]")
# Ids a URL cannot carry as a path segment: clients and proxies remove them as dot-segments
# (RFC 3986 section 5.2.4), so GET /api/appointments/.. could never reach the record.
_DOT_SEGMENTS = frozenset({".", ".."})
# Files in a tz database folder that ZoneInfo loads but that name no IANA zone: `localtime` is
# the machine's own zone, `Factory` a placeholder, `posixrules` a default-rules link.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", re.ASCII)
_UPN = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}", re.ASCII)
_E164 = re.compile(r"\+[1-9]\d{6,14}", re.ASCII)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+", re.ASCII)
# Far enough from datetime's limits that any offset converts to UTC and keys stay 4 digits.
_YEARS = range(1900, 9999)


# datetime's own reasons that name only the rule ("month must be in 1..12"); any other (the
# offset's names the timedelta it was given) is replaced, so no message echoes a value.
_CALENDAR_RULE = re.compile(r"[a-z ]+ (must be in \d+\.\.\d+|is out of range for month)", re.ASCII)


def _calendar_rule(error: ValueError) -> str:
    text = str(error)
    if _CALENDAR_RULE.fullmatch(text):
        return text
    if text.startswith("offset"):
        return "the offset must be less than 24 hours"
    return "out of range"


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; raise ValueError otherwise.

    `datetime.fromisoformat` alone accepts far more than RFC 3339 (dates without times,
    basic format, naive values), so the shape is checked first. Digits past microseconds
    are dropped: Python datetimes cannot hold them.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T09:00:00Z")
    date, time, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date}T{time}{fraction}{offset}")
    except ValueError as error:
        raise ValueError(f"is not a valid date-time: {_calendar_rule(error)}") from None
    if moment.year not in _YEARS:
        raise ValueError("must be a year from 1900 to 9998")
    return moment


def utc_text(unix_seconds: float) -> str:
    """RFC 3339 in UTC to the second, as the status record shows instants the app chose."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_object_id(value: str) -> bool:
    """An Entra object id (a GUID)."""
    return _GUID.fullmatch(value) is not None


def is_user_principal_name(value: str) -> bool:
    return _UPN.fullmatch(value) is not None and not _CONTROL.search(value)


def is_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None and not _CONTROL.search(value)


def has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def version_key(moment: datetime) -> str:
    """A fixed-width UTC string that sorts like the instant it names (for table storage)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


@cache
def iana_zones() -> frozenset[str]:
    """The zone names this app takes, read once: a fixed list rather than `ZoneInfo(value)`,
    which also loads any file under the tz folders (`localtime`, `posix/...`), so what passed
    would depend on the machine."""
    return frozenset(available_timezones()) - _NOT_ZONES


Text255 = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class AppointmentClient(BaseModel):
    """A client (patient, customer) who joins by the browser link and may get SMS."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    display_name: Annotated[StrictStr, Field(alias="displayName", min_length=1, max_length=256)]
    email_address: Annotated[StrictStr | None, Field(alias="emailAddress", max_length=254)] = None
    sms_capable_phone_number: Annotated[
        StrictStr | None, Field(alias="smsCapablePhoneNumber", max_length=16)
    ] = None

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, value: str) -> str:
        return _no_control(value)

    @field_validator("email_address")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Control characters are no part of an address, and JSON spells each in six characters:
        # enough of them would push the stored document past a table property's size limit.
        if not _EMAIL.fullmatch(_no_control(value)):
            raise ValueError("must be an e-mail address")
        return value

    @field_validator("sms_capable_phone_number")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not _E164.fullmatch(value):
            raise ValueError("must be an E.164 phone number, e.g. +12065550100")
        return value


class AppointmentSettings(BaseModel):
    """How clients join and whether they are texted and e-mailed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    allow_client_to_join_using_browser: StrictBool = Field(
        default=True, alias="allowClientToJoinUsingBrowser"
    )
    send_sms_notifications: StrictBool = Field(default=False, alias="sendSmsNotifications")
    # Graph's reminder text 15 minutes before the start; only with send_sms_notifications.
    send_sms_reminder: StrictBool = Field(default=False, alias="sendSmsReminder")
    # An e-mail with the join link and invite.ics to each client with an address (MAIL_SENDER).
    send_email_notifications: StrictBool = Field(default=False, alias="sendEmailNotifications")


class AppointmentDocument(BaseModel):
    """One version of one appointment, as the scheduling system sees it.

    Field order matters: validators of later fields read earlier ones (status before
    organizer, start before end), which is how a rule across fields points at the later field.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    external_appointment_id: Annotated[
        StrictStr, Field(alias="externalAppointmentId", min_length=1, max_length=200)
    ]
    last_modified_date_time: Annotated[StrictStr, Field(alias="lastModifiedDateTime")]
    status: Literal["scheduled", "cancelled"] = "scheduled"
    # The configured source this document came from; None for the native document. Before
    # `organizer`, whose rule depends on it.
    source: Annotated[StrictStr | None, Field(pattern=_SOURCE_NAME.pattern)] = None
    organizer: Annotated[StrictStr | None, Field(validate_default=True)] = None
    start_date_time: Annotated[
        StrictStr | None, Field(alias="startDateTime", validate_default=True)
    ] = None
    end_date_time: Annotated[
        StrictStr | None, Field(alias="endDateTime", validate_default=True)
    ] = None
    subject: Text255 | None = None
    time_zone: Annotated[StrictStr | None, Field(alias="timeZone", max_length=64)] = None
    external_appointment_url: Annotated[
        StrictStr | None, Field(alias="externalAppointmentUrl", max_length=2048)
    ] = None
    appointment_clients: Annotated[
        list[AppointmentClient], Field(alias="appointmentClients", max_length=MAX_CLIENTS)
    ] = []
    settings: AppointmentSettings = AppointmentSettings()
    # Its source's id, and what its parsing had to leave out (e.g. a phone number it could
    # not read) for the record's warnings.
    source_appointment_id: Annotated[
        StrictStr | None, Field(alias="sourceAppointmentId", min_length=1, max_length=200)
    ] = None
    warnings: Annotated[list[Text255], Field(max_length=MAX_WARNINGS)] = []

    @field_validator("external_appointment_id")
    @classmethod
    def _external_id(cls, value: str) -> str:
        _no_control(value)
        if _KEY_FORBIDDEN.search(value):
            raise ValueError("must not contain '/', '\\', '#' or '?'")
        if value in _DOT_SEGMENTS:
            raise ValueError("must not be '.' or '..': a URL cannot carry them as a path segment")
        return value

    @field_validator("last_modified_date_time")
    @classmethod
    def _last_modified(cls, value: str) -> str:
        parse_rfc3339(value)
        return value

    @field_validator("organizer")
    @classmethod
    def _organizer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("status", "scheduled") == "scheduled":
                raise ValueError("is required when the appointment is scheduled")
            return None
        _no_control(value)
        if info.data.get("source") is not None:
            # The sender's own identifier (an HL7 personnel id, an e-mail): the organizer
            # directory resolves it when the appointment is reconciled.
            if not value.strip() or len(value) > MAX_IDENTIFIER:
                raise ValueError(f"must be 1 to {MAX_IDENTIFIER} characters")
            return value
        if not (_GUID.fullmatch(value) or _UPN.fullmatch(value)):
            raise ValueError("must be an Entra object id (GUID) or a user principal name")
        return value

    @field_validator("start_date_time")
    @classmethod
    def _start(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("status", "scheduled") == "scheduled":
                raise ValueError("is required when the appointment is scheduled")
            return None
        parse_rfc3339(value)
        return value

    @field_validator("end_date_time")
    @classmethod
    def _end(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("status", "scheduled") == "scheduled":
                raise ValueError("is required when the appointment is scheduled")
            return None
        end = parse_rfc3339(value)
        start_text = info.data.get("start_date_time")
        if isinstance(start_text, str):
            start = parse_rfc3339(start_text)
            if end <= start:
                raise ValueError("must be after startDateTime")
            if end - start > MAX_DURATION:
                raise ValueError("must be at most 24 hours after startDateTime")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        return None if value is None else _no_control(value)

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str | None) -> str | None:
        if value is not None and value not in iana_zones():
            raise ValueError("must be an IANA time zone name, e.g. America/New_York")
        return value

    @field_validator("external_appointment_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(_no_control(value))
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https URL")
        return value

    # Derived values the rest of the app works with.

    @property
    def version(self) -> datetime:
        """The instant that orders versions of this appointment."""
        return parse_rfc3339(self.last_modified_date_time)

    @property
    def start(self) -> datetime | None:
        return None if self.start_date_time is None else parse_rfc3339(self.start_date_time)

    @property
    def end(self) -> datetime | None:
        return None if self.end_date_time is None else parse_rfc3339(self.end_date_time)

    @property
    def effective_subject(self) -> str:
        return self.subject or DEFAULT_SUBJECT

    @property
    def effective_time_zone(self) -> str:
        return self.time_zone or "UTC"

    @property
    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    def to_json(self) -> dict[str, Any]:
        """The camelCase form that is stored and queued: the fields the sender gave, validated.

        Unset fields stay unset (defaults come back on parsing), so a later step can still
        tell "omitted" from "given": a cancellation that omits its clients reuses the last.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure: a JSON Pointer into the request body and a human message."""

    path: str
    message: str


def json_pointer(parts: tuple[int | str, ...]) -> str:
    """RFC 6901 pointer for a location path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


_FIELD_ALIASES = {
    name: field.alias or name
    for model in (AppointmentDocument, AppointmentClient, AppointmentSettings)
    for name, field in model.model_fields.items()
}


_TYPE_NAMES = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "an array",
}


def _message(error: Any) -> str:
    kind = str(error["type"])
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        return "must be one of " + str(error["ctx"]["expected"])
    expected = _TYPE_NAMES.get(kind)
    if expected is not None:
        return f"must be {expected}"
    return str(error["msg"]).replace("String", "text").replace("List", "array")


def field_errors(failure: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[FieldError]:
    """Turn pydantic's errors into JSON-Pointer field errors under `prefix`."""
    errors: list[FieldError] = []
    for error in failure.errors(include_url=False):
        location = tuple(_FIELD_ALIASES.get(str(p), p) for p in error["loc"])
        errors.append(FieldError(json_pointer(prefix + location), _message(error)))
    return errors


def parse_document(
    value: object, prefix: tuple[int | str, ...] = ()
) -> AppointmentDocument | list[FieldError]:
    """Validate one document; on failure return every error with its JSON Pointer."""
    if not isinstance(value, dict):
        return [FieldError(json_pointer(prefix), "must be a JSON object (an appointment document)")]
    try:
        return AppointmentDocument.model_validate(value)
    except ValidationError as failure:
        return field_errors(failure, prefix)
