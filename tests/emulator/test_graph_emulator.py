"""The Graph emulator over real HTTP: the strict GRAPH.md contract, faults, admin API, and
round trips through the real azure-identity credential and msgraph-sdk (so the emulator is proven
to speak what the production code path sends and parses)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.graph_emulator import (
    DEFAULT_GRANTED_ROLES,
    GraphEmulator,
    MailAttachment,
    SeededUser,
)

ALEX = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"
ALEX_UPN = "alex.wilber@contoso.onmicrosoft.com"
MEGAN = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e02"
NO_POLICY = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e03"
START = "2026-12-01T09:00:00Z"
END = "2026-12-01T09:30:00Z"


def issue_token(emu: GraphEmulator) -> str:
    response = httpx.get(
        emu.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": emu.origin},
        headers={"X-IDENTITY-HEADER": emu.identity_header},
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def meetings_path(user: str = ALEX) -> str:
    return f"/users/{user}/onlineMeetings"


def create(
    api: httpx.Client, external_id: str = "ext-1", user: str = ALEX, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "externalId": external_id,
        "startDateTime": START,
        "endDateTime": END,
        "subject": "Visit",
    }
    body.update(extra)
    return api.post(f"{meetings_path(user)}/createOrGet", json=body)


def created_id(api: httpx.Client, external_id: str = "ext-1", user: str = ALEX) -> str:
    response = create(api, external_id, user)
    assert response.status_code in (200, 201), response.text
    meeting_id = response.json()["id"]
    assert isinstance(meeting_id, str)
    return meeting_id


def assert_graph_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """Check the Graph error envelope and request-id header; return the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code
    assert error["innerError"]["request-id"] == response.headers["request-id"]
    assert dt.datetime.fromisoformat(error["innerError"]["date"])
    message = error["message"]
    assert isinstance(message, str)
    return message


SMS_BODY: dict[str, Any] = {
    "attendees": [{"phoneNumber": "+12065550100", "timeZone": "Pacific Standard Time"}],
    "messageType": "confirmation",
}


# --------------------------------------------------------------------------- lifecycle, env


def test_environment_and_urls(emulator: GraphEmulator) -> None:
    env = emulator.environment()
    assert env == {
        "GRAPH_BASE_URL": emulator.origin + "/v1.0",
        "IDENTITY_ENDPOINT": emulator.origin + "/msi/token",
        "IDENTITY_HEADER": emulator.identity_header,
    }
    assert emulator.origin.startswith("http://127.0.0.1:")
    assert len(emulator.identity_header) >= 16


def test_stop_drops_keep_alive_connections_and_restart_keeps_port_and_state() -> None:
    emu = GraphEmulator().start()
    emu.seed_default_users()
    origin = emu.origin
    token = issue_token(emu)
    with httpx.Client(base_url=origin) as client:
        assert client.get("/_emulator/state").status_code == 200
        emu.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/_emulator/state")
    emu.stop()  # idempotent
    with emu:
        assert emu.origin == origin
        again = httpx.get(
            f"{emu.graph_base_url}/users/{ALEX}", headers={"Authorization": f"Bearer {token}"}
        )
        assert again.status_code == 200


def test_seed_default_users_includes_one_without_policy(emulator: GraphEmulator) -> None:
    users = emulator.seed_default_users()
    assert all(isinstance(u, SeededUser) for u in users)
    assert [u.access_policy for u in users].count(False) == 1
    assert users[0].upn == users[0].user_principal_name == ALEX_UPN


def test_add_user_rejects_duplicate_upn(emulator: GraphEmulator) -> None:
    with pytest.raises(ValueError, match="already belongs"):
        emulator.add_user("another-id", ALEX_UPN.upper())


# --------------------------------------------------------------------------- token endpoint


def test_token_endpoint_answers_like_app_service(emulator: GraphEmulator) -> None:
    before = int(time.time())
    response = httpx.get(
        emulator.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
    )
    assert response.status_code == 200
    payload = response.json()
    assert set(payload) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert payload["token_type"] == "Bearer"
    assert payload["resource"] == "https://graph.microsoft.com"
    assert isinstance(payload["expires_on"], str)
    assert before + 3590 <= int(payload["expires_on"]) <= int(time.time()) + 3600
    user_assigned = httpx.get(
        emulator.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "r", "client_id": "my-uami"},
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
    )
    assert user_assigned.json()["client_id"] == "my-uami"
    assert emulator.token_requests() == 2


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"api-version": "2019-08-01", "resource": "r"}, {}, 400),
        ({"api-version": "2019-08-01", "resource": "r"}, {"X-IDENTITY-HEADER": "wrong"}, 401),
        ({"api-version": "2017-09-01", "resource": "r"}, None, 400),
        ({"api-version": "2019-08-01"}, None, 400),
    ],
)
def test_token_endpoint_rejects_bad_requests(
    emulator: GraphEmulator,
    params: dict[str, str],
    headers: dict[str, str] | None,
    status: int,
) -> None:
    sent = {"X-IDENTITY-HEADER": emulator.identity_header} if headers is None else headers
    response = httpx.get(emulator.identity_endpoint, params=params, headers=sent)
    assert response.status_code == status
    assert "access_token" not in response.json()
    assert response.json()["statusCode"] == status


def test_token_faults_only_when_named(emulator: GraphEmulator) -> None:
    emulator.inject_fault(status=503)  # catch-all: Graph only
    issue_token(emulator)
    emulator.inject_fault(operation="token", status=500, retry_after=2)
    response = httpx.get(
        emulator.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "r"},
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
    )
    assert response.status_code == 500
    assert response.headers["Retry-After"] == "2"
    assert emulator.call_counts()["token"] == 2
    assert len(emulator.state()["pending_faults"]) == 1  # the catch-all is still queued


def test_managed_identity_credential_gets_and_caches_token(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    monkeypatch.delenv("IMDS_ENDPOINT", raising=False)
    credential = ManagedIdentityCredential()
    first = credential.get_token(emulator.origin + "/.default")
    second = credential.get_token(emulator.origin + "/.default")
    assert first.token == second.token
    assert emulator.token_requests() == 1
    assert first.expires_on > time.time() + 3000
    me = httpx.get(
        f"{emulator.graph_base_url}/users/{ALEX}",
        headers={"Authorization": f"Bearer {first.token}"},
    )
    assert me.status_code == 200
    assert me.json()["id"] == ALEX


# --------------------------------------------------------------------------- authentication


def test_graph_requires_an_issued_token(emulator: GraphEmulator) -> None:
    base = emulator.graph_base_url
    missing = httpx.get(f"{base}/users/{ALEX}")
    assert_graph_error(missing, 401, "InvalidAuthenticationToken")
    forged = httpx.get(f"{base}/users/{ALEX}", headers={"Authorization": "Bearer forged"})
    assert_graph_error(forged, 401, "InvalidAuthenticationToken")
    token = issue_token(emulator)
    ok = httpx.get(f"{base}/users/{ALEX}", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    emulator.revoke_tokens()
    revoked = httpx.get(f"{base}/users/{ALEX}", headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(revoked, 401, "InvalidAuthenticationToken")
    assert emulator.call_counts()["getUser"] == 4


def test_unknown_route_and_wrong_method(api: httpx.Client) -> None:
    assert_graph_error(api.get("/me/events"), 404, "NotFound")
    assert_graph_error(api.get(f"/users/{ALEX}/onlineMeetings"), 404)
    assert_graph_error(api.put(f"/users/{ALEX}/onlineMeetings/createOrGet", json={}), 405)
    response = httpx.get(api.base_url.copy_with(path="/beta/users"))
    assert_graph_error(response, 404)


def test_client_request_id_is_echoed(api: httpx.Client) -> None:
    response = api.get(f"/users/{ALEX}", headers={"client-request-id": "abc-123"})
    assert response.headers["client-request-id"] == "abc-123"
    assert response.headers["request-id"]


def test_token_must_be_for_the_emulator_audience(emulator: GraphEmulator) -> None:
    response = httpx.get(
        emulator.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
    )
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    wrong = httpx.get(f"{emulator.graph_base_url}/users/{ALEX}", headers=headers)
    assert "audience" in assert_graph_error(wrong, 401, "InvalidAuthenticationToken")
    emulator.check_audience = False
    assert httpx.get(f"{emulator.graph_base_url}/users/{ALEX}", headers=headers).is_success


# --------------------------------------------------------------------------- users


def test_get_user_by_id_and_upn(api: httpx.Client) -> None:
    by_id = api.get(f"/users/{ALEX}")
    assert by_id.status_code == 200
    assert {k: by_id.json()[k] for k in ("id", "userPrincipalName", "displayName")} == {
        "id": ALEX,
        "userPrincipalName": ALEX_UPN,
        "displayName": "Alex Wilber",
    }
    encoded = api.get("/users/" + ALEX_UPN.upper().replace("@", "%40"), params={"$select": "id"})
    assert encoded.status_code == 200
    assert {k: v for k, v in encoded.json().items() if not k.startswith("@")} == {"id": ALEX}
    assert api.get(f"/users/{ALEX_UPN}").json()["id"] == ALEX


def test_get_user_errors(emulator: GraphEmulator, api: httpx.Client) -> None:
    assert_graph_error(api.get("/users/nobody@contoso.com"), 404, "Request_ResourceNotFound")
    assert_graph_error(api.get(f"/users/{ALEX}", params={"$select": "id,shoeSize"}), 400)
    emulator.granted_roles.discard("User.ReadBasic.All")
    message = assert_graph_error(api.get(f"/users/{ALEX}"), 403, "Forbidden")
    assert "User.ReadBasic.All" in message


# --------------------------------------------------------------------------- createOrGet


def test_create_or_get_creates_then_returns_existing(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    first = create(api)
    assert first.status_code == 201
    meeting = first.json()
    assert meeting["externalId"] == "ext-1"
    assert meeting["subject"] == "Visit"
    assert (meeting["startDateTime"], meeting["endDateTime"]) == (START, END)
    assert meeting["joinWebUrl"].startswith("https://teams.microsoft.com/l/meetup-join/")
    assert meeting["lobbyBypassSettings"] == {
        "scope": "organization",
        "isDialInBypassEnabled": False,
    }
    assert meeting["participants"]["organizer"]["identity"]["user"]["id"] == ALEX
    assert "joinMeetingIdSettings" in meeting
    assert meeting["chatInfo"]["threadId"].startswith("19:meeting_")
    assert dt.datetime.fromisoformat(meeting["creationDateTime"])
    assert first.headers["content-type"].startswith("application/json")

    again = create(api, subject="Ignored on an existing meeting")
    assert again.status_code == 200
    assert again.json()["id"] == meeting["id"]
    assert again.json()["subject"] == "Visit"

    other_user = create(api, user=MEGAN)
    assert other_user.status_code == 201
    other_external = create(api, "ext-2")
    assert other_external.status_code == 201
    ids = {meeting["id"], other_user.json()["id"], other_external.json()["id"]}
    urls = {m.join_web_url for m in emulator.meetings()}
    assert len(ids) == len(urls) == 3
    stored = emulator.meetings(ALEX)
    assert [m.external_id for m in stored] == ["ext-1", "ext-2"]
    assert stored[0].start == START


def test_create_or_get_defaults_and_normalises_datetimes(api: httpx.Client) -> None:
    now = dt.datetime.now(dt.UTC)
    default = api.post(f"{meetings_path()}/createOrGet", json={"externalId": "d"}).json()
    start = dt.datetime.fromisoformat(default["startDateTime"])
    end = dt.datetime.fromisoformat(default["endDateTime"])
    assert abs((start - now).total_seconds()) < 5
    assert end - start == dt.timedelta(hours=1)
    assert default["startDateTime"].endswith("Z")

    body = api.post(
        f"{meetings_path()}/createOrGet",
        json={"externalId": "s2", "startDateTime": "2026-12-01T10:00:00.5+01:00"},
    ).json()
    assert body["startDateTime"] == "2026-12-01T09:00:00.5Z"
    assert body["endDateTime"] == "2026-12-01T10:00:00.5Z"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"startDateTime": START}, "externalId"),
        ({"externalId": "x", "endDateTime": END}, "without startDateTime"),
        ({"externalId": "x", "startDateTime": END, "endDateTime": START}, "later"),
        ({"externalId": "x", "startDateTime": "2026-12-01T09:00:00"}, "offset"),
        ({"externalId": "x", "startDateTime": "tomorrow"}, "startDateTime"),
        ({"externalId": "x", "startDateTime": START + "\n"}, "startDateTime"),
        (
            {"externalId": "x", "lobbyBypassSettings": {"scope": "organizer"}},
            "'lobbyBypassSettings' is not a valid parameter for the operation",
        ),
        ({"externalId": "x", "allowedPresenters": "organizer"}, "not a valid parameter"),
        ({"externalId": "x", "participants": {"attendees": "nope"}}, "attendees"),
        (["not", "an", "object"], "object"),
    ],
)
def test_create_or_get_rejects_invalid_bodies(
    emulator: GraphEmulator, api: httpx.Client, body: Any, fragment: str
) -> None:
    response = api.post(f"{meetings_path()}/createOrGet", json=body)
    message = assert_graph_error(response, 400, "BadRequest")
    assert fragment in message
    assert emulator.meetings() == []


def test_create_or_get_accepts_odata_annotations_and_documented_params(
    api: httpx.Client,
) -> None:
    extra: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.onlineMeeting",
        "participants": {
            "@odata.type": "microsoft.graph.meetingParticipants",
            "attendees": [{"upn": "client@example.com", "role": "attendee"}],
        },
        "chatInfo": {"threadId": None},
    }
    response = create(api, **extra)
    assert response.status_code == 201, response.text
    assert response.json()["participants"]["attendees"][0]["upn"] == "client@example.com"


def test_non_json_body_is_400(api: httpx.Client) -> None:
    response = api.post(
        f"{meetings_path()}/createOrGet",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_graph_error(response, 400, "BadRequest")
    assert_graph_error(api.post(f"{meetings_path()}/createOrGet"), 400, "BadRequest")


def test_online_meetings_paths_need_object_ids_and_policy(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    by_upn = create(api, user=ALEX_UPN)
    assert "object id" in assert_graph_error(by_upn, 404)
    assert_graph_error(create(api, user="00000000-0000-0000-0000-000000000000"), 404)
    message = assert_graph_error(create(api, user=NO_POLICY), 403, "Forbidden")
    assert "No Application Access Policy found for this app" in message
    assert emulator.meetings(include_deleted=True) == []


def test_missing_online_meetings_role_is_403(emulator: GraphEmulator, api: httpx.Client) -> None:
    emulator.granted_roles = {"User.ReadBasic.All"}
    message = assert_graph_error(create(api), 403, "Forbidden")
    assert "OnlineMeetings.ReadWrite.All" in message


# --------------------------------------------------------------------------- get, update, delete


def test_get_meeting(api: httpx.Client) -> None:
    meeting_id = created_id(api)
    response = api.get(f"{meetings_path()}/{meeting_id}")
    assert response.status_code == 200
    assert response.json()["id"] == meeting_id
    assert_graph_error(api.get(f"{meetings_path()}/bm90LWEtbWVldGluZw"), 404)
    assert_graph_error(api.get(f"{meetings_path(MEGAN)}/{meeting_id}"), 404)


def test_patch_updates_times_subject_and_lobby(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    response = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={
            "startDateTime": "2026-12-02T10:00:00-05:00",
            "endDateTime": "2026-12-02T10:45:00-05:00",
            "subject": "Moved",
            "lobbyBypassSettings": {
                "@odata.type": "#microsoft.graph.lobbyBypassSettings",  # nested: still legal
                "scope": "organizer",
                "isDialInBypassEnabled": False,
            },
            "allowedPresenters": "organizer",
            "isEntryExitAnnounced": False,
            "allowMeetingChat": "disabled",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["startDateTime"], body["endDateTime"]) == (
        "2026-12-02T15:00:00Z",
        "2026-12-02T15:45:00Z",
    )
    assert body["subject"] == "Moved"
    assert body["lobbyBypassSettings"]["scope"] == "organizer"
    assert body["allowedPresenters"] == "organizer"
    assert body["isEntryExitAnnounced"] is False
    stored = emulator.meetings()[0]
    assert (stored.subject, stored.lobby_bypass_scope) == ("Moved", "organizer")
    partial = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={"lobbyBypassSettings": {"isDialInBypassEnabled": True}},
    )
    assert partial.json()["lobbyBypassSettings"] == {
        "scope": "organizer",
        "isDialInBypassEnabled": True,
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"startDateTime": "2026-12-02T10:00:00Z"}, "both"),
        ({"endDateTime": "2026-12-02T10:00:00Z"}, "both"),
        ({"startDateTime": END, "endDateTime": START}, "later"),
        ({"externalId": "changed"}, "not a valid parameter"),
        ({"lobbyBypassSettings": {"scope": "nobody"}}, "scope"),
        ({"lobbyBypassSettings": {"scope": "invited"}}, "include-unknown-enum-members"),
        ({"lobbyBypassSettings": {"scope": "organizationExcludingGuests"}}, "Prefer"),
        ({"allowedPresenters": "everybody"}, "allowedPresenters"),
        ({"isEntryExitAnnounced": "no"}, "boolean"),
        ({"anonymizeIdentityForRoles": ["attendee"]}, "not a valid parameter"),  # beta only
        (
            {"participants": {"organizer": {"identity": {"user": {"id": MEGAN}}}}},
            "organizer",
        ),
    ],
)
def test_patch_rejects_invalid_bodies(
    emulator: GraphEmulator, api: httpx.Client, body: dict[str, Any], fragment: str
) -> None:
    meeting_id = created_id(api)
    before = emulator.meetings()
    message = assert_graph_error(api.patch(f"{meetings_path()}/{meeting_id}", json=body), 400)
    assert fragment in message
    assert emulator.meetings() == before


def test_evolvable_lobby_scopes_need_prefer_header(api: httpx.Client) -> None:
    meeting_id = created_id(api)
    prefer = {"Prefer": "include-unknown-enum-members"}
    patched = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={"lobbyBypassSettings": {"scope": "invited"}},
        headers=prefer,
    )
    assert patched.status_code == 200
    assert patched.headers["Preference-Applied"] == "include-unknown-enum-members"
    assert patched.json()["lobbyBypassSettings"]["scope"] == "invited"
    plain = api.get(f"{meetings_path()}/{meeting_id}")
    assert plain.json()["lobbyBypassSettings"]["scope"] == "unknownFutureValue"
    opted_in = api.get(f"{meetings_path()}/{meeting_id}", headers=prefer)
    assert opted_in.json()["lobbyBypassSettings"]["scope"] == "invited"
    federated = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={"lobbyBypassSettings": {"scope": "organizationAndFederated"}},
    )
    assert federated.status_code == 200


def test_default_lobby_scope_is_configurable(emulator: GraphEmulator, api: httpx.Client) -> None:
    emulator.default_lobby_scope = "everyone"
    assert create(api).json()["lobbyBypassSettings"]["scope"] == "everyone"
    with pytest.raises(ValueError, match="lobby"):
        GraphEmulator(default_lobby_scope="anyone")


def test_delete_then_everything_is_404(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    path = f"{meetings_path()}/{meeting_id}"
    deleted = api.delete(path)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_graph_error(api.delete(path), 404)
    assert_graph_error(api.get(path), 404)
    assert_graph_error(api.patch(path, json={"subject": "x"}), 404)
    assert_graph_error(api.get(f"{path}/getVirtualAppointmentJoinWebUrl"), 404)
    assert_graph_error(api.post(f"{path}/sendVirtualAppointmentSms", json=SMS_BODY), 404)
    assert emulator.meetings() == []
    (kept,) = emulator.meetings(include_deleted=True)
    assert kept.deleted
    assert kept.id == meeting_id


def test_reused_external_id_after_delete_returns_the_dead_meeting(api: httpx.Client) -> None:
    meeting_id = created_id(api, "reused")
    assert api.delete(f"{meetings_path()}/{meeting_id}").status_code == 204
    again = create(api, "reused", subject="Rebooked")
    assert again.status_code == 200
    assert again.json()["id"] == meeting_id
    assert again.json()["subject"] == "Visit"
    assert_graph_error(
        api.patch(f"{meetings_path()}/{meeting_id}", json={"subject": "Rebooked"}), 404
    )
    fresh = create(api, "reused-2")
    assert fresh.status_code == 201
    assert fresh.json()["id"] != meeting_id


# --------------------------------------------------------------------------- join link, SMS


def test_join_web_url(emulator: GraphEmulator, api: httpx.Client) -> None:
    first, second = created_id(api, "a"), created_id(api, "b")
    url = api.get(f"{meetings_path()}/{first}/getVirtualAppointmentJoinWebUrl")
    assert url.status_code == 200
    payload = url.json()
    assert payload["@odata.context"].endswith("$metadata#Edm.String")
    assert payload["value"].startswith("https://visit.teams.microsoft.com/webrtc-svc/api/route?")
    assert "tid=" in payload["value"]
    assert "convId=" in payload["value"]
    with_parens = api.get(f"{meetings_path()}/{first}/getVirtualAppointmentJoinWebUrl()")
    assert with_parens.json()["value"] == payload["value"]
    other = api.get(f"{meetings_path()}/{second}/getVirtualAppointmentJoinWebUrl")
    assert other.json()["value"] != payload["value"]

    emulator.granted_roles = {"OnlineMeetings.ReadWrite.All", "VirtualAppointment.Read.All"}
    assert api.get(f"{meetings_path()}/{first}/getVirtualAppointmentJoinWebUrl").is_success
    emulator.granted_roles = {"OnlineMeetings.ReadWrite.All"}
    denied = api.get(f"{meetings_path()}/{first}/getVirtualAppointmentJoinWebUrl")
    assert "VirtualAppointment.ReadWrite.All" in assert_graph_error(denied, 403, "Forbidden")


def test_send_sms_and_reminder(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    path = f"{meetings_path()}/{meeting_id}"
    sent = api.post(f"{path}/sendVirtualAppointmentSms", json=SMS_BODY)
    assert sent.status_code == 202
    assert sent.content == b""
    reminder = api.post(
        f"{path}/sendVirtualAppointmentReminderSms",
        json={
            "attendees": [{"phoneNumber": "+13125550101", "timeZone": "Central Standard Time"}],
            "remindBeforeTimeInMinutesType": "mins15",
        },
    )
    assert reminder.status_code == 202
    confirmation, reminded = emulator.sms_sent()
    assert (confirmation.meeting_id, confirmation.user_id) == (meeting_id, ALEX)
    assert confirmation.message_type == "confirmation"
    assert confirmation.phone_numbers == ["+12065550100"]
    assert confirmation.time_zones == ["Pacific Standard Time"]
    assert (reminded.message_type, reminded.remind_before) == ("reminder", "mins15")
    # Immediate messages are due on acceptance; Graph schedules a reminder before the start.
    assert confirmation.due_date_time == confirmation.sent
    assert reminded.due_date_time == dt.datetime(2026, 12, 1, 8, 45, tzinfo=dt.UTC)
    [_, state_reminder] = emulator.state()["sms"]
    assert state_reminder["due_date_time"] == reminded.due_date_time


def test_patch_refuses_a_top_level_odata_type(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    before = emulator.meetings()
    response = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={"@odata.type": "#microsoft.graph.onlineMeeting", "subject": "Moved"},
    )
    message = assert_graph_error(response, 400, "InvalidArgument")
    assert message == "One or more properties do not support updating"
    assert set(response.json()["error"]["innerError"]) >= {"date", "request-id"}
    assert emulator.meetings() == before
    # Property annotations and annotations elsewhere (createOrGet) stay legal.
    ok = api.patch(
        f"{meetings_path()}/{meeting_id}",
        json={"subject@odata.type": "#Edm.String", "subject": "Moved"},
    )
    assert ok.status_code == 200, ok.text


def test_user_read_basic_is_enough_for_the_upn_lookup(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    assert "User.Read.All" not in DEFAULT_GRANTED_ROLES
    emulator.granted_roles = {"User.ReadBasic.All"}
    response = api.get(f"/users/{ALEX_UPN}", params={"$select": "id"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == ALEX


def test_legacy_policy_error_text(emulator: GraphEmulator, api: httpx.Client) -> None:
    emulator.legacy_policy_error = True
    message = assert_graph_error(create(api, user=NO_POLICY), 403, "Unauthorized")
    assert message.endswith(f"is not authorized to Create meeting on behalf of user {NO_POLICY}")
    assert "access policy" not in message.lower()
    emulator.reset()
    assert emulator.legacy_policy_error is False


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"attendees": [], "messageType": "confirmation"}, "attendees"),
        ({"messageType": "confirmation"}, "attendees"),
        ({"attendees": [{"phoneNumber": "+442071838750"}], "messageType": "confirmation"}, "+1"),
        ({"attendees": [{"phoneNumber": "2065550100"}], "messageType": "confirmation"}, "E.164"),
        ({"attendees": [{"phoneNumber": "+12065550100\n"}], "messageType": "confirmation"}, "+1"),
        (
            {
                "attendees": [
                    {"phoneNumber": "+1" + "".join(chr(0x660 + int(d)) for d in "2065550100")}
                ],
                "messageType": "confirmation",
            },
            "+1",
        ),
        ({"attendees": SMS_BODY["attendees"], "messageType": "reminder"}, "messageType"),
        ({"attendees": SMS_BODY["attendees"]}, "messageType"),
        (
            {
                "attendees": [{"phoneNumber": "+12065550100", "timeZone": "America/Chicago"}],
                "messageType": "confirmation",
            },
            "Windows time zone",
        ),
        ({**SMS_BODY, "language": "en"}, "not a valid parameter"),
    ],
)
def test_send_sms_validation(
    emulator: GraphEmulator, api: httpx.Client, body: dict[str, Any], fragment: str
) -> None:
    meeting_id = created_id(api)
    response = api.post(f"{meetings_path()}/{meeting_id}/sendVirtualAppointmentSms", json=body)
    assert fragment in assert_graph_error(response, 400, "BadRequest")
    assert emulator.sms_sent() == []


def test_sms_role_and_reminder_type(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    path = f"{meetings_path()}/{meeting_id}"
    bad_reminder = api.post(
        f"{path}/sendVirtualAppointmentReminderSms",
        json={"attendees": SMS_BODY["attendees"], "remindBeforeTimeInMinutesType": "mins30"},
    )
    assert "mins15" in assert_graph_error(bad_reminder, 400)
    emulator.granted_roles.discard("VirtualAppointmentNotification.Send")
    denied = api.post(f"{path}/sendVirtualAppointmentSms", json=SMS_BODY)
    assert "VirtualAppointmentNotification.Send" in assert_graph_error(denied, 403, "Forbidden")
    assert emulator.sms_sent() == []


# --------------------------------------------------------------------------- faults, latency


def test_fault_count_retry_after_and_no_state_change(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    emulator.inject_fault(operation="createOrGet", status=429, retry_after=7, count=2)
    for _ in range(2):
        response = create(api)
        assert_graph_error(response, 429, "TooManyRequests")
        assert response.headers["Retry-After"] == "7"
    assert emulator.meetings() == []
    assert create(api).status_code == 201
    assert emulator.call_counts()["createOrGet"] == 3
    assert [c.status for c in emulator.calls() if c.operation == "createOrGet"] == [429, 429, 201]


def test_faults_are_fifo_and_specific_ones_win(api: httpx.Client, emulator: GraphEmulator) -> None:
    emulator.inject_fault(status=503)
    emulator.inject_fault(status=504)
    emulator.inject_fault(operation="getUser", status=500)
    user_path = f"/users/{ALEX}"
    first = api.get(user_path)
    assert_graph_error(first, 500, "InternalServerError")
    assert "Retry-After" not in first.headers
    assert_graph_error(api.get(user_path), 503, "ServiceUnavailable")
    assert_graph_error(create(api), 504, "GatewayTimeout")
    assert api.get(user_path).status_code == 200
    with pytest.raises(ValueError, match="unknown operation"):
        emulator.inject_fault(operation="createMeeting")


def test_latency_global_and_per_fault(emulator: GraphEmulator, api: httpx.Client) -> None:
    emulator.latency = 0.15
    started = time.perf_counter()
    assert api.get(f"/users/{ALEX}").status_code == 200
    assert time.perf_counter() - started >= 0.15
    emulator.latency = 0.0
    emulator.inject_fault(operation="getUser", status=504, latency=0.2)
    started = time.perf_counter()
    assert api.get(f"/users/{ALEX}").status_code == 504
    assert time.perf_counter() - started >= 0.2


def test_seeded_fault_rate_is_deterministic() -> None:
    def run(seed: int) -> list[int]:
        with GraphEmulator() as emu:
            emu.seed_default_users()
            emu.set_fault_rate(0.5, seed=seed, statuses=(429, 503, 504), retry_after=1)
            headers = {"Authorization": f"Bearer {issue_token(emu)}"}
            with httpx.Client(base_url=emu.graph_base_url, headers=headers) as client:
                statuses = [client.get(f"/users/{ALEX}").status_code for _ in range(30)]
            assert emu.token_requests() == 1
            return statuses

    first = run(42)
    assert first == run(42)
    assert {429, 503, 504, 200} >= set(first)
    assert 5 < first.count(200) < 25
    with GraphEmulator() as emu:
        emu.set_fault_rate(0.0, seed=1)
        assert emu.state()["fault_rate"] == 0.0


def test_call_records_and_resets(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    api.delete(f"{meetings_path()}/{meeting_id}")
    calls = [c for c in emulator.calls() if c.operation != "token"]
    assert [(c.operation, c.method, c.status) for c in calls] == [
        ("createOrGet", "POST", 201),
        ("deleteMeeting", "DELETE", 204),
    ]
    assert calls[1].user_id == ALEX
    assert calls[1].meeting_id == meeting_id
    assert emulator.call_counts() == {"token": 1, "createOrGet": 1, "deleteMeeting": 1}
    emulator.reset_calls()
    assert emulator.calls() == []
    emulator.inject_fault(status=503)
    emulator.latency = 0.5
    emulator.reset()
    assert emulator.latency == 0.0
    assert emulator.meetings(include_deleted=True) == []
    assert emulator.token_requests() == 0
    # users and issued tokens survive a reset; the queued fault does not
    assert api.get(f"/users/{ALEX}").status_code == 200


def test_concurrent_create_or_get_makes_one_meeting(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    emulator.latency = 0.05  # widen the race window; sleeps happen outside the lock
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: create(api, "race").status_code, range(8)))
    assert statuses == [200] * 7 + [201]
    assert len(emulator.meetings()) == 1


# --------------------------------------------------------------------------- admin API


def test_admin_api(emulator: GraphEmulator, api: httpx.Client) -> None:
    admin = httpx.Client(base_url=emulator.origin + "/_emulator")
    created_id(api)
    state = admin.get("/state").json()
    assert {u["id"] for u in state["users"]} >= {ALEX, MEGAN, NO_POLICY}
    assert state["meetings"][0]["external_id"] == "ext-1"
    assert state["meetings"][0]["deleted"] is False
    assert state["call_counts"]["createOrGet"] == 1
    assert state["token_requests"] == 1
    assert state["sms"] == []

    assert admin.post("/faults", json={"operation": "getUser", "status": 503}).status_code == 204
    assert api.get(f"/users/{ALEX}").status_code == 503
    assert admin.post("/faults", json={"status": 503, "bogus": 1}).status_code == 400
    assert admin.post("/faults", json={"operation": "nope"}).status_code == 400

    added = admin.post(
        "/users",
        json={"user_id": "u-4", "user_principal_name": "dana@contoso.com", "access_policy": False},
    )
    assert added.status_code == 201
    assert api.get("/users/dana@contoso.com").json()["id"] == "u-4"

    config = admin.put(
        "/config", json={"granted_roles": ["User.Read.All"], "default_lobby_scope": "everyone"}
    )
    assert config.status_code == 200
    assert config.json()["granted_roles"] == ["User.Read.All"]
    assert_graph_error(create(api, "ext-2"), 403, "Forbidden")
    assert admin.put("/config", json={"latency": -1}).status_code == 400
    legacy = admin.put("/config", json={"legacy_policy_error": True})
    assert legacy.json()["legacy_policy_error"] is True
    assert emulator.legacy_policy_error is True
    assert admin.put("/config", json={"legacy_policy_error": "yes"}).status_code == 400

    assert admin.post("/reset").status_code == 204
    after = admin.get("/state").json()
    assert after["meetings"] == []
    assert after["call_counts"] == {}
    assert "u-4" in {u["id"] for u in after["users"]}
    assert after["config"]["granted_roles"] == sorted(DEFAULT_GRANTED_ROLES)
    assert admin.get("/nothing").status_code == 404
    admin.close()


# --------------------------------------------------------------------------- msgraph-sdk


def test_msgraph_sdk_round_trip(emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ManagedIdentityCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph.generated.models.attendee_notification_info import AttendeeNotificationInfo
    from msgraph.generated.models.lobby_bypass_scope import LobbyBypassScope
    from msgraph.generated.models.lobby_bypass_settings import LobbyBypassSettings
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.online_meeting import OnlineMeeting
    from msgraph.generated.models.virtual_appointment_message_type import (
        VirtualAppointmentMessageType,
    )
    from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (  # noqa: E501
        CreateOrGetPostRequestBody,
    )
    from msgraph.generated.users.item.online_meetings.item.send_virtual_appointment_sms.send_virtual_appointment_sms_post_request_body import (  # noqa: E501
        SendVirtualAppointmentSmsPostRequestBody,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient

    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    credential = ManagedIdentityCredential()
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=[emulator.origin + "/.default"], allowed_hosts=["127.0.0.1"]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = emulator.graph_base_url  # before GraphServiceClient(): it copies it
    client = GraphServiceClient(request_adapter=adapter)
    emulator.default_lobby_scope = "everyone"
    utc = dt.UTC

    async def scenario() -> None:
        meetings = client.users.by_user_id(ALEX).online_meetings
        created = await meetings.create_or_get.post(
            CreateOrGetPostRequestBody(
                external_id="sdk-1",
                start_date_time=dt.datetime(2026, 12, 1, 9, 0, tzinfo=utc),
                end_date_time=dt.datetime(2026, 12, 1, 10, 0, tzinfo=utc),
                subject="SDK visit",
            )
        )
        assert created is not None
        assert created.id
        assert created.join_web_url
        assert created.join_web_url.startswith("https://teams.microsoft.com/l/meetup-join/")
        assert created.start_date_time == dt.datetime(2026, 12, 1, 9, 0, tzinfo=utc)
        assert created.lobby_bypass_settings is not None
        assert created.lobby_bypass_settings.scope == LobbyBypassScope.Everyone
        item = meetings.by_online_meeting_id(created.id)

        link = await item.get_virtual_appointment_join_web_url.get()
        assert link is not None
        assert link.value
        assert link.value.startswith("https://visit.teams.microsoft.com/")

        # The SDK's model carries @odata.type by default, which Graph refuses on this PATCH.
        with pytest.raises(ODataError) as typed:
            await item.patch(OnlineMeeting(subject="typed"))
        assert typed.value.response_status_code == 400
        assert typed.value.error is not None
        assert typed.value.error.code == "InvalidArgument"
        # odata_type=None is no cure: the backing store sends it as `"odata_type": null`.
        with pytest.raises(ODataError) as nulled:
            await item.patch(OnlineMeeting(odata_type=None, subject="typed"))
        assert nulled.value.response_status_code == 400
        assert "odata_type" in str(nulled.value.error.message if nulled.value.error else "")

        body = OnlineMeeting(
            start_date_time=dt.datetime(2026, 12, 1, 11, 0, tzinfo=utc),
            end_date_time=dt.datetime(2026, 12, 1, 11, 30, tzinfo=utc),
            subject="SDK moved",
            lobby_bypass_settings=LobbyBypassSettings(
                scope=LobbyBypassScope.Organizer, is_dial_in_bypass_enabled=False
            ),
        )
        object.__setattr__(body, "odata_type", None)  # as shared.graph does: past the store
        patched = await item.patch(body)
        assert patched is not None
        assert patched.subject == "SDK moved"
        assert patched.end_date_time == dt.datetime(2026, 12, 1, 11, 30, tzinfo=utc)
        assert patched.lobby_bypass_settings is not None
        assert patched.lobby_bypass_settings.scope == LobbyBypassScope.Organizer

        # kiota's retry handler honours a positive Retry-After (it treats 0 as absent and backs
        # off for 3+ seconds instead, so 1 keeps this test fast)
        emulator.inject_fault(operation="getMeeting", status=503, retry_after=1)
        fetched = await item.get()
        assert fetched is not None
        assert fetched.id == created.id

        await item.send_virtual_appointment_sms.post(
            SendVirtualAppointmentSmsPostRequestBody(
                attendees=[
                    AttendeeNotificationInfo(
                        phone_number="+12065550100", time_zone="Pacific Standard Time"
                    )
                ],
                message_type=VirtualAppointmentMessageType.Cancellation,
            )
        )
        await item.delete()
        with pytest.raises(ODataError) as caught:
            await item.get()
        assert caught.value.response_status_code == 404
        assert caught.value.error is not None
        assert caught.value.error.code == "NotFound"

        # a naive datetime is serialised without an offset, which Graph (and the emulator) refuse
        with pytest.raises(ODataError) as naive:
            await meetings.create_or_get.post(
                CreateOrGetPostRequestBody(
                    external_id="sdk-naive",
                    start_date_time=dt.datetime(2026, 12, 1, 9, 0),
                    end_date_time=dt.datetime(2026, 12, 1, 10, 0),
                )
            )
        assert naive.value.response_status_code == 400

    asyncio.run(scenario())
    counts = emulator.call_counts()
    assert counts["token"] == 1
    assert counts["createOrGet"] == 2
    assert counts["getMeeting"] == 3  # one 503 retried by the SDK, one success, one 404
    assert counts["updateMeeting"] == 3  # two refused bodies, then the accepted one
    assert counts["deleteMeeting"] == counts["getJoinWebUrl"] == 1
    (meeting,) = emulator.meetings(include_deleted=True)
    assert meeting.deleted
    (sms,) = emulator.sms_sent()
    assert (sms.message_type, sms.phone_numbers) == ("cancellation", ["+12065550100"])
    assert (meeting.start, meeting.end) == ("2026-12-01T11:00:00Z", "2026-12-01T11:30:00Z")


# --------------------------------------------------------------------------- CLI


def test_cli_prints_environment_and_stops_on_sigterm() -> None:
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.graph_emulator", "--port", "0", "--seed"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Admin API"):
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "no output"
            lines.append(line.strip())
        settings = dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)
        assert set(settings) == {"GRAPH_BASE_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"}
        assert any(ALEX in line for line in lines)
        assert any("NO access policy" in line for line in lines)
        origin = settings["GRAPH_BASE_URL"].removesuffix("/v1.0")
        state = httpx.get(f"{origin}/_emulator/state").json()
        assert len(state["users"]) == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# --------------------------------------------------------------------------- the app's gateway


def test_gateway_patches_without_odata_type_and_reads_the_legacy_policy_error(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production GraphGateway's PATCH bodies pass the emulator's @odata.type refusal."""
    from shared.graph import GraphGateway, PermanentGraphError
    from shared.settings import Settings

    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    gateway = GraphGateway(Settings(graph_base_url=emulator.graph_base_url))
    assert gateway.global_features  # loopback stands in for the global cloud
    utc = dt.UTC
    start, end = (
        dt.datetime(2026, 12, 1, 9, 0, tzinfo=utc),
        dt.datetime(2026, 12, 1, 9, 30, tzinfo=utc),
    )
    meeting = gateway.create_or_get_meeting(ALEX, "gw-1", start, end, "Visit")
    moved = start + dt.timedelta(days=1)
    gateway.update_meeting(ALEX, meeting.id, moved, moved + dt.timedelta(minutes=30), "Moved")
    gateway.restrict_lobby(ALEX, meeting.id)
    [stored] = emulator.meetings()
    assert (stored.start, stored.subject) == ("2026-12-02T09:00:00Z", "Moved")
    assert stored.lobby_bypass_scope == "organizer"
    assert all(c.status == 200 for c in emulator.calls() if c.operation == "updateMeeting")

    emulator.legacy_policy_error = True
    with pytest.raises(PermanentGraphError) as refused:
        gateway.create_or_get_meeting(NO_POLICY, "gw-2", start, end, "Visit")
    assert refused.value.code == "accessPolicyMissing"


# --------------------------------------------------------------------------- sendMail

INVITE = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def mail_body(**message: Any) -> dict[str, Any]:
    """A sendMail body as GRAPH.md writes it; keyword arguments replace message properties."""
    body: dict[str, Any] = {
        "subject": "Your appointment: Visit",
        "body": {"contentType": "HTML", "content": "<p>Hello</p>"},
        "toRecipients": [{"emailAddress": {"address": "ada@example.com", "name": "Ada"}}],
        "attachments": [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "invite.ics",
                "contentType": "text/calendar; method=REQUEST",
                "contentBytes": base64.b64encode(INVITE).decode(),
            }
        ],
    }
    body.update(message)
    return {"message": {k: v for k, v in body.items() if v is not ...}, "saveToSentItems": False}


def test_send_mail_is_kept_in_state_until_reset(emulator: GraphEmulator, api: httpx.Client) -> None:
    sent = api.post(f"/users/{ALEX_UPN}/sendMail", json=mail_body())
    assert sent.status_code == 202, sent.text
    assert sent.content == b""
    by_id = api.post(f"/users/{MEGAN}/sendMail", json=mail_body(subject="Second"))
    assert by_id.status_code == 202
    first, second = emulator.mail_sent()
    assert (first.sender_id, first.sender_key) == (ALEX, ALEX_UPN)
    assert second.sender_id == MEGAN
    assert first.to_address == "ada@example.com"
    assert (first.to_addresses, first.to_names) == (["ada@example.com"], ["Ada"])
    assert (first.subject, first.html, first.body_content_type) == (
        "Your appointment: Visit",
        "<p>Hello</p>",
        "html",
    )
    assert first.save_to_sent_items is False
    [attachment] = first.attachments
    assert attachment == MailAttachment("invite.ics", "text/calendar; method=REQUEST", INVITE)
    assert emulator.call_counts()["sendMail"] == 2

    state = httpx.get(f"{emulator.origin}/_emulator/state").json()
    [shown, _] = state["mail"]
    assert shown["to_addresses"] == ["ada@example.com"]
    [shown_attachment] = shown["attachments"]
    assert shown_attachment["content_text"] == INVITE.decode()
    assert base64.b64decode(shown_attachment["content_bytes"]) == INVITE
    assert emulator.state()["mail"][1]["subject"] == "Second"

    emulator.reset()
    assert emulator.mail_sent() == []
    assert emulator.state()["mail"] == []


def test_send_mail_takes_the_sdks_capitalised_parameters_and_graphs_default(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    message = mail_body()["message"]
    assert api.post(f"/users/{ALEX}/sendMail", json={"Message": message}).status_code == 202
    [record] = emulator.mail_sent()
    assert record.save_to_sent_items is True  # Graph's default when the body leaves it out


def test_send_mail_needs_the_mail_send_role(emulator: GraphEmulator, api: httpx.Client) -> None:
    assert "Mail.Send" in DEFAULT_GRANTED_ROLES
    emulator.granted_roles.discard("Mail.Send")
    denied = api.post(f"/users/{ALEX}/sendMail", json=mail_body())
    assert "Access is denied" in assert_graph_error(denied, 403, "ErrorAccessDenied")
    assert emulator.mail_sent() == []
    emulator.reset()
    assert api.post(f"/users/{ALEX}/sendMail", json=mail_body()).status_code == 202


def test_send_mail_outside_the_exchange_scope_is_denied(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    emulator.mail_scope = {MEGAN}
    assert_graph_error(
        api.post(f"/users/{ALEX}/sendMail", json=mail_body()), 403, "ErrorAccessDenied"
    )
    assert api.post(f"/users/{MEGAN}/sendMail", json=mail_body()).status_code == 202
    admin = httpx.put(f"{emulator.origin}/_emulator/config", json={"mail_scope": [ALEX_UPN]})
    assert admin.json()["mail_scope"] == [ALEX_UPN]
    assert api.post(f"/users/{ALEX}/sendMail", json=mail_body()).status_code == 202
    emulator.reset()
    assert emulator.mail_scope is None


def test_send_mail_from_an_unknown_mailbox_is_404(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    response = api.post("/users/nobody@contoso.onmicrosoft.com/sendMail", json=mail_body())
    assert "is invalid" in assert_graph_error(response, 404, "ErrorInvalidUser")
    assert emulator.mail_sent() == []
    assert api.get(f"/users/{ALEX}/sendMail").status_code == 405


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({**mail_body(), "importance": "high"}, "ErrorInvalidRequest", "not a valid parameter"),
        (
            {"message": mail_body()["message"], "SAVETOSENTITEMS": False, "saveToSentItems": False},
            "ErrorInvalidRequest",
            "more than once",
        ),
        ({"saveToSentItems": False}, "ErrorInvalidRequest", "'message' parameter"),
        ({**mail_body(), "saveToSentItems": "no"}, "ErrorInvalidRequest", "boolean"),
        (
            mail_body(sender={"emailAddress": {"address": "x@y.com"}}),
            "ErrorInvalidRequest",
            "'sender'",
        ),
        (mail_body(toRecipients=[]), "ErrorInvalidRecipients", "At least one recipient"),
        (mail_body(toRecipients=...), "ErrorInvalidRecipients", "At least one recipient"),
        (
            mail_body(toRecipients=[{"emailAddress": {"address": "not an address"}}]),
            "ErrorInvalidRecipients",
            "isn't valid",
        ),
        (
            mail_body(toRecipients=[{"emailAddress": {"address": "a@b.com", "mail": "x"}}]),
            "ErrorInvalidRequest",
            "'mail'",
        ),
        (
            mail_body(body={"contentType": "markdown", "content": "x"}),
            "ErrorInvalidRequest",
            "contentType",
        ),
        (
            mail_body(attachments=[{"name": "invite.ics", "contentBytes": "QQ=="}]),
            "ErrorInvalidRequest",
            "@odata.type",
        ),
        (
            mail_body(
                attachments=[
                    {
                        "@odata.type": "#microsoft.graph.fileAttachment",
                        "name": "invite.ics",
                        "contentBytes": "not base64!",
                    }
                ]
            ),
            "ErrorInvalidRequest",
            "base64",
        ),
        (
            mail_body(
                attachments=[
                    {
                        "@odata.type": "#microsoft.graph.fileAttachment",
                        "name": "invite.ics",
                        "contentBytes": "QQ=",
                    }
                ]
            ),
            "ErrorInvalidRequest",
            "base64",
        ),
        (
            mail_body(
                attachments=[
                    {"@odata.type": "#microsoft.graph.fileAttachment", "contentBytes": "QQ=="}
                ]
            ),
            "ErrorInvalidRequest",
            "name",
        ),
    ],
)
def test_send_mail_refuses_bad_bodies(
    emulator: GraphEmulator, api: httpx.Client, body: dict[str, Any], code: str, fragment: str
) -> None:
    response = api.post(f"/users/{ALEX}/sendMail", json=body)
    assert fragment in assert_graph_error(response, 400, code)
    assert emulator.mail_sent() == []


def test_send_mail_faults_are_injectable(emulator: GraphEmulator, api: httpx.Client) -> None:
    emulator.inject_fault(operation="sendMail", status=429, retry_after=5)
    throttled = api.post(f"/users/{ALEX}/sendMail", json=mail_body())
    assert_graph_error(throttled, 429, "TooManyRequests")
    assert throttled.headers["Retry-After"] == "5"
    assert emulator.mail_sent() == []
    assert api.post(f"/users/{ALEX}/sendMail", json=mail_body()).status_code == 202
    assert [c.status for c in emulator.calls() if c.operation == "sendMail"] == [429, 202]


def test_gateway_send_mail_delivers_an_invite_that_parses(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production path: shared.mail builds the message, GraphGateway sends it via the SDK."""
    from icalendar import Calendar

    from shared.documents import AppointmentDocument
    from shared.graph import GraphGateway, PermanentGraphError
    from shared.mail import build_message, invite_uid
    from shared.settings import Settings

    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    gateway = GraphGateway(Settings(graph_base_url=emulator.graph_base_url))
    document = AppointmentDocument.model_validate(
        {
            "externalAppointmentId": "gw-mail-1",
            "lastModifiedDateTime": "2026-11-20T10:00:00Z",
            "organizer": ALEX,
            "startDateTime": START,
            "endDateTime": END,
            "subject": "Visit <1>",
            "timeZone": "America/Chicago",
            "appointmentClients": [
                {"displayName": 'Zoë "Z" Ng', "emailAddress": "zoe@example.com"}
            ],
        }
    )
    link = "https://visit.teams.microsoft.com/webrtc-svc/api/route?tid=t&convId=c"
    message = build_message(document, "confirmation", 0, sender=ALEX_UPN, join_url=link, sequence=0)
    gateway.send_mail(ALEX_UPN, message)

    [record] = emulator.mail_sent()
    assert record.sender_id == ALEX
    assert (record.to_addresses, record.to_names) == (["zoe@example.com"], ['Zoë "Z" Ng'])
    assert record.subject == "Your appointment: Visit <1>"
    assert record.html == message.html
    assert record.body_content_type == "html"
    assert record.save_to_sent_items is False
    [attachment] = record.attachments
    assert (attachment.name, attachment.content_type) == (
        "invite.ics",
        "text/calendar; method=REQUEST",
    )
    calendar = Calendar.from_ical(attachment.content)
    [event] = calendar.events
    assert calendar["METHOD"] == "REQUEST"
    assert event["UID"] == invite_uid("gw-mail-1")
    assert event.start == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    assert event["URL"] == link

    emulator.granted_roles.discard("Mail.Send")
    with pytest.raises(PermanentGraphError) as denied:
        gateway.send_mail(ALEX_UPN, message)
    assert denied.value.code == "mailSendDenied"
    emulator.granted_roles.add("Mail.Send")
    with pytest.raises(PermanentGraphError) as missing:
        gateway.send_mail("nobody@contoso.onmicrosoft.com", message)
    assert missing.value.code == "mailSenderNotFound"
    assert len(emulator.mail_sent()) == 1
