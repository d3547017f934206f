"""A signing client for the app: send webhooks the way a scheduling system does, read status.

Why it exists: the intake only accepts bodies signed with `X-Signature: t=<unix>,v1=<hex>`, and
a hand-made curl line expires with its timestamp. This signs each request on the spot with
`shared.signatures.sign`, the same code the app verifies with.

Standard library only (urllib), so it runs wherever Python does, against `make run` or a
deployed app (`--url https://<app>.azurewebsites.net --code <function key>`).

    python -m devtools.cli send examples/appointment.json
    python -m devtools.cli status example-appt-1001
    python -m devtools.cli reconcile example-appt-1001
"""

from __future__ import annotations

import argparse
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

from shared.signatures import HEADER, sign

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_URL: Final = "http://localhost:7071"
SETTINGS_FILE: Final = ROOT / "local.settings.json"
KEY_HEADER: Final = "x-functions-key"
JSON: Final = "application/json"
CLOUDEVENT: Final = "application/cloudevents+json"
CLOUDEVENT_BATCH: Final = "application/cloudevents-batch+json"
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
) -> tuple[int, dict[str, str], bytes]:
    """Sign the file's exact bytes and POST them to the intake."""
    try:
        body = path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": _content_type(content_type) or infer_content_type(body),
        HEADER: sign(secret, timestamp, body),
        **_key_headers(code),
    }
    return _request(
        "POST", f"{url.rstrip('/')}/api/webhooks/appointments", body=body, headers=headers
    )


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
        "--secret",
        help="signing secret (default: env WEBHOOK_SECRET, then the first WEBHOOK_SECRETS "
        "entry of local.settings.json)",
    )
    send_cmd.add_argument("--settings", type=Path, default=SETTINGS_FILE, help=argparse.SUPPRESS)
    for name, text in (("status", "print the status record"), ("reconcile", "replay it")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("external_appointment_id", metavar="externalAppointmentId")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on a 2xx answer, 1 on any other answer, 2 on a usage or connection problem."""
    args = _parser().parse_args(argv)
    answer: tuple[int, dict[str, str], bytes]
    try:
        if args.command == "send":
            secret = resolve_secret(args.secret, args.settings)
            answer = send(
                args.file,
                url=args.url,
                secret=secret,
                content_type=args.content_type,
                code=args.code,
            )
        elif args.command == "status":
            answer = status(args.external_appointment_id, url=args.url, code=args.code)
        else:
            answer = reconcile(args.external_appointment_id, url=args.url, code=args.code)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        _print_response(*answer)
        sys.stdout.flush()
    except BrokenPipeError:
        # Piped into `head` or similar: the reader left; that is not an error of the request.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if 200 <= answer[0] < 300 else 1


if __name__ == "__main__":
    raise SystemExit(main())
