"""Kind `native`: the app's own appointment document, plain or as CloudEvents. Pure.

The default source `appointments` is this kind on today's route, unchanged. A named native
source (`SOURCES__{name}__KIND=native`) takes the same bodies; its documents get the source's
id prefix, defaults and organizer directory, like every named source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.envelopes import SUPPORTED_MEDIA_TYPES, parse_body, sender_fields
from shared.sources.base import (
    DEFAULT_SOURCE,
    Candidate,
    Outcome,
    Parsed,
    Reply,
    SourceConfig,
    external_id,
    json_reply,
    verify_timestamped_signature,
)


class NativeKind:
    name: str = "native"
    media_types: tuple[str, ...] = SUPPORTED_MEDIA_TYPES

    def authenticate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[str],
        *,
        now: float,
        tolerance_seconds: int,
    ) -> None:
        verify_timestamped_signature(
            headers, body, secrets, now=now, tolerance_seconds=tolerance_seconds
        )

    def parse(self, headers: Mapping[str, str], body: bytes, config: SourceConfig) -> Parsed:
        if config.name == DEFAULT_SOURCE:
            entries = parse_body(headers.get("content-type"), body)
            return Parsed(tuple(Candidate(e.document.to_json()) for e in entries))
        # Validation runs inside parse_body, at the body's own paths.
        entries = parse_body(headers.get("content-type"), body, _named(config))
        return Parsed(tuple(Candidate(e.document.to_json()) for e in entries))

    def respond(self, outcome: Outcome, headers: Mapping[str, str], *, now: float) -> Reply:
        return json_reply(outcome)


def _named(config: SourceConfig) -> Any:
    """The document a named native source's sender wrote, as this app keeps it."""

    def adapt(value: object) -> object:
        value = sender_fields(value)
        if not isinstance(value, dict) or not isinstance(value.get("externalAppointmentId"), str):
            return value  # validation says what is wrong, at the sender's own paths
        own_id = value["externalAppointmentId"]
        document = dict(value)
        document["externalAppointmentId"] = external_id(config.name, own_id)
        document["sourceAppointmentId"] = own_id
        document["source"] = config.name
        document.setdefault("timeZone", config.time_zone)
        if config.subject is not None:
            document["subject"] = config.subject
        settings = document.get("settings")
        defaults = {
            "sendSmsNotifications": config.send_sms,
            "sendSmsReminder": config.send_sms_reminder,
            "sendEmailNotifications": config.send_email,
        }
        if settings is None:
            document["settings"] = defaults
        elif isinstance(settings, dict):
            document["settings"] = defaults | settings
        return document

    return adapt


KIND = NativeKind()
