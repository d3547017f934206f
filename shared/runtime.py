"""Process-wide adapters, built on first use and reused by every invocation.

Functions keeps a worker process alive across invocations, so clients (and their connection
pools and token caches) are created once, lazily, so that a function that does not need one
never pays for it.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING

from shared import settings
from shared.directory import Directory
from shared.storage import AppointmentStore, EventQueue, OrganizerTable

if TYPE_CHECKING:
    from shared.attendance_check import AttendanceCheck
    from shared.callback_delivery import CallbackDelivery
    from shared.graph import GraphGateway
    from shared.outbound import CallbackClient
    from shared.reconciler import Reconciler
    from shared.retention_run import RetentionRun

# The SDKs log every HTTP request at INFO: noise, and ingestion cost in Application Insights.
# The app logs one line per webhook and per reconciliation instead; SDK warnings still show.
for _name in ("azure", "httpx", "httpcore", "msal", "kiota_http"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@cache
def store() -> AppointmentStore:
    return AppointmentStore.from_settings(settings.current().storage)


@cache
def queue() -> EventQueue:
    return EventQueue.from_settings(settings.current().storage)


@cache
def callback_queue() -> EventQueue:
    return EventQueue.callbacks_from_settings(settings.current().storage)


@cache
def attendance_queue() -> EventQueue:
    return EventQueue.attendance_from_settings(settings.current().storage)


@cache
def attendance_check() -> AttendanceCheck:
    from shared.attendance_check import AttendanceCheck, Timing
    from shared.storage import ConcurrencyConflict

    current = settings.current()
    return AttendanceCheck(
        store(),
        attendance_queue(),
        graph_gateway,
        Timing(
            current.attendance_delay_seconds,
            current.attendance_retry_seconds,
            current.attendance_window_seconds,
        ),
        is_conflict=lambda error: isinstance(error, ConcurrencyConflict),
        callback_queue=callback_queue(),
        has_callbacks=lambda source: settings.current().callback_target(source) is not None,
    )


@cache
def callback_client() -> CallbackClient:
    """One pooled HTTP client for callbacks per process."""
    from shared.outbound import CallbackClient

    return CallbackClient()


@cache
def callback_delivery() -> CallbackDelivery:
    from shared.callback_delivery import CallbackDelivery

    current = settings.current()
    return CallbackDelivery(
        store(),
        callback_queue(),
        callback_client,
        current.callback_target,
        current.callback_retry_schedule,
    )


@cache
def directory() -> Directory:
    """One directory (and its one-minute cache of found entries) per process."""
    return Directory(OrganizerTable.from_settings(settings.current().storage))


@cache
def graph_gateway() -> GraphGateway:
    """One Graph credential and client per process (created on first Graph call)."""
    from shared.graph import GraphGateway

    return GraphGateway(settings.current())


@cache
def reconciler() -> Reconciler:
    from shared.reconciler import Reconciler

    return Reconciler(
        store(),
        queue(),
        graph_gateway,
        settings.queue_semantics(),
        directory=directory(),
        callback_queue=callback_queue(),
        has_callbacks=lambda source: settings.current().callback_target(source) is not None,
        mail_sender=settings.current().mail_sender,
        retry_window_seconds=settings.current().retry_window_seconds,
        attendance_queue=attendance_queue() if settings.current().attendance_enabled else None,
        attendance_delay_seconds=settings.current().attendance_delay_seconds,
        retention_days=settings.current().retention_days,
    )


@cache
def retention() -> RetentionRun:
    """The retention pass (RETENTION_DAYS), its clock the wall clock."""
    from shared.retention_run import RetentionRun

    return RetentionRun(store(), settings.current().retention_days, queue=queue())
