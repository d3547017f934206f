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
