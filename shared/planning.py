"""Decide which Graph calls bring an appointment's meeting in line with its newest document.

Pure: no I/O and no Azure import. `plan` looks at the newest document and the applied state
and returns the shortest list of operations; `settle` and `fail` fold what the operations
produced into the next applied state. The contract's Graph call-count table is a property of
`plan` alone.

Meetings are addressed by slot: `current` is the meeting the state records, `new` one this
plan creates, and `stray:<n>` one an interrupted earlier attempt may have created (known from
its recorded intent), which is recovered through createOrGet's idempotency and deleted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from tzlocal.windows_tz import tz_win

from shared.documents import AppointmentDocument, version_key
from shared.phones import is_us_number
from shared.records import AppliedState, ErrorInfo, Intent

SmsKind = Literal["confirmation", "reschedule", "cancellation"]
# The marker kind of the reminder SMS in `AppliedState.notified` (not a Graph messageType).
REMINDER: Final = "reminder"
# Graph sends the reminder this long before the start ("mins15", its only value).
REMINDER_LEAD = timedelta(minutes=15)
CURRENT = "current"
NEW = "new"
# Outside Microsoft's global cloud (national clouds) Graph has neither call: say so, once.
NO_BROWSER_LINK_WARNING = (
    "appointmentClientJoinWebUrl is not available: the browser join link exists only in "
    "Microsoft's global cloud; clients use joinWebUrl"
)
NO_SMS_WARNING = (
    "SMS not sent: Microsoft Graph's virtual appointment SMS exists in the global cloud only"
)


@dataclass(frozen=True)
class CreateOrGetMeeting:
    slot: str
    organizer_id: str
    external_id: str
    start: datetime
    end: datetime
    subject: str


@dataclass(frozen=True)
class FetchClientJoinUrl:
    slot: str


@dataclass(frozen=True)
class UpdateMeeting:
    slot: str
    start: datetime | None
    end: datetime | None
    subject: str | None


@dataclass(frozen=True)
class DeleteMeeting:
    slot: str


@dataclass(frozen=True)
class Attendee:
    phone_number: str
    time_zone: str  # Windows zone name, as sendVirtualAppointmentSms takes it


@dataclass(frozen=True)
class SendSms:
    slot: str
    kind: SmsKind
    attendees: tuple[Attendee, ...]


@dataclass(frozen=True)
class SendEmail:
    """sendMail from MAIL_SENDER to one client, with invite.ics (one Graph call per client).

    `document` is what the message shows: for a cancellation, the cancelled version with the
    last applied times, so the invite can name the event it cancels.
    """

    slot: str
    kind: SmsKind
    client_index: int
    document: AppointmentDocument
    sequence: int  # the invite's SEQUENCE: grows with every version


@dataclass(frozen=True)
class SendReminderSms:
    """sendVirtualAppointmentReminderSms: Graph texts the attendees 15 minutes before the start."""

    slot: str
    attendees: tuple[Attendee, ...]


Operation = (
    CreateOrGetMeeting
    | FetchClientJoinUrl
    | UpdateMeeting
    | DeleteMeeting
    | SendSms
    | SendReminderSms
    | SendEmail
)


@dataclass(frozen=True)
class Plan:
    document: AppointmentDocument
    operations: tuple[Operation, ...]
    generation: int  # the state's next unused generation once the plan has run
    intent: Intent | None = None  # the meeting this plan creates, if any
    warnings: tuple[str, ...] = ()
    strays: tuple[Intent, ...] = ()  # recovered and deleted, in slot order `stray:<n>`
    # Only leftovers of an interrupted attempt are deleted; the applied version stays as it is.
    cleanup: bool = False


@dataclass
class MeetingFacts:
    """What Graph said about one meeting during execution."""

    organizer_id: str
    meeting_id: str
    external_id: str
    join_web_url: str | None = None
    client_join_web_url: str | None = None


@dataclass
class Outcome:
    """What executing a plan produced so far, slot by slot."""

    meetings: dict[str, MeetingFacts] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    # Slots whose createOrGet Graph refused (4xx): no meeting exists there.
    refused: set[str] = field(default_factory=set)
    sms_sent: list[SmsKind] = field(default_factory=list)  # sent or refused: never again
    reminder_sent: bool = False  # sent or refused: never again
    mail_sent: list[int] = field(default_factory=list)  # client indexes; sent or refused
    warnings: list[str] = field(default_factory=list)


def external_id(appointment_id: str, generation: int) -> str:
    """createOrGet's externalId for one generation of an appointment's meeting.

    Hashed so that any appointment id (up to 200 characters of nearly anything) becomes a
    short, safe token.
    """
    digest = hashlib.sha256(appointment_id.encode("utf-8")).hexdigest()[:40]
    return f"va1-{digest}-g{generation}"


def windows_time_zone(iana: str) -> str | None:
    """The Windows zone name Graph's SMS call takes for an IANA zone (None when it has none)."""
    zone = tz_win.get(iana)
    return None if zone is None else str(zone)


def sms_marker(kind: SmsKind | Literal["reminder"], document: AppointmentDocument) -> str:
    """The marker in `AppliedState.notified` once this SMS went out for this version.

    The reminder always follows the version's SMS, so `reminder@<version>` says both went out.
    """
    return f"{kind}@{version_key(document.version)}"


def mail_marker(client_index: int, document: AppointmentDocument) -> str:
    """The marker in `AppliedState.notified` once this client's e-mail went out."""
    return f"mail{client_index}@{version_key(document.version)}"


def markers(notified: str | None) -> frozenset[str]:
    """`AppliedState.notified` as markers: space-separated, one per notification sent."""
    return frozenset((notified or "").split())


def _already_sent(op: Operation, document: AppointmentDocument, notified: str | None) -> bool:
    """Whether a retry of this version already sent this notification."""
    sent = markers(notified)
    if isinstance(op, SendReminderSms):
        return sms_marker(REMINDER, document) in sent
    if isinstance(op, SendSms):
        return bool({sms_marker(op.kind, document), sms_marker(REMINDER, document)} & sent)
    if isinstance(op, SendEmail):
        return mail_marker(op.client_index, document) in sent
    return False


def _emails(
    document: AppointmentDocument,
    kind: SmsKind,
    slot: str,
    state: AppliedState,
    mail_sender: str | None,
) -> tuple[list[SendEmail], list[str]]:
    """One sendMail per client with an e-mail address, when the document asks for e-mail."""
    if not document.settings.send_email_notifications:
        return [], []
    indexes = [i for i, c in enumerate(document.appointment_clients) if c.email_address]
    if not indexes:
        return [], []
    if mail_sender is None:
        return [], ["e-mail not sent: MAIL_SENDER is not set (the mailbox e-mail is sent from)"]
    shown = document
    last = state.document
    if document.start is None and last is not None:
        # A cancellation may omit the times: the invite it cancels had the last applied ones.
        shown = document.model_copy(
            update={"start_date_time": last.start_date_time, "end_date_time": last.end_date_time}
        )
    sequence = state.finished_versions + 1
    return [SendEmail(slot, kind, i, shown, sequence) for i in indexes], []


def _reminder(
    document: AppointmentDocument, sms: list[SendSms], now: datetime | None
) -> list[SendReminderSms]:
    """The reminder that follows a confirmation or reschedule SMS, to the same attendees.

    None without `now` (nothing can tell the start is far enough away) or when the start is
    less than REMINDER_LEAD away: Graph would text at a time already past.
    """
    if not document.settings.send_sms_reminder or now is None or document.start is None:
        return []
    if document.start - now < REMINDER_LEAD:
        return []
    return [SendReminderSms(op.slot, op.attendees) for op in sms if op.kind != "cancellation"]


def _notifications(
    document: AppointmentDocument,
    kind: SmsKind,
    slot: str,
    state: AppliedState,
    *,
    mail_sender: str | None,
    now: datetime | None,
) -> tuple[list[Operation], list[str]]:
    """Every notification of one change: the SMS, its reminder, the e-mails."""
    sms, warnings = _sms(document, kind, slot)
    mail, notes = _emails(document, kind, slot, state, mail_sender)
    return [*sms, *_reminder(document, sms, now), *mail], warnings + notes


def is_settled(document: AppointmentDocument, state: AppliedState, *, replay: bool) -> bool:
    """True when the document is stale, a duplicate, or a version that already failed."""
    version = version_key(document.version)
    if state.version is not None and version <= state.version:
        return True
    return version == state.failed_version and not replay


def _sms(
    document: AppointmentDocument, kind: SmsKind, slot: str
) -> tuple[list[SendSms], list[str]]:
    """One SMS operation for the US numbers; a warning for each number Graph cannot text."""
    if not document.settings.send_sms_notifications:
        return [], []
    warnings: list[str] = []
    zone = windows_time_zone(document.effective_time_zone)
    if zone is None:
        zone = "UTC"
        warnings.append(
            f"timeZone {document.effective_time_zone} has no Windows equivalent; "
            "SMS times are in UTC"
        )
    attendees: list[Attendee] = []
    for index, client in enumerate(document.appointment_clients):
        number = client.sms_capable_phone_number
        if number is None:
            continue
        if is_us_number(number):  # +1 alone also covers Canada and the Caribbean
            attendees.append(Attendee(number, zone))
        else:
            warnings.append(
                f"appointmentClients/{index}: SMS not sent; Microsoft Graph texts United States "
                "numbers only"
            )
    if not attendees:
        return [], warnings
    return [SendSms(slot, kind, tuple(attendees))], warnings


def _without_global_only(
    ops: list[Operation], warnings: list[str], document: AppointmentDocument
) -> tuple[list[Operation], list[str]]:
    """Drop the global-cloud-only calls; one warning for each feature the document asked for.

    Per-number SMS warnings go too: no number gets a text in such a cloud, whatever it is.
    """
    kept: list[Operation] = [
        op for op in ops if not isinstance(op, FetchClientJoinUrl | SendSms | SendReminderSms)
    ]
    notes = [w for w in warnings if "SMS" not in w]
    if document.settings.allow_client_to_join_using_browser and not document.is_cancelled:
        notes.append(NO_BROWSER_LINK_WARNING)
    numbers = [c for c in document.appointment_clients if c.sms_capable_phone_number]
    if document.settings.send_sms_notifications and numbers:
        notes.append(NO_SMS_WARNING)
    return kept, notes


def _with_last_clients(
    document: AppointmentDocument, last: AppointmentDocument | None
) -> AppointmentDocument:
    """A cancellation may omit clients, settings and time zone: take the last applied ones."""
    if last is None:
        return document
    given = document.model_fields_set
    updates = {
        name: getattr(last, name)
        for name in ("appointment_clients", "settings", "time_zone")
        if name not in given
    }
    return document.model_copy(update=updates) if updates else document


def _recovery_times(
    document: AppointmentDocument, state: AppliedState
) -> tuple[datetime, datetime]:
    """Times for createOrGet when it only recovers a meeting that may already exist."""
    for source in (document, state.document):
        if source is not None and source.start and source.end:
            return source.start, source.end
    return document.version, document.version + timedelta(minutes=30)


def _stray_operations(
    document: AppointmentDocument, state: AppliedState, strays: list[Intent]
) -> tuple[list[Operation], list[Operation]]:
    """Recover (createOrGet) and then delete the meetings an interrupted attempt may have made."""
    recover: list[Operation] = []
    discard: list[Operation] = []
    start, end = _recovery_times(document, state)
    for index, stray in enumerate(strays):
        slot = f"stray:{index}"
        recover.append(
            CreateOrGetMeeting(
                slot,
                stray.organizer_id,
                external_id(document.external_appointment_id, stray.generation),
                start,
                end,
                document.effective_subject,
            )
        )
        discard.append(DeleteMeeting(slot))
    return recover, discard


def cleanup(document: AppointmentDocument, state: AppliedState) -> Plan:
    """Delete what interrupted attempts may have left (state.intents), and nothing else.

    For a message whose version is already settled: the applied version, its status and any
    recorded failure stay as they are.
    """
    strays = list(state.intents)
    recover, discard = _stray_operations(document, state, strays)
    generation = max([state.generation, *(i.generation + 1 for i in strays)])
    return Plan(document, (*recover, *discard), generation, strays=tuple(strays), cleanup=True)


def plan(
    document: AppointmentDocument,
    state: AppliedState,
    organizer_id: str | None,
    *,
    global_features: bool = True,
    now: datetime | None = None,
    mail_sender: str | None = None,
) -> Plan:
    """The fewest operations that make Graph match `document` (callers check `is_settled`).

    `organizer_id` is the document's organizer resolved to an object id (None if cancelled).
    `global_features` is False outside Microsoft's global cloud, where Graph has neither the
    browser join link nor SMS: those operations are left out with a warning on the record
    rather than failing the appointment on a call that cannot exist there.
    `now` (aware) decides whether the start is far enough away for a reminder SMS; without
    it no reminder is planned. `mail_sender` is MAIL_SENDER: without it no e-mail is sent,
    and a document that asks for e-mail gets a warning saying why.
    """
    has_current = state.meeting_id is not None
    wanted_organizer = None
    if not document.is_cancelled and (not has_current or organizer_id != state.organizer_id):
        wanted_organizer = organizer_id
    adopted = next((i for i in state.intents if i.organizer_id == wanted_organizer), None)
    strays = [i for i in state.intents if i is not adopted]
    generation = max([state.generation, *(i.generation + 1 for i in state.intents)])
    recover, discard = _stray_operations(document, state, strays)

    ops: list[Operation] = []
    warnings: list[str] = []
    intent = None
    if document.is_cancelled:
        document = _with_last_clients(document, state.document)
        if has_current:
            sent, warnings = _notifications(
                document, "cancellation", CURRENT, state, mail_sender=mail_sender, now=now
            )
            ops += [*sent, DeleteMeeting(CURRENT)]
    elif wanted_organizer is not None:
        # A meeting under this organizer: the first one, or after a move to another organizer.
        assert document.start is not None
        assert document.end is not None
        new_generation = adopted.generation if adopted else generation
        intent = Intent(wanted_organizer, new_generation)
        generation = max(generation, new_generation + 1)
        ops.append(
            CreateOrGetMeeting(
                NEW,
                wanted_organizer,
                external_id(document.external_appointment_id, new_generation),
                document.start,
                document.end,
                document.effective_subject,
            )
        )
        if document.settings.allow_client_to_join_using_browser:
            ops.append(FetchClientJoinUrl(NEW))
        if has_current:
            ops.append(DeleteMeeting(CURRENT))
        kind: SmsKind = "reschedule" if has_current else "confirmation"
        sent, warnings = _notifications(
            document, kind, NEW, state, mail_sender=mail_sender, now=now
        )
        ops += sent
    else:
        # Same organizer, meeting exists: patch only what changed. With no version applied in
        # full yet (a first attempt stopped after createOrGet), what the meeting holds is not
        # known: patch it, and the clients have not had their confirmation yet.
        last = state.document
        time_changed = last is None or (last.start, last.end) != (document.start, document.end)
        subject_changed = last is None or last.effective_subject != document.effective_subject
        if time_changed or subject_changed:
            ops.append(
                UpdateMeeting(
                    CURRENT,
                    document.start if time_changed else None,
                    document.end if time_changed else None,
                    document.effective_subject if subject_changed else None,
                )
            )
        if document.settings.allow_client_to_join_using_browser and not state.client_join_web_url:
            ops.append(FetchClientJoinUrl(CURRENT))
        if last is None or time_changed:
            kind = "confirmation" if last is None else "reschedule"
            sent, warnings = _notifications(
                document, kind, CURRENT, state, mail_sender=mail_sender, now=now
            )
            ops += sent
        elif (
            last.settings.allow_client_to_join_using_browser
            != document.settings.allow_client_to_join_using_browser
        ):
            # The client's link changed (browser join on or off): a new invitation with it.
            mail, warnings = _emails(document, "reschedule", CURRENT, state, mail_sender)
            ops += mail
    # A retry of this version must not text the clients again.
    ops = [op for op in ops if not _already_sent(op, document, state.notified)]
    if not global_features:
        ops, warnings = _without_global_only(ops, warnings, document)
    return Plan(
        document, (*recover, *ops, *discard), generation, intent, tuple(warnings), tuple(strays)
    )


def _current_facts(state: AppliedState) -> MeetingFacts | None:
    if state.meeting_id is None:
        return None
    return MeetingFacts(
        state.organizer_id or "",
        state.meeting_id,
        state.external_meeting_id or "",
        state.join_web_url,
        state.client_join_web_url,
    )


def _with_meeting(state: AppliedState, facts: MeetingFacts | None) -> AppliedState:
    if facts is None:
        return state.without_meeting()
    return replace(
        state,
        organizer_id=facts.organizer_id,
        meeting_id=facts.meeting_id,
        external_meeting_id=facts.external_id,
        join_web_url=facts.join_web_url,
        client_join_web_url=facts.client_join_web_url,
    )


def progress(state: AppliedState, plan_: Plan, outcome: Outcome) -> AppliedState:
    """The state that matches Graph after the operations run so far (meetings, intents)."""
    current = outcome.meetings.get(CURRENT) or _current_facts(state)
    if CURRENT in outcome.deleted:
        current = None
    created = outcome.meetings.get(NEW)
    intents = set(state.intents)
    if plan_.intent is not None:
        if NEW in outcome.refused or NEW in outcome.deleted:
            created = None  # Graph made no meeting, or it is gone again
            intents.discard(plan_.intent)  # recorded with the lease
        else:
            intents.add(plan_.intent)
    for index, stray in enumerate(plan_.strays):
        slot = f"stray:{index}"
        if slot in outcome.deleted or slot in outcome.refused:
            intents.discard(stray)
    chosen = current
    if created is not None and current is None and plan_.intent is not None:
        chosen = created  # adopt the new meeting: it is the only one
        intents.discard(plan_.intent)
    updated = _with_meeting(state, chosen)
    sent = set(markers(state.notified))
    if outcome.reminder_sent:
        sent.add(sms_marker(REMINDER, plan_.document))  # it follows the SMS: both went out
    elif outcome.sms_sent:
        sent.add(sms_marker(outcome.sms_sent[-1], plan_.document))
    sent.update(mail_marker(index, plan_.document) for index in outcome.mail_sent)
    notified = " ".join(sorted(sent)) or None
    return replace(
        updated,
        intents=tuple(sorted(intents, key=lambda i: i.generation)),
        notified=notified,
    )


def settle(state: AppliedState, plan_: Plan, outcome: Outcome) -> AppliedState:
    """The applied state once every operation of the plan has succeeded."""
    if plan_.cleanup:
        tidied = progress(state, plan_, outcome)
        return replace(
            tidied,
            generation=max(tidied.generation, plan_.generation),
            lease_owner=None,
            lease_until=0.0,
        )
    document = plan_.document
    chosen = outcome.meetings.get(NEW)
    if chosen is None and CURRENT not in outcome.deleted:
        chosen = outcome.meetings.get(CURRENT) or _current_facts(state)
    if chosen is not None and not document.settings.allow_client_to_join_using_browser:
        chosen = replace(chosen, client_join_web_url=None)
    updated = _with_meeting(state, None if document.is_cancelled else chosen)
    return replace(
        updated,
        status="cancelled" if document.is_cancelled else "scheduled",
        version=version_key(document.version),
        document=document,
        generation=plan_.generation,
        warnings=plan_.warnings + tuple(outcome.warnings),
        finished_versions=state.finished_versions + 1,
        error=None,
        failed_version=None,
        intents=(),
        notified=None,
        retry=None,
        lease_owner=None,
        lease_until=0.0,
    )


def fail(state: AppliedState, plan_: Plan, outcome: Outcome, error: ErrorInfo) -> AppliedState:
    """A version Graph refused: last good fields stay, Graph's reality is recorded as it is."""
    updated = progress(state, plan_, outcome)
    return replace(
        updated,
        status="failed",
        error=error,
        failed_version=version_key(plan_.document.version),
        generation=max(updated.generation, plan_.generation),
        finished_versions=state.finished_versions + 1,
        warnings=plan_.warnings + tuple(outcome.warnings),
        retry=None,
        lease_owner=None,
        lease_until=0.0,
    )
