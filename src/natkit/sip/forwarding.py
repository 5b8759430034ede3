"""Proxy forwarding steps shared by the edge and the home proxy (RFC 3261 §16).

Theory of operation
-------------------
A proxy turns a received request into one or more forwarded copies and
passes responses back the way the request came. The steps here are the
mechanical parts of that, free of any routing policy:

* :func:`preprocess_routes` — §16.4: undo a strict router's rewrite and pop
  the top Route when it names this proxy (returning it: an edge proxy reads
  its flow token there).
* :func:`forward_request` — §16.6 steps 1-8 for one target: copy, new
  Request-URI, Max-Forwards, Record-Route, a pushed route set (a Path), and
  the proxy's own Via on top.
* :func:`next_hop` — §16.6 step 7 (and §16.12): where a forwarded copy goes,
  the top Route when there is one, else the Request-URI.
* :func:`stateless_branch` — §16.11: the branch a stateless proxy puts in
  its Via, a function of the received request only, so that a retransmission
  (and the CANCEL or non-2xx ACK of an INVITE) gets the same branch.
* :func:`pop_own_via` — §16.7 step 3, §16.11: remove this proxy's Via from a
  response; None when nothing is left to forward it to.
* :func:`loop_branch` and :func:`is_looped` — §16.6 step 8 and §16.3 step 4:
  the branch of a forwarded request carries a hash of the fields that make
  it *this* request at this proxy (Request-URI, tags, Call-ID, CSeq number,
  the Via it arrived with, Route, Proxy-Require, Proxy-Authorization); a
  request that comes back with one of our Vias whose hash matches what we
  would compute for it now has looped (482), while a spiral (its
  Request-URI or Route changed on the way) hashes differently and passes.

None of these resolve names or touch the network; they work on
:class:`~natkit.sip.message.SipRequest` / ``SipResponse`` values and return
edited copies, leaving their input alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from natkit.sip.headers import NameAddr, Via
from natkit.sip.message import SipRequest, SipResponse
from natkit.sip.uri import SipUri, Uri

__all__ = [
    "DEFAULT_MAX_FORWARDS",
    "MAGIC_COOKIE",
    "forward_request",
    "is_looped",
    "loop_branch",
    "loop_key",
    "next_hop",
    "pop_own_via",
    "preprocess_routes",
    "stateless_branch",
]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: every RFC 3261 branch starts with it."""

DEFAULT_MAX_FORWARDS = 70
"""§16.6 step 3: the value a proxy adds when a request has no Max-Forwards."""


def preprocess_routes(
    request: SipRequest, is_own_route: Callable[[SipUri], bool]
) -> tuple[SipRequest, NameAddr | None]:
    """§16.4 on a copy of ``request``; returns it and the popped Route, if any.

    ``is_own_route(uri)`` tells whether a URI is one this proxy put into a
    Record-Route or Path (its host and port, with ``lr``). If the
    Request-URI is such a URI, the previous hop was a strict router: the
    last Route becomes the Request-URI again. Then, if the top Route names
    this proxy, it is removed and returned. The ``maddr`` rule of §16.4 is
    not applied: natkit never puts ``maddr`` in the URIs it hands out.
    """
    out = request.copy()
    if isinstance(out.uri, SipUri) and is_own_route(out.uri):
        routes = out.name_addrs("Route")
        if routes:
            last = routes[-1]
            out.uri = last.uri
            _set_routes(out, routes[:-1])
    routes = out.name_addrs("Route")
    if routes and isinstance(routes[0].uri, SipUri) and is_own_route(routes[0].uri):
        out.headers.remove_first("Route")
        return out, routes[0]
    return out, None


def forward_request(
    request: SipRequest,
    *,
    via: Via,
    uri: Uri | None = None,
    record_route: NameAddr | Sequence[NameAddr] | None = None,
    push_routes: Iterable[NameAddr] = (),
) -> SipRequest:
    """§16.6 steps 1-8 for one target, on a copy of ``request``.

    ``uri`` replaces the Request-URI (step 2: the target; None keeps it).
    Max-Forwards is decremented, or set to 70 when absent (step 3; the
    caller has refused requests at 0 with 483 already, §16.3).
    ``record_route`` is prepended to Record-Route (step 4); several values
    (double record-routing, RFC 5658) end up in the order given, first on top. ``push_routes``
    go on top of the Route set in the order given (step 6's
    pre-loaded routes: a registered contact's Path, RFC 3327 §5.4). ``via``
    becomes the top Via (step 8).
    """
    out = request.copy()
    if uri is not None:
        out.uri = uri
    max_forwards = out.max_forwards
    out.headers.set(
        "Max-Forwards",
        str(DEFAULT_MAX_FORWARDS if max_forwards is None else max(max_forwards - 1, 0)),
    )
    if record_route is not None:
        values = [record_route] if isinstance(record_route, NameAddr) else list(record_route)
        for value in reversed(values):
            out.headers.prepend("Record-Route", str(value))
    pushed = [str(route) for route in push_routes]
    if pushed:
        out.headers.prepend("Route", ", ".join(pushed))
    out.headers.prepend("Via", str(via))
    return out


def next_hop(request: SipRequest) -> Uri:
    """§16.6 step 7 / §16.12: the top Route's URI when there is a Route, else
    the Request-URI. (A strict-routing next hop — a top Route without ``lr``
    — would need the Request-URI rewritten; natkit forwards to it as a loose
    router would and documents this.)"""
    routes = request.name_addrs("Route")
    if routes:
        return routes[0].uri
    return request.uri


def stateless_branch(request: SipRequest, *, salt: str = "") -> str:
    """§16.11: a branch derived from the received request alone.

    From the top Via's branch and sent-by when the branch is an RFC 3261 one
    (so the CANCEL and the non-2xx ACK of an INVITE, which share its branch,
    get the INVITE's branch too); for RFC 2543 requests, from the fields
    §17.2.3 matches them on, minus the method. ``salt`` keeps two proxies'
    branches apart, and tells branches to several targets apart.
    """
    top = request.top_via
    branch = top.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        material = f"{branch}|{top.sent_by.lower()}"
    else:
        material = "|".join(
            (
                str(request.uri),
                request.to.tag or "",
                request.from_.tag or "",
                request.call_id,
                str(request.cseq.seq),
                str(top),
            )
        )
    digest = hashlib.sha256(f"{salt}|{material}".encode()).hexdigest()[:24]
    return f"{MAGIC_COOKIE}nk{digest}"


def pop_own_via(
    response: SipResponse, is_own_via: Callable[[Via], bool]
) -> tuple[SipResponse, Via] | None:
    """§16.7 step 3 on a copy: the response without this proxy's top Via, and
    that Via. None when the top Via is not this proxy's (§16.11: a stateless
    proxy drops such a response) or no Via would be left to send it to
    (the response was for this element itself)."""
    vias = response.vias
    if not vias or not is_own_via(vias[0]):
        return None
    if len(vias) < 2:
        return None
    out = response.copy()
    out.headers.remove_first("Via")
    return out, vias[0]


_LOOP_PREFIX = MAGIC_COOKIE + "nk"
_LOOP_SEPARATOR = "."


def loop_key(request: SipRequest, *, arrived_with: Via | None = None) -> str:
    """§16.6 step 8: the loop-detection hash of ``request`` as this proxy
    received it (after §16.4, so with its own Routes removed).

    Hashed: the Request-URI, To and From tags, Call-ID, CSeq number and
    method (a CANCEL hashes like its INVITE, §9.2), the branch and sent-by of
    the Via it arrived with (``arrived_with``; default its top Via: when the
    request comes back, that Via sits right below ours), every parsed Route
    value (however split over lines), and every Proxy-Require and
    Proxy-Authorization value. Max-Forwards and the other
    Vias are left out: they change on every hop, loop or not.
    """
    via = arrived_with if arrived_with is not None else request.top_via
    material = "\n".join(
        (
            str(request.uri),
            request.to.tag or "",
            request.from_.tag or "",
            request.call_id,
            str(request.cseq.seq),
            "INVITE" if request.cseq.method == "CANCEL" else request.cseq.method,
            via.branch or "",
            via.sent_by.lower(),
            *(f"r:{route}" for route in request.name_addrs("Route")),
            *(f"p:{v}" for v in request.headers.get_all("Proxy-Require")),
            *(f"a:{v}" for v in request.headers.get_all("Proxy-Authorization")),
        )
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def loop_branch(request: SipRequest, unique: str) -> str:
    """§16.6 step 8: a branch for forwarding ``request`` that lets
    :func:`is_looped` recognise it: the cookie, :func:`loop_key` and a part
    unique to this branch (``unique``, e.g. a transaction layer's fresh
    branch: two branches of one fork must differ)."""
    if unique.startswith(MAGIC_COOKIE):
        unique = unique[len(MAGIC_COOKIE) :]
    return f"{_LOOP_PREFIX}{loop_key(request)}{_LOOP_SEPARATOR}{unique}"


def is_looped(request: SipRequest, is_own_via: Callable[[Via], bool]) -> bool:
    """§16.3 step 4: whether ``request`` (after §16.4) has looped.

    It has when one of its Vias is this proxy's (``is_own_via``), carries a
    :func:`loop_branch` branch, and that branch's hash equals the hash of
    the request now, taken with the Via below ours (the one it arrived with
    the first time). A request that passed this proxy before but changed
    Request-URI or Route on the way (a spiral) is not a loop.
    """
    vias = request.vias
    for index, via in enumerate(vias[:-1]):
        if not is_own_via(via):
            continue
        branch = via.branch or ""
        if not branch.startswith(_LOOP_PREFIX) or _LOOP_SEPARATOR not in branch:
            continue
        key = branch[len(_LOOP_PREFIX) :].split(_LOOP_SEPARATOR, 1)[0]
        if key == loop_key(request, arrived_with=vias[index + 1]):
            return True
    return False


def _set_routes(request: SipRequest, routes: list[NameAddr]) -> None:
    request.headers.remove("Route")
    if routes:
        request.headers.add("Route", ", ".join(str(route) for route in routes))
