"""Timer functions: the daily retention pass. A thin adapter, like the queue functions.

The schedule is NCRONTAB in UTC (the host's default time zone): daily at 02:30, a quiet hour
for most senders. Azure Functions runs a timer function on one instance at a time (a blob
lease), and a run that was missed while the app was stopped runs once when it starts again
(`useMonitor`, on by default for schedules longer than a minute).
"""

from __future__ import annotations

import azure.functions as func

from shared import runtime

RETENTION_SCHEDULE = "0 30 2 * * *"

blueprint = func.Blueprint()


@blueprint.function_name("apply_retention")
@blueprint.timer_trigger(schedule=RETENTION_SCHEDULE, arg_name="timer", run_on_startup=False)
def apply_retention(timer: func.TimerRequest) -> None:
    """Pseudonymize the clients of appointments past RETENTION_DAYS (shared/retention_run.py).

    Bounded per run; the next run goes on where this one stopped. Raising (storage trouble)
    fails this run only: the next one starts from the saved cursor.
    """
    runtime.retention().run()
