"""natkit sip parse: JSON for good messages, the server's answer for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app

runner = CliRunner()
TORTURE = Path(__file__).parent.parent / "data" / "sip_torture"


def test_sip_is_listed_in_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "sip" in result.output


def test_parse_torture_message_prints_json() -> None:
    result = runner.invoke(app, ["sip", "parse", str(TORTURE / "esc01.dat")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kind"] == "request"
    assert data["method"] == "INVITE"
    assert data["uri"]["user"] == "sips:user@example.com"
    assert data["headers"][0] == {"name": "To", "value": "sip:%75se%72@example.com"}
    assert [h["name"] for h in data["headers"]].count("Call-ID") == 1  # "i" expanded
    assert data["via"][0]["branch"] == "z9hG4bKkdjuw"
    assert data["to"]["uri"]["user"] == "user"
    assert data["from"]["tag"] == "938"
    assert data["contact"][0]["uri"]["params"] == [["lr", None], ["name", "value%41"]]
    assert data["cseq"] == {"seq": 234234, "method": "INVITE"}
    assert data["call_id"] == "esc01.239409asdfakjkn23onasd0-3234"
    assert data["body"]["length"] == 150
    assert data["body"]["text"].startswith("v=0")
    assert data["semantic_status"] is None


def test_parse_binary_body_is_base64() -> None:
    result = runner.invoke(app, ["sip", "parse", str(TORTURE / "mpart01.dat")])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)["body"]
    assert body["length"] == 553 and "base64" in body


def test_parse_reads_stdin() -> None:
    data = (TORTURE / "unreason.dat").read_bytes()
    result = runner.invoke(app, ["sip", "parse", "-"], input=data)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["kind"] == "response" and parsed["status"] == 200
    assert parsed["reason"].startswith("= 2**3 * 5**2 но")
    assert parsed["valid"] is True


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("badinv01", "400 Bad Request: ", id="badinv01-400"),
        pytest.param("badvers", "505 Version Not Supported: ", id="badvers-505"),
        pytest.param("bigcode", "dropped: ", id="bigcode-drop"),
        pytest.param("clerr", "400 Bad Request: Content-Length 9999", id="clerr-400"),
    ],
)
def test_parse_malformed_prints_the_answer_and_exits_1(name: str, expected: str) -> None:
    result = runner.invoke(app, ["sip", "parse", str(TORTURE / f"{name}.dat")])
    assert result.exit_code == 1
    assert result.output.startswith(expected)


def test_semantic_fault_is_reported_and_strict_exits_1() -> None:
    path = str(TORTURE / "unkscm.dat")
    result = runner.invoke(app, ["sip", "parse", path])
    assert result.exit_code == 0
    assert json.loads(result.output)["semantic_status"] == 416
    assert json.loads(result.output)["uri"]["opaque"] == "totallyopaquecontent"
    assert runner.invoke(app, ["sip", "parse", "--strict", path]).exit_code == 1


def test_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sip", "parse", str(tmp_path / "nope.dat")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_stream_mode_requires_content_length() -> None:
    path = str(TORTURE / "inv2543.dat")
    assert runner.invoke(app, ["sip", "parse", path]).exit_code == 0
    result = runner.invoke(app, ["sip", "parse", "--stream", path])
    assert result.exit_code == 1
    assert result.output.startswith("400 Bad Request: no Content-Length")


def test_octets_that_are_not_utf8_print_as_escapes() -> None:
    data = b'OPTIONS sip:a@b SIP/2.0\r\nX-Bin: a\xffb\r\nTo: "\xfe" <sip:a@b>\r\n\r\n\xff'
    result = runner.invoke(app, ["sip", "parse", "-"], input=data)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["headers"][0] == {"name": "X-Bin", "value": "a\\xffb"}
    assert parsed["to"]["display_name"] == "\\xfe"
    assert parsed["body"] == {"length": 1, "base64": "/w=="}
