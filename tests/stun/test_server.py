"""The STUN server core: Binding, errors, RFC 5780 and RFC 3489 behaviour, rate limits."""

from __future__ import annotations

import pytest

from natkit.addr import Datagram, Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.attributes import ChangeRequest
from natkit.stun.constants import AttributeType, MessageClass, Method
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.server import MAX_PADDING, StunServer, StunServerConfig

PRIMARY = Endpoint("192.0.2.1", 3478)
ALTERNATE = Endpoint("192.0.2.2", 3479)
PP, PA, AP, AA = (
    PRIMARY,
    Endpoint("192.0.2.1", 3479),
    Endpoint("192.0.2.2", 3478),
    ALTERNATE,
)
CLIENT = Endpoint("203.0.113.7", 50000)
OTHER_CLIENT = Endpoint("203.0.113.8", 50000)
TID = bytes(range(1, 13))
CLASSIC_TID = bytes(range(40, 56))


def _plain(**kwargs: object) -> StunServer:
    return StunServer(StunServerConfig(primary=PRIMARY, **kwargs))  # type: ignore[arg-type]


def _rfc5780(**kwargs: object) -> StunServer:
    return StunServer(
        StunServerConfig(primary=PRIMARY, alternate=ALTERNATE, rfc5780=True, **kwargs)  # type: ignore[arg-type]
    )


def _binding(tid: bytes = TID) -> StunMessage:
    return StunMessage.request(Method.BINDING, tid)


def _send(
    server: StunServer,
    data: bytes | StunMessage,
    *,
    source: Endpoint = CLIENT,
    local: Endpoint = PRIMARY,
    now: float = 0.0,
    transport: Transport = Transport.UDP,
) -> list[Datagram]:
    if isinstance(data, StunMessage):
        data = serialize_message(data)
    server.receive_datagram(data, source, local=local, now=now, transport=transport)
    return server.datagrams_to_send(now=now)


def _one(
    server: StunServer, data: bytes | StunMessage, **kwargs: object
) -> tuple[StunMessage, Datagram]:
    [dg] = _send(server, data, **kwargs)  # type: ignore[arg-type]
    return parse_message(dg.data, allow_classic=True), dg


def _code(msg: StunMessage) -> int | None:
    err = msg.error
    return None if err is None else err.code


# -- plain RFC 8489 Binding ---------------------------------------------------------


def test_binding_success_reflects_the_source_in_xor_mapped_address() -> None:
    resp, dg = _one(_plain(), _binding())
    assert resp.message_class == MessageClass.SUCCESS
    assert resp.method == Method.BINDING
    assert resp.transaction_id == TID
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT
    assert (dg.remote, dg.local) == (CLIENT, PRIMARY)


def test_binding_success_reflects_an_ipv6_source() -> None:
    source = Endpoint("2001:db8::99", 1234)
    resp, dg = _one(_plain(), _binding(), source=source)
    assert resp.get(at.XOR_MAPPED_ADDRESS) == source
    assert dg.remote == source


def test_plain_server_adds_no_rfc5780_attributes() -> None:
    resp, _ = _one(_plain(), _binding())
    for attr in (AttributeType.OTHER_ADDRESS, AttributeType.RESPONSE_ORIGIN):
        assert not resp.has(attr)


def test_software_is_sent_unless_disabled() -> None:
    assert _one(_plain(), _binding())[0].get(at.SOFTWARE) == "natkit"
    assert _one(_plain(software=None), _binding())[0].get(at.SOFTWARE) is None


@pytest.mark.parametrize("fingerprint", [False, True], ids=["without", "with"])
def test_fingerprint_is_echoed_when_the_request_had_one(fingerprint: bool) -> None:
    resp, _ = _one(_plain(), serialize_message(_binding(), fingerprint=fingerprint))
    assert resp.has_fingerprint is fingerprint


@pytest.mark.parametrize("fingerprint", [False, True], ids=["without", "with"])
def test_fingerprint_is_echoed_on_error_responses_too(fingerprint: bool) -> None:
    req = serialize_message(_binding().add_raw(0x7F01, bytes(4)), fingerprint=fingerprint)
    resp, _ = _one(_plain(), req)
    assert _code(resp) == 420
    assert resp.has_fingerprint is fingerprint


def test_optional_unknown_attribute_is_ignored() -> None:
    resp, _ = _one(_plain(), _binding().add_raw(0xC001, b"whatever"))
    assert resp.message_class == MessageClass.SUCCESS


@pytest.mark.parametrize(
    ("server", "attrs"),
    [
        pytest.param(_plain, (0x7F01,), id="unknown-type"),
        pytest.param(_plain, (AttributeType.CHANGE_REQUEST,), id="change-request-no-rfc5780"),
        pytest.param(_plain, (AttributeType.RESPONSE_PORT,), id="response-port-no-rfc5780"),
        pytest.param(_plain, (AttributeType.PADDING,), id="padding-no-rfc5780"),
        pytest.param(_rfc5780, (0x7F01, 0x7F02), id="two-unknown"),
    ],
)
def test_unknown_comprehension_required_attribute_gets_420(
    server: object, attrs: tuple[int, ...]
) -> None:
    req = _binding()
    for attr in attrs:
        req.add_raw(attr, bytes(4))
    resp, dg = _one(server(), req)  # type: ignore[operator]
    assert _code(resp) == 420
    assert resp.get(at.UNKNOWN_ATTRIBUTES) == attrs
    assert dg.remote == CLIENT


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(Method.ALLOCATE, id="allocate"),
        pytest.param(Method.SHARED_SECRET, id="shared-secret"),
        pytest.param(0x0FFF, id="unassigned"),
    ],
)
def test_non_binding_request_gets_400(method: int) -> None:
    resp, _ = _one(_plain(), StunMessage.request(method, TID))
    assert _code(resp) == 400
    assert resp.method == method
    assert resp.transaction_id == TID


def test_malformed_body_with_intact_header_gets_400() -> None:
    data = serialize_message(_binding().add_raw(AttributeType.SOFTWARE, b"abcd"))
    data = data[:20] + b"\x80\x22\x00\x08" + data[24:]  # SOFTWARE claims 8 bytes, has 4
    resp, dg = _one(_plain(), data)
    assert _code(resp) == 400
    assert resp.transaction_id == TID
    assert dg.remote == CLIENT


def test_malformed_attribute_value_gets_400() -> None:
    req = _binding().add_raw(AttributeType.CHANGE_REQUEST, b"\x00\x00")
    resp, _ = _one(_rfc5780(), req)
    assert _code(resp) == 400


def test_malformed_classic_request_gets_400_with_its_16_byte_id() -> None:
    data = serialize_message(_binding(CLASSIC_TID).add_raw(AttributeType.SOFTWARE, b"abcd"))
    data = data[:20] + b"\x80\x22\x00\x08" + data[24:]
    resp, _ = _one(_plain(), data)
    assert _code(resp) == 400
    assert resp.transaction_id == CLASSIC_TID


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(MessageClass.INDICATION, id="indication"),
        pytest.param(MessageClass.SUCCESS, id="success"),
        pytest.param(MessageClass.ERROR, id="error"),
    ],
)
def test_non_requests_are_dropped(cls: MessageClass) -> None:
    server = _plain()
    assert _send(server, StunMessage(Method.BINDING, cls, TID)) == []
    assert server.stats.dropped == 1


def test_malformed_non_request_is_dropped() -> None:
    data = serialize_message(StunMessage(Method.BINDING, MessageClass.INDICATION, TID))
    data = data[:2] + b"\x00\x04" + data[4:] + b"\x80\x22\x00\x08"
    server = _plain()
    assert _send(server, data) == []
    assert server.stats.dropped == 1


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x01\x00\x00", id="short"),
        pytest.param(b"\x80" * 40, id="rtp-like"),
        pytest.param(serialize_message(_binding()) + b"\0\0\0\0", id="length-mismatch"),
        pytest.param(serialize_message(_binding(), fingerprint=True)[:-1] + b"\0", id="bad-fp"),
    ],
)
def test_garbage_is_dropped_silently(data: bytes) -> None:
    server = _plain()
    assert _send(server, data) == []
    assert server.stats.dropped == 1


def test_server_keeps_serving_after_garbage() -> None:
    server = _plain()
    for junk in (b"\xff" * 3, b"\x00\x01\x00\x04" + bytes(20), b"\x01" * 100):
        _send(server, junk)
    resp, _ = _one(server, _binding())
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT


def test_stats_count_requests_and_responses() -> None:
    server = _plain()
    _send(server, _binding())
    _send(server, StunMessage.request(Method.ALLOCATE, TID))
    _send(server, b"junk")
    assert (server.stats.requests, server.stats.responses) == (3, 1)
    assert (server.stats.error_responses, server.stats.dropped) == (1, 1)


def test_server_has_no_timer() -> None:
    server = _plain()
    server.handle_timer(now=5.0)
    assert server.get_timer() is None


# -- RESPONSE-ADDRESS and reflection safety --------------------------------------------


@pytest.mark.parametrize("tid", [TID, CLASSIC_TID], ids=["modern", "classic"])
def test_response_address_is_never_honoured(tid: bytes) -> None:
    victim = Endpoint("198.51.100.66", 80)
    resp, dg = _one(_rfc5780(), _binding(tid).add(at.RESPONSE_ADDRESS, victim))
    assert resp.message_class == MessageClass.SUCCESS
    assert dg.remote == CLIENT


# -- classic RFC 3489 requests -----------------------------------------------------------


def test_classic_request_gets_mapped_source_and_changed_address() -> None:
    resp, dg = _one(_rfc5780(), _binding(CLASSIC_TID))
    assert resp.classic
    assert resp.transaction_id == CLASSIC_TID
    assert resp.get(at.MAPPED_ADDRESS) == CLIENT
    assert resp.get(at.SOURCE_ADDRESS) == PRIMARY
    assert resp.get(at.CHANGED_ADDRESS) == ALTERNATE
    assert not resp.has(AttributeType.XOR_MAPPED_ADDRESS)
    assert dg.local == PRIMARY


def test_classic_request_to_a_plain_server_has_no_changed_address() -> None:
    resp, _ = _one(_plain(), _binding(CLASSIC_TID))
    assert resp.get(at.MAPPED_ADDRESS) == CLIENT
    assert resp.get(at.SOURCE_ADDRESS) == PRIMARY
    assert resp.get(at.CHANGED_ADDRESS) is None


def test_classic_change_request_is_answered_from_the_changed_address() -> None:
    req = _binding(CLASSIC_TID).add(at.CHANGE_REQUEST, ChangeRequest(True, True))
    resp, dg = _one(_rfc5780(), req)
    assert dg.local == ALTERNATE
    assert resp.get(at.SOURCE_ADDRESS) == ALTERNATE


def test_classic_requests_can_be_refused() -> None:
    assert _send(_plain(classic=False), _binding(CLASSIC_TID)) == []


# -- RFC 5780 ----------------------------------------------------------------------


def test_rfc5780_server_listens_on_four_addresses() -> None:
    config = StunServerConfig(primary=PRIMARY, alternate=ALTERNATE, rfc5780=True)
    assert config.local_endpoints == [PP, PA, AP, AA]
    assert StunServerConfig(primary=PRIMARY).local_endpoints == [PRIMARY]
    assert StunServerConfig(primary=PRIMARY, alternate=ALTERNATE).local_endpoints == [PRIMARY]


@pytest.mark.parametrize(
    ("local", "other"),
    [
        pytest.param(PP, AA, id="primary-primary"),
        pytest.param(PA, AP, id="primary-alternate"),
        pytest.param(AP, PA, id="alternate-primary"),
        pytest.param(AA, PP, id="alternate-alternate"),
    ],
)
def test_other_address_and_response_origin(local: Endpoint, other: Endpoint) -> None:
    resp, dg = _one(_rfc5780(), _binding(), local=local)
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT
    assert resp.get(at.OTHER_ADDRESS) == other
    assert resp.get(at.RESPONSE_ORIGIN) == local
    assert dg.local == local


def _flip(ep: Endpoint, change_ip: bool, change_port: bool) -> Endpoint:
    host = {PRIMARY.host: ALTERNATE.host, ALTERNATE.host: PRIMARY.host}[ep.host]
    port = {PRIMARY.port: ALTERNATE.port, ALTERNATE.port: PRIMARY.port}[ep.port]
    return Endpoint(host if change_ip else ep.host, port if change_port else ep.port)


CHANGE_CASES = [
    pytest.param(local, ChangeRequest(ip, port), id=f"{name}-ip{int(ip)}-port{int(port)}")
    for name, local in (("PP", PP), ("PA", PA), ("AP", AP), ("AA", AA))
    for ip in (False, True)
    for port in (False, True)
]


@pytest.mark.parametrize(("local", "change"), CHANGE_CASES)
def test_change_request_is_answered_from_the_right_socket(
    local: Endpoint, change: ChangeRequest
) -> None:
    expected = _flip(local, change.change_ip, change.change_port)
    resp, dg = _one(_rfc5780(), _binding().add(at.CHANGE_REQUEST, change), local=local)
    assert dg.local == expected
    assert dg.remote == CLIENT
    assert resp.get(at.RESPONSE_ORIGIN) == expected
    assert resp.get(at.OTHER_ADDRESS) == _flip(local, True, True)


def test_response_port_changes_only_the_destination_port() -> None:
    resp, dg = _one(_rfc5780(), _binding().add(at.RESPONSE_PORT, 40001))
    assert dg.remote == Endpoint(CLIENT.host, 40001)
    assert dg.local == PRIMARY
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT


def test_response_port_combines_with_change_request() -> None:
    req = _binding().add(at.RESPONSE_PORT, 40001).add(at.CHANGE_REQUEST, ChangeRequest(True, False))
    _, dg = _one(_rfc5780(), req)
    assert dg.remote == Endpoint(CLIENT.host, 40001)
    assert dg.local == AP


@pytest.mark.parametrize(
    ("size", "echoed"),
    [
        pytest.param(0, 0, id="empty"),
        pytest.param(100, 100, id="small"),
        pytest.param(MAX_PADDING, MAX_PADDING, id="at-cap"),
        pytest.param(4000, MAX_PADDING, id="capped"),
    ],
)
def test_padding_is_echoed_capped(size: int, echoed: int) -> None:
    resp, _ = _one(_rfc5780(), _binding().add(at.PADDING, b"\xaa" * size))
    assert resp.get(at.PADDING) == bytes(echoed)


def test_no_padding_without_padding_in_the_request() -> None:
    resp, _ = _one(_rfc5780(), _binding())
    assert resp.get(at.PADDING) is None


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.TLS])
@pytest.mark.parametrize(
    "attr",
    [
        pytest.param((at.CHANGE_REQUEST, ChangeRequest(change_ip=True)), id="change-ip"),
        pytest.param((at.CHANGE_REQUEST, ChangeRequest(change_port=True)), id="change-port"),
        pytest.param((at.RESPONSE_PORT, 40001), id="response-port"),
    ],
)
def test_change_request_and_response_port_over_streams_get_400(
    transport: Transport, attr: tuple[at.AttrSpec[object], object]
) -> None:
    resp, dg = _one(_rfc5780(), _binding().add(*attr), transport=transport)
    assert _code(resp) == 400
    assert dg.local == PRIMARY


def test_empty_change_request_over_tcp_is_answered() -> None:
    req = _binding().add(at.CHANGE_REQUEST, ChangeRequest())
    resp, dg = _one(_rfc5780(), req, transport=Transport.TCP)
    assert resp.message_class == MessageClass.SUCCESS
    assert dg.local == PRIMARY


def test_advertised_addresses_replace_local_ones() -> None:
    server = _rfc5780(advertised={PRIMARY.host: "198.51.100.1", ALTERNATE.host: "198.51.100.2"})
    resp, dg = _one(server, _binding())
    assert resp.get(at.RESPONSE_ORIGIN) == Endpoint("198.51.100.1", PRIMARY.port)
    assert resp.get(at.OTHER_ADDRESS) == Endpoint("198.51.100.2", ALTERNATE.port)
    assert dg.local == PRIMARY


# -- rate limiting of errors ---------------------------------------------------------


def _bad() -> StunMessage:
    return StunMessage.request(Method.ALLOCATE, TID)


def test_error_responses_are_rate_limited_per_source_ip() -> None:
    server = _plain(error_rate=1.0, error_burst=2.0)
    answered = [bool(_send(server, _bad(), now=0.0)) for _ in range(4)]
    assert answered == [True, True, False, False]
    assert server.stats.rate_limited == 2
    other_port = Endpoint(CLIENT.host, 50001)
    assert _send(server, _bad(), source=other_port, now=0.0) == []
    assert len(_send(server, _bad(), source=OTHER_CLIENT, now=0.0)) == 1


def test_rate_limited_source_recovers_at_the_refill_rate() -> None:
    server = _plain(error_rate=1.0, error_burst=2.0)
    for _ in range(3):
        _send(server, _bad(), now=0.0)
    assert _send(server, _bad(), now=0.5) == []
    assert len(_send(server, _bad(), now=1.5)) == 1


def test_successes_are_not_rate_limited() -> None:
    server = _plain(error_rate=1.0, error_burst=1.0)
    _send(server, _bad(), now=0.0)
    assert _send(server, _bad(), now=0.0) == []
    for _ in range(50):
        assert len(_send(server, _binding(), now=0.0)) == 1


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(_binding().add_raw(0x7F01, b""), id="420"),
        pytest.param(
            serialize_message(_binding().add_raw(AttributeType.SOFTWARE, b"abcd"))[:20]
            + b"\x80\x22\x00\x08abcd",
            id="400-from-header",
        ),
    ],
)
def test_every_error_kind_is_rate_limited(request_: StunMessage | bytes) -> None:
    server = _plain(error_rate=1.0, error_burst=1.0)
    if isinstance(request_, bytes):
        request_ = request_[:2] + b"\x00\x08" + request_[4:]
    assert len(_send(server, request_, now=0.0)) == 1
    assert _send(server, request_, now=0.0) == []


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"rfc5780": True}, id="rfc5780-without-alternate"),
        pytest.param({"alternate": Endpoint(PRIMARY.host, 3479)}, id="alternate-same-ip"),
        pytest.param({"alternate": Endpoint("192.0.2.2", PRIMARY.port)}, id="alternate-same-port"),
        pytest.param(
            {"primary": Endpoint("0.0.0.0", 3478), "alternate": ALTERNATE, "rfc5780": True},
            id="wildcard-ip",
        ),
        pytest.param(
            {"primary": Endpoint("192.0.2.1", 0), "alternate": ALTERNATE, "rfc5780": True},
            id="port-zero",
        ),
        pytest.param({"alternate": Endpoint("::", 3479), "rfc5780": True}, id="wildcard-alternate"),
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    kwargs = {"primary": PRIMARY, **kwargs}
    with pytest.raises(ValueError):
        StunServerConfig(**kwargs)  # type: ignore[arg-type]
