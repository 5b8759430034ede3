"""GRUUs (RFC 5627): public from the instance, temporary as signed stateless tokens."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from natkit.sip.gruu import TEMP_GRUU_PREFIX, GruuSigner, instance_urn
from natkit.sip.uri import SipUri, parse_uri

SECRET = b"gruu-secret-for-tests"
INSTANCE = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
AOR = SipUri(scheme="sip", host="example.com", user="alice")


def test_public_gruu_is_the_aor_with_the_instance_urn_as_gr() -> None:
    pub = GruuSigner.public(AOR.with_param("transport", "tcp"), INSTANCE)
    assert str(pub) == "sip:alice@example.com;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    assert instance_urn(INSTANCE) == "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


def test_temporary_gruu_hides_the_aor_and_round_trips() -> None:
    signer = GruuSigner([SECRET])
    temp = signer.temporary(AOR, INSTANCE, "call@ua", now=1000.0)
    text = str(temp)
    assert text.startswith(f"sip:{TEMP_GRUU_PREFIX}") and text.endswith("@example.com;gr")
    assert "alice" not in text
    reparsed = parse_uri(text)
    assert isinstance(reparsed, SipUri)
    target = signer.resolve(reparsed)
    assert target is not None
    assert (target.aor, target.instance, target.temporary) == (AOR.aor, INSTANCE, True)
    assert target.matches(INSTANCE, "call@ua")
    assert not target.matches(INSTANCE, "another-call")  # the UA rebooted: old temp GRUUs die
    assert not target.matches("<urn:uuid:other>", "call@ua")
    assert not target.matches(None, "call@ua")


def test_each_registration_gets_a_fresh_temporary_gruu() -> None:
    signer = GruuSigner([SECRET])
    assert signer.temporary(AOR, INSTANCE, "c", now=1.0) != signer.temporary(
        AOR, INSTANCE, "c", now=2.0
    )


def test_forged_or_foreign_temporary_gruus_resolve_to_nothing() -> None:
    signer = GruuSigner([SECRET])
    temp = signer.temporary(AOR, INSTANCE, "c", now=1.0)
    assert GruuSigner([b"other"]).resolve(temp) is None
    user = temp.user or ""
    flipped = user[:-2] + ("A" if user[-2] != "A" else "B") + user[-1]
    assert signer.resolve(temp.replace(user=flipped)) is None
    assert signer.resolve(temp.replace(user="tgruu.!!!")) is None
    assert signer.resolve(temp.replace(user="tgruu.")) is None
    assert signer.resolve(temp.without_params("gr")) is None
    assert signer.resolve(AOR.with_param("gr", None)) is None
    assert GruuSigner([b"new", SECRET]).resolve(temp) is not None  # secret rotation


def test_a_public_gruu_resolves_without_a_secret_check() -> None:
    target = GruuSigner([SECRET]).resolve(GruuSigner.public(AOR, INSTANCE))
    assert target is not None and not target.temporary
    assert target.matches(INSTANCE, "any call-id")


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=20)))
def test_resolve_never_raises(user: str, gr: str | None) -> None:
    uri = SipUri(scheme="sip", host="example.com", user=TEMP_GRUU_PREFIX + user)
    GruuSigner([SECRET]).resolve(uri.with_param("gr", gr))
