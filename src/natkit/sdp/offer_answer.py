"""The SDP offer/answer model (RFC 3264), as pure functions.

Theory of operation
-------------------
:class:`LocalCapabilities` says what this end can do: its address, and per
stream (:class:`MediaCapabilities`) the codecs with the payload types it
wants to receive them on, its RTP/RTCP ports, whether it offers
``a=rtcp-mux`` and SRTP, and the direction it wants.

- :func:`build_offer` writes an offer from capabilities (RFC 3264 §5). Given
  the previous description of the session it is a re-offer (§8): same
  ``o=`` username and session id, version incremented only if something
  changed, previous m-lines kept in place (extra ones set to port 0, §8.2),
  SRTP keys kept.
- :func:`answer` answers an offer (§6): one m-line per offered m-line in the
  same order; a stream whose media type, protocol, codecs or SRTP this end
  cannot use is rejected with port 0. Codecs are the intersection in the
  offerer's order; static payload types (RFC 3551 §6) match by number,
  dynamic ones by ``rtpmap`` encoding name, clock rate and channels, and are
  answered with this end's own payload type numbers (the answer's numbers
  say what the answerer receives, §5.1) unless
  :attr:`LocalCapabilities.payload_numbering` asks for the offerer's (the
  SHOULD of §6.1) or the offer uses that number for another codec.
  Directions are mirrored (§6.1), ``a=rtcp-mux`` accepted when offered
  (RFC 5761 §5.1.1), one matching ``a=crypto`` answered with a fresh key
  from ``rng`` (RFC 4568 §7.1.2), ``a=setup:actpass`` answered ``active``
  (RFC 4145 §4.1).
- :func:`negotiated_media` reads an offer and its answer from one side's
  point of view and says, per stream, where to send RTP and RTCP, with which
  payload types, in which direction, with which SRTP keys, and whether the
  other side has put the stream on hold.

Hold (RFC 3264 §8.4): a stream is on hold when its sender marks it
``sendonly`` or ``inactive``; the older RFC 2543 way, ``c=0.0.0.0``, is
understood too, except in descriptions that carry ICE (``a=ice-ufrag``),
where 0.0.0.0 only means that the address comes from the candidates
(RFC 8839 §4.2.1).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from natkit.addr import Endpoint, canonical_ip
from natkit.errors import MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.sdp.attributes import (
    CRYPTO_KEY_SALT_LENGTHS,
    UNUSABLE,
    Attribute,
    ConnectionMode,
    Crypto,
    CryptoKey,
    Direction,
    Fmtp,
    RtpMap,
    Setup,
    format_packet_time,
    parse_crypto,
)
from natkit.sdp.model import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)

__all__ = [
    "AUXILIARY_ENCODINGS",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Codec",
    "LocalCapabilities",
    "MediaCapabilities",
    "NegotiatedCodec",
    "NegotiatedStream",
    "PayloadNumbering",
    "SrtpKeys",
    "SrtpPolicy",
    "answer",
    "build_offer",
    "has_accepted_media",
    "negotiated_media",
]

# RFC 3551 §6, Tables 4 and 5: payload types with a static meaning.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    pt: RtpMap(payload_type=pt, encoding_name=name, clock_rate=rate, channels=channels)
    for pt, name, rate, channels in (
        (0, "PCMU", 8000, None),
        (3, "GSM", 8000, None),
        (4, "G723", 8000, None),
        (5, "DVI4", 8000, None),
        (6, "DVI4", 16000, None),
        (7, "LPC", 8000, None),
        (8, "PCMA", 8000, None),
        (9, "G722", 8000, None),
        (10, "L16", 44100, 2),
        (11, "L16", 44100, None),
        (12, "QCELP", 8000, None),
        (13, "CN", 8000, None),
        (14, "MPA", 90000, None),
        (15, "G728", 8000, None),
        (16, "DVI4", 11025, None),
        (17, "DVI4", 22050, None),
        (18, "G729", 8000, None),
        (25, "CelB", 90000, None),
        (26, "JPEG", 90000, None),
        (28, "nv", 90000, None),
        (31, "H261", 90000, None),
        (32, "MPV", 90000, None),
        (33, "MP2T", 90000, None),
        (34, "H263", 90000, None),
    )
}
FIRST_DYNAMIC_PAYLOAD_TYPE = 96  # RFC 3551 §3

# Secure RTP profiles whose keys come from a=crypto (RFC 4568 §9.1); the
# UDP/TLS/... variants take theirs from DTLS (RFC 5763) instead.
SDES_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})

# Encodings that ride along with a real codec and are never "the" codec.
AUXILIARY_ENCODINGS = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec"})


class SrtpPolicy(enum.Enum):
    """Whether a stream uses SRTP with SDES keys (RFC 4568)."""

    NONE = "none"  # plain RTP; RTP/SAVP offers are rejected
    OPTIONAL = "optional"  # offer RTP/AVP with a=crypto; accept either
    REQUIRED = "required"  # offer RTP/SAVP; reject streams without a=crypto


class PayloadNumbering(enum.Enum):
    """Which payload type numbers an answer uses for dynamic codecs (RFC 3264 §6.1)."""

    ANSWERER = "answerer"  # our own numbers: what we receive on
    OFFERER = "offerer"  # the offer's numbers, symmetric PTs


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """A codec this end can receive, on ``payload_type`` (RFC 8866 §6.6)."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    fmtp: str | None = None

    @property
    def rtpmap(self) -> RtpMap:
        return RtpMap(
            payload_type=self.payload_type,
            encoding_name=self.name,
            clock_rate=self.clock_rate,
            channels=self.channels,
        )

    @property
    def is_auxiliary(self) -> bool:
        return self.name.lower() in AUXILIARY_ENCODINGS


PCMU = Codec(name="PCMU", clock_rate=8000, payload_type=0)
PCMA = Codec(name="PCMA", clock_rate=8000, payload_type=8)
TELEPHONE_EVENT = Codec(name="telephone-event", clock_rate=8000, payload_type=101, fmtp="0-16")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaCapabilities:
    """What this end offers or accepts for one stream.

    ``rtcp_port`` ``None`` means RTP port + 1 (RFC 3550 §11); another value is
    announced with ``a=rtcp`` (RFC 3605). ``address`` puts a media-level
    ``c=`` in place of the session's. ``protos`` are the transport protocols
    accepted in an answer; ``proto`` overrides the offered one (by default
    ``RTP/SAVP`` when SRTP is required, else ``RTP/AVP``). ``setup`` offers
    connection-oriented media (RFC 4145) with ``a=setup`` and
    ``a=connection:new``.
    """

    media: str = "audio"
    codecs: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT)
    port: int
    rtcp_port: int | None = None
    address: str | None = None
    rtcp_mux: bool = True
    srtp: SrtpPolicy = SrtpPolicy.NONE
    crypto_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    direction: Direction = Direction.SENDRECV
    ptime: float | None = 20
    maxptime: float | None = None
    proto: str | None = None
    protos: tuple[str, ...] = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
    setup: Setup | None = None
    mid: str | None = None

    @property
    def offer_proto(self) -> str:
        if self.proto is not None:
            return self.proto
        return "RTP/SAVP" if self.srtp is SrtpPolicy.REQUIRED else "RTP/AVP"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalCapabilities:
    """This end of a session: its address, streams, and where its randomness comes from.

    ``address`` is an IP literal (IPv4 or IPv6) for ``o=`` and the session
    ``c=``; a name raises ``ValueError`` when a description is built.
    ``rng`` makes session IDs and SRTP keys: ``secrets``-backed by default,
    seeded in tests.
    """

    address: str
    media: tuple[MediaCapabilities, ...]
    username: str = "-"
    session_name: str = "natkit"
    payload_numbering: PayloadNumbering = PayloadNumbering.ANSWERER
    rng: Rng = field(default_factory=default_rng, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiatedCodec:
    """A codec both ends listed: we send it with ``send_payload_type`` (the
    remote's number) and receive it on ``receive_payload_type`` (ours)."""

    name: str
    clock_rate: int
    channels: int
    send_payload_type: int
    receive_payload_type: int
    remote_fmtp: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtpKeys:
    """SDES master key || salt for each direction (RFC 4568 §6.1)."""

    suite: str
    local_key_salt: bytes  # protects what we send
    remote_key_salt: bytes  # protects what we receive
    local_mki: tuple[int, int] | None = None
    remote_mki: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiatedStream:
    """One stream after offer/answer, seen from this end.

    ``remote_rtp``/``remote_rtcp`` are ``None`` when the stream is rejected,
    the remote's address is a host name (``remote_host`` has it) or
    unspecified (RFC 2543 hold). ``remote_hold`` is true when the remote does
    not want to receive: it sent ``sendonly``, ``inactive`` or
    ``c=0.0.0.0``. ``direction`` is ours: ``sendrecv`` means we send and
    receive.
    """

    index: int
    media: str
    proto: str
    accepted: bool
    mid: str | None = None
    local_port: int = 0
    remote_host: str | None = None
    remote_rtp: Endpoint | None = None
    remote_rtcp: Endpoint | None = None
    rtcp_mux: bool = False
    codecs: tuple[NegotiatedCodec, ...] = ()
    codec: NegotiatedCodec | None = None
    telephone_event: NegotiatedCodec | None = None
    direction: Direction = Direction.INACTIVE
    remote_hold: bool = False
    srtp: SrtpKeys | None = None
    remote_ptime: float | None = None
    local_setup: Setup | None = None


# -- building descriptions -------------------------------------------------------------


def _codec_attributes(codecs: list[tuple[int, Codec]]) -> list[Attribute]:
    attrs = []
    for pt, codec in codecs:
        attrs.append(
            Attribute("rtpmap", dataclasses.replace(codec, payload_type=pt).rtpmap.format())
        )
        if codec.fmtp:
            attrs.append(
                Attribute("fmtp", Fmtp(format=str(pt), parameters=codec.fmtp).format_value())
            )
    return attrs


def _fresh_key(suite: str, rng: Rng) -> CryptoKey:
    length = CRYPTO_KEY_SALT_LENGTHS.get(suite.upper(), 30)
    return CryptoKey(key_salt=rng.getrandbits(8 * length).to_bytes(length, "big"))


def _previous_crypto(previous: MediaDescription | None, tag: int, suite: str) -> Crypto | None:
    """A crypto line of the previous description to keep, so re-INVITEs keep keys."""
    if previous is None:
        return None
    for attr in previous.get_all("crypto"):
        try:
            crypto = parse_crypto(attr.value)
        except MalformedMessageError:
            continue
        if crypto.tag == tag and crypto.suite.upper() == suite.upper():
            return crypto
    return None


def _media_section(
    cap: MediaCapabilities,
    *,
    proto: str,
    codecs: list[tuple[int, Codec]],
    direction: Direction,
    rtcp_mux: bool,
    crypto: list[Crypto],
    setup: Setup | None,
    connection_mode: ConnectionMode | None,
    mid: str | None,
) -> MediaDescription:
    attrs = _codec_attributes(codecs)
    if cap.ptime is not None:
        attrs.append(Attribute("ptime", format_packet_time(cap.ptime)))
    if cap.maxptime is not None:
        attrs.append(Attribute("maxptime", format_packet_time(cap.maxptime)))
    attrs.append(Attribute(direction.value))
    if cap.rtcp_port is not None and cap.rtcp_port != cap.port + 1:
        attrs.append(Attribute("rtcp", str(cap.rtcp_port)))
    if rtcp_mux:
        attrs.append(Attribute("rtcp-mux"))
    attrs.extend(Attribute("crypto", c.format()) for c in crypto)
    if setup is not None:
        attrs.append(Attribute("setup", setup.value))
    if connection_mode is not None:
        attrs.append(Attribute("connection", connection_mode.value))
    if mid is not None:
        attrs.append(Attribute("mid", mid))
    return MediaDescription(
        media=cap.media,
        port=cap.port,
        proto=proto,
        formats=tuple(str(pt) for pt, _ in codecs),
        connections=(Connection.for_address(cap.address),) if cap.address else (),
        attributes=tuple(attrs),
    )


def _rejected(offered: MediaDescription) -> MediaDescription:
    """The answer to a stream we cannot use: port 0, same media and proto (RFC 3264 §6)."""
    mid = offered.mid
    return MediaDescription(
        media=offered.media,
        port=0,
        proto=offered.proto,
        formats=offered.formats[:1] or ("0",),
        attributes=(Attribute("mid", mid),) if mid is not None else (),
    )


def _session(
    caps: LocalCapabilities,
    media: list[MediaDescription],
    previous: SessionDescription | None,
) -> SessionDescription:
    """Wrap ``media`` in a session; o= follows RFC 3264 §8 against ``previous``."""
    draft = SessionDescription(
        origin=Origin(
            username=caps.username,
            session_id=caps.rng.randrange(1, 2**62),
            session_version=1,
            addrtype=Connection.for_address(caps.address).addrtype,
            address=canonical_ip(caps.address),
        ),
        session_name=caps.session_name,
        connection=Connection.for_address(caps.address),
        timings=(Timing(),),
        media=tuple(media),
    )
    if previous is None:
        return draft
    same_origin = dataclasses.replace(draft, origin=previous.origin)
    if same_origin == previous:
        return same_origin
    origin = dataclasses.replace(
        previous.origin,
        session_version=previous.origin.session_version + 1,
        addrtype=draft.origin.addrtype,
        address=draft.origin.address,
    )
    return dataclasses.replace(draft, origin=origin)


def build_offer(
    caps: LocalCapabilities, *, previous: SessionDescription | None = None
) -> SessionDescription:
    """An offer for ``caps`` (RFC 3264 §5); a re-offer (§8) when ``previous`` is given.

    ``previous`` is the last description this end sent in the session (offer
    or answer). Its m-lines beyond ``caps.media`` are kept as port 0 (§8.2);
    its SRTP keys are reused for the same tag and suite.
    """
    media: list[MediaDescription] = []
    for index, cap in enumerate(caps.media):
        old = previous.media[index] if previous and index < len(previous.media) else None
        crypto: list[Crypto] = []
        if cap.srtp is not SrtpPolicy.NONE:
            for tag, suite in enumerate(cap.crypto_suites, start=1):
                kept = _previous_crypto(old, tag, suite)
                crypto.append(
                    kept or Crypto(tag=tag, suite=suite, keys=(_fresh_key(suite, caps.rng),))
                )
        media.append(
            _media_section(
                cap,
                proto=cap.offer_proto,
                codecs=[(c.payload_type, c) for c in cap.codecs],
                direction=cap.direction,
                rtcp_mux=cap.rtcp_mux,
                crypto=crypto,
                setup=cap.setup,
                connection_mode=ConnectionMode.NEW if cap.setup is not None else None,
                mid=cap.mid,
            )
        )
    if previous is not None:
        media.extend(_rejected(m) for m in previous.media[len(media) :])
    return _session(caps, media, previous)


# -- answering ------------------------------------------------------------------------


def _offered_codec(pt: int, rtpmaps: dict[int, RtpMap]) -> RtpMap | None:
    if pt in rtpmaps:
        return rtpmaps[pt]
    return STATIC_PAYLOAD_TYPES.get(pt)


def _match_codecs(
    offered: MediaDescription, cap: MediaCapabilities, numbering: PayloadNumbering
) -> list[tuple[int, Codec]]:
    """The codec intersection in the offerer's order, with the answer's payload types."""
    rtpmaps = offered.rtpmaps()
    chosen: list[tuple[int, Codec]] = []
    used: set[int] = set()
    for pt in offered.payload_types:
        rtpmap = _offered_codec(pt, rtpmaps)
        if rtpmap is None:
            continue  # a dynamic type without rtpmap means nothing (RFC 8866 §6.6)
        for local in cap.codecs:
            if id(local) in used or not local.rtpmap.same_codec(rtpmap):
                continue
            static = pt < FIRST_DYNAMIC_PAYLOAD_TYPE
            # Our own number unless the offer uses it for another codec: an
            # answer whose PT 101 means telephone-event/8000 while the offer's
            # 101 is telephone-event/48000 confuses peers that assume symmetry.
            ours = local.payload_type
            theirs = _offered_codec(ours, rtpmaps) if ours in offered.payload_types else None
            if (
                static
                or numbering is PayloadNumbering.OFFERER
                or (theirs is not None and not theirs.same_codec(rtpmap))
            ):
                answer_pt = pt
            else:
                answer_pt = ours
            if any(answer_pt == p for p, _ in chosen):
                continue
            used.add(id(local))
            chosen.append((answer_pt, local))
            break
    if all(codec.is_auxiliary for _, codec in chosen) and not all(
        codec.is_auxiliary for codec in cap.codecs
    ):
        # Only telephone-event or CN in common: no audio. A capability made
        # of telephone-event alone does answer a DTMF-only stream (RFC 4317 §2.4).
        return []
    return chosen


def _answer_crypto(
    offered: MediaDescription,
    cap: MediaCapabilities,
    rng: Rng,
    previous: MediaDescription | None,
) -> Crypto | None:
    """The first offered ``a=crypto`` we support, answered with our own key (RFC 4568 §7.1.2).

    Lines with session parameters (``UNENCRYPTED_SRTP``, ``KDR`` ...) are
    skipped: natkit's SRTP does not implement them, and §6.3 says a line
    with a parameter the answerer does not support is not acceptable.
    """
    suites = {s.upper() for s in cap.crypto_suites}
    for attr in offered.get_all("crypto"):
        try:
            crypto = parse_crypto(attr.value)
        except MalformedMessageError:
            continue
        if crypto.suite.upper() not in suites or crypto.session_params:
            continue
        kept = _previous_crypto(previous, crypto.tag, crypto.suite)
        if kept is not None:
            return kept
        return Crypto(tag=crypto.tag, suite=crypto.suite, keys=(_fresh_key(crypto.suite, rng),))
    return None


def _effective_direction(desc: SessionDescription, index: int) -> Direction:
    """The stream's direction, counting RFC 2543 ``c=0.0.0.0`` hold (RFC 3264 §8.4)."""
    direction = desc.direction_of(index)
    connection = desc.connection_of(index)
    if connection is not None and connection.is_unspecified and desc.ice_ufrag_of(index) is None:
        return Direction.of(sends=direction.sends, receives=False)
    return direction


def _answer_stream(
    offer: SessionDescription,
    index: int,
    cap: MediaCapabilities,
    caps: LocalCapabilities,
    previous: MediaDescription | None,
) -> MediaDescription | None:
    offered = offer.media[index]
    proto = offered.proto.upper()
    if proto not in {p.upper() for p in cap.protos} or not offered.is_rtp:
        return None
    secure_proto = "SAVP" in proto
    if secure_proto and cap.srtp is SrtpPolicy.NONE:
        return None
    codecs = _match_codecs(offered, cap, caps.payload_numbering)
    if not codecs:
        return None
    crypto = None
    if cap.srtp is not SrtpPolicy.NONE and offered.has("crypto"):
        crypto = _answer_crypto(offered, cap, caps.rng, previous)
    if crypto is None and (secure_proto or cap.srtp is SrtpPolicy.REQUIRED):
        return None
    offered_direction = _effective_direction(offer, index)
    direction = Direction.of(
        sends=offered_direction.receives and cap.direction.sends,
        receives=offered_direction.sends and cap.direction.receives,
    )
    setup = offer.setup_of(index)
    if setup is None and "TCP" in proto.split("/"):
        setup = Setup.ACTIVE  # RFC 4145 §4: an offer without a=setup is active
    return _media_section(
        cap,
        proto=offered.proto,
        codecs=codecs,
        direction=direction,
        rtcp_mux=cap.rtcp_mux and offered.rtcp_mux,
        crypto=[crypto] if crypto else [],
        setup=None if setup is None else setup.answer(),
        connection_mode=offered.connection_mode,
        mid=offered.mid,
    )


def answer(
    offer: SessionDescription,
    caps: LocalCapabilities,
    *,
    previous: SessionDescription | None = None,
) -> SessionDescription:
    """Answer ``offer`` with ``caps`` (RFC 3264 §6).

    Each offered stream takes the first unused :class:`MediaCapabilities` of
    its media type; a stream with no such capability, an unsupported
    protocol, no common codec, unusable SRTP, a malformed attribute, or port
    0 in the offer is rejected with port 0. ``previous`` is this end's last
    description in the session (re-offers: §8, same session id, version
    incremented when the answer changed). An answer in which every stream is
    rejected is still an answer; a SIP UA may prefer 488 instead
    (:func:`has_accepted_media`).
    """
    media: list[MediaDescription] = []
    unused = list(caps.media)
    for index, offered in enumerate(offer.media):
        old = previous.media[index] if previous and index < len(previous.media) else None
        cap = next((c for c in unused if c.media.lower() == offered.media.lower()), None)
        answered = None
        if cap is not None and offered.port != 0:
            try:
                answered = _answer_stream(offer, index, cap, caps, old)
            except MalformedMessageError:
                answered = None  # this stream's attributes are unusable, not the others'
        if answered is None or cap is None:
            media.append(_rejected(offered))
        else:
            unused.remove(cap)
            media.append(answered)
    return _session(caps, media, previous)


def has_accepted_media(desc: SessionDescription) -> bool:
    """True when at least one stream has a non-zero port."""
    return any(m.port != 0 for m in desc.media)


# -- the outcome ----------------------------------------------------------------------


def _endpoint(host: str | None, port: int) -> Endpoint | None:
    if host is None:
        return None
    try:
        endpoint = Endpoint.of(host, port)
    except ValueError:
        return None  # a host name: the caller resolves remote_host
    return None if endpoint.ip.is_unspecified else endpoint


def _negotiated_codecs(local: MediaDescription, remote: MediaDescription) -> list[NegotiatedCodec]:
    """Codecs in the remote's order that we listed too, with both payload types."""
    local_maps = local.rtpmaps()
    remote_maps = remote.rtpmaps()
    local_codecs = [
        (pt, m) for pt in local.payload_types if (m := _offered_codec(pt, local_maps)) is not None
    ]
    fmtps = remote.fmtps()
    out: list[NegotiatedCodec] = []
    for pt in remote.payload_types:
        rmap = _offered_codec(pt, remote_maps)
        if rmap is None:
            continue
        match = next((lpt for lpt, lmap in local_codecs if lmap.same_codec(rmap)), None)
        if match is None:
            continue
        fmtp = fmtps.get(str(pt))
        out.append(
            NegotiatedCodec(
                name=rmap.encoding_name,
                clock_rate=rmap.clock_rate,
                channels=rmap.channels or 1,
                send_payload_type=pt,
                receive_payload_type=match,
                remote_fmtp=None if fmtp is None else fmtp.parameters,
            )
        )
    return out


def _negotiated_srtp(local: MediaDescription, remote: MediaDescription) -> SrtpKeys | None:
    remote_lines = remote.crypto()
    if not remote_lines:
        return None
    local_by_tag = {c.tag: c for c in local.crypto()}
    for theirs in remote_lines:
        ours = local_by_tag.get(theirs.tag)
        if ours is not None and ours.suite.upper() == theirs.suite.upper():
            return SrtpKeys(
                suite=theirs.suite,
                local_key_salt=ours.keys[0].key_salt,
                remote_key_salt=theirs.keys[0].key_salt,
                local_mki=ours.keys[0].mki,
                remote_mki=theirs.keys[0].mki,
            )
    if local_by_tag:
        raise MalformedMessageError(
            "a=crypto of the answer matches no offered tag and suite", error_code=UNUSABLE
        )
    return None


def _local_setup(
    local: SessionDescription, remote: SessionDescription, index: int, local_is_offerer: bool
) -> Setup | None:
    """Our connection role after RFC 4145 §4.1's exchange."""
    ours, theirs = local.setup_of(index), remote.setup_of(index)
    if ours is None or theirs is None:
        return None
    if local_is_offerer:
        return theirs.answer() if theirs is not Setup.ACTPASS else Setup.PASSIVE
    return ours


def negotiated_media(
    offer: SessionDescription,
    answer: SessionDescription,
    *,
    local_is_offerer: bool = True,
) -> tuple[NegotiatedStream, ...]:
    """What an offer and its answer agreed, per stream, from our end (RFC 3264 §5-6).

    Remote RTCP goes to the RTP endpoint under ``a=rtcp-mux`` on both sides
    (RFC 5761 §5.1.1), else to ``a=rtcp``'s port and address (RFC 3605), else
    to RTP port + 1 (RFC 3550 §11). We send each codec with the remote's
    payload type and receive it on ours. Raises
    :class:`MalformedMessageError` (488) if the answer has a different
    number of m-lines (RFC 3264 §6), an ``a=crypto`` that answers nothing,
    or an ``RTP/SAVP(F)`` stream without keys (RFC 4568 §7.1.3).
    """
    if len(answer.media) != len(offer.media):
        raise MalformedMessageError(
            f"answer has {len(answer.media)} m-lines for {len(offer.media)} offered",
            error_code=UNUSABLE,
        )
    local, remote = (offer, answer) if local_is_offerer else (answer, offer)
    streams = []
    for index, (lm, rm) in enumerate(zip(local.media, remote.media, strict=True)):
        if lm.port == 0 or rm.port == 0:
            streams.append(
                NegotiatedStream(index=index, media=lm.media, proto=lm.proto, accepted=False)
            )
            continue
        connection = remote.connection_of(index)
        host = None if connection is None or connection.is_unspecified else connection.address
        remote_direction = _effective_direction(remote, index)
        local_direction = local.direction_of(index)
        mux = lm.rtcp_mux and rm.rtcp_mux
        remote_rtp = _endpoint(host, rm.port)
        rtcp_attr = rm.rtcp
        if mux:
            remote_rtcp = remote_rtp
        elif rtcp_attr is not None:
            rtcp_host = host if rtcp_attr.address is None else rtcp_attr.address
            remote_rtcp = _endpoint(rtcp_host, rtcp_attr.port)
        else:
            remote_rtcp = _endpoint(host, rm.port + 1) if rm.port < 0xFFFF else None
        codecs = _negotiated_codecs(lm, rm)
        srtp = _negotiated_srtp(lm, rm)
        if srtp is None and rm.proto.upper() in SDES_PROTOS:
            raise MalformedMessageError(
                f"stream {index} is {rm.proto} without SRTP keys", error_code=UNUSABLE
            )
        streams.append(
            NegotiatedStream(
                index=index,
                media=lm.media,
                proto=rm.proto,
                accepted=True,
                mid=rm.mid or lm.mid,
                local_port=lm.port,
                remote_host=host,
                remote_rtp=remote_rtp,
                remote_rtcp=remote_rtcp,
                rtcp_mux=mux,
                codecs=tuple(codecs),
                codec=next((c for c in codecs if c.name.lower() not in AUXILIARY_ENCODINGS), None),
                telephone_event=next(
                    (c for c in codecs if c.name.lower() == "telephone-event"), None
                ),
                direction=Direction.of(
                    sends=local_direction.sends and remote_direction.receives,
                    receives=local_direction.receives and remote_direction.sends,
                ),
                remote_hold=not remote_direction.receives,
                srtp=srtp,
                remote_ptime=rm.ptime,
                local_setup=_local_setup(local, remote, index, local_is_offerer),
            )
        )
    return tuple(streams)
