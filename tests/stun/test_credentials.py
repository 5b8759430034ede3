"""Keys, password preparation, USERHASH and nonces (RFC 8489 §9, RFC 4013, RFC 8265)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from natkit.stun.constants import NONCE_COOKIE, PasswordAlgorithm, SecurityFeature
from natkit.stun.credentials import (
    NonceCheck,
    NonceIssuer,
    PasswordProfile,
    long_term_key,
    make_nonce,
    nonce_features,
    prepare_password,
    saslprep,
    short_term_key,
    userhash,
)

F = SecurityFeature

# -- SASLprep (RFC 4013 §3 examples) -------------------------------------------


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        pytest.param("I\u00adX", "IX", id="soft-hyphen-removed"),
        pytest.param("user", "user", id="no-transformation"),
        pytest.param("USER", "USER", id="case-preserved"),
        pytest.param("\u00aa", "a", id="nfkc-ordinal"),
        pytest.param("\u2168", "IX", id="nfkc-roman-numeral"),
        pytest.param("a\u00a0b", "a b", id="non-ascii-space-mapped"),
        pytest.param("a\u200bb", "ab", id="zero-width-space-removed"),
        pytest.param("The\u00adM\u00aatr\u2168", "TheMatrIX", id="rfc5769-password"),
        pytest.param("\u0627\u0628", "\u0627\u0628", id="rtl-only"),
    ],
)
def test_saslprep_maps_and_normalizes(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\u0007", id="ascii-control"),
        pytest.param("a\u0085b", id="non-ascii-control"),
        pytest.param("\ue000", id="private-use"),
        pytest.param("\U000e0001", id="tagging"),
        pytest.param("\ufffd", id="replacement-character"),
        pytest.param("\u0221", id="unassigned"),
        pytest.param("\u0627\u0031", id="rtl-not-ending-in-rtl"),
        pytest.param("\u0627a\u0628", id="mixed-bidi"),
    ],
)
def test_saslprep_rejects_prohibited_input(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)


# -- prepare_password ------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PasswordProfile), ids=lambda p: p.value)
def test_printable_ascii_is_unchanged_by_every_profile(profile: PasswordProfile) -> None:
    assert prepare_password("pa ss/W0rd!", profile) == "pa ss/W0rd!"


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        pytest.param("\u2168", "\u2168", id="nfc-keeps-compatibility-chars"),
        pytest.param("a\u00a0b", "a b", id="non-ascii-space-mapped"),
        pytest.param("e\u0301", "\u00e9", id="nfc"),
    ],
)
def test_opaque_string_preparation(text: str, prepared: str) -> None:
    assert prepare_password(text) == prepared


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a\tb", id="ascii-control"),
        pytest.param("a\u0085b", id="non-ascii-control"),
    ],
)
def test_opaque_string_rejects_control_characters(text: str) -> None:
    with pytest.raises(ValueError):
        prepare_password(text)


def test_profile_none_leaves_anything_alone() -> None:
    assert prepare_password("a\tb\u2168", PasswordProfile.NONE) == "a\tb\u2168"


def test_saslprep_profile_uses_saslprep() -> None:
    assert prepare_password("I\u00adX", PasswordProfile.SASLPREP) == "IX"


# -- keys --------------------------------------------------------------------------


def test_short_term_key_is_the_prepared_password() -> None:
    assert short_term_key("VOkJxbRl1RmTxUk/WvJxBt") == b"VOkJxbRl1RmTxUk/WvJxBt"
    assert short_term_key("a\u00a0b") == b"a b"


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        pytest.param(PasswordAlgorithm.MD5, hashlib.md5, id="md5"),
        pytest.param(PasswordAlgorithm.SHA256, hashlib.sha256, id="sha256"),
    ],
)
def test_long_term_key_hashes_user_realm_password(
    algorithm: PasswordAlgorithm, digest: type
) -> None:
    key = long_term_key("user", "realm", "pass", algorithm)
    assert key == digest(b"user:realm:pass").digest()


def test_long_term_key_defaults_to_md5() -> None:
    assert long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()


def test_long_term_key_prepares_realm_and_password_with_opaque_string() -> None:
    key = long_term_key("u", "r\u00a0x", "p\u00a0w")
    assert key == hashlib.md5(b"u:r x:p w").digest()


def test_long_term_key_saslprep_prepares_only_the_password() -> None:
    key = long_term_key("u", "r\u2168", "\u2168", profile=PasswordProfile.SASLPREP)
    assert key == hashlib.md5("u:r\u2168:IX".encode()).digest()


def test_long_term_key_rfc5769_vector_key() -> None:
    key = long_term_key(
        "\u30de\u30c8\u30ea\u30c3\u30af\u30b9",
        "example.org",
        "The\u00adM\u00aatr\u2168",
        profile=PasswordProfile.SASLPREP,
    )
    expected = hashlib.md5("マトリックス:example.org:TheMatrIX".encode()).digest()
    assert key == expected


def test_long_term_key_refuses_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        long_term_key("u", "r", "p", 3)  # type: ignore[arg-type]


def test_userhash_is_sha256_of_user_and_realm() -> None:
    digest = userhash("user", "example.org")
    assert digest == hashlib.sha256(b"user:example.org").digest()
    assert len(digest) == 32


# -- nonce cookie and security features ---------------------------------------------


@pytest.mark.parametrize(
    ("features", "chars"),
    [
        pytest.param(F.PASSWORD_ALGORITHMS, "gAAA", id="password-algorithms-bit-0"),
        pytest.param(F.USERNAME_ANONYMITY, "QAAA", id="username-anonymity-bit-1"),
        pytest.param(F.PASSWORD_ALGORITHMS | F.USERNAME_ANONYMITY, "wAAA", id="both"),
    ],
)
def test_make_nonce_prefixes_cookie_and_24_feature_bits(features: F, chars: str) -> None:
    nonce = make_nonce(features, "rest")
    assert nonce == f"{NONCE_COOKIE}{chars}rest"
    assert nonce.startswith("obMatJos2")
    assert base64.b64decode(chars) == int(features).to_bytes(3, "big")
    assert nonce_features(nonce) == features


def test_make_nonce_without_features_has_no_cookie() -> None:
    assert make_nonce(F(0), "opaque") == "opaque"


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("f//499k954d6OL34oL9FSTvy64sA", id="no-cookie"),
        pytest.param("obMatJos2gAA", id="too-short"),
        pytest.param("obMatJos2!!!!rest", id="not-base64"),
        pytest.param("obMatJos2\u00e9AAA", id="not-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_nonce_features_of_nonce_without_valid_cookie_is_empty(nonce: str) -> None:
    assert nonce_features(nonce) == F(0)


# -- NonceIssuer ---------------------------------------------------------------------

SECRET = b"0123456789abcdef"


def test_issued_nonce_is_valid_for_its_client() -> None:
    issuer = NonceIssuer(SECRET)
    nonce = issuer.issue("192.0.2.10", now=100.0)
    assert nonce_features(nonce) == F.PASSWORD_ALGORITHMS
    assert issuer.check(nonce, "192.0.2.10", now=100.0) is NonceCheck.VALID
    assert issuer.check(nonce, "192.0.2.10", now=700.0) is NonceCheck.VALID


def test_nonce_goes_stale_after_its_lifetime() -> None:
    issuer = NonceIssuer(SECRET, lifetime=600.0)
    nonce = issuer.issue("192.0.2.10", now=100.0)
    assert issuer.check(nonce, "192.0.2.10", now=701.0) is NonceCheck.STALE


def test_nonce_for_another_client_is_invalid() -> None:
    issuer = NonceIssuer(SECRET)
    nonce = issuer.issue("192.0.2.10", now=0.0)
    assert issuer.check(nonce, "192.0.2.11", now=0.0) is NonceCheck.INVALID


def test_nonce_from_another_secret_is_invalid() -> None:
    nonce = NonceIssuer(b"other secret").issue("192.0.2.10", now=0.0)
    assert NonceIssuer(SECRET).check(nonce, "192.0.2.10", now=0.0) is NonceCheck.INVALID


def test_nonce_is_stateless_across_issuers_sharing_a_secret() -> None:
    nonce = NonceIssuer(SECRET).issue("192.0.2.10", now=0.0)
    assert NonceIssuer(SECRET).check(nonce, "192.0.2.10", now=1.0) is NonceCheck.VALID


def test_tampered_expiry_is_invalid_not_fresh() -> None:
    issuer = NonceIssuer(SECRET, features=F(0))
    nonce = issuer.issue("192.0.2.10", now=0.0)
    raw = bytearray(base64.b64decode(nonce))
    raw[0] ^= 0x01  # push expiry far into the future
    forged = base64.b64encode(bytes(raw)).decode()
    assert issuer.check(forged, "192.0.2.10", now=1000.0) is NonceCheck.INVALID


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("", id="empty"),
        pytest.param("obMatJos2gAAA", id="cookie-only"),
        pytest.param("obMatJos2gAAA!!!!", id="not-base64"),
        pytest.param("obMatJos2gAAAAAAA", id="wrong-length"),
        pytest.param("obMatJos2gAAA\u00e9\u00e9\u00e9\u00e9", id="not-ascii"),
        pytest.param("f//499k954d6OL34oL9FSTvy64sA", id="no-cookie"),
    ],
)
def test_garbage_nonce_is_invalid(nonce: str) -> None:
    assert NonceIssuer(SECRET).check(nonce, "192.0.2.10", now=0.0) is NonceCheck.INVALID


def test_nonce_announcing_other_features_is_invalid() -> None:
    anonymous = NonceIssuer(SECRET, features=F.PASSWORD_ALGORITHMS | F.USERNAME_ANONYMITY)
    nonce = anonymous.issue("192.0.2.10", now=0.0)
    assert nonce_features(nonce) == F.PASSWORD_ALGORITHMS | F.USERNAME_ANONYMITY
    assert anonymous.check(nonce, "192.0.2.10", now=0.0) is NonceCheck.VALID
    assert NonceIssuer(SECRET).check(nonce, "192.0.2.10", now=0.0) is NonceCheck.INVALID


def test_issuer_without_features_makes_cookieless_nonces() -> None:
    issuer = NonceIssuer(SECRET, features=F(0))
    nonce = issuer.issue("2001:db8::1", now=5.0)
    assert not nonce.startswith(NONCE_COOKIE)
    assert issuer.check(nonce, "2001:db8::1", now=5.0) is NonceCheck.VALID


def test_a_remembered_nonce_is_judged_as_a_fresh_check_would() -> None:
    issuer = NonceIssuer(SECRET, lifetime=10.0)
    nonce = issuer.issue("192.0.2.10", now=0.0)
    fresh = NonceIssuer(SECRET, lifetime=10.0)  # nothing remembered
    for client, now in [("192.0.2.10", 1.0), ("192.0.2.10", 1.0), ("192.0.2.11", 1.0)]:
        assert issuer.check(nonce, client, now=now) is fresh.check(nonce, client, now=now)
    assert issuer.check(nonce, "192.0.2.11", now=1.0) is NonceCheck.INVALID  # not its client
    assert issuer.check(nonce, "192.0.2.10", now=11.0) is NonceCheck.STALE  # remembered, stale
    tampered = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    assert issuer.check(tampered, "192.0.2.10", now=1.0) is NonceCheck.INVALID


def test_the_remembered_nonces_are_bounded() -> None:
    from natkit.stun import credentials

    issuer = NonceIssuer(SECRET)
    for i in range(credentials._VERIFIED_MAX + 10):
        client = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        assert issuer.check(issuer.issue(client, now=0.0), client, now=0.0) is NonceCheck.VALID
    assert len(issuer._verified) <= credentials._VERIFIED_MAX
