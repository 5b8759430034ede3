"""Flow tokens (RFC 5626 §5.2): round trips, forgery, rotation, hostile input."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.sip.flow import SipTransport, Source
from natkit.sip.flow_token import MAX_FLOW_ID_BYTES, FlowTokenSigner

SECRET = b"s" * 32
OTHER = b"o" * 32

FLOWS = [
    pytest.param(
        Source(SipTransport.UDP, Endpoint("203.0.113.7", 40000), Endpoint("192.0.2.1", 5060), "u1"),
        id="udp-v4",
    ),
    pytest.param(
        Source(SipTransport.TCP, Endpoint("2001:db8::7", 1), Endpoint("2001:db8::1", 5060), "t:42"),
        id="tcp-v6",
    ),
    pytest.param(
        Source(SipTransport.WSS, Endpoint("198.51.100.9", 65535), Endpoint("::1", 443), ""),
        id="wss-mixed-empty-id",
    ),
]


@pytest.mark.parametrize("flow", FLOWS)
def test_token_round_trips(flow: Source) -> None:
    signer = FlowTokenSigner([SECRET])
    token = signer.encode(flow)
    assert signer.decode(token) == flow


@pytest.mark.parametrize("flow", FLOWS)
def test_token_is_a_plain_sip_user_part(flow: Source) -> None:
    token = FlowTokenSigner([SECRET]).encode(flow)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_token_signed_with_another_secret_is_rejected() -> None:
    flow = FLOWS[0].values[0]
    token = FlowTokenSigner([OTHER]).encode(flow)
    assert FlowTokenSigner([SECRET]).decode(token) is None


def test_rotation_accepts_old_secret_and_signs_with_new() -> None:
    flow = FLOWS[1].values[0]
    old_token = FlowTokenSigner([OTHER]).encode(flow)
    rotated = FlowTokenSigner([SECRET, OTHER])
    assert rotated.decode(old_token) == flow
    assert FlowTokenSigner([SECRET]).decode(rotated.encode(flow)) == flow


def test_every_single_character_change_is_rejected() -> None:
    signer = FlowTokenSigner([SECRET])
    token = signer.encode(FLOWS[0].values[0])
    alphabet = string.ascii_letters + string.digits + "-_"
    for i, char in enumerate(token):
        for replacement in ("A", "z"):
            if replacement == char:
                continue
            forged = token[:i] + replacement + token[i + 1 :]
            decoded = signer.decode(forged)
            # The last character may carry padding bits only, which base64
            # decoding ignores: then the bytes, and the flow, are the same.
            assert decoded is None or decoded == FLOWS[0].values[0], forged
    assert all(c in alphabet for c in token)


def test_flow_id_length_is_bounded() -> None:
    flow = Source(SipTransport.TCP, Endpoint("192.0.2.1", 1), Endpoint("192.0.2.2", 2), "x" * 65)
    with pytest.raises(ValueError, match="longer than"):
        FlowTokenSigner([SECRET]).encode(flow)
    assert MAX_FLOW_ID_BYTES == 64


@pytest.mark.parametrize("secrets", [[], [b"short"]], ids=["none", "short"])
def test_weak_configuration_is_refused(secrets: list[bytes]) -> None:
    with pytest.raises(ValueError):
        FlowTokenSigner(secrets)


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert FlowTokenSigner([SECRET]).decode(text) is None


@given(st.binary(max_size=120))
def test_arbitrary_bytes_with_valid_base64_never_raise(raw: bytes) -> None:
    import base64

    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert FlowTokenSigner([SECRET]).decode(token) is None


@pytest.mark.parametrize("flow", FLOWS)
def test_token_hides_the_addresses_it_names(flow: Source) -> None:
    import base64
    import ipaddress

    token = FlowTokenSigner([SECRET]).encode(flow)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for endpoint in (flow.local, flow.remote):
        assert ipaddress.ip_address(endpoint.host).packed not in raw
    assert flow.flow.encode() not in raw or not flow.flow


def test_same_flow_gives_the_same_token() -> None:
    signer = FlowTokenSigner([SECRET])
    flow = FLOWS[0].values[0]
    assert signer.encode(flow) == signer.encode(flow)
