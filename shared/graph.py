"""The Microsoft Graph helper: one credential, one client, the v1.0 calls, errors mapped.

Only the reconciler imports this module, and it imports the Graph SDK lazily, so the webhook
path never pays for the SDK. Authentication is the app's managed identity (azure-identity's
ManagedIdentityCredential: the platform's endpoint in Azure, the emulator's locally); no Graph
client secret exists anywhere.

msgraph-sdk is async; the functions are sync (the storage SDKs are too), so the SDK runs on
one private event loop thread per process, which keeps one httpx connection pool and one
token cache for the life of the worker.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from kiota_http.middleware import RetryHandler
from kiota_http.middleware.options import RetryHandlerOption

from shared.planning import Attendee, SmsKind
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.attendance import AttendanceRecord, AttendanceReport
    from shared.mail import MailMessage

log = logging.getLogger(__name__)

# Waiting inside one invocation is bounded: past this, the queue takes over (SPEC).
RETRY_BUDGET_SECONDS = 10.0
MAX_RETRIES = 3
CALL_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# One call, retries and waits included, never takes longer than this (the reconciler's lease
# margin is at least as long, so no call outlives the lease).
CALL_DEADLINE_SECONDS = 30.0
# Pages of one collection followed before giving up: Graph lists at most 50 reports, and a
# meeting's records fit in a few pages; a next link that never ends is Graph misbehaving.
MAX_PAGES = 100


class GraphError(Exception):
    """Base of what the reconciler needs to tell apart."""


class TransientGraphError(GraphError):
    """Worth retrying later: throttling, outages, timeouts, conflicts."""

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # Graph's HTTP status; None for a timeout or a transport error

    @property
    def summary(self) -> str:
        """What failed, for the status record's `retry.lastError`: service and status only."""
        if self.status is not None:
            return f"Microsoft Graph {self.status}"
        return f"Microsoft Graph unreachable ({self})"


class PermanentGraphError(GraphError):
    """Graph refuses this version: `code` and `message` go on the status record."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Meeting:
    id: str
    join_web_url: str | None
    lobby_scope: str | None
    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None

    def differs_from(self, start: datetime, end: datetime, subject: str) -> bool:
        """True when Graph's meeting does not have these times and subject.

        createOrGet hands back an existing meeting as it is (it does not update it), e.g. one
        an interrupted attempt created for an older version.
        """
        return (self.start, self.end, self.subject) != (start, end, subject)


class BudgetedRetryHandler(RetryHandler):
    """kiota's retry policy (429/503/504, Retry-After, backoff) with a wall-clock budget.

    The stock handler waits up to 180 s per attempt; an invocation must not sleep for minutes.
    A wait that would exceed the budget is not taken: the response goes back to the caller,
    which hands the message back to the queue for at least Retry-After.
    """

    def __init__(self, budget_seconds: float = RETRY_BUDGET_SECONDS) -> None:
        super().__init__(RetryHandlerOption(delay=0.0, max_retries=MAX_RETRIES))
        self.budget_seconds = budget_seconds

    async def send(
        self, request: httpx.Request, transport: httpx.AsyncBaseTransport
    ) -> httpx.Response:
        waited = 0.0
        retries = 0
        while True:
            response: httpx.Response = await self.next.send(request, transport)  # type: ignore[union-attr]
            if not (
                self.should_retry(request, self.options, response)
                and self.check_retry_valid(retries, self.options)
            ):
                return response
            delay = self.get_delay_time(retries + 1, response, self.options.max_delay)
            if waited + delay > self.budget_seconds:
                return response
            await response.aclose()
            await asyncio.sleep(delay)
            waited += delay
            retries += 1
            request.headers["Retry-Attempt"] = str(retries)


def _retry_after(headers: dict[str, str] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            return _seconds_until(value)
    return None


def _seconds_until(value: str) -> float | None:
    """Retry-After is delay-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


ACCESS_POLICY_HINT = (
    "The organizer has no Teams application access policy for this app. Grant one with "
    "scripts/grant-access-policy.ps1 (it can take up to 30 minutes to apply), then "
    "POST /api/appointments/{id}/reconcile."
)
ROLES = {
    # Least privilege: GET /users/{upn}?$select=id needs only the basic profile.
    "getUser": "User.ReadBasic.All",
    "createOrGet": "OnlineMeetings.ReadWrite.All",
    "updateMeeting": "OnlineMeetings.ReadWrite.All",
    "deleteMeeting": "OnlineMeetings.ReadWrite.All",
    "getJoinWebUrl": "VirtualAppointment.ReadWrite.All",
    "sendSms": "VirtualAppointmentNotification.Send",
    "sendReminderSms": "VirtualAppointmentNotification.Send",
    "sendMail": "Mail.Send",
    # Attendance reports are online meeting artifacts: their own role, and the access policy.
    "attendanceReports": "OnlineMeetingArtifact.Read.All",
    "attendanceRecords": "OnlineMeetingArtifact.Read.All",
}


ORGANIZER_NOT_FOUND = (
    "The organizer was not found in this tenant, or is not enabled for Teams (check organizer "
    "and the user's Teams license)."
)
# Graph's older missing-policy text: "App <id> is not authorized to Create meeting on behalf of
# user <id>" (code Unauthorized), with no words "access policy" in it.
_LEGACY_POLICY_TEXT = re.compile(r"not authorized to .+ on behalf of user", re.IGNORECASE)
# Meeting calls are the ones a Teams application access policy governs.
_POLICY_OPERATIONS = frozenset(
    {
        "createOrGet",
        "updateMeeting",
        "deleteMeeting",
        "getJoinWebUrl",
        "sendSms",
        "sendReminderSms",
        "attendanceReports",
        "attendanceRecords",
    }
)


def _forbidden(operation: str, graph_message: str) -> PermanentGraphError:
    """Tell a missing access policy from a missing app role; name both when Graph does not.

    Graph words a missing policy two ways (with "access policy", or the older "not authorized
    to ... on behalf of user"); a missing role says "permission" or "role". A bare 403 on a
    meeting call could be either, so the message names both remedies.
    """
    text = graph_message.lower()
    if "access policy" in text or _LEGACY_POLICY_TEXT.search(graph_message):
        return PermanentGraphError("accessPolicyMissing", ACCESS_POLICY_HINT, 403)
    role = ROLES.get(operation, "the required Microsoft Graph application permission")
    message = (
        f"Microsoft Graph refused {operation}: the app's identity lacks the application "
        f"permission {role} (see docs/deploy.md), then replay the appointment."
    )
    told_apart = any(word in text for word in ("permission", "role", "privileges"))
    if operation in _POLICY_OPERATIONS and not told_apart:
        message = (
            f"Microsoft Graph refused {operation} (403) without saying why: either the app's "
            f"identity lacks the application permission {role} (see docs/deploy.md), or the "
            "organizer has no Teams application access policy for this app (grant one with "
            "scripts/grant-access-policy.ps1; it can take up to 30 minutes). Fix the cause, "
            "then replay the appointment."
        )
    return PermanentGraphError("appRoleMissing", message, 403)


MAIL_SEND_DENIED = (
    "Microsoft Graph refused sendMail (403): either the app's identity lacks the application "
    "permission Mail.Send, or the Exchange RBAC for Applications scope (or application access "
    "policy) that limits Mail.Send does not include the MAIL_SENDER mailbox (see "
    "docs/deploy.md). Client e-mail is not sent until that is fixed."
)
MAIL_SENDER_NOT_FOUND = (
    "Microsoft Graph refused sendMail: the MAIL_SENDER mailbox does not exist in this tenant, "
    "or has no Exchange Online mailbox. Check MAIL_SENDER (a UPN or object id)."
)
# Outlook's words for "no such mailbox" (404 ErrorInvalidUser, MailboxNotEnabledForRESTAPI).
_NO_MAILBOX_CODES = frozenset({"ErrorInvalidUser", "MailboxNotEnabledForRESTAPI"})


def _mail_refused(status: int, graph_code: str) -> PermanentGraphError:
    """sendMail's refusals, worded from status and code alone.

    Outlook's messages name the recipient (ErrorInvalidRecipients quotes the address), and a
    record's warnings outlive retention's erasure of client data, so Graph's text is not kept.
    """
    if status == 404 or graph_code in _NO_MAILBOX_CODES:
        return PermanentGraphError("mailSenderNotFound", MAIL_SENDER_NOT_FOUND, status)
    if status == 403:
        return PermanentGraphError("mailSendDenied", MAIL_SEND_DENIED, status)
    detail = f"{status} {graph_code[:80]}".strip()
    message = f"Microsoft Graph refused sendMail ({detail}); the message was not sent."
    return PermanentGraphError("invalidRequest", message, status)


def classify(operation: str, error: BaseException) -> GraphError:
    """Map an SDK or transport failure to transient or permanent, with a user-facing code."""
    from kiota_abstractions.api_error import APIError

    if isinstance(error, (httpx.TimeoutException, httpx.TransportError)):
        return TransientGraphError(f"{operation}: {type(error).__name__}")
    if not isinstance(error, APIError):
        return TransientGraphError(f"{operation}: {type(error).__name__}")
    status = error.response_status_code or 0
    graph_code, graph_message = "", ""
    detail = getattr(error, "error", None)
    if detail is not None:
        graph_code = getattr(detail, "code", "") or ""
        graph_message = getattr(detail, "message", "") or ""
    request_id = (error.response_headers or {}).get("request-id", "")
    log.warning("Graph %s failed: %s %s (request-id %s)", operation, status, graph_code, request_id)
    if status in (408, 409, 412, 429) or status >= 500:
        retry_after = _retry_after(error.response_headers)
        return TransientGraphError(f"{operation}: {status}", retry_after, status)
    if operation == "sendMail" and status != 401:
        return _mail_refused(status, graph_code)
    if status == 403:
        return _forbidden(operation, graph_message)
    if status == 404 and operation in ("getUser", "createOrGet"):
        return PermanentGraphError("organizerNotFound", ORGANIZER_NOT_FOUND, status)
    if status == 404:
        return PermanentGraphError("meetingNotFound", f"{operation}: the meeting is gone", status)
    if status == 401:
        return TransientGraphError(f"{operation}: unauthorized", status=status)
    message = f"Microsoft Graph refused {operation}: {graph_message or status}"
    return PermanentGraphError("invalidRequest", message[:500], status)


def _untyped(body: Any) -> Any:
    """A PATCH body without `@odata.type`, and without `"odata_type": null` either.

    The SDK's OnlineMeeting serializes `"@odata.type": "#microsoft.graph.onlineMeeting"` by
    default, and Graph has answered such PATCH bodies with 400 InvalidArgument "One or more
    properties do not support updating", which would fail every reschedule for good. Passing
    `odata_type=None` is no cure: the model's backing store records the change to null and the
    request adapter then writes the Python name, `"odata_type": null`, an unknown property.
    So the attribute is cleared past the backing store, which never learns of it.
    """
    object.__setattr__(body, "odata_type", None)
    return body


class GraphGateway:
    """The v1.0 calls the reconciler makes, as plain blocking methods."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None

    @property
    def global_features(self) -> bool:
        """Whether this Graph has the global-cloud-only calls (browser link, SMS)."""
        return self._settings.graph_is_global_cloud

    # -- plumbing -------------------------------------------------------------------------

    def _credential(self) -> Any:
        if self._settings.graph_credential == "azurecli":
            from azure.identity import AzureCliCredential

            return AzureCliCredential()
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=self._settings.azure_client_id)

    def _build_client(self) -> Any:
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.kiota_client_factory import KiotaClientFactory
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core.graph_client_factory import GraphClientFactory

        host = urlsplit(self._settings.graph_base_url).hostname or ""
        auth = AzureIdentityAuthenticationProvider(
            self._credential(), scopes=[self._settings.graph_scope], allowed_hosts=[host]
        )
        middleware = [
            BudgetedRetryHandler() if isinstance(m, RetryHandler) else m
            for m in KiotaClientFactory.get_default_middleware(None)
        ]
        http = GraphClientFactory.create_with_custom_middleware(
            middleware, client=httpx.AsyncClient(timeout=CALL_TIMEOUT, http2=False)
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = self._settings.graph_base_url
        return GraphServiceClient(request_adapter=adapter)

    def _run(self, operation: str, make: Any) -> Any:
        """Run one SDK coroutine on the private loop; map its failure."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="graph-loop", daemon=True).start()
                self._loop = loop
            if self._client is None:
                self._client = self._build_client()
        coroutine: Coroutine[Any, Any, Any] = make(self._client)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=CALL_DEADLINE_SECONDS)
        except FutureTimeout:
            future.cancel()
            raise TransientGraphError(f"{operation}: timed out") from None
        except GraphError:
            raise
        except Exception as error:  # everything else is classified
            raise classify(operation, error) from error

    def _meetings(self, client: Any, user_id: str) -> Any:
        return client.users.by_user_id(user_id).online_meetings

    async def _json_page(
        self,
        operation: str,
        builder_of: Callable[[Any], Any],
        url: str | None,
        parse: Callable[[Any], Any],
        client: Any,
    ) -> tuple[Any, str | None]:
        """GET one page of a collection as raw JSON and parse it with shared.attendance.

        The request goes through the SDK's builder and adapter (token, retries, base URL, the
        ODataError that classify reads); only the body is left to the app's own parser, the one
        the emulator's tests use too. `url` is Graph's @odata.nextLink for the pages after the
        first. A body that is not the documented shape is transient: the message names the
        field, never its value (values are client names and addresses).
        """
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        from shared.attendance import next_link

        builder = builder_of(client)
        if url is not None:
            builder = builder.with_url(url)
        info = builder.to_get_request_information()
        raw = await builder.request_adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
        try:
            data = json.loads(raw or b"null")
            return parse(data), next_link(data)
        except ValueError as error:  # JSON, UTF-8 and AttendanceParseError alike
            raise TransientGraphError(f"{operation}: unexpected answer ({error})") from None

    def _collection(
        self, operation: str, builder_of: Callable[[Any], Any], parse: Callable[[Any], Any]
    ) -> list[Any]:
        """Every page of one collection, following @odata.nextLink, one _run per page."""
        items: list[Any] = []
        url: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page, url = self._run(
                operation, functools.partial(self._json_page, operation, builder_of, url, parse)
            )
            items.extend(page)
            if url is None:
                return items
            if url in seen:
                break
            seen.add(url)
        raise TransientGraphError(f"{operation}: the next links do not end")

    # -- calls ----------------------------------------------------------------------------

    def resolve_user_id(self, user_principal_name: str) -> str:
        """GET /users/{upn}?$select=id."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id"])
        config = RequestConfiguration(query_parameters=query)
        user = self._run("getUser", lambda c: c.users.by_user_id(user_principal_name).get(config))
        if user is None or not user.id:
            raise PermanentGraphError("organizerNotFound", ORGANIZER_NOT_FOUND)
        return str(user.id)

    def create_or_get_meeting(
        self, user_id: str, external_id: str, start: datetime, end: datetime, subject: str
    ) -> Meeting:
        """POST /users/{id}/onlineMeetings/createOrGet with its documented parameters only."""
        from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (  # noqa: E501
            CreateOrGetPostRequestBody,
        )

        body = CreateOrGetPostRequestBody(
            external_id=external_id, start_date_time=start, end_date_time=end, subject=subject
        )
        meeting = self._run(
            "createOrGet", lambda c: self._meetings(c, user_id).create_or_get.post(body)
        )
        if meeting is None or not meeting.id:
            raise TransientGraphError("createOrGet: empty answer")
        scope = None
        settings = meeting.lobby_bypass_settings
        if settings is not None and settings.scope is not None:
            scope = getattr(settings.scope, "value", str(settings.scope))
        return Meeting(
            str(meeting.id),
            meeting.join_web_url,
            scope,
            meeting.start_date_time,
            meeting.end_date_time,
            meeting.subject,
        )

    def restrict_lobby(self, user_id: str, meeting_id: str) -> None:
        """PATCH lobbyBypassSettings so clients wait in the lobby for the organizer."""
        from msgraph.generated.models.lobby_bypass_scope import LobbyBypassScope
        from msgraph.generated.models.lobby_bypass_settings import LobbyBypassSettings
        from msgraph.generated.models.online_meeting import OnlineMeeting

        body = _untyped(
            OnlineMeeting(
                lobby_bypass_settings=LobbyBypassSettings(
                    scope=LobbyBypassScope.Organizer, is_dial_in_bypass_enabled=False
                )
            )
        )
        self._run(
            "updateMeeting",
            lambda c: self._meetings(c, user_id).by_online_meeting_id(meeting_id).patch(body),
        )

    def update_meeting(
        self,
        user_id: str,
        meeting_id: str,
        start: datetime | None,
        end: datetime | None,
        subject: str | None,
    ) -> None:
        """PATCH the meeting; a time change always sends start and end together."""
        from msgraph.generated.models.online_meeting import OnlineMeeting

        body = _untyped(OnlineMeeting(start_date_time=start, end_date_time=end, subject=subject))
        self._run(
            "updateMeeting",
            lambda c: self._meetings(c, user_id).by_online_meeting_id(meeting_id).patch(body),
        )

    def delete_meeting(self, user_id: str, meeting_id: str) -> None:
        """DELETE the meeting; one already gone counts as deleted."""
        try:
            self._run(
                "deleteMeeting",
                lambda c: self._meetings(c, user_id).by_online_meeting_id(meeting_id).delete(),
            )
        except PermanentGraphError as error:
            if error.status != 404:
                raise

    def client_join_url(self, user_id: str, meeting_id: str) -> str:
        """GET .../getVirtualAppointmentJoinWebUrl: the browser link with the waiting room."""
        answer = self._run(
            "getJoinWebUrl",
            lambda c: (
                self._meetings(c, user_id)
                .by_online_meeting_id(meeting_id)
                .get_virtual_appointment_join_web_url.get()
            ),
        )
        if answer is None or not answer.value:
            raise TransientGraphError("getJoinWebUrl: empty answer")
        return str(answer.value)

    def send_sms(
        self, user_id: str, meeting_id: str, kind: SmsKind, attendees: tuple[Attendee, ...]
    ) -> None:
        """POST .../sendVirtualAppointmentSms."""
        from msgraph.generated.models.attendee_notification_info import AttendeeNotificationInfo
        from msgraph.generated.models.virtual_appointment_message_type import (
            VirtualAppointmentMessageType,
        )
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_sms.send_virtual_appointment_sms_post_request_body import (  # noqa: E501
            SendVirtualAppointmentSmsPostRequestBody,
        )

        body = SendVirtualAppointmentSmsPostRequestBody(
            attendees=[
                AttendeeNotificationInfo(phone_number=a.phone_number, time_zone=a.time_zone)
                for a in attendees
            ],
            message_type=VirtualAppointmentMessageType(kind),
        )
        self._run(
            "sendSms",
            lambda c: (
                self._meetings(c, user_id)
                .by_online_meeting_id(meeting_id)
                .send_virtual_appointment_sms.post(body)
            ),
        )

    def send_reminder_sms(
        self, user_id: str, meeting_id: str, attendees: tuple[Attendee, ...]
    ) -> None:
        """POST .../sendVirtualAppointmentReminderSms: Graph texts 15 minutes before the start."""
        from msgraph.generated.models.attendee_notification_info import AttendeeNotificationInfo
        from msgraph.generated.models.remind_before_time_in_minutes_type import (
            RemindBeforeTimeInMinutesType,
        )
        from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_reminder_sms.send_virtual_appointment_reminder_sms_post_request_body import (  # noqa: E501
            SendVirtualAppointmentReminderSmsPostRequestBody,
        )

        body = SendVirtualAppointmentReminderSmsPostRequestBody(
            attendees=[
                AttendeeNotificationInfo(phone_number=a.phone_number, time_zone=a.time_zone)
                for a in attendees
            ],
            remind_before_time_in_minutes_type=RemindBeforeTimeInMinutesType.Mins15,
        )
        self._run(
            "sendReminderSms",
            lambda c: (
                self._meetings(c, user_id)
                .by_online_meeting_id(meeting_id)
                .send_virtual_appointment_reminder_sms.post(body)
            ),
        )

    def attendance_reports(self, user_id: str, meeting_id: str) -> list[AttendanceReport]:
        """GET .../attendanceReports, then each report's .../attendanceRecords, every page.

        One report per session, made when a session ends; Graph lists at most the 50 newest,
        newest first, and none for a meeting nobody started. So the calls are one list (Graph
        does not page it in practice, but a next link is followed) plus one records call per
        report and per page of its records. The records are read separately because the list
        call leaves `attendanceRecords` empty. 403: OnlineMeetingArtifact.Read.All or the
        organizer's Teams access policy is missing; 404: meetingNotFound.
        """
        from shared.attendance import parse_records, parse_reports_page

        def reports_of(client: Any) -> Any:
            return (
                self._meetings(client, user_id).by_online_meeting_id(meeting_id).attendance_reports
            )

        reports: list[AttendanceReport] = self._collection(
            "attendanceReports", reports_of, parse_reports_page
        )
        complete: list[AttendanceReport] = []
        for report in reports:
            records: list[AttendanceRecord] = self._collection(
                "attendanceRecords",
                functools.partial(_records_of, reports_of, report.id),
                parse_records,
            )
            complete.append(replace(report, records=tuple(records)))
        return complete

    def send_mail(self, sender: str, message: MailMessage) -> None:
        """POST /users/{sender}/sendMail: one client's message and its invite, not kept in Sent
        Items (the mailbox would otherwise collect every client's address and times).

        `sender` is MAIL_SENDER, a UPN or an object id: the mail API takes either in the path.
        """
        from msgraph.generated.models.body_type import BodyType
        from msgraph.generated.models.email_address import EmailAddress
        from msgraph.generated.models.file_attachment import FileAttachment
        from msgraph.generated.models.item_body import ItemBody
        from msgraph.generated.models.message import Message
        from msgraph.generated.models.recipient import Recipient
        from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
            SendMailPostRequestBody,
        )

        attachment = message.attachment
        body = SendMailPostRequestBody(
            message=Message(
                subject=message.subject,
                body=ItemBody(content_type=BodyType.Html, content=message.html),
                to_recipients=[
                    Recipient(
                        email_address=EmailAddress(address=message.to_address, name=message.to_name)
                    )
                ],
                attachments=[
                    FileAttachment(
                        name=attachment.name,
                        content_type=attachment.content_type,
                        content_bytes=attachment.content,
                    )
                ],
            ),
            save_to_sent_items=False,
        )
        self._run("sendMail", lambda c: c.users.by_user_id(sender).send_mail.post(body))


def _records_of(reports_of: Callable[[Any], Any], report_id: str, client: Any) -> Any:
    """The attendanceRecords builder of one report."""
    return reports_of(client).by_meeting_attendance_report_id(report_id).attendance_records
