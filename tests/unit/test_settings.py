"""Typed settings from the environment and queue semantics from host.json, pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.settings import (
    DEFAULT_GRAPH_BASE_URL,
    HOST_JSON,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    TABLE_NAME,
    QueueSemantics,
    Settings,
    SettingsError,
    StorageSettings,
    queue_semantics,
)

REPO_HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"


def test_contract_names_are_constants() -> None:
    assert QUEUE_NAME == "appointment-events"
    assert POISON_QUEUE_NAME == "appointment-events-poison"
    assert TABLE_NAME == "appointments"


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings(
        storage=StorageSettings(),
        webhook_secrets=(),
        webhook_tolerance_seconds=300,
        max_body_bytes=262_144,
        graph_base_url="https://graph.microsoft.com/v1.0",
        azure_client_id=None,
        graph_credential="managedidentity",
    )
    assert settings.storage.configured is False
    assert settings.graph_scope == "https://graph.microsoft.com/.default"


def test_empty_values_mean_defaults() -> None:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage": "",
            "WEBHOOK_SECRETS": "",
            "WEBHOOK_TOLERANCE_SECONDS": "  ",
            "MAX_BODY_BYTES": "",
            "GRAPH_BASE_URL": "",
            "AZURE_CLIENT_ID": "",
            "GRAPH_CREDENTIAL": "",
        }
    )
    assert settings == Settings.from_environ({})


def test_every_setting_is_read() -> None:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "WEBHOOK_SECRETS": "one",
            "WEBHOOK_TOLERANCE_SECONDS": " 60 ",
            "MAX_BODY_BYTES": "1024",
            "GRAPH_BASE_URL": "http://127.0.0.1:8081/v1.0/",
            "AZURE_CLIENT_ID": "22222222-2222-4222-8222-222222222222",
        }
    )
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.storage.configured is True
    assert settings.webhook_secrets == ("one",)
    assert settings.webhook_tolerance_seconds == 60
    assert settings.max_body_bytes == 1024
    assert settings.graph_base_url == "http://127.0.0.1:8081/v1.0"  # trailing slash dropped
    assert settings.azure_client_id == "22222222-2222-4222-8222-222222222222"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        (" a , b ", ("a", "b")),
        ("a,,b,", ("a", "b")),
        (", ,\t,", ()),
        ("new-secret, old-secret", ("new-secret", "old-secret")),
        ("with=equals,and;semicolon", ("with=equals", "and;semicolon")),
    ],
)
def test_secrets_are_comma_separated_and_trimmed(raw: str, expected: tuple[str, ...]) -> None:
    assert Settings.from_environ({"WEBHOOK_SECRETS": raw}).webhook_secrets == expected


@pytest.mark.parametrize("name", ["WEBHOOK_TOLERANCE_SECONDS", "MAX_BODY_BYTES"])
@pytest.mark.parametrize("raw", ["abc", "1.5", "300s", "1e3", "0x400"])
def test_non_integers_are_settings_errors(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be a whole number"):
        Settings.from_environ({name: raw})


@pytest.mark.parametrize(
    ("name", "raw", "minimum"),
    [
        ("WEBHOOK_TOLERANCE_SECONDS", "0", 1),
        ("WEBHOOK_TOLERANCE_SECONDS", "-5", 1),
        ("MAX_BODY_BYTES", "1023", 1024),
        ("MAX_BODY_BYTES", "0", 1024),
    ],
)
def test_integers_below_the_minimum_are_settings_errors(name: str, raw: str, minimum: int) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be at least {minimum}"):
        Settings.from_environ({name: raw})


def test_minimum_values_are_accepted() -> None:
    settings = Settings.from_environ({"WEBHOOK_TOLERANCE_SECONDS": "1", "MAX_BODY_BYTES": "1024"})
    assert settings.webhook_tolerance_seconds == 1
    assert settings.max_body_bytes == 1024


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("managedidentity", "managedidentity"),
        ("ManagedIdentity", "managedidentity"),
        ("azurecli", "azurecli"),
        (" AzureCli ", "azurecli"),
    ],
)
def test_graph_credential_choice(raw: str, expected: str) -> None:
    assert Settings.from_environ({"GRAPH_CREDENTIAL": raw}).graph_credential == expected


@pytest.mark.parametrize("raw", ["clientsecret", "managed identity", "az"])
def test_unknown_graph_credential_is_a_settings_error(raw: str) -> None:
    with pytest.raises(
        SettingsError, match="GRAPH_CREDENTIAL must be one of managedidentity, azurecli"
    ):
        Settings.from_environ({"GRAPH_CREDENTIAL": raw})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- Graph scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "scope"),
    [
        ("https://graph.microsoft.com/v1.0", "https://graph.microsoft.com/.default"),
        ("https://graph.microsoft.com/v1.0/", "https://graph.microsoft.com/.default"),
        ("https://graph.microsoft.com", "https://graph.microsoft.com/.default"),
        ("http://127.0.0.1:8081/v1.0", "http://127.0.0.1:8081/.default"),
        ("https://graph.microsoft.us/v1.0", "https://graph.microsoft.us/.default"),
        ("https://dod-graph.microsoft.us/v1.0", "https://dod-graph.microsoft.us/.default"),
        (
            "https://microsoftgraph.chinacloudapi.cn/v1.0",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
        ("http://localhost:8081/prefix/v1.0", "http://localhost:8081/.default"),
    ],
)
def test_graph_scope_is_the_origin_plus_default(base_url: str, scope: str) -> None:
    assert Settings.from_environ({"GRAPH_BASE_URL": base_url}).graph_scope == scope


def test_default_graph_base_url() -> None:
    assert DEFAULT_GRAPH_BASE_URL == "https://graph.microsoft.com/v1.0"


# --- storage -------------------------------------------------------------------------------------


def test_identity_based_storage_is_configured() -> None:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
            "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "33333333-3333-4333-8333-333333333333",
        }
    )
    assert settings.storage == StorageSettings(
        connection_string=None,
        queue_service_uri="https://acct.queue.core.windows.net",
        table_service_uri="https://acct.table.core.windows.net",
        credential="managedidentity",
        client_id="33333333-3333-4333-8333-333333333333",
    )
    assert settings.storage.configured is True


@pytest.mark.parametrize(
    "environ",
    [
        {"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net"},
        {"AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net"},
        {"AzureWebJobsStorage__credential": "managedidentity"},
        {
            "AzureWebJobsStorage__queueServiceUri": "",
            "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net",
        },
    ],
)
def test_partial_identity_based_storage_is_not_configured(environ: dict[str, str]) -> None:
    assert Settings.from_environ(environ).storage.configured is False


def test_connection_string_alone_is_configured() -> None:
    storage = Settings.from_environ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).storage
    assert storage.configured is True
    assert storage.queue_service_uri is None


# --- host.json queue semantics -------------------------------------------------------------------


def _seconds(timespan: str) -> float:
    hours, minutes, seconds = timespan.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_host_json_constant_is_the_repository_file() -> None:
    assert REPO_HOST_JSON.resolve() == HOST_JSON.resolve()


def test_queue_semantics_are_what_the_repository_host_json_says() -> None:
    queues: dict[str, Any] = json.loads(REPO_HOST_JSON.read_text())["extensions"]["queues"]
    assert queue_semantics() == QueueSemantics(
        max_dequeue_count=int(queues["maxDequeueCount"]),
        visibility_timeout_seconds=_seconds(queues["visibilityTimeout"]),
        batch_size=int(queues["batchSize"]),
        new_batch_threshold=int(queues["newBatchThreshold"]),
        max_polling_interval_seconds=_seconds(queues["maxPollingInterval"]),
        message_encoding=str(queues["messageEncoding"]).lower(),
    )
    # The message format (events.py) is plain UTF-8 JSON, which needs `none`.
    assert queue_semantics().message_encoding == "none"


def test_queue_semantics_defaults_for_a_host_json_without_queues(tmp_path: Path) -> None:
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"version": "2.0"}))
    assert queue_semantics(host) == QueueSemantics(
        max_dequeue_count=5,
        visibility_timeout_seconds=0.0,
        batch_size=16,
        new_batch_threshold=8,
        max_polling_interval_seconds=60.0,
        message_encoding="base64",
    )


def test_queue_semantics_reads_a_custom_host_json(tmp_path: Path) -> None:
    host = tmp_path / "host.json"
    host.write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "queues": {
                        "maxDequeueCount": 3,
                        "visibilityTimeout": "00:01:30.5",
                        "batchSize": 1,
                        "newBatchThreshold": 0,
                        "maxPollingInterval": "01:00:00",
                        "messageEncoding": "None",
                    }
                },
            }
        )
    )
    assert queue_semantics(host) == QueueSemantics(
        max_dequeue_count=3,
        visibility_timeout_seconds=90.5,
        batch_size=1,
        new_batch_threshold=0,
        max_polling_interval_seconds=3600.0,
        message_encoding="none",
    )


def test_retry_window_defaults_to_an_hour() -> None:
    settings = Settings.from_environ({"RETRY_WINDOW_MINUTES": " "})
    assert settings.retry_window_minutes == 60.0
    assert settings.retry_window_seconds == 3600.0


@pytest.mark.parametrize(("raw", "seconds"), [("0.5", 30.0), ("1", 60.0), (" 90 ", 5400.0)])
def test_retry_window_takes_fractions_of_minutes(raw: str, seconds: float) -> None:
    assert Settings.from_environ({"RETRY_WINDOW_MINUTES": raw}).retry_window_seconds == seconds


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "inf", "nan", "1h"])
def test_a_retry_window_that_is_not_a_positive_number_is_a_settings_error(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"RETRY_WINDOW_MINUTES": raw})
    assert caught.value.setting == "RETRY_WINDOW_MINUTES"


@pytest.mark.parametrize(
    ("base_url", "is_global"),
    [
        ("https://graph.microsoft.com/v1.0", True),
        ("https://GRAPH.microsoft.com/v1.0/", True),
        ("http://127.0.0.1:8081/v1.0", True),  # the local emulator stands in for it
        ("http://localhost:8081/v1.0", True),
        ("http://[::1]:8081/v1.0", True),
        ("https://graph.microsoft.us/v1.0", False),
        ("https://dod-graph.microsoft.us/v1.0", False),
        ("https://microsoftgraph.chinacloudapi.cn/v1.0", False),
        ("https://graph.microsoft.com.evil.example/v1.0", False),
        ("http://10.0.0.5:8081/v1.0", False),
    ],
)
def test_graph_is_global_cloud(base_url: str, is_global: bool) -> None:
    settings = Settings.from_environ({"GRAPH_BASE_URL": base_url})
    assert settings.graph_is_global_cloud is is_global


def test_the_default_graph_is_the_global_cloud() -> None:
    assert Settings.from_environ({}).graph_is_global_cloud
