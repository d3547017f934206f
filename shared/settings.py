"""Typed settings, read once per process from the environment (app settings in Azure).

Values that the contract fixes (queue and table names) are constants, not settings; the queue
semantics the host applies come from host.json, the single place they are declared.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

QUEUE_NAME = "appointment-events"
POISON_QUEUE_NAME = f"{QUEUE_NAME}-poison"
TABLE_NAME = "appointments"
STORAGE_SETTING = "AzureWebJobsStorage"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
GLOBAL_GRAPH_HOST = "graph.microsoft.com"
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


class SettingsError(ValueError):
    """An app setting has a value the app cannot run with."""

    def __init__(self, setting: str, rule: str) -> None:
        super().__init__(f"{setting} {rule}")
        self.setting = setting  # the name only: safe to show a caller, unlike the value


@dataclass(frozen=True)
class StorageSettings:
    """Where the queue and the table live: a connection string, or service URIs + identity."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    credential: str | None = None
    client_id: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.connection_string or (self.queue_service_uri and self.table_service_uri))


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings = field(default_factory=StorageSettings)
    webhook_secrets: tuple[str, ...] = ()
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = 262_144
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    azure_client_id: str | None = None
    # "managedidentity" (Azure, and the emulator locally) or "azurecli" (a developer's az login).
    graph_credential: str = "managedidentity"
    # How long a version keeps trying through transient Graph failures, hand-backs included.
    retry_window_minutes: float = 60.0

    @property
    def retry_window_seconds(self) -> float:
        return self.retry_window_minutes * 60.0

    @property
    def graph_scope(self) -> str:
        """The token scope for Graph: the base URL's origin + `/.default`."""
        scheme, _, rest = self.graph_base_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}/.default"

    @property
    def graph_is_global_cloud(self) -> bool:
        """True for Microsoft's global cloud, where the browser join link and SMS exist.

        National clouds (graph.microsoft.us, dod-graph.microsoft.us,
        microsoftgraph.chinacloudapi.cn, ...) lack those calls. A loopback host is the local
        Graph emulator, which stands in for the global cloud, so it counts as global.
        """
        host = (urlsplit(self.graph_base_url).hostname or "").lower()
        if host in (GLOBAL_GRAPH_HOST, "localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        def integer(name: str, default: int, minimum: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(name, "must be a whole number") from None
            if value < minimum:
                raise SettingsError(name, f"must be at least {minimum}")
            return value

        def duration(name: str, default: float) -> float:
            """A `..._MINUTES`/`_HOURS`/`_DAYS` setting: a positive number, fractions allowed."""
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(name, "must be a number, e.g. 60 or 0.5") from None
            if not math.isfinite(value) or value <= 0:
                raise SettingsError(name, "must be a positive number")
            return value

        prefix = STORAGE_SETTING + "__"
        storage = StorageSettings(
            connection_string=environ.get(STORAGE_SETTING) or None,
            queue_service_uri=environ.get(prefix + "queueServiceUri") or None,
            table_service_uri=environ.get(prefix + "tableServiceUri") or None,
            credential=environ.get(prefix + "credential") or None,
            client_id=environ.get(prefix + "clientId") or None,
        )
        raw_secrets = environ.get("WEBHOOK_SECRETS", "")
        if raw_secrets.lstrip().startswith("@Microsoft.KeyVault("):
            # An unresolved Key Vault reference reaches the app as its literal, public text;
            # treating it as a secret would let anyone sign. No secret: fail closed.
            raw_secrets = ""
        secrets = tuple(s.strip() for s in raw_secrets.split(","))
        return cls(
            storage=storage,
            webhook_secrets=tuple(s for s in secrets if s),
            webhook_tolerance_seconds=integer("WEBHOOK_TOLERANCE_SECONDS", 300, 1),
            max_body_bytes=integer("MAX_BODY_BYTES", 262_144, 1024),
            graph_base_url=(environ.get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL).rstrip("/"),
            azure_client_id=environ.get("AZURE_CLIENT_ID") or None,
            graph_credential=_choice("GRAPH_CREDENTIAL", environ, ("managedidentity", "azurecli")),
            retry_window_minutes=duration("RETRY_WINDOW_MINUTES", 60.0),
        )


def _choice(name: str, environ: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    value = (environ.get(name) or "").strip().lower() or allowed[0]
    if value not in allowed:
        raise SettingsError(name, f"must be one of {', '.join(allowed)}")
    return value


@cache
def current() -> Settings:
    """The process's settings; Azure restarts the worker when app settings change."""
    return Settings.from_environ(os.environ)


@dataclass(frozen=True)
class QueueSemantics:
    """The queue trigger's behaviour as host.json declares it (the host applies it)."""

    max_dequeue_count: int = 5
    visibility_timeout_seconds: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval_seconds: float = 60.0
    message_encoding: str = "base64"


def _timespan(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@cache
def queue_semantics(path: Path = HOST_JSON) -> QueueSemantics:
    """Read `extensions.queues` from host.json, with the host's own defaults."""
    queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
    defaults = QueueSemantics()
    return QueueSemantics(
        max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
        visibility_timeout_seconds=_timespan(queues.get("visibilityTimeout", "00:00:00")),
        batch_size=int(queues.get("batchSize", defaults.batch_size)),
        new_batch_threshold=int(queues.get("newBatchThreshold", defaults.new_batch_threshold)),
        max_polling_interval_seconds=_timespan(queues.get("maxPollingInterval", "00:01:00")),
        message_encoding=str(queues.get("messageEncoding", defaults.message_encoding)).lower(),
    )
