"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.sip.digest import (
    AuthFailed,
    AuthMissing,
    AuthOk,
    AuthStale,
    DigestAlgorithm,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestServer,
    DigestServerConfig,
    compute_ha1,
    compute_response,
    format_challenge,
    format_credentials,
    parse_challenge,
    parse_credentials,
    userhash,
)
from natkit.sip.headers import quote_string
from natkit.sip.message import SipRequest, SipResponse, make_response, parse_message

TORTURE = Path(__file__).parent.parent / "data" / "sip_torture"
REALM = "example.org"
NOW = 1_700_000_000.0
MD5, MD5_SESS = DigestAlgorithm.MD5, DigestAlgorithm.MD5_SESS
SHA256, SHA256_SESS = DigestAlgorithm.SHA256, DigestAlgorithm.SHA256_SESS
SHA512, SHA512_SESS = DigestAlgorithm.SHA512_256, DigestAlgorithm.SHA512_256_SESS
ALL = [MD5, MD5_SESS, SHA256, SHA256_SESS, SHA512, SHA512_SESS]


def request(method: str = "REGISTER", uri: str = "sip:example.org", body: str = "") -> SipRequest:
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKdigest1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=f1\r\n"
        "To: <sip:alice@example.org>\r\n"
        "Call-ID: digest-1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:alice@192.0.2.5>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def server(
    *,
    algorithms: tuple[DigestAlgorithm, ...] = (SHA256, MD5),
    qop: tuple[str, ...] = ("auth",),
    secrets: tuple[bytes, ...] = (b"secret-1",),
    seed: int = 1,
    **kw: object,
) -> DigestServer:
    config = DigestServerConfig(
        realm=REALM,
        secrets=secrets,
        algorithms=algorithms,
        qop=qop,
        **kw,  # type: ignore[arg-type]
    )
    return DigestServer(config, rng=random.Random(seed))


def client(password: str = "wonderland", **kw: object) -> DigestClient:
    return DigestClient("alice", password, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def lookup(password: str = "wonderland"):  # type: ignore[no-untyped-def]
    def ha1(user: str, realm: str, alg: DigestAlgorithm) -> str | None:
        return compute_ha1(alg, user, realm, password) if user == "alice" else None

    return ha1


def authorized(
    srv: DigestServer, cli: DigestClient, req: SipRequest, *, now: float = NOW
) -> SipRequest:
    challenge = srv.challenge(req, now=now)
    out = cli.authorize(req, challenge)
    assert out is not None
    return out


# --- RFC vectors -----------------------------------------------------------------

RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n realm="testrealm@host.com",\r\n'
    ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n uri="/dir/index.html",\r\n'
    " qop=auth,\r\n nc=00000001,\r\n"
    ' cnonce="0a4f113b",\r\n response="6629fae49393a05397450978507c4ef1",\r\n'
    ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_example_parses_and_verifies() -> None:
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    assert creds is not None
    assert (creds.username, creds.realm, creds.uri, creds.qop, creds.nc, creds.cnonce) == (
        "Mufasa",
        "testrealm@host.com",
        "/dir/index.html",
        "auth",
        1,
        "0a4f113b",
    )
    assert creds.algorithm is MD5
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    ha1 = compute_ha1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert creds.response == compute_response(
        MD5,
        ha1,
        nonce=creds.nonce,
        method="GET",
        uri=creds.uri,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        pytest.param(MD5, "8ca523f5e9506fed4657c9700eebdbec", id="md5"),
        pytest.param(
            SHA256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            id="sha256",
        ),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: DigestAlgorithm, expected: str) -> None:
    challenge = parse_challenge(
        'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n'
        f' algorithm={algorithm},\r\n nonce="{RFC7616_NONCE}",\r\n'
        f' opaque="{RFC7616_OPAQUE}"'
    )
    assert challenge is not None
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm is algorithm
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        algorithm,
        ha1,
        nonce=RFC7616_NONCE,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc=1,
        cnonce=RFC7616_CNONCE,
    )
    assert response == expected
    header = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",'
        f' algorithm={algorithm}, nonce="{RFC7616_NONCE}", nc=00000001,'
        f' cnonce="{RFC7616_CNONCE}", qop=auth, response="{expected}",'
        f' opaque="{RFC7616_OPAQUE}"'
    )
    creds = parse_credentials(header)
    assert creds is not None and creds.response == expected and creds.algorithm is algorithm


def test_rfc7616_section_3_9_2_userhash() -> None:
    assert (
        userhash(SHA512, "J\u00e4s\u00f8n Doe", "api@example.org")
        == "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    )


# --- syntax ----------------------------------------------------------------------


def test_challenge_params_are_case_insensitive_with_escapes_and_unknowns() -> None:
    ch = parse_challenge(
        'digest REALM="a \\"quoted\\" realm", Nonce=abc123, ALGORITHM=sha-256, '
        'QOP="auth-int,auth", Stale=true, future-param="x, y", domain="sip:a sip:b",,'
    )
    assert ch == DigestChallenge(
        realm='a "quoted" realm',
        nonce="abc123",
        algorithm=SHA256,
        qop=("auth-int", "auth"),
        stale=True,
        domain=("sip:a", "sip:b"),
        extra=(("future-param", "x, y"),),
    )
    again = parse_challenge(format_challenge(ch))
    assert again == ch


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("NoOneKnowsThisScheme opaque-data=here", id="regaut01-scheme"),
        pytest.param('Basic realm="x"', id="basic"),
        pytest.param('Digest nonce="n"', id="no-realm"),
        pytest.param('Digest realm="r"', id="no-nonce"),
        pytest.param('Digest realm="r", nonce="n", algorithm=SHA-1', id="unknown-algorithm"),
        pytest.param('Digest realm="r", realm="s", nonce="n"', id="duplicate"),
        pytest.param('Digest realm="r, nonce="n"', id="unterminated-quote"),
        pytest.param('Digest realm="r" nonce="n"', id="missing-comma"),
        pytest.param('Digest realm "r"', id="missing-equals"),
        pytest.param("Digest,realm=r,nonce=n", id="no-space-after-scheme"),
        pytest.param("", id="empty"),
        pytest.param("Digest", id="scheme-only"),
    ],
)
def test_unusable_challenges_parse_to_none(value: str) -> None:
    assert parse_challenge(value) is None


def test_formats_seen_from_sipp_and_kamailio_parse() -> None:
    # sipp 3.6.1 Authorization (no spaces, digest-uri = its remote address)
    sipp = parse_credentials(
        'Digest username="alice",realm="example.org",cnonce="6b8b4567",nc=00000001,'
        'qop=auth,uri="sip:127.0.0.1:5070",nonce="AAABojcOzX39I9i4My2CnjWP27Iv_0FltABHwa3OWrE",'
        'response="3969beb7b780c954c41a7a8b289081e2",algorithm=MD5'
    )
    assert sipp is not None and (sipp.nc, sipp.qop, sipp.uri) == (1, "auth", "sip:127.0.0.1:5070")
    # Kamailio 5.6 auth module challenge (base64 nonce with + and /, algorithm last)
    kamailio = parse_challenge(
        'Digest realm="example.org", nonce="axAmCWsQJN37jD+j+/f5yNNdDbPF9Khr", qop="auth",'
        " algorithm=SHA-256"
    )
    assert kamailio is not None and kamailio.algorithm is SHA256 and kamailio.qop == ("auth",)


def test_challenge_defaults_md5_and_keeps_no_qop() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n"')
    assert ch is not None and ch.algorithm is MD5 and ch.qop == () and not ch.stale


def test_regaut01_authorization_is_ignored() -> None:
    msg = parse_message((TORTURE / "regaut01.dat").read_bytes())
    assert isinstance(msg, SipRequest)
    value = msg.headers.get("Authorization")
    assert value is not None and parse_credentials(value) is None
    srv = server()
    assert srv.credentials_for(msg) is None
    assert isinstance(srv.verify(msg, lookup(), now=NOW), AuthMissing)
    answer = srv.answer(msg, AuthMissing(), now=NOW)
    assert answer is not None and answer.status == 401


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('Digest username="a", realm="r", nonce="n", uri="u"', id="no-response"),
        pytest.param(
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
            id="qop-without-nc",
        ),
        pytest.param(
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth,'
            ' cnonce="c", nc=123456789',
            id="nc-too-long",
        ),
        pytest.param(
            'Digest username="a", username*=UTF-8\'\'a, realm="r", nonce="n", uri="u",'
            ' response="x"',
            id="username-and-username-star",
        ),
    ],
)
def test_incomplete_credentials_parse_to_none(value: str) -> None:
    assert parse_credentials(value) is None


def test_credentials_username_star_and_round_trip() -> None:
    creds = parse_credentials(
        'Digest username*=UTF-8\'\'J%C3%A4s%C3%B8n%20Doe, realm="r", nonce="n", uri="sip:r",'
        ' response="ABCD", qop=auth, cnonce="c", nc=0000000a, algorithm=MD5-sess, x-y=z'
    )
    assert creds is not None
    assert creds.username == "J\u00e4s\u00f8n Doe"
    assert (creds.nc, creds.response, creds.algorithm) == (10, "abcd", MD5_SESS)
    assert creds.extra == (("x-y", "z"),)
    assert parse_credentials(format_credentials(creds)) == creds
    assert "nc=0000000a" in str(creds) and "qop=auth" in str(creds)


ARBITRARY = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            ["Digest", " ", ",", "=", '"', "\\", "realm", "nonce", "qop", "auth", "nc", "\r\n "]
        ),
        max_size=40,
    ).map("".join),
)


@given(ARBITRARY)
def test_parse_challenge_never_raises(value: str) -> None:
    result = parse_challenge(value)
    assert result is None or isinstance(result, DigestChallenge)


@given(ARBITRARY)
def test_parse_credentials_never_raises(value: str) -> None:
    result = parse_credentials(value)
    assert result is None or isinstance(result, DigestCredentials)


@given(
    realm=st.text(min_size=1, max_size=30).filter(lambda s: "\r" not in s and "\n" not in s),
    nonce=st.text(min_size=1, max_size=30).filter(lambda s: "\r" not in s and "\n" not in s),
    algorithm=st.sampled_from(ALL),
    stale=st.booleans(),
)
def test_challenge_format_parse_round_trip(
    realm: str, nonce: str, algorithm: DigestAlgorithm, stale: bool
) -> None:
    ch = DigestChallenge(realm=realm, nonce=nonce, algorithm=algorithm, stale=stale)
    assert parse_challenge(format_challenge(ch)) == ch


# --- client <-> server -----------------------------------------------------------


@pytest.mark.parametrize("algorithm", [pytest.param(a, id=str(a)) for a in ALL])
@pytest.mark.parametrize("qop", ["auth", "auth-int"])
def test_round_trip_for_every_algorithm_and_qop(algorithm: DigestAlgorithm, qop: str) -> None:
    srv = server(algorithms=(algorithm,), qop=(qop,))
    req = request("MESSAGE", "sip:bob@example.org", body="hello")
    out = authorized(srv, client(), req)
    creds = parse_credentials(out.headers.get("Authorization") or "")
    assert creds is not None and creds.algorithm is algorithm and creds.qop == qop
    assert srv.verify(out, lookup(), now=NOW + 1) == AuthOk(
        username="alice", realm=REALM, algorithm=algorithm
    )


def test_auth_int_covers_the_body() -> None:
    srv = server(qop=("auth-int",))
    out = authorized(srv, client(), request("MESSAGE", body="hello"))
    out.body = b"HELLO"
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthFailed)


def test_server_offers_sha256_then_md5_and_clients_pick_what_they_support() -> None:
    srv = server()
    req = request()
    challenge = srv.challenge(req, now=NOW)
    assert challenge.status == 401 and challenge.to.tag is not None
    lines = challenge.headers.get_all("WWW-Authenticate")
    parsed = [parse_challenge(line) for line in lines]
    assert [p.algorithm for p in parsed if p] == [SHA256, MD5]
    strong = client().credentials_header(req, challenge)
    assert strong is not None and "algorithm=SHA-256" in strong[1]
    old = client(algorithms=(MD5,)).credentials_header(req, challenge)
    assert old is not None and old[0] == "Authorization" and "algorithm=MD5," in old[1]
    out = client(algorithms=(MD5,)).authorize(req, challenge)
    assert out is not None
    assert srv.verify(out, lookup(), now=NOW).algorithm is MD5  # type: ignore[union-attr]


def test_client_may_follow_the_server_order_instead() -> None:
    req = request()
    md5_first = server(algorithms=(MD5, SHA256)).challenge(req, now=NOW)
    strongest = client().credentials_header(req, md5_first)
    topmost = client(follow_server_order=True).credentials_header(req, md5_first)
    assert strongest is not None and "algorithm=SHA-256" in strongest[1]
    assert topmost is not None and "algorithm=MD5," in topmost[1]


_NO_CRLF = st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s and "\n" not in s)


@given(username=_NO_CRLF, password=st.text(max_size=20), realm=_NO_CRLF)
def test_any_username_password_and_realm_round_trip(
    username: str, password: str, realm: str
) -> None:
    srv = DigestServer(DigestServerConfig(realm=realm, secrets=(b"k",)), rng=random.Random(1))
    cli = DigestClient(username, password, rng=random.Random(2))
    req = request()
    out = cli.authorize(req, srv.challenge(req, now=NOW))
    assert out is not None
    creds = srv.credentials_for(out)
    assert creds is not None and creds.username == username
    ha1 = compute_ha1(creds.algorithm, username, realm, password)
    assert isinstance(srv.check(creds, out, ha1, now=NOW), AuthOk)


def test_expired_nonce_with_right_password_is_stale_and_the_client_retries() -> None:
    srv, cli = server(), client()
    req = request()
    out = authorized(srv, cli, req)
    late = NOW + 301
    result = srv.verify(out, lookup(), now=late)
    assert result == AuthStale(realm=REALM, username="alice")
    stale = srv.answer(out, result, now=late)
    assert stale is not None
    assert all("stale=TRUE" in v for v in stale.headers.get_all("WWW-Authenticate"))
    again = cli.authorize(out, stale)
    assert again is not None
    assert len(again.headers.get_all("Authorization")) == 1
    assert isinstance(srv.verify(again, lookup(), now=late), AuthOk)
    assert isinstance(srv.verify(out, lookup(), now=NOW + 300), AuthOk)


def test_expired_nonce_with_wrong_password_is_failed_not_stale() -> None:
    srv = server()
    out = authorized(srv, client("wrong"), request())
    assert isinstance(srv.verify(out, lookup(), now=NOW + 1000), AuthFailed)


def test_wrong_password_fails_and_the_client_gives_up() -> None:
    srv, cli = server(), client("wrong")
    out = authorized(srv, cli, request())
    result = srv.verify(out, lookup(), now=NOW)
    assert result == AuthFailed(reason="wrong response (password)")
    second = srv.answer(out, result, now=NOW)
    assert second is not None and second.status == 401
    assert cli.authorize(out, second) is None


def test_client_gives_up_on_stale_with_the_nonce_it_just_used() -> None:
    srv, cli = server(), client()
    req = request()
    challenge = srv.challenge(req, now=NOW)
    out = cli.authorize(req, challenge)
    assert out is not None
    same = make_response(
        out,
        401,
        headers=[
            ("WWW-Authenticate", v.replace("algorithm", "stale=true, algorithm"))
            for v in challenge.headers.get_all("WWW-Authenticate")
        ],
    )
    assert cli.authorize(out, same) is None


def test_unknown_user_and_missing_credentials() -> None:
    srv = server()
    assert isinstance(srv.verify(request(), lookup(), now=NOW), AuthMissing)
    cli = DigestClient("mallory", "x", rng=random.Random(1))
    req = request()
    out = cli.authorize(req, srv.challenge(req, now=NOW))
    assert out is not None
    assert srv.verify(out, lookup(), now=NOW) == AuthFailed(reason="unknown user")


def test_credentials_for_another_realm_are_missing_here() -> None:
    other = DigestServer(
        DigestServerConfig(realm="other.org", secrets=(b"secret-1",)), rng=random.Random(2)
    )
    srv = server()
    out = authorized(other, client(), request())
    assert srv.credentials_for(out) is None
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthMissing)
    creds = other.credentials_for(out)
    assert creds is not None
    result = srv.check(creds, out, compute_ha1(SHA256, "alice", REALM, "wonderland"), now=NOW)
    assert isinstance(result, AuthFailed) and "realm" in result.reason


def _with_nonce(out: SipRequest, nonce: str) -> SipRequest:
    creds = parse_credentials(out.headers.get("Authorization") or "")
    assert creds is not None
    forged = out.copy()
    forged.headers.set("Authorization", str(creds).replace(creds.nonce, nonce))
    return forged


def test_forged_and_altered_nonces_fail() -> None:
    srv = server()
    out = authorized(srv, client(), request())
    nonce = srv.credentials_for(out).nonce  # type: ignore[union-attr]
    flipped = nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]
    for bad in (flipped, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "x" * 43):
        result = srv.verify(_with_nonce(out, bad), lookup(), now=NOW)
        assert result == AuthFailed(reason="nonce not issued with our secrets"), bad


def test_nonce_from_the_future_is_stale_with_the_right_password_else_failed() -> None:
    srv = server()
    out = authorized(srv, client(), request(), now=NOW + 3600)
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthStale)
    bad = authorized(srv, client("wrong"), request(), now=NOW + 3600)
    assert srv.verify(bad, lookup(), now=NOW) == AuthFailed(reason="nonce issued in the future")


def test_rotated_secret_still_validates_and_unrelated_secret_is_stale() -> None:
    old = server(secrets=(b"old",))
    rotated = server(secrets=(b"new", b"old"), seed=3)
    stranger = server(secrets=(b"other",), seed=4)
    out = authorized(old, client(), request())
    assert isinstance(rotated.verify(out, lookup(), now=NOW), AuthOk)
    # right password over a nonce this server cannot check: stale, never Ok
    assert isinstance(stranger.verify(out, lookup(), now=NOW), AuthStale)
    fresh = authorized(rotated, client(), request())
    assert isinstance(old.verify(fresh, lookup(), now=NOW), AuthStale)
    assert isinstance(server(secrets=(b"new",)).verify(fresh, lookup(), now=NOW), AuthOk)
    wrong = authorized(old, client("wrong"), request())
    assert stranger.verify(wrong, lookup(), now=NOW) == AuthFailed(
        reason="nonce not issued with our secrets"
    )


def test_after_a_restart_with_a_new_secret_the_client_recovers() -> None:
    before, after = server(secrets=(b"boot-1",)), server(secrets=(b"boot-2",), seed=9)
    cli = client()
    req = request()
    out = authorized(before, cli, req)
    refresh = req.copy()
    for name, value in cli.preemptive_headers(req):
        refresh.headers.set(name, value)
    result = after.verify(refresh, lookup(), now=NOW + 60)
    assert isinstance(result, AuthStale)
    answer = after.answer(refresh, result, now=NOW + 60)
    assert answer is not None
    retry = cli.authorize(refresh, answer)
    assert retry is not None
    assert isinstance(after.verify(retry, lookup(), now=NOW + 60), AuthOk)
    assert out is not None


def test_replay_window_refuses_a_repeated_nonce_count() -> None:
    srv = server(replay_window=4)
    cli = client()
    req = request()
    out = authorized(srv, cli, req)
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthOk)
    assert srv.verify(out, lookup(), now=NOW) == AuthFailed(reason="nonce-count 1 replayed")
    refreshes = []
    for _ in range(5):
        again = req.copy()
        for name, value in cli.preemptive_headers(req):
            again.headers.set(name, value)
        refreshes.append(again)
    ncs = [srv.credentials_for(r).nc for r in refreshes]  # type: ignore[union-attr]
    assert ncs == [2, 3, 4, 5, 6]
    for r in (refreshes[4], refreshes[2], refreshes[3]):  # out of order inside the window
        assert isinstance(srv.verify(r, lookup(), now=NOW), AuthOk)
    assert isinstance(srv.verify(refreshes[0], lookup(), now=NOW), AuthFailed)  # below window


def test_replay_window_survives_a_huge_nonce_count_jump() -> None:
    srv = server(replay_window=64)
    cli = client()
    req = request()
    out = authorized(srv, cli, req)
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthOk)
    creds = srv.credentials_for(out)
    assert creds is not None
    ha1 = compute_ha1(creds.algorithm, "alice", REALM, "wonderland")
    for nc in (0xFFFFFFFF, 0xFFFFFFFE, 2):
        response = compute_response(
            creds.algorithm,
            ha1,
            nonce=creds.nonce,
            method=req.method,
            uri=creds.uri,
            qop=creds.qop,
            nc=nc,
            cnonce=creds.cnonce,
        )
        jumped = out.copy()
        jumped.headers.set(
            "Authorization",
            str(dataclasses.replace(creds, nc=nc, response=response)),
        )
        expected = AuthFailed if nc == 2 else AuthOk
        assert isinstance(srv.verify(jumped, lookup(), now=NOW), expected), nc


_PARAM_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["sip:example.org", "sip:[::1", "sip:a@b:99999", "tel:+1", "x:y", "sip:"]),
)


@given(
    uri=_PARAM_VALUES,
    nonce=_PARAM_VALUES,
    nc=st.text(alphabet="0123456789abcdefxyz", max_size=10),
    algorithm=st.sampled_from(["MD5", "sha-256", "SHA-512-256-sess", "x", "md5-SESS"]),
    qop=st.sampled_from(["auth", "auth-int", "AUTH", "x", ""]),
    username=_PARAM_VALUES,
)
def test_server_verify_never_raises(
    uri: str, nonce: str, nc: str, algorithm: str, qop: str, username: str
) -> None:
    srv = server(replay_window=8)
    req = request()
    qop_part = f', qop={qop}, nc={nc or 1}, cnonce="c"' if qop else ""
    value = (
        f'Digest username={quote_string(username)}, realm="{REALM}",'
        f' nonce={quote_string(nonce)}, uri={quote_string(uri)}, response="00",'
        f" algorithm={algorithm}{qop_part}"
    )
    req.headers.set("Authorization", value)
    result = srv.verify(req, lookup(), now=NOW)
    assert isinstance(result, AuthFailed | AuthMissing)


def test_without_replay_window_a_repeat_is_accepted_until_expiry() -> None:
    srv = server()
    out = authorized(srv, client(), request())
    assert isinstance(srv.verify(out, lookup(), now=NOW), AuthOk)
    assert isinstance(srv.verify(out, lookup(), now=NOW + 10), AuthOk)


def test_replay_table_is_bounded_and_evicted_nonces_turn_stale() -> None:
    srv = server(replay_window=8, max_tracked_nonces=2)
    first = authorized(srv, client(), request(), now=NOW)
    second = authorized(srv, client(), request(), now=NOW + 1)
    third = authorized(srv, client(), request(), now=NOW + 2)
    for out in (first, second, third):
        assert isinstance(srv.verify(out, lookup(), now=NOW + 3), AuthOk)
    # first was pushed out of the table: replaying it can only earn a new nonce
    assert isinstance(srv.verify(first, lookup(), now=NOW + 3), AuthStale)
    assert isinstance(srv.verify(third, lookup(), now=NOW + 3), AuthFailed)
    later = authorized(srv, client(), request(), now=NOW + 4)
    assert isinstance(srv.verify(later, lookup(), now=NOW + 4), AuthOk)


def test_digest_uri_must_match_the_request_uri() -> None:
    srv = server()
    out = authorized(srv, client(), request())
    moved = out.copy()
    moved.uri = request("REGISTER", "sip:elsewhere.org").uri
    assert srv.verify(moved, lookup(), now=NOW) == AuthFailed(
        reason="digest-uri is not the Request-URI"
    )
    same = out.copy()
    same.uri = request("REGISTER", "sip:EXAMPLE.org").uri
    assert isinstance(srv.verify(same, lookup(), now=NOW), AuthOk)


def test_rfc2069_credentials_only_when_allowed() -> None:
    for require, expected in ((True, AuthFailed), (False, AuthOk)):
        srv = server(require_qop=require)
        req = request()
        challenge = srv.challenge(req, now=NOW)
        legacy = make_response(
            req,
            401,
            headers=[
                ("WWW-Authenticate", v.replace(', qop="auth"', ""))
                for v in challenge.headers.get_all("WWW-Authenticate")
            ],
        )
        out = client().authorize(req, legacy)
        assert out is not None and "cnonce" not in (out.headers.get("Authorization") or "")
        assert isinstance(srv.verify(out, lookup(), now=NOW), expected)


def test_proxy_flow_uses_407_and_proxy_headers() -> None:
    proxy = server(proxy=True)
    req = request("INVITE", "sip:bob@example.org")
    challenge = proxy.challenge(req, now=NOW)
    assert challenge.status == 407
    assert challenge.headers.get_all("WWW-Authenticate") == []
    assert len(challenge.headers.get_all("Proxy-Authenticate")) == 2
    cli = client()
    header = cli.credentials_header(req, challenge)
    assert header is not None and header[0] == "Proxy-Authorization"
    out = cli.authorize(req, challenge)
    assert out is not None and out.headers.get("Authorization") is None
    assert isinstance(proxy.verify(out, lookup(), now=NOW), AuthOk)
    assert isinstance(server().verify(out, lookup(), now=NOW), AuthMissing)


def test_client_ignores_other_responses_and_unusable_challenges() -> None:
    req = request()
    cli = client()
    assert cli.authorize(req, make_response(req, 200)) is None
    assert cli.authorize(req, make_response(req, 401)) is None
    basic = make_response(req, 401, headers=[("WWW-Authenticate", 'Basic realm="x"')])
    assert cli.authorize(req, basic) is None
    sha_only = server(algorithms=(SHA256,)).challenge(req, now=NOW)
    assert client(algorithms=(MD5,)).authorize(req, sha_only) is None


def test_client_answers_each_realm_and_replaces_only_its_own_credentials() -> None:
    a = DigestServer(
        DigestServerConfig(realm="a.org", secrets=(b"a",), proxy=True), rng=random.Random(1)
    )
    b = DigestServer(
        DigestServerConfig(realm="b.org", secrets=(b"b",), proxy=True), rng=random.Random(2)
    )
    req = request("INVITE", "sip:bob@example.org")
    req.headers.add(
        "Proxy-Authorization",
        'Digest username="x", realm="c.org", nonce="n", uri="sip:bob@example.org", response="00"',
    )
    both = make_response(
        req,
        407,
        headers=a.challenge_headers(now=NOW) + b.challenge_headers(now=NOW),
    )
    out = client().authorize(req, both)
    assert out is not None
    lines = out.headers.get_all("Proxy-Authorization")
    assert len(lines) == 3 and 'realm="c.org"' in lines[0]
    for proxy in (a, b):
        assert isinstance(proxy.verify(out, lookup(), now=NOW), AuthOk)


def test_client_counts_nonce_uses_and_resets_on_a_new_nonce() -> None:
    srv, cli = server(), client()
    req = request()
    first = authorized(srv, cli, req)
    assert srv.credentials_for(first).nc == 1  # type: ignore[union-attr]
    ((name, value),) = cli.preemptive_headers(req)
    assert name == "Authorization" and "nc=00000002" in value
    fresh = authorized(srv, cli, req, now=NOW + 5)
    assert srv.credentials_for(fresh).nc == 1  # type: ignore[union-attr]


def test_userhash_when_offered() -> None:
    srv = server()
    req = request()
    plain = srv.challenge(req, now=NOW)
    offered = make_response(
        req,
        401,
        headers=[
            ("WWW-Authenticate", v + ", userhash=true")
            for v in plain.headers.get_all("WWW-Authenticate")
        ],
    )
    out = client(use_userhash=True).authorize(req, offered)
    assert out is not None
    creds = srv.credentials_for(out)
    assert creds is not None and creds.userhash
    assert creds.username == userhash(SHA256, "alice", REALM)
    ha1 = compute_ha1(SHA256, "alice", REALM, "wonderland")
    assert srv.check(creds, out, ha1, now=NOW) == AuthOk(
        username=creds.username, realm=REALM, algorithm=SHA256
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"secrets": ()}, id="no-secret"),
        pytest.param({"algorithms": ()}, id="no-algorithm"),
        pytest.param({"qop": ("auth-conf",)}, id="bad-qop"),
        pytest.param({"nonce_lifetime": 0}, id="lifetime"),
        pytest.param({"replay_window": -1}, id="window"),
    ],
)
def test_server_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        server(**kwargs)


def test_challenge_response_is_a_proper_response() -> None:
    srv = server()
    req = request()
    resp = srv.challenge(req, now=NOW, to_tag="t1")
    assert isinstance(resp, SipResponse)
    assert resp.to.tag == "t1" and resp.call_id == "digest-1" and resp.cseq.seq == 1
    assert srv.answer(req, AuthOk(username="a", realm=REALM, algorithm=MD5), now=NOW) is None
