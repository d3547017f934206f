"""Typed settings, read once per process from the environment (app settings in Azure).

Values that the contract fixes (queue and table names) are constants, not settings; the queue
semantics the host applies come from host.json, the single place they are declared.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from shared.callbacks import DEFAULT_RETRY_SCHEDULE, CallbackTarget, parse_schedule
from shared.documents import iana_zones
from shared.outbound import check_callback_url, is_valid_secret
from shared.retention import DEFAULT_DAYS as DEFAULT_RETENTION_DAYS
from shared.retention import MAX_DAYS as MAX_RETENTION_DAYS
from shared.sources.base import DEFAULT_SOURCE, KINDS, SourceConfig

QUEUE_NAME = "appointment-events"
POISON_QUEUE_NAME = f"{QUEUE_NAME}-poison"
CALLBACK_QUEUE_NAME = "appointment-callbacks"
CALLBACK_POISON_QUEUE_NAME = f"{CALLBACK_QUEUE_NAME}-poison"
ATTENDANCE_QUEUE_NAME = "appointment-attendance"
ATTENDANCE_POISON_QUEUE_NAME = f"{ATTENDANCE_QUEUE_NAME}-poison"
TABLE_NAME = "appointments"
STORAGE_SETTING = "AzureWebJobsStorage"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
GLOBAL_GRAPH_HOST = "graph.microsoft.com"
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
DIRECTORY_TABLE_NAME = "organizers"
# `SOURCES__{name}__{SETTING}`: names are matched case-insensitively (SPEC "Sources").
_SOURCE_SETTING = re.compile(r"SOURCES__([A-Za-z0-9]{1,32})__([A-Za-z]+)", re.ASCII)
_REGION = re.compile(r"[A-Za-z]{2}", re.ASCII)
_SOURCE_SETTINGS = frozenset(
    {"KIND", "SECRETS", "TIMEZONE", "PHONEREGION", "SUBJECT", "SENDSMS", "SENDEMAIL"}
    | {"SENDSMSREMINDER", "CALLBACKURL", "CALLBACKSECRETS"}
)


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
    # Named sources (SOURCES__{name}__...), by lower-case name; a source whose settings are
    # wrong is kept apart in `source_errors`, so only its own route answers 503.
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    source_errors: Mapping[str, SettingsError] = field(default_factory=dict)
    # The default source's callbacks (SOURCES__appointments__CALLBACKURL / __CALLBACKSECRETS).
    default_callback: CallbackTarget | None = None
    # Seconds between callback attempts (CALLBACK_RETRY_SCHEDULE), then the poison queue.
    callback_retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE
    # The mailbox client e-mail is sent from (UPN or object id); None: no e-mail is sent.
    mail_sender: str | None = None
    # Attendance after each appointment (SPEC "After the appointment: attendance").
    # ATTENDANCE_ENABLED=false schedules no checks (the deployment did not grant
    # OnlineMeetingArtifact.Read.All); checks already queued still run.
    attendance_enabled: bool = True
    attendance_delay_minutes: float = 10.0
    attendance_retry_minutes: float = 15.0
    attendance_window_hours: float = 24.0

    @property
    def attendance_delay_seconds(self) -> float:
        return self.attendance_delay_minutes * 60.0

    @property
    def attendance_retry_seconds(self) -> float:
        return self.attendance_retry_minutes * 60.0

    @property
    def attendance_window_seconds(self) -> float:
        return self.attendance_window_hours * 3600.0

    # Days after an appointment's end (or cancellation) until its clients' names, addresses
    # and numbers are erased (shared/retention.py); 0 keeps them.
    retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def default_source(self) -> SourceConfig:
        """`appointments`: the native document on today's route, signed with WEBHOOK_SECRETS."""
        return SourceConfig(
            DEFAULT_SOURCE, "native", self.webhook_secrets, callback=self.default_callback
        )

    def source_config(self, name: str | None) -> SourceConfig | None:
        """A document's source (None: the default source) as configured now, if it is."""
        key = (name or DEFAULT_SOURCE).lower()
        if key == DEFAULT_SOURCE:
            return self.default_source
        return self.sources.get(key)

    def callback_target(self, name: str | None) -> CallbackTarget | None:
        """Where a source's callbacks go; None when it has none (or its settings are wrong)."""
        config = self.source_config(name)
        return config.callback if config is not None else None

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

        def duration(name: str, default: float, *, zero: bool = False) -> float:
            """A `..._MINUTES`/`_HOURS`/`_DAYS` setting: a positive number, fractions allowed
            (`zero`: 0 too)."""
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(name, "must be a number, e.g. 60 or 0.5") from None
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
                rule = "a positive number or 0" if zero else "a positive number"
                raise SettingsError(name, f"must be {rule}")
            return value

        prefix = STORAGE_SETTING + "__"
        storage = StorageSettings(
            connection_string=environ.get(STORAGE_SETTING) or None,
            queue_service_uri=environ.get(prefix + "queueServiceUri") or None,
            table_service_uri=environ.get(prefix + "tableServiceUri") or None,
            credential=environ.get(prefix + "credential") or None,
            client_id=environ.get(prefix + "clientId") or None,
        )
        sources, source_errors = _sources(environ)
        default_callback = None
        try:
            default_callback = _callback(DEFAULT_SOURCE, _source_values(environ, DEFAULT_SOURCE))
        except SettingsError as error:
            source_errors[DEFAULT_SOURCE] = error
        try:
            schedule = parse_schedule(environ.get("CALLBACK_RETRY_SCHEDULE", ""))
        except ValueError:
            raise SettingsError(
                "CALLBACK_RETRY_SCHEDULE",
                "must be comma-separated whole seconds, each 1 to 604800 (7 days)",
            ) from None
        retention_days = integer("RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0)
        if retention_days > MAX_RETENTION_DAYS:
            raise SettingsError("RETENTION_DAYS", f"must be at most {MAX_RETENTION_DAYS}")
        return cls(
            storage=storage,
            webhook_secrets=secret_list(environ.get("WEBHOOK_SECRETS", "")),
            webhook_tolerance_seconds=integer("WEBHOOK_TOLERANCE_SECONDS", 300, 1),
            max_body_bytes=integer("MAX_BODY_BYTES", 262_144, 1024),
            graph_base_url=(environ.get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL).rstrip("/"),
            azure_client_id=environ.get("AZURE_CLIENT_ID") or None,
            graph_credential=_choice("GRAPH_CREDENTIAL", environ, ("managedidentity", "azurecli")),
            retry_window_minutes=duration("RETRY_WINDOW_MINUTES", 60.0),
            sources=sources,
            source_errors=source_errors,
            default_callback=default_callback,
            callback_retry_schedule=schedule,
            mail_sender=(environ.get("MAIL_SENDER") or "").strip() or None,
            attendance_enabled=_switch(
                "ATTENDANCE_ENABLED", environ.get("ATTENDANCE_ENABLED") or "true"
            ),
            attendance_delay_minutes=duration("ATTENDANCE_DELAY_MINUTES", 10.0, zero=True),
            attendance_retry_minutes=duration("ATTENDANCE_RETRY_MINUTES", 15.0),
            attendance_window_hours=duration("ATTENDANCE_WINDOW_HOURS", 24.0, zero=True),
            retention_days=retention_days,
        )


def secret_list(raw: str) -> tuple[str, ...]:
    """Comma-separated secrets; none when the value is an unresolved Key Vault reference.

    An unresolved reference reaches the app as its literal, public text: treating it as a
    secret would let anyone sign. No secret: the route fails closed.
    """
    if raw.lstrip().startswith("@Microsoft.KeyVault("):
        return ()
    return tuple(s for s in (part.strip() for part in raw.split(",")) if s)


def _switch(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise SettingsError(name, "must be true or false")


def _source(name: str, values: Mapping[str, str]) -> SourceConfig:
    """One source's settings, checked; `values` by upper-case setting name."""
    prefix = f"SOURCES__{name}__"
    kind = values.get("KIND", "").strip().lower()
    if kind not in KINDS:
        raise SettingsError(prefix + "KIND", f"must be one of {', '.join(KINDS)}")
    zone = values.get("TIMEZONE", "").strip() or "UTC"
    if zone not in iana_zones():
        raise SettingsError(prefix + "TIMEZONE", "must be an IANA time zone name")
    region = values.get("PHONEREGION", "").strip() or "US"
    if not _REGION.fullmatch(region):
        raise SettingsError(prefix + "PHONEREGION", "must be an ISO 3166-1 alpha-2 region")
    subject = values.get("SUBJECT", "").strip() or None
    if subject is not None and len(subject) > 255:
        raise SettingsError(prefix + "SUBJECT", "must be at most 255 characters")
    return SourceConfig(
        name=name,
        kind=kind,
        secrets=secret_list(values.get("SECRETS", "")),
        time_zone=zone,
        phone_region=region.upper(),
        subject=subject,
        send_sms=_switch(prefix + "SENDSMS", values.get("SENDSMS")),
        send_email=_switch(prefix + "SENDEMAIL", values.get("SENDEMAIL")),
        send_sms_reminder=_switch(prefix + "SENDSMSREMINDER", values.get("SENDSMSREMINDER")),
        callback=_callback(name, values),
    )


def _callback(name: str, values: Mapping[str, str]) -> CallbackTarget | None:
    """A source's callback URL and secrets, checked; None when no URL is set.

    A URL without a usable secret is refused rather than sent unsigned: a receiver could not
    tell the app's callbacks from anyone's.
    """
    prefix = f"SOURCES__{name}__"
    url = values.get("CALLBACKURL", "").strip()
    if not url:
        return None
    reason = check_callback_url(url)
    if reason is not None:
        raise SettingsError(prefix + "CALLBACKURL", reason)
    secrets = secret_list(values.get("CALLBACKSECRETS", ""))
    if not secrets or not all(is_valid_secret(secret) for secret in secrets):
        raise SettingsError(
            prefix + "CALLBACKSECRETS",
            "must hold one or more comma-separated whsec_ secrets when CALLBACKURL is set",
        )
    return CallbackTarget(url, secrets)


def _source_values(environ: Mapping[str, str], source: str) -> dict[str, str]:
    """One source's `SOURCES__{name}__...` settings by upper-case setting name."""
    return _grouped(environ).get(source, {})


def _sources(
    environ: Mapping[str, str],
) -> tuple[dict[str, SourceConfig], dict[str, SettingsError]]:
    """Every `SOURCES__{name}__...` source, and the ones whose settings cannot be used."""
    sources: dict[str, SourceConfig] = {}
    errors: dict[str, SettingsError] = {}
    for name, values in _grouped(environ).items():
        if name == DEFAULT_SOURCE:
            continue  # reserved: only its CALLBACK settings apply
        try:
            sources[name] = _source(name, values)
        except SettingsError as error:
            errors[name] = error
    return sources, errors


def _grouped(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    grouped: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        match = _SOURCE_SETTING.fullmatch(key)
        if match is None:
            continue
        name, setting = match.group(1).lower(), match.group(2).upper()
        if setting in _SOURCE_SETTINGS:
            grouped.setdefault(name, {})[setting] = value
    return grouped


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
