"""The SDP grammar of ICE (RFC 8839 §5; RFC 6544 §4.5 ``tcptype``), sans-IO.

Theory of operation
-------------------
An offer or answer carries ICE in a handful of attribute lines: one
``a=candidate`` per candidate (§5.1), the short-term credentials
``a=ice-ufrag`` and ``a=ice-pwd`` (§5.4), ``a=ice-options`` (§5.6: trickle,
ice2, ...), ``a=ice-lite`` (§5.3), ``a=ice-mismatch`` (§5.2),
``a=remote-candidates`` (§5.2), ``a=ice-pacing`` (§5.5) and, from trickle
ICE, ``a=end-of-candidates`` (RFC 8840 §8.2).

:func:`parse_candidate` turns one candidate line into a
:class:`CandidateLine`: the attribute exactly as the peer wrote it, with the
connection address kept as *text*, because browsers hide their host
addresses behind random ``<uuid>.local`` mDNS names
(draft-ietf-mmusic-mdns-ice-candidates) that only a resolver can turn into an
IP. :meth:`CandidateLine.to_candidate` builds the agent's
:class:`~natkit.ice.candidate.Candidate` once the address is an IP (given,
or resolved and passed in); :attr:`CandidateLine.is_mdns` says whether it
must be resolved first.

What real peers send is accepted: the ``a=`` prefix or none, ``UDP``/``udp``
(transport names are case-insensitive, §5.1), runs of spaces and trailing
whitespace or CR, a host candidate without ``raddr``, ``raddr``/``rport``/
``tcptype`` anywhere among the extensions, Chrome's ``generation 0
network-id 1 network-cost 10 ufrag ...`` (kept, in order, as extension
pairs, so a line survives a round trip). What would hurt the agent is
refused with :class:`~natkit.errors.MalformedMessageError`: a component
outside 1-256, a priority outside 1..2^31-1, a port outside 0-65535, a
foundation that is not 1-32 ice-chars, an address that is neither an IP nor
a host name, an unknown candidate type (§5.1: "MUST ignore" - the caller
drops the line), a transport other than UDP or TCP, a dangling extension
name. :func:`parse_ice_description` applies this per line and collects the
refused lines in :attr:`IceDescription.rejected` instead of failing the
whole description.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable

from natkit.addr import Endpoint, Transport, canonical_ip
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.ice.candidate import MAX_PRIORITY, Candidate, CandidateType

__all__ = [
    "MAX_LINE_LENGTH",
    "CandidateLine",
    "IceDescription",
    "RemoteCandidate",
    "TcpType",
    "parse_candidate",
    "parse_ice_description",
    "parse_ice_options",
    "parse_remote_candidates",
    "serialize_candidate",
    "serialize_ice_description",
    "validate_pwd",
    "validate_ufrag",
]

MAX_LINE_LENGTH = 4096  # a candidate line is ~100 bytes; anything near this is an attack
_MAX_EXTENSIONS = 64
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # ice-char, RFC 8839 §5.1
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # token, RFC 8866 §9
_VCHARS = re.compile(r"[\x21-\x7e]+")  # extension-att-value = *VCHAR
_DIGITS = re.compile(r"[0-9]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_KNOWN_NAMES = frozenset({"raddr", "rport", "tcptype"})
_TRANSPORTS = {"udp": Transport.UDP, "tcp": Transport.TCP}
_TYPES = {t.value: t for t in CandidateType}


class TcpType(enum.StrEnum):
    """RFC 6544 §4.5: the role of a TCP candidate."""

    ACTIVE = "active"
    PASSIVE = "passive"
    SIMULTANEOUS_OPEN = "so"


def _malformed(why: str) -> MalformedMessageError:
    return MalformedMessageError(why, error_code=None)


def _number(text: str, what: str, low: int, high: int, max_digits: int) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > max_digits:
        raise _malformed(f"{what} is not a number of at most {max_digits} digits: {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise _malformed(f"{what} out of range {low}-{high}: {value}")
    return value


def _address(text: str, what: str) -> str:
    """An IP literal (canonical form) or a host name (FQDN, mDNS ``.local``)."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" not in bare:
        try:
            return canonical_ip(bare)
        except ValueError:
            pass
    if (
        len(text) <= 253
        and _HOSTNAME.fullmatch(text)
        and not _DIGITS.fullmatch(text.rstrip(".").rpartition(".")[2])  # RFC 1123 §2.1
    ):
        return text
    raise _malformed(f"{what} is neither an IP address nor a host name: {text!r}")


def _is_ip(text: str) -> bool:
    try:
        canonical_ip(text)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CandidateLine:
    """One ``a=candidate`` attribute (RFC 8839 §5.1) as the peer wrote it.

    ``address`` and ``related_address`` are IP literals in canonical form or
    host names (``.local`` mDNS names from browsers, rarely an FQDN): nothing
    is resolved here. ``extensions`` keeps every other name/value pair in
    order (Chrome's ``generation``, ``network-id``, ``network-cost``,
    ``ufrag``).
    """

    foundation: str
    component: int
    transport: Transport
    priority: int
    address: str
    port: int
    type: CandidateType
    related_address: str | None = None
    related_port: int | None = None
    tcp_type: TcpType | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def is_fqdn(self) -> bool:
        """The address is a name, not an IP: it must be resolved before use."""
        return not _is_ip(self.address)

    @property
    def is_mdns(self) -> bool:
        """The address is an mDNS name (RFC 6762 ``.local``): resolve it with
        multicast DNS, never with the unicast resolver."""
        return self.address.rstrip(".").lower().endswith(".local")

    def extension(self, name: str) -> str | None:
        """The value of the first extension called ``name`` (e.g. ``generation``)."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None

    def to_candidate(self, *, resolved_address: str | None = None) -> Candidate:
        """The agent's :class:`Candidate` for this line (RFC 8445 §5.1).

        A named address needs ``resolved_address`` (the IP the mDNS or DNS
        lookup gave); raises :class:`LocalProtocolError` without one. A
        related address that is a name, or has no port, is left out: it is
        informational only (RFC 8445 §5.1.1.1).
        """
        host = self.address
        if resolved_address is not None:
            host = canonical_ip(resolved_address)
        elif self.is_fqdn:
            raise LocalProtocolError(f"candidate address {self.address!r} must be resolved first")
        related: Endpoint | None = None
        if (
            self.related_address is not None
            and self.related_port is not None
            and _is_ip(self.related_address)
        ):
            related = Endpoint(self.related_address, self.related_port)
        return Candidate(
            foundation=self.foundation,
            component=self.component,
            transport=self.transport,
            priority=self.priority,
            address=Endpoint(host, self.port),
            type=self.type,
            related=related,
            tcp_type=None if self.tcp_type is None else self.tcp_type.value,
            extensions=self.extensions,
        )

    @classmethod
    def from_candidate(
        cls,
        candidate: Candidate,
        *,
        mdns_name: str | None = None,
        hide_related: bool = False,
    ) -> CandidateLine:
        """The SDP form of a (local) candidate.

        ``mdns_name`` replaces the address (a host candidate published as
        ``<uuid>.local``); ``hide_related`` writes the related address as
        the unspecified address and port 0, so that a reflexive candidate
        does not reveal the host address the mDNS name hides.
        """
        related_address: str | None = None
        related_port: int | None = None
        if candidate.related is not None:
            related_address, related_port = candidate.related
            if hide_related:
                related_address = "::" if ":" in related_address else "0.0.0.0"
                related_port = 0
        tcp_type = TcpType(candidate.tcp_type) if candidate.tcp_type is not None else None
        return cls(
            foundation=candidate.foundation,
            component=candidate.component,
            transport=candidate.transport,
            priority=candidate.priority,
            address=mdns_name if mdns_name is not None else candidate.address.host,
            port=candidate.address.port,
            type=candidate.type,
            related_address=related_address,
            related_port=related_port,
            tcp_type=tcp_type,
            extensions=candidate.extensions,
        )


def parse_candidate(line: str) -> CandidateLine:
    """Parse ``a=candidate:...`` per RFC 8839 §5.1; ``candidate:...`` (a
    WebRTC candidate string) and the bare value (aioice's ``to_sdp()``) too.

    Raises :class:`MalformedMessageError` (``error_code=None``: ignore the
    line) for anything the grammar or the ranges refuse.
    """
    text = line.strip()
    if len(text) > MAX_LINE_LENGTH:
        raise _malformed("candidate line too long")
    if text[:2].lower() == "a=":
        text = text[2:]
    if text[:10].lower() == "candidate:":
        text = text[10:]
    fields = text.split()
    if len(fields) < 8:
        raise _malformed(
            "a candidate needs foundation, component, transport, priority, address, port and typ"
        )
    foundation, component, transport, priority, address, port, typ, type_name = fields[:8]
    if not 1 <= len(foundation) <= 32 or not _ICE_CHARS.fullmatch(foundation):
        raise _malformed(f"foundation must be 1-32 ice-chars: {foundation!r}")
    kind = _TRANSPORTS.get(transport.lower())
    if kind is None:
        raise _malformed(f"unsupported candidate transport: {transport!r}")
    if typ.lower() != "typ":
        raise _malformed(f"expected 'typ', got {typ!r}")
    cand_type = _TYPES.get(type_name.lower())
    if cand_type is None:
        raise _malformed(f"unknown candidate type: {type_name!r}")
    rest = fields[8:]
    if len(rest) % 2:
        raise _malformed(f"extension {rest[-1]!r} has no value")
    if len(rest) // 2 > _MAX_EXTENSIONS:
        raise _malformed("too many candidate extensions")
    related_address: str | None = None
    related_port: int | None = None
    tcp_type: TcpType | None = None
    extensions: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        lowered = name.lower()
        if lowered in _KNOWN_NAMES:
            if lowered in seen:
                raise _malformed(f"{lowered} given twice")
            seen.add(lowered)
            if lowered == "raddr":
                related_address = _address(value, "raddr")
            elif lowered == "rport":
                related_port = _number(value, "rport", 0, 0xFFFF, 5)
            else:
                try:
                    tcp_type = TcpType(value.lower())
                except ValueError:
                    raise _malformed(f"unknown tcptype: {value!r}") from None
            continue
        if not _TOKEN.fullmatch(name) or not _VCHARS.fullmatch(value):
            raise _malformed(f"bad candidate extension {name!r} {value!r}")
        extensions.append((name, value))
    return CandidateLine(
        foundation=foundation,
        component=_number(component, "component ID", 1, 256, 3),
        transport=kind,
        priority=_number(priority, "priority", 1, MAX_PRIORITY, 10),
        address=_address(address, "connection address"),
        port=_number(port, "port", 0, 0xFFFF, 5),
        type=cand_type,
        related_address=related_address,
        related_port=related_port,
        tcp_type=tcp_type,
        extensions=tuple(extensions),
    )


def serialize_candidate(candidate: CandidateLine | Candidate, *, prefix: bool = True) -> str:
    """The attribute line (``a=candidate:...``; without ``a=`` when
    ``prefix`` is false, as trickle ICE and WebRTC's ``candidate`` strings
    carry it). Transport in upper case, as RFC 8839's examples write it."""
    line = (
        candidate
        if isinstance(candidate, CandidateLine)
        else CandidateLine.from_candidate(candidate)
    )
    parts = [
        f"candidate:{line.foundation}",
        str(line.component),
        line.transport.value.upper(),
        str(line.priority),
        line.address,
        str(line.port),
        "typ",
        line.type.value,
    ]
    if line.related_address is not None:
        parts += ["raddr", line.related_address]
    if line.related_port is not None:
        parts += ["rport", str(line.related_port)]
    if line.tcp_type is not None:
        parts += ["tcptype", line.tcp_type.value]
    for name, value in line.extensions:
        parts += [name, value]
    text = " ".join(parts)
    return f"a={text}" if prefix else text


def validate_ufrag(value: str) -> str:
    """RFC 8839 §5.4: ice-ufrag is 4-256 ice-chars; returns it or raises."""
    if not 4 <= len(value) <= 256 or not _ICE_CHARS.fullmatch(value):
        raise _malformed(f"ice-ufrag must be 4-256 ice-chars, got {len(value)} characters")
    return value


def validate_pwd(value: str) -> str:
    """RFC 8839 §5.4: ice-pwd is 22-256 ice-chars; returns it or raises."""
    if not 22 <= len(value) <= 256 or not _ICE_CHARS.fullmatch(value):
        raise _malformed(f"ice-pwd must be 22-256 ice-chars, got {len(value)} characters")
    return value


def parse_ice_options(value: str) -> tuple[str, ...]:
    """RFC 8839 §5.6: space-separated option tags (``trickle``, ``ice2``).

    Tags are accepted as SDP tokens (slightly wider than ice-char: peers
    send ``google-ice``); at least one is needed."""
    tags = tuple(value.split())
    if not tags or len(tags) > _MAX_EXTENSIONS:
        raise _malformed("ice-options needs 1 to 64 option tags")
    for tag in tags:
        if not _TOKEN.fullmatch(tag):
            raise _malformed(f"bad ice-option tag {tag!r}")
    return tags


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteCandidate:
    """One entry of ``a=remote-candidates`` (RFC 8839 §5.2): the candidate
    the controlling agent selected for ``component``."""

    component: int
    address: str
    port: int


def parse_remote_candidates(value: str) -> tuple[RemoteCandidate, ...]:
    """RFC 8839 §5.2: ``component address port`` triples."""
    fields = value.split()
    if not fields or len(fields) % 3 or len(fields) > 3 * 256:
        raise _malformed("remote-candidates needs component, address, port triples")
    return tuple(
        RemoteCandidate(
            component=_number(fields[i], "component ID", 1, 256, 3),
            address=_address(fields[i + 1], "remote candidate address"),
            port=_number(fields[i + 2], "port", 0, 0xFFFF, 5),
        )
        for i in range(0, len(fields), 3)
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IceDescription:
    """The ICE attributes of one SDP section (session or media level)."""

    ufrag: str | None = None
    pwd: str | None = None
    options: tuple[str, ...] = ()
    lite: bool = False
    mismatch: bool = False
    end_of_candidates: bool = False
    pacing: int | None = None  # ms, RFC 8839 §5.5
    candidates: tuple[CandidateLine, ...] = ()
    remote_candidates: tuple[RemoteCandidate, ...] = ()
    rejected: tuple[str, ...] = ()  # ICE lines refused by the grammar, as received

    @property
    def trickle(self) -> bool:
        """The peer announced trickle ICE (RFC 8840 §4.1.1: ``ice-options:trickle``)."""
        return "trickle" in self.options


def parse_ice_description(
    lines: Iterable[str], *, session: IceDescription | None = None
) -> IceDescription:
    """Collect the ICE attributes among ``lines`` (one SDP section; other
    lines are skipped). Values given only at session level (``session``:
    ufrag, pwd, options, lite, pacing; RFC 8839 §5.3-5.6) are inherited.

    A line the grammar refuses is recorded in ``rejected`` and otherwise
    ignored; a second ufrag/pwd is refused the same way."""
    ufrag: str | None = None
    pwd: str | None = None
    lite = mismatch = end = False
    pacing: int | None = None
    candidates: list[CandidateLine] = []
    remote: tuple[RemoteCandidate, ...] = ()
    rejected: list[str] = []
    options: list[str] = []
    for raw in lines:
        text = raw.strip()
        if text[:2].lower() == "a=":
            text = text[2:]
        name, _, value = text.partition(":")
        name = name.strip().lower()
        value = value.strip()
        try:
            if name == "candidate":
                candidates.append(parse_candidate(text))
            elif name == "ice-ufrag":
                if ufrag is not None:
                    raise _malformed("ice-ufrag given twice")
                ufrag = validate_ufrag(value)
            elif name == "ice-pwd":
                if pwd is not None:
                    raise _malformed("ice-pwd given twice")
                pwd = validate_pwd(value)
            elif name == "ice-options":
                options.extend(parse_ice_options(value))
            elif name == "ice-lite":
                lite = True
            elif name == "ice-mismatch":
                mismatch = True
            elif name == "end-of-candidates":
                end = True
            elif name == "ice-pacing":
                pacing = _number(value, "ice-pacing", 1, 2**32 - 1, 10)
            elif name == "remote-candidates":
                remote = parse_remote_candidates(value)
        except MalformedMessageError:
            rejected.append(raw[:MAX_LINE_LENGTH])
    if session is not None:
        ufrag = ufrag if ufrag is not None else session.ufrag
        pwd = pwd if pwd is not None else session.pwd
        options = options or list(session.options)
        lite = lite or session.lite
        pacing = pacing if pacing is not None else session.pacing
    return IceDescription(
        ufrag=ufrag,
        pwd=pwd,
        options=tuple(dict.fromkeys(options)),
        lite=lite,
        mismatch=mismatch,
        end_of_candidates=end,
        pacing=pacing,
        candidates=tuple(candidates),
        remote_candidates=remote,
        rejected=tuple(rejected),
    )


def serialize_ice_description(description: IceDescription) -> list[str]:
    """The ``a=`` lines for ``description`` (without line endings), in the
    order RFC 8839's examples use: lite, options, pacing, credentials,
    mismatch, candidates, remote-candidates, end-of-candidates."""
    d = description
    out: list[str] = []
    if d.lite:
        out.append("a=ice-lite")
    if d.options:
        out.append("a=ice-options:" + " ".join(d.options))
    if d.pacing is not None:
        out.append(f"a=ice-pacing:{d.pacing}")
    if d.ufrag is not None:
        out.append(f"a=ice-ufrag:{validate_ufrag(d.ufrag)}")
    if d.pwd is not None:
        out.append(f"a=ice-pwd:{validate_pwd(d.pwd)}")
    if d.mismatch:
        out.append("a=ice-mismatch")
    out.extend(serialize_candidate(c) for c in d.candidates)
    if d.remote_candidates:
        triples = " ".join(f"{r.component} {r.address} {r.port}" for r in d.remote_candidates)
        out.append(f"a=remote-candidates:{triples}")
    if d.end_of_candidates:
        out.append("a=end-of-candidates")
    return out
