"""Where TURN keys come from: static users, REST secrets, both."""

from __future__ import annotations

import base64
import hashlib
import hmac

from natkit.stun.constants import PasswordAlgorithm
from natkit.stun.credentials import long_term_key, userhash
from natkit.turn.credentials import (
    CombinedCredentials,
    RestCredentials,
    StaticCredentials,
    rest_credentials,
    rest_password,
)

REALM = "example.org"
MD5 = PasswordAlgorithm.MD5
SHA256 = PasswordAlgorithm.SHA256


def test_static_users_give_each_algorithms_key() -> None:
    creds = StaticCredentials.from_passwords({"alice": "pw"}, REALM)
    for alg in (MD5, SHA256):
        assert creds.keys("alice", alg, wallclock=0) == (long_term_key("alice", REALM, "pw", alg),)
    assert creds.keys("bob", MD5, wallclock=0) == ()
    assert creds.username_for_hash(userhash("alice", REALM)) == "alice"
    assert creds.username_for_hash(b"\x00" * 32) is None


def test_rest_password_is_coturns_base64_hmac_sha1() -> None:
    # coturn's use-auth-secret: password = base64(HMAC-SHA1(secret, "expiry:user")).
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1700000000:alice", hashlib.sha1).digest()
    ).decode()
    assert rest_password("s3cret", "1700000000:alice") == expected
    assert rest_credentials("s3cret", "alice", expiry=1700000000) == (
        "1700000000:alice",
        expected,
    )
    assert rest_credentials("s3cret", "", expiry=5)[0] == "5"


def test_rest_keys_under_every_secret_until_expiry() -> None:
    creds = RestCredentials(["old", "new"], REALM)
    username, password = rest_credentials("new", "alice", expiry=1000)
    keys = creds.keys(username, SHA256, wallclock=999)
    assert long_term_key(username, REALM, password, SHA256) in keys
    assert len(keys) == 2
    assert creds.keys(username, SHA256, wallclock=1001) == ()


def test_non_rest_usernames_have_no_rest_key() -> None:
    creds = RestCredentials(["s"], REALM)
    for name in ("alice", ":alice", "12x:alice", "9" * 13 + ":a"):
        assert creds.keys(name, MD5, wallclock=0) == ()


def test_combined_credentials_merge_sources() -> None:
    static = StaticCredentials.from_passwords({"alice": "pw"}, REALM)
    rest = RestCredentials(["s"], REALM)
    creds = CombinedCredentials([static, rest])
    username, _ = rest_credentials("s", "bob", expiry=10)
    assert len(creds.keys("alice", MD5, wallclock=0)) == 1
    assert len(creds.keys(username, MD5, wallclock=0)) == 1
    assert creds.username_for_hash(userhash("alice", REALM)) == "alice"
    assert creds.username_for_hash(b"\x01" * 32) is None
