"""The SIP element's media handler: anchor a call's media on natkit's media
relay when a party is behind a NAT and cannot do ICE (ECC report §6.4, the
"NAT proxy"; RFC 6314 §5.2.2.2, the media relay a proxy inserts; what
rtpengine does for Kamailio).

Theory of operation
-------------------
The SIP element hands every SDP offer and answer of a dialog-forming INVITE
to :class:`RelayMediaHandler` before forwarding it, with the transport
source it arrived from, and tells it when the call ends (BYE, CANCEL, a
failure response, the relay's idle timeout):

* **Offer** (the INVITE's SDP). A party is *NATed* when what it says about
  its addresses is not where its packets come from (the tests of Kamailio's
  ``nat_uac_test`` and RFC 6314 §4.1): its top Via's sent-by is not the
  source address, its Contact host or the SDP's ``c=`` address is private
  (RFC 1918, RFC 6598, ULA, link-local) while the source is not, or the
  ``c=`` address differs from the source. An offer with ``a=ice-ufrag``
  (session or media level, RFC 8839 §5.4) is left untouched: the user
  agents find their own path (direct media, or TURN). Otherwise, under the
  ``auto`` policy, the call is relayed when the caller is NATed, or when
  the registered contacts the INVITE goes to are (the element judges them
  by their bindings: the Contact against the source the REGISTER came
  from, :func:`~natkit.sip.nat_helper.detect_nat_binding`; a public caller
  calling a NATed callee that cannot do ICE would otherwise get one-way
  audio); under ``always``, whenever the offer has no ICE. Relayed: one relay call per
  RTP stream (``m=`` with a non-zero port) is created on the
  :class:`~natkit.mediarelay.aio.server.MediaRelayServer`, seeded with the
  caller's SDP address (the relay latches onto the real source anyway:
  comedia), and the offer the callee gets names the relay's leg-B ports
  (:func:`~natkit.sdp.rewrite_connection`: ``c=``, ``m=`` port, ``a=rtcp``;
  ICE lines stripped).
* **Answer** (the first SDP in a 18x/2xx). For a relayed call the callee's
  addresses seed leg B (``update_call``) and the answer the caller gets
  names leg A's ports. For a call not relayed, the choice is recorded (ICE,
  or no NAT on the caller's side).
* **Late offer**: a 18x/2xx with SDP for a call whose INVITE had none is
  the callee's offer (RFC 3261 §13.2.1): the same rules, applied to the
  callee; the caller's answer comes in the ACK.
* **End**: every relay call of the dialog is deleted; the relay's own idle
  timeout (``CallDeleted`` with reason timed-out) ends the record too.

A relay that cannot take a call (port range exhausted, ``max_calls``) lets
the SDP through unchanged and counts an allocation failure: a call with
one-way audio is better than no call. Calls are kept in a bounded history
(:attr:`RelayMediaHandler.history`) for the status page.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

from natkit.addr import Endpoint, Family, canonical_ip
from natkit.errors import LocalProtocolError, MalformedMessageError, NatkitError, TransportError
from natkit.mediarelay.aio.server import LegOffer, MediaRelayServer
from natkit.mediarelay.events import CallDeleted, MediaRelayEvent
from natkit.mediarelay.legs import LegEndpoints, LegUpdate
from natkit.sdp import SessionDescription, parse_sdp, rewrite_connection, serialize_sdp
from natkit.serve.settings import MediaRelaySettings, RelayPolicy
from natkit.sip.flow import Source
from natkit.sip.headers import parse_name_addr
from natkit.sip.media_hook import MediaSource
from natkit.sip.message import SipMessage, SipRequest
from natkit.sip.nat_helper import NatVerdict
from natkit.sip.uri import SipUri

__all__ = [
    "CallRecord",
    "MediaPath",
    "RelayMediaHandler",
    "SipMediaHook",
    "has_ice",
    "is_nated",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_HISTORY = 200
_GONE = 10000


class MediaPath:
    """The media path chosen for a call (labels of ``natkit_media_relay_call_paths``)."""

    RELAY = "relay"
    ICE = "direct-ice"  # the offer carries ICE: the user agents find their path
    DIRECT = "direct"  # no NAT on the caller's side (auto policy)
    UNRELAYED = "relay-unavailable"  # relay wanted, but it could not take the call
    NO_RTP = "no-rtp"  # nothing to relay: no RTP stream with a port (T.38 over UDPTL, hold)


@dataclass(slots=True)
class CallRecord:
    """One call as the status page shows it."""

    call_id: str
    caller: str
    callee: str
    path: str
    reason: str
    started: float
    state: str = "offered"  # offered, answered, ended; or not relayed
    relay_calls: list[str] = field(default_factory=list)  # one per relayed stream
    live: set[str] = field(default_factory=set)  # those the relay still has
    legs: list[tuple[LegEndpoints, LegEndpoints]] = field(default_factory=list)
    streams: list[int] = field(default_factory=list)  # media indexes relayed
    packets: int = 0
    ended_by: str | None = None
    last_answer: bytes | None = None

    def to_json(self, packets: int, now: float) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "path": self.path,
            "reason": self.reason,
            "state": self.state,
            "relayed": self.path == MediaPath.RELAY,
            "packets": packets,
            "ended_by": self.ended_by,
            "age_s": round(now - self.started, 1),
        }


# -- NAT and ICE detection ---------------------------------------------------------------


def _private(host: str) -> bool:
    """An address that cannot be reached from the Internet (RFC 1918, RFC
    6598 shared space, RFC 4193 ULA, link-local, unspecified)."""
    try:
        ip = ipaddress.ip_address(canonical_ip(host))
    except ValueError:
        return False  # a name: nothing to say
    if ip.is_unspecified or ip.is_link_local:
        return True
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return True
    return ip.is_private and not ip.is_loopback


def _same_ip(a: str, b: str) -> bool:
    try:
        return canonical_ip(a) == canonical_ip(b)
    except ValueError:
        return False


def is_nated(
    message: SipMessage, desc: SessionDescription | None, source: Source
) -> tuple[bool, str]:
    """Whether the sender of ``message`` (from ``source``) is behind a NAT,
    and why (see the module docstring)."""
    src = source.remote.host
    src_private = _private(src)
    if isinstance(message, SipRequest):
        try:
            via = message.top_via
        except MalformedMessageError:
            via = None
        if via is not None and not _same_ip(via.host, src):
            return True, f"Via sent-by {via.host} is not the source {src}"
    contacts: Any
    try:
        contacts = message.contacts
    except MalformedMessageError:
        contacts = []
    if contacts != "*":
        for contact in contacts:
            uri = contact.uri
            if isinstance(uri, SipUri) and _private(uri.host) and not src_private:
                return True, f"private Contact {uri.host}"
    if desc is not None:
        for index, media in enumerate(desc.media):
            if media.rejected or not media.is_rtp:
                continue
            conn = desc.connection_of(index)
            if conn is None:
                continue
            if _private(conn.address) and not src_private:
                return True, f"private SDP address {conn.address}"
            if not _same_ip(conn.address, src):
                return True, f"SDP address {conn.address} is not the source {src}"
    return False, "addresses match the source"


def has_ice(desc: SessionDescription) -> bool:
    """``a=ice-ufrag`` at session level or on any stream (RFC 8839 §5.4)."""
    return desc.ice_ufrag is not None or any(m.ice_ufrag is not None for m in desc.media)


def _sdp_of(message: SipMessage) -> SessionDescription | None:
    ctype = (message.content_type or "").split(";")[0].strip().lower()
    if not message.body or ctype not in ("application/sdp", ""):
        return None
    try:
        return parse_sdp(message.body)
    except MalformedMessageError:
        return None  # the user agent answers 488; nothing for the relay to do


def _with_sdp(message: SipMessage, desc: SessionDescription) -> SipMessage:
    out = message.copy()
    out.body = serialize_sdp(desc)
    return out


def _stream_address(
    desc: SessionDescription, index: int
) -> tuple[Endpoint | None, Endpoint | None]:
    """The RTP and RTCP addresses ``desc`` announces for stream ``index``."""
    media = desc.media[index]
    conn = desc.connection_of(index)
    if conn is None or media.port == 0:
        return None, None
    try:
        host = canonical_ip(conn.address)
    except ValueError:
        return None, None
    if ipaddress.ip_address(host).is_unspecified:
        return None, None  # hold (RFC 3264 §8.4, old style): learn from packets
    rtp = Endpoint(host, media.port)
    rtcp_attr = media.rtcp
    rtcp: Endpoint | None = None
    if rtcp_attr is not None:
        rtcp_host = host
        if rtcp_attr.address:
            try:
                rtcp_host = canonical_ip(rtcp_attr.address)
            except ValueError:
                rtcp_host = host
        rtcp = Endpoint(rtcp_host, rtcp_attr.port)
    return rtp, rtcp


def _to_invite(message: SipMessage) -> bool:
    """A response to an INVITE."""
    if isinstance(message, SipRequest):
        return False
    try:
        return message.cseq.method == "INVITE"
    except MalformedMessageError:
        return False


def _who(message: SipMessage, header: str) -> str:
    try:
        value = message.headers.get(header)
        if value is None:
            return "-"
        uri = parse_name_addr(value).uri
        return str(uri)
    except NatkitError:
        return "-"


class RelayMediaHandler:
    """Per call, relay or not (module docstring); ``relay`` must be started.

    ``policy``: ``auto`` (relay when the caller is NATed and offers no ICE)
    or ``always`` (relay every offer without ICE). ``advertised_ipv4`` /
    ``advertised_ipv6``: the relay's public address when it sits behind a
    1:1 NAT (what the SDP names instead of the bound address)."""

    def __init__(
        self,
        relay: MediaRelayServer,
        settings: MediaRelaySettings | None = None,
        *,
        policy: str | None = None,
        advertised: dict[Family, str] | None = None,
    ) -> None:
        self.relay = relay
        self.policy = policy or (settings.policy if settings is not None else RelayPolicy.AUTO)
        self.advertised: dict[Family, str] = dict(advertised or {})
        if settings is not None:
            if settings.advertised_ipv4:
                self.advertised[Family.IPV4] = settings.advertised_ipv4
            if settings.advertised_ipv6:
                self.advertised[Family.IPV6] = settings.advertised_ipv6
        self.calls: dict[str, CallRecord] = {}
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.history: collections.deque[CallRecord] = collections.deque(maxlen=_HISTORY)
        self.paths_chosen: dict[str, int] = {}
        self.ended_by_reason: dict[str, int] = {}
        self.allocation_failures = 0
        self._relay_owner: dict[str, CallRecord] = {}  # relay call id -> its call
        self._ended_packets = 0
        self._ended_bytes = 0
        self._ended_foreign = 0
        self._closed = False

    # -- the SIP element's side -------------------------------------------------------

    async def offer(
        self,
        message: SipMessage,
        source: Source,
        *,
        nat_verdict: str | None = None,
        callee_nat: str | None = None,
    ) -> SipMessage:
        """The INVITE (or UPDATE) with SDP from the caller, as it will be
        forwarded: rewritten towards the relay when the call is relayed.
        ``nat_verdict``: the SIP element's own finding that the sender is
        NATed (why), added to :func:`is_nated`'s; ``callee_nat``: why the
        registered contacts the offer goes to look NATed (a public caller
        calling a NATed callee that cannot do ICE needs the relay too)."""
        desc = _sdp_of(message)
        call_id = message.call_id
        if desc is None or self._closed:
            return message
        if call_id in self.calls:
            return await self._reoffer(self.calls[call_id], message, desc, source)
        if call_id in self._gone:
            return message  # a re-offer in a call that was not relayed stays direct
        caller, callee = _who(message, "From"), _who(message, "To")
        if has_ice(desc):
            self._choose(CallRecord(call_id, caller, callee, MediaPath.ICE, "the offer has ICE",
                                    self.relay.now()))  # fmt: skip
            return message
        nated, why = is_nated(message, desc, source)
        if not nated and nat_verdict:
            nated, why = True, nat_verdict
        if not nated and callee_nat:
            nated, why = True, f"callee NATed ({callee_nat})"
        if not nated and self.policy != RelayPolicy.ALWAYS:
            self._choose(CallRecord(call_id, caller, callee, MediaPath.DIRECT, why,
                                    self.relay.now()))  # fmt: skip
            return message
        reason = why if nated else "policy always"
        record = CallRecord(call_id, caller, callee, MediaPath.RELAY, reason, self.relay.now())
        return await self._relay(record, message, desc, from_caller=True)

    async def _relay(
        self,
        record: CallRecord,
        message: SipMessage,
        desc: SessionDescription,
        *,
        from_caller: bool,
    ) -> SipMessage:
        """Anchor ``record``'s streams on the relay: one relay call per RTP
        stream, seeded on the sender's leg (A for the caller's offer, B for a
        callee's late offer) and ``message`` rewritten towards the other leg."""
        rewritten = desc
        try:
            for index, media in enumerate(desc.media):
                if media.rejected or not media.is_rtp:
                    continue
                rtp, rtcp = _stream_address(desc, index)
                v6 = rtp is not None and rtp.family == Family.IPV6
                family = Family.IPV6 if v6 else Family.IPV4
                if self.relay.addresses.get(family) is None:
                    family = Family.IPV4 if family is Family.IPV6 else Family.IPV6
                relay_id = f"{record.call_id}#{index}"
                seeded = LegOffer(family=family, rtcp_mux=media.rtcp_mux, remote_rtp=rtp,
                                  remote_rtcp=rtcp)  # fmt: skip
                unknown = LegOffer(family=family, rtcp_mux=media.rtcp_mux)
                a, b = (seeded, unknown) if from_caller else (unknown, seeded)
                ends = await self.relay.create_call(relay_id, a=a, b=b)
                record.relay_calls.append(relay_id)
                record.live.add(relay_id)
                record.streams.append(index)
                record.legs.append((ends.a, ends.b))
                self._relay_owner[relay_id] = record
                rewritten = self._towards(rewritten, index, ends.b if from_caller else ends.a)
        except (LocalProtocolError, TransportError) as exc:
            log.warning("media relay cannot take call %s: %s", record.call_id, exc)
            self.allocation_failures += 1
            self._delete_relay_calls(record)
            record.path, record.reason = MediaPath.UNRELAYED, str(exc)
            record.state, record.ended_by = "offered", None
            self._choose(record)
            return message
        if not record.relay_calls:
            # No RTP stream to anchor (only port-0 or non-RTP m= lines): a
            # record in the call table would wait for a BYE for nothing.
            record.path, record.reason = MediaPath.NO_RTP, "no RTP stream to relay"
            self._choose(record)
            return message
        self._choose(record)
        log.info("call %s relayed (%s)", record.call_id, record.reason)
        if not from_caller:
            record.state = "answered"
            record.last_answer = message.body
        return _with_sdp(message, rewritten)

    async def _late_offer(
        self, message: SipMessage, desc: SessionDescription, source: Source, nat_verdict: str | None
    ) -> SipMessage:
        """A 18x/2xx to an INVITE without SDP carries the callee's offer
        (RFC 3264 §4, RFC 3261 §13.2.1); the caller's answer comes in the ACK.
        The same rules as for an offer, applied to the callee."""
        call_id = message.call_id
        caller, callee = _who(message, "From"), _who(message, "To")
        started = self.relay.now()
        if has_ice(desc):
            self._choose(CallRecord(call_id, caller, callee, MediaPath.ICE,
                                    "the late offer has ICE", started))  # fmt: skip
            return message
        nated, why = is_nated(message, desc, source)
        if not nated and nat_verdict:
            nated, why = True, nat_verdict
        if not nated and self.policy != RelayPolicy.ALWAYS:
            self._choose(CallRecord(call_id, caller, callee, MediaPath.DIRECT, why, started))
            return message
        reason = f"late offer: {why if nated else 'policy always'}"
        record = CallRecord(call_id, caller, callee, MediaPath.RELAY, reason, started)
        return await self._relay(record, message, desc, from_caller=False)

    async def answer(
        self, message: SipMessage, source: Source, *, nat_verdict: str | None = None
    ) -> SipMessage:
        """A 18x/2xx (or ACK) with SDP, as it will be forwarded: the answer
        to an offer seen, or the callee's late offer in a response to an
        INVITE that had none."""
        record = self.calls.get(message.call_id)
        desc = _sdp_of(message)
        late = record is None and message.call_id not in self._gone and _to_invite(message)
        if late and desc is not None and not self._closed:
            return await self._late_offer(message, desc, source, nat_verdict)
        if record is None or desc is None:
            return message
        record.state = "answered"
        # A response comes from the To side (the callee for the INVITE, the
        # caller for a re-INVITE the callee sent); an ACK with the answer to a
        # 2xx offer from the From side.
        from_is_caller = _who(message, "From") == record.caller
        by_callee = from_is_caller != isinstance(message, SipRequest)
        repeated = message.body == record.last_answer  # a 2xx retransmission
        record.last_answer = message.body
        rewritten = desc
        for (leg_a, leg_b), index, relay_id in zip(
            record.legs, record.streams, record.relay_calls, strict=True
        ):
            if index >= len(desc.media) or relay_id not in record.live:
                continue
            if not repeated:
                rtp, rtcp = _stream_address(desc, index)
                update = LegUpdate(remote_rtp=rtp, remote_rtcp=rtcp)
                try:
                    if by_callee:
                        self.relay.update_call(relay_id, b=update)
                    else:
                        self.relay.update_call(relay_id, a=update)
                except LocalProtocolError:
                    continue  # the relay call timed out meanwhile
            rewritten = self._towards(rewritten, index, leg_a if by_callee else leg_b)
        return _with_sdp(message, rewritten)

    def ended(self, call_id: str, reason: str) -> None:
        """The dialog (or the attempt) is over: BYE, CANCEL, a failure, a timeout."""
        record = self.calls.pop(call_id, None)
        if record is None:
            return
        self._forget(call_id)
        record.state = "ended"
        record.ended_by = reason
        self._delete_relay_calls(record)

    def close(self) -> None:
        """End every call (the relay itself is closed by its owner)."""
        self._closed = True
        for call_id in list(self.calls):
            self.ended(call_id, "shutdown")

    # -- the relay's side -------------------------------------------------------------

    def on_relay_event(self, event: MediaRelayEvent) -> None:
        """``MediaRelayServer(on_event=...)``: a relay call deleted (by us,
        by its idle timeout, at shutdown) ends its record and is counted."""
        if not isinstance(event, CallDeleted):
            return
        stats = event.stats
        self._ended_packets += stats.a_to_b.forwarded + stats.b_to_a.forwarded
        self._ended_bytes += stats.a_to_b.bytes + stats.b_to_a.bytes
        self._ended_foreign += stats.a_to_b.dropped_foreign + stats.b_to_a.dropped_foreign
        reason = event.reason.value
        self.ended_by_reason[reason] = self.ended_by_reason.get(reason, 0) + 1
        record = self._relay_owner.pop(event.call_id, None)
        if record is None:
            return
        record.packets += stats.a_to_b.forwarded + stats.b_to_a.forwarded
        record.live.discard(event.call_id)
        if not record.live and record.state != "ended":
            # the relay's idle timeout (or shutdown) ended the call's media first
            if self.calls.get(record.call_id) is record:
                del self.calls[record.call_id]
                self._forget(record.call_id)
            record.state = "ended"
            record.ended_by = f"relay {reason}"

    # -- what the status page and metrics read ---------------------------------------

    def relayed_totals(self) -> tuple[int, int, int]:
        """Packets and bytes relayed and foreign packets dropped, ended and live calls."""
        packets, octets, foreign = self._ended_packets, self._ended_bytes, self._ended_foreign
        for relay_id in list(self._relay_owner):
            try:
                stats = self.relay.call_stats(relay_id)
            except LocalProtocolError:
                continue
            packets += stats.a_to_b.forwarded + stats.b_to_a.forwarded
            octets += stats.a_to_b.bytes + stats.b_to_a.bytes
            foreign += stats.a_to_b.dropped_foreign + stats.b_to_a.dropped_foreign
        return packets, octets, foreign

    def calls_json(self) -> list[dict[str, Any]]:
        """The history, most recent first, with live packet counts."""
        out: list[dict[str, Any]] = []
        now = self.relay.now()
        for record in reversed(self.history):
            packets = record.packets
            for relay_id in record.live:
                try:
                    stats = self.relay.call_stats(relay_id)
                except LocalProtocolError:
                    continue
                packets += stats.a_to_b.forwarded + stats.b_to_a.forwarded
            out.append(record.to_json(packets, now))
        return out

    # -- helpers ----------------------------------------------------------------------

    def _forget(self, call_id: str) -> None:
        """Remember that ``call_id`` was seen and needs nothing more (a late
        2xx of it is no late offer); bounded, oldest first out."""
        self._gone[call_id] = None
        while len(self._gone) > _GONE:
            self._gone.popitem(last=False)

    def _choose(self, record: CallRecord) -> None:
        """Count the path chosen; only relayed calls stay in :attr:`calls`
        (until their end), so calls that never see a BYE cost nothing."""
        self.paths_chosen[record.path] = self.paths_chosen.get(record.path, 0) + 1
        self.history.append(record)
        if record.path == MediaPath.RELAY:
            self.calls[record.call_id] = record
        else:
            record.state = "not relayed"
            self._forget(record.call_id)

    async def _reoffer(
        self, record: CallRecord, message: SipMessage, desc: SessionDescription, source: Source
    ) -> SipMessage:
        """A re-INVITE (or a retransmitted INVITE) with SDP: a relayed call's
        new addresses seed the side it came from; the SDP still names the relay."""
        from_caller = _who(message, "From") == record.caller
        rewritten = desc
        for (leg_a, leg_b), index, relay_id in zip(
            record.legs, record.streams, record.relay_calls, strict=True
        ):
            if index >= len(desc.media) or relay_id not in record.live:
                continue
            rtp, rtcp = _stream_address(desc, index)
            update = LegUpdate(remote_rtp=rtp, remote_rtcp=rtcp)
            try:
                if from_caller:
                    self.relay.update_call(relay_id, a=update)
                else:
                    self.relay.update_call(relay_id, b=update)
            except LocalProtocolError:
                continue
            rewritten = self._towards(rewritten, index, leg_b if from_caller else leg_a)
        return _with_sdp(message, rewritten)

    def _towards(
        self, desc: SessionDescription, index: int, leg: LegEndpoints
    ) -> SessionDescription:
        address = self.advertised.get(leg.rtp.family, leg.rtp.host)
        rtcp_port = leg.rtcp.port if leg.rtcp is not None else None
        if rtcp_port == leg.rtp.port + 1:
            rtcp_port = None  # the RFC 3550 default: no a=rtcp needed
        return rewrite_connection(desc, index, address, leg.rtp.port, rtcp_port)

    def _delete_relay_calls(self, record: CallRecord) -> None:
        for relay_id in list(record.live):
            # on_relay_event counts the final statistics (CallDeleted)
            with contextlib.suppress(LocalProtocolError):  # gone already (idle timeout)
                self.relay.delete_call(relay_id)


# -- the SIP element's media hook -----------------------------------------------------------


class SipMediaHook:
    """:class:`~natkit.sip.media_hook.MediaHandler` over a
    :class:`RelayMediaHandler`: what ``SipServer(media_handler=...)`` is
    given. The element calls ``on_offer`` for each INVITE/UPDATE with SDP it
    proxies, ``on_answer`` for each response (and ACK) with SDP it forwards,
    ``on_call_ended`` for BYE, CANCEL and INVITE failures; the element's NAT
    verdict on the sender (Via, Contact) is combined with the handler's own
    SDP test (:func:`is_nated`)."""

    def __init__(self, handler: RelayMediaHandler) -> None:
        self.handler = handler

    async def on_offer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None:
        out = await self.handler.offer(
            message,
            source_flow.source,
            nat_verdict=_nat_verdict(source_flow),
            callee_nat=_reasons_text(source_flow.target_nat),
        )
        return None if out is message else out.body

    async def on_answer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None:
        out = await self.handler.answer(
            message, source_flow.source, nat_verdict=_nat_verdict(source_flow)
        )
        return None if out is message else out.body

    def on_call_ended(self, call_id: str) -> None:
        self.handler.ended(call_id, "ended")


def _nat_verdict(source_flow: MediaSource) -> str | None:
    """The SIP element's reasons to think the sender is NATed, as one string
    (``None``: it found none)."""
    return _reasons_text(source_flow.nat)


def _reasons_text(verdict: NatVerdict) -> str | None:
    return ", ".join(sorted(str(r) for r in verdict.reasons)) or None
