"""Builders and hypothesis strategies shared by the pure unit tests (no fixtures, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.documents import AppointmentDocument, parse_document

ORGANIZER_GUID = "11111111-1111-4111-8111-111111111111"
ORGANIZER_UPN = "dr.grey@contoso.com"

# Deterministic and fast: no example database, a fixed seed, no per-example deadline.
FAST = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid scheduled document; an override of `...` removes the field."""
    body: dict[str, Any] = {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ORGANIZER_GUID,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def cancelled(**overrides: Any) -> dict[str, Any]:
    """A minimal valid cancellation: no organizer, no times."""
    body: dict[str, Any] = {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-21T10:00:00Z",
        "status": "cancelled",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def valid(value: dict[str, Any]) -> AppointmentDocument:
    """Parse a document that must be valid; fail the test with its errors otherwise."""
    parsed = parse_document(value)
    assert isinstance(parsed, AppointmentDocument), parsed
    return parsed


def errors_of(value: object) -> list[tuple[str, str]]:
    """The (path, message) pairs of a document that must be invalid."""
    parsed = parse_document(value)
    assert isinstance(parsed, list), f"expected errors, got a document: {parsed!r}"
    return [(error.path, error.message) for error in parsed]


def paths_of(value: object) -> list[str]:
    return [path for path, _ in errors_of(value)]


# --- strategies --------------------------------------------------------------------------------

# Whole-minute offsets strictly inside +-24 h: what RFC 3339 can spell.
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)

# The contract's year range (1900..9998), a day clear of each end so every offset fits.
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(9998, 12, 30),
    timezones=offsets,
)


def rfc3339(moment: datetime, zulu: bool = False) -> str:
    """Spell an aware datetime as RFC 3339 (`Z` for UTC when asked)."""
    text = moment.isoformat()
    if zulu and moment.utcoffset() == timedelta(0):
        text = text.removesuffix("+00:00") + "Z"
    return text


id_alphabet = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs"),
    exclude_characters="/\\#?",
)
external_ids = st.text(id_alphabet, min_size=1, max_size=200)
subjects = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=255
)
guids = st.uuids().map(str)
upns = st.from_regex(r"\A[a-z][a-z0-9.]{0,20}@[a-z]{1,10}\.(com|org|onmicrosoft\.com)\Z")
phones = st.from_regex(r"\A\+[1-9][0-9]{6,14}\Z")
emails = st.from_regex(r"\A[a-z]{1,10}@[a-z]{1,10}\.(com|net)\Z")
time_zones = st.sampled_from(
    ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney"]
)
clients = st.fixed_dictionaries(
    {
        "displayName": st.text(
            st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40
        )
    },
    optional={"emailAddress": emails, "smsCapablePhoneNumber": phones},
)
urls = st.from_regex(r"\Ahttps://[a-z]{1,12}\.example/[a-z0-9]{0,8}\Z")
settings_values = st.fixed_dictionaries(
    {},
    optional={
        "allowClientToJoinUsingBrowser": st.booleans(),
        "sendSmsNotifications": st.booleans(),
    },
)


@st.composite
def scheduled_documents(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(aware_datetimes)
    length = draw(st.integers(min_value=1, max_value=24 * 3600))
    end = (start + timedelta(seconds=length)).astimezone(draw(offsets))
    body: dict[str, Any] = {
        "externalAppointmentId": draw(external_ids),
        "lastModifiedDateTime": rfc3339(draw(aware_datetimes), draw(st.booleans())),
        "organizer": draw(guids | upns),
        "startDateTime": rfc3339(start, draw(st.booleans())),
        "endDateTime": rfc3339(end, draw(st.booleans())),
    }
    optional = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "status": st.just("scheduled"),
                "subject": subjects | st.none(),
                "timeZone": time_zones | st.none(),
                "externalAppointmentUrl": urls | st.none(),
                "appointmentClients": st.lists(clients, max_size=3),
                "settings": settings_values,
                "somethingUnknown": st.integers(),
            },
        )
    )
    body.update(optional)
    return body


@st.composite
def cancelled_documents(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalAppointmentId": draw(external_ids),
        "lastModifiedDateTime": rfc3339(draw(aware_datetimes), draw(st.booleans())),
        "status": "cancelled",
    }
    optional = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "organizer": guids | upns | st.none(),
                "startDateTime": st.none(),
                "endDateTime": st.none(),
                "appointmentClients": st.lists(clients, max_size=2),
                "settings": settings_values,
            },
        )
    )
    body.update(optional)
    return body


valid_documents = scheduled_documents() | cancelled_documents()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# Every field of the contract's document, by its camelCase name.
DOCUMENT_FIELDS = tuple(
    field.alias or name for name, field in AppointmentDocument.model_fields.items()
)
# Documents with the right keys and arbitrary values: reaches every validator's error path.
document_like = st.dictionaries(
    st.sampled_from(DOCUMENT_FIELDS),
    json_values
    | st.sampled_from(
        ["scheduled", "cancelled", "2026-12-01T09:00:00Z", ORGANIZER_GUID, ORGANIZER_UPN, "UTC"]
    ),
    max_size=len(DOCUMENT_FIELDS),
)

now_utc = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
