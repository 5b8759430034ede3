"""coturn's own TURN client, ``turnutils_uclient``, against ``natkit turn-server``.

One natkit server (UDP, TCP and TLS listeners, a trustme certificate,
``--allow-peer 127.0.0.0/8``) and one ``turnutils_peer`` echo peer serve
every case; the clients run at the same time, since each spends seconds
waiting before it sends (see :mod:`.turn_fixtures`). Each case must end with
every message echoed and no loss, which on loopback is the only right
answer:

* UDP, TCP and TLS client transports, relaying through channels
  (ChannelBind + ChannelData, RFC 8656 §11-12) and through Send/Data
  indications (``-s``, RFC 8656 §10). The client is an RFC 5766 one: it
  draws channel numbers from 0x4000-0x7FFF (RFC 5766 §11), three in four
  above RFC 8656's 0x4FFF, which natkit's server accepts by default
  (``rfc5766_channels``);
* ``-T``: RFC 6062 TCP allocations, the clients connecting to each other's
  relayed addresses (Connect, ConnectionAttempt, ConnectionBind), over TCP
  and TLS;
* ``-g``: DONT-FRAGMENT in Allocate and Send (RFC 8656 §7.2, §10.2), which
  natkit accepts (docs/conformance/turn.md says how).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from .conftest import LOOPBACK
from .turn_fixtures import (
    UclientReport,
    parse_uclient_report,
    run_uclients,
    start_natkit_turn,
    start_turnutils_peer,
    uclient_argv,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (natkit listener, turnutils_uclient flags)
    "udp-channels": ("udp", ()),
    "udp-send-indications": ("udp", ("-s",)),
    "tcp-channels": ("tcp", ("-t",)),
    "tcp-send-indications": ("tcp", ("-t", "-s")),
    "tls-channels": ("tls", ("-t", "-S")),
    "tls-send-indications": ("tls", ("-t", "-S", "-s")),
    "tcp-relay-rfc6062": ("tcp", ("-T",)),
    "tls-relay-rfc6062": ("tls", ("-T", "-S")),
    "udp-send-dont-fragment": ("udp", ("-s", "-g")),
}


@pytest.fixture(scope="module")
def uclient_reports(
    tmp_path_factory: pytest.TempPathFactory, tls_ca: trustme.CA
) -> Iterator[dict[str, tuple[UclientReport | None, str]]]:
    workdir = tmp_path_factory.mktemp("uclient")
    cert = tls_ca.issue_cert("localhost", LOOPBACK)
    cert_pem, key_pem = workdir / "cert.pem", workdir / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_pem)
    cert.private_key_pem.write_to_path(key_pem)
    peer, peer_proc = start_turnutils_peer(workdir)
    try:
        server = start_natkit_turn(workdir, cert_pem, key_pem, verbose=True)
        try:
            listeners = {"udp": server.udp, "tcp": server.tcp, "tls": server.tls}
            runs = {
                name: uclient_argv(listeners[kind], *flags, peer=None if "-T" in flags else peer)
                for name, (kind, flags) in CASES.items()
            }
            reports = run_uclients(runs, workdir)
            reports = {
                name: (
                    report,
                    f"{text}\n--- natkit turn-server log:\n{server.process.log()[-4000:]}",
                )
                for name, (report, text) in reports.items()
            }
            yield reports
        finally:
            status = server.process.stop()
        assert status == 0, f"natkit turn-server exited with {status}:\n{server.process.log()}"
    finally:
        peer_proc.stop()


def _check(reports: dict[str, tuple[UclientReport | None, str]], case: str) -> None:
    report, output = reports[case]
    assert report is not None, f"turnutils_uclient never reported:\n{output}"
    assert report.sent == 100, output  # 50 messages x 2 clients
    assert report.received == report.sent, output
    assert report.lost == 0, output
    assert report.send_dropped == 0, output


def test_udp_client_relays_through_channels(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "udp-channels")


def test_udp_client_relays_through_send_indications(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "udp-send-indications")


def test_tcp_client_relays_through_channels(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tcp-channels")


def test_tcp_client_relays_through_send_indications(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tcp-send-indications")


def test_tls_client_relays_through_channels(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tls-channels")


def test_tls_client_relays_through_send_indications(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tls-send-indications")


def test_rfc6062_tcp_relay_between_two_clients(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tcp-relay-rfc6062")


SAMPLE_REPORT = """\
5: : start_mclient: msz=2, tot_send_msgs=50, tot_recv_msgs=50, tot_send_bytes ~ 8500
5: : start_mclient: tot_send_msgs=100, tot_recv_msgs=98
5: : start_mclient: tot_send_bytes ~ 17000, tot_recv_bytes ~ 16660
5: : Total transmit time is 5
5: : Total lost packets 2 (2.000000%), total send dropped 0 (0.000000%)
5: : Average round trip delay 15.200000 ms; min = 0 ms, max = 39 ms
"""


def test_rfc6062_tcp_relay_between_two_tls_clients(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "tls-relay-rfc6062")


def test_send_indications_with_dont_fragment(
    uclient_reports: dict[str, tuple[UclientReport | None, str]],
) -> None:
    _check(uclient_reports, "udp-send-dont-fragment")


def test_uclient_report_is_read_from_the_final_lines() -> None:
    report = parse_uclient_report(SAMPLE_REPORT)
    assert report is not None
    assert (report.sent, report.received, report.lost, report.send_dropped) == (100, 98, 2, 0)
    assert (report.rtt_avg_ms, report.rtt_max_ms) == (15.2, 39)
    assert not report.ok


def test_uclient_output_without_a_report_reads_as_none() -> None:
    assert parse_uclient_report("0: : channel bind: error 400 (Bad Request)\n") is None
