"""A named native source's switches become the documents' settings; the sender's own win."""

from __future__ import annotations

import json
from typing import Any

from shared.sources.base import SourceConfig
from shared.sources.native import KIND
from tests.unit.factories import doc

REMINDING = SourceConfig(name="clinic", kind="native", send_sms=True, send_sms_reminder=True)


def settings_of(body: dict[str, Any], config: SourceConfig) -> object:
    headers = {"content-type": "application/json"}
    parsed = KIND.parse(headers, json.dumps(body).encode("utf-8"), config)
    (candidate,) = parsed.candidates
    return candidate.document["settings"]


def test_the_sources_switches_set_sms_and_its_reminder() -> None:
    assert settings_of(doc(), REMINDING) == {
        "sendSmsNotifications": True,
        "sendSmsReminder": True,
        "sendEmailNotifications": False,
    }
    quiet = SourceConfig(name="clinic", kind="native")
    assert settings_of(doc(), quiet) == {
        "sendSmsNotifications": False,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }


def test_the_senders_own_reminder_setting_wins() -> None:
    body = doc(settings={"sendSmsReminder": False})
    assert settings_of(body, REMINDING) == {
        "sendSmsNotifications": True,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }


def test_the_sources_e_mail_switch_sets_e_mail_and_the_senders_own_setting_wins() -> None:
    mailing = SourceConfig(name="clinic", kind="native", send_email=True)
    assert settings_of(doc(), mailing) == {
        "sendSmsNotifications": False,
        "sendSmsReminder": False,
        "sendEmailNotifications": True,
    }
    body = doc(settings={"sendEmailNotifications": False})
    assert settings_of(body, mailing) == {
        "sendSmsNotifications": False,
        "sendSmsReminder": False,
        "sendEmailNotifications": False,
    }
