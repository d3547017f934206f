"""Phone number facts the app needs, decided from the number alone (pure, no I/O).

Graph's virtual appointment SMS reaches United States numbers only. `+1` is shared by the
United States, Canada and much of the Caribbean (the North American Numbering Plan), so the
country code cannot tell them apart: the area code does, and `phonenumbers` (Google's
libphonenumber metadata) knows which area codes belong to which region.
"""

from __future__ import annotations

import phonenumbers


def is_us_number(e164: str) -> bool:
    """True when an E.164 number belongs to the United States (not Canada or the Caribbean)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.region_code_for_number(parsed) == "US"


def to_e164(raw: str, region: str) -> str | None:
    """A phone number as E.164, or None when it is not a possible number.

    `region` (ISO 3166-1 alpha-2) reads numbers written without `+`: `07700 900123` is a UK
    mobile for `GB`. Senders write numbers every way (spaces, dots, `(206) 555-0100`,
    extensions); libphonenumber knows each region's rules, so no pattern is hand-written.
    """
    text = raw.strip()
    if not text or len(text) > 64:
        return None
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        return None
    # IS_POSSIBLE only: a local-only number (`555-4444`, no area code) cannot be dialled.
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
