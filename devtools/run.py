"""`make run`: the whole app on one machine with no Azure tenant.

Starts, in order, Azurite (real local Azure Storage, data in `.azurite/`), the Graph
emulator (seeded organizers, one without a Teams application access policy), a callback receiver
(`devtools.callback_receiver`, in this process: it verifies the app's signed callbacks and prints
one line per callback) and the function app: under Azure Functions Core Tools (`func start`)
when `func` is on PATH, otherwise under the project's own local host (`devtools.local_host`),
which serves the same routes on the same port.
Ctrl-C or SIGTERM stops everything it started, so a second `make run` finds its ports free.

The Graph emulator keeps its meetings in memory, so each run starts it empty; storage follows
suit: when this run starts the emulator, Azurite's data is cleared at start (`--keep-data` keeps
it), so no status record names a meeting the emulator does not have. Against a real tenant (no
emulator) the data is always kept.

Settings come from `local.settings.json` (copied from `local.settings.sample.json` when missing,
as Core Tools users expect); its `Values` are put into the environment before `function_app`
is imported, exactly as the host hands app settings to the worker. Pointing the app at a real
tenant is a matter of settings (`--no-emulator`, see docs/local-development.md).

`LocalStack` is the Python API behind it; the end-to-end tests use it with their own ports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, Literal
from urllib.parse import urlsplit

from devtools import samples
from devtools.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from devtools.callback_receiver import CallbackReceiver, ReceivedCallback, describe
from devtools.graph_emulator import GraphEmulator, SeededUser
from devtools.local_host import BANNER, LocalHost, UnsupportedFunction, index, load_function_app
from shared.outbound import is_valid_secret, new_secret

ROOT: Final = Path(__file__).resolve().parent.parent
SETTINGS_FILE: Final = ROOT / "local.settings.json"
SAMPLE_FILE: Final = ROOT / "local.settings.sample.json"
AZURITE_DATA: Final = ROOT / ".azurite"
# What Azurite writes in its --location folder: its LokiJS databases (and their temporary
# copies) and the blob/queue/table extent folders. Clearing removes these and nothing else.
AZURITE_ENTRIES: Final = ("__azurite_db_*", "__*storage__")
DEFAULT_PORT: Final = 7071
# The callback receiver's port (as `python -m devtools.callback_receiver`); busy: any free one.
DEFAULT_CALLBACK_PORT: Final = 7072
# The default native source: only its CALLBACK... settings exist (SPEC "Sources").
DEFAULT_SOURCE: Final = "appointments"
# Azurite's default blob, queue and table ports (what `UseDevelopmentStorage=true` means).
DEFAULT_STORAGE_PORTS: Final = (10000, 10001, 10002)
STORAGE_SETTING: Final = "AzureWebJobsStorage"
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})

HostKind = Literal["auto", "func", "local"]

log = logging.getLogger("devtools.run")
# The appointment id in examples/siu-s12.hl7 (SCH-2), shown in the banner's `status` line.
EXAMPLE_HL7_ID: Final = "EX-1001"


class StartupError(RuntimeError):
    """The stack cannot start; the message tells the developer what to do."""


# --------------------------------------------------------------------------- settings


def load_settings(
    path: Path = SETTINGS_FILE, sample: Path = SAMPLE_FILE
) -> tuple[dict[str, str], bool]:
    """`Values` of local.settings.json, creating the file from the sample when it is missing.

    Returns the values and whether the file was just created. Every value is a string, as
    app settings are.
    """
    created = False
    if not path.exists():
        if not sample.exists():
            raise StartupError(f"{path.name} is missing and so is {sample.name}")
        shutil.copyfile(sample, path)
        created = True
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise StartupError(f"{path} is not valid JSON: {error}") from None
    if document.get("IsEncrypted"):
        raise StartupError(f"{path} is encrypted (IsEncrypted: true); decrypt it with Core Tools")
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise StartupError(f"{path}: Values must be an object")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}, created


def development_connection_string(
    ports: tuple[int, int, int] = DEFAULT_STORAGE_PORTS, host: str = "127.0.0.1"
) -> str:
    """Azurite's explicit connection string (the SDKs' `from_connection_string` all read it)."""
    blob, queue, table = ports
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{ACCOUNT};"
    )


def azurite_ports(connection_string: str) -> tuple[int, int, int] | None:
    """The blob/queue/table ports when the connection string names a loopback Azurite."""
    if connection_string.strip().lower().startswith("usedevelopmentstorage=true"):
        return DEFAULT_STORAGE_PORTS
    parts = dict(item.split("=", 1) for item in connection_string.split(";") if "=" in item)
    ports: list[int] = []
    for key in ("BlobEndpoint", "QueueEndpoint", "TableEndpoint"):
        endpoint = urlsplit(parts.get(key, ""))
        if endpoint.hostname not in LOOPBACK or endpoint.port is None:
            return None
        ports.append(endpoint.port)
    return ports[0], ports[1], ports[2]


def _setting(values: Mapping[str, str], name: str) -> str:
    """An app setting by name, case-insensitively: the settings file first, then the
    environment the app also inherits ("" when neither sets it)."""
    for source in (values, os.environ):
        for key, value in source.items():
            if key.upper() == name.upper() and value.strip():
                return value.strip()
    return ""


def _switch_on(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _loopback_port(url: str) -> int | None:
    parsed = urlsplit(url)
    return parsed.port if parsed.hostname in LOOPBACK and parsed.scheme == "http" else None


def clear_azurite_data(location: Path) -> None:
    """Remove Azurite's databases and extents from `location`, leaving anything else there."""
    if not location.is_dir():
        return
    for pattern in AZURITE_ENTRIES:
        for entry in location.glob(pattern):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections (or holds the address) on the port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _wait_for_port(port: int, deadline: float, alive: Callable[[], bool]) -> None:
    while not port_in_use(port):
        if not alive():
            raise StartupError("the function host exited during start-up (see its output above)")
        if time.monotonic() > deadline:
            raise StartupError(f"the function host did not listen on port {port} in time")
        time.sleep(0.2)


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class StackOptions:
    """How to start the stack. Ports come from the settings unless given here."""

    port: int = DEFAULT_PORT
    host_kind: HostKind = "auto"
    use_emulator: bool = True  # when GRAPH_BASE_URL is a loopback URL (see _start_emulator)
    seed: bool = True  # seeded organizers, the sample sources and their directory entries
    azurite_location: Path = AZURITE_DATA
    keep_data: bool = False  # keep Azurite's data even when the (empty) emulator starts
    fresh_app: bool = False  # tests: index a private copy of function_app (see local_host)
    # The local callback receiver for the default source and the sample sources that have no
    # CALLBACKURL of their own; on `callback_port`, else (busy, or the app's port) any free one.
    callback_receiver: bool = True
    callback_port: int = DEFAULT_CALLBACK_PORT


class LocalStack:
    """Azurite + Graph emulator + function host, started and stopped as one.

    Pass a running `azurite` or `emulator` to reuse it (an embedding test or tool); the
    stack then leaves it running on `stop()`. Otherwise it starts its own on the ports the
    settings name, so the app's settings and the processes always agree. `on_callback` sees
    each request the callback receiver gets (default: one log line).
    """

    def __init__(
        self,
        values: Mapping[str, str],
        options: StackOptions | None = None,
        *,
        azurite: Azurite | None = None,
        emulator: GraphEmulator | None = None,
        on_callback: Callable[[ReceivedCallback], None] | None = None,
    ) -> None:
        self.options = options or StackOptions()
        self.values = dict(values)
        self.azurite = azurite
        self.emulator = emulator
        self.organizers: list[SeededUser] = []
        # The sample sources this run added (devtools.samples) and the directory it loaded.
        self.sample_sources: list[samples.SampleSource] = []
        self.directory: list[tuple[str, str, str]] = []
        self.directory_error: str | None = None
        self.storage_cleared = False
        # The receiver this run started, its secrets, and the sources whose callbacks it gets.
        self.callback_receiver: CallbackReceiver | None = None
        self.callback_secrets: tuple[str, ...] = ()
        self.callback_sources: list[str] = []
        self._on_callback = on_callback or (lambda record: log.info("%s", describe(record)))
        # MAIL_SENDER when this run chose it (a seeded emulator mailbox), else None.
        self.mail_sender: str | None = None
        self.host_kind: Literal["func", "local"] | None = None
        self._owned: list[str] = []
        self._local_host: LocalHost | None = None
        self._func: subprocess.Popen[bytes] | None = None
        self._saved_environ: dict[str, str | None] = {}

    # ----------------------------------------------------------------- start

    def start(self) -> LocalStack:
        """Start what is needed; on any failure stop what was already started."""
        try:
            self._start_storage()
            self._start_emulator()
            self._add_sample_sources()
            self._start_callback_receiver()
            self._configure_mail()
            self._apply_environment()
            self._start_host()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_storage(self) -> None:
        connection = self.values.get(STORAGE_SETTING, "")
        if self.azurite is not None:
            self.values[STORAGE_SETTING] = self.azurite.connection_string
            return
        ports = azurite_ports(connection)
        if ports is None:
            if not connection:
                raise StartupError(f"{STORAGE_SETTING} is not set in local.settings.json")
            return  # a real storage account: nothing to start
        # The app's SDKs need Azurite's explicit string, not the UseDevelopmentStorage shortcut.
        self.values[STORAGE_SETTING] = development_connection_string(ports)
        busy = [port for port in ports if port_in_use(port)]
        if busy:
            raise StartupError(
                f"port {busy[0]} is in use: another Azurite (or `make run`) is probably running. "
                "Stop it, or change the ports in AzureWebJobsStorage in local.settings.json."
            )
        if self.starts_empty_emulator and not self.options.keep_data:
            # The emulator starts empty: records from an earlier run would name meetings it
            # does not have (and the examples' fixed timestamps would be stale).
            clear_azurite_data(self.options.azurite_location)
            self.storage_cleared = True
        self.options.azurite_location.mkdir(parents=True, exist_ok=True)
        self.azurite = Azurite(ports=ports, location=self.options.azurite_location)
        self._owned.append("azurite")  # before start(): an interrupted start still gets stopped
        self.azurite.start()

    @property
    def _emulator_port(self) -> int | None:
        """The port of the emulator this stack starts itself, if it starts one.

        A GRAPH_BASE_URL that is not a loopback URL (or none: the app's default is
        graph.microsoft.com) means a real tenant, so switching is a settings change only.
        """
        if not self.options.use_emulator or self.emulator is not None:
            return None
        return _loopback_port(self.values.get("GRAPH_BASE_URL", ""))

    @property
    def starts_empty_emulator(self) -> bool:
        """Whether `start()` starts its own Graph emulator, which holds no meetings yet."""
        return self._emulator_port is not None

    def _start_emulator(self) -> None:
        """Start the emulator when the settings point Graph at this machine."""
        if not self.options.use_emulator:
            return
        if self.emulator is None:
            port = self._emulator_port
            if port is None:
                return
            if port_in_use(port):
                raise StartupError(
                    f"port {port} (Graph emulator) is in use: stop what listens there or change "
                    "GRAPH_BASE_URL and IDENTITY_ENDPOINT in local.settings.json"
                )
            emulator = GraphEmulator("127.0.0.1", port)
            # The app sends the IDENTITY_HEADER from its settings; the emulator must expect it.
            if self.values.get("IDENTITY_HEADER"):
                emulator.identity_header = self.values["IDENTITY_HEADER"]
            self.emulator = emulator
            self._owned.append("emulator")
            emulator.start()
            if self.options.seed:
                self.organizers = self.emulator.seed_default_users()
        else:
            self.organizers = self.emulator.users()
        self.values.update(self.emulator.environment())

    def _add_sample_sources(self) -> None:
        """One source of each kind, unless local.settings.json configures that name itself."""
        if not self.options.seed:
            return
        present = samples.configured_source_names(self.values)
        for source in samples.SOURCES:
            if source.name not in present:
                self.values.update(source.settings())
                self.sample_sources.append(source)

    def _start_callback_receiver(self) -> None:
        """Point the default source's and the sample sources' callbacks at a local receiver.

        Only the sources without a CALLBACKURL of their own (the settings file or the
        environment): a developer's own receiver wins. The receiver verifies with the default
        source's CALLBACKSECRETS when they are set (so a receiver elsewhere can keep them), else
        with a secret generated for this run.
        """
        if not self.options.callback_receiver:
            return
        prefix = f"SOURCES__{DEFAULT_SOURCE}__"
        targets = [source.name for source in self.sample_sources]
        if not _setting(self.values, prefix + "CALLBACKURL"):
            targets.insert(0, DEFAULT_SOURCE)
        if not targets:
            return
        configured = [
            s.strip() for s in _setting(self.values, prefix + "CALLBACKSECRETS").split(",")
        ]
        secrets = [s for s in configured if s]
        invalid = [s for s in secrets if not is_valid_secret(s)]
        if invalid:
            raise StartupError(
                f"{prefix}CALLBACKSECRETS must be comma-separated whsec_ secrets (generate one: "
                "python -c 'from shared.outbound import new_secret; print(new_secret())')"
            )
        self.callback_secrets = tuple(secrets or [new_secret()])
        preferred = self.options.callback_port
        if preferred == self.options.port:
            preferred = 0  # the app's own port (e.g. --port 7072): the app keeps it
        receiver = self._callback_receiver_on(preferred)
        self.callback_receiver = receiver
        self._owned.append("callbacks")
        for name in targets:
            self.values[f"SOURCES__{name}__CALLBACKURL"] = receiver.url
            self.values[f"SOURCES__{name}__CALLBACKSECRETS"] = ",".join(self.callback_secrets)
        self.callback_sources = targets

    def _callback_receiver_on(self, port: int) -> CallbackReceiver:
        """A started receiver on `port`, or on any free port when that one is taken."""
        try:
            return self._new_callback_receiver(port).start()
        except OSError:
            if port == 0:
                raise
        log.info("port %d is in use: the callback receiver listens on a free port", port)
        return self._new_callback_receiver(0).start()

    def _new_callback_receiver(self, port: int) -> CallbackReceiver:
        return CallbackReceiver(self.callback_secrets, port=port, on_receive=self._on_callback)

    def _configure_mail(self) -> None:
        """E-mail locally: the emulator's mailbox of the first seeded organizer sends it.

        Only against the emulator this run talks to (a real tenant's mail would reach real
        people); MAIL_SENDER from the settings wins. The sample sources then send e-mail (and
        the SMS reminder, where the source sends SMS at all).
        """
        if self.emulator is None or not self.organizers:
            return
        if not _setting(self.values, "MAIL_SENDER"):
            self.mail_sender = self.organizers[0].user_principal_name
            self.values["MAIL_SENDER"] = self.mail_sender
        for source in self.sample_sources:
            prefix = f"SOURCES__{source.name}__"
            self.values[prefix + "SENDEMAIL"] = "true"
            if _switch_on(self.values.get(prefix + "SENDSMS", "")):
                self.values[prefix + "SENDSMSREMINDER"] = "true"

    def load_directory(
        self, timeout: float = 30.0, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        """PUT the sample directory entries for the seeded organizers, through the app's route.

        Called once the app answers (after `start()`: it is a request like any other, and
        Ctrl-C meanwhile is a normal stop, not an interrupted start-up). Only when this run
        seeded the emulator (the entries name its users) and configured the sample HL7 source.
        A failure is reported in the banner, never a failed start: the app itself runs, and
        `devtools.cli organizers put` can load the entries later.
        """
        seeded = {user.user_principal_name for user in self.organizers}
        configured = {source.name for source in self.sample_sources}
        entries = [
            entry for entry in samples.DIRECTORY if entry[0] in configured and entry[2] in seeded
        ]
        if not self.options.seed or not entries:
            return
        body = json.dumps(
            [{"source": s, "identifier": i, "user": u} for s, i, u in entries]
        ).encode("utf-8")
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(  # noqa: S310 - our own loopback app
                f"{self.base_url}/api/organizers",
                data=body,
                method="PUT",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    response.read()
                self.directory = entries
                return
            except urllib.error.HTTPError as error:
                # Core Tools may listen before it has indexed the functions (404 meanwhile).
                detail = f"PUT /api/organizers answered {error.code}"
                retry = error.code in (404, 502, 503)
            except (urllib.error.URLError, OSError) as error:
                detail = f"PUT /api/organizers failed: {error}"
                retry = True
            done = not retry or stopping() or not self.healthy()
            if done or time.monotonic() > deadline:
                self.directory_error = detail
                log.warning("sample organizer directory not loaded: %s", detail)
                return
            time.sleep(0.5)

    def _apply_environment(self) -> None:
        """Put the settings in the environment, as the host does for the worker."""
        for name, value in self.values.items():
            self._saved_environ.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _start_host(self) -> None:
        kind = self.options.host_kind
        func_path = shutil.which("func")
        if kind == "func" and func_path is None:
            raise StartupError("`func` (Azure Functions Core Tools) is not on PATH")
        if kind != "local" and func_path is not None:
            self._start_core_tools(func_path)
        else:
            self._start_local_host()

    def _start_core_tools(self, func_path: str) -> None:
        if port_in_use(self.options.port):
            raise StartupError(f"port {self.options.port} is in use: stop what listens there")
        self._func = subprocess.Popen(
            [func_path, "start", "--port", str(self.options.port)],
            cwd=ROOT,
            env=dict(os.environ),
            start_new_session=True,
        )
        self.host_kind = "func"
        process = self._func
        _wait_for_port(self.options.port, time.monotonic() + 120, lambda: process.poll() is None)

    def _start_local_host(self) -> None:
        # function_app is imported only now, after the settings are in the environment.
        app = load_function_app(fresh=self.options.fresh_app)
        try:
            host = LocalHost(index(app), port=self.options.port, environ=self.values)
            host.start()
        except UnsupportedFunction as error:
            raise StartupError(str(error)) from None
        except OSError as error:
            raise StartupError(
                f"cannot listen on port {self.options.port} ({error.strerror}): "
                "stop what listens there or use --port"
            ) from None
        self._local_host = host
        self.host_kind = "local"

    # ----------------------------------------------------------------- running

    @property
    def local_host(self) -> LocalHost:
        """The in-process host (only when `host_kind == "local"`)."""
        if self._local_host is None:
            raise RuntimeError("the app is not running under the local host")
        return self._local_host

    @property
    def port(self) -> int:
        if self.host_kind == "local":
            return self.local_host.port
        return self.options.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """False once a Core Tools child has exited on its own."""
        return self._func is None or self._func.poll() is None

    def banner(self, python: str = "python") -> str:
        """What the developer needs: which host, where, who can organize, what to paste."""
        lines = [""]
        if self.host_kind == "local":
            lines += [
                f"*** {BANNER} ***",
                "Function keys are not enforced locally (as with Core Tools);",
                "in Azure every route but /api/health needs one.",
                "",
                "Functions:",
                *(f"  {line}" for line in self.local_host.describe_functions()),
            ]
        else:
            lines.append("Azure Functions Core Tools (func start) is running the app.")
        lines += ["", f"App:       {self.base_url}/api  (health: {self.base_url}/api/health)"]
        if self.azurite is not None:
            where = "in-memory" if self.azurite.in_memory else str(self.azurite.location)
            lines.append(
                f"Azurite:   blob {self.azurite.blob_port}, queue {self.azurite.queue_port}, "
                f"table {self.azurite.table_port}  (data: {where})"
            )
            if self.storage_cleared:
                lines.append(
                    "           Storage starts empty each run, like the Graph emulator; "
                    f"to keep it: {python} -m devtools.run --keep-data"
                )
            elif self.options.keep_data and "emulator" in self._owned:
                lines.append(
                    "           Storage kept from earlier runs (--keep-data); the Graph emulator "
                    "still starts empty"
                )
        if self.emulator is not None:
            lines.append(
                f"Graph:     emulator {self.emulator.graph_base_url}  "
                f"(state: {self.emulator.origin}/_emulator/state)"
            )
            lines.append("Organizers:")
            lines += [
                f"  {user.user_principal_name:<40} {user.id}"
                + ("" if user.access_policy else "  (NO access policy: meetings fail with 403)")
                for user in self.organizers
            ]
        else:
            graph = self.values.get("GRAPH_BASE_URL") or "https://graph.microsoft.com/v1.0"
            credential = self.values.get("GRAPH_CREDENTIAL") or "managedidentity"
            lines.append(f"Graph:     {graph}  (no emulator; GRAPH_CREDENTIAL={credential})")
        lines += self._callback_lines()
        lines += self._source_lines()
        url = "" if self.port == DEFAULT_PORT else f" --url {self.base_url}"
        cli = f"{python} -m devtools.cli"
        lines += [
            "",
            "Try it (another terminal, in the repository):",
            f"  {cli} send examples/appointment.json{url}",
            f"  {cli} status example-appt-1001{url}",
            f"  {cli} send examples/reschedule.json{url}",
            f"  {cli} send examples/cancel.json{url}",
        ]
        added = {source.kind: source.name for source in self.sample_sources}
        if "hl7v2" in added:
            lines += [
                f"  {cli} send-hl7 --source {added['hl7v2']} examples/siu-s12.hl7{url}",
                f"  {cli} status {added['hl7v2']}:{EXAMPLE_HL7_ID}{url}",
            ]
        if "calendly" in added:
            lines.append(
                f"  {cli} send-calendly --source {added['calendly']} "
                f"examples/calendly-invitee-created.json{url}"
            )
        if "calcom" in added:
            lines.append(
                f"  {cli} send-calcom --source {added['calcom']} "
                f"examples/calcom-booking-created.json{url}"
            )
        lines += ["", "Press Ctrl-C to stop everything."]
        return "\n".join(lines)

    def _callback_lines(self) -> list[str]:
        """Where the callbacks go and where the e-mails show up."""
        lines: list[str] = []
        receiver = self.callback_receiver
        if receiver is not None:
            lines += [
                f"Callbacks: receiver {receiver.url}  (everything received: GET that URL)",
                f"           for {', '.join(self.callback_sources)}; "
                f"secret {','.join(self.callback_secrets)}",
                "           each callback prints one line here: time, type, id, status, "
                "answer, verified",
            ]
        elif not self.options.callback_receiver:
            lines.append("Callbacks: no local receiver (--no-callback-receiver)")
        sender = _setting(self.values, "MAIL_SENDER")
        if sender and self.emulator is not None:
            lines.append(
                f'E-mail:    from {sender}; sent messages (and invite.ics) under "mail" in '
                f"{self.emulator.origin}/_emulator/state"
            )
        elif sender:
            lines.append(f"E-mail:    from {sender} (MAIL_SENDER)")
        else:
            lines.append("E-mail:    off (no MAIL_SENDER)")
        return lines

    def _source_lines(self) -> list[str]:
        """Where each sender posts and what it signs with; the directory this run loaded."""
        lines = ["", "Sources (POST /api/webhooks/{source}):"]
        lines.append(
            f"  {'appointments':<13} {'native':<9} /api/webhooks/appointments"
            "  (secret: WEBHOOK_SECRETS in the settings)"
        )
        added = {source.name for source in self.sample_sources}
        for name in sorted(samples.configured_source_names(self.values)):
            if name == "appointments":
                continue
            kind = next(
                (v for k, v in self.values.items() if k.lower() == f"sources__{name}__kind"), "?"
            )
            sample = samples.sample_secret(name) if name in added else None
            secret = f"secret: {sample}" if sample else "secret: from the settings"
            lines.append(f"  {name:<13} {kind.lower():<9} /api/webhooks/{name}  ({secret})")
        if self.directory:
            lines += ["", "Organizer directory (PUT /api/organizers):"]
            lines += [f"  {s} {i:<6} -> {u}" for s, i, u in self.directory]
        elif self.directory_error:
            lines += ["", f"Organizer directory NOT loaded: {self.directory_error}"]
        return lines

    # ----------------------------------------------------------------- stop

    def stop(self) -> None:
        """Stop what this stack started, host first, and restore the environment. Idempotent."""
        host, self._local_host = self._local_host, None
        if host is not None:
            host.stop()
        process, self._func = self._func, None
        if process is not None:
            _stop_process_group(process)
        receiver, self.callback_receiver = self.callback_receiver, None
        if "callbacks" in self._owned and receiver is not None:
            receiver.stop()
        if "emulator" in self._owned and self.emulator is not None:
            self.emulator.stop()
        if "azurite" in self._owned and self.azurite is not None:
            self.azurite.stop()
        self._owned.clear()
        saved, self._saved_environ = self._saved_environ, {}
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _stop_process_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGINT the child's process group (Core Tools and its worker), then SIGKILL stragglers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --------------------------------------------------------------------------- CLI


def _python_hint() -> str:
    """How the developer should invoke Python in the printed commands.

    The interpreter running this: relative to the repository when it lives there (the venv's
    `.venv/bin/python`), else its absolute path, which works without a `python` on PATH.
    """
    if not sys.executable:
        return "python3"
    executable = Path(os.path.abspath(sys.executable))
    # Resolve the folders (the repository may be reached through a symlink) but not the file:
    # a venv's python is a symlink to the base interpreter, outside the repository.
    folder = executable.parent.resolve()
    if folder.is_relative_to(ROOT):
        return (folder / executable.name).relative_to(ROOT).as_posix()
    return shlex.quote(str(executable))


def _print_callback(record: ReceivedCallback) -> None:
    """One line per callback, marked so it stands out among the host's log lines."""
    when, _, rest = describe(record).partition(" ")
    print(f"{when} CALLBACK {rest}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the stack in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.run",
        description="Run the app locally: Azurite, the Graph emulator and the function host.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="app port (7071)")
    parser.add_argument(
        "--no-emulator",
        action="store_true",
        help="never start the Graph emulator (it starts only when GRAPH_BASE_URL in "
        "local.settings.json is a loopback URL anyway)",
    )
    parser.add_argument(
        "--local-host",
        action="store_true",
        help="use the project's local host even when `func` is on PATH",
    )
    parser.add_argument(
        "--settings", type=Path, default=SETTINGS_FILE, help="settings file (local.settings.json)"
    )
    parser.add_argument(
        "--azurite-location", type=Path, default=AZURITE_DATA, help="Azurite data folder"
    )
    parser.add_argument(
        "--callback-port",
        type=int,
        default=DEFAULT_CALLBACK_PORT,
        help=f"callback receiver port ({DEFAULT_CALLBACK_PORT}; busy or 0: any free port)",
    )
    parser.add_argument(
        "--no-callback-receiver",
        action="store_true",
        help="start no callback receiver (sources without a CALLBACKURL then send no callbacks)",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep Azurite's data from earlier runs; by default it is cleared at start when the "
        "Graph emulator runs, since the emulator starts empty (with a real tenant it is kept)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # The storage SDKs and httpx (under msgraph) log every HTTP request at INFO: noise here,
    # and the host already logs one line per invocation.
    for noisy in ("azure", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    stop = threading.Event()
    running = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # During start-up, unwind (start() stops what it began); afterwards, stop in order.
        if not running:
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        values, created = load_settings(args.settings)
        if created:
            print(f"Created {args.settings} from {SAMPLE_FILE.name}.", flush=True)
        options = StackOptions(
            port=args.port,
            host_kind="local" if args.local_host else "auto",
            use_emulator=not args.no_emulator,
            azurite_location=args.azurite_location,
            keep_data=args.keep_data,
            callback_receiver=not args.no_callback_receiver,
            callback_port=args.callback_port,
        )
        stack = LocalStack(values, options, on_callback=_print_callback)
        stack.start()
    except StartupError as error:
        print(f"make run: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("Interrupted during start-up; everything started was stopped.", flush=True)
        return 130
    running = True
    try:
        stack.load_directory(stopping=stop.is_set)
        print(stack.banner(_python_hint()), flush=True)
        while not stop.wait(0.5):
            if not stack.healthy():
                print("The function host exited; stopping.", file=sys.stderr, flush=True)
                return 1
        print("Stopping...", flush=True)
        return 0
    finally:
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
