"""IGD descriptions, SOAP, and the decisions of IgdPortMapper /
IgdPortUnmapper, on recorded-looking documents."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.portmap import igd
from natkit.nat.portmap.http import HttpResponse
from natkit.nat.portmap.igd import (
    WANIP1,
    WANIP2,
    IgdMapped,
    IgdMappingFailed,
    IgdPortMapper,
    IgdPortUnmapper,
    IgdService,
    SoapCall,
    SoapFault,
    SoapSuccess,
)
from natkit.packet import IpProto

from .upnp_samples import IGD2_DESCRIPTION, igd1_description, soap_fault, soap_response

LOCATION = "http://192.168.1.1:5000/rootDesc.xml"
SERVICE1 = IgdService(service_type=WANIP1, control_url="http://192.168.1.1:5000/ctl/IPConn")
SERVICE2 = IgdService(service_type=WANIP2, control_url="http://192.168.1.1:5000/ctl/IPConn2")
INTERNAL = Endpoint("192.168.1.10", 5000)


def ok(body: bytes) -> HttpResponse:
    return HttpResponse(status=200, reason="OK", headers=(), body=body)


def test_igd1_description() -> None:
    assert igd.parse_description(igd1_description(), LOCATION) == [SERVICE1]


def test_urlbase_is_the_base_of_relative_control_urls() -> None:
    services = igd.parse_description(igd1_description("http://192.168.1.1:49000/"), LOCATION)
    assert services == [
        IgdService(service_type=WANIP1, control_url="http://192.168.1.1:49000/ctl/IPConn")
    ]


def test_igd2_description_prefers_version_2_and_drops_foreign_hosts() -> None:
    services = igd.parse_description(IGD2_DESCRIPTION, LOCATION)
    assert services == [
        SERVICE2,
        IgdService(service_type=WANIP1, control_url="http://192.168.1.1:5000/ctl/IPConn1"),
    ]
    assert [s.version for s in services] == [2, 1]


def test_control_url_to_another_host_via_urlbase_is_dropped() -> None:
    assert igd.parse_description(igd1_description("http://10.9.9.9/"), LOCATION) == []


def test_unversioned_service_type_counts_as_1() -> None:
    assert IgdService(service_type="x", control_url="").version == 1


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<root>&lol2;</root>"""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(BILLION_LAUGHS, id="entity-expansion"),
        pytest.param(b'<!doctype root SYSTEM "file:///etc/passwd"><root/>', id="external-doctype"),
        pytest.param(b"<root>" + b"x" * 70000 + b"</root>", id="too-large"),
        pytest.param(b"<root><unclosed></root>", id="not-xml"),
    ],
)
def test_unsafe_or_bad_xml_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        igd.parse_description(data, LOCATION)


def test_soap_request() -> None:
    request = igd.build_soap_request(
        SERVICE1,
        SoapCall(action="AddPortMapping", args=(("NewRemoteHost", ""), ("NewDesc", "a<b&c"))),
    )
    assert request.method == "POST" and request.url == SERVICE1.control_url
    assert dict(request.headers) == {
        "Content-Type": 'text/xml; charset="utf-8"',
        "SOAPAction": f'"{WANIP1}#AddPortMapping"',
    }
    assert (
        f'<u:AddPortMapping xmlns:u="{WANIP1}"><NewRemoteHost></NewRemoteHost>'
        "<NewDesc>a&lt;b&amp;c</NewDesc></u:AddPortMapping>"
    ).encode() in request.body
    # The body is itself well-formed SOAP.
    root = igd.parse_xml(request.body)
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"


def test_soap_success() -> None:
    body = soap_response("GetExternalIPAddress", WANIP1, {"NewExternalIPAddress": "203.0.113.7"})
    assert igd.parse_soap_response(ok(body), "GetExternalIPAddress") == SoapSuccess(
        action="GetExternalIPAddress", values={"NewExternalIPAddress": "203.0.113.7"}
    )


def test_soap_fault() -> None:
    response = HttpResponse(
        status=500,
        reason="Internal Server Error",
        headers=(),
        body=soap_fault(718, "ConflictInMappingEntry"),
    )
    assert igd.parse_soap_response(response, "AddPortMapping") == SoapFault(
        action="AddPortMapping", code=718, description="ConflictInMappingEntry", http_status=500
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"not xml", None, id="not-xml"),
        pytest.param(soap_fault(0, "x").replace(b">0<", b">abc<"), None, id="bad-code"),
        pytest.param(soap_response("Other", WANIP1, {}), None, id="wrong-response"),
    ],
)
def test_soap_http_errors_without_usable_fault(body: bytes, code: int | None) -> None:
    response = HttpResponse(status=501, reason="Not Implemented", headers=(), body=body)
    result = igd.parse_soap_response(response, "AddPortMapping")
    assert isinstance(result, SoapFault) and result.code == code and result.http_status == 501


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not xml", id="not-xml"),
        pytest.param(soap_response("Other", WANIP1, {}), id="wrong-response"),
        pytest.param(b"<x/>", id="no-body"),
    ],
)
def test_soap_200_without_the_response_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        igd.parse_soap_response(ok(body), "AddPortMapping")


def run(mapper: IgdPortMapper | IgdPortUnmapper, answers: dict[str, list[bytes]]) -> list[SoapCall]:
    """Answer each call from ``answers`` (action -> bodies in order; a fault
    body is sent with status 500)."""
    calls = []
    while (call := mapper.next_call()) is not None:
        calls.append(call)
        body = answers[call.action].pop(0)
        status = 500 if b"Fault" in body else 200
        response = HttpResponse(status=status, reason="", headers=(), body=body)
        mapper.receive_result(igd.parse_soap_response(response, call.action))
    return calls


def ext_ip(service: str, address: str = "203.0.113.7") -> bytes:
    return soap_response("GetExternalIPAddress", service, {"NewExternalIPAddress": address})


def test_igd2_maps_with_add_any_port_mapping() -> None:
    mapper = IgdPortMapper(SERVICE2, IpProto.UDP, INTERNAL, lifetime=600)
    calls = run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP2)],
            "AddAnyPortMapping": [
                soap_response("AddAnyPortMapping", WANIP2, {"NewReservedPort": "5003"})
            ],
        },
    )
    assert [c.action for c in calls] == ["GetExternalIPAddress", "AddAnyPortMapping"]
    assert calls[1].args == (
        ("NewRemoteHost", ""),
        ("NewExternalPort", "5000"),
        ("NewProtocol", "UDP"),
        ("NewInternalPort", "5000"),
        ("NewInternalClient", "192.168.1.10"),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", "natkit"),
        ("NewLeaseDuration", "600"),
    )
    assert mapper.result == IgdMapped(external=Endpoint("203.0.113.7", 5003), lifetime=600)


def test_igd2_without_add_any_falls_back_to_add_port_mapping() -> None:
    mapper = IgdPortMapper(SERVICE2, IpProto.TCP, INTERNAL, external_port=8080)
    calls = run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP2)],
            "AddAnyPortMapping": [soap_fault(401, "Invalid Action")],
            "AddPortMapping": [soap_response("AddPortMapping", WANIP2, {})],
        },
    )
    assert [c.action for c in calls][-1] == "AddPortMapping"
    assert mapper.result == IgdMapped(external=Endpoint("203.0.113.7", 8080), lifetime=3600)


def test_conflict_moves_to_the_next_port() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL)
    calls = run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP1)],
            "AddPortMapping": [
                soap_fault(718, "ConflictInMappingEntry"),
                soap_fault(718, "ConflictInMappingEntry"),
                soap_response("AddPortMapping", WANIP1, {}),
            ],
        },
    )
    assert [dict(c.args).get("NewExternalPort") for c in calls] == [None, "5000", "5001", "5002"]
    assert mapper.result == IgdMapped(external=Endpoint("203.0.113.7", 5002), lifetime=3600)


def test_conflicts_give_up_after_max_port_tries() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL.with_port(65535), max_port_tries=2)
    calls = run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP1)],
            "AddPortMapping": [soap_fault(718, "ConflictInMappingEntry")] * 2,
        },
    )
    assert dict(calls[-1].args)["NewExternalPort"] == "1024"  # wrapped past 65535
    assert mapper.result == IgdMappingFailed(
        code=718, reason="AddPortMapping: ConflictInMappingEntry"
    )


def test_only_permanent_leases_retries_with_lease_0() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL)
    calls = run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP1)],
            "AddPortMapping": [
                soap_fault(725, "OnlyPermanentLeasesSupported"),
                soap_response("AddPortMapping", WANIP1, {}),
            ],
        },
    )
    assert dict(calls[-1].args)["NewLeaseDuration"] == "0"
    assert mapper.result == IgdMapped(external=Endpoint("203.0.113.7", 5000), lifetime=0)


def test_same_port_values_required() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL, external_port=7000)
    run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP1)],
            "AddPortMapping": [
                soap_fault(724, "SamePortValuesRequired"),
                soap_response("AddPortMapping", WANIP1, {}),
            ],
        },
    )
    assert mapper.result == IgdMapped(external=Endpoint("203.0.113.7", 5000), lifetime=3600)


def test_cascaded_miniupnpd_refusal_is_a_failure_with_its_code() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL)
    run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP1, "10.0.0.2")],
            "AddPortMapping": [soap_fault(501, "Action Failed")],
        },
    )
    assert mapper.result == IgdMappingFailed(code=501, reason="AddPortMapping: Action Failed")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(soap_fault(501, "Action Failed"), id="fault"),
        pytest.param(ext_ip(WANIP1, ""), id="empty"),
        pytest.param(ext_ip(WANIP1, "not-an-ip"), id="garbage"),
    ],
)
def test_no_external_address_fails(answer: bytes) -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL)
    calls = run(mapper, {"GetExternalIPAddress": [answer]})
    assert len(calls) == 1 and isinstance(mapper.result, IgdMappingFailed)


@pytest.mark.parametrize("reserved", ["", "0", "99999", "x"])
def test_add_any_without_a_usable_port_fails(reserved: str) -> None:
    mapper = IgdPortMapper(SERVICE2, IpProto.UDP, INTERNAL)
    run(
        mapper,
        {
            "GetExternalIPAddress": [ext_ip(WANIP2)],
            "AddAnyPortMapping": [
                soap_response("AddAnyPortMapping", WANIP2, {"NewReservedPort": reserved})
            ],
        },
    )
    assert isinstance(mapper.result, IgdMappingFailed)


def test_results_for_other_actions_are_ignored() -> None:
    mapper = IgdPortMapper(SERVICE1, IpProto.UDP, INTERNAL)
    mapper.receive_result(SoapSuccess(action="AddPortMapping", values={}))
    assert mapper.next_call() == SoapCall(action="GetExternalIPAddress")
    assert mapper.result is None


def test_icmp_cannot_be_mapped() -> None:
    with pytest.raises(ValueError):
        IgdPortMapper(SERVICE1, IpProto.ICMP, INTERNAL)


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        pytest.param(soap_response("DeletePortMapping", WANIP1, {}), True, id="deleted"),
        pytest.param(soap_fault(714, "NoSuchEntryInArray"), True, id="already-gone"),
        pytest.param(
            soap_fault(606, "Action not authorized"),
            IgdMappingFailed(code=606, reason="Action not authorized"),
            id="refused",
        ),
    ],
)
def test_unmapper(answer: bytes, result: object) -> None:
    unmapper = IgdPortUnmapper(SERVICE1, IpProto.TCP, 5002)
    (call,) = run(unmapper, {"DeletePortMapping": [answer]})
    assert call.args == (
        ("NewRemoteHost", ""),
        ("NewExternalPort", "5002"),
        ("NewProtocol", "TCP"),
    )
    assert unmapper.result == result
    unmapper.receive_result(SoapSuccess(action="DeletePortMapping", values={}))
    assert unmapper.result == result


def test_services_without_control_url_or_with_host_names_are_dropped() -> None:
    data = igd1_description().replace(b"<controlURL>/ctl/IPConn</controlURL>", b"")
    assert igd.parse_description(data, LOCATION) == []
    data = igd1_description("http://router.lan:5000/")
    assert igd.parse_description(data, LOCATION) == []
