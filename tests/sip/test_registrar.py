"""REGISTER processing (RFC 3261 §10.3, RFC 5626 §6, RFC 3327 §5.3, RFC 5627),
sans-IO: explicit wall time ``now``, bindings passed in and out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.sip.flow import SipTransport, Source
from natkit.sip.gruu import GruuSigner
from natkit.sip.headers import parse_name_addr
from natkit.sip.message import SipRequest, parse_message
from natkit.sip.registrar import (
    Binding,
    BindingChanges,
    RegisterOutcome,
    RegistrarConfig,
    SipRegistrar,
)
from natkit.sip.uri import SipUri, parse_uri

NOW = 1_700_000_000.0
TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip_torture"
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
SECRET = b"gruu-secret-for-tests"


def registrar(**changes: object) -> SipRegistrar:
    options: dict[str, object] = {
        "domains": frozenset({"example.com"}),
        "gruu_secrets": (SECRET,),
        "date_header": False,
    }
    options.update(changes)
    return SipRegistrar(RegistrarConfig(**options))  # type: ignore[arg-type]


def register(
    *contacts: str,
    expires: int | None = None,
    call_id: str = "call-1@ua",
    cseq: int = 1,
    to: str = "sip:alice@example.com",
    ruri: str = "sip:example.com",
    extra: tuple[str, ...] = (),
) -> SipRequest:
    lines = [
        f"REGISTER {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg1",
        "Max-Forwards: 70",
        f"From: <{to}>;tag=ft1",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *(() if expires is None else (f"Expires: {expires}",)),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, SipRequest)
    return msg


def apply(
    reg: SipRegistrar,
    request: SipRequest,
    current: tuple[Binding, ...] = (),
    *,
    now: float = NOW,
    source: Source | str | None = None,
    flow: str | None = None,
) -> tuple[RegisterOutcome, tuple[Binding, ...]]:
    """Process ``request`` and return the outcome and the bindings after it."""
    outcome = reg.process(request, current, now=now, source=source, flow=flow)
    return outcome, outcome.changes.applied_to(current)


def response_contacts(outcome: RegisterOutcome) -> list[str]:
    return outcome.response.headers.values("Contact")


# -- adding, refreshing, removing ------------------------------------------------


def test_a_new_contact_is_bound_with_the_default_expiry() -> None:
    outcome, after = apply(registrar(), register("<sip:alice@192.0.2.10:5060>"))
    assert outcome.response.status == 200
    assert outcome.aor == "sip:alice@example.com"
    (binding,) = after
    assert binding.contact == "<sip:alice@192.0.2.10:5060>"
    assert binding.expires == NOW + 3600
    assert (binding.call_id, binding.cseq) == ("call-1@ua", 1)
    assert response_contacts(outcome) == ["<sip:alice@192.0.2.10:5060>;expires=3600"]


@pytest.mark.parametrize(
    ("contact", "header", "granted"),
    [
        pytest.param("<sip:a@h>", None, 3600, id="default"),
        pytest.param("<sip:a@h>", 600, 600, id="expires-header"),
        pytest.param("<sip:a@h>;expires=120", 600, 120, id="param-overrides-header"),
        pytest.param("<sip:a@h>", 100000, 7200, id="shortened-to-max"),
        pytest.param("<sip:a@h>;expires=3600", None, 3600, id="an-hour-is-never-too-brief"),
        pytest.param("<sip:a@h>", 4294967296, 3600, id="huge-expires-is-absent"),
    ],
)
def test_expiry_rules(contact: str, header: int | None, granted: int) -> None:
    outcome, after = apply(registrar(), register(contact, expires=header))
    assert outcome.response.status == 200
    assert after[0].expires == NOW + granted


def test_too_brief_is_423_with_min_expires_and_changes_nothing() -> None:
    outcome, after = apply(registrar(), register("<sip:a@h>;expires=30"))
    assert outcome.response.status == 423
    assert outcome.response.headers.get("Min-Expires") == "60"
    assert not outcome.changes and after == ()


def test_min_expires_above_an_hour_still_accepts_an_hour() -> None:
    reg = registrar(min_expires=7200, max_expires=7200)
    assert apply(reg, register("<sip:a@h>", expires=3600))[0].response.status == 200
    assert apply(reg, register("<sip:a@h>", expires=3599))[0].response.status == 423


def test_refresh_replaces_the_binding_with_a_higher_cseq() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@192.0.2.10>"))
    outcome, after2 = apply(reg, register("<sip:a@192.0.2.10>", cseq=2, expires=60), after,
                            now=NOW + 100)  # fmt: skip
    assert outcome.response.status == 200
    (binding,) = after2
    assert binding.expires == NOW + 160 and binding.cseq == 2


def test_refresh_matches_by_uri_comparison_not_text() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@Host.Example.com;transport=TCP>"))
    _, after2 = apply(reg, register("<sip:a@host.example.com;transport=tcp>", cseq=2), after)
    assert len(after2) == 1 and after2[0].cseq == 2


@pytest.mark.parametrize("cseq", [pytest.param(1, id="equal"), pytest.param(0, id="lower")])
def test_same_call_id_with_old_cseq_fails_atomically(cseq: int) -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>", cseq=1))
    outcome, after2 = apply(reg, register("<sip:b@h2>", "<sip:a@h1>", cseq=cseq), after)
    assert outcome.response.status == 500
    assert not outcome.changes and after2 == after


def test_another_call_id_may_update_with_any_cseq() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>", cseq=50))
    outcome, after2 = apply(reg, register("<sip:a@h1>", cseq=1, call_id="rebooted"), after)
    assert outcome.response.status == 200
    assert after2[0].call_id == "rebooted"


def test_expires_zero_removes_one_binding() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>", "<sip:a@h2>"))
    outcome, after2 = apply(reg, register("<sip:a@h1>;expires=0", cseq=2), after)
    assert outcome.response.status == 200
    assert [b.contact for b in after2] == ["<sip:a@h2>"]
    assert response_contacts(outcome) == ["<sip:a@h2>;expires=3600"]


def test_a_query_without_contact_lists_the_bindings_and_changes_nothing() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>"))
    outcome, after2 = apply(reg, register(cseq=2), after, now=NOW + 600)
    assert not outcome.changes and after2 == after
    assert response_contacts(outcome) == ["<sip:a@h1>;expires=3000"]


def test_expired_bindings_are_removed_and_not_listed() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>;expires=60"))
    outcome, after2 = apply(reg, register("<sip:a@h2>", cseq=2), after, now=NOW + 61)
    assert after[0].key in outcome.changes.remove
    assert [b.contact for b in after2] == ["<sip:a@h2>"]


# -- wildcard (§10.3 step 6) -------------------------------------------------------


@pytest.mark.parametrize(
    ("contacts", "expires", "status"),
    [
        pytest.param(("*",), 0, 200, id="wildcard-expires-0"),
        pytest.param(("*",), None, 400, id="wildcard-without-expires"),
        pytest.param(("*",), 60, 400, id="wildcard-expires-60"),
    ],
)
def test_wildcard(contacts: tuple[str, ...], expires: int | None, status: int) -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>", "<sip:a@h2>", call_id="other"))
    outcome, after2 = apply(reg, register(*contacts, expires=expires, cseq=5), after)
    assert outcome.response.status == status
    assert after2 == (() if status == 200 else after)
    if status == 200:
        assert response_contacts(outcome) == []


def test_wildcard_with_stale_cseq_of_the_same_call_id_fails() -> None:
    reg = registrar()
    _, after = apply(reg, register("<sip:a@h1>", cseq=9))
    outcome, _ = apply(reg, register("*", expires=0, cseq=9), after)
    assert outcome.response.status == 500


# -- q ordering --------------------------------------------------------------------


def test_bindings_are_listed_by_q_highest_first() -> None:
    outcome, after = apply(
        registrar(), register("<sip:a@low>;q=0.1", "<sip:a@none>", "<sip:a@mid>;q=0.5")
    )
    assert [b.contact.split(">")[0] for b in after] == ["<sip:a@none", "<sip:a@mid", "<sip:a@low"]
    assert after[1].q == 0.5 and after[0].q is None
    assert response_contacts(outcome)[1] == "<sip:a@mid>;q=0.5;expires=3600"


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(register("<sip:a@h>;q=2"), 400, id="bad-q"),
        pytest.param(register("<sip:a@h>;expires=soon"), 400, id="bad-contact-expires"),
        pytest.param(register("<sip:a@h>", extra=("Expires: never",)), 400, id="bad-expires"),
        pytest.param(register("<sip:a@h>", ruri="sip:other.org"), 404, id="domain-not-served"),
        pytest.param(
            register("<sip:a@h>", to="sip:alice@other.org"), 404, id="aor-of-another-domain"
        ),
        pytest.param(register("<sip:a@h>", extra=("Require: foo",)), 420, id="require-unknown"),
        pytest.param(
            register("<sip:a@h>", extra=("Require: path, outbound",)), 200, id="require-known"
        ),
        pytest.param(
            register(
                f'<sip:a@h>;+sip.instance="{INSTANCE}";reg-id=x', extra=("Supported: outbound",)
            ),
            400,
            id="bad-reg-id",
        ),
        pytest.param(
            register(
                f'<sip:a@h>;+sip.instance="{INSTANCE}";reg-id=1',
                f'<sip:a@h2>;+sip.instance="{INSTANCE}";reg-id=2',
                extra=("Supported: outbound",),
            ),
            400,
            id="two-reg-ids",
        ),
        pytest.param(
            register("<sip:alice@example.com;gr=urn:uuid:1>"), 403, id="contact-is-a-gruu"
        ),
    ],
)
def test_bad_requests_are_answered_and_change_nothing(request_: SipRequest, status: int) -> None:
    outcome = registrar().process(request_, (), now=NOW)
    assert outcome.response.status == status
    if status != 200:
        assert not outcome.changes
    if status == 420:
        assert outcome.response.headers.get("Unsupported") == "foo"


def test_authorization_uses_the_authenticated_user() -> None:
    reg = registrar()
    req = register("<sip:a@h>")
    assert reg.process(req, (), now=NOW, authenticated_user="alice").response.status == 200
    assert reg.process(req, (), now=NOW, authenticated_user="mallory").response.status == 403
    assert reg.process(req, (), now=NOW).response.status == 200  # no authentication configured
    anyone = registrar(may_register=lambda user, aor: True)
    assert anyone.process(req, (), now=NOW, authenticated_user="admin").response.status == 200


def test_date_header_from_the_wall_time() -> None:
    outcome = registrar(date_header=True).process(register("<sip:a@h>"), (), now=NOW)
    assert outcome.response.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_a_source_object_is_stored_as_text_with_its_flow() -> None:
    src = Source(
        transport=SipTransport.TCP,
        remote=Endpoint("2001:db8::7", 40000),
        local=Endpoint("2001:db8::1", 5060),
        flow="tcp-7",
    )
    _, (binding,) = apply(registrar(), register("<sip:a@h>"), source=src)
    assert binding.source == "tcp:[2001:db8::7]:40000" and binding.flow == "tcp-7"


def test_the_same_contact_twice_in_one_request_counts_once() -> None:
    outcome, after = apply(registrar(), register("<sip:a@h>;expires=60", "<sip:a@h>"))
    assert outcome.response.status == 200
    assert len(after) == 1 and after[0].expires == NOW + 3600


def test_an_aor_holds_at_most_max_bindings() -> None:
    reg = registrar(max_bindings=2)
    _, after = apply(reg, register("<sip:a@h1>", "<sip:a@h2>"))
    outcome, after2 = apply(reg, register("<sip:a@h3>", cseq=2), after)
    assert outcome.response.status == 403 and after2 == after
    outcome, _ = apply(reg, register("<sip:a@h3>", "<sip:a@h1>;expires=0", cseq=3), after)
    assert outcome.response.status == 200


def test_source_flow_and_user_agent_are_stored() -> None:
    req = register("<sip:a@10.0.0.5:5060>", extra=("User-Agent: phone/1.0",))
    _, (binding,) = apply(registrar(), req, source="udp:203.0.113.7:40000", flow="f1")
    assert binding.source == "udp:203.0.113.7:40000" and binding.flow == "f1"
    assert binding.user_agent == "phone/1.0"


# -- outbound: instance + reg-id (RFC 5626 §6) ---------------------------------------


def outbound_contact(host: str, reg_id: int = 1, **params: str) -> str:
    extra = "".join(f";{k}={v}" for k, v in params.items())
    return f'<sip:alice@{host};ob>;+sip.instance="{INSTANCE}";reg-id={reg_id}{extra}'


def test_reg_id_bindings_replace_each_other_whatever_the_contact_uri() -> None:
    reg = registrar()
    sup = ("Supported: outbound, path",)
    _, after = apply(reg, register(outbound_contact("192.0.2.1"), extra=sup))
    outcome, after2 = apply(
        reg, register(outbound_contact("198.51.100.9"), cseq=2, extra=sup), after
    )
    assert outcome.response.headers.get("Require") == "outbound"
    (binding,) = after2
    assert "198.51.100.9" in binding.contact and binding.reg_id == 1
    assert binding.instance == INSTANCE


def test_two_reg_ids_of_one_instance_are_two_flows() -> None:
    reg = registrar()
    sup = ("Supported: outbound",)
    _, after = apply(reg, register(outbound_contact("192.0.2.1", 1), extra=sup))
    _, after2 = apply(reg, register(outbound_contact("192.0.2.1", 2), cseq=2, extra=sup), after)
    assert sorted(b.reg_id or 0 for b in after2) == [1, 2]


def test_reg_id_without_supported_outbound_is_ignored() -> None:
    reg = registrar()
    _, after = apply(reg, register(outbound_contact("192.0.2.1")))
    outcome, after2 = apply(reg, register(outbound_contact("198.51.100.9"), cseq=2), after)
    assert outcome.response.headers.get("Require") is None
    assert len(after2) == 2 and all(b.reg_id is None for b in after2)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("<sip:token@edge.example.com;lr;ob>", 200, id="edge-with-ob"),
        pytest.param("<sip:token@edge.example.com;lr>", 439, id="edge-without-ob"),
        pytest.param(None, 200, id="no-path-registrar-is-first-hop"),
    ],
)
def test_first_hop_must_support_outbound(path: str | None, status: int) -> None:
    extra = ("Supported: outbound, path",) + (() if path is None else (f"Path: {path}",))
    outcome = registrar().process(register(outbound_contact("h"), extra=extra), (), now=NOW)
    assert outcome.response.status == status


# -- Path (RFC 3327 §5.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("supported", "echoed"),
    [pytest.param("path", True, id="supported-path"), pytest.param(None, False, id="no-support")],
)
def test_path_is_stored_and_echoed_only_with_supported_path(
    supported: str | None, echoed: bool
) -> None:
    path = ("Path: <sip:p2@proxy2.example.com;lr>, <sip:p1@edge.example.com;lr>",)
    extra = path + (() if supported is None else (f"Supported: {supported}",))
    outcome, (binding,) = apply(registrar(), register("<sip:a@h>", extra=extra))
    assert binding.path == ("<sip:p2@proxy2.example.com;lr>", "<sip:p1@edge.example.com;lr>")
    listed = outcome.response.headers.values("Path")
    assert listed == (list(binding.path) if echoed else [])


def test_a_registrar_without_path_support_answers_require_path_with_420() -> None:
    reg = registrar(path=False)
    req = register("<sip:a@h>", extra=("Require: path", "Path: <sip:e@edge;lr>"))
    outcome = reg.process(req, (), now=NOW)
    assert outcome.response.status == 420
    assert outcome.response.headers.get("Unsupported") == "path"
    _, (binding,) = apply(reg, register("<sip:a@h>", extra=("Path: <sip:e@edge;lr>",)))
    assert binding.path == ()
    assert "outbound" not in reg.supported


# -- GRUU (RFC 5627) ---------------------------------------------------------------


def gruu_params(contact_value: str) -> tuple[SipUri, SipUri]:
    name_addr = parse_name_addr(contact_value)
    pub, temp = (
        parse_uri(name_addr.param("pub-gruu") or ""),
        parse_uri(name_addr.param("temp-gruu") or ""),
    )
    assert isinstance(pub, SipUri) and isinstance(temp, SipUri)
    return pub, temp


def test_gruus_are_offered_with_supported_gruu_and_an_instance() -> None:
    reg = registrar()
    req = register(f'<sip:alice@192.0.2.1>;+sip.instance="{INSTANCE}"',
                   extra=("Supported: gruu",))  # fmt: skip
    outcome, _ = apply(reg, req)
    (contact,) = response_contacts(outcome)
    pub, temp = gruu_params(contact)
    assert str(pub) == "sip:alice@example.com;gr=urn:uuid:00000000-0000-1000-8000-000A95A0E128"
    assert temp.has_param("gr") and temp.param("gr") is None
    assert temp.user is not None and temp.user.startswith("tgruu.")
    assert "alice" not in temp.user
    assert reg.gruu is not None
    target = reg.gruu.resolve(temp)
    assert target is not None and target.aor == "sip:alice@example.com" and target.temporary
    assert target.matches(INSTANCE, "call-1@ua") and not target.matches(INSTANCE, "rebooted")
    public = reg.gruu.resolve(pub)
    assert public is not None and public.instance == INSTANCE and not public.temporary


def test_public_gruu_is_stable_and_temporary_gruu_is_fresh() -> None:
    reg = registrar()
    req1 = register(f'<sip:a@h>;+sip.instance="{INSTANCE}"', extra=("Supported: gruu",))
    req2 = register(f'<sip:a@h>;+sip.instance="{INSTANCE}"', cseq=2, extra=("Supported: gruu",))
    out1, after = apply(reg, req1)
    out2, _ = apply(reg, req2, after, now=NOW + 10)
    pub1, temp1 = gruu_params(response_contacts(out1)[0])
    pub2, temp2 = gruu_params(response_contacts(out2)[0])
    assert pub1 == pub2 and temp1 != temp2


@pytest.mark.parametrize(
    ("contact", "extra"),
    [
        pytest.param(f'<sip:a@h>;+sip.instance="{INSTANCE}"', (), id="no-supported-gruu"),
        pytest.param("<sip:a@h>", ("Supported: gruu",), id="no-instance"),
    ],
)
def test_no_gruu_without_support_or_instance(contact: str, extra: tuple[str, ...]) -> None:
    outcome, _ = apply(registrar(), register(contact, extra=extra))
    assert "gruu" not in response_contacts(outcome)[0]


def test_a_temporary_gruu_of_ours_is_not_registrable() -> None:
    temp = GruuSigner([SECRET]).temporary(
        SipUri(scheme="sip", host="example.com", user="alice"), INSTANCE, "c", now=NOW
    )
    outcome = registrar().process(register(f"<{temp}>"), (), now=NOW)
    assert outcome.response.status == 403


# -- RFC 4475 torture messages -------------------------------------------------------


def torture(name: str) -> SipRequest:
    msg = parse_message((TORTURE / name).read_bytes())
    assert isinstance(msg, SipRequest)
    return msg


def test_cparam01_unknownparam_is_a_contact_param() -> None:
    outcome, (binding,) = apply(registrar(), torture("cparam01.dat"))
    assert outcome.aor == "sip:watson@example.com"
    assert binding.contact == "<sip:+19725552222@gw1.example.net>;unknownparam"
    uri = binding.uri()
    assert isinstance(uri, SipUri) and not uri.has_param("unknownparam")


def test_cparam02_unknownparam_stays_in_the_stored_uri() -> None:
    _, (binding,) = apply(registrar(), torture("cparam02.dat"))
    assert binding.contact == "<sip:+19725552222@gw1.example.net;unknownparam>"
    uri = binding.uri()
    assert isinstance(uri, SipUri) and uri.has_param("unknownparam")


def test_escnull_registers_two_contacts() -> None:
    outcome, after = apply(registrar(), torture("escnull.dat"))
    assert outcome.response.status == 200
    assert outcome.aor == "sip:null-%00-null@example.com"
    assert sorted(b.contact for b in after) == [
        "<sip:%00%00@host5.example.com>",
        "<sip:%00@host5.example.com>",
    ]
    uris = [b.uri() for b in after]
    assert sorted(u.user or "" for u in uris if isinstance(u, SipUri)) == ["\x00", "\x00\x00"]


def test_regescrt_keeps_the_escaped_header() -> None:
    outcome, (binding,) = apply(registrar(), torture("regescrt.dat"))
    assert binding.contact == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
    uri = binding.uri()
    assert isinstance(uri, SipUri) and uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert response_contacts(outcome) == [
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"
    ]


# -- the stored form -----------------------------------------------------------------


def test_bindings_round_trip_through_their_compact_json() -> None:
    full = Binding(
        key="i:<urn:x>:1", contact="<sip:a@h>", expires=NOW + 1.5, call_id="c", cseq=7, q=0.5,
        instance="<urn:x>", reg_id=1, path=("<sip:e;lr>",), source="udp:1.2.3.4:5",
        flow="f", user_agent="ua",
    )  # fmt: skip
    short = Binding(key="u:sip:a@h", contact="<sip:a@h>", expires=NOW, call_id="c", cseq=1)
    for binding in (full, short):
        assert Binding.from_json(binding.to_json()) == binding
    assert len(short.to_json()) == 5
    with pytest.raises(ValueError):
        Binding.from_json(["too", "short"])


def test_changes_apply_by_key() -> None:
    a = Binding(key="a", contact="<sip:a@h>", expires=NOW, call_id="c", cseq=1)
    b = Binding(key="b", contact="<sip:b@h>", expires=NOW, call_id="c", cseq=1, q=0.9)
    a2 = Binding(key="a", contact="<sip:a@h>", expires=NOW + 5, call_id="c", cseq=2)
    assert BindingChanges(upsert=(a2,), remove=("b",)).applied_to((a, b)) == (a2,)
    assert not BindingChanges()


def test_method_other_than_register_is_405() -> None:
    req = register("<sip:a@h>")
    req.method = "OPTIONS"
    assert registrar().process(req, (), now=NOW).response.status == 405


# -- robustness ----------------------------------------------------------------------

_PARAM_TEXT = st.text(alphabet='abcxyz019-.;="<>:@%+ ', max_size=30)


@given(contact_params=_PARAM_TEXT, expires=_PARAM_TEXT, cseq=st.integers(0, 2**31 - 1))
def test_process_never_raises(contact_params: str, expires: str, cseq: int) -> None:
    text = (
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:alice@example.com>\r\nCall-ID: c\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: <sip:alice@h>;{contact_params}\r\n"
        f"Expires: {expires}\r\nSupported: outbound, gruu, path\r\nContent-Length: 0\r\n\r\n"
    )
    try:
        request = parse_message(text.encode())
    except MalformedMessageError:
        return
    assert isinstance(request, SipRequest)
    existing = Binding(key="u:sip:alice@h", contact="<sip:alice@h>", expires=NOW + 60,
                       call_id="c", cseq=5)  # fmt: skip
    outcome = registrar().process(request, (existing,), now=NOW)
    assert 200 <= outcome.response.status < 600
