"""The planner alone: the contract's Graph call-count table is a property of `plan`.

Pure: documents and states in, operations out; no storage, no Graph.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.documents import version_key
from shared.planning import (
    CURRENT,
    NEW,
    NO_BROWSER_LINK_WARNING,
    NO_SMS_WARNING,
    REMINDER,
    CreateOrGetMeeting,
    DeleteMeeting,
    FetchClientJoinUrl,
    MeetingFacts,
    Operation,
    Outcome,
    SendEmail,
    SendReminderSms,
    SendSms,
    UpdateMeeting,
    cleanup,
    external_id,
    fail,
    is_settled,
    mail_marker,
    plan,
    progress,
    settle,
    sms_marker,
)
from shared.records import AppliedState, ErrorInfo, Intent
from tests.unit.factories import ORGANIZER_GUID, cancelled, doc, valid

OTHER = "22222222-2222-4222-8222-222222222222"
SMS_ON = {"sendSmsNotifications": True}
CLIENT = [{"displayName": "Sam", "smsCapablePhoneNumber": "+13125550123"}]


def kinds(operations: tuple[Operation, ...]) -> list[str]:
    """Each operation as `<Type>:<slot>` (and the SMS kind), to compare whole plans at a glance."""
    names = []
    for op in operations:
        name = f"{type(op).__name__}:{op.slot}"
        names.append(f"{name}:{op.kind}" if isinstance(op, SendSms) else name)
    return names


def applied(**fields: Any) -> AppliedState:
    """The state after version `lastModifiedDateTime` 10:00 was applied with a meeting."""
    document = valid(doc(**({"appointmentClients": CLIENT} | fields)))
    return AppliedState(
        status="scheduled",
        version=version_key(document.version),
        document=document,
        organizer_id=ORGANIZER_GUID,
        meeting_id="meeting-1",
        join_web_url="https://teams.example/join",
        client_join_web_url="https://visit.example/join",
        external_meeting_id=external_id("appt-1", 0),
        generation=1,
    )


def later(**fields: Any) -> dict[str, Any]:
    return doc(
        **({"lastModifiedDateTime": "2026-11-20T11:00:00Z", "appointmentClients": CLIENT} | fields)
    )


# --- the call-count table -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ["CreateOrGetMeeting:new", "FetchClientJoinUrl:new"]),
        (SMS_ON, ["CreateOrGetMeeting:new", "FetchClientJoinUrl:new", "SendSms:new:confirmation"]),
        ({"allowClientToJoinUsingBrowser": False}, ["CreateOrGetMeeting:new"]),
    ],
)
def test_new_scheduled(settings: dict[str, Any], expected: list[str]) -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=settings))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID)
    assert kinds(the_plan.operations) == expected
    [create] = [op for op in the_plan.operations if isinstance(op, CreateOrGetMeeting)]
    assert create.external_id == external_id("appt-1", 0)
    assert the_plan.intent == Intent(ORGANIZER_GUID, 0)
    assert the_plan.generation == 1


def test_time_change_is_one_patch_and_a_reschedule_sms_when_asked() -> None:
    state = applied(settings=SMS_ON)
    document = valid(
        later(
            startDateTime="2026-12-01T10:00:00Z",
            endDateTime="2026-12-01T10:30:00Z",
            settings=SMS_ON,
        )
    )
    the_plan = plan(document, state, ORGANIZER_GUID)
    assert kinds(the_plan.operations) == ["UpdateMeeting:current", "SendSms:current:reschedule"]
    [update] = [op for op in the_plan.operations if isinstance(op, UpdateMeeting)]
    assert (update.start, update.end, update.subject) == (document.start, document.end, None)


def test_subject_change_is_one_patch_and_no_sms() -> None:
    the_plan = plan(
        valid(later(subject="New", settings=SMS_ON)), applied(settings=SMS_ON), ORGANIZER_GUID
    )
    assert kinds(the_plan.operations) == ["UpdateMeeting:current"]


def test_organizer_change_creates_under_the_new_one_then_deletes_the_old() -> None:
    state = applied(settings=SMS_ON)
    the_plan = plan(valid(later(organizer=OTHER, settings=SMS_ON)), state, OTHER)
    assert kinds(the_plan.operations) == [
        "CreateOrGetMeeting:new",
        "FetchClientJoinUrl:new",
        "DeleteMeeting:current",
        "SendSms:new:reschedule",
    ]
    assert the_plan.intent == Intent(OTHER, 1)  # a generation never used before


def test_cancellation_texts_before_it_deletes() -> None:
    state = applied(settings=SMS_ON)
    the_plan = plan(valid(cancelled()), state, None)
    assert kinds(the_plan.operations) == ["SendSms:current:cancellation", "DeleteMeeting:current"]


def test_cancellation_of_an_appointment_never_scheduled_needs_no_call() -> None:
    assert plan(valid(cancelled()), AppliedState(), None).operations == ()


def test_duplicate_and_stale_are_settled() -> None:
    state = applied()
    assert is_settled(valid(doc()), state, replay=False)  # same lastModifiedDateTime
    assert is_settled(valid(doc(lastModifiedDateTime="2026-11-19T10:00:00Z")), state, replay=False)
    assert not is_settled(valid(later()), state, replay=False)


def test_a_failed_version_is_settled_unless_replayed() -> None:
    document = valid(later())
    state = replace(applied(), failed_version=version_key(document.version))
    assert is_settled(document, state, replay=False)
    assert not is_settled(document, state, replay=True)


# --- after interruptions and failures ------------------------------------------------------


def test_a_meeting_created_before_an_interruption_gets_its_confirmation() -> None:
    # createOrGet succeeded, then the attempt stopped: the meeting is recorded, no version is.
    state = replace(applied(), document=None, version=None, client_join_web_url=None)
    the_plan = plan(valid(doc(appointmentClients=CLIENT, settings=SMS_ON)), state, ORGANIZER_GUID)
    assert kinds(the_plan.operations) == [
        "UpdateMeeting:current",
        "FetchClientJoinUrl:current",
        "SendSms:current:confirmation",
    ]


def test_an_sms_already_sent_for_this_version_is_not_sent_again() -> None:
    document = valid(cancelled())
    state = replace(applied(settings=SMS_ON), notified=sms_marker("cancellation", document))
    assert kinds(plan(document, state, None).operations) == ["DeleteMeeting:current"]


def test_progress_remembers_the_sms_sent_and_settle_forgets_it() -> None:
    state = applied(settings=SMS_ON)
    the_plan = plan(valid(cancelled()), state, None)
    outcome = Outcome(sms_sent=["cancellation"])
    midway = progress(state, the_plan, outcome)
    assert midway.notified == sms_marker("cancellation", the_plan.document)
    assert settle(midway, the_plan, Outcome(deleted={CURRENT})).notified is None


def test_a_refused_create_leaves_no_intent_behind() -> None:
    document = valid(doc())
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID)
    assert the_plan.intent is not None
    leased = replace(AppliedState(), intents=(the_plan.intent,))  # recorded with the lease
    refused = Outcome(refused={NEW})
    failed = fail(leased, the_plan, refused, ErrorInfo("accessPolicyMissing", "..."))
    assert failed.intents == ()
    assert failed.meeting_id is None
    assert failed.failed_version == version_key(document.version)


def test_a_created_meeting_deleted_again_is_no_intent_and_the_old_one_stays() -> None:
    state = applied()
    the_plan = plan(valid(later(organizer=OTHER)), state, OTHER)
    assert the_plan.intent is not None
    leased = replace(state, intents=(the_plan.intent,))
    outcome = Outcome(meetings={NEW: MeetingFacts(OTHER, "meeting-2", "x")}, deleted={NEW})
    failed = fail(leased, the_plan, outcome, ErrorInfo("invalidRequest", "..."))
    assert (failed.meeting_id, failed.organizer_id, failed.intents) == (
        "meeting-1",
        ORGANIZER_GUID,
        (),
    )


def test_cleanup_only_deletes_leftovers_and_keeps_the_failure() -> None:
    stray = Intent(OTHER, 1)
    state = replace(
        applied(),
        status="failed",
        error=ErrorInfo("invalidRequest", "..."),
        failed_version="v-later",
        intents=(stray,),
        generation=2,
    )
    assert state.document is not None
    the_plan = cleanup(state.document, state)
    assert kinds(the_plan.operations) == ["CreateOrGetMeeting:stray:0", "DeleteMeeting:stray:0"]
    [recover] = [op for op in the_plan.operations if isinstance(op, CreateOrGetMeeting)]
    assert (recover.organizer_id, recover.external_id) == (OTHER, external_id("appt-1", 1))

    done = settle(state, the_plan, Outcome(deleted={"stray:0"}))
    assert (done.status, done.error, done.failed_version) == (state.status, state.error, "v-later")
    assert (done.intents, done.meeting_id, done.version) == ((), "meeting-1", state.version)


def test_a_stray_graph_will_not_give_back_is_forgotten() -> None:
    stray = Intent(OTHER, 1)
    state = replace(applied(), intents=(stray,), generation=2)
    assert state.document is not None
    the_plan = cleanup(state.document, state)
    done = settle(state, the_plan, Outcome(refused={"stray:0"}))
    assert done.intents == ()


def test_a_deleted_meeting_takes_its_organizer_id_with_it() -> None:
    state = applied()
    the_plan = plan(valid(cancelled()), state, None)
    done = settle(state, the_plan, Outcome(deleted={CURRENT}))
    assert (done.status, done.meeting_id, done.organizer_id) == ("cancelled", None, None)


def test_unknown_windows_zone_is_a_warning_not_a_silent_utc() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=SMS_ON, timeZone="EST5EDT"))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID)
    [sms] = [op for op in the_plan.operations if isinstance(op, SendSms)]
    assert sms.attendees[0].time_zone == "UTC"
    assert any("EST5EDT" in warning for warning in the_plan.warnings)


def test_delete_operations_name_their_slots() -> None:
    # A plan never deletes a meeting it has not been told about.
    state = replace(applied(), intents=(Intent(OTHER, 1),), generation=2)
    the_plan = plan(valid(cancelled()), state, None)
    deletes = [op.slot for op in the_plan.operations if isinstance(op, DeleteMeeting)]
    creates = [op.slot for op in the_plan.operations if isinstance(op, CreateOrGetMeeting)]
    assert deletes == [CURRENT, "stray:0"]
    assert creates == ["stray:0"]
    assert not [op for op in the_plan.operations if isinstance(op, FetchClientJoinUrl)]


# --- who Graph can text, and where ------------------------------------------------------------


def test_only_united_states_numbers_get_an_sms() -> None:
    clients = [
        {"displayName": "US", "smsCapablePhoneNumber": "+13125550123"},
        {"displayName": "Toronto", "smsCapablePhoneNumber": "+14165550123"},
        {"displayName": "Jamaica", "smsCapablePhoneNumber": "+18765550123"},
        {"displayName": "London", "smsCapablePhoneNumber": "+442071838750"},
    ]
    document = valid(doc(appointmentClients=clients, settings=SMS_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID)
    [sms] = [op for op in the_plan.operations if isinstance(op, SendSms)]
    assert [a.phone_number for a in sms.attendees] == ["+13125550123"]
    skipped = [w for w in the_plan.warnings if "United States numbers only" in w]
    assert [w.split(":")[0] for w in skipped] == [
        "appointmentClients/1",
        "appointmentClients/2",
        "appointmentClients/3",
    ]
    assert not any("+1" in w or "+44" in w for w in the_plan.warnings)  # no number on record


def test_outside_the_global_cloud_no_browser_link_and_no_sms_but_a_warning() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=SMS_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, global_features=False)
    assert kinds(the_plan.operations) == ["CreateOrGetMeeting:new"]
    assert the_plan.warnings == (NO_BROWSER_LINK_WARNING, NO_SMS_WARNING)
    done = settle(AppliedState(), the_plan, Outcome())
    assert done.warnings == (NO_BROWSER_LINK_WARNING, NO_SMS_WARNING)


def test_outside_the_global_cloud_a_reschedule_is_the_patch_alone() -> None:
    state = replace(applied(settings=SMS_ON), client_join_web_url=None)
    document = valid(
        later(
            startDateTime="2026-12-01T10:00:00Z",
            endDateTime="2026-12-01T10:30:00Z",
            settings=SMS_ON,
        )
    )
    the_plan = plan(document, state, ORGANIZER_GUID, global_features=False)
    assert kinds(the_plan.operations) == ["UpdateMeeting:current"]
    assert NO_SMS_WARNING in the_plan.warnings


def test_outside_the_global_cloud_only_asked_for_features_are_warned_about() -> None:
    document = valid(doc(settings={"allowClientToJoinUsingBrowser": False}))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, global_features=False)
    assert kinds(the_plan.operations) == ["CreateOrGetMeeting:new"]
    assert the_plan.warnings == ()
    state = applied(settings=SMS_ON)
    cancel = plan(valid(cancelled()), state, None, global_features=False)
    assert kinds(cancel.operations) == ["DeleteMeeting:current"]
    assert cancel.warnings == (NO_SMS_WARNING,)


def test_the_global_cloud_is_the_default() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=SMS_ON))
    assert plan(document, AppliedState(), ORGANIZER_GUID) == plan(
        document, AppliedState(), ORGANIZER_GUID, global_features=True
    )


# --- the SMS reminder ------------------------------------------------------------------------

REMINDER_ON = {"sendSmsNotifications": True, "sendSmsReminder": True}
# A day before the factories' start (2026-12-01T09:00Z): far enough away for a reminder.
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MOVED = {"startDateTime": "2026-12-01T10:00:00Z", "endDateTime": "2026-12-01T10:30:00Z"}


def test_a_reminder_follows_the_confirmation_and_goes_to_the_same_numbers() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=REMINDER_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, now=NOW)
    assert kinds(the_plan.operations) == [
        "CreateOrGetMeeting:new",
        "FetchClientJoinUrl:new",
        "SendSms:new:confirmation",
        "SendReminderSms:new",
    ]
    sms, reminder = the_plan.operations[-2:]
    assert isinstance(sms, SendSms)
    assert isinstance(reminder, SendReminderSms)
    assert reminder.attendees == sms.attendees


def test_a_reminder_for_each_version_whose_time_changed() -> None:
    state = applied(settings=REMINDER_ON)
    moved = plan(valid(later(settings=REMINDER_ON, **MOVED)), state, ORGANIZER_GUID, now=NOW)
    assert kinds(moved.operations) == [
        "UpdateMeeting:current",
        "SendSms:current:reschedule",
        "SendReminderSms:current",
    ]
    other = plan(
        valid(later(organizer=OTHER, settings=REMINDER_ON)), state, OTHER, now=NOW
    ).operations
    assert kinds(other)[-2:] == ["SendSms:new:reschedule", "SendReminderSms:new"]


def test_no_reminder_on_a_subject_only_change() -> None:
    state = applied(settings=REMINDER_ON)
    renamed = plan(
        valid(later(subject="New", settings=REMINDER_ON)), state, ORGANIZER_GUID, now=NOW
    )
    assert kinds(renamed.operations) == ["UpdateMeeting:current"]


def test_no_reminder_without_sms_or_without_asking() -> None:
    without_sms = {"sendSmsNotifications": False, "sendSmsReminder": True}
    for settings in (without_sms, SMS_ON):
        document = valid(doc(appointmentClients=CLIENT, settings=settings))
        operations = plan(document, AppliedState(), ORGANIZER_GUID, now=NOW).operations
        assert not any(isinstance(op, SendReminderSms) for op in operations)


def test_no_reminder_when_the_start_is_less_than_15_minutes_away() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=REMINDER_ON))
    assert document.start is not None
    for now, expected in (
        (document.start - timedelta(minutes=15), True),
        (document.start - timedelta(minutes=14, seconds=59), False),
        (document.start + timedelta(hours=1), False),
        (None, False),  # without a clock nothing says the start is far enough away
    ):
        operations = plan(document, AppliedState(), ORGANIZER_GUID, now=now).operations
        assert any(isinstance(op, SendReminderSms) for op in operations) is expected, now
        assert kinds(operations)[2] == "SendSms:new:confirmation"  # the SMS goes regardless


def test_no_reminder_on_a_cancellation() -> None:
    state = applied(settings=REMINDER_ON)
    the_plan = plan(valid(cancelled()), state, None, now=NOW)
    assert kinds(the_plan.operations) == ["SendSms:current:cancellation", "DeleteMeeting:current"]


def test_non_us_numbers_get_no_reminder_and_one_warning_each() -> None:
    clients = [
        {"displayName": "US", "smsCapablePhoneNumber": "+13125550123"},
        {"displayName": "London", "smsCapablePhoneNumber": "+442071838750"},
    ]
    document = valid(doc(appointmentClients=clients, settings=REMINDER_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, now=NOW)
    [reminder] = [op for op in the_plan.operations if isinstance(op, SendReminderSms)]
    assert [a.phone_number for a in reminder.attendees] == ["+13125550123"]
    assert [w for w in the_plan.warnings if "United States" in w] == [
        "appointmentClients/1: SMS not sent; Microsoft Graph texts United States numbers only"
    ]
    london = valid(doc(appointmentClients=clients[1:], settings=REMINDER_ON))
    alone = plan(london, AppliedState(), ORGANIZER_GUID, now=NOW)
    assert kinds(alone.operations) == ["CreateOrGetMeeting:new", "FetchClientJoinUrl:new"]
    assert len(alone.warnings) == 1


def test_outside_the_global_cloud_no_reminder_and_the_one_sms_warning() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=REMINDER_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, global_features=False, now=NOW)
    assert kinds(the_plan.operations) == ["CreateOrGetMeeting:new"]
    assert the_plan.warnings == (NO_BROWSER_LINK_WARNING, NO_SMS_WARNING)


def test_a_retry_sends_neither_text_again_once_the_reminder_went_out() -> None:
    document = valid(later(settings=REMINDER_ON, **MOVED))
    state = applied(settings=REMINDER_ON)
    first = plan(document, state, ORGANIZER_GUID, now=NOW)
    # The SMS went out, then the attempt stopped before the reminder: only the reminder is left.
    after_sms = progress(state, first, Outcome(sms_sent=["reschedule"]))
    assert after_sms.notified == sms_marker("reschedule", document)
    retry = plan(document, after_sms, ORGANIZER_GUID, now=NOW)
    assert kinds(retry.operations) == ["UpdateMeeting:current", "SendReminderSms:current"]
    # Both went out, then the attempt stopped: neither is sent again.
    after_both = progress(state, first, Outcome(sms_sent=["reschedule"], reminder_sent=True))
    assert after_both.notified == sms_marker(REMINDER, document)
    assert kinds(plan(document, after_both, ORGANIZER_GUID, now=NOW).operations) == [
        "UpdateMeeting:current"
    ]
    assert settle(after_both, first, Outcome()).notified is None


def test_a_document_without_the_reminder_setting_plans_as_before() -> None:
    document = valid(doc(appointmentClients=CLIENT, settings=SMS_ON))
    assert plan(document, AppliedState(), ORGANIZER_GUID, now=NOW) == plan(
        document, AppliedState(), ORGANIZER_GUID
    )


# --- client e-mail ----------------------------------------------------------------------------

MAIL_ON = {"sendEmailNotifications": True}
SENDER = "appointments@contoso.com"
MAILED = [
    {"displayName": "Sam", "emailAddress": "sam@example.com"},
    {"displayName": "No address", "smsCapablePhoneNumber": "+13125550123"},
    {"displayName": "Kim", "emailAddress": "kim@example.com"},
]


def mails(operations: tuple[Operation, ...]) -> list[tuple[str, int]]:
    return [(op.kind, op.client_index) for op in operations if isinstance(op, SendEmail)]


def test_one_e_mail_per_client_with_an_address_on_confirmation() -> None:
    document = valid(doc(appointmentClients=MAILED, settings=MAIL_ON))
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID, mail_sender=SENDER)
    assert mails(the_plan.operations) == [("confirmation", 0), ("confirmation", 2)]
    assert all(op.sequence == 1 for op in the_plan.operations if isinstance(op, SendEmail))
    assert the_plan.warnings == ()


def test_a_time_change_mails_a_reschedule_with_a_growing_sequence() -> None:
    state = replace(applied(appointmentClients=MAILED, settings=MAIL_ON), finished_versions=4)
    moved = later(appointmentClients=MAILED, settings=MAIL_ON, **MOVED)
    the_plan = plan(valid(moved), state, ORGANIZER_GUID, mail_sender=SENDER)
    assert mails(the_plan.operations) == [("reschedule", 0), ("reschedule", 2)]
    assert {op.sequence for op in the_plan.operations if isinstance(op, SendEmail)} == {5}
    renamed = later(appointmentClients=MAILED, settings=MAIL_ON, subject="Other")
    assert mails(plan(valid(renamed), state, ORGANIZER_GUID, mail_sender=SENDER).operations) == []


def test_a_cancellation_mails_with_the_last_applied_times() -> None:
    state = applied(appointmentClients=MAILED, settings=MAIL_ON)
    the_plan = plan(valid(cancelled()), state, None, mail_sender=SENDER)
    assert kinds(the_plan.operations)[-1] == "DeleteMeeting:current"
    emails = [op for op in the_plan.operations if isinstance(op, SendEmail)]
    assert [(op.kind, op.client_index) for op in emails] == [
        ("cancellation", 0),
        ("cancellation", 2),
    ]
    assert state.document is not None
    assert emails[0].document.start == state.document.start
    assert emails[0].document.is_cancelled


def test_no_e_mail_without_asking_and_a_warning_without_a_sender() -> None:
    quiet = valid(doc(appointmentClients=MAILED))
    assert mails(plan(quiet, AppliedState(), ORGANIZER_GUID, mail_sender=SENDER).operations) == []
    asking = valid(doc(appointmentClients=MAILED, settings=MAIL_ON))
    the_plan = plan(asking, AppliedState(), ORGANIZER_GUID)
    assert mails(the_plan.operations) == []
    assert the_plan.warnings == (
        "e-mail not sent: MAIL_SENDER is not set (the mailbox e-mail is sent from)",
    )


def test_a_retry_does_not_mail_a_client_twice_and_markers_keep_every_notification() -> None:
    document = valid(doc(appointmentClients=MAILED, settings={**MAIL_ON, **SMS_ON}))
    first = plan(document, AppliedState(), ORGANIZER_GUID, mail_sender=SENDER)
    outcome = Outcome(
        meetings={NEW: MeetingFacts(ORGANIZER_GUID, "m", "x", "https://join")},
        sms_sent=["confirmation"],
        mail_sent=[0],
    )
    midway = progress(AppliedState(intents=(Intent(ORGANIZER_GUID, 0),)), first, outcome)
    assert set((midway.notified or "").split()) == {
        sms_marker("confirmation", document),
        mail_marker(0, document),
    }
    again = plan(document, midway, ORGANIZER_GUID, mail_sender=SENDER)
    assert mails(again.operations) == [("confirmation", 2)]
    assert not any(isinstance(op, SendSms) for op in again.operations)


def test_settling_counts_finished_versions() -> None:
    document = valid(doc())
    the_plan = plan(document, AppliedState(), ORGANIZER_GUID)
    facts = MeetingFacts(ORGANIZER_GUID, "m", "x", "https://join")
    done = settle(AppliedState(), the_plan, Outcome(meetings={NEW: facts}))
    assert done.finished_versions == 1


def test_turning_browser_join_off_mails_the_new_link_and_texts_nobody() -> None:
    on = {**MAIL_ON, **SMS_ON}
    state = applied(appointmentClients=MAILED, settings=on)
    off = later(appointmentClients=MAILED, settings={**on, "allowClientToJoinUsingBrowser": False})
    the_plan = plan(valid(off), state, ORGANIZER_GUID, mail_sender=SENDER)
    assert mails(the_plan.operations) == [("reschedule", 0), ("reschedule", 2)]
    assert not any(isinstance(op, SendSms) for op in the_plan.operations)
