"""Appointments assembled from several deliveries, one per party (Calendly's invitees). Pure.

Each party's newest delivery wins, whatever the order or duplication of deliveries, and the
appointment is a function of the set of newest parts alone: that makes the result independent
of delivery order (a property test throws every order and duplication at it).

Its version must still grow with every change, or the store would take a changed document for
a duplicate of the last: `next_version` is the newest party's version, or one microsecond past
the stored version when that is not later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from shared.documents import parse_rfc3339, version_key
from shared.sources.base import Part

ONE_TICK = timedelta(microseconds=1)


def _order(part: Part) -> tuple[str, int]:
    # Equal versions of one party: the cancellation wins, so the tie has one answer.
    return (version_key(parse_rfc3339(part.version)), 1 if part.client is None else 0)


def merge(parts: Mapping[str, Part], new: Part) -> dict[str, Part]:
    """`parts` with `new` in, where it is the newest delivery of its party."""
    merged = dict(parts)
    current = merged.get(new.key)
    if current is None or _order(new) > _order(current):
        merged[new.key] = new
    return merged


def combine(parts: Iterable[Part], version: str) -> dict[str, Any]:
    """The document the newest parts describe, as version `version`.

    Clients are the parties still booked, in a fixed order (their keys); event fields come from
    the newest part, so a later delivery's corrections win. No party booked: cancelled.
    """
    ordered = sorted(parts, key=lambda p: p.key)
    if not ordered:
        raise ValueError("an appointment needs at least one part")
    newest = max(ordered, key=lambda p: (_order(p), p.key))
    booked = [p for p in ordered if p.client is not None]
    document = dict(newest.base)
    document["lastModifiedDateTime"] = version
    warnings = sorted({w for p in booked for w in p.base.get("warnings", [])})
    if warnings:
        document["warnings"] = warnings
    else:
        document.pop("warnings", None)
    if booked:
        document["status"] = "scheduled"
        document["appointmentClients"] = [p.client for p in booked]
    else:
        document["status"] = "cancelled"
        document.pop("appointmentClients", None)
    return document


def compact(parts: Mapping[str, Part]) -> dict[str, Part]:
    """The parts as the desired row keeps them: only the newest keeps its event fields.

    `combine` reads the event fields of the newest part alone (and the warnings of the booked
    ones), so the others need only their key, version, client and warnings. A group event's
    parts, cancelled invitees included, then fit one table property (32K characters) for
    about 180 invitees with Calendly's URIs as keys, instead of about fifty.
    """
    if not parts:
        return {}
    newest = max(parts.values(), key=lambda p: (_order(p), p.key))
    kept: dict[str, Part] = {}
    for key, part in parts.items():
        if part is newest:
            kept[key] = part
            continue
        warnings = part.base.get("warnings")
        base: dict[str, Any] = (
            {"warnings": warnings} if part.client is not None and warnings else {}
        )
        kept[key] = Part(part.key, part.version, part.client, base)
    return kept


def next_version(parts: Iterable[Part], stored_version: str | None) -> str:
    """The newest party's version, or one microsecond past `stored_version` if not later.

    RFC 3339 in UTC with microseconds, as `version_key` writes it.
    """
    newest = max(parse_rfc3339(p.version) for p in parts)
    if stored_version is not None:
        floor = parse_rfc3339(stored_version) + ONE_TICK
        newest = max(newest, floor)
    return version_key(newest)


def to_json(part: Part) -> dict[str, Any]:
    """A part as the desired row and the queue message keep it."""
    return {"key": part.key, "version": part.version, "client": part.client, "base": part.base}


def from_json(value: Any) -> Part:
    """A part from its stored or queued form; ValueError, KeyError or TypeError if not one."""
    client = value["client"]
    if not isinstance(value["key"], str) or not isinstance(value["base"], dict):
        raise ValueError("not a part")
    if client is not None and not isinstance(client, dict):
        raise ValueError("not a part")
    parse_rfc3339(value["version"])
    return Part(value["key"], value["version"], client, value["base"])
