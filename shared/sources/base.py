"""What every source kind is made of, and what the shared intake pipeline hands it. Pure.

A source kind (native, hl7v2, calendly, calcom, ...) does three things and nothing else:
`authenticate` a delivery against the source's secrets, `parse` it into candidate documents
(or "acknowledged, no change"), and `respond` with the reply its sender expects. Size limits,
content-type dispatch order, validation of the documents, enqueueing and storage are the
pipeline's (shared/intake.py), so no kind repeats them and every kind keeps the same promises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote

from shared import signatures
from shared.callbacks import CallbackTarget
from shared.documents import DEFAULT_SUBJECT, FieldError
from shared.problems import MEDIA_TYPE, Problem, validation_problem

KINDS = ("native", "hl7v2", "calendly", "calcom")
DEFAULT_SOURCE = "appointments"


@dataclass(frozen=True)
class SourceConfig:
    """One configured sender, from `SOURCES__{name}__...` app settings."""

    name: str
    kind: str
    secrets: tuple[str, ...] = ()
    time_zone: str = "UTC"
    phone_region: str = "US"
    subject: str | None = None
    send_sms: bool = False
    send_email: bool = False
    send_sms_reminder: bool = False
    # Where this source's signed callbacks go (SOURCES__{name}__CALLBACKURL); None: none sent.
    callback: CallbackTarget | None = None

    @property
    def effective_subject(self) -> str:
        return self.subject or DEFAULT_SUBJECT


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, independent of the hosting framework."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def problem(cls, problem: Problem, instance: str | None = None) -> Reply:
        return cls(
            problem.status,
            problem.to_bytes(instance),
            {"Content-Type": MEDIA_TYPE, **problem.headers},
        )

    @classmethod
    def json(cls, status: int, value: object) -> Reply:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json"})


class AuthenticationError(Exception):
    """The delivery is not authentic (401); the message is safe to return to the caller."""

    def __init__(self, message: str, challenge: str = "Signature") -> None:
        super().__init__(message)
        self.challenge = challenge  # the WWW-Authenticate value


def verify_timestamped_signature(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance_seconds: int,
    header: str = signatures.HEADER,
) -> None:
    """`{header}: t=<unix>,v1=<hex>` (the native and Calendly scheme), or AuthenticationError."""
    try:
        signatures.verify(
            headers.get(header.lower()),
            body,
            secrets,
            now=now,
            tolerance_seconds=tolerance_seconds,
            name=header,
        )
    except signatures.SignatureError as error:
        raise AuthenticationError(str(error)) from None


class UnsupportedMediaType(Exception):
    """The body is in a media type this source does not take (415); args[0] names it."""


class InvalidBody(Exception):
    """The body cannot be read at all (400 problem); `errors` point into it."""

    def __init__(self, detail: str, errors: Sequence[FieldError]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)


class Refused(Exception):
    """The delivery was read but cannot become an appointment: nothing is stored.

    JSON kinds answer a 400 problem; hl7v2 answers an `AE` ACK naming the field. `context` is
    whatever the kind's `respond` needs to answer (e.g. the message's MSH segment).
    """

    def __init__(self, detail: str, errors: Sequence[FieldError], context: object = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.context = context


@dataclass(frozen=True)
class Part:
    """One party's share of an appointment assembled from several deliveries.

    Calendly sends one delivery per invitee; the appointment is every invitee whose newest
    delivery is a booking. `key` names the party, `version` orders its deliveries, `client` is
    its appointmentClients entry (None once it cancelled), `base` the rest of the document as
    that delivery described it. shared/parts.py combines parts into one document.
    """

    key: str
    version: str  # RFC 3339, the party's own lastModifiedDateTime
    client: dict[str, Any] | None
    base: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """A document built from a delivery, before the shared validation.

    `locations` maps a JSON Pointer in the document (or a prefix of one) to where its value
    came from in the delivery, so a validation failure names the sender's own field: a JSON
    Pointer into the body (`/payload/start_time`) or an HL7 field (`TQ1-7`). The longest
    matching prefix wins; unmatched paths fall back to `fallback`.
    """

    document: dict[str, Any]
    locations: Mapping[str, str] = field(default_factory=dict)
    fallback: str = ""
    # An id the sender gives each delivery (HL7 MSH-10): a repeat is a duplicate.
    delivery_id: str | None = None
    part: Part | None = None
    # A booking rather than a change (HL7 S12, invitee.created): the store tries a create
    # before reading, which saves a table read when the appointment is indeed new.
    probably_new: bool = False

    def locate(self, pointer: str) -> str:
        """The delivery location a document pointer came from."""
        best = ""
        for prefix in self.locations:
            matches = pointer == prefix or pointer.startswith(prefix + "/")
            if matches and len(prefix) > len(best):
                best = prefix
        if not best:
            return self.fallback or pointer
        return self.locations[best]


@dataclass(frozen=True)
class Parsed:
    """A delivery read: the candidates it carries, or the event it acknowledges unchanged.

    Several candidates are all or nothing (a Cal.com reschedule cancels one booking and
    schedules another): one invalid candidate refuses the delivery.
    """

    candidates: tuple[Candidate, ...] = ()
    ignored: str | None = None
    context: object = None


@dataclass(frozen=True)
class Accepted:
    external_appointment_id: str
    last_modified_date_time: str

    def to_json(self) -> dict[str, str]:
        return {
            "externalAppointmentId": self.external_appointment_id,
            "lastModifiedDateTime": self.last_modified_date_time,
        }


@dataclass(frozen=True)
class Outcome:
    """What the pipeline did with a parsed delivery, for the kind to answer."""

    result: Literal["accepted", "ignored", "refused", "unavailable"]
    accepted: tuple[Accepted, ...] = ()
    ignored: str | None = None
    detail: str = ""
    errors: tuple[FieldError, ...] = ()
    context: object = None


# Part of a batch may be recorded before storage fails; a retry of the whole request is safe:
# the store keeps the first of equal versions and the reconciler skips duplicates.
UNAVAILABLE = Problem(
    503,
    "Storage is unavailable; retry the whole request "
    "(documents already recorded are recognised as duplicates).",
    headers={"Retry-After": "10"},
)


def json_reply(outcome: Outcome) -> Reply:
    """The answer of the JSON kinds (native, calendly, calcom): 202, 400 problem or 503."""
    if outcome.result == "accepted":
        return Reply.json(202, {"accepted": [a.to_json() for a in outcome.accepted]})
    if outcome.result == "ignored":
        return Reply.json(202, {"ignored": outcome.ignored})
    if outcome.result == "refused":
        return Reply.problem(validation_problem(outcome.detail, list(outcome.errors)))
    return Reply.problem(UNAVAILABLE)


class SourceKind(Protocol):
    """One module per kind implements this (see shared/sources/__init__.py's registry)."""

    name: str
    media_types: tuple[str, ...]  # named in the 415 answer

    def authenticate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[str],
        *,
        now: float,
        tolerance_seconds: int,
    ) -> None:
        """Raise AuthenticationError unless the delivery is signed by one of `secrets`.

        `headers` have lower-case names. Runs before anything reads the body's content.
        """

    def parse(self, headers: Mapping[str, str], body: bytes, config: SourceConfig) -> Parsed:
        """Read the delivery: raise UnsupportedMediaType, InvalidBody or Refused, or return it."""

    def respond(self, outcome: Outcome, headers: Mapping[str, str], *, now: float) -> Reply:
        """The reply the sender expects for `outcome` (`headers`: the request's; `now`: unix
        seconds, for a reply that carries its own time stamp, as an HL7 ACK does)."""


# Characters the contract percent-encodes in a source's own id: they cannot travel in a route
# or a table key (`/ \ # ?`), and `%` itself, so the encoding can be reversed.
_ENCODED = "/\\#?%"


def external_id(source: str, source_appointment_id: str) -> str:
    """`{source}:{id in the source}` with `/ \\ # ? %` percent-encoded."""
    encoded = "".join(quote(c, safe="") if c in _ENCODED else c for c in source_appointment_id)
    return f"{source}:{encoded}"


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header (parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def charset(content_type: str | None, default: str = "utf-8") -> str:
    """The `charset` parameter of a Content-Type header, else `default`."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"').lower()
    return default
