"""The classic RFC 3489 §10.1 test (ECC Annex A) through emulated NATs:
each outcome for the NAT that should produce it, and "server-cannot-tell"
instead of a wrong verdict when the server cannot run the test."""

from __future__ import annotations

import pytest

from natkit.nat.types import Filtering, Mapping, NatType

from .harness import (
    ADF,
    ADM,
    APDF,
    APDM,
    EIF,
    EIM,
    FULL_CONE,
    OPEN_INTERNET,
    PORT_RESTRICTED_CONE,
    RESTRICTED_CONE,
    SYMMETRIC,
    SYMMETRIC_UDP_FIREWALL,
    UDP_BLOCKED,
    IgnoresChangeRequestServer,
    NatBehavior,
    PlainServer,
    run_natcheck,
)

PRESETS = [
    pytest.param(OPEN_INTERNET, NatType.OPEN_INTERNET, id="open-internet"),
    pytest.param(FULL_CONE, NatType.FULL_CONE, id="full-cone"),
    pytest.param(RESTRICTED_CONE, NatType.RESTRICTED_CONE, id="restricted-cone"),
    pytest.param(PORT_RESTRICTED_CONE, NatType.PORT_RESTRICTED_CONE, id="port-restricted-cone"),
    pytest.param(SYMMETRIC, NatType.SYMMETRIC, id="symmetric"),
    pytest.param(
        SYMMETRIC_UDP_FIREWALL, NatType.SYMMETRIC_UDP_FIREWALL, id="symmetric-udp-firewall"
    ),
    pytest.param(UDP_BLOCKED, NatType.UDP_BLOCKED, id="udp-blocked"),
]


@pytest.mark.parametrize(("behavior", "expected"), PRESETS)
def test_classic_returns_the_emulated_type(behavior: NatBehavior, expected: NatType) -> None:
    result = run_natcheck(behavior).result
    assert result.classic is expected
    assert result.classic_reason == ""


# RFC 3489's tree only knows the four cone/symmetric shapes. Where RFC 4787
# mapping and filtering combine otherwise it still answers, sometimes wrongly:
# Test II getting through (endpoint-independent filtering) ends the test as
# "full cone" before mapping is looked at. RFC 5780 discovery (test_behavior)
# reports these combinations correctly; this table pins down what the
# classic verdict says for them.
NINE_COMBINATIONS = [
    pytest.param(EIM, EIF, NatType.FULL_CONE, id="eim-eif"),
    pytest.param(EIM, ADF, NatType.RESTRICTED_CONE, id="eim-adf"),
    pytest.param(EIM, APDF, NatType.PORT_RESTRICTED_CONE, id="eim-apdf"),
    pytest.param(ADM, EIF, NatType.FULL_CONE, id="adm-eif-looks-full-cone"),
    pytest.param(ADM, ADF, NatType.SYMMETRIC, id="adm-adf"),
    pytest.param(ADM, APDF, NatType.SYMMETRIC, id="adm-apdf"),
    pytest.param(APDM, EIF, NatType.FULL_CONE, id="apdm-eif-looks-full-cone"),
    pytest.param(APDM, ADF, NatType.SYMMETRIC, id="apdm-adf"),
    pytest.param(APDM, APDF, NatType.SYMMETRIC, id="apdm-apdf"),
]


@pytest.mark.parametrize(("mapping", "filtering", "expected"), NINE_COMBINATIONS)
def test_classic_verdict_for_each_rfc4787_combination(
    mapping: Mapping, filtering: Filtering, expected: NatType
) -> None:
    behavior = NatBehavior(mapping=mapping, filtering=filtering)
    assert run_natcheck(behavior).result.classic is expected


# A server that ignores CHANGE-REQUEST answers Test II from its primary
# address, which every NAT lets through: taken at face value that is "full
# cone" (or "open internet") for everyone. Only the source check stops it.
CANNOT_TELL = [
    pytest.param(OPEN_INTERNET, NatType.UNDETERMINED, id="open-internet"),
    pytest.param(FULL_CONE, NatType.UNDETERMINED, id="full-cone"),
    pytest.param(RESTRICTED_CONE, NatType.UNDETERMINED, id="restricted-cone"),
    pytest.param(PORT_RESTRICTED_CONE, NatType.UNDETERMINED, id="port-restricted-cone"),
    pytest.param(SYMMETRIC, NatType.UNDETERMINED, id="symmetric"),
    pytest.param(SYMMETRIC_UDP_FIREWALL, NatType.UNDETERMINED, id="symmetric-udp-firewall"),
    pytest.param(UDP_BLOCKED, NatType.UDP_BLOCKED, id="udp-blocked-still-blocked"),
]


@pytest.mark.parametrize(("behavior", "expected"), CANNOT_TELL)
def test_server_ignoring_change_request_cannot_tell(
    behavior: NatBehavior, expected: NatType
) -> None:
    result = run_natcheck(behavior, server=IgnoresChangeRequestServer()).result
    assert result.classic is expected
    assert result.classic is not NatType.FULL_CONE
    if expected is NatType.UNDETERMINED:
        assert "Test II answered from 198.51.100.1:3478" in result.classic_reason


@pytest.mark.parametrize(("behavior", "expected"), CANNOT_TELL)
def test_server_without_alternate_address_cannot_tell(
    behavior: NatBehavior, expected: NatType
) -> None:
    result = run_natcheck(behavior, server=PlainServer()).result
    assert result.classic is expected
    if expected is NatType.UNDETERMINED:
        assert result.classic_reason == "the server reports no alternate address"
