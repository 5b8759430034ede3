"""A small UPnP IGD for loopback tests: an SSDP responder and an HTTP
server (h11, server role) with a description and a WANIPConnection service.
Written from the UPnP Device Architecture 1.1 and IGD service templates."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import h11

from natkit.addr import Endpoint
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection, StreamListener

from .upnp_samples import IGD2_DESCRIPTION, igd1_description, soap_fault, soap_response

HOST = "127.0.0.1"


@dataclass
class FakeIgd:
    stack: Stack
    version: int = 1
    external_ip: str = "203.0.113.7"
    taken: set[int] = field(default_factory=set)  # ports that answer 718
    refuse: int | None = None  # a UPnP error code for every Add
    refuse_delete: int | None = None  # ... for every Delete
    description: bytes | None = None  # instead of the IGD 1/2 sample
    description_status: int = 200
    soap_garbage: bool = False  # answer actions with 200 and no SOAP
    hang: bool = False  # accept connections, never answer
    mappings: dict[tuple[str, int], tuple[str, int, int]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    ssdp: DatagramEndpoint | None = None
    http: StreamListener | None = None

    @property
    def service_type(self) -> str:
        return f"urn:schemas-upnp-org:service:WANIPConnection:{self.version}"

    @property
    def ssdp_endpoint(self) -> Endpoint:
        assert self.ssdp is not None
        return self.ssdp.local_endpoint

    async def start(self) -> None:
        self.http = await self.stack.listen_stream(Endpoint(HOST, 0), self._on_connection)
        self.ssdp = await self.stack.open_udp(Endpoint(HOST, 0), self._on_search)

    def close(self) -> None:
        if self.ssdp is not None:
            self.ssdp.close()
        if self.http is not None:
            self.http.close()

    def _location(self) -> str:
        assert self.http is not None
        return f"http://{HOST}:{self.http.local_endpoint.port}/rootDesc.xml"

    def _on_search(self, data: bytes, remote: Endpoint) -> None:
        if not data.startswith(b"M-SEARCH"):
            return
        st = next(
            line[3:].strip()
            for line in data.decode().split("\r\n")
            if line.upper().startswith("ST:")
        )
        assert self.ssdp is not None
        self.ssdp.send(
            (
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nEXT:\r\n"
                f"LOCATION: {self._location()}\r\nSERVER: Fake/1 UPnP/1.1 IGD/1\r\n"
                f"ST: {st}\r\nUSN: uuid:fake::{st}\r\n\r\n"
            ).encode(),
            remote,
        )

    def _on_connection(self, conn: StreamConnection) -> None:
        h11_conn = h11.Connection(h11.SERVER)
        state: dict[str, object] = {"body": b""}

        def on_data(data: bytes) -> None:
            if self.hang:
                return
            h11_conn.receive_data(data)
            while True:
                event = h11_conn.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    state["request"] = event
                elif isinstance(event, h11.Data):
                    state["body"] = state["body"] + event.data  # type: ignore[operator]
                elif isinstance(event, h11.EndOfMessage):
                    request = state["request"]
                    assert isinstance(request, h11.Request)
                    status, body = self._handle(request, state["body"])  # type: ignore[arg-type]
                    out = h11_conn.send(
                        h11.Response(
                            status_code=status,
                            headers=[
                                ("Content-Type", 'text/xml; charset="utf-8"'),
                                ("Content-Length", str(len(body))),
                                ("Connection", "close"),
                            ],
                        )
                    )
                    conn.write((out or b"") + (h11_conn.send(h11.Data(data=body)) or b""))
                    conn.write(h11_conn.send(h11.EndOfMessage()) or b"")
                    conn.close()
                    return

        conn.set_handler(on_data)

    def _handle(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        if request.method == b"GET" and request.target == b"/rootDesc.xml":
            self.calls.append("GET")
            desc = igd1_description() if self.version == 1 else IGD2_DESCRIPTION
            return self.description_status, self.description or desc
        if request.method != b"POST":
            return 404, b""
        envelope = ET.fromstring(body)
        action_el = envelope[0][0]
        action = action_el.tag.rsplit("}", 1)[-1]
        args = {child.tag: child.text or "" for child in action_el}
        self.calls.append(action)
        st = self.service_type
        if self.soap_garbage:
            return 200, b"<html>hello</html>"
        if action == "GetExternalIPAddress":
            return 200, soap_response(action, st, {"NewExternalIPAddress": self.external_ip})
        if action in ("AddPortMapping", "AddAnyPortMapping"):
            if self.refuse is not None:
                return 500, soap_fault(self.refuse, "Action Failed")
            port = int(args["NewExternalPort"])
            if action == "AddAnyPortMapping":
                while port in self.taken:
                    port += 1
            elif port in self.taken:
                return 500, soap_fault(718, "ConflictInMappingEntry")
            self.taken.add(port)
            self.mappings[(args["NewProtocol"], port)] = (
                args["NewInternalClient"],
                int(args["NewInternalPort"]),
                int(args["NewLeaseDuration"]),
            )
            values = {"NewReservedPort": str(port)} if action == "AddAnyPortMapping" else {}
            return 200, soap_response(action, st, values)
        if action == "DeletePortMapping":
            if self.refuse_delete is not None:
                return 500, soap_fault(self.refuse_delete, "Action not authorized")
            key = (args["NewProtocol"], int(args["NewExternalPort"]))
            if self.mappings.pop(key, None) is None:
                return 500, soap_fault(714, "NoSuchEntryInArray")
            return 200, soap_response(action, st, {})
        return 500, soap_fault(401, "Invalid Action")
