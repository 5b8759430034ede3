"""``natkit sip ...``: SIP tools for operators.

``natkit sip parse FILE|-`` reads one SIP message as a datagram transport
would receive it (RFC 3261 §18.3: octets after Content-Length are ignored, no
Content-Length means the rest of the datagram) and prints it as one JSON
object: the start line, every header in order under its canonical name, the
typed views of Via, From, To, Contact, CSeq and Call-ID, the body (text, or
base64 if it is not printable UTF-8) and ``semantic_status``, the status
:func:`natkit.sip.message.validate_request` would have an element answer
(null if none). Exit status 0. With ``--strict`` a semantic fault exits 1;
``--stream`` parses as a stream transport would (Content-Length required).

If the message is malformed, it prints what a server would do instead: the
status line it answers (``400 Bad Request: why``, ``505 Version Not
Supported: ...``) or ``dropped: why`` for a malformed response (nobody answers
responses, §18.1.2), and exits 1.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from natkit.cli.sip_register import register_command
from natkit.cli.users import add_user_commands
from natkit.errors import MalformedMessageError
from natkit.sip.aio import users as sip_users
from natkit.sip.headers import NameAddr, Via
from natkit.sip.message import (
    SipLimits,
    SipMessage,
    SipRequest,
    parse_message,
    reason_phrase,
    validate_request,
    validate_response,
)
from natkit.sip.uri import SipUri, TelUri, Uri

sip_app = typer.Typer(
    help="SIP tools: parse a message as a server would; manage SIP users.",
    no_args_is_help=True,
)
sip_user_app = typer.Typer(
    help="SIP users (digest credentials, stored as HA1 values) in the store.",
    no_args_is_help=True,
)
sip_app.add_typer(sip_user_app, name="user")
sip_app.command("register")(register_command)
add_user_commands(
    sip_user_app,
    add=sip_users.add_user,
    remove=sip_users.remove_user,
    list_users=sip_users.list_users,
    stored="its MD5, SHA-256 and SHA-512-256 HA1 values",
)


@sip_app.command("parse")
def parse_command(
    source: Annotated[str, typer.Argument(help="File with one SIP message, or - for stdin.")],
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 also when a semantic check asks for a status."),
    ] = False,
    stream: Annotated[
        bool,
        typer.Option("--stream", help="As received on TCP/TLS: Content-Length required."),
    ] = False,
    max_size: Annotated[
        int, typer.Option(help="Largest message accepted, octets.")
    ] = SipLimits().max_message_size,
) -> None:
    """Parse one SIP message (as received on UDP) and print it as JSON, or the error."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read {source}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    limits = SipLimits(max_message_size=max_size, max_body_size=max_size)
    try:
        msg = parse_message(data, limits=limits, stream=stream)
    except MalformedMessageError as exc:
        if exc.error_code is None:
            typer.echo(f"dropped: {exc}")
        else:
            typer.echo(f"{exc.error_code} {reason_phrase(exc.error_code)}: {exc}")
        raise typer.Exit(1) from exc
    result = message_to_json(msg)
    sys.stdout.write(json.dumps(_printable(result), indent=2, ensure_ascii=False) + "\n")
    if strict and (result.get("semantic_status") is not None or result.get("valid") is False):
        raise typer.Exit(1)


def _printable(value: Any) -> Any:
    """Octets that were not UTF-8 (kept by the parser as surrogate escapes)
    shown as ``\\xff`` text, so the output is always valid UTF-8 JSON."""
    if isinstance(value, str):
        if value.isascii():
            return value
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value


def uri_to_json(uri: Uri) -> dict[str, Any]:
    """A URI's components (decoded) and its canonical text."""
    if isinstance(uri, SipUri):
        return {
            "text": str(uri),
            "scheme": uri.scheme,
            "user": uri.user,
            "password": uri.password,
            "host": uri.host,
            "port": uri.port,
            "params": [[name, value] for name, value in uri.params],
            "headers": [[name, value] for name, value in uri.headers],
        }
    if isinstance(uri, TelUri):
        return {
            "text": str(uri),
            "scheme": "tel",
            "number": uri.number,
            "params": [[name, value] for name, value in uri.params],
        }
    return {"text": str(uri), "scheme": uri.scheme, "opaque": uri.opaque}


def _via_json(via: Via) -> dict[str, Any]:
    return {
        "protocol": via.protocol,
        "transport": via.transport,
        "host": via.host,
        "port": via.port,
        "branch": via.branch,
        "received": via.received,
        "rport": via.rport if via.rport is not None else via.has_rport,
        "params": [[name, value] for name, value in via.params],
    }


def _name_addr_json(value: NameAddr) -> dict[str, Any]:
    return {
        "display_name": value.display_name,
        "uri": uri_to_json(value.uri),
        "params": [[name, value] for name, value in value.params],
        "tag": value.tag,
    }


def _body_json(body: bytes) -> dict[str, Any]:
    result: dict[str, Any] = {"length": len(body)}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        result["text"] = text
    else:
        result["base64"] = base64.b64encode(body).decode("ascii")
    return result


def _optional(get: Any) -> Any:
    try:
        return get()
    except MalformedMessageError as exc:
        return {"error": str(exc)}


def message_to_json(msg: SipMessage) -> dict[str, Any]:
    """The JSON form ``natkit sip parse`` prints."""
    result: dict[str, Any]
    if isinstance(msg, SipRequest):
        result = {
            "kind": "request",
            "start_line": f"{msg.method} {msg.uri} {msg.version}",
            "method": msg.method,
            "uri": uri_to_json(msg.uri),
            "version": msg.version,
        }
    else:
        result = {
            "kind": "response",
            "start_line": f"{msg.version} {msg.status} {msg.reason}",
            "status": msg.status,
            "reason": msg.reason,
            "version": msg.version,
        }
    result["headers"] = [{"name": name, "value": value} for name, value in msg.headers]
    headers = msg.headers
    result["via"] = [_via_json(v) for v in msg.vias]
    result["from"] = _optional(lambda: _name_addr_json(msg.from_)) if "From" in headers else None
    result["to"] = _optional(lambda: _name_addr_json(msg.to)) if "To" in headers else None
    contacts = msg.contacts
    result["contact"] = (
        contacts if isinstance(contacts, str) else [_name_addr_json(c) for c in contacts]
    )
    if "CSeq" in headers:
        result["cseq"] = _optional(lambda: {"seq": msg.cseq.seq, "method": msg.cseq.method})
    else:
        result["cseq"] = None
    result["call_id"] = _optional(lambda: msg.call_id) if "Call-ID" in headers else None
    result["body"] = _body_json(msg.body)
    if isinstance(msg, SipRequest):
        result["semantic_status"] = validate_request(msg)
    else:
        result["valid"] = validate_response(msg)
    return result
