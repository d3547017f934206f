"""Request bodies to documents: plain JSON, CloudEvents structured mode, CloudEvents batch.

Pure. The CloudEvents SDK is not used: it has no batch mode, accepts `data_base64`, and its
errors carry no field paths; the envelope is small enough to declare with pydantic instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from shared.documents import (
    SOURCE_FIELDS,
    AppointmentDocument,
    FieldError,
    field_errors,
    json_pointer,
    parse_document,
)
from shared.sources.base import InvalidBody, UnsupportedMediaType, media_type

JSON = "application/json"
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
SUPPORTED_MEDIA_TYPES = (JSON, CLOUDEVENT, CLOUDEVENT_BATCH)
MAX_BATCH = 100


__all__ = ["Entry", "InvalidBody", "UnsupportedMediaType", "load_json", "media_type", "parse_body"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One accepted document and where it stood in the body (for error paths and logs)."""

    document: AppointmentDocument
    pointer: str
    event_id: str | None = None


NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class CloudEvent(BaseModel):
    """The CloudEvents 1.0 attributes this endpoint relies on; extensions are ignored."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    datacontenttype: StrictStr | None = None
    data_base64: None = Field(default=None, description="binary data is refused")
    data: Any = Field(default=None, validate_default=True)

    @field_validator("datacontenttype")
    @classmethod
    def _json_data(cls, value: str | None) -> str | None:
        if value is not None and media_type(value) != JSON:
            raise ValueError("must be application/json or absent")
        return value

    @field_validator("data_base64", mode="before")
    @classmethod
    def _no_binary(cls, value: object) -> object:
        if value is not None:
            raise ValueError("is not supported: send the document as JSON in data")
        return value

    @field_validator("data")
    @classmethod
    def _data_present(cls, value: object) -> object:
        if value is None:
            raise ValueError("is required: the appointment document")
        return value


def _no_constant(name: str) -> NoReturn:
    """Refuse NaN, Infinity and -Infinity: Python's json reads them, RFC 8259 has no such
    numbers, and other JSON parsers (the sender's, a log pipeline's) would choke on them."""
    message = f"{name} is not valid JSON: use a number or null"
    raise InvalidBody("The body is not valid JSON.", [FieldError("", message)])


def load_json(body: bytes) -> object:
    """The body as JSON (UTF-8, RFC 8259: no NaN or Infinity), or InvalidBody saying why."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InvalidBody("The body is not UTF-8.", [FieldError("", "must be UTF-8")]) from None
    except RecursionError:
        raise InvalidBody("The body is nested too deeply.", [FieldError("", "too deep")]) from None
    except ValueError as error:
        raise InvalidBody("The body is not valid JSON.", [FieldError("", str(error))]) from None


def _event_data(raw: object, prefix: tuple[int | str, ...]) -> tuple[object, str | None]:
    if not isinstance(raw, dict):
        pointer = json_pointer(prefix)
        raise InvalidBody("Invalid CloudEvent.", [FieldError(pointer, "must be a CloudEvent")])
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as failure:
        raise InvalidBody("Invalid CloudEvent.", field_errors(failure, prefix)) from None
    return event.data, event.id


def sender_fields(value: object) -> object:
    """A document as a sender may write it: the fields only the app sets are dropped."""
    if isinstance(value, dict) and any(name in value for name in SOURCE_FIELDS):
        return {key: item for key, item in value.items() if key not in SOURCE_FIELDS}
    return value


def parse_body(
    content_type: str | None,
    body: bytes,
    adapt: Callable[[object], object] = sender_fields,
) -> list[Entry]:
    """Every document in the body, or an exception that says why none is taken.

    A batch is all-or-nothing: one bad event or document rejects the whole body, with every
    error reported so the sender can fix them in one go. `adapt` turns each raw document
    into the one validated (a named native source adds its name and id prefix).
    """
    kind = media_type(content_type)
    if kind not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(kind or "(none)")
    payload = load_json(body)

    items: list[tuple[object, tuple[int | str, ...]]]
    if kind in (JSON, CLOUDEVENT):
        items = [(payload, ())]
    elif isinstance(payload, list) and 1 <= len(payload) <= MAX_BATCH:
        items = [(item, (index,)) for index, item in enumerate(payload)]
    else:
        message = f"must be an array of 1 to {MAX_BATCH} CloudEvents"
        raise InvalidBody("Invalid CloudEvents batch.", [FieldError("", message)])

    entries: list[Entry] = []
    errors: list[FieldError] = []
    for item, prefix in items:
        try:
            if kind == JSON:
                data, data_prefix, event_id = item, prefix, None
            else:
                data, event_id = _event_data(item, prefix)
                data_prefix = (*prefix, "data")
        except InvalidBody as invalid:
            errors.extend(invalid.errors)
            continue
        parsed = parse_document(adapt(data), data_prefix)
        if isinstance(parsed, list):
            errors.extend(parsed)
        else:
            entries.append(Entry(parsed, json_pointer(data_prefix), event_id))
    if errors:
        raise InvalidBody("The request body has invalid fields.", errors)
    return entries
