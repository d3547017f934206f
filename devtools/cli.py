"""A signing client for the app: send webhooks the way each sender does, read status.

Why it exists: every intake route only accepts authenticated bodies, and a hand-made curl line
expires with its timestamp. This signs each request on the spot, as that kind of sender would:
the native `X-Signature: t=<unix>,v1=<hex>` (`shared.signatures.sign`, the code the app verifies
with), an HL7 interface engine's Bearer or Basic credentials (or `X-Signature`), Calendly's
`Calendly-Webhook-Signature` and Cal.com's `X-Cal-Signature-256`.

Standard library only (urllib), so it runs wherever Python does, against `make run` or a
deployed app (`--url https://<app>.azurewebsites.net --code <function key>`).

    python -m devtools.cli send examples/appointment.json
    python -m devtools.cli status example-appt-1001
    python -m devtools.cli reconcile example-appt-1001
    python -m devtools.cli send-hl7 --source epic examples/siu-s12.hl7
    python -m devtools.cli send-calendly --source booking examples/calendly-invitee-created.json
    python -m devtools.cli send-calcom --source cal examples/calcom-booking-created.json
    python -m devtools.cli organizers put --source epic --identifier 1234 \\
        --user alex.wilber@contoso.onmicrosoft.com
    python -m devtools.cli organizers get --source epic
    python -m devtools.cli organizers delete --source epic --identifier 1234

Secrets: `--secret`; else, for the default route, env WEBHOOK_SECRET or the first
WEBHOOK_SECRETS entry of local.settings.json; for a named source, the first
`SOURCES__{source}__SECRETS` entry of local.settings.json, else the sample secret `make run`
gives that source (devtools/samples.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import quote

from devtools import samples
from shared.signatures import HEADER, sign

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_URL: Final = "http://localhost:7071"
SETTINGS_FILE: Final = ROOT / "local.settings.json"
KEY_HEADER: Final = "x-functions-key"
JSON: Final = "application/json"
CLOUDEVENT: Final = "application/cloudevents+json"
CLOUDEVENT_BATCH: Final = "application/cloudevents-batch+json"
HL7: Final = "application/hl7-v2"
CALENDLY_HEADER: Final = "Calendly-Webhook-Signature"
CALCOM_HEADER: Final = "X-Cal-Signature-256"
DEFAULT_SOURCE: Final = "appointments"
MLLP_START: Final = b"\x0b"
MLLP_END: Final = b"\x1c\x0d"
HL7_AUTH: Final = ("bearer", "signature", "basic")
# MSA-1 acknowledgment codes (HL7 table 0008), for a readable ACK.
ACK_CODES: Final = {
    "AA": "application accept",
    "AE": "application error",
    "AR": "application reject",
    "CA": "commit accept",
    "CE": "commit error",
    "CR": "commit reject",
}
# ERR fields worth naming (v2.5+): where, which error, how bad, and the text for a person.
ERR_FIELDS: Final = {
    2: " (location)",
    3: " (error code)",
    4: " (severity)",
    7: " (diagnostic)",
    8: " (user message)",
}
SHORTHANDS: Final = {
    "json": JSON,
    "cloudevent": CLOUDEVENT,
    "cloudevents": CLOUDEVENT,
    "batch": CLOUDEVENT_BATCH,
}


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def infer_content_type(body: bytes) -> str:
    """A JSON array is a CloudEvents batch, an object with `specversion` a CloudEvent."""
    try:
        value = json.loads(body)
    except ValueError:
        return JSON  # let the app say what is wrong with it
    if isinstance(value, list):
        return CLOUDEVENT_BATCH
    if isinstance(value, dict) and "specversion" in value:
        return CLOUDEVENT
    return JSON


def _content_type(value: str | None) -> str | None:
    """`--content-type`: a full media type, or the shorthand json, cloudevent(s) or batch."""
    if not value:
        return None
    return SHORTHANDS.get(value.lower(), value)


def resolve_secret(explicit: str | None, settings_file: Path = SETTINGS_FILE) -> str:
    """`--secret`, else env WEBHOOK_SECRET, else the first of WEBHOOK_SECRETS in the settings."""
    if explicit:
        return explicit
    from_env = os.environ.get("WEBHOOK_SECRET", "")
    if from_env:
        return from_env
    try:
        values = json.loads(settings_file.read_text(encoding="utf-8")).get("Values", {})
    except FileNotFoundError:
        values = {}
    except ValueError as error:
        raise CliError(f"{settings_file} is not valid JSON: {error}") from None
    first = str(values.get("WEBHOOK_SECRETS", "")).split(",")[0].strip()
    if not first:
        raise CliError(
            "no signing secret: pass --secret, set WEBHOOK_SECRET, or run `make run` once "
            f"to create {settings_file.name}"
        )
    return first


def _settings_values(settings_file: Path) -> dict[str, object]:
    try:
        values = json.loads(settings_file.read_text(encoding="utf-8")).get("Values", {})
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise CliError(f"{settings_file} is not valid JSON: {error}") from None
    return values if isinstance(values, dict) else {}


def resolve_source_secret(
    source: str, explicit: str | None, settings_file: Path = SETTINGS_FILE
) -> str:
    """`--secret`, else the first `SOURCES__{source}__SECRETS` entry in the settings, else the
    sample secret `make run` configures for that source name."""
    if explicit:
        return explicit
    if source.lower() == DEFAULT_SOURCE:
        return resolve_secret(None, settings_file)
    wanted = f"sources__{source.lower()}__secrets"
    for key, value in _settings_values(settings_file).items():
        if key.lower() == wanted:
            first = str(value or "").split(",")[0].strip()
            if first:
                return first
    sample = samples.sample_secret(source)
    if sample:
        return sample
    raise CliError(
        f"no secret for source {source!r}: pass --secret, or set SOURCES__{source}__SECRETS "
        f"in {settings_file.name}"
    )


def _request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310 - the user chooses the URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()
    except urllib.error.URLError as error:
        raise CliError(f"cannot reach {url}: {error.reason} (is `make run` running?)") from None


def _key_headers(code: str | None) -> dict[str, str]:
    key = code or os.environ.get("FUNCTIONS_KEY", "")
    return {KEY_HEADER: key} if key else {}


def _print_response(status: int, headers: Mapping[str, str], payload: bytes) -> None:
    print(f"HTTP {status}")
    correlation = next((v for k, v in headers.items() if k.lower() == "x-correlation-id"), None)
    if correlation:
        print(f"X-Correlation-Id: {correlation}")
    if not payload:
        return
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if "json" not in content_type.lower():
        ack = describe_ack(payload)
        if ack is not None:
            print("\n".join(ack))
            return
    try:
        print(json.dumps(json.loads(payload), indent=2, ensure_ascii=False))
    except ValueError:
        print(payload.decode("utf-8", errors="replace"))


def send(
    path: Path,
    *,
    url: str = DEFAULT_URL,
    secret: str,
    content_type: str | None = None,
    code: str | None = None,
    now: float | None = None,
    source: str = DEFAULT_SOURCE,
) -> tuple[int, dict[str, str], bytes]:
    """Sign the file's exact bytes and POST them to a native source (default `appointments`)."""
    body = _read(path)
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": _content_type(content_type) or infer_content_type(body),
        HEADER: sign(secret, timestamp, body),
        **_key_headers(code),
    }
    return _request("POST", _webhook_url(url, source), body=body, headers=headers)


def _read(path: Path) -> bytes:
    """The file's exact bytes: what is signed is what is sent (no newline or charset changes)."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None


def _webhook_url(url: str, source: str) -> str:
    return f"{url.rstrip('/')}/api/webhooks/{quote(source, safe='')}"


def mllp_frame(body: bytes) -> bytes:
    """Wrap one message in MLLP framing (0x0B ... 0x1C 0x0D), unless it already is."""
    if body.startswith(MLLP_START):
        return body
    return MLLP_START + body + MLLP_END


def hl7_auth_headers(
    auth: str, secret: str, body: bytes, *, user: str, timestamp: int
) -> dict[str, str]:
    """The credentials an HL7 interface engine sends: Bearer, Basic or an X-Signature."""
    if auth == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    if auth == "basic":
        token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    if auth == "signature":
        return {HEADER: sign(secret, timestamp, body)}
    raise CliError(f"unknown --auth {auth!r}: use one of {', '.join(HL7_AUTH)}")


def send_hl7(
    path: Path,
    *,
    source: str,
    secret: str,
    url: str = DEFAULT_URL,
    auth: str = "bearer",
    mllp: bool = False,
    content_type: str | None = None,
    user: str = "devtools",
    code: str | None = None,
    now: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST one HL7 v2 message as read from the file (bytes unchanged, optionally framed)."""
    body = _read(path)
    if mllp:
        body = mllp_frame(body)
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": content_type or HL7,
        **hl7_auth_headers(auth, secret, body, user=user, timestamp=timestamp),
        **_key_headers(code),
    }
    return _request("POST", _webhook_url(url, source), body=body, headers=headers)


def calcom_signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: Cal.com's X-Cal-Signature-256."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def send_calendly(
    path: Path,
    *,
    source: str,
    secret: str,
    url: str = DEFAULT_URL,
    code: str | None = None,
    now: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST a Calendly webhook delivery signed as Calendly signs (`t=...,v1=...`)."""
    body = _read(path)
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": JSON,
        CALENDLY_HEADER: sign(secret, timestamp, body),
        **_key_headers(code),
    }
    return _request("POST", _webhook_url(url, source), body=body, headers=headers)


def send_calcom(
    path: Path,
    *,
    source: str,
    secret: str,
    url: str = DEFAULT_URL,
    code: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST a Cal.com webhook delivery signed as Cal.com signs (HMAC of the body, no time)."""
    body = _read(path)
    headers = {
        "Content-Type": JSON,
        CALCOM_HEADER: calcom_signature(secret, body),
        **_key_headers(code),
    }
    return _request("POST", _webhook_url(url, source), body=body, headers=headers)


def organizers_put(
    entries: object, *, url: str = DEFAULT_URL, code: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """PUT one directory entry `{source, identifier, user}` or a list of them."""
    body = json.dumps(entries).encode("utf-8")
    headers = {"Content-Type": JSON, **_key_headers(code)}
    return _request("PUT", f"{url.rstrip('/')}/api/organizers", body=body, headers=headers)


def _organizers_query(source: str, identifier: str | None) -> str:
    query = f"source={quote(source, safe='')}"
    if identifier is not None:
        query += f"&identifier={quote(identifier, safe='')}"
    return query


def organizers_get(
    source: str,
    identifier: str | None = None,
    *,
    url: str = DEFAULT_URL,
    code: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """GET a source's directory entries (or the one for `identifier`)."""
    target = f"{url.rstrip('/')}/api/organizers?{_organizers_query(source, identifier)}"
    return _request("GET", target, headers=_key_headers(code))


def organizers_delete(
    source: str, identifier: str, *, url: str = DEFAULT_URL, code: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """DELETE one directory entry."""
    target = f"{url.rstrip('/')}/api/organizers?{_organizers_query(source, identifier)}"
    return _request("DELETE", target, headers=_key_headers(code))


_HL7_ESCAPES: Final = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition"}


def _unescape(value: str, separators: dict[str, str], escape: str) -> str:
    if not escape or escape not in value:
        return value
    parts = value.split(escape)
    out = [parts[0]]
    # Between pairs of escape characters: \F\ \S\ \T\ \R\ \E\; anything else is kept.
    index = 1
    while index < len(parts):
        if index + 1 < len(parts) and parts[index] in (*_HL7_ESCAPES, "E"):
            code = parts[index]
            out.append(escape if code == "E" else separators[_HL7_ESCAPES[code]])
            out.append(parts[index + 1])
            index += 2
        else:
            out.append(escape + parts[index])
            index += 1
    return "".join(out)


def _segments(payload: bytes) -> list[str]:
    text = payload.decode("utf-8", errors="replace").strip("\x0b\x1c\r\n ")
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]


def ack_code(payload: bytes) -> str | None:
    """MSA-1 of an HL7 ACK, or None when the payload is not one."""
    segments = _segments(payload)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        return None
    field = segments[0][3]
    for segment in segments[1:]:
        fields = segment.split(field)
        if fields[0] == "MSA" and len(fields) > 1:
            return fields[1].upper()
    return None


def describe_ack(payload: bytes) -> list[str] | None:
    """`MSA-1`, `MSA-2`, `MSA-3` and any ERR segment of an HL7 ACK; None when it is not one."""
    segments = _segments(payload)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        return None
    field = segments[0][3]
    encoding = segments[0][4:8]
    separators = {
        "field": field,
        "component": encoding[0],
        "repetition": encoding[1],
        "subcomponent": encoding[3],
    }
    escape = encoding[2]
    lines: list[str] = []
    for segment in segments[1:]:
        fields = segment.split(field)
        if fields[0] == "MSA":
            values = [_unescape(v, separators, escape) for v in fields[1:4]]
            values += [""] * (3 - len(values))
            code = values[0]
            meaning = ACK_CODES.get(code.upper())
            lines.append(f"MSA-1: {code}" + (f" ({meaning})" if meaning else ""))
            lines.append(f"MSA-2: {values[1]}  (the message's MSH-10)")
            if values[2]:
                lines.append(f"MSA-3: {values[2]}")
        elif fields[0] == "ERR":
            readable = [
                f"ERR-{number}{ERR_FIELDS.get(number, '')}: {_unescape(value, separators, escape)}"
                for number, value in enumerate(fields[1:], start=1)
                if value
            ]
            lines.extend(readable)
    if not lines:
        return None
    return [*lines, "", "ACK:", *(f"  {segment}" for segment in segments)]


def status(
    external_id: str, *, url: str = DEFAULT_URL, code: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET the status record."""
    target = f"{url.rstrip('/')}/api/appointments/{quote(external_id, safe='')}"
    return _request("GET", target, headers=_key_headers(code))


def reconcile(
    external_id: str, *, url: str = DEFAULT_URL, code: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Replay the newest stored document (e.g. after granting an access policy)."""
    target = f"{url.rstrip('/')}/api/appointments/{quote(external_id, safe='')}/reconcile"
    return _request("POST", target, body=b"", headers=_key_headers(code))


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"app base URL ({DEFAULT_URL})")
    common.add_argument(
        "--code", help="function key for a deployed app (x-functions-key; env FUNCTIONS_KEY)"
    )
    common.add_argument("--settings", type=Path, default=SETTINGS_FILE, help=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="python -m devtools.cli", description="Signed webhooks and status for the app."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    send_cmd = commands.add_parser(
        "send", parents=[common], help="sign and POST a document, CloudEvent or batch"
    )
    send_cmd.add_argument("file", type=Path, help="JSON file to send as-is")
    send_cmd.add_argument(
        "--content-type",
        help="override the inferred type: a media type or json, cloudevent, batch",
    )
    send_cmd.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"a native source's name ({DEFAULT_SOURCE}: POST /api/webhooks/{DEFAULT_SOURCE})",
    )
    send_cmd.add_argument(
        "--secret",
        help="signing secret (default: env WEBHOOK_SECRET, then the first WEBHOOK_SECRETS "
        "entry of local.settings.json; for a named source its SOURCES__{source}__SECRETS)",
    )

    def source_command(name: str, text: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument("file", type=Path, help=f"file to send byte for byte ({example})")
        sub.add_argument(
            "--source", required=True, help="the source's name: /api/webhooks/{source}"
        )
        sub.add_argument(
            "--secret",
            help="the source's secret (default: SOURCES__{source}__SECRETS in "
            "local.settings.json, else the sample secret make run gives that source)",
        )
        return sub

    hl7 = source_command(
        "send-hl7",
        "POST one HL7 v2 message as an interface engine does; print its ACK",
        "examples/siu-s12.hl7",
    )
    hl7.add_argument(
        "--auth",
        choices=HL7_AUTH,
        default="bearer",
        help="Authorization: Bearer <secret> (default), an X-Signature, or Basic with the "
        "secret as password",
    )
    hl7.add_argument("--user", default="devtools", help="the Basic user name (any is accepted)")
    hl7.add_argument("--mllp", action="store_true", help="wrap it in MLLP framing (0x0B..0x1C0D)")
    hl7.add_argument(
        "--content-type",
        default=HL7,
        help=f"{HL7} (default), application/hl7-v2+er7, text/plain; charset=...",
    )
    source_command(
        "send-calendly",
        "POST a Calendly webhook delivery with its Calendly-Webhook-Signature",
        "examples/calendly-invitee-created.json",
    )
    source_command(
        "send-calcom",
        "POST a Cal.com webhook delivery with its X-Cal-Signature-256",
        "examples/calcom-booking-created.json",
    )

    for name, text in (("status", "print the status record"), ("reconcile", "replay it")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("external_appointment_id", metavar="externalAppointmentId")

    organizers = commands.add_parser(
        "organizers", help="the organizer directory: (source, identifier) -> Teams user"
    )
    actions = organizers.add_subparsers(dest="action", required=True)
    put = actions.add_parser(
        "put",
        parents=[common],
        help="save one entry (--source --identifier --user) or a JSON file of entries",
    )
    put.add_argument(
        "file", type=Path, nargs="?", help="JSON: {source, identifier, user} or a list of them"
    )
    put.add_argument("--source")
    put.add_argument("--identifier", help="the source's id for the organizer (e.g. AIP-3)")
    put.add_argument("--user", help="the Teams user: UPN or Entra object id")
    get = actions.add_parser("get", parents=[common], help="list a source's entries")
    get.add_argument("--source", required=True)
    get.add_argument("--identifier", help="only this identifier's entry")
    delete = actions.add_parser("delete", parents=[common], help="remove one entry")
    delete.add_argument("--source", required=True)
    delete.add_argument("--identifier", required=True)
    return parser


def _put_body(args: argparse.Namespace) -> object:
    """The PUT /api/organizers body: the file as-is, or one entry from the flags."""
    flags = (args.source, args.identifier, args.user)
    if args.file is not None:
        if any(flag is not None for flag in flags):
            raise CliError("give either a JSON file or --source/--identifier/--user, not both")
        try:
            return json.loads(_read(args.file))
        except ValueError as error:
            raise CliError(f"{args.file} is not valid JSON: {error}") from None
    if any(flag is None for flag in flags):
        raise CliError("organizers put needs a JSON file, or --source, --identifier and --user")
    return {"source": args.source, "identifier": args.identifier, "user": args.user}


def _run(args: argparse.Namespace) -> tuple[int, dict[str, str], bytes]:
    target = {"url": args.url, "code": args.code}
    command = args.command
    if command == "send":
        if args.source.lower() == DEFAULT_SOURCE:
            secret = resolve_secret(args.secret, args.settings)
        else:
            secret = resolve_source_secret(args.source, args.secret, args.settings)
        return send(
            args.file,
            secret=secret,
            content_type=args.content_type,
            source=args.source,
            **target,
        )
    if command in ("send-hl7", "send-calendly", "send-calcom"):
        secret = resolve_source_secret(args.source, args.secret, args.settings)
        if command == "send-hl7":
            return send_hl7(
                args.file,
                source=args.source,
                secret=secret,
                auth=args.auth,
                mllp=args.mllp,
                content_type=args.content_type,
                user=args.user,
                **target,
            )
        sender = send_calendly if command == "send-calendly" else send_calcom
        return sender(args.file, source=args.source, secret=secret, **target)
    if command == "status":
        return status(args.external_appointment_id, **target)
    if command == "reconcile":
        return reconcile(args.external_appointment_id, **target)
    if args.action == "put":
        return organizers_put(_put_body(args), **target)
    if args.action == "get":
        return organizers_get(args.source, args.identifier, **target)
    return organizers_delete(args.source, args.identifier, **target)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on a 2xx answer (and, for HL7, an `AA` ACK), 1 on any other answer, 2 on a
    usage or connection problem."""
    args = _parser().parse_args(argv)
    try:
        answer = _run(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        _print_response(*answer)
        sys.stdout.flush()
    except BrokenPipeError:
        # Piped into `head` or similar: the reader left; that is not an error of the request.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    ok = 200 <= answer[0] < 300
    if ok and args.command == "send-hl7":
        ok = ack_code(answer[2]) in ("AA", "CA")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
