"""Reading the JSON deliveries of booking services (calendly, calcom). Pure.

What the JSON kinds share: the content-type check, JSON that Python reads but RFC 8259 does not
(NaN, Infinity), type checks that collect every wrong field as a JSON Pointer into the body,
and the normalisation of times, subjects and phone numbers into the native document's terms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from shared.documents import FieldError, json_pointer, parse_rfc3339
from shared.envelopes import JSON, load_json
from shared.phones import to_e164
from shared.sources.base import InvalidBody, UnsupportedMediaType, media_type

Path = tuple[str | int, ...]

# A date-time with no offset (`2024-01-01T10:00:00`, `.123`, a space for the `T`): read in the
# source's zone. Anything else that is not RFC 3339 is passed on unchanged, so the document's
# validation names the sender's field.
_NAIVE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?", re.ASCII)
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")
MAX_SUBJECT = 255
PHONE_WARNING = "A client's phone number could not be read as a phone number and was left out."


def load_object(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The body as a JSON object: UnsupportedMediaType unless `application/json` (a charset
    parameter is fine; JSON is UTF-8, RFC 8259), InvalidBody unless an object."""
    kind = media_type(headers.get("content-type"))
    if kind != JSON:
        raise UnsupportedMediaType(kind)
    value = load_json(body)
    if not isinstance(value, dict):
        raise InvalidBody("The body is not a JSON object.", [FieldError("", "must be an object")])
    return value


class Reader:
    """Typed access to a JSON value that collects every wrong field instead of failing.

    A value that is absent or null reads as None (an error only when required: `required` may
    be the message to give); one of the
    wrong type reads as None and is recorded. Below a missing parent, nothing is recorded.
    """

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def _get(
        self, parent: object, path: Path, kind: type, expected: str, required: bool | str
    ) -> Any:
        key = path[-1]
        if isinstance(parent, dict) and isinstance(key, str):
            value = parent.get(key)
        elif isinstance(parent, list) and isinstance(key, int):
            value = parent[key] if 0 <= key < len(parent) else None
        else:
            return None
        if value is None:
            if required:
                message = required if isinstance(required, str) else "is required"
                self.errors.append(FieldError(json_pointer(path), message))
            return None
        if not isinstance(value, kind):
            self.errors.append(FieldError(json_pointer(path), f"must be {expected}"))
            return None
        return value

    def mapping(
        self, parent: object, path: Path, *, required: bool | str = False
    ) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._get(parent, path, dict, "an object", required)
        return value

    def array(
        self, parent: object, path: Path, *, required: bool | str = False
    ) -> list[Any] | None:
        value: list[Any] | None = self._get(parent, path, list, "an array", required)
        return value

    def text(self, parent: object, path: Path, *, required: bool | str = False) -> str | None:
        value: str | None = self._get(parent, path, str, "a string", required)
        return value

    def require(self, condition: bool, path: Path, message: str) -> None:
        if not condition:
            self.errors.append(FieldError(json_pointer(path), message))

    def check(self, detail: str) -> None:
        """Raise InvalidBody with every recorded error, if any."""
        if self.errors:
            raise InvalidBody(detail, self.errors)


def to_rfc3339(value: str, zone: str) -> str:
    """`value` as RFC 3339 with an offset: kept when it has one, read in `zone` when it has
    none (`2024-01-01T10:00:00` → `2024-01-01T10:00:00+00:00`), else returned unchanged."""
    try:
        parse_rfc3339(value)
    except ValueError:
        pass
    else:
        return value
    match = _NAIVE.fullmatch(value)
    if match is None:
        return value
    date, time, fraction = match.groups()
    try:
        moment = datetime.fromisoformat(f"{date}T{time}{(fraction or '')[:7]}")
        aware = moment.replace(tzinfo=ZoneInfo(zone))
        text = aware.isoformat()
    except (ValueError, KeyError, OverflowError):
        return value
    try:
        parse_rfc3339(text)
    except ValueError:
        return value
    return text


def subject(value: str | None) -> str | None:
    """A meeting subject from the sender's title: whitespace and control characters folded to
    single spaces, at most 255 characters; None when nothing is left."""
    if value is None:
        return None
    text = _CONTROL_RUN.sub(" ", value).strip()[:MAX_SUBJECT].rstrip()
    return text or None


def full_name(name: str | None, first: str | None, last: str | None) -> str | None:
    """`name`, else the given and family names joined; None when all are blank."""
    if name is not None and name.strip():
        return name.strip()
    joined = " ".join(part.strip() for part in (first, last) if part and part.strip())
    return joined or None


def phone(raw: str | None, region: str, warnings: list[str]) -> str | None:
    """`raw` in E.164, or None; an unreadable number adds a warning that names no digits."""
    if raw is None or not raw.strip():
        return None
    e164 = to_e164(raw, region)
    if e164 is None and PHONE_WARNING not in warnings:
        warnings.append(PHONE_WARNING)
    return e164
