"""The registrar: REGISTER processing (RFC 3261 §10.3, RFC 5626 §6, RFC 3327 §5.3, RFC 5627 §6).

Theory of operation
-------------------
:meth:`SipRegistrar.process` is a pure function of one REGISTER, the AoR's
current bindings and the current wall-clock time ``now``: it returns a
:class:`RegisterOutcome` with the response to send and the
:class:`BindingChanges` to write. It never touches the store: the driver
reads the AoR's bindings from the location service
(:mod:`natkit.sip.location`), calls :meth:`process`, and applies the changes
(:meth:`LocationService.update` does both atomically). Because the whole
request is evaluated before anything is written, a REGISTER is processed
completely or not at all (§10.3).

Binding expiry is **absolute wall-clock time** (Unix seconds from the
element's injected ``wallclock()``), not monotonic time: bindings are
written to a store that outlives the process and is shared by several
registrars and edge proxies, and only wall time means the same thing to all
of them after a restart. ``now`` here is therefore the wall clock, never a
timer base.

Authentication (§10.3 step 3) is not done here: the element runs the digest
server (:mod:`natkit.sip.digest`) first and passes the verified user name as
``authenticated_user`` (None when registration is open). Step 4
(authorization) is :attr:`RegistrarConfig.may_register`.

Bindings are keyed (RFC 5626 §6) by ``+sip.instance`` and ``reg-id`` when
outbound applies to the Contact (the registrar supports outbound, the
REGISTER says ``Supported: outbound`` and the Contact carries both), and by
the Contact URI (§10.3 step 7, URI comparison of §19.1.4) otherwise.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from natkit.errors import MalformedMessageError
from natkit.sip.flow import Source
from natkit.sip.gruu import GruuSigner
from natkit.sip.headers import (
    WILDCARD,
    NameAddr,
    parse_delta_seconds,
    parse_name_addr,
    parse_qvalue,
)
from natkit.sip.message import SipRequest, SipResponse, make_response, unsupported_options
from natkit.sip.uri import SipUri, Uri, parse_uri

__all__ = [
    "Binding",
    "BindingChanges",
    "RegisterOutcome",
    "RegistrarConfig",
    "SipRegistrar",
    "default_may_register",
    "sort_bindings",
    "source_text",
]

MAX_REG_ID = 2**31 - 1
ONE_HOUR = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One contact bound to an AoR (RFC 3261 §10, RFC 5626 §6, RFC 3327 §5.3).

    ``contact`` is the Contact as registered (name-addr text, ``<>`` always)
    without its ``expires`` param; its URI and every other param (``q``,
    ``+sip.instance``, ``reg-id``, unknown ones) are kept as sent.
    ``expires`` is the absolute wall time it expires at. ``source`` and
    ``flow`` say where the REGISTER came from (``"udp:192.0.2.1:5060"`` and
    the transport's flow id): opaque to the registrar, for the edge and home
    proxy and the NAT helpers. ``key`` identifies the binding within its AoR.
    """

    key: str
    contact: str
    expires: float
    call_id: str
    cseq: int
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = ()
    source: str | None = None
    flow: str | None = None
    user_agent: str | None = None

    @property
    def effective_q(self) -> float:
        """``q``, with an absent q counting as 1.0 (the usual reading of §16.6)."""
        return 1.0 if self.q is None else self.q

    def remaining(self, now: float) -> int:
        """Whole seconds left at wall time ``now`` (the ``expires`` a 200 lists)."""
        return max(0, math.ceil(self.expires - now))

    def uri(self) -> Uri:
        """The parsed Contact URI."""
        return parse_name_addr(self.contact).uri

    def to_json(self) -> list[Any]:
        """Compact form for the store: one JSON array, trailing defaults cut."""
        row: list[Any] = [
            self.key,
            self.contact,
            self.expires,
            self.call_id,
            self.cseq,
            self.q,
            self.instance,
            self.reg_id,
            list(self.path),
            self.source,
            self.flow,
            self.user_agent,
        ]
        while len(row) > 5 and row[-1] in (None, []):
            row.pop()
        return row

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Binding:
        """Inverse of :meth:`to_json`; ``ValueError`` if the row is not one."""
        if not isinstance(row, list | tuple) or len(row) < 5:
            raise ValueError("a stored binding is a list of at least 5 fields")
        padded = list(row) + [None] * (12 - len(row))
        key, contact, expires, call_id, cseq, q, instance, reg_id, path, source, flow, ua = padded[
            :12
        ]
        return cls(
            key=str(key),
            contact=str(contact),
            expires=float(expires),
            call_id=str(call_id),
            cseq=int(cseq),
            q=None if q is None else float(q),
            instance=None if instance is None else str(instance),
            reg_id=None if reg_id is None else int(reg_id),
            path=tuple(str(p) for p in (path or ())),
            source=None if source is None else str(source),
            flow=None if flow is None else str(flow),
            user_agent=None if ua is None else str(ua),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingChanges:
    """What one REGISTER changes: bindings to write (by key) and keys to delete."""

    upsert: tuple[Binding, ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.upsert or self.remove)

    def applied_to(self, current: Iterable[Binding]) -> tuple[Binding, ...]:
        """``current`` with the changes made, sorted by q (highest first)."""
        gone = set(self.remove) | {b.key for b in self.upsert}
        merged = [b for b in current if b.key not in gone]
        merged.extend(self.upsert)
        return sort_bindings(merged)


def sort_bindings(bindings: Iterable[Binding]) -> tuple[Binding, ...]:
    """Highest q first (RFC 3261 §16.6 step 1), then the most recently refreshed."""
    return tuple(sorted(bindings, key=lambda b: (-b.effective_q, -b.expires, b.key)))


def default_may_register(user: str, aor: SipUri) -> bool:
    """Step 4's default policy: a user registers only the AoR of their own name."""
    return aor.user == user


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarConfig:
    """Registrar policy. Expiry values are seconds (RFC 3261 §10.2.1.1, §10.3 step 7)."""

    domains: frozenset[str]
    """Domains served (lowercase host names): others get 404 (§10.3 steps 1, 5)."""
    default_expires: int = 3600
    """Interval granted when neither the Contact nor the Expires header asks."""
    min_expires: int = 60
    """Shorter non-zero requests (under an hour) get 423 with Min-Expires (§10.3 step 7)."""
    max_expires: int = 7200
    """Longer requests are shortened to this."""
    gruu_secrets: tuple[bytes, ...] = ()
    """Secrets for temporary GRUUs (the first signs); none: GRUU is not offered."""
    outbound: bool = True
    """RFC 5626 registrar support (reg-id bindings, 439, Require: outbound)."""
    path: bool = True
    """RFC 3327 support: Path stored and echoed. Off: ``Require: path`` gets 420
    and Path values are not stored (RFC 5626 §6 needs Path: off disables outbound)."""
    may_register: Callable[[str, SipUri], bool] = default_may_register
    """Authorization (§10.3 step 4): may this authenticated user register the AoR?"""
    date_header: bool = True
    """Add Date to the 200 (§10.3 step 8, optional)."""
    max_bindings: int = 32
    """Most bindings one AoR may hold; a REGISTER that would exceed it gets 403."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", frozenset(d.lower() for d in self.domains))
        if not 0 < self.min_expires <= self.max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if self.default_expires <= 0:
            raise ValueError("default_expires must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterOutcome:
    """The result of one REGISTER: the response, and what to write if it succeeded."""

    response: SipResponse
    aor: str | None = None
    changes: BindingChanges = field(default_factory=BindingChanges)
    bindings: tuple[Binding, ...] = ()
    """The AoR's bindings after the changes (a 2xx lists them)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.response.status < 300


class _Rejected(Exception):
    def __init__(self, status: int, reason: str | None = None, *headers: tuple[str, str]):
        super().__init__(reason or str(status))
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class _Requested:
    name_addr: NameAddr
    uri: Uri
    expires: int
    q: float | None
    instance: str | None
    reg_id: int | None
    key: str | None


class SipRegistrar:
    """Sans-IO REGISTER processing (RFC 3261 §10.3 steps 1, 2, 4-8)."""

    def __init__(self, config: RegistrarConfig) -> None:
        self.config = config
        self.gruu = GruuSigner(config.gruu_secrets) if config.gruu_secrets else None
        tags = ["path"] if config.path else []
        if config.outbound and config.path:
            tags.append("outbound")
        if self.gruu is not None:
            tags.append("gruu")
        self._supported = tuple(tags)
        self._supported_text = ", ".join(tags)

    @property
    def supported(self) -> tuple[str, ...]:
        """Option tags this registrar supports (Supported of its responses)."""
        return self._supported

    def process(
        self,
        request: SipRequest,
        current: Iterable[Binding],
        *,
        now: float,
        authenticated_user: str | None = None,
        source: Source | str | None = None,
        flow: str | None = None,
    ) -> RegisterOutcome:
        """Evaluate ``request`` against the AoR's ``current`` bindings at wall time
        ``now``. ``authenticated_user`` is the digest-verified user (None: no
        authentication configured). ``source`` is where the REGISTER came from
        (a :class:`~natkit.sip.flow.Source`, stored as ``"udp:192.0.2.1:5060"``
        with its flow id, or text and ``flow`` as given), kept with the new
        bindings for the edge/home proxy. Never raises for bad input: it
        becomes a 4xx/5xx outcome."""
        if isinstance(source, Source):
            flow = source.flow if flow is None else flow
            source = source_text(source)
        try:
            return self._process(request, tuple(current), now, authenticated_user, source, flow)
        except _Rejected as rejected:
            return RegisterOutcome(
                response=make_response(
                    request, rejected.status, rejected.reason, headers=rejected.headers
                )
            )
        except MalformedMessageError as exc:
            return RegisterOutcome(
                response=make_response(request, 400, f"Bad Request ({str(exc)[:80]})")
            )

    def aor_of(self, request: SipRequest) -> str | None:
        """The AoR key a REGISTER is about (step 5), or None if it cannot be one:
        what the driver reads from the location service before :meth:`process`."""
        try:
            uri = request.to.uri
        except MalformedMessageError:
            return None
        return uri.aor if isinstance(uri, SipUri) else None

    # -- the steps ---------------------------------------------------------------

    def _process(
        self,
        request: SipRequest,
        current: tuple[Binding, ...],
        now: float,
        authenticated_user: str | None,
        source: str | None,
        flow: str | None,
    ) -> RegisterOutcome:
        cfg = self.config
        if request.method != "REGISTER":
            raise _Rejected(405, None, ("Allow", "REGISTER"))
        # Step 1: the Request-URI names a domain we serve.
        ruri = request.uri
        if not isinstance(ruri, SipUri) or ruri.host.lower() not in cfg.domains:
            raise _Rejected(404, "Domain Not Served")
        # Step 2: Require (§8.2.2.3).
        unsupported = unsupported_options(request, self.supported)
        if unsupported:
            raise _Rejected(420, None, ("Unsupported", ", ".join(unsupported)))
        # Step 5 (before 4: authorization needs the AoR): the AoR from To.
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            raise _Rejected(404, "Not Found (AoR is not a SIP URI)")
        if to_uri.host.lower() not in cfg.domains:
            raise _Rejected(404, "Not Found (AoR of another domain)")
        aor_uri = to_uri.replace(params=(), headers=(), password=None)
        aor = to_uri.aor
        # Step 4: authorization.
        if authenticated_user is not None and not cfg.may_register(authenticated_user, aor_uri):
            raise _Rejected(403, "Forbidden (not your AoR)")
        call_id = request.call_id
        cseq = request.cseq.seq
        supported = {tag.lower() for tag in request.headers.values("Supported")}
        paths = tuple(str(p) for p in request.name_addrs("Path")) if cfg.path else ()
        expires_header = self._expires_header(request)
        live = [b for b in current if b.expires > now]
        expired_keys = tuple(b.key for b in current if b.expires <= now)
        contacts = request.contacts

        # Step 6: the wildcard.
        if contacts == WILDCARD:
            if expires_header != 0:
                raise _Rejected(400, "Bad Request (Contact: * needs Expires: 0)")
            for binding in live:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise _Rejected(500, "Server Internal Error (stale CSeq)")
            changes = BindingChanges(remove=expired_keys + tuple(b.key for b in live))
            return self._ok(request, aor, aor_uri, changes, (), now, supported, paths, False)

        # Step 7: each Contact.
        requested = [
            self._requested(c, expires_header, supported, paths, aor_uri) for c in contacts
        ]
        if sum(1 for r in requested if r.reg_id is not None) > 1:
            raise _Rejected(400, "Bad Request (more than one Contact with reg-id)")
        outbound_applied = any(r.key is not None for r in requested)
        working = {b.key: b for b in live}
        remove: list[str] = list(expired_keys)
        upsert: dict[str, Binding] = {}
        for req in requested:
            existing = self._match(req, working.values())
            if existing is not None:
                fresh = existing.key in upsert  # the same contact twice: the last one wins
                if not fresh and existing.call_id == call_id and cseq <= existing.cseq:
                    raise _Rejected(500, "Server Internal Error (stale CSeq)")
                del working[existing.key]
                upsert.pop(existing.key, None)
                remove.append(existing.key)
            if req.expires == 0:
                continue
            binding = Binding(
                key=req.key if req.key is not None else f"u:{req.uri}",
                contact=str(req.name_addr.without_params("expires")),
                expires=now + req.expires,
                call_id=call_id,
                cseq=cseq,
                q=req.q,
                instance=req.instance,
                reg_id=req.reg_id,
                path=paths,
                source=source,
                flow=flow,
                user_agent=request.headers.get("User-Agent"),
            )
            working[binding.key] = binding
            upsert[binding.key] = binding
        if len(working) > cfg.max_bindings:
            raise _Rejected(403, f"Forbidden (more than {cfg.max_bindings} bindings)")
        removed = tuple(k for k in dict.fromkeys(remove) if k not in upsert)
        changes = BindingChanges(upsert=tuple(upsert.values()), remove=removed)
        after = sort_bindings(working.values())
        return self._ok(
            request, aor, aor_uri, changes, after, now, supported, paths, outbound_applied
        )

    @staticmethod
    def _expires_header(request: SipRequest) -> int | None:
        value = request.headers.get("Expires")
        if value is None:
            return None
        seconds = parse_delta_seconds(value, what="Expires")
        if seconds is None:  # beyond 2**32-1: treated as absent (RFC 4475 §3.1.2.4)
            return None
        return seconds

    def _requested(
        self,
        contact: NameAddr,
        expires_header: int | None,
        supported: set[str],
        paths: tuple[str, ...],
        aor_uri: SipUri,
    ) -> _Requested:
        cfg = self.config
        expires: int | None = None
        if contact.has_param("expires"):
            raw = contact.param("expires")
            if raw is None:
                raise _Rejected(400, "Bad Request (Contact expires without value)")
            expires = parse_delta_seconds(raw, what="Contact expires")
        if expires is None:
            expires = expires_header
        if expires is None:
            expires = cfg.default_expires
        if 0 < expires < min(cfg.min_expires, ONE_HOUR):
            raise _Rejected(423, None, ("Min-Expires", str(cfg.min_expires)))
        expires = min(expires, cfg.max_expires)
        q: float | None = None
        if contact.has_param("q"):
            raw_q = contact.param("q")
            if raw_q is None:
                raise _Rejected(400, "Bad Request (q without value)")
            q = parse_qvalue(raw_q)
        instance = contact.param("+sip.instance")
        reg_id: int | None = None
        raw_reg_id = contact.param("reg-id")
        if contact.has_param("reg-id"):
            if raw_reg_id is None or not raw_reg_id.isdigit() or len(raw_reg_id) > 10:
                raise _Rejected(400, "Bad Request (bad reg-id)")
            reg_id = int(raw_reg_id)
            if not 1 <= reg_id <= MAX_REG_ID:
                raise _Rejected(400, "Bad Request (bad reg-id)")
        uri = contact.uri
        if isinstance(uri, SipUri) and uri.has_param("gr") and self._is_our_gruu(uri):
            # RFC 5627 §6: a GRUU is never a registrable contact.
            raise _Rejected(403, "Forbidden (Contact is a GRUU)")
        key: str | None = None
        outbound = cfg.outbound and cfg.path
        if reg_id is not None and instance is not None and outbound and "outbound" in supported:
            if expires != 0 and paths and not _first_hop_supports_outbound(paths):
                raise _Rejected(439, "First Hop Lacks Outbound Support")
            key = f"i:{instance}:{reg_id}"
        else:
            # RFC 5626 §6: without outbound the reg-id is ignored (RFC 3261 rules).
            reg_id = None
        return _Requested(contact, uri, expires, q, instance, reg_id, key)

    def _is_our_gruu(self, uri: SipUri) -> bool:
        if uri.host.lower() not in self.config.domains:
            return False
        if uri.param("gr"):
            return True
        return self.gruu is not None and self.gruu.resolve(uri) is not None

    @staticmethod
    def _match(req: _Requested, bindings: Iterable[Binding]) -> Binding | None:
        for binding in bindings:
            if req.key is not None:
                if binding.key == req.key:
                    return binding
                continue
            if binding.key.startswith("u:"):
                try:
                    if req.uri.equivalent(parse_uri(binding.key[2:])):
                        return binding
                except MalformedMessageError:
                    continue
        return None

    def _ok(
        self,
        request: SipRequest,
        aor: str,
        aor_uri: SipUri,
        changes: BindingChanges,
        bindings: tuple[Binding, ...],
        now: float,
        supported: set[str],
        paths: tuple[str, ...],
        outbound_applied: bool,
    ) -> RegisterOutcome:
        headers: list[tuple[str, str]] = []
        offer_gruu = self.gruu is not None and "gruu" in supported
        for binding in bindings:
            text = f"{binding.contact};expires={binding.remaining(now)}"
            if offer_gruu and binding.instance is not None and self.gruu is not None:
                pub = self.gruu.public(aor_uri, binding.instance)
                temp = self.gruu.temporary(aor_uri, binding.instance, binding.call_id, now=now)
                # A serialized SIP URI holds no '"' or '\\' (they are %-escaped):
                # quoting needs no quoted-pairs.
                text += f';pub-gruu="{pub}";temp-gruu="{temp}"'
            headers.append(("Contact", text))
        if paths and "path" in supported:
            # RFC 3327 §5.3: echo the stored Path only to a UA that supports it.
            headers.extend(("Path", p) for p in paths)
        if outbound_applied:
            headers.append(("Require", "outbound"))
        headers.append(("Supported", self._supported_text))
        if self.config.date_header:
            headers.append(("Date", email.utils.formatdate(now, usegmt=True)))
        return RegisterOutcome(
            response=make_response(request, 200, headers=headers),
            aor=aor,
            changes=changes,
            bindings=bindings,
        )


def source_text(source: Source) -> str:
    """How a binding records where its REGISTER came from: ``transport:host:port``
    (IPv6 hosts in brackets)."""
    return f"{source.transport.value}:{source.remote}"


def _first_hop_supports_outbound(paths: Sequence[str]) -> bool:
    """RFC 5626 §6: the edge proxy nearest the UA (the last Path value, each
    proxy prepends its own) put ``ob`` in its Path URI."""
    try:
        uri = parse_name_addr(paths[-1]).uri
    except MalformedMessageError:
        return False
    return isinstance(uri, SipUri) and uri.has_param("ob")
