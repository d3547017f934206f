"""Process-wide adapters, built on first use and reused by every invocation.

Functions keeps a worker process alive across invocations, so clients (and their connection
pools and token caches) are created once, lazily, so that a function that does not need one
never pays for it.
"""

from __future__ import annotations

from functools import cache

from shared import settings
from shared.storage import AppointmentStore, EventQueue


@cache
def store() -> AppointmentStore:
    return AppointmentStore.from_settings(settings.current().storage)


@cache
def queue() -> EventQueue:
    return EventQueue.from_settings(settings.current().storage)
