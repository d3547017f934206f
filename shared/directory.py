"""The organizer directory: a source's own host identifiers mapped to Teams users.

Senders name their hosts in their own terms (an HL7 personnel id, a Calendly e-mail); Teams
needs an Entra user. `resolve_user` applies the contract's order (the directory entry, else
the identifier itself when it is an object id or an e-mail address, else unmapped). Entries
live in the table `organizers`; found entries are cached in the process for a minute, so a
resolved organizer costs no table read per message, and a saved entry takes effect within a
minute everywhere. Unmapped results are never cached: an entry saved a moment ago counts.

When a version fails `organizerUnmapped`, the appointment is noted under its (source,
identifier); saving that entry replays each noted appointment at once (`unblock`).

Framework-free: the HTTP functions and the reconciler call it; the table is an adapter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from shared.documents import (
    MAX_IDENTIFIER,
    FieldError,
    field_errors,
    has_control,
    is_email,
    is_object_id,
    is_user_principal_name,
    json_pointer,
)
from shared.sources.base import DEFAULT_SOURCE

CACHE_SECONDS = 60.0
MAX_ENTRIES = 500
ROUTE = "PUT /api/organizers"


@dataclass(frozen=True)
class Entry:
    """One mapping: the source's identifier for a host, and the Teams user (UPN or id)."""

    source: str
    identifier: str
    user: str
    updated: str = ""  # RFC 3339, set when stored

    def to_json(self) -> dict[str, str]:
        return {
            "source": self.source,
            "identifier": self.identifier,
            "user": self.user,
            "updatedDateTime": self.updated,
        }


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9]{1,32}$")]
    identifier: Annotated[StrictStr, Field(min_length=1, max_length=MAX_IDENTIFIER)]
    user: Annotated[StrictStr, Field(min_length=1, max_length=320)]

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.lower() == DEFAULT_SOURCE:
            raise ValueError(
                f"must not be '{DEFAULT_SOURCE}': its documents name the Teams user directly"
            )
        return value.lower()

    @field_validator("identifier")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if has_control(value) or not value.strip():
            raise ValueError("must be text without control characters")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not (is_object_id(value) or is_user_principal_name(value)):
            raise ValueError("must be an Entra object id (GUID) or a user principal name")
        return value


def parse_entries(value: object) -> list[Entry] | list[FieldError]:
    """The body of PUT /api/organizers: one entry or an array of 1 to 500."""
    items = value if isinstance(value, list) else [value]
    prefix: Callable[[int], tuple[int | str, ...]] = (
        (lambda i: (i,)) if isinstance(value, list) else (lambda i: ())
    )
    if isinstance(value, list) and not 1 <= len(value) <= MAX_ENTRIES:
        return [FieldError("", f"must be an array of 1 to {MAX_ENTRIES} entries")]
    entries: list[Entry] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            message = "must be an object {source, identifier, user}"
            errors.append(FieldError(json_pointer(prefix(index)), message))
            continue
        try:
            model = _EntryModel.model_validate(item)
        except ValidationError as failure:
            errors.extend(field_errors(failure, prefix(index)))
            continue
        entries.append(Entry(model.source, model.identifier, model.user))
    return errors or _last_of_each(entries)


def _last_of_each(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per (source, identifier): the last in the body wins, as separate PUTs would."""
    unique = {(e.source, e.identifier.lower()): e for e in entries}
    return list(unique.values())


def resolve_user(identifier: str, entry: Entry | None) -> str | None:
    """The Teams user for a source's identifier, in the contract's order; None: unmapped."""
    if entry is not None:
        return entry.user
    if is_object_id(identifier) or is_email(identifier):
        return identifier
    return None


def unmapped_message(source: str, identifier: str) -> str:
    """The record's error message: names the source, the identifier and the route to fix it.

    The identifier is a host's id in the sender (a personnel number, a host's e-mail), not a
    client's, so it may be shown; it is quoted and cut short.
    """
    shown = identifier if len(identifier) <= 80 else identifier[:77] + "..."
    return (
        f"Source '{source}' names the organizer '{shown}', which is neither in the organizer "
        "directory nor an Entra object id or e-mail address. Map it with "
        f'{ROUTE} {{"source": "{source}", "identifier": ..., "user": "<UPN or object id>"}}; '
        "the appointment is reconciled again as soon as the entry is saved."
    )


class DirectoryTable(Protocol):
    """The storage the directory needs (shared/storage.py `OrganizerTable`)."""

    def get(self, source: str, identifier: str) -> Entry | None: ...
    def save(self, entries: Sequence[Entry], updated: str) -> None: ...
    def delete(self, source: str, identifier: str) -> None: ...
    def page(self, source: str, token: str | None) -> tuple[list[Entry], str | None]: ...
    def note_waiting(self, source: str, identifier: str, external_id: str) -> None: ...
    def waiting(self, source: str, identifier: str) -> list[str]: ...
    def forget_waiting(self, source: str, identifier: str, external_id: str) -> None: ...


class Directory:
    """Lookups with a one-minute cache of found entries, shared by a process's threads."""

    def __init__(
        self, table: DirectoryTable, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._table = table
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Entry]] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def table(self) -> DirectoryTable:
        return self._table

    def lookup(self, source: str, identifier: str, *, fresh: bool = False) -> Entry | None:
        """The entry for (source, identifier): at most one table read per minute if found.

        Threads that miss the cache for the same key wait for one read instead of each
        making their own.
        """
        key = (source, identifier.lower())
        if not fresh:
            cached = self._cached(key)
            if cached is not None:
                return cached
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if not fresh:
                cached = self._cached(key)
                if cached is not None:
                    return cached
            entry = self._table.get(source, identifier)
            with self._lock:
                if entry is None:
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = (self._clock(), entry)
                self._key_locks.pop(key, None)
        return entry

    def _cached(self, key: tuple[str, str]) -> Entry | None:
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        return None

    def resolve(self, source: str, identifier: str, *, fresh: bool = False) -> str | None:
        """The Teams user (UPN or object id) for a source's organizer identifier, or None."""
        return resolve_user(identifier, self.lookup(source, identifier, fresh=fresh))

    def forget(self, source: str, identifier: str) -> None:
        """Drop a cached entry (this process saved or deleted it)."""
        with self._lock:
            self._cache.pop((source, identifier.lower()), None)

    def save(self, entries: Sequence[Entry], updated: str, replay: Callable[[str], None]) -> int:
        """Store entries, then replay every appointment waiting on one of them.

        Returns how many appointments were replayed. A replay that fails leaves its note, so
        saving the entry again (the caller retries on a 503) replays it then.
        """
        self._table.save(entries, updated)
        replayed = 0
        for entry in entries:
            self.forget(entry.source, entry.identifier)
            for external_id in self._table.waiting(entry.source, entry.identifier):
                replay(external_id)
                self._table.forget_waiting(entry.source, entry.identifier, external_id)
                replayed += 1
        return replayed

    def delete(self, source: str, identifier: str) -> None:
        self._table.delete(source, identifier)
        self.forget(source, identifier)
