"""Kind `hl7v2`: one HL7 v2 SIU message per HTTP request, answered with an HL7 ACK. Pure.

python-hl7 splits the ER7 text into its tree; everything it does loosely is done here instead:
- the delimiters (MSH-1, MSH-2) are checked first, so a broken header is an `AE` naming MSH-1
  or MSH-2 rather than a tree built from guessed separators;
- values are read through `_Segment`, which never raises on a short segment and reads the
  HL7 null `""` as empty;
- escape sequences are undone by `_unescape`, not python-hl7's, which logs the whole field
  (patient data) on an unknown sequence and raises on `\\.spX\\`.

Rules this module had to interpret (SPEC.md is silent on them):
- Organizer with an empty identifier (XCN-1 / CE-1) but text in other components (a free-text
  clinician, `^Smith^John`): the non-empty components, in field order, joined by one space
  (`Smith John`). Stable for one sender; the organizer directory maps it.
- Start and end: TQ1-7 with TQ1-8, else SCH-11.4 with SCH-11.5, else the start (TQ1-7, then
  SCH-11.4) plus SCH-9 in SCH-10's unit. A cancellation never needs them; they are kept when
  they can be read.
- A time without an offset is read in the source's zone; a wall time skipped by a DST change
  takes the offset before the change (zoneinfo's fold=0), a repeated one its first occurrence.
- The mobile number: XTN-5/6/7 when XTN-7 is given, else XTN-1 (both tried, in that order).
- The patient without a name: `Patient` when a phone or e-mail is known, else no client.
- Anything before the first MSH segment (a BHS/FHS header, blank lines) is skipped; a second MSH
  (a batch of several messages) is refused: one message per request.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import re
import secrets as random_ids
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hl7

from shared import signatures
from shared.documents import MAX_IDENTIFIER, FieldError
from shared.phones import to_e164
from shared.sources.base import (
    AuthenticationError,
    Candidate,
    InvalidBody,
    Outcome,
    Parsed,
    Refused,
    Reply,
    SourceConfig,
    UnsupportedMediaType,
    charset,
    external_id,
    media_type,
)

MEDIA_TYPES = (
    "application/hl7-v2",
    "application/hl7-v2+er7",
    "x-application/hl7-v2+er7",
    "text/plain",
)
DEFAULT_MEDIA_TYPE = "application/hl7-v2"
CHALLENGE = 'Bearer realm="hl7v2", Basic realm="hl7v2"'
SCHEDULING = frozenset({"S12", "S13", "S14"})
CANCELLING = frozenset({"S15", "S16", "S17"})
CANCELLED_STATUSES = frozenset({"cancelled", "deleted", "dc"})
PHONE_WARNING = "PID-13: the mobile number could not be read as a phone number; no SMS for it"
EMAIL_WARNING = "PID-13: the e-mail address could not be read as one; no e-mail for it"
NAMELESS_CLIENT = "Patient"

_VERSION = re.compile(r"2\.[2-8](\.\d{1,2})?", re.ASCII)
_TRIGGER = re.compile(r"[A-Za-z0-9_]{1,8}", re.ASCII)
_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,4})?)?)?)?)?)?"
    r"([+-]\d{4})?",
    re.ASCII,
)
_DURATION = re.compile(r"\d{1,9}(\.\d{1,6})?", re.ASCII)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")
_PATH = re.compile(r"([A-Z][A-Z0-9]{2})(?:-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?)?", re.ASCII)
_UNITS = {
    **dict.fromkeys(("", "m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
}
_MAX_DURATION_SECONDS = 366 * 24 * 3600  # past 24 h the document's own rule refuses it
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "mbcs", "oem"})
_MSA_TEXT = 80  # MSA-3's length in every version
_MAX_ERRORS = 10
_TABLE_0357 = {
    101: "Required field missing",
    102: "Data type error",
    200: "Unsupported message type",
    201: "Unsupported event code",
    203: "Unsupported version id",
    207: "Application internal error",
}
UNAVAILABLE_TEXT = "Storage unavailable; retry the message later"


# --- the message's header, for the ACK -----------------------------------------------------------


@dataclass(frozen=True)
class AckContext:
    """What `respond` needs from the message: its delimiters and MSH fields (raw ER7 text)."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""  # MSH-10 as received (raw)
    processing_id: str = ""
    version: str = ""  # MSH-12 as received (raw)
    version_id: str = ""  # MSH-12.1, unescaped
    trigger: str = ""  # MSH-9.2 when it is a plain code

    @property
    def component(self) -> str:
        return self.encoding_characters[0]

    @property
    def repetition(self) -> str:
        return self.encoding_characters[1]

    @property
    def escape_character(self) -> str:
        return self.encoding_characters[2]

    @property
    def subcomponent(self) -> str:
        return self.encoding_characters[3]

    def escape(self, text: str) -> str:
        """Text as an ER7 value in this message's own delimiters; control characters dropped."""
        esc = self.escape_character
        codes = {
            esc: "E",
            self.field_separator: "F",
            self.component: "S",
            self.subcomponent: "T",
            self.repetition: "R",
        }
        if len(self.encoding_characters) > 4:
            codes[self.encoding_characters[4]] = "P"
        out = []
        for char in _CONTROL.sub(" ", text):
            code = codes.get(char)
            out.append(f"{esc}{code}{esc}" if code else char)
        return "".join(out)


# --- reading the tree ----------------------------------------------------------------------------


Repetition = list[list[str]]  # components, each a list of sub-components (escaped ER7 text)


def _repetitions(field: Any) -> list[Repetition]:
    """A python-hl7 field as plain lists: a leaf may be a str at any level of its tree."""
    if isinstance(field, str):
        return [[[field]]]
    reps: list[Repetition] = []
    for rep in field:
        if isinstance(rep, str):
            reps.append([[rep]])
            continue
        reps.append([[c] if isinstance(c, str) else [str(s) for s in c] for c in rep])
    return reps


def _unescape(text: str, ctx: AckContext) -> str:
    """Undo HL7 escapes (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\, formatting); drop the rest."""
    esc = ctx.escape_character
    if esc not in text:
        return text
    codes = {
        "F": ctx.field_separator,
        "S": ctx.component,
        "T": ctx.subcomponent,
        "R": ctx.repetition,
        "E": esc,
    }
    if len(ctx.encoding_characters) > 4:
        codes["P"] = ctx.encoding_characters[4]
    out: list[str] = []
    parts = text.split(esc)
    # Even-numbered parts are text, odd-numbered ones escape sequences; an unclosed sequence
    # at the end is kept as text.
    closed = len(parts) % 2 == 1
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(part)
        elif index == len(parts) - 1 and not closed:
            out.append(esc + part)
        elif part in codes:
            out.append(codes[part])
        elif part.startswith(("X", "x")) and len(part) % 2 == 1:
            try:
                data = bytes.fromhex(part[1:])
            except ValueError:
                continue
            out.append(data.decode("utf-8", errors="replace"))
        elif part.startswith((".br", ".sp", ".in", ".ti", ".sk", ".ce")):
            out.append(" ")
        # H, N, .fi, .nf, C.., M.., Z.. and anything unknown: no text of their own.
    return "".join(out)


def _clean(text: str) -> str:
    """One line of text: control characters as spaces, runs of white space as one."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


@dataclass(frozen=True)
class _Segment:
    name: str
    fields: tuple[list[Repetition], ...]  # fields[n] is field n (MSH: MSH-n)
    raw: tuple[str, ...]
    ctx: AckContext

    @classmethod
    def of(cls, segment: Any, ctx: AckContext) -> _Segment:
        fields = [_repetitions(f) for f in segment]
        raw = [str(f) for f in segment]
        name = raw[0] if raw else ""
        return cls(name, tuple(fields), tuple(raw), ctx)

    def raw_field(self, number: int) -> str:
        return self.raw[number] if 0 < number < len(self.raw) else ""

    def repetitions(self, number: int) -> list[Repetition]:
        if not 0 < number < len(self.fields):
            return []
        return self.fields[number]

    def value(self, number: int, component: int = 1, sub: int = 1, rep: int = 1) -> str:
        """One value, unescaped and stripped; "" when absent or the HL7 null `""`."""
        reps = self.repetitions(number)
        if rep > len(reps):
            return ""
        return _component(reps[rep - 1], component, self.ctx, sub)

    def has_text(self, number: int) -> bool:
        return any(s.strip() and s != '""' for r in self.repetitions(number) for c in r for s in c)


def _component(rep: Repetition, component: int, ctx: AckContext, sub: int = 1) -> str:
    if component > len(rep) or sub > len(rep[component - 1]):
        return ""
    text = rep[component - 1][sub - 1]
    if text.strip() == '""':
        return ""
    return _unescape(text, ctx).strip()


def _component_text(rep: Repetition, component: int, ctx: AckContext) -> str:
    """A component with its sub-components joined by spaces (a name, a free text)."""
    if component > len(rep):
        return ""
    subs = (_component(rep, component, ctx, n + 1) for n in range(len(rep[component - 1])))
    return _clean(" ".join(s for s in subs if s))


# --- parsing -------------------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, path: str, message: str, detail: str) -> None:
        super().__init__(detail)
        self.path = path
        self.message = message
        self.detail = detail


def _codec(name: str) -> str | None:
    """The Python codec for a charset name, when it is a character set (not `idna`, `base64`,
    `unicode_escape` ...: codecs Python has for other jobs)."""
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    return None if codec in _NOT_CHARSETS or "escape" in codec else codec


def _decode(body: bytes, name: str) -> str | None:
    codec = _codec(name)
    if codec is None:
        return None
    try:
        return body.decode(codec)
    except (LookupError, ValueError):
        return None


def _segments(text: str) -> list[str]:
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    text = text.lstrip().removeprefix("\x0b")
    text = text.rstrip().removesuffix("\x1c").rstrip()
    return [s.lstrip() for s in text.split("\r") if s.strip()]


def _delimiters(msh: str) -> tuple[AckContext, _Refusal | None]:
    """The delimiters of an MSH segment's text, or the refusal naming MSH-1 or MSH-2."""
    default = AckContext()
    if len(msh) < 4 or not _is_delimiter(msh[3]):
        return default, _Refusal(
            "MSH-1", "must be one field separator character", "MSH-1 is not a field separator"
        )
    separator = msh[3]
    end = msh.find(separator, 4)
    encoding = msh[4:] if end == -1 else msh[4:end]
    chars = separator + encoding
    if (
        len(encoding) not in (4, 5)
        or not all(_is_delimiter(c) for c in encoding)
        or len(set(chars)) != len(chars)
    ):
        # The ACK keeps the sender's field separator when it cannot clash with the defaults.
        if separator not in default.encoding_characters:
            default = replace(default, field_separator=separator)
        return default, _Refusal(
            "MSH-2",
            "must be four or five distinct encoding characters, e.g. ^~\\&",
            "MSH-2 does not hold the encoding characters",
        )
    return AckContext(field_separator=separator, encoding_characters=encoding), None


def _is_delimiter(char: str) -> bool:
    return char.isascii() and char.isprintable() and not char.isalnum() and char != " "


def _header(msh: _Segment, delimiters: AckContext) -> AckContext:
    trigger = msh.value(9, 2)
    return replace(
        delimiters,
        sending_application=msh.raw_field(3),
        sending_facility=msh.raw_field(4),
        receiving_application=msh.raw_field(5),
        receiving_facility=msh.raw_field(6),
        control_id=msh.raw_field(10),
        processing_id=msh.raw_field(11),
        version=msh.raw_field(12),
        version_id=msh.value(12),
        trigger=trigger if _TRIGGER.fullmatch(trigger) else "",
    )


def _timestamp(text: str, zone: ZoneInfo, path: str) -> str:
    """An HL7 DTM as RFC 3339 with an offset; without one it is read in `zone`."""
    match = _DTM.fullmatch(text)
    invalid = _Refusal(
        path,
        "must be an HL7 date/time, YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]",
        f"{path} is not a valid date/time",
    )
    if match is None:
        raise invalid
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(Decimal(fraction) * 1_000_000) if fraction else 0,
        )
        if offset:
            hours, minutes = int(offset[1:3]), int(offset[3:5])
            if hours > 23 or minutes > 59:
                raise invalid
            delta = timedelta(hours=hours, minutes=minutes)
            moment = moment.replace(tzinfo=timezone(-delta if offset[0] == "-" else delta))
        else:
            moment = moment.replace(tzinfo=zone)
    except (ValueError, OverflowError, InvalidOperation):
        raise invalid from None
    if not 1900 <= moment.year <= 9998:
        raise invalid
    utc_offset = moment.utcoffset()
    if utc_offset is not None and utc_offset.total_seconds() % 60:
        moment = moment.astimezone(UTC)  # a local mean time offset: RFC 3339 has no seconds
    spec = "microseconds" if fraction else "seconds"
    return moment.isoformat(timespec=spec)


def _zone(config: SourceConfig) -> ZoneInfo:
    try:
        return ZoneInfo(config.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _first(segments: Sequence[_Segment], name: str) -> _Segment | None:
    return next((s for s in segments if s.name == name), None)


def _times(
    segments: Sequence[_Segment], zone: ZoneInfo
) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """((start, where), (end, where)); raises _Refusal naming the field that is missing or bad."""
    tq1 = _first(segments, "TQ1")
    sch = _first(segments, "SCH")
    tq1_start = tq1.value(7) if tq1 else ""
    tq1_end = tq1.value(8) if tq1 else ""
    sch_start = sch.value(11, 4) if sch else ""
    sch_end = sch.value(11, 5) if sch else ""
    if tq1_start and tq1_end:
        return (
            (_timestamp(tq1_start, zone, "TQ1-7"), "TQ1-7"),
            (_timestamp(tq1_end, zone, "TQ1-8"), "TQ1-8"),
        )
    if sch_start and sch_end:
        return (
            (_timestamp(sch_start, zone, "SCH-11.4"), "SCH-11.4"),
            (_timestamp(sch_end, zone, "SCH-11.5"), "SCH-11.5"),
        )
    if tq1_start:
        start_path, start_text = "TQ1-7", tq1_start
    elif sch_start:
        start_path, start_text = "SCH-11.4", sch_start
    else:
        path = "TQ1-7" if tq1 else "SCH-11.4"
        raise _Refusal(
            path,
            "is required: the appointment's start (TQ1-7 or SCH-11.4)",
            "the message gives no start time",
        )
    start = _timestamp(start_text, zone, start_path)
    amount = sch.value(9) if sch else ""
    if not amount:
        raise _Refusal(
            "SCH-9",
            "is required: the appointment's end (TQ1-8, SCH-11.5) or its duration (SCH-9)",
            "the message gives neither an end time nor a duration",
        )
    if not _DURATION.fullmatch(amount):
        raise _Refusal("SCH-9", "must be a number (the duration)", "SCH-9 is not a number")
    unit = (sch.value(10) if sch else "").lower()
    if unit not in _UNITS:
        raise _Refusal(
            "SCH-10",
            "must be a unit of time: minutes, seconds or hours",
            "SCH-10 is not a unit of time",
        )
    seconds = Decimal(amount) * _UNITS[unit]
    if seconds > _MAX_DURATION_SECONDS:
        raise _Refusal("SCH-9", "must be at most 24 hours", "the duration is too long")
    end = (datetime.fromisoformat(start) + timedelta(seconds=float(seconds))).isoformat()
    return (start, start_path), (end, "SCH-9")


def _identifier(rep: Repetition, ctx: AckContext) -> str:
    """Component 1, else the other components' text in field order (a free-text clinician)."""
    first = _clean(_component(rep, 1, ctx))
    if not first:
        texts = (_component_text(rep, n, ctx) for n in range(2, len(rep) + 1))
        first = " ".join(t for t in texts if t)
    return first[:MAX_IDENTIFIER]


def _organizer(segments: Sequence[_Segment]) -> tuple[str, str] | None:
    for name, number in (("AIP", 3), ("AIG", 3), ("PV1", 7)):
        for segment in segments:
            if segment.name != name:
                continue
            for rep in segment.repetitions(number):
                identifier = _identifier(rep, segment.ctx)
                if identifier:
                    return identifier, f"{name}-{number}"
    return None


def _mobile(rep: Repetition, ctx: AckContext, region: str) -> str | None:
    country, area, local = (_component(rep, n, ctx) for n in (5, 6, 7))
    candidates = []
    if local:
        candidates.append(f"+{country}{area}{local}" if country else f"{area}{local}")
    candidates.append(_component(rep, 1, ctx))
    for raw in candidates:
        number = to_e164(raw, region) if raw else None
        if number:
            return number
    return None


def _client(
    segments: Sequence[_Segment], config: SourceConfig, warnings: list[str]
) -> dict[str, str] | None:
    pid = _first(segments, "PID")
    if pid is None:
        return None
    name = ""
    for rep in pid.repetitions(5):
        given = _component_text(rep, 2, pid.ctx)
        family = _clean(_component(rep, 1, pid.ctx))
        name = " ".join(p for p in (given, family) if p)
        if name:
            break
    client: dict[str, str] = {}
    phone_seen = email_seen = False
    for rep in pid.repetitions(13):
        use = _component(rep, 2, pid.ctx).upper()
        equipment = _component(rep, 3, pid.ctx).upper()
        if not phone_seen and (equipment == "CP" or use in ("MOBILE", "CELL")):
            phone_seen = True
            number = _mobile(rep, pid.ctx, config.phone_region)
            if number:
                client["smsCapablePhoneNumber"] = number
            else:
                warnings.append(PHONE_WARNING)
        elif not email_seen and (
            use in ("NET", "INTERNET", "EMAIL") or equipment in ("NET", "INTERNET", "EMAIL")
        ):
            email_seen = True
            address = _component(rep, 4, pid.ctx) or _component(rep, 1, pid.ctx)
            if len(address) <= 254 and _EMAIL.fullmatch(address):
                client["emailAddress"] = address
            else:
                warnings.append(EMAIL_WARNING)
    if not name and not client:
        return None
    return {"displayName": (name or NAMELESS_CLIENT)[:256], **client}


def _refused(refusal: _Refusal, ctx: AckContext) -> Refused:
    return Refused(refusal.detail, [FieldError(refusal.path, refusal.message)], context=ctx)


def _trigger(segments: list[_Segment], ctx: AckContext) -> str:
    """The trigger event (MSH-9.2), once the header is one this kind takes."""
    msh = segments[0]
    if any(s.name == "MSH" for s in segments[1:]):
        raise _Refusal("MSH", "must be one message per request", "the body holds several messages")
    if not _VERSION.fullmatch(ctx.version_id):
        raise _Refusal(
            "MSH-12", "must be a version from 2.2 to 2.8", "the HL7 version is not supported"
        )
    message_type = msh.value(9).upper()
    if message_type != "SIU":
        raise _Refusal("MSH-9", "must be an SIU message", "only SIU messages are taken")
    trigger = ctx.trigger.upper()
    if not trigger:
        raise _Refusal("MSH-9.2", "is required: the trigger event", "no trigger event")
    return trigger


def _candidate(
    segments: list[_Segment], ctx: AckContext, config: SourceConfig, *, cancelled: bool
) -> Candidate:
    """The appointment an S12-S17 message describes."""
    msh = segments[0]
    zone = _zone(config)
    version = msh.value(7)
    if not version:
        raise _Refusal("MSH-7", "is required: the message's date/time", "no MSH-7")
    last_modified = _timestamp(version, zone, "MSH-7")

    sch = _first(segments, "SCH")
    if sch is None:
        raise _Refusal("SCH", "is required: the SIU message has no SCH segment", "no SCH")
    appointment_id, id_path = sch.value(2), "SCH-2"
    if not appointment_id:
        appointment_id, id_path = sch.value(1), "SCH-1"
    appointment_id = _clean(appointment_id)
    if not appointment_id:
        raise _Refusal("SCH-2", "is required: the appointment id (SCH-2 or SCH-1)", "no id")
    status_values = {sch.value(25, 1).lower(), sch.value(25, 2).lower()}
    cancelled = cancelled or bool(status_values & CANCELLED_STATUSES)

    locations: dict[str, str] = {
        "/externalAppointmentId": id_path,
        "/sourceAppointmentId": id_path,
        "/lastModifiedDateTime": "MSH-7",
        "/appointmentClients": "PID-13",
        "/appointmentClients/0/displayName": "PID-5",
    }
    document: dict[str, Any] = {
        "externalAppointmentId": external_id(config.name, appointment_id),
        "sourceAppointmentId": appointment_id,
        "source": config.name,
        "lastModifiedDateTime": last_modified,
        "status": "cancelled" if cancelled else "scheduled",
        "subject": config.effective_subject,
        "timeZone": config.time_zone,
        "settings": {
            "sendSmsNotifications": config.send_sms,
            "sendSmsReminder": config.send_sms_reminder,
            "sendEmailNotifications": config.send_email,
        },
    }
    try:
        start, end = _times(segments, zone)
    except _Refusal:
        if not cancelled:
            raise
        start = end = None
    if start and end:
        document["startDateTime"], locations["/startDateTime"] = start
        document["endDateTime"], locations["/endDateTime"] = end

    organizer = _organizer(segments)
    if organizer is not None:
        document["organizer"], locations["/organizer"] = organizer
    elif not cancelled:
        raise _Refusal(
            "AIP-3",
            "is required: the organizer (AIP-3, AIG-3 or PV1-7)",
            "the message names no organizer",
        )
    else:
        locations["/organizer"] = "AIP-3"

    warnings: list[str] = []
    client = _client(segments, config, warnings)
    if client is not None:
        document["appointmentClients"] = [client]
    if warnings:
        document["warnings"] = warnings
    delivery_id = _clean(msh.value(10)) or None
    return Candidate(
        document=document, locations=locations, fallback="MSH", delivery_id=delivery_id
    )


class Hl7v2Kind:
    name: str = "hl7v2"
    media_types: tuple[str, ...] = MEDIA_TYPES

    def authenticate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[str],
        *,
        now: float,
        tolerance_seconds: int,
    ) -> None:
        usable = [s for s in secrets if s]  # an empty secret would let an empty key through
        keys = [s.encode("utf-8") for s in usable]
        signature = headers.get("x-signature")
        authorization = headers.get("authorization", "").strip()
        matched = False
        if signature and keys:
            try:
                signatures.verify(
                    signature, body, usable, now=now, tolerance_seconds=tolerance_seconds
                )
                matched = True
            except signatures.SignatureError:
                pass
        scheme, _, credentials = authorization.partition(" ")
        offered: bytes | None = None
        if scheme.lower() == "bearer":
            offered = credentials.strip().encode("utf-8", errors="replace")
        elif scheme.lower() == "basic":
            offered = _basic_password(credentials.strip())
        if offered:
            offered_digest = hashlib.sha256(offered).digest()
            # Every secret is compared, with no early exit; digests hide the lengths too.
            for key in keys:
                matched |= hmac.compare_digest(offered_digest, hashlib.sha256(key).digest())
        if matched:
            return
        if not signature and not authorization:
            raise AuthenticationError(
                "missing credentials: send X-Signature, Authorization: Bearer or Basic",
                CHALLENGE,
            )
        raise AuthenticationError("the credentials do not match", CHALLENGE)

    def parse(self, headers: Mapping[str, str], body: bytes, config: SourceConfig) -> Parsed:
        content_type = headers.get("content-type")
        media = media_type(content_type)
        if media not in MEDIA_TYPES:
            raise UnsupportedMediaType(media)
        encoding = charset(content_type)
        text = _decode(body, encoding)
        readable = text is not None
        if text is None:
            # Read the header anyway, so the sender gets an ACK naming the problem.
            text = body.decode("latin-1")
        segments = _segments(text)
        start = next((i for i, s in enumerate(segments) if s.startswith("MSH")), None)
        if start is None:
            raise InvalidBody(
                "The body is not an HL7 v2 message: it has no MSH segment.",
                [FieldError("/", "must be an HL7 v2 message starting with an MSH segment")],
            )
        delimiters, broken = _delimiters(segments[start])
        if broken is not None:
            raise _refused(broken, delimiters)
        segments = segments[start:]
        if segments[0].find(delimiters.field_separator, 4) == -1:
            # python-hl7 looks for the separator after MSH-2 across the whole message.
            segments[0] += delimiters.field_separator
        try:
            message = hl7.parse("\r".join(segments))
        except Exception:  # python-hl7 raises bare exceptions on odd input
            raise _refused(
                _Refusal("MSH", "must be an ER7 message", "the message cannot be read"), delimiters
            ) from None
        parsed = [_Segment.of(s, delimiters) for s in message]
        ctx = _header(parsed[0], delimiters)
        parsed = [replace(s, ctx=ctx) for s in parsed]
        try:
            if not readable:
                raise _Refusal(
                    "MSH-18",
                    # The rule, not the sender's charset name: ERR-8 and stored refusal
                    # reasons never echo a value; MSA-3 (the detail) names it for the sender.
                    "the body must be text in the charset its Content-Type names",
                    f"the body cannot be read as {encoding!r}",
                )
            return self._read(parsed, ctx, config)
        except _Refusal as refusal:
            raise _refused(refusal, ctx) from None

    def _read(self, segments: list[_Segment], ctx: AckContext, config: SourceConfig) -> Parsed:
        trigger = _trigger(segments, ctx)
        if trigger not in SCHEDULING | CANCELLING:
            return Parsed(ignored=f"SIU^{trigger}", context=ctx)
        candidate = _candidate(segments, ctx, config, cancelled=trigger in CANCELLING)
        if trigger == "S12":
            # A new booking: the store tries a create before reading (one table call fewer).
            candidate = replace(candidate, probably_new=True)
        return Parsed(candidates=(candidate,), context=ctx)

    def respond(self, outcome: Outcome, headers: Mapping[str, str], *, now: float) -> Reply:
        ctx = outcome.context if isinstance(outcome.context, AckContext) else AckContext()
        try:
            return _reply(outcome, headers, ctx, now)
        except Exception:  # an ACK is always owed; fall back to the plainest one
            return _reply(outcome, {}, AckContext(), now)


def _basic_password(credentials: str) -> bytes | None:
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, colon, password = decoded.partition(b":")
    return password if colon else None


# --- the ACK -------------------------------------------------------------------------------------


def _error_code(error: FieldError) -> int:
    if error.path.startswith("MSH-12"):
        return 203
    if error.path == "MSH-9.2":
        return 201
    if error.path.startswith("MSH-9"):
        return 200
    if error.message.startswith("is required"):
        return 101
    return 102


def _location(path: str) -> tuple[str, str, str, str] | None:
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    segment, field, component, sub = match.groups()
    return segment, field or "", component or "", sub or ""


def _modern(version_id: str) -> bool:
    """True from v2.5 on, where ERR-2/3/4 replace ERR-1."""
    match = re.fullmatch(r"2\.(\d)", version_id[:3])
    return match is None or int(match.group(1)) >= 5


def _err_segments(errors: Sequence[tuple[int, str, str]], ctx: AckContext) -> list[str]:
    """(code, path, text) triples as ERR segments in the message's version."""
    f, c, s, r = ctx.field_separator, ctx.component, ctx.subcomponent, ctx.repetition
    if not errors:
        return []
    if not _modern(ctx.version_id):
        reps = []
        for code, path, _text in errors:
            where: tuple[str, str, str, str] = _location(path) or ("", "", "", "")
            coded = s.join((str(code), ctx.escape(_TABLE_0357[code]), "HL70357"))
            reps.append(c.join((where[0], "1" if where[0] else "", where[1], coded)))
        return [f.join(("ERR", r.join(reps)))]
    segments = []
    for code, path, text in errors:
        found = _location(path)
        location = ""
        if found is not None:
            segment, field, component, sub = found
            location = c.join((segment, "1", field, "1" if field else "", component, sub))
            location = location.rstrip(c)
        coded = c.join((str(code), ctx.escape(_TABLE_0357[code]), "HL70357"))
        fields = ["ERR", "", location, coded, "E", "", "", "", ctx.escape(text)]
        segments.append(f.join(fields))
    return segments


def _reply(outcome: Outcome, headers: Mapping[str, str], ctx: AckContext, now: float) -> Reply:
    content_type = headers.get("content-type")
    media = media_type(content_type)
    if media not in MEDIA_TYPES:
        media = DEFAULT_MEDIA_TYPE
    encoding = charset(content_type)
    if outcome.result in ("accepted", "ignored"):
        code, status, text = "AA", 200, ""
        errors: list[tuple[int, str, str]] = []
    elif outcome.result == "refused":
        code, status = "AE", 200
        errors = [
            (_error_code(e), e.path, f"{e.path}: {e.message}") for e in outcome.errors[:_MAX_ERRORS]
        ]
        if not errors:
            errors = [(207, "", outcome.detail or "the message was refused")]
        text = errors[0][2] if outcome.errors else (outcome.detail or "the message was refused")
    else:
        code, status, text = "AR", 503, UNAVAILABLE_TEXT
        errors = [(207, "", UNAVAILABLE_TEXT)]

    f, c = ctx.field_separator, ctx.component
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S+0000")
    message_type = c.join(("ACK", ctx.escape(ctx.trigger), "ACK")) if ctx.trigger else "ACK"
    msh = [
        "MSH",
        ctx.encoding_characters,
        ctx.receiving_application,
        ctx.receiving_facility,
        ctx.sending_application,
        ctx.sending_facility,
        stamp,
        "",
        message_type,
        random_ids.token_hex(10),
        ctx.processing_id or "P",
        ctx.version or "2.5",
    ]
    msa = ["MSA", code, ctx.control_id]
    if text:
        msa.append(ctx.escape(text[:_MSA_TEXT]))
    lines = [f.join(msh), f.join(msa), *_err_segments(errors, ctx)]
    text_body = "".join(line + "\r" for line in lines)
    try:
        body = text_body.encode(encoding, errors="replace")
    except (LookupError, ValueError):  # an unknown charset, or a codec that is no text encoding
        encoding = "utf-8"
        body = text_body.encode(encoding)
    explicit = charset(content_type, default="") != "" or encoding != charset(None)
    headers_out = {"Content-Type": f"{media}; charset={encoding}" if explicit else media}
    if status == 503:
        headers_out["Retry-After"] = "10"
    return Reply(status, body, headers_out)


KIND = Hl7v2Kind()
