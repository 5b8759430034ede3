"""UPnP Internet Gateway Device control (IGD 1 and 2, WANIPConnection /
WANPPPConnection), sans-IO: device descriptions, SOAP, and the decisions of
mapping a port.

Theory of operation
-------------------
After SSDP (:mod:`.ssdp`) names a description URL, a control point fetches
it (UDA 1.1 §2), picks the first WAN connection service it finds in order
of preference (WANIPConnection:2, WANIPConnection:1, WANPPPConnection:1)
and calls its actions by SOAP 1.1 over HTTP POST (UDA 1.1 §3.2).
:class:`IgdPortMapper` decides which actions, in which order:

1. ``GetExternalIPAddress``;
2. on IGD 2, ``AddAnyPortMapping`` (the gateway picks a free port near the
   one suggested and answers ``NewReservedPort``); if the gateway does not
   implement it (401 Invalid Action, 602 Optional Action Not Implemented),
   step 3;
3. ``AddPortMapping`` on the suggested port, moving to the next port on
   718 ConflictInMappingEntry (up to ``max_port_tries``), to the internal
   port on 724 SamePortValuesRequired, and to a permanent lease (0) on 725
   OnlyPermanentLeasesSupported (IGD 1 gateways).

:class:`IgdPortUnmapper` is ``DeletePortMapping``. Faults are results, not
exceptions: :class:`SoapFault` carries the UPnP error code (e.g. miniupnpd's
501 Action Failed when its WAN address is reserved).

XML safety: descriptions and SOAP bodies come from the network. Parsing
refuses any document with a DOCTYPE (and so any entity declaration: no
"billion laughs", no external entities) and anything over ``max_size``,
before ``xml.etree`` sees it.
"""

from __future__ import annotations

import enum
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from natkit.addr import Endpoint, ip_of
from natkit.errors import MalformedMessageError
from natkit.nat.portmap.http import HttpRequest, HttpResponse
from natkit.packet import IpProto

__all__ = [
    "SERVICE_PREFERENCE",
    "WANIP1",
    "WANIP2",
    "WANPPP1",
    "IgdMapped",
    "IgdMappingFailed",
    "IgdPortMapper",
    "IgdPortUnmapper",
    "IgdService",
    "SoapCall",
    "SoapFault",
    "SoapResult",
    "SoapSuccess",
    "UpnpError",
    "build_soap_request",
    "parse_description",
    "parse_soap_response",
    "parse_xml",
]

WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"
SERVICE_PREFERENCE = (WANIP2, WANIP1, WANPPP1)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
MAX_XML_SIZE = 65536


class UpnpError(enum.IntEnum):
    """UPnP error codes an IGD control point acts on (UDA 1.1 §3.2.2, WANIPConnection:2 §2.4)."""

    INVALID_ACTION = 401
    INVALID_ARGS = 402
    ACTION_FAILED = 501
    OPTIONAL_ACTION_NOT_IMPLEMENTED = 602
    NO_SUCH_ENTRY_IN_ARRAY = 714
    CONFLICT_IN_MAPPING_ENTRY = 718
    SAME_PORT_VALUES_REQUIRED = 724
    ONLY_PERMANENT_LEASES_SUPPORTED = 725
    NO_PORT_MAPS_AVAILABLE = 728


def parse_xml(data: bytes, *, max_size: int = MAX_XML_SIZE) -> ET.Element:
    """Parse untrusted XML: bounded, and no DOCTYPE (hence no entities)."""
    if len(data) > max_size:
        raise MalformedMessageError("XML document too large", error_code=None)
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise MalformedMessageError("XML with a DOCTYPE is refused", error_code=None)
    try:
        return ET.fromstring(data)  # guarded above: no DTD, bounded size
    except ET.ParseError as exc:
        raise MalformedMessageError(f"bad XML: {exc}", error_code=None) from exc


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class IgdService:
    """A WAN connection service: its type (with version) and absolute control URL."""

    service_type: str
    control_url: str

    @property
    def version(self) -> int:
        tail = self.service_type.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else 1


def parse_description(data: bytes, location: str) -> list[IgdService]:
    """The WAN connection services of a device description (UDA 1.1 §2.3),
    most preferred first. Relative control URLs are resolved against
    ``URLBase`` (IGD 1) or the description's own URL; a control URL on
    another host than the description's, or not plain http, is dropped
    (see :mod:`.ssdp` on why locations are tied to their sender)."""
    root = parse_xml(data)
    base = location
    for element in root:
        if _local(element.tag) == "URLBase" and element.text and element.text.strip():
            base = element.text.strip()
    desc_host = urllib.parse.urlsplit(location).hostname
    found: list[IgdService] = []
    for element in root.iter():
        if _local(element.tag) != "service":
            continue
        service_type = _child_text(element, "serviceType")
        control = _child_text(element, "controlURL")
        if service_type not in SERVICE_PREFERENCE or not control:
            continue
        url = urllib.parse.urljoin(base, control)
        parts = urllib.parse.urlsplit(url)
        try:
            same_host = (
                parts.scheme == "http"
                and parts.hostname is not None
                and desc_host is not None
                and ip_of(parts.hostname) == ip_of(desc_host)
            )
        except ValueError:
            same_host = False
        if same_host:
            found.append(IgdService(service_type=service_type, control_url=url))
    found.sort(key=lambda s: SERVICE_PREFERENCE.index(s.service_type))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class SoapCall:
    """An action to invoke, with its in-arguments in the order of the
    service description (UDA 1.1 §3.2.1 requires that order)."""

    action: str
    args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SoapSuccess:
    action: str
    values: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class SoapFault:
    """A UPnP error (``code`` from ``UPnPError/errorCode``) or an HTTP
    failure without one (``code`` is ``None``)."""

    action: str
    code: int | None
    description: str
    http_status: int


SoapResult = SoapSuccess | SoapFault


def build_soap_request(service: IgdService, call: SoapCall) -> HttpRequest:
    """The HTTP POST invoking ``call`` on ``service`` (UDA 1.1 §3.2.1)."""
    args = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in call.args)
    body = (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="{SOAP_ENCODING}">'
        f'<s:Body><u:{call.action} xmlns:u="{service.service_type}">{args}</u:{call.action}>'
        "</s:Body></s:Envelope>\r\n"
    ).encode()
    return HttpRequest(
        method="POST",
        url=service.control_url,
        headers=(
            ("Content-Type", 'text/xml; charset="utf-8"'),
            ("SOAPAction", f'"{service.service_type}#{call.action}"'),
        ),
        body=body,
    )


def parse_soap_response(response: HttpResponse, action: str) -> SoapResult:
    """Decode an action's response: its out-arguments on success, the
    UPnPError on a fault (UDA 1.1 §3.2.2). A body that is not the expected
    SOAP raises :class:`MalformedMessageError` when the status is 200, and
    is a :class:`SoapFault` without a code otherwise."""
    try:
        root = parse_xml(response.body)
    except MalformedMessageError:
        if response.status == 200:
            raise
        return SoapFault(
            action=action, code=None, description=response.reason, http_status=response.status
        )
    body = next((e for e in root if _local(e.tag) == "Body"), None)
    first = next(iter(body), None) if body is not None else None
    if first is not None and _local(first.tag) == "Fault":
        code_text = description = None
        for element in first.iter():
            if _local(element.tag) == "errorCode":
                code_text = (element.text or "").strip()
            elif _local(element.tag) == "errorDescription":
                description = (element.text or "").strip()
        code = int(code_text) if code_text and code_text.isdigit() and len(code_text) < 6 else None
        return SoapFault(
            action=action,
            code=code,
            description=description or response.reason,
            http_status=response.status,
        )
    if response.status == 200 and first is not None and _local(first.tag) == action + "Response":
        return SoapSuccess(
            action=action, values={_local(e.tag): (e.text or "").strip() for e in first}
        )
    if response.status == 200:
        raise MalformedMessageError(f"no {action}Response in the SOAP body", error_code=None)
    return SoapFault(
        action=action, code=None, description=response.reason, http_status=response.status
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IgdMapped:
    """The gateway mapped ``external`` for ``lifetime`` seconds (0: permanent)."""

    external: Endpoint
    lifetime: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IgdMappingFailed:
    code: int | None
    reason: str


def _proto_name(proto: IpProto) -> str:
    if proto not in (IpProto.UDP, IpProto.TCP):
        raise ValueError(f"UPnP maps only UDP and TCP, not {proto!r}")
    return proto.name


class IgdPortMapper:
    """The decisions of mapping ``internal`` on an IGD (see the module
    docstring). Drive it with::

        while (call := mapper.next_call()) is not None:
            mapper.receive_result(<the SoapResult of performing call>)
        mapper.result  # IgdMapped | IgdMappingFailed
    """

    def __init__(
        self,
        service: IgdService,
        proto: IpProto,
        internal: Endpoint,
        *,
        external_port: int | None = None,
        lifetime: int = 3600,
        description: str = "natkit",
        max_port_tries: int = 8,
    ) -> None:
        self.service = service
        self.proto_name = _proto_name(proto)
        self.internal = internal
        self.port = external_port or internal.port
        self.lifetime = lifetime
        self.description = description
        self.tries_left = max_port_tries
        self.external_ip: str | None = None
        self._use_any = service.version >= 2
        self._call: SoapCall | None = SoapCall(action="GetExternalIPAddress")
        self.result: IgdMapped | IgdMappingFailed | None = None

    def next_call(self) -> SoapCall | None:
        """The action to perform next, or ``None`` once :attr:`result` is set."""
        return self._call

    def receive_result(self, result: SoapResult) -> None:
        """Take the outcome of the current call and decide the next one."""
        call = self._call
        if call is None or result.action != call.action:
            return
        if call.action == "GetExternalIPAddress":
            self._on_external_ip(result)
        elif isinstance(result, SoapSuccess):
            self._on_mapped(result)
        else:
            self._on_fault(result)

    def _on_external_ip(self, result: SoapResult) -> None:
        if isinstance(result, SoapFault):
            self._fail(result.code, f"GetExternalIPAddress: {result.description}")
            return
        text = result.values.get("NewExternalIPAddress", "")
        try:
            self.external_ip = str(ip_of(text))
        except ValueError:
            self._fail(None, f"GetExternalIPAddress gave no address ({text[:40]!r})")
            return
        self._call = self._add_call()

    def _on_mapped(self, result: SoapSuccess) -> None:
        port = self.port
        if result.action == "AddAnyPortMapping":
            reserved = result.values.get("NewReservedPort", "")
            if not reserved.isdigit() or not 0 < int(reserved) <= 0xFFFF:
                self._fail(None, f"AddAnyPortMapping reserved no port ({reserved[:20]!r})")
                return
            port = int(reserved)
        assert self.external_ip is not None  # set before any Add call
        self.result = IgdMapped(external=Endpoint(self.external_ip, port), lifetime=self.lifetime)
        self._call = None

    def _on_fault(self, fault: SoapFault) -> None:
        code = fault.code
        if fault.action == "AddAnyPortMapping" and code in (
            UpnpError.INVALID_ACTION,
            UpnpError.OPTIONAL_ACTION_NOT_IMPLEMENTED,
        ):
            self._use_any = False
        elif code == UpnpError.CONFLICT_IN_MAPPING_ENTRY and self.tries_left > 1:
            self.tries_left -= 1
            self.port = self.port + 1 if self.port < 0xFFFF else 1024
        elif code == UpnpError.SAME_PORT_VALUES_REQUIRED and self.port != self.internal.port:
            self.port = self.internal.port
        elif code == UpnpError.ONLY_PERMANENT_LEASES_SUPPORTED and self.lifetime != 0:
            self.lifetime = 0
        else:
            self._fail(code, f"{fault.action}: {fault.description}")
            return
        self._call = self._add_call()

    def _fail(self, code: int | None, reason: str) -> None:
        self.result = IgdMappingFailed(code=code, reason=reason)
        self._call = None

    def _add_call(self) -> SoapCall:
        args = (
            ("NewRemoteHost", ""),
            ("NewExternalPort", str(self.port)),
            ("NewProtocol", self.proto_name),
            ("NewInternalPort", str(self.internal.port)),
            ("NewInternalClient", self.internal.host),
            ("NewEnabled", "1"),
            ("NewPortMappingDescription", self.description),
            ("NewLeaseDuration", str(self.lifetime)),
        )
        return SoapCall(
            action="AddAnyPortMapping" if self._use_any else "AddPortMapping", args=args
        )


class IgdPortUnmapper:
    """``DeletePortMapping`` of ``external`` (one call; 714 NoSuchEntryInArray
    counts as done: the mapping is gone either way)."""

    def __init__(self, service: IgdService, proto: IpProto, external_port: int) -> None:
        self.service = service
        self._call: SoapCall | None = SoapCall(
            action="DeletePortMapping",
            args=(
                ("NewRemoteHost", ""),
                ("NewExternalPort", str(external_port)),
                ("NewProtocol", _proto_name(proto)),
            ),
        )
        self.result: bool | IgdMappingFailed | None = None

    def next_call(self) -> SoapCall | None:
        return self._call

    def receive_result(self, result: SoapResult) -> None:
        if self._call is None or result.action != self._call.action:
            return
        self._call = None
        if isinstance(result, SoapSuccess) or result.code == UpnpError.NO_SUCH_ENTRY_IN_ARRAY:
            self.result = True
        else:
            self.result = IgdMappingFailed(code=result.code, reason=result.description)
