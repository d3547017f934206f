"""Queue functions: reconcile each appointment event, deliver each callback, check each
appointment's attendance. Thin adapters.

Imports nothing of the Graph SDK at load time (the Graph helper is created on first use), so
registering it beside the HTTP functions costs the webhook path nothing.
"""

from __future__ import annotations

import azure.functions as func

from shared import runtime
from shared.settings import (
    ATTENDANCE_QUEUE_NAME,
    CALLBACK_QUEUE_NAME,
    QUEUE_NAME,
    STORAGE_SETTING,
)

blueprint = func.Blueprint()


@blueprint.function_name("reconcile_appointment_event")
@blueprint.queue_trigger(arg_name="msg", queue_name=QUEUE_NAME, connection=STORAGE_SETTING)
def reconcile_appointment_event(msg: func.QueueMessage) -> None:
    """Make Graph match the newest document of the message's appointment.

    Raising hands the message back to the host, which redelivers it after host.json's
    visibilityTimeout and moves it to the poison queue after maxDequeueCount attempts.
    """
    text = msg.get_body().decode("utf-8", errors="replace")
    runtime.reconciler().handle(text, msg.dequeue_count or 1)


@blueprint.function_name("deliver_callback")
@blueprint.queue_trigger(arg_name="msg", queue_name=CALLBACK_QUEUE_NAME, connection=STORAGE_SETTING)
def deliver_callback(msg: func.QueueMessage) -> None:
    """POST one owed callback to its source's callback URL.

    Its own function, so a slow or dead receiver never holds up a reconciliation. Failed
    attempts are re-sent by CallbackDelivery on the app's retry schedule; raising (storage
    trouble) hands the message back to the host.
    """
    text = msg.get_body().decode("utf-8", errors="replace")
    runtime.callback_delivery().handle(text)


@blueprint.function_name("check_attendance")
@blueprint.queue_trigger(
    arg_name="msg", queue_name=ATTENDANCE_QUEUE_NAME, connection=STORAGE_SETTING
)
def check_attendance(msg: func.QueueMessage) -> None:
    """Read who joined an appointment's meeting once it has ended (shared/attendance_check.py).

    Each message re-sends itself while it is not due yet or no report exists yet; raising
    (storage trouble) hands it back to the host, which moves it to
    `appointment-attendance-poison` after maxDequeueCount attempts.
    """
    text = msg.get_body().decode("utf-8", errors="replace")
    runtime.attendance_check().handle(text)
